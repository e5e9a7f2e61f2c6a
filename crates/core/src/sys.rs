//! System calls that the libc wrappers cannot be trusted to have: `preadv2` / `pwritev2` came
//! with glibc 2.26 (and are missing from older musl), while the shipped Linux binaries are
//! linked against glibc 2.17 (scripts/check-glibc.cjs refuses any newer symbol). They are made
//! with `syscall(2)` instead, as glibc itself makes them; the kernel has had both since 4.6 and
//! answers ENOSYS (or EOPNOTSUPP for an unknown flag) where it has not.

/// `preadv2` / `pwritev2` (`nr`) through `syscall(2)`: bytes moved, or -1 with errno set.
///
/// # Safety
/// `iov` must point to `iovcnt` iovecs whose memory is valid for the access `nr` makes (writes
/// for preadv2, reads for pwritev2) for the duration of the call.
#[cfg(target_os = "linux")]
unsafe fn rw2(
    nr: libc::c_long,
    fd: libc::c_int,
    iov: *const libc::iovec,
    iovcnt: libc::c_int,
    offset: libc::off_t,
    flags: libc::c_int,
) -> isize {
    // SAFETY: forwarded contract; the offset is split into the (low, high) pair the kernel takes
    // (pos_from_hilo: on 64-bit kernels the high half is ignored), as glibc does.
    unsafe {
        libc::syscall(
            nr,
            fd as libc::c_long,
            iov,
            iovcnt as libc::c_long,
            offset as libc::c_long,
            ((offset as u64) >> 32) as libc::c_long,
            flags as libc::c_long,
        ) as isize
    }
}

/// `preadv2(2)`: bytes read, or -1 with errno set.
///
/// # Safety
/// `iov` must point to `iovcnt` iovecs whose memory is valid for writes during the call.
#[cfg(target_os = "linux")]
pub unsafe fn preadv2(
    fd: libc::c_int,
    iov: *const libc::iovec,
    iovcnt: libc::c_int,
    offset: libc::off_t,
    flags: libc::c_int,
) -> isize {
    // SAFETY: forwarded contract.
    unsafe { rw2(libc::SYS_preadv2, fd, iov, iovcnt, offset, flags) }
}

/// `pwritev2(2)`: bytes written, or -1 with errno set.
///
/// # Safety
/// `iov` must point to `iovcnt` iovecs whose memory is valid for reads during the call.
#[cfg(target_os = "linux")]
pub unsafe fn pwritev2(
    fd: libc::c_int,
    iov: *const libc::iovec,
    iovcnt: libc::c_int,
    offset: libc::off_t,
    flags: libc::c_int,
) -> isize {
    // SAFETY: forwarded contract.
    unsafe { rw2(libc::SYS_pwritev2, fd, iov, iovcnt, offset, flags) }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;

    #[test]
    fn preadv2_and_pwritev2_at_offsets() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0u8; 8192]).unwrap();
        let fd = f.as_raw_fd();
        let data = [7u8; 100];
        let iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: one iovec over a live local array.
        assert_eq!(unsafe { super::pwritev2(fd, &iov, 1, 5000, 0) }, 100);
        let mut back = [0u8; 101];
        let iov = libc::iovec {
            iov_base: back.as_mut_ptr() as *mut libc::c_void,
            iov_len: back.len(),
        };
        // SAFETY: as above, valid for writes.
        assert_eq!(unsafe { super::preadv2(fd, &iov, 1, 4999, 0) }, 101);
        assert_eq!(back[0], 0);
        assert!(back[1..].iter().all(|&b| b == 7));
    }
}
