//! From a JS view to memory the kernel may use, and back.
//!
//! An op's memory is odirect-owned from capture until its completion is reaped: either the
//! view's own bytes when they lie in an odirect allocation ([`Mem::Owned`], kept alive by the
//! op's `Arc`), or a bounce buffer the op owns ([`Mem::Bounce`]): a write's bytes are copied in
//! at capture, a read's are copied back into the view at completion if the view still has the
//! room ([`copy_back`]; else the op settles with [`RESULT_DETACHED`]).

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use napi::sys;
use odirect_core::buf::AlignedBuf;
use odirect_core::op::{OpKind, Segment};

use crate::memory::{self, Alloc};
use crate::status::{check, report};

/// Result code for a bounced read whose destination was detached or shrunk before copy-back.
pub const RESULT_DETACHED: f64 = -1_000_001.0;

/// One segment of an op's memory.
pub enum Mem {
    /// odirect-owned memory (kept allocated by this reference) and the segment's length.
    Owned(#[allow(dead_code)] Arc<Alloc>, usize),
    /// A bounce buffer and the segment's length; for reads, where to copy the bytes back (a
    /// reference to the JS view and the offset in it).
    Bounce(AlignedBuf, usize, Option<(sys::napi_ref, usize)>),
}

/// All the memory of one op. Most ops have one segment, kept inline: no allocation per op.
pub enum Mems {
    None,
    One(Mem),
    Many(Vec<Mem>),
}

impl Mems {
    pub fn as_slice(&self) -> &[Mem] {
        match self {
            Mems::None => &[],
            Mems::One(m) => std::slice::from_ref(m),
            Mems::Many(v) => v,
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [Mem] {
        match self {
            Mems::None => &mut [],
            Mems::One(m) => std::slice::from_mut(m),
            Mems::Many(v) => v,
        }
    }
}

impl IntoIterator for Mems {
    type Item = Mem;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Mem>, std::vec::IntoIter<Mem>>;

    fn into_iter(self) -> Self::IntoIter {
        let (one, many) = match self {
            Mems::None => (None, Vec::new()),
            Mems::One(m) => (Some(m), Vec::new()),
            Mems::Many(v) => (None, v),
        };
        one.into_iter().chain(many)
    }
}

/// One captured segment: where the kernel reads/writes, and what keeps that memory alive.
pub struct Seg {
    pub ptr: *mut u8,
    pub len: usize,
    pub mem: Mem,
    /// Start of the odirect allocation the bytes lie in (None: bounced, or no bytes at all).
    pub owner: Option<usize>,
}

/// Why an op could not be captured (returned to JS as a negative number).
pub enum CaptureError {
    Detached,
    NotView,
    UnknownKind,
    NoMemory,
    Closed,
    NoBackend,
}

impl CaptureError {
    pub fn code(&self) -> f64 {
        use crate::CaptureCode as C;
        (match self {
            CaptureError::Detached => C::Detached,
            CaptureError::NotView => C::NotView,
            CaptureError::UnknownKind => C::UnknownKind,
            CaptureError::NoMemory => C::NoMemory,
            CaptureError::Closed => C::Closed,
            CaptureError::NoBackend => C::NoBackend,
        }) as i32 as f64
    }
}

fn from_view_err(e: i32) -> CaptureError {
    match e {
        memory::TOO_SHORT => CaptureError::Detached,
        memory::UNKNOWN_KIND => CaptureError::UnknownKind,
        _ => CaptureError::NotView,
    }
}

/// Captures `[offset, offset + length)` of the JS view `v` for an op.
///
/// # Safety
/// `env` and `v` must be live handles of the current N-API call.
pub unsafe fn capture(
    env: sys::napi_env,
    v: sys::napi_value,
    offset: usize,
    length: usize,
    mem_align: usize,
    write: bool,
) -> Result<Seg, CaptureError> {
    // SAFETY: forwarded contract.
    let view = unsafe { memory::view(env, v) }.map_err(from_view_err)?;
    let end = offset.checked_add(length).ok_or(CaptureError::Detached)?;
    if view.len < end {
        return Err(CaptureError::Detached);
    }
    if length == 0 {
        // No bytes to move: an empty view's ArrayBuffer may have no memory at all (a null data
        // pointer, as Buffer.alloc(0) and new Uint8Array(0) have), which is not a detached one
        // (that is refused above when the op wanted bytes of it, and by the argument checks in
        // JS). The kernel gets a zero-length segment at an aligned address we own (an iovec's
        // base is never dereferenced for 0 bytes, but O_DIRECT alignment checks may look at it).
        let mut b = AlignedBuf::try_new_with(0, mem_align.max(4096), false)
            .ok_or(CaptureError::NoMemory)?;
        return Ok(Seg {
            ptr: b.as_mut_ptr(),
            len: 0,
            mem: Mem::Bounce(b, 0, None),
            owner: None,
        });
    }
    if view.ptr.is_null() {
        return Err(CaptureError::Detached);
    }
    let p = view.ptr as usize + offset;
    if mem_align > 0 && p.is_multiple_of(mem_align) {
        if let Some(a) = memory::lookup(p, length) {
            let start = a.ptr() as usize;
            return Ok(Seg {
                ptr: p as *mut u8,
                len: length,
                mem: Mem::Owned(a, length),
                owner: Some(start),
            });
        }
    }
    // Not odirect's memory (or not aligned): the kernel gets a bounce buffer we own. Not zeroed
    // (it may hold a freed block's bytes): a write copies all of it in, a read copies back only
    // the bytes the kernel read.
    let mut b = AlignedBuf::try_new_with(length, mem_align.max(4096), false)
        .ok_or(CaptureError::NoMemory)?;
    let ptr = b.as_mut_ptr();
    let back = if write {
        // SAFETY: view.ptr + offset .. + length lies inside the view (checked above) and
        // b has at least `length` bytes; no JS runs during the copy.
        unsafe { ptr::copy_nonoverlapping(p as *const u8, ptr, length) };
        None
    } else {
        let mut r = ptr::null_mut();
        // No reference, no way back to the view: refused as a capture error.
        // SAFETY: v is a live object handle; the reference is deleted on completion.
        unsafe { check!(napi_create_reference(env, v, 1, &mut r)) }
            .map_err(|_| CaptureError::NotView)?;
        Some((r, offset))
    };
    Ok(Seg {
        ptr,
        len: length,
        mem: Mem::Bounce(b, length, back),
        owner: None,
    })
}

/// Captures every `(view, length)` whole, or none (what was taken is released).
///
/// # Safety
/// `env` and every value must be live handles of the current N-API call.
pub unsafe fn capture_all(
    env: sys::napi_env,
    views: impl Iterator<Item = (sys::napi_value, usize)>,
    mem_align: usize,
    write: bool,
) -> Result<Vec<Seg>, CaptureError> {
    let mut segs = Vec::with_capacity(views.size_hint().0);
    for (v, len) in views {
        // SAFETY: forwarded contract.
        match unsafe { capture(env, v, 0, len, mem_align, write) } {
            Ok(s) => segs.push(s),
            Err(e) => {
                // SAFETY: forwarded contract.
                unsafe { release(env, segs.into_iter().map(|s| s.mem)) };
                return Err(e);
            }
        }
    }
    Ok(segs)
}

/// The read or write of one captured segment at `position` (with io_uring's fixed-buffer index
/// when its memory is registered), its memory, and whether it was bounced (0 or 1).
pub fn single(
    write: bool,
    fd: i32,
    seg: Seg,
    position: u64,
    fixed: Option<u16>,
) -> (OpKind, Mem, u32) {
    let bounced = (seg.owner.is_none() && seg.len > 0) as u32;
    let op = if write {
        OpKind::Write {
            fd,
            ptr: seg.ptr,
            len: seg.len,
            offset: position,
            buf_index: fixed,
        }
    } else {
        OpKind::Read {
            fd,
            ptr: seg.ptr,
            len: seg.len,
            offset: position,
            buf_index: fixed,
        }
    };
    (op, seg.mem, bounced)
}

/// The readv or writev of captured segments at `position`: the op, its iovec array (which must
/// live as long as the op), its memory, and whether any segment was bounced (0 or 1).
pub fn vectored(
    write: bool,
    fd: i32,
    segs: Vec<Seg>,
    position: u64,
) -> (OpKind, Box<[libc::iovec]>, Mems, u32) {
    let bounced = segs.iter().any(|s| s.owner.is_none() && s.len > 0) as u32;
    let iov: Box<[libc::iovec]> = segs
        .iter()
        .map(|s| libc::iovec {
            iov_base: s.ptr as *mut c_void,
            iov_len: s.len,
        })
        .collect();
    let sv: Vec<Segment> = segs
        .iter()
        .map(|s| Segment {
            ptr: s.ptr,
            len: s.len,
        })
        .collect();
    let op = if write {
        OpKind::Writev {
            fd,
            segs: sv,
            offset: position,
        }
    } else {
        OpKind::Readv {
            fd,
            segs: sv,
            offset: position,
        }
    };
    let mem = Mems::Many(segs.into_iter().map(|s| s.mem).collect());
    (op, iov, mem, bounced)
}

/// After a read of `result` bytes: copies each bounce buffer's bytes back into its view, if the
/// view still has the room. True when one did not (detached or shrunk: the op settles with
/// [`RESULT_DETACHED`]); a view whose reference cannot be read back counts as detached.
///
/// # Safety
/// On the JS thread of `env`, which created the references in `mem`.
pub unsafe fn copy_back(env: sys::napi_env, mem: &[Mem], result: i64) -> bool {
    if result <= 0 {
        return false;
    }
    let mut detached = false;
    let mut left = result as usize;
    for m in mem {
        let (n, back) = match m {
            Mem::Owned(_, len) => (left.min(*len), None),
            Mem::Bounce(b, len, back) => (left.min(*len), back.map(|x| (b, x))),
        };
        if let Some((b, (r, off))) = back {
            if n > 0 {
                let mut val = ptr::null_mut();
                // SAFETY: JS thread, live env; r is our reference; the view is re-measured now
                // and written only within its current length.
                unsafe {
                    let got = check!(napi_get_reference_value(env, r, &mut val));
                    let view = if got.is_ok() && !val.is_null() {
                        memory::view(env, val).ok()
                    } else {
                        None
                    };
                    match view {
                        Some(v) if !v.ptr.is_null() && v.len >= off + n => {
                            ptr::copy_nonoverlapping(b.as_ptr(), v.ptr.add(off), n)
                        }
                        _ => detached = true,
                    }
                }
            }
        }
        left -= n;
    }
    detached
}

/// Lets go of an op's memory: bounce buffers are freed and their views' references deleted,
/// owned memory is released to its allocation.
///
/// # Safety
/// On the JS thread of `env`, the env `mem`'s references were created on.
pub unsafe fn release(env: sys::napi_env, mem: impl IntoIterator<Item = Mem>) {
    for mut m in mem {
        // SAFETY: forwarded contract.
        unsafe { forget_view(env, &mut m) };
    }
}

/// Deletes the reference a bounced read keeps to its view (once; the memory itself stays).
/// Used for ops whose memory outlives the environment (see `engine::abandon_the_rest`).
///
/// # Safety
/// On the JS thread of `env`, the env `m`'s reference was created on.
pub unsafe fn forget_view(env: sys::napi_env, m: &mut Mem) {
    if let Mem::Bounce(_, _, back) = m {
        if let Some((r, _)) = back.take() {
            // Called from completions and from teardown, neither of which can report: a
            // reference that cannot be deleted leaks its view.
            // SAFETY: r was created on env (forwarded contract); deleted once (taken).
            unsafe { report!(napi_delete_reference(env, r)) };
        }
    }
}
