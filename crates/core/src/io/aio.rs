//! The Linux AIO driver, by raw system calls (no libaio.so): [`LocalAio`], one aio context
//! owned by the thread that drives it (the JS thread).
//!
//! `push` builds an iocb, `submit` hands what is pending to `io_submit` (as far as the context
//! has room: `queue_depth` in flight at most; the rest waits and goes in as completions free
//! room). Every iocb carries IOCB_FLAG_RESFD pointing at the owner's eventfd, so the owner
//! polls that one descriptor and reaps with a non-blocking `io_getevents`. No thread of our own.
//!
//! `io_submit` itself can block: AIO on a file opened without O_DIRECT is performed
//! synchronously by `io_submit` (buffered I/O is not asynchronous in Linux AIO), and FUSE sleeps
//! there past its request limit. Such descriptors, and the ops AIO cannot run at all
//! (fallocate, ftruncate, close), belong on the thread pool: see [`Driver::placement`].
//!
//! `io_cancel` is attempted for `cancel`, but Linux only implements it for a few request types
//! (USB gadget, poll): for file I/O it fails (EINVAL, or EINPROGRESS/EAGAIN), and the op then
//! completes with its own result. Ops still waiting to be submitted are cancelled for real.
//!
//! Registered buffers are locked in memory (mlock), as for the pool; AIO has no fixed buffers.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::RawFd;

use super::pool::LockedBuffers;
use super::{last_errno, retry_eintr, BackendKind, Driver, FdFacts, Placement, Unavailable};
use crate::op::{OpKind, OpRef, Segment};

/// `aio_context_t` (an `unsigned long` in linux/aio_abi.h).
type AioContext = libc::c_ulong;

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_CMD_FSYNC: u16 = 2;
const IOCB_CMD_FDSYNC: u16 = 3;
const IOCB_CMD_PREADV: u16 = 7;
const IOCB_CMD_PWRITEV: u16 = 8;

/// `aio_resfd` is valid: the kernel signals that eventfd when the request completes.
const IOCB_FLAG_RESFD: u32 = 1 << 0;

/// Most iocbs handed to one `io_submit` call.
const SUBMIT_BATCH: usize = 128;
/// Bounds for the context size (`io_setup`'s nr_events).
const MIN_DEPTH: u32 = 1;
const MAX_DEPTH: u32 = 16384;
/// When `io_setup` says EAGAIN (fs.aio-max-nr nearly exhausted), retry with halved sizes down
/// to this many events before giving up.
const FALLBACK_MIN_DEPTH: u32 = 16;

