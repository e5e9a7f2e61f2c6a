//! The N-API surface of odirect: no I/O logic here, only the bridge between JS values and
//! `odirect-core`.
//!
//! - `memory`: odirect-owned aligned memory behind external ArrayBuffers; capture of views.
//! - `engine`: one engine per JS environment: capture, submission, reaping, teardown.
//! - `uv`: libuv functions resolved at run time (Node's loop integration).
//! - `tasks`: open / fstat / probe off the JS thread, and small helpers.
//!
//! Memory rule: the kernel only ever reads or writes odirect-owned memory whose release waits
//! for the op's completion (see `engine`), never a V8 backing store directly.

#![deny(clippy::all)]
// The N-API entry points take flat argument lists on purpose: one call, no object to unpack.
#![allow(clippy::too_many_arguments)]

mod consts;
pub mod engine;
pub mod locks;
pub mod memory;
pub mod paths;
pub mod tasks;
pub mod uv;

use std::cell::RefCell;
use std::ffi::c_void;
use std::os::fd::AsRawFd;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use napi::{sys, Env, JsValue, Result, Status, Unknown};
use napi_derive::napi;
use odirect_core::backend::eventfd;
use odirect_core::op::OpKind;

use engine::{parse_kind, Inner, Shared, Wake};

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
pub const RESULT_DETACHED: f64 = engine::RESULT_DETACHED;

fn err(msg: impl Into<String>) -> napi::Error {
    napi::Error::new(Status::InvalidArg, msg.into())
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
    // SAFETY: env and value are live handles of this call; each getter writes only its outputs.
    unsafe {
        sys::napi_is_typedarray(e, v, &mut is);
        if is {
            let (mut ty, mut len, mut off) = (0, 0usize, 0usize);
            let mut data = ptr::null_mut();
            let mut ab = ptr::null_mut();
            sys::napi_get_typedarray_info(e, v, &mut ty, &mut len, &mut data, &mut ab, &mut off);
            v = ab;
        } else {
            sys::napi_is_dataview(e, v, &mut is);
            if is {
                let (mut len, mut off) = (0usize, 0usize);
                let mut data = ptr::null_mut();
                let mut ab = ptr::null_mut();
                sys::napi_get_dataview_info(e, v, &mut len, &mut data, &mut ab, &mut off);
                v = ab;
            }
        }
        let mut detached = false;
        if sys::napi_is_detached_arraybuffer(e, v, &mut detached) != sys::Status::napi_ok {
            return Err(err("not an ArrayBuffer or view"));
        }
        Ok(detached)
    }
}

