//! Opening files for direct I/O.
//!
//! The file is opened without O_DIRECT first and O_DIRECT is then switched on with
//! `fcntl(F_SETFL)`, so the `prefer` mode can keep the descriptor it already has. A failed open
//! leaves the file system as it found it: a file this open created is unlinked again, and for
//! `require` the truncation asked for by 'w' / 'w+' (O_TRUNC) is only done (`ftruncate`) once
//! O_DIRECT is known to work, so a filesystem that refuses O_DIRECT (ramfs, some FUSE and network
//! filesystems) neither leaves an empty file behind nor empties an existing one — as
//! `open(O_CREAT | O_DIRECT)` itself would on ramfs.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use crate::align::{self, Alignment};

/// How much direct I/O the caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectMode {
    /// O_DIRECT or fail.
    Require,
    /// O_DIRECT when the filesystem allows it, else uncached buffered I/O where the kernel has
    /// it (RWF_DONTCACHE), else buffered I/O with the page cache dropped behind each op by the
    /// caller.
    Prefer,
    /// Plain buffered I/O.
    Off,
    /// Buffered I/O with RWF_DONTCACHE on every op (Linux 6.14+): any length and alignment, the
    /// page cache dropped behind each op by the kernel. Fails where the filesystem lacks it.
    Uncached,
}

impl DirectMode {
    pub fn parse(s: &str) -> Option<DirectMode> {
        match s {
            "require" => Some(DirectMode::Require),
            "prefer" => Some(DirectMode::Prefer),
            "off" => Some(DirectMode::Off),
            "uncached" => Some(DirectMode::Uncached),
            _ => None,
        }
    }
}

/// Access mode and creation flags, parsed from an `fs`-style flag string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFlags {
    pub bits: i32,
    pub readable: bool,
    pub writable: bool,
}

/// Parses `r`, `r+`, `rs+`, `w`, `wx`, `w+`, `wx+` (and `xw`, `xw+`). Append modes (`a`...) are
/// refused: O_APPEND writes land at end-of-file, which is almost never block aligned, so the
/// kernel would fail them with EINVAL at random. Errors carry a message saying so.
pub fn parse_flags(s: &str) -> Result<OpenFlags, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<i32>() {
            Ok(bits) => parse_flag_bits(bits),
            Err(_) => Err(format!("flags {s} are not open(2) flag bits")),
        };
    }
    let (bits, readable, writable) = match s {
        "r" => (libc::O_RDONLY, true, false),
        "r+" => (libc::O_RDWR, true, true),
        // As node:fs: 'rs+' is synchronous (O_SYNC) read-write.
        "rs+" | "sr+" => (libc::O_RDWR | libc::O_SYNC, true, true),
        "w" => (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, false, true),
        "wx" | "xw" => (libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, false, true),
        "w+" => (libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, true, true),
        "wx+" | "xw+" => (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, true, true),
        "a" | "a+" | "ax" | "xa" | "as" | "sa" | "ax+" | "xa+" | "as+" | "sa+" => {
            return Err(format!(
                "flag '{s}' (append) is not supported for direct I/O: O_APPEND writes go to the end of the file, which is rarely aligned to the block size; open with 'r+' (or 'w') and write at aligned positions, e.g. the file size rounded up"
            ))
        }
        _ => {
            return Err(format!(
                "unknown flag '{s}': use one of 'r', 'r+', 'w', 'wx', 'w+', 'wx+'"
            ))
        }
    };
    Ok(OpenFlags {
        bits: bits | libc::O_CLOEXEC,
        readable,
        writable,
    })
}

