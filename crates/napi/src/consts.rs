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

/// Added to a read/write's ticket when the call also handed the op to the kernel (a lone op, see
/// `Inner::rw`): the caller need not schedule a flush for it. Op ids stay far below it.
#[napi]
pub const TICKET_SUBMITTED: u32 = 1 << 30;

/// The fast path's `rw` (see `fast.rs`) takes its small arguments packed in one number, read with
/// one N-API call instead of four: bit 0 a write, bit 1 a lone op (`alone`), bits 2-3 the
/// backend index, the RWF_* flags from bit `RW_FLAGS_SHIFT` up.
#[napi]
pub const RW_WRITE: u32 = 1;
#[napi]
pub const RW_ALONE: u32 = 2;
#[napi]
pub const RW_BACKEND_SHIFT: u32 = 2;
#[napi]
pub const RW_FLAGS_SHIFT: u32 = 4;

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

/// Buckets of the latency histogram (`Histogram` in src/ops.ts): bucket 0 holds latencies
/// below 1 us, then 8 log-linear steps per power of two (<= 12.5% error) up to 2^40 us.
#[napi]
pub const LATENCY_BUCKETS: u32 = 1 + 40 * 8;

/// The histogram bucket of a latency of `us` microseconds: the same integer math as the JS
/// `Histogram.addMany` (truncate to an integer, 8 steps per power of two).
pub fn latency_bucket(us: f64) -> usize {
    if us < 1.0 {
        return 0;
    }
    let v: u32 = if us < 2_147_483_647.0 {
        us as u32
    } else {
        0x7fff_ffff
    };
    let e = 31 - v.leading_zeros();
    let sub = if e >= 3 {
        (v >> (e - 3)) & 7
    } else {
        (v << (3 - e)) & 7
    };
    (1 + e * 8 + sub) as usize
}