/// A zeroed ArrayBuffer of `size` bytes whose first byte is aligned to `align`, in memory
/// odirect owns (freed after the ArrayBuffer is collected and the last op on it completed).
/// `null` where the runtime does not share external ArrayBuffer memory (V8 sandbox, copies).
/// `zeroed: false` (the streams, which overwrite it): a reused block keeps its old bytes.
#[napi(ts_return_type = "ArrayBuffer | null")]
pub fn alloc_owned(env: &Env, size: f64, align: u32, zeroed: Option<bool>) -> Result<Unknown<'_>> {
    if !((1.0..=consts::MAX_IO_LENGTH as f64).contains(&size) && align.is_power_of_two()) {
        return Err(err("bad size or alignment"));
    }
    let zeroed = zeroed.unwrap_or(true);
    // SAFETY: env is live for this call.
    match unsafe { memory::external_buffer_with(env.raw(), size as usize, align as usize, zeroed) }
    {
        // SAFETY: v is a live value created on env in this call.
        Ok(Some(v)) => Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), v) }),
        Ok(None) => {
            let mut n = ptr::null_mut();
            // SAFETY: live env.
            unsafe { sys::napi_get_null(env.raw(), &mut n) };
            // SAFETY: n is a live value.
            Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), n) })
        }
        Err(e) => Err(napi::Error::new(Status::GenericFailure, e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Engine: loop integration (uv_poll) or reaper thread + threadsafe function

/// The engine is reference counted: the JS object holds one `Rc`, and each native holder of a
/// raw pointer to it (the uv poll handle or the threadsafe function, and the environment's
/// cleanup hook) holds one more, taken with [`sys_ref`] and given back with [`drop_sys_ref`]
/// when that holder can no longer call in (the handle closed, the tsfn finalized, the hook
/// done). The engine, its eventfd and its results buffer are freed when the last one goes, so
/// a terminated worker leaves nothing behind.
fn sys_ref(rc: &Rc<Shared>) -> *const Shared {
    Rc::into_raw(rc.clone())
}

/// # Safety
/// `p` must come from [`sys_ref`], given back once, with no borrow of the engine alive.
unsafe fn drop_sys_ref(p: *const Shared) {
    // SAFETY: forwarded contract.
    drop(unsafe { Rc::from_raw(p) });
}

unsafe extern "C" fn on_poll(handle: *mut c_void, _status: i32, _events: i32) {
    // SAFETY: handle->data is the engine pointer, set before uv_poll_start and valid until the
    // handle is closed in teardown.
    let shared = unsafe { &*(uv::data(handle) as *const Shared) };
    let (env, ctx) = {
        let Ok(e) = shared.try_borrow() else { return };
        let ctx = match e.wake {
            Wake::Loop { async_ctx, .. } => async_ctx,
            _ => return,
        };
        (e.env, ctx)
    };
    let mut scope = ptr::null_mut();
    // SAFETY: on the loop's (JS) thread; a handle scope for the values made below.
    unsafe {
        if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
            return;
        }
        // make_callback needs an object as receiver (undefined would throw).
        let mut recv = ptr::null_mut();
        sys::napi_get_global(env, &mut recv);
        let mut call = |f: sys::napi_value, args: &[sys::napi_value]| {
            let mut ret = ptr::null_mut();
            // make_callback: runs the microtask queue afterwards, as Node does for any I/O.
            sys::napi_make_callback(env, ctx, recv, f, args.len(), args.as_ptr(), &mut ret);
            let mut pending = false;
            sys::napi_is_exception_pending(env, &mut pending);
            if pending {
                let mut ex = ptr::null_mut();
                sys::napi_get_and_clear_last_exception(env, &mut ex);
                sys::napi_fatal_exception(env, ex);
            }
        };
        engine::on_wake(shared, &mut call);
        sys::napi_close_handle_scope(env, scope);
    }
}

unsafe extern "C" fn on_tsfn(
    env: sys::napi_env,
    _js_cb: sys::napi_value,
    context: *mut c_void,
    _data: *mut c_void,
) {
    if env.is_null() || context.is_null() {
        return;
    }
    // SAFETY: context is the engine pointer, valid until teardown releases the tsfn.
    let shared = unsafe { &*(context as *const Shared) };
    // SAFETY: N-API calls call_js on the JS thread inside a handle scope.
    unsafe {
        let mut recv = ptr::null_mut();
        sys::napi_get_undefined(env, &mut recv);
        let mut call = |f: sys::napi_value, args: &[sys::napi_value]| {
            let mut ret = ptr::null_mut();
            sys::napi_call_function(env, recv, f, args.len(), args.as_ptr(), &mut ret);
        };
        engine::on_wake(shared, &mut call);
    }
}

/// The reaper thread of the portable path: wakes the JS thread when the eventfd is readable.
fn reaper(
    efd: i32,
    stop: i32,
    tsfn: usize,
    pending: Arc<AtomicBool>,
    eventfd_keep: Arc<std::os::fd::OwnedFd>,
) {
    let _keep = eventfd_keep;
    loop {
        let mut p = [
            libc::pollfd {
                fd: efd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two live pollfds.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 2, -1) };
        if r < 0 {
            continue;
        }
        if p[1].revents != 0 {
            return;
        }
        if p[0].revents != 0 {
            // Reset the eventfd here (the JS thread's reap tolerates finding it empty), so this
            // thread never spins while the JS thread is busy: a completion that comes later
            // signals it again. The JS thread clears `pending` before it reaps, so a wake-up
            // that finds `pending` set is covered by the reap still to come.
            eventfd::drain(efd);
            if !pending.swap(true, Ordering::SeqCst) {
                // SAFETY: the tsfn is released only after this thread is joined.
                unsafe {
                    sys::napi_call_threadsafe_function(
                        tsfn as sys::napi_threadsafe_function,
                        ptr::null_mut(),
                        sys::ThreadsafeFunctionCallMode::nonblocking,
                    )
                };
            }
        }
    }
}

unsafe extern "C" fn on_close(handle: *mut c_void) {
    // SAFETY: teardown set handle->data to a leaked Box of the async cleanup handle and the
    // handle's engine reference.
    let closing = unsafe { Box::from_raw(uv::data(handle) as *mut Closing) };
    // SAFETY: the handle is closed: the environment's cleanup may go on.
    unsafe { sys::napi_remove_async_cleanup_hook(closing.cleanup) };
    if let Some(u) = uv::Uv::get() {
        // SAFETY: the handle came from alloc_handle and is closed now.
        unsafe { uv::free_handle(&u, uv::UV_POLL, handle) };
    }
    // SAFETY: the closed handle's reference, given back once; no poll callback can come.
    unsafe { drop_sys_ref(closing.engine) };
}

/// What a closing poll handle carries to `on_close`.
struct Closing {
    cleanup: sys::napi_async_cleanup_hook_handle,
    engine: *const Shared,
}

unsafe extern "C" fn on_tsfn_finalize(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the tsfn's engine reference; the tsfn is gone, nothing calls in.
    unsafe { drop_sys_ref(data as *const Shared) };
}

/// Teardown, from the environment's cleanup: cancel and wait for every op, then stop wake-ups,
/// then give back the hook's reference to the engine.
///
/// # Safety
/// `p` is the cleanup hook's reference (see [`sys_ref`]); called once, on the JS thread.
unsafe fn teardown(p: *const Shared) {
    // SAFETY: the hook's reference keeps the engine alive until the end of this function.
    stop_engine(unsafe { &*p });
    // SAFETY: the hook's reference, given back once; stop_engine's borrow is over.
    unsafe { drop_sys_ref(p) };
}

fn stop_engine(shared: &Shared) {
    let Ok(mut e) = shared.try_borrow_mut() else {
        return;
    };
    e.shutdown();
    e.let_go();
    let env = e.env;
    // SAFETY: reference created on this env, deleted once (teardown runs once).
    unsafe { sys::napi_delete_reference(env, e.callback()) };
    match std::mem::replace(&mut e.wake, Wake::None) {
        Wake::Loop {
            uv,
            poll,
            async_ctx,
            cleanup,
        } => {
            // SAFETY: our live poll handle on this thread's loop; closing it hands the memory
            // and its engine reference (its data until now) to on_close. The async cleanup
            // hook is removed once the close is done.
            unsafe {
                (uv.poll_stop)(poll);
                let engine = uv::data(poll) as *const Shared;
                let closing = Box::new(Closing { cleanup, engine });
                uv::set_data(poll, Box::into_raw(closing) as *mut c_void);
                (uv.close)(poll, on_close);
                sys::napi_async_destroy(env, async_ctx);
            }
        }
        Wake::Thread {
            tsfn, stop, thread, ..
        } => {
            eventfd::signal(stop.as_raw_fd());
            if let Some(t) = thread {
                let _ = t.join();
            }
            // SAFETY: the reaper thread is joined: nothing calls the tsfn any more.
            unsafe {
                sys::napi_release_threadsafe_function(
                    tsfn,
                    sys::ThreadsafeFunctionReleaseMode::abort,
                )
            };
        }
        Wake::None => {}
    }
}

unsafe extern "C" fn async_cleanup(_handle: sys::napi_async_cleanup_hook_handle, arg: *mut c_void) {
    // SAFETY: arg is the hook's engine reference; the hook runs once.
    unsafe { teardown(arg as *const Shared) };
}

unsafe extern "C" fn sync_cleanup(arg: *mut c_void) {
    // SAFETY: as async_cleanup.
    unsafe { teardown(arg as *const Shared) };
}

fn napi_fail(what: &str) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("N-API call failed: {what}"))
}

