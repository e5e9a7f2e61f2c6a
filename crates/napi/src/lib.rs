//! The N-API surface of odirect: no I/O logic here, only the bridge between JS values and
//! `odirect-core`.
//!
//! - `memory`: odirect-owned aligned memory behind external ArrayBuffers; a view's pointer.
//! - `engine`: one engine per JS environment: the op slab, staging, submission, reaping,
//!   teardown.
//! - `fast`: `rw` and `flush` as plain functions bound to an engine (the per-op path).
//! - `batch`: readMany / writeMany over typed arrays, the window refilled at reap time.
//! - `capture`: from a JS view to memory the kernel may use (bounce buffers, copy-back).
//! - `pins`: registered (pinned) memory and its fixed-buffer indexes.
//! - `wake`: how completions reach JS (uv_poll or a reaper thread) and their delivery.
//! - `uv`: libuv functions resolved at run time (Node's loop integration).
//! - `status`: the status check of every raw N-API call.
//! - `tasks`: open / fstat / probe off the JS thread, and small helpers.
//! - `xattr`: what a file replaced through a temp file keeps of the old one (extended
//!   attributes, ACLs, owner, mode), set on the temp file before the rename.
//! - `stream`: the write streams' copy into their aligned blocks, their chains of writes
//!   refilled at reap time, and the read streams' chunk hand-over.
//!
//! Memory rule: the kernel only ever reads or writes odirect-owned memory whose release waits
//! for the op's completion (see `engine`), never a V8 backing store directly.

#![deny(clippy::all)]
// The N-API entry points take flat argument lists on purpose: one call, no object to unpack.
#![allow(clippy::too_many_arguments)]

pub mod batch;
pub mod capture;
mod consts;
pub mod engine;
mod env;
pub mod fast;
pub mod locks;
mod mayblock;
pub mod memory;
pub mod paths;
pub mod pins;
pub mod reaper;
pub mod status;
pub mod stream;
pub mod tasks;
pub mod uv;
pub mod wake;
pub mod xattr;

use std::ptr;
use std::rc::Rc;

use napi::{sys, Env, JsValue, Result, Status, Unknown};
use napi_derive::napi;
use odirect_core::io::BackendKind;
use odirect_core::op::OpKind;

use engine::{Inner, Shared};
use status::check;

/// Backends, by the index every engine method takes (shared with TypeScript through the
/// generated binding, so neither side hard-codes the numbers).
#[napi]
pub enum BackendIndex {
    IoUring = 0,
    Aio = 1,
    ThreadPool = 2,
}

/// Ops without memory, by the code `NativeEngine.simple` takes.
#[napi]
pub enum SimpleOp {
    Fsync = 0,
    Fdatasync = 1,
    Fallocate = 2,
    Ftruncate = 3,
    Close = 4,
}

/// Negative results `rw`/`rwv`/`rwMany`/`simple` return instead of an op id.
#[napi]
pub enum CaptureCode {
    Detached = -1,
    NotView = -2,
    UnknownKind = -3,
    NoMemory = -4,
    Closed = -5,
    NoBackend = -6,
}

/// Lock waits' ids start here (op ids stay below).
#[napi]
pub const LOCK_BASE: u32 = locks::LOCK_BASE;

/// Result a bounced read settles with when its buffer was detached or shrunk before copy-back.
#[napi]
pub const RESULT_DETACHED: f64 = capture::RESULT_DETACHED;

fn err(msg: impl Into<String>) -> napi::Error {
    napi::Error::new(Status::InvalidArg, msg.into())
}

/// The backend a [`BackendIndex`] names.
fn backend_kind(b: u32) -> Result<BackendKind> {
    use BackendIndex as B;
    match b {
        x if x == B::IoUring as u32 => Ok(BackendKind::IoUring),
        x if x == B::Aio as u32 => Ok(BackendKind::Aio),
        x if x == B::ThreadPool as u32 => Ok(BackendKind::ThreadPool),
        _ => Err(err("bad backend index")),
    }
}

/// The process-wide reaper of ops left in the kernel by ended environments (see `reaper`):
/// [engines handed over, engines freed, ops handed over, ops freed, bytes of op memory held].
#[napi]
pub fn reaper_stats() -> Vec<f64> {
    reaper::stats().to_vec()
}

