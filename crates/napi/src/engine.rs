//! The engine of one JS environment (main thread or worker): a slab of ops, staged on the JS
//! thread (their memory captured by `capture`), handed to a [`Driver`] (io_uring ring or aio
//! context owned by this thread, or the thread pool) at `flush`, and reaped on the JS thread
//! when the eventfd all its drivers signal is readable (woken by `wake`, which also delivers
//! the results to JS).
//!
//! Memory rule: an op's memory is odirect-owned (an `Alloc` whose `Arc` the op holds, or a
//! bounce buffer the op owns) from capture until its completion has been reaped, so nothing a JS
//! program does (GC, transfer, detach, resize, worker exit) can free memory the kernel uses. At
//! teardown the engine cancels every op and waits for it before its memory is released; what
//! the kernel still holds after `EXIT_WAIT` goes to the process-wide reaper (`abandon_the_rest`).

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use napi::sys;
use odirect_core::io::eventfd;
use odirect_core::io::{self, BackendKind, Driver, DriverOptions, Placement};
use odirect_core::op::{OpKind, OpRef};

use crate::capture::{self, CaptureError, Mems, Seg, RESULT_DETACHED};
use crate::locks::Waiters;
use crate::pins::{self, Pins};
use crate::status;
use crate::wake::{Js, LoopState, Wake};

pub(crate) struct OpRec {
    backend: BackendKind,
    pub(crate) kind: OpKind,
    iov: Option<Box<[libc::iovec]>>,
    mem: Mems,
    fixed: Option<u16>,
    /// io_uring: submit with IOSQE_ASYNC (the file's submission may sleep; see `route`).
    punt: bool,
    /// io_uring: submit with IOSQE_ASYNC because the kernel would punt it anyway (its file
    /// refuses RWF_NOWAIT: [`FD_PUNTED`]); unlike `punt`, the op may still be waited for.
    known_punt: bool,
    submitted: bool,
    /// When the op went to the kernel: set at submission (`Inner::submit_staged`, one clock
    /// read per submission of all the ops it takes; an inline op's at its syscall), or, for a
    /// native batch's op, the reap that made room for it (`started_at`).
    started: Instant,
    /// `started` is set when the op is submitted (ops made by [`OpRec::new`]); false for a
    /// native batch's op, timed at staging from the reap's clock read (no read of its own).
    time_at_submit: bool,
    debug: Option<String>,
    /// preadv2/pwritev2 flags of a read or write (RWF_*), set by `set_rw_flags` before submission.
    pub(crate) rw_flags: i32,
    /// io_uring only: linked to the op staged after it (IOSQE_IO_LINK): that one starts when
    /// this one succeeded and is cancelled when it fails (writeMany's writes and fdatasync).
    link: bool,
    /// A native batch's op: (batch index, op index) (see `batch`).
    pub(crate) batch: Option<(u32, u32)>,
    /// A stream's chained write or read: its chain id (see `stream::Chains`).
    pub(crate) chain: Option<u32>,
    /// On the may-block ring ([`APART`]), not its backend's driver (see `Inner::route`).
    apart: bool,
}

impl OpRec {
    /// An op timed at its submission (see `started`); until then `staged` stands in (the
    /// engine's last clock read: [`Inner::staging_clock`]).
    pub(crate) fn new(
        backend: BackendKind,
        kind: OpKind,
        iov: Option<Box<[libc::iovec]>>,
        mem: Mems,
        fixed: Option<u16>,
        staged: Instant,
    ) -> OpRec {
        let mut rec = OpRec::started_at(backend, kind, iov, mem, fixed, staged);
        rec.time_at_submit = clock_at_submit();
        rec
    }

    /// [`OpRec::new`] timed from `started` (a native batch's ops staged right after a reap
    /// start at the reap's clock read, see `Inner::reaped_at`).
    pub(crate) fn started_at(
        backend: BackendKind,
        kind: OpKind,
        iov: Option<Box<[libc::iovec]>>,
        mem: Mems,
        fixed: Option<u16>,
        started: Instant,
    ) -> OpRec {
        OpRec {
            backend,
            kind,
            iov,
            mem,
            fixed,
            punt: false,
            known_punt: false,
            submitted: false,
            started,
            time_at_submit: false,
            debug: None,
            rw_flags: 0,
            link: false,
            batch: None,
            chain: None,
            apart: false,
        }
    }

    /// Its driver's place in `Inner::drivers`.
    fn driver(&self) -> usize {
        if self.apart {
            APART
        } else {
            self.backend.index()
        }
    }

    /// What `ODIRECT_DEBUG` traces of the op: "op=pwrite fd=3 offset=0 length=4096 ...".
    fn describe(&self) -> String {
        let (off, len) = self.kind.range();
        let mut what = format!(
            "op={} fd={} offset={} length={}",
            self.kind.syscall(),
            self.kind.fd(),
            off,
            len
        );
        if self.rw_flags != 0 {
            what.push_str(&format!(" rw_flags=0x{:x}", self.rw_flags));
        }
        if self.link {
            what.push_str(" link");
        }
        what
    }
}

/// `ODIRECT_SUBMIT_CLOCK=1` (opt-in, read once): ops are timed from their submission, one clock
/// read per submission (`submit_staged`), not one per op at its staging (`Instant::now` per op
/// was 1.0-1.7% of the samples in the per-op and array-form loops at depth 64 on tmpfs; 0.13-0.19%
/// with it). An op's latency is then submission to reap (without it, the JS time between its
/// staging call and the flush at the end of the microtasks counts too). Not the default: pinned
/// to one CPU it cut CPU per op (4 of 4 pairs), but `odirect bench` unpinned, with the other
/// helpers' load, put the array form at 0.93-0.99x in 7 of 7 comparisons (README "Kernel
/// features, measured").
fn clock_at_submit() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::env::on_if_one("ODIRECT_SUBMIT_CLOCK"))
}

pub struct Inner {
    pub env: sys::napi_env,
    /// The callback and results array completions are delivered to (None once torn down).
    pub js: Option<Js>,
    /// None once torn down.
    eventfd: Option<Arc<OwnedFd>>,
    /// The drivers started so far, by `BackendKind::index`, then the may-block ring ([`APART`]).
    drivers: [Option<Box<dyn Driver>>; 4],
    /// Ops on may-block descriptors go to the may-block ring (see [`APART`]): set when this
    /// thread's io_uring is made, in a worker whose ring is DEFER_TASKRUN.
    apart: bool,
    /// The queue depth this thread's io_uring was made with (the may-block ring's too).
    ring_depth: u32,
    /// This engine's thread is not the process's main thread (see [`Inner::route`]).
    worker: bool,
    pub(crate) ops: Vec<Option<OpRec>>,
    free: Vec<u32>,
    /// Ids of ops reaped whose completions are still on their way to JS: free again only after
    /// the delivery ([`Inner::recycle`]), so an op started by a promise settled early in a
    /// delivery cannot take the id of a completion delivered later in it.
    retired: Vec<u32>,
    pub(crate) staged: Vec<u32>,
    synthetic: Vec<(u64, i64)>,
    /// Completions of the reap in progress (kept for its capacity).
    raw: Vec<(u64, i64)>,
    /// (id, result, latency) triples on their way to JS, lent to `wake` for each delivery.
    pub delivery: Vec<f64>,
    inflight: usize,
    /// Of them, writes (`Write`/`Writev`; see [`Inner::wake_wait`]).
    writes_inflight: usize,
    /// Descriptors open in this environment, with their `FD_*` routing facts.
    fds: FdTable,
    /// `lock()` waits (each on its own thread), keyed from `locks::LOCK_BASE` up.
    locks: Waiters,
    /// Registered (pinned) memory, per backend.
    pins: Pins,
    debug: bool,
    /// SQPOLL idle time for the ring (0: no SQPOLL), set before the ring is made.
    pub sqpoll_idle_ms: u32,
    pub closed: bool,
    /// Descriptors opened and not yet taken (see [`Opening`]).
    pub(crate) openings: Openings,
    pub wake: Wake,
    referenced: bool,
    /// Native batches (readMany / writeMany over typed arrays).
    pub(crate) batches: crate::batch::Batches,
    /// Write streams' chains of writes, refilled at reap time (see `stream`).
    pub(crate) chains: crate::stream::Chains,
    /// A wake-up is under way with every driver quiet (see `Driver::quiet`): its rounds after
    /// the first need not reset the eventfd.
    quiet: bool,
    /// `rw` submits what is staged before it stages one more once this many reads/writes on
    /// files that do not complete inline wait (0: only at the flush; see [`Inner::rw`]).
    submit_every: usize,
    /// Reads/writes on such files staged since the last flush.
    early: usize,
    /// A flush leaves the ring's entries unsubmitted (see [`Inner::flush_but_ring`]).
    hold_ring: bool,
    /// A lone read/write goes to the kernel in its staging call (see [`Inner::rw`]);
    /// `ODIRECT_SUBMIT_ALONE=0` turns it off (for A/B).
    submit_alone: bool,
    /// Reads/writes submitted in their staging call (tests read it: `NativeEngine.aloneSubmits`).
    pub alone_submits: u64,
    /// Lone small tmpfs reads/writes made inline (see [`Inner::rw_inline`], [`Inline`]).
    inline_tmpfs: Inline,
    /// Reads made inline (tests read it: `NativeEngine.inlineReads`).
    pub inline_reads: u64,
    /// Writes made inline (see [`Inner::rw_inline`]; tests read it: `NativeEngine.callStats`).
    pub inline_writes: u64,
    /// Lone tmpfs ops not made inline because `cachestat(2)` found a page of their range
    /// swapped out (or could not tell): they went through the ring (`NativeEngine.callStats`).
    pub not_resident: u64,
    /// `/proc/swaps`, open while the engine watches for swap being turned on or off (see
    /// [`Inner::swap_free`]); None before the first inline op, or when it cannot.
    swaps: Option<std::fs::File>,
    /// The machine had swap when `/proc/swaps` was last read.
    swap_present: bool,
    /// `ODIRECT_CACHESTAT_SKIP=0`: every inline op asks cachestat(2), swap or not.
    cachestat_skip: bool,
    /// Inline ops that skipped cachestat(2): the machine has no swap, and none was turned on
    /// since `/proc/swaps` was read (`NativeEngine.callStats[4]`).
    pub cachestat_skips: u64,
    /// `ODIRECT_RW_WAIT=0` turns off the in-call wait of a lone small tmpfs op (see
    /// [`Inner::wait_in_call`]): it waits in its flush instead, as before.
    rw_wait: bool,
    /// Clock reads made to time ops' starts: one per op at its staging (with
    /// `ODIRECT_SUBMIT_CLOCK=1`: one per submission with ops in it, one per inline op); not the
    /// reaps' reads,
    /// and none for native batches' ops (`NativeEngine.callStats[5]`).
    pub op_clocks: std::cell::Cell<u64>,
    /// Reads/writes sent with IOSQE_ASYNC because their file refuses RWF_NOWAIT (see
    /// [`FD_PUNTED`]; `NativeEngine.callStats[6]`).
    pub known_punts: u64,
    /// `ODIRECT_ASYNC_PUNTED=1` (opt-in): the [`FD_PUNTED`] probe and flag.
    async_punted: bool,
    /// Reads/writes completed inside their own `rw` call (inline or by the in-call wait) and
    /// returned to JS as a [`crate::consts::done`] value (`NativeEngine.callStats`).
    pub call_done: u64,
    /// Scratch triples of an op completed in its call (kept for its capacity).
    done_out: Vec<f64>,
    /// Whether a lone read/write on an O_DIRECT file of a block device waits for its completion
    /// in its `rw` call too (see [`DiskWait`]).
    disk_wait: DiskWait,
    /// The longest such wait: the tmpfs wait's tick-safe timeout (`ODIRECT_RW_WAIT_DISK_MS`
    /// sets it, for tests: a wait that only the loop or a timer can end).
    disk_cap: std::time::Duration,
    /// The timeout of the disk wait under way (the cap, or the loop's next timer).
    disk_timeout: std::time::Duration,
    /// The event loop's descriptor the disk wait under way watches (see [`DiskWait::Loop`]).
    watch: Option<i32>,
    /// Lone disk ops that did not wait in their call because the loop had work (Loop mode).
    pub loop_busy: u64,
    /// `ODIRECT_RW_WAIT_DISK_DELIVERY=0`: a lone disk op waits in its call even while other
    /// completions are being delivered to JS (see [`Inner::disk_gate`]).
    disk_wait_delivery: bool,
    /// Lone disk ops that did not wait in their call because they were started while other
    /// completions were being delivered to JS (see [`Inner::disk_gate`]).
    pub delivery_skips: u64,
    /// Disk waits ended by an event of the loop (its descriptor became readable first).
    pub loop_ended: u64,
    /// Disk waits whose timeout was the loop's next timer (sooner than the cap).
    pub timer_bounded: u64,
    /// Disk waits whose watch fired only because of this engine's own eventfd (a signal left
    /// from before), waited again (see [`Inner::wait_in_call`]).
    pub own_wakes: u64,
    /// `ODIRECT_AUTO_FIXED=1` (opt-in, see [`Inner::auto_fixed`]): the one odirect buffer a
    /// depth-1 loop keeps using on a device's file is registered with the ring (READ_FIXED /
    /// WRITE_FIXED).
    auto_fixed: bool,
    /// The allocation (its start) the last lone disk read/write used and how many lone ones in
    /// a row used it ([`Inner::auto_fixed`]).
    hot: (usize, u32),
    /// Registrations [`Inner::auto_fixed`] made (`NativeEngine.callStats[7]`).
    pub auto_fixed_count: u64,
    /// The automatic sparse fixed-buffer table (`pins::AutoTable`, [`Inner::fixed_auto`]):
    /// on unless `ODIRECT_AUTO_REG=0`; off for good once the kernel refused it.
    auto_reg: bool,
    /// `ODIRECT_WAIT_HYBRID=1` (the ring's hybrid wait, opt-in): only then is a lone disk op's
    /// wait marked for the ring (`hint_lone`: a class key per op, ignored by a plain wait).
    hybrid: bool,
    /// The in-call wait under way is a disk op's ([`Inner::may_wait`] lets it wait).
    disk_waiting: bool,
    /// The largest read/write (bytes) the last reap took (see [`Inner::small_round`]).
    round_bytes: u64,
    /// `ODIRECT_SMALL_ROUNDS=0`: a wake-up ends after any round of few completions, small or not.
    small_rounds: bool,
    /// Rounds a wake-up went on with after a round of few small completions (tests read it:
    /// `NativeEngine.smallRounds`).
    pub small_round_count: u64,
    /// The io_uring ring is polled on its own descriptor, not through the eventfd (the libuv
    /// path with `ODIRECT_WAKE=ring`; see `DriverOptions::poll_ring`).
    pub poll_ring: bool,
    /// The wake-up under way came from the ring's own poll handle: its reaps leave the eventfd
    /// alone (what other drivers signalled there wakes its own handle).
    pub ring_wake: bool,
    /// When the last reap's completions were timed (one clock read per reap: the ops a reap
    /// takes share it, and a native batch's ops staged right after it start at it).
    pub(crate) reaped_at: Instant,
    /// `waitMicros` / `ODIRECT_WAIT_US`: how long a flush of a lone io_uring op may wait in the
    /// kernel for its completion (0: never; see [`Inner::flush_waiting`]).
    pub wait_us: u32,
    /// When the first in-kernel wait (or inline op) since the loop last woke us ran (see
    /// [`WAIT_BUDGET`]).
    wait_since: Option<Instant>,
    /// The loop's time (`Wake::loop_time`) when `wait_since` was set: once it moved, the loop
    /// has turned since, and a new chain starts (see [`Inner::chain_check`]).
    wait_turn: Option<u64>,
    /// A wait since the loop last woke us ran out of time: no more until it wakes us again.
    wait_spent: bool,
    /// The in-kernel wait of a lone small op on a tmpfs/ramfs file (see [`TMPFS_WAIT_BYTES`]);
    /// None: `ODIRECT_WAIT_TMPFS=0`, such ops take the loop's path.
    tmpfs_wait: Option<std::time::Duration>,
    /// In-kernel waits made, and those that found completions to deliver at once (tests read
    /// them: `NativeEngine.waitStats`).
    pub wait_tries: u64,
    pub waited_reaps: u64,
    /// The wake-up wait (see [`Inner::wake_wait`]): how many completions a wake-up waits for in
    /// the kernel (`ODIRECT_WAKE_WAIT`, default [`WAKE_WAIT`]: 0, never).
    wake_want: usize,
    /// Its longest wait (`ODIRECT_WAKE_WAIT_US`, default [`WAKE_WAIT_MAX_US`]).
    wake_cap: std::time::Duration,
    /// Where a wake-up waits: after its last round, before going back to the loop (default),
    /// or before its first delivery (`ODIRECT_WAKE_WAIT_AT=start`); see [`Inner::wake_wait`].
    wake_wait_end: bool,
    /// Only while the JS thread runs on a CPU in `irq_cpus` (`ODIRECT_WAKE_WAIT_CPU=0`: on
    /// any CPU, for A/B).
    wake_on_irq_cpu: bool,
    /// The CPUs that service the completions of the block devices of the direct files adopted
    /// (their interrupts' effective affinity, `io::irq`); 0: none known.
    irq_cpus: io::irq::CpuMask,
    /// `irq_cpus` of each device seen (st_dev), so an open reads sysfs once per device.
    dev_cpus: Vec<(u64, io::irq::CpuMask)>,
    /// Wake-up waits made, and those that ended with completions to reap and no event of the
    /// loop (tests read them: `NativeEngine.waitStats[6..8]`).
    pub wake_waits: u64,
    pub wake_waits_full: u64,
}