/// One engine per JS environment (main thread or worker).
#[napi]
pub struct NativeEngine {
    shared: Rc<Shared>,
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

#[napi]
impl NativeEngine {
    /// `callback(results: Float64Array, count: number)` receives `count` (id, result,
    /// latency_us) triples. `useLoop`: integrate with libuv's loop when the runtime has one.
    #[napi(constructor)]
    pub fn new(env: Env, callback: Unknown, use_loop: bool) -> Result<NativeEngine> {
        let raw = env.raw();
        if use_loop {
            // Node: external memory is accounted (see memory::ADJUST_EXTERNAL).
            memory::ADJUST_EXTERNAL.store(true, Ordering::Relaxed);
        }
        let mut cb = ptr::null_mut();
        // SAFETY: callback is a live value of this call.
        if unsafe { sys::napi_create_reference(raw, callback.raw(), 1, &mut cb) }
            != sys::Status::napi_ok
        {
            return Err(napi_fail("napi_create_reference"));
        }
        let inner = Inner::new(raw, cb).map_err(|e| err(format!("eventfd: {e}")))?;
        let efd = inner.eventfd();
        let rc: Rc<Shared> = Rc::new(RefCell::new(inner));
        let shared = &*rc;
        // Preallocated completion storage: a Float64Array in V8 memory (freed with the isolate;
        // `deliver` re-measures it before each write).
        let mut data: *mut c_void = ptr::null_mut();
        let mut ab = ptr::null_mut();
        let mut arr = ptr::null_mut();
        let mut r = ptr::null_mut();
        // SAFETY: plain N-API calls on this call's live env, each writing only its outputs.
        let made = unsafe {
            sys::napi_create_arraybuffer(raw, engine::RESULTS_BYTES, &mut data, &mut ab)
                == sys::Status::napi_ok
                && sys::napi_create_typedarray(
                    raw,
                    sys::TypedarrayType::float64_array,
                    engine::RESULTS_BYTES / 8,
                    ab,
                    0,
                    &mut arr,
                ) == sys::Status::napi_ok
                && sys::napi_create_reference(raw, arr, 1, &mut r) == sys::Status::napi_ok
        };
        if made {
            shared.borrow_mut().set_results(r);
        }
        let mut loop_ptr = ptr::null_mut();
        let uv = if use_loop { uv::Uv::get() } else { None };
        // SAFETY: live env.
        let have_loop = uv.is_some()
            && unsafe { sys::napi_get_uv_event_loop(raw, &mut loop_ptr) } == sys::Status::napi_ok
            && !loop_ptr.is_null();
        if let (true, Some(uv)) = (have_loop, uv) {
            let poll = uv::alloc_handle(&uv, uv::UV_POLL);
            let mut name = ptr::null_mut();
            let mut res = ptr::null_mut();
            let mut ctx = ptr::null_mut();
            let mut cleanup = ptr::null_mut();
            // SAFETY: poll is fresh zeroed memory of uv_poll_t's size; loop_ptr is this env's
            // loop; the engine pointer outlives the handle (closed in teardown).
            let ok = unsafe { (uv.poll_init)(loop_ptr as *mut c_void, poll, efd) == 0 };
            if !ok {
                return Err(napi_fail("uv_poll_init"));
            }
            // SAFETY: the handle is initialised; its data is its engine reference (given back
            // in on_close, or below if it cannot start, closing it).
            unsafe {
                uv::set_data(poll, sys_ref(&rc) as *mut c_void);
                if (uv.poll_start)(poll, uv::UV_READABLE, on_poll) != 0 {
                    return Err(napi_fail("uv_poll_start"));
                }
            }
            // SAFETY: plain N-API calls on the JS thread.
            unsafe {
                (uv.unref)(poll);
                sys::napi_create_object(raw, &mut res);
                sys::napi_create_string_utf8(raw, c"odirect".as_ptr(), 7, &mut name);
                sys::napi_async_init(raw, res, name, &mut ctx);
                sys::napi_add_async_cleanup_hook(
                    raw,
                    Some(async_cleanup),
                    sys_ref(&rc) as *mut c_void,
                    &mut cleanup,
                );
            }
            shared.borrow_mut().wake = Wake::Loop {
                uv,
                poll,
                async_ctx: ctx,
                cleanup,
            };
        } else {
            let mut tsfn = ptr::null_mut();
            let mut name = ptr::null_mut();
            // The tsfn's engine reference, given back by on_tsfn_finalize.
            let tsfn_ref = sys_ref(&rc);
            // SAFETY: plain N-API calls with valid arguments; the context (engine) outlives
            // the tsfn (released in teardown).
            let s = unsafe {
                sys::napi_create_string_utf8(raw, c"odirect".as_ptr(), 7, &mut name);
                sys::napi_create_threadsafe_function(
                    raw,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    name,
                    0,
                    1,
                    tsfn_ref as *mut c_void,
                    Some(on_tsfn_finalize),
                    tsfn_ref as *mut c_void,
                    Some(on_tsfn),
                    &mut tsfn,
                )
            };
            if s != sys::Status::napi_ok {
                // SAFETY: no tsfn took the reference.
                unsafe { drop_sys_ref(tsfn_ref) };
                return Err(napi_fail("napi_create_threadsafe_function"));
            }
            // SAFETY: as above.
            unsafe { sys::napi_unref_threadsafe_function(raw, tsfn) };
            let stop = Arc::new(
                eventfd::new(false)
                    .map_err(|e| err(format!("eventfd for the reaper thread: {e}")))?,
            );
            let pending = Arc::new(AtomicBool::new(false));
            let (p2, s2) = (pending.clone(), stop.clone());
            let keep = shared
                .borrow()
                .eventfd_arc()
                .ok_or_else(|| err("the engine is shut down"))?;
            let t = tsfn as usize;
            let thread = std::thread::Builder::new()
                .name("odirect-reaper".into())
                .spawn(move || reaper(efd, s2.as_raw_fd(), t, p2, keep))
                .map_err(|e| err(format!("cannot start the reaper thread: {e}")))?;
            shared.borrow_mut().wake = Wake::Thread {
                tsfn,
                stop,
                thread: Some(thread),
                pending,
            };
            // SAFETY: live env; the hook runs once at teardown.
            unsafe {
                sys::napi_add_env_cleanup_hook(raw, Some(sync_cleanup), sys_ref(&rc) as *mut c_void)
            };
        }
        Ok(NativeEngine { shared: rc })
    }

