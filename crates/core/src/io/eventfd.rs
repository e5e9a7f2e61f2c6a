//! The eventfd operations every wake-up path shares (the pool's workers, the JS thread's ring and
//! aio context, the reaper thread): make one, signal it, reset it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A new close-on-exec eventfd, non-blocking unless `blocking`.
pub fn new(blocking: bool) -> io::Result<OwnedFd> {
    let flags = libc::EFD_CLOEXEC | if blocking { 0 } else { libc::EFD_NONBLOCK };
    // SAFETY: eventfd has no memory preconditions; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `fd` readable. The result is ignored on purpose: EAGAIN means the counter is already
/// non-zero, i.e. a wake-up is pending anyway.
pub fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local to an eventfd.
    unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
}

/// Resets a non-blocking eventfd (returns at once when it was not signalled).
pub fn drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live local from a non-blocking eventfd.
    unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
}
