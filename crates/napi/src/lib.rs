//! The N-API surface of odirect: no I/O logic here, only the bridge between JS values and
//! `odirect-core`.
//!
//! Memory rule: every op that touches JS memory holds a strong N-API reference to the JS object
//! that owns that memory (the view, or a private array of views for readv/writev). The reference
//! is created on the JS thread when the op is submitted and deleted on the JS thread when its
//! completion arrives, so V8 cannot collect the ArrayBuffer (and free its backing store) while
//! the kernel may still read or write it. At environment teardown (process exit, worker exit)
//! a cleanup hook shuts every backend down, which waits for all in-flight ops, before V8 frees
//! anything.

#![deny(clippy::all)]
// The N-API entry points take flat argument lists on purpose: one call, no object to unpack.
#![allow(clippy::too_many_arguments)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::AsyncTask;
use napi::Task;
use napi::{sys, Env, JsValue, Result, Status, Unknown};
use napi_derive::napi;
use odirect_core::backend::{self, Backend, BackendKind, BackendOptions};
use odirect_core::file::{self, DirectMode, OpenOptions};
use odirect_core::op::{Completion, Op, OpKind, Segment, Sink};

fn err(msg: impl Into<String>) -> napi::Error {
    napi::Error::new(Status::InvalidArg, msg.into())
}

macro_rules! check {
    ($e:expr) => {{
        let s = $e;
        if s != sys::Status::napi_ok {
            return Err(napi::Error::new(
                Status::GenericFailure,
                format!("N-API call failed ({}): {}", s, stringify!($e)),
            ));
        }
    }};
}

// ---------------------------------------------------------------------------------------------
// Alignment, open, probe

#[napi(object)]
pub struct AlignmentInfo {
    pub memory: u32,
    pub offset: u32,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    pub source: String,
    pub direct_supported: bool,
}

fn alignment_info(a: &odirect_core::align::Alignment) -> AlignmentInfo {
    AlignmentInfo {
        memory: a.memory,
        offset: a.offset,
        logical_block_size: a.logical_block_size,
        physical_block_size: a.physical_block_size,
        source: a.source.name().to_string(),
        direct_supported: a.direct_supported,
    }
}

/// The outcome of `openFile`: `errno` is 0 on success.
#[napi(object)]
pub struct OpenResult {
    pub errno: i32,
    pub syscall: String,
    pub message: String,
    pub fd: i32,
    pub direct: bool,
    pub fallback_reason: String,
    pub alignment: Option<AlignmentInfo>,
    pub is_block_device: bool,
    pub size: f64,
    pub fs_type: String,
}

pub struct OpenTask {
    path: String,
    flags: String,
    direct: String,
    dsync: bool,
    noatime: bool,
    mode: u32,
}

impl Task for OpenTask {
    type Output = OpenResult;
    type JsValue = OpenResult;

    fn compute(&mut self) -> Result<OpenResult> {
        let flags = file::parse_flags(&self.flags).map_err(err)?;
        let direct = DirectMode::parse(&self.direct).ok_or_else(|| err("bad direct mode"))?;
        let opts = OpenOptions {
            dsync: self.dsync,
            noatime: self.noatime,
            mode: self.mode,
        };
        Ok(match file::open_file(&self.path, flags, direct, opts) {
            Ok(o) => OpenResult {
                errno: 0,
                syscall: String::new(),
                message: String::new(),
                fd: o.fd,
                direct: o.direct,
                fallback_reason: o.fallback_reason,
                alignment: Some(alignment_info(&o.alignment)),
                is_block_device: o.is_block_device,
                size: o.size as f64,
                fs_type: o.fs_type,
            },
            Err(e) => OpenResult {
                errno: e.errno,
                syscall: e.syscall.to_string(),
                message: e.message,
                fd: -1,
                direct: false,
                fallback_reason: String::new(),
                alignment: None,
                is_block_device: false,
                size: 0.0,
                fs_type: String::new(),
            },
        })
    }

    fn resolve(&mut self, _env: Env, output: OpenResult) -> Result<OpenResult> {
        Ok(output)
    }
}

/// Opens a file off the JS thread. Flags and direct mode are validated by the caller (index.ts).
#[napi(ts_return_type = "Promise<OpenResult>")]
pub fn open_file(
    path: String,
    flags: String,
    direct: String,
    dsync: bool,
    noatime: bool,
    mode: u32,
) -> AsyncTask<OpenTask> {
    AsyncTask::new(OpenTask {
        path,
        flags,
        direct,
        dsync,
        noatime,
        mode,
    })
}

