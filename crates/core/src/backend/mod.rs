//! Backends: one trait, one file each.
//!
//! A backend owns its own thread(s). [`Backend::submit`] only enqueues and never blocks the caller
//! for I/O; completions are delivered in batches through the [`Sink`] given at creation, from the
//! backend's thread.

use std::fmt;
use std::io;

use crate::op::{Op, Sink};

#[cfg(target_os = "linux")]
pub mod aio;
pub mod eventfd;
pub mod pool;
#[cfg(target_os = "linux")]
pub mod ring;
#[cfg(target_os = "linux")]
pub mod uring;

/// Which engine runs the I/O.
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
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Queue depth of a ring / aio context when none is asked (the addon exports it as DEFAULT_QUEUE_DEPTH).
pub const DEFAULT_QUEUE_DEPTH: u32 = 256;

/// Options that shape a backend.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Submission queue size (io_uring) / max events (aio) / worker threads (pool: see `threads`).
    pub queue_depth: u32,
    /// Worker threads for the thread-pool backend.
    pub threads: usize,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            queue_depth: DEFAULT_QUEUE_DEPTH,
            threads: 4,
        }
    }
}

/// Why a backend cannot be used here.
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

/// One I/O engine.
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Queues `ops`; completions arrive later through the sink, exactly one per op.
    ///
    /// # Safety
    /// Every pointer in every op must stay valid for the access the op names (written for reads,
    /// read for writes), and must not be used by anyone else, until that op's completion has been
    /// delivered to the sink. File descriptors must stay open until then.
    unsafe fn submit(&self, ops: Vec<Op>);

    /// Asks the kernel to cancel the op with this id. The op still completes through the sink
    /// (with -ECANCELED, or its real result when it finished first); its memory is in use until then.
    fn cancel(&self, id: u64);

    /// Cancels what can be cancelled, waits until every op in flight has completed and been
    /// delivered, then stops the backend's threads. Idempotent; later submissions complete with
    /// -ESHUTDOWN.
    fn shutdown(&self);

    /// Registers buffers with the kernel (io_uring fixed buffers) or locks them in memory (mlock)
    /// so that ops naming `buf_index` use pinned pages. Replaces any earlier registration.
    ///
    /// # Safety
    /// The memory must stay valid until [`Backend::unregister_buffers`] or shutdown.
    unsafe fn register_buffers(&self, bufs: &[crate::op::Segment]) -> io::Result<()> {
        let _ = bufs;
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    fn unregister_buffers(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Can this backend run here? `Err` says why not.
pub fn probe(kind: BackendKind) -> Result<(), Unavailable> {
    match kind {
        #[cfg(target_os = "linux")]
        BackendKind::IoUring => uring::probe(),
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

/// Starts a backend of this kind.
pub fn create(
    kind: BackendKind,
    sink: Sink,
    opts: &BackendOptions,
) -> Result<Box<dyn Backend>, Unavailable> {
    match kind {
        #[cfg(target_os = "linux")]
        BackendKind::IoUring => Ok(Box::new(uring::UringBackend::new(sink, opts)?)),
        #[cfg(target_os = "linux")]
        BackendKind::Aio => Ok(Box::new(aio::AioBackend::new(sink, opts)?)),
        #[cfg(not(target_os = "linux"))]
        BackendKind::IoUring | BackendKind::Aio => Err(probe(kind).unwrap_err()),
        BackendKind::ThreadPool => Ok(Box::new(pool::PoolBackend::new(sink, opts))),
    }
}
