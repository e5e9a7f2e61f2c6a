//! The thread-pool driver: the portable fallback, and where the other drivers send what they
//! cannot run (see [`super::Placement::Elsewhere`]).
//!
//! `threads` worker threads share one mutex-guarded FIFO queue. Each op is one blocking system
//! call (pread, pwrite, preadv, pwritev, fsync, fdatasync, fallocate, ftruncate, close), retried
//! only on EINTR; short transfers are reported as they are (callers handle them). Workers post
//! completions to a queue and signal the driver's eventfd; [`Pool::reap`](super::Driver::reap)
//! drains the queue on the owner's thread.
//!
//! A worker that finds more work queued behind the op it just finished keeps its completion and
//! runs the next op, then posts the whole batch at once: batches are posted when the queue runs
//! dry, when [`MAX_BATCH`] completions are held, or when the oldest one has been held for
//! [`MAX_HOLD`], so batching never adds much latency.
//!
//! Cancellation: an op still in the queue is taken out and completed with -ECANCELED without
//! running, at once: by an idle worker, or — when every worker is busy (possibly blocked for
//! long on a hung NFS or FUSE server, exactly when callers abort) — by a short-lived "reaper"
//! thread (one at a time; drop joins it). An op already running completes normally.
//!
//! Dropping the pool cancels what is queued and joins the workers, so it blocks until the ops
//! running finish; a caller that must not wait (an op stuck in a hung filesystem) keeps the
//! pool alive instead (the napi engine hands it to the process at exit).
//!
//! The mlock registration ([`LockedBuffers`]) is shared with the AIO driver.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{eventfd, last_errno, retry_eintr, BackendKind, Driver, FdFacts, Placement};
use crate::op::{OpKind, OpRef, Segment};

/// A worker hands its completions to the sink once it holds this many.
const MAX_BATCH: usize = 32;
/// ... or once the oldest one it holds is this old.
const MAX_HOLD: Duration = Duration::from_micros(500);
/// Upper bound on worker threads, whatever the options say.
const MAX_THREADS: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Converts a file offset or length to `off_t`, or says EINVAL.
fn to_off(v: u64) -> Result<libc::off_t, i64> {
    // On 32-bit targets without large-file off_t this limits offsets to 2 GiB; every 64-bit
    // target has a 64-bit off_t.
    libc::off_t::try_from(v).map_err(|_| -(libc::EINVAL as i64))
}

/// Runs `f` until it stops failing with EINTR; returns its result, or `-errno`.
fn retry<F: FnMut() -> isize>(mut f: F) -> i64 {
    retry_eintr(|| f() as i64).map_or_else(|e| -(e as i64), |n| n as i64)
}

/// A positioned transfer's result, or — when the file has no position (ESPIPE: a pipe, FIFO,
/// socket or character device, which io_uring and aio read at their stream position) — the
/// result of the same transfer without one.
trait OrUnpositioned {
    fn or_unpositioned(self, f: impl FnMut() -> isize) -> i64;
}

impl OrUnpositioned for i64 {
    fn or_unpositioned(self, f: impl FnMut() -> isize) -> i64 {
        if self == -(libc::ESPIPE as i64) {
            retry(f)
        } else {
            self
        }
    }
}

fn iovecs(segs: &[Segment]) -> Result<Vec<libc::iovec>, i64> {
    if segs.len() > libc::c_int::MAX as usize {
        return Err(-(libc::EINVAL as i64));
    }
    Ok(segs
        .iter()
        .map(|s| libc::iovec {
            iov_base: s.ptr as *mut libc::c_void,
            iov_len: s.len,
        })
        .collect())
}

