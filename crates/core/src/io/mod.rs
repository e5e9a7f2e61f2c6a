//! The I/O drivers: one [`Driver`] trait, three implementations, one file each.
//!
//! - [`ring`]: an io_uring owned by the calling thread ([`ring::LocalRing`]): SQEs pushed and
//!   submitted inline, completions reaped when the ring's eventfd is readable.
//! - [`aio`]: a Linux AIO context owned by the calling thread ([`aio::LocalAio`]): `io_submit`
//!   inline, completions signalled on the eventfd (IOCB_FLAG_RESFD), `io_getevents` to reap.
//! - [`pool`]: worker threads running one blocking system call per op ([`pool::Pool`]); they post
//!   completions to a queue and signal the eventfd, `reap` drains the queue.
//!
//! A driver is driven by one thread (the JS thread of one environment): it never blocks that
//! thread for I/O, and every completion is announced on the eventfd given at creation, so one
//! `poll` (or `uv_poll_t`) on that eventfd serves every driver of the thread.
//!
//! Memory contract, for every driver: everything an op points at (its buffers, its iovec array,
//! its descriptor) stays valid, and unused by anyone else, until the op's completion has been
//! returned by [`Driver::reap`] or [`Driver::wait_all`]. That is why [`Driver::push`] is unsafe.

use std::fmt;
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use crate::op::{OpKind, OpRef, Segment};

#[cfg(target_os = "linux")]
pub mod aio;
pub mod eventfd;
#[cfg(target_os = "linux")]
pub mod irq;
pub mod pool;
#[cfg(target_os = "linux")]
pub mod ring;

/// Which driver runs the I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    IoUring,
    Aio,
    ThreadPool,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [
        BackendKind::IoUring,
        BackendKind::Aio,
        BackendKind::ThreadPool,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Aio => "aio",
            BackendKind::ThreadPool => "threadpool",
        }
    }

    pub fn parse(s: &str) -> Option<BackendKind> {
        match s {
            "io_uring" | "uring" | "io-uring" => Some(BackendKind::IoUring),
            "aio" | "libaio" => Some(BackendKind::Aio),
            "threadpool" | "thread-pool" | "pool" => Some(BackendKind::ThreadPool),
            _ => None,
        }
    }

    /// Position in `ALL` (for per-kind arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Queue depth when the caller does not choose one (ring entries, aio events).
pub const DEFAULT_QUEUE_DEPTH: u32 = 256;
/// Worker threads of the pool when the caller does not choose.
pub const DEFAULT_THREADS: usize = 4;

/// Options that shape a driver.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Submission queue size (io_uring) / context size (aio); unused by the pool.
    pub queue_depth: u32,
    /// Worker threads of the thread pool.
    pub threads: usize,
    /// io_uring only: > 0 asks for an SQPOLL ring whose kernel thread sleeps after that many
    /// idle milliseconds.
    pub sqpoll_idle_ms: u32,
    /// io_uring only: the owner polls the ring's own descriptor (readable while its completion
    /// queue holds entries) instead of the eventfd, so a wake-up needs neither an eventfd read
    /// nor (with COOP_TASKRUN, which this implies: DEFER_TASKRUN completions would not wake a
    /// poller) an `io_uring_enter(GETEVENTS)` to post them. See [`Driver::poll_fd`].
    pub poll_ring: bool,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            queue_depth: DEFAULT_QUEUE_DEPTH,
            threads: DEFAULT_THREADS,
            sqpoll_idle_ms: 0,
            poll_ring: false,
        }
    }
}

/// Why a driver cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub errno: i32,
    pub reason: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// What is known about a descriptor, as bits (see [`Driver::placement`]).
pub type FdFacts = u8;
/// Submitting I/O on the descriptor may sleep in the submitter (FUSE, network filesystem, pipe,
/// socket, char device): see `crate::file::submission_may_block`.
pub const FD_MAY_BLOCK: FdFacts = 1;
/// The descriptor is not O_DIRECT (Linux AIO performs such I/O synchronously in io_submit).
pub const FD_BUFFERED: FdFacts = 2;

/// How a driver would run an op (see [`Driver::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// As is.
    Inline,
    /// With [`OpRef::punt`] set: handed to a kernel worker without being tried inline, so the
    /// submitting thread never sleeps on it (io_uring's IOSQE_ASYNC).
    Punt,
    /// Not here: the op belongs on the thread pool (the driver cannot run it, or would block
    /// the submitting thread on it). Pushed anyway, it fails (EOPNOTSUPP) or blocks.
    Elsewhere,
}

/// One I/O driver, driven by one thread: ops are pushed, then submitted together; completions
/// are announced on the driver's eventfd and collected by `reap`, as `(key, result)` with the
/// result in bytes (>= 0) or a negated errno.
pub trait Driver: Send {
    fn kind(&self) -> BackendKind;

    /// How this driver would run `op` on a descriptor with `facts`.
    fn placement(&self, op: &OpKind, facts: FdFacts) -> Placement;

