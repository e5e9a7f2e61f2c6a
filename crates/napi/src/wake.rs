//! How completions reach JS. The engine's eventfd becomes readable when an op completes; the JS
//! thread is woken, reaps, and calls the engine's callback with the results:
//! - with libuv (Node): a `uv_poll_t` on the environment's loop, whose callback settles promises
//!   through `napi_make_callback` (so microtasks run right after, as for any I/O callback);
//! - without (Bun, Deno): a reaper thread that waits on the eventfd and wakes the JS thread
//!   through a threadsafe function.
//!
//! The engine is reference counted: the JS object holds one `Rc`, and each native holder of a
//! raw pointer to it (the uv poll handle or the threadsafe function, and the environment's
//! cleanup hook) holds one more, taken with [`sys_ref`] and given back with [`drop_sys_ref`]
//! when that holder can no longer call in (the handle closed, the tsfn finalized, the hook
//! done). The engine, its eventfd and its results buffer are freed when the last one goes, so
//! a terminated worker leaves nothing behind.
//!
//! A failure while results are delivered (completions that would be lost) is raised as an
//! uncaught exception ([`raise`]), like an exception the callback itself throws.

use std::cell::RefCell;
use std::ffi::c_void;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use napi::{sys, Status};
use odirect_core::io::eventfd;

use crate::engine::{Inner, Shared};
use crate::status::{check, check_status, report};
use crate::uv::{self, Uv};

/// Triples (id, result, latency_us) one delivery through the preallocated array carries.
const RESULTS_CAP: usize = 4096;
/// Bytes of the preallocated results Float64Array.
const RESULTS_BYTES: usize = RESULTS_CAP * crate::consts::RESULT_STRIDE as usize * 8;

/// What the event loop would do if it polled now (see [`Wake::loop_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopState {
    /// It would not sleep: work waits (pending callbacks, immediates, closing handles, a due
    /// timer, a stop, watchers not in its epoll set yet).
    Busy,
    /// It would sleep in epoll on `fd` until a descriptor is ready, or for `left` at most (the
    /// next timer; None: no timer).
    Idle {
        fd: i32,
        left: Option<std::time::Duration>,
    },
}

/// What wakes the JS thread.
pub enum Wake {
    None,
    Loop {
        uv: Uv,
        /// The loop the handles are on.
        lp: *mut c_void,
        poll: *mut c_void,
        /// The io_uring's own descriptor watched (see [`Wake::watch`]); null when none.
        ring: *mut c_void,
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

impl Wake {
    /// "libuv", "thread" or "none" (the engine's `path`).
    pub fn name(&self) -> &'static str {
        match self {
            Wake::Loop { .. } => "libuv",
            Wake::Thread { .. } => "thread",
            Wake::None => "none",
        }
    }

    /// The loop's time (uv_now, ms): it changes only when the loop turns (None off the loop:
    /// Bun, Deno).
    pub fn loop_time(&self) -> Option<u64> {
        match self {
            // SAFETY: lp is the live loop of this thread (uv_now only reads its cached time).
            Wake::Loop { uv, lp, .. } => Some(unsafe { (uv.now)(*lp) }),
            _ => None,
        }
    }

    /// What the event loop would do if it polled now (None off the loop: Bun, Deno): see
    /// [`LoopState`].
    pub fn loop_state(&self) -> Option<LoopState> {
        let Wake::Loop { uv, lp, .. } = self else {
            return None;
        };
        // SAFETY: lp is the live loop of this thread; these only read its state.
        let (timeout, fd, now) = unsafe {
            (
                (uv.backend_timeout)(*lp),
                (uv.backend_fd)(*lp),
                (uv.now)(*lp),
            )
        };
        if timeout == 0 || fd < 0 {
            return Some(LoopState::Busy);
        }
        if timeout < 0 {
            return Some(LoopState::Idle { fd, left: None });
        }
        // The timeout counts from the loop's time, which stood still since the loop last
        // turned: the next timer is due at that time + timeout, measured on the same clock.
        let due = (now + timeout as u64).saturating_mul(1_000_000);
        // SAFETY: uv_hrtime only reads the clock.
        let at = unsafe { (uv.hrtime)() };
        if at >= due {
            return Some(LoopState::Busy);
        }
        Some(LoopState::Idle {
            fd,
            left: Some(std::time::Duration::from_nanos(due - at)),
        })
    }

    /// Keeps the event loop alive while ops are in flight (`want`), or lets it exit.
    ///
    /// # Safety
    /// `env` is the engine's env, on its JS thread.
    pub unsafe fn set_ref(&self, env: sys::napi_env, want: bool) {
        match self {
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
                // Called while staging and reaping, which have no error path: a failure leaves
                // the runtime's keep-alive as it was (completions are still delivered while
                // the environment runs).
                // SAFETY: on the JS thread with our env (forwarded contract) and live tsfn.
                unsafe {
                    if want {
                        report!(napi_ref_threadsafe_function(env, *tsfn))
                    } else {
                        report!(napi_unref_threadsafe_function(env, *tsfn))
                    }
                };
            }
            Wake::None => {}
        }
    }

