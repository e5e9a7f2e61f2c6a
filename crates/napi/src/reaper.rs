//! The process-wide reaper of engines whose environment ended (a terminated worker) while the
//! kernel still held some of their ops (a stalled FUSE or NFS server: nothing cancels those).
//!
//! Teardown (`Inner::shutdown`) cannot wait for such ops: the environment must exit. Their
//! records (the memory the kernel writes into), the drivers running them, the registered
//! buffers and the eventfd the drivers signal are handed over here as an [`Orphan`]. One
//! thread, started on the first orphan and ended when none is left, reaps every orphan's
//! drivers (at each eventfd signal, and every [`TICK`] for completions nobody announces) and
//! frees each op's memory once its completion was reaped, then the drivers, registered
//! buffers and eventfd once no op is left in the kernel. Nothing is freed earlier: memory the
//! kernel may still write into stays allocated.
//!
//! io_uring runtimes do the same within one thread: tokio-uring and monoio keep the buffers of
//! an op whose future was dropped in the driver's slab (`Lifecycle::Ignored`) until its
//! completion arrives. Here the owner's thread is gone, so another thread does the draining.
//! That needs a driver whose completions still arrive without their owner's thread
//! (`Driver::orphan`): the thread pool, AIO, and io_uring rings other than DEFER_TASKRUN ones
//! (`ODIRECT_URING_SETUP=coop`). An orphan with a driver that cannot (a DEFER_TASKRUN ring, the
//! default: its completions are posted only when its dead submitter thread asks) is kept, with
//! its memory, for the life of the process, as before there was a reaper.

use std::any::Any;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use odirect_core::io::{eventfd, Driver};

/// How often the reaper looks at completions no eventfd announces (a closed ring's queue).
const TICK: Duration = Duration::from_millis(50);

/// What the kernel may still use after its environment ended.
pub(crate) struct Orphan {
    /// The eventfd the drivers signal (kept open while they may).
    pub eventfd: Option<Arc<OwnedFd>>,
    /// The drivers with ops in flight.
    pub drivers: Vec<Box<dyn Driver>>,
    /// Each op's record (its memory), by key, with the bytes of memory it holds.
    pub ops: HashMap<u64, (Box<dyn Any>, usize)>,
    /// Freed with the drivers (registered buffers the ops may use).
    pub keep: Vec<Box<dyn Any>>,
}

// SAFETY: an orphan's records are never used again except to be dropped (their JS references
// were deleted on their own thread before the handover; what is left is memory and Rust-owned
// values); drivers are `Send`; only the reaper thread touches an orphan after `adopt`.
unsafe impl Send for Orphan {}

impl Orphan {
    /// Reaps what completed; frees those ops' memory. True when nothing is left in the kernel.
    fn reap(&mut self, raw: &mut Vec<(u64, i64)>) -> bool {
        if let Some(e) = &self.eventfd {
            eventfd::drain(e.as_raw_fd());
        }
        for d in &mut self.drivers {
            d.reap(raw);
        }
        for (key, _) in raw.drain(..) {
            if let Some((_, bytes)) = self.ops.remove(&key) {
                FREED_OPS.fetch_add(1, Ordering::Relaxed);
                HELD_BYTES.fetch_sub(bytes as u64, Ordering::Relaxed);
            }
        }
        self.drivers.iter().all(|d| d.inflight() == 0)
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        // Only once no driver has an op in the kernel (see `run`): ops without a completion
        // (none expected) go too, then the drivers, the registered buffers, the eventfd.
        let left: usize = self.ops.drain().map(|(_, (_, b))| b).sum();
        HELD_BYTES.fetch_sub(left as u64, Ordering::Relaxed);
        self.drivers.clear();
        self.keep.clear();
        FREED_ENGINES.fetch_add(1, Ordering::Relaxed);
    }
}

struct State {
    orphans: Vec<Orphan>,
    running: bool,
    /// Orphans whose completions cannot be reaped here: never touched again.
    kept: Vec<Orphan>,
}

static STATE: Mutex<State> = Mutex::new(State {
    orphans: Vec::new(),
    running: false,
    kept: Vec::new(),
});

static ENGINES: AtomicU64 = AtomicU64::new(0);
static FREED_ENGINES: AtomicU64 = AtomicU64::new(0);
static OPS: AtomicU64 = AtomicU64::new(0);
static FREED_OPS: AtomicU64 = AtomicU64::new(0);
static HELD_BYTES: AtomicU64 = AtomicU64::new(0);

/// Counters since the process started: engines handed over, engines freed, ops handed over,
/// ops freed, bytes of op memory held now.
pub fn stats() -> [f64; 5] {
    [
        ENGINES.load(Ordering::Relaxed) as f64,
        FREED_ENGINES.load(Ordering::Relaxed) as f64,
        OPS.load(Ordering::Relaxed) as f64,
        FREED_OPS.load(Ordering::Relaxed) as f64,
        HELD_BYTES.load(Ordering::Relaxed) as f64,
    ]
}

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands `o` to the reaper thread (started if none runs). Its drivers must not have been told
/// `Driver::orphan` yet.
pub(crate) fn adopt(mut o: Orphan) {
    ENGINES.fetch_add(1, Ordering::Relaxed);
    OPS.fetch_add(o.ops.len() as u64, Ordering::Relaxed);
    let bytes: usize = o.ops.values().map(|(_, b)| b).sum();
    HELD_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    // Every driver is told (no short-circuit).
    let reapable = o.drivers.iter_mut().fold(true, |all, d| d.orphan() & all);
    let mut st = state();
    if !reapable {
        st.kept.push(o);
        return;
    }
    st.orphans.push(o);
    if !st.running {
        let started = std::thread::Builder::new()
            .name("odirect-reaper".into())
            .spawn(run)
            .is_ok();
        // No thread (out of resources): the orphan stays owned here, as before there was a
        // reaper; the next handover tries again.
        st.running = started;
    }
}

fn run() {
    let mut raw = Vec::new();
    loop {
        let mut st = state();
        let mut done = Vec::new();
        let mut i = 0;
        while i < st.orphans.len() {
            if st.orphans[i].reap(&mut raw) {
                done.push(st.orphans.swap_remove(i));
            } else {
                i += 1;
            }
        }
        let mut fds: Vec<libc::pollfd> = st
            .orphans
            .iter()
            .filter_map(|o| o.eventfd.as_ref())
            .map(|e| libc::pollfd {
                fd: e.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let idle = st.orphans.is_empty();
        if idle {
            st.running = false;
        }
        drop(st);
        // Freed outside the lock (a thread pool joins its idle workers).
        drop(done);
        if idle {
            return;
        }
        // The descriptors stay open meanwhile: only this thread frees orphans.
        // SAFETY: live pollfds, fds.len() of them; waits TICK at most.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                TICK.as_millis() as i32,
            )
        };
    }
}