    /// Queues `op` for the next [`Driver::submit`]. `Err` means the op was refused at once (it
    /// will not complete); its errno is the op's result.
    ///
    /// # Safety
    /// Every pointer of the op (`kind`'s buffers, `iov`) and its descriptor must stay valid, and
    /// the memory unused by anyone else, until its completion is returned by `reap` or
    /// `wait_all`; `fixed` must name a buffer registered with this driver containing the op's
    /// memory. Keys must be unique among the driver's ops in flight and below `1 << 63`.
    unsafe fn push(&mut self, op: &OpRef<'_>) -> io::Result<()>;

    /// Hands every op pushed since the last call to the kernel (or the workers). Never blocks
    /// on I/O.
    fn submit(&mut self);

    /// [`Driver::submit`], then waits in the kernel up to `timeout` for `want` of the driver's
    /// ops to complete (the owner's bounded in-kernel wait for a lone op, `waitMicros`). True
    /// when completions are there to reap now, whether or not the wait ran its course. Default
    /// (drivers that cannot wait with a timeout): submits, false.
    /// `watch`: a descriptor whose readability ends the wait too (the owner's event loop;
    /// see [`Driver::watch_fired`]); drivers that cannot watch one ignore it.
    fn submit_and_wait(
        &mut self,
        _want: usize,
        _timeout: std::time::Duration,
        _watch: Option<std::os::fd::RawFd>,
    ) -> bool {
        self.submit();
        false
    }

    /// How many times a descriptor watched by [`Driver::submit_and_wait`] was found readable
    /// (default: never).
    fn watch_fired(&self) -> u64 {
        0
    }

    /// The next [`Driver::submit_and_wait`] (and only it) waits for a lone read/write on a block
    /// device's O_DIRECT file, of `class` (its file, direction and size: ops alike in device
    /// time): the driver may wait for it in a hybrid way (the ring's `Hybrid`). Default: ignored.
    fn hint_lone(&mut self, _class: u64) {}

    /// Counts of the hybrid waits and their spins and wake-ups in ns (the ring's
    /// `Hybrid::stats`), and the sleep learned last (ns). Default: zeros.
    fn hybrid_stats(&self) -> [u64; 9] {
        [0; 9]
    }

    /// Arms (unless armed) a one-shot poll for POLLPRI on `fd`, an open `/proc/swaps`, which
    /// the kernel raises when swap is turned on or off: Some(true) armed now (read the list
    /// after this), Some(false) armed already, None when the driver cannot (default).
    fn watch_swaps(&mut self, _fd: std::os::fd::RawFd) -> Option<bool> {
        None
    }

    /// True only when the poll of [`Driver::watch_swaps`] is armed and nothing it could have
    /// posted is waiting: no swap was turned on or off since it was armed. Default: false.
    fn swaps_unchanged(&self) -> bool {
        false
    }

    /// Called on a wake-up before the eventfd is reset, then `reap` after it: lets a driver post
    /// completions whose posting signals the eventfd (the ring's deferred task work), so the
    /// reset takes that signal too instead of it waking the thread again.
    fn prepare_reap(&mut self) {}

    /// Appends every completion available now to `out`; never blocks. Ops waiting for room are
    /// submitted as room frees up. The eventfd is the caller's to reset (before calling this, so
    /// that a completion signalled after the reset wakes it again).
    fn reap(&mut self, out: &mut Vec<(u64, i64)>);

    /// `on`: the owner is about to reap for a while (a wake-up of several rounds); the driver
    /// stops announcing completions on the eventfd if it can, so its reaps neither signal it
    /// nor need it reset each round. Returns true when the driver's own `prepare_reap` no
    /// longer signals the eventfd (default: it never does). `off`: announcements resume; the
    /// owner then asks [`Driver::pending`] and signals the eventfd itself for what arrived
    /// meanwhile.
    fn quiet(&mut self, _on: bool) -> bool {
        true
    }

    /// True when completions are known to wait that `prepare_reap` + `reap` did not take (the
    /// ring posts its deferred task work one kernel batch at a time). They are not announced on
    /// the eventfd again: the caller runs `prepare_reap`, reset, `reap` again while this is
    /// true, or signals the eventfd itself to come back later.
    fn pending(&self) -> bool {
        false
    }

    /// What of [`Driver::pending`] nothing else will announce: the owner signals the eventfd for
    /// it at the end of a wake-up. Default: all of it. A polled ring ([`Driver::poll_fd`]) leaves
    /// out its completion queue, which keeps its descriptor readable by itself.
    fn unannounced(&self) -> bool {
        self.pending()
    }

    /// Asks for op `key` to be cancelled. It still completes, through `reap`: with -ECANCELED,
    /// or with its own result when it finished first or cannot be cancelled.
    fn cancel(&mut self, key: u64);

    /// [`Driver::cancel`] for every op in flight. Does not wait.
    fn cancel_all(&mut self);

    /// Cancels what it can and blocks until every op has completed; appends the completions
    /// not reaped yet to `out`. After it returns no op's memory is in use.
    fn wait_all(&mut self, out: &mut Vec<(u64, i64)>);

    /// The owner's thread is gone (a terminated worker) while ops are still in the kernel.
    /// True when their completions still come to `reap`, called from another thread (a
    /// process-wide reaper) until `inflight` is 0, when the driver is dropped. False when only
    /// the owner's thread could have collected them (a DEFER_TASKRUN ring): the driver and the
    /// ops' memory must then be kept for the life of the process. Default: true.
    fn orphan(&mut self) -> bool {
        true
    }

    /// Ops pushed whose completion has not been reaped yet.
    fn inflight(&self) -> usize;

    /// Registers `bufs` with the kernel (io_uring fixed buffers) or locks them in memory
    /// (mlock), replacing any earlier registration.
    ///
    /// # Safety
    /// The memory must stay allocated until [`Driver::unregister_buffers`], a later
    /// registration, or the driver's drop.
    unsafe fn register_buffers(&mut self, bufs: &[Segment]) -> io::Result<()>;

    fn unregister_buffers(&mut self) -> io::Result<()>;

    /// Makes the fixed-buffer table a sparse one of `n` empty slots, replacing any earlier
    /// registration (io_uring; others: unsupported).
    fn register_sparse(&mut self, _n: u32) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// Puts `seg` into slot `i` of the sparse table (`register_sparse`), or empties the slot
    /// (`None`).
    ///
    /// # Safety
    /// An op may name slot `i` only while `seg`'s memory is allocated (for the op's whole life,
    /// from its push to its completion). The kernel pins `seg`'s pages until the slot is updated
    /// again, the table is unregistered or replaced, or the driver's drop; it reads or writes
    /// them only for an op naming the slot, so memory freed meanwhile is never touched.
    unsafe fn update_buffer(&mut self, _i: u16, _seg: Option<Segment>) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// True when ops may name registered buffers by index ([`OpRef::fixed`]).
    fn fixed_buffers(&self) -> bool {
        false
    }

    /// True when [`OpRef::link`] chains ops (io_uring's IOSQE_IO_LINK).
    fn links(&self) -> bool {
        false
    }

    /// Gives `fd` a registered slot when the driver has such a thing (io_uring files).
    fn register_fd(&mut self, _fd: RawFd) {}

    /// Drops `fd`'s slot, before it is closed.
    fn unregister_fd(&mut self, _fd: RawFd) {}

    /// A descriptor the owner must poll (readable) besides the eventfd, when the driver does not
    /// announce its completions there (an io_uring made with [`DriverOptions::poll_ring`]: the
    /// ring's own descriptor). `None`: every completion is announced on the eventfd.
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    /// How the driver was set up, e.g. "single_issuer+defer_taskrun" ("" when nothing to say).
    fn describe(&self) -> String {
        String::new()
    }
}

/// Can a driver of this kind run here? `Err` says why not.
pub fn probe(kind: BackendKind) -> Result<(), Unavailable> {
    match kind {
        #[cfg(target_os = "linux")]
        BackendKind::IoUring => ring::probe(),
        #[cfg(target_os = "linux")]
        BackendKind::Aio => aio::probe(),
        #[cfg(not(target_os = "linux"))]
        BackendKind::IoUring | BackendKind::Aio => Err(Unavailable {
            errno: libc::ENOSYS,
            reason: format!("{} exists only on Linux", kind),
        }),
        BackendKind::ThreadPool => Ok(()),
    }
}

/// Starts a driver of this kind that announces completions on `eventfd` (a non-blocking
/// eventfd; the ring and aio context use its number, which must stay open while they live; the
/// pool keeps the `Arc`).
/// The calling thread's errno after a failed system call (EIO if there is none).
pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Runs a system call until it is not interrupted: its non-negative result, or its errno.
pub(crate) fn retry_eintr(mut call: impl FnMut() -> i64) -> Result<u64, i32> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(r as u64);
        }
        let e = last_errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

pub fn create(
    kind: BackendKind,
    eventfd: &Arc<OwnedFd>,
    opts: &DriverOptions,
) -> Result<Box<dyn Driver>, Unavailable> {
    match kind {
        #[cfg(target_os = "linux")]
        BackendKind::IoUring => Ok(Box::new(ring::LocalRing::with_setup(
            opts.queue_depth,
            eventfd.as_raw_fd(),
            opts.sqpoll_idle_ms,
            opts.poll_ring,
        )?)),
        #[cfg(target_os = "linux")]
        BackendKind::Aio => Ok(Box::new(aio::LocalAio::new(
            opts.queue_depth,
            eventfd.as_raw_fd(),
        )?)),
        #[cfg(not(target_os = "linux"))]
        BackendKind::IoUring | BackendKind::Aio => Err(probe(kind).unwrap_err()),
        BackendKind::ThreadPool => Ok(Box::new(pool::Pool::new(opts.threads, eventfd.clone()))),
    }
}
