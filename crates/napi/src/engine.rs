//! The engine of one JS environment (main thread or worker): a slab of ops, staged on the JS
//! thread (their memory captured by `capture`), submitted inline at `flush` (io_uring owned by
//! this thread; aio and the thread pool behind their own threads), and reaped on the JS thread
//! when its eventfd is readable (woken by `wake`, which also delivers the results to JS).
//!
//! Memory rule: an op's memory is odirect-owned (an `Alloc` whose `Arc` the op holds, or a
//! bounce buffer the op owns) from capture until its completion has been reaped, so nothing a JS
//! program does (GC, transfer, detach, resize, worker exit) can free memory the kernel uses. At
//! teardown the engine cancels every op and waits for it before its memory is released; what
//! the kernel still holds after `EXIT_WAIT` is left to the process (`abandon_the_rest`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use napi::sys;
use odirect_core::backend::aio::LocalAio;
use odirect_core::backend::eventfd;
use odirect_core::backend::ring::LocalRing;
use odirect_core::backend::{self, Backend, BackendKind, BackendOptions};
use odirect_core::op::{Completion, Op, OpKind, Segment};

use crate::capture::{self, CaptureError, Mem, Seg, RESULT_DETACHED};
use crate::locks::Waiters;
use crate::memory::{self, Alloc};
use crate::wake::{Js, Wake};

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

pub struct Inner {
    pub env: sys::napi_env,
    /// The callback and results array completions are delivered to (None once torn down).
    pub js: Option<Js>,
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

impl Inner {
    pub fn new(env: sys::napi_env) -> std::io::Result<Inner> {
        let efd = eventfd::new(false)?;
        Ok(Inner {
            env,
            js: None,
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

    /// At teardown: closes the eventfd (a runtime that never finalizes the engine's JS object
    /// must not keep a descriptor per worker).
    pub fn let_go(&mut self) {
        self.eventfd = None;
    }

    pub fn path_name(&self) -> &'static str {
        self.wake.name()
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
                let qd = if queue_depth > 0 { queue_depth } else { 256 };
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
                let qd = if queue_depth > 0 { queue_depth } else { 256 };
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
        let seg = unsafe { capture::capture(self.env, v, offset, length, mem_align, write)? };
        let (rec, bounced) = self.single(kind, write, fd, seg, position);
        Ok(self.stage(rec) * 2 + bounced)
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
        let (op, mem, bounced) = capture::single(write, fd, seg, position, fixed);
        (OpRec::new(kind, op, None, vec![mem], fixed), bounced)
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
        let segs =
            unsafe { capture::capture_all(self.env, views.iter().copied(), mem_align, write)? };
        let (op, iov, mem, bounced) = capture::vectored(write, fd, segs, position);
        let key = self.stage(OpRec::new(kind, op, Some(iov), mem, None));
        Ok(key * 2 + bounced)
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
        let segs = unsafe {
            capture::capture_all(
                self.env,
                views.iter().map(|(v, l, _)| (*v, *l)),
                mem_align,
                write,
            )?
        };
        for (seg, (_, _, position)) in segs.into_iter().zip(views) {
            let (rec, bounced) = self.single(kind, write, fd, seg, *position);
            keys.push(self.stage(rec) * 2 + bounced);
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
        // SAFETY: ops are staged and reaped on the JS thread of self.env.
        unsafe { self.wake.set_ref(self.env, want) };
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
            // SAFETY: on the JS thread of self.env, which made the op's references.
            if unsafe { capture::copy_back(self.env, &rec.mem, result) } {
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
            // SAFETY: on the JS thread of self.env, which made the op's references.
            unsafe { capture::release(self.env, rec.mem) };
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
                    // SAFETY: teardown runs on the JS thread of self.env.
                    unsafe { capture::release(self.env, rec.mem) };
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
                // SAFETY: teardown runs on the JS thread of self.env, which made the reference.
                unsafe { capture::forget_view(self.env, m) };
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
