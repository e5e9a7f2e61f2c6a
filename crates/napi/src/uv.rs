//! The few libuv functions the engine needs to watch its eventfd from the JS thread's own event
//! loop, resolved at run time with dlsym so the addon has no link-time libuv dependency and still
//! loads where there is no libuv (Bun, Deno): there [`Uv::get`] is `None` and the engine uses
//! its portable path (a reaper thread).

use std::ffi::{c_int, c_void, CStr};

pub type PollCb = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
pub type CloseCb = unsafe extern "C" fn(handle: *mut c_void);

pub const UV_POLL: c_int = 8;
pub const UV_READABLE: c_int = 1;

type HandleSize = unsafe extern "C" fn(c_int) -> usize;
type PollInit = unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int;
type PollStart = unsafe extern "C" fn(*mut c_void, c_int, PollCb) -> c_int;
type HandleFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type Close = unsafe extern "C" fn(*mut c_void, CloseCb);
type RefFn = unsafe extern "C" fn(*mut c_void);
type NowFn = unsafe extern "C" fn(*const c_void) -> u64;
type BackendFn = unsafe extern "C" fn(*const c_void) -> c_int;
type HrtimeFn = unsafe extern "C" fn() -> u64;

#[derive(Clone, Copy)]
pub struct Uv {
    pub handle_size: HandleSize,
    pub poll_init: PollInit,
    pub poll_start: PollStart,
    pub poll_stop: HandleFn,
    pub close: Close,
    pub ref_: RefFn,
    pub unref: RefFn,
    /// uv_now: the loop's time (ms), updated once per turn of the loop.
    pub now: NowFn,
    /// uv_backend_fd: the loop's epoll descriptor, readable when a watched descriptor is.
    pub backend_fd: BackendFn,
    /// uv_backend_timeout: how long the loop would block in its poll now (ms; -1: no bound;
    /// 0: it would not block: pending callbacks, idle handles, closing handles, a stop, a
    /// due timer, or watchers not yet in the epoll set).
    pub backend_timeout: BackendFn,
    /// uv_hrtime: the monotonic clock (ns), the loop's time (`now`) is this / 1e6 when it turned.
    pub hrtime: HrtimeFn,
}

fn sym(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the symbol up.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

impl Uv {
    /// libuv as exported by the host process (Node), or `None`.
    pub fn get() -> Option<Uv> {
        static UV: std::sync::OnceLock<Option<Uv>> = std::sync::OnceLock::new();
        *UV.get_or_init(|| {
            // SAFETY (each transmute): the symbols are libuv's public functions with exactly
            // these C signatures (uv.h, stable since libuv 1.0).
            unsafe {
                Some(Uv {
                    handle_size: std::mem::transmute::<*mut c_void, HandleSize>(sym(
                        c"uv_handle_size",
                    )?),
                    poll_init: std::mem::transmute::<*mut c_void, PollInit>(sym(c"uv_poll_init")?),
                    poll_start: std::mem::transmute::<*mut c_void, PollStart>(sym(
                        c"uv_poll_start",
                    )?),
                    poll_stop: std::mem::transmute::<*mut c_void, HandleFn>(sym(c"uv_poll_stop")?),
                    close: std::mem::transmute::<*mut c_void, Close>(sym(c"uv_close")?),
                    ref_: std::mem::transmute::<*mut c_void, RefFn>(sym(c"uv_ref")?),
                    unref: std::mem::transmute::<*mut c_void, RefFn>(sym(c"uv_unref")?),
                    now: std::mem::transmute::<*mut c_void, NowFn>(sym(c"uv_now")?),
                    backend_fd: std::mem::transmute::<*mut c_void, BackendFn>(sym(
                        c"uv_backend_fd",
                    )?),
                    backend_timeout: std::mem::transmute::<*mut c_void, BackendFn>(sym(
                        c"uv_backend_timeout",
                    )?),
                    hrtime: std::mem::transmute::<*mut c_void, HrtimeFn>(sym(c"uv_hrtime")?),
                })
            }
        })
    }
}

/// Memory for one uv handle of `kind` (pointer-aligned; `data`, the first field, set by caller).
pub fn alloc_handle(uv: &Uv, kind: c_int) -> *mut c_void {
    // SAFETY: uv_handle_size takes a handle type and returns its struct size.
    let size = unsafe { (uv.handle_size)(kind) }.max(64);
    let words = size.div_ceil(8);
    let b: Box<[u64]> = vec![0u64; words].into_boxed_slice();
    Box::into_raw(b) as *mut u64 as *mut c_void
}

/// Frees memory from [`alloc_handle`].
///
/// # Safety
/// `h` must come from `alloc_handle(uv, kind)` and be closed (its close callback ran).
pub unsafe fn free_handle(uv: &Uv, kind: c_int, h: *mut c_void) {
    // SAFETY: as alloc_handle computed it.
    let size = unsafe { (uv.handle_size)(kind) }.max(64);
    let words = size.div_ceil(8);
    // SAFETY: rebuilds the boxed slice leaked by alloc_handle with the same length.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(h as *mut u64, words)) });
}

/// `handle->data` (the first field of every uv handle).
///
/// # Safety
/// `h` must be a uv handle.
pub unsafe fn set_data(h: *mut c_void, data: *mut c_void) {
    // SAFETY: uv_handle_t starts with `void* data` (public field, uv.h UV_HANDLE_FIELDS).
    unsafe { *(h as *mut *mut c_void) = data };
}

/// # Safety
/// `h` must be a uv handle.
pub unsafe fn data(h: *mut c_void) -> *mut c_void {
    // SAFETY: as set_data.
    unsafe { *(h as *mut *mut c_void) }
}