/// Validates an fs-style flag string; returns "" when fine, else the reason.
#[napi]
pub fn check_flags(flags: String) -> String {
    match file::parse_flags(&flags) {
        Ok(_) => String::new(),
        Err(e) => e,
    }
}

/// Closes a descriptor synchronously (used only on failed opens and at teardown paths).
#[napi]
pub fn close_fd_sync(fd: i32) {
    // SAFETY: closing a descriptor the JS layer owns and no longer uses.
    unsafe { libc::close(fd) };
}

/// posix_fadvise(DONTNEED) behind buffered I/O on a `prefer` fallback.
#[napi]
pub fn drop_cache(fd: i32, offset: f64, len: f64) {
    file::drop_cache_range(fd, offset as u64, len as u64);
}

#[napi(object)]
pub struct StatResult {
    pub errno: i32,
    pub size: f64,
    pub blocks: f64,
    pub blksize: f64,
    pub mode: u32,
    pub ino: f64,
    pub dev: f64,
    pub nlink: f64,
    pub uid: u32,
    pub gid: u32,
    pub atime_ms: f64,
    pub mtime_ms: f64,
    pub ctime_ms: f64,
    pub is_block_device: bool,
}

pub struct StatTask {
    fd: i32,
    /// Keeps `fd` from being closed (by a close op) until the fstat has run.
    fd_use: Option<FdUse>,
}

// ---------------------------------------------------------------------------------------------
// Descriptors in use by tasks of this bridge

fn op_is_close(op: &Op) -> bool {
    matches!(op.kind, OpKind::Close { .. })
}

/// Descriptors an `fstat` task (run on libuv's pool, outside the backends) still has to use,
/// with a count per descriptor. A close op for such a descriptor waits for them: otherwise
/// `fh.stat()` racing `fh.close()` could fstat a closed descriptor (EBADF) or — once the number
/// is reused by a later open — describe a different file.
struct FdUsers {
    counts: Mutex<HashMap<i32, usize>>,
    idle: std::sync::Condvar,
}

fn fd_users() -> &'static FdUsers {
    static USERS: std::sync::OnceLock<FdUsers> = std::sync::OnceLock::new();
    USERS.get_or_init(|| FdUsers {
        counts: Mutex::new(HashMap::new()),
        idle: std::sync::Condvar::new(),
    })
}

/// One use of a descriptor, released on drop.
struct FdUse(i32);

impl FdUse {
    fn new(fd: i32) -> FdUse {
        let u = fd_users();
        *u.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(fd)
            .or_insert(0) += 1;
        FdUse(fd)
    }

    /// True when some task still has to use `fd`.
    fn busy(fd: i32) -> bool {
        fd_users()
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&fd)
    }

    /// Blocks until no task uses `fd`.
    fn wait_idle(fd: i32) {
        let u = fd_users();
        let mut c = u.counts.lock().unwrap_or_else(|p| p.into_inner());
        while c.contains_key(&fd) {
            c = u.idle.wait(c).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for FdUse {
    fn drop(&mut self) {
        let u = fd_users();
        let mut c = u.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.0);
                u.idle.notify_all();
            }
        }
    }
}

impl Task for StatTask {
    type Output = StatResult;
    type JsValue = StatResult;

    fn compute(&mut self) -> Result<StatResult> {
        let zero = StatResult {
            errno: 0,
            size: 0.0,
            blocks: 0.0,
            blksize: 0.0,
            mode: 0,
            ino: 0.0,
            dev: 0.0,
            nlink: 0.0,
            uid: 0,
            gid: 0,
            atime_ms: 0.0,
            mtime_ms: 0.0,
            ctime_ms: 0.0,
            is_block_device: false,
        };
        let st = odirect_core::align::fstat(self.fd);
        #[cfg(target_os = "linux")]
        let blk_size = odirect_core::align::blk_size_bytes(self.fd);
        // Done with the descriptor: a close waiting for it may go ahead.
        drop(self.fd_use.take());
        let st = match st {
            Ok(s) => s,
            Err(e) => {
                return Ok(StatResult {
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                    ..zero
                })
            }
        };
        let ms = |s: i64, ns: i64| s as f64 * 1000.0 + ns as f64 / 1e6;
        let is_blk = st.st_mode & libc::S_IFMT == libc::S_IFBLK;
        #[cfg(target_os = "linux")]
        let size = if is_blk {
            blk_size.unwrap_or(0) as f64
        } else {
            st.st_size as f64
        };
        #[cfg(not(target_os = "linux"))]
        let size = st.st_size as f64;
        Ok(StatResult {
            errno: 0,
            size,
            blocks: st.st_blocks as f64,
            blksize: st.st_blksize as f64,
            mode: st.st_mode as u32,
            ino: st.st_ino as f64,
            dev: st.st_dev as f64,
            nlink: st.st_nlink as f64,
            uid: st.st_uid,
            gid: st.st_gid,
            atime_ms: ms(st.st_atime, st.st_atime_nsec),
            mtime_ms: ms(st.st_mtime, st.st_mtime_nsec),
            ctime_ms: ms(st.st_ctime, st.st_ctime_nsec),
            is_block_device: is_blk,
        })
    }

