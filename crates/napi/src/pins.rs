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
/// Uses an allocation needs before it gets a slot, at first and at least ([`AutoTable::need`]).
pub const AUTO_NEED_MIN: u32 = 2;
/// The most uses [`AutoTable::need`] asks for.
pub const AUTO_NEED_MAX: u32 = 64;
/// A slot that served fewer ops than this before it was let go (its allocation gone) did not
/// pay for its registration (one `IORING_REGISTER_BUFFERS_UPDATE`, and another to empty it).
const AUTO_FEW_OPS: u32 = 8;
/// Slots let go between two reviews of [`AutoTable::need`].
const AUTO_REVIEW: u32 = 32;

/// `ODIRECT_AUTO_REG_ADAPT=0`: the automatic table registers every allocation at its second
/// use, however few ops its slots serve (the twentieth session's rule; see [`AutoTable::need`]).
pub fn auto_adapt() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::env::on_unless_zero("ODIRECT_AUTO_REG_ADAPT"))
}

/// `ODIRECT_AUTO_REG_SERVED=0`: [`AutoTable::need`] is reviewed on let-go slots only (the
/// twenty-first session's rule), not also on live slots that have served
/// [`AUTO_FEW_OPS`] ops (see [`AutoTable::served_enough`]). Read once.
pub fn auto_served() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::env::on_unless_zero("ODIRECT_AUTO_REG_SERVED"))
}

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

/// A slot of the [`AutoTable`]: the allocation's start, length and identity, and the ops that
/// named the slot so far.
type AutoSlot = (usize, usize, Weak<Alloc>, u32);

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
    /// By slot: the allocation registered there (its start, length, identity) and the ops that
    /// named the slot so far.
    slots: Vec<Option<AutoSlot>>,
    /// Slot by allocation start.
    by_start: HashMap<usize, u16, BuildHasherDefault<AddrHasher>>,
    free: Vec<u16>,
    /// Bytes pinned by the slots (gone allocations' too, until their slot is emptied).
    bytes: usize,
    /// Allocations seen but not registered (start, [`Alloc::serial`], uses so far),
    /// direct-mapped by start: the use that brings one to [`AutoTable::need`] registers it. By
    /// serial, not by the `Arc`'s address: a fresh buffer often gets both its start and its
    /// `Arc`'s address back from the one dropped before it, and inherited its uses (the
    /// twentieth session's entries only had to tell a second use from a first).
    seen: Box<[(usize, u64, u32); SEEN]>,
    /// Uses (ops, or native batches, naming the allocation) an allocation needs before it gets a
    /// slot: [`AUTO_NEED_MIN`] at first. Reviewed every [`AUTO_REVIEW`] outcomes, an outcome
    /// being a slot let go having served fewer than [`AUTO_FEW_OPS`] ops, or a slot (live or
    /// not) reaching [`AUTO_FEW_OPS`] ops served: doubled (up to [`AUTO_NEED_MAX`]) when more
    /// than half of them were the first kind (fresh buffers used once or twice each: a
    /// registration per buffer for an op or two, 1.06-1.15x the CPU per op of no table in the
    /// twentieth session's measure), halved when fewer than an eighth were. Live slots count as
    /// soon as they served enough (twenty-second session): with only let-go slots counted, a
    /// table that had raised `need` let no slot go while buffers used many times kept theirs
    /// (it has room for 1,024), and `need` stayed up (2 -> 8 -> 16 in adversary-s21b's churn,
    /// never down); `ODIRECT_AUTO_REG_SERVED=0` counts let-go slots only (then each of them,
    /// few ops or many). Fixed at the minimum with `ODIRECT_AUTO_REG_ADAPT=0`.
    pub need: u32,
    /// [`auto_adapt`]: `need` follows the review (else it stays at [`AUTO_NEED_MIN`]).
    adapt: bool,
    /// [`auto_served`]: slots count when they reach [`AUTO_FEW_OPS`] ops served.
    served_counts: bool,
    /// Outcomes since the last review, and how many of them were slots let go with few ops.
    outcomes: u32,
    few: u32,
    /// Slots let go in all, and how many served few ops (tests and `callStats`).
    pub retired_total: u64,
    pub few_total: u64,
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
            seen: Box::new([(0, 0, 0); SEEN]),
            need: AUTO_NEED_MIN,
            adapt: auto_adapt(),
            served_counts: auto_served(),
            outcomes: 0,
            few: 0,
            retired_total: 0,
            few_total: 0,
            backoff: 0,
            registered: 0,
            swept: 0,
        }
    }
}

