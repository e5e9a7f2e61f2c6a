//! Thread-pool backend: the portable fallback.
//!
//! `opts.threads` worker threads share one mutex-guarded FIFO queue. Each op is one blocking
//! system call (pread, pwrite, preadv, pwritev, fsync, fdatasync, fallocate, ftruncate, close),
//! retried only on EINTR; short transfers are reported as they are (callers handle them).
//!
//! A worker that finds more work queued behind the op it just finished keeps its completion and
//! runs the next op, then hands the whole batch to the sink at once: batches are flushed when the
//! queue runs dry, when [`MAX_BATCH`] completions are held, or when the oldest one has been held
//! for [`MAX_HOLD`], so batching never adds much latency.
//!
//! Cancellation: an op still in the queue is taken out and completed with -ECANCELED without
//! running, at once: by an idle worker, or — when every worker is busy (possibly blocked for
//! long on a hung NFS or FUSE server, exactly when callers abort) — by a short-lived "reaper"
//! thread (one at a time; shutdown joins it). An op already running completes normally.
//!
//! The blocking executor ([`execute`]), the mlock registration ([`LockedBuffers`]) and the
//! late-completion helper ([`deliver_late`]) are shared with the AIO backend.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use super::{Backend, BackendKind, BackendOptions};
use crate::op::{Completion, Op, OpKind, Segment, Sink};

/// A worker hands its completions to the sink once it holds this many.
const MAX_BATCH: usize = 32;
/// ... or once the oldest one it holds is this old.
const MAX_HOLD: Duration = Duration::from_micros(500);
/// Upper bound on worker threads, whatever the options say.
const MAX_THREADS: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The completion of `op` with `result`, timed now.
pub(crate) fn completion(op: &Op, result: i64) -> Completion {
    Completion {
        id: op.id,
        token: op.token,
        result,
        latency_ns: op.submitted.elapsed().as_nanos() as u64,
    }
}

/// Completes `ops` with `-errno` from a short-lived thread of their own, so that the sink is
/// still called from a backend thread (never from inside `submit`) even once the backend's own
/// threads are gone. Falls back to the calling thread only if no thread can be started.
pub(crate) fn deliver_late(sink: &Sink, ops: Vec<Op>, errno: i32) {
    if ops.is_empty() {
        return;
    }
    let done: Vec<Completion> = ops
        .iter()
        .map(|op| completion(op, -(errno as i64)))
        .collect();
    let s = sink.clone();
    let cell = Arc::new(Mutex::new(Some(done)));
    let c2 = cell.clone();
    let spawned = std::thread::Builder::new()
        .name("odirect-late".into())
        .spawn(move || {
            if let Some(d) = lock(&c2).take() {
                s(d);
            }
        });
    if spawned.is_err() {
        if let Some(d) = lock(&cell).take() {
            sink(d);
        }
    }
}

/// Converts a file offset or length to `off_t`, or says EINVAL.
fn to_off(v: u64) -> Result<libc::off_t, i64> {
    // On 32-bit targets without large-file off_t this limits offsets to 2 GiB; every 64-bit
    // target has a 64-bit off_t.
    libc::off_t::try_from(v).map_err(|_| -(libc::EINVAL as i64))
}