/// Runs one op: a read or write with `rw_flags` goes through preadv2 / pwritev2, anything else
/// through [`execute`].
///
/// # Safety
/// As for [`execute`].
unsafe fn execute_op(kind: &OpKind, rw_flags: i32) -> i64 {
    let one;
    let (write, fd, segs, offset): (_, _, &[Segment], _) = match (kind, rw_flags) {
        (_, 0) => {
            // SAFETY: forwarded contract.
            return unsafe { execute(kind) };
        }
        (
            &OpKind::Write {
                fd,
                ptr,
                len,
                offset,
                ..
            },
            _,
        ) => {
            one = [Segment {
                ptr: ptr as *mut u8,
                len,
            }];
            (true, fd, &one, offset)
        }
        (
            &OpKind::Read {
                fd,
                ptr,
                len,
                offset,
                ..
            },
            _,
        ) => {
            one = [Segment { ptr, len }];
            (false, fd, &one, offset)
        }
        (OpKind::Writev { fd, segs, offset }, _) => (true, *fd, segs, *offset),
        (OpKind::Readv { fd, segs, offset }, _) => (false, *fd, segs, *offset),
        // SAFETY: forwarded contract.
        _ => return unsafe { execute(kind) },
    };
    let (off, iov) = match (to_off(offset), iovecs(segs)) {
        (Ok(o), Ok(v)) => (o, v),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let n = iov.len() as libc::c_int;
    if write {
        // SAFETY: `iov` is a live local array describing segments the caller guarantees valid
        // for reads until completion; pwritev2 only reads them.
        retry(|| unsafe { crate::sys::pwritev2(fd, iov.as_ptr(), n, off, rw_flags) })
    } else {
        // SAFETY: as above, valid for writes and unshared until completion (Driver::push).
        retry(|| unsafe { crate::sys::preadv2(fd, iov.as_ptr(), n, off, rw_flags) })
    }
}

/// Runs one op as one blocking system call (retried on EINTR) and returns bytes or `-errno`.
/// Public for the engine's inline tmpfs reads/writes (the addon's `Inner::rw_inline`), which
/// make the same `pread`/`pwrite` on the JS thread.
///
/// # Safety
/// The pointers in `kind` must be valid for the access the op names for the duration of the
/// call, and not be used concurrently by anyone else (the contract of `Driver::push`).
pub unsafe fn execute(kind: &OpKind) -> i64 {
    match *kind {
        OpKind::Read {
            fd,
            ptr,
            len,
            offset,
            ..
        } => {
            let off = match to_off(offset) {
                Ok(o) => o,
                Err(e) => return e,
            };
            // SAFETY: the caller guarantees ptr[..len] is valid for writes and unshared until the
            // op completes (Driver::push contract); pread writes at most len bytes there.
            retry(|| unsafe { libc::pread(fd, ptr as *mut libc::c_void, len, off) })
                // SAFETY: as for pread (same buffer, same bound).
                .or_unpositioned(|| unsafe { libc::read(fd, ptr as *mut libc::c_void, len) })
        }
        OpKind::Write {
            fd,
            ptr,
            len,
            offset,
            ..
        } => {
            let off = match to_off(offset) {
                Ok(o) => o,
                Err(e) => return e,
            };
            // SAFETY: the caller guarantees ptr[..len] is valid for reads until the op completes;
            // pwrite only reads it.
            retry(|| unsafe { libc::pwrite(fd, ptr as *const libc::c_void, len, off) })
                // SAFETY: as for pwrite.
                .or_unpositioned(|| unsafe { libc::write(fd, ptr as *const libc::c_void, len) })
        }
        OpKind::Readv {
            fd,
            ref segs,
            offset,
        } => {
            let (off, iov) = match (to_off(offset), iovecs(segs)) {
                (Ok(o), Ok(v)) => (o, v),
                (Err(e), _) | (_, Err(e)) => return e,
            };
            // SAFETY: `iov` is a live local array of iov.len() entries describing segments the
            // caller guarantees valid for writes until completion.
            retry(|| unsafe { libc::preadv(fd, iov.as_ptr(), iov.len() as libc::c_int, off) })
                // SAFETY: as for preadv (the same live iovec array).
                .or_unpositioned(|| unsafe {
                    libc::readv(fd, iov.as_ptr(), iov.len() as libc::c_int)
                })
        }
        OpKind::Writev {
            fd,
            ref segs,
            offset,
        } => {
            let (off, iov) = match (to_off(offset), iovecs(segs)) {
                (Ok(o), Ok(v)) => (o, v),
                (Err(e), _) | (_, Err(e)) => return e,
            };
            // SAFETY: `iov` is a live local array of iov.len() entries describing segments the
            // caller guarantees valid for reads until completion.
            retry(|| unsafe { libc::pwritev(fd, iov.as_ptr(), iov.len() as libc::c_int, off) })
                // SAFETY: as for pwritev (the same live iovec array).
                .or_unpositioned(|| unsafe {
                    libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int)
                })
        }
        OpKind::Fsync { fd, datasync } => retry(|| sync_fd(fd, datasync) as isize),
        OpKind::Fallocate {
            fd,
            mode,
            offset,
            len,
        } => fallocate(fd, mode, offset, len),
        OpKind::Ftruncate { fd, len } => {
            let len = match to_off(len) {
                Ok(l) => l,
                Err(e) => return e,
            };
            // SAFETY: ftruncate takes no memory; a bad fd is reported as EBADF.
            retry(|| unsafe { libc::ftruncate(fd, len) as isize })
        }
        OpKind::Close { fd } => {
            // Not retried on EINTR: Linux releases the descriptor even then, and a retry could
            // close a descriptor that another thread has just been given. EINTR therefore
            // means "closed" here.
            // SAFETY: close takes no memory; the caller hands the descriptor over to this op.
            let r = unsafe { libc::close(fd) };
            if r == 0 {
                0
            } else {
                match last_errno() {
                    libc::EINTR => 0,
                    e => -(e as i64),
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn sync_fd(fd: libc::c_int, datasync: bool) -> libc::c_int {
    // SAFETY: fsync/fdatasync take no memory; a bad fd is reported as EBADF.
    unsafe {
        if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_fd(fd: libc::c_int, _datasync: bool) -> libc::c_int {
    // fdatasync is missing or unreliable outside Linux (macOS); fsync is the safe superset.
    // SAFETY: fsync takes no memory; a bad fd is reported as EBADF.
    unsafe { libc::fsync(fd) }
}

#[cfg(target_os = "linux")]
fn fallocate(fd: libc::c_int, mode: i32, offset: u64, len: u64) -> i64 {
    let (off, len) = match (to_off(offset), to_off(len)) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    // SAFETY: fallocate takes no memory; a bad fd or mode is reported as an errno.
    retry(|| unsafe { libc::fallocate(fd, mode, off, len) as isize })
}

/// macOS has no fallocate: mode 0 (allocate and extend) is emulated with F_PREALLOCATE past the
/// end of the file followed by ftruncate to the new size; other modes (punch hole, keep size,
/// zero range...) are -EOPNOTSUPP.
#[cfg(target_vendor = "apple")]
fn fallocate(fd: libc::c_int, mode: i32, offset: u64, len: u64) -> i64 {
    if mode != 0 {
        return -(libc::EOPNOTSUPP as i64);
    }
    let end = match offset.checked_add(len).map(to_off) {
        Some(Ok(e)) => e,
        _ => return -(libc::EFBIG as i64),
    };
    // SAFETY: an all-zero `stat` is a valid value; fstat fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live local of the right type.
    let r = retry(|| unsafe { libc::fstat(fd, &mut st) as isize });
    if r < 0 {
        return r;
    }
    if end <= st.st_size {
        // Allocation inside the file cannot be asked for on APFS/HFS+; the range exists.
        return 0;
    }
    let mut store = libc::fstore_t {
        fst_flags: libc::F_ALLOCATECONTIG | libc::F_ALLOCATEALL,
        fst_posmode: libc::F_PEOFPOSMODE,
        fst_offset: 0,
        fst_length: end - st.st_size,
        fst_bytesalloc: 0,
    };
    // SAFETY: `store` is a live, initialized fstore_t, as F_PREALLOCATE expects.
    let mut r = retry(|| unsafe {
        libc::fcntl(fd, libc::F_PREALLOCATE, &mut store as *mut libc::fstore_t) as isize
    });
    if r < 0 {
        // No contiguous run that large: accept a fragmented allocation.
        store.fst_flags = libc::F_ALLOCATEALL;
        // SAFETY: as above.
        r = retry(|| unsafe {
            libc::fcntl(fd, libc::F_PREALLOCATE, &mut store as *mut libc::fstore_t) as isize
        });
    }
    if r < 0 {
        return r;
    }
    // SAFETY: ftruncate takes no memory.
    retry(|| unsafe { libc::ftruncate(fd, end) as isize })
}

#[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
fn fallocate(_fd: libc::c_int, _mode: i32, _offset: u64, _len: u64) -> i64 {
    -(libc::EOPNOTSUPP as i64)
}

/// Memory locked with mlock for `register_buffers`; unlocked on drop.
pub(crate) struct LockedBuffers {
    /// Page-rounded (address, length) pairs.
    regions: Vec<(usize, usize)>,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl LockedBuffers {
    /// mlocks every segment (rounded out to whole pages). On failure unlocks what it locked and
    /// returns the errno (ENOMEM or EPERM when RLIMIT_MEMLOCK is too low).
    ///
    /// # Safety
    /// The segments must be mapped memory that stays valid until the returned value is dropped.
    pub(crate) unsafe fn lock(bufs: &[Segment]) -> io::Result<LockedBuffers> {
        let page = page_size();
        let mut locked = LockedBuffers {
            regions: Vec::with_capacity(bufs.len()),
        };
        for s in bufs {
            if s.len == 0 {
                continue;
            }
            let start = s.ptr as usize & !(page - 1);
            let end = (s.ptr as usize)
                .checked_add(s.len)
                .and_then(|e| e.checked_add(page - 1))
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?
                & !(page - 1);
            // SAFETY: mlock only changes the residency of the pages; the caller guarantees they
            // are mapped. On error nothing is locked for this range.
            let r = unsafe { libc::mlock(start as *const libc::c_void, end - start) };
            if r != 0 {
                // `locked` is dropped here, unlocking the earlier segments.
                return Err(io::Error::last_os_error());
            }
            locked.regions.push((start, end - start));
        }
        Ok(locked)
    }
}

impl LockedBuffers {
    /// Replaces the set in `slot` by `bufs`, locked (the old set is unlocked first: the new one
    /// may overlap it, and munlock is not counted).
    ///
    /// # Safety
    /// As for [`LockedBuffers::lock`], until `slot` is emptied or replaced.
    pub(crate) unsafe fn relock(
        slot: &mut Option<LockedBuffers>,
        bufs: &[Segment],
    ) -> io::Result<()> {
        *slot = None;
        // SAFETY: forwarded contract.
        *slot = Some(unsafe { LockedBuffers::lock(bufs)? });
        Ok(())
    }
}

impl Drop for LockedBuffers {
    fn drop(&mut self) {
        for &(addr, len) in &self.regions {
            // SAFETY: munlock only changes residency; these exact ranges were locked by us. If
            // the memory has been unmapped meanwhile munlock fails with ENOMEM, harmlessly.
            unsafe {
                libc::munlock(addr as *const libc::c_void, len);
            }
        }
    }
}

/// An op as the workers hold it.
struct Job {
    key: u64,
    kind: OpKind,
    rw_flags: i32,
}

// SAFETY: a Job only carries raw pointers whose validity the pusher guarantees until the
// completion is reaped (the contract of `Driver::push`); moving the pointer values to a worker
// thread does not access the memory.
unsafe impl Send for Job {}

struct State {
    queue: VecDeque<Job>,
    /// Jobs taken out of the queue by `cancel` or drop: the next free worker (or the reaper
    /// thread) completes them with -ECANCELED without running them.
    cancelled: Vec<Job>,
    shutdown: bool,
    /// Workers waiting for work.
    idle: usize,
    /// A reaper thread is draining `cancelled`.
    reaper: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    /// Completions posted by the workers, not reaped yet.
    done: Mutex<Vec<(u64, i64)>>,
    /// Signalled with every post (for `wait_all`).
    posted: Condvar,
    /// Signalled with every post (for the owner's poll). Kept open by this `Arc` as long as a
    /// worker may post, even past the owner's end.
    eventfd: Arc<OwnedFd>,
}

impl Shared {
    fn post(&self, batch: &mut Vec<(u64, i64)>) {
        lock(&self.done).append(batch);
        self.posted.notify_all();
        eventfd::signal(self.eventfd.as_raw_fd());
    }
}

fn cancelled(job: &Job) -> (u64, i64) {
    (job.key, -(libc::ECANCELED as i64))
}

pub struct Pool {
    shared: Arc<Shared>,
    /// Pushed, not submitted yet.
    staged: Vec<Job>,
    /// Pushed, not reaped yet.
    inflight: usize,
    workers: Vec<JoinHandle<()>>,
    /// Reaper threads started by `cancel` (joined by drop).
    reapers: Vec<JoinHandle<()>>,
    locked: Option<LockedBuffers>,
}

impl Pool {
    /// A pool of `threads` workers (clamped to 1..=1024) that signal `eventfd` when they post
    /// completions. With no thread at all (none could be started), `submit` runs the ops itself.
    pub fn new(threads: usize, eventfd: Arc<OwnedFd>) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                cancelled: Vec::new(),
                shutdown: false,
                idle: 0,
                reaper: false,
            }),
            work: Condvar::new(),
            done: Mutex::new(Vec::new()),
            posted: Condvar::new(),
            eventfd,
        });
        let n = threads.clamp(1, MAX_THREADS);
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let sh = shared.clone();
            match std::thread::Builder::new()
                .name(format!("odirect-pool-{i}"))
                .spawn(move || worker(sh))
            {
                Ok(h) => workers.push(h),
                // Run with the threads we got; with none, `submit` runs ops itself (below).
                Err(e) => {
                    eprintln!("odirect: could not start thread-pool worker {i}: {e}");
                    break;
                }
            }
        }
        Pool {
            shared,
            staged: Vec::new(),
            inflight: 0,
            workers,
            reapers: Vec::new(),
            locked: None,
        }
    }

    /// Number of worker threads actually running.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Hands the jobs in `st.cancelled` to someone who completes them now: an idle worker, the
    /// running reaper, or a new reaper thread when every worker is busy (maybe blocked for long:
    /// the caller must not wait for them).
    fn complete_cancelled(
        shared: &Arc<Shared>,
        mut st: MutexGuard<'_, State>,
        reapers: &mut Vec<JoinHandle<()>>,
    ) {
        if st.cancelled.is_empty() {
            return;
        }
        if st.idle > 0 || st.reaper || st.shutdown {
            drop(st);
            shared.work.notify_one();
            return;
        }
        st.reaper = true;
        drop(st);
        let sh = shared.clone();
        reapers.retain(|h| !h.is_finished());
        match std::thread::Builder::new()
            .name("odirect-pool-cancel".into())
            .spawn(move || reaper(sh))
        {
            Ok(h) => reapers.push(h),
            // The next free worker completes them instead.
            Err(_) => lock(&shared.state).reaper = false,
        }
    }
}

fn is_data_op(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Read { .. } | OpKind::Write { .. } | OpKind::Readv { .. } | OpKind::Writev { .. }
    )
}

fn worker(shared: Arc<Shared>) {
    let mut done: Vec<(u64, i64)> = Vec::new();
    let mut held_since: Option<Instant> = None;
    let mut st = lock(&shared.state);
    loop {
        if !st.cancelled.is_empty() {
            // Posted at once, not held behind the next op (which may block for long: a pipe, a
            // hung FUSE or NFS server).
            done.extend(st.cancelled.drain(..).map(|j| cancelled(&j)));
            drop(st);
            held_since = None;
            shared.post(&mut done);
            st = lock(&shared.state);
            continue;
        }
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            if !done.is_empty() && !is_data_op(&job.kind) {
                // fsync, fallocate... can take long: do not keep finished ops waiting on them.
                held_since = None;
                shared.post(&mut done);
            }
            // SAFETY: `job` came through `Driver::push`, whose caller guarantees its memory and
            // descriptor stay valid until its completion is reaped, which is after the post below.
            let r = unsafe { execute_op(&job.kind, job.rw_flags) };
            done.push((job.key, r));
            held_since.get_or_insert_with(Instant::now);
            st = lock(&shared.state);
            let idle = st.queue.is_empty() && st.cancelled.is_empty();
            let full = done.len() >= MAX_BATCH;
            let old = held_since.is_some_and(|t| t.elapsed() >= MAX_HOLD);
            if idle || full || old {
                drop(st);
                held_since = None;
                shared.post(&mut done);
                st = lock(&shared.state);
            }
            continue;
        }
        if !done.is_empty() {
            drop(st);
            held_since = None;
            shared.post(&mut done);
            st = lock(&shared.state);
            continue;
        }
        if st.shutdown {
            break;
        }
        st.idle += 1;
        st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
        st.idle -= 1;
    }
}

