//! The engine of one JS environment (main thread or worker): it captures ops on the JS thread,
//! submits them inline (io_uring owned by this thread; aio and the thread pool behind their own
//! threads), and reaps completions on the JS thread when its eventfd is readable:
//! - with libuv (Node): a `uv_poll_t` on the environment's loop, whose callback settles promises
//!   through `napi_make_callback` (so microtasks run right after, as for any I/O callback);
//! - without (Bun, Deno): a reaper thread that waits on the eventfd and wakes the JS thread
//!   through a threadsafe function.
//!
//! Memory rule: an op's memory is odirect-owned (an [`Alloc`] whose `Arc` the op holds, or a
//! bounce buffer the op owns) from capture until its completion has been reaped, so nothing a JS
//! program does (GC, transfer, detach, resize, worker exit) can free memory the kernel uses. At
//! teardown the engine cancels every op and waits for it before its memory is released; what
//! the kernel still holds after `EXIT_WAIT` is left to the process (`abandon_the_rest`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use napi::sys;
use odirect_core::backend::aio::LocalAio;
use odirect_core::backend::eventfd;
use odirect_core::backend::ring::LocalRing;
use odirect_core::backend::{self, Backend, BackendKind, BackendOptions};
use odirect_core::buf::AlignedBuf;
use odirect_core::op::{Completion, Op, OpKind, Segment};

use crate::locks::Waiters;
use crate::memory::{self, Alloc};
use crate::uv::Uv;

/// Result code for a bounced read whose destination was detached or shrunk before copy-back.
pub const RESULT_DETACHED: f64 = -1_000_001.0;
const RESULTS_CAP: usize = 4096;

