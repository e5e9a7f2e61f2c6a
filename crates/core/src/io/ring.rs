//! An io_uring owned by one thread (the JS thread): ops are pushed and submitted by the caller,
//! completions are reaped by the caller when the ring's eventfd (IORING_REGISTER_EVENTFD) is
//! readable. No thread of our own, no queue between threads: this is how fio drives io_uring.
//!
//! Memory contract: every pointer in a pushed op (and the iovec array of a vectored op) must stay
//! valid until the op's completion has been returned by `reap` (or `wait_all`) of the
//! [`Driver`] implementation. The ring is used through `&mut self` everywhere.
//!
//! Setup: [`probe`] and [`LocalRing::with_options`] explain a refused `io_uring_setup`
//! ([`explain_setup_error`]: seccomp, `kernel.io_uring_disabled`, RLIMIT_MEMLOCK, no io_uring).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

use super::{BackendKind, Driver, FdFacts, Placement, Unavailable, FD_MAY_BLOCK};
use crate::op::{OpKind, OpRef, Segment};

/// Reads `/proc/sys/kernel/io_uring_disabled` (0, 1 or 2; absent before Linux 6.6).
pub fn disabled_sysctl() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Can a ring be set up here?
pub fn probe() -> Result<(), Unavailable> {
    match IoUring::new(4) {
        Ok(_) => Ok(()),
        Err(e) => Err(explain_setup_error(&e)),
    }
}

/// Why `io_uring_setup` (or registering the eventfd) failed, in words a user can act on.
pub fn explain_setup_error(e: &io::Error) -> Unavailable {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    let sysctl = disabled_sysctl();
    let reason = match (errno, sysctl) {
        (libc::ENOSYS, _) => {
            "io_uring_setup: ENOSYS: this kernel has no io_uring (needs Linux 5.1+, 5.6+ for all ops)"
                .to_string()
        }
        (libc::EPERM, Some(v)) if v > 0 => format!(
            "io_uring_setup: EPERM: kernel.io_uring_disabled = {v} (sysctl); set it to 0 or use backend 'aio'"
        ),
        (libc::EPERM, _) => "io_uring_setup: EPERM: refused by a seccomp filter (Docker, containerd and Kubernetes RuntimeDefault profiles block io_uring); use backend 'aio' or 'threadpool', or allow io_uring_setup/io_uring_enter/io_uring_register in the profile".to_string(),
        (libc::ENOMEM, _) => setup_enomem(kernel_version(), &memlock_limit()),
        _ => format!("io_uring_setup failed: {e}"),
    };
    Unavailable { errno, reason }
}

/// (major, minor) of the running kernel, from uname's release ("6.18.0-1-amd64" -> (6, 18)).
fn kernel_version() -> Option<(u32, u32)> {
    let u = nix::sys::utsname::uname().ok()?;
    let release = u.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// This process's soft RLIMIT_MEMLOCK, for a message: "65536 bytes", "unlimited".
fn memlock_limit() -> String {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft == RLIM_INFINITY => "unlimited".to_string(),
        Ok((soft, _)) => format!("{soft} bytes"),
        Err(_) => "unknown".to_string(),
    }
}

/// io_uring_setup's ENOMEM, said as the running kernel accounts a ring's memory. Kernels before
/// 5.12 charge it to RLIMIT_MEMLOCK; 5.12 to 6.13 to the memory cgroup instead; from 6.14 (the
/// rings made as memory regions, `io_create_region`) to RLIMIT_MEMLOCK again, for a process
/// without CAP_IPC_LOCK: seen on this repository's 6.18 as an unprivileged user with `prlimit
/// --memlock=0` (root passes). Was: "RLIMIT_MEMLOCK too low on kernels before 5.12" on every kernel.
fn setup_enomem(version: Option<(u32, u32)>, memlock: &str) -> String {
    let kernel = version.map_or_else(
        || "this kernel".to_string(),
        |(a, b)| format!("Linux {a}.{b}"),
    );
    let memlock_charged = version.is_none_or(|v| !((5, 12)..(6, 14)).contains(&v));
    if memlock_charged {
        format!(
            "io_uring_setup: ENOMEM: the ring's memory could not be locked: {kernel} charges it to RLIMIT_MEMLOCK (this process: {memlock}) unless the process has CAP_IPC_LOCK; raise it with `ulimit -l`, `prlimit --memlock=` or LimitMEMLOCK= in a systemd unit, or use backend 'aio' or 'threadpool' (else the memory is short or too fragmented)"
        )
    } else {
        format!(
            "io_uring_setup: ENOMEM: the ring's memory could not be allocated: {kernel} charges it to the memory cgroup (its memory.max), not to RLIMIT_MEMLOCK; free memory or raise the cgroup's limit, or use backend 'aio' or 'threadpool'"
        )
    }
}

/// user_data of our own SQEs (cancels). Op keys from callers must stay below this.
pub const INTERNAL: u64 = 1 << 63;
/// user_data of the poll on the owner's event-loop descriptor armed by a loop-aware wait (see
/// [`Driver::submit_and_wait`]).
const WATCH: u64 = INTERNAL | 1;
/// user_data of the poll on `/proc/swaps` (see [`Driver::watch_swaps`]).
const SWAPS: u64 = INTERNAL | 2;
const IORING_ENTER_GETEVENTS: u32 = 1;
/// pwritev2's untorn-write flag (linux/fs.h; Linux 6.11+).
const RWF_ATOMIC: u32 = 0x40;

/// How the ring was set up (fastest that the kernel accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG: completions are posted only when we enter
    /// with GETEVENTS; IORING_SQ_TASKRUN in the SQ ring's flags says when that is needed.
    DeferTaskrun,
    /// COOP_TASKRUN | TASKRUN_FLAG.
    CoopTaskrun,
    Plain,
    /// SQPOLL: a kernel thread polls the submission queue (no io_uring_enter to submit while it
    /// is awake); costs that thread's CPU. Opt-in only.
    Sqpoll,
}

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Setup::DeferTaskrun => "single_issuer+defer_taskrun",
            Setup::CoopTaskrun => "coop_taskrun",
            Setup::Plain => "plain",
            Setup::Sqpoll => "sqpoll",
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests only: the setup probe reports that IORING_SQ_TASKRUN is never set (as on a kernel
    /// without it), to prove such a ring is not left DEFER_TASKRUN.
    static HIDE_TASKRUN_FLAG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn tests_hide_taskrun_flag() -> bool {
    HIDE_TASKRUN_FLAG.with(|h| h.get())
}

#[cfg(not(test))]
fn tests_hide_taskrun_flag() -> bool {
    false
}

/// Which setup to try first (`ODIRECT_URING_SETUP=defer|coop|plain` overrides, for measuring).
/// A worker that is terminated while a stalled server holds its ops leaves them in the kernel:
/// only a ring that is not DEFER_TASKRUN still posts their completions once its submitter
/// thread is gone (the kernel's fallback worker runs the task work), so that the process can
/// reap them and free their memory and the ring (see `Driver::orphan`). DEFER_TASKRUN stays
/// the default on every thread: COOP_TASKRUN in a worker measured 17% fewer tmpfs reads at
/// depth 64 (614k vs 736k/s, 3.03 vs 2.54 µs CPU per op; disk and depth 1: no difference);
/// `ODIRECT_URING_SETUP=coop` makes workers' rings reclaimable (ops on may-block files go to a
/// COOP_TASKRUN ring of their own in workers anyway: the addon's engine, `APART`).
pub fn preferred_setup() -> Setup {
    match std::env::var("ODIRECT_URING_SETUP").as_deref() {
        Ok("coop") => Setup::CoopTaskrun,
        Ok("plain") => Setup::Plain,
        _ => Setup::DeferTaskrun,
    }
}

pub struct LocalRing {
    ring: IoUring,
    eventfd: RawFd,
    _own_eventfd: Option<OwnedFd>,
    setup: Setup,
    no_sqarray: bool,
    /// SQEs pushed whose CQE has not been reaped (ours and callers').
    inflight: usize,
    max_inflight: usize,
    /// Ops waiting for room in the completion queue (sliding window past the ring's size).
    backlog: VecDeque<squeue::Entry>,
    /// SQEs in the submission queue not yet handed to the kernel.
    unsubmitted: usize,
    /// Completions reaped while making room, returned by the next `reap`.
    early: Vec<(u64, i64)>,
    /// Linked entries pushed (`OpRef::link`) waiting for the end of their chain.
    chain: Vec<squeue::Entry>,
    ftruncate: bool,
    registered_buffers: bool,
    /// The registered buffers' (start, length), by fixed-buffer index. An op names its index
    /// when it is called and reaches the kernel later (at the flush, or a windowed batch's op
    /// at a later reap); a registration made in between (a new table) may hold another buffer
    /// at that index, and the kernel refused such an op with EFAULT. The index is used only
    /// while its buffer still holds the op's memory (else a plain READ / WRITE).
    buf_table: Vec<(usize, usize)>,
    /// Registered file slots by descriptor (IORING_REGISTER_FILES, sparse table).
    files: std::collections::HashMap<RawFd, u32>,
    free_slots: Vec<u32>,
    file_table: bool,
    /// IORING_SQ_TASKRUN is known to be set whenever completions wait as task work (checked at
    /// setup, see [`taskrun_flag_works`]): GETEVENTS only then. Else every reap enters.
    taskrun_flag: bool,
    /// The eventfd is not registered: the owner polls the ring's descriptor (see
    /// [`DriverOptions::poll_ring`](super::DriverOptions::poll_ring)).
    polled: bool,
    /// The descriptor a one-shot IORING_OP_POLL_ADD ([`WATCH`]) is armed on: the owner's event
    /// loop (its epoll descriptor), watched by loop-aware waits. It stays armed between waits
    /// (re-arming it per wait would cost a cancel and two more completions each time); it fires
    /// at most once, when the loop has an event, and is armed again by the next wait.
    watch: Option<RawFd>,
    /// Times the watch fired (the loop's descriptor became readable).
    watch_fired: u64,
    /// The kernel refused the watch (not expected): loop-aware waits do not wait.
    watch_failed: bool,
    /// A one-shot poll (POLLPRI) on `/proc/swaps` is armed: it fires when swap is turned on or
    /// off anywhere on the machine (see [`Driver::watch_swaps`]).
    swaps_armed: bool,
    /// How long a lone op's in-call wait ([`Driver::submit_and_wait`]) first spins in user space
    /// on the ring's flags before it sleeps in the kernel (`ODIRECT_WAIT_SPIN_US`, opt-in,
    /// at most [`MAX_SPIN`]; zero: off).
    spin: std::time::Duration,
    /// The hybrid wait of a lone disk op (`ODIRECT_WAIT_HYBRID`, see [`Hybrid`]).
    hybrid: Hybrid,
}

/// The longest `ODIRECT_WAIT_SPIN_US` honoured.
const MAX_SPIN: std::time::Duration = std::time::Duration::from_millis(1);

/// `ODIRECT_WAIT_SPIN_US`: microseconds a lone op's in-call wait spins before it sleeps.
fn spin_from_env() -> std::time::Duration {
    std::env::var("ODIRECT_WAIT_SPIN_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(std::time::Duration::ZERO, |us| {
            std::time::Duration::from_micros(us).min(MAX_SPIN)
        })
}

