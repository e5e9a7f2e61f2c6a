//! `probe(path)`: what odirect can do here, and why not where it cannot.

use std::os::fd::RawFd;

use crate::align::{self, Alignment};
use crate::buf::AlignedBuf;
use crate::file::{self, DirectMode, OpenOptions};
use crate::io::{self, BackendKind};

#[derive(Debug, Clone)]
pub struct BackendStatus {
    pub kind: BackendKind,
    pub available: bool,
    pub errno: i32,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct DirectStatus {
    /// O_DIRECT could be switched on and an aligned transfer went through.
    pub works: bool,
    pub errno: i32,
    pub reason: String,
    /// The path probed (a temporary file inside a directory, or the file itself).
    pub tested: String,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub kernel: String,
    pub io_uring_disabled: Option<u32>,
    pub backends: Vec<BackendStatus>,
    pub direct: DirectStatus,
    pub alignment: Option<Alignment>,
    pub fs_type: String,
    pub is_block_device: bool,
    /// Uncached buffered I/O (RWF_DONTCACHE) works here: `direct: 'uncached'`, and the
    /// `direct: 'prefer'` fallback uses it. Empty reason when it works.
    pub uncached: bool,
    pub uncached_reason: String,
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy()
            )
        })
        .unwrap_or_else(|_| "unknown".into())
}

pub fn backends() -> Vec<BackendStatus> {
    BackendKind::ALL
        .iter()
        .map(|&kind| match io::probe(kind) {
            Ok(()) => BackendStatus {
                kind,
                available: true,
                errno: 0,
                reason: String::new(),
            },
            Err(u) => BackendStatus {
                kind,
                available: false,
                errno: u.errno,
                reason: u.reason,
            },
        })
        .collect()
}

