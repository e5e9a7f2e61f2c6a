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
use std::sync::{Arc, Weak};

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
    /// The engine's automatic sparse table on the ring ([`AutoTable`]), while it exists.
    pub auto_table: Option<AutoTable>,
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
            // A registration replaces the ring's table, the automatic one too (ops in flight
            // hold their own memory; the kernel keeps their buffers until they complete).
            self.auto_table = None;
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

    /// Whether backend `i` has a registration of the caller's or `Inner::auto_fixed`'s (not
    /// the automatic table).
    pub fn has_registration(&self, i: usize) -> bool {
        !self.kept[i].is_empty()
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
            self.auto_table = None;
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
        self.auto_table = None;
    }

    /// At teardown with ops still in the kernel: the registered allocations (which they may
    /// use), for the process to keep.
    pub fn take_all(&mut self) -> [Vec<Arc<Alloc>>; 3] {
        // The automatic table keeps nothing alive: the abandoned ops hold their own memory.
        std::mem::take(&mut self.kept)
    }
}

/// Whether pinning memory costs this process nothing it shares: CAP_IPC_LOCK (io_uring then
/// charges no locked memory), or an unlimited RLIMIT_MEMLOCK. Elsewhere io_uring charges each
/// registration to the user's locked memory (`user->locked_vm`, shared by the user's every
/// ring: other threads' and processes'), and the automatic table stays off (explicit
/// `fh.registerBuffers` keeps that limit for itself).
pub fn pinning_free() -> bool {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } == 0
        && r.rlim_cur == libc::RLIM_INFINITY
    {
        return true;
    }
    /// CAP_IPC_LOCK's bit in the capability sets.
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Slots of the automatic sparse fixed-buffer table ([`AutoTable`]).
pub const AUTO_SLOTS: u16 = 1024;
/// The largest allocation the automatic table registers (the kernel pins all of it). Larger
/// ones (a stream's 2 MiB chunks) are left alone: one use each, at the cost of a registration.
pub const AUTO_MAX_BYTES: usize = 256 << 10;
/// Bytes the automatic table keeps pinned at most (see [`AutoTable`]).
pub const AUTO_BUDGET: usize = 16 << 20;
/// Direct-mapped entries of [`AutoTable::seen`].
const SEEN: usize = 2048;

/// What [`AutoTable::slot_for`] asks of the driver.
pub trait SlotDriver {
    /// Puts `seg` into slot `i` (or empties it).
    ///
    /// # Safety
    /// As `Driver::update_buffer`.
    unsafe fn update(&mut self, i: u16, seg: Option<Segment>) -> io::Result<()>;
}

impl<T: odirect_core::io::Driver + ?Sized> SlotDriver for T {
    unsafe fn update(&mut self, i: u16, seg: Option<Segment>) -> io::Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.update_buffer(i, seg) }
    }
}

/// The engine's automatic registration of the odirect allocations its ring's ops use (a
/// sparse io_uring fixed-buffer table, `ODIRECT_AUTO_REG`): an allocation (of at most
/// [`AUTO_MAX_BYTES`]) seen by two ops gets a slot, and its reads/writes go as READ_FIXED /
/// WRITE_FIXED from then on, as those of `fh.registerBuffers` memory do, without the caller
/// registering anything (the array form `[{ buffer, position }]` of readMany / writeMany, a
/// typed batch's plain `fh.alloc` region, per-op loops).
///
/// Memory rule: an op names a slot only while it holds the slot's own allocation (every op
/// holds its memory, an `Arc`, until it is reaped), so the memory behind a slot any op uses is
/// alive, and cannot be freed, reused or moved, from the op's call to its reap, whatever JS does
/// with its buffer (GC, detach, transfer, a worker's end). The table itself keeps nothing alive
/// (a `Weak` per slot): an allocation JS lets go goes back to the pool at once, as before (a
/// write stream releases its blocks at its end for the next stream to take). A slot whose
/// allocation is gone still pins its old pages in the kernel, but no op can name it: an op's
/// slot is looked up from the allocation it holds, by identity (the `Weak`'s pointer: while the
/// slot's `Weak` lives, no other allocation can have that identity), never by address alone.
/// Such a slot is emptied in the kernel (IORING_REGISTER_BUFFERS_UPDATE, no buffer) when the
/// table needs the room, or given to the next allocation at the same address (no op can be
/// using it: its allocation is gone). JS never sees a slot index. At most [`AUTO_SLOTS`] slots,
/// [`AUTO_BUDGET`] bytes pinned.
pub struct AutoTable {
    /// By slot: the allocation registered there (its start, length, identity).
    slots: Vec<Option<(usize, usize, Weak<Alloc>)>>,
    /// Slot by allocation start.
    by_start: HashMap<usize, u16, BuildHasherDefault<AddrHasher>>,
    free: Vec<u16>,
    /// Bytes pinned by the slots (gone allocations' too, until their slot is emptied).
    bytes: usize,
    /// Allocations seen once (start, and the address of the `Alloc`), direct-mapped by start:
    /// the second op on one registers it. A stale entry only registers early.
    seen: Box<[(usize, usize); SEEN]>,
    /// Misses to let go by before the next sweep (a full table of live buffers is not swept
    /// on every op).
    backoff: u32,
    /// Registrations made, slots emptied by sweeps (tests and `callStats`).
    pub registered: u64,
    pub swept: u64,
}