pub type Shared = RefCell<Inner>;

/// Descriptors an open off the JS thread (`tasks::OpenTask`) made and the engine has not taken
/// yet, shared with those tasks (they run on libuv's pool). A runtime that ends a worker with
/// such an open in flight may never complete or drop its task (Deno), so the task cannot be
/// the one to close them: teardown closes what is still here, and refuses (the task closes)
/// what is opened after it. Each descriptor is closed exactly once, by whoever takes it out of
/// here under the lock (a number closed here and reused since is never in the set again).
#[derive(Default)]
pub struct Opening {
    closed: bool,
    fds: Vec<RawFd>,
}

pub type Openings = Arc<std::sync::Mutex<Opening>>;

impl Opening {
    fn lock(m: &std::sync::Mutex<Opening>) -> std::sync::MutexGuard<'_, Opening> {
        // Nothing here panics while locked; a poisoned lock still guards consistent data.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `fd`, just opened; false when the engine was torn down (the caller closes it).
    pub fn opened(m: &std::sync::Mutex<Opening>, fd: RawFd) -> bool {
        let mut o = Self::lock(m);
        if o.closed {
            return false;
        }
        o.fds.push(fd);
        true
    }

    /// Takes `fd` back: true when it was still here (the caller owns it now), false when
    /// teardown closed it (the number may belong to another file since: not to be touched).
    pub fn take(m: &std::sync::Mutex<Opening>, fd: RawFd) -> bool {
        let mut o = Self::lock(m);
        match o.fds.iter().position(|&f| f == fd) {
            Some(i) => {
                o.fds.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Teardown: closes every descriptor still here; later opens are refused.
    fn close_all(m: &std::sync::Mutex<Opening>) {
        let mut o = Self::lock(m);
        o.closed = true;
        for fd in o.fds.drain(..) {
            // SAFETY: a descriptor an open made and nobody took (see `take`): ours alone.
            unsafe { libc::close(fd) };
        }
    }
}

/// Descriptors open in this environment with their `FD_*` facts, a byte each, indexed by the
/// descriptor (looked up for every op: an array index, not a hash).
#[derive(Default)]
struct FdTable(Vec<u8>);

/// Marks a tracked descriptor in [`FdTable`] (above the `FD_*` bits).
const TRACKED: u8 = 0x80;

impl FdTable {
    /// The facts of `fd` (0 when not tracked).
    fn facts(&self, fd: i32) -> u8 {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.0.get(i))
            .map_or(0, |b| b & !TRACKED)
    }

    fn insert(&mut self, fd: i32, facts: u8) {
        let Ok(i) = usize::try_from(fd) else { return };
        if i >= self.0.len() {
            self.0.resize(i + 1, 0);
        }
        self.0[i] = facts | TRACKED;
    }

    /// Stops tracking `fd`; true when it was tracked.
    fn remove(&mut self, fd: i32) -> bool {
        match usize::try_from(fd).ok().and_then(|i| self.0.get_mut(i)) {
            Some(b) if *b & TRACKED != 0 => {
                *b = 0;
                true
            }
            _ => false,
        }
    }

    /// Every tracked descriptor, untracked as it goes.
    fn drain(&mut self) -> impl Iterator<Item = i32> {
        std::mem::take(&mut self.0)
            .into_iter()
            .enumerate()
            .filter(|(_, b)| b & TRACKED != 0)
            .map(|(i, _)| i as i32)
    }
}

/// Writes one `ODIRECT_DEBUG` line to stderr, never panicking (`eprintln!` panics when the
/// write fails, and a panic here aborts the process: Node makes a piped stderr non-blocking, so a
/// reader slower than the trace gave EAGAIN). On EAGAIN it waits until the pipe has room, as
/// Node's own synchronous stderr writes do; other errors drop the line.
pub(crate) fn trace(args: std::fmt::Arguments<'_>) {
    let line = format!("{args}\n");
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writes bytes of a live slice to fd 2.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) if n < 0 => {}
            Some(libc::EAGAIN) if n < 0 => {
                let mut p = libc::pollfd {
                    fd: 2,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one live pollfd; waits for room in the pipe.
                if unsafe { libc::poll(&mut p, 1, -1) } < 0 {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// How long teardown waits for ops the kernel was asked to cancel before it abandons them.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(2000);

pub use odirect_core::io::{FD_BUFFERED, FD_MAY_BLOCK};

/// `Inner::drivers[APART]`: in a worker whose io_uring is DEFER_TASKRUN (the default), ops on
/// descriptors whose I/O may wait on a server (FUSE, NFS, procfs...: `FD_MAY_BLOCK`) go to a
/// second, COOP_TASKRUN ring made on the first such op. When the worker is terminated while a
/// stalled server holds them, a DEFER_TASKRUN ring would never post their completions (only
/// its dead submitter may run that task work), so it and the ops' memory were kept for the life
/// of the process; a COOP_TASKRUN ring's completions come without its submitter, so the
/// process-wide reaper frees it all once the server answers (`crate::reaper`). Such ops are
/// punted to io-wq workers on either ring (IOSQE_ASYNC), so the COOP ring costs them nothing
/// (faultfs 4 KiB reads at depth 16 in a worker, 6 interleaved pairs of 1.5 s, load 1.8: 1.08x
/// the reads/s of the DEFER_TASKRUN ring, per pair 0.96-1.14; CPU per op 9.4-9.9 vs 9.9-10.5
/// us); the fast files (disk, tmpfs) stay on the DEFER_TASKRUN ring (COOP_TASKRUN costs
/// ~17% on tmpfs at depth 64 in a worker). The main thread keeps one ring: its ops end with the
/// process. `ODIRECT_MAY_BLOCK_RING=0` keeps may-block ops on the thread's ring (for A/B).
///
/// The may-block ring is made and driven by a thread of its own (`crate::mayblock`), in a worker
/// on every ring setup: a thread's exit waits for the io-wq workers of the rings it submitted to,
/// and those may sleep killably in a server's request (FUSE past its `max_background`, NFS), so
/// `worker.terminate()` waited for the server (adversary-s21b). `ODIRECT_MAY_BLOCK_THREAD=0`:
/// the COOP_TASKRUN ring on the worker's thread, as before. Its cost is one handover between
/// threads per submission and per reap: faultfs 4 KiB reads in a worker, 7 interleaved pairs of
/// 1.5 s at load 10-14, a server answering at once: typed window 64 0.84x the reads/s (CPU per
/// read 3.8 vs 2.6 us), 16 lone reads 0.93x; answering 1 ms late: 0.97x (live-s22).
const APART: usize = 3;

/// Whether this thread is not the process's main thread (a worker's JS thread).
fn in_worker() -> bool {
    // The raw system call: glibc has a gettid() wrapper only from 2.30 (the addon links
    // against 2.17's symbols).
    // SAFETY: gettid has no arguments and no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    tid != i64::from(std::process::id())
}

/// An engine-only fact of a descriptor (masked off before the drivers see its facts): a
/// regular file on tmpfs or ramfs. No device works on its ops, only CPUs copying (io-wq workers
/// on io_uring, sharing the CPUs with the JS thread): submitting them earlier gains nothing,
/// and the extra `io_uring_enter` calls cost CPU.
const FD_INLINE: u8 = 0x40;

/// An engine-only fact of a descriptor: a tmpfs/ramfs file ([`FD_INLINE`]) whose file refuses
/// RWF_NOWAIT (no FMODE_NOWAIT: shmem on Linux 6.18 and before, probed at `adopt` by
/// [`refuses_nowait`]). io_uring punts every read and write on it to an io-wq worker after a
/// failed inline attempt (`io_file_supports_nowait`); with `ODIRECT_ASYNC_PUNTED=1` (opt-in) they
/// go with IOSQE_ASYNC instead: the submitting JS thread skips the attempt (0.3-0.4 µs per op less
/// on the JS thread, pinned). Not the default: such a request reaches io-wq before its file is
/// assigned, so the kernel queues it as unbound, unhashed, concurrent work (`io_prep_async_work`:
/// no REQ_F_ISREG yet; `io_uring_queue_async_work` says "normal queue" where plain writes say
/// "hashed queue"): a file's writes are no longer serialized on one worker, 4-8 workers take
/// them at once and sleep on the inode lock, and every enqueue wakes a free one. Typed window
/// writes gained, two lanes of 32 lost 0.60x (README "Kernel features, measured"). Counted:
/// `NativeEngine.callStats[6]`.
const FD_PUNTED: u8 = 0x20;

/// Whether `fd` refuses RWF_NOWAIT (EOPNOTSUPP: its file has no FMODE_NOWAIT, and io_uring
/// punts its reads and writes; see [`FD_PUNTED`]). One 1-byte `preadv2(RWF_NOWAIT)` far past
/// any end of file: the kernel checks the flag before it reads (`kiocb_set_rw_flags`), and a
/// file that takes the flag reads nothing there. False for a descriptor not open for reading
/// (EBADF: not known, no flag) and on any other answer.
fn refuses_nowait(fd: i32) -> bool {
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // Below i64::MAX by a page so that the range does not overflow (rw_verify_area).
    let pos = i64::MAX - 4096;
    // The raw system call: glibc has a preadv2() wrapper only from 2.26 (the addon links
    // against 2.17's symbols). Its offset goes as (low, high) words; on 64-bit targets the low
    // word carries it all.
    // SAFETY: one live iovec naming `byte`, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_preadv2,
            fd as libc::c_long,
            &iov as *const libc::iovec,
            1 as libc::c_long,
            pos as libc::c_long,
            (pos >> 32 >> 32) as libc::c_long,
            libc::RWF_NOWAIT as libc::c_long,
        )
    };
    r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP)
}

/// Reads/writes staged one by one (`rw`) on a file that does not complete inline go to the
/// kernel in groups of this many as they are staged, not all at the end of the microtasks:
/// when a wake-up delivers a round of ~20 completions, the first continuations' new ops reach
/// the device while the later ones still run (fio resubmits each op as it completes). Measured
/// on the disk, per op at depth 64, interleaved with fio (5 rounds of 1 s): read 0.87x -> 0.97x,
/// write 0.87x -> 0.90x (8: 0.89x / 0.90x; 2: no better than off). On tmpfs it cost up to
/// 20% (see `FD_INLINE`). Not for buffered files either (`FD_BUFFERED`: a page-cache hit is
/// copied by the submitting call itself, on the JS thread). `ODIRECT_SUBMIT_EVERY=k` overrides
/// it (0: off).
const SUBMIT_EVERY: usize = 4;

/// A round of completions none larger than this (a depth-1 loop of 4 KiB reads) does not end a
/// wake-up however few they are (see `wake::rounds`): the garbage a round can leave behind
/// without a loop turn (Node frees dropped external buffers from its immediates) is this per
/// op, and the completion that came in while the round was delivered is taken at once, not
/// through an eventfd signal, a return to the loop, epoll and a new wake-up.
const SMALL_ROUND_BYTES: u64 = 64 << 10;

/// How many completions the wake-up wait waits for (see [`Inner::wake_wait`]) when it is not
/// given (`ODIRECT_WAKE_WAIT` unset): 0, off. It is opt-in: unpinned `odirect bench` A/Bs
/// disagreed (per-op writes new/old 1.03, 1.07, 0.96), though pinned to the interrupt's CPU it
/// won 6 of 7 rounds (README, "Kernel features, measured"). 8 (`ODIRECT_WAKE_WAIT=8`) is fio's
/// `iodepth_batch_complete_min` at depth 64 in the bench's peak configuration.
const WAKE_WAIT: usize = 0;

/// The longest wake-up wait (µs): ~8 completions of a device doing 30k IOPS at depth 64.
const WAKE_WAIT_MAX_US: u32 = 500;

/// The longest in-kernel wait a flush may make (`waitMicros` is validated against it).
pub const MAX_WAIT_US: u32 = 1000;

/// At most this many ops in flight (all on the ring, all just submitted) for a flush to wait:
/// one read, or a write with its linked fdatasync. Deeper queues never wait (their wake-ups
/// deliver many completions each, the wait would only stall the JS thread).
const WAIT_MAX_OPS: usize = 2;

/// In-kernel waits settle promises inside the microtask checkpoint that flushed them: their
/// continuations' ops flush and wait again without a turn of the event loop. Once the chain has
/// run this long (or a wait timed out), flushes stop waiting until the loop wakes the engine
/// again, so timers and other I/O get their turn.
const WAIT_BUDGET: std::time::Duration = std::time::Duration::from_millis(1);

/// A lone read/write of at most this many bytes on a tmpfs/ramfs file (`FD_INLINE`), with
/// nothing else in flight, is submitted by a flush that waits in the kernel for its completion
/// (io_uring_enter with GETEVENTS, min_complete 1, as fio waits at depth 1) and settles its
/// promise in the same microtask: one system call per op instead of ~3.4 (submit, epoll_pwait,
/// an io_uring_enter to post the completion, an eventfd read every other op) and no turn of the
/// event loop. No device is involved: the io-wq worker copies a few pages and completes, so
/// the JS thread sleeps for that copy only (as it would in epoll). The wait's timeout is
/// [`tick_safe_timeout`], never reached but for a page of a swapped-out file. Measured with
/// `odirect bench` (QD 1 pinned to one CPU, 7 runs interleaved with fio): p50 10.8 -> 8.2 µs
/// (1.80x -> 1.37x fio's), CPU 10.6 -> 8.8 µs per op.
/// Chains of waits stop after `WAIT_BUDGET` until the loop turns, as for `waitMicros`.
/// `ODIRECT_WAIT_TMPFS=0` turns it off.
const TMPFS_WAIT_BYTES: u64 = 64 << 10;

/// The timeout of a tmpfs wait ([`TMPFS_WAIT_BYTES`]): one scheduler tick (the resolution of
/// CLOCK_MONOTONIC_COARSE, 1/HZ) plus 1 ms. A timeout shorter than the time to the next tick
/// makes its hrtimer the CPU's first event: arming it reprograms the timer device (in a VM an
/// exit to the hypervisor), and so does cancelling it. Measured on this VM (HZ 250): a
/// 50 µs or 1 ms timeout made each wait cost ~10 µs more (tmpfs QD 1 pinned: 18.7 vs 7.7 µs
/// per op), 5 or 20 ms nothing.
pub(crate) fn tick_safe_timeout() -> std::time::Duration {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the resolution into the live out parameter.
    let tick = if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } == 0 {
        std::time::Duration::new(res.tv_sec as u64, res.tv_nsec as u32)
    } else {
        std::time::Duration::from_millis(10)
    };
    tick.min(std::time::Duration::from_millis(10)) + std::time::Duration::from_millis(1)
}

/// Lone disk reads/writes in a row on one odirect allocation before [`Inner::auto_fixed`]
/// registers it: a loop that keeps its buffer, not one that takes a new one per op.
const AUTO_FIXED_AFTER: u32 = 8;
/// The largest allocation [`Inner::auto_fixed`] registers (the kernel pins all of it).
const AUTO_FIXED_MAX_BYTES: usize = 1 << 20;

/// Whether a lone read/write on an O_DIRECT file of a block device waits for its completion in
/// its own `rw` call (io_uring GETEVENTS, min_complete 1, as fio waits at depth 1), its result
/// coming back from the call: `ODIRECT_RW_WAIT_DISK`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DiskWait {
    /// `=0`: never (the op's completion comes through the event loop).
    Off,
    /// The default: on Node's event loop (libuv), only while the loop itself would sleep: not
    /// when `uv_backend_timeout` is 0 (immediates, pending callbacks, closing handles, a due
    /// timer), at most until its next timer, and ended as soon as its epoll descriptor is
    /// readable (a socket, a worker's message, a signal, a child: a poll on it is armed in the
    /// same ring, so the same wait sees either). Off the loop (Bun, Deno) and with
    /// `ODIRECT_WAKE=ring`: never.
    Loop,
    /// `=1`: always, up to the cap, whatever the loop has (the twelfth session's opt-in).
    Always,
}