/// Runs `f` until it stops failing with EINTR; returns its result, or `-errno`.
fn retry<F: FnMut() -> isize>(mut f: F) -> i64 {
    loop {
        let r = f();
        if r >= 0 {
            return r as i64;
        }
        let e = last_errno();
        if e != libc::EINTR {
            return -(e as i64);
        }
    }
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

/// Runs `op`: a read or write with `rw_flags` goes through preadv2 / pwritev2, anything else
/// through [`execute`].
///
/// # Safety
/// As for [`execute`].
pub(crate) unsafe fn execute_op(op: &Op) -> i64 {
    let one;
    let (write, fd, segs, offset): (_, _, &[Segment], _) = match (&op.kind, op.rw_flags) {
        (_, 0) => {
            // SAFETY: forwarded contract.
            return unsafe { execute(&op.kind) };
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
        _ => return unsafe { execute(&op.kind) },
    };
    let (off, iov) = match (to_off(offset), iovecs(segs)) {
        (Ok(o), Ok(v)) => (o, v),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let n = iov.len() as libc::c_int;
    if write {
        // SAFETY: `iov` is a live local array describing segments the caller guarantees valid
        // for reads until completion; pwritev2 only reads them.
        retry(|| unsafe { crate::sys::pwritev2(fd, iov.as_ptr(), n, off, op.rw_flags) })
    } else {
        // SAFETY: as above, valid for writes and unshared until completion (Backend::submit).
        retry(|| unsafe { crate::sys::preadv2(fd, iov.as_ptr(), n, off, op.rw_flags) })
    }
}

/// Runs one op as one blocking system call (retried on EINTR) and returns bytes or `-errno`.
///
/// # Safety
/// The pointers in `kind` must be valid for the access the op names for the duration of the
/// call, and not be used concurrently by anyone else (the contract of `Backend::submit`).
pub(crate) unsafe fn execute(kind: &OpKind) -> i64 {
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
            // op completes (Backend::submit contract); pread writes at most len bytes there.
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

struct State {
    queue: VecDeque<Op>,
    /// Ops taken out of the queue by `cancel` or `shutdown`: the next free worker (or the
    /// reaper thread) completes them with -ECANCELED without running them.
    cancelled: Vec<Op>,
    shutdown: bool,
    /// Workers waiting for work.
    idle: usize,
    /// A reaper thread is draining `cancelled`.
    reaper: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    sink: Sink,
}

pub struct PoolBackend {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Reaper threads started by `cancel` (joined by shutdown).
    reapers: Mutex<Vec<JoinHandle<()>>>,
    worker_ids: Vec<ThreadId>,
    locked: Mutex<Option<LockedBuffers>>,
}

impl PoolBackend {
    pub fn new(sink: Sink, opts: &BackendOptions) -> PoolBackend {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                cancelled: Vec::new(),
                shutdown: false,
                idle: 0,
                reaper: false,
            }),
            work: Condvar::new(),
            sink,
        });
        let n = opts.threads.clamp(1, MAX_THREADS);
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
        let worker_ids = workers.iter().map(|h| h.thread().id()).collect();
        PoolBackend {
            shared,
            workers: Mutex::new(workers),
            reapers: Mutex::new(Vec::new()),
            worker_ids,
            locked: Mutex::new(None),
        }
    }

    /// Number of worker threads actually running.
    pub fn threads(&self) -> usize {
        self.worker_ids.len()
    }
}

fn is_data_op(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Read { .. } | OpKind::Write { .. } | OpKind::Readv { .. } | OpKind::Writev { .. }
    )
}

