//! The per-op entry points (`rw`, `flush`) as plain N-API functions bound to one engine.
//!
//! A `#[napi]` class method pays, on every call, for unwrapping `this` (napi_unwrap and a type
//! tag check through private properties) and for napi-rs's borrow bookkeeping (a scope, a
//! hash-map entry, several allocations): measured with callgrind, ~700 of the ~1,200
//! instructions one `rw` cost in the addon. These functions carry their engine in the
//! function's data pointer instead (an engine reference, given back by the function's
//! finalizer) and read their arguments with one `napi_get_cb_info`. They take the same
//! arguments and return the same values as the `NativeEngine` methods of the same name.

use std::ffi::c_void;
use std::ptr;
use std::rc::Rc;

use napi::sys;

use crate::engine::Shared;
use crate::status::{check, report};
use crate::wake;

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// `{ rw, flush }` for the engine `rc`, as a new object.
///
/// # Safety
/// `env` is the engine's env, on its JS thread, inside a call.
pub unsafe fn functions(env: sys::napi_env, rc: &Rc<Shared>) -> napi::Result<sys::napi_value> {
    let mut obj = ptr::null_mut();
    // SAFETY: forwarded contract.
    unsafe { check!(napi_create_object(env, &mut obj)) }?;
    for (name, cb) in [(c"rw", rw as Callback), (c"flush", flush as Callback)] {
        // SAFETY: forwarded contract; `name` is NUL-terminated.
        let f = unsafe { function(env, rc, name, cb) }?;
        // SAFETY: obj and f are live values of this call.
        unsafe { check!(napi_set_named_property(env, obj, name.as_ptr(), f)) }?;
    }
    Ok(obj)
}

/// A function calling `cb` with an engine reference as its data, given back when the function
/// is collected (or its environment ends).
///
/// # Safety
/// As [`functions`].
unsafe fn function(
    env: sys::napi_env,
    rc: &Rc<Shared>,
    name: &std::ffi::CStr,
    cb: Callback,
) -> napi::Result<sys::napi_value> {
    wake::hand_ref(rc, |data| {
        let mut f = ptr::null_mut();
        // SAFETY: forwarded contract; the data outlives the function (given back by the
        // finalizer added right after, or at once by hand_ref if this fails).
        unsafe {
            check!(napi_create_function(
                env,
                name.as_ptr(),
                name.count_bytes() as isize,
                Some(cb),
                data,
                &mut f,
            ))
        }?;
        // SAFETY: f is live; the finalizer runs once, on the JS thread.
        let added = unsafe {
            check!(napi_add_finalizer(
                env,
                f,
                data,
                Some(finalize),
                ptr::null_mut(),
                ptr::null_mut(),
            ))
        };
        // Without the finalizer the reference would never come back: hand_ref gives it back
        // now, and the function (which must not be called then) is not returned.
        added.map(|()| f)
    })
}

unsafe extern "C" fn finalize(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the function's engine reference (see `function`); the function is
    // gone, nothing calls in with it any more.
    unsafe { wake::drop_sys_ref(data as *const Shared) };
}

/// The engine and up to `N` arguments of this call (missing ones are `undefined`).
///
/// # Safety
/// Inside a call of a function made by [`function`].
unsafe fn args<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Option<(*const Shared, [sys::napi_value; N])> {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    let mut data = ptr::null_mut();
    // SAFETY: forwarded contract; argv has room for argc values.
    let got = unsafe {
        report!(napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            &mut data,
        ))
    };
    if !got || data.is_null() {
        return None;
    }
    Some((data as *const Shared, argv))
}

/// Throws a TypeError (`msg` is NUL-terminated) and returns the null value N-API expects.
///
/// # Safety
/// Inside a call on `env`.
unsafe fn throw(env: sys::napi_env, msg: &std::ffi::CStr) -> sys::napi_value {
    // SAFETY: forwarded contract. If even the throw fails, the call returns undefined.
    unsafe { report!(napi_throw_type_error(env, ptr::null(), msg.as_ptr())) };
    ptr::null_mut()
}

/// A number argument (None when it is not a number).
///
/// # Safety
/// `v` is a live value of the current call.
unsafe fn number(env: sys::napi_env, v: sys::napi_value) -> Option<f64> {
    let mut x = 0.0;
    // SAFETY: forwarded contract; writes only x.
    let s = unsafe { sys::napi_get_value_double(env, v, &mut x) };
    (s == sys::Status::napi_ok).then_some(x)
}

/// `rw(fd, view, offset, length, position, memAlign, packed)`: as `NativeEngine.rw`, with its
/// backend, write, rwFlags and alone arguments packed in one number (see `consts::RW_WRITE`):
/// each N-API read of an argument is ~50 instructions, and this runs once per op.
unsafe extern "C" fn rw(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    use crate::consts::{RW_ALONE, RW_BACKEND_SHIFT, RW_FLAGS_SHIFT, RW_WRITE};
    // SAFETY: N-API calls this inside a call of our function.
    let Some((shared, a)) = (unsafe { args::<7>(env, info) }) else {
        // SAFETY: inside a call.
        return unsafe { throw(env, c"odirect: rw: arguments unavailable") };
    };
    // SAFETY: each a[i] is a live value of this call.
    let [fd, offset, length, position, align, packed] =
        [0, 2, 3, 4, 5, 6].map(|i| unsafe { number(env, a[i]) });
    let (Some(fd), Some(offset), Some(length), Some(position), Some(align), Some(packed)) =
        (fd, offset, length, position, align, packed)
    else {
        // SAFETY: inside a call.
        return unsafe { throw(env, c"odirect: rw: a number argument is not a number") };
    };
    let packed = packed as u32;
    let Ok(kind) = crate::backend_kind((packed >> RW_BACKEND_SHIFT) & 3) else {
        // SAFETY: inside a call.
        return unsafe { throw(env, c"odirect: rw: bad backend index") };
    };
    // SAFETY: the data is an engine reference held by the function being called (see
    // `function`): the engine lives at least as long as this call.
    let Ok(mut e) = (unsafe { &*shared }).try_borrow_mut() else {
        // SAFETY: inside a call.
        return unsafe { throw(env, c"odirect: engine re-entered") };
    };
    // SAFETY: a[1] is a live handle of this call on the engine's env.
    let r = match unsafe {
        e.rw(
            kind,
            packed & RW_WRITE != 0,
            fd as i32,
            a[1],
            offset as usize,
            length as usize,
            position as u64,
            align as usize,
            (packed >> RW_FLAGS_SHIFT) as i32,
            packed & RW_ALONE != 0,
        )
    } {
        Ok(k) => k,
        Err(c) => c.code(),
    };
    drop(e);
    let mut out = ptr::null_mut();
    // SAFETY: inside a call; a failure leaves out null (undefined in JS, refused by the caller).
    unsafe { report!(napi_create_double(env, r, &mut out)) };
    out
}

/// `flush()`: as `NativeEngine.flush`.
unsafe extern "C" fn flush(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API calls this inside a call of our function.
    let Some((shared, _)) = (unsafe { args::<0>(env, info) }) else {
        // SAFETY: inside a call.
        return unsafe { throw(env, c"odirect: flush: arguments unavailable") };
    };
    // SAFETY: as in `rw`; inside a call of our function, no borrow of the engine alive.
    if unsafe { crate::wake::flush_and_deliver(env, &*shared) }.is_err() {
        // SAFETY: inside a call.
        return unsafe { throw(env, c"odirect: engine re-entered") };
    }
    ptr::null_mut()
}