    fn resolve(&mut self, _env: Env, output: StatResult) -> Result<StatResult> {
        Ok(output)
    }
}

/// fstat off the JS thread (block devices report their real size).
#[napi(ts_return_type = "Promise<StatResult>")]
pub fn stat_fd(fd: i32) -> AsyncTask<StatTask> {
    AsyncTask::new(StatTask {
        fd,
        fd_use: Some(FdUse::new(fd)),
    })
}

#[napi(object)]
pub struct BackendStatusInfo {
    pub name: String,
    pub available: bool,
    pub errno: i32,
    pub reason: String,
}

#[napi(object)]
pub struct DirectStatusInfo {
    pub works: bool,
    pub errno: i32,
    pub reason: String,
    pub tested: String,
}

#[napi(object)]
pub struct ProbeInfo {
    pub kernel: String,
    pub io_uring_disabled: Option<u32>,
    pub backends: Vec<BackendStatusInfo>,
    pub direct: DirectStatusInfo,
    pub alignment: Option<AlignmentInfo>,
    pub fs_type: String,
    pub is_block_device: bool,
}

pub struct ProbeTask {
    path: String,
}

impl Task for ProbeTask {
    type Output = ProbeInfo;
    type JsValue = ProbeInfo;

    fn compute(&mut self) -> Result<ProbeInfo> {
        let r = odirect_core::probe::probe(&self.path);
        Ok(ProbeInfo {
            kernel: r.kernel,
            io_uring_disabled: r.io_uring_disabled,
            backends: r
                .backends
                .into_iter()
                .map(|b| BackendStatusInfo {
                    name: b.kind.name().to_string(),
                    available: b.available,
                    errno: b.errno,
                    reason: b.reason,
                })
                .collect(),
            direct: DirectStatusInfo {
                works: r.direct.works,
                errno: r.direct.errno,
                reason: r.direct.reason,
                tested: r.direct.tested,
            },
            alignment: r.alignment.as_ref().map(alignment_info),
            fs_type: r.fs_type,
            is_block_device: r.is_block_device,
        })
    }

    fn resolve(&mut self, _env: Env, output: ProbeInfo) -> Result<ProbeInfo> {
        Ok(output)
    }
}

#[napi(ts_return_type = "Promise<ProbeInfo>")]
pub fn probe_path(path: String) -> AsyncTask<ProbeTask> {
    AsyncTask::new(ProbeTask { path })
}

#[napi(object)]
pub struct ErrnoInfo {
    pub code: String,
    pub message: String,
    pub hint: String,
}

/// errno -> { code: 'EIO', message, hint } for the given syscall.
#[napi]
pub fn errno_info(errno: i32, syscall: String) -> ErrnoInfo {
    ErrnoInfo {
        code: odirect_core::error::errno_name(errno),
        message: odirect_core::error::errno_message(errno),
        hint: odirect_core::error::hint(errno, &syscall).to_string(),
    }
}

#[napi]
pub fn page_size() -> u32 {
    odirect_core::align::page_size() as u32
}

/// Address of the first byte of an ArrayBuffer or ArrayBufferView (for alignment checks and
/// aligned views). Addresses of V8 backing stores do not move.
#[napi]
pub fn address_of(env: Env, value: Unknown) -> Result<f64> {
    // SAFETY: env and value come from this very call.
    let v = unsafe { view_info(env.raw(), value.raw())? };
    Ok(v.ptr as usize as f64)
}

