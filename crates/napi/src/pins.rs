//! Registered memory: the odirect allocations a backend's driver has registered (io_uring
//! fixed buffers) or locked in memory (mlock elsewhere), kept allocated here for as long as the
//! registration lasts, and the fixed-buffer index of each for the driver that names buffers by
//! index.
//!
//! The driver does the registering (`Driver::register_buffers`); this is the bookkeeping around
//! it. Ops in flight hold their own reference to their memory, so unregistering never frees
//! memory the kernel is using.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::Arc;

use napi::sys;
use odirect_core::op::Segment;

use crate::memory::{self, Alloc};

/// What the engine has registered, per backend.
#[derive(Default)]
pub struct Pins {
    /// By `BackendKind::index`: the allocations registered with that backend's driver, kept
    /// allocated until unregistered, replaced by a later registration, or the engine's end.
    kept: [Vec<Arc<Alloc>>; 3],
    /// Fixed-buffer index by allocation start, for the driver that names buffers by index.
    /// Looked up once per read/write of a registered buffer: hashed by [`AddrHasher`], not
    /// SipHash (keys are our own allocations' addresses, nothing an attacker picks).
    fixed: HashMap<usize, u16, BuildHasherDefault<AddrHasher>>,
    /// The io_uring registration is the engine's own ([`Pins::registered_auto`]: the one
    /// buffer a depth-1 loop keeps using), not the caller's: a registration of the caller's
    /// replaces it, and it never replaces one of the caller's.
    auto: bool,
}

/// A hasher for addresses: one multiply (Fibonacci hashing), its well-mixed high half folded
/// into the low half (the table picks buckets by the low bits, which a multiply alone leaves
/// zero for page-aligned addresses).
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        let p = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = p ^ (p >> 32);
    }
}

/// Whether reads/writes of registered memory on a file the kernel serves by copying (tmpfs,
/// ramfs, a buffered fallback) still go as READ_FIXED / WRITE_FIXED. By default they do: there
/// are no pages to pin per op on such a file, but the io-wq worker that makes the op (shmem has
/// no non-blocking read or write, so io_uring hands each one to a worker) copies into or out of
/// the fixed buffer's kernel mapping for less than through the user mapping, which outweighs
/// the dearer import of a fixed buffer on the submitting thread (`io_import_reg_buf`). Measured
/// with `odirect bench` on /dev/shm, 4 KiB per-op loops on `fh.registerBuffers` buffers, 14
/// interleaved paired rounds with fio: QD 64 reads 1.06-1.08x IOPS at 0.89-0.92x CPU per op,
/// QD 64 writes 0.98-1.06x IOPS at 0.90-0.97x CPU per op, QD 1 reads 1.02x at 0.98x; the
/// worker's copy of a write is 9.8% of the samples via the fixed buffer vs 15.0% via the user
/// mapping (README "Kernel features, measured"). `ODIRECT_FIXED_ON_COPY=0` sends them as plain READ / WRITE (the A/B
/// switch, read once). Native batches have their own switch (`batch::fixed_on_copy`).
pub fn fixed_on_copy() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::env::on_unless_zero("ODIRECT_FIXED_ON_COPY"))
}

/// The odirect allocations behind `views` (each view wholly inside one), or EINVAL when one is
/// not odirect's memory.
///
/// # Safety
/// `env` and every value must be live handles of the current N-API call.
pub unsafe fn allocs_of(
    env: sys::napi_env,
    views: &[sys::napi_value],
) -> Result<Vec<Arc<Alloc>>, i32> {
    views
        .iter()
        .map(|v| {
            // SAFETY: forwarded contract.
            let view = unsafe { memory::view(env, *v) }.map_err(|_| libc::EINVAL)?;
            memory::lookup(view.ptr as usize, view.len).ok_or(libc::EINVAL)
        })
        .collect()
}

/// The memory of `allocs`, as a driver registers it.
pub fn segments(allocs: &[Arc<Alloc>]) -> Vec<Segment> {
    allocs
        .iter()
        .map(|a| Segment {
            ptr: a.ptr(),
            len: a.len(),
        })
        .collect()
}

/// 0, or the errno of a failed (un)registration.
fn errno(r: io::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    }
}

impl Pins {
    /// Records how registering `allocs` with backend `i`'s driver went (`by_index`: the driver
    /// names buffers by index, whose earlier indexes are gone either way). Returns 0 or the
    /// errno. On success `allocs` are kept, replacing the backend's earlier registration.
    pub fn registered(
        &mut self,
        i: usize,
        allocs: Vec<Arc<Alloc>>,
        by_index: bool,
        r: io::Result<()>,
    ) -> i32 {
        if by_index {
            self.fixed.clear();
            if r.is_ok() {
                for (n, a) in allocs.iter().enumerate() {
                    self.fixed.insert(a.ptr() as usize, n as u16);
                }
            }
        }
        if r.is_ok() {
            self.kept[i] = allocs;
        }
        self.auto = false;
        errno(r)
    }

    /// As [`Pins::registered`], for the engine's own registration of `alloc` (by index): kept
    /// as the caller's would be, marked as the engine's.
    pub fn registered_auto(&mut self, i: usize, alloc: Arc<Alloc>, r: io::Result<()>) -> i32 {
        let ok = r.is_ok();
        let e = self.registered(i, vec![alloc], true, r);
        self.auto = ok;
        e
    }

    /// Whether backend `i` has a registration of the caller's (not the engine's own).
    pub fn caller_registered(&self, i: usize) -> bool {
        !self.kept[i].is_empty() && !self.auto
    }

    /// Records that backend `i`'s driver let go of its registration (`by_index`: as for
    /// [`Pins::registered`]); returns 0 or the errno. The registration's references go either
    /// way.
    pub fn unregistered(&mut self, i: usize, by_index: bool, r: io::Result<()>) -> i32 {
        if by_index {
            self.fixed.clear();
        }
        self.kept[i].clear();
        self.auto = false;
        errno(r)
    }

    /// The fixed-buffer index of the registered allocation starting at `owner`, if any.
    pub fn fixed_index(&self, owner: Option<usize>) -> Option<u16> {
        owner.and_then(|o| self.fixed.get(&o).copied())
    }

    /// At teardown, once no op is left: every registration's references go.
    pub fn clear(&mut self) {
        for k in self.kept.iter_mut() {
            k.clear();
        }
    }

    /// At teardown with ops still in the kernel: the registered allocations (which they may
    /// use), for the process to keep.
    pub fn take_all(&mut self) -> [Vec<Arc<Alloc>>; 3] {
        std::mem::take(&mut self.kept)
    }
}