    /// Also wakes the JS thread when `fd` (an io_uring's own descriptor, whose completions are not
    /// announced on the eventfd) is readable: a second poll handle on the loop, never keeping it
    /// alive (the eventfd's handle does that while ops are in flight), whose wake-ups leave the
    /// eventfd alone (`Inner::ring_wake`). Only the libuv path asks for it (`poll_ring`).
    pub fn watch(&mut self, fd: i32) -> Result<(), String> {
        let Wake::Loop {
            uv, lp, poll, ring, ..
        } = self
        else {
            return Err("the ring's descriptor can only be watched on the event loop".into());
        };
        if !ring.is_null() {
            return Err("the ring's descriptor is watched already".into());
        }
        let h = uv::alloc_handle(uv, uv::UV_POLL);
        // SAFETY: h is fresh zeroed memory of uv_poll_t's size; lp is this thread's loop.
        if unsafe { (uv.poll_init)(*lp, h, fd) } != 0 {
            // SAFETY: never initialised, so unknown to the loop: freed directly.
            unsafe { uv::free_handle(uv, uv::UV_POLL, h) };
            return Err("uv_poll_init on the io_uring descriptor failed".into());
        }
        // SAFETY: the eventfd handle's data is a live engine reference (from `sys_ref`, given
        // back only when that handle closes, after this one: `stop`); this handle takes one more,
        // given back by its `on_close`.
        unsafe {
            let engine = uv::data(*poll) as *const Shared;
            Rc::increment_strong_count(engine);
            uv::set_data(h, engine as *mut c_void);
        }
        // SAFETY: initialised handle; the engine outlives it (closed in `stop`).
        if unsafe { (uv.poll_start)(h, uv::UV_READABLE, on_ring_poll) } != 0 {
            // SAFETY: initialised, closed once: on_close gives the reference back.
            unsafe { close_poll(uv, h, None) };
            return Err("uv_poll_start on the io_uring descriptor failed".into());
        }
        // SAFETY: live handle.
        unsafe { (uv.unref)(h) };
        *ring = h;
        Ok(())
    }

    /// Stops wake-ups (teardown, or a constructor that failed after wiring them): closes the poll
    /// handle, or stops and joins the reaper thread and releases the tsfn.
    fn stop(self, env: sys::napi_env) {
        match self {
            Wake::Loop {
                uv,
                poll,
                ring,
                async_ctx,
                cleanup,
                ..
            } => {
                if !ring.is_null() {
                    // SAFETY: our live ring poll handle, closed once (self is consumed); it
                    // holds its own engine reference and no cleanup hook.
                    unsafe { close_poll(&uv, ring, None) };
                }
                // SAFETY: our live poll handle on this thread's loop, closed once (self is
                // consumed).
                unsafe { close_poll(&uv, poll, Some(cleanup)) };
                // Teardown: a context that cannot be destroyed is left to the environment.
                // SAFETY: the context was made on env by async_context, destroyed once.
                unsafe { report!(napi_async_destroy(env, async_ctx)) };
            }
            Wake::Thread {
                tsfn, stop, thread, ..
            } => {
                eventfd::signal(stop.as_raw_fd());
                if let Some(t) = thread {
                    let _ = t.join();
                }
                // SAFETY: the reaper thread is joined: nothing calls the tsfn any more.
                unsafe { release_tsfn(tsfn) };
            }
            Wake::None => {}
        }
    }
}

/// The JS end of delivery: the callback and the preallocated results array (`None`: each
/// delivery makes a fresh array).
#[derive(Clone, Copy)]
pub struct Js {
    callback: sys::napi_ref,
    results: Option<Results>,
}

/// The preallocated results array: a Float64Array over memory odirect owns ([`ResultsMem`]),
/// so its address and length are known once and never re-measured: a detach (which nothing
/// does: the array is the engine's own, never shown to user code) could not free what
/// `deliver` writes, only hide it.
#[derive(Clone, Copy)]
struct Results {
    array: sys::napi_ref,
    /// One `Arc<ResultsMem>` reference (`Arc::into_raw`), given back by [`Js::release`].
    mem: *const ResultsMem,
}

/// `RESULTS_CAP` triples of f64, freed when both the engine ([`Js::release`]) and the
/// ArrayBuffer (its finalizer) have let go.
struct ResultsMem(*mut f64);

// SAFETY: a plain heap allocation owned by the value (freed by its Drop, from whichever thread
// lets go last: a runtime may finalize an ArrayBuffer's backing store off the JS thread); it is
// written only by `deliver`, on the JS thread, and read by JS on that thread.
unsafe impl Send for ResultsMem {}
// SAFETY: as Send: `&ResultsMem` gives only the pointer; every access is on the JS thread.
unsafe impl Sync for ResultsMem {}

impl ResultsMem {
    const LEN: usize = RESULTS_BYTES / 8;
}

impl Drop for ResultsMem {
    fn drop(&mut self) {
        // SAFETY: made by Box::into_raw of a boxed slice of LEN f64 in `results_array`; the
        // last reference (engine or ArrayBuffer) is going, nothing writes or reads it after.
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(self.0, Self::LEN)) });
    }
}

impl Js {
    /// # Safety
    /// `env` and `callback` must be live handles of the current call.
    unsafe fn new(env: sys::napi_env, callback: sys::napi_value) -> napi::Result<Js> {
        let mut cb = ptr::null_mut();
        // SAFETY: forwarded contract.
        unsafe { check!(napi_create_reference(env, callback, 1, &mut cb)) }?;
        // SAFETY: forwarded contract. Without the array, deliver makes one per delivery.
        let results = unsafe { results_array(env) };
        Ok(Js {
            callback: cb,
            results,
        })
    }

    /// Deletes both references (teardown; each once, as `self` is consumed).
    fn release(self, env: sys::napi_env) {
        for r in std::iter::once(self.callback).chain(self.results.map(|r| r.array)) {
            // Teardown: a reference that cannot be deleted leaks its value with the env.
            // SAFETY: reference created on env, which is still alive (its cleanup runs).
            unsafe { report!(napi_delete_reference(env, r)) };
        }
        if let Some(r) = self.results {
            // SAFETY: the engine's one reference, from Arc::into_raw in `results_array`,
            // given back once (self is consumed; Js copies are not released).
            drop(unsafe { Arc::from_raw(r.mem) });
        }
    }
}

