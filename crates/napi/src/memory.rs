//! Memory the kernel may write: odirect-owned aligned allocations shown to JS as external
//! ArrayBuffers, and the capture of a JS view's pointer and length.
//!
//! An [`Alloc`] is reference counted. The JS ArrayBuffer holds one reference (dropped by its
//! finalizer, whoever owns the backing store by then: a transfer to another ArrayBuffer, another
//! worker or `ArrayBuffer.prototype.transfer()` moves the same backing store and its finalizer),
//! and every op in flight on it holds one more. The memory is freed when the last of them goes,
//! so no JS action can free memory the kernel is still writing.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::{Arc, Mutex, Weak};

use napi::sys;
use odirect_core::buf::AlignedBuf;

use crate::status::check;

/// One odirect-owned aligned allocation.
pub struct Alloc {
    buf: AlignedBuf,
    /// A number no other allocation of the process had (see [`Alloc::serial`]).
    serial: u64,
}

/// The next [`Alloc::serial`].
static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_serial() -> u64 {
    SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Alloc {
    /// This allocation's own number, never another's (unlike its start or the address of its
    /// `Arc`, which the next allocation often gets back): for bookkeeping that holds no
    /// reference to it (`pins::AutoTable`'s uses so far).
    pub fn serial(&self) -> u64 {
        self.serial
    }
    pub fn ptr(&self) -> *mut u8 {
        self.buf.as_ptr() as *mut u8
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// odirect-owned allocations alive now (an ArrayBuffer or an op holds them) and their bytes:
/// see [`live`].
static LIVE: [std::sync::atomic::AtomicUsize; 2] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
];

/// (allocations, bytes) of odirect-owned memory alive now, process-wide: what JS holds or
/// dropped and V8 has not finalized yet, plus what ops in flight hold (`memoryStats`).
pub fn live() -> [usize; 2] {
    LIVE.each_ref()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
}

impl Drop for Alloc {
    fn drop(&mut self) {
        LIVE[0].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        LIVE[1].fetch_sub(self.len(), std::sync::atomic::Ordering::Relaxed);
        let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
        // Remove our entry only if it is still ours (a new allocation cannot share the start
        // while we exist, so it is).
        let start = self.ptr() as usize;
        if let Some((_, w)) = r.get(&start) {
            if w.strong_count() == 0 {
                r.remove(&start);
            }
        }
        // Nothing refers to the block any more (no ArrayBuffer, no op in flight): `buf` goes
        // back to odirect-core's pool when this drops, which keeps freed blocks (up to its
        // budget) for the next allocations: a program (or a read stream) that allocates a new
        // buffer per read gets memory whose pages are mapped already, instead of fresh pages the
        // kernel must fault in and zero (about 0.7 s of system CPU per GiB).
    }
}

/// An allocation for unit tests (not in the registry: no JS buffer, no look-up).
#[cfg(test)]
pub fn test_alloc(len: usize) -> Arc<Alloc> {
    LIVE[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    LIVE[1].fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    Arc::new(Alloc {
        buf: AlignedBuf::new(len, 4096),
        serial: next_serial(),
    })
}

type Registry = Mutex<BTreeMap<usize, (usize, Weak<Alloc>)>>;

/// Every live allocation by start address: process-wide, since buffers move between workers.
fn registry() -> &'static Registry {
    static R: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    R.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// The live allocation holding all of `[ptr, ptr + len)`, if any. When it returns `Some`, that
/// memory is odirect's and stays allocated while the returned `Arc` lives.
///
/// Answers are kept per thread in a 2-way set-associative cache indexed by the address's page
/// ([`CACHE_SETS`] sets, 24 KiB): a loop reads into the same buffer op after op, a per-op loop
/// at depth 64 cycles through 64 buffers, an array-form readMany of 512 ops through 512 (the
/// cache of one entry this replaced missed every op of those: a mutex and a B-tree search per
/// op, 3% of the JS thread's samples in the per-op loop at QD 64 on tmpfs). An entry answers
/// only while its allocation is alive (the weak reference upgrades) and holds the range: live
/// allocations never overlap, so that answer is right whatever was freed or allocated since
/// the entry was made. Anything else searches the registry.
pub fn lookup(ptr: usize, len: usize) -> Option<Arc<Alloc>> {
    let end = ptr.checked_add(len)?;
    let set = cache_set(ptr);
    let hit = LAST.with(|last| {
        let mut last = last.borrow_mut();
        let ways = &mut last[set];
        for way in 0..2 {
            let Some((start, l, w)) = ways[way].as_ref() else {
                continue;
            };
            if *start <= ptr && end <= start + l {
                let a = w.upgrade()?;
                // The most recent answer first: the other way is the one replaced next.
                ways.swap(0, way);
                return Some(a);
            }
        }
        None
    });
    if let Some(a) = hit {
        count_lookup(true);
        return Some(a);
    }
    count_lookup(false);
    let found = {
        let r = registry().lock().unwrap_or_else(|p| p.into_inner());
        let (start, (l, w)) = r.range(..=ptr).next_back()?;
        (end <= start + l).then(|| (*start, *l, w.clone()))?
    };
    let a = found.2.upgrade()?;
    LAST.with(|last| {
        let ways = &mut last.borrow_mut()[set];
        ways[1] = ways[0].take();
        ways[0] = Some(found);
    });
    Some(a)
}

/// Sets of the per-thread [`lookup`] cache (a power of two), 2 entries each.
const CACHE_SETS: usize = 512;

/// The cache set of an address: its 4 KiB page number, folded so that buffers spaced by a
/// power of two (up to 2^30) still spread over the sets.
fn cache_set(ptr: usize) -> usize {
    let page = ptr >> 12;
    (page ^ (page >> 9) ^ (page >> 18)) & (CACHE_SETS - 1)
}

type CacheEntry = Option<(usize, usize, Weak<Alloc>)>;

thread_local! {
    /// This thread's recent [`lookup`] answers by [`cache_set`]: start, length and the
    /// allocation (weak: the cache keeps nothing allocated), the more recent first.
    static LAST: std::cell::RefCell<[[CacheEntry; 2]; CACHE_SETS]> =
        const { std::cell::RefCell::new([const { [None, None] }; CACHE_SETS]) };
}

/// Look-ups answered by the per-thread cache and by the registry (`NativeEngine` test hook
/// `lookupStats`).
static LOOKUPS: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

fn count_lookup(cached: bool) {
    LOOKUPS[usize::from(!cached)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// (cache hits, registry searches) of [`lookup`] so far, process-wide.
pub fn lookup_stats() -> [u64; 2] {
    LOOKUPS
        .each_ref()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
}

unsafe extern "C" fn drop_owner<T>(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the Box<T> leaked in `external_arraybuffer::<T>`; the runtime calls the
    // finalizer exactly once, when no ArrayBuffer holds the backing store any more.
    drop(unsafe { Box::from_raw(hint as *mut T) });
}

/// Lets V8 collect dropped buffers young, as it does its own.
///
/// V8 already counts every ArrayBuffer's memory as external memory, ours included: its
/// ArrayBufferSweeper adds the byte length of each backing store it attaches, whoever
/// allocated it (so no `napi_adjust_external_memory` here: that counted each buffer twice, and
/// external memory over V8's limit starts mark-compact collections, about 30 per GiB streamed).
/// What V8 does not do for memory it did not allocate is the check it makes before allocating a
/// backing store itself (`Heap::AllocateExternalBackingStore`): once young ArrayBuffers hold
/// twice the semi-space size (32 MiB on 64-bit Node), it runs a young-generation collection,
/// which frees buffers that died young at the cost of a scavenge. Allocating a 1-byte V8
/// ArrayBuffer right after ours runs that check, so buffers dropped as fast as they are read
/// (a stream's chunks) are collected and their blocks reused like `Buffer.allocUnsafe`'s.
/// Done on every runtime: Deno's V8 gains the same, and Bun's collector, which sees the new
/// ArrayBuffer as allocation pressure, collects sooner too (a 1 GiB stream on tmpfs: RSS growth
/// 85-160 vs 222-244 MiB on Deno, 136-166 vs 179-373 MiB on Bun, with less CPU on both).
///
/// # Safety
/// `env` must be the live env of the current call.
unsafe fn nudge_young_gc(env: sys::napi_env) {
    let mut data: *mut c_void = ptr::null_mut();
    let mut tiny = ptr::null_mut();
    // SAFETY: live env; the new ArrayBuffer is garbage at once. A failure only means no check
    // this time (the buffer works all the same); its error info is read so it does not linger.
    unsafe {
        if check!(napi_create_arraybuffer(env, 1, &mut data, &mut tiny)).is_err() {
            let mut info = ptr::null();
            let _ = check!(napi_get_last_error_info(env, &mut info));
        }
    }
}

/// Whether this runtime shares external ArrayBuffer memory with us (checked on first use:
/// a runtime that copies, or refuses external buffers, gets V8-owned memory instead).
static EXTERNAL_OK: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// A new ArrayBuffer of `len` bytes at an address aligned to `align`, owned by odirect: zeroed,
/// or with `zeroed: false` possibly holding the bytes of a block this process freed (for callers
/// that overwrite it before showing any of it); with `small_pages`, zeroed and never on a
/// transparent huge page (`AlignedBuf::try_new_small_pages`: pinned memory under a small
/// RLIMIT_MEMLOCK).
/// `Ok(None)`: the runtime does not allow external buffers that share memory (use V8 memory).
///
/// # Safety
/// `env` must be the live env of the current call.
pub unsafe fn external_buffer(
    env: sys::napi_env,
    len: usize,
    align: usize,
    zeroed: bool,
    small_pages: bool,
) -> Result<Option<sys::napi_value>, String> {
    use std::sync::atomic::Ordering;
    if EXTERNAL_OK.load(Ordering::Relaxed) == 2 {
        return Ok(None);
    }
    let buf = if small_pages {
        AlignedBuf::try_new_small_pages(len.max(1), align)
    } else {
        AlignedBuf::try_new_with(len.max(1), align, zeroed)
    };
    let buf = buf.ok_or_else(|| format!("cannot allocate {len} bytes aligned to {align}"))?;
    let start = buf.as_ptr() as usize;
    let alloc = Arc::new(Alloc {
        buf,
        serial: next_serial(),
    });
    LIVE[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    LIVE[1].fetch_add(alloc.len(), std::sync::atomic::Ordering::Relaxed);
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(start, (alloc.len(), Arc::downgrade(&alloc)));
    // SAFETY: env is live (forwarded contract); len <= alloc.len() (allocated as len.max(1)).
    let Some(ab) = (unsafe { wrap_again(env, &alloc, len) }) else {
        let status = REFUSED.with(|r| r.get());
        if status != sys::Status::napi_no_external_buffers_allowed {
            // Not the runtime's policy but this call failing (a worker being terminated: its
            // env refuses every call): this allocation fails, the process keeps odirect memory.
            // Taking it as a sandbox turned every later allocation of every thread into V8
            // memory, refused by typed batches and registerBuffers (adversary-s16b.spec).
            return Err(format!(
                "cannot make an ArrayBuffer of {len} bytes (N-API status {status})"
            ));
        }
        // Refused (a V8 sandbox): V8 memory from now on (wrap_again took its hint back).
        EXTERNAL_OK.store(2, Ordering::Relaxed);
        return Ok(None);
    };
    let mut data: *mut c_void = ptr::null_mut();
    let mut got = 0usize;
    // SAFETY: ab is a live ArrayBuffer handle of this call.
    let seen = unsafe { check!(napi_get_arraybuffer_info(env, ab, &mut data, &mut got)) };
    if seen.is_err() {
        // The call failed (the env is going away), not a copy: this allocation fails alone.
        return Err(format!("cannot read back an ArrayBuffer of {len} bytes"));
    }
    if data as usize != start || got != len {
        // The runtime copied our memory (or cannot tell where it put it): what JS sees is not
        // what the kernel would write. The copy's finalizer owns the hint (it runs when the copy
        // dies), so nothing leaks twice.
        EXTERNAL_OK.store(2, Ordering::Relaxed);
        return Ok(None);
    }
    EXTERNAL_OK.store(1, Ordering::Relaxed);
    // SAFETY: forwarded contract (env is live).
    unsafe { nudge_young_gc(env) };
    Ok(Some(ab))
}

/// A new external ArrayBuffer over the first `len` bytes of `alloc`'s memory, holding one more
/// reference to `alloc` until V8 finalizes it (so the memory stays allocated while it lives).
/// `None`: the runtime refused (its error info is consumed).
///
/// # Safety
/// `env` must be the live env of the current call; `len <= alloc.len()`.
pub(crate) unsafe fn wrap_again(
    env: sys::napi_env,
    alloc: &Arc<Alloc>,
    len: usize,
) -> Option<sys::napi_value> {
    // SAFETY: forwarded contract; the clone keeps the allocation (len bytes at its start) alive.
    unsafe { external_arraybuffer(env, alloc.ptr() as *mut c_void, len, alloc.clone()) }
}

/// The one place that makes external ArrayBuffers: `len` bytes at `data`, with `owner` kept
/// until V8 finalizes the ArrayBuffer (then dropped). `None`: the runtime refused (a V8 sandbox);
/// `owner` is dropped and the refusal's error info consumed.
///
/// # Safety
/// `env` must be the live env of the current call; `len` bytes at `data` must stay valid and
/// unmoved while `owner` lives.
pub(crate) unsafe fn external_arraybuffer<T: 'static>(
    env: sys::napi_env,
    data: *mut c_void,
    len: usize,
    owner: T,
) -> Option<sys::napi_value> {
    let hint = Box::into_raw(Box::new(owner));
    let mut ab = ptr::null_mut();
    // SAFETY: the memory stays valid until drop_owner drops the owner (caller's contract);
    // env is live.
    let made = unsafe {
        check!(napi_create_external_arraybuffer(
            env,
            data,
            len,
            Some(drop_owner::<T>),
            hint as *mut c_void,
            &mut ab,
        ))
    };
    if let Err(e) = made {
        REFUSED.with(|r| r.set(status_code(e.status)));
        // SAFETY: hint came from Box::into_raw above and was not handed over.
        drop(unsafe { Box::from_raw(hint) });
        let mut info = ptr::null();
        // SAFETY: consumes the error info of the refused call.
        let _ = unsafe { check!(napi_get_last_error_info(env, &mut info)) };
        return None;
    }
    Some(ab)
}

thread_local! {
    /// The N-API status of this thread's last refused [`external_arraybuffer`]: a sandbox
    /// (`napi_no_external_buffers_allowed`) or a failing call (a terminating worker's env).
    static REFUSED: std::cell::Cell<sys::napi_status> = const { std::cell::Cell::new(0) };
}

fn status_code(s: napi::Status) -> sys::napi_status {
    match s {
        napi::Status::NoExternalBuffersAllowed => sys::Status::napi_no_external_buffers_allowed,
        _ => sys::Status::napi_generic_failure,
    }
}

/// Runs V8's young-generation check (see [`nudge_young_gc`]) from outside this module.
///
/// # Safety
/// `env` must be the live env of the current call.
pub(crate) unsafe fn check_young(env: sys::napi_env) {
    // SAFETY: forwarded contract.
    unsafe { nudge_young_gc(env) }
}

/// Pointer and byte length of a view, as the engine saw them at one moment.
pub struct View {
    pub ptr: *mut u8,
    pub len: usize,
}

/// Why a value could not be captured.
pub const NOT_A_VIEW: i32 = -2;
pub const TOO_SHORT: i32 = -1;
pub const UNKNOWN_KIND: i32 = -3;

/// Pointer and byte length of a TypedArray, Buffer, DataView or ArrayBuffer, sized from the
/// runtime's own byte length (never from a JS getter). Detached buffers have length 0.
///
/// # Safety
/// `env` and `v` must be live handles of the current call.
pub unsafe fn view(env: sys::napi_env, v: sys::napi_value) -> Result<View, i32> {
    let mut is = false;
    // SAFETY (whole block): env and v are live; each call writes only its out-parameters.
    unsafe {
        if sys::napi_is_typedarray(env, v, &mut is) == sys::Status::napi_ok && is {
            let (mut ty, mut length, mut off) = (0, 0usize, 0usize);
            let mut data: *mut c_void = ptr::null_mut();
            let mut ab = ptr::null_mut();
            if sys::napi_get_typedarray_info(
                env,
                v,
                &mut ty,
                &mut length,
                &mut data,
                &mut ab,
                &mut off,
            ) != sys::Status::napi_ok
            {
                return Err(NOT_A_VIEW);
            }
            // Element sizes by N-API's numbering; kinds we do not know are refused rather than
            // guessed (a guess could hand the kernel more bytes than the view has).
            let elem = match ty {
                0..=2 => 1,      // int8, uint8, uint8_clamped
                3 | 4 | 11 => 2, // int16, uint16, float16
                5..=7 => 4,      // int32, uint32, float32
                8..=10 => 8,     // float64, bigint64, biguint64
                _ => return Err(UNKNOWN_KIND),
            };
            let len = length.checked_mul(elem).ok_or(NOT_A_VIEW)?;
            if len > 0 && !ab.is_null() {
                // Sanity: the view must lie inside its ArrayBuffer as the runtime sees it now.
                let mut abd: *mut c_void = ptr::null_mut();
                let mut abl = 0usize;
                if sys::napi_get_arraybuffer_info(env, ab, &mut abd, &mut abl)
                    == sys::Status::napi_ok
                    && !abd.is_null()
                    && (data as usize) + len > (abd as usize) + abl
                {
                    return Err(TOO_SHORT);
                }
            }
            return Ok(View {
                ptr: data as *mut u8,
                len: if data.is_null() { 0 } else { len },
            });
        }
        if sys::napi_is_dataview(env, v, &mut is) == sys::Status::napi_ok && is {
            let (mut len, mut off) = (0usize, 0usize);
            let mut data: *mut c_void = ptr::null_mut();
            let mut ab = ptr::null_mut();
            if sys::napi_get_dataview_info(env, v, &mut len, &mut data, &mut ab, &mut off)
                != sys::Status::napi_ok
            {
                return Err(NOT_A_VIEW);
            }
            return Ok(View {
                ptr: data as *mut u8,
                len: if data.is_null() { 0 } else { len },
            });
        }
        if sys::napi_is_arraybuffer(env, v, &mut is) == sys::Status::napi_ok && is {
            let mut len = 0usize;
            let mut data: *mut c_void = ptr::null_mut();
            if sys::napi_get_arraybuffer_info(env, v, &mut data, &mut len) != sys::Status::napi_ok {
                return Err(NOT_A_VIEW);
            }
            return Ok(View {
                ptr: data as *mut u8,
                len: if data.is_null() { 0 } else { len },
            });
        }
    }
    Err(NOT_A_VIEW)
}
