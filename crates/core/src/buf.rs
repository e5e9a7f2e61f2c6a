//! Rust-owned aligned memory: the block behind every odirect-owned JS ArrayBuffer (the napi
//! crate's `memory::Alloc` shows it to JS as an external ArrayBuffer), the bounce buffer of an
//! op on memory that is not odirect's (or not aligned), and the buffers of the Rust tests.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use crate::mempool::{self as pool, Block, SmallPages};

/// A zeroed (or, if asked, recycled) aligned block: from [`MIN_BLOCK`](crate::mempool::MIN_BLOCK) (32 KiB)
/// up, or for alignment above a page, from the process-wide [`mempool`](crate::mempool), which backs it with
/// transparent huge pages where it can (physically contiguous memory: one segment per 2 MiB for
/// the device instead of one per 4 KiB page) and keeps freed blocks for reuse; smaller blocks
/// from the heap.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    mem: Mem,
}

enum Mem {
    Heap(Layout),
    Pool(Block),
    Small(SmallPages),
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out shared slices.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` bytes aligned to `align` (a power of two). Panics on a bad layout; a zero `len`
    /// allocates one byte so the pointer is real.
    pub fn new(len: usize, align: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(1), align).expect("bad alignment");
        AlignedBuf::try_new(len, align).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
    }

    /// As [`AlignedBuf::new`], but `None` when the allocation fails or the layout is invalid
    /// (instead of aborting the process).
    pub fn try_new(len: usize, align: usize) -> Option<AlignedBuf> {
        AlignedBuf::try_new_with(len, align, true)
    }

    /// As [`AlignedBuf::try_new`]; with `zeroed: false` a block from the pool may hold the bytes
    /// of a block this process freed (for callers that overwrite what they show of it).
    pub fn try_new_with(len: usize, align: usize, zeroed: bool) -> Option<AlignedBuf> {
        let len = len.max(1);
        let layout = Layout::from_size_align(len, align).ok()?;
        if len >= pool::MIN_BLOCK || align > crate::align::page_size() {
            let b = pool::global().alloc(len, align, zeroed)?;
            return Some(AlignedBuf {
                ptr: b.ptr(),
                len,
                mem: Mem::Pool(b),
            });
        }
        // SAFETY: layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        Some(AlignedBuf {
            ptr: NonNull::new(p)?,
            len,
            mem: Mem::Heap(layout),
        })
    }

    /// A zeroed block of `len` bytes aligned to `align` (a power of two) that is never on a
    /// transparent huge page: a mapping of its own marked `MADV_NOHUGEPAGE` (see
    /// [`mempool::small_pages`](crate::mempool::small_pages)), for memory pinned under a small
    /// RLIMIT_MEMLOCK. `None` as for [`AlignedBuf::try_new`].
    pub fn try_new_small_pages(len: usize, align: usize) -> Option<AlignedBuf> {
        let len = len.max(1);
        let m = pool::small_pages(len, align)?;
        Some(AlignedBuf {
            ptr: m.ptr(),
            len,
            mem: Mem::Small(m),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points at `len` bytes we own, initialised: zeroed by us or the kernel, or
        // (a block reused without a memset) the bytes its last holder left, written since or not.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.mem, Mem::Heap(Layout::new::<u8>())) {
            // Nothing uses the block any more: back to the pool.
            Mem::Pool(b) => pool::global().free(b),
            // Unmapped as it drops.
            Mem::Small(m) => drop(m),
            // SAFETY: allocated in `try_new_with` with this very layout.
            Mem::Heap(layout) => unsafe { dealloc(self.ptr.as_ptr(), layout) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_aligned_and_zeroed() {
        for align in [512usize, 4096, 65536, 1 << 21] {
            for len in [1usize, 10_000, 1 << 20] {
                let b = AlignedBuf::new(len, align);
                assert_eq!(b.as_ptr() as usize % align, 0);
                assert!(b.len() >= len);
                assert!(b.as_slice().iter().all(|&x| x == 0));
            }
        }
    }

    /// The VmFlags line of the /proc/self/smaps entry of the mapping that holds `addr`.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ').filter(|(r, _)| r.contains('-')) {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            if inside && line.starts_with("VmFlags:") {
                return line.to_string();
            }
        }
        panic!("no mapping holds {addr:#x}")
    }

    #[test]
    fn small_pages_are_aligned_zeroed_and_never_huge() {
        for align in [512usize, 4096, 1 << 21] {
            for len in [1usize, 64 << 10, 4 << 20] {
                let mut b = AlignedBuf::try_new_small_pages(len, align).unwrap();
                assert_eq!((b.len(), b.as_ptr() as usize % align), (len, 0));
                assert!(b.as_slice().iter().all(|&x| x == 0));
                b.as_mut_slice().fill(0x5a);
                // Marked against transparent huge pages ("nh"), where a pool block is marked for
                // them ("hg").
                let flags = vm_flags(b.as_ptr() as usize);
                assert!(flags.contains(" nh"), "{flags}");
            }
        }
        assert!(AlignedBuf::try_new_small_pages(4096, 3).is_none());
        let pooled = AlignedBuf::new(64 << 10, 4096);
        assert!(vm_flags(pooled.as_ptr() as usize).contains(" hg"));
    }

    #[test]
    fn reused_memory_is_zeroed_unless_asked_not_to_be() {
        for len in [4096usize, 64 << 10, 1 << 20, 3 << 20] {
            let mut b = AlignedBuf::new(len, 4096);
            b.as_mut_slice().fill(0xff);
            drop(b);
            // Whatever block comes next (the one just freed, most likely), it reads as zeros.
            let b = AlignedBuf::new(len, 4096);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            assert_eq!(b.len(), len);
            // Not zeroed: still a valid, aligned block of the right length.
            let c = AlignedBuf::try_new_with(len, 4096, false).unwrap();
            assert_eq!((c.len(), c.as_ptr() as usize % 4096), (len, 0));
        }
    }
}
