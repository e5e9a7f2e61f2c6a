//! odirect-core: the engine behind odirect, with no N-API in it.
//!
//! - [`io`]: the three I/O drivers behind one [`Driver`] trait — an io_uring ring and a Linux
//!   AIO context owned by the calling thread, and a thread pool — announcing completions on one
//!   eventfd; [`io::create`] starts one, [`io::probe`] says why one cannot run here.
//! - [`op`]: what a driver is asked to do ([`OpKind`], pushed as an [`OpRef`]) and the memory
//!   contract that goes with it.
//! - [`file`]: opening with O_DIRECT (require / prefer / off).
//! - [`align`]: what O_DIRECT needs for a file (statx STATX_DIOALIGN, BLKSSZGET, sysfs).
//! - [`probe`]: what works here (drivers, O_DIRECT on a path) and why not.
//! - [`buf`]: Rust-owned aligned memory; [`mempool`]: the huge-page pool behind its larger blocks.
//! - [`error`]: errno names and hints.
//! - [`sys`]: raw preadv2/pwritev2 (older libcs lack them).

pub mod align;
pub mod buf;
pub mod error;
pub mod file;
pub mod io;
pub mod mempool;
pub mod op;
pub mod probe;
pub mod sys;

pub use io::{BackendKind, Driver, DriverOptions, Unavailable};
pub use op::{OpKind, OpRef, Segment};
