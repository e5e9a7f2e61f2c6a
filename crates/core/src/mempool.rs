//! The process-wide pool behind [`crate::buf::AlignedBuf`]'s blocks of [`MIN_BLOCK`] and up:
//! memory that is physically contiguous in 2 MiB pieces, for direct I/O.
//!
//! Why: a direct I/O is handed to the device as one segment per physically contiguous piece of
//! its memory. From ordinary 4 KiB pages a 1 MiB transfer is 256 scattered segments, more than a
//! virtio disk takes in one request (`max_segments` 254), and every segment costs the host too:
//! fio's 1 MiB sequential reads at depth 4 ran 1.2-2.1 GB/s from malloc'd memory and 2.9-3.3 GB/s
//! from huge pages on this repository's VM, 32 KiB reads 0.7-0.76 vs 0.95-0.98 GB/s, 16 KiB ones
//! only 10-20 % apart (4 KiB: no difference, one page is contiguous anyway). Memory backed by a
//! transparent huge page is one 2 MiB physical piece.
//!
//! How:
//! - a block of up to [`REGION`] (2 MiB) bytes is carved, buddy style, from a 2 MiB-aligned
//!   anonymous mapping (a *region*) marked `MADV_HUGEPAGE`: a block is the smallest power of two
//!   from [`MIN_BLOCK`] up that holds the length and the alignment, at an address that is a
//!   multiple of its size (so it is aligned to anything up to its size). The kernel backs the
//!   region with one huge page at its first touch where transparent huge pages are `always` or
//!   `madvise` and one is free (else with small pages: everything works the same, only slower);
//! - a larger block (or one aligned to more than 2 MiB) is its own mapping, aligned to 2 MiB
//!   (or more), `MADV_HUGEPAGE` too (whole 2 MiB pieces of it are huge pages; a tail past the last
//!   2 MiB boundary has small pages);
//! - a freed block goes back to its region, merged with its free buddy; a freed large mapping of
//!   up to [`KEEP_MAP_MAX`] is kept for a later block of the same size. Freed memory the pool
//!   keeps (free blocks in regions, whole free regions, kept mappings) is [`Stats::retained`]:
//!   while it is over the pool's budget ([`RETAIN_BYTES`] for the process-wide pool), kept
//!   mappings (oldest first) and wholly free regions (highest address first) are unmapped. Free
//!   blocks in a region that still has a block in use stay (returning part of a huge page would
//!   split it), so the memory a process holds is at most its blocks in use rounded up to whole
//!   regions, plus the budget. Blocks are taken lowest address first, which keeps the used ones
//!   packed and the free regions whole;
//! - memory the kernel just mapped is zero; a block that was used is *dirty*, and zeroed with a
//!   memset when it is handed out zeroed (callers that overwrite it all ask for it not zeroed).
//!
//! - *spare regions* (the process-wide pool: [`SPARE_REGIONS`], `ODIRECT_POOL_SPARES`): a helper
//!   thread (`odirect-pool`, started at the first new region) keeps that many whole regions
//!   mapped and faulted in (`MADV_POPULATE_WRITE`), and a block that needs a new region takes
//!   one of them: the kernel zeroes the huge page on that thread, not in the allocating one's
//!   first touch. Why: a read stream whose consumer drops its chunks frees them in bursts at V8's
//!   collections, the pool keeps only [`RETAIN_BYTES`] of a burst, and every third chunk or so
//!   went into a new region; the kernel zeroed its huge page inside the JS thread's
//!   `io_uring_enter` (pinning the read's pages), 8.3% of that thread's samples, with the device
//!   idle meanwhile. A wholly free region over the budget becomes a spare (as it is, not
//!   unmapped) while fewer than that are kept;
//!
//! One mutex guards the pool's lists (held for a few list operations and, when a new region is
//! needed, one `mmap`); blocks move freely between threads (a buffer made on one worker, freed
//! on another).

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// One region: the size of a transparent huge page on x86-64 (and arm64, riscv64 with 4 KiB
/// pages).
pub const REGION: usize = 2 << 20;
const TOP_ORDER: u32 = REGION.trailing_zeros();
/// The smallest block the pool hands out (smaller ones, page aligned, come from the heap: a few
/// pages gain little from being contiguous).
pub const MIN_BLOCK: usize = 32 << 10;
/// Freed memory the process-wide pool keeps for reuse at most (about what V8 collects in one
/// young-generation GC when 1 MiB buffers are dropped as fast as they are read).
pub const RETAIN_BYTES: usize = 32 << 20;
/// Freed mappings larger than this are unmapped at once.
pub const KEEP_MAP_MAX: usize = 8 << 20;
/// Spare regions the process-wide pool keeps faulted in (see the module's doc);
/// `ODIRECT_POOL_SPARES=N` sets it (0: none, every new region is faulted by its first user).
pub const SPARE_REGIONS: usize = 1;

