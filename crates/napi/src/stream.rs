//! The write streams' copy of a source chunk into the aligned block the kernel will write, and
//! the streams' chains of writes (or reads) refilled at reap time (`Chain`); the read streams'
//! chunk hand-over.
//!
//! The copy, first.
//!
//! Why: a write stream gathers chunks of any size and alignment into aligned blocks, a copy on
//! the JS thread of every byte written. In a 512 MiB pass on the repository's VM that copy
//! (`TypedArray.prototype.set`, glibc's memmove) took a third of the process's CPU samples and ran
//! at 5-6 GB/s, while the same memmove in a loop ran at 20-39 GB/s: the block it writes to was
//! last touched by the device's DMA, and each of its cache lines is read from memory before it is
//! overwritten. Non-temporal stores write whole lines without reading them first (the device
//! reads the block from memory next anyway, not from this CPU's cache).

use std::collections::{HashMap, VecDeque};

use napi::{Env, JsValue, Unknown};
use napi_derive::napi;
use odirect_core::op::OpKind;

use crate::engine::Inner;
use crate::memory;
use crate::NativeEngine;

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
    let v = unsafe { hand_over_raw(raw, ab.raw(), pressure) };
    // SAFETY: as above; v, if any, was created on env in this call.
    unsafe { value_or_null(raw, v) }
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

/// Write streams with `transferChunks`: takes a source chunk's memory away from JS so that the
/// stream can write it in place (no copy into a block of its own). When `view` is a Uint8Array
/// over all of its ArrayBuffer (offset 0, same length, at least one byte), that ArrayBuffer is
/// the start of a live odirect allocation (`fh.alloc`, `allocAligned`, a read stream's chunk)
/// and its address is a multiple of `align`, the ArrayBuffer is detached (the caller's views of
/// it, all of them, now have no bytes) and a new ArrayBuffer over the same memory is returned,
/// for the stream alone. Anything else: `null`, and nothing changed (the stream copies the chunk).
///
/// Why it is safe whatever JS does: the caller can no longer read or write the memory (its
/// ArrayBuffer is detached; a runtime whose detach did not take is answered `null`); the
/// returned ArrayBuffer holds a reference to the allocation, and the write staged from it holds
/// another (`capture::Mem::Owned`) until its completion is reaped, so dropping either, a
/// collection, or the worker's end cannot free memory the kernel is reading.
#[napi(ts_return_type = "ArrayBuffer | null")]
pub fn take_over<'e>(env: &'e Env, view: Unknown, align: f64) -> napi::Result<Unknown<'e>> {
    let raw = env.raw();
    // SAFETY: env and view are live handles of this call.
    let v = unsafe { take_over_raw(raw, view.raw(), align) };
    // SAFETY: as above.
    unsafe { value_or_null(raw, v) }
}

/// # Safety
/// `raw` must be the live env of the current call; `v` a live value of it, if any.
unsafe fn value_or_null<'e>(
    raw: napi::sys::napi_env,
    v: Option<napi::sys::napi_value>,
) -> napi::Result<Unknown<'e>> {
    let v = match v {
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
    // SAFETY: v is a live value created on (or passed to) env in this call.
    Ok(unsafe { Unknown::from_raw_unchecked(raw, v) })
}

/// The ArrayBuffer under a Uint8Array `v` that spans all of it, and its data and length; `None`
/// for anything else (another kind of view, an offset, a shorter view, no bytes).
///
/// # Safety
/// `raw` and `v` must be live handles of the current call.
unsafe fn whole_uint8(
    raw: napi::sys::napi_env,
    v: napi::sys::napi_value,
) -> Option<(napi::sys::napi_value, usize, usize)> {
    use napi::sys;
    let mut is = false;
    // SAFETY (whole block): env and v are live; each call writes only its out-parameters.
    unsafe {
        if sys::napi_is_typedarray(raw, v, &mut is) != sys::Status::napi_ok || !is {
            return None;
        }
        let (mut ty, mut length, mut off) = (0, 0usize, 0usize);
        let mut data: *mut std::ffi::c_void = std::ptr::null_mut();
        let mut ab = std::ptr::null_mut();
        if sys::napi_get_typedarray_info(raw, v, &mut ty, &mut length, &mut data, &mut ab, &mut off)
            != sys::Status::napi_ok
            || ty != sys::TypedarrayType::uint8_array
            || off != 0
            || length == 0
            || data.is_null()
            || ab.is_null()
        {
            return None;
        }
        let mut abd: *mut std::ffi::c_void = std::ptr::null_mut();
        let mut abl = 0usize;
        if sys::napi_get_arraybuffer_info(raw, ab, &mut abd, &mut abl) != sys::Status::napi_ok
            || abd != data
            || abl != length
        {
            return None;
        }
        Some((ab, data as usize, length))
    }
}

