//! Linux native AIO backend, by raw system calls (no libaio.so).
//!
//! One aio context per backend, owned by a dedicated thread (the "aio thread"). Every iocb is
//! submitted with IOCB_FLAG_RESFD pointing at one eventfd, and callers write to that same eventfd
//! (only when no wake-up is already pending) after queueing commands, so the aio thread blocks in
//! exactly one place, `read(eventfd)`, and wakes for either a completion or new work. It then
//! takes the queued commands, reaps events with a non-blocking `io_getevents`, submits as much of
//! its backlog as the context has room for (`queue_depth` in flight at most) and hands all the
//! completions of that round to the sink in one batch.
//!
//! Callers never block on I/O: `submit` only queues. The aio thread itself can block inside
//! `io_submit`: AIO on a file opened without O_DIRECT is performed synchronously by `io_submit`
//! (buffered I/O is not asynchronous in Linux AIO), and even with O_DIRECT some filesystems block
//! there for block allocation or metadata (e.g. extending writes on ext4). This is acceptable;
//! it only delays reaping, never a caller.
//!
//! Ops the kernel's AIO cannot do (fallocate, ftruncate, close, and fsync / fdatasync on a
//! filesystem whose `io_submit` refuses IOCB_CMD_FSYNC with EINVAL, as kernels before 4.18 do)
//! run synchronously on a one-thread [`PoolBackend`] (the helper) that completes them through the
//! same sink.
//!
//! `io_cancel` is attempted for `cancel`, but Linux only implements it for a few request types
//! (USB gadget, poll): for file I/O it fails (EINVAL, or EINPROGRESS/EAGAIN), and the op then
//! completes with its own result. Ops still waiting in the backlog are cancelled for real.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};

use super::pool::{completion, deliver_late, LockedBuffers, PoolBackend};
use super::{Backend, BackendKind, BackendOptions, Unavailable};
use crate::op::{Completion, Op, OpKind, Segment, Sink};

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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

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
    /// aio_key) whose buffers obey the `Backend::submit` contract until completion.
    unsafe fn submit(&self, iocbs: &mut [*mut Iocb]) -> Result<usize, i32> {
        loop {
            // SAFETY: per this function's contract; the array itself is a live slice.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_submit,
                    self.0,
                    iocbs.len() as libc::c_long,
                    iocbs.as_mut_ptr(),
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            match last_errno() {
                // Nothing was queued (io_submit reports a count once anything was): retry.
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
    }

    /// Non-blocking io_getevents into `events`: returns how many were filled.
    fn getevents(&self, events: &mut [IoEvent]) -> Result<usize, i32> {
        // A zero timeout in the kernel's layout (two longs: __kernel_timespec on 64-bit,
        // old_timespec32 on 32-bit targets).
        let mut zero: [libc::c_long; 2] = [0, 0];
        loop {
            // SAFETY: `events` is a live, writable slice of events.len() io_events and `zero` a
            // live timespec; the kernel writes at most events.len() entries.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.0,
                    0 as libc::c_long,
                    events.len() as libc::c_long,
                    events.as_mut_ptr(),
                    zero.as_mut_ptr(),
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            match last_errno() {
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
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

/// Can the kernel's AIO run this op, or does it go to the helper thread?
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

enum Cmd {
    Ops(Vec<Op>),
    Cancel(u64),
}

struct Queue {
    cmds: Vec<Cmd>,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// A wake-up has been written to the eventfd and not yet acted upon.
    wake_pending: AtomicBool,
    eventfd: OwnedFd,
}

impl Shared {
    fn wake_if_needed(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            self.wake();
        }
    }

    fn wake(&self) {
        // Cannot block in practice (that would take a counter near 2^64).
        super::eventfd::signal(self.eventfd.as_raw_fd());
    }
}

pub struct AioBackend {
    shared: Arc<Shared>,
    /// Runs what AIO cannot: fallocate, ftruncate, close, fsync fallback.
    helper: Arc<PoolBackend>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
    locked: Mutex<Option<LockedBuffers>>,
    sink: Sink,
    depth: u32,
}

impl AioBackend {
    pub fn new(sink: Sink, opts: &BackendOptions) -> Result<AioBackend, Unavailable> {
        let (ctx, depth) = setup(opts.queue_depth.clamp(MIN_DEPTH, MAX_DEPTH))?;
        // Blocking: the aio thread sleeps in read() on it.
        let eventfd = super::eventfd::new(true).map_err(|e| Unavailable {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            reason: format!("eventfd for the aio thread failed: {e}"),
        })?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                cmds: Vec::new(),
                shutdown: false,
            }),
            wake_pending: AtomicBool::new(false),
            eventfd,
        });
        let helper = Arc::new(PoolBackend::new(
            sink.clone(),
            &BackendOptions {
                queue_depth: 0,
                threads: 1,
            },
        ));
        let (sh, sk, hp) = (shared.clone(), sink.clone(), helper.clone());
        let thread = std::thread::Builder::new()
            .name("odirect-aio".into())
            .spawn(move || AioThread::new(ctx, depth as usize, sh, sk, hp).run())
            .map_err(|e| Unavailable {
                errno: e.raw_os_error().unwrap_or(libc::EAGAIN),
                reason: format!("could not start the aio thread: {e}"),
            })?;
        Ok(AioBackend {
            shared,
            helper,
            thread_id: thread.thread().id(),
            thread: Mutex::new(Some(thread)),
            locked: Mutex::new(None),
            sink,
            depth,
        })
    }

    /// Size of the aio context actually set up (`queue_depth`, or less when fs.aio-max-nr is
    /// nearly used up): the most ops in the kernel at once; more wait in a backlog.
    pub fn depth(&self) -> u32 {
        self.depth
    }
}