/// A lone disk op's hybrid wait (`ODIRECT_WAIT_HYBRID=1`, opt-in; the idea of the kernel's
/// IORING_SETUP_HYBRID_IOPOLL, made in user space on an interrupt-driven ring): the waiting
/// thread sleeps in the kernel with a timeout shorter than the op's device time, so that the
/// timer, not the completion's interrupt, brings it back, then watches the ring's flags in user
/// space until the completion arrives (bounded: half the sleep, within 10 µs and
/// `ODIRECT_WAIT_HYBRID_SPIN_US`, default 50), posts it with a GETEVENTS that does not sleep,
/// and past the bound sleeps for the rest of the wait as a plain wait would. The aim: the
/// wake-up from a halted CPU (~15 µs on this VM, guest halt polling off) overlaps the device's
/// time instead of following it, for a few µs of spinning per op instead of the whole device
/// time (`ODIRECT_WAIT_SPIN_US`).
///
/// The sleep is learned per class of op (file descriptor, read or write, size as a power of
/// two) as a running quantile: a wait woken during its sleep by the completion shortens it by
/// `(100 - pct) / 800` of itself, a wait whose timer came first lengthens it by `pct / 800`, so
/// that about `pct` % (`ODIRECT_WAIT_HYBRID_PCT`, default 30) are woken by the completion (as
/// without the hybrid) and the others by their timer, before it. A class's first wait sleeps
/// plainly and starts the sleep at half its time (the kernel's hybrid poll starts so too); a new
/// class starts from the last sleep learned. A sleep longer than [`HYBRID_MAX`] (a seek, a
/// network block device; `ODIRECT_WAIT_HYBRID_MAX_US`) or than the wait's own timeout allows
/// waits plainly, as does any wait the engine did not mark as a lone disk op's
/// (`Driver::hint_lone`).
///
/// Not the default: measured on this VM (a nested guest, where arming a timer shorter than the
/// next tick is an exit to the hypervisor) the short timer itself costs ~11 µs of system time
/// per op and fires ~10 µs past its deadline (bench/qd1-phases.cjs), so a lone read's p50
/// reaches fio's but its CPU per op is ~1.4-1.6x the plain wait's (README "Depth 1 on the disk").
struct Hybrid {
    on: bool,
    /// The share (%) of waits aimed at to be woken by the completion during their sleep.
    pct: u64,
    /// The longest spin after the timer's wake-up before sleeping again.
    max_spin: std::time::Duration,
    /// A learned sleep above this: plain waits ([`HYBRID_MAX`]; `ODIRECT_WAIT_HYBRID_MAX_US`,
    /// for tests on a slow fixture such as a loop device over FUSE).
    max_sleep: std::time::Duration,
    classes: [HybridClass; HYBRID_CLASSES],
    /// Counts uses, for the least recently used class to be replaced.
    tick: u64,
    /// The class of the next [`Driver::submit_and_wait`] (taken by it; cleared by a submit).
    next: Option<u64>,
    /// The sleep learned last (ns), a new class's first.
    seed_ns: u64,
    /// [hybrid waits (slept short or spun), woken during the sleep by the completion (or an
    /// event of the watched loop), found by spinning after the timer's wake-up (or from the
    /// start), spins that reached their bound and slept again, waits that spun from the start
    /// (a sleep too short to arm), plain waits of a marked class (first of its class, slower
    /// than `HYBRID_MAX`, or a timeout shorter than the sleep), ns spun in all, ns from the
    /// sleep's end to the thread back in user space over the timer's wake-ups].
    stats: [u64; 8],
}

#[derive(Clone, Copy, Default)]
struct HybridClass {
    key: u64,
    /// The sleep (ns); 0: not learned yet.
    sleep_ns: u64,
    used: u64,
}

/// Classes remembered by the hybrid wait (files x directions x sizes in use at once).
const HYBRID_CLASSES: usize = 8;
/// A learned sleep above this: the device is too slow for spinning to matter, waits sleep
/// plainly (and keep learning from their whole time).
const HYBRID_MAX: std::time::Duration = std::time::Duration::from_millis(2);
/// A learned sleep below this is not armed: the wait spins from the start (a device faster than
/// the wake-up).
const HYBRID_MIN_SLEEP: std::time::Duration = std::time::Duration::from_micros(3);
/// The share (%) of hybrid waits aimed at to be woken by the completion during their sleep
/// (`ODIRECT_WAIT_HYBRID_PCT`).
const HYBRID_PCT: u64 = 30;
/// The shortest sleep learned.
const HYBRID_FLOOR_NS: u64 = 1_000;
/// The spin's bound is half the sleep, within [this, `max_spin`].
const HYBRID_MIN_SPIN: std::time::Duration = std::time::Duration::from_micros(10);

/// What the first (timed) part of a hybrid wait found.
enum HybridPlan {
    /// Not a hybrid wait: one plain sleep for the whole timeout (learning the class's sleep when
    /// `Some(class)`).
    Plain(Option<usize>),
    /// Sleep this long (zero: not at all), then spin up to the bound.
    Hybrid(usize, std::time::Duration, std::time::Duration),
}

impl Hybrid {
    fn from_env() -> Hybrid {
        let num = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Hybrid {
            on: std::env::var("ODIRECT_WAIT_HYBRID").as_deref() == Ok("1"),
            pct: num("ODIRECT_WAIT_HYBRID_PCT").map_or(HYBRID_PCT, |p| p.clamp(1, 99)),
            max_spin: std::time::Duration::from_micros(
                num("ODIRECT_WAIT_HYBRID_SPIN_US").map_or(50, |us| us.clamp(1, 1000)),
            ),
            max_sleep: num("ODIRECT_WAIT_HYBRID_MAX_US")
                .map_or(HYBRID_MAX, std::time::Duration::from_micros),
            classes: [HybridClass::default(); HYBRID_CLASSES],
            tick: 0,
            next: None,
            seed_ns: 0,
            stats: [0; 8],
        }
    }

    /// The class `key`'s slot (a new one replaces the least recently used, seeded).
    fn class(&mut self, key: u64) -> usize {
        self.tick += 1;
        let i = match self
            .classes
            .iter()
            .position(|c| c.used != 0 && c.key == key)
        {
            Some(i) => i,
            None => {
                let i = (0..HYBRID_CLASSES)
                    .min_by_key(|&i| self.classes[i].used)
                    .unwrap_or(0);
                self.classes[i] = HybridClass {
                    key,
                    sleep_ns: self.seed_ns,
                    used: 0,
                };
                i
            }
        };
        self.classes[i].used = self.tick;
        i
    }

    fn plan(&mut self, key: Option<u64>, timeout: std::time::Duration) -> HybridPlan {
        let Some(key) = key.filter(|_| self.on) else {
            return HybridPlan::Plain(None);
        };
        let i = self.class(key);
        let sleep = std::time::Duration::from_nanos(self.classes[i].sleep_ns);
        let spin = (sleep / 2).clamp(HYBRID_MIN_SPIN, self.max_spin.max(HYBRID_MIN_SPIN));
        if sleep.is_zero() || sleep > self.max_sleep || sleep + spin >= timeout {
            self.stats[5] += 1;
            return HybridPlan::Plain(Some(i));
        }
        self.stats[0] += 1;
        if sleep < HYBRID_MIN_SLEEP {
            self.stats[4] += 1;
            return HybridPlan::Hybrid(i, std::time::Duration::ZERO, spin);
        }
        HybridPlan::Hybrid(i, sleep, spin)
    }

    /// A plain wait of class `i` found its completion after `took`: the sleep follows half of it.
    fn learned_plain(&mut self, i: usize, took: std::time::Duration) {
        let half = (took.as_nanos() / 2).min(u64::MAX as u128) as u64;
        let c = &mut self.classes[i];
        c.sleep_ns = if c.sleep_ns == 0 {
            half
        } else {
            // Towards half the time, a quarter of the way each wait.
            (c.sleep_ns * 3 + half) / 4
        };
        self.seed_ns = c.sleep_ns;
    }

    /// A hybrid wait of class `i` was woken during its sleep by the completion (or the loop):
    /// the sleep shortens by `(100 - pct) / 800` of itself.
    fn learned_late(&mut self, i: usize) {
        let pct = self.pct;
        let c = &mut self.classes[i];
        c.sleep_ns = (c.sleep_ns - c.sleep_ns * (100 - pct) / 800).max(HYBRID_FLOOR_NS);
        self.seed_ns = c.sleep_ns;
    }

    /// A hybrid wait of class `i` woke first (its timer) and spun to the completion or to its
    /// bound: the sleep lengthens by `pct / 800` of itself. In equilibrium about `pct` % of the
    /// waits are woken by the completion itself (a running quantile: no clock model, no estimate
    /// of the wake-up's cost, only which came first).
    fn learned_spun(&mut self, i: usize) {
        let pct = self.pct;
        let c = &mut self.classes[i];
        c.sleep_ns = (c.sleep_ns + (c.sleep_ns * pct / 800).max(100)).max(HYBRID_FLOOR_NS);
        self.seed_ns = c.sleep_ns;
    }
}

/// Size of the sparse registered-file table.
const FILE_SLOTS: u32 = 1024;