/// The preallocated completion storage (see [`Results`]). `None`: the runtime refused external
/// memory or copied it (each delivery makes a fresh array then).
///
/// # Safety
/// `env` must be live, on its JS thread.
unsafe fn results_array(env: sys::napi_env) -> Option<Results> {
    let data = Box::into_raw(vec![0f64; ResultsMem::LEN].into_boxed_slice()) as *mut f64;
    let mem = Arc::new(ResultsMem(data));
    let (mut arr, mut r) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: live env; the ArrayBuffer's Arc keeps the memory allocated until V8 finalizes it
    // (and the engine holds its own).
    let ab = unsafe {
        crate::memory::external_arraybuffer(env, data as *mut c_void, RESULTS_BYTES, mem.clone())
    }?;
    let mut seen: *mut c_void = ptr::null_mut();
    let mut got = 0usize;
    // SAFETY: plain N-API calls on a live env and handles of this call, writing their outputs.
    unsafe {
        check!(napi_get_arraybuffer_info(env, ab, &mut seen, &mut got)).ok()?;
        // A runtime that copied our memory: what JS would read is not what deliver writes.
        if seen as *mut f64 != data || got != RESULTS_BYTES {
            return None;
        }
        check!(napi_create_typedarray(
            env,
            sys::TypedarrayType::float64_array,
            ResultsMem::LEN,
            ab,
            0,
            &mut arr,
        ))
        .ok()?;
        check!(napi_create_reference(env, arr, 1, &mut r)).ok()?;
    }
    Some(Results {
        array: r,
        mem: Arc::into_raw(mem),
    })
}

fn fail(what: &str) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("{what} failed"))
}

/// Makes the engine of `env` with `callback` as its JS end and wires its wake-ups: the loop
/// when `use_loop` and the runtime exports libuv, else the reaper thread.
///
/// # Safety
/// `env` and `callback` must be live handles of the current call (the engine's constructor).
pub unsafe fn start(
    env: sys::napi_env,
    callback: sys::napi_value,
    use_loop: bool,
) -> napi::Result<Rc<Shared>> {
    let inner = Inner::new(env).map_err(|e| fail(&format!("eventfd: {e}")))?;
    let efd = inner.eventfd();
    let rc: Rc<Shared> = Rc::new(RefCell::new(inner));
    // SAFETY: forwarded contract.
    let js = unsafe { Js::new(env, callback) }?;
    rc.borrow_mut().js = Some(js);
    let wake = match host_loop(env, use_loop) {
        // SAFETY: the loop is env's, on this (its JS) thread.
        Some((uv, lp)) => unsafe { start_poll(env, &rc, uv, lp, efd) },
        None => start_reaper(env, &rc, efd),
    };
    match wake {
        Ok(w) => {
            let mut e = rc.borrow_mut();
            e.poll_ring = matches!(w, Wake::Loop { .. }) && poll_ring_wanted();
            e.wake = w;
            drop(e);
            Ok(rc)
        }
        Err(e) => {
            if let Some(js) = rc.borrow_mut().js.take() {
                js.release(env);
            }
            Err(e)
        }
    }
}

/// `ODIRECT_WAKE=ring`: on the event loop, the io_uring ring is polled on its own descriptor
/// (COOP_TASKRUN, no registered eventfd: see `DriverOptions::poll_ring`). Read once.
fn poll_ring_wanted() -> bool {
    static WANT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANT.get_or_init(|| std::env::var("ODIRECT_WAKE").as_deref() == Ok("ring"))
}

/// libuv and env's loop, when asked for and the runtime has them (`napi_get_uv_event_loop`
/// failing means no loop: the reaper thread is used).
fn host_loop(env: sys::napi_env, use_loop: bool) -> Option<(Uv, *mut c_void)> {
    let uv = if use_loop { Uv::get()? } else { return None };
    let mut lp = ptr::null_mut();
    // SAFETY: live env.
    let got = unsafe { check!(napi_get_uv_event_loop(env, &mut lp)) };
    (got.is_ok() && !lp.is_null()).then_some((uv, lp.cast()))
}

/// Watches `efd` with a poll handle on `lp`, delivering in an async context of its own; the
/// environment's async cleanup hook tears the engine down.
///
/// # Safety
/// `lp` is env's loop; on its thread.
unsafe fn start_poll(
    env: sys::napi_env,
    rc: &Rc<Shared>,
    uv: Uv,
    lp: *mut c_void,
    efd: i32,
) -> napi::Result<Wake> {
    let poll = uv::alloc_handle(&uv, uv::UV_POLL);
    // SAFETY: poll is fresh zeroed memory of uv_poll_t's size; lp is this env's loop.
    if unsafe { (uv.poll_init)(lp, poll, efd) } != 0 {
        // SAFETY: never initialised, so unknown to the loop: freed directly.
        unsafe { uv::free_handle(&uv, uv::UV_POLL, poll) };
        return Err(fail("uv_poll_init"));
    }
    // From here only uv_close frees the handle. Its data is its engine reference, given back in
    // on_close.
    // SAFETY: poll is an initialised uv handle.
    unsafe { uv::set_data(poll, sys_ref(rc) as *mut c_void) };
    // SAFETY: the handle is initialised; the engine outlives it (closed in teardown).
    let started = unsafe { (uv.poll_start)(poll, uv::UV_READABLE, on_poll) } == 0;
    let wired = if started {
        // SAFETY: live handle; N-API calls on the JS thread.
        unsafe {
            (uv.unref)(poll);
            async_context(env).and_then(|ctx| match cleanup_hook(env, rc) {
                Ok(cleanup) => Ok((ctx, cleanup)),
                Err(e) => {
                    report!(napi_async_destroy(env, ctx));
                    Err(e)
                }
            })
        }
    } else {
        Err(fail("uv_poll_start"))
    };
    match wired {
        Ok((async_ctx, cleanup)) => Ok(Wake::Loop {
            uv,
            lp,
            poll,
            ring: ptr::null_mut(),
            async_ctx,
            cleanup,
        }),
        Err(e) => {
            // SAFETY: our initialised handle, closed once; no cleanup hook was added.
            unsafe { close_poll(&uv, poll, None) };
            Err(e)
        }
    }
}