/// True when the ArrayBuffer behind a view (or the ArrayBuffer itself) is detached.
#[napi]
pub fn is_detached(env: Env, value: Unknown) -> Result<bool> {
    let (e, mut v) = (env.raw(), value.raw());
    let mut is = false;
    // SAFETY: env and value are live handles of this call; each getter writes only its outputs.
    unsafe {
        check!(sys::napi_is_typedarray(e, v, &mut is));
        if is {
            let (mut ty, mut len, mut off) = (0, 0usize, 0usize);
            let mut data = ptr::null_mut();
            let mut ab = ptr::null_mut();
            check!(sys::napi_get_typedarray_info(
                e, v, &mut ty, &mut len, &mut data, &mut ab, &mut off
            ));
            v = ab;
        } else {
            check!(sys::napi_is_dataview(e, v, &mut is));
            if is {
                let (mut len, mut off) = (0usize, 0usize);
                let mut data = ptr::null_mut();
                let mut ab = ptr::null_mut();
                check!(sys::napi_get_dataview_info(
                    e, v, &mut len, &mut data, &mut ab, &mut off
                ));
                v = ab;
            }
        }
        let mut detached = false;
        check!(sys::napi_is_detached_arraybuffer(e, v, &mut detached));
        Ok(detached)
    }
}

// ---------------------------------------------------------------------------------------------
// Views

struct ViewInfo {
    ptr: *mut u8,
    len: usize,
}

/// Pointer and byte length of an ArrayBuffer, TypedArray, Buffer or DataView.
///
/// # Safety
/// `env` and `v` must be live handles of the current N-API call.
unsafe fn view_info(env: sys::napi_env, v: sys::napi_value) -> Result<ViewInfo> {
    let mut is = false;
    check!(sys::napi_is_typedarray(env, v, &mut is));
    if is {
        let mut ty = 0;
        let mut length = 0usize;
        let mut data: *mut c_void = ptr::null_mut();
        let mut ab = ptr::null_mut();
        let mut off = 0usize;
        check!(sys::napi_get_typedarray_info(
            env,
            v,
            &mut ty,
            &mut length,
            &mut data,
            &mut ab,
            &mut off
        ));
        let elem = match ty {
            sys::TypedarrayType::int8_array
            | sys::TypedarrayType::uint8_array
            | sys::TypedarrayType::uint8_clamped_array => 1,
            sys::TypedarrayType::int16_array | sys::TypedarrayType::uint16_array => 2,
            sys::TypedarrayType::int32_array
            | sys::TypedarrayType::uint32_array
            | sys::TypedarrayType::float32_array => 4,
            _ => 8,
        };
        return Ok(ViewInfo {
            ptr: data as *mut u8,
            len: length * elem,
        });
    }
    check!(sys::napi_is_dataview(env, v, &mut is));
    if is {
        let mut len = 0usize;
        let mut data: *mut c_void = ptr::null_mut();
        let mut ab = ptr::null_mut();
        let mut off = 0usize;
        check!(sys::napi_get_dataview_info(
            env, v, &mut len, &mut data, &mut ab, &mut off
        ));
        return Ok(ViewInfo {
            ptr: data as *mut u8,
            len,
        });
    }
    check!(sys::napi_is_arraybuffer(env, v, &mut is));
    if is {
        let mut len = 0usize;
        let mut data: *mut c_void = ptr::null_mut();
        check!(sys::napi_get_arraybuffer_info(env, v, &mut data, &mut len));
        return Ok(ViewInfo {
            ptr: data as *mut u8,
            len,
        });
    }
    Err(err(
        "expected an ArrayBuffer, TypedArray, Buffer or DataView",
    ))
}

// ---------------------------------------------------------------------------------------------
// Engine

/// The threadsafe function that carries completion batches to JS, shared with backends' sinks.
struct Tsfn(sys::napi_threadsafe_function);
// SAFETY: napi_call_threadsafe_function is documented as callable from any thread; the handle is
// only released (on the JS thread) after every backend that could call it has shut down.
unsafe impl Send for Tsfn {}
// SAFETY: as above.
unsafe impl Sync for Tsfn {}

impl Tsfn {
    fn raw(&self) -> sys::napi_threadsafe_function {
        self.0
    }
}

struct Shared {
    tsfn: Tsfn,
    backends: Mutex<HashMap<BackendKind, Arc<dyn Backend>>>,
    /// Ops in flight (submitted, completion not yet delivered to JS). Touched on the JS thread.
    inflight: AtomicUsize,
    /// ODIRECT_DEBUG: what each op in flight is (op, fd, offset, length), by id, so the
    /// completion line can say it too. None when debugging is off.
    debug: Option<DebugOps>,
    closed: AtomicBool,
}

type DebugOps = Arc<Mutex<HashMap<u64, String>>>;

impl Shared {
    fn shutdown_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let all: Vec<Arc<dyn Backend>> = self
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for b in all {
            b.shutdown();
        }
    }
}

/// One engine per JS environment (main thread or worker). Owns the backends' threads.
#[napi]
pub struct NativeEngine {
    shared: Arc<Shared>,
    env: sys::napi_env,
}

