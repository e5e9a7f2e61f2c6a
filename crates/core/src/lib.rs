//! odirect-core: the engine behind odirect, with no N-API in it.
//!
//! - [`align`]: what O_DIRECT needs for a file (statx STATX_DIOALIGN, BLKSSZGET, sysfs).
//! - [`file`]: opening with O_DIRECT (require / prefer / off).
//! - [`io`]: io_uring, Linux AIO and thread-pool engines behind one trait.
//! - [`error`]: errno names and hints.
//! - [`buf`]: Rust-owned aligned memory.

pub mod align;
pub mod buf;
pub mod error;
pub mod file;
pub mod io;
pub mod op;
pub mod probe;
pub mod sys;

pub use io::{BackendKind, Driver, DriverOptions, Unavailable};
pub use op::{OpKind, OpRef, Segment};
