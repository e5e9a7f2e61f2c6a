//! Rust-owned aligned memory: the block behind every odirect-owned JS ArrayBuffer (the napi
//! crate's `memory::Alloc` shows it to JS as an external ArrayBuffer), the bounce buffer of an
//! op on memory that is not odirect's (or not aligned), and the buffers of the Rust tests.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// A zeroed, aligned block: from the heap (malloc reuses freed blocks, which keeps 1 MiB stream
/// chunks cheap), or, from 4 MiB or for alignment above a page, an anonymous mapping whose pages
/// the kernel zeroes lazily on first touch instead of a memset of the whole block up front (and
/// which munmap gives back to the system at once).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    mapped: bool,
}

/// Blocks at least this large are mapped rather than allocated.
const MAP_THRESHOLD: usize = 4 << 20;

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
        let len = len.max(1);
        let layout = Layout::from_size_align(len, align).ok()?;
        let page = crate::align::page_size();
        if len >= MAP_THRESHOLD || align > page {
            // An anonymous mapping, page aligned; for a larger alignment, map `align` more and
            // unmap the unaligned head and the tail. Pages are zero-filled by the kernel on first
            // touch, so nothing is written (or counted in RSS) until used.
            let size = len.div_ceil(page) * page;
            let extra = if align > page { align } else { 0 };
            let total = size.checked_add(extra)?;
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
            let start = base.next_multiple_of(align.max(page));
            let head = start - base;
            let tail = total - head - size;
            // SAFETY: both ranges lie inside the mapping just made and are page aligned; the
            // kept range [start, start + size) is untouched.
            unsafe {
                if head > 0 {
                    libc::munmap(p, head);
                }
                if tail > 0 {
                    libc::munmap((start + size) as *mut libc::c_void, tail);
                }
            }
            return Some(AlignedBuf {
                ptr: NonNull::new(start as *mut u8)?,
                layout: Layout::from_size_align(size, align.max(page)).ok()?,
                mapped: true,
            });
        }
        // SAFETY: layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        Some(AlignedBuf {
            ptr: NonNull::new(p)?,
            layout,
            mapped: false,
        })
    }

    pub fn len(&self) -> usize {
        self.layout.size()
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
        // SAFETY: ptr points at layout.size() initialised (zeroed) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: mapped in `try_new` with this very size; nothing uses it any more.
            unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.layout.size()) };
        } else {
            // SAFETY: allocated in `try_new` with this very layout.
            unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
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
}