/// Numeric flags, as `fs.constants` gives them (`O_RDWR | O_CREAT`: open or create, without
/// truncating). Access mode plus O_CREAT, O_EXCL, O_TRUNC, O_SYNC, O_DSYNC, O_NOATIME,
/// O_NOFOLLOW, O_NOCTTY, O_CLOEXEC and O_DIRECT (the `direct` option decides, the bit is dropped);
/// O_APPEND is refused as the 'a' flags are, and every other bit (O_DIRECTORY, O_PATH, O_TMPFILE,
/// O_NONBLOCK...) is refused by name or number.
pub fn parse_flag_bits(bits: i32) -> Result<OpenFlags, String> {
    let (readable, writable) = match bits & libc::O_ACCMODE {
        libc::O_RDONLY => (true, false),
        libc::O_WRONLY => (false, true),
        libc::O_RDWR => (true, true),
        _ => return Err(format!("flags {bits}: the access mode (flags & O_ACCMODE) must be O_RDONLY, O_WRONLY or O_RDWR")),
    };
    if bits & libc::O_APPEND != 0 {
        return Err(format!(
            "flags {bits} include O_APPEND, which is not supported for direct I/O: O_APPEND writes go to the end of the file, which is rarely aligned to the block size; open with O_RDWR | O_CREAT and write at aligned positions, e.g. the file size rounded up"
        ));
    }
    let known = libc::O_ACCMODE
        | libc::O_CREAT
        | libc::O_EXCL
        | libc::O_TRUNC
        | libc::O_SYNC
        | libc::O_DSYNC
        | libc::O_NOATIME
        | libc::O_NOFOLLOW
        | libc::O_NOCTTY
        | libc::O_CLOEXEC
        | libc::O_DIRECT;
    let rest = bits & !known;
    if rest != 0 {
        let named = [
            (libc::O_DIRECTORY, "O_DIRECTORY"),
            (libc::O_PATH, "O_PATH"),
            (libc::O_TMPFILE & !libc::O_DIRECTORY, "O_TMPFILE"),
            (libc::O_NONBLOCK, "O_NONBLOCK"),
            (libc::O_ASYNC, "O_ASYNC"),
        ];
        let names: Vec<&str> = named
            .iter()
            .filter(|(b, _)| rest & b != 0)
            .map(|(_, n)| *n)
            .collect();
        return Err(format!(
            "flags {bits} include bits odirect does not open files with ({}): use O_RDONLY, O_WRONLY or O_RDWR with O_CREAT, O_EXCL, O_TRUNC, O_SYNC, O_DSYNC, O_NOATIME, O_NOFOLLOW",
            if names.is_empty() { format!("0x{rest:x}") } else { names.join(", ") }
        ));
    }
    Ok(OpenFlags {
        bits: (bits & !libc::O_DIRECT) | libc::O_CLOEXEC,
        readable,
        writable,
    })
}

/// Extra options.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    pub dsync: bool,
    pub noatime: bool,
    /// Permission bits for a created file (before the umask); 0 really means 0.
    pub mode: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            dsync: false,
            noatime: false,
            mode: 0o666,
        }
    }
}

/// An opened file.
#[derive(Debug, Clone)]
pub struct Opened {
    pub fd: RawFd,
    /// O_DIRECT really in effect.
    pub direct: bool,
    /// Why O_DIRECT is not in effect when it was asked for (`prefer`), empty otherwise.
    pub fallback_reason: String,
    /// Every op of this handle should carry RWF_DONTCACHE (`uncached`, or a `prefer` fallback
    /// where the filesystem has it).
    pub uncached: bool,
    pub alignment: Alignment,
    pub is_block_device: bool,
    /// Size in bytes (st_size, or the device size for block devices).
    pub size: u64,
    /// Filesystem type name (ext4, tmpfs, ramfs, ...) when known.
    pub fs_type: String,
    /// Submitting I/O on this file may sleep in the submitting thread (see
    /// [`submission_may_block`]): the engine never submits such ops from the JS thread inline.
    pub may_block: bool,
}

/// An error from `open_file`, with the system call that failed.
#[derive(Debug)]
pub struct OpenError {
    pub errno: i32,
    pub syscall: &'static str,
    pub message: String,
}

impl OpenError {
    fn last(syscall: &'static str) -> OpenError {
        let e = io::Error::last_os_error();
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        OpenError {
            errno,
            syscall,
            // The C library's words, without Rust's " (os error N)" suffix.
            message: crate::error::errno_message(errno),
        }
    }
}