/// Completes cancelled jobs while there are any, for `cancel` when no worker is idle.
fn reaper(shared: Arc<Shared>) {
    loop {
        let jobs = {
            let mut st = lock(&shared.state);
            if st.cancelled.is_empty() {
                st.reaper = false;
                return;
            }
            std::mem::take(&mut st.cancelled)
        };
        let mut done = jobs.iter().map(cancelled).collect();
        shared.post(&mut done);
    }
}

impl Driver for Pool {
    fn kind(&self) -> BackendKind {
        BackendKind::ThreadPool
    }

    fn placement(&self, _op: &OpKind, _facts: FdFacts) -> Placement {
        Placement::Inline
    }

    unsafe fn push(&mut self, op: &OpRef<'_>) -> io::Result<()> {
        self.staged.push(Job {
            key: op.key,
            kind: op.kind.clone(),
            rw_flags: op.rw_flags,
        });
        self.inflight += 1;
        Ok(())
    }

    fn submit(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.staged);
        if self.workers.is_empty() {
            // No worker thread could be started: run the ops here rather than lose them.
            let mut done = jobs
                .iter()
                // SAFETY: the caller's contract for `push` covers the op's memory and fd.
                .map(|j| (j.key, unsafe { execute_op(&j.kind, j.rw_flags) }))
                .collect();
            self.shared.post(&mut done);
            return;
        }
        let n = jobs.len();
        lock(&self.shared.state).queue.extend(jobs);
        if n == 1 {
            self.shared.work.notify_one();
        } else {
            self.shared.work.notify_all();
        }
    }

    fn reap(&mut self, out: &mut Vec<(u64, i64)>) {
        let mut done = lock(&self.shared.done);
        self.inflight -= done.len();
        out.append(&mut done);
    }

    fn cancel(&mut self, key: u64) {
        if let Some(pos) = self.staged.iter().position(|j| j.key == key) {
            let job = self.staged.remove(pos);
            self.shared.post(&mut vec![cancelled(&job)]);
            return;
        }
        let shared = &self.shared;
        let mut st = lock(&shared.state);
        let Some(pos) = st.queue.iter().position(|j| j.key == key) else {
            return;
        };
        let job = st.queue.remove(pos).expect("position is in range");
        st.cancelled.push(job);
        Pool::complete_cancelled(shared, st, &mut self.reapers);
    }

    fn cancel_all(&mut self) {
        let mut done: Vec<(u64, i64)> = self.staged.drain(..).map(|j| cancelled(&j)).collect();
        if !done.is_empty() {
            self.shared.post(&mut done);
        }
        let shared = &self.shared;
        let mut st = lock(&shared.state);
        let queued: Vec<Job> = st.queue.drain(..).collect();
        st.cancelled.extend(queued);
        Pool::complete_cancelled(shared, st, &mut self.reapers);
    }

    fn wait_all(&mut self, out: &mut Vec<(u64, i64)>) {
        self.cancel_all();
        loop {
            self.reap(out);
            if self.inflight == 0 {
                return;
            }
            let done = lock(&self.shared.done);
            if done.is_empty() {
                drop(
                    self.shared
                        .posted
                        .wait(done)
                        .unwrap_or_else(|p| p.into_inner()),
                );
            }
        }
    }

    fn inflight(&self) -> usize {
        self.inflight
    }

    unsafe fn register_buffers(&mut self, bufs: &[Segment]) -> io::Result<()> {
        // SAFETY: forwarded contract (the set stays locked until unregistration, a later
        // registration or drop).
        unsafe { LockedBuffers::relock(&mut self.locked, bufs) }
    }

    fn unregister_buffers(&mut self) -> io::Result<()> {
        self.locked = None;
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            let queued: Vec<Job> = st.queue.drain(..).collect();
            st.cancelled.extend(queued);
        }
        self.shared.work.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        for h in self.reapers.drain(..) {
            let _ = h.join();
        }
    }
}