/// One segment of an op's memory.
enum Mem {
    /// odirect-owned memory (kept allocated by this reference) and the segment's length.
    Owned(#[allow(dead_code)] Arc<Alloc>, usize),
    /// A bounce buffer and the segment's length; for reads, where to copy the bytes back (a
    /// reference to the JS view and the offset in it).
    Bounce(AlignedBuf, usize, Option<(sys::napi_ref, usize)>),
}

struct OpRec {
    backend: BackendKind,
    kind: OpKind,
    iov: Option<Box<[libc::iovec]>>,
    mem: Vec<Mem>,
    fixed: Option<u16>,
    /// io_uring: submit with IOSQE_ASYNC (the file's submission may sleep; see `route`).
    punt: bool,
    submitted: bool,
    started: Instant,
    debug: Option<String>,
    /// preadv2/pwritev2 flags of a read or write (RWF_*), set by `set_rw_flags` before submission.
    rw_flags: i32,
    /// io_uring only: linked to the op staged after it (IOSQE_IO_LINK): that one starts when
    /// this one succeeded and is cancelled when it fails (writeMany's writes and fdatasync).
    link: bool,
}

impl OpRec {
    fn new(
        backend: BackendKind,
        kind: OpKind,
        iov: Option<Box<[libc::iovec]>>,
        mem: Vec<Mem>,
        fixed: Option<u16>,
    ) -> OpRec {
        OpRec {
            backend,
            kind,
            iov,
            mem,
            fixed,
            punt: false,
            submitted: false,
            started: Instant::now(),
            debug: None,
            rw_flags: 0,
            link: false,
        }
    }
}

/// An aio or thread-pool backend: its own threads, completions into a queue + our eventfd.
struct Queued {
    backend: Box<dyn Backend>,
    done: Arc<Mutex<Vec<Completion>>>,
    staged: Vec<Op>,
}

pub enum Wake {
    None,
    Loop {
        uv: Uv,
        poll: *mut c_void,
        async_ctx: sys::napi_async_context,
        cleanup: sys::napi_async_cleanup_hook_handle,
    },
    Thread {
        tsfn: sys::napi_threadsafe_function,
        stop: Arc<OwnedFd>,
        thread: Option<std::thread::JoinHandle<()>>,
        pending: Arc<AtomicBool>,
    },
}

pub struct Inner {
    pub env: sys::napi_env,
    callback: sys::napi_ref,
    /// The preallocated results Float64Array (V8 memory, freed with the isolate).
    results: Option<sys::napi_ref>,
    /// None once torn down.
    eventfd: Option<Arc<OwnedFd>>,
    ring: Option<LocalRing>,
    ring_reason: Option<String>,
    aio: Option<LocalAio>,
    queued: [Option<Queued>; 3],
    ops: Vec<Option<OpRec>>,
    free: Vec<u32>,
    staged: Vec<u32>,
    synthetic: Vec<(u64, i64)>,
    inflight: usize,
    /// Descriptors open in this environment, with their `FD_*` routing facts.
    fds: HashMap<i32, u8>,
    /// `lock()` waits (each on its own thread), keyed from `locks::LOCK_BASE` up.
    locks: Waiters,
    registered: std::collections::HashMap<usize, u16>,
    reg_allocs: [Vec<Arc<Alloc>>; 3],
    debug: bool,
    /// SQPOLL idle time for the ring (0: no SQPOLL), set before the ring is made.
    pub sqpoll_idle_ms: u32,
    pub closed: bool,
    pub wake: Wake,
    referenced: bool,
}

pub type Shared = RefCell<Inner>;

/// How long teardown waits for ops the kernel was asked to cancel before it abandons them.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(2000);

/// Something the kernel may still use after its environment ended: an op's record (its memory),
/// the ring, aio context or thread pool running it. Kept, never touched again.
struct Abandoned(#[allow(dead_code)] Box<dyn std::any::Any>);

// SAFETY: an abandoned value is never used again by any thread (only kept alive in ABANDONED);
// the napi references it held were deleted on their own thread before it was abandoned.
unsafe impl Send for Abandoned {}

/// The process-wide owner of what teardown could not wait for (see `abandon_the_rest`).
static ABANDONED: Mutex<Vec<Abandoned>> = Mutex::new(Vec::new());

/// Submitting I/O on the descriptor may sleep in the submitter (FUSE, network filesystem, pipe,
/// socket, char device): see `odirect_core::file::submission_may_block`.
pub const FD_MAY_BLOCK: u8 = 1;
/// The descriptor is not O_DIRECT (Linux AIO performs such I/O synchronously in io_submit).
pub const FD_BUFFERED: u8 = 2;

fn kind_index(k: BackendKind) -> usize {
    match k {
        BackendKind::IoUring => 0,
        BackendKind::Aio => 1,
        BackendKind::ThreadPool => 2,
    }
}

pub fn parse_kind(b: u32) -> Option<BackendKind> {
    use crate::BackendIndex as B;
    match b {
        x if x == B::IoUring as u32 => Some(BackendKind::IoUring),
        x if x == B::Aio as u32 => Some(BackendKind::Aio),
        x if x == B::ThreadPool as u32 => Some(BackendKind::ThreadPool),
        _ => None,
    }
}

/// Why an op could not be captured (returned to JS as a negative number).
pub enum CaptureError {
    Detached,
    NotView,
    UnknownKind,
    NoMemory,
    Closed,
    NoBackend,
}

impl CaptureError {
    pub fn code(&self) -> f64 {
        use crate::CaptureCode as C;
        (match self {
            CaptureError::Detached => C::Detached,
            CaptureError::NotView => C::NotView,
            CaptureError::UnknownKind => C::UnknownKind,
            CaptureError::NoMemory => C::NoMemory,
            CaptureError::Closed => C::Closed,
            CaptureError::NoBackend => C::NoBackend,
        }) as i32 as f64
    }
}

fn from_view_err(e: i32) -> CaptureError {
    match e {
        memory::TOO_SHORT => CaptureError::Detached,
        memory::UNKNOWN_KIND => CaptureError::UnknownKind,
        _ => CaptureError::NotView,
    }
}

/// One captured segment: where the kernel reads/writes, and what keeps that memory alive.
struct Seg {
    ptr: *mut u8,
    len: usize,
    mem: Mem,
    owner: Option<usize>,
}

impl Inner {
    pub fn new(env: sys::napi_env, callback: sys::napi_ref) -> std::io::Result<Inner> {
        let efd = eventfd::new(false)?;
        Ok(Inner {
            env,
            callback,
            results: None,
            eventfd: Some(Arc::new(efd)),
            ring: None,
            ring_reason: None,
            aio: None,
            queued: [None, None, None],
            ops: Vec::new(),
            free: Vec::new(),
            staged: Vec::new(),
            synthetic: Vec::new(),
            inflight: 0,
            fds: HashMap::new(),
            locks: Waiters::new(),
            registered: std::collections::HashMap::new(),
            reg_allocs: [Vec::new(), Vec::new(), Vec::new()],
            debug: std::env::var("ODIRECT_DEBUG")
                .map(|v| !v.is_empty() && v != "0")
                .unwrap_or(false),
            sqpoll_idle_ms: std::env::var("ODIRECT_SQPOLL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            closed: false,
            wake: Wake::None,
            referenced: false,
        })
    }

    /// The eventfd (None once torn down, when nothing signals it any more).
    pub fn eventfd_arc(&self) -> Option<Arc<OwnedFd>> {
        self.eventfd.clone()
    }

    /// The eventfd's number, -1 once torn down (a write to -1 fails harmlessly).
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_ref().map_or(-1, |e| e.as_raw_fd())
    }

    pub fn set_results(&mut self, r: sys::napi_ref) {
        self.results = Some(r);
    }

    /// At teardown: deletes the results array's reference, and closes the eventfd (a runtime
    /// that never finalizes the engine's JS object must not keep a descriptor per worker).
    pub fn let_go(&mut self) {
        self.eventfd = None;
        if let Some(r) = self.results.take() {
            // SAFETY: reference created on this env, which is still alive (its cleanup runs).
            unsafe { sys::napi_delete_reference(self.env, r) };
        }
    }

    pub fn path_name(&self) -> &'static str {
        match self.wake {
            Wake::Loop { .. } => "libuv",
            Wake::Thread { .. } => "thread",
            Wake::None => "none",
        }
    }

    /// Asks for an SQPOLL ring (idle ms; 0: none). "" when done, else why not.
    pub fn set_sqpoll(&mut self, idle_ms: u32) -> String {
        if self.ring.is_some() && self.sqpoll_idle_ms != idle_ms {
            return "the io_uring ring of this thread already exists; set sqpoll before the first open".into();
        }
        self.sqpoll_idle_ms = idle_ms;
        String::new()
    }

    pub fn ring_setup(&self) -> String {
        self.ring.as_ref().map(|r| r.describe()).unwrap_or_default()
    }

    /// Starts (once) a backend; "" when it works, else why not.
    pub fn ensure(&mut self, kind: BackendKind, queue_depth: u32, threads: u32) -> String {
        if self.closed {
            return "the engine is shut down".into();
        }
        match kind {
            BackendKind::IoUring => {
                if self.ring.is_some() {
                    return String::new();
                }
                let qd = crate::consts::queue_depth(queue_depth);
                match LocalRing::with_options(qd, self.eventfd(), self.sqpoll_idle_ms) {
                    Ok(r) => {
                        self.ring = Some(r);
                        self.ring_reason = None;
                        String::new()
                    }
                    Err(u) => {
                        self.ring_reason = Some(u.reason.clone());
                        u.reason
                    }
                }
            }
            BackendKind::Aio => {
                if self.aio.is_some() {
                    return String::new();
                }
                let qd = crate::consts::queue_depth(queue_depth);
                match LocalAio::new(qd, self.eventfd()) {
                    Ok(a) => {
                        self.aio = Some(a);
                        String::new()
                    }
                    Err(u) => u.reason,
                }
            }
            _ => {
                let i = kind_index(kind);
                if self.queued[i].is_some() {
                    return String::new();
                }
                let done: Arc<Mutex<Vec<Completion>>> = Arc::new(Mutex::new(Vec::new()));
                let d2 = done.clone();
                // The sink only touches this queue and the eventfd (both kept alive by the Arcs
                // it owns), so a late delivery after teardown is harmless.
                let Some(efd) = self.eventfd.clone() else {
                    return "the engine is shut down".into();
                };
                let sink: odirect_core::op::Sink = Arc::new(move |batch: Vec<Completion>| {
                    d2.lock().unwrap_or_else(|p| p.into_inner()).extend(batch);
                    eventfd::signal(efd.as_raw_fd());
                });
                let mut opts = BackendOptions::default();
                if queue_depth > 0 {
                    opts.queue_depth = queue_depth;
                }
                if threads > 0 {
                    opts.threads = threads as usize;
                }
                match backend::create(kind, sink, &opts) {
                    Ok(b) => {
                        self.queued[i] = Some(Queued {
                            backend: b,
                            done,
                            staged: Vec::new(),
                        });
                        String::new()
                    }
                    Err(u) => u.reason,
                }
            }
        }
    }

    fn has_backend(&self, kind: BackendKind) -> bool {
        match kind {
            BackendKind::IoUring => self.ring.is_some(),
            BackendKind::Aio => self.aio.is_some(),
            k => self.queued[kind_index(k)].is_some(),
        }
    }

    /// Captures `[offset, offset + length)` of the JS view `v` for an op.
    ///
    /// # Safety
    /// `v` must be a live handle of the current N-API call on `self.env`.
    unsafe fn capture(
        &self,
        v: sys::napi_value,
        offset: usize,
        length: usize,
        mem_align: usize,
        write: bool,
    ) -> Result<Seg, CaptureError> {
        // SAFETY: forwarded contract.
        let view = unsafe { memory::view(self.env, v) }.map_err(from_view_err)?;
        let end = offset.checked_add(length).ok_or(CaptureError::Detached)?;
        if view.len < end || view.ptr.is_null() {
            return Err(CaptureError::Detached);
        }
        let p = view.ptr as usize + offset;
        if mem_align > 0 && p.is_multiple_of(mem_align) {
            if let Some(a) = memory::lookup(p, length) {
                let start = a.ptr() as usize;
                return Ok(Seg {
                    ptr: p as *mut u8,
                    len: length,
                    mem: Mem::Owned(a, length),
                    owner: Some(start),
                });
            }
        }
        // Not odirect's memory (or not aligned): the kernel gets a bounce buffer we own.
        let mut b =
            AlignedBuf::try_new(length, mem_align.max(4096)).ok_or(CaptureError::NoMemory)?;
        let ptr = b.as_mut_ptr();
        let back = if write {
            // SAFETY: view.ptr + offset .. + length lies inside the view (checked above) and
            // b has at least `length` bytes; no JS runs during the copy.
            unsafe { ptr::copy_nonoverlapping(p as *const u8, ptr, length) };
            None
        } else {
            let mut r = ptr::null_mut();
            // SAFETY: v is a live object handle; the reference is deleted on completion.
            if unsafe { sys::napi_create_reference(self.env, v, 1, &mut r) } != sys::Status::napi_ok
            {
                return Err(CaptureError::NotView);
            }
            Some((r, offset))
        };
        Ok(Seg {
            ptr,
            len: length,
            mem: Mem::Bounce(b, length, back),
            owner: None,
        })
    }

    fn slot(&mut self, rec: OpRec) -> u32 {
        if let Some(k) = self.free.pop() {
            self.ops[k as usize] = Some(rec);
            k
        } else {
            self.ops.push(Some(rec));
            (self.ops.len() - 1) as u32
        }
    }

    /// Where an op on a descriptor whose submission may sleep goes, so that the JS thread never
    /// sleeps in the kernel: on io_uring it is submitted with IOSQE_ASYNC (an io-wq worker
    /// issues it, the JS thread's io_uring_enter only queues it); on aio (whose io_submit runs
    /// buffered I/O synchronously and sleeps on FUSE's request limit) it goes to the thread pool.
    fn route(&mut self, rec: &mut OpRec) {
        let facts = self.fds.get(&rec.kind.fd()).copied().unwrap_or(0);
        match rec.backend {
            BackendKind::IoUring => rec.punt = facts & FD_MAY_BLOCK != 0,
            BackendKind::Aio
                if facts != 0 && self.ensure(BackendKind::ThreadPool, 0, 0).is_empty() =>
            {
                rec.backend = BackendKind::ThreadPool;
            }
            _ => {}
        }
    }

    /// Takes `rec` in (in flight from now on) and stages it for the next flush.
    fn stage(&mut self, mut rec: OpRec) -> u32 {
        self.route(&mut rec);
        let k = self.slot(rec);
        self.inflight += 1;
        self.update_ref();
        self.staged.push(k);
        k
    }

    fn release_segs(&self, segs: Vec<Seg>) {
        for s in segs {
            self.release_mem(s.mem);
        }
    }

    fn release_mem(&self, m: Mem) {
        if let Mem::Bounce(_, _, Some((r, _))) = m {
            // SAFETY: r was created on this env by capture and is deleted once.
            unsafe { sys::napi_delete_reference(self.env, r) };
        }
    }

    fn fixed_for(&self, kind: BackendKind, owner: Option<usize>) -> Option<u16> {
        if kind != BackendKind::IoUring {
            return None;
        }
        owner.and_then(|o| self.registered.get(&o).copied())
    }

    /// Refuses new ops once shut down or on a backend that was never started.
    fn ready(&self, kind: BackendKind) -> Result<(), CaptureError> {
        if self.closed {
            return Err(CaptureError::Closed);
        }
        if !self.has_backend(kind) {
            return Err(CaptureError::NoBackend);
        }
        Ok(())
    }

    /// Captures every `(view, length)` whole, or none (what was taken is released).
    ///
    /// # Safety
    /// Every value must be a live handle of the current N-API call on `self.env`.
    unsafe fn capture_all(
        &self,
        views: impl Iterator<Item = (sys::napi_value, usize)>,
        mem_align: usize,
        write: bool,
    ) -> Result<Vec<Seg>, CaptureError> {
        let mut segs = Vec::with_capacity(views.size_hint().0);
        for (v, len) in views {
            // SAFETY: forwarded contract.
            match unsafe { self.capture(v, 0, len, mem_align, write) } {
                Ok(s) => segs.push(s),
                Err(e) => {
                    self.release_segs(segs);
                    return Err(e);
                }
            }
        }
        Ok(segs)
    }

    /// The record of a read or write of one captured segment at `position`, and whether it
    /// was bounced.
    fn single(
        &self,
        kind: BackendKind,
        write: bool,
        fd: i32,
        seg: Seg,
        position: u64,
    ) -> (OpRec, u32) {
        let fixed = self.fixed_for(kind, seg.owner);
        let bounced = seg.owner.is_none() as u32;
        let op = if write {
            OpKind::Write {
                fd,
                ptr: seg.ptr,
                len: seg.len,
                offset: position,
                buf_index: fixed,
            }
        } else {
            OpKind::Read {
                fd,
                ptr: seg.ptr,
                len: seg.len,
                offset: position,
                buf_index: fixed,
            }
        };
        (OpRec::new(kind, op, None, vec![seg.mem], fixed), bounced)
    }

    /// Stages a read or write of one view segment. Returns the op key.
    ///
    /// # Safety
    /// `v` must be a live handle of the current N-API call on `self.env`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rw(
        &mut self,
        kind: BackendKind,
        write: bool,
        fd: i32,
        v: sys::napi_value,
        offset: usize,
        length: usize,
        position: u64,
        mem_align: usize,
    ) -> Result<u32, CaptureError> {
        self.ready(kind)?;
        // SAFETY: forwarded contract.
        let seg = unsafe { self.capture(v, offset, length, mem_align, write)? };
        let (rec, bounced) = self.single(kind, write, fd, seg, position);
        Ok(crate::consts::ticket(self.stage(rec), bounced))
    }