fn disk_wait_mode() -> DiskWait {
    match std::env::var("ODIRECT_RW_WAIT_DISK").as_deref() {
        Ok("0") => DiskWait::Off,
        Ok("1") => DiskWait::Always,
        _ => DiskWait::Loop,
    }
}

/// How many times one disk wait waits again after its watch of the loop fired only because of
/// the engine's own eventfd (see `Inner::wait_in_call`).
const OWN_WAKE_REWAITS: u32 = 3;

/// Whether lone small reads/writes on tmpfs/ramfs files are made inline, on the JS thread
/// (see `Inner::rw_inline`): `ODIRECT_INLINE_TMPFS=0` never; unset (or `=reads`): reads only,
/// when cachestat(2) says no page of the op's range is swapped out (a write takes the file's
/// inode lock, which another writer may hold for as long as it likes: e.g. one whose source
/// buffer faults on a stalled FUSE mapping holds it until the server answers, so writes take
/// the bounded in-call wait instead); `=all` reads and writes, checked with cachestat(2);
/// `=1` reads and writes, unchecked where the kernel has no cachestat.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Inline {
    Off,
    Reads,
    Checked,
    Forced,
}

fn inline_tmpfs_mode() -> Inline {
    match std::env::var("ODIRECT_INLINE_TMPFS").as_deref() {
        Ok("0") => Inline::Off,
        Ok("all") => Inline::Checked,
        Ok("1") => Inline::Forced,
        _ => Inline::Reads,
    }
}

/// Pages of `len` bytes at `pos` of `fd` that `cachestat(2)` counts as evicted (for shmem: swapped
/// out); None when the kernel has no cachestat (before 6.5), or refuses it for this file.
fn cachestat_evicted(fd: i32, pos: u64, len: u64) -> Option<u64> {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// The kernel said ENOSYS once: no more calls.
    static MISSING: AtomicBool = AtomicBool::new(false);
    /// `struct cachestat_range` (include/uapi/linux/mman.h).
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    /// `struct cachestat`.
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    /// The same number on every architecture (asm-generic and x86 tables alike).
    const SYS_CACHESTAT: libc::c_long = 451;
    if MISSING.load(Ordering::Relaxed) || len == 0 {
        return None;
    }
    let range = Range { off: pos, len };
    let mut st = Stat::default();
    // SAFETY: cachestat reads the live range and writes the live, properly laid out out
    // parameter; flags must be 0.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const Range,
            &mut st as *mut Stat,
            0u32,
        )
    };
    if r == 0 {
        return Some(st.nr_evicted);
    }
    if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        MISSING.store(true, Ordering::Relaxed);
    }
    None
}

/// Whether `fd` is a regular file on tmpfs or ramfs (see [`FD_INLINE`]).
fn completes_inline(fd: i32) -> bool {
    // SAFETY: fstat writes into the zeroed POD out parameter.
    let regular = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
    };
    regular && odirect_core::file::fs_magic(fd).is_some_and(|m| m == 0x01021994 || m == 0x858458f6)
}

impl Inner {
    pub fn new(env: sys::napi_env) -> std::io::Result<Inner> {
        let efd = eventfd::new(false)?;
        Ok(Inner {
            env,
            js: None,
            eventfd: Some(Arc::new(efd)),
            drivers: [None, None, None, None],
            apart: false,
            ring_depth: 0,
            worker: in_worker(),
            ops: Vec::new(),
            free: Vec::new(),
            retired: Vec::new(),
            staged: Vec::new(),
            synthetic: Vec::new(),
            raw: Vec::new(),
            delivery: Vec::new(),
            inflight: 0,
            writes_inflight: 0,
            fds: FdTable::default(),
            locks: Waiters::new(),
            pins: Pins::default(),
            debug: status::debug(),
            sqpoll_idle_ms: crate::env::number("ODIRECT_SQPOLL").unwrap_or(0),
            closed: false,
            openings: Openings::default(),
            wake: Wake::None,
            referenced: false,
            batches: Default::default(),
            chains: Default::default(),
            quiet: false,
            submit_every: crate::env::number("ODIRECT_SUBMIT_EVERY").unwrap_or(SUBMIT_EVERY),
            early: 0,
            hold_ring: false,
            submit_alone: crate::env::on_unless_zero("ODIRECT_SUBMIT_ALONE"),
            alone_submits: 0,
            round_bytes: 0,
            inline_tmpfs: inline_tmpfs_mode(),
            inline_reads: 0,
            inline_writes: 0,
            not_resident: 0,
            swaps: None,
            swap_present: true,
            cachestat_skip: crate::env::on_unless_zero("ODIRECT_CACHESTAT_SKIP"),
            cachestat_skips: 0,
            rw_wait: crate::env::on_unless_zero("ODIRECT_RW_WAIT"),
            call_done: 0,
            op_clocks: std::cell::Cell::new(0),
            known_punts: 0,
            async_punted: crate::env::on_if_one("ODIRECT_ASYNC_PUNTED"),
            done_out: Vec::with_capacity(3),
            disk_wait: disk_wait_mode(),
            disk_cap: crate::env::number("ODIRECT_RW_WAIT_DISK_MS")
                .map_or_else(tick_safe_timeout, std::time::Duration::from_millis),
            disk_timeout: std::time::Duration::ZERO,
            watch: None,
            loop_busy: 0,
            disk_wait_delivery: crate::env::on_unless_zero("ODIRECT_RW_WAIT_DISK_DELIVERY"),
            delivery_skips: 0,
            loop_ended: 0,
            timer_bounded: 0,
            own_wakes: 0,
            disk_waiting: false,
            hybrid: crate::env::on_if_one("ODIRECT_WAIT_HYBRID"),
            auto_fixed: crate::env::on_if_one("ODIRECT_AUTO_FIXED"),
            hot: (0, 0),
            auto_fixed_count: 0,
            auto_reg: crate::env::on_unless_zero("ODIRECT_AUTO_REG"),
            small_rounds: crate::env::on_unless_zero("ODIRECT_SMALL_ROUNDS"),
            small_round_count: 0,
            poll_ring: false,
            ring_wake: false,
            reaped_at: Instant::now(),
            wait_us: crate::env::number("ODIRECT_WAIT_US").map_or(0, |v: u32| v.min(MAX_WAIT_US)),
            tmpfs_wait: (crate::env::on_unless_zero("ODIRECT_WAIT_TMPFS")).then(tick_safe_timeout),
            wait_since: None,
            wait_turn: None,
            wait_spent: false,
            wait_tries: 0,
            wake_want: crate::env::number("ODIRECT_WAKE_WAIT").unwrap_or(WAKE_WAIT),
            wake_cap: std::time::Duration::from_micros(
                crate::env::number("ODIRECT_WAKE_WAIT_US")
                    .unwrap_or(WAKE_WAIT_MAX_US)
                    .min(MAX_WAIT_US)
                    .into(),
            ),
            wake_on_irq_cpu: crate::env::on_unless_zero("ODIRECT_WAKE_WAIT_CPU"),
            wake_wait_end: std::env::var("ODIRECT_WAKE_WAIT_AT").as_deref() != Ok("start"),
            irq_cpus: 0,
            dev_cpus: Vec::new(),
            wake_waits: 0,
            wake_waits_full: 0,
            waited_reaps: 0,
        })
    }

    /// The eventfd (None once torn down, when nothing signals it any more).
    pub fn eventfd_arc(&self) -> Option<Arc<OwnedFd>> {
        self.eventfd.clone()
    }

