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

/// Hands a read stream's completed chunk over to its consumer as a new ArrayBuffer over the same
/// odirect memory, detaching `ab` (the ArrayBuffer the read went into), and makes V8 count the
/// chunk `1 + pressure` times towards its young-generation trigger until its next young
/// collection. Returns the new ArrayBuffer, or `null` when `ab` is not a whole odirect
/// allocation or the runtime refuses (the caller then hands over `ab` itself).
///
/// Why: V8 collects its young generation when its young ArrayBuffers hold 32 MiB
/// (`Heap::AllocateExternalBackingStore`: `2 * DefaultMaxSemiSpaceSize()`, a constant that
/// `--max-semi-space-size` does not move), so a default-mode read stream, whose consumer drops
/// each chunk, kept about 32 MiB of dropped chunks before they were freed. Counting a chunk more
/// makes that collection come sooner; but then the chunks still being read (ArrayBuffers since
/// their allocation) survived two collections and were promoted to the old generation, whose
/// garbage only a full collection frees (measured: 63-107 MiB). Here the ArrayBuffer that lived
/// through the read is detached at hand-over, which drops its reference to the memory at once
/// whatever generation it reached; the consumer gets a new, young one: only what consumers hold
/// or dropped is young, and what they drop goes at the next young collection.
#[napi(ts_return_type = "ArrayBuffer | null")]
pub fn hand_over<'e>(env: &'e Env, ab: Unknown, pressure: f64) -> napi::Result<Unknown<'e>> {
    let raw = env.raw();
    // SAFETY: env and ab are live handles of this call.
    let v = match unsafe { hand_over_raw(raw, ab.raw(), pressure) } {
        Some(v) => v,
        None => {
            let mut n = std::ptr::null_mut();
            // SAFETY: live env.
            if unsafe { napi::sys::napi_get_null(raw, &mut n) } != napi::sys::Status::napi_ok {
                return Err(napi::Error::from_reason("napi_get_null failed"));
            }
            n
        }
    };
    // SAFETY: v is a live value created on env in this call.
    Ok(unsafe { Unknown::from_raw_unchecked(raw, v) })
}

/// # Safety
/// `raw` and `ab` must be live handles of the current call.
unsafe fn hand_over_raw(
    raw: napi::sys::napi_env,
    ab: napi::sys::napi_value,
    pressure: f64,
) -> Option<napi::sys::napi_value> {
    let mut is = false;
    // SAFETY: env and ab are live handles of this call.
    if unsafe { napi::sys::napi_is_arraybuffer(raw, ab, &mut is) } != napi::sys::Status::napi_ok
        || !is
    {
        return None;
    }
    // SAFETY: as above.
    let v = unsafe { memory::view(raw, ab) }.ok()?;
    let alloc = memory::lookup(v.ptr as usize, v.len)?;
    if v.ptr != alloc.ptr() || v.len == 0 {
        return None;
    }
    // SAFETY: env is this call's; v.len <= alloc.len() (lookup found the range inside it).
    let fresh = unsafe { memory::wrap_again(raw, &alloc, v.len) }?;
    // SAFETY: env and ab are live; a refusal (not detachable) leaves `ab` as it was.
    if unsafe { napi::sys::napi_detach_arraybuffer(raw, ab) } != napi::sys::Status::napi_ok {
        let mut info = std::ptr::null();
        // SAFETY: consumes the error info of the refused call; `fresh` is garbage now.
        let _ = unsafe { napi::sys::napi_get_last_error_info(raw, &mut info) };
        return None;
    }
    // At most 8 more counts (an A/B knob; 2 already starts V8's incremental marking).
    let mut left = if pressure.is_finite() && pressure > 0.0 {
        (pressure.min(8.0) * v.len as f64) as usize
    } else {
        0
    };
    while left > 0 {
        let n = left.min(v.len);
        // Garbage at once (its handle goes with this call): young external bytes until the next
        // young collection frees it, holding a reference to the memory until then.
        // SAFETY: env is this call's; n <= v.len <= alloc.len().
        let _ = unsafe { memory::wrap_again(raw, &alloc, n) };
        left -= n;
    }
    // SAFETY: env is this call's.
    unsafe { memory::check_young(raw) };
    Some(fresh)
}