    /// Stages a readv/writev over `views` (all captured, or none staged).
    ///
    /// # Safety
    /// Every value must be a live handle of the current N-API call on `self.env`.
    pub unsafe fn rwv(
        &mut self,
        kind: BackendKind,
        write: bool,
        fd: i32,
        views: &[(sys::napi_value, usize)],
        position: u64,
        mem_align: usize,
    ) -> Result<u32, CaptureError> {
        self.ready(kind)?;
        // SAFETY: forwarded contract.
        let segs = unsafe { self.capture_all(views.iter().copied(), mem_align, write)? };
        let bounced = segs.iter().any(|s| s.owner.is_none()) as u32;
        let iov: Box<[libc::iovec]> = segs
            .iter()
            .map(|s| libc::iovec {
                iov_base: s.ptr as *mut c_void,
                iov_len: s.len,
            })
            .collect();
        let sv: Vec<Segment> = segs
            .iter()
            .map(|s| Segment {
                ptr: s.ptr,
                len: s.len,
            })
            .collect();
        let op = if write {
            OpKind::Writev {
                fd,
                segs: sv,
                offset: position,
            }
        } else {
            OpKind::Readv {
                fd,
                segs: sv,
                offset: position,
            }
        };
        let mem = segs.into_iter().map(|s| s.mem).collect();
        let key = self.stage(OpRec::new(kind, op, Some(iov), mem, None));
        Ok(crate::consts::ticket(key, bounced))
    }