/// The async context completions are delivered in (`napi_make_callback`).
///
/// # Safety
/// Live env, on its JS thread.
unsafe fn async_context(env: sys::napi_env) -> napi::Result<sys::napi_async_context> {
    let (mut res, mut ctx) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: plain N-API calls, each writing only its outputs.
    unsafe {
        check!(napi_create_object(env, &mut res))?;
        check!(napi_async_init(env, res, resource_name(env)?, &mut ctx))?;
    }
    Ok(ctx)
}

/// "odirect", the name async hooks and diagnostics show for the engine's callbacks.
///
/// # Safety
/// Live env, on its JS thread.
unsafe fn resource_name(env: sys::napi_env) -> napi::Result<sys::napi_value> {
    let mut name = ptr::null_mut();
    // SAFETY: forwarded contract; a NUL-terminated string of 7 bytes.
    unsafe {
        check!(napi_create_string_utf8(
            env,
            c"odirect".as_ptr(),
            7,
            &mut name
        ))
    }?;
    Ok(name)
}

/// Adds the environment's async cleanup hook (teardown), holding an engine reference.
///
/// # Safety
/// Live env, on its JS thread.
unsafe fn cleanup_hook(
    env: sys::napi_env,
    rc: &Rc<Shared>,
) -> napi::Result<sys::napi_async_cleanup_hook_handle> {
    hand_ref(rc, |arg| {
        let mut cleanup = ptr::null_mut();
        // SAFETY: live env (forwarded contract); the hook runs once.
        unsafe {
            check!(napi_add_async_cleanup_hook(
                env,
                Some(async_cleanup),
                arg,
                &mut cleanup
            ))
        }?;
        Ok(cleanup)
    })
}

/// Stops a poll handle and closes it: `on_close` removes the async cleanup hook (if any), frees
/// the handle and gives back its engine reference (its data until now).
///
/// # Safety
/// `poll` is an initialised handle on this thread's loop whose data is its engine reference;
/// closed once.
unsafe fn close_poll(
    uv: &Uv,
    poll: *mut c_void,
    cleanup: Option<sys::napi_async_cleanup_hook_handle>,
) {
    // SAFETY: forwarded contract. uv_poll_stop always returns 0 (libuv).
    unsafe {
        (uv.poll_stop)(poll);
        let engine = uv::data(poll) as *const Shared;
        let closing = Box::new(Closing { cleanup, engine });
        uv::set_data(poll, Box::into_raw(closing) as *mut c_void);
        (uv.close)(poll, on_close);
    }
}

/// Wakes the JS thread from a reaper thread through a threadsafe function; the environment's
/// cleanup hook tears the engine down.
fn start_reaper(env: sys::napi_env, rc: &Rc<Shared>, efd: i32) -> napi::Result<Wake> {
    let stop = Arc::new(
        eventfd::new(false).map_err(|e| fail(&format!("eventfd for the reaper thread: {e}")))?,
    );
    let keep = rc
        .borrow()
        .eventfd_arc()
        .ok_or_else(|| fail("the engine is shut down"))?;
    // SAFETY: live env, on its JS thread.
    let tsfn = unsafe { threadsafe_function(env, rc) }?;
    let pending = Arc::new(AtomicBool::new(false));
    let (p2, s2) = (pending.clone(), stop.clone());
    let t = tsfn as usize;
    let spawned = std::thread::Builder::new()
        .name("odirect-reaper".into())
        .spawn(move || reaper(efd, s2.as_raw_fd(), t, p2, keep));
    let unstarted = spawned
        .as_ref()
        .err()
        .map(|e| fail(&format!("cannot start the reaper thread: {e}")));
    let wake = Wake::Thread {
        tsfn,
        stop,
        thread: spawned.ok(),
        pending,
    };
    let hooked = match unstarted {
        Some(e) => Err(e),
        None => hand_ref(rc, |arg| {
            // SAFETY: live env; the hook runs once at teardown.
            unsafe { check!(napi_add_env_cleanup_hook(env, Some(sync_cleanup), arg)) }
        }),
    };
    if let Err(e) = hooked {
        // Stops the thread (if it started) and releases the tsfn.
        wake.stop(env);
        return Err(e);
    }
    Ok(wake)
}

/// The engine's threadsafe function (unreferenced: only ops in flight keep the loop alive),
/// holding an engine reference that `on_tsfn_finalize` gives back.
///
/// # Safety
/// Live env, on its JS thread.
unsafe fn threadsafe_function(
    env: sys::napi_env,
    rc: &Rc<Shared>,
) -> napi::Result<sys::napi_threadsafe_function> {
    // SAFETY: forwarded contract.
    let name = unsafe { resource_name(env) }?;
    let tsfn = hand_ref(rc, |context| {
        let mut tsfn = ptr::null_mut();
        // SAFETY: plain N-API call with valid arguments; the context (engine) outlives the tsfn
        // (its reference is given back by the finalizer).
        unsafe {
            check!(napi_create_threadsafe_function(
                env,
                ptr::null_mut(),
                ptr::null_mut(),
                name,
                0,
                1,
                context,
                Some(on_tsfn_finalize),
                context,
                Some(on_tsfn),
                &mut tsfn,
            ))
        }?;
        Ok(tsfn)
    })?;
    // SAFETY: live env and tsfn.
    if let Err(e) = unsafe { check!(napi_unref_threadsafe_function(env, tsfn)) } {
        // SAFETY: our tsfn, released once.
        unsafe { release_tsfn(tsfn) };
        return Err(e);
    }
    Ok(tsfn)
}

/// Releases the tsfn (abort: queued calls are dropped); its finalizer gives back its engine
/// reference. One that cannot be released keeps it: the engine is leaked (empty by then,
/// shutdown ran first), which nobody can be told about at teardown.
///
/// # Safety
/// `tsfn` is live and nothing calls it any more; released once.
unsafe fn release_tsfn(tsfn: sys::napi_threadsafe_function) {
    // SAFETY: forwarded contract.
    unsafe {
        report!(napi_release_threadsafe_function(
            tsfn,
            sys::ThreadsafeFunctionReleaseMode::abort
        ))
    };
}