/// Opens `path` with the given flags and direct mode.
pub fn open_file(
    path: &str,
    flags: OpenFlags,
    direct: DirectMode,
    opts: OpenOptions,
) -> Result<Opened, OpenError> {
    let c = CString::new(path).map_err(|_| OpenError {
        errno: libc::EINVAL,
        syscall: "open",
        message: "path contains a NUL byte".into(),
    })?;
    let mut bits = flags.bits;
    if opts.dsync {
        bits |= libc::O_DSYNC;
    }
    #[cfg(target_os = "linux")]
    if opts.noatime {
        bits |= libc::O_NOATIME;
    }
    let mode = opts.mode;
    // With 'require' ('uncached'), O_TRUNC waits until O_DIRECT (RWF_DONTCACHE) is known to
    // work: a refused open must not empty the file.
    let defer_trunc =
        matches!(direct, DirectMode::Require | DirectMode::Uncached) && bits & libc::O_TRUNC != 0;
    if defer_trunc {
        bits &= !libc::O_TRUNC;
    }
    let (fd, created) = open_tracking_creation(&c, bits, mode, opts.noatime)?;
    match finish_open(fd, direct, defer_trunc) {
        Ok(o) => Ok(o),
        Err(e) => {
            if created {
                unlink_if_same(&c, fd);
            }
            // SAFETY: fd was opened above and is not shared with anyone yet.
            unsafe { libc::close(fd) };
            Err(e)
        }
    }
}

/// open(2), retrying without O_NOATIME when that is refused (it is only for the file's owner).
fn sys_open(c: &CString, bits: i32, mode: u32, noatime: bool) -> Result<RawFd, OpenError> {
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::open(c.as_ptr(), bits, mode as libc::c_uint) };
    #[cfg(target_os = "linux")]
    if fd < 0 && noatime && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        // O_NOATIME is only for the file's owner (or CAP_FOWNER): retry without it.
        // SAFETY: as above.
        let fd = unsafe { libc::open(c.as_ptr(), bits & !libc::O_NOATIME, mode as libc::c_uint) };
        if fd < 0 {
            return Err(OpenError::last("open"));
        }
        return Ok(fd);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = noatime;
    if fd < 0 {
        return Err(OpenError::last("open"));
    }
    Ok(fd)
}

/// Opens with `bits` and says whether this call created the file, so a failed open can remove
/// what it made. O_CREAT without O_EXCL cannot tell, so it becomes: open the existing file, or
/// (ENOENT) create it exclusively, retrying when another process wins the race.
fn open_tracking_creation(
    c: &CString,
    bits: i32,
    mode: u32,
    noatime: bool,
) -> Result<(RawFd, bool), OpenError> {
    if bits & libc::O_CREAT == 0 {
        return Ok((sys_open(c, bits, mode, noatime)?, false));
    }
    if bits & libc::O_EXCL != 0 {
        return Ok((sys_open(c, bits, mode, noatime)?, true));
    }
    for _ in 0..8 {
        match sys_open(c, bits & !libc::O_CREAT, mode, noatime) {
            Ok(fd) => return Ok((fd, false)),
            Err(e) if e.errno == libc::ENOENT => {}
            Err(e) => return Err(e),
        }
        match sys_open(c, bits | libc::O_EXCL, mode, noatime) {
            Ok(fd) => return Ok((fd, true)),
            Err(e) if e.errno == libc::EEXIST => {}
            Err(e) => return Err(e),
        }
    }
    // Still racing (or a dangling symlink, which O_EXCL refuses to follow): plain O_CREAT,
    // creation unknown, so never unlinked.
    Ok((sys_open(c, bits, mode, noatime)?, false))
}

/// Unlinks `c` if it still names the file open on `fd` (not something put there meanwhile).
fn unlink_if_same(c: &CString, fd: RawFd) {
    let Ok(st) = align::fstat(fd) else { return };
    // SAFETY: lstat writes into the zeroed POD out parameter; `c` is NUL-terminated.
    let same = unsafe {
        let mut l: libc::stat = std::mem::zeroed();
        libc::lstat(c.as_ptr(), &mut l) == 0 && l.st_dev == st.st_dev && l.st_ino == st.st_ino
    };
    if same {
        // SAFETY: as above; a failure leaves the file, which is all we can do.
        unsafe { libc::unlink(c.as_ptr()) };
    }
}

