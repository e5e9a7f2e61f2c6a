//! The per-op entry points (`rw`, `flush`) as plain N-API functions bound to one engine.
//!
//! A `#[napi]` class method pays, on every call, for unwrapping `this` (napi_unwrap and a type
//! tag check through private properties) and for napi-rs's borrow bookkeeping (a scope, a
//! hash-map entry, several allocations): measured with callgrind, ~700 of the ~1,200
//! instructions one `rw` cost in the addon. These functions carry their engine in the
//! function's data pointer instead (an engine reference, given back by the function's
//! finalizer) and read their arguments with one `napi_get_cb_info`. They take the same
//! arguments and return the same values as the `NativeEngine` methods of the same name.
//!
//! `rwa(view)` is `rw` taking its six numbers from an argument array JS fills (a Float64Array
//! over memory odirect owns, `args`) and leaving its result there: 6 N-API number reads and
//! the result's number fewer per op. `ODIRECT_RW_ARGS=0` leaves them out (JS calls `rw`).

use std::ffi::c_void;
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;

use napi::sys;

use crate::capture::CaptureError;
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
    // `rwa` and its argument array, unless switched off or the runtime copies external memory
    // (JS then calls `rw`).
    if crate::env::on_unless_zero("ODIRECT_RW_ARGS") {
        // SAFETY: forwarded contract.
        if let Some((f, args)) = unsafe { args_form(env, rc) } {
            // SAFETY: obj, f and args are live values of this call.
            unsafe {
                check!(napi_set_named_property(env, obj, c"rwa".as_ptr(), f))?;
                check!(napi_set_named_property(env, obj, c"args".as_ptr(), args))?;
            }
        }
    }
    Ok(obj)
}

/// Slots of `rwa`'s argument array: fd, offset, length, position, memAlign, packed, then the
/// result (see [`rwa`]).
const ARGS_LEN: usize = 8;
/// Where `rwa` writes its result in the argument array.
const ARGS_RESULT: usize = 6;

/// The memory of `rwa`'s argument array (ARGS_LEN f64s), freed when the last holder goes: the
/// array's ArrayBuffer (its finalizer) and the function (its finalizer).
struct ArgsMem(*mut f64);

// SAFETY: a plain heap allocation owned by the value (freed by its Drop, from whichever thread
// drops the last reference: a runtime may finalize an ArrayBuffer's backing store off the JS
// thread); nothing else frees it.
unsafe impl Send for ArgsMem {}
// SAFETY: as Send: `&ArgsMem` gives only the pointer; every access through it is on the JS
// thread (`rwa`, and JS writing the array).
unsafe impl Sync for ArgsMem {}

impl Drop for ArgsMem {
    fn drop(&mut self) {
        // SAFETY: self.0 came from Box::into_raw of a boxed slice of ARGS_LEN f64s in
        // `args_form`, freed once (here, when the last Arc goes).
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(self.0, ARGS_LEN)) });
    }
}

/// What `rwa` carries as its data: an engine reference (from `wake::hand_ref`, given back by
/// its finalizer) and its argument array's memory.
struct RwaData {
    engine: *const Shared,
    args: Arc<ArgsMem>,
}

/// The function `rwa` and its argument array (a Float64Array over memory odirect owns), or
/// None when the runtime refused or copied the external memory.
///
/// # Safety
/// As [`functions`].
unsafe fn args_form(
    env: sys::napi_env,
    rc: &Rc<Shared>,
) -> Option<(sys::napi_value, sys::napi_value)> {
    let data = Box::into_raw(vec![0f64; ARGS_LEN].into_boxed_slice()) as *mut f64;
    let mem = Arc::new(ArgsMem(data));
    let bytes = ARGS_LEN * std::mem::size_of::<f64>();
    // SAFETY: live env; the ArrayBuffer's Arc keeps the memory allocated until V8 finalizes it
    // (and the function holds its own).
    let ab = unsafe {
        crate::memory::external_arraybuffer(env, data as *mut c_void, bytes, mem.clone())
    }?;
    let mut seen: *mut c_void = ptr::null_mut();
    let mut got = 0usize;
    let mut arr = ptr::null_mut();
    // SAFETY: plain N-API calls on a live env and handles of this call, writing their outputs.
    unsafe {
        check!(napi_get_arraybuffer_info(env, ab, &mut seen, &mut got)).ok()?;
        // A runtime that copied our memory: what JS writes is not what `rwa` reads.
        if seen as *mut f64 != data || got != bytes {
            return None;
        }
        check!(napi_create_typedarray(
            env,
            sys::TypedarrayType::float64_array,
            ARGS_LEN,
            ab,
            0,
            &mut arr,
        ))
        .ok()?;
    }
    let f = wake::hand_ref(rc, |p| {
        let hold = Box::into_raw(Box::new(RwaData {
            engine: p as *const Shared,
            args: mem,
        }));
        let mut f = ptr::null_mut();
        // SAFETY: live env; `hold` outlives the function (freed by the finalizer added right
        // after; if either call fails the function is never returned or called, and `hold` is
        // freed here while hand_ref gives the engine reference back).
        let made = unsafe {
            check!(napi_create_function(
                env,
                c"rwa".as_ptr(),
                3,
                Some(rwa),
                hold as *mut c_void,
                &mut f,
            ))
            .and_then(|()| {
                check!(napi_add_finalizer(
                    env,
                    f,
                    hold as *mut c_void,
                    Some(finalize_rwa),
                    ptr::null_mut(),
                    ptr::null_mut(),
                ))
            })
        };
        if let Err(e) = made {
            // SAFETY: `hold` from Box::into_raw above, not handed over (no finalizer added).
            drop(unsafe { Box::from_raw(hold) });
            return Err(e);
        }
        Ok(f)
    })
    .ok()?;
    Some((f, arr))
}