impl AutoTable {
    /// The slot of `alloc` (which the caller's `ops` ops hold: one, or a native batch's ops in
    /// it), registering it there (through `d`) on its [`AutoTable::need`]th sighting when there
    /// is room. `Err`: the driver refused (RLIMIT_MEMLOCK, an old kernel): the caller turns the
    /// automatic table off.
    pub fn slot_for<D: SlotDriver + ?Sized>(
        &mut self,
        d: &mut D,
        alloc: &Arc<Alloc>,
        ops: u32,
    ) -> io::Result<Option<u16>> {
        let start = alloc.ptr() as usize;
        let len = alloc.len();
        let stale = match self.by_start.get(&start) {
            Some(&i) => match &mut self.slots[i as usize] {
                Some((_, _, w, served)) if std::ptr::eq(w.as_ptr(), Arc::as_ptr(alloc)) => {
                    let before = *served;
                    *served = served.saturating_add(ops);
                    if before < AUTO_FEW_OPS && *served >= AUTO_FEW_OPS {
                        self.served_enough();
                    }
                    return Ok(Some(i));
                }
                // Another allocation had this start: gone now (live allocations never share
                // a start), so no op can be using the slot.
                Some((_, _, w, _)) if w.strong_count() == 0 => Some(i),
                _ => return Ok(None),
            },
            None => None,
        };
        if len > AUTO_MAX_BYTES {
            return Ok(None);
        }
        let id = alloc.serial();
        let h = {
            let p = (start >> 12) as u64;
            ((p.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize) & (SEEN - 1)
        };
        let (s0, i0, uses) = self.seen[h];
        let uses = if (s0, i0) == (start, id) {
            uses.saturating_add(1)
        } else {
            1
        };
        self.seen[h] = (start, id, uses);
        if uses < self.need {
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
        self.slots[i as usize] = Some((start, len, Arc::downgrade(alloc), ops));
        self.by_start.insert(start, i);
        // Counted afresh should the slot be let go and the allocation come back to its start.
        self.seen[h] = (0, 0, 0);
        self.bytes += len;
        self.registered += 1;
        if ops >= AUTO_FEW_OPS {
            self.served_enough();
        }
        Ok(Some(i))
    }

    /// Forgets slot `i` here (its kernel entry is replaced or emptied by the caller), its
    /// allocation gone: counts what the slot served for the review of [`AutoTable::need`].
    fn forget(&mut self, i: u16) {
        if let Some((start, len, _, served)) = self.slots[i as usize].take() {
            if self.by_start.get(&start) == Some(&i) {
                self.by_start.remove(&start);
            }
            self.bytes -= len;
            self.retired(served);
        }
    }

    /// A slot whose allocation is gone served `served` ops: an outcome of the review when they
    /// were few (a slot that served more counted when it reached them; with
    /// `ODIRECT_AUTO_REG_SERVED=0`, here, either way).
    fn retired(&mut self, served: u32) {
        self.retired_total += 1;
        if served < AUTO_FEW_OPS {
            self.few_total += 1;
            self.few += 1;
        } else if self.served_counts {
            // Counted when it reached AUTO_FEW_OPS.
            return;
        }
        self.outcomes += 1;
        self.review();
    }

    /// A slot reached [`AUTO_FEW_OPS`] ops served (at its registration, for a batch's region):
    /// an outcome of the review, as one let go would be, without waiting for it to be let go
    /// (see [`AutoTable::need`]).
    fn served_enough(&mut self) {
        if self.served_counts {
            self.outcomes += 1;
            self.review();
        }
    }

    /// Every [`AUTO_REVIEW`] outcomes, [`AutoTable::need`] follows how many served few ops.
    fn review(&mut self) {
        if self.outcomes < AUTO_REVIEW {
            return;
        }
        if self.adapt {
            if self.few * 2 > self.outcomes {
                self.need = (self.need * 2).min(AUTO_NEED_MAX);
            } else if self.few * 8 < self.outcomes {
                self.need = (self.need / 2).max(AUTO_NEED_MIN);
            }
        }
        self.outcomes = 0;
        self.few = 0;
    }

    /// Empties, in the kernel, every slot whose allocation is gone (no JS buffer, no op: no op
    /// can name it), freeing its pinned pages and the slot.
    pub fn sweep<D: SlotDriver + ?Sized>(&mut self, d: &mut D) -> io::Result<()> {
        for i in 0..self.slots.len() {
            let gone = self.slots[i]
                .as_ref()
                .is_some_and(|(_, _, w, _)| w.strong_count() == 0);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver that only counts what the table asks of it.
    #[derive(Default)]
    struct Counting {
        filled: u64,
        emptied: u64,
    }

    impl SlotDriver for Counting {
        unsafe fn update(&mut self, _i: u16, seg: Option<Segment>) -> io::Result<()> {
            if seg.is_some() {
                self.filled += 1;
            } else {
                self.emptied += 1;
            }
            Ok(())
        }
    }

    fn table(adapt: bool) -> AutoTable {
        AutoTable {
            adapt,
            ..AutoTable::default()
        }
    }

    /// Fresh 4 KiB buffers used by exactly two ops each (then dropped): with the rule fixed at
    /// the second use, a registration per buffer; adapting, the table stops registering them
    /// once its let-go slots show they served one op each.
    #[test]
    fn fresh_buffers_used_twice() {
        for adapt in [false, true] {
            let mut t = table(adapt);
            let mut d = Counting::default();
            let mut fixed = 0;
            for _ in 0..3000 {
                let a = memory::test_alloc(4096);
                for _ in 0..2 {
                    fixed += u32::from(t.slot_for(&mut d, &a, 1).unwrap().is_some());
                }
            }
            if adapt {
                assert!(t.need > AUTO_NEED_MIN, "need {}", t.need);
                assert!(t.registered < 1200, "{} registrations", t.registered);
                assert!(t.few_total >= u64::from(AUTO_REVIEW));
            } else {
                assert_eq!(t.need, AUTO_NEED_MIN);
                assert_eq!(t.registered, 3000);
            }
            assert_eq!(u64::from(fixed), t.registered);
            assert_eq!(d.filled, t.registered);
        }
    }

    /// 3000 fresh 4 KiB buffers, each named by two ops and dropped: `need` climbs.
    fn fresh_twice(t: &mut AutoTable, d: &mut Counting) {
        for _ in 0..3000 {
            let a = memory::test_alloc(4096);
            t.slot_for(d, &a, 1).unwrap();
            t.slot_for(d, &a, 1).unwrap();
        }
    }

    /// Buffers reused many times still get slots (at the `need`th use), and once their slots
    /// are let go having served many ops, `need` comes back down to the minimum.
    #[test]
    fn reused_buffers_bring_need_down() {
        let mut t = table(true);
        let mut d = Counting::default();
        fresh_twice(&mut t, &mut d);
        let high = t.need;
        assert!(high > AUTO_NEED_MIN);
        for _ in 0..8 {
            let set: Vec<_> = (0..64).map(|_| memory::test_alloc(4096)).collect();
            let mut fixed = 0;
            for round in 0..100 {
                for a in &set {
                    let s = t.slot_for(&mut d, a, 1).unwrap();
                    if round as u32 + 1 >= t.need {
                        fixed += u32::from(s.is_some());
                    }
                }
            }
            assert!(fixed > 64 * 50, "{fixed} fixed ops of 6400");
        }
        assert_eq!(t.need, AUTO_NEED_MIN, "need was {high}");
    }

    /// adversary-s21b's churn in small: fresh buffers used twice raise `need`; then buffers kept
    /// alive and used many times each (never let go: the table has room for them all) bring it
    /// back down once their slots have served [`AUTO_FEW_OPS`] ops. With let-go slots counted
    /// only (`ODIRECT_AUTO_REG_SERVED=0`, the old rule) no review comes and `need` stays up.
    #[test]
    fn live_buffers_bring_need_down() {
        for served in [false, true] {
            let mut t = AutoTable {
                adapt: true,
                served_counts: served,
                ..AutoTable::default()
            };
            let mut d = Counting::default();
            fresh_twice(&mut t, &mut d);
            let high = t.need;
            assert!(high > AUTO_NEED_MIN, "need {high}");
            let set: Vec<_> = (0..64).map(|_| memory::test_alloc(4096)).collect();
            let before = t.registered;
            for _ in 0..100 {
                for a in &set {
                    t.slot_for(&mut d, a, 1).unwrap();
                }
            }
            // Every buffer of the set got a slot either way; none was let go.
            assert_eq!(t.registered - before, 64);
            if served {
                assert_eq!(t.need, AUTO_NEED_MIN, "need was {high}");
            } else {
                assert_eq!(t.need, high);
            }
        }
    }

    /// A typed batch's region counts each batch as one use (the registration comes at the
    /// `need`th batch), and its slot as serving all the batch's ops.
    #[test]
    fn a_batch_region_serves_its_ops() {
        let mut t = table(true);
        let mut d = Counting::default();
        let a = memory::test_alloc(256 << 10);
        assert_eq!(t.slot_for(&mut d, &a, 64).unwrap(), None);
        let i = t.slot_for(&mut d, &a, 64).unwrap();
        assert!(i.is_some());
        assert_eq!(t.slot_for(&mut d, &a, 64).unwrap(), i);
        drop(a);
        // Its slot is let go (a sweep: the allocation is gone), having served 128 ops: not few.
        t.sweep(&mut d).unwrap();
        assert_eq!((t.retired_total, t.few_total), (1, 0));
    }
}