fn make_sink(tsfn: sys::napi_threadsafe_function, debug: Option<DebugOps>) -> Sink {
    let tsfn = Tsfn(tsfn);
    Arc::new(move |batch: Vec<Completion>| {
        if let Some(ops) = &debug {
            let mut ops = ops.lock().unwrap_or_else(|p| p.into_inner());
            for c in &batch {
                let what = ops.remove(&c.id).unwrap_or_else(|| "op=?".into());
                let err = if c.result < 0 {
                    format!(" ({})", odirect_core::error::errno_name(-c.result as i32))
                } else {
                    String::new()
                };
                eprintln!(
                    "odirect: complete id={} {} result={}{} latency_us={:.1}",
                    c.id,
                    what,
                    c.result,
                    err,
                    c.latency_ns as f64 / 1000.0
                );
            }
        }
        let data = Box::into_raw(Box::new(batch));
        // SAFETY: tsfn stays valid until every backend is shut down (see Tsfn); on failure
        // (environment closing) the batch is reclaimed here.
        let s = unsafe {
            sys::napi_call_threadsafe_function(
                tsfn.raw(),
                data as *mut c_void,
                sys::ThreadsafeFunctionCallMode::nonblocking,
            )
        };
        if s != sys::Status::napi_ok {
            // SAFETY: the call did not take ownership of `data`.
            drop(unsafe { Box::from_raw(data) });
        }
    })
}

struct EngineContext {
    shared: std::sync::Weak<Shared>,
}