fn build(entries: u32, first: Setup, sqpoll_idle_ms: u32) -> io::Result<(IoUring, Setup, bool)> {
    let cq = entries * 4;
    if first == Setup::Sqpoll {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq).setup_sqpoll(sqpoll_idle_ms.max(1));
        return b.build(entries).map(|r| (r, Setup::Sqpoll, false));
    }
    let order = [Setup::DeferTaskrun, Setup::CoopTaskrun, Setup::Plain];
    let start = order.iter().position(|s| *s == first).unwrap_or(0);
    let mut last = None;
    // NO_SQARRAY (6.6+) is opt-in (ODIRECT_URING_NO_SQARRAY=1): measured here it did not win
    // (CPU per op 5.2-5.4 us with it vs 4.2-5.1 without, tmpfs 4 KiB QD64); EINVAL on older
    // kernels retries without it.
    let no_sqarray = std::env::var("ODIRECT_URING_NO_SQARRAY").as_deref() == Ok("1");
    let variants = order[start..]
        .iter()
        .flat_map(|s| [(*s, no_sqarray), (*s, false)])
        .filter(|(_, n)| no_sqarray || !*n);
    for (setup, nosq) in variants {
        let setup = &setup;
        let mut b = IoUring::builder();
        b.setup_cqsize(cq);
        if nosq {
            b.setup_no_sqarray();
        }
        match setup {
            Setup::DeferTaskrun => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }
            Setup::CoopTaskrun => {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            Setup::Plain | Setup::Sqpoll => {}
        }
        match b.build(entries) {
            Ok(r) => return Ok((r, *setup, nosq)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

impl LocalRing {
    /// A ring of `entries` submission slots (rounded to a power of two), with its own eventfd.
    pub fn new(entries: u32) -> Result<LocalRing, Unavailable> {
        let own = super::eventfd::new(false).map_err(|e| explain_setup_error(&e))?;
        let mut r = LocalRing::with_eventfd(entries, own.as_raw_fd())?;
        r._own_eventfd = Some(own);
        Ok(r)
    }

    /// A ring that signals `eventfd` (a non-blocking eventfd the caller keeps open longer than
    /// the ring) when completions may be waiting.
    pub fn with_eventfd(entries: u32, eventfd: RawFd) -> Result<LocalRing, Unavailable> {
        LocalRing::with_options(entries, eventfd, 0)
    }

    /// As [`LocalRing::with_eventfd`]; `sqpoll_idle_ms > 0` asks for an SQPOLL ring whose kernel
    /// thread sleeps after that many idle milliseconds.
    pub fn with_options(
        entries: u32,
        eventfd: RawFd,
        sqpoll_idle_ms: u32,
    ) -> Result<LocalRing, Unavailable> {
        LocalRing::with_setup(entries, eventfd, sqpoll_idle_ms, false)
    }

    /// As [`LocalRing::with_options`]; `poll_ring`: the eventfd is not registered, the owner
    /// polls [`Driver::poll_fd`] (the ring's descriptor, readable while the completion queue
    /// holds entries) and the ring is made with COOP_TASKRUN, not DEFER_TASKRUN (whose
    /// completions wait as task work that wakes no poller until the owner enters the kernel).
    /// Own signals (`wake`: a cancelled backlog entry) still go to `eventfd`.
    pub fn with_setup(
        entries: u32,
        eventfd: RawFd,
        sqpoll_idle_ms: u32,
        poll_ring: bool,
    ) -> Result<LocalRing, Unavailable> {
        let first = if sqpoll_idle_ms > 0 {
            Setup::Sqpoll
        } else if poll_ring && preferred_setup() == Setup::DeferTaskrun {
            Setup::CoopTaskrun
        } else {
            preferred_setup()
        };
        LocalRing::with_first(entries, eventfd, first, sqpoll_idle_ms, poll_ring)
    }

    /// A COOP_TASKRUN ring (plain where the kernel has none) that signals `eventfd`, whatever
    /// `ODIRECT_URING_SETUP` says: its completions are posted without its submitter thread, so
    /// it can be reaped from another thread once that thread is gone (see `Driver::orphan`).
    pub fn coop(entries: u32, eventfd: RawFd) -> Result<LocalRing, Unavailable> {
        LocalRing::with_first(entries, eventfd, Setup::CoopTaskrun, 0, false)
    }

    fn with_first(
        entries: u32,
        eventfd: RawFd,
        first: Setup,
        sqpoll_idle_ms: u32,
        poll_ring: bool,
    ) -> Result<LocalRing, Unavailable> {
        let entries = entries.clamp(8, 4096).next_power_of_two();
        let (ring, setup, no_sqarray) =
            build(entries, first, sqpoll_idle_ms).map_err(|e| explain_setup_error(&e))?;
        if !poll_ring {
            ring.submitter()
                .register_eventfd(eventfd)
                .map_err(|e| explain_setup_error(&e))?;
        }
        let mut probe = io_uring::Probe::new();
        let ftruncate = ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::Ftruncate::CODE);
        let max_inflight = ring.params().cq_entries() as usize - 16;
        let mut r = LocalRing {
            ring,
            eventfd,
            _own_eventfd: None,
            setup,
            no_sqarray,
            inflight: 0,
            max_inflight,
            backlog: VecDeque::new(),
            unsubmitted: 0,
            early: Vec::new(),
            chain: Vec::new(),
            ftruncate,
            registered_buffers: false,
            buf_table: Vec::new(),
            files: std::collections::HashMap::new(),
            free_slots: Vec::new(),
            file_table: false,
            taskrun_flag: false,
            polled: poll_ring,
            watch: None,
            watch_fired: 0,
            watch_failed: false,
            swaps_armed: false,
            spin: spin_from_env(),
            hybrid: Hybrid::from_env(),
        };
        r.taskrun_flag = setup != Setup::Plain
            && setup != Setup::Sqpoll
            && r.taskrun_flag_works()
            && !tests_hide_taskrun_flag();
        // A DEFER_TASKRUN ring whose probe ran and saw no IORING_SQ_TASKRUN (no such kernel is
        // known) is refused: its kernel signals the eventfd only when the task-work list turns
        // non-empty, and without the flag a completion queued between a wake-up's GETEVENTS and
        // the eventfd's reset is never seen again (the hang adversary-s15 found on a ring made
        // flag-less by EMFILE). COOP_TASKRUN does not hold completions for our own entry.
        if setup == Setup::DeferTaskrun && !r.taskrun_flag {
            drop(r);
            return LocalRing::with_first(
                entries,
                eventfd,
                Setup::CoopTaskrun,
                sqpoll_idle_ms,
                poll_ring,
            );
        }
        // `ODIRECT_IOWQ_BOUNDED=n` (opt-in, for A/B): at most n bounded io-wq workers for this
        // thread (IORING_REGISTER_IOWQ_MAX_WORKERS, 5.15+; regular files' punted reads and
        // writes are bounded work, those of may-block files unbound). Ignored where refused.
        if let Some(n) = std::env::var("ODIRECT_IOWQ_BOUNDED")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| *n > 0)
        {
            let mut max = [n, 0];
            let _ = r.ring.submitter().register_iowq_max_workers(&mut max);
        }
        // Registered files (5.19+ sparse tables) are opt-in (ODIRECT_URING_FIXED_FILES=1):
        // measured here they did not win (tmpfs 4 KiB QD64, 3 interleaved pairs: 217k/266k/254k
        // IOPS and 4.4/3.7/3.9 us CPU per op with them, 252k/252k/247k and 3.9/4.0/4.0 without).
        if std::env::var("ODIRECT_URING_FIXED_FILES").as_deref() == Ok("1")
            && r.ring.submitter().register_files_sparse(FILE_SLOTS).is_ok()
        {
            r.file_table = true;
            r.free_slots = (0..FILE_SLOTS).rev().collect();
        }
        Ok(r)
    }

    pub fn setup(&self) -> Setup {
        self.setup
    }

    /// Readable when completions (or deferred task work) may be waiting.
    pub fn notify_fd(&self) -> RawFd {
        self.eventfd
    }

    /// True when IORING_OP_FTRUNCATE exists (Linux 6.9+).
    pub fn supports_ftruncate(&self) -> bool {
        self.ftruncate
    }

    /// Builds the SQE for `kind` with `key` as user_data.
    ///
    /// # Safety
    /// `iov` (for Readv/Writev) and every pointer in `kind` must stay valid until this op's
    /// completion is reaped; `fixed` must name a registered buffer containing the op's memory.
    pub unsafe fn sqe(
        &self,
        key: u64,
        kind: &OpKind,
        iov: Option<&[libc::iovec]>,
        fixed: Option<u16>,
        drain: bool,
    ) -> io::Result<squeue::Entry> {
        // SAFETY: forwarded contract.
        unsafe { self.sqe_rw(key, kind, iov, fixed, drain, 0) }
    }

    /// [`LocalRing::sqe`] with per-op flags (RWF_DSYNC, RWF_SYNC, RWF_ATOMIC, RWF_DONTCACHE...)
    /// for reads and writes (ignored for the others).
    ///
    /// # Safety
    /// As for [`LocalRing::sqe`].
    pub unsafe fn sqe_rw(
        &self,
        key: u64,
        kind: &OpKind,
        iov: Option<&[libc::iovec]>,
        fixed: Option<u16>,
        drain: bool,
        rw_flags: u32,
    ) -> io::Result<squeue::Entry> {
        debug_assert!(key < INTERNAL);
        // An untorn write (RWF_ATOMIC) goes as a plain WRITE: the kernel takes one only from a
        // single user buffer (generic_atomic_write_valid: ITER_UBUF), and WRITE_FIXED's
        // registered buffer is a bvec (EINVAL). A reused `fh.alloc` buffer, which the engine
        // registers itself at its second op, failed every atomic write after the first
        // (adversary-s22). The registered memory is the caller's own: its address stays valid.
        let fixed = fixed.filter(|&i| rw_flags & RWF_ATOMIC == 0 && self.holds(i, kind));
        let slot = if self.file_table {
            self.files.get(&kind.fd()).copied()
        } else {
            None
        };
        // The op on a registered file slot (IORING_REGISTER_FILES) when the fd has one, else on
        // the fd itself; `$fd` names the target inside the builder expression.
        macro_rules! on {
            ($fd:ident => $e:expr) => {
                match slot {
                    Some(i) => {
                        let $fd = types::Fixed(i);
                        $e
                    }
                    None => {
                        let $fd = types::Fd(kind.fd());
                        $e
                    }
                }
            };
        }
        let e = match kind {
            OpKind::Read {
                ptr, len, offset, ..
            } => match fixed {
                Some(i) => {
                    on!(t => opcode::ReadFixed::new(t, *ptr, *len as u32, i).offset(*offset).rw_flags(rw_flags as _).build())
                }
                None => {
                    on!(t => opcode::Read::new(t, *ptr, *len as u32).offset(*offset).rw_flags(rw_flags as _).build())
                }
            },
            OpKind::Write {
                ptr, len, offset, ..
            } => match fixed {
                Some(i) => {
                    on!(t => opcode::WriteFixed::new(t, *ptr, *len as u32, i).offset(*offset).rw_flags(rw_flags as _).build())
                }
                None => {
                    on!(t => opcode::Write::new(t, *ptr, *len as u32).offset(*offset).rw_flags(rw_flags as _).build())
                }
            },
            OpKind::Readv { offset, .. } | OpKind::Writev { offset, .. } => {
                let v = iov.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
                if matches!(kind, OpKind::Readv { .. }) {
                    on!(t => opcode::Readv::new(t, v.as_ptr(), v.len() as u32).offset(*offset).rw_flags(rw_flags as _).build())
                } else {
                    on!(t => opcode::Writev::new(t, v.as_ptr(), v.len() as u32).offset(*offset).rw_flags(rw_flags as _).build())
                }
            }
            OpKind::Fsync { datasync, .. } => {
                let flags = if *datasync {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                on!(t => opcode::Fsync::new(t).flags(flags).build())
            }
            OpKind::Fallocate {
                mode, offset, len, ..
            } => on!(t => opcode::Fallocate::new(t, *len).offset(*offset).mode(*mode).build()),
            OpKind::Ftruncate { len, .. } => {
                if !self.ftruncate {
                    return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
                }
                on!(t => opcode::Ftruncate::new(t, *len).build())
            }
            // Close always names the descriptor (the caller drops its slot first).
            OpKind::Close { fd } => opcode::Close::new(types::Fd(*fd)).build(),
        };
        let e = e.user_data(key);
        Ok(if drain {
            e.flags(squeue::Flags::IO_DRAIN)
        } else {
            e
        })
    }

    /// `e` with IOSQE_ASYNC: the kernel hands it to an io-wq worker without trying it inline, so
    /// `io_uring_enter` never sleeps on it (for files whose submission may block: FUSE past its
    /// request limit, network filesystems).
    pub fn punt(e: squeue::Entry) -> squeue::Entry {
        e.flags(squeue::Flags::ASYNC)
    }

    /// Queues an SQE built by [`LocalRing::sqe`]; past the completion queue's room it waits in
    /// a backlog and goes in as earlier ops complete.
    ///
    /// # Safety
    /// The SQE's memory must satisfy the contract of [`LocalRing::sqe`].
    pub unsafe fn push_entry(&mut self, e: squeue::Entry) {
        if self.inflight >= self.max_inflight {
            self.backlog.push_back(e);
            return;
        }
        // SAFETY: forwarded contract.
        unsafe { self.push_now(e) };
    }

    /// Queues `entries` as one IOSQE_IO_LINK chain: each starts only after the one before it
    /// completed successfully, and a failure (or short transfer) cancels the rest (-ECANCELED).
    /// The whole chain goes into the submission queue at once, so the kernel never sees part
    /// of it. Where it cannot (completion queue room taken, a backlog waiting, a submission
    /// queue too small) the entries go in one by one, unlinked, with IOSQE_IO_DRAIN on the last:
    /// it still starts only after all of them (and everything else before it) completed.
    ///
    /// # Safety
    /// Every entry's memory must satisfy the contract of [`LocalRing::sqe`].
    pub unsafe fn push_chain(&mut self, entries: Vec<squeue::Entry>) {
        let n = entries.len();
        if n > 1 && self.backlog.is_empty() && self.inflight + n <= self.max_inflight {
            let room = {
                let sq = self.ring.submission();
                sq.capacity() - sq.len()
            };
            if room < n {
                self.submit_inner();
            }
            let linked: Vec<squeue::Entry> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    if i + 1 < n {
                        e.clone().flags(squeue::Flags::IO_LINK)
                    } else {
                        e.clone()
                    }
                })
                .collect();
            // SAFETY: forwarded contract; push_multiple adds all the entries or none.
            if unsafe { self.ring.submission().push_multiple(&linked) }.is_ok() {
                self.inflight += n;
                self.unsubmitted += n;
                return;
            }
        }
        for (i, e) in entries.into_iter().enumerate() {
            let e = if i + 1 == n && n > 1 {
                e.flags(squeue::Flags::IO_DRAIN)
            } else {
                e
            };
            // SAFETY: forwarded contract.
            unsafe { self.push_entry(e) };
        }
    }

    unsafe fn push_now(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: the entry's memory outlives its completion (contract of `push`).
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                self.inflight += 1;
                self.unsubmitted += 1;
                return;
            }
            // Submission queue full: hand it to the kernel and retry.
            self.submit_inner();
        }
    }

    fn submit_inner(&mut self) {
        loop {
            let r = if self.setup != Setup::Sqpoll && self.task_work_pending() {
                // Completions wait as task work: post one batch of them in the same call
                // (GETEVENTS with min_complete 0 never waits), saving the owner's next reap a
                // system call; they are in the CQ for it (`pending`).
                let n = self.ring.submission().len() as u32;
                // SAFETY: no argument; submits the n queued SQEs (their memory is under
                // `push`'s contract) and runs deferred task work without waiting.
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        n,
                        0,
                        IORING_ENTER_GETEVENTS,
                        None,
                    )
                }
            } else {
                self.ring.submit()
            };
            match r {
                Ok(_) => {
                    self.unsubmitted = 0;
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // Completion queue backed up: reap into `early` to make room.
                    self.collect(true);
                }
                Err(e) => {
                    // Should not happen (EFAULT/EINVAL are programming errors); do not spin.
                    // Not eprintln!: it panics when stderr cannot take the line (a full
                    // non-blocking pipe), and a panic here aborts the process.
                    let _ = io::Write::write_fmt(
                        &mut io::stderr(),
                        format_args!("odirect: io_uring_enter failed: {e}\n"),
                    );
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    return;
                }
            }
        }
    }

    fn wake(&self) {
        super::eventfd::signal(self.eventfd);
    }

    fn collect(&mut self, run_task_work: bool) {
        // Only when making room in the completion queue (submit_inner): task work left waiting
        // after the owner reset the eventfd would signal nobody (the kernel signals only when
        // the first of a batch arrives), so signal it ourselves.
        if run_task_work {
            self.run_task_work();
            if self.task_work_pending() {
                self.wake();
            }
        }
        let mut n = 0;
        for cqe in self.ring.completion() {
            n += 1;
            let ud = cqe.user_data();
            if ud >= INTERNAL {
                if ud == SWAPS {
                    self.swaps_armed = false;
                }
                if ud == WATCH {
                    self.watch = None;
                    match cqe.result() {
                        r if r > 0 => self.watch_fired += 1,
                        r if r == -libc::ECANCELED => {}
                        _ => self.watch_failed = true,
                    }
                }
                continue;
            }
            self.early.push((ud, cqe.result() as i64));
        }
        self.inflight -= n;
    }

    /// Posts the completions the kernel holds as task work (DEFER_TASKRUN, COOP_TASKRUN) with one
    /// io_uring_enter(GETEVENTS): none when IORING_SQ_TASKRUN is clear. The kernel runs one
    /// batch per call (20 since Linux 6.13, IO_LOCAL_TW_DEFAULT_MAX) and sets IORING_SQ_TASKRUN
    /// again when more is left: [`LocalRing::task_work_pending`]. One batch at a time lets the
    /// owner deliver and resubmit those before it takes the next (see the engine's wake-up
    /// loop), so the device gets work back sooner than if every waiting completion were posted
    /// first.
    fn run_task_work(&mut self) {
        if matches!(self.setup, Setup::Plain | Setup::Sqpoll)
            || (self.taskrun_flag && !self.ring.submission().taskrun())
        {
            return;
        }
        // SAFETY: a plain io_uring_enter with no argument: runs deferred task work (posting
        // completions) without waiting.
        let _ = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(0, 0, IORING_ENTER_GETEVENTS, None)
        };
    }

    /// True when completions wait as task work that `run_task_work` has not posted (known only
    /// where IORING_SQ_TASKRUN works, see [`taskrun_flag_works`]; else every reap enters).
    fn task_work_pending(&self) -> bool {
        // SAFETY: the ring is driven by one thread through `&mut self`; no other view of its
        // submission queue exists while this one reads the flags.
        self.taskrun_flag && unsafe { self.ring.submission_shared() }.taskrun()
    }

    /// Does this kernel set IORING_SQ_TASKRUN when a completion waits as task work? Checked once
    /// with a read of an empty (blocking) pipe, completed by a write to it: the poll wake-up
    /// queues task work inside the write. The read is reaped here; the ring is empty again after.
    ///
    /// Without a pipe (EMFILE/ENFILE: the descriptor table was full when the ring was made) the
    /// flag is assumed to work: the kernel accepted IORING_SETUP_TASKRUN_FLAG, and every kernel
    /// that does sets it. Assuming the opposite is what loses completions: a DEFER_TASKRUN ring
    /// signals its eventfd only when its task-work list turns non-empty, so without the flag a
    /// completion queued between the wake-up's GETEVENTS and the eventfd's reset is never seen
    /// again (adversary-s15's EMFILE case: a lone copyFile write hung for good).
    fn taskrun_flag_works(&mut self) -> bool {
        let mut fds = [0; 2];
        // SAFETY: fds is a live array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return true;
        }
        let mut byte = [0u8; 1];
        let e = opcode::Read::new(types::Fd(fds[0]), byte.as_mut_ptr(), 1)
            .offset(u64::MAX)
            .build()
            .user_data(INTERNAL);
        // SAFETY: `byte` and the pipe outlive the read: it is waited for below.
        unsafe { self.push_now(e) };
        self.submit_inner();
        // SAFETY: writes one byte from a live local into our own pipe.
        let wrote = unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) } == 1;
        let flagged = wrote && self.ring.submission().taskrun();
        // Reap the read (or cancel it if the write failed) before the pipe and byte go away.
        if !wrote {
            let c = opcode::AsyncCancel::new(INTERNAL)
                .build()
                .user_data(INTERNAL);
            // SAFETY: a cancel carries no memory.
            unsafe { self.push_now(c) };
        }
        while self.inflight > 0 {
            let _ = self.ring.submit_and_wait(1);
            self.collect(false);
        }
        // The eventfd stays as it is: it is shared with other drivers, whose signal it may hold.
        // SAFETY: closing our own pipe.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        flagged
    }

    /// Submits what is queued and sleeps in the kernel until `want` completions are posted (a
    /// watched loop's event counts as one) or `timeout` has passed (one io_uring_enter with
    /// GETEVENTS | EXT_ARG).
    fn sleep_for(&mut self, want: usize, timeout: std::time::Duration) {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        // EINTR / ETIME with nothing submitted leave the queue as it was: submitted below.
        let _ = self.ring.submitter().submit_with_args(want, &args);
        if self.ring.submission().is_empty() {
            self.unsubmitted = 0;
        } else {
            self.submit_inner();
        }
    }

    /// A completion (or a watched loop's event) waits as task work or in the completion queue.
    fn completion_ready(&self) -> bool {
        // SAFETY: the ring is driven by one thread through `&mut self`; no other view of its
        // completion queue exists while this one reads its head and tail.
        self.task_work_pending() || !unsafe { self.ring.completion_shared() }.is_empty()
    }

    /// The hybrid wait of a lone op of class `i` (see [`Hybrid`]): submits and sleeps `sleep`
    /// (zero: not at all), then spins on the ring's flags up to `spin`, then sleeps for what is
    /// left of `timeout`. True when completions are there to reap.
    fn hybrid_wait(
        &mut self,
        i: usize,
        sleep: std::time::Duration,
        spin: std::time::Duration,
        timeout: std::time::Duration,
    ) -> bool {
        let began = std::time::Instant::now();
        if sleep.is_zero() {
            self.submit_inner();
        } else {
            self.sleep_for(1, sleep);
            if self.completion_ready() {
                // Woken by the completion (or the loop): the timer was late.
                self.hybrid.stats[1] += 1;
                self.hybrid.learned_late(i);
                return self.pending();
            }
        }
        let woke = std::time::Instant::now();
        if !sleep.is_zero() {
            let late = (woke - began).saturating_sub(sleep);
            self.hybrid.stats[7] += late.as_nanos() as u64;
        }
        loop {
            if self.completion_ready() {
                self.run_task_work();
                let spun = woke.elapsed().as_nanos() as u64;
                self.hybrid.stats[2] += 1;
                self.hybrid.stats[6] += spun;
                self.hybrid.learned_spun(i);
                return self.pending();
            }
            if woke.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
        // Not there by the bound (a slow moment, a stalled device): sleep as a plain wait would.
        let spun = woke.elapsed().as_nanos() as u64;
        self.hybrid.stats[3] += 1;
        self.hybrid.stats[6] += spun;
        self.hybrid.learned_spun(i);
        let left = timeout.saturating_sub(began.elapsed());
        if !left.is_zero() {
            self.sleep_for(1, left);
        }
        self.pending()
    }

    /// True when no op is in the kernel or the backlog.
    pub fn is_idle(&self) -> bool {
        self.inflight == 0 && self.backlog.is_empty()
    }

    pub fn has_registered_buffers(&self) -> bool {
        self.registered_buffers
    }

    /// Whether registered buffer `i` (of the current table) holds the memory of read/write `kind`.
    fn holds(&self, i: u16, kind: &OpKind) -> bool {
        let (ptr, len) = match kind {
            OpKind::Read { ptr, len, .. } => (*ptr as usize, *len),
            OpKind::Write { ptr, len, .. } => (*ptr as usize, *len),
            _ => return false,
        };
        self.registered_buffers
            && self
                .buf_table
                .get(i as usize)
                .is_some_and(|&(start, n)| ptr >= start && ptr.saturating_add(len) <= start + n)
    }
}