/// Threadsafe-function calls the reaper threads (the wake-up path of Bun and Deno) made again
/// because one went unanswered for 10 ms or more (a runtime may lose one: see
/// `wake::RECALL_MS`), since the process started.
#[napi]
pub fn wake_recalls() -> f64 {
    wake::RECALLS.load(std::sync::atomic::Ordering::Relaxed) as f64
}

/// Address of the first byte of an ArrayBuffer or ArrayBufferView (for alignment checks and
/// aligned views), or -1 when the value is neither (or is detached).
#[napi]
pub fn address_of(env: Env, value: Unknown) -> f64 {
    // SAFETY: env and value come from this very call.
    match unsafe { memory::view(env.raw(), value.raw()) } {
        Ok(v) if !v.ptr.is_null() => v.ptr as usize as f64,
        _ => -1.0,
    }
}

/// True when the ArrayBuffer behind a view (or the ArrayBuffer itself) is detached.
#[napi]
pub fn is_detached(env: Env, value: Unknown) -> Result<bool> {
    let (e, mut v) = (env.raw(), value.raw());
    let mut is = false;
    let (mut len, mut off) = (0usize, 0usize);
    let mut data = ptr::null_mut();
    // SAFETY: env and value are live handles of this call; each getter writes only its outputs.
    unsafe {
        check!(napi_is_typedarray(e, v, &mut is))?;
        if is {
            let mut ty = 0;
            let mut ab = ptr::null_mut();
            let (l, d, o) = (&mut len, &mut data, &mut off);
            check!(napi_get_typedarray_info(e, v, &mut ty, l, d, &mut ab, o))?;
            v = ab;
        } else {
            check!(napi_is_dataview(e, v, &mut is))?;
            if is {
                let mut ab = ptr::null_mut();
                check!(napi_get_dataview_info(
                    e, v, &mut len, &mut data, &mut ab, &mut off
                ))?;
                v = ab;
            }
        }
        let mut detached = false;
        // Refused: not an ArrayBuffer.
        if check!(napi_is_detached_arraybuffer(e, v, &mut detached)).is_err() {
            return Err(err("not an ArrayBuffer or view"));
        }
        Ok(detached)
    }
}

/// A zeroed ArrayBuffer of `size` bytes whose first byte is aligned to `align`, in memory
/// odirect owns (freed after the ArrayBuffer is collected and the last op on it completed).
/// `null` where the runtime does not share external ArrayBuffer memory (V8 sandbox, copies).
/// `zeroed: false` (the streams, which overwrite it): a reused block keeps its old bytes.
/// `smallPages: true` (registered buffers under a small RLIMIT_MEMLOCK): zeroed memory that is
/// never on a transparent huge page.
#[napi(ts_return_type = "ArrayBuffer | null")]
pub fn alloc_owned(
    env: &Env,
    size: f64,
    align: u32,
    zeroed: Option<bool>,
    small_pages: Option<bool>,
) -> Result<Unknown<'_>> {
    if !((1.0..=consts::MAX_IO_LENGTH as f64).contains(&size) && align.is_power_of_two()) {
        return Err(err("bad size or alignment"));
    }
    let (zeroed, small) = (zeroed.unwrap_or(true), small_pages.unwrap_or(false));
    // SAFETY: env is live for this call.
    match unsafe {
        memory::external_buffer(env.raw(), size as usize, align as usize, zeroed, small)
    } {
        // SAFETY: v is a live value created on env in this call.
        Ok(Some(v)) => Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), v) }),
        Ok(None) => {
            let mut n = ptr::null_mut();
            // SAFETY: live env.
            unsafe { check!(napi_get_null(env.raw(), &mut n)) }?;
            // SAFETY: n is a live value.
            Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), n) })
        }
        Err(e) => Err(napi::Error::new(Status::GenericFailure, e)),
    }
}

/// One engine per JS environment (main thread or worker).
#[napi]
pub struct NativeEngine {
    pub(crate) shared: Rc<Shared>,
    /// The engine's descriptors opened and not yet taken (see `engine::Opening`), reachable
    /// without borrowing the engine.
    pub(crate) openings: engine::Openings,
}