    /// Starts (once) and returns "" when this backend works here, else the reason it does not.
    #[napi]
    pub fn ensure_backend(&self, backend: u32, queue_depth: u32, threads: u32) -> Result<String> {
        let kind = parse_kind(backend).ok_or_else(|| err("bad backend index"))?;
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
    ) -> Result<f64> {
        let kind = parse_kind(backend).ok_or_else(|| err("bad backend index"))?;
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
                )
            } {
                Ok(k) => k as f64,
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
        let kind = parse_kind(backend).ok_or_else(|| err("bad backend index"))?;
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

    /// Many reads or writes on one fd: every view captured now (all or none). Returns the op ids
    /// (2 * id + bounced), or `[code]` with a negative capture error code.
    #[napi]
    pub fn rw_many(
        &self,
        backend: u32,
        write: bool,
        fd: i32,
        views: Vec<Unknown>,
        lengths: Vec<f64>,
        positions: Vec<f64>,
        mem_align: u32,
    ) -> Result<Vec<f64>> {
        let kind = parse_kind(backend).ok_or_else(|| err("bad backend index"))?;
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
            match unsafe { e.rw_many(kind, write, fd, &vs, mem_align as usize, &mut keys) } {
                Ok(()) => keys.into_iter().map(|k| k as f64).collect(),
                Err(c) => vec![c.code()],
            }
        })
    }

    /// Ops without memory: 0 fsync, 1 fdatasync, 2 fallocate(mode, a=offset, b=len),
    /// 3 ftruncate(a=len), 4 close. Returns the op id or a negative code.
    #[napi]
    pub fn simple(&self, backend: u32, op: u32, fd: i32, a: f64, b: f64, mode: u32) -> Result<f64> {
        let kind = parse_kind(backend).ok_or_else(|| err("bad backend index"))?;
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
        let kind = parse_kind(backend).ok_or_else(|| err("bad backend index"))?;
        let vs: Vec<sys::napi_value> = views.iter().map(|v| v.raw()).collect();
        // SAFETY: live handles of this call.
        self.with(|e| unsafe { e.register_buffers(kind, &vs) })
    }

    #[napi]
    pub fn unregister_buffers(&self, backend: u32) -> Result<i32> {
        let kind = parse_kind(backend).ok_or_else(|| err("bad backend index"))?;
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

    /// io_uring setup flags in use ("single_issuer+defer_taskrun", ...), "" before the ring.
    #[napi(getter)]
    pub fn ring_setup(&self) -> Result<String> {
        self.with(|e| e.ring_setup())
    }
}
