//! Path operations the whole-file helpers need around their temp files (unlink, rename, link,
//! directory fsync), done natively and off the JS thread: the temp file is created by the native
//! open, so it is also renamed and removed natively. A runtime that checks permissions in its own
//! `fs` (Deno) can then never refuse the cleanup of a file the native side made.

use std::ffi::CString;

use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Result, Task};
use napi_derive::napi;

/// What a `PathTask` does.
#[derive(Clone, Copy)]
enum PathOp {
    Unlink,
    Rename,
    Link,
    SyncDir,
}

pub struct PathTask {
    op: PathOp,
    a: String,
    b: String,
}

fn cstr(s: &str) -> std::result::Result<CString, i32> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// link(2)'s errors from a filesystem that makes no hard links: EPERM from the VFS where it has
/// no link operation (vfat, exFAT: USB sticks and SD cards), EOPNOTSUPP / ENOTSUP / ENOSYS from
/// FUSE and network filesystems that do not implement it.
fn no_hard_links(e: i32) -> bool {
    e == libc::EPERM || e == libc::EOPNOTSUPP || e == libc::ENOTSUP || e == libc::ENOSYS
}

/// renameat2(2) with RENAME_NOREPLACE: moves `from` to `to` only if nothing is at `to` (EEXIST
/// otherwise), atomically, as link() then unlink() of `from` does. The exclusive replace's
/// fallback on filesystems without hard links (vfat and exFAT have it since Linux 4.9 / 5.7); an
/// errno where the filesystem has neither (EINVAL) or the kernel lacks it (ENOSYS). By its system
/// call number: glibc's wrapper is newer than the 2.17 floor.
fn rename_noreplace(from: &CString, to: &CString) -> std::result::Result<(), i32> {
    // SAFETY: both are valid NUL-terminated strings for the duration of the call; the directory
    // descriptors and the flag are plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r < 0 {
        return Err(errno());
    }
    Ok(())
}