/// Hands an engine reference to the native holder `make` creates, given back at once if it
/// could not be created.
pub(crate) fn hand_ref<T>(
    rc: &Rc<Shared>,
    make: impl FnOnce(*mut c_void) -> napi::Result<T>,
) -> napi::Result<T> {
    let p = sys_ref(rc);
    make(p as *mut c_void).inspect_err(|_| {
        // SAFETY: the holder was not made: nothing else has this reference.
        unsafe { drop_sys_ref(p) }
    })
}

/// Takes a reference to the engine for a native holder of its pointer (see the module comment).
fn sys_ref(rc: &Rc<Shared>) -> *const Shared {
    Rc::into_raw(rc.clone())
}

/// # Safety
/// `p` must come from [`sys_ref`], given back once, with no borrow of the engine alive.
pub(crate) unsafe fn drop_sys_ref(p: *const Shared) {
    // SAFETY: forwarded contract.
    drop(unsafe { Rc::from_raw(p) });
}

unsafe extern "C" fn on_poll(handle: *mut c_void, _status: i32, _events: i32) {
    // SAFETY: forwarded (the eventfd's handle).
    unsafe { poll_wake(handle, false) };
}

/// The ring's own descriptor is readable (see [`Wake::watch`]).
unsafe extern "C" fn on_ring_poll(handle: *mut c_void, _status: i32, _events: i32) {
    // SAFETY: forwarded (the ring's handle).
    unsafe { poll_wake(handle, true) };
}

/// A wake-up from a poll handle of the loop; `ring`: from the ring's own descriptor.
///
/// # Safety
/// `handle` is one of the engine's poll handles, on its loop's (JS) thread.
unsafe fn poll_wake(handle: *mut c_void, ring: bool) {
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
        // Without a scope (or the receiver) nothing is reaped: the eventfd stays readable and
        // the poll calls again.
        if report!(napi_open_handle_scope(env, &mut scope)) {
            // make_callback needs an object as receiver (undefined would throw).
            let mut recv = ptr::null_mut();
            if report!(napi_get_global(env, &mut recv)) {
                let mut call = |f: sys::napi_value, args: &[sys::napi_value]| {
                    let mut ret = ptr::null_mut();
                    // make_callback: runs the microtask queue afterwards, as Node does for any
                    // I/O. What the callback throws is raised as uncaught, as for any I/O.
                    let (n, argv) = (args.len(), args.as_ptr());
                    if let Err(e) = check!(napi_make_callback(env, ctx, recv, f, n, argv, &mut ret))
                    {
                        raise(env, e);
                    }
                };
                if let Ok(mut e) = shared.try_borrow_mut() {
                    e.ring_wake = ring;
                    e.loop_woke();
                }
                let r = on_wake(shared, &mut call);
                if let Ok(mut e) = shared.try_borrow_mut() {
                    e.ring_wake = false;
                }
                if let Err(e) = r {
                    raise(env, e);
                }
            }
            report!(napi_close_handle_scope(env, scope));
        }
    }
}

/// The fast path's `flush()`: submits the staged ops and, when the engine waited in the kernel
/// for a lone op and its completion is there (`Inner::flush_waiting`), reaps and delivers it
/// at once, as a wake-up of the loop would (the same `on_wake`), inside the caller's microtask:
/// the promise settles without a round trip through the eventfd, epoll and the loop. A failure
/// to deliver is raised as uncaught, as for a wake-up.
///
/// # Safety
/// On the JS thread of `shared`'s env, inside a call of one of our functions, with no borrow of
/// the engine alive.
pub(crate) unsafe fn flush_and_deliver(env: sys::napi_env, shared: &Shared) -> Result<(), ()> {
    // A flush made by the microtasks of a wake-up's delivery (a continuation's op, e.g. the
    // first lone tmpfs op after the loop woke us) runs inside that wake-up: its state (a ring
    // wake-up leaves the eventfd alone; quiet drivers) is given back after this one's own
    // wake-up, whose end turns announcements back on. Without that, the outer wake-up's later
    // rounds read an empty eventfd (a system call each) and its drivers signal it again.
    let outer = {
        let Ok(mut e) = shared.try_borrow_mut() else {
            return Err(());
        };
        let outer = (e.ring_wake, e.quiet_now());
        if !e.flush_waiting() {
            // A wait that timed out turned the ring's quiet off.
            if outer.1 && !e.quiet_now() {
                e.begin_wake();
            }
            return Ok(());
        }
        // The ring posted the completion without signalling the eventfd when it could keep
        // quiet, and a polled ring never signals it: leave the eventfd alone (what another
        // driver signalled there wakes the loop, which reaps it).
        e.ring_wake = e.quiet_now() || e.poll_ring;
        outer
    };
    // SAFETY (block): on the JS thread inside a call (forwarded contract).
    unsafe {
        let mut recv = ptr::null_mut();
        if report!(napi_get_global(env, &mut recv)) {
            let mut call = |f: sys::napi_value, args: &[sys::napi_value]| {
                let mut ret = ptr::null_mut();
                let s = sys::napi_call_function(env, recv, f, args.len(), args.as_ptr(), &mut ret);
                // What the callback throws is raised as uncaught, as in a wake-up.
                if let Err(e) = check_status(s, "napi_call_function") {
                    raise(env, e);
                }
            };
            if let Err(e) = on_wake(shared, &mut call) {
                raise(env, e);
            }
        }
    }
    if let Ok(mut e) = shared.try_borrow_mut() {
        e.ring_wake = outer.0;
        // Completions the wait left unreaped (none expected) are announced by `end_wake`.
        if outer.1 && !e.closed {
            e.begin_wake();
        }
    }
    Ok(())
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
        if !report!(napi_get_undefined(env, &mut recv)) {
            // Nothing reaped: let the next completion call again.
            if let Ok(e) = shared.try_borrow() {
                if let Wake::Thread { pending, .. } = &e.wake {
                    pending.store(false, Ordering::SeqCst);
                }
            }
            return;
        }
        let mut call = |f: sys::napi_value, args: &[sys::napi_value]| {
            let mut ret = ptr::null_mut();
            let s = sys::napi_call_function(env, recv, f, args.len(), args.as_ptr(), &mut ret);
            // An exception the callback threw stays pending: the runtime reports it as
            // uncaught when call_js returns, as for any threadsafe function. Other failures
            // are raised.
            if s != sys::Status::napi_pending_exception {
                if let Err(e) = check_status(s, "napi_call_function") {
                    raise(env, e);
                }
            }
        };
        if let Ok(mut e) = shared.try_borrow_mut() {
            e.loop_woke();
        }
        if let Err(e) = on_wake(shared, &mut call) {
            raise(env, e);
        }
    }
}