impl Default for AutoTable {
    fn default() -> Self {
        Self {
            slots: vec![None; AUTO_SLOTS as usize],
            by_start: HashMap::default(),
            free: (0..AUTO_SLOTS).rev().collect(),
            bytes: 0,
            seen: Box::new([(0, 0); SEEN]),
            backoff: 0,
            registered: 0,
            swept: 0,
        }
    }
}

impl AutoTable {
    /// The slot of `alloc` (which the caller's op holds), registering it there (through `d`)
    /// on its second sighting when there is room. `Err`: the driver refused (RLIMIT_MEMLOCK, an
    /// old kernel): the caller turns the automatic table off.
    pub fn slot_for<D: SlotDriver + ?Sized>(
        &mut self,
        d: &mut D,
        alloc: &Arc<Alloc>,
    ) -> io::Result<Option<u16>> {
        let start = alloc.ptr() as usize;
        let len = alloc.len();
        let stale = match self.by_start.get(&start) {
            Some(&i) => match &self.slots[i as usize] {
                Some((_, _, w)) if std::ptr::eq(w.as_ptr(), Arc::as_ptr(alloc)) => {
                    return Ok(Some(i))
                }
                // Another allocation had this start: gone now (live allocations never share
                // a start), so no op can be using the slot.
                Some((_, _, w)) if w.strong_count() == 0 => Some(i),
                _ => return Ok(None),
            },
            None => None,
        };
        if len > AUTO_MAX_BYTES {
            return Ok(None);
        }
        let id = Arc::as_ptr(alloc) as usize;
        let h = {
            let p = (start >> 12) as u64;
            ((p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize) & (SEEN - 1)
        };
        if self.seen[h] != (start, id) {
            self.seen[h] = (start, id);
            return Ok(None);
        }
        if let Some(i) = stale {
            self.forget(i);
            self.free.push(i);
        }
        if self.free.is_empty() || self.bytes + len > AUTO_BUDGET {
            if self.backoff > 0 {
                self.backoff -= 1;
                return Ok(None);
            }
            self.sweep(d)?;
            if self.free.is_empty() || self.bytes + len > AUTO_BUDGET {
                // Every slot's allocation is alive: try again after as many misses as slots.
                self.backoff = u32::from(AUTO_SLOTS);
                return Ok(None);
            }
        }
        let i = self.free.pop().expect("a free slot (checked above)");
        // SAFETY: the slot is named only by ops that hold `alloc` (looked up by its identity,
        // above), so its memory is allocated whenever the kernel uses the slot; the pages
        // the kernel pins stay pinned until the slot is updated again or the table goes.
        let r = unsafe {
            d.update(
                i,
                Some(Segment {
                    ptr: alloc.ptr(),
                    len,
                }),
            )
        };
        if let Err(e) = r {
            self.free.push(i);
            return Err(e);
        }
        self.slots[i as usize] = Some((start, len, Arc::downgrade(alloc)));
        self.by_start.insert(start, i);
        self.bytes += len;
        self.registered += 1;
        Ok(Some(i))
    }

    /// Forgets slot `i` here (its kernel entry is replaced or emptied by the caller).
    fn forget(&mut self, i: u16) {
        if let Some((start, len, _)) = self.slots[i as usize].take() {
            if self.by_start.get(&start) == Some(&i) {
                self.by_start.remove(&start);
            }
            self.bytes -= len;
        }
    }

    /// Empties, in the kernel, every slot whose allocation is gone (no JS buffer, no op: no op
    /// can name it), freeing its pinned pages and the slot.
    pub fn sweep<D: SlotDriver + ?Sized>(&mut self, d: &mut D) -> io::Result<()> {
        for i in 0..self.slots.len() {
            let gone = self.slots[i]
                .as_ref()
                .is_some_and(|(_, _, w)| w.strong_count() == 0);
            if !gone {
                continue;
            }
            // SAFETY: emptying a slot names no memory.
            unsafe { d.update(i as u16, None) }?;
            self.forget(i as u16);
            self.free.push(i as u16);
            self.swept += 1;
        }
        Ok(())
    }

    /// Slots registered now (their allocations alive or not).
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }
}