/// Where an io_uring ring (this thread's, or a may-block file's own thread's) makes `op`:
/// ftruncate needs IORING_OP_FTRUNCATE (Linux 6.9+, `ftruncate`), else it runs elsewhere; ops on
/// a descriptor whose submission may sleep are punted (IOSQE_ASYNC: an io-wq worker issues them,
/// the submitting thread's io_uring_enter only queues them); the rest inline.
pub fn ring_placement(ftruncate: bool, op: &OpKind, facts: FdFacts) -> Placement {
    if matches!(op, OpKind::Ftruncate { .. }) && !ftruncate {
        Placement::Elsewhere
    } else if facts & FD_MAY_BLOCK != 0 {
        Placement::Punt
    } else {
        Placement::Inline
    }
}

impl Driver for LocalRing {
    fn kind(&self) -> BackendKind {
        BackendKind::IoUring
    }

    /// See [`ring_placement`].
    fn placement(&self, op: &OpKind, facts: FdFacts) -> Placement {
        ring_placement(self.ftruncate, op, facts)
    }

    unsafe fn push(&mut self, op: &OpRef<'_>) -> io::Result<()> {
        // SAFETY: forwarded contract.
        let e =
            unsafe { self.sqe_rw(op.key, op.kind, op.iov, op.fixed, false, op.rw_flags as u32) }?;
        let e = if op.punt { LocalRing::punt(e) } else { e };
        if op.link || !self.chain.is_empty() {
            // A chain (ops marked `link`, then the one after the last) goes in whole.
            self.chain.push(e);
            if !op.link {
                let chain = std::mem::take(&mut self.chain);
                // SAFETY: forwarded contract, for every entry of the chain.
                unsafe { self.push_chain(chain) };
            }
        } else {
            // SAFETY: forwarded contract.
            unsafe { self.push_entry(e) };
        }
        Ok(())
    }