/// The O_TRUNC held back at open, done on `fd` now. A descriptor opened read-only cannot be
/// ftruncated (EINVAL), though open(O_RDONLY | O_TRUNC) truncates (for a caller who may write the
/// file; node:fs opens it so): such a file is truncated with truncate(2) on its /proc/self/fd
/// link, which names this very file (not whatever its path names now) and where the kernel checks
/// the write permission, append-only/immutable, a read-only mount and a running executable as the
/// open's O_TRUNC does (was: the open failed EINVAL naming an ftruncate the caller never asked
/// for). No second descriptor: a writable one reopened from the link failed EMFILE at the
/// process's descriptor limit, where the kernel's open(O_TRUNC) succeeds (adversary-s21b).
fn truncate_held(fd: RawFd) -> Result<(), OpenError> {
    // SAFETY: fcntl(F_GETFL) takes only integers.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 || fl & libc::O_ACCMODE != libc::O_RDONLY {
        // SAFETY: ftruncate takes only integers.
        if unsafe { libc::ftruncate(fd, 0) } < 0 {
            return Err(OpenError::last("ftruncate"));
        }
        return Ok(());
    }
    let path = CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| OpenError {
        errno: libc::EINVAL,
        syscall: "truncate",
        message: "descriptor path contains a NUL byte".into(),
    })?;
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::truncate(path.as_ptr(), 0) } < 0 {
        return Err(OpenError::last("truncate"));
    }
    Ok(())
}

/// Checks the file, discovers its alignment and switches O_DIRECT on. `truncate`: O_TRUNC was
/// held back and is done here once O_DIRECT is on (regular files only, as O_TRUNC).
fn finish_open(fd: RawFd, direct: DirectMode, truncate: bool) -> Result<Opened, OpenError> {
    let st = align::fstat(fd).map_err(|_| OpenError::last("fstat"))?;
    let kind = st.st_mode & libc::S_IFMT;
    let is_block_device = kind == libc::S_IFBLK;
    if kind == libc::S_IFDIR {
        return Err(OpenError {
            errno: libc::EISDIR,
            syscall: "open",
            message: "is a directory".into(),
        });
    }
    let alignment = align::discover(fd).map_err(|_| OpenError::last("statx"))?;
    let magic = fs_magic(fd);
    let fs_type = fs_name(magic);
    let may_block = submission_may_block(kind, magic);
    #[cfg(target_os = "linux")]
    let size = if is_block_device {
        align::blk_size_bytes(fd).unwrap_or(0)
    } else {
        st.st_size as u64
    };
    #[cfg(not(target_os = "linux"))]
    let size = st.st_size as u64;
    let mut out = Opened {
        fd,
        direct: false,
        fallback_reason: String::new(),
        uncached: false,
        alignment,
        is_block_device,
        size,
        fs_type,
        may_block,
    };
    if direct == DirectMode::Off {
        return Ok(out);
    }
    if direct == DirectMode::Uncached {
        if let Err(e) = dontcache_works(fd) {
            let errno = e.raw_os_error().unwrap_or(libc::EOPNOTSUPP);
            return Err(OpenError {
                errno,
                syscall: "preadv2",
                message: format!(
                    "the {} filesystem has no uncached buffered I/O (RWF_DONTCACHE, Linux 6.14+; {}: {e})",
                    if out.fs_type.is_empty() { "underlying" } else { &out.fs_type },
                    crate::error::errno_name(errno)
                ),
            });
        }
        out.uncached = true;
        if truncate && kind == libc::S_IFREG {
            truncate_held(fd)?;
            out.size = 0;
        }
        return Ok(out);
    }
    // ext4 accepts O_DIRECT but does buffered I/O behind the flag where it journals the file's
    // data: refuse the flag there as a filesystem that has no direct I/O would.
    let enabled = match journals_data(fd, magic, &st, &out.alignment) {
        Some(why) => Err((libc::EINVAL, why)),
        None => enable_direct(fd).map_err(|e| {
            let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
            (
                errno,
                format!(
                    "the {} filesystem refused O_DIRECT ({}: {})",
                    if out.fs_type.is_empty() {
                        "underlying"
                    } else {
                        &out.fs_type
                    },
                    crate::error::errno_name(errno),
                    crate::error::errno_message(errno)
                ),
            )
        }),
    };
    match enabled {
        Ok(()) => {
            out.direct = true;
            if truncate && kind == libc::S_IFREG {
                truncate_held(fd)?;
                out.size = 0;
            }
            Ok(out)
        }
        Err((errno, reason)) => {
            if direct == DirectMode::Prefer {
                out.uncached = dontcache_works(fd).is_ok();
                out.fallback_reason = if out.uncached {
                    format!("{reason}; using uncached buffered I/O (RWF_DONTCACHE)")
                } else {
                    reason
                };
                Ok(out)
            } else {
                Err(OpenError {
                    errno,
                    syscall: "fcntl",
                    message: reason,
                })
            }
        }
    }
}