unsafe extern "C" fn finalize_rwa(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the function's RwaData box (see `args_form`), given back once: the
    // function is gone, nothing calls in with it any more.
    let d = unsafe { Box::from_raw(data as *mut RwaData) };
    // SAFETY: the engine reference from hand_ref, given back once.
    unsafe { wake::drop_sys_ref(d.engine) };
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
    // SAFETY: forwarded contract.
    let (data, argv) = unsafe { cb_info::<N>(env, info) }?;
    Some((data as *const Shared, argv))
}

/// The function's data (never null) and up to `N` arguments of this call.
///
/// # Safety
/// Inside a call of one of our functions.
unsafe fn cb_info<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> Option<(*mut c_void, [sys::napi_value; N])> {
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
    Some((data, argv))
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
    // SAFETY: inside a call of our function; a[1] is a live handle of it.
    let r = match unsafe { rw_core(shared, a[1], [fd, offset, length, position, align, packed]) } {
        Ok(r) => r,
        // SAFETY: inside a call.
        Err(msg) => return unsafe { throw(env, msg) },
    };
    let mut out = ptr::null_mut();
    // SAFETY: inside a call; a failure leaves out null (undefined in JS, refused by the caller).
    unsafe { report!(napi_create_double(env, r, &mut out)) };
    out
}

/// `rwa(view)`: `rw` with its six numbers read from the function's argument array (slots 0-5:
/// fd, offset, length, position, memAlign, packed) and its result written into slot
/// [`ARGS_RESULT`], returning undefined: no N-API read per number (~35 instructions each) and
/// no number made for the result.
unsafe extern "C" fn rwa(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: N-API calls this inside a call of our function.
    let Some((data, argv)) = (unsafe { cb_info::<1>(env, info) }) else {
        // SAFETY: inside a call.
        return unsafe { throw(env, c"odirect: rwa: arguments unavailable") };
    };
    // SAFETY: the data is this function's RwaData (see `args_form`), alive while the function
    // is; its argument memory (ARGS_LEN f64s) lives as long as the Arc it holds. Only this JS
    // thread touches it, and no JS runs during this call.
    let (shared, a) = unsafe {
        let d = &*(data as *const RwaData);
        (d.engine, d.args.0)
    };
    // SAFETY: a holds ARGS_LEN f64s (see above).
    let n: [f64; 6] = std::array::from_fn(|i| unsafe { *a.add(i) });
    // SAFETY: inside a call of our function; argv[0] is a live handle of it.
    let (r, err) = match unsafe { rw_core(shared, argv[0], n) } {
        Ok(r) => (r, None),
        // Nothing staged. Should the throw itself fail, JS reads a capture error here, never
        // the ticket of an earlier call.
        Err(msg) => (CaptureError::NotView.code(), Some(msg)),
    };
    // SAFETY: as above; ARGS_RESULT < ARGS_LEN.
    unsafe { *a.add(ARGS_RESULT) = r };
    if let Some(msg) = err {
        // SAFETY: inside a call.
        return unsafe { throw(env, msg) };
    }
    ptr::null_mut()
}

/// The staging of `rw`/`rwa`: `n` is fd, offset, length, position, memAlign, packed. Returns
/// the ticket (or a negative capture code), or the message of the TypeError to throw.
///
/// # Safety
/// Inside a call of one of our functions on the engine's env: `shared` is an engine reference
/// that function holds, `view` a live handle of the call.
unsafe fn rw_core(
    shared: *const Shared,
    view: sys::napi_value,
    n: [f64; 6],
) -> Result<f64, &'static std::ffi::CStr> {
    use crate::consts::{RW_ALONE, RW_BACKEND_SHIFT, RW_FLAGS_SHIFT, RW_WRITE};
    let [fd, offset, length, position, align, packed] = n;
    let packed = packed as u32;
    let Ok(kind) = crate::backend_kind((packed >> RW_BACKEND_SHIFT) & 3) else {
        return Err(c"odirect: rw: bad backend index");
    };
    // SAFETY: the data is an engine reference held by the function being called (see
    // `function` / `args_form`): the engine lives at least as long as this call.
    let Ok(mut e) = (unsafe { &*shared }).try_borrow_mut() else {
        return Err(c"odirect: engine re-entered");
    };
    // SAFETY: view is a live handle of this call on the engine's env.
    let r = match unsafe {
        e.rw(
            kind,
            packed & RW_WRITE != 0,
            fd as i32,
            view,
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
    Ok(r)
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