    /// Hands every queued SQE to the kernel (one io_uring_enter).
    fn submit(&mut self) {
        self.hybrid.next = None;
        if !self.chain.is_empty() {
            // A chain whose last op never came (not expected): in, ordered, unlinked.
            let chain = std::mem::take(&mut self.chain);
            // SAFETY: the entries were pushed under `push`'s contract.
            unsafe { self.push_chain(chain) };
        }
        if self.unsubmitted > 0 || !self.ring.submission().is_empty() {
            self.submit_inner();
        }
    }

    /// One io_uring_enter(to_submit, min_complete = `want`, GETEVENTS | EXT_ARG) with a timeout
    /// (Linux 5.11+), as fio waits at depth 1: the completion wakes the caller in the kernel, with
    /// no eventfd, epoll or second io_uring_enter. A refused wait (an older kernel: EINVAL) or
    /// any other failure falls back to a plain submission.
    ///
    /// `watch`: the owner's event-loop descriptor (libuv's epoll descriptor): a one-shot
    /// IORING_OP_POLL_ADD on it (armed unless still armed from an earlier wait) ends the wait
    /// too, as soon as the loop has an event, whose completion counts as one of `want` (the
    /// caller sees it in [`Driver::watch_fired`]). Its completion is posted as task work like
    /// any other, so the same wait sees both.
    fn submit_and_wait(
        &mut self,
        want: usize,
        timeout: std::time::Duration,
        watch: Option<RawFd>,
    ) -> bool {
        // The hint is for this wait only (see `hint_lone`).
        let class = self.hybrid.next.take();
        if !self.chain.is_empty()
            || !self.backlog.is_empty()
            || want == 0
            || (watch.is_some() && self.watch_failed)
        {
            self.submit();
            return self.pending();
        }
        if let Some(fd) = watch {
            if self.watch.is_some_and(|w| w != fd) {
                // Armed on another descriptor (not expected: one ring per loop): replaced.
                let c = opcode::PollRemove::new(WATCH).build().user_data(INTERNAL);
                // SAFETY: a poll removal carries no memory.
                unsafe { self.push_now(c) };
                self.watch = None;
            }
            if self.watch.is_none() {
                let p = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                    .build()
                    .user_data(WATCH);
                // SAFETY: a poll carries no memory; `fd` is the caller's loop descriptor, which
                // outlives the ring's use of it (a poll on a closed file ends with its drop).
                unsafe { self.push_now(p) };
                self.watch = Some(fd);
            }
        }
        let mut timeout = timeout;
        if want == 1 && !self.spin.is_zero() && self.taskrun_flag {
            // Spin first (opt-in): submit, then watch the ring's flags in user space until the
            // completion waits as task work (IORING_SQ_TASKRUN; a watched loop's event sets it
            // too) or is in the queue, and post it with one GETEVENTS that does not sleep. The
            // JS thread never leaves the CPU for a fast device (no switch, no idle entry and
            // exit), at the cost of that CPU time; past the spin it sleeps as before.
            self.submit_inner();
            let began = std::time::Instant::now();
            let limit = self.spin.min(timeout);
            loop {
                // SAFETY: the ring is driven by one thread through `&mut self`; no other view
                // of its completion queue exists while this one reads its head and tail.
                if self.task_work_pending() || !unsafe { self.ring.completion_shared() }.is_empty()
                {
                    self.run_task_work();
                    return self.pending();
                }
                if began.elapsed() >= limit {
                    break;
                }
                std::hint::spin_loop();
            }
            timeout = timeout.saturating_sub(began.elapsed());
            if timeout.is_zero() {
                return self.pending();
            }
        }
        let plan = if want == 1 && self.spin.is_zero() && self.taskrun_flag {
            self.hybrid.plan(class, timeout)
        } else {
            HybridPlan::Plain(None)
        };
        let learn = match plan {
            HybridPlan::Hybrid(i, sleep, spin) => return self.hybrid_wait(i, sleep, spin, timeout),
            HybridPlan::Plain(learn) => learn,
        };
        // The clock is read only for a wait that learns (a marked lone disk op's, hybrid on).
        let began = learn.map(|i| (i, std::time::Instant::now()));
        self.sleep_for(want, timeout);
        let found = self.pending();
        if let (Some((i, began)), true) = (began, found) {
            self.hybrid.learned_plain(i, began.elapsed());
        }
        found
    }

    /// Posts one batch of the completions waiting as task work (see `run_task_work`) before the
    /// owner resets the eventfd: posting them signals it, and a signal after the reset would
    /// wake the owner again for nothing.
    fn prepare_reap(&mut self) {
        // A batch a submission posted (see `submit_inner`) is taken first, by `reap`; what is
        // left is reported by `pending`.
        if self.ring.completion().is_empty() {
            self.run_task_work();
        }
    }

    /// Reaps every completion posted now (never blocks), and moves backlogged ops into the
    /// ring as room frees up (submitting them). Does not reset the eventfd (its owner does), and
    /// does not post task work: what still waits there is reported by `pending`.
    fn reap(&mut self, out: &mut Vec<(u64, i64)>) {
        self.collect(false);
        out.append(&mut self.early);
        if !self.backlog.is_empty() {
            while self.inflight < self.max_inflight {
                let Some(e) = self.backlog.pop_front() else {
                    break;
                };
                // SAFETY: backlogged entries were pushed under the same contract.
                unsafe { self.push_now(e) };
            }
            self.submit();
        }
    }

    /// Asks the kernel to cancel the op with this key (it still completes). Ops still in the
    /// backlog are taken out and completed with ECANCELED by the next `reap`.
    fn cancel(&mut self, key: u64) {
        if let Some(pos) = self.backlog.iter().position(|e| e.get_user_data() == key) {
            self.backlog.remove(pos);
            self.early.push((key, -(libc::ECANCELED as i64)));
            self.wake();
            return;
        }
        let e = opcode::AsyncCancel::new(key).build().user_data(INTERNAL);
        // SAFETY: a cancel carries no memory.
        unsafe { self.push_now(e) };
        self.submit();
    }

    /// Asks the kernel to cancel every op (they still complete, through `reap`); ops in the
    /// backlog (or an unfinished chain) complete with ECANCELED at once. Does not wait.
    fn cancel_all(&mut self) {
        for e in self.chain.drain(..).chain(self.backlog.drain(..)) {
            self.early
                .push((e.get_user_data(), -(libc::ECANCELED as i64)));
        }
        if self.inflight > 0 {
            let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(INTERNAL);
            // SAFETY: a cancel carries no memory.
            unsafe { self.push_now(e) };
        }
        self.submit();
        if !self.early.is_empty() {
            self.wake();
        }
    }

