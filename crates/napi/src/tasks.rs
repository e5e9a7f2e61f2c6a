//! Tasks that run off the JS thread (open, fstat, probe) and small synchronous helpers.

use napi::bindgen_prelude::AsyncTask;
use napi::Task;
use napi::{Env, Result, Status};
use napi_derive::napi;
use odirect_core::file::{self, DirectMode, OpenOptions};

fn err(msg: impl Into<String>) -> napi::Error {
    napi::Error::new(Status::InvalidArg, msg.into())
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
    /// RWF_ATOMIC limits (statx STATX_WRITE_ATOMIC); 0 where the file has no atomic writes.
    pub atomic_write_min: u32,
    pub atomic_write_max: u32,
    pub atomic_write_segments_max: u32,
}

fn alignment_info(a: &odirect_core::align::Alignment) -> AlignmentInfo {
    AlignmentInfo {
        memory: a.memory,
        offset: a.offset,
        logical_block_size: a.logical_block_size,
        physical_block_size: a.physical_block_size,
        source: a.source.name().to_string(),
        direct_supported: a.direct_supported,
        atomic_write_min: a.atomic.unit_min,
        atomic_write_max: a.atomic.unit_max,
        atomic_write_segments_max: a.atomic.segments_max,
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
    /// Every op carries RWF_DONTCACHE.
    pub uncached: bool,
    pub alignment: Option<AlignmentInfo>,
    pub is_block_device: bool,
    pub size: f64,
    pub fs_type: String,
    /// Submitting I/O on this file may sleep (network or FUSE filesystem, pipe, socket, char
    /// device): the engine punts its ops off the JS thread.
    pub may_block: bool,
}

pub struct OpenTask {
    path: String,
    flags: String,
    direct: String,
    dsync: bool,
    noatime: bool,
    mode: u32,
    /// The asking environment's engine, which takes the new descriptor in `resolve` (one
    /// reference of its `Rc`, given back in `resolve` or when the task is dropped).
    engine: Option<EnginePtr>,
    /// The descriptor `compute` opened, until `resolve` hands it to the engine (-1 then).
    fd: i32,
    /// The engine's descriptors opened and not yet taken: `compute` records its descriptor
    /// there, so the engine's teardown closes it if neither `resolve` nor the drop ever runs
    /// (Deno ending a worker with the open in flight); whoever takes it out closes or adopts it.
    openings: crate::engine::Openings,
}

/// `Rc::into_raw` of an engine: carried by the task through the libuv thread, never used there;
/// taken back on the JS thread (in `resolve`, or in the task's drop, which also runs there).
struct EnginePtr(*const crate::engine::Shared);

// SAFETY: the pointer is not dereferenced or released off its environment's JS thread (see above).
unsafe impl Send for EnginePtr {}

impl EnginePtr {
    fn take(self) -> std::rc::Rc<crate::engine::Shared> {
        // SAFETY: from Rc::into_raw in open_file, taken back once (self is consumed).
        unsafe { std::rc::Rc::from_raw(self.0) }
    }
}

impl Drop for OpenTask {
    fn drop(&mut self) {
        if self.fd >= 0 && crate::engine::Opening::take(&self.openings, self.fd) {
            // SAFETY: the descriptor `compute` opened, never handed to anyone (no resolve ran)
            // and not closed by the engine's teardown (it was still in `openings`).
            unsafe { libc::close(self.fd) };
        }
        drop(self.engine.take().map(EnginePtr::take));
    }
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
            Ok(o) if !crate::engine::Opening::opened(&self.openings, o.fd) => {
                // The engine was torn down meanwhile: nobody will take this descriptor.
                // SAFETY: the descriptor just opened, which nobody else has.
                unsafe { libc::close(o.fd) };
                cancelled()
            }
            Ok(o) => OpenResult {
                fd: {
                    self.fd = o.fd;
                    o.fd
                },
                errno: 0,
                syscall: String::new(),
                message: String::new(),
                direct: o.direct,
                fallback_reason: o.fallback_reason,
                uncached: o.uncached,
                alignment: Some(alignment_info(&o.alignment)),
                is_block_device: o.is_block_device,
                size: o.size as f64,
                fs_type: o.fs_type,
                may_block: o.may_block,
            },
            Err(e) => failed(e.errno, e.syscall.to_string(), e.message),
        })
    }

    fn resolve(&mut self, _env: Env, output: OpenResult) -> Result<OpenResult> {
        let engine = self.engine.take().map(EnginePtr::take);
        if self.fd < 0 {
            return Ok(output);
        }
        let fd = std::mem::replace(&mut self.fd, -1);
        if !crate::engine::Opening::take(&self.openings, fd) {
            // Closed by the engine's teardown already (its number may be another file's now).
            drop(engine);
            return Ok(cancelled());
        }
        // The engine tracks the descriptor from now on (closed at its environment's teardown
        // if JS never wraps it in a FileHandle: a worker terminated while the open was in
        // flight runs no continuation). An engine torn down already cannot: closed here.
        if engine.is_some_and(|e| crate::adopt_opened(&e, fd, output.may_block, output.direct)) {
            return Ok(output);
        }
        // SAFETY: the descriptor compute opened, which nobody else has.
        unsafe { libc::close(fd) };
        Ok(cancelled())
    }
}