/// A block handed out by a [`Pool`]: [`Block::ptr`] is aligned as asked and holds at least the
/// length asked for; give it back with [`Pool::free`].
///
/// Only [`Pool::alloc`] makes one (its fields are private, it is neither `Clone` nor `Copy`), so
/// safe code cannot hand [`Pool::free`] memory the pool did not give out, or give a block back
/// twice:
///
/// ```compile_fail
/// use odirect_core::mempool::{global, Block};
/// let mut x = [0u8; 64];
/// global().free(Block { ptr: std::ptr::NonNull::new(x.as_mut_ptr()).unwrap(), size: 64, mapped: false });
/// ```
#[derive(Debug)]
pub struct Block {
    ptr: NonNull<u8>,
    /// The block's own size: a power of two up to [`REGION`] for a block carved from a region,
    /// else the size of its mapping.
    size: usize,
    /// A mapping of its own (not a block of a region).
    mapped: bool,
}

impl Block {
    /// The block's first byte.
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The block's own size (at least the length asked for).
    pub fn size(&self) -> usize {
        self.size
    }
}

// SAFETY: a Block is an address range that its holder owns exclusively, like a Box<[u8]>.
unsafe impl Send for Block {}

/// What a pool holds, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Regions mapped.
    pub regions: usize,
    /// Bytes of freed memory the pool keeps: free blocks and whole free regions, kept mappings.
    pub retained: usize,
    /// Large mappings kept for reuse.
    pub kept_maps: usize,
}

struct Inner {
    /// Free blocks by order (index = log2 of the size), address → dirty.
    free: Vec<BTreeMap<usize, bool>>,
    regions: usize,
    retained: usize,
    /// Freed large mappings kept for reuse, oldest first: (address, size).
    maps: Vec<(usize, usize)>,
    /// Spare regions, faulted in: (address, dirty). Not in `regions` or `retained`.
    spares: Vec<(usize, bool)>,
    /// The helper thread that makes spares runs (or was started).
    helper: bool,
    counts: SpareCounts,
}

/// What the spare regions did (see the module's doc), for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpareCounts {
    /// New regions the allocating thread mapped itself (its first touch faults them in).
    pub mapped_here: u64,
    /// New regions taken from the spares (faulted in already).
    pub taken: u64,
    /// Spares the helper thread mapped and faulted in.
    pub made: u64,
    /// Wholly free regions kept as spares instead of being unmapped.
    pub recycled: u64,
    /// Spares held now.
    pub held: u64,
}

/// A buddy allocator over 2 MiB huge-page regions, plus kept large mappings. [`global`] is the
/// one every [`crate::buf::AlignedBuf`] uses; tests make their own.
pub struct Pool {
    shared: Arc<Shared>,
    budget: usize,
    /// Spare regions kept faulted in (see the module's doc).
    spares: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the helper thread: fewer spares than wanted.
    want: Condvar,
}

/// The process-wide pool (budget [`RETAIN_BYTES`]).
pub fn global() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| {
        let spares = std::env::var("ODIRECT_POOL_SPARES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(SPARE_REGIONS)
            .min(64);
        Pool::with_spares(RETAIN_BYTES, spares)
    })
}

/// The smallest order a block can have: [`MIN_BLOCK`], or the page size where pages are larger.
fn min_order() -> u32 {
    MIN_BLOCK.max(crate::align::page_size()).trailing_zeros()
}

impl Pool {
    /// An empty pool that keeps at most `budget` bytes of freed memory.
    pub fn new(budget: usize) -> Pool {
        Pool::with_spares(budget, 0)
    }

