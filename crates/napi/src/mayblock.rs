//! The may-block ring of a worker's engine (`engine::APART`), made and driven by a thread of its
//! own ("odirect-mayblk"), so that the worker's exit never waits for a server.
//!
//! Why a thread: io_uring's io-wq workers belong to the task that submitted the work
//! (`io_uring_task`), and a task's exit waits for them: `do_exit -> io_uring_files_cancel ->
//! io_uring_cancel_generic -> io_uring_clean_tctx -> io_wq_put_and_exit` joins every worker
//! (`io_wq_exit_workers: wait_for_completion(&wq->worker_done)`). Its cancel only sends a worker
//! the notify signal (`io_wq_worker_cancel`), which ends interruptible sleeps, not killable ones.
//! On a FUSE file opened O_DIRECT with FUSE_ASYNC_DIO (libfuse, fuser and faultfs ask for it)
//! an io-wq worker sends each read as a background request and returns (-EIOCBQUEUED): nobody
//! waits for the request. Once `max_background` of them are out (12 by default, 16 by fuser)
//! the connection is `blocked`, and the next worker sleeps in `fuse_get_req` ->
//! `wait_event_killable_exclusive(fc->blocked_waitq)` until the server answers one. A worker
//! thread terminated with more reads in flight than that waited for the server in its exit
//! (adversary-s21b: window 64, 16 held; 40 lone reads too), and Node's main thread, joining it
//! in `worker.terminate()`, with it. A server without async DIO sleeps the io-wq worker in
//! `request_wait_answer` (killable, then uninterruptible once the server read the request).
//! Network filesystems sleep killably too (NFS's RPC waits are TASK_KILLABLE). A process exit
//! is not affected: its SIGKILL ends killable sleeps (`process.exit()` with reads held ends).
//!
//! So a worker's ops on may-block files are submitted by this thread, whose io-wq workers are
//! its own: the worker exits at once (its engine's teardown cancels, waits `EXIT_WAIT`, then
//! hands this driver to the process-wide reaper with the ops' memory), and this thread keeps the
//! ring until every op completed, then ends and closes it. The JS thread only queues ops here
//! (a mutex and an eventfd write) and reaps completions from a list (a mutex): it never enters
//! this ring. Ops on other files never come here.
//!
//! Memory: each op's pointers (buffers, iovec array) are the engine's record's, kept until the
//! op's completion is reaped from [`MayBlockRing::reap`], which this thread fills only after the
//! kernel posted it; at teardown the reaper keeps them until then (`crate::reaper`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use odirect_core::io::ring::{ring_placement, LocalRing};
use odirect_core::io::{eventfd, BackendKind, Driver, FdFacts, Placement, Unavailable};
use odirect_core::op::{OpKind, OpRef, Segment};

/// `ODIRECT_MAY_BLOCK_THREAD=0`: the may-block ring is made and driven by the worker's own JS
/// thread (a COOP_TASKRUN ring, as before: its exit waits for the server; for A/B).
pub(crate) fn own_thread() -> bool {
    crate::env::on_unless_zero("ODIRECT_MAY_BLOCK_THREAD")
}

/// An op handed to the thread: what `Driver::push` got, by value (the kind's pointers, the
/// iovec array's address), never the memory itself.
struct Sub {
    key: u64,
    kind: OpKind,
    iov: Option<(*const libc::iovec, usize)>,
    rw_flags: i32,
    punt: bool,
    link: bool,
}

// SAFETY: a Sub carries pointer values only; the memory they name is kept by the engine's op
// record until the op's completion is reaped (`Driver::push`'s contract), and only the ring's
// thread builds the submission from them.
unsafe impl Send for Sub {}

/// One thing the JS thread asks of the ring's thread.
enum Ask {
    Sub(Sub),
    Cancel(u64),
    CancelAll,
}