    /// Cancels everything and blocks until every op has completed; returns their completions.
    /// Used at teardown, before the memory of the ops may be released.
    fn wait_all(&mut self, out: &mut Vec<(u64, i64)>) {
        self.cancel_all();
        while self.inflight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) | Err(_) => {}
            }
            self.collect(false);
        }
        out.append(&mut self.early);
    }

    /// IORING_CQ_EVENTFD_DISABLED while the owner reaps round after round: the kernel neither
    /// signals the eventfd for the completions it posts in our own io_uring_enter(GETEVENTS)
    /// nor for those queued meanwhile, and the owner resets the eventfd once per wake-up
    /// instead of once per round. Only where nothing can go unseen: DEFER_TASKRUN with a
    /// working IORING_SQ_TASKRUN (a completion queued while quiet sets it, so `pending`
    /// reports it when the owner turns announcements back on and checks).
    fn quiet(&mut self, on: bool) -> bool {
        if self.setup != Setup::DeferTaskrun || !self.taskrun_flag {
            return false;
        }
        let cq = self.ring.completion();
        if on {
            cq.disable_eventfd();
        } else {
            cq.enable_eventfd();
            // The kernel sets IORING_SQ_TASKRUN, then reads the CQ flags to decide whether to
            // signal; we clear the flag, then read IORING_SQ_TASKRUN (`pending`): full fences
            // on both sides, so at least one of us sees the other's store.
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        }
        true
    }

    /// Completions waiting as task work beyond the batch `prepare_reap` posted, or posted since
    /// the last reap (a submission posts a batch when task work waits, see `submit_inner`): the
    /// owner reaps again (or signals the eventfd) while this is true.
    fn pending(&self) -> bool {
        // SAFETY: the ring is driven by one thread through `&mut self`; no other view of its
        // completion queue exists while this one reads its head and tail.
        self.task_work_pending()
            || !self.early.is_empty()
            || !unsafe { self.ring.completion_shared() }.is_empty()
    }

    /// Polled (see `poll_fd`): completions in the queue keep the ring's descriptor readable, and
    /// task work pending is run (posting them, waking the poller) when the owner next leaves
    /// the kernel; only what was collected while making room needs an announcement.
    fn unannounced(&self) -> bool {
        if self.polled {
            !self.early.is_empty()
        } else {
            self.pending()
        }
    }

    /// Ops pushed and not reaped yet (including the backlog and the completions collected
    /// while making room).
    fn inflight(&self) -> usize {
        self.inflight + self.backlog.len() + self.chain.len() + self.early.len()
    }

    /// Registers buffers (IORING_REGISTER_BUFFERS), replacing any earlier registration.
    unsafe fn register_buffers(&mut self, bufs: &[Segment]) -> io::Result<()> {
        self.unregister_buffers()?;
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|s| libc::iovec {
                iov_base: s.ptr as *mut libc::c_void,
                iov_len: s.len,
            })
            .collect();
        // SAFETY: forwarded contract (the kernel pins the pages; they stay allocated until
        // unregistration or drop, so fixed ops never reach a new owner).
        unsafe { self.ring.submitter().register_buffers(&iov)? };
        self.registered_buffers = true;
        self.buf_table = bufs.iter().map(|s| (s.ptr as usize, s.len)).collect();
        Ok(())
    }

    fn unregister_buffers(&mut self) -> io::Result<()> {
        if self.registered_buffers {
            self.registered_buffers = false;
            self.buf_table.clear();
            self.ring.submitter().unregister_buffers()?;
        }
        Ok(())
    }

    /// A sparse table of `n` empty slots (IORING_REGISTER_BUFFERS2 with
    /// IORING_RSRC_REGISTER_SPARSE, Linux 5.19+), replacing any earlier registration.
    fn register_sparse(&mut self, n: u32) -> io::Result<()> {
        self.unregister_buffers()?;
        self.ring.submitter().register_buffers_sparse(n)?;
        self.registered_buffers = true;
        self.buf_table = vec![(0, 0); n as usize];
        Ok(())
    }

    /// Puts `seg` into slot `i` of the sparse table, or empties it (IORING_REGISTER_BUFFERS_UPDATE:
    /// ops in flight on the slot's earlier buffer keep it until they complete).
    unsafe fn update_buffer(&mut self, i: u16, seg: Option<Segment>) -> io::Result<()> {
        if i as usize >= self.buf_table.len() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let iov = match seg {
            Some(s) => libc::iovec {
                iov_base: s.ptr as *mut libc::c_void,
                iov_len: s.len,
            },
            None => libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
        };
        // The table forgets the slot first: an op checked against it from here on (`holds`)
        // never names a slot whose update failed half way.
        self.buf_table[i as usize] = (0, 0);
        // SAFETY: forwarded contract (the kernel pins the pages until the slot is updated
        // again, the table unregistered or the ring dropped, and touches them only for an op
        // naming the slot, which the caller allows only while the memory is allocated).
        unsafe {
            self.ring.submitter().register_buffers_update(
                u32::from(i),
                std::slice::from_ref(&iov),
                None,
            )?
        };
        if let Some(s) = seg {
            self.buf_table[i as usize] = (s.ptr as usize, s.len);
        }
        Ok(())
    }

    fn fixed_buffers(&self) -> bool {
        true
    }

    fn links(&self) -> bool {
        true
    }

    /// Gives `fd` a registered file slot (ops on it then skip the kernel's fd lookup) when the
    /// table exists (ODIRECT_URING_FIXED_FILES=1) and has room; else the fd is used as is.
    fn register_fd(&mut self, fd: RawFd) {
        if !self.file_table || self.files.contains_key(&fd) {
            return;
        }
        let Some(slot) = self.free_slots.pop() else {
            return;
        };
        match self.ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => {
                self.files.insert(fd, slot);
            }
            Err(_) => self.free_slots.push(slot),
        }
    }

    /// Drops `fd`'s slot (before the fd is closed). Ops already submitted keep their own
    /// reference to the file in the kernel.
    fn unregister_fd(&mut self, fd: RawFd) {
        if let Some(slot) = self.files.remove(&fd) {
            let _ = self.ring.submitter().register_files_update(slot, &[-1]);
            self.free_slots.push(slot);
        }
    }

    /// Setup flags as text, e.g. "single_issuer+defer_taskrun+no_sqarray".
    fn describe(&self) -> String {
        let mut s = self.setup.name().to_string();
        if self.no_sqarray {
            s.push_str("+no_sqarray");
        }
        if self.polled {
            s.push_str("+poll_ring");
        }
        s
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.polled.then(|| self.ring.as_raw_fd())
    }

    /// With DEFER_TASKRUN (SINGLE_ISSUER), completions wait as task work that only the ring's
    /// submitter thread may run (io_uring_enter from any other fails with EEXIST): once that
    /// thread is gone they are never posted while the ring lives, and closing its descriptor
    /// does not end it while its queues are mapped (the mapping holds the file). COOP_TASKRUN,
    /// plain and SQPOLL rings post them from the kernel's fallback worker when the submitter
    /// has exited: `reap` reads them from the mapped queue, from any thread.
    fn orphan(&mut self) -> bool {
        if self.swaps_armed {
            let c = opcode::PollRemove::new(SWAPS).build().user_data(INTERNAL);
            // SAFETY: a poll removal carries no memory.
            unsafe { self.push_now(c) };
            self.submit();
        }
        if self.watch.is_some() {
            // The loop it watched is going away: its completion (cancelled) is reaped with the
            // ops' and the ring's in-flight count can reach 0.
            let c = opcode::PollRemove::new(WATCH).build().user_data(INTERNAL);
            // SAFETY: a poll removal carries no memory.
            unsafe { self.push_now(c) };
            self.submit();
        }
        self.setup != Setup::DeferTaskrun
    }

    fn watch_fired(&self) -> u64 {
        self.watch_fired
    }

    fn hint_lone(&mut self, class: u64) {
        self.hybrid.next = Some(class);
    }

    fn hybrid_stats(&self) -> [u64; 9] {
        let s = self.hybrid.stats;
        [
            s[0],
            s[1],
            s[2],
            s[3],
            s[4],
            s[5],
            s[6],
            s[7],
            self.hybrid.seed_ns,
        ]
    }

    fn watch_swaps(&mut self, fd: RawFd) -> Option<bool> {
        if self.setup == Setup::Sqpoll {
            return None;
        }
        if self.swaps_armed {
            return Some(false);
        }
        let p = opcode::PollAdd::new(types::Fd(fd), libc::POLLPRI as u32)
            .build()
            .user_data(SWAPS);
        // SAFETY: a poll carries no memory; the caller keeps `fd` open while the ring lives
        // (a poll on a closed file ends with it).
        unsafe { self.push_now(p) };
        self.submit();
        self.swaps_armed = true;
        Some(true)
    }

    /// Nothing can have told the ring of a swap change: the poll is armed, no completion waits
    /// in the queue or as task work (IORING_SQ_TASKRUN, set by the kernel when the poll's wake
    /// queues its completion), none collected and unread. Reads shared memory only.
    fn swaps_unchanged(&self) -> bool {
        // SAFETY: the ring is driven by one thread through `&self`; no other view of its queues
        // exists while this one reads their flags, head and tail.
        self.swaps_armed
            && self.setup != Setup::Sqpoll
            && self.early.is_empty()
            && !unsafe { self.ring.submission_shared() }.taskrun()
            && unsafe { self.ring.completion_shared() }.is_empty()
    }
}

impl Drop for LocalRing {
    fn drop(&mut self) {
        // Nothing may stay in the kernel once the ring's owner lets go of the memory.
        let mut sink = Vec::new();
        self.wait_all(&mut sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::AlignedBuf;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn setup_enomem_says_what_the_running_kernel_charges() {
        for v in [(4, 19), (5, 11), (6, 14), (6, 18), (7, 1)] {
            let m = setup_enomem(Some(v), "0 bytes");
            assert!(
                m.contains("RLIMIT_MEMLOCK (this process: 0 bytes)"),
                "{v:?}: {m}"
            );
            assert!(m.contains(&format!("Linux {}.{}", v.0, v.1)), "{m}");
            assert!(!m.contains("before 5.12"), "{m}");
        }
        for v in [(5, 12), (6, 1), (6, 13)] {
            let m = setup_enomem(Some(v), "0 bytes");
            assert!(
                m.contains("memory cgroup") && m.contains("not to RLIMIT_MEMLOCK"),
                "{v:?}: {m}"
            );
        }
        assert!(
            setup_enomem(None, "unlimited").contains("this kernel charges it to RLIMIT_MEMLOCK")
        );
    }

    /// Whether the ring's eventfd is signalled within `timeout_ms`.
    fn notified(r: &LocalRing, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: r.notify_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) == 1 }
    }

    fn wait(r: &mut LocalRing, n: usize) -> Vec<(u64, i64)> {
        let mut out = Vec::new();
        while out.len() < n {
            if !r.pending() {
                assert!(notified(r, 5000), "no wake-up");
            }
            r.prepare_reap();
            super::super::eventfd::drain(r.notify_fd());
            r.reap(&mut out);
        }
        out
    }