/// # Safety
/// `raw` and `view` must be live handles of the current call.
unsafe fn take_over_raw(
    raw: napi::sys::napi_env,
    view: napi::sys::napi_value,
    align: f64,
) -> Option<napi::sys::napi_value> {
    use napi::sys;
    if !(align.is_finite() && align >= 1.0) {
        return None;
    }
    // SAFETY: forwarded contract.
    let (ab, ptr, len) = unsafe { whole_uint8(raw, view) }?;
    if !ptr.is_multiple_of(align as usize) {
        return None;
    }
    let alloc = memory::lookup(ptr, len)?;
    if alloc.ptr() as usize != ptr {
        return None;
    }
    // SAFETY: env is this call's; len <= alloc.len() (lookup found the range inside it).
    let fresh = unsafe { memory::wrap_again(raw, &alloc, len) }?;
    let mut gone = false;
    // SAFETY: env and ab are live; a refusal (not detachable) leaves `ab` as it was, and then
    // `fresh` is garbage (its reference to the allocation goes when it is collected).
    let detached = unsafe {
        sys::napi_detach_arraybuffer(raw, ab) == sys::Status::napi_ok
            && sys::napi_is_detached_arraybuffer(raw, ab, &mut gone) == sys::Status::napi_ok
    };
    if !detached || !gone {
        let mut info = std::ptr::null();
        // SAFETY: consumes the error info of a refused call, if any.
        let _ = unsafe { sys::napi_get_last_error_info(raw, &mut info) };
        return None;
    }
    COUNTS[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    COUNTS[1].fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
    Some(fresh)
}

/// [chunks taken over by [`take_over`], their bytes, buffers released by [`release_taken`],
/// write-stream blocks released by [`release_block`]], process-wide (tests: `transferStats`,
/// the first three; `releasedBlocks`, the last).
static COUNTS: [std::sync::atomic::AtomicU64; 4] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

/// Detaches an ArrayBuffer [`take_over`] returned, once the stream's write from it completed:
/// its reference to the allocation goes now (the runtime releases the backing store), not when
/// a collection finds it dead, so the memory returns to odirect's pool at once and the next
/// allocation (a read stream's next chunk, in a pipeline) takes it. False when `ab` is not an
/// ArrayBuffer over a whole odirect allocation, or the runtime refused (it then goes at a
/// collection, as any other).
#[napi]
pub fn release_taken(env: &Env, ab: Unknown) -> bool {
    detach_counted(env, ab, 2)
}

/// Detaches an ArrayBuffer over a whole odirect allocation that a write stream allocated as one
/// of its own blocks, once the stream is done with it (src/streams/core.ts RELEASE_BLOCKS): as
/// [`release_taken`], the memory goes back to odirect's pool at once (an op still in flight
/// holds its own reference), and the next stream takes it instead of new memory. Counted apart
/// from taken chunks (`releasedBlocks`).
#[napi]
pub fn release_block(env: &Env, ab: Unknown) -> bool {
    detach_counted(env, ab, 3)
}

/// Detaches `ab` if it is an ArrayBuffer over a whole odirect allocation; counts it in
/// `COUNTS[counter]`.
fn detach_counted(env: &Env, ab: Unknown, counter: usize) -> bool {
    use napi::sys;
    let raw = env.raw();
    let mut is = false;
    // SAFETY: env and ab are live handles of this call.
    if unsafe { sys::napi_is_arraybuffer(raw, ab.raw(), &mut is) } != sys::Status::napi_ok || !is {
        return false;
    }
    // SAFETY: as above.
    let Ok(v) = (unsafe { memory::view(raw, ab.raw()) }) else {
        return false;
    };
    match memory::lookup(v.ptr as usize, v.len) {
        Some(a) if a.ptr() == v.ptr && v.len > 0 => {}
        _ => return false,
    }
    // SAFETY: env and ab are live; detaching only takes the bytes from JS (an op in flight
    // holds its own reference to the allocation).
    if unsafe { sys::napi_detach_arraybuffer(raw, ab.raw()) } != sys::Status::napi_ok {
        let mut info = std::ptr::null();
        // SAFETY: consumes the error info of the refused call.
        let _ = unsafe { sys::napi_get_last_error_info(raw, &mut info) };
        return false;
    }
    COUNTS[counter].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    true
}

/// [chunks write streams took over (`transferChunks`), their bytes, taken buffers released at
/// their write's completion], process-wide (tests and diagnostics).
#[napi]
pub fn transfer_stats() -> Vec<f64> {
    COUNTS[..3]
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed) as f64)
        .collect()
}