/// Why O_DIRECT on `fd` would be buffered behind the flag, if ext4 journals this file's data
/// (mounted `data=journal`, or the inode's journal-data flag, `chattr +j`): ext4 then accepts
/// O_DIRECT and quietly goes through the page cache. Only asked where statx reports no DIO
/// alignment, and only this known case is trusted: statx's zeros alone are not (qemu-user reports
/// zeros for files where O_DIRECT works).
#[cfg(target_os = "linux")]
fn journals_data(
    fd: RawFd,
    magic: Option<i64>,
    st: &libc::stat,
    alignment: &Alignment,
) -> Option<String> {
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    const FS_JOURNAL_DATA_FL: libc::c_int = 0x4000;
    if alignment.direct_supported || magic != Some(EXT4_SUPER_MAGIC) {
        return None;
    }
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int (the kernel's put_user of an int, whatever the
    // ioctl number's declared type) into `flags`, which lives across the call.
    let got = unsafe { libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut flags as *mut libc::c_int) };
    let why = if got == 0 && flags & FS_JOURNAL_DATA_FL != 0 {
        "the file has ext4's journal-data flag (chattr +j)"
    } else if mount_has_option(st.st_dev, "data=journal") {
        "ext4 is mounted data=journal"
    } else {
        return None;
    };
    Some(format!(
        "{why}: ext4 accepts O_DIRECT there but does buffered I/O behind it (statx reports no direct I/O)"
    ))
}

#[cfg(not(target_os = "linux"))]
fn journals_data(
    _fd: RawFd,
    _magic: Option<i64>,
    _st: &libc::stat,
    _alignment: &Alignment,
) -> Option<String> {
    None
}

/// Whether the superblock options of the filesystem on device `dev` (/proc/self/mountinfo)
/// include `option`.
#[cfg(target_os = "linux")]
fn mount_has_option(dev: libc::dev_t, option: &str) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    info.lines().any(|line| {
        let mut fields = line.split(' ');
        if fields.nth(2) != Some(want.as_str()) {
            return false;
        }
        // After the optional fields: "- fstype source super_options".
        let mut rest = line.split(" - ").nth(1).unwrap_or("").split(' ');
        rest.nth(2)
            .is_some_and(|opts| opts.split(',').any(|o| o == option))
    })
}

#[cfg(target_os = "linux")]
fn enable_direct(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL take and return plain integers.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(fd, libc::F_SETFL, fl | libc::O_DIRECT) < 0 {
            return Err(io::Error::last_os_error());
        }
        // Some kernels silently ignore flags they cannot set: check it stuck.
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || fl & libc::O_DIRECT == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
    }
    Ok(())
}