    /// An empty pool that keeps at most `budget` bytes of freed memory and `spares` spare
    /// regions faulted in by a helper thread (see the module's doc).
    pub fn with_spares(budget: usize, spares: usize) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    free: (0..=TOP_ORDER).map(|_| BTreeMap::new()).collect(),
                    regions: 0,
                    retained: 0,
                    maps: Vec::new(),
                    spares: Vec::new(),
                    helper: false,
                    counts: SpareCounts::default(),
                }),
                want: Condvar::new(),
            }),
            budget,
            spares,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// What the spare regions did.
    pub fn spare_counts(&self) -> SpareCounts {
        let g = self.lock();
        SpareCounts {
            held: g.spares.len() as u64,
            ..g.counts
        }
    }

    /// A new region for a block: a spare if one is ready, else a new mapping (faulted in by
    /// its first touch, here). Asks the helper for more spares. (address, dirty)
    fn new_region(&self, g: &mut Inner) -> Option<(usize, bool)> {
        let got = match g.spares.pop() {
            Some(s) => {
                g.counts.taken += 1;
                Some(s)
            }
            None => None,
        };
        if self.spares > 0 {
            if !g.helper {
                g.helper = true;
                let shared = self.shared.clone();
                let want = self.spares;
                let started = std::thread::Builder::new()
                    .name("odirect-pool".into())
                    .spawn(move || shared.make_spares(want));
                if started.is_err() {
                    // No thread: every new region is mapped here, as with no spares.
                    g.helper = false;
                }
            }
            if g.spares.len() < self.spares {
                self.shared.want.notify_one();
            }
        }
        match got {
            Some(s) => Some(s),
            None => {
                g.counts.mapped_here += 1;
                Some((map_aligned(REGION, REGION, true)?, false))
            }
        }
    }

    pub fn stats(&self) -> Stats {
        let g = self.lock();
        Stats {
            regions: g.regions,
            retained: g.retained,
            kept_maps: g.maps.len(),
        }
    }

    /// A block of at least `len` bytes (at least one) aligned to `align`, zeroed if `zeroed`
    /// (else it may hold the bytes of a block this pool had handed out before); `None` when
    /// `align` is not a power of two or the system has no memory (or address space) for it.
    pub fn alloc(&self, len: usize, align: usize, zeroed: bool) -> Option<Block> {
        if !align.is_power_of_two() {
            // A block is aligned to its power-of-two size: no multiple of 3, say.
            return None;
        }
        let len = len.max(1);
        let need = len.max(align).checked_next_power_of_two()?;
        let (block, dirty) = if need <= REGION {
            let order = need.trailing_zeros().max(min_order());
            let (addr, dirty) = self.alloc_order(order)?;
            (
                Block {
                    ptr: NonNull::new(addr as *mut u8)?,
                    size: 1 << order,
                    mapped: false,
                },
                dirty,
            )
        } else {
            self.alloc_map(len, align)?
        };
        if zeroed && dirty {
            // SAFETY: the block is ours alone now and holds at least `len` bytes.
            unsafe { std::ptr::write_bytes(block.ptr.as_ptr(), 0, len) };
        }
        Some(block)
    }

    /// A block of 2^order bytes from a region: (address, dirty).
    fn alloc_order(&self, order: u32) -> Option<(usize, bool)> {
        let mut g = self.lock();
        let from = (order..=TOP_ORDER).find(|&o| !g.free[o as usize].is_empty());
        let (addr, dirty, mut o) = match from {
            Some(o) => {
                let (a, d) = g.free[o as usize].pop_first()?;
                (a, d, o)
            }
            None => {
                let (base, dirty) = self.new_region(&mut g)?;
                g.regions += 1;
                g.retained += REGION;
                (base, dirty, TOP_ORDER)
            }
        };
        // Split down to the order asked for; the upper halves stay free.
        while o > order {
            o -= 1;
            g.free[o as usize].insert(addr + (1 << o), dirty);
        }
        g.retained -= 1 << order;
        Some((addr, dirty))
    }

    /// A mapping of its own for a block larger than a region: a kept one of the same size and
    /// alignment, else a new one. (block, dirty)
    fn alloc_map(&self, len: usize, align: usize) -> Option<(Block, bool)> {
        let size = len.checked_next_multiple_of(crate::align::page_size())?;
        let kept = {
            let mut g = self.lock();
            let i = g
                .maps
                .iter()
                .rposition(|&(a, s)| s == size && a.is_multiple_of(align));
            i.map(|i| {
                let (a, _) = g.maps.remove(i);
                g.retained -= size;
                a
            })
        };
        let (addr, dirty) = match kept {
            Some(a) => (a, true),
            None => (map_aligned(size, align.max(REGION), true)?, false),
        };
        Some((
            Block {
                ptr: NonNull::new(addr as *mut u8)?,
                size,
                mapped: true,
            },
            dirty,
        ))
    }

    /// Gives a block back. It must come from this pool's [`Pool::alloc`] (one from another
    /// [`Pool`] is a logic error: that pool's accounting goes wrong, no memory is shared) and
    /// nothing may use its memory any more.
    pub fn free(&self, block: Block) {
        let addr = block.ptr.as_ptr() as usize;
        if block.mapped && block.size > KEEP_MAP_MAX {
            // SAFETY: the block's own mapping, which its holder gave up.
            unsafe { unmap(addr, block.size) };
            return;
        }
        let mut g = self.lock();
        g.retained += block.size;
        if block.mapped {
            g.maps.push((addr, block.size));
        } else {
            // Merge with the free buddy as far up as it goes.
            let (mut a, mut o, mut dirty) = (addr, block.size.trailing_zeros(), true);
            while o < TOP_ORDER {
                match g.free[o as usize].remove(&(a ^ (1 << o))) {
                    Some(d) => {
                        dirty |= d;
                        a &= !(1 << o);
                        o += 1;
                    }
                    None => break,
                }
            }
            g.free[o as usize].insert(a, dirty);
        }
        // Over the budget: give back kept mappings, then whole free regions.
        let mut release: Vec<(usize, usize)> = Vec::new();
        while g.retained > self.budget {
            let (a, s) = if !g.maps.is_empty() {
                g.maps.remove(0)
            } else if let Some((a, dirty)) = g.free[TOP_ORDER as usize].pop_last() {
                g.regions -= 1;
                if g.spares.len() < self.spares {
                    // Kept as a spare, faulted in as it is: the next new region costs nothing.
                    g.retained -= REGION;
                    g.spares.push((a, dirty));
                    g.counts.recycled += 1;
                    continue;
                }
                (a, REGION)
            } else {
                break;
            };
            g.retained -= s;
            release.push((a, s));
        }
        drop(g);
        for (a, s) in release {
            // SAFETY: a kept mapping or a wholly free region, just taken off the lists: no block
            // of it is handed out, and no later alloc can find it.
            unsafe { unmap(a, s) };
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lists are consistent between statements that can panic (none allocate half-way
        // through an update), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The helper thread: keeps `want` spare regions mapped and faulted in, for the life of the
    /// process (it sleeps while there are enough).
    fn make_spares(&self, want: usize) {
        loop {
            {
                let mut g = self.lock();
                while g.spares.len() >= want {
                    g = self.want.wait(g).unwrap_or_else(|p| p.into_inner());
                }
            }
            // Mapped and faulted in without the lock: allocations go on meanwhile.
            let Some(base) = map_aligned(REGION, REGION, true) else {
                // No memory now: the allocating threads map (and fail) on their own.
                let mut g = self.lock();
                g.helper = false;
                return;
            };
            populate(base, REGION);
            let mut g = self.lock();
            g.spares.push((base, false));
            g.counts.made += 1;
        }
    }
}

/// Faults `[addr, addr + len)` in for writing (zeroed pages; a huge page where the mapping gets
/// one): `MADV_POPULATE_WRITE` (Linux 5.14), else (or with [`populate_by_touch`]) a write to
/// each page.
fn populate(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    if !populate_by_touch() {
        // SAFETY: advice on a range of a mapping this pool just made and nothing uses yet.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
        if r == 0 {
            return;
        }
    }
    let page = crate::align::page_size();
    for off in (0..len).step_by(page) {
        // SAFETY: inside the mapping just made (readable and writable), which nothing uses yet:
        // a zero written over the zero the kernel maps.
        unsafe { std::ptr::write_volatile((addr + off) as *mut u8, 0) };
    }
}

/// Opt-in (`ODIRECT_POOL_TOUCH=1`): the helper faults a spare region in by writing to each of
/// its pages instead of with `MADV_POPULATE_WRITE`. Why: `madvise` holds the process's
/// `mmap_lock` (read) for the whole fault, and the kernel's clearing of a new huge page takes
/// 0.2 ms, or 3-6 ms on a VM whose host must back the page first (free page reporting,
/// `VIRTIO_BALLOON_F_REPORTING`, hands freed guest memory back to the host): every
/// `mmap`/`munmap` of the process (V8's heap, the pool's own regions on the JS thread) waits
/// for the write lock meanwhile, 2-30 ms per 512 MiB read stream pass in that state. A write
/// faults the page under the region's own VMA lock (Linux 6.4+, `CONFIG_PER_VMA_LOCK`; older
/// kernels take `mmap_lock` for the fault either way), which no other mapping waits for.
/// Counted, not yet a measured speed win (README, stream performance notes): opt-in.
fn populate_by_touch() -> bool {
    static TOUCH: OnceLock<bool> = OnceLock::new();
    *TOUCH.get_or_init(|| std::env::var("ODIRECT_POOL_TOUCH").is_ok_and(|v| v.trim() == "1"))
}

/// Memory of its own on small pages: a zeroed anonymous mapping of at least `len` bytes (at
/// least one) at a multiple of `align` (a power of two), marked `MADV_NOHUGEPAGE`, so the kernel
/// never backs it with a transparent huge page (not at a fault, not later in khugepaged). For
/// memory pinned under a small RLIMIT_MEMLOCK: io_uring charges a registered buffer's whole
/// compound page, 2 MiB for any part of a huge page, and 4 KiB per small page. `None` for a bad
/// alignment or when the system has no memory (or address space) for it; give it back with
/// [`SmallPages`]'s drop.
pub fn small_pages(len: usize, align: usize) -> Option<SmallPages> {
    if !align.is_power_of_two() {
        return None;
    }
    let page = crate::align::page_size();
    let size = len.max(1).checked_next_multiple_of(page)?;
    let addr = map_aligned(size, align.max(page), false)?;
    Some(SmallPages {
        ptr: NonNull::new(addr as *mut u8)?,
        size,
    })
}

/// A mapping made by [`small_pages`], unmapped when dropped.
#[derive(Debug)]
pub struct SmallPages {
    ptr: NonNull<u8>,
    size: usize,
}

impl SmallPages {
    /// The mapping's first byte.
    pub fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The mapping's size (the length asked for, rounded up to whole pages).
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for SmallPages {
    fn drop(&mut self) {
        // SAFETY: the mapping small_pages made for this value alone; its holder is done with it.
        unsafe { unmap(self.ptr.as_ptr() as usize, self.size) };
    }
}

// SAFETY: an address range its holder owns exclusively, like a Box<[u8]>.
unsafe impl Send for SmallPages {}

/// A new anonymous mapping of `size` bytes at a multiple of `align` (a power of two, at least a
/// page), marked for transparent huge pages (`huge`) or against them.
fn map_aligned(size: usize, align: usize, huge: bool) -> Option<usize> {
    // Map `align` more and unmap the unaligned head and the tail.
    let total = size.checked_add(align)?;
    // SAFETY: an anonymous private mapping; no memory of ours is involved.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let base = p as usize;
    let start = base.next_multiple_of(align);
    let head = start - base;
    let tail = total - head - size;
    // SAFETY: both ranges lie inside the mapping just made and are page aligned; the kept range
    // [start, start + size) is untouched.
    unsafe {
        if head > 0 {
            unmap(base, head);
        }
        if tail > 0 {
            unmap(start + size, tail);
        }
    }
    #[cfg(target_os = "linux")]
    // SAFETY: advice on a range of the mapping just made, which nothing uses yet. It fails only
    // where the kernel has no transparent huge pages (EINVAL): small pages then, nothing else
    // changes (and NOHUGEPAGE asks for what such a kernel does anyway).
    unsafe {
        let advice = if huge {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        libc::madvise(start as *mut libc::c_void, size, advice);
    }
    Some(start)
}

/// Unmaps `[addr, addr + size)`.
///
/// # Safety
/// A page-aligned range of a mapping this pool made, that nothing uses any more.
unsafe fn unmap(addr: usize, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { libc::munmap(addr as *mut libc::c_void, size) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool that holds nothing: no region, nothing retained, no kept mapping.
    const EMPTY: Stats = Stats {
        regions: 0,
        retained: 0,
        kept_maps: 0,
    };

    fn bytes(b: &mut Block, len: usize) -> &mut [u8] {
        // SAFETY: the test owns the block, which holds at least `len` bytes.
        unsafe { std::slice::from_raw_parts_mut(b.ptr.as_ptr(), len) }
    }

    #[test]
    fn blocks_are_aligned_zeroed_and_within_their_region() {
        let p = Pool::new(0);
        for align in [512usize, 4096, 65536, 1 << 20, REGION, 4 << 20] {
            for len in [1usize, 4096, 40_000, 256 << 10, 1 << 20, REGION, 3 << 20] {
                let mut b = p.alloc(len, align, true).unwrap();
                assert_eq!(
                    b.ptr.as_ptr() as usize % align,
                    0,
                    "len {len} align {align}"
                );
                assert!(b.size >= len);
                if !b.mapped {
                    assert!(b.size.is_power_of_two() && b.size <= REGION);
                    assert_eq!(b.ptr.as_ptr() as usize % b.size, 0);
                }
                let s = bytes(&mut b, len);
                assert!(s.iter().all(|&x| x == 0));
                s.fill(0xa5);
                p.free(b);
            }
        }
        assert_eq!(p.stats(), EMPTY);
    }

    #[test]
    fn bad_alignments_and_lengths_are_refused_not_misaligned() {
        let p = Pool::new(0);
        for align in [0usize, 3, 4097, 3 << 20] {
            assert!(p.alloc(4096, align, true).is_none(), "align {align}");
        }
        assert!(p.alloc(usize::MAX / 2 + 2, 4096, true).is_none());
        assert!(p.alloc(usize::MAX - 4095, 4096, true).is_none());
        assert!(p.alloc(1 << 20, 1 << 63, true).is_none());
        // A zero length is a block all the same (the pointer is real and aligned).
        let b = p.alloc(0, 4096, true).unwrap();
        assert_eq!(b.ptr.as_ptr() as usize % 4096, 0);
        p.free(b);
        assert_eq!(p.stats().retained, 0);
    }

    #[test]
    fn reuse_gives_the_same_memory_zeroed_or_as_left() {
        let p = Pool::new(RETAIN_BYTES);
        for len in [1 << 20, 4 << 20] {
            let mut b = p.alloc(len, 4096, true).unwrap();
            let at = b.ptr;
            bytes(&mut b, len).fill(7);
            p.free(b);
            let mut b = p.alloc(len, 4096, false).unwrap();
            assert_eq!(b.ptr, at, "a freed block is reused");
            assert!(
                bytes(&mut b, len).iter().all(|&x| x == 7),
                "not zeroed when not asked"
            );
            p.free(b);
            let mut b = p.alloc(len, 4096, true).unwrap();
            assert_eq!(b.ptr, at);
            assert!(
                bytes(&mut b, len).iter().all(|&x| x == 0),
                "zeroed when asked"
            );
            p.free(b);
        }
        let s = p.stats();
        assert_eq!((s.regions, s.kept_maps), (1, 1));
        assert_eq!(s.retained, REGION + (4 << 20));
    }

    #[test]
    fn dirt_survives_merging_and_splitting() {
        let p = Pool::new(RETAIN_BYTES);
        // Every size class, from a small block of a fresh region (its buddies are clean) up:
        // once written and freed, any block that overlaps it again comes back zeroed.
        for (small, big) in [
            (32 << 10, 64 << 10),
            (32 << 10, REGION),
            (1 << 20, 64 << 10),
        ] {
            let mut a = p.alloc(small, 4096, false).unwrap();
            bytes(&mut a, small).fill(0xaa);
            p.free(a);
            let blocks: Vec<Block> = (0..REGION / big)
                .map(|_| p.alloc(big, 4096, true).unwrap())
                .collect();
            for mut b in blocks {
                assert!(
                    bytes(&mut b, big).iter().all(|&x| x == 0),
                    "{small} then {big}"
                );
                bytes(&mut b, big).fill(0xbb);
                p.free(b);
            }
        }
    }

    #[test]
    fn buddies_share_a_region_and_merge_back() {
        let p = Pool::new(0);
        let a = p.alloc(1 << 20, 4096, true).unwrap();
        let b = p.alloc(1 << 20, 4096, true).unwrap();
        let c = p.alloc(512 << 10, 4096, true).unwrap();
        assert_eq!(
            (a.ptr.as_ptr() as usize) ^ (b.ptr.as_ptr() as usize),
            1 << 20,
            "buddies"
        );
        assert_eq!(p.stats().regions, 2);
        p.free(a);
        assert_eq!(p.stats().regions, 2, "half of a region is still in use");
        assert_eq!(p.stats().retained, (1 << 20) + REGION - (512 << 10));
        p.free(b);
        assert_eq!(
            p.stats().regions,
            1,
            "a wholly free region is unmapped over the budget"
        );
        p.free(c);
        assert_eq!(p.stats(), EMPTY);
    }

    #[test]
    fn freed_memory_is_kept_up_to_the_budget() {
        let p = Pool::new(3 * REGION);
        let blocks: Vec<Block> = (0..8)
            .map(|_| p.alloc(REGION, 4096, false).unwrap())
            .collect();
        let lowest = blocks.iter().map(|b| b.ptr).min().unwrap();
        assert_eq!(p.stats().regions, 8);
        // What the budget keeps once everything is free: three whole regions.
        let three_kept = Stats {
            regions: 3,
            retained: 3 * REGION,
            kept_maps: 0,
        };
        for b in blocks {
            p.free(b);
        }
        assert_eq!(p.stats(), three_kept);
        // Over the budget a freed mapping goes first (regions serve every size).
        let big = p.alloc(4 << 20, 4096, false).unwrap();
        p.free(big);
        assert_eq!(p.stats(), three_kept);
        // Blocks come lowest address first, from the regions kept: the lowest was kept.
        let b = p.alloc(64 << 10, 4096, true).unwrap();
        assert_eq!(b.ptr, lowest);
        assert_eq!(p.stats().regions, 3);
        p.free(b);
        assert_eq!(p.stats(), three_kept);
    }

    /// Marks a block as its holder's: one byte per page (enough to see two holders overlap).
    fn mark(b: &mut Block, len: usize, v: u8) {
        let s = bytes(b, len);
        for i in (0..len).step_by(4096).chain([len - 1]) {
            s[i] = v;
        }
    }

    fn marked(b: &mut Block, len: usize, v: u8) -> bool {
        let s = bytes(b, len);
        (0..len).step_by(4096).chain([len - 1]).all(|i| s[i] == v)
    }

    #[test]
    fn threads_share_one_pool() {
        const BUDGET: usize = 4 << 20;
        let p = Arc::new(Pool::new(BUDGET));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut held: Vec<(Block, usize)> = Vec::new();
                    let mut x = t as usize * 7919 + 1;
                    for i in 0..3000usize {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let len = 1 + (x >> 33) % (3 << 20);
                        let align = 512 << ((x >> 20) % 12);
                        let mut b = p.alloc(len, align, i % 2 == 0).unwrap();
                        assert_eq!(b.ptr.as_ptr() as usize % align, 0);
                        if i % 2 == 0 {
                            assert!(marked(&mut b, len, 0), "zeroed");
                        }
                        mark(&mut b, len, t + 1);
                        held.push((b, len));
                        if held.len() > 6 || x & 1 == 0 {
                            let (mut b, len) = held.swap_remove((x >> 8) % held.len());
                            // Nobody else wrote into it while this thread held it.
                            assert!(marked(&mut b, len, t + 1));
                            p.free(b);
                        }
                    }
                    for (mut b, len) in held {
                        assert!(marked(&mut b, len, t + 1));
                        p.free(b);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // All free: what is kept is whole regions and kept mappings, within the budget.
        let s = p.stats();
        let g = p.lock();
        let maps: usize = g.maps.iter().map(|&(_, s)| s).sum();
        assert_eq!(s.retained, s.regions * REGION + maps, "{s:?}");
        assert!(s.retained <= BUDGET, "{s:?}");
        assert_eq!(g.free[TOP_ORDER as usize].len(), s.regions);
        assert!(g.free[..TOP_ORDER as usize].iter().all(|f| f.is_empty()));
    }

    /// Pages of `[addr, addr + len)` resident now (mincore), of all.
    fn resident(addr: usize, len: usize) -> (usize, usize) {
        let page = crate::align::page_size();
        let mut v = vec![0u8; len.div_ceil(page)];
        // SAFETY: a range of a mapping the test's pool made; `v` has a byte per page.
        let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, v.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        (v.iter().filter(|b| **b & 1 == 1).count(), v.len())
    }

    #[test]
    fn a_new_region_is_a_spare_the_helper_faulted_in() {
        let p = Pool::with_spares(0, 1);
        // The first region is mapped here (nothing is ready yet), and starts the helper.
        let a = p.alloc(REGION, 4096, false).unwrap();
        assert_eq!(
            resident(a.ptr.as_ptr() as usize, REGION).0,
            0,
            "nothing touched it"
        );
        // Wait for the event itself: the helper made its spare (bounded).
        let t0 = std::time::Instant::now();
        while p.spare_counts().held == 0 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "no spare made"
            );
            std::thread::yield_now();
        }
        let b = p.alloc(REGION, 4096, true).unwrap();
        let c = p.spare_counts();
        // (The helper may be making the next spare already.)
        assert_eq!((c.mapped_here, c.taken), (1, 1), "{c:?}");
        assert!(c.made >= 1, "{c:?}");
        // Every page of the block is in memory before anything of this thread touched it.
        let (res, all) = resident(b.ptr.as_ptr() as usize, REGION);
        assert_eq!(res, all);
        // A spare is clean: handed out zeroed without a memset.
        // SAFETY: the test owns the block.
        let s = unsafe { std::slice::from_raw_parts(b.ptr.as_ptr(), REGION) };
        assert!(s.iter().all(|x| *x == 0));
        p.free(a);
        // Budget 0: the wholly free region is kept as the spare (the helper refills it first,
        // or it is unmapped when the helper's is there already).
        p.free(b);
        let c = p.spare_counts();
        assert!(c.held >= 1 && c.held <= 1 + c.recycled, "{c:?}");
        assert_eq!(p.stats().regions, 0);
    }

    /// The machine's transparent huge page mode (`always`, `madvise`, `never`), if it has them.
    fn thp_mode() -> Option<String> {
        let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
        let m = s.split('[').nth(1)?.split(']').next()?;
        Some(m.to_string())
    }

    /// Whether every page of `[ptr, ptr + len)` is part of a transparent huge page and each
    /// 2 MiB piece of the range is physically contiguous, from /proc/self/pagemap (PFNs, root only) and
    /// /proc/kpageflags; `Err` says why it cannot be told here.
    fn contiguous_huge(ptr: usize, len: usize) -> Result<bool, String> {
        use std::os::unix::fs::FileExt;
        const KPF_THP: u64 = 1 << 22;
        let page = crate::align::page_size();
        let pagemap = std::fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
        let flags = std::fs::File::open("/proc/kpageflags")
            .map_err(|e| format!("/proc/kpageflags: {e}"))?;
        let mut prev = None;
        for p in (ptr..ptr + len).step_by(page) {
            let mut e = [0u8; 8];
            pagemap
                .read_exact_at(&mut e, (p / page * 8) as u64)
                .map_err(|e| e.to_string())?;
            let e = u64::from_le_bytes(e);
            let pfn = e & ((1 << 55) - 1);
            if e >> 63 == 0 || pfn == 0 {
                return Err(format!(
                    "page {p:#x} not present, or PFNs hidden (not root)"
                ));
            }
            let mut f = [0u8; 8];
            flags
                .read_exact_at(&mut f, pfn * 8)
                .map_err(|e| e.to_string())?;
            if u64::from_le_bytes(f) & KPF_THP == 0
                || (p % REGION != 0 && prev.is_some_and(|q| q + 1 != pfn))
            {
                return Ok(false);
            }
            prev = Some(pfn);
        }
        Ok(true)
    }

    #[test]
    fn blocks_are_huge_pages_where_the_kernel_has_them() {
        match thp_mode().as_deref() {
            None | Some("never") => {
                eprintln!("SKIP: transparent huge pages are off on this machine");
                return;
            }
            _ => {}
        }
        let p = Pool::new(0);
        for (len, mapped) in [(1usize << 20, false), (256 << 10, false), (4 << 20, true)] {
            let mut b = p.alloc(len, 4096, true).unwrap();
            assert_eq!(b.mapped, mapped);
            // First touch, as a read into it would.
            bytes(&mut b, len).fill(1);
            match contiguous_huge(b.ptr.as_ptr() as usize, len) {
                Err(why) => {
                    eprintln!("SKIP: cannot see physical pages here: {why}");
                    p.free(b);
                    return;
                }
                Ok(huge) => assert!(huge, "{len} bytes are not one contiguous huge-page range"),
            }
            p.free(b);
        }
    }
}