/// Write streams' own blocks released at their end ([`release_block`]), process-wide (tests and
/// diagnostics).
#[napi]
pub fn released_blocks() -> f64 {
    COUNTS[3].load(std::sync::atomic::Ordering::Relaxed) as f64
}

/// Runs one young-generation collection of V8 now (Node, Deno; Bun's collector takes it as
/// allocation pressure): makes `bytes` worth of garbage external ArrayBuffers over `ab`'s
/// odirect memory (at most 256 of them), in a handle scope closed before V8's young check runs,
/// so that they are garbage at that check, and runs the check. Returns false when `ab` is not
/// odirect memory (nothing done).
///
/// Why: a read stream's dropped chunks are freed only after the young collection that finds
/// them dead *and* the finalizers it schedules (Node runs them from its event loop). The
/// per-chunk pressure of [`hand_over`] collects them in the middle of a burst of chunks, while
/// the consumer still uses the burst's: those wait for the next collection, and the stream's
/// next reads meanwhile take new memory (measured: 16 chunks alive for a stream of 6 in use,
/// readAhead 4). A stream that waits for its next read has nothing handed out left in use but
/// its consumer's last chunk, and the loop is idle: a collection there frees the burst before
/// the next reads need memory.
#[napi]
pub fn young_gc(env: &Env, ab: Unknown, bytes: f64) -> bool {
    let raw = env.raw();
    // SAFETY: env and ab are live handles of this call.
    let Ok(v) = (unsafe { memory::view(raw, ab.raw()) }) else {
        return false;
    };
    let Some(alloc) = memory::lookup(v.ptr as usize, v.len) else {
        return false;
    };
    let len = alloc.len();
    if len == 0 || !bytes.is_finite() || bytes <= 0.0 {
        return false;
    }
    let count = ((bytes / len as f64).ceil() as usize).min(256);
    let mut scope = std::ptr::null_mut();
    // SAFETY: live env; the scope is closed below, before the check.
    if unsafe { napi::sys::napi_open_handle_scope(raw, &mut scope) } != napi::sys::Status::napi_ok {
        return false;
    }
    for _ in 0..count {
        // Garbage at once: its handle goes with the scope closed below. It holds a reference
        // to the memory until the collection frees it.
        // SAFETY: env is this call's; len == alloc.len().
        let _ = unsafe { memory::wrap_again(raw, &alloc, len) };
    }
    // SAFETY: the scope opened above, on this env; nothing made in it is used after.
    unsafe { napi::sys::napi_close_handle_scope(raw, scope) };
    // SAFETY: env is this call's.
    unsafe { memory::check_young(raw) };
    true
}

