//! errno -> code name, message and a hint that says how to fix it.

/// Symbolic name of an errno value ("EIO"), or "E<n>" when unknown.
pub fn errno_name(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    if e == nix::errno::Errno::UnknownErrno {
        format!("E{errno}")
    } else {
        format!("{e:?}")
    }
}

/// The C library's message for an errno value.
pub fn errno_message(errno: i32) -> String {
    nix::errno::Errno::from_raw(errno).desc().to_string()
}

/// The C library's message for an `io::Error` from a system call, without the " (os error N)"
/// suffix Rust's `Display` adds (user-facing messages name the errno code themselves).
pub fn os_message(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_message(n),
        None => e.to_string(),
    }
}

/// What a user can do about this errno from this syscall.
pub fn hint(errno: i32, syscall: &str) -> &'static str {
    match (errno, syscall) {
        (libc::EINVAL, "read" | "write" | "readv" | "writev") => {
            "the kernel refused the transfer: for O_DIRECT the buffer address, length and file position must be multiples of the file's alignment (fh.alignment); use fh.alloc() for buffers and aligned positions"
        }
        (libc::EINVAL, "fcntl" | "open") => {
            "this filesystem does not support O_DIRECT (ramfs, some FUSE/network filesystems); open with { direct: 'prefer' } to fall back to buffered I/O, or put the file on ext4, xfs, btrfs or tmpfs"
        }
        (libc::EINVAL, "fallocate") => "this filesystem does not support this fallocate mode",
        (libc::ENOSPC, _) => {
            "the filesystem is full: free space or write elsewhere; data written before this error is intact"
        }
        (libc::EDQUOT, _) => "a disk quota is exhausted: raise the quota or free space",
        (libc::EIO, _) => {
            "the device reported an I/O error (bad sector, failing disk, lost network storage): check dmesg; the data in this range may be unreadable"
        }
        (libc::EBADF, _) => {
            "the file descriptor is not open for this: check the open flags ('r' is read-only, 'w' write-only; use 'r+' or 'w+' for both)"
        }
        (libc::EPERM | libc::EACCES, "open") => {
            "permission denied: check the file's mode and owner, or run with the needed rights"
        }
        (libc::EPERM | libc::EACCES, _) => {
            "the operation is not permitted: a seccomp profile, a read-only or immutable file, or missing privileges"
        }
        (libc::ENOENT, _) => "no such file or directory: check the path, or open with 'w' to create it",
        (libc::EEXIST, _) => "the file exists and the flags say exclusive create ('wx'): remove it or open with 'w' or 'r+'",
        (libc::EISDIR, _) => "the path is a directory: give a file path",
        (libc::EROFS, _) => "the filesystem is mounted read-only",
        (libc::EFBIG, _) => "the file would grow past the filesystem's maximum file size",
        (libc::ENOMEM, _) => {
            "out of memory, or RLIMIT_MEMLOCK too low for pinned memory: raise it with `ulimit -l` / prlimit --memlock"
        }
        (libc::ECANCELED, _) => {
            "the operation was cancelled before it completed: by an AbortSignal or close(), or (a \
             linked chain: writeMany with datasync on io_uring) because an op before it in the \
             chain failed or moved fewer bytes than asked; see error.results"
        }
        (libc::EOPNOTSUPP, _) => "this filesystem does not support the operation",
        (libc::EAGAIN, _) => "a kernel resource is exhausted for now; retry later or lower the queue depth",
        (libc::EMFILE | libc::ENFILE, _) => "too many open files: close handles or raise `ulimit -n`",
        (libc::ESHUTDOWN, _) => "the I/O engine was shut down (process or worker exiting)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hints() {
        assert_eq!(errno_name(libc::EIO), "EIO");
        assert_eq!(errno_name(libc::ENOSPC), "ENOSPC");
        assert!(hint(libc::EINVAL, "read").contains("alignment"));
        assert!(hint(libc::ENOSPC, "write").contains("full"));
        assert!(!errno_message(libc::EIO).is_empty());
    }
}
