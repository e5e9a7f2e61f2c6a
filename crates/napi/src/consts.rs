//! Numbers both languages use, defined once here and exported to JS through the binding
//! (`binding.d.ts` declares them; src/ reads them from `native`). Changing one here changes both.

use napi_derive::napi;

/// Bytes one read or write can move (the kernel's MAX_RW_COUNT: INT_MAX rounded down to a page).
#[napi]
pub const MAX_IO_LENGTH: u32 = 0x7fff_f000;

/// Numbers per completion in the batch of results handed to JS: op id, result, latency (us).
#[napi]
pub const RESULT_STRIDE: u32 = 3;

/// Completions in `len` numbers of a results batch.
pub const fn completions(len: usize) -> u32 {
    (len / RESULT_STRIDE as usize) as u32
}

/// A read/write submission returns a ticket `(id << TICKET_SHIFT) | bounced`: the op id, and 1
/// when its memory goes through an aligned bounce buffer (not odirect's own aligned memory).
#[napi]
pub const TICKET_SHIFT: u32 = 1;

/// The ticket of a staged read/write (see `TICKET_SHIFT`).
pub const fn ticket(id: u32, bounced: u32) -> u32 {
    (id << TICKET_SHIFT) | bounced
}

/// Submission queue entries of an io_uring ring / events of an aio context when none is asked.
#[napi]
pub const DEFAULT_QUEUE_DEPTH: u32 = odirect_core::io::DEFAULT_QUEUE_DEPTH;

/// The queue depth asked for, or `DEFAULT_QUEUE_DEPTH` for 0.
pub const fn queue_depth(asked: u32) -> u32 {
    if asked > 0 {
        asked
    } else {
        DEFAULT_QUEUE_DEPTH
    }
}