/// Raises a failure of a wake-up as an uncaught exception (no JS frame is there to take it):
/// the exception pending on `env` if there is one (what the callback threw), else an Error
/// with `e`'s message. Should even that fail, it is reported (see `status::report_status`).
///
/// # Safety
/// On env's JS thread, inside a handle scope.
unsafe fn raise(env: sys::napi_env, e: napi::Error) {
    // SAFETY (block): N-API calls on the live env, each writing only its outputs.
    unsafe {
        let mut pending = false;
        report!(napi_is_exception_pending(env, &mut pending));
        let mut ex = ptr::null_mut();
        let made = if pending {
            report!(napi_get_and_clear_last_exception(env, &mut ex))
        } else {
            let msg = format!("odirect: {}", e.reason);
            let mut text = ptr::null_mut();
            report!(napi_create_string_utf8(
                env,
                msg.as_ptr().cast(),
                msg.len() as isize,
                &mut text,
            )) && report!(napi_create_error(env, ptr::null_mut(), text, &mut ex))
        };
        if made {
            report!(napi_fatal_exception(env, ex));
        }
    }
}

/// How long a threadsafe-function call the reaper thread made may go unanswered (`pending`
/// still set: no wake-up round began on the JS thread) before it calls again; doubled after
/// each call that goes unanswered, up to [`RECALL_MAX_MS`]. A runtime can lose a call: Deno
/// 2.x queues it (`V8CrossThreadTaskSpawner::spawn`: push, flag, `AtomicWaker::wake`) while its
/// event loop, between finding the flag clear and registering its waker again, has no waker
/// registered, so the wake is a no-op and the loop sleeps with the call queued until something
/// else wakes it. With `pending` set no further call was made, so every op in flight waited:
/// bench runs of 30 s instead of 1.6 s (276-8,800 IOPS instead of ~290k, per-op tmpfs QD 64,
/// about one Deno run in five). Another call wakes the loop (its waker is registered by then)
/// and runs both; a call that was not lost only costs an `on_tsfn` that finds nothing to reap.
const RECALL_MS: i32 = 10;
const RECALL_MAX_MS: i32 = 1000;

/// `ODIRECT_TEST_LOSE_WAKE=k` (tests): the reaper thread skips every k-th threadsafe-function
/// call while acting as if it made it, as a runtime that loses the call would (see
/// [`RECALL_MS`]). Read once per engine.
fn lose_every() -> u64 {
    crate::env::number::<u64>("ODIRECT_TEST_LOSE_WAKE").unwrap_or(0)
}