    /// Stages many single-view ops on one fd: all captured, or none staged.
    ///
    /// # Safety
    /// Every value must be a live handle of the current N-API call on `self.env`.
    pub unsafe fn rw_many(
        &mut self,
        kind: BackendKind,
        write: bool,
        fd: i32,
        views: &[(sys::napi_value, usize, u64)],
        mem_align: usize,
        keys: &mut Vec<u32>,
    ) -> Result<(), CaptureError> {
        self.ready(kind)?;
        // SAFETY: forwarded contract.
        let segs =
            unsafe { self.capture_all(views.iter().map(|(v, l, _)| (*v, *l)), mem_align, write)? };
        for (seg, (_, _, position)) in segs.into_iter().zip(views) {
            let (rec, bounced) = self.single(kind, write, fd, seg, *position);
            keys.push(crate::consts::ticket(self.stage(rec), bounced));
        }
        Ok(())
    }

    /// Sets the preadv2/pwritev2 flags (RWF_DSYNC, RWF_SYNC, RWF_ATOMIC, RWF_DONTCACHE) of read
    /// or write op `key`, staged or held but not yet submitted (ops go to the kernel at the next
    /// `flush`). Returns false otherwise.
    pub fn set_rw_flags(&mut self, key: u32, rw_flags: i32) -> bool {
        match self.ops.get_mut(key as usize) {
            Some(Some(rec))
                if !rec.submitted
                    && matches!(
                        rec.kind,
                        OpKind::Write { .. }
                            | OpKind::Writev { .. }
                            | OpKind::Read { .. }
                            | OpKind::Readv { .. }
                    ) =>
            {
                rec.rw_flags = rw_flags;
                true
            }
            _ => false,
        }
    }

    /// Links io_uring op `key`, staged but not yet submitted, to the op staged right after it
    /// (IOSQE_IO_LINK; see `LocalRing::push_chain`). False for other backends or submitted ops.
    pub fn set_link(&mut self, key: u32) -> bool {
        match self.ops.get_mut(key as usize) {
            Some(Some(rec)) if !rec.submitted && rec.backend == BackendKind::IoUring => {
                rec.link = true;
                true
            }
            _ => false,
        }
    }