fn run(op: PathOp, a: &str, b: &str) -> std::result::Result<(), i32> {
    let ca = cstr(a)?;
    match op {
        PathOp::Unlink => {
            // SAFETY: `ca` is a valid NUL-terminated string for the duration of the call.
            if unsafe { libc::unlink(ca.as_ptr()) } < 0 {
                return Err(errno());
            }
        }
        PathOp::Rename | PathOp::Link => {
            let cb = cstr(b)?;
            // SAFETY: both are valid NUL-terminated strings for the duration of the call.
            let r = unsafe {
                if matches!(op, PathOp::Rename) {
                    libc::rename(ca.as_ptr(), cb.as_ptr())
                } else {
                    libc::link(ca.as_ptr(), cb.as_ptr())
                }
            };
            if r < 0 {
                let e = errno();
                if matches!(op, PathOp::Link) && no_hard_links(e) {
                    // Its own errors (EEXIST: something appeared at `b`) are the answer; where the
                    // filesystem has no RENAME_NOREPLACE either (EINVAL) or the kernel no
                    // renameat2 (ENOSYS), link's errno says why the exclusive move cannot be made.
                    return match rename_noreplace(&ca, &cb) {
                        Err(r) if r == libc::EINVAL || r == libc::ENOSYS => Err(e),
                        other => other,
                    };
                }
                return Err(e);
            }
        }
        PathOp::SyncDir => {
            // SAFETY: `ca` is NUL-terminated; the flags and mode are plain integers.
            let fd = unsafe {
                libc::open(
                    ca.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(errno());
            }
            // SAFETY: `fd` was opened above and is only used here.
            let r = unsafe { libc::fsync(fd) };
            let e = if r < 0 { errno() } else { 0 };
            // SAFETY: as above; closed exactly once.
            unsafe { libc::close(fd) };
            // A directory that cannot be fsynced at all (some FUSE, network filesystems) says so
            // with EINVAL or ENOTSUP: nothing more can be made durable there, which is not a failure.
            if e != 0 && e != libc::EINVAL && e != libc::ENOTSUP && e != libc::EOPNOTSUPP {
                return Err(e);
            }
        }
    }
    Ok(())
}

impl Task for PathTask {
    type Output = i32;
    type JsValue = i32;

    fn compute(&mut self) -> Result<i32> {
        Ok(match run(self.op, &self.a, &self.b) {
            Ok(()) => 0,
            Err(e) => e,
        })
    }

    fn resolve(&mut self, _env: Env, output: i32) -> Result<i32> {
        Ok(output)
    }
}

fn task(op: PathOp, a: String, b: String) -> AsyncTask<PathTask> {
    AsyncTask::new(PathTask { op, a, b })
}

/// unlink(2) off the JS thread: resolves 0 or an errno.
#[napi(ts_return_type = "Promise<number>")]
pub fn unlink_path(path: String) -> AsyncTask<PathTask> {
    task(PathOp::Unlink, path, String::new())
}

/// rename(2) off the JS thread (replaces `to`): resolves 0 or an errno.
#[napi(ts_return_type = "Promise<number>")]
pub fn rename_path(from: String, to: String) -> AsyncTask<PathTask> {
    task(PathOp::Rename, from, to)
}

/// link(2) off the JS thread (EEXIST when `to` exists): resolves 0 or an errno. On a filesystem
/// without hard links (vfat, exFAT: link fails EPERM) `from` is moved to `to` by
/// renameat2(RENAME_NOREPLACE) instead, as exclusive (EEXIST when `to` exists): `from` is then
/// gone; where the filesystem has no RENAME_NOREPLACE either (EINVAL) link's own errno is returned.
#[napi(ts_return_type = "Promise<number>")]
pub fn link_path(from: String, to: String) -> AsyncTask<PathTask> {
    task(PathOp::Link, from, to)
}

/// fsync(2) of a directory (after a rename or link in it): resolves 0 or an errno (EINVAL, a
/// directory that cannot be synced, counts as done).
#[napi(ts_return_type = "Promise<number>")]
pub fn sync_dir(path: String) -> AsyncTask<PathTask> {
    task(PathOp::SyncDir, path, String::new())
}

/// Temp files (absolute paths) that copyFile / writeFile({ atomic }) made and have neither put
/// in place nor removed yet, process-wide: removed by [`remove_temps`] when the process exits
/// through exit(3). The JS 'exit' listener covers `process.exit()` and, in Node and Bun, an
/// uncaught exception; Deno runs no JS listener after an uncaught exception (no 'exit', no
/// 'unload') but ends through Rust's `std::process::exit`, which is exit(3): its atexit
/// handlers run then, and only once the process really exits (a globalThis 'error' listener
/// that cancels the exit never gets there, where removing the temp files from an 'error'
/// listener would break a copy that goes on).
///
/// Each with the process that made it: a child forked without exec (an addon's fork(), a
/// daemonizing module) inherits this list and the atexit handler, and its exit must not remove
/// the temp files its parent is still writing (was: it did, and the parent's rename into place
/// failed ENOENT).
static TEMPS: std::sync::Mutex<Vec<(libc::pid_t, CString)>> = std::sync::Mutex::new(Vec::new());
static TEMPS_HOOKED: std::sync::Once = std::sync::Once::new();

/// The exit(3) handler: unlinks every temp file still held. Never waits: a lock held by a
/// thread caught mid-change at the exit leaves the files (as a kill would).
extern "C" fn remove_temps() {
    if let Ok(t) = TEMPS.try_lock() {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        for (_, p) in t.iter().filter(|(pid, _)| *pid == me) {
            // SAFETY: a valid NUL-terminated path; unlink has no memory preconditions.
            unsafe { libc::unlink(p.as_ptr()) };
        }
    }
}

/// `path` (absolute), a temp file this process just made, is removed at exit(3) until
/// [`temp_let_go`] (see [`TEMPS`]).
#[napi]
pub fn temp_held(path: String) {
    let Ok(c) = CString::new(path) else { return };
    TEMPS_HOOKED.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no arguments; the addon is never
        // unloaded before the exit (N-API addons stay loaded).
        unsafe { libc::atexit(remove_temps) };
    });
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    TEMPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((me, c));
}

/// `path` was put in place or removed: no longer removed at exit.
#[napi]
pub fn temp_let_go(path: String) {
    let mut t = TEMPS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = t.iter().position(|(_, c)| c.as_bytes() == path.as_bytes()) {
        t.swap_remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child forked without exec that exits through exit(3) leaves its parent's temp file;
    /// the parent's own exit(3) (a second fork standing in for it: same list, same pid rule
    /// seen from the process that made the entry) removes it.
    #[test]
    fn a_forked_childs_exit_leaves_the_parents_temp_files() {
        let dir = std::env::temp_dir().join(format!("odirect-paths-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(".held.tmp");
        std::fs::write(&tmp, b"data").unwrap();
        let abs = tmp.to_str().unwrap().to_string();
        temp_held(abs.clone());
        // SAFETY: the child only calls exit(3) (the handler: getpid, unlink).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: ends the child through exit(3): its atexit handlers run.
            unsafe { libc::exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child made above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(
            tmp.exists(),
            "the forked child's exit removed its parent's temp file"
        );
        // The process that made the entry removes it at its own exit.
        remove_temps();
        assert!(
            !tmp.exists(),
            "the parent's exit handler left its temp file"
        );
        temp_let_go(abs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