/// A write stream's chain: its writes, in file order, at most `depth` of them in the kernel; the
/// others wait here, staged in the engine's slab (their memory captured, as any op's) but held
/// back from its flush, and the reap of one of its writes hands the next to the kernel at once
/// ([`reaped`], [`advance`]), without a JS round trip.
///
/// Why: this repository's virtio disk completes every write in flight at once; the device then
/// idles until the next write reaches it. From a JS stream that refill took 100-165 µs after the
/// completion (the wake-up, then promise hops and the stream's own code before it submits),
/// against fio's 33-64 µs. Here it goes in with the reap, before the completions reach JS.
///
/// A write that fails (result < 0) stops the chain: the writes still held are cancelled (they
/// complete with `ECANCELED` and never reach the kernel), as the JS stream started no more
/// writes after a failure. A short write does not: the stream writes the rest of its block
/// itself (that write is not in the chain), as the other writes in flight go on; but the block
/// keeps its place among the `depth` in flight until that rest is written (`chain_resume`, or
/// its failure stops the chain): no held write is released by a short one, as the JS stream
/// started none before a block was whole (else a later block could land after the rest failed).
///
/// A read stream's chain is the same with reads: the stream stages a read more than `depth`
/// (its next chunk), held here, and the reap of one of its reads hands it to the kernel before
/// the completion reaches JS, so the device is not left idle while the JS thread comes round to
/// refill it. A short read releases the next held read as a full one does (a read past the end
/// of the file returns 0, and a continuation after a short read is not chained); a failed read
/// stops the chain (held reads are cancelled, the stream reports the failure first, in file
/// order). Every held read's memory is captured as any staged op's, so it stays alive until
/// that read is reaped (or cancelled and reaped) whatever JS does.
struct Chain {
    depth: usize,
    /// At most this many bytes of the chain's ops in the kernel (0: no limit, `depth` ops
    /// only); a lone op larger than that still goes. Write streams count their depth in bytes
    /// (`writeBehind` x `chunkSize`): 1 MiB transferred chunks keep as many bytes in flight as
    /// 2 MiB copied blocks, instead of half (each transferred chunk is its own write).
    bytes: u64,
    /// Writes of the chain in the kernel (or staged for the next flush), and short ones whose
    /// rest JS is writing (`short` of them).
    inflight: usize,
    /// Bytes of the `inflight` ops (their whole lengths, short ones included).
    inflight_bytes: u64,
    /// Lengths of the chain's ops in the kernel, by engine op key (for `inflight_bytes`).
    lens: HashMap<u32, u64>,
    /// Blocks whose chained write was short: in `inflight` until [`NativeEngine::chain_resume`].
    short: usize,
    /// Bytes of the `short` blocks.
    short_bytes: u64,
    /// Writes held back, oldest first (engine op keys and lengths).
    held: VecDeque<(u32, u64)>,
    /// A write failed, or JS stopped the chain: held writes were cancelled, none is taken.
    stopped: bool,
    /// JS is done with it: forgotten once nothing of it is in flight.
    closed: bool,
}

thread_local! {
    /// Each write a reap releases goes to the kernel in a submission of its own, not with the
    /// others that reap released: io_uring plugs the requests of one `io_uring_enter` and the
    /// block layer merged 2-4 adjacent writes into one request (130-157 requests for 256-512
    /// writes of a 512 MiB pass), which this virtio disk then serves as one, not in parallel: its
    /// idle time grew (51 vs 33 ms at 1 MiB chunks). `ODIRECT_STREAM_SUBMIT_EACH=0`: one
    /// submission per reap (A/B).
    static SUBMIT_EACH: bool = crate::env::on_unless_zero("ODIRECT_STREAM_SUBMIT_EACH");
}

/// The write chains of one engine.
#[derive(Default)]
pub struct Chains {
    chains: HashMap<u32, Chain>,
    next_id: u32,
    /// Writes handed to the kernel at a reap (tests read it: `NativeEngine.chainReleases`).
    pub released: u64,
    /// Released since the last [`advance`]: the reap flushes.
    pending: bool,
}

/// A write of chain `c` (engine op `key`) was reaped with `result` (called from the reap,
/// `Inner::finish`). A held write cancelled by JS (an abort) only leaves the queue; otherwise
/// the chain has one write fewer in the kernel and hands held writes to the next flush while
/// it has room, or, on a failure, cancels them.
pub(crate) fn reaped(e: &mut Inner, c: u32, key: u32, result: i64, short: bool) {
    let Some(ch) = e.chains.chains.get_mut(&c) else {
        return;
    };
    let len = ch.lens.remove(&key).unwrap_or(0);
    if let Some(i) = ch.held.iter().position(|(k, _)| *k == key) {
        ch.held.remove(i);
    } else if short && !ch.stopped {
        // Its block stays in flight until JS wrote the rest (see `Chain`).
        ch.short += 1;
        ch.short_bytes += len;
    } else {
        ch.inflight -= 1;
        ch.inflight_bytes = ch.inflight_bytes.saturating_sub(len);
        if result < 0 {
            ch.stopped = true;
        }
    }
    release(e, c);
}