    /// Stages an op without memory.
    pub fn simple(&mut self, kind: BackendKind, op: OpKind) -> Result<u32, CaptureError> {
        self.ready(kind)?;
        let mut backend = kind;
        if let OpKind::Close { fd } = op {
            self.fds.remove(&fd);
            if let Some(r) = self.ring.as_mut() {
                r.unregister_fd(fd);
            }
        }
        let aio_cannot = kind == BackendKind::Aio
            && matches!(
                op,
                OpKind::Fallocate { .. } | OpKind::Ftruncate { .. } | OpKind::Close { .. }
            );
        if aio_cannot
            || (matches!(op, OpKind::Ftruncate { .. })
                && kind == BackendKind::IoUring
                && !self.ring.as_ref().is_some_and(|r| r.supports_ftruncate()))
        {
            // No IORING_OP_FTRUNCATE before Linux 6.9, and no fallocate/ftruncate/close in Linux
            // AIO: run those on the thread pool (joined at teardown like every other backend).
            if self.ensure(BackendKind::ThreadPool, 0, 0).is_empty() {
                backend = BackendKind::ThreadPool;
            }
        }
        Ok(self.stage(OpRec::new(backend, op, None, Vec::new(), None)))
    }

    /// Tracks `fd` (closed at teardown if still open) with its `FD_*` facts.
    pub fn adopt(&mut self, fd: i32, facts: u8) {
        self.fds.insert(fd, facts);
        if let Some(r) = self.ring.as_mut() {
            r.register_fd(fd);
        }
    }

    /// Closes `fd` now if this engine tracks it (GC of a leaked handle); true when it did.
    pub fn close_sync(&mut self, fd: i32) -> bool {
        if let Some(r) = self.ring.as_mut() {
            r.unregister_fd(fd);
        }
        if self.fds.remove(&fd).is_some() {
            // SAFETY: the fd is ours and no op of its handle is in flight (the handle was
            // collected, and ops keep their handle reachable).
            unsafe { libc::close(fd) };
            true
        } else {
            false
        }
    }

    /// Hands every staged op to its backend (one io_uring_enter for the ring).
    pub fn flush(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        let mut ring_used = false;
        let mut chain = Vec::new();
        let mut aio_used = false;
        for k in staged {
            let Some(rec) = self.ops[k as usize].as_mut() else {
                continue;
            };
            if rec.submitted {
                continue;
            }
            rec.submitted = true;
            if self.debug {
                let (off, len) = rec.kind.range();
                let mut what = format!(
                    "op={} fd={} offset={} length={}",
                    rec.kind.syscall(),
                    rec.kind.fd(),
                    off,
                    len
                );
                if rec.rw_flags != 0 {
                    what.push_str(&format!(" rw_flags=0x{:x}", rec.rw_flags));
                }
                if rec.link {
                    what.push_str(" link");
                }
                eprintln!("odirect: submit id={k} {what}");
                rec.debug = Some(what);
            }
            match rec.backend {
                BackendKind::IoUring => {
                    let ring = self.ring.as_mut().expect("checked at staging");
                    // SAFETY: the op's memory (Owned Arcs / bounce buffers / iovec array) is in
                    // `rec`, which stays in the slab until this key's completion is reaped.
                    let sqe = unsafe {
                        ring.sqe_rw(
                            k as u64,
                            &rec.kind,
                            rec.iov.as_deref(),
                            rec.fixed,
                            false,
                            rec.rw_flags as u32,
                        )
                    };
                    match sqe {
                        Ok(e) => {
                            let e = if rec.punt { LocalRing::punt(e) } else { e };
                            if rec.link || !chain.is_empty() {
                                // A chain (ops marked `link`, then the one after the last)
                                // goes in whole.
                                chain.push(e);
                                if !rec.link {
                                    // SAFETY: as above, for every entry of the chain.
                                    unsafe { ring.push_chain(std::mem::take(&mut chain)) };
                                }
                            } else {
                                // SAFETY: as above.
                                unsafe { ring.push(e) };
                            }
                            ring_used = true;
                        }
                        Err(e) => self
                            .synthetic
                            .push((k as u64, -(e.raw_os_error().unwrap_or(libc::EINVAL) as i64))),
                    }
                }
                BackendKind::Aio => {
                    let aio = self.aio.as_mut().expect("checked at staging");
                    // SAFETY: as for the ring: the record keeps the memory until reaped.
                    match unsafe {
                        aio.push_rw(k as u64, &rec.kind, rec.iov.as_deref(), rec.rw_flags)
                    } {
                        Ok(()) => aio_used = true,
                        Err(e) => self
                            .synthetic
                            .push((k as u64, -(e.raw_os_error().unwrap_or(libc::EINVAL) as i64))),
                    }
                }
                other => {
                    let q = self.queued[kind_index(other)]
                        .as_mut()
                        .expect("checked at staging");
                    let mut op = Op::new(k as u64, 0, rec.kind.clone());
                    op.rw_flags = rec.rw_flags;
                    q.staged.push(op);
                }
            }
        }
        if ring_used {
            if let Some(r) = self.ring.as_mut() {
                if !chain.is_empty() {
                    // A chain whose last op never came (not expected): in, ordered, unlinked.
                    // SAFETY: as for every ring entry above.
                    unsafe { r.push_chain(chain) };
                }
                r.submit();
            }
        }
        if aio_used {
            if let Some(a) = self.aio.as_mut() {
                a.submit();
            }
        }
        for q in self.queued.iter_mut().flatten() {
            if !q.staged.is_empty() {
                let ops = std::mem::take(&mut q.staged);
                // SAFETY: each op's memory is held by its record in the slab until its
                // completion is reaped, which happens after the backend delivered it.
                unsafe { q.backend.submit(ops) };
            }
        }
        if !self.synthetic.is_empty() {
            eventfd::signal(self.eventfd());
        }
    }