impl NativeEngine {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> Result<R> {
        let mut e = self
            .shared
            .try_borrow_mut()
            .map_err(|_| napi::Error::new(Status::GenericFailure, "odirect engine re-entered"))?;
        Ok(f(&mut e))
    }
}

/// Tracks a descriptor an open just made (see `tasks::OpenTask::resolve`), as
/// `NativeEngine::adopt` does; false when the engine was torn down (its environment is
/// ending): the caller closes the descriptor.
pub(crate) fn adopt_opened(shared: &Shared, fd: i32, may_block: bool, direct: bool) -> bool {
    match shared.try_borrow_mut() {
        Ok(mut e) if !e.closed => {
            let facts = if may_block { engine::FD_MAY_BLOCK } else { 0 }
                | if direct { 0 } else { engine::FD_BUFFERED };
            e.adopt(fd, facts);
            true
        }
        _ => false,
    }
}

#[napi]
impl NativeEngine {
    /// `callback(results: Float64Array, count: number)` receives `count` (id, result,
    /// latency_us) triples. `useLoop`: integrate with libuv's loop when the runtime has one.
    #[napi(constructor)]
    pub fn new(env: Env, callback: Unknown, use_loop: bool) -> Result<NativeEngine> {
        // SAFETY: env and callback are live handles of this call.
        let shared = unsafe { wake::start(env.raw(), callback.raw(), use_loop) }?;
        let openings = shared.borrow().openings.clone();
        Ok(NativeEngine { shared, openings })
    }

    /// Starts (once) and returns "" when this backend works here, else the reason it does not.
    #[napi]
    pub fn ensure_backend(&self, backend: u32, queue_depth: u32, threads: u32) -> Result<String> {
        let kind = backend_kind(backend)?;
        self.with(|e| e.ensure(kind, queue_depth, threads))
    }

    /// Captures `length` bytes of `view` from `offset` now and stages a read or write at
    /// `position`. Returns the op id (>= 0) or a negative capture error code.
    #[napi]
    pub fn rw(
        &self,
        backend: u32,
        write: bool,
        fd: i32,
        view: Unknown,
        offset: f64,
        length: f64,
        position: f64,
        mem_align: u32,
        rw_flags: Option<i32>,
        alone: Option<bool>,
    ) -> Result<f64> {
        let kind = backend_kind(backend)?;
        let v = view.raw();
        self.with(|e| {
            // SAFETY: v is a live handle of this call on the engine's env.
            match unsafe {
                e.rw(
                    kind,
                    write,
                    fd,
                    v,
                    offset as usize,
                    length as usize,
                    position as u64,
                    mem_align as usize,
                    rw_flags.unwrap_or(0),
                    alone.unwrap_or(false),
                )
            } {
                Ok(k) => k,
                Err(c) => c.code(),
            }
        })
    }

    /// readv / writev: captures every view (whole) now; all or none.
    #[napi]
    pub fn rwv(
        &self,
        backend: u32,
        write: bool,
        fd: i32,
        views: Vec<Unknown>,
        lengths: Vec<f64>,
        position: f64,
        mem_align: u32,
    ) -> Result<f64> {
        let kind = backend_kind(backend)?;
        if lengths.len() != views.len() {
            return Err(err("rwv: lengths"));
        }
        let vs: Vec<(sys::napi_value, usize)> = views
            .iter()
            .zip(&lengths)
            .map(|(v, l)| (v.raw(), *l as usize))
            .collect();
        self.with(|e| {
            // SAFETY: live handles of this call.
            match unsafe { e.rwv(kind, write, fd, &vs, position as u64, mem_align as usize) } {
                Ok(k) => k as f64,
                Err(c) => c.code(),
            }
        })
    }