/// Hands the held writes chain `c` has room for to the next flush, or, once it is stopped,
/// cancels them.
fn release(e: &mut Inner, c: u32) {
    let Some(ch) = e.chains.chains.get_mut(&c) else {
        return;
    };
    if ch.stopped {
        stop(e, c);
    } else {
        let mut go = Vec::new();
        while let Some(&(k, len)) = ch.held.front() {
            if !ch.has_room(len) {
                break;
            }
            ch.held.pop_front();
            ch.inflight += 1;
            ch.inflight_bytes += len;
            ch.lens.insert(k, len);
            go.push(k);
        }
        for k in go {
            e.staged.push(k);
            e.chains.released += 1;
            if SUBMIT_EACH.with(|x| *x) {
                // Each in its own submission (see SUBMIT_EACH).
                e.flush();
            } else {
                e.chains.pending = true;
            }
        }
    }
    forget_if_done(e, c);
}

/// After a reap: submits the writes its completions released (see [`reaped`]).
pub(crate) fn advance(e: &mut Inner) {
    if std::mem::take(&mut e.chains.pending) {
        e.flush();
    }
}

/// Stops chain `c`: its held writes are cancelled (each completes with ECANCELED, out of the
/// chain: its reap releases nothing).
fn stop(e: &mut Inner, c: u32) {
    let Some(ch) = e.chains.chains.get_mut(&c) else {
        return;
    };
    ch.stopped = true;
    // Short blocks whose rest JS is writing: none of their chain starts after them any more.
    ch.inflight -= std::mem::take(&mut ch.short);
    ch.inflight_bytes = ch
        .inflight_bytes
        .saturating_sub(std::mem::take(&mut ch.short_bytes));
    let held = std::mem::take(&mut ch.held);
    for (k, _) in held {
        if let Some(Some(rec)) = e.ops.get_mut(k as usize) {
            rec.chain = None;
        }
        e.cancel(k);
    }
}

impl Chain {
    /// Whether an op of `len` bytes may go to the kernel now: fewer than `depth` ops there, and
    /// (with a byte limit) its bytes fit beside theirs, or none is there (a lone op larger
    /// than the limit goes alone).
    fn has_room(&self, len: u64) -> bool {
        self.inflight < self.depth
            && (self.bytes == 0 || self.inflight == 0 || self.inflight_bytes + len <= self.bytes)
    }
}

fn forget_if_done(e: &mut Inner, c: u32) {
    if e.chains
        .chains
        .get(&c)
        .is_some_and(|ch| ch.closed && ch.inflight == 0 && ch.held.is_empty())
    {
        e.chains.chains.remove(&c);
    }
}

#[napi]
impl NativeEngine {
    /// A new chain of at most `depth` writes (or reads) in the kernel (see `Chain`), and with
    /// `bytes` (> 0) at most that many bytes of them (a lone larger op still goes); its id.
    #[napi]
    pub fn chain_open(&self, depth: u32, bytes: Option<f64>) -> napi::Result<u32> {
        let bytes = bytes.filter(|b| b.is_finite() && *b >= 1.0).unwrap_or(0.0) as u64;
        self.with(|e| {
            let ch = &mut e.chains;
            ch.next_id = ch.next_id.wrapping_add(1);
            let id = ch.next_id;
            ch.chains.insert(
                id,
                Chain {
                    depth: depth.max(1) as usize,
                    bytes,
                    inflight: 0,
                    inflight_bytes: 0,
                    lens: HashMap::new(),
                    short: 0,
                    short_bytes: 0,
                    held: VecDeque::new(),
                    stopped: false,
                    closed: false,
                },
            );
            id
        })
    }