    /// Starts waiting for a whole-file lock on `fd` (see `locks`); returns its key, which
    /// completes like an op (0 or -errno; -ECANCELED when cancelled) and counts as in flight.
    pub fn lock(&mut self, fd: i32, exclusive: bool) -> Result<u32, i32> {
        if self.closed {
            return Err(libc::ECANCELED);
        }
        let wake = self.eventfd.clone().ok_or(libc::ECANCELED)?;
        let key = self.locks.start(fd, exclusive, wake)?;
        self.inflight += 1;
        self.update_ref();
        Ok(key)
    }

    /// Cancels op `key` (it still completes, with ECANCELED unless it finished first).
    pub fn cancel(&mut self, key: u32) {
        if Waiters::is_lock(key as u64) {
            return self.locks.cancel(key);
        }
        let Some(Some(rec)) = self.ops.get(key as usize) else {
            return;
        };
        if !rec.submitted {
            // Not in the kernel yet: it never will be.
            self.staged.retain(|k| *k != key);
            if let Some(r) = self.ops[key as usize].as_mut() {
                r.submitted = true;
            }
            self.synthetic.push((key as u64, -(libc::ECANCELED as i64)));
            eventfd::signal(self.eventfd());
            return;
        }
        match rec.backend {
            BackendKind::IoUring => {
                if let Some(r) = self.ring.as_mut() {
                    r.cancel(key as u64)
                }
            }
            BackendKind::Aio => {
                if let Some(a) = self.aio.as_mut() {
                    a.cancel(key as u64)
                }
            }
            k => {
                if let Some(q) = self.queued[kind_index(k)].as_ref() {
                    q.backend.cancel(key as u64)
                }
            }
        }
    }

    fn update_ref(&mut self) {
        let want = self.inflight > 0;
        if want == self.referenced {
            return;
        }
        self.referenced = want;
        match &self.wake {
            Wake::Loop { uv, poll, .. } => {
                // SAFETY: poll is our live, initialised uv_poll_t on this thread's loop.
                unsafe {
                    if want {
                        (uv.ref_)(*poll)
                    } else {
                        (uv.unref)(*poll)
                    }
                }
            }
            Wake::Thread { tsfn, .. } => {
                // SAFETY: on the JS thread with our env and live tsfn.
                unsafe {
                    if want {
                        sys::napi_ref_threadsafe_function(self.env, *tsfn);
                    } else {
                        sys::napi_unref_threadsafe_function(self.env, *tsfn);
                    }
                }
            }
            Wake::None => {}
        }
    }

    fn gather(&mut self, raw: &mut Vec<(u64, i64)>) {
        eventfd::drain(self.eventfd());
        raw.append(&mut self.synthetic);
        if let Some(r) = self.ring.as_mut() {
            let mut tmp = Vec::new();
            r.reap(&mut tmp);
            raw.extend(tmp.into_iter().map(|(k, res)| (k, res as i64)));
        }
        if let Some(a) = self.aio.as_mut() {
            a.reap(raw);
        }
        for q in self.queued.iter().flatten() {
            let done = std::mem::take(&mut *q.done.lock().unwrap_or_else(|p| p.into_inner()));
            raw.extend(done.into_iter().map(|c| (c.id, c.result)));
        }
        self.locks.take_done(raw);
    }

    /// Turns raw completions into (key, result, latency_us) triples, releasing each op's memory
    /// (and copying bounced reads back into their views, if those still have the room).
    fn finish(&mut self, raw: Vec<(u64, i64)>, out: &mut Vec<f64>) {
        for (key, mut result) in raw {
            if Waiters::is_lock(key) {
                self.inflight -= 1;
                out.extend([key as f64, result as f64, 0.0]);
                continue;
            }
            let Some(rec) = self.ops.get_mut(key as usize).and_then(|s| s.take()) else {
                continue;
            };
            self.free.push(key as u32);
            self.inflight -= 1;
            let mut detached = false;
            if result > 0 {
                let mut left = result as usize;
                for m in &rec.mem {
                    let (n, back) = match m {
                        Mem::Owned(_, len) => (left.min(*len), None),
                        Mem::Bounce(b, len, back) => (left.min(*len), back.map(|x| (b, x))),
                    };
                    if let Some((b, (r, off))) = back {
                        if n > 0 {
                            let mut val = ptr::null_mut();
                            // SAFETY: JS thread, live env; r is our reference; the view is
                            // re-measured now and written only within its current length.
                            unsafe {
                                let ok = sys::napi_get_reference_value(self.env, r, &mut val)
                                    == sys::Status::napi_ok
                                    && !val.is_null();
                                match if ok {
                                    memory::view(self.env, val).ok()
                                } else {
                                    None
                                } {
                                    Some(v) if !v.ptr.is_null() && v.len >= off + n => {
                                        ptr::copy_nonoverlapping(b.as_ptr(), v.ptr.add(off), n)
                                    }
                                    _ => detached = true,
                                }
                            }
                        }
                    }
                    left -= n;
                }
            }
            if detached {
                result = RESULT_DETACHED as i64;
            }
            let lat = rec.started.elapsed().as_nanos() as f64 / 1000.0;
            if let Some(d) = &rec.debug {
                let err = if result < 0 && result > -4096 {
                    format!(" ({})", odirect_core::error::errno_name(-result as i32))
                } else {
                    String::new()
                };
                eprintln!(
                    "odirect: complete id={key} {d} result={result}{err} latency_us={lat:.1}"
                );
            }
            for m in rec.mem {
                self.release_mem(m);
            }
            out.push(key as f64);
            out.push(result as f64);
            out.push(lat);
        }
        self.update_ref();
    }

