//! Operations handed to a backend and the completions it hands back.
//!
//! An [`Op`] carries raw pointers into caller-owned memory. Whoever submits it
//! (see [`crate::io::Backend::submit`], an `unsafe fn`) promises that the
//! memory stays valid, and is not touched by anyone else, until the matching
//! [`Completion`] has been delivered to the completion sink. The napi layer
//! keeps that promise by holding a N-API reference to the JS ArrayBuffer in
//! the op's `token` and releasing it only when the completion reaches the JS
//! thread; Rust callers keep the buffer alive until they have the completion.

use std::os::fd::RawFd;
use std::time::Instant;

/// One scatter/gather segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: a Segment is only a pointer value and a length; whoever dereferences it does so under
// the `Backend::submit` / `register_buffers` contracts, which keep the memory valid.
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

/// An operation with the caller's identifiers.
#[derive(Debug)]
pub struct Op {
    /// Caller-chosen id, unique among ops in flight on one backend. Used for cancellation.
    pub id: u64,
    /// Opaque caller data handed back untouched in the completion (the napi layer stores the
    /// N-API reference that keeps the JS buffer alive here).
    pub token: usize,
    pub kind: OpKind,
    /// When the op was submitted (for latency).
    pub submitted: Instant,
    /// preadv2/pwritev2 flags of a read or write (RWF_DSYNC, RWF_SYNC, RWF_ATOMIC,
    /// RWF_DONTCACHE...); 0 for a plain one.
    pub rw_flags: i32,
}

// SAFETY: an Op only carries raw pointers whose validity the submitter guarantees until the
// completion is delivered (the contract of `Backend::submit`); moving the pointer values to the
// backend's thread does not access the memory.
unsafe impl Send for Op {}

impl Op {
    pub fn new(id: u64, token: usize, kind: OpKind) -> Op {
        Op {
            id,
            token,
            kind,
            submitted: Instant::now(),
            rw_flags: 0,
        }
    }
}

/// The outcome of one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub id: u64,
    pub token: usize,
    /// Bytes transferred (or 0) when >= 0; a negated errno when < 0.
    pub result: i64,
    /// Time from submission to completion, in nanoseconds.
    pub latency_ns: u64,
}

/// Where a backend delivers completions, in batches, from its own thread.
pub type Sink = std::sync::Arc<dyn Fn(Vec<Completion>) + Send + Sync>;