/// Probes `path`: a directory (a temporary file is made in it and removed), a regular file
/// (opened read-only; one aligned block is read) or a block device (read-only, one block).
pub fn probe(path: &str) -> Report {
    #[cfg(target_os = "linux")]
    let io_uring_disabled = io::ring::disabled_sysctl();
    #[cfg(not(target_os = "linux"))]
    let io_uring_disabled = None;
    let mut report = Report {
        kernel: kernel_release(),
        io_uring_disabled,
        backends: backends(),
        direct: DirectStatus {
            works: false,
            errno: 0,
            reason: String::new(),
            tested: path.to_string(),
        },
        alignment: None,
        fs_type: String::new(),
        is_block_device: false,
        uncached: false,
        uncached_reason: String::new(),
    };
    // A FIFO's open waits for its other end (forever, with no writer: the probe hung, and with it a
    // thread of the caller's pool and `odirect probe`), and a character device's may (a serial line
    // waiting for its carrier). Neither has direct I/O (odirect reads and writes them in sequence,
    // buffered): said so without an open of the file itself. The type is the one of the inode the
    // probe then opens: `path` is opened O_PATH (which opens nothing of the file: no FIFO or
    // device open, no lease break), its type read with fstat, and a file probed is reopened
    // through that descriptor (/proc/self/fd), the same inode whatever `path` names by then (was:
    // the type read from `path`, then `path` opened: a FIFO renamed over it in between hung the
    // probe; live-s22).
    let held = PathFd::open(path);
    let st = held.as_ref().and_then(|h| h.stat());
    let is_dir = st.is_some_and(|m| m & libc::S_IFMT == libc::S_IFDIR);
    let kind = match st.map(|m| m & libc::S_IFMT) {
        Some(libc::S_IFIFO) => Some("a FIFO"),
        Some(libc::S_IFCHR) => Some("a character device"),
        Some(libc::S_IFSOCK) => Some("a socket"),
        _ => None,
    };
    if let Some(kind) = kind {
        report.direct.errno = libc::EINVAL;
        report.direct.reason = format!(
            "{path} is {kind}: direct I/O does not apply (odirect reads and writes it in sequence, buffered; not opened by the probe)"
        );
        report.uncached_reason =
            format!("{path} is {kind}: uncached I/O does not apply (not opened by the probe)");
        return report;
    }
    // The file itself, when `path` is no directory: through the O_PATH descriptor where /proc
    // reaches it (else by its path, as before).
    let reopen = match (&held, is_dir) {
        (Some(h), false) => h.proc_path(),
        _ => None,
    };
    let (target, temp) = if is_dir {
        let t = format!(
            "{}/.odirect-probe-{}-{}",
            path.trim_end_matches('/'),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        (t, true)
    } else {
        (path.to_string(), false)
    };
    report.direct.tested = target.clone();
    let flags = file::parse_flags(if temp { "wx+" } else { "r" }).expect("static flags");
    let opened = file::open_file(
        reopen.as_deref().unwrap_or(&target),
        flags,
        DirectMode::Off,
        OpenOptions::default(),
    );
    drop(held);
    match opened {
        Err(e) => {
            report.direct.errno = e.errno;
            report.direct.reason = format!("{}: {}", e.syscall, e.message);
        }
        Ok(o) => {
            report.alignment = Some(o.alignment);
            report.fs_type = o.fs_type.clone();
            report.is_block_device = o.is_block_device;
            match file::dontcache_works(o.fd) {
                Ok(()) => report.uncached = true,
                Err(e) => {
                    report.uncached_reason = format!(
                        "RWF_DONTCACHE refused ({}: {e}): needs Linux 6.14+ and a filesystem that has it",
                        crate::error::errno_name(e.raw_os_error().unwrap_or(0))
                    )
                }
            }
            let r = try_direct(o.fd, &o.alignment, temp, o.size);
            match r {
                Ok(()) => report.direct.works = true,
                Err((errno, why)) => {
                    report.direct.errno = errno;
                    report.direct.reason = why;
                }
            }
            // SAFETY: closing the fd opened above, used by no one else.
            unsafe { libc::close(o.fd) };
            if temp {
                let _ = std::fs::remove_file(&target);
            }
        }
    }
    report
}

/// A descriptor opened with O_PATH: names an inode without opening the file (a FIFO's open does
/// not wait, a device's driver is not called), closed on drop.
struct PathFd(RawFd);

impl PathFd {
    fn open(path: &str) -> Option<PathFd> {
        let c = std::ffi::CString::new(path).ok()?;
        // SAFETY: a valid NUL-terminated path; O_PATH opens no file, only a reference to it.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        (fd >= 0).then_some(PathFd(fd))
    }

    /// The inode's st_mode (fstat works on O_PATH descriptors since Linux 3.6).
    fn stat(&self) -> Option<libc::mode_t> {
        align::fstat(self.0).ok().map(|st| st.st_mode)
    }

    /// "/proc/self/fd/N": opening it opens this very inode (None when /proc is not there).
    fn proc_path(&self) -> Option<String> {
        let p = format!("/proc/self/fd/{}", self.0);
        std::fs::symlink_metadata(&p).is_ok().then_some(p)
    }
}

impl Drop for PathFd {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

fn try_direct(fd: RawFd, a: &Alignment, write: bool, size: u64) -> Result<(), (i32, String)> {
    if !a.direct_supported {
        return Err((
            libc::EINVAL,
            "statx reports no direct I/O support (STATX_DIOALIGN offset alignment 0)".into(),
        ));
    }
    // Switch O_DIRECT on through the same path open() uses.
    let fs = file::fs_type_name(fd);
    #[cfg(target_os = "linux")]
    // SAFETY: F_GETFL/F_SETFL take and return integers.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if libc::fcntl(fd, libc::F_SETFL, fl | libc::O_DIRECT) < 0 {
            let e = std::io::Error::last_os_error();
            let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
            return Err((
                errno,
                format!(
                    "the {fs} filesystem refused O_DIRECT ({}: {})",
                    crate::error::errno_name(errno),
                    crate::error::os_message(&e)
                ),
            ));
        }
    }
    let bs = (a.offset as usize).max(a.memory as usize).max(512);
    let mut buf = AlignedBuf::new(bs, align::page_size().max(a.memory as usize));
    if write {
        buf.as_mut_slice().fill(0x5a);
        // SAFETY: buf is a live, aligned allocation of bs bytes.
        let w = unsafe { libc::pwrite(fd, buf.as_ptr() as *const libc::c_void, bs, 0) };
        if w != bs as isize {
            let e = std::io::Error::last_os_error();
            return Err((
                e.raw_os_error().unwrap_or(libc::EIO),
                format!(
                    "an aligned {bs}-byte O_DIRECT write failed: {}",
                    crate::error::os_message(&e)
                ),
            ));
        }
    }
    if write || size > 0 {
        // SAFETY: as above, reading into our own buffer.
        let r = unsafe { libc::pread(fd, buf.as_mut_ptr() as *mut libc::c_void, bs, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return Err((
                e.raw_os_error().unwrap_or(libc::EIO),
                format!(
                    "an aligned {bs}-byte O_DIRECT read failed: {}",
                    crate::error::os_message(&e)
                ),
            ));
        }
        if write && (r != bs as isize || buf.as_slice().iter().any(|&b| b != 0x5a)) {
            return Err((
                libc::EIO,
                "O_DIRECT read-back did not match the write".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_var_tmp() {
        let r = probe("/var/tmp");
        assert!(r.kernel.starts_with("Linux"));
        assert_eq!(r.backends.len(), 3);
        assert!(r.direct.works, "{:?}", r.direct);
        assert!(r.alignment.is_some());
    }
}