    /// The eventfd's number, -1 once torn down (a write to -1 fails harmlessly).
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_ref().map_or(-1, |e| e.as_raw_fd())
    }

    /// At teardown: closes the eventfd (a runtime that never finalizes the engine's JS object
    /// must not keep a descriptor per worker).
    pub fn let_go(&mut self) {
        self.eventfd = None;
    }

    pub fn path_name(&self) -> &'static str {
        self.wake.name()
    }

    /// Asks for an SQPOLL ring (idle ms; 0: none). "" when done, else why not.
    pub fn set_sqpoll(&mut self, idle_ms: u32) -> String {
        if self.drivers[BackendKind::IoUring.index()].is_some() && self.sqpoll_idle_ms != idle_ms {
            return "the io_uring ring of this thread already exists; set sqpoll before the first open".into();
        }
        self.sqpoll_idle_ms = idle_ms;
        String::new()
    }

    pub fn ring_setup(&self) -> String {
        self.drivers[BackendKind::IoUring.index()]
            .as_ref()
            .map(|d| d.describe())
            .unwrap_or_default()
    }

    /// Starts (once) a backend; "" when it works, else why not.
    pub fn ensure(&mut self, kind: BackendKind, queue_depth: u32, threads: u32) -> String {
        if self.closed {
            return "the engine is shut down".into();
        }
        let i = kind.index();
        if self.drivers[i].is_some() {
            return String::new();
        }
        let Some(efd) = self.eventfd.clone() else {
            return "the engine is shut down".into();
        };
        let mut opts = DriverOptions {
            queue_depth: crate::consts::queue_depth(queue_depth),
            sqpoll_idle_ms: self.sqpoll_idle_ms,
            poll_ring: self.poll_ring,
            ..DriverOptions::default()
        };
        if threads > 0 {
            opts.threads = threads as usize;
        }
        match io::create(kind, &efd, &opts) {
            Ok(d) => {
                if let Some(fd) = d.poll_fd() {
                    // Its completions are not announced on the eventfd: without a watch on
                    // its own descriptor they would never be reaped.
                    if let Err(why) = self.wake.watch(fd) {
                        return why;
                    }
                }
                if kind == BackendKind::IoUring {
                    self.ring_depth = opts.queue_depth;
                    // With its own thread (the default) on every setup: any ring the worker's
                    // thread submits to makes its exit wait for the io-wq workers (mayblock).
                    self.apart = (crate::mayblock::own_thread()
                        || d.describe()
                            .starts_with(io::ring::Setup::DeferTaskrun.name()))
                        && self.worker
                        && crate::env::on_unless_zero("ODIRECT_MAY_BLOCK_RING");
                }
                self.drivers[i] = Some(d);
                String::new()
            }
            Err(u) => u.reason,
        }
    }

    fn has_backend(&self, kind: BackendKind) -> bool {
        self.drivers[kind.index()].is_some()
    }

    /// What an op staged now is timed from: a clock read of its own (its start), or with
    /// `ODIRECT_SUBMIT_CLOCK=1` the last reap's read until its submission sets its start.
    fn staging_clock(&self) -> Instant {
        if clock_at_submit() {
            return self.reaped_at;
        }
        self.op_clock()
    }

    /// A clock read that times an op's start (counted: `op_clocks`).
    fn op_clock(&self) -> Instant {
        self.op_clocks.set(self.op_clocks.get() + 1);
        Instant::now()
    }

    fn slot(&mut self, rec: OpRec) -> u32 {
        if let Some(k) = self.free.pop() {
            self.ops[k as usize] = Some(rec);
            k
        } else {
            self.ops.push(Some(rec));
            (self.ops.len() - 1) as u32
        }
    }

    /// Where an op goes, as its driver says (`Driver::placement`), so that the JS thread never
    /// sleeps in the kernel and no op lands where it cannot run: on io_uring an op on a
    /// descriptor whose submission may sleep is submitted with IOSQE_ASYNC (an io-wq worker
    /// issues it, the JS thread's io_uring_enter only queues it); what a driver cannot run
    /// (ftruncate before Linux 6.9; fallocate, ftruncate and close on aio) or would block on
    /// (aio on buffered or FUSE descriptors: io_submit runs buffered I/O synchronously and
    /// sleeps on FUSE's request limit) goes to the thread pool.
    fn route(&mut self, rec: &mut OpRec, facts: u8) {
        let punted = facts & FD_PUNTED != 0;
        // The drivers' facts only (aio sends any descriptor with a fact elsewhere).
        let facts = facts & !(FD_INLINE | FD_PUNTED);
        if self.worker
            && rec.backend == BackendKind::IoUring
            && facts & FD_MAY_BLOCK != 0
            && matches!(rec.kind, OpKind::Close { .. })
            && self.ensure(BackendKind::ThreadPool, 0, 0).is_empty()
        {
            // In a worker, the close of a FUSE file goes to the thread pool: it waits for the
            // server's FLUSH reply, a request the kernel waits for uninterruptibly, and a thread
            // that exits waits for its io_uring's io-wq workers (io_wq_put_and_exit): a worker
            // terminated while a stalled server held its close could not end, and Node's main
            // thread, joining it, froze until the server answered. A pool thread is the
            // process's own: the worker ends, the reaper takes the pool.
            rec.backend = BackendKind::ThreadPool;
            return;
        }
        if self.apart
            && rec.backend == BackendKind::IoUring
            && facts & FD_MAY_BLOCK != 0
            && self.ensure_apart()
        {
            rec.apart = true;
            // Buffers are registered with the thread's ring only.
            rec.fixed = None;
        }
        let Some(d) = self.drivers[rec.driver()].as_ref() else {
            return;
        };
        match d.placement(&rec.kind, facts) {
            Placement::Inline => {
                if punted && rec.backend == BackendKind::IoUring && rec.kind.is_rw() {
                    rec.known_punt = true;
                    self.known_punts += 1;
                }
            }
            Placement::Punt => rec.punt = true,
            Placement::Elsewhere => {
                if self.ensure(BackendKind::ThreadPool, 0, 0).is_empty() {
                    rec.backend = BackendKind::ThreadPool;
                    rec.apart = false;
                }
            }
        }
    }

    /// Makes the may-block ring ([`APART`]) if there is none yet; false when it cannot be made
    /// (such ops then stay on the thread's ring, as before).
    fn ensure_apart(&mut self) -> bool {
        if self.drivers[APART].is_some() {
            return true;
        }
        let Some(efd) = self.eventfd.as_ref() else {
            return false;
        };
        let made: Result<Box<dyn Driver>, io::Unavailable> = if crate::mayblock::own_thread() {
            crate::mayblock::MayBlockRing::start(self.ring_depth, efd.clone())
                .map(|r| Box::new(r) as Box<dyn Driver>)
        } else {
            io::ring::LocalRing::coop(self.ring_depth, efd.as_raw_fd())
                .map(|r| Box::new(r) as Box<dyn Driver>)
        };
        match made {
            Ok(r) => {
                self.drivers[APART] = Some(r);
                true
            }
            Err(u) => {
                if self.debug {
                    trace(format_args!("odirect: no may-block ring: {}", u.reason));
                }
                self.apart = false;
                false
            }
        }
    }

    /// Takes `rec` in (in flight from now on) and stages it for the next flush.
    pub(crate) fn stage(&mut self, rec: OpRec) -> u32 {
        let facts = self.fds.facts(rec.kind.fd());
        self.stage_with(rec, facts)
    }

    /// [`Inner::stage`] routed by `facts` (a close's: its descriptor has left the table).
    fn stage_with(&mut self, mut rec: OpRec, facts: u8) -> u32 {
        self.route(&mut rec, facts);
        let write = matches!(rec.kind, OpKind::Write { .. } | OpKind::Writev { .. });
        let k = self.slot(rec);
        self.inflight += 1;
        self.writes_inflight += usize::from(write);
        self.update_ref();
        self.staged.push(k);
        k
    }

    pub(crate) fn fixed_for(
        &self,
        kind: BackendKind,
        fd: i32,
        owner: Option<usize>,
    ) -> Option<u16> {
        self.fixed_index(kind, fd, owner, crate::pins::fixed_on_copy())
    }

    /// The fixed-buffer index of registered memory at `owner` for an op on `fd` (None: not
    /// registered, or the driver names no buffers); `on_copy`: also on a file the kernel serves
    /// by copying (tmpfs, buffered), where nothing is pinned per op.
    pub(crate) fn fixed_index(
        &self,
        kind: BackendKind,
        fd: i32,
        owner: Option<usize>,
        on_copy: bool,
    ) -> Option<u16> {
        let fixed = self.drivers[kind.index()]
            .as_ref()
            .is_some_and(|d| d.fixed_buffers());
        // A copying file (tmpfs, buffered) pins nothing per op: see `pins::fixed_on_copy`.
        let copies = self.fds.facts(fd) & (FD_INLINE | FD_BUFFERED) != 0;
        if !fixed || (copies && !on_copy) {
            return None;
        }
        self.pins.fixed_index(owner)
    }

    /// [`Inner::fixed_index`] of the odirect allocation `alloc` (a whole allocation: an op's
    /// memory lies in it), and when the caller registered nothing on the ring, the engine's own
    /// registration of it in the automatic sparse table (`pins::AutoTable`: on its second use,
    /// while there is room; the table is made at the first). None: the op goes as a plain
    /// READ / WRITE.
    pub(crate) fn fixed_auto(
        &mut self,
        kind: BackendKind,
        fd: i32,
        alloc: &Arc<crate::memory::Alloc>,
        ops: u32,
        on_copy: bool,
    ) -> Option<u16> {
        let owner = Some(alloc.ptr() as usize);
        if !self.auto_reg || kind != BackendKind::IoUring {
            return self.fixed_index(kind, fd, owner, on_copy);
        }
        let ring = kind.index();
        let copies = self.fds.facts(fd) & (FD_INLINE | FD_BUFFERED) != 0;
        let d = self.drivers[ring].as_mut().filter(|d| d.fixed_buffers())?;
        if copies && !on_copy {
            return None;
        }
        if self.pins.has_registration(ring) {
            return self.pins.fixed_index(owner);
        }
        if self.pins.auto_table.is_none() {
            // Where pinning is charged to RLIMIT_MEMLOCK (no CAP_IPC_LOCK, a finite limit),
            // the table would spend the locked memory of the user, which io_uring counts per
            // user, not per ring: a worker's or another process's fh.registerBuffers then
            // failed ERR_ODIRECT_MEMLOCK (8 MiB limit: 86 automatic slots took it all).
            if !pins::pinning_free() || d.register_sparse(u32::from(pins::AUTO_SLOTS)).is_err() {
                self.auto_reg = false;
                return None;
            }
            self.pins.auto_table = Some(pins::AutoTable::default());
        }
        let t = self.pins.auto_table.as_mut()?;
        match t.slot_for(&mut **d, alloc, ops) {
            Ok(i) => i,
            Err(_) => {
                // RLIMIT_MEMLOCK or the like: no more automatic registrations on this engine
                // (the slots made so far stay usable).
                self.auto_reg = false;
                None
            }
        }
    }

    /// The automatic table's [registrations made, slots emptied by sweeps, slots in use now,
    /// uses an allocation needs before it gets a slot, slots let go (their allocations gone),
    /// of them those that served few ops] (zeros before the table exists, and after a
    /// registration of the caller's replaced it).
    pub fn auto_table_stats(&self) -> [u64; 6] {
        self.pins.auto_table.as_ref().map_or([0; 6], |t| {
            [
                t.registered,
                t.swept,
                t.len() as u64,
                u64::from(t.need),
                t.retired_total,
                t.few_total,
            ]
        })
    }

    /// Refuses new ops once shut down or on a backend that was never started.
    pub(crate) fn ready(&self, kind: BackendKind) -> Result<(), CaptureError> {
        if self.closed {
            return Err(CaptureError::Closed);
        }
        if !self.has_backend(kind) {
            return Err(CaptureError::NoBackend);
        }
        Ok(())
    }

    /// Stages a read or write of one view segment with its preadv2/pwritev2 flags. Returns its
    /// ticket (`consts::ticket`). `alone`: the caller sets no link on it afterwards, so when it
    /// is the only op staged or in flight it goes to the kernel in this call (one
    /// `io_uring_enter`, as the flush would make at the end of the microtasks) and the ticket
    /// carries `TICKET_SUBMITTED`: no flush, no microtask for it (see `SUBMIT_ALONE`). A lone
    /// small op on a tmpfs/ramfs file may even complete in this call (inline, or by an
    /// in-kernel wait: [`Inner::rw_inline`], [`Inner::wait_in_call`]): then the return value is
    /// a [`crate::consts::done`] value (result and latency), the op id already free again.
    ///
    /// # Safety
    /// `v` must be a live handle of the current N-API call on `self.env`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rw(
        &mut self,
        kind: BackendKind,
        write: bool,
        fd: i32,
        v: sys::napi_value,
        offset: usize,
        length: usize,
        position: u64,
        mem_align: usize,
        rw_flags: i32,
        alone: bool,
    ) -> Result<f64, CaptureError> {
        self.ready(kind)?;
        if self.fds.facts(fd) & (FD_INLINE | FD_BUFFERED) == 0 && self.submit_every > 0 {
            // What was staged before (its flags and links set by now: JS sets them right
            // after each staging call) goes in now: see SUBMIT_EVERY.
            if self.early >= self.submit_every {
                self.flush();
            }
            self.early += 1;
        }
        // SAFETY: forwarded contract.
        let seg = unsafe { capture::capture(self.env, v, offset, length, mem_align, write)? };
        if self.auto_fixed && alone && self.inflight == 0 && kind == BackendKind::IoUring {
            self.auto_fixed(fd, &seg);
        }
        let (mut rec, bounced) = self.single(kind, write, fd, seg, position);
        rec.rw_flags = rw_flags;
        let k = self.stage(rec);
        let ticket = crate::consts::ticket(k, bounced);
        // A lone op: nothing else staged or in flight (a depth-1 loop's every op), so nothing
        // it could overtake. The wait of `waitMicros` happens in the flush, so it keeps the flush.
        if alone && self.submit_alone && self.inflight == 1 && self.wait_us == 0 {
            self.chain_check();
            if rw_flags == 0 && self.goes_inline(fd, length, write) {
                if self.resident(fd, position, length) {
                    let r = self.rw_inline(k);
                    return Ok(self.complete_in_call(k, r, bounced));
                }
                // A page of the range is swapped out: the ring reads it back, on an io-wq
                // worker, and the JS thread does not wait for it.
                self.not_resident += 1;
            } else if self.waits_alone(fd, length) {
                if !self.rw_wait {
                    // Waited for in its flush (`flush_waiting`).
                    return Ok(ticket.into());
                }
                if let Some(done) = self.wait_in_call(k, bounced) {
                    return Ok(done);
                }
                // Submitted; its completion comes as any other's.
                return Ok((ticket | crate::consts::TICKET_SUBMITTED).into());
            } else if self.disk_gate(fd) {
                if self.hybrid {
                    self.hint_lone(k, fd, write, length);
                }
                self.disk_waiting = true;
                let done = self.wait_in_call(k, bounced);
                self.disk_waiting = false;
                self.watch = None;
                return Ok(done.unwrap_or((ticket | crate::consts::TICKET_SUBMITTED).into()));
            }
            self.flush();
            self.alone_submits += 1;
            return Ok((ticket | crate::consts::TICKET_SUBMITTED).into());
        }
        Ok(ticket.into())
    }

    /// Before a lone read/write (nothing staged or in flight) of `seg` on `fd`: when it is the
    /// [`AUTO_FIXED_AFTER`]th in a row on the same odirect allocation (of at most
    /// [`AUTO_FIXED_MAX_BYTES`]) on a file the device serves by DMA (not tmpfs, buffered or a
    /// file that may sleep), and the caller has no registration of its own on the ring, that
    /// allocation is registered with the ring (IORING_REGISTER_BUFFERS, replacing the engine's
    /// earlier one): from this op on its reads/writes go as READ_FIXED / WRITE_FIXED, as those
    /// of `fh.registerBuffers` memory do, and the kernel no longer pins and unpins its page per
    /// op (the depth-1 loop's saving of registered buffers: see README "Depth 1 on the disk").
    /// The allocation stays allocated while registered (one at a time, until another takes its
    /// place, the caller registers buffers, or the engine ends). A failed registration
    /// (RLIMIT_MEMLOCK) turns this off for the engine. Opt-in (`ODIRECT_AUTO_FIXED=1`): paired
    /// A/Bs found no p50 or CPU gain at depth 1 on this VM (README "Depth 1 on the disk").
    /// Called with nothing staged or in flight on the engine.
    fn auto_fixed(&mut self, fd: i32, seg: &Seg) {
        let (Some(owner), capture::Mem::Owned(alloc, _)) = (seg.owner, &seg.mem) else {
            self.hot = (0, 0);
            return;
        };
        let ring = BackendKind::IoUring.index();
        if self.auto_reg
            || self.fds.facts(fd) & (FD_INLINE | FD_BUFFERED | FD_MAY_BLOCK) != 0
            || alloc.len() > AUTO_FIXED_MAX_BYTES
            || self.pins.fixed_index(Some(owner)).is_some()
            || self.pins.caller_registered(ring)
        {
            return;
        }
        let n = if self.hot.0 == owner {
            self.hot.1.saturating_add(1)
        } else {
            1
        };
        self.hot = (owner, n);
        if n < AUTO_FIXED_AFTER {
            return;
        }
        let Some(d) = self.drivers[ring].as_mut().filter(|d| d.fixed_buffers()) else {
            return;
        };
        // SAFETY: the allocation stays alive in `pins` until unregistration or a later
        // registration, and past the driver's end (teardown drops the driver first); nothing
        // is in flight on this ring's earlier registration (this op is alone), and ops hold
        // their own memory anyway.
        let r = unsafe { d.register_buffers(&pins::segments(std::slice::from_ref(alloc))) };
        if r.is_err() {
            self.auto_fixed = false;
        } else {
            self.auto_fixed_count += 1;
        }
        self.pins.registered_auto(ring, alloc.clone(), r);
    }

    /// Whether the lone read/write just staged on `fd` waits for its completion in its call (a
    /// block device's O_DIRECT file, see [`DiskWait`]); sets the wait's timeout and the loop
    /// descriptor it watches, and counts why a loop-aware wait did not start or was shortened.
    fn disk_gate(&mut self, fd: i32) -> bool {
        if self.disk_wait == DiskWait::Off
            || self.wait_spent
            || self.fds.facts(fd) & (FD_INLINE | FD_BUFFERED | FD_MAY_BLOCK) != 0
        {
            return false;
        }
        // Started while more than one completion is being delivered to JS (their ids retire
        // when the delivery ends; an op completed in its own call is not among them): the
        // continuations of the other settled promises are about to start ops of their own, on
        // this thread. Waiting here would hold them back until this op completes, and the next
        // one alone again after it: a per-op loop at depth 4 whose 4 reads of 1 MiB the device
        // completed together ran at depth 1 for the wait budget after each such delivery
        // (counted: bench/counts/seqop.js). A lone op is still submitted in its call.
        if self.disk_wait_delivery && self.retired.len() > 1 {
            self.delivery_skips += 1;
            return false;
        }
        if self.disk_wait == DiskWait::Always {
            self.disk_timeout = self.disk_cap;
            self.watch = None;
            return true;
        }
        if self.poll_ring {
            // The ring's own descriptor is in the loop's epoll set and would wake the watch.
            return false;
        }
        match self.wake.loop_state() {
            None => false,
            Some(LoopState::Busy) => {
                self.loop_busy += 1;
                false
            }
            Some(LoopState::Idle { fd, left }) => {
                self.disk_timeout = match left {
                    Some(t) if t < self.disk_cap => {
                        self.timer_bounded += 1;
                        t
                    }
                    _ => self.disk_cap,
                };
                self.watch = Some(fd);
                true
            }
        }
    }

    /// Tells the ring that its next wait is for the lone disk read/write `k` (`length` bytes on
    /// `fd`): it may wait in the hybrid way (`ODIRECT_WAIT_HYBRID=1`, opt-in), learning how long such ops
    /// take per file, direction and size (a power of two).
    fn hint_lone(&mut self, k: u32, fd: i32, write: bool, length: usize) {
        let on_ring = self.ops[k as usize]
            .as_ref()
            .is_some_and(|r| r.backend == BackendKind::IoUring);
        if let (true, Some(d)) = (on_ring, self.drivers[BackendKind::IoUring.index()].as_mut()) {
            let size = usize::BITS - length.leading_zeros();
            d.hint_lone((u64::from(fd as u32) << 32) | (u64::from(write) << 31) | u64::from(size));
        }
    }

    /// The ring's hybrid-wait counts (`Driver::hybrid_stats`; zeros without a ring).
    pub fn hybrid_stats(&self) -> [u64; 9] {
        self.drivers[BackendKind::IoUring.index()]
            .as_ref()
            .map_or([0; 9], |d| d.hybrid_stats())
    }

    /// Whether the flush of a lone read/write of `length` bytes on `fd` may wait in the kernel
    /// (a small op on tmpfs: [`TMPFS_WAIT_BYTES`], within the chain budget).
    fn waits_alone(&self, fd: i32, length: usize) -> bool {
        self.tmpfs_wait.is_some()
            && !self.wait_spent
            && self.fds.facts(fd) & FD_INLINE != 0
            && length as u64 <= TMPFS_WAIT_BYTES
    }

    /// Whether a lone read/write of `length` bytes on `fd` is made inline ([`Inner::rw_inline`]):
    /// a small op on a tmpfs/ramfs file, inline ops on (writes too: [`Inline`]), within the
    /// chain budget (`WAIT_BUDGET`: then the loop's turn comes first).
    fn goes_inline(&mut self, fd: i32, length: usize, write: bool) -> bool {
        if self.inline_tmpfs == Inline::Off
            || (write && self.inline_tmpfs == Inline::Reads)
            || self.wait_spent
            || self.fds.facts(fd) & FD_INLINE == 0
            || length as u64 > TMPFS_WAIT_BYTES
        {
            return false;
        }
        if self.wait_since.is_some_and(|t| t.elapsed() > WAIT_BUDGET) {
            self.wait_spent = true;
            return false;
        }
        true
    }

    /// Whether every page of `len` bytes at `pos` of the tmpfs/ramfs file `fd` is in memory or
    /// a hole (none swapped out), so that a pread/pwrite of it on this thread copies memory and
    /// never waits for a swap device: `cachestat(2)` (Linux 6.5+) counts a swapped-out shmem
    /// page as evicted. Without cachestat only `ODIRECT_INLINE_TMPFS=1` goes inline unchecked.
    fn resident(&mut self, fd: i32, pos: u64, len: usize) -> bool {
        if self.swap_free() {
            self.cachestat_skips += 1;
            return true;
        }
        match cachestat_evicted(fd, pos, len as u64) {
            Some(evicted) => evicted == 0,
            None => self.inline_tmpfs == Inline::Forced,
        }
    }

    /// Whether the machine has no swap, known without a system call: `/proc/swaps` listed none
    /// when last read, and the ring's one-shot poll on it (POLLPRI: raised by every swapon and
    /// swapoff) has not fired, nor can have unseen (no completion waits in the ring's queue or
    /// as task work). Without swap no tmpfs page can be swapped out, so cachestat(2) (0.40-0.47
    /// µs of a 2.8 µs inline read) can be skipped. The first op after a change (or the engine's
    /// first) reads `/proc/swaps` again and re-arms the poll, and asks cachestat this once.
    fn swap_free(&mut self) -> bool {
        use std::io::{Read, Seek};
        if !self.cachestat_skip {
            return false;
        }
        let ring = BackendKind::IoUring.index();
        let Some(d) = self.drivers[ring].as_ref() else {
            return false;
        };
        if d.swaps_unchanged() {
            return !self.swap_present;
        }
        if self.swaps.is_none() {
            match std::fs::File::open("/proc/swaps") {
                Ok(f) => self.swaps = Some(f),
                Err(_) => {
                    self.cachestat_skip = false;
                    return false;
                }
            }
        }
        let Some(file) = self.swaps.as_mut() else {
            return false;
        };
        let Some(d) = self.drivers[ring].as_mut() else {
            return false;
        };
        match d.watch_swaps(file.as_raw_fd()) {
            None => self.cachestat_skip = false,
            // Armed, and a completion waits (maybe the poll's): cachestat this time.
            Some(false) => {}
            // Armed now: a change from here on fires it; read the list as it is now.
            Some(true) => {
                let mut text = String::new();
                let listed = file.rewind().and_then(|_| file.read_to_string(&mut text));
                // Anything but the header line (or an unreadable list) counts as swap.
                self.swap_present =
                    listed.is_err() || text.lines().skip(1).any(|l| !l.trim().is_empty());
            }
        }
        false
    }

    /// The lone read or write `k` just staged, on a tmpfs/ramfs file (see [`Inner::goes_inline`]),
    /// made now with pread(2)/pwrite(2) on this thread: io_uring hands every tmpfs op to an
    /// io-wq worker (shmem has no non-blocking read), which costs a worker wake-up and a
    /// completion back, several times the copy itself. Returns its result (or -errno).
    fn rw_inline(&mut self, k: u32) -> i64 {
        let Some(rec) = self.ops[k as usize].as_mut() else {
            return -(libc::EINVAL as i64);
        };
        if self.debug {
            let what = rec.describe();
            trace(format_args!("odirect: inline id={k} {what}"));
            // `finish` traces its completion.
            rec.debug = Some(what);
        }
        if rec.time_at_submit {
            self.op_clocks.set(self.op_clocks.get() + 1);
            rec.started = Instant::now();
        }
        let r = match rec.kind {
            // SAFETY: the op's captured memory (odirect-owned or its bounce buffer, `ptr[..len]`)
            // is held by `rec` until its completion is reaped (below, in this call), and used by
            // nothing else meanwhile; `execute` makes one pread/pwrite (EINTR retried).
            OpKind::Read { .. } | OpKind::Write { .. } => unsafe {
                odirect_core::io::pool::execute(&rec.kind)
            },
            _ => return -(libc::EINVAL as i64),
        };
        if matches!(rec.kind, OpKind::Read { .. }) {
            self.inline_reads += 1;
        } else {
            self.inline_writes += 1;
        }
        rec.submitted = true;
        self.staged.retain(|&s| s != k);
        self.chain_started();
        r
    }

    /// Whether a native batch being started may make its ops inline (`batch::start`, a window of
    /// 1): as a lone op may in [`Inner::rw`], nothing else is staged or in flight, and no
    /// `waitMicros` wait asked for. Ends a chain of inline ops the loop has turned since.
    pub(crate) fn batch_may_inline(&mut self) -> bool {
        if !(self.submit_alone && self.inflight == 0 && self.staged.is_empty() && self.wait_us == 0)
        {
            return false;
        }
        self.chain_check();
        true
    }

    /// Whether the chain of in-call waits and inline ops has spent its budget (`WAIT_BUDGET`)
    /// until the loop turns: no more inline ops meanwhile.
    pub(crate) fn inline_spent(&self) -> bool {
        self.wait_spent
    }

    /// A read or write of a native batch (`kind`, `len` bytes; see [`Inner::batch_may_inline`])
    /// made now with pread(2)/pwrite(2) on this thread, as a lone op's is in
    /// [`Inner::rw_inline`], when the per-op rule would make it inline: a small op on a
    /// tmpfs/ramfs file (reads only unless `ODIRECT_INLINE_TMPFS=all`/`1`), within the chain
    /// budget, no page of its range swapped out. Returns its result (bytes or -errno), or None:
    /// not made (the caller stages it for the ring).
    ///
    /// # Safety
    /// The memory `kind` names must be valid for the access for the duration of the call and
    /// used by nothing else meanwhile (the batch holds its allocation: see `batch::start`).
    pub(crate) unsafe fn batch_op_inline(&mut self, kind: &OpKind, len: usize) -> Option<i64> {
        let (fd, pos, write) = match *kind {
            OpKind::Read { fd, offset, .. } => (fd, offset, false),
            OpKind::Write { fd, offset, .. } => (fd, offset, true),
            _ => return None,
        };
        if !self.goes_inline(fd, len, write) {
            return None;
        }
        if !self.resident(fd, pos, len) {
            self.not_resident += 1;
            return None;
        }
        if self.debug {
            trace(format_args!(
                "odirect: inline batch op {}",
                if write { "pwrite" } else { "pread" }
            ));
        }
        // SAFETY: forwarded contract; `execute` makes one pread/pwrite (EINTR retried).
        let r = unsafe { odirect_core::io::pool::execute(kind) };
        if write {
            self.inline_writes += 1;
        } else {
            self.inline_reads += 1;
        }
        self.chain_started();
        Some(r)
    }

    /// Submits the lone op `k` (staged just now, nothing else in flight) and waits in the
    /// kernel for its completion as the tmpfs flush wait does (`io_uring_enter` GETEVENTS,
    /// min_complete 1, [`tick_safe_timeout`]), then reaps it: its result goes back to JS from
    /// this `rw` call (None: the wait did not find it; the op stays in flight, announced and
    /// delivered as any other). Saves the flush microtask, the flush call and the delivery's
    /// call into JS. A wake-up under way keeps its quiet drivers (see `wake::flush_and_deliver`).
    fn wait_in_call(&mut self, k: u32, bounced: u32) -> Option<f64> {
        let outer_quiet = self.quiet;
        let began = Instant::now();
        let mut fired = self.watch_fired();
        if !self.submit_staged(true) {
            // Not waited, or timed out (which turned the ring's quiet off).
            if outer_quiet && !self.quiet {
                self.begin_wake();
            }
            return None;
        }
        self.waited_reaps += 1;
        let mut raw = std::mem::take(&mut self.raw);
        let mut rewaits = 0;
        let found = loop {
            // The eventfd is reset only when the ring could not keep quiet (it signalled it).
            self.gather(&mut raw, false);
            let found = raw.len() == 1 && raw[0].0 == u64::from(k);
            let watch_fired = self.watch_fired() != fired;
            if self.debug {
                let n = raw.len();
                trace(format_args!(
                    "odirect: in-call wait id={k}: {n} completions, found {found}, loop watch fired {watch_fired}"
                ));
            }
            if found || !watch_fired || !raw.is_empty() || rewaits == OWN_WAKE_REWAITS {
                break found;
            }
            // The loop's descriptor woke the watch: if only this engine's own eventfd is ready
            // (a signal left from before the wait, e.g. by the ring's setup probe, or one the
            // kernel sent while the op was reissued: the op is not complete), or nothing is
            // (epoll wakes its pollers when a watched descriptor is signalled, and the poll's
            // completion carries that wake-up's mask without a second look), that is no event
            // of the loop's: reset the eventfd and wait again for the time left.
            if !self.synthetic.is_empty() || !self.only_own_eventfd_ready() {
                break false;
            }
            eventfd::drain(self.eventfd());
            self.own_wakes += 1;
            rewaits += 1;
            fired = self.watch_fired();
            let left = self.disk_timeout.saturating_sub(began.elapsed());
            if left.is_zero() || !self.wait_ring(1, left, self.watch) {
                // Timed out (as in `submit_staged`).
                if let Some(d) = self.drivers[BackendKind::IoUring.index()].as_mut() {
                    d.quiet(false);
                }
                self.quiet = false;
                self.wait_spent = true;
                self.wait_turn = self.wake.loop_time();
                self.raw = raw;
                if outer_quiet {
                    self.begin_wake();
                } else {
                    self.end_wake();
                }
                return None;
            }
        };
        let done = if found {
            let (_, r) = raw.pop().expect("one completion");
            Some(self.complete_in_call(k, r, bounced))
        } else {
            if self.watch_fired() != fired {
                // The loop has an event: its turn first (the op is delivered as any other),
                // and no more waits until it has turned.
                self.loop_ended += 1;
                self.wait_spent = true;
                self.wait_turn = self.wake.loop_time();
            }
            if !raw.is_empty() {
                // Not expected (nothing else in flight): back the way completions go.
                self.synthetic.append(&mut raw);
                eventfd::signal(self.eventfd());
            }
            None
        };
        self.raw = raw;
        if outer_quiet {
            self.begin_wake();
        } else {
            self.end_wake();
        }
        done
    }

    /// Whether, of the descriptors in the loop's epoll set (`self.watch`), only this engine's
    /// eventfd is ready now (or none is). An `epoll_wait` with no timeout on libuv's descriptor
    /// takes nothing from the loop: its watchers are level-triggered, so what it reports stays
    /// ready for the loop's own poll; libuv keys each watcher by its descriptor
    /// (`epoll_event.data.fd`).
    fn only_own_eventfd_ready(&self) -> bool {
        let (Some(ep), Some(own)) = (self.watch, self.eventfd.as_ref().map(|e| e.as_raw_fd()))
        else {
            return false;
        };
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: a non-blocking epoll_wait into a live local array of 8 events.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), evs.len() as i32, 0) };
        if self.debug {
            let got: Vec<(u32, u64)> = evs[..n.max(0) as usize]
                .iter()
                .map(|e| (e.events, e.u64))
                .collect();
            trace(format_args!(
                "odirect: loop epoll ready now: {got:?} (own eventfd {own})"
            ));
        }
        n >= 0 && evs[..n as usize].iter().all(|e| e.u64 as u32 as i32 == own)
    }

    /// How many times the ring's watch of the event loop fired (see [`DiskWait::Loop`]).
    fn watch_fired(&self) -> u64 {
        self.drivers[BackendKind::IoUring.index()]
            .as_ref()
            .map_or(0, |d| d.watch_fired())
    }

    /// Finishes op `k`, complete with result `r` inside its own `rw` call: its memory released
    /// (a bounced read copied back), its id free at once (JS never sees it in a delivery).
    /// Returns what `rw` gives JS for it ([`crate::consts::done`]).
    fn complete_in_call(&mut self, k: u32, r: i64, bounced: u32) -> f64 {
        let mut raw = std::mem::take(&mut self.raw);
        raw.push((u64::from(k), r));
        let mut out = std::mem::take(&mut self.done_out);
        // Not part of a wake-up's round (this may run inside one's delivery): its size stays.
        let round_bytes = self.round_bytes;
        self.finish(&mut raw, &mut out);
        self.round_bytes = round_bytes;
        self.raw = raw;
        if let Some(i) = self.retired.iter().rposition(|&x| x == k) {
            self.retired.swap_remove(i);
            self.free.push(k);
        }
        let v = match out[..] {
            [_, result, lat] => crate::consts::done(result, lat, bounced),
            _ => crate::consts::done(-(libc::EIO as f64), 0.0, bounced),
        };
        out.clear();
        self.done_out = out;
        self.call_done += 1;
        v
    }

    /// Before a native batch stages one more read/write on `fd` (see `batch::stage_ops`): as
    /// `rw` does, submits what is staged once `every` reads/writes on files that do not
    /// complete inline wait (0: never; native batches never link their ops).
    pub(crate) fn submit_early(&mut self, fd: i32, every: usize) {
        if every > 0 && self.fds.facts(fd) & (FD_INLINE | FD_BUFFERED) == 0 {
            if self.early >= every {
                self.flush();
            }
            self.early += 1;
        }
    }

    /// The record of a read or write of one captured segment at `position`, and whether it
    /// was bounced.
    fn single(
        &mut self,
        kind: BackendKind,
        write: bool,
        fd: i32,
        seg: Seg,
        position: u64,
    ) -> (OpRec, u32) {
        let fixed = match (&seg.owner, &seg.mem) {
            (Some(_), capture::Mem::Owned(alloc, _)) => {
                let alloc = alloc.clone();
                self.fixed_auto(kind, fd, &alloc, 1, crate::pins::fixed_on_copy())
            }
            _ => self.fixed_for(kind, fd, seg.owner),
        };
        let (op, mem, bounced) = capture::single(write, fd, seg, position, fixed);
        (
            OpRec::new(kind, op, None, Mems::One(mem), fixed, self.staging_clock()),
            bounced,
        )
    }

    /// Stages a readv/writev over `views` (all captured, or none staged).
    ///
    /// # Safety
    /// Every value must be a live handle of the current N-API call on `self.env`.
    pub unsafe fn rwv(
        &mut self,
        kind: BackendKind,
        write: bool,
        fd: i32,
        views: &[(sys::napi_value, usize)],
        position: u64,
        mem_align: usize,
    ) -> Result<u32, CaptureError> {
        self.ready(kind)?;
        // SAFETY: forwarded contract.
        let segs =
            unsafe { capture::capture_all(self.env, views.iter().copied(), mem_align, write)? };
        let (op, iov, mem, bounced) = capture::vectored(write, fd, segs, position);
        let key = self.stage(OpRec::new(
            kind,
            op,
            Some(iov),
            mem,
            None,
            self.staging_clock(),
        ));
        Ok(crate::consts::ticket(key, bounced))
    }

    /// Stages many single-view ops on one fd: all captured, or none staged. Each op gets
    /// `rw_flags` (RWF_*) here, before it can be submitted. `early`: on a file that does not
    /// complete inline (a device's), what is staged goes to the kernel every
    /// `batch::submit_every()` ops as they are staged, as a native batch's ops do
    /// ([`Inner::submit_early`]), instead of all at the next flush (the caller links nothing to
    /// these ops: a link set after this call would find its op submitted already).
    ///
    /// # Safety
    /// Every value must be a live handle of the current N-API call on `self.env`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rw_many(
        &mut self,
        kind: BackendKind,
        write: bool,
        fd: i32,
        views: &[(sys::napi_value, usize, u64)],
        mem_align: usize,
        rw_flags: i32,
        early: bool,
        keys: &mut Vec<u32>,
    ) -> Result<(), CaptureError> {
        self.ready(kind)?;
        // SAFETY: forwarded contract.
        let segs = unsafe {
            capture::capture_all(
                self.env,
                views.iter().map(|(v, l, _)| (*v, *l)),
                mem_align,
                write,
            )?
        };
        // Captured (all of them): from here nothing fails, so ops may go in as they are staged.
        let every = if early {
            crate::batch::many_submit_every()
        } else {
            0
        };
        for (seg, (_, _, position)) in segs.into_iter().zip(views) {
            self.submit_early(fd, every);
            let (mut rec, bounced) = self.single(kind, write, fd, seg, *position);
            rec.rw_flags = rw_flags;
            keys.push(crate::consts::ticket(self.stage(rec), bounced));
        }
        Ok(())
    }

    /// Sets the preadv2/pwritev2 flags (RWF_DSYNC, RWF_SYNC, RWF_ATOMIC, RWF_DONTCACHE) of read
    /// or write op `key`, staged or held but not yet submitted (ops go to the kernel at the next
    /// `flush`). Returns false otherwise.
    pub fn set_rw_flags(&mut self, key: u32, rw_flags: i32) -> bool {
        match self.ops.get_mut(key as usize) {
            Some(Some(rec)) if !rec.submitted && rec.kind.is_rw() => {
                rec.rw_flags = rw_flags;
                true
            }
            _ => false,
        }
    }

    /// Links io_uring op `key`, staged but not yet submitted, to the op staged right after it
    /// (IOSQE_IO_LINK; see `LocalRing::push_chain`). False for other backends or submitted ops.
    pub fn set_link(&mut self, key: u32) -> bool {
        let drivers = &self.drivers;
        let links = |i: usize| drivers[i].as_ref().is_some_and(|d| d.links());
        match self.ops.get_mut(key as usize) {
            Some(Some(rec)) if !rec.submitted && links(rec.driver()) => {
                rec.link = true;
                true
            }
            _ => false,
        }
    }

    /// Stages an op without memory (`route` sends what the driver cannot run, e.g. ftruncate
    /// before Linux 6.9 or close on aio, to the thread pool).
    pub fn simple(&mut self, kind: BackendKind, op: OpKind) -> Result<u32, CaptureError> {
        self.ready(kind)?;
        let facts = self.fds.facts(op.fd());
        if let OpKind::Close { fd } = op {
            self.fds.remove(fd);
            for d in self.drivers.iter_mut().flatten() {
                d.unregister_fd(fd);
            }
        }
        // A close is routed as the descriptor's other ops were: on FUSE it waits for the
        // server's FLUSH reply.
        let rec = OpRec::new(kind, op, None, Mems::None, None, self.staging_clock());
        Ok(self.stage_with(rec, facts))
    }

    /// Tracks `fd` (closed at teardown if still open) with its `FD_*` facts.
    pub fn adopt(&mut self, fd: i32, facts: u8) {
        // Not on a file whose submission may block (FUSE, NFS...): its fstat/fstatfs go to the
        // server, and this runs on the JS thread; tmpfs/ramfs are never such files.
        let inline = if facts & FD_MAY_BLOCK == 0 && completes_inline(fd) {
            FD_INLINE
        } else {
            0
        };
        let punted = if inline != 0 && self.async_punted && refuses_nowait(fd) {
            FD_PUNTED
        } else {
            0
        };
        self.fds.insert(fd, facts | inline | punted);
        if self.wake_want > 0 && (facts | inline) & (FD_INLINE | FD_BUFFERED | FD_MAY_BLOCK) == 0 {
            self.irq_cpus |= self.device_cpus(fd);
        }
        for d in self.drivers.iter_mut().flatten() {
            d.register_fd(fd);
        }
    }

    /// The CPUs servicing the completions of the device under `fd` (see `io::irq`), read from
    /// sysfs once per device.
    fn device_cpus(&mut self, fd: i32) -> io::irq::CpuMask {
        let Some(dev) = io::irq::block_device_of(fd) else {
            return 0;
        };
        if let Some(&(_, m)) = self.dev_cpus.iter().find(|(d, _)| *d == dev) {
            return m;
        }
        let m = io::irq::device_cpus(libc::major(dev), libc::minor(dev));
        self.dev_cpus.push((dev, m));
        m
    }

    /// Closes `fd` now if this engine tracks it (GC of a leaked handle); true when it did.
    pub fn close_sync(&mut self, fd: i32) -> bool {
        for d in self.drivers.iter_mut().flatten() {
            d.unregister_fd(fd);
        }
        if self.fds.remove(fd) {
            // SAFETY: the fd is ours and no op of its handle is in flight (the handle was
            // collected, and ops keep their handle reachable).
            unsafe { libc::close(fd) };
            true
        } else {
            false
        }
    }

    /// Hands every staged op to its driver, then submits each driver used once (one
    /// io_uring_enter for the ring).
    pub fn flush(&mut self) {
        self.submit_staged(false);
    }

    /// [`Inner::flush`], but the ring's new entries are left in its submission queue for the
    /// `io_uring_enter` of the [`Inner::wait_ring`] that follows at once, which submits them
    /// and waits in one call (`batch::wait`).
    pub(crate) fn flush_but_ring(&mut self) {
        self.hold_ring = true;
        self.submit_staged(false);
        self.hold_ring = false;
    }

    /// [`Inner::flush`], waiting in the kernel (up to `wait_us`) for the completion of a lone
    /// io_uring op (or a write and its linked fdatasync) it submits, as fio does at depth 1,
    /// instead of letting the event loop wake the thread for it. True when completions are
    /// there to reap now: the caller reaps and delivers them at once (`wake::flush_and_deliver`).
    /// Never waits with more ops in flight, for an op on a descriptor whose ops may sleep (FUSE,
    /// NFS, FIFOs, sockets: `FD_MAY_BLOCK`), nor past the wait budget (`WAIT_BUDGET`).
    pub fn flush_waiting(&mut self) -> bool {
        self.chain_check();
        let waited = self.submit_staged(true);
        if waited {
            self.waited_reaps += 1;
        }
        waited
    }

    /// Whether the drivers keep quiet now (see [`Inner::begin_wake`]).
    pub fn quiet_now(&self) -> bool {
        self.quiet
    }

    /// The loop (or reaper) woke the engine: in-kernel waits may start a new chain.
    pub fn loop_woke(&mut self) {
        self.wait_since = None;
        self.wait_spent = false;
    }

    /// An in-kernel wait found its completion or an op was made inline: the chain of them
    /// since the loop last turned starts now if it has not.
    fn chain_started(&mut self) {
        if self.wait_since.is_none() {
            self.wait_since = Some(Instant::now());
            self.wait_turn = self.wake.loop_time();
        }
    }

    /// A chain of waits/inline ops ends when the loop turns, even when nothing woke the engine
    /// (JS went idle on a timer or other I/O between two ops): seen in the loop's time. Without
    /// it the first op after such a pause found the budget spent and went through the ring.
    fn chain_check(&mut self) {
        if (self.wait_since.is_some() || self.wait_spent)
            && self.wait_turn.is_some()
            && self.wake.loop_time() != self.wait_turn
        {
            self.loop_woke();
        }
    }

    /// How long the flush of the staged ops may wait in the kernel for them (see
    /// `flush_waiting`): `waitMicros`, or for small ops on tmpfs/ramfs files the tmpfs wait
    /// ([`TMPFS_WAIT_BYTES`]); None: no wait.
    fn may_wait(&self) -> Option<std::time::Duration> {
        if self.wait_spent
            || self.inflight == 0
            || self.inflight > WAIT_MAX_OPS
            || self.staged.len() != self.inflight
            || (self.wait_us == 0 && self.tmpfs_wait.is_none())
        {
            return None;
        }
        if self.wait_since.is_some_and(|t| t.elapsed() > WAIT_BUDGET) {
            return None;
        }
        let fits = self.staged.iter().all(|&k| {
            self.ops[k as usize].as_ref().is_some_and(|r| {
                r.backend == BackendKind::IoUring
                    && !r.punt
                    && !r.submitted
                    // A close: its descriptor left the table when it was staged (facts 0), and
                    // it may wait on the file's server (FUSE FLUSH).
                    && !matches!(r.kind, OpKind::Close { .. })
                    && self.fds.facts(r.kind.fd()) & FD_MAY_BLOCK == 0
            })
        });
        if !fits {
            return None;
        }
        if self.wait_us > 0 {
            return Some(std::time::Duration::from_micros(self.wait_us.into()));
        }
        // Small reads/writes (and a linked fdatasync) on tmpfs/ramfs only.
        let tmpfs = self.staged.iter().all(|&k| {
            self.ops[k as usize].as_ref().is_some_and(|r| {
                self.fds.facts(r.kind.fd()) & FD_INLINE != 0
                    && match r.kind {
                        OpKind::Read { .. }
                        | OpKind::Write { .. }
                        | OpKind::Readv { .. }
                        | OpKind::Writev { .. } => r.kind.range().1 <= TMPFS_WAIT_BYTES,
                        OpKind::Fsync { .. } => true,
                        _ => false,
                    }
            })
        });
        if tmpfs {
            self.tmpfs_wait
        } else if self.disk_waiting {
            Some(self.disk_timeout)
        } else {
            None
        }
    }

    /// [`Inner::flush`]'s work; `wait`: as `flush_waiting`. True when it waited and completions
    /// are there to reap.
    fn submit_staged(&mut self, wait: bool) -> bool {
        self.early = 0;
        if self.staged.is_empty() {
            return false;
        }
        let wait = if wait { self.may_wait() } else { None };
        let want = self.staged.len();
        // Taken for the loop and given back empty: its capacity serves every flush.
        let mut staged = std::mem::take(&mut self.staged);
        let mut used = [false; 4];
        // One clock read for every op this submission takes (read at the first that needs it).
        let mut now: Option<Instant> = None;
        for k in staged.drain(..) {
            let Some(rec) = self.ops[k as usize].as_mut() else {
                continue;
            };
            if rec.submitted {
                continue;
            }
            rec.submitted = true;
            if rec.time_at_submit {
                rec.started = match now {
                    Some(t) => t,
                    None => {
                        self.op_clocks.set(self.op_clocks.get() + 1);
                        *now.insert(Instant::now())
                    }
                };
            }
            if self.debug {
                let what = rec.describe();
                trace(format_args!("odirect: submit id={k} {what}"));
                rec.debug = Some(what);
            }
            let i = rec.driver();
            let d = self.drivers[i].as_mut().expect("checked at staging");
            let op = OpRef {
                key: k as u64,
                kind: &rec.kind,
                iov: rec.iov.as_deref(),
                fixed: rec.fixed,
                rw_flags: rec.rw_flags,
                punt: rec.punt || rec.known_punt,
                link: rec.link,
            };
            // SAFETY: the op's memory (Owned Arcs / bounce buffers / iovec array) is in `rec`,
            // which stays in the slab until this key's completion is reaped (or, at teardown,
            // is abandoned with the driver); `fixed` came from this driver's registration.
            match unsafe { d.push(&op) } {
                Ok(()) => used[i] = true,
                Err(e) => self
                    .synthetic
                    .push((k as u64, -(e.raw_os_error().unwrap_or(libc::EINVAL) as i64))),
            }
        }
        self.staged = staged;
        let mut reap_now = false;
        let mut waited = false;
        let ring = BackendKind::IoUring.index();
        for (i, (d, used)) in self.drivers.iter_mut().zip(used).enumerate() {
            let (Some(d), true) = (d, used) else { continue };
            if let (Some(timeout), true) = (wait, i == ring) {
                // The wait's completions are reaped by the caller right away: the ring need
                // not announce them on the eventfd (where it can keep quiet, see
                // `Driver::quiet`; `end_wake` turns announcements back on).
                self.wait_tries += 1;
                let quiet = d.quiet(true);
                reap_now = d.submit_and_wait(want, timeout, self.watch);
                if !quiet || !reap_now {
                    d.quiet(false);
                }
                self.quiet = quiet && reap_now;
                waited = true;
            } else if !(self.hold_ring && i == ring) {
                d.submit();
            }
        }
        if waited {
            if reap_now {
                self.chain_started();
            } else {
                self.wait_spent = true;
                self.wait_turn = self.wake.loop_time();
            }
        }
        if !self.synthetic.is_empty() {
            eventfd::signal(self.eventfd());
        }
        reap_now
    }

    /// Starts waiting for a whole-file lock on `fd` (see `locks`); returns its key, which
    /// completes like an op (0 or -errno; -ECANCELED when cancelled) and counts as in flight.
    pub fn lock(&mut self, fd: i32, exclusive: bool) -> Result<u32, i32> {
        if self.closed {
            return Err(libc::ECANCELED);
        }
        let wake = self.eventfd.clone().ok_or(libc::ECANCELED)?;
        let key = self.locks.start(fd, exclusive, wake)?;
        self.inflight += 1;
        self.update_ref();
        Ok(key)
    }

    /// Cancels op `key` (it still completes, with ECANCELED unless it finished first).
    pub fn cancel(&mut self, key: u32) {
        if crate::batch::Batches::is_batch(key) {
            return crate::batch::cancel(self, key);
        }
        if Waiters::is_lock(key as u64) {
            return self.locks.cancel(key);
        }
        let Some(Some(rec)) = self.ops.get(key as usize) else {
            return;
        };
        if !rec.submitted {
            // Not in the kernel yet: it never will be.
            self.staged.retain(|k| *k != key);
            if let Some(r) = self.ops[key as usize].as_mut() {
                r.submitted = true;
                if r.time_at_submit {
                    // Never in the kernel: no time there (not since a clock read long past).
                    self.op_clocks.set(self.op_clocks.get() + 1);
                    r.started = Instant::now();
                }
            }
            self.synthetic.push((key as u64, -(libc::ECANCELED as i64)));
            eventfd::signal(self.eventfd());
            return;
        }
        if let Some(d) = self.drivers[rec.driver()].as_mut() {
            d.cancel(key as u64);
        }
    }

    fn update_ref(&mut self) {
        let want = self.inflight > 0;
        if want == self.referenced {
            return;
        }
        self.referenced = want;
        // SAFETY: ops are staged and reaped on the JS thread of self.env.
        unsafe { self.wake.set_ref(self.env, want) };
    }

    /// Reaps every driver; true when completions are left waiting that were not announced again
    /// (see `Driver::pending`): the caller gathers again, or signals the eventfd. `reset`: reset
    /// the eventfd (always done unless a quiet wake-up already did, see [`Inner::begin_wake`]).
    fn gather(&mut self, raw: &mut Vec<(u64, i64)>, reset: bool) -> bool {
        for d in self.drivers.iter_mut().flatten() {
            d.prepare_reap();
        }
        if (reset || !self.quiet) && !self.ring_wake {
            eventfd::drain(self.eventfd());
        }
        raw.append(&mut self.synthetic);
        let mut pending = false;
        for d in self.drivers.iter_mut().flatten() {
            d.reap(raw);
            pending |= d.pending();
        }
        self.locks.take_done(raw);
        pending
    }

    /// Turns raw completions into (key, result, latency_us) triples, releasing each op's memory
    /// (and copying bounced reads back into their views, if those still have the room).
    fn finish(&mut self, raw: &mut Vec<(u64, i64)>, out: &mut Vec<f64>) {
        let now = Instant::now();
        self.reaped_at = now;
        self.round_bytes = 0;
        for (key, mut result) in raw.drain(..) {
            if Waiters::is_lock(key) {
                self.inflight -= 1;
                out.extend([key as f64, result as f64, 0.0]);
                continue;
            }
            let Some(rec) = self.ops.get_mut(key as usize).and_then(|s| s.take()) else {
                continue;
            };
            self.inflight -= 1;
            if matches!(rec.kind, OpKind::Write { .. } | OpKind::Writev { .. }) {
                self.writes_inflight = self.writes_inflight.saturating_sub(1);
            }
            if let OpKind::Read { .. }
            | OpKind::Write { .. }
            | OpKind::Readv { .. }
            | OpKind::Writev { .. } = rec.kind
            {
                self.round_bytes = self.round_bytes.max(rec.kind.range().1);
            }
            // SAFETY: on the JS thread of self.env, which made the op's references.
            if unsafe { capture::copy_back(self.env, rec.mem.as_slice(), result) } {
                result = RESULT_DETACHED as i64;
            }
            // (as_secs_f64, not as_nanos() as f64: that u128 conversion is a software routine,
            // ~60 instructions per op in callgrind.)
            let lat = now.saturating_duration_since(rec.started).as_secs_f64() * 1e6;
            if let Some(d) = &rec.debug {
                let err = if result < 0 && result > -4096 {
                    format!(" ({})", odirect_core::error::errno_name(-result as i32))
                } else {
                    String::new()
                };
                trace(format_args!(
                    "odirect: complete id={key} {d} result={result}{err} latency_us={lat:.1}"
                ));
            }
            // SAFETY: on the JS thread of self.env, which made the op's references.
            unsafe { capture::release(self.env, rec.mem) };
            if let Some(c) = rec.chain {
                // A short write keeps its block's slot until JS wrote the rest (`chainResume`).
                let short = matches!(rec.kind, OpKind::Write { len, .. } if result >= 0 && (result as u64) < len as u64);
                crate::stream::reaped(self, c, key as u32, result, short);
            }
            if let Some((b, i)) = rec.batch {
                // A batch's op is never delivered to JS: its id is free at once.
                self.free.push(key as u32);
                self.batches.completed(b, i, result, lat);
                continue;
            }
            // Free only once JS has had this completion (see `recycle`).
            self.retired.push(key as u32);
            out.push(key as f64);
            out.push(result as f64);
            out.push(lat);
        }
        self.update_ref();
    }

    /// Reaps what is complete now into `out` triples; returns how many completions it took
    /// (a native batch's ops included, though only a finished batch gives a triple). `first`:
    /// the first reap of a wake-up (it resets the eventfd). After it, [`Inner::more`] says
    /// whether more completions wait that were not announced on the eventfd again: the caller
    /// reaps again (after delivering these), or ends the wake-up ([`Inner::end_wake`]).
    ///
    /// With `ODIRECT_BATCH_WAIT=k` (opt-in), a reap that leaves JS nothing to deliver while
    /// native batches' ops are all that is in flight waits in the kernel for k more of them
    /// and reaps again (`batch::wait`), as fio's `io_uring_enter(min_complete)` loop does,
    /// instead of ending the wake-up (a refill round has nothing for JS).
    pub fn reap(&mut self, out: &mut Vec<f64>, first: bool) -> usize {
        let mut n = 0;
        let mut reset = first;
        // Only the first reap of a wake-up may wait for more (see `wake_wait`).
        let mut may_wake_wait = first;
        // The batch waits' budget starts at the wake-up's first reap, not at each (see
        // `batch::wait`): it bounds the waits of the whole wake-up.
        let mut first_wait = first;
        loop {
            let mut raw = std::mem::take(&mut self.raw);
            self.gather(&mut raw, reset);
            n += raw.len();
            self.finish(&mut raw, out);
            self.raw = raw;
            crate::batch::advance(self, out);
            crate::stream::advance(self);
            reset = false;
            if std::mem::take(&mut may_wake_wait) && !self.wake_wait_end && self.wake_wait(n) {
                continue;
            }
            if !out.is_empty() || !crate::batch::wait(self, std::mem::take(&mut first_wait)) {
                return n;
            }
        }
    }

    /// The wake-up wait made after a wake-up's last round (the default place, see
    /// `wake::rounds`): what it found was delivered and resubmitted at once; instead of going
    /// back to the loop (whose epoll wakes the thread again at the next completion), the thread
    /// sleeps in the kernel until a batch is in. True when completions wait to be reaped (the
    /// caller goes on with another round). Only after a wake-up that handed completions to JS
    /// (`delivered`: per-op promises, finished batches): it batches what JS gets per call and
    /// what its continuations resubmit per `io_uring_enter`. Native batches that only refilled
    /// are left to their own opt-in wait (`ODIRECT_BATCH_WAIT`).
    pub fn wake_wait_after(&mut self, delivered: bool) -> bool {
        delivered && self.wake_wait_end && self.wake_wait(0) && self.more()
    }

    /// The wake-up wait: a wake-up of the loop that found fewer than `wake_want` completions
    /// while many writes are in flight on the ring (at least 4 x `wake_want`), with the JS thread
    /// on a CPU that services the device's completions, waits in the kernel for the rest
    /// (io_uring_enter GETEVENTS, min_complete; with DEFER_TASKRUN the kernel wakes the thread
    /// only once that many are in), as fio's `iodepth_batch_complete_min` does, before it
    /// delivers: the thread would otherwise be woken for almost every completion (the
    /// interrupt, and for direct writes the kworker finishing them, run on that CPU and preempt
    /// or wake it one completion at a time), and each wake-up resubmits as few ops, in an
    /// io_uring_enter of its own. Bounded: the loop's next timer or `wake_cap`, whichever comes
    /// first, and an event of the loop (its epoll descriptor watched) ends it; never with a
    /// lone op or a shallow queue in flight, never when the loop has work waiting. True when it
    /// waited (the caller reaps again). Made after the wake-up's last round by default
    /// ([`Inner::wake_wait_after`]), before its first delivery with `ODIRECT_WAKE_WAIT_AT=start`
    /// (from `reap`).
    fn wake_wait(&mut self, reaped: usize) -> bool {
        let want = self.wake_want;
        if want == 0
            || reaped >= want
            || self.poll_ring
            || !self.staged.is_empty()
            || (self.wake_on_irq_cpu && self.irq_cpus == 0)
            || !matches!(self.wake, Wake::Loop { .. })
        {
            return false;
        }
        let ring = self.drivers[BackendKind::IoUring.index()]
            .as_ref()
            .map_or(0, |d| d.inflight());
        // Writes: the kernel completes direct writes in a kworker on the interrupt's CPU, one
        // work item per write, which wakes a JS thread there per completion; reads complete in
        // the interrupt itself, in bursts (counted, bench/counts), and measured no better.
        if ring.min(self.writes_inflight) < 4 * want {
            return false;
        }
        if self.wake_on_irq_cpu {
            match io::irq::current_cpu() {
                Some(c) if c < 64 && self.irq_cpus & (1 << c) != 0 => {}
                _ => return false,
            }
        }
        let Some(LoopState::Idle { fd, left }) = self.wake.loop_state() else {
            return false;
        };
        let timeout = left.map_or(self.wake_cap, |l| l.min(self.wake_cap));
        if timeout.is_zero() {
            return false;
        }
        self.wake_waits += 1;
        let fired = self.watch_fired();
        let got = self.wait_ring(want - reaped, timeout, Some(fd));
        if got && self.watch_fired() == fired {
            self.wake_waits_full += 1;
        }
        true
    }

    /// Whether ops on `fd` may sleep in their submission (`FD_MAY_BLOCK`: FUSE, NFS, FIFOs...).
    pub(crate) fn may_block(&self, fd: i32) -> bool {
        self.fds.facts(fd) & FD_MAY_BLOCK != 0
    }

    /// Whether `fd` is a tmpfs/ramfs file ([`FD_INLINE`]): no device, its ops are copies.
    pub(crate) fn copies_inline(&self, fd: i32) -> bool {
        self.fds.facts(fd) & FD_INLINE != 0
    }

    /// Submits what the ring holds and waits in the kernel up to `timeout` for `want` of its
    /// ops to complete (`Driver::submit_and_wait`); true when completions are there to reap.
    pub(crate) fn wait_ring(
        &mut self,
        want: usize,
        timeout: std::time::Duration,
        watch: Option<i32>,
    ) -> bool {
        match self.drivers[BackendKind::IoUring.index()].as_mut() {
            Some(d) => d.submit_and_wait(want, timeout, watch),
            None => false,
        }
    }

    /// A wake-up starts: drivers that can stop announcing completions on the eventfd while it
    /// lasts (see `Driver::quiet`); when all can, only its first reap resets the eventfd.
    pub fn begin_wake(&mut self) {
        let mut all = true;
        for d in self.drivers.iter_mut().flatten() {
            all &= d.quiet(true);
        }
        self.quiet = all;
    }

    /// The wake-up ends: announcements resume, and what waits unannounced (completions queued
    /// while the drivers were quiet, or left for the loop's next turn) is announced now.
    pub fn end_wake(&mut self) {
        for d in self.drivers.iter_mut().flatten() {
            d.quiet(false);
        }
        self.quiet = false;
        if self.drivers.iter().flatten().any(|d| d.unannounced()) {
            self.announce();
        }
    }

    /// Whether the last reap took completions and none of them moved more than `SMALL_ROUND_BYTES`
    /// (see `wake::rounds`: such a round, however short, need not hand what waits next to the
    /// loop's next turn). Counts the rounds it lets go on.
    pub fn small_round(&mut self) -> bool {
        let small = self.small_rounds && self.round_bytes <= SMALL_ROUND_BYTES;
        if small {
            self.small_round_count += 1;
        }
        small
    }

    /// Makes the ids of the ops delivered since the last call free for new ops.
    pub fn recycle(&mut self) {
        self.free.append(&mut self.retired);
    }

    /// True when completions wait that were not announced on the eventfd again (see
    /// `Driver::pending`): reap again, or [`Inner::announce`].
    pub fn more(&self) -> bool {
        self.drivers.iter().flatten().any(|d| d.pending())
    }

    /// Signals the eventfd: the next turn of the loop (or the reaper thread) reaps.
    pub fn announce(&self) {
        eventfd::signal(self.eventfd());
    }

    /// Registers (pins) owned buffers; returns 0 or an errno.
    ///
    /// # Safety
    /// Values must be live handles of the current call.
    pub unsafe fn register_buffers(&mut self, kind: BackendKind, views: &[sys::napi_value]) -> i32 {
        // SAFETY: forwarded contract.
        let allocs = match unsafe { pins::allocs_of(self.env, views) } {
            Ok(a) => a,
            Err(errno) => return errno,
        };
        let i = kind.index();
        let Some(d) = self.drivers[i].as_mut() else {
            return libc::ENODEV;
        };
        // SAFETY: the allocations stay alive in `pins` until unregistration or a later
        // registration, and past the driver's end (teardown drops the driver first).
        let r = unsafe { d.register_buffers(&pins::segments(&allocs)) };
        self.pins.registered(i, allocs, d.fixed_buffers(), r)
    }

    pub fn unregister_buffers(&mut self, kind: BackendKind) -> i32 {
        let i = kind.index();
        let (r, by_index) = match self.drivers[i].as_mut() {
            Some(d) => (d.unregister_buffers(), d.fixed_buffers()),
            None => (Ok(()), false),
        };
        self.pins.unregistered(i, by_index, r)
    }

    /// Teardown: cancel and wait for every op, release everything, close leaked descriptors.
    pub fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        // Announcements back on (a wake-up cut short leaves none off): teardown waits on them.
        for d in self.drivers.iter_mut().flatten() {
            d.quiet(false);
        }
        self.quiet = false;
        // Staged and held ops never reach the kernel.
        self.staged.clear();
        for (k, rec) in self.ops.iter().enumerate() {
            if rec.as_ref().is_some_and(|r| !r.submitted) {
                self.synthetic.push((k as u64, -(libc::ECANCELED as i64)));
            }
        }
        // Lock waits end at once (their completions are dropped: no JS runs any more).
        self.locks.shutdown(&mut Vec::new());
        // Cancel what is in the kernel, then wait for it, for EXIT_WAIT at most.
        for d in self.drivers.iter_mut().flatten() {
            d.cancel_all();
        }
        let deadline = Instant::now() + EXIT_WAIT;
        let mut raw = Vec::new();
        loop {
            let pending = self.gather(&mut raw, true);
            // Out of the kernel: release the memory (no JS is called).
            for (key, result) in raw.drain(..) {
                if let Some(rec) = self.ops.get_mut(key as usize).and_then(|s| s.take()) {
                    if let OpKind::Close { fd } = rec.kind {
                        if result == -(libc::ECANCELED as i64) {
                            // A close that never ran: staged and not submitted (a worker ended
                            // between fh.close() and the flush) or cancelled before a worker
                            // took it (close(2) itself never fails ECANCELED). Its descriptor
                            // left the table when the close was staged and no number is
                            // reused while it stays open: closed here, once.
                            // SAFETY: that descriptor, which nothing else closes or uses.
                            unsafe { libc::close(fd) };
                        }
                    }
                    // SAFETY: teardown runs on the JS thread of self.env.
                    unsafe { capture::release(self.env, rec.mem) };
                }
            }
            let left = Instant::now();
            if self.ops.iter().all(Option::is_none) || left >= deadline {
                break;
            }
            if pending {
                continue;
            }
            let ms = (deadline - left).as_millis().clamp(1, 10) as i32;
            // The eventfd, and the descriptors of drivers that do not announce there.
            let mut p: Vec<libc::pollfd> = std::iter::once(self.eventfd())
                .chain(self.drivers.iter().flatten().filter_map(|d| d.poll_fd()))
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: live pollfds, p.len() of them (waits for a completion, 10 ms at most).
            unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
        }
        self.abandon_the_rest();
        self.ops.clear();
        self.inflight = 0;
        self.writes_inflight = 0;
        self.pins.clear();
        for fd in self.fds.drain() {
            // SAFETY: descriptors of handles never closed in this environment; no op uses
            // them any more (all completed above).
            unsafe { libc::close(fd) };
        }
        // Descriptors opens made that no resolve took (a runtime that never completes a dying
        // environment's tasks, Deno), and from now on any an open still running makes.
        Opening::close_all(&self.openings);
    }

    /// Ops the kernel has not let go of by the end of `EXIT_WAIT` (a hung FUSE daemon or NFS
    /// server: nothing cancels those) keep their memory, and the backend that runs them keeps
    /// going, handed to the process-wide reaper ([`crate::reaper`]) rather than waited for: the
    /// environment exits, the kernel writes into memory that stays allocated until the reaper
    /// reaped the op's completion; then the backend, the registered buffers and the eventfd go
    /// too. Backends with nothing left stop normally.
    fn abandon_the_rest(&mut self) {
        let mut busy = [false; 4];
        let mut ops = std::collections::HashMap::new();
        for (key, slot) in self.ops.iter_mut().enumerate() {
            let Some(mut rec) = slot.take() else { continue };
            busy[rec.driver()] = true;
            let mut bytes = 0;
            for m in rec.mem.as_mut_slice() {
                // SAFETY: teardown runs on the JS thread of self.env, which made the reference.
                unsafe { capture::forget_view(self.env, m) };
                bytes += match m {
                    capture::Mem::Owned(_, n) | capture::Mem::Bounce(_, n, _) => *n,
                };
            }
            ops.insert(key as u64, (Box::new(rec) as Box<dyn std::any::Any>, bytes));
        }
        let mut drivers = Vec::new();
        for (slot, busy) in self.drivers.iter_mut().zip(busy) {
            // A driver with nothing left is dropped (the pool joins its idle workers).
            if let (Some(d), true) = (slot.take(), busy) {
                drivers.push(d);
            }
        }
        if ops.is_empty() {
            return;
        }
        if self.debug {
            trace(format_args!(
                "odirect: {} ops still in the kernel at exit: their memory is kept until the reaper reaps them",
                ops.len()
            ));
        }
        crate::reaper::adopt(crate::reaper::Orphan {
            eventfd: self.eventfd.clone(),
            drivers,
            ops,
            // Registered (pinned) buffers may be what the abandoned ops use.
            keep: vec![Box::new(self.pins.take_all())],
        });
    }

    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Ops staged and not yet handed to their driver (see [`Inner::flush`]).
    pub fn staged(&self) -> usize {
        self.staged.len()
    }
}