/// `struct iocb` from linux/aio_abi.h (64 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Iocb {
    /// Returned in `io_event.data`: our sequence number.
    aio_data: u64,
    // PADDED(aio_key, aio_rw_flags): the order of the two 32-bit fields follows endianness.
    #[cfg(target_endian = "little")]
    aio_key: u32,
    aio_rw_flags: i32,
    #[cfg(target_endian = "big")]
    aio_key: u32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event` from linux/aio_abi.h (32 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

// The layout the kernel reads and writes (linux/aio_abi.h).
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Iocb>() == 64);
    assert!(offset_of!(Iocb, aio_data) == 0);
    assert!(offset_of!(Iocb, aio_lio_opcode) == 16);
    assert!(offset_of!(Iocb, aio_reqprio) == 18);
    assert!(offset_of!(Iocb, aio_fildes) == 20);
    assert!(offset_of!(Iocb, aio_buf) == 24);
    assert!(offset_of!(Iocb, aio_nbytes) == 32);
    assert!(offset_of!(Iocb, aio_offset) == 40);
    assert!(offset_of!(Iocb, aio_reserved2) == 48);
    assert!(offset_of!(Iocb, aio_flags) == 56);
    assert!(offset_of!(Iocb, aio_resfd) == 60);
    #[cfg(target_endian = "little")]
    assert!(offset_of!(Iocb, aio_key) == 8 && offset_of!(Iocb, aio_rw_flags) == 12);
    #[cfg(target_endian = "big")]
    assert!(offset_of!(Iocb, aio_rw_flags) == 8 && offset_of!(Iocb, aio_key) == 12);
    assert!(size_of::<IoEvent>() == 32);
    assert!(offset_of!(IoEvent, res) == 16);
};

/// An aio context; destroyed on drop.
struct Ctx(AioContext);

impl Ctx {
    fn setup(nr_events: u32) -> Result<Ctx, i32> {
        let mut ctx: AioContext = 0;
        // SAFETY: io_setup writes one aio_context_t to the pointer, which points at a live local
        // that the kernel requires to be zero on entry.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_setup,
                nr_events as libc::c_long,
                &mut ctx as *mut AioContext,
            )
        };
        if r < 0 {
            Err(last_errno())
        } else {
            Ok(Ctx(ctx))
        }
    }

    /// io_submit: returns how many iocbs were queued, or the errno of the first one.
    ///
    /// # Safety
    /// Every pointer in `iocbs` must point at a live, writable Iocb (the kernel writes its
    /// aio_key) whose buffers obey the `Driver::push` contract until completion.
    unsafe fn submit(&self, iocbs: &mut [*mut Iocb]) -> Result<usize, i32> {
        // EINTR: nothing was queued (io_submit reports a count once anything was): retried.
        retry_eintr(|| {
            // SAFETY: per this function's contract; the array itself is a live slice.
            unsafe {
                libc::syscall(
                    libc::SYS_io_submit,
                    self.0,
                    iocbs.len() as libc::c_long,
                    iocbs.as_mut_ptr(),
                )
            }
        })
        .map(|n| n as usize)
    }

    /// Non-blocking io_getevents into `events`: returns how many were filled.
    fn getevents(&self, events: &mut [IoEvent]) -> Result<usize, i32> {
        // A zero timeout in the kernel's layout (two longs: __kernel_timespec on 64-bit,
        // old_timespec32 on 32-bit targets).
        let mut zero: [libc::c_long; 2] = [0, 0];
        retry_eintr(|| {
            // SAFETY: `events` is a live, writable slice of events.len() io_events and `zero` a
            // live timespec; the kernel writes at most events.len() entries.
            unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.0,
                    0 as libc::c_long,
                    events.len() as libc::c_long,
                    events.as_mut_ptr(),
                    zero.as_mut_ptr(),
                )
            }
        })
        .map(|n| n as usize)
    }

    /// io_cancel: Ok when the kernel accepted the cancellation (the event still arrives through
    /// the ring, as it does on every kernel since 3.11).
    fn cancel(&self, iocb: *mut Iocb) -> Result<(), i32> {
        let mut ev = IoEvent::default();
        // SAFETY: the kernel reads aio_key from `iocb`, which points at a live boxed Iocb of a
        // request in flight, and may write one io_event to the live local `ev`.
        let r =
            unsafe { libc::syscall(libc::SYS_io_cancel, self.0, iocb, &mut ev as *mut IoEvent) };
        if r < 0 {
            Err(last_errno())
        } else {
            Ok(())
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: destroys the context we created; the kernel waits for any request still in
        // flight (we only drop after reaping everything) and unmaps the ring it mapped itself.
        unsafe {
            libc::syscall(libc::SYS_io_destroy, self.0);
        }
    }
}

fn read_sysctl(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn explain_setup_error(errno: i32, nr_events: u32) -> Unavailable {
    let reason = match errno {
        libc::ENOSYS => "io_setup: ENOSYS: this kernel was built without AIO support \
             (CONFIG_AIO=n); use backend 'io_uring' or 'threadpool'"
            .to_string(),
        libc::EAGAIN => {
            let nr = read_sysctl("aio-nr").map_or("?".into(), |v| v.to_string());
            let max = read_sysctl("aio-max-nr").map_or("?".into(), |v| v.to_string());
            format!(
                "io_setup: EAGAIN: the system-wide AIO event limit is exhausted \
                 (fs.aio-nr = {nr} of fs.aio-max-nr = {max}; this context asked for \
                 {nr_events}); raise it (sysctl -w fs.aio-max-nr=1048576), close other AIO \
                 users, lower queueDepth, or use backend 'io_uring' or 'threadpool'"
            )
        }
        libc::EPERM => "io_setup: EPERM: refused by a seccomp filter (container runtime \
             profile); allow io_setup/io_submit/io_getevents/io_cancel/io_destroy or use \
             backend 'threadpool'"
            .to_string(),
        libc::ENOMEM => {
            "io_setup: ENOMEM: not enough kernel memory for the AIO completion ring".to_string()
        }
        libc::EINVAL => {
            format!("io_setup: EINVAL: {nr_events} events is more than the kernel accepts")
        }
        e => format!("io_setup failed: {}", io::Error::from_raw_os_error(e)),
    };
    Unavailable { errno, reason }
}

/// Can an aio context be set up here?
pub fn probe() -> Result<(), Unavailable> {
    Ctx::setup(1)
        .map(drop)
        .map_err(|e| explain_setup_error(e, 1))
}

/// Sets up a context of `want` events, halving on EAGAIN (fs.aio-max-nr nearly used up).
fn setup(want: u32) -> Result<(Ctx, u32), Unavailable> {
    let mut nr = want;
    loop {
        match Ctx::setup(nr) {
            Ok(c) => return Ok((c, nr)),
            Err(libc::EAGAIN) if nr > FALLBACK_MIN_DEPTH => {
                nr = (nr / 2).max(FALLBACK_MIN_DEPTH);
            }
            Err(e) => return Err(explain_setup_error(e, nr)),
        }
    }
}

/// The iocb for an AIO op (None for ops AIO cannot run), signalling `efd` on completion. For
/// Readv/Writev `iov` must be the op's iovec array, kept alive until the completion.
fn iocb_for(key: u64, kind: &OpKind, iov: Option<&[libc::iovec]>, efd: RawFd) -> Option<Box<Iocb>> {
    let mut cb = Box::new(Iocb {
        aio_data: key,
        aio_fildes: kind.fd() as u32,
        aio_flags: IOCB_FLAG_RESFD,
        aio_resfd: efd as u32,
        ..Iocb::default()
    });
    match *kind {
        OpKind::Read {
            ptr, len, offset, ..
        } => {
            cb.aio_lio_opcode = IOCB_CMD_PREAD;
            cb.aio_buf = ptr as usize as u64;
            cb.aio_nbytes = len as u64;
            cb.aio_offset = offset as i64;
        }
        OpKind::Write {
            ptr, len, offset, ..
        } => {
            cb.aio_lio_opcode = IOCB_CMD_PWRITE;
            cb.aio_buf = ptr as usize as u64;
            cb.aio_nbytes = len as u64;
            cb.aio_offset = offset as i64;
        }
        OpKind::Readv { offset, .. } | OpKind::Writev { offset, .. } => {
            let v = iov?;
            cb.aio_lio_opcode = if matches!(kind, OpKind::Readv { .. }) {
                IOCB_CMD_PREADV
            } else {
                IOCB_CMD_PWRITEV
            };
            cb.aio_buf = v.as_ptr() as usize as u64;
            cb.aio_nbytes = v.len() as u64;
            cb.aio_offset = offset as i64;
        }
        OpKind::Fsync { datasync, .. } => {
            cb.aio_lio_opcode = if datasync {
                IOCB_CMD_FDSYNC
            } else {
                IOCB_CMD_FSYNC
            };
        }
        OpKind::Fallocate { .. } | OpKind::Ftruncate { .. } | OpKind::Close { .. } => return None,
    }
    Some(cb)
}

/// Can the kernel's AIO run this op (else it belongs on the thread pool)?
fn is_aio_op(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Read { .. }
            | OpKind::Write { .. }
            | OpKind::Readv { .. }
            | OpKind::Writev { .. }
            | OpKind::Fsync { .. }
    )
}

/// Linux AIO driven by one thread (the JS thread): `io_submit` inline, completions signalled on
/// the caller's eventfd (IOCB_FLAG_RESFD) and reaped with a non-blocking `io_getevents`. No
/// thread of our own. Ops AIO cannot run (fallocate, ftruncate, close) are refused with
/// EOPNOTSUPP by `push`: the caller runs them elsewhere.
///
/// Memory contract as [`super::ring::LocalRing`]: an op's memory (and iovec array) stays valid
/// until its completion is returned by `reap` or `wait_all`.
pub struct LocalAio {
    ctx: Ctx,
    depth: u32,
    eventfd: RawFd,
    /// Iocbs the kernel holds, by key (boxed: the kernel keeps their address).
    inflight: HashMap<u64, Box<Iocb>>,
    /// Built, not yet accepted by io_submit (context full, or not flushed yet).
    pending: VecDeque<(u64, Box<Iocb>)>,
    early: Vec<(u64, i64)>,
    events: Vec<IoEvent>,
    locked: Option<LockedBuffers>,
}

impl LocalAio {
    /// A context of `depth` events (clamped to 1..=16384; halved while the system-wide limit
    /// refuses it), signalling `eventfd` on every completion.
    pub fn new(depth: u32, eventfd: RawFd) -> Result<LocalAio, Unavailable> {
        let (ctx, depth) = setup(depth.clamp(MIN_DEPTH, MAX_DEPTH))?;
        Ok(LocalAio {
            ctx,
            depth,
            eventfd,
            inflight: HashMap::new(),
            pending: VecDeque::new(),
            early: Vec::new(),
            events: vec![IoEvent::default(); 256],
            locked: None,
        })
    }

    pub fn depth(&self) -> u32 {
        self.depth
    }

    fn wake(&self) {
        super::eventfd::signal(self.eventfd);
    }

    fn collect(&mut self) {
        loop {
            let n = self.ctx.getevents(&mut self.events).unwrap_or_default();
            for ev in &self.events[..n] {
                if self.inflight.remove(&ev.data).is_some() {
                    self.early.push((ev.data, ev.res));
                }
            }
            if n < self.events.len() {
                break;
            }
        }
    }

    /// True when no op is in the kernel or waiting to be submitted.
    pub fn is_idle(&self) -> bool {
        self.inflight.is_empty() && self.pending.is_empty()
    }
}

impl Driver for LocalAio {
    fn kind(&self) -> BackendKind {
        BackendKind::Aio
    }

    /// Fallocate, ftruncate and close, and every op on a descriptor that is buffered or whose
    /// submission may sleep (io_submit would run or wait for it on the caller's thread), run
    /// elsewhere.
    fn placement(&self, op: &OpKind, facts: FdFacts) -> Placement {
        if facts != 0 || !is_aio_op(op) {
            Placement::Elsewhere
        } else {
            Placement::Inline
        }
    }

    /// Queues an op for the next `submit`, with its `aio_rw_flags` (RWF_DSYNC, RWF_SYNC...).
    unsafe fn push(&mut self, op: &OpRef<'_>) -> io::Result<()> {
        let mut cb = iocb_for(op.key, op.kind, op.iov, self.eventfd).ok_or_else(|| {
            io::Error::from_raw_os_error(if is_aio_op(op.kind) {
                libc::EINVAL
            } else {
                libc::EOPNOTSUPP
            })
        })?;
        cb.aio_rw_flags = op.rw_flags;
        self.pending.push_back((op.key, cb));
        Ok(())
    }

    /// io_submit of what is pending, as far as the context has room (one system call per 128).
    fn submit(&mut self) {
        while !self.pending.is_empty() && self.inflight.len() < self.depth as usize {
            let room = (self.depth as usize - self.inflight.len())
                .min(self.pending.len())
                .min(SUBMIT_BATCH);
            let mut ptrs: Vec<*mut Iocb> = self
                .pending
                .iter_mut()
                .take(room)
                .map(|(_, cb)| &mut **cb as *mut Iocb)
                .collect();
            // SAFETY: each pointer is a live boxed Iocb that we keep (in `inflight`) until its
            // event is reaped; its memory obeys push()'s contract.
            match unsafe { self.ctx.submit(&mut ptrs) } {
                Ok(n) => {
                    for _ in 0..n {
                        let (k, cb) = self.pending.pop_front().expect("n <= room");
                        self.inflight.insert(k, cb);
                    }
                    // The next one failed to queue: its error comes on the next call.
                    if n == 0 {
                        break;
                    }
                }
                Err(libc::EAGAIN) => break,
                Err(e) => {
                    // The first op is refused (EINVAL: e.g. not O_DIRECT-capable): complete it
                    // with that error and go on with the rest.
                    let (k, _) = self.pending.pop_front().expect("room >= 1");
                    self.early.push((k, -(e as i64)));
                    self.wake();
                }
            }
        }
    }

    /// Completions available now (never blocks), then submits what waited for room.
    fn reap(&mut self, out: &mut Vec<(u64, i64)>) {
        self.collect();
        out.append(&mut self.early);
        if !self.pending.is_empty() {
            self.submit();
        }
    }

    /// Asks the kernel to cancel `key` (most file I/O cannot be; it then completes normally).
    fn cancel(&mut self, key: u64) {
        if let Some(pos) = self.pending.iter().position(|(k, _)| *k == key) {
            self.pending.remove(pos);
            self.early.push((key, -(libc::ECANCELED as i64)));
            self.wake();
            return;
        }
        if let Some(cb) = self.inflight.get_mut(&key) {
            let _ = self.ctx.cancel(&mut **cb as *mut Iocb);
        }
    }

    /// Asks the kernel to cancel what it can (everything still completes, through `reap`); ops
    /// not submitted yet complete with ECANCELED at once. Does not wait.
    fn cancel_all(&mut self) {
        for (k, _) in self.pending.drain(..) {
            self.early.push((k, -(libc::ECANCELED as i64)));
        }
        for cb in self.inflight.values_mut() {
            let _ = self.ctx.cancel(&mut **cb as *mut Iocb);
        }
        if !self.early.is_empty() {
            self.wake();
        }
    }

    /// Cancels what it can and blocks until every op has completed. AIO has no blocking wait
    /// that leaves the eventfd alone, so this polls `io_getevents` every 200 µs.
    fn wait_all(&mut self, out: &mut Vec<(u64, i64)>) {
        self.cancel_all();
        while !self.inflight.is_empty() {
            self.collect();
            if !self.inflight.is_empty() {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        out.append(&mut self.early);
    }

    fn inflight(&self) -> usize {
        self.inflight.len() + self.pending.len() + self.early.len()
    }

    /// mlocks the buffers (AIO has no registered buffers; locked pages skip nothing in the
    /// kernel but stay resident), replacing any earlier set.
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

impl Drop for LocalAio {
    fn drop(&mut self) {
        let mut sink = Vec::new();
        self.wait_all(&mut sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_say_why() {
        for (errno, needle) in [
            (libc::ENOSYS, "CONFIG_AIO"),
            (libc::EAGAIN, "aio-max-nr"),
            (libc::EPERM, "seccomp"),
            (libc::ENOMEM, "memory"),
            (libc::EINVAL, "4096"),
        ] {
            let u = explain_setup_error(errno, 4096);
            assert_eq!(u.errno, errno);
            assert!(u.reason.contains(needle), "{errno}: {}", u.reason);
        }
    }

    #[test]
    fn context_and_depth() {
        if let Err(e) = probe() {
            eprintln!("aio unavailable here: {e}");
            return;
        }
        let efd = crate::io::eventfd::new(false).unwrap();
        use std::os::fd::AsRawFd;
        let a = LocalAio::new(0, efd.as_raw_fd()).expect("aio context");
        assert!(a.depth() >= MIN_DEPTH);
        // An impossible depth is clamped rather than refused.
        let a = LocalAio::new(u32::MAX, efd.as_raw_fd()).expect("aio context");
        assert!(a.depth() <= MAX_DEPTH);
    }
}