    /// Many reads or writes on one fd: every view captured now (all or none), each op with the
    /// RWF_* flags `rw_flags`. `early`: the caller links nothing to them, so on a device's file
    /// they may go to the kernel in groups as they are staged (see `Inner::rw_many`). Returns the
    /// op ids (2 * id + bounced), or `[code]` with a negative capture error code.
    #[napi]
    #[allow(clippy::too_many_arguments)]
    pub fn rw_many(
        &self,
        backend: u32,
        write: bool,
        fd: i32,
        views: Vec<Unknown>,
        lengths: Vec<f64>,
        positions: Vec<f64>,
        mem_align: u32,
        rw_flags: i32,
        early: bool,
    ) -> Result<Vec<f64>> {
        let kind = backend_kind(backend)?;
        if lengths.len() != views.len() || positions.len() != views.len() {
            return Err(err("rwMany: arrays of different lengths"));
        }
        let vs: Vec<(sys::napi_value, usize, u64)> = views
            .iter()
            .zip(&lengths)
            .zip(&positions)
            .map(|((v, l), p)| (v.raw(), *l as usize, *p as u64))
            .collect();
        self.with(|e| {
            let mut keys = Vec::with_capacity(vs.len());
            // SAFETY: live handles of this call.
            match unsafe {
                e.rw_many(
                    kind,
                    write,
                    fd,
                    &vs,
                    mem_align as usize,
                    rw_flags,
                    early,
                    &mut keys,
                )
            } {
                Ok(()) => keys.into_iter().map(|k| k as f64).collect(),
                Err(c) => vec![c.code()],
            }
        })
    }

    /// Ops without memory: 0 fsync, 1 fdatasync, 2 fallocate(mode, a=offset, b=len),
    /// 3 ftruncate(a=len), 4 close. Returns the op id or a negative code.
    #[napi]
    pub fn simple(&self, backend: u32, op: u32, fd: i32, a: f64, b: f64, mode: u32) -> Result<f64> {
        let kind = backend_kind(backend)?;
        let k = match op {
            x if x == SimpleOp::Fsync as u32 => OpKind::Fsync {
                fd,
                datasync: false,
            },
            x if x == SimpleOp::Fdatasync as u32 => OpKind::Fsync { fd, datasync: true },
            x if x == SimpleOp::Fallocate as u32 => OpKind::Fallocate {
                fd,
                mode: (mode & 0xff) as i32,
                offset: a as u64,
                len: b as u64,
            },
            x if x == SimpleOp::Ftruncate as u32 => OpKind::Ftruncate { fd, len: a as u64 },
            x if x == SimpleOp::Close as u32 => OpKind::Close { fd },
            _ => return Err(err("bad op")),
        };
        self.with(|e| match e.simple(kind, k) {
            Ok(k) => k as f64,
            Err(c) => c.code(),
        })
    }

    /// Per-write flags (RWF_DSYNC / RWF_SYNC) of a staged, not yet submitted write op.
    #[napi]
    pub fn set_rw_flags(&self, id: f64, rw_flags: i32) -> Result<bool> {
        self.with(|e| e.set_rw_flags(id as u32, rw_flags))
    }

    /// Links a staged, not yet submitted io_uring op to the next one staged (IOSQE_IO_LINK);
    /// false elsewhere.
    #[napi]
    pub fn set_link(&self, id: f64) -> Result<bool> {
        self.with(|e| e.set_link(id as u32))
    }

    /// Hands every staged op to the kernel (called once per microtask checkpoint).
    #[napi]
    pub fn flush(&self) -> Result<()> {
        self.with(|e| e.flush())
    }