#[cfg(target_os = "macos")]
fn enable_direct(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_NOCACHE takes an integer flag.
    if unsafe { libc::fcntl(fd, libc::F_NOCACHE, 1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn enable_direct(_fd: RawFd) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// Whether `fd`'s filesystem takes RWF_DONTCACHE (uncached buffered I/O, Linux 6.14+): a
/// one-byte preadv2 with the flag (the kernel checks the flags before it reads; a write-only
/// descriptor is reopened read-only through /proc for the check).
#[cfg(target_os = "linux")]
pub fn dontcache_works(fd: RawFd) -> io::Result<()> {
    let try_read = |fd: RawFd| -> io::Result<()> {
        let mut b = [0u8; 1];
        let iov = libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        // SAFETY: one iovec over our local byte.
        let r = unsafe { crate::sys::preadv2(fd, &iov, 1, 0, libc::RWF_DONTCACHE) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    match try_read(fd) {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
            let p = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
            // SAFETY: a valid path; the descriptor is closed below.
            let r = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if r < 0 {
                return Err(e);
            }
            let out = try_read(r);
            // SAFETY: closing the descriptor opened above.
            unsafe { libc::close(r) };
            out
        }
        other => other,
    }
}

#[cfg(not(target_os = "linux"))]
pub fn dontcache_works(_fd: RawFd) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// Turns the page cache off behind buffered I/O on a `prefer` fallback (POSIX_FADV_DONTNEED).
pub fn drop_cache_range(fd: RawFd, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    // SAFETY: posix_fadvise takes only integers; failures are harmless and ignored.
    unsafe {
        libc::posix_fadvise(
            fd,
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (fd, offset, len);
}

/// The filesystem magic number of an open file (`statfs.f_type`), None when unknown.
pub fn fs_magic(fd: RawFd) -> Option<i64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: fstatfs writes into the zeroed POD out parameter.
        unsafe {
            let mut s: libc::statfs = std::mem::zeroed();
            (libc::fstatfs(fd, &mut s) == 0).then_some(s.f_type as i64)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        None
    }
}

/// Filesystems whose I/O waits on something outside this machine's block layer (a user-space
/// daemon, a server, a cluster lock), so that even submitting a request can sleep: FUSE (once
/// the connection's `max_background` requests are out, `fuse_get_req` sleeps in the submitter),
/// NFS, CIFS/SMB, 9p, Ceph, AFS, Coda, OCFS2, GFS2, Lustre. And the kernel's pseudo
/// filesystems, whose regular files are served by code that may wait for an event (/proc/kmsg
/// until the kernel logs, tracefs's trace_pipe until a trace event, sysfs attributes that ask a
/// device): procfs, sysfs, tracefs, debugfs.
const BLOCKING_FS: &[i64] = &[
    0x65735546, // FUSE_SUPER_MAGIC
    0x6969,     // NFS_SUPER_MAGIC
    0xFF534D42, // CIFS_SUPER_MAGIC
    0xFE534D42, // SMB2_SUPER_MAGIC
    0x517B,     // SMB_SUPER_MAGIC
    0x01021997, // V9FS_MAGIC
    0x00C36400, // CEPH_SUPER_MAGIC
    0x6B414653, // AFS_FS_MAGIC
    0x5346414F, // AFS_SUPER_MAGIC
    0x73757245, // CODA_SUPER_MAGIC
    0x7461636F, // OCFS2_SUPER_MAGIC
    0x01161970, // GFS2_MAGIC
    0x0BD00BD0, // LUSTRE_SUPER_MAGIC
    0x9fa0,     // PROC_SUPER_MAGIC
    0x62656572, // SYSFS_MAGIC
    0x74726163, // TRACEFS_MAGIC
    0x64626720, // DEBUGFS_MAGIC
];

/// Whether submitting I/O on a file (its `st_mode & S_IFMT` and filesystem magic) may sleep in
/// the submitting thread: pipes, FIFOs, sockets and character devices (a read waits for a
/// writer), and files on the filesystems of [`BLOCKING_FS`].
pub fn submission_may_block(file_kind: libc::mode_t, magic: Option<i64>) -> bool {
    matches!(file_kind, libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR)
        || magic.is_some_and(|m| BLOCKING_FS.contains(&m))
}

/// The filesystem type name of an open file ("ext4", "tmpfs", ...), or "" when unknown.
pub fn fs_type_name(fd: RawFd) -> String {
    fs_name(fs_magic(fd))
}

/// The filesystem type name for a statfs magic number (see `fs_type_name`).
fn fs_name(magic: Option<i64>) -> String {
    #[cfg(target_os = "linux")]
    {
        let Some(magic) = magic else {
            return String::new();
        };
        let name = match magic {
            0xEF53 => "ext4",
            0x01021994 => "tmpfs",
            0x858458f6 => "ramfs",
            0x58465342 => "xfs",
            0x9123683E => "btrfs",
            0x794c7630 => "overlayfs",
            0x65735546 => "fuse",
            0x6969 => "nfs",
            0xFF534D42 | 0xFE534D42 => "cifs",
            0x2011BAB0 => "exfat",
            0x4d44 => "vfat",
            0xF2F52010 => "f2fs",
            0x2FC12FC1 => "zfs",
            0x62656572 => "sysfs",
            0x9fa0 => "proc",
            0x74726163 => "tracefs",
            0x64626720 => "debugfs",
            0x62646576 | 0x1373 => "devtmpfs",
            _ => return format!("0x{magic:x}"),
        };
        name.to_string()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = magic;
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_fs() {
        assert!(parse_flags("r").unwrap().readable);
        assert!(!parse_flags("r").unwrap().writable);
        assert!(parse_flags("w+").unwrap().readable);
        assert!(parse_flags("a").unwrap_err().contains("append"));
        assert!(parse_flags("q").unwrap_err().contains("unknown flag"));
    }

    #[test]
    fn numeric_flags_as_fs_constants() {
        let rw_creat = parse_flags(&(libc::O_RDWR | libc::O_CREAT).to_string()).unwrap();
        assert!(rw_creat.readable && rw_creat.writable);
        assert_eq!(
            rw_creat.bits & libc::O_TRUNC,
            0,
            "no truncation unless asked"
        );
        assert_ne!(rw_creat.bits & libc::O_CREAT, 0);
        let wo = parse_flags(&libc::O_WRONLY.to_string()).unwrap();
        assert!(!wo.readable && wo.writable);
        assert!(parse_flags(&(libc::O_WRONLY | libc::O_APPEND).to_string())
            .unwrap_err()
            .contains("O_APPEND"));
        assert!(
            parse_flags(&(libc::O_RDONLY | libc::O_DIRECTORY).to_string())
                .unwrap_err()
                .contains("O_DIRECTORY")
        );
        assert!(parse_flags("3").unwrap_err().contains("O_ACCMODE"));
        // O_DIRECT in the bits is dropped: the `direct` option decides.
        let d = parse_flags(&(libc::O_RDWR | libc::O_DIRECT).to_string()).unwrap();
        assert_eq!(d.bits & libc::O_DIRECT, 0);
    }

    #[test]
    fn opens_a_temp_file_with_o_direct() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let p = dir.path().join("f");
        let o = open_file(
            p.to_str().unwrap(),
            parse_flags("w+").unwrap(),
            DirectMode::Require,
            OpenOptions::default(),
        )
        .unwrap();
        assert!(o.direct);
        assert_eq!(o.size, 0);
        // SAFETY: closing the fd we just opened.
        unsafe { libc::close(o.fd) };
    }

    #[test]
    fn creation_is_tracked_and_w_still_truncates() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let p = dir.path().join("f");
        let c = CString::new(p.to_str().unwrap()).unwrap();
        let bits = libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC;
        let (fd, created) = open_tracking_creation(&c, bits, 0o644, false).unwrap();
        assert!(created);
        // SAFETY: closing the fd we just opened.
        unsafe { libc::close(fd) };
        let (fd, created) = open_tracking_creation(&c, bits, 0o644, false).unwrap();
        assert!(!created);
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        std::fs::write(&p, vec![1u8; 8192]).unwrap();
        let o = open_file(
            p.to_str().unwrap(),
            parse_flags("w").unwrap(),
            DirectMode::Require,
            OpenOptions::default(),
        )
        .unwrap();
        assert_eq!(o.size, 0);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        // SAFETY: as above.
        unsafe { libc::close(o.fd) };
    }

    #[test]
    fn missing_file_is_enoent() {
        let e = open_file(
            "/nonexistent/odirect",
            parse_flags("r").unwrap(),
            DirectMode::Require,
            OpenOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.errno, libc::ENOENT);
        assert_eq!(e.syscall, "open");
    }
}