    #[test]
    fn reads_with_eventfd_wakeups() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        let mut r = LocalRing::new(8).unwrap();
        let mut bufs: Vec<AlignedBuf> = (0..100).map(|_| AlignedBuf::new(4096, 4096)).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            let kind = OpKind::Read {
                fd: f.as_file().as_raw_fd(),
                ptr: b.as_mut_ptr(),
                len: 4096,
                offset: (i * 4096) as u64,
                buf_index: None,
            };
            // SAFETY: bufs outlive the ring's completions (waited for below).
            unsafe {
                let e = r.sqe(i as u64, &kind, None, None, false).unwrap();
                r.push_entry(e);
            }
        }
        r.submit();
        let out = wait(&mut r, 100);
        assert_eq!(out.len(), 100);
        assert!(out.iter().all(|(_, res)| *res == 4096));
        assert!(bufs.iter().all(|b| b.as_slice().iter().all(|&x| x == 7)));
    }

    /// A DEFER_TASKRUN ring whose setup probe sees no IORING_SQ_TASKRUN is made COOP_TASKRUN
    /// instead (flag-less, DEFER_TASKRUN loses completions queued between a wake-up's
    /// GETEVENTS and the eventfd's reset), and a completion waiting as task work on it is still
    /// announced by the eventfd and reaped.
    #[test]
    fn no_taskrun_flag_refuses_defer_taskrun() {
        if preferred_setup() != Setup::DeferTaskrun {
            return;
        }
        let probe = LocalRing::new(8).unwrap();
        if probe.setup() != Setup::DeferTaskrun {
            eprintln!(
                "skipped: this kernel has no DEFER_TASKRUN ({:?})",
                probe.setup()
            );
            return;
        }
        drop(probe);
        HIDE_TASKRUN_FLAG.with(|h| h.set(true));
        let made = LocalRing::new(8);
        HIDE_TASKRUN_FLAG.with(|h| h.set(false));
        let mut r = made.unwrap();
        assert_eq!(r.setup(), Setup::CoopTaskrun);
        assert!(!r.taskrun_flag);
        let (rx, mut tx) = std::io::pipe().unwrap();
        let _bufs = queue_pipe_reads(&mut r, &rx, 1);
        r.submit();
        tx.write_all(b"x").unwrap();
        assert!(notified(&r, 5000), "the completion was not announced");
        assert_eq!(wait(&mut r, 1), vec![(0, 1)]);
    }

    /// A completion that waits as task work (a pipe read completed by a write) is reaped with
    /// the engine's order (prepare_reap, reset, reap), and reaping it leaves the eventfd quiet:
    /// posting it must not wake the owner a second time for nothing.
    #[test]
    fn deferred_completion_reaped_without_a_second_wake_up() {
        let mut r = LocalRing::new(8).unwrap();
        if r.setup() == Setup::DeferTaskrun {
            assert!(
                r.taskrun_flag,
                "IORING_SQ_TASKRUN not detected on a DEFER_TASKRUN ring"
            );
        }
        let (rx, mut tx) = std::io::pipe().unwrap();
        let _bufs = queue_pipe_reads(&mut r, &rx, 1);
        r.submit();
        tx.write_all(b"x").unwrap();
        assert_eq!(wait(&mut r, 1), vec![(0, 1)]);
        assert!(!notified(&r, 0), "eventfd left signalled");
    }

    /// Queues `n` one-byte reads of the pipe `rx` (ids 0..n, each into its own buffer), unsubmitted.
    /// The caller keeps the buffers and the pipe until the completions are reaped.
    fn queue_pipe_reads(r: &mut LocalRing, rx: &std::io::PipeReader, n: usize) -> Vec<AlignedBuf> {
        let mut bufs: Vec<AlignedBuf> = (0..n).map(|_| AlignedBuf::new(4096, 4096)).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            let kind = OpKind::Read {
                fd: rx.as_raw_fd(),
                ptr: b.as_mut_ptr(),
                len: 1,
                offset: u64::MAX,
                buf_index: None,
            };
            // SAFETY: the caller keeps the buffers (returned) and the pipe alive until the
            // completions are reaped, as the tests below do.
            unsafe {
                let e = r.sqe(i as u64, &kind, None, None, false).unwrap();
                r.push_entry(e);
            }
        }
        bufs
    }

    /// 64 completions waiting as task work at once (pipe reads woken by one write): one reap
    /// posts one kernel batch, `pending` reports the rest, which is not announced on the eventfd
    /// again, and reaping while `pending` takes every one of them, leaving the eventfd quiet.
    #[test]
    fn a_burst_of_deferred_completions_is_reaped_batch_by_batch() {
        let mut r = LocalRing::new(64).unwrap();
        let (rx, mut tx) = std::io::pipe().unwrap();
        let _bufs = queue_pipe_reads(&mut r, &rx, 64);
        r.submit();
        let bytes = [b'x'; 64];
        tx.write_all(&bytes).unwrap();
        let mut out = Vec::new();
        let mut reaps = 0;
        assert!(notified(&r, 5000), "no wake-up");
        loop {
            r.prepare_reap();
            super::super::eventfd::drain(r.notify_fd());
            r.reap(&mut out);
            reaps += 1;
            if !r.pending() {
                break;
            }
            assert!(reaps < 64, "pending never clears");
        }
        assert_eq!(out.len(), 64, "after {reaps} reaps");
        assert!(out.iter().all(|(_, res)| *res == 1));
        if r.setup() == Setup::DeferTaskrun {
            // A kernel that posts deferred completions in batches (6.13+: 20) needs more than
            // one reap; every one after the first came from `pending`, without a wake-up.
            eprintln!("64 deferred completions reaped in {reaps} reaps");
        }
        assert!(!notified(&r, 0), "eventfd left signalled");
    }

    /// `submit_and_wait`: a lone file read is submitted and its completion is in the CQ when the
    /// call returns (a quiet ring left the eventfd alone); a read that nothing completes (an
    /// empty pipe) makes it return after its timeout with nothing to reap, the read still in
    /// flight and reaped normally once a write completes it.
    #[test]
    fn hybrid_wait_sleeps_then_spins_to_its_bound_then_sleeps_again() {
        let mut r = LocalRing::new(8).unwrap();
        if !r.taskrun_flag {
            return; // the spin watches IORING_SQ_TASKRUN
        }
        r.hybrid.on = true;
        let (rx, mut tx) = std::io::pipe().unwrap();
        // A class never seen: a plain wait (nothing learned from it: it times out).
        let _b = queue_pipe_reads(&mut r, &rx, 1);
        r.hint_lone(8);
        assert!(!r.submit_and_wait(1, std::time::Duration::from_millis(2), None));
        assert_eq!(r.hybrid_stats()[..6], [0, 0, 0, 0, 0, 1]);
        tx.write_all(b"x").unwrap();
        assert_eq!(wait(&mut r, 1), vec![(0, 1)]);
        // A class with a learned sleep (100 µs): a pipe read nobody writes sleeps that long, spins
        // to its bound (50 µs), then sleeps for the rest of the timeout, and the sleep grows.
        let i = r.hybrid.class(7);
        r.hybrid.classes[i].sleep_ns = 100_000;
        let _b = queue_pipe_reads(&mut r, &rx, 1);
        r.hint_lone(7);
        assert!(!r.submit_and_wait(1, std::time::Duration::from_millis(20), None));
        assert_eq!(r.hybrid_stats()[..6], [1, 0, 0, 1, 0, 1]);
        assert!(r.hybrid.classes[i].sleep_ns > 100_000);
        assert!(r.hybrid_stats()[6] >= 50_000, "spun to the bound");
        // A hint is for one wait: a submit in between drops it (the next wait is plain).
        r.hint_lone(7);
        r.submit();
        assert!(!r.submit_and_wait(1, std::time::Duration::from_millis(1), None));
        assert_eq!(r.hybrid_stats()[..6], [1, 0, 0, 1, 0, 1]);
        tx.write_all(b"y").unwrap();
        assert_eq!(wait(&mut r, 1), vec![(0, 1)]);
    }

    #[test]
    fn submit_and_wait_reaps_a_lone_read_or_returns_at_its_timeout() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![9u8; 8192]).unwrap();
        let mut r = LocalRing::new(8).unwrap();
        let mut b = AlignedBuf::new(4096, 4096);
        let kind = OpKind::Read {
            fd: f.as_file().as_raw_fd(),
            ptr: b.as_mut_ptr(),
            len: 4096,
            offset: 4096,
            buf_index: None,
        };
        // SAFETY: b and the file outlive the completion (reaped below).
        unsafe {
            let e = r.sqe(5, &kind, None, None, false).unwrap();
            r.push_entry(e);
        }
        // The setup's own probe (taskrun_flag_works) may have left it signalled.
        super::super::eventfd::drain(r.notify_fd());
        let quiet = r.quiet(true);
        assert!(r.submit_and_wait(1, std::time::Duration::from_secs(5), None));
        let mut out = Vec::new();
        r.reap(&mut out);
        assert_eq!(out, vec![(5, 4096)]);
        assert!(b.as_slice().iter().all(|&x| x == 9));
        if quiet {
            assert!(!notified(&r, 0), "a quiet ring signalled the eventfd");
            r.quiet(false);
        }
        super::super::eventfd::drain(r.notify_fd());

        let (rx, mut tx) = std::io::pipe().unwrap();
        let _bufs = queue_pipe_reads(&mut r, &rx, 1);
        assert!(!r.submit_and_wait(1, std::time::Duration::from_millis(1), None));
        assert_eq!(r.inflight(), 1);
        assert!(r.ring.submission().is_empty(), "the read was not submitted");
        tx.write_all(b"x").unwrap();
        assert_eq!(wait(&mut r, 1), vec![(0, 1)]);
    }

    /// A loop-aware `submit_and_wait` (`watch`: an epoll descriptor holding the ring's own
    /// eventfd and another pipe, as libuv's holds the engine's): a lone file read on a quiet ring
    /// completes without the watch firing (the ring's own completion does not make the loop
    /// readable) and the watch stays armed for the next wait; a read nothing completes returns
    /// as soon as the other pipe is readable, the watch counted as fired, the read still in
    /// flight and reaped normally later.
    #[test]
    fn a_loop_aware_wait_ends_when_the_watched_loop_has_an_event() {
        let mut r = LocalRing::new(8).unwrap();
        if !r.quiet(true) {
            eprintln!(
                "skipped: no quiet reaping without DEFER_TASKRUN ({:?})",
                r.setup()
            );
            return;
        }
        use std::os::fd::FromRawFd;
        // SAFETY: a fresh epoll instance, closed by OwnedFd.
        let ep = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(libc::EPOLL_CLOEXEC)) };
        let (other_rx, mut other_tx) = std::io::pipe().unwrap();
        for fd in [r.notify_fd(), other_rx.as_raw_fd()] {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            // SAFETY: live epoll descriptor and event.
            assert_eq!(
                unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) },
                0
            );
        }
        super::super::eventfd::drain(r.notify_fd());
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![7u8; 8192]).unwrap();
        let mut b = AlignedBuf::new(4096, 4096);
        let kind = OpKind::Read {
            fd: f.as_file().as_raw_fd(),
            ptr: b.as_mut_ptr(),
            len: 4096,
            offset: 0,
            buf_index: None,
        };
        let watch = Some(ep.as_raw_fd());
        for key in [11, 12] {
            // SAFETY: b and the file outlive the completion (reaped below).
            unsafe {
                let e = r.sqe(key, &kind, None, None, false).unwrap();
                r.push_entry(e);
            }
            assert!(r.submit_and_wait(1, std::time::Duration::from_secs(5), watch));
            let mut out = Vec::new();
            r.reap(&mut out);
            assert_eq!(out, vec![(key, 4096)]);
            assert_eq!(
                r.watch_fired(),
                0,
                "the ring's own completion fired the watch"
            );
            assert_eq!(r.inflight(), 1, "the watch stays armed between waits");
        }
        let (rx, mut tx) = std::io::pipe().unwrap();
        let _bufs = queue_pipe_reads(&mut r, &rx, 1);
        other_tx.write_all(b"x").unwrap();
        assert!(r.submit_and_wait(1, std::time::Duration::from_secs(5), watch));
        let mut out = Vec::new();
        r.reap(&mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(r.watch_fired(), 1);
        assert_eq!(
            r.inflight(),
            1,
            "the read is still in flight, the watch is not"
        );
        r.quiet(false);
        super::super::eventfd::drain(r.notify_fd());
        tx.write_all(b"y").unwrap();
        assert_eq!(wait(&mut r, 1), vec![(0, 1)]);
    }

    /// A quiet ring (IORING_CQ_EVENTFD_DISABLED while its owner reaps) does not signal the
    /// eventfd for a completion queued meanwhile, yet `pending` reports it; the reap that
    /// follows takes it, and once announcements are back on the next completion signals again.
    #[test]
    fn a_quiet_ring_signals_nothing_and_pending_reports_what_waits() {
        let mut r = LocalRing::new(8).unwrap();
        if !r.quiet(true) {
            eprintln!(
                "skipped: no quiet reaping without DEFER_TASKRUN and IORING_SQ_TASKRUN ({:?})",
                r.setup()
            );
            return;
        }
        let (rx, mut tx) = std::io::pipe().unwrap();
        let _bufs = queue_pipe_reads(&mut r, &rx, 2);
        r.submit();
        super::super::eventfd::drain(r.notify_fd());
        // The write queues the first read's completion as task work before it returns.
        tx.write_all(b"x").unwrap();
        assert!(!notified(&r, 0), "a quiet ring signalled the eventfd");
        assert!(
            r.pending(),
            "the completion queued while quiet is not reported"
        );
        r.prepare_reap();
        let mut out = Vec::new();
        r.reap(&mut out);
        assert_eq!(out.len(), 1);
        assert!(
            !notified(&r, 0),
            "posting it in our own GETEVENTS signalled the eventfd"
        );
        assert!(!r.quiet(false) || !r.pending());
        tx.write_all(b"y").unwrap();
        assert!(notified(&r, 5000), "announcements did not come back");
        let mut rest = wait(&mut r, 1);
        out.append(&mut rest);
        out.sort();
        assert_eq!(out, vec![(0, 1), (1, 1)]);
    }

    /// A submission made while completions wait as task work posts a batch of them in the same
    /// system call (GETEVENTS with min_complete 0: no wait), and `pending` reports them.
    #[test]
    fn a_submission_posts_waiting_deferred_completions() {
        let mut r = LocalRing::new(64).unwrap();
        if !r.taskrun_flag {
            eprintln!(
                "skipped: IORING_SQ_TASKRUN is not set by this kernel ({:?})",
                r.setup()
            );
            return;
        }
        let (rx, mut tx) = std::io::pipe().unwrap();
        let mut bufs: Vec<AlignedBuf> = (0..9).map(|_| AlignedBuf::new(4096, 4096)).collect();
        let read = |b: &mut AlignedBuf| OpKind::Read {
            fd: rx.as_raw_fd(),
            ptr: b.as_mut_ptr(),
            len: 1,
            offset: u64::MAX,
            buf_index: None,
        };
        for (i, b) in bufs.iter_mut().take(8).enumerate() {
            // SAFETY: bufs and the pipe outlive the completions (reaped below).
            unsafe {
                let e = r.sqe(i as u64, &read(b), None, None, false).unwrap();
                r.push_entry(e);
            }
        }
        r.submit();
        tx.write_all(b"xxxxxxxx").unwrap();
        assert!(r.task_work_pending(), "the completions wait as task work");
        assert!(r.ring.completion().is_empty());
        // One more op (a read of a regular file, completed inline), submitted: the 8 are posted
        // by the same system call.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        let file_read = OpKind::Read {
            fd: f.as_file().as_raw_fd(),
            ptr: bufs[8].as_mut_ptr(),
            len: 4096,
            offset: 0,
            buf_index: None,
        };
        // SAFETY: bufs[8] and the file outlive the completion (reaped below).
        unsafe {
            let e = r.sqe(8, &file_read, None, None, false).unwrap();
            r.push_entry(e);
        }
        r.submit();
        assert!(
            r.ring.completion().len() >= 8,
            "the waiting completions were posted by the submission"
        );
        assert!(r.pending());
        let mut out = wait(&mut r, 9);
        out.sort();
        let mut want: Vec<(u64, i64)> = (0..8).map(|k| (k, 1)).collect();
        want.push((8, 4096));
        assert_eq!(out, want);
        assert!(!r.pending());
    }

    #[test]
    fn cancel_of_blocked_pipe_read() {
        // The write end stays open (bound, not dropped): the read blocks until cancelled.
        let (rx, _tx) = std::io::pipe().unwrap();
        let mut r = LocalRing::new(8).unwrap();
        let mut b = AlignedBuf::new(4096, 4096);
        let kind = OpKind::Read {
            fd: rx.as_raw_fd(),
            ptr: b.as_mut_ptr(),
            len: 4096,
            offset: u64::MAX,
            buf_index: None,
        };
        // SAFETY: b outlives the completion (wait_all below).
        unsafe {
            let e = r.sqe(1, &kind, None, None, false).unwrap();
            r.push_entry(e);
        }
        r.submit();
        r.cancel(1);
        let out = wait(&mut r, 1);
        assert_eq!(out, vec![(1, -(libc::ECANCELED as i64))]);
    }

    fn chain_of(r: &LocalRing, fd: RawFd, b: &AlignedBuf, first: u64) -> Vec<squeue::Entry> {
        let w = OpKind::Write {
            fd,
            ptr: b.as_ptr(),
            len: 4096,
            offset: 0,
            buf_index: None,
        };
        let s = OpKind::Fsync { fd, datasync: true };
        // SAFETY: the callers keep `b` and `fd` alive until the completions are reaped.
        unsafe {
            vec![
                r.sqe(first, &w, None, None, false).unwrap(),
                r.sqe(first + 1, &s, None, None, false).unwrap(),
            ]
        }
    }

    #[test]
    fn linked_chain_runs_in_order_and_a_failure_cancels_the_rest() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut r = LocalRing::new(8).unwrap();
        let b = AlignedBuf::new(4096, 4096);
        let chain = chain_of(&r, f.as_file().as_raw_fd(), &b, 1);
        // SAFETY: b and f outlive the completions (waited for below).
        unsafe { r.push_chain(chain) };
        r.submit();
        let mut out = wait(&mut r, 2);
        out.sort();
        assert_eq!(out, vec![(1, 4096), (2, 0)]);
        // A read-only descriptor: the write fails, the linked fdatasync is cancelled.
        let ro = std::fs::File::open(f.path()).unwrap();
        let chain = chain_of(&r, ro.as_raw_fd(), &b, 3);
        // SAFETY: as above.
        unsafe { r.push_chain(chain) };
        r.submit();
        let mut out = wait(&mut r, 2);
        out.sort();
        assert_eq!(
            out,
            vec![(3, -(libc::EBADF as i64)), (4, -(libc::ECANCELED as i64))]
        );
    }

    #[test]
    fn a_chain_without_room_goes_in_unlinked_and_drained() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let (rx, mut tx) = std::io::pipe().unwrap();
        let mut r = LocalRing::new(8).unwrap();
        r.max_inflight = 2;
        let mut pb: Vec<AlignedBuf> = (0..2).map(|_| AlignedBuf::new(4096, 4096)).collect();
        for (i, b) in pb.iter_mut().enumerate() {
            let kind = OpKind::Read {
                fd: rx.as_raw_fd(),
                ptr: b.as_mut_ptr(),
                len: 1,
                offset: u64::MAX,
                buf_index: None,
            };
            // SAFETY: pb outlives the completions (waited for below).
            unsafe {
                let e = r.sqe(10 + i as u64, &kind, None, None, false).unwrap();
                r.push_entry(e);
            }
        }
        r.submit();
        let b = AlignedBuf::new(4096, 4096);
        let chain = chain_of(&r, f.as_file().as_raw_fd(), &b, 1);
        // No room: both wait in the backlog, the fdatasync drained behind the write.
        // SAFETY: b and f outlive the completions.
        unsafe { r.push_chain(chain) };
        r.submit();
        assert_eq!(r.backlog.len(), 2);
        tx.write_all(b"xy").unwrap();
        let mut out = wait(&mut r, 4);
        out.sort();
        assert_eq!(out, vec![(1, 4096), (2, 0), (10, 1), (11, 1)]);
    }

    /// A ring made with `poll_ring` does not signal the eventfd: its own descriptor is readable
    /// once a completion is in its queue (COOP_TASKRUN, not DEFER_TASKRUN, whose completions
    /// would wait as task work that wakes no poller), and not once it is reaped; nothing else
    /// needs announcing (`unannounced`).
    #[test]
    fn a_polled_ring_is_readable_on_its_own_descriptor() {
        let efd = super::super::eventfd::new(false).unwrap();
        let mut r = LocalRing::with_setup(8, efd.as_raw_fd(), 0, true).unwrap();
        assert_ne!(r.setup(), Setup::DeferTaskrun);
        assert!(r.describe().contains("poll_ring"), "{}", r.describe());
        let fd = r.poll_fd().expect("a polled ring names its descriptor");
        let readable = |timeout_ms: i32| {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut p, 1, timeout_ms) == 1 }
        };
        let (rx, mut tx) = std::io::pipe().unwrap();
        let _bufs = queue_pipe_reads(&mut r, &rx, 1);
        r.submit();
        assert!(!readable(0), "readable before anything completed");
        tx.write_all(b"x").unwrap();
        assert!(
            readable(5000),
            "the completion did not make the ring readable"
        );
        assert!(!notified(&r, 0), "a polled ring signalled the eventfd");
        r.prepare_reap();
        let mut out = Vec::new();
        r.reap(&mut out);
        assert_eq!(out, vec![(0, 1)]);
        assert!(!readable(0), "still readable once reaped");
        assert!(!r.unannounced());
    }
}