    /// `rw` and `flush` as plain functions bound to this engine: the same arguments and
    /// results, without a class method's per-call unwrapping and borrow bookkeeping (see
    /// `fast`). For the per-op path. Also `rwa(view)` and its argument array `args` (`rw`'s
    /// numbers in slots 0-5, its result in slot 6), unless `ODIRECT_RW_ARGS=0`.
    #[napi(
        ts_return_type = "{ rw: (fd: number, view: ArrayBufferView, offset: number, length: number, position: number, memAlign: number, packed: number) => number; flush: NativeEngine['flush']; rwa?: (view: ArrayBufferView) => void; args?: Float64Array }"
    )]
    pub fn fast_path<'e>(&self, env: &'e Env) -> Result<Unknown<'e>> {
        // SAFETY: env is live for this call, on the engine's JS thread.
        let obj = unsafe { fast::functions(env.raw(), &self.shared) }?;
        // SAFETY: obj is a live value created on env in this call.
        Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), obj) })
    }

    /// Starts waiting (on a thread of its own) for a whole-file lock on `fd`: returns its id
    /// (>= LOCK_BASE; it completes as an op does, with 0 or -errno, -ECANCELED when cancelled
    /// through `cancel(id)` or at teardown), or -errno when the wait cannot start.
    #[napi]
    pub fn lock(&self, fd: i32, exclusive: bool) -> Result<f64> {
        self.with(|e| match e.lock(fd, exclusive) {
            Ok(k) => k as f64,
            Err(errno) => -(errno as f64),
        })
    }

    /// Asks for op `id` to be cancelled; it still completes (usually with ECANCELED).
    #[napi]
    pub fn cancel(&self, id: f64) -> Result<()> {
        self.with(|e| e.cancel(id as u32))
    }

    /// Registers (pins) odirect-owned buffers: io_uring fixed buffers, or mlock elsewhere.
    /// Returns 0 or an errno (EINVAL: a view that is not odirect's memory).
    #[napi]
    pub fn register_buffers(&self, backend: u32, views: Vec<Unknown>) -> Result<i32> {
        let kind = backend_kind(backend)?;
        let vs: Vec<sys::napi_value> = views.iter().map(|v| v.raw()).collect();
        // SAFETY: live handles of this call.
        self.with(|e| unsafe { e.register_buffers(kind, &vs) })
    }

    #[napi]
    pub fn unregister_buffers(&self, backend: u32) -> Result<i32> {
        let kind = backend_kind(backend)?;
        self.with(|e| e.unregister_buffers(kind))
    }

    /// Tracks `fd` as open in this environment (closed at teardown if still open).
    /// `mayBlock`: submitting I/O on it may sleep (`OpenResult.mayBlock`); `direct`: O_DIRECT
    /// is on. The engine routes the file's ops by these so the JS thread never sleeps in the
    /// kernel (IOSQE_ASYNC on io_uring, the thread pool instead of aio).
    #[napi]
    pub fn adopt(&self, fd: i32, may_block: bool, direct: bool) -> Result<()> {
        let facts = if may_block { engine::FD_MAY_BLOCK } else { 0 }
            | if direct { 0 } else { engine::FD_BUFFERED };
        self.with(|e| e.adopt(fd, facts))
    }

    /// Closes a tracked descriptor now (handle collected without close()).
    #[napi]
    pub fn close_sync(&self, fd: i32) -> Result<bool> {
        self.with(|e| e.close_sync(fd))
    }

    /// Ops staged or in flight whose completion has not reached JS.
    #[napi(getter)]
    pub fn inflight(&self) -> Result<u32> {
        self.with(|e| e.inflight() as u32)
    }

    /// Ops staged and not yet handed to the kernel (the next flush submits them).
    #[napi(getter)]
    pub fn staged(&self) -> Result<u32> {
        self.with(|e| e.staged() as u32)
    }

    /// How completions reach JS: "libuv" (uv_poll on the loop) or "thread" (reaper thread).
    #[napi(getter)]
    pub fn path(&self) -> Result<String> {
        self.with(|e| e.path_name().to_string())
    }

    /// Requests an SQPOLL ring (kernel thread polling submissions, sleeping after `idleMs` idle);
    /// 0 for none. Must come before the first io_uring open on this thread: "" or why not.
    #[napi]
    pub fn set_sqpoll(&self, idle_ms: u32) -> Result<String> {
        self.with(|e| e.set_sqpoll(idle_ms))
    }

    /// How long (µs, 0..=1000) a flush of a lone io_uring op may wait in the kernel for its
    /// completion (`configureEngine({ waitMicros })`); 0: never.
    #[napi]
    pub fn set_wait_micros(&self, us: u32) -> Result<()> {
        self.with(|e| e.wait_us = us.min(engine::MAX_WAIT_US))
    }

    /// The in-kernel wait of this engine (µs; 0: off), as set or from ODIRECT_WAIT_US.
    #[napi(getter)]
    pub fn wait_micros(&self) -> Result<u32> {
        self.with(|e| e.wait_us)
    }

    /// [in-kernel waits made, those that woke with something to reap (completions, delivered at
    /// once, or the loop watch of a disk wait), lone disk ops
    /// that did not wait in their call because the event loop had work, disk waits ended by an
    /// event of the loop, disk waits bounded by the loop's next timer, disk waits that waited
    /// again because only the engine's own eventfd had made the loop readable, wake-up waits
    /// made, wake-up waits that found completions to reap and no loop event, lone disk ops that
    /// did not wait in their call because other completions were being delivered to JS, then the
    /// hybrid waits of lone disk ops (`ODIRECT_WAIT_HYBRID=1`, the ring's `Hybrid`): hybrid waits,
    /// those woken during their sleep by the completion or the loop, those that found the
    /// completion by spinning, spins that reached their bound and slept again, waits that spun
    /// from the start, plain waits of a lone disk op (a file's first, a slow device), ns spun in
    /// all, ns from the sleeps' deadlines to the thread back in user space over the timer's
    /// wake-ups, the sleep learned last in ns] (see `engine::DiskWait`, `Inner::wake_wait`,
    /// `Inner::disk_gate`).
    #[napi(getter)]
    pub fn wait_stats(&self) -> Result<Vec<f64>> {
        self.with(|e| {
            let mut v: Vec<f64> = [
                e.wait_tries,
                e.waited_reaps,
                e.loop_busy,
                e.loop_ended,
                e.timer_bounded,
                e.own_wakes,
                e.wake_waits,
                e.wake_waits_full,
                e.delivery_skips,
            ]
            .map(|n| n as f64)
            .to_vec();
            v.extend(e.hybrid_stats().map(|n| n as f64));
            v
        })
    }

    /// [look-ups of odirect memory answered by the per-thread cache, by the registry] so far,
    /// process-wide (see `memory::lookup`).
    #[napi(getter)]
    pub fn lookup_stats(&self) -> Vec<f64> {
        memory::lookup_stats().map(|n| n as f64).to_vec()
    }

    /// Rounds a wake-up went on with after a round of few small completions (see `wake::rounds`).
    #[napi(getter)]
    pub fn small_rounds(&self) -> Result<f64> {
        self.with(|e| e.small_round_count as f64)
    }

    /// [reads/writes completed inside their own `rw` call, reads made inline, writes made
    /// inline, lone tmpfs ops sent to the ring because cachestat(2) found a page of their range
    /// swapped out, inline ops that skipped cachestat(2) because the machine has no swap, clock
    /// reads made to time ops' starts (`ODIRECT_SUBMIT_CLOCK`), reads/writes sent with
    /// IOSQE_ASYNC because their file refuses RWF_NOWAIT (`ODIRECT_ASYNC_PUNTED`), buffers a
    /// depth-1 loop kept using that the engine registered with the ring (`ODIRECT_AUTO_FIXED`),
    /// allocations the automatic sparse table registered (`ODIRECT_AUTO_REG`), its slots
    /// emptied by sweeps, its slots in use now, the uses an allocation needs before it gets a
    /// slot (`ODIRECT_AUTO_REG_ADAPT`), slots let go, of them those that served few ops]
    /// (see `Inner::rw`, `Inner::swap_free`, `Inner::op_clocks`, `Inner::known_punts`,
    /// `Inner::auto_fixed`, `pins::AutoTable`).
    #[napi(getter)]
    pub fn call_stats(&self) -> Result<Vec<f64>> {
        self.with(|e| {
            let [registered, swept, used, need, retired, few] = e.auto_table_stats();
            [
                e.call_done,
                e.inline_reads,
                e.inline_writes,
                e.not_resident,
                e.cachestat_skips,
                e.op_clocks.get(),
                e.known_punts,
                e.auto_fixed_count,
                registered,
                swept,
                used,
                need,
                retired,
                few,
            ]
            .map(|n| n as f64)
            .to_vec()
        })
    }

    /// Lone tmpfs reads made inline (see `Inner::rw_inline`).
    #[napi(getter)]
    pub fn inline_reads(&self) -> Result<f64> {
        self.with(|e| e.inline_reads as f64)
    }

    /// Reads/writes handed to the kernel in their own staging call (a lone op: see `rw`).
    #[napi(getter)]
    pub fn alone_submits(&self) -> Result<f64> {
        self.with(|e| e.alone_submits as f64)
    }

    /// io_uring setup flags in use ("single_issuer+defer_taskrun", ...), "" before the ring.
    #[napi(getter)]
    pub fn ring_setup(&self) -> Result<String> {
        self.with(|e| e.ring_setup())
    }
}