/// What the JS thread asks of the ring's thread, taken whole at each of its turns and done in
/// the order asked: a cancel of key K asked before K's completion was reaped, then a new op
/// that took the freed key K (the engine's keys are reused at once), cancels the old op only
/// (was: every op of the turn went in before every cancel, and the new op was cancelled).
#[derive(Default)]
struct Inbox {
    asks: Vec<Ask>,
    /// The driver was dropped: end once nothing is in the ring.
    stop: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    /// Completions for the owner's next reap.
    done: Mutex<Vec<(u64, i64)>>,
    /// The thread's eventfd: the ring's completions and the inbox's news wake it.
    wake: OwnedFd,
    /// The owner's eventfd, signalled when `done` got completions (kept open by this `Arc`
    /// while the thread may signal it).
    owner: Arc<OwnedFd>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The driver in the engine's may-block slot (see the module docs).
pub(crate) struct MayBlockRing {
    shared: Arc<Shared>,
    /// Pushed since the last `submit`.
    staged: Vec<Sub>,
    inflight: usize,
    ftruncate: bool,
    setup: String,
    thread: Option<JoinHandle<()>>,
}

impl MayBlockRing {
    /// Starts the thread, which makes a ring of `depth` entries; the ring's completions are
    /// announced on `owner`. Err when the thread or the ring cannot be made.
    pub(crate) fn start(depth: u32, owner: Arc<OwnedFd>) -> Result<MayBlockRing, Unavailable> {
        let unavailable = |e: std::io::Error| Unavailable {
            errno: e.raw_os_error().unwrap_or(libc::EAGAIN),
            reason: format!("no thread for the may-block ring: {e}"),
        };
        let wake = eventfd::new(false).map_err(unavailable)?;
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            done: Mutex::new(Vec::new()),
            wake,
            owner,
        });
        let (tx, rx) = mpsc::channel();
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("odirect-mayblk".into())
            .spawn(move || {
                // Made here: the ring's submitter (SINGLE_ISSUER, its io-wq) is this thread.
                match LocalRing::with_eventfd(depth, theirs.wake.as_raw_fd()) {
                    Ok(ring) => {
                        let _ = tx.send(Ok((ring.supports_ftruncate(), ring.describe())));
                        run(&theirs, ring);
                    }
                    Err(u) => {
                        let _ = tx.send(Err(u));
                    }
                }
            })
            .map_err(unavailable)?;
        match rx.recv() {
            Ok(Ok((ftruncate, setup))) => Ok(MayBlockRing {
                shared,
                staged: Vec::new(),
                inflight: 0,
                ftruncate,
                setup,
                thread: Some(thread),
            }),
            Ok(Err(u)) => {
                let _ = thread.join();
                Err(u)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Unavailable {
                    errno: libc::EIO,
                    reason: "the may-block ring's thread ended before making its ring".into(),
                })
            }
        }
    }

    /// Hands what was pushed (and `f`'s change) to the thread and wakes it.
    fn send(&mut self, f: impl FnOnce(&mut Inbox)) {
        {
            let mut inbox = lock(&self.shared.inbox);
            inbox.asks.extend(self.staged.drain(..).map(Ask::Sub));
            f(&mut inbox);
        }
        eventfd::signal(self.shared.wake.as_raw_fd());
    }
}

/// The thread: takes the inbox into the ring, reaps the ring into `done`, sleeps on its eventfd.
fn run(shared: &Shared, mut ring: LocalRing) {
    let wake = shared.wake.as_raw_fd();
    let mut raw: Vec<(u64, i64)> = Vec::new();
    let mut stop = false;
    loop {
        // Posts completions waiting as task work before the reset (as the engine's wake-up).
        ring.prepare_reap();
        eventfd::drain(wake);
        let inbox = std::mem::take(&mut *lock(&shared.inbox));
        stop |= inbox.stop;
        for ask in inbox.asks {
            let s = match ask {
                Ask::Sub(s) => s,
                Ask::Cancel(k) => {
                    ring.cancel(k);
                    continue;
                }
                Ask::CancelAll => {
                    ring.cancel_all();
                    continue;
                }
            };
            // SAFETY: the array the engine's record holds (its length with it), alive until the
            // op's completion is reaped (`Driver::push`'s contract).
            let iov = s
                .iov
                .map(|(p, n)| unsafe { std::slice::from_raw_parts(p, n) });
            let op = OpRef {
                key: s.key,
                kind: &s.kind,
                iov,
                fixed: None,
                rw_flags: s.rw_flags,
                punt: s.punt,
                link: s.link,
            };
            // SAFETY: the op's memory is the engine's record's until its completion is reaped
            // (`Driver::push`'s contract, passed on); no fixed buffer.
            if let Err(e) = unsafe { ring.push(&op) } {
                raw.push((s.key, -(e.raw_os_error().unwrap_or(libc::EINVAL) as i64)));
            }
        }
        ring.submit();
        ring.reap(&mut raw);
        if !raw.is_empty() {
            lock(&shared.done).append(&mut raw);
            eventfd::signal(shared.owner.as_raw_fd());
        }
        if stop && ring.inflight() == 0 {
            // Nothing in the kernel: this thread's exit waits for no io-wq worker's op.
            return;
        }
        if ring.pending() {
            continue;
        }
        let mut p = libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd; sleeps until the eventfd is signalled (EINTR: loops).
        unsafe { libc::poll(&mut p, 1, -1) };
    }
}