    /// Puts the write (or read) just staged (the last op staged, a write from or a read into
    /// `view`'s memory, not yet submitted) into chain `c`: it goes to the kernel with the next
    /// flush if the chain has room, else it is held until an op of the chain is reaped;
    /// cancelled (it completes with ECANCELED) when the chain is stopped. False (the op stays an
    /// ordinary one) when the last staged op is not that write or read, or the chain is closed
    /// or gone. A read stream's chain holds its reads (see `Chain`).
    #[napi]
    pub fn chain_add(&self, env: Env, c: u32, view: Unknown) -> napi::Result<bool> {
        // SAFETY: env and view are live handles of this call.
        let Ok(v) = (unsafe { memory::view(env.raw(), view.raw()) }) else {
            return Ok(false);
        };
        self.with(|e| {
            let Some(&k) = e.staged.last() else {
                return false;
            };
            let Some(Some(rec)) = e.ops.get_mut(k as usize) else {
                return false;
            };
            let (ptr, len) = match rec.kind {
                OpKind::Write { ptr, len, .. } => (ptr, len as u64),
                OpKind::Read { ptr, len, .. } => (ptr.cast_const(), len as u64),
                _ => return false,
            };
            if !std::ptr::eq(ptr, v.ptr) || rec.chain.is_some() || rec.batch.is_some() {
                return false;
            }
            let Some(ch) = e.chains.chains.get_mut(&c) else {
                return false;
            };
            if ch.closed {
                return false;
            }
            if ch.stopped {
                // A write of the chain failed and JS does not know yet: this one never starts
                // (it completes with ECANCELED), as none would after the failure reached JS.
                e.cancel(k);
                return true;
            }
            rec.chain = Some(c);
            if ch.held.is_empty() && ch.has_room(len) {
                ch.inflight += 1;
                ch.inflight_bytes += len;
                ch.lens.insert(k, len);
            } else {
                e.staged.pop();
                ch.held.push_back((k, len));
            }
            true
        })
    }

    /// Stops chain `c` (a write of the stream failed outside the chain, or it is destroyed):
    /// its held writes are cancelled.
    #[napi]
    pub fn chain_stop(&self, c: u32) -> napi::Result<()> {
        self.with(|e| stop(e, c))
    }

    /// The rest of a block whose chained write was short is written: the block (of `len`
    /// bytes, its whole write's) leaves the chain's writes in flight, and the held writes it
    /// has room for go to the kernel.
    #[napi]
    pub fn chain_resume(&self, c: u32, len: f64) -> napi::Result<()> {
        self.with(|e| {
            let Some(ch) = e.chains.chains.get_mut(&c) else {
                return;
            };
            if ch.short == 0 {
                return;
            }
            // Its bytes, as counted when its write went in (never more than the short blocks').
            let len = (len.max(0.0) as u64).min(ch.short_bytes);
            ch.short -= 1;
            ch.short_bytes -= len;
            ch.inflight -= 1;
            ch.inflight_bytes = ch.inflight_bytes.saturating_sub(len);
            release(e, c);
            advance(e);
        })
    }

    /// JS is done with chain `c`: forgotten once its writes are reaped.
    #[napi]
    pub fn chain_close(&self, c: u32) -> napi::Result<()> {
        self.with(|e| {
            if let Some(ch) = e.chains.chains.get_mut(&c) {
                ch.closed = true;
            }
            forget_if_done(e, c);
        })
    }

    /// [writes handed to the kernel at a reap by their chain, chains alive, writes held back]
    /// (tests: the writes in the kernel are the ops in flight less those held).
    #[napi(getter)]
    pub fn chain_stats(&self) -> napi::Result<Vec<f64>> {
        self.with(|e| {
            let c = &e.chains;
            let held: usize = c.chains.values().map(|ch| ch.held.len()).sum();
            vec![c.released as f64, c.chains.len() as f64, held as f64]
        })
    }
}

/// odirect-owned memory now: [allocations alive (ArrayBuffers not finalized yet, ops in
/// flight), their bytes, regions the pool maps (2 MiB each), freed bytes it keeps, spare
/// regions held], for tests and diagnostics (a read stream's chunks alive, the pool's mappings).
#[napi]
pub fn memory_stats() -> Vec<f64> {
    let [n, bytes] = memory::live();
    let p = odirect_core::mempool::global();
    let s = p.stats();
    [
        n,
        bytes,
        s.regions,
        s.retained,
        p.spare_counts().held as usize,
    ]
    .map(|n| n as f64)
    .to_vec()
}

/// What the memory pool's spare regions did (`odirect_core::mempool`, read streams' chunks):
/// [new regions mapped by the allocating thread, new regions taken from the spares (faulted in
/// by the pool's helper thread), spares made, free regions kept as spares, spares held now].
#[napi]
pub fn pool_spare_stats() -> Vec<f64> {
    let c = odirect_core::mempool::global().spare_counts();
    [c.mapped_here, c.taken, c.made, c.recycled, c.held]
        .map(|n| n as f64)
        .to_vec()
}