/// The result of an open whose environment ended while it ran (its descriptor closed).
fn cancelled() -> OpenResult {
    failed(
        libc::ECANCELED,
        "open".to_string(),
        "the environment ended while the file was being opened".to_string(),
    )
}

/// The result of an open that failed: no descriptor.
fn failed(errno: i32, syscall: String, message: String) -> OpenResult {
    OpenResult {
        errno,
        syscall,
        message,
        fd: -1,
        direct: false,
        fallback_reason: String::new(),
        uncached: false,
        alignment: None,
        is_block_device: false,
        size: 0.0,
        fs_type: String::new(),
        may_block: false,
    }
}

/// Opens a file off the JS thread. Flags and direct mode are validated by the caller (the
/// TypeScript `open()`), before this is called.
/// `engine`: this environment's NativeEngine, which takes the descriptor as soon as the open
/// completes (so it is closed at teardown even if no JS runs after that).
#[napi(ts_return_type = "Promise<OpenResult>")]
pub fn open_file(
    path: String,
    flags: String,
    direct: String,
    dsync: bool,
    noatime: bool,
    mode: u32,
    engine: &crate::NativeEngine,
) -> AsyncTask<OpenTask> {
    AsyncTask::new(OpenTask {
        path,
        flags,
        direct,
        dsync,
        noatime,
        mode,
        engine: Some(EnginePtr(std::rc::Rc::into_raw(engine.shared.clone()))),
        fd: -1,
        openings: engine.openings.clone(),
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
    /// The device a character or block device file is (st_rdev; 0 for other files).
    pub rdev: f64,
    /// statx's birth time (0 where the filesystem has none, as node:fs).
    pub birthtime_ms: f64,
    /// Exact times for BigIntStats: seconds and nanoseconds of atime, mtime, ctime, birthtime.
    pub times: Vec<f64>,
    pub is_block_device: bool,
}

pub struct StatTask {
    fd: i32,
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
            rdev: 0.0,
            birthtime_ms: 0.0,
            times: Vec::new(),
            is_block_device: false,
        };
        let st = odirect_core::align::fstat(self.fd);
        #[cfg(target_os = "linux")]
        let blk_size = odirect_core::align::blk_size_bytes(self.fd);
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
        #[cfg(target_os = "linux")]
        let (b_s, b_ns) = odirect_core::align::statx_btime(self.fd);
        #[cfg(not(target_os = "linux"))]
        let (b_s, b_ns) = (st.st_ctime, st.st_ctime_nsec as u32);
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
            rdev: st.st_rdev as f64,
            birthtime_ms: ms(b_s, b_ns as i64),
            times: vec![
                st.st_atime as f64,
                st.st_atime_nsec as f64,
                st.st_mtime as f64,
                st.st_mtime_nsec as f64,
                st.st_ctime as f64,
                st.st_ctime_nsec as f64,
                b_s as f64,
                b_ns as f64,
            ],
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
    AsyncTask::new(StatTask { fd })
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
    pub uncached: bool,
    pub uncached_reason: String,
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
            uncached: r.uncached,
            uncached_reason: r.uncached_reason,
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

// ---------------------------------------------------------------------------------------------
// Whole-file locks (open file description locks, flock where those are missing; `lock()`'s
// waits are the engine's: see `locks`) and holes

/// Takes a whole-file lock if free: 0, EAGAIN when another holder has it, or another errno.
#[napi]
pub fn try_lock_fd(fd: i32, exclusive: bool) -> i32 {
    let kind = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    crate::locks::ofd_lock(fd, kind, false)
}

/// Releases this open file's whole-file lock: 0 or an errno.
#[napi]
pub fn unlock_fd(fd: i32) -> i32 {
    crate::locks::ofd_lock(fd, libc::F_UNLCK, false)
}

/// lseek(SEEK_DATA or SEEK_HOLE): the next data (or hole) offset at or after `offset`, -1 when
/// there is none (ENXIO: past the last data), or -errno.
#[napi]
pub fn seek_data(fd: i32, offset: f64, hole: bool) -> f64 {
    let whence = if hole {
        libc::SEEK_HOLE
    } else {
        libc::SEEK_DATA
    };
    // SAFETY: lseek has no memory arguments; it moves this descriptor's offset, which odirect
    // never uses (all I/O is positioned).
    let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
    if r >= 0 {
        return r as f64;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENXIO) => -1.0,
        Some(e) => -(e as f64),
        None => -(libc::EIO as f64),
    }
}
