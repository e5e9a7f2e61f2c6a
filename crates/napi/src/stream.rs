//! The write streams' copy of a source chunk into the aligned block the kernel will write.
//!
//! Why: a write stream gathers chunks of any size and alignment into aligned blocks, a copy on
//! the JS thread of every byte written. In a 512 MiB pass on the repository's VM that copy
//! (`TypedArray.prototype.set`, glibc's memmove) took a third of the process's CPU samples and ran
//! at 5-6 GB/s, while the same memmove in a loop ran at 20-39 GB/s: the block it writes to was
//! last touched by the device's DMA, and each of its cache lines is read from memory before it is
//! overwritten. Non-temporal stores write whole lines without reading them first (the device
//! reads the block from memory next anyway, not from this CPU's cache).

use napi::{Env, JsValue, Unknown};
use napi_derive::napi;

use crate::memory;

/// Below this many bytes the plain copy is used (the streaming stores' fence and set-up cost
/// more than the reads they save).
#[cfg(target_arch = "x86_64")]
const STREAM_MIN: usize = 64 << 10;

/// Copies `src` (any view) into `dst` (any view) at byte `at` of `dst`, with non-temporal stores
/// for a large copy on x86-64; returns the bytes copied (all of `src`), or -1 when a value is not
/// a view or `src` does not fit.
#[napi]
pub fn copy_into(env: Env, dst: Unknown, at: f64, src: Unknown) -> f64 {
    // SAFETY: env and the values are live handles of this call.
    let (d, s) = match unsafe {
        (
            memory::view(env.raw(), dst.raw()),
            memory::view(env.raw(), src.raw()),
        )
    } {
        (Ok(d), Ok(s)) => (d, s),
        _ => return -1.0,
    };
    if !(at >= 0.0 && at.fract() == 0.0) || s.len == 0 {
        return if s.len == 0 { 0.0 } else { -1.0 };
    }
    let at = at as usize;
    if d.ptr.is_null() || s.ptr.is_null() || at > d.len || d.len - at < s.len {
        return -1.0;
    }
    // SAFETY: both ranges lie inside live views of this call (checked just above), which JS
    // cannot free or detach while this synchronous call runs; `copy` handles overlap.
    unsafe { copy(d.ptr.add(at), s.ptr, s.len) };
    s.len as f64
}

/// # Safety
/// `dst` and `src` valid for `n` bytes (they may overlap).
unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let (d, s) = (dst as usize, src as usize);
        let apart = d.abs_diff(s) >= n;
        if n >= STREAM_MIN && apart {
            // SAFETY: forwarded contract; the ranges do not overlap.
            unsafe { copy_streaming(dst, src, n) };
            return;
        }
    }
    // SAFETY: forwarded contract (memmove semantics).
    unsafe { std::ptr::copy(src, dst, n) };
}

/// Non-temporal copy: the head up to a 16-byte boundary of `dst` and the tail by `ptr::copy`,
/// the middle 64 bytes at a time by SSE2 streaming stores (SSE2 is part of x86-64).
///
/// # Safety
/// `dst` and `src` valid for `n` bytes and not overlapping.
#[cfg(target_arch = "x86_64")]
unsafe fn copy_streaming(dst: *mut u8, src: *const u8, n: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    let head = (16 - (dst as usize & 15)) & 15;
    // SAFETY: head < 16 <= n bytes of both ranges.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, head) };
    let mut i = head;
    while i + 64 <= n {
        // SAFETY: [i, i + 64) is inside both ranges; dst + i is 16-byte aligned (head above);
        // unaligned loads from src.
        unsafe {
            let s = src.add(i) as *const __m128i;
            let d = dst.add(i) as *mut __m128i;
            let (a, b, c, e) = (
                _mm_loadu_si128(s),
                _mm_loadu_si128(s.add(1)),
                _mm_loadu_si128(s.add(2)),
                _mm_loadu_si128(s.add(3)),
            );
            _mm_stream_si128(d, a);
            _mm_stream_si128(d.add(1), b);
            _mm_stream_si128(d.add(2), c);
            _mm_stream_si128(d.add(3), e);
        }
        i += 64;
    }
    // SAFETY: the streaming stores are ordered before any later store (and before the block is
    // handed to the kernel); the tail [i, n) is inside both ranges.
    unsafe {
        _mm_sfence();
        std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), n - i);
    }
}