fn worker(shared: Arc<Shared>) {
    let mut done: Vec<Completion> = Vec::new();
    let mut held_since: Option<Instant> = None;
    let mut st = lock(&shared.state);
    loop {
        for op in st.cancelled.drain(..) {
            done.push(completion(&op, -(libc::ECANCELED as i64)));
            held_since.get_or_insert_with(Instant::now);
        }
        if let Some(op) = st.queue.pop_front() {
            drop(st);
            if !done.is_empty() && !is_data_op(&op.kind) {
                // fsync, fallocate... can take long: do not keep finished ops waiting on them.
                held_since = None;
                (shared.sink)(std::mem::take(&mut done));
            }
            // SAFETY: `op` came through `Backend::submit`, whose caller guarantees its memory
            // and descriptor stay valid until its completion is delivered, which happens below.
            let r = unsafe { execute_op(&op) };
            done.push(completion(&op, r));
            held_since.get_or_insert_with(Instant::now);
            st = lock(&shared.state);
            let idle = st.queue.is_empty() && st.cancelled.is_empty();
            let full = done.len() >= MAX_BATCH;
            let old = held_since.is_some_and(|t| t.elapsed() >= MAX_HOLD);
            if idle || full || old {
                drop(st);
                held_since = None;
                (shared.sink)(std::mem::take(&mut done));
                st = lock(&shared.state);
            }
            continue;
        }
        if !done.is_empty() {
            drop(st);
            held_since = None;
            (shared.sink)(std::mem::take(&mut done));
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

/// Completes cancelled ops while there are any, for `cancel` when no worker is idle.
fn reaper(shared: Arc<Shared>) {
    loop {
        let ops = {
            let mut st = lock(&shared.state);
            if st.cancelled.is_empty() {
                st.reaper = false;
                return;
            }
            std::mem::take(&mut st.cancelled)
        };
        let done = ops
            .iter()
            .map(|op| completion(op, -(libc::ECANCELED as i64)))
            .collect();
        (shared.sink)(done);
    }
}

impl Backend for PoolBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::ThreadPool
    }

    unsafe fn submit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let n = ops.len();
        {
            let mut st = lock(&self.shared.state);
            if st.shutdown {
                drop(st);
                deliver_late(&self.shared.sink, ops, libc::ESHUTDOWN);
                return;
            }
            if !self.worker_ids.is_empty() {
                st.queue.extend(ops);
                drop(st);
                if n == 1 {
                    self.shared.work.notify_one();
                } else {
                    self.shared.work.notify_all();
                }
                return;
            }
        }
        // No worker thread could be started: run the ops here rather than lose them.
        let done = ops
            .iter()
            // SAFETY: the caller's contract for `submit` covers the op's memory and fd.
            .map(|op| completion(op, unsafe { execute_op(op) }))
            .collect();
        (self.shared.sink)(done);
    }

    fn cancel(&self, id: u64) {
        let mut st = lock(&self.shared.state);
        let Some(pos) = st.queue.iter().position(|o| o.id == id) else {
            return;
        };
        let op = st.queue.remove(pos).expect("position is in range");
        st.cancelled.push(op);
        if st.idle > 0 || st.reaper || st.shutdown {
            // An idle worker (or the running reaper, or the winding-down workers) takes it.
            drop(st);
            self.shared.work.notify_one();
            return;
        }
        // Every worker is busy, maybe blocked for long: do not make the caller wait for them.
        st.reaper = true;
        drop(st);
        let sh = self.shared.clone();
        let mut reapers = lock(&self.reapers);
        reapers.retain(|h| !h.is_finished());
        match std::thread::Builder::new()
            .name("odirect-pool-cancel".into())
            .spawn(move || reaper(sh))
        {
            Ok(h) => reapers.push(h),
            // The next free worker completes it instead.
            Err(_) => lock(&self.shared.state).reaper = false,
        }
    }

    fn shutdown(&self) {
        {
            let mut st = lock(&self.shared.state);
            if !st.shutdown {
                st.shutdown = true;
                let queued: Vec<Op> = st.queue.drain(..).collect();
                st.cancelled.extend(queued);
            }
        }
        self.shared.work.notify_all();
        if self.worker_ids.contains(&std::thread::current().id()) {
            // Called from the sink on one of our workers: it cannot wait for itself. The workers
            // finish on their own; a later shutdown (or drop) from elsewhere joins them.
            return;
        }
        // Held while joining, so a concurrent second shutdown also waits for the end.
        let mut workers = lock(&self.workers);
        for h in workers.drain(..) {
            let _ = h.join();
        }
        for h in lock(&self.reapers).drain(..) {
            let _ = h.join();
        }
        drop(workers);
        *lock(&self.locked) = None;
    }

    unsafe fn register_buffers(&self, bufs: &[Segment]) -> io::Result<()> {
        if lock(&self.shared.state).shutdown {
            return Err(io::Error::from_raw_os_error(libc::ESHUTDOWN));
        }
        let mut cur = lock(&self.locked);
        // Unlock the old set first: the new one may overlap it, and munlock is not counted.
        *cur = None;
        // SAFETY: the caller guarantees the memory stays valid until unregistration or
        // shutdown, which is when the LockedBuffers is dropped.
        *cur = Some(unsafe { LockedBuffers::lock(bufs)? });
        Ok(())
    }

    fn unregister_buffers(&self) -> io::Result<()> {
        *lock(&self.locked) = None;
        Ok(())
    }
}

impl Drop for PoolBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<PoolBackend>();
}