    /// Reaps what is complete now into `out` triples.
    pub fn reap(&mut self, out: &mut Vec<f64>) {
        let mut raw = Vec::new();
        self.gather(&mut raw);
        self.finish(raw, out);
    }

    /// Registers (pins) owned buffers; returns 0 or an errno.
    ///
    /// # Safety
    /// Values must be live handles of the current call.
    pub unsafe fn register_buffers(&mut self, kind: BackendKind, views: &[sys::napi_value]) -> i32 {
        let mut allocs = Vec::with_capacity(views.len());
        for v in views {
            // SAFETY: forwarded contract.
            let Ok(view) = (unsafe { memory::view(self.env, *v) }) else {
                return libc::EINVAL;
            };
            match memory::lookup(view.ptr as usize, view.len) {
                Some(a) => allocs.push(a),
                None => return libc::EINVAL,
            }
        }
        let i = kind_index(kind);
        let r = match kind {
            BackendKind::IoUring => {
                let Some(ring) = self.ring.as_mut() else {
                    return libc::ENODEV;
                };
                let iov: Vec<libc::iovec> = allocs
                    .iter()
                    .map(|a| libc::iovec {
                        iov_base: a.ptr() as *mut c_void,
                        iov_len: a.len(),
                    })
                    .collect();
                // SAFETY: the allocations stay alive in reg_allocs until unregistration.
                let r = unsafe { ring.register_buffers(&iov) };
                self.registered.clear();
                if r.is_ok() {
                    for (n, a) in allocs.iter().enumerate() {
                        self.registered.insert(a.ptr() as usize, n as u16);
                    }
                }
                r
            }
            BackendKind::Aio => {
                if self.aio.is_none() {
                    return libc::ENODEV;
                }
                munlock_all(&self.reg_allocs[i]);
                let mut r = Ok(());
                for (n, a) in allocs.iter().enumerate() {
                    // SAFETY: mlock of memory we own and keep (reg_allocs) while locked.
                    if unsafe { libc::mlock(a.ptr() as *const c_void, a.len()) } != 0 {
                        r = Err(std::io::Error::last_os_error());
                        munlock_all(&allocs[..n]);
                        break;
                    }
                }
                r
            }
            k => {
                let Some(q) = self.queued[kind_index(k)].as_ref() else {
                    return libc::ENODEV;
                };
                let segs: Vec<Segment> = allocs
                    .iter()
                    .map(|a| Segment {
                        ptr: a.ptr(),
                        len: a.len(),
                    })
                    .collect();
                // SAFETY: the allocations stay alive in reg_allocs until unregistration.
                unsafe { q.backend.register_buffers(&segs) }
            }
        };
        match r {
            Ok(()) => {
                self.reg_allocs[i] = allocs;
                0
            }
            Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    pub fn unregister_buffers(&mut self, kind: BackendKind) -> i32 {
        let i = kind_index(kind);
        let r = match kind {
            BackendKind::IoUring => {
                self.registered.clear();
                self.ring
                    .as_mut()
                    .map(|r| r.unregister_buffers())
                    .unwrap_or(Ok(()))
            }
            BackendKind::Aio => {
                munlock_all(&self.reg_allocs[i]);
                Ok(())
            }
            k => self.queued[kind_index(k)]
                .as_ref()
                .map(|q| q.backend.unregister_buffers())
                .unwrap_or(Ok(())),
        };
        // Ops in flight keep their own references; the registration's go now.
        self.reg_allocs[i].clear();
        match r {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Teardown: cancel and wait for every op, release everything, close leaked descriptors.
    pub fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        // Staged and held ops never reach the kernel.
        self.staged.clear();
        for (k, rec) in self.ops.iter().enumerate() {
            if rec.as_ref().is_some_and(|r| !r.submitted) {
                self.synthetic.push((k as u64, -(libc::ECANCELED as i64)));
            }
        }
        // Lock waits end at once (their completions are dropped: no JS runs any more).
        self.locks.shutdown(&mut Vec::new());
        // Cancel what is in the kernel, then wait for it, for EXIT_WAIT at most.
        if let Some(r) = self.ring.as_mut() {
            r.cancel_all();
        }
        if let Some(a) = self.aio.as_mut() {
            a.cancel_all();
        }
        for (k, rec) in self.ops.iter().enumerate() {
            if let Some(rec) = rec {
                if let Some(q) = self.queued[kind_index(rec.backend)].as_ref() {
                    q.backend.cancel(k as u64);
                }
            }
        }
        let deadline = Instant::now() + EXIT_WAIT;
        let mut raw = Vec::new();
        loop {
            self.gather(&mut raw);
            // Out of the kernel: release the memory (no JS is called).
            for (key, _) in raw.drain(..) {
                if let Some(rec) = self.ops.get_mut(key as usize).and_then(|s| s.take()) {
                    for m in rec.mem {
                        self.release_mem(m);
                    }
                }
            }
            let left = Instant::now();
            if self.ops.iter().all(Option::is_none) || left >= deadline {
                break;
            }
            let ms = (deadline - left).as_millis().clamp(1, 10) as i32;
            let mut p = libc::pollfd {
                fd: self.eventfd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd (waits for a completion, 10 ms at most).
            unsafe { libc::poll(&mut p, 1, ms) };
        }
        self.abandon_the_rest();
        self.ops.clear();
        self.inflight = 0;
        for r in self.reg_allocs.iter_mut() {
            r.clear();
        }
        for (fd, _) in self.fds.drain() {
            // SAFETY: descriptors of handles never closed in this environment; no op uses
            // them any more (all completed above).
            unsafe { libc::close(fd) };
        }
    }

    /// Ops the kernel has not let go of by the end of `EXIT_WAIT` (a hung FUSE daemon or NFS
    /// server: nothing cancels those) keep their memory, and the backend that runs them keeps
    /// going, owned by the process ([`ABANDONED`]) rather than waited for: the environment
    /// exits, the kernel writes into memory that stays allocated. Backends with nothing left
    /// stop normally.
    fn abandon_the_rest(&mut self) {
        let mut busy = [false; 3];
        let mut keep: Vec<Abandoned> = Vec::new();
        for slot in self.ops.iter_mut() {
            let Some(mut rec) = slot.take() else { continue };
            busy[kind_index(rec.backend)] = true;
            for m in rec.mem.iter_mut() {
                if let Mem::Bounce(_, _, back) = m {
                    if let Some((r, _)) = back.take() {
                        // SAFETY: r was created on this env by capture; deleted once (taken).
                        unsafe { sys::napi_delete_reference(self.env, r) };
                    }
                }
            }
            keep.push(Abandoned(Box::new(rec)));
        }
        if let Some(r) = self.ring.take() {
            if busy[0] {
                keep.push(Abandoned(Box::new(r)));
            }
        }
        if let Some(a) = self.aio.take() {
            if busy[1] {
                keep.push(Abandoned(Box::new(a)));
            }
        }
        for (i, q) in self.queued.iter_mut().enumerate() {
            if let Some(q) = q.take() {
                if busy[i] {
                    keep.push(Abandoned(Box::new(q)));
                } else {
                    q.backend.shutdown();
                }
            }
        }
        if !keep.is_empty() {
            // Registered (pinned) buffers may be what the abandoned ops use.
            for r in self.reg_allocs.iter_mut() {
                keep.push(Abandoned(Box::new(std::mem::take(r))));
            }
            if self.debug {
                eprintln!(
                    "odirect: {} ops still in the kernel at exit: their memory is kept for the process",
                    keep.len()
                );
            }
            ABANDONED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(keep);
        }
    }

    pub fn callback(&self) -> sys::napi_ref {
        self.callback
    }

    pub fn results(&self) -> Option<sys::napi_ref> {
        self.results
    }

    pub fn inflight(&self) -> usize {
        self.inflight
    }
}

fn munlock_all(allocs: &[Arc<Alloc>]) {
    for a in allocs {
        // SAFETY: munlock of memory we own; failure (never locked) is harmless.
        unsafe { libc::munlock(a.ptr() as *const c_void, a.len()) };
    }
}

/// Delivers `out` triples to JS in chunks of the preallocated results array (re-measured each
/// time: written only while it is attached and long enough), or of fresh arrays. Must not hold
/// any borrow of the engine: the JS callback may call back into it.
///
/// # Safety
/// On the JS thread, inside a handle scope; `make` calls the JS function with (array, count).
pub unsafe fn deliver(
    env: sys::napi_env,
    cb: sys::napi_ref,
    results: Option<sys::napi_ref>,
    out: &[f64],
    call: &mut dyn FnMut(sys::napi_value, &[sys::napi_value]),
) {
    let mut f = ptr::null_mut();
    // SAFETY (block): JS thread, live env and references created on it.
    unsafe {
        if sys::napi_get_reference_value(env, cb, &mut f) != sys::Status::napi_ok || f.is_null() {
            return;
        }
        for chunk in out.chunks(RESULTS_CAP * crate::consts::RESULT_STRIDE as usize) {
            let mut arr = ptr::null_mut();
            let mut data: *mut c_void = ptr::null_mut();
            let mut len = 0usize;
            if let Some(r) = results {
                let (mut ty, mut ab, mut off) =
                    (sys::TypedarrayType::float64_array, ptr::null_mut(), 0);
                if sys::napi_get_reference_value(env, r, &mut arr) != sys::Status::napi_ok
                    || arr.is_null()
                    || sys::napi_get_typedarray_info(
                        env, arr, &mut ty, &mut len, &mut data, &mut ab, &mut off,
                    ) != sys::Status::napi_ok
                {
                    len = 0;
                }
            }
            match results {
                Some(_) if !data.is_null() && len >= chunk.len() => {
                    ptr::copy_nonoverlapping(chunk.as_ptr(), data as *mut f64, chunk.len());
                }
                _ => {
                    let mut data: *mut c_void = ptr::null_mut();
                    let mut ab = ptr::null_mut();
                    if sys::napi_create_arraybuffer(env, chunk.len() * 8, &mut data, &mut ab)
                        != sys::Status::napi_ok
                    {
                        return;
                    }
                    ptr::copy_nonoverlapping(chunk.as_ptr(), data as *mut f64, chunk.len());
                    sys::napi_create_typedarray(
                        env,
                        sys::TypedarrayType::float64_array,
                        chunk.len(),
                        ab,
                        0,
                        &mut arr,
                    );
                }
            }
            let mut n = ptr::null_mut();
            sys::napi_create_uint32(env, crate::consts::completions(chunk.len()), &mut n);
            call(f, &[arr, n]);
        }
    }
}

pub const RESULTS_BYTES: usize = RESULTS_CAP * crate::consts::RESULT_STRIDE as usize * 8;

/// A wake-up from the loop or the reaper: reap and deliver.
///
/// # Safety
/// On the JS thread of `shared`'s env, inside a handle scope.
pub unsafe fn on_wake(shared: &Shared, call: &mut dyn FnMut(sys::napi_value, &[sys::napi_value])) {
    let mut out = Vec::new();
    let (env, cb, res) = {
        let Ok(mut e) = shared.try_borrow_mut() else {
            return;
        };
        if e.closed {
            return;
        }
        if let Wake::Thread { pending, .. } = &e.wake {
            pending.store(false, Ordering::SeqCst);
        }
        e.reap(&mut out);
        let res = e.results();
        (e.env, e.callback(), res)
    };
    if out.is_empty() {
        return;
    }
    // SAFETY: forwarded contract; no borrow of the engine is held.
    unsafe { deliver(env, cb, res, &out, call) };
}
