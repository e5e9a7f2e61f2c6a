//! The status of every raw `napi_*` call goes through one of these two, so none is ignored:
//!
//! - [`check!`] / [`check_status`] where the caller can fail: a non-ok status becomes a `napi::Error` naming the
//!   call (thrown to JS by the `#[napi]` function that made it, or turned into the documented
//!   fallback by the caller).
//! - [`report!`] / [`report_status`] where no error can be returned to anyone: finalizers, cleanup hooks and the
//!   teardown they run, the reaper thread, the loop's keep-alive toggles. There the environment
//!   is going away or no JS frame is waiting, and nothing can be undone or retried; each caller
//!   says what a failure leaves behind (at most a leaked reference, a loop kept alive or let
//!   go early). The failure is written to stderr when `ODIRECT_DEBUG` is set (the engine's
//!   tracing switch) and otherwise dropped on purpose: a message on every worker exit would be
//!   noise the program cannot act on.
//! - A failure while results are delivered to JS (where completions would be lost) is raised
//!   as an uncaught exception instead (see `wake`).
//!
//! Calls that only read state back (`napi_is_*`, `napi_get_*_info`) are checked with [`check!`]
//! or compared with `napi_ok` directly where a failure simply means "not that kind of value".

use napi::{sys, Status};

/// `Ok(())` when `status` is `napi_ok`, else an error naming `call`.
pub fn check_status(status: sys::napi_status, call: &str) -> napi::Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        let s = Status::from(status);
        Err(napi::Error::new(s, format!("N-API {call} failed: {s}")))
    }
}

/// For a call whose failure nobody can be told about (see the module comment): true when it
/// succeeded; a failure is written to stderr under `ODIRECT_DEBUG`.
pub fn report_status(status: sys::napi_status, call: &str) -> bool {
    if status == sys::Status::napi_ok {
        return true;
    }
    if debug() {
        // Not eprintln!: it panics (aborting the process) when a non-blocking stderr is full.
        crate::engine::trace(format_args!(
            "odirect: N-API {call} failed (nothing to report it to): {}",
            Status::from(status)
        ));
    }
    false
}

/// `ODIRECT_DEBUG` is set to something other than "" or "0" (read each time: a program may set
/// it before it starts a worker).
pub fn debug() -> bool {
    std::env::var("ODIRECT_DEBUG")
        .map(|v| !v.is_empty() && v != "0")
        .unwrap_or(false)
}

/// `check!(napi_foo(args))`: calls `sys::napi_foo(args)` (in the caller's `unsafe` block) and
/// [`check_status`]es its status under the call's name.
macro_rules! check {
    ($f:ident($($a:expr),* $(,)?)) => {
        $crate::status::check_status(napi::sys::$f($($a),*), stringify!($f))
    };
}

/// `report!(napi_foo(args))`: calls `sys::napi_foo(args)` (in the caller's `unsafe` block) and
/// [`report_status`]s a failure under the call's name; true when it succeeded.
macro_rules! report {
    ($f:ident($($a:expr),* $(,)?)) => {
        $crate::status::report_status(napi::sys::$f($($a),*), stringify!($f))
    };
}

pub(crate) use {check, report};
