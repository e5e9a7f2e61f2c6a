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

/// A read/write completed inside its own staging call (a lone small op on tmpfs/ramfs, see
/// `Inner::rw`) returns `TICKET_DONE + done code` instead of a ticket: its id is free already,
/// and the code carries its result, latency and bounced bit (see [`done`]; src/engine.ts
/// decodes it). Tickets stay below it.
#[napi]
pub const TICKET_DONE: u32 = 1 << 31;

/// Latency units per microsecond in a done code (1/16 us), and how many it holds
/// (`DONE_LAT_SPAN`: 16.4 ms; longer latencies are clamped).
#[napi]
pub const DONE_LAT_UNITS: u32 = 16;
#[napi]
pub const DONE_LAT_SPAN: u32 = 1 << 18;
/// Added to a result in a done code so it is never negative (results go down to
/// `RESULT_DETACHED`, -1,000,001).
#[napi]
pub const DONE_RESULT_BIAS: u32 = 1 << 20;

/// The value `rw` returns for an op completed in its call: `TICKET_DONE + ((result + BIAS) * 2 +
/// bounced) * DONE_LAT_SPAN + latency units`, exact in an f64 (below 2^51).
pub fn done(result: f64, latency_us: f64, bounced: u32) -> f64 {
    let lat = (latency_us * f64::from(DONE_LAT_UNITS))
        .round()
        .clamp(0.0, f64::from(DONE_LAT_SPAN - 1));
    let code = (result + f64::from(DONE_RESULT_BIAS)) * 2.0 + f64::from(bounced & 1);
    f64::from(TICKET_DONE) + code * f64::from(DONE_LAT_SPAN) + lat
}

/// A native batch whose every op completed inside its `batchStart` call (a window of 1 on a
/// tmpfs/ramfs file, made inline: `batch::start_inline`) returns its id plus
/// `2^BATCH_DONE_SHIFT x (1 + ops failed)` instead of its id: no completion follows for it, the
/// caller settles it at once (then `batchTake`, as after a completion). Ids stay below it.
#[napi]
pub const BATCH_DONE_SHIFT: u32 = 32;

/// What `batchStart` returns for batch id `id` completed in its call with `failed` ops failed.
pub fn batch_done(id: u32, failed: u32) -> f64 {
    f64::from(id) + (1.0 + f64::from(failed)) * 2f64.powi(BATCH_DONE_SHIFT as i32)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// src/engine.ts's decoding of a done code, in Rust.
    fn undone(v: f64) -> (f64, f64, u32) {
        let x = v - f64::from(TICKET_DONE);
        let span = f64::from(DONE_LAT_SPAN);
        let lat = (x % span) / f64::from(DONE_LAT_UNITS);
        let y = (x / span).floor();
        (
            (y / 2.0).floor() - f64::from(DONE_RESULT_BIAS),
            lat,
            (y % 2.0) as u32,
        )
    }

    #[test]
    fn done_codes_round_trip() {
        for (r, lat, b) in [
            (4096.0, 3.25, 0),
            (0.0, 0.0, 1),
            (-5.0, 12.5, 1),
            (-1_000_001.0, 1.0625, 0),
            (f64::from(MAX_IO_LENGTH), 16383.9375, 1),
        ] {
            let v = done(r, lat, b);
            assert!(v >= f64::from(TICKET_DONE) && v < 2f64.powi(52));
            assert_eq!(undone(v), (r, lat, b));
        }
        // Clamped, not wrapped into the result.
        assert_eq!(undone(done(7.0, 1e9, 0)).0, 7.0);
        assert!(ticket(1 << 28, 1) + TICKET_SUBMITTED < TICKET_DONE);
    }

    /// src/engine.ts `batchDone`'s split of a batch completed in its start call, in Rust.
    #[test]
    fn batch_done_codes_round_trip() {
        let unit = 2f64.powi(BATCH_DONE_SHIFT as i32);
        for (id, failed) in [(1u32 << 31, 0u32), ((1 << 31) + 7, 3), (u32::MAX, 1 << 20)] {
            let v = batch_done(id, failed);
            assert!(v >= unit && v < 2f64.powi(53));
            let k = (v / unit).floor();
            assert_eq!((v - k * unit, k - 1.0), (f64::from(id), f64::from(failed)));
        }
    }
}