unsafe extern "C" fn call_js(
    env: sys::napi_env,
    js_cb: sys::napi_value,
    context: *mut c_void,
    data: *mut c_void,
) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` was made by Box::into_raw in the sink and is handed to us exactly once.
    let batch: Box<Vec<Completion>> = unsafe { Box::from_raw(data as *mut Vec<Completion>) };
    if env.is_null() {
        // The environment is being torn down: nothing to resolve; references die with it.
        return;
    }
    // SAFETY: context is the EngineContext leaked at creation and freed only in finalize.
    let ctx = unsafe { &*(context as *const EngineContext) };
    let shared = ctx.shared.upgrade();
    let n = batch.len();
    // Results as one Float64Array of (id, result, latency_us) triples: one allocation and one
    // JS call per batch.
    let mut ab_data: *mut c_void = ptr::null_mut();
    let mut ab = ptr::null_mut();
    // SAFETY: all calls below run on the JS thread with the env N-API gave us; references in
    // tokens were created by submit on this env and are deleted exactly once, here.
    unsafe {
        for c in batch.iter() {
            if c.token != 0 {
                sys::napi_delete_reference(env, c.token as sys::napi_ref);
            }
        }
        if let Some(sh) = &shared {
            let before = sh.inflight.fetch_sub(n, Ordering::SeqCst);
            if before == n {
                let _ = sys::napi_unref_threadsafe_function(env, sh.tsfn.0);
            }
        }
        if sys::napi_create_arraybuffer(env, n * 3 * 8, &mut ab_data, &mut ab)
            != sys::Status::napi_ok
        {
            return;
        }
        let out = std::slice::from_raw_parts_mut(ab_data as *mut f64, n * 3);
        for (i, c) in batch.iter().enumerate() {
            out[i * 3] = c.id as f64;
            out[i * 3 + 1] = c.result as f64;
            out[i * 3 + 2] = c.latency_ns as f64 / 1000.0;
        }
        let mut arr = ptr::null_mut();
        if sys::napi_create_typedarray(
            env,
            sys::TypedarrayType::float64_array,
            n * 3,
            ab,
            0,
            &mut arr,
        ) != sys::Status::napi_ok
        {
            return;
        }
        let mut undef = ptr::null_mut();
        sys::napi_get_undefined(env, &mut undef);
        let mut ret = ptr::null_mut();
        let args = [arr];
        // An exception thrown by the callback is reported by Node as uncaught.
        sys::napi_call_function(env, undef, js_cb, 1, args.as_ptr(), &mut ret);
    }
}

unsafe extern "C" fn finalize_tsfn(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    if !data.is_null() {
        // SAFETY: `data` is the EngineContext leaked at creation; finalize runs once.
        drop(unsafe { Box::from_raw(data as *mut EngineContext) });
    }
}

fn parse_kind(b: u32) -> Result<BackendKind> {
    match b {
        0 => Ok(BackendKind::IoUring),
        1 => Ok(BackendKind::Aio),
        2 => Ok(BackendKind::ThreadPool),
        _ => Err(err("bad backend index")),
    }
}

#[napi]
impl NativeEngine {
    /// `callback(results: Float64Array)` receives (id, result, latency_us) triples.
    #[napi(constructor)]
    pub fn new(env: Env, callback: Unknown) -> Result<NativeEngine> {
        let raw_env = env.raw();
        let debug = std::env::var("ODIRECT_DEBUG")
            .map(|v| !v.is_empty() && v != "0")
            .unwrap_or(false);
        let shared = Arc::new_cyclic(|weak: &std::sync::Weak<Shared>| {
            let ctx = Box::into_raw(Box::new(EngineContext {
                shared: weak.clone(),
            }));
            let mut tsfn = ptr::null_mut();
            let mut name = ptr::null_mut();
            // SAFETY: plain N-API calls on the JS thread with valid arguments; `ctx` is owned
            // by the threadsafe function from here on and freed in finalize_tsfn.
            unsafe {
                sys::napi_create_string_utf8(raw_env, c"odirect".as_ptr(), 7, &mut name);
                let s = sys::napi_create_threadsafe_function(
                    raw_env,
                    callback.raw(),
                    ptr::null_mut(),
                    name,
                    0,
                    1,
                    ctx as *mut c_void,
                    Some(finalize_tsfn),
                    ctx as *mut c_void,
                    Some(call_js),
                    &mut tsfn,
                );
                if s == sys::Status::napi_ok {
                    // Idle engines must not keep the process alive.
                    sys::napi_unref_threadsafe_function(raw_env, tsfn);
                } else {
                    drop(Box::from_raw(ctx));
                    tsfn = ptr::null_mut();
                }
            }
            Shared {
                tsfn: Tsfn(tsfn),
                backends: Mutex::new(HashMap::new()),
                inflight: AtomicUsize::new(0),
                debug: debug.then(|| Arc::new(Mutex::new(HashMap::new()))),
                closed: AtomicBool::new(false),
            }
        });
        if shared.tsfn.0.is_null() {
            return Err(napi::Error::new(
                Status::GenericFailure,
                "could not create the completion channel (napi_create_threadsafe_function)",
            ));
        }
        // At environment teardown: shut down every backend (waits for the kernel to finish with
        // every buffer), then release the threadsafe function.
        let hook_shared = shared.clone();
        env.add_env_cleanup_hook(hook_shared, |sh: Arc<Shared>| {
            sh.shutdown_all();
            // SAFETY: no backend can call the tsfn any more; releasing is allowed off the JS
            // thread and during teardown.
            unsafe {
                sys::napi_release_threadsafe_function(
                    sh.tsfn.0,
                    sys::ThreadsafeFunctionReleaseMode::release,
                );
            }
        })?;
        Ok(NativeEngine {
            shared,
            env: raw_env,
        })
    }

    /// Starts (once) and returns "" when this backend works here, else the reason it does not.
    #[napi]
    pub fn ensure_backend(&self, backend: u32, queue_depth: u32, threads: u32) -> Result<String> {
        let kind = parse_kind(backend)?;
        Ok(match self.backend(kind, queue_depth, threads) {
            Ok(_) => String::new(),
            Err(e) => e,
        })
    }

    fn backend(
        &self,
        kind: BackendKind,
        queue_depth: u32,
        threads: u32,
    ) -> std::result::Result<Arc<dyn Backend>, String> {
        let mut map = self
            .shared
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get(&kind) {
            return Ok(b.clone());
        }
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err("the engine is shut down".into());
        }
        let sink = make_sink(self.shared.tsfn.0, self.shared.debug.clone());
        let mut opts = BackendOptions::default();
        if queue_depth > 0 {
            opts.queue_depth = queue_depth;
        }
        if threads > 0 {
            opts.threads = threads as usize;
        }
        match backend::create(kind, sink, &opts) {
            Ok(b) => {
                let b: Arc<dyn Backend> = Arc::from(b);
                map.insert(kind, b.clone());
                Ok(b)
            }
            Err(u) => Err(u.reason),
        }
    }

    fn get(&self, backend: u32) -> Result<Arc<dyn Backend>> {
        let kind = parse_kind(backend)?;
        self.shared
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&kind)
            .cloned()
            .ok_or_else(|| err("backend not started"))
    }

    fn note_submitted(&self, n: usize) {
        let before = self.shared.inflight.fetch_add(n, Ordering::SeqCst);
        if before == 0 && n > 0 {
            // SAFETY: on the JS thread, with our env and live tsfn: keep the loop alive while
            // I/O is in flight.
            unsafe {
                sys::napi_ref_threadsafe_function(self.env, self.shared.tsfn.0);
            }
        }
    }

    /// Holds `obj` alive until the completion: returns the reference as the op's token.
    fn hold(&self, obj: sys::napi_value) -> Result<usize> {
        let mut r = ptr::null_mut();
        // SAFETY: obj is a live object handle of the current call.
        check!(unsafe { sys::napi_create_reference(self.env, obj, 1, &mut r) });
        Ok(r as usize)
    }

    fn debug_submit(&self, id: u64, kind: &OpKind) {
        if let Some(ops) = &self.shared.debug {
            let (off, len) = kind.range();
            let what = format!(
                "op={} fd={} offset={} length={}",
                kind.syscall(),
                kind.fd(),
                off,
                len
            );
            eprintln!("odirect: submit id={id} {what}");
            ops.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, what);
        }
    }

    /// Read (write = false) or write into/from `view` at `position`. `buf_index` >= 0 uses a
    /// registered buffer. The caller has validated the arguments.
    #[napi]
    pub fn rw(
        &self,
        backend: u32,
        write: bool,
        id: f64,
        fd: i32,
        view: Unknown,
        position: f64,
        buf_index: i32,
    ) -> Result<()> {
        let b = self.get(backend)?;
        let op = self.make_rw(write, id, fd, view.raw(), position, buf_index)?;
        self.note_submitted(1);
        // SAFETY: the op's memory is the JS view's backing store, held alive by the reference
        // in op.token until call_js deletes it after this op's completion; JS is told (docs)
        // not to touch a buffer while an op on it is pending.
        unsafe { b.submit(vec![op]) };
        Ok(())
    }

    fn make_rw(
        &self,
        write: bool,
        id: f64,
        fd: i32,
        view: sys::napi_value,
        position: f64,
        buf_index: i32,
    ) -> Result<Op> {
        // SAFETY: view is a live handle of the current call.
        let v = unsafe { view_info(self.env, view)? };
        let token = self.hold(view)?;
        let idx = if buf_index >= 0 {
            Some(buf_index as u16)
        } else {
            None
        };
        let kind = if write {
            OpKind::Write {
                fd,
                ptr: v.ptr,
                len: v.len,
                offset: position as u64,
                buf_index: idx,
            }
        } else {
            OpKind::Read {
                fd,
                ptr: v.ptr,
                len: v.len,
                offset: position as u64,
                buf_index: idx,
            }
        };
        self.debug_submit(id as u64, &kind);
        Ok(Op::new(id as u64, token, kind))
    }

    /// Many reads/writes (on any fds) in one submission: `writes[i]` says write (1) or read (0).
    /// index.ts gathers every read/write of one event-loop turn into one call: one N-API
    /// crossing, one queue push and at most one ring-thread wake-up per turn.
    #[napi]
    pub fn rw_many(
        &self,
        backend: u32,
        writes: Vec<u32>,
        ids: Vec<f64>,
        fds: Vec<i32>,
        views: Vec<Unknown>,
        positions: Vec<f64>,
        buf_indexes: Vec<i32>,
    ) -> Result<()> {
        let b = self.get(backend)?;
        let n = ids.len();
        if writes.len() != n
            || fds.len() != n
            || views.len() != n
            || positions.len() != n
            || buf_indexes.len() != n
        {
            return Err(err("rwMany: arrays of different lengths"));
        }
        let mut ops = Vec::with_capacity(n);
        for i in 0..n {
            match self.make_rw(
                writes[i] != 0,
                ids[i],
                fds[i],
                views[i].raw(),
                positions[i],
                buf_indexes[i],
            ) {
                Ok(op) => ops.push(op),
                Err(e) => {
                    // Release what we took for the ops built so far; none was submitted.
                    for op in ops {
                        // SAFETY: tokens are references created by `hold` on this env.
                        unsafe { sys::napi_delete_reference(self.env, op.token as sys::napi_ref) };
                    }
                    return Err(e);
                }
            }
        }
        self.note_submitted(n);
        // SAFETY: as in `rw`, each op's memory is held by its own reference.
        unsafe { b.submit(ops) };
        Ok(())
    }

    /// readv / writev over a private array of views (index.ts passes a fresh copy, so holding the
    /// array holds every view).
    #[napi]
    pub fn rwv(
        &self,
        backend: u32,
        write: bool,
        id: f64,
        fd: i32,
        views: Unknown,
        position: f64,
    ) -> Result<()> {
        let b = self.get(backend)?;
        let arr = views.raw();
        let mut len = 0u32;
        // SAFETY: live handle of the current call.
        check!(unsafe { sys::napi_get_array_length(self.env, arr, &mut len) });
        let mut segs = Vec::with_capacity(len as usize);
        for i in 0..len {
            let mut el = ptr::null_mut();
            // SAFETY: as above; i < len.
            check!(unsafe { sys::napi_get_element(self.env, arr, i, &mut el) });
            // SAFETY: el is a live handle.
            let v = unsafe { view_info(self.env, el)? };
            segs.push(Segment {
                ptr: v.ptr,
                len: v.len,
            });
        }
        let token = self.hold(arr)?;
        let kind = if write {
            OpKind::Writev {
                fd,
                segs,
                offset: position as u64,
            }
        } else {
            OpKind::Readv {
                fd,
                segs,
                offset: position as u64,
            }
        };
        self.debug_submit(id as u64, &kind);
        self.note_submitted(1);
        // SAFETY: the array (and through it every view and backing store) is held by `token`
        // until the completion.
        unsafe { b.submit(vec![Op::new(id as u64, token, kind)]) };
        Ok(())
    }

    /// Ops without memory: 0 fsync, 1 fdatasync, 2 fallocate(mode, a=offset, b=len),
    /// 3 ftruncate(a=len), 4 close.
    #[napi]
    pub fn simple(
        &self,
        backend: u32,
        op: u32,
        id: f64,
        fd: i32,
        a: f64,
        b_: f64,
        mode: i32,
    ) -> Result<()> {
        let b = self.get(backend)?;
        let kind = match op {
            0 => OpKind::Fsync {
                fd,
                datasync: false,
            },
            1 => OpKind::Fsync { fd, datasync: true },
            2 => OpKind::Fallocate {
                fd,
                mode,
                offset: a as u64,
                len: b_ as u64,
            },
            3 => OpKind::Ftruncate { fd, len: a as u64 },
            4 => OpKind::Close { fd },
            _ => return Err(err("bad op")),
        };
        self.debug_submit(id as u64, &kind);
        self.note_submitted(1);
        let op = Op::new(id as u64, 0, kind);
        if op_is_close(&op) && FdUse::busy(fd) {
            // An fstat task still uses this descriptor: close it only once that is done, from a
            // helper thread (the JS thread must not block), or here if no thread can start.
            let job = Arc::new(Mutex::new(Some((b, op))));
            let run = move |job: &Mutex<Option<(Arc<dyn Backend>, Op)>>| {
                if let Some((b, op)) = job.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    FdUse::wait_idle(fd);
                    // SAFETY: as below; the close waits for the fstat instead of the other way.
                    unsafe { b.submit(vec![op]) };
                }
            };
            let j2 = job.clone();
            if std::thread::Builder::new()
                .name("odirect-close".into())
                .spawn(move || run(&j2))
                .is_err()
            {
                run(&job);
            }
            return Ok(());
        }
        // SAFETY: no memory is involved; the fd stays open until completion (index.ts closes
        // only after every other op on the handle has completed).
        unsafe { b.submit(vec![op]) };
        Ok(())
    }

    /// Asks the backend to cancel op `id`; it still completes (usually with ECANCELED).
    #[napi]
    pub fn cancel(&self, backend: u32, id: f64) -> Result<()> {
        let b = self.get(backend)?;
        b.cancel(id as u64);
        Ok(())
    }

    /// Registers (pins) buffers: io_uring fixed buffers, or mlock for other backends.
    /// Returns 0 or an errno. The views are held alive until `unregisterBuffers`.
    #[napi]
    pub fn register_buffers(&self, backend: u32, views: Vec<Unknown>) -> Result<i32> {
        let b = self.get(backend)?;
        let mut segs = Vec::with_capacity(views.len());
        for v in &views {
            // SAFETY: live handles of the current call.
            let info = unsafe { view_info(self.env, v.raw())? };
            segs.push(Segment {
                ptr: info.ptr,
                len: info.len,
            });
        }
        // SAFETY: index.ts keeps the registered views referenced from the handle/pool object
        // until unregistration, and unregisters before releasing them.
        match unsafe { b.register_buffers(&segs) } {
            Ok(()) => Ok(0),
            Err(e) => Ok(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    #[napi]
    pub fn unregister_buffers(&self, backend: u32) -> Result<i32> {
        let b = self.get(backend)?;
        Ok(match b.unregister_buffers() {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        })
    }

    /// Ops submitted whose completions have not reached JS yet.
    #[napi(getter)]
    pub fn inflight(&self) -> u32 {
        self.shared.inflight.load(Ordering::SeqCst) as u32
    }
}