impl Backend for AioBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Aio
    }

    unsafe fn submit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let mut q = lock(&self.shared.queue);
        if q.shutdown {
            drop(q);
            deliver_late(&self.sink, ops, libc::ESHUTDOWN);
            return;
        }
        let (aio, sync): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|o| is_aio_op(&o.kind));
        if !sync.is_empty() {
            // Under our queue lock, so that shutdown (which takes it first) cannot stop the
            // helper between our check and this hand-over.
            // SAFETY: the caller's contract for `submit` carries over unchanged.
            unsafe { self.helper.submit(sync) };
        }
        if !aio.is_empty() {
            q.cmds.push(Cmd::Ops(aio));
            drop(q);
            self.shared.wake_if_needed();
        }
    }

    fn cancel(&self, id: u64) {
        {
            let mut q = lock(&self.shared.queue);
            if !q.shutdown {
                q.cmds.push(Cmd::Cancel(id));
            }
        }
        self.shared.wake_if_needed();
        self.helper.cancel(id);
    }

    fn shutdown(&self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.wake();
        if std::thread::current().id() == self.thread_id {
            // Called from the sink on the aio thread: it cannot wait for itself. It sees the
            // flag and winds down; a later shutdown (or drop) from elsewhere joins it.
            return;
        }
        // Held while joining, so a concurrent second shutdown also waits for the end.
        let mut thread = lock(&self.thread);
        if let Some(h) = thread.take() {
            let _ = h.join();
        }
        // After the aio thread: it may have handed fsyncs to the helper while winding down.
        self.helper.shutdown();
        drop(thread);
        *lock(&self.locked) = None;
    }

    unsafe fn register_buffers(&self, bufs: &[Segment]) -> io::Result<()> {
        if lock(&self.shared.queue).shutdown {
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

impl Drop for AioBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A request in the kernel.
struct Inflight {
    op: Op,
    /// The kernel writes aio_key at submission and io_cancel reads it back: boxed so that its
    /// address stays put while the map moves entries around.
    iocb: Box<Iocb>,
    /// The iovec array of readv/writev (the kernel copies it during io_submit; kept anyway
    /// until completion, which costs nothing).
    _iov: Option<Box<[libc::iovec]>>,
}

struct AioThread {
    ctx: Ctx,
    depth: usize,
    shared: Arc<Shared>,
    sink: Sink,
    helper: Arc<PoolBackend>,
    /// Keyed by our sequence number (`aio_data`), not by op id, so that a caller reusing an id
    /// cannot make us lose track of a request.
    inflight: HashMap<u64, Inflight>,
    backlog: VecDeque<Op>,
    next_seq: u64,
    events: Vec<IoEvent>,
    done: Vec<Completion>,
    efd: RawFd,
}

impl AioThread {
    fn new(
        ctx: Ctx,
        depth: usize,
        shared: Arc<Shared>,
        sink: Sink,
        helper: Arc<PoolBackend>,
    ) -> AioThread {
        let efd = shared.eventfd.as_raw_fd();
        AioThread {
            ctx,
            depth,
            shared,
            sink,
            helper,
            inflight: HashMap::with_capacity(depth),
            backlog: VecDeque::new(),
            next_seq: 1,
            events: vec![IoEvent::default(); depth.max(1)],
            done: Vec::new(),
            efd,
        }
    }

    fn run(mut self) {
        let mut stopping = false;
        loop {
            // Cleared before taking the queue: a command queued after this point writes a new
            // wake-up, one queued before it is in what we take now.
            self.shared.wake_pending.store(false, Ordering::SeqCst);
            let (cmds, shutdown) = {
                let mut q = lock(&self.shared.queue);
                (std::mem::take(&mut q.cmds), q.shutdown)
            };
            for cmd in cmds {
                match cmd {
                    Cmd::Ops(ops) => self.backlog.extend(ops),
                    Cmd::Cancel(id) => self.cancel(id),
                }
            }
            if shutdown && !stopping {
                stopping = true;
                // Nothing new starts; what waits in the backlog completes as cancelled; what is
                // in the kernel is cancelled where it can be, and waited for where it cannot.
                for op in std::mem::take(&mut self.backlog) {
                    self.done.push(completion(&op, -(libc::ECANCELED as i64)));
                }
                let ptrs: Vec<*mut Iocb> = self
                    .inflight
                    .values_mut()
                    .map(|f| &mut *f.iocb as *mut Iocb)
                    .collect();
                for p in ptrs {
                    let _ = self.ctx.cancel(p);
                }
            }
            self.reap();
            if !stopping {
                self.submit_backlog();
            }
            if !self.done.is_empty() {
                (self.sink)(std::mem::take(&mut self.done));
            }
            if stopping && self.inflight.is_empty() {
                break;
            }
            self.wait();
        }
    }

    /// Blocks until the eventfd is signalled (a completion or a caller's wake-up), resetting it.
    fn wait(&self) {
        let mut v: u64 = 0;
        loop {
            // SAFETY: reads 8 bytes into a live local from our blocking eventfd.
            let r = unsafe { libc::read(self.efd, &mut v as *mut u64 as *mut libc::c_void, 8) };
            if r == 8 {
                return;
            }
            if r < 0 && last_errno() == libc::EINTR {
                continue;
            }
            // Should not happen; do not spin: report and go round again after a pause.
            eprintln!(
                "odirect: aio eventfd read failed: {}",
                io::Error::last_os_error()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
            return;
        }
    }

    fn cancel(&mut self, id: u64) {
        if let Some(pos) = self.backlog.iter().position(|o| o.id == id) {
            let op = self.backlog.remove(pos).expect("position is in range");
            self.done.push(completion(&op, -(libc::ECANCELED as i64)));
            return;
        }
        let p = self
            .inflight
            .values_mut()
            .find(|f| f.op.id == id)
            .map(|f| &mut *f.iocb as *mut Iocb);
        if let Some(p) = p {
            // EINVAL (file I/O cannot be cancelled), EINPROGRESS or EAGAIN: the op completes
            // with its own result through the ring, as it would have anyway.
            let _ = self.ctx.cancel(p);
        }
    }

    fn reap(&mut self) {
        loop {
            let n = match self.ctx.getevents(&mut self.events) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!(
                        "odirect: io_getevents failed: {}",
                        io::Error::from_raw_os_error(e)
                    );
                    return;
                }
            };
            for ev in &self.events[..n] {
                if let Some(f) = self.inflight.remove(&ev.data) {
                    self.done.push(completion(&f.op, ev.res));
                }
            }
            if n < self.events.len() {
                return;
            }
        }
    }

    fn build(&self, op: &Op, seq: u64) -> (Box<Iocb>, Option<Box<[libc::iovec]>>) {
        let iov: Option<Box<[libc::iovec]>> = match &op.kind {
            OpKind::Readv { segs, .. } | OpKind::Writev { segs, .. } => Some(
                segs.iter()
                    .map(|s| libc::iovec {
                        iov_base: s.ptr as *mut libc::c_void,
                        iov_len: s.len,
                    })
                    .collect(),
            ),
            _ => None,
        };
        // Routed to the helper before we get here, so every op here is an AIO op.
        let mut cb = iocb_for(seq, &op.kind, iov.as_deref(), self.efd).expect("an AIO op");
        cb.aio_rw_flags = op.rw_flags;
        (cb, iov)
    }

    fn to_helper(&self, ops: Vec<Op>) {
        // SAFETY: these ops came through `Backend::submit`, whose contract (memory and fds
        // valid until completion) carries over unchanged to the helper.
        unsafe { self.helper.submit(ops) };
    }

    /// Moves ops from the backlog into the kernel while the context has room.
    fn submit_backlog(&mut self) {
        let mut seqs: Vec<u64> = Vec::new();
        let mut ptrs: Vec<*mut Iocb> = Vec::new();
        while !self.backlog.is_empty() && self.inflight.len() < self.depth {
            let n = self
                .backlog
                .len()
                .min(self.depth - self.inflight.len())
                .min(SUBMIT_BATCH);
            seqs.clear();
            let mut sync = Vec::new();
            for _ in 0..n {
                let op = self.backlog.pop_front().expect("backlog has n ops");
                if !is_aio_op(&op.kind) {
                    sync.push(op);
                    continue;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                let (iocb, iov) = self.build(&op, seq);
                self.inflight.insert(
                    seq,
                    Inflight {
                        op,
                        iocb,
                        _iov: iov,
                    },
                );
                seqs.push(seq);
            }
            if !sync.is_empty() {
                self.to_helper(sync);
            }
            if seqs.is_empty() {
                continue;
            }
            // Pointers are taken once every entry is in place; the boxed Iocbs do not move.
            ptrs.clear();
            for s in &seqs {
                let f = self.inflight.get_mut(s).expect("just inserted");
                ptrs.push(&mut *f.iocb as *mut Iocb);
            }
            // SAFETY: each pointer is a live boxed Iocb owned by `inflight` until its event is
            // reaped; the buffers it names obey the `Backend::submit` contract and the iovec
            // arrays live in the same `Inflight` entries.
            let r = unsafe { self.ctx.submit(&mut ptrs) };
            let submitted = r.unwrap_or(0);
            // What the kernel did not take goes back to the front of the backlog, in order.
            let mut rest: Vec<Op> = seqs[submitted..]
                .iter()
                .map(|s| self.inflight.remove(s).expect("not submitted").op)
                .collect();
            let mut wait_for_room = false;
            if let Err(e) = r {
                // The first iocb failed; the ones after it were not looked at.
                let first = rest.remove(0);
                match e {
                    libc::EAGAIN if !self.inflight.is_empty() => {
                        // Out of kernel resources: retry once completions free some.
                        rest.insert(0, first);
                        wait_for_room = true;
                    }
                    libc::EINVAL if matches!(first.kind, OpKind::Fsync { .. }) => {
                        // This filesystem (or a kernel before 4.18) has no AIO fsync.
                        self.to_helper(vec![first]);
                    }
                    e => self.done.push(completion(&first, -(e as i64))),
                }
            }
            for op in rest.into_iter().rev() {
                self.backlog.push_front(op);
            }
            if wait_for_room || (r.is_ok() && submitted == 0) {
                break;
            }
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<AioBackend>();
}

/// Linux AIO driven by one thread (the JS thread): `io_submit` inline, completions signalled on
/// the caller's eventfd (IOCB_FLAG_RESFD) and reaped with a non-blocking `io_getevents`. No
/// thread of our own. Ops AIO cannot run (fallocate, ftruncate, close) are refused with
/// EOPNOTSUPP by [`LocalAio::push`]: the caller runs them elsewhere.
///
/// Memory contract as [`super::ring::LocalRing`]: an op's memory (and iovec array) stays valid
/// until its completion is returned by `reap` or `wait_all`.
pub struct LocalAio {
    ctx: Ctx,
    depth: u32,
    eventfd: RawFd,
    /// Iocbs the kernel holds, by key (boxed: the kernel keeps their address).
    inflight: std::collections::HashMap<u64, Box<Iocb>>,
    /// Built, not yet accepted by io_submit (context full, or not flushed yet).
    pending: std::collections::VecDeque<(u64, Box<Iocb>)>,
    early: Vec<(u64, i64)>,
    events: Vec<IoEvent>,
}

impl LocalAio {
    pub fn new(depth: u32, eventfd: RawFd) -> Result<LocalAio, Unavailable> {
        let (ctx, depth) = setup(depth.clamp(MIN_DEPTH, MAX_DEPTH))?;
        Ok(LocalAio {
            ctx,
            depth,
            eventfd,
            inflight: std::collections::HashMap::new(),
            pending: std::collections::VecDeque::new(),
            early: Vec::new(),
            events: vec![IoEvent::default(); 256],
        })
    }

    pub fn depth(&self) -> u32 {
        self.depth
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len() + self.pending.len()
    }

    /// Queues an op for the next [`LocalAio::submit`].
    ///
    /// # Safety
    /// `kind`'s memory and `iov` must stay valid until the op's completion is reaped.
    pub unsafe fn push(
        &mut self,
        key: u64,
        kind: &OpKind,
        iov: Option<&[libc::iovec]>,
    ) -> io::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.push_rw(key, kind, iov, 0) }
    }

    /// [`LocalAio::push`] with per-write flags (`aio_rw_flags`: RWF_DSYNC, RWF_SYNC...).
    ///
    /// # Safety
    /// As for [`LocalAio::push`].
    pub unsafe fn push_rw(
        &mut self,
        key: u64,
        kind: &OpKind,
        iov: Option<&[libc::iovec]>,
        rw_flags: i32,
    ) -> io::Result<()> {
        let mut cb = iocb_for(key, kind, iov, self.eventfd).ok_or_else(|| {
            io::Error::from_raw_os_error(if is_aio_op(kind) {
                libc::EINVAL
            } else {
                libc::EOPNOTSUPP
            })
        })?;
        cb.aio_rw_flags = rw_flags;
        self.pending.push_back((key, cb));
        Ok(())
    }

    /// io_submit of what is pending, as far as the context has room (one system call per 128).
    pub fn submit(&mut self) {
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
                    if n < room {
                        // The next one failed to queue: its error comes on the next call.
                        if n == 0 {
                            break;
                        }
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

    /// Completions available now (never blocks), then submits what waited for room.
    pub fn reap(&mut self, out: &mut Vec<(u64, i64)>) {
        self.collect();
        out.append(&mut self.early);
        if !self.pending.is_empty() {
            self.submit();
        }
    }

    /// Asks the kernel to cancel `key` (most file I/O cannot be; it then completes normally).
    pub fn cancel(&mut self, key: u64) {
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
    pub fn cancel_all(&mut self) {
        for (k, _) in self.pending.drain(..) {
            self.early.push((k, -(libc::ECANCELED as i64)));
        }
        let keys: Vec<u64> = self.inflight.keys().copied().collect();
        for k in keys {
            if let Some(cb) = self.inflight.get_mut(&k) {
                let _ = self.ctx.cancel(&mut **cb as *mut Iocb);
            }
        }
        if !self.early.is_empty() {
            self.wake();
        }
    }

    /// True when no op is in the kernel or waiting to be submitted.
    pub fn is_idle(&self) -> bool {
        self.inflight.is_empty() && self.pending.is_empty()
    }

    /// Cancels what it can and blocks until every op has completed.
    pub fn wait_all(&mut self, out: &mut Vec<(u64, i64)>) {
        self.cancel_all();
        while !self.inflight.is_empty() {
            self.collect();
            if !self.inflight.is_empty() {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        out.append(&mut self.early);
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
        let sink: Sink = Arc::new(|_| {});
        let b = AioBackend::new(
            sink,
            &BackendOptions {
                queue_depth: 0,
                threads: 1,
            },
        )
        .expect("aio backend");
        assert!(b.depth() >= MIN_DEPTH);
        b.shutdown();
        b.shutdown();
        // An impossible depth is clamped rather than refused.
        let sink: Sink = Arc::new(|_| {});
        let b = AioBackend::new(
            sink,
            &BackendOptions {
                queue_depth: u32::MAX,
                threads: 1,
            },
        )
        .expect("aio backend");
        assert!(b.depth() <= MAX_DEPTH);
    }
}