impl Drop for MayBlockRing {
    /// Ends the thread: dropped only with nothing in flight (teardown keeps a busy driver for
    /// the reaper), so it ends at once, closing its ring and eventfd.
    fn drop(&mut self) {
        self.send(|i| i.stop = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Driver for MayBlockRing {
    fn kind(&self) -> BackendKind {
        BackendKind::IoUring
    }

    /// As the ring's ([`ring_placement`]): ops on may-block descriptors are punted (IOSQE_ASYNC:
    /// the thread never sleeps in a submission either); ftruncate only where the kernel has
    /// IORING_OP_FTRUNCATE.
    fn placement(&self, op: &OpKind, facts: FdFacts) -> Placement {
        ring_placement(self.ftruncate, op, facts)
    }

    unsafe fn push(&mut self, op: &OpRef<'_>) -> std::io::Result<()> {
        if matches!(op.kind, OpKind::Ftruncate { .. }) && !self.ftruncate {
            return Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        self.staged.push(Sub {
            key: op.key,
            kind: op.kind.clone(),
            iov: op.iov.map(|v| (v.as_ptr(), v.len())),
            rw_flags: op.rw_flags,
            punt: op.punt,
            link: op.link,
        });
        self.inflight += 1;
        Ok(())
    }

    fn submit(&mut self) {
        if !self.staged.is_empty() {
            self.send(|_| {});
        }
    }

    fn reap(&mut self, out: &mut Vec<(u64, i64)>) {
        let mut done = lock(&self.shared.done);
        self.inflight -= done.len();
        out.append(&mut done);
    }

    fn cancel(&mut self, key: u64) {
        self.send(|i| i.asks.push(Ask::Cancel(key)));
    }

    fn cancel_all(&mut self) {
        self.send(|i| i.asks.push(Ask::CancelAll));
    }

    /// Cancels everything and waits until every op completed (the owner's eventfd is left
    /// as it is: its completions are collected here).
    fn wait_all(&mut self, out: &mut Vec<(u64, i64)>) {
        self.cancel_all();
        loop {
            self.reap(out);
            if self.inflight == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Its completions come to `reap` from any thread: this driver's thread posts them.
    fn orphan(&mut self) -> bool {
        true
    }

    fn inflight(&self) -> usize {
        self.inflight
    }

    /// Buffers are registered with the thread's own ring only.
    unsafe fn register_buffers(&mut self, _bufs: &[Segment]) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    fn unregister_buffers(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn links(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("{}+own_thread", self.setup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test at a time: each looks at the threads named "odirect-mayblk".
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Waits (bounded) until the owner's eventfd says completions are there, then reaps them.
    fn reaped(r: &mut MayBlockRing, owner: &OwnedFd, want: usize) -> Vec<(u64, i64)> {
        let mut out = Vec::new();
        while out.len() < want {
            let mut p = libc::pollfd {
                fd: owner.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd; 10 s at most (a failure, not a pace).
            let n = unsafe { libc::poll(&mut p, 1, 10_000) };
            assert!(n > 0, "no completion announced in 10 s");
            eventfd::drain(owner.as_raw_fd());
            r.reap(&mut out);
        }
        out
    }

    #[test]
    fn pipe_reads_complete_and_cancel_through_the_thread_which_ends_on_drop() {
        let _one = lock(&SERIAL);
        let owner = Arc::new(eventfd::new(false).unwrap());
        let mut r = MayBlockRing::start(8, owner.clone()).unwrap();
        assert!(r.describe().ends_with("+own_thread"), "{}", r.describe());
        let mut fds = [0; 2];
        // SAFETY: fds is a live array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let mut a = [0u8; 4];
        let mut b = [0u8; 4];
        let read = |buf: &mut [u8; 4]| OpKind::Read {
            fd: fds[0],
            ptr: buf.as_mut_ptr(),
            len: 4,
            offset: u64::MAX,
            buf_index: None,
        };
        let (ka, kb) = (read(&mut a), read(&mut b));
        let op = |key, kind| OpRef {
            punt: true,
            ..OpRef::new(key, kind)
        };
        // SAFETY: `a` and `b` outlive both ops (their completions are reaped below).
        unsafe {
            r.push(&op(1, &ka)).unwrap();
            r.push(&op(2, &kb)).unwrap();
        }
        r.submit();
        assert_eq!(r.inflight(), 2);
        // SAFETY: writes 4 bytes from a live array to the pipe.
        assert_eq!(
            unsafe { libc::write(fds[1], b"data".as_ptr().cast(), 4) },
            4
        );
        let first = reaped(&mut r, &owner, 1);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1, 4, "{first:?}");
        let other = if first[0].0 == 1 { 2 } else { 1 };
        r.cancel(other);
        let second = reaped(&mut r, &owner, 1);
        assert_eq!(second, vec![(other, -(libc::ECANCELED as i64))]);
        assert_eq!(r.inflight(), 0);
        assert_eq!(&if first[0].0 == 1 { a } else { b }, b"data");
        // Threads named so, less the io-wq workers the thread makes (named after it until they
        // first run: PF_IO_WORKER, 0x10, in the flags field of /proc's stat).
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
                .filter(|s| {
                    let close = s.rfind(')').unwrap_or(0);
                    let named =
                        s.get(s.find('(').unwrap_or(0) + 1..close) == Some("odirect-mayblk");
                    let flags: u64 = s[close + 2..]
                        .split(' ')
                        .nth(6)
                        .and_then(|f| f.parse().ok())
                        .unwrap_or(0);
                    named && flags & 0x10 == 0
                })
                .count()
        };
        assert_eq!(threads(), 1);
        drop(r);
        assert_eq!(threads(), 0, "the thread ended with the driver's drop");
        // SAFETY: closing the pipe made above.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }

    /// The system call the thread named "odirect-mayblk" is in now (/proc's syscall file).
    fn thread_syscall() -> Option<i64> {
        for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == "odirect-mayblk" {
                let sc = std::fs::read_to_string(t.path().join("syscall")).ok()?;
                return sc.split(' ').next()?.trim().parse().ok();
            }
        }
        None
    }

    #[test]
    fn a_cancel_asked_before_its_key_was_reused_does_not_cancel_the_new_op() {
        let _one = lock(&SERIAL);
        let owner = Arc::new(eventfd::new(false).unwrap());
        let mut r = MayBlockRing::start(8, owner.clone()).unwrap();
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: fds is a live array of two ints.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            fds
        };
        let (a, b) = (pipe(), pipe());
        let put = |fd: i32, data: &[u8; 4]| {
            // SAFETY: writes 4 bytes from a live array to a pipe.
            assert_eq!(unsafe { libc::write(fd, data.as_ptr().cast(), 4) }, 4);
        };
        let (mut x, mut y, mut z) = ([0u8; 4], [0u8; 4], [0u8; 4]);
        let read = |fd: i32, buf: &mut [u8; 4]| OpKind::Read {
            fd,
            ptr: buf.as_mut_ptr(),
            len: 4,
            offset: u64::MAX,
            buf_index: None,
        };
        let (kx, ky, kz) = (read(a[0], &mut x), read(b[0], &mut y), read(a[0], &mut z));
        let op = |key, kind| OpRef {
            punt: true,
            ..OpRef::new(key, kind)
        };
        // SAFETY: x, y and z outlive the ops (their completions are reaped below).
        unsafe {
            r.push(&op(1, &kx)).unwrap();
            r.push(&op(2, &ky)).unwrap();
        }
        r.submit();
        put(a[1], b"aaaa");
        // Op 1's completion is announced, not reaped yet.
        let mut p = libc::pollfd {
            fd: owner.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd; 10 s at most (a failure, not a pace).
        assert!(unsafe { libc::poll(&mut p, 1, 10_000) } > 0);
        eventfd::drain(owner.as_raw_fd());
        let shared = r.shared.clone();
        let mut done = lock(&shared.done);
        assert_eq!(*done, vec![(1, 4)]);
        // The thread, with op 2's completion, waits for `done` (held here) before its next turn.
        put(b[1], b"bbbb");
        let mut tries = 0;
        while thread_syscall() != Some(libc::SYS_futex) {
            tries += 1;
            assert!(tries < 10_000, "the thread never waited for the lock");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // A cancel of op 1 (a timeout fired as it completed), then op 1 reaped (as `reap`
        // does), its key freed and taken by a new op (the engine's free list), all before the
        // thread's next turn.
        r.cancel(1);
        let got = std::mem::take(&mut *done);
        r.inflight -= got.len();
        // SAFETY: as above.
        unsafe { r.push(&op(1, &kz)).unwrap() };
        r.submit();
        drop(done);
        put(a[1], b"cccc");
        let mut rest = reaped(&mut r, &owner, 2);
        rest.sort();
        assert_eq!(rest, vec![(1, 4), (2, 4)], "the new op 1 was not cancelled");
        assert_eq!((&x, &y, &z), (b"aaaa", b"bbbb", b"cccc"));
        drop(r);
        for fd in a.into_iter().chain(b) {
            // SAFETY: closing the pipes made above.
            unsafe { libc::close(fd) };
        }
    }
}