/// The calls the reaper threads of this process made again after one went unanswered for
/// [`RECALL_MS`] or more (see [`RECALL_MS`]).
pub static RECALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `ODIRECT_DEBUG`: one line per recall with the JS thread's scheduler state and wait channel
/// (/proc/self/task/<pid>): `R` (busy or waiting for a CPU: the call was only slow) or `S` with
/// the event loop's wait (`ep_poll`: it sleeps with the call queued, the lost wake-up).
fn trace_recall(unanswered: std::time::Duration) {
    let pid = std::process::id();
    let stat = std::fs::read_to_string(format!("/proc/self/task/{pid}/stat")).unwrap_or_default();
    let wchan = std::fs::read_to_string(format!("/proc/self/task/{pid}/wchan")).unwrap_or_default();
    // The state follows the command name's closing parenthesis.
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|r| r.split(' ').next())
        .unwrap_or("?");
    crate::engine::trace(format_args!(
        "odirect: wake-up call unanswered after {unanswered:?}, called again (JS thread state {state}, wchan {wchan})"
    ));
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
    let lose = lose_every();
    // `ODIRECT_WAKE_RECALL=0`: never call again (one call per wake-up, as before).
    let recalls = crate::env::on_unless_zero("ODIRECT_WAKE_RECALL");
    let mut calls: u64 = 0;
    // When the outstanding call was made, and how long it may go unanswered.
    let mut called: Option<std::time::Instant> = None;
    let mut recall = RECALL_MS;
    // Makes a call; false when refused (the environment is closing).
    let mut call = || {
        calls += 1;
        if lose > 0 && calls.is_multiple_of(lose) {
            return true;
        }
        let tsfn = tsfn as sys::napi_threadsafe_function;
        let mode = sys::ThreadsafeFunctionCallMode::nonblocking;
        // SAFETY: the tsfn is released only after this thread is joined.
        unsafe { report!(napi_call_threadsafe_function(tsfn, ptr::null_mut(), mode)) }
    };
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
        // A call outstanding: wait no longer than it may go unanswered.
        let timeout = match called {
            Some(at) if recalls && pending.load(Ordering::SeqCst) => {
                (recall - at.elapsed().as_millis().min(i32::MAX as u128) as i32).max(0)
            }
            _ => {
                called = None;
                recall = RECALL_MS;
                -1
            }
        };
        // SAFETY: two live pollfds.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 2, timeout) };
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
                if call() {
                    called = Some(std::time::Instant::now());
                    recall = RECALL_MS;
                } else {
                    // Refused (the environment is closing): no wake-up is coming, so the next
                    // completion may try again.
                    pending.store(false, Ordering::SeqCst);
                }
            }
        } else if r == 0 && called.is_some() && pending.load(Ordering::SeqCst) {
            // The call went unanswered (no round began): call again, in case the runtime lost
            // it. A JS thread that is only busy runs both, the second finding nothing.
            RECALLS.fetch_add(1, Ordering::Relaxed);
            if crate::status::debug() {
                trace_recall(called.map(|c| c.elapsed()).unwrap_or_default());
            }
            if call() {
                called = Some(std::time::Instant::now());
                recall = (recall * 2).min(RECALL_MAX_MS);
            } else {
                pending.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// What a closing poll handle carries to `on_close`.
struct Closing {
    cleanup: Option<sys::napi_async_cleanup_hook_handle>,
    engine: *const Shared,
}

unsafe extern "C" fn on_close(handle: *mut c_void) {
    // SAFETY: close_poll set handle->data to a leaked Box of the async cleanup handle and the
    // handle's engine reference.
    let closing = unsafe { Box::from_raw(uv::data(handle) as *mut Closing) };
    if let Some(cleanup) = closing.cleanup {
        // A close callback has no one to tell: a hook that cannot be removed keeps the
        // environment's teardown waiting on it.
        // SAFETY: the handle is closed: the environment's cleanup may go on.
        unsafe { report!(napi_remove_async_cleanup_hook(cleanup)) };
    }
    if let Some(u) = Uv::get() {
        // SAFETY: the handle came from alloc_handle and is closed now.
        unsafe { uv::free_handle(&u, uv::UV_POLL, handle) };
    }
    // SAFETY: the closed handle's reference, given back once; no poll callback can come.
    unsafe { drop_sys_ref(closing.engine) };
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
    if let Some(js) = e.js.take() {
        js.release(env);
    }
    std::mem::replace(&mut e.wake, Wake::None).stop(env);
}

unsafe extern "C" fn async_cleanup(_handle: sys::napi_async_cleanup_hook_handle, arg: *mut c_void) {
    // SAFETY: arg is the hook's engine reference; the hook runs once.
    unsafe { teardown(arg as *const Shared) };
}

unsafe extern "C" fn sync_cleanup(arg: *mut c_void) {
    // SAFETY: as async_cleanup.
    unsafe { teardown(arg as *const Shared) };
}

/// Deliveries one wake-up makes at most while completions keep waiting in the kernel (the ring
/// posts its deferred completions one kernel batch, 20, at a time); past it the eventfd is
/// signalled and the rest waits for the loop's next turn (timers and other I/O go first).
const DELIVERY_ROUNDS: usize = 8;

/// A round (completions reaped, whether delivered to JS or refilling a native batch) smaller than
/// this hands the rest to the loop's next turn even when more
/// completions wait: few completions per round (a stream's 4 reads of 1 MiB, QD 1) gain nothing
/// from staying, and the loop's other phases must run: Node frees dropped external buffers
/// (read-stream chunks) from its immediates, so rounds of large reads without a loop turn held
/// up to rounds x readAhead chunks of garbage (32 MiB at 8 x 4 x 1 MiB).
const FULL_ROUND: usize = 8;

/// A wake-up from the loop or the reaper: reap and deliver, batch by batch. Each delivery runs
/// the JS callback (and, through `napi_make_callback`, the microtasks it queues: the ops those
/// promises' continuations start are submitted by the flush at their end) before the next
/// batch is reaped, so ops go back to the kernel as soon as their batch is handled. While it
/// lasts the drivers are quiet (no eventfd signal per kernel batch, see `Inner::begin_wake`);
/// what waits at its end is announced for the loop's next turn.
///
/// # Safety
/// On the JS thread of `shared`'s env, inside a handle scope.
unsafe fn on_wake(
    shared: &Shared,
    call: &mut dyn FnMut(sys::napi_value, &[sys::napi_value]),
) -> napi::Result<()> {
    let chunk = match shared.try_borrow_mut() {
        Ok(mut e) if !e.closed && e.js.is_some() => {
            e.begin_wake();
            delivery_chunk(matches!(e.wake, Wake::Loop { .. }))
        }
        _ => return Ok(()),
    };
    // SAFETY: forwarded contract.
    let r = unsafe { rounds(shared, call, chunk) };
    if let Ok(mut e) = shared.try_borrow_mut() {
        if !e.closed {
            e.end_wake();
        }
    }
    r
}

/// Completions per JS call in a wake-up on the loop: all of a round's in one call (the
/// default), or `ODIRECT_DELIVERY=chunked`: 8 per call. Each `napi_make_callback` ends with the
/// microtasks it queued, whose flush resubmits the ops the settled promises' continuations
/// started, so smaller calls give ops back to the kernel sooner, at the cost of a call and an
/// `io_uring_enter` each: measured (per op, depth 64, 2 s runs interleaved with fio) it helps
/// where the device's latency decides in some runs (disk: 0.91-0.96x -> 0.93-1.01x fio for
/// reads, 0.85x -> 1.00x in one run of writes; not in a bench run on a loaded machine) and costs
/// where the JS thread is the bottleneck (tmpfs: up to 0.45x vs 0.69x for writes). An adaptive size (small while the JS thread idles between
/// wake-ups) was tried: the share of time in wake-ups swings 0.35-0.75 on the disk and
/// 0.85-0.93 on tmpfs, and gained nothing over the default at either threshold tried.
fn delivery_chunk(looped: bool) -> usize {
    static CHUNK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let chunk = *CHUNK.get_or_init(|| match std::env::var("ODIRECT_DELIVERY").as_deref() {
        Ok("chunked") => 8,
        _ => usize::MAX,
    });
    // The reaper thread's calls run no microtasks between them: nothing to gain there.
    if looped {
        chunk
    } else {
        usize::MAX
    }
}

/// The rounds of one wake-up (see `on_wake`): each reaps what one kernel batch posted,
/// refills native batches and delivers to JS; stops when nothing more waits, after
/// `DELIVERY_ROUNDS`, or after a round of fewer than `FULL_ROUND` completions.
///
/// # Safety
/// As `on_wake`.
unsafe fn rounds(
    shared: &Shared,
    call: &mut dyn FnMut(sys::napi_value, &[sys::napi_value]),
    chunk: usize,
) -> napi::Result<()> {
    // Whether this wake-up handed completions to JS (see `Inner::wake_wait_after`).
    let mut delivered = false;
    for round in 0..DELIVERY_ROUNDS {
        let (env, js, out, reaped) = {
            let Ok(mut e) = shared.try_borrow_mut() else {
                return Ok(());
            };
            if e.closed {
                return Ok(());
            }
            let Some(js) = e.js else { return Ok(()) };
            if let Wake::Thread { pending, .. } = &e.wake {
                pending.store(false, Ordering::SeqCst);
            }
            // The engine's delivery buffer, lent for this batch (its capacity is kept).
            let mut out = std::mem::take(&mut e.delivery);
            let reaped = e.reap(&mut out, round == 0);
            (e.env, js, out, reaped)
        };
        delivered |= !out.is_empty();
        let r = if out.is_empty() {
            Ok(())
        } else {
            // SAFETY: forwarded contract; no borrow of the engine is held.
            unsafe { deliver(env, js, &out, call, chunk) }
        };
        give_back(shared, out);
        // Asked after the delivery: the flush at its end may have posted the next batch.
        let pending = shared.try_borrow().is_ok_and(|e| e.more());
        // Completions count whether they went to JS or refilled a native batch: rounds of a
        // few (a trickle) cost two io_uring_enter each, more than a turn of the loop. A few
        // small ones (a depth-1 loop whose next op completed while this one was delivered) go
        // on: reaping it now costs less than announcing it for the loop's next turn.
        let few = reaped < FULL_ROUND
            && !(reaped > 0
                && pending
                && shared.try_borrow_mut().is_ok_and(|mut e| e.small_round()));
        if !pending || r.is_err() || few {
            // The wake-up wait (see `Inner::wake_wait_after`): sleep in the kernel until a batch
            // of completions is in rather than in the loop's epoll, woken by the first.
            if r.is_ok()
                && round + 1 < DELIVERY_ROUNDS
                && shared
                    .try_borrow_mut()
                    .is_ok_and(|mut e| !e.closed && e.wake_wait_after(delivered))
            {
                continue;
            }
            return r;
        }
    }
    Ok(())
}

/// Returns the delivery buffer lent by `on_wake` and frees the delivered ops' ids (if the engine
/// is busy, the JS callback re-entered it: the buffer is dropped, which only costs the next
/// wake-up an allocation, and the ids wait for the next delivery).
fn give_back(shared: &Shared, mut out: Vec<f64>) {
    out.clear();
    if let Ok(mut e) = shared.try_borrow_mut() {
        e.delivery = out;
        // Delivered: their ids may be taken again.
        e.recycle();
    }
}

/// Delivers `out` triples to JS in calls of `chunk` completions at most, through the
/// preallocated results array (odirect's memory, its address known), or fresh arrays. Must not hold
/// any borrow of the engine: the JS callback may call back into it. An error means the
/// completions from the failed chunk on were not delivered.
///
/// # Safety
/// On the JS thread, inside a handle scope; `call` calls the JS function with (array, count).
unsafe fn deliver(
    env: sys::napi_env,
    js: Js,
    out: &[f64],
    call: &mut dyn FnMut(sys::napi_value, &[sys::napi_value]),
    chunk: usize,
) -> napi::Result<()> {
    let stride = crate::consts::RESULT_STRIDE as usize;
    let per_call = chunk.clamp(1, RESULTS_CAP) * stride;
    let mut f = ptr::null_mut();
    // SAFETY (block): JS thread, live env and references created on it.
    unsafe {
        check!(napi_get_reference_value(env, js.callback, &mut f))?;
        if f.is_null() {
            return Err(fail("the engine's callback was collected: delivery"));
        }
        for chunk in out.chunks(per_call) {
            let arr = match js
                .results
                .and_then(|r| reference(env, r.array).map(|a| (a, r)))
            {
                Some((arr, r)) => {
                    // chunk.len() <= per_call <= RESULTS_CAP * stride = ResultsMem::LEN.
                    ptr::copy_nonoverlapping(chunk.as_ptr(), (*r.mem).0, chunk.len());
                    arr
                }
                None => fresh_array(env, chunk)?,
            };
            let mut n = ptr::null_mut();
            check!(napi_create_uint32(
                env,
                crate::consts::completions(chunk.len()),
                &mut n
            ))?;
            call(f, &[arr, n]);
        }
    }
    Ok(())
}

/// The value of reference `r` (None if it failed or was collected).
///
/// # Safety
/// JS thread of env, inside a handle scope; `r` a reference created on env.
unsafe fn reference(env: sys::napi_env, r: sys::napi_ref) -> Option<sys::napi_value> {
    let mut v = ptr::null_mut();
    // SAFETY: forwarded contract; writes only v.
    unsafe { check!(napi_get_reference_value(env, r, &mut v)) }.ok()?;
    (!v.is_null()).then_some(v)
}

/// A new Float64Array holding `chunk`.
///
/// # Safety
/// JS thread of env, inside a handle scope.
unsafe fn fresh_array(env: sys::napi_env, chunk: &[f64]) -> napi::Result<sys::napi_value> {
    let mut data: *mut c_void = ptr::null_mut();
    let (mut ab, mut arr) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: forwarded contract; the new buffer has room for chunk.len() f64s.
    unsafe {
        check!(napi_create_arraybuffer(
            env,
            chunk.len() * 8,
            &mut data,
            &mut ab
        ))?;
        ptr::copy_nonoverlapping(chunk.as_ptr(), data as *mut f64, chunk.len());
        check!(napi_create_typedarray(
            env,
            sys::TypedarrayType::float64_array,
            chunk.len(),
            ab,
            0,
            &mut arr,
        ))?;
    }
    Ok(arr)
}
