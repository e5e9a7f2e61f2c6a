//! What a driver is asked to do: an [`OpKind`] (the system call and its arguments) and, when it
//! is pushed, an [`OpRef`] (the caller's key and how to submit it).
//!
//! Both carry raw pointers into memory the caller owns. Whoever pushes an op (see
//! [`crate::io::Driver::push`], an `unsafe fn`) promises that the memory stays valid, and is not
//! touched by anyone else, until the op's completion has been reaped. The napi layer keeps that
//! promise by making the memory odirect-owned (an allocation the op record holds, or a bounce
//! buffer) from capture until the completion is reaped; Rust callers keep their buffers alive
//! until they have the completion.

use std::os::fd::RawFd;

/// One scatter/gather segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: a Segment is only a pointer value and a length; whoever dereferences it does so under
// the `Driver::push` / `register_buffers` contracts, which keep the memory valid.
unsafe impl Send for Segment {}
// SAFETY: as above; sharing the pointer value does not access the memory.
unsafe impl Sync for Segment {}

/// What to do.
#[derive(Debug, Clone)]
pub enum OpKind {
    /// pread into `ptr[..len]` at `offset`. `buf_index` selects a registered buffer (READ_FIXED).
    Read {
        fd: RawFd,
        ptr: *mut u8,
        len: usize,
        offset: u64,
        buf_index: Option<u16>,
    },
    /// pwrite from `ptr[..len]` at `offset`. `buf_index` selects a registered buffer (WRITE_FIXED).
    Write {
        fd: RawFd,
        ptr: *const u8,
        len: usize,
        offset: u64,
        buf_index: Option<u16>,
    },
    /// preadv into the segments at `offset`.
    Readv {
        fd: RawFd,
        segs: Vec<Segment>,
        offset: u64,
    },
    /// pwritev from the segments at `offset`.
    Writev {
        fd: RawFd,
        segs: Vec<Segment>,
        offset: u64,
    },
    /// fsync (or fdatasync when `datasync`).
    Fsync { fd: RawFd, datasync: bool },
    /// fallocate(fd, mode, offset, len).
    Fallocate {
        fd: RawFd,
        mode: i32,
        offset: u64,
        len: u64,
    },
    /// ftruncate(fd, len).
    Ftruncate { fd: RawFd, len: u64 },
    /// close(fd). After its completion the fd number may be reused.
    Close { fd: RawFd },
}

impl OpKind {
    /// A read or a write of data (plain or vectored): the ops that carry `RWF_*` flags and that
    /// io_uring may punt to its workers.
    pub fn is_rw(&self) -> bool {
        matches!(
            self,
            OpKind::Read { .. }
                | OpKind::Write { .. }
                | OpKind::Readv { .. }
                | OpKind::Writev { .. }
        )
    }

    /// Short name of the system call this op stands for (used in errors and debug logs).
    pub fn syscall(&self) -> &'static str {
        match self {
            OpKind::Read { .. } => "read",
            OpKind::Write { .. } => "write",
            OpKind::Readv { .. } => "readv",
            OpKind::Writev { .. } => "writev",
            OpKind::Fsync { datasync: true, .. } => "fdatasync",
            OpKind::Fsync { .. } => "fsync",
            OpKind::Fallocate { .. } => "fallocate",
            OpKind::Ftruncate { .. } => "ftruncate",
            OpKind::Close { .. } => "close",
        }
    }

    pub fn fd(&self) -> RawFd {
        match *self {
            OpKind::Read { fd, .. }
            | OpKind::Write { fd, .. }
            | OpKind::Readv { fd, .. }
            | OpKind::Writev { fd, .. }
            | OpKind::Fsync { fd, .. }
            | OpKind::Fallocate { fd, .. }
            | OpKind::Ftruncate { fd, .. }
            | OpKind::Close { fd } => fd,
        }
    }

    /// (offset, length) for data ops, for logs.
    pub fn range(&self) -> (u64, u64) {
        match self {
            OpKind::Read { len, offset, .. } | OpKind::Write { len, offset, .. } => {
                (*offset, *len as u64)
            }
            OpKind::Readv { segs, offset, .. } | OpKind::Writev { segs, offset, .. } => {
                (*offset, segs.iter().map(|s| s.len as u64).sum())
            }
            OpKind::Fallocate { offset, len, .. } => (*offset, *len),
            OpKind::Ftruncate { len, .. } => (*len, 0),
            _ => (0, 0),
        }
    }
}

/// An op as it is pushed to a driver: borrowed from the caller's record of it, which keeps the
/// memory alive (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct OpRef<'a> {
    /// Caller-chosen key, unique among the driver's ops in flight (below `1 << 63`); the
    /// completion carries it back, and `cancel` names the op by it.
    pub key: u64,
    pub kind: &'a OpKind,
    /// The iovec array of a Readv/Writev (the kernel reads it at submission or later, so it is
    /// the caller's, with the same lifetime as the buffers). Ignored for other ops.
    pub iov: Option<&'a [libc::iovec]>,
    /// Registered buffer index (io_uring READ_FIXED / WRITE_FIXED), for drivers whose
    /// `fixed_buffers()` is true.
    pub fixed: Option<u16>,
    /// preadv2/pwritev2 flags of a read or write (RWF_DSYNC, RWF_SYNC, RWF_ATOMIC,
    /// RWF_DONTCACHE...); 0 for a plain one.
    pub rw_flags: i32,
    /// Run through a kernel worker, never inline (io_uring IOSQE_ASYNC; see
    /// [`crate::io::Placement::Punt`]).
    pub punt: bool,
    /// Chained to the op pushed after it (io_uring IOSQE_IO_LINK): that one starts only after
    /// this one succeeded and is cancelled when it fails. For drivers whose `links()` is true.
    pub link: bool,
}

impl<'a> OpRef<'a> {
    /// A plain op: no iovec array, no registered buffer, no flags.
    pub fn new(key: u64, kind: &'a OpKind) -> OpRef<'a> {
        OpRef {
            key,
            kind,
            iov: None,
            fixed: None,
            rw_flags: 0,
            punt: false,
            link: false,
        }
    }
}
