//! Native batches: `readMany` / `writeMany` over typed arrays (offsets, lengths, positions) into
//! one odirect-owned region, with the sliding window refilled here, at reap time, instead of in
//! JS. JS pays one call to start the batch, one completion (a triple like an op's, with an id
//! from [`BATCH_BASE`] up) and one call to take the results, whatever the number of ops.
//!
//! Memory rule: the region is odirect's own memory (an `Alloc`, refused otherwise: nothing is
//! bounced). Every op the batch stages holds its own reference to that allocation, exactly as a
//! single `rw` on owned memory does, so the memory lives until the op is reaped (or abandoned
//! with it at teardown) whatever JS does with its views (detach, transfer, GC, worker exit).
//! The ops' ranges are copied out of the typed arrays and checked against the region here, at
//! the call: later writes to those arrays (even from another thread, through a
//! SharedArrayBuffer) change nothing.

use std::collections::{HashMap, VecDeque};
use std::ptr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use napi::{sys, Env, JsValue, Result, Unknown};
use napi_derive::napi;
use odirect_core::io::{eventfd, BackendKind};
use odirect_core::op::OpKind;

use crate::capture::{CaptureError, Mem, Mems};
use crate::engine::{Inner, OpRec};
use crate::memory::{self, Alloc};
use crate::{backend_kind, NativeEngine};

/// Native batches' ids start here (above lock waits, which end below it).
pub const BATCH_BASE: u32 = 1 << 31;

/// Why `batchStart` refused a batch (besides the `CaptureCode`s Detached, Closed, NoBackend).
#[napi]
pub enum BatchCode {
    /// The memory is not odirect's own (fh.alloc / odirect.alloc).
    NotOwned = -10,
    /// An op's range does not lie inside the memory, or its length is 0 or too large.
    OutOfRange = -11,
    /// An op's address in the memory is not aligned to the file's memory alignment.
    Misaligned = -12,
    /// offsets / lengths / positions are not the typed arrays of one length expected.
    BadArrays = -13,
}

/// One op of a batch: `len` bytes at address `addr`, inside the batch's allocation `mem`
/// (`Batch::mems`), at file position `pos`.
struct Op {
    addr: usize,
    len: u32,
    mem: u32,
    pos: u64,
}

struct Batch {
    backend: BackendKind,
    write: bool,
    fd: i32,
    /// The odirect allocations the ops lie in (one for the typed-array form; those of the
    /// buffers for the array form), each with its io_uring fixed-buffer index, if registered.
    mems: Vec<(Arc<Alloc>, Option<u16>)>,
    rw_flags: i32,
    ops: Vec<Op>,
    /// Bytes or -errno of each op (-ECANCELED for those cancelled or never started).
    results: Vec<i32>,
    /// The engine key of each op while it is in flight (`NONE` otherwise).
    keys: Vec<u32>,
    next: usize,
    window: usize,
    inflight: usize,
    failed: u32,
    aborted: bool,
    /// Queued in `Batches::dirty` (touched since the last `advance`).
    queued: bool,
    /// Its completion was delivered; waiting for `batchTake`.
    done: bool,
    /// Latency (us) summed over the ops reaped so far, the largest, and how many they are.
    lat_sum: f64,
    lat_max: f64,
    reaped: u32,
    /// Ops reaped per latency bucket (`consts::latency_bucket`): handed to the handle's
    /// histogram by `batchTake`, so fh.stats() percentiles are per op.
    lat_hist: Vec<u32>,
    /// The shared window it runs in (`NONE`: its own, `window`).
    group: u32,
    /// Its ops run on the ring, on a file whose ops do not sleep: the JS thread may wait in
    /// the kernel for them (see [`wait`]).
    waitable: bool,
    /// Its file is a tmpfs/ramfs file (`Inner::copies_inline`): no device, an io-wq worker
    /// copies each op in microseconds (see [`tmpfs_want`]).
    inline: bool,
    /// Its op in flight went to the ring because the chain of inline ops had spent its budget
    /// ([`start_inline`]): it counts in `Batches::yielded` until reaped.
    yielded: bool,
}

const NONE: u32 = u32::MAX;

impl Batch {
    /// Op `i` ended with `result` (bytes or -errno) after `lat` us: its result and latency.
    fn record(&mut self, i: usize, result: i64, lat: f64) {
        let r = result.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        self.results[i] = r;
        if r < 0 {
            self.failed += 1;
        }
        self.lat_sum += lat;
        self.lat_max = self.lat_max.max(lat);
        self.reaped += 1;
        if let Some(c) = self.lat_hist.get_mut(crate::consts::latency_bucket(lat)) {
            *c += 1;
        }
    }
}

/// A window shared by batches (JS `BatchWindow`): at most `window` ops of all its batches in
/// flight; the batches start their ops in the order they were started, a later one as soon as
/// the earlier ones leave room, so the window never drains between them.
struct Group {
    window: usize,
    inflight: usize,
    /// Its batches with ops still to start, oldest first.
    queue: VecDeque<u32>,
}

/// The native batches of one engine.
#[derive(Default)]
pub struct Batches {
    slots: Vec<Option<Batch>>,
    free: Vec<u32>,
    /// Batches touched by completions or a cancel since the last `advance`.
    dirty: Vec<u32>,
    /// Shared windows by their JS id, while they have batches with ops to start or in flight.
    groups: HashMap<u32, Group>,
    /// Ops of waitable batches (`Batch::waitable`) in flight.
    waitable: usize,
    /// Of them, ops on tmpfs/ramfs files (`Batch::inline`).
    waitable_inline: usize,
    /// When this wake-up's first in-kernel wait ran (see [`wait`]).
    wait_since: Option<Instant>,
    /// In-kernel waits made (tests read it: `NativeEngine.batchWaits`).
    pub waits: u64,
    /// Ops in flight of batches whose inline chain spent its budget (`Batch::yielded`): while
    /// any is, no in-kernel wait ([`wait`]), so that its completion comes through the event
    /// loop, which turns first, and the batch's next ops are made inline again at its reap.
    yielded: usize,
    /// Batches whose every op was made inline in their start call, and ops made inline at a
    /// batch's start in all ([`start_inline`]; tests read them: `NativeEngine.batchInline`).
    pub inline_batches: u64,
    pub inline_ops: u64,
}

impl Batches {
    /// Whether `key` names a native batch.
    pub fn is_batch(key: u32) -> bool {
        key >= BATCH_BASE
    }

    /// Op `i` of batch `b` completed with `result` after `lat` us (called from the reap).
    pub fn completed(&mut self, b: u32, i: u32, result: i64, lat: f64) {
        let Some(Some(batch)) = self.slots.get_mut(b as usize) else {
            return;
        };
        batch.record(i as usize, result, lat);
        batch.keys[i as usize] = NONE;
        batch.inflight -= 1;
        if std::mem::take(&mut batch.yielded) {
            self.yielded -= 1;
        }
        if batch.waitable {
            self.waitable -= 1;
            if batch.inline {
                self.waitable_inline -= 1;
            }
        }
        if batch.group != NONE {
            if let Some(g) = self.groups.get_mut(&batch.group) {
                g.inflight -= 1;
            }
        }
        if !batch.queued {
            batch.queued = true;
            self.dirty.push(b);
        }
    }

    /// A free slot for a new batch (empty until the batch is put there).
    fn reserve(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        })
    }
}

/// Stages batch ops until its own window is full or none is left; they are timed from `now`.
/// With ops in flight, only once the room is at least [`refill_min`] (or all that is left). A
/// window of 1 on a tmpfs/ramfs file with nothing in flight makes its ops inline first
/// ([`start_inline`]; `ODIRECT_BATCH_INLINE=0`: never).
fn refill(e: &mut Inner, b: u32, batch: &mut Batch, now: Instant) {
    if batch.inflight == 0
        && batch.window == 1
        && batch.inline
        && batch.rw_flags == 0
        && !batch.aborted
        && inline_on()
        && e.batch_may_inline()
    {
        start_inline(e, batch);
        if batch.next == batch.ops.len() {
            return;
        }
        if e.inline_spent() {
            // The chain's budget is spent: the next op goes through the ring, its completion
            // through the event loop (no in-kernel wait for it), and the loop turns first.
            batch.yielded = true;
            e.batches.yielded += 1;
        }
    }
    let room = batch.window.saturating_sub(batch.inflight);
    let left = batch.ops.len() - batch.next;
    if batch.inflight > 0 && room < refill_min(batch.window).min(left) {
        return;
    }
    stage_ops(e, b, batch, room, now);
}

/// A window's refill waits, while ops are still in flight, until this much room was made (or
/// all that is left fits), as fio's `--iodepth_batch_submit` does: refilled at every reap, a
/// window of 64 on tmpfs took 5-6 completions per wake-up of the JS thread and handed as many
/// new ops to the kernel each time (0.28 `io_uring_enter` per op against fio's 0.20, twenty-first
/// session). `ODIRECT_BATCH_REFILL=k` ops (at most a quarter of the window; 1: every reap, the
/// old way). Read once.
fn refill_min(window: usize) -> usize {
    refill_k().min(window / 4).max(1)
}

/// `ODIRECT_BATCH_REFILL` as set (or its default), read once.
fn refill_k() -> usize {
    static K: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *K.get_or_init(|| crate::env::number("ODIRECT_BATCH_REFILL").unwrap_or(BATCH_REFILL))
}

/// [`refill_min`]'s default.
const BATCH_REFILL: usize = 16;

/// A native batch's ops on a file that does not complete inline (a device's) go to the kernel
/// in groups of this many as they are staged (`Inner::submit_early`), not all at the end of
/// the reap or the call: io_uring plugs the block requests of one `io_uring_enter` until its
/// last SQE is issued, and issuing an O_DIRECT write costs the submitting thread several µs,
/// so the device got nothing of a refill of 20-40 writes until all were issued (measured with
/// the enter calls traced, a BatchWindow of 64 writes on the disk: 21 SQEs per submission,
/// a third of them 32 or more; fio submits 7 at a time). `ODIRECT_BATCH_SUBMIT_EVERY=k`
/// overrides it (0: off).
const BATCH_SUBMIT_EVERY: usize = 8;

fn batch_submit_every() -> usize {
    static EVERY: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *EVERY.get_or_init(|| {
        crate::env::number("ODIRECT_BATCH_SUBMIT_EVERY").unwrap_or(BATCH_SUBMIT_EVERY)
    })
}

/// The array form's first window (`readMany`/`writeMany` of `[{ buffer, position }]` with a
/// window, staged by one `rwMany` call) on a device's file goes to the kernel in groups of this
/// many as it is staged, as a native batch's ops do ([`BATCH_SUBMIT_EVERY`]), not in one
/// submission at the flush: counted (nineteenth session, bench/counts/batchdepth.py, 4 KiB
/// writes at depth 64 on the disk), two lanes of 32 array-form writes made one io_uring_enter
/// of 32 SQEs per call (31.7 block requests issued back to back per dispatch: the device got
/// none until all were issued), the 512-op form 64 at the start of each call; the typed form
/// 6-7 per enter, fio 7.4. `ODIRECT_MANY_SUBMIT_EVERY=k` sets the group (0: the old way, all at
/// the flush). Read once.
pub(crate) fn many_submit_every() -> usize {
    static EVERY: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *EVERY.get_or_init(|| {
        crate::env::number("ODIRECT_MANY_SUBMIT_EVERY").unwrap_or(BATCH_SUBMIT_EVERY)
    })
}

/// Stages up to `room` more ops of `batch` (none once aborted); returns how many.
fn stage_ops(e: &mut Inner, b: u32, batch: &mut Batch, room: usize, now: Instant) -> usize {
    let mut staged = 0;
    let every = batch_submit_every();
    while !batch.aborted && staged < room && batch.next < batch.ops.len() {
        e.submit_early(batch.fd, every);
        staged += 1;
        let i = batch.next;
        batch.next += 1;
        let op = &batch.ops[i];
        let p = op.addr as *mut u8;
        let len = op.len as usize;
        let (alloc, fixed) = &batch.mems[op.mem as usize];
        let fixed = *fixed;
        let kind = if batch.write {
            OpKind::Write {
                fd: batch.fd,
                ptr: p,
                len,
                offset: op.pos,
                buf_index: fixed,
            }
        } else {
            OpKind::Read {
                fd: batch.fd,
                ptr: p,
                len,
                offset: op.pos,
                buf_index: fixed,
            }
        };
        // The op's own reference to its allocation: its memory lives until it is reaped.
        let mem = Mems::One(Mem::Owned(alloc.clone(), len));
        let mut rec = OpRec::started_at(batch.backend, kind, None, mem, fixed, now);
        rec.rw_flags = batch.rw_flags;
        rec.batch = Some((b, i as u32));
        batch.keys[i] = e.stage(rec);
        batch.inflight += 1;
        if batch.waitable {
            e.batches.waitable += 1;
            if batch.inline {
                e.batches.waitable_inline += 1;
            }
        }
    }
    staged
}

/// Fills shared window `g` from its queue of batches, oldest first (`held`: a batch taken out
/// of its slot by the caller, which is refilled through it). A batch leaves the queue once all
/// its ops started (or it was cancelled); the window is forgotten when nothing is left in it.
fn refill_group(e: &mut Inner, g: u32, held: &mut Batch, held_b: u32, now: Instant) {
    loop {
        let Some(grp) = e.batches.groups.get(&g) else {
            return;
        };
        let room = grp.window.saturating_sub(grp.inflight);
        let Some(&front) = grp.queue.front() else {
            if grp.inflight == 0 {
                e.batches.groups.remove(&g);
            }
            return;
        };
        // As `refill`: with ops in flight, only once there is room for `refill_min` ops (or
        // for all the front batch has left).
        let min = refill_min(grp.window);
        if grp.inflight > 0 && room < min {
            let left = if front == held_b {
                held.ops.len() - held.next
            } else {
                e.batches
                    .slots
                    .get(front as usize)
                    .and_then(Option::as_ref)
                    .map_or(0, |b| b.ops.len() - b.next)
            };
            if room < left.max(1) {
                return;
            }
        }
        let (staged, over) = if front == held_b {
            let n = stage_ops(e, front, held, room, now);
            (n, held.aborted || held.next == held.ops.len())
        } else {
            let Some(mut batch) = e
                .batches
                .slots
                .get_mut(front as usize)
                .and_then(Option::take)
            else {
                // Not a live batch any more (cannot happen: a batch leaves the queue first).
                if let Some(grp) = e.batches.groups.get_mut(&g) {
                    grp.queue.pop_front();
                }
                continue;
            };
            let n = stage_ops(e, front, &mut batch, room, now);
            let over = batch.aborted || batch.next == batch.ops.len();
            e.batches.slots[front as usize] = Some(batch);
            (n, over)
        };
        let Some(grp) = e.batches.groups.get_mut(&g) else {
            return;
        };
        grp.inflight += staged;
        if !over {
            return;
        }
        grp.queue.pop_front();
    }
}

/// After a reap: refills the windows of the batches it touched, delivers each batch that is
/// over as one (BATCH_BASE + index, ops failed, mean latency us of its reaped ops) triple into
/// `out`, and submits what was staged.
pub fn advance(e: &mut Inner, out: &mut Vec<f64>) {
    if e.batches.dirty.is_empty() {
        return;
    }
    let dirty = std::mem::take(&mut e.batches.dirty);
    // Refilled ops start at the reap that made room for them (one clock read per reap).
    let now = e.reaped_at;
    for &b in &dirty {
        let Some(mut batch) = e.batches.slots.get_mut(b as usize).and_then(Option::take) else {
            continue;
        };
        batch.queued = false;
        if !batch.done {
            if batch.group == NONE {
                refill(e, b, &mut batch, now);
            } else {
                refill_group(e, batch.group, &mut batch, b, now);
            }
            if batch.inflight == 0 && batch.next == batch.ops.len() {
                batch.done = true;
                out.extend([
                    (BATCH_BASE + b) as f64,
                    batch.failed as f64,
                    batch.lat_sum / batch.reaped.max(1) as f64,
                ]);
            }
        }
        e.batches.slots[b as usize] = Some(batch);
    }
    // Keep the list's capacity (nothing can have been queued meanwhile: only reaps queue).
    let mut dirty = dirty;
    dirty.clear();
    if e.batches.dirty.is_empty() {
        e.batches.dirty = dirty;
    }
    // Nothing for JS, and a tmpfs wait may follow: the refills go to the kernel in that wait's
    // own `io_uring_enter` (`wait` submits them whether it waits or not).
    if !(out.is_empty() && tmpfs_pending(e)) {
        e.flush();
    }
}

/// The in-kernel waits of one wake-up for native batches' ops end after this long in all (or
/// when one timed out): then the wake-up ends, and timers and other I/O get the loop's turn.
const WAIT_BUDGET: Duration = Duration::from_millis(1);

/// `ODIRECT_BATCH_WAIT=k` (opt-in, read once): a wait returns once k of the batches' ops
/// completed (0, the default: no waits). Fourteenth session, with counts: O_DIRECT writes
/// complete in a kworker on the disk interrupt's CPU (`iomap_dio_complete_work`, one per
/// write) and the eventfd is signalled at the first completion of an empty list, so a JS
/// thread on that CPU is woken per completion (`BatchWindow` writes pinned there, per 10k ops:
/// `epoll_pwait` 1,820, context switches 948, 3.4 SQEs per enter; 299 / 172 / 6.4 on the other
/// CPU); k = 8 removes that (7 of 7 rounds faster there, 0.83x -> 0.97x fio), but unpinned
/// three `odirect bench` A/Bs disagreed (writes better in two, worse in the third; README
/// "Kernel features, measured"): still opt-in. Measured (README "Kernel features, measured"): the
/// JS thread's `epoll_pwait` per op 0.13-0.24 -> 0.004 and `io_uring_enter` 0.24-0.40 ->
/// 0.06-0.18 with k = 8, but throughput against fio no better beyond the run-to-run swings
/// (better in some forms, worse in others), and each wait arms a timer: off by default.
fn wait_want() -> usize {
    static W: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *W.get_or_init(|| crate::env::number("ODIRECT_BATCH_WAIT").unwrap_or(0))
}

/// After a reap that has nothing for JS (`Inner::reap`): when every op in flight belongs to a
/// waitable native batch (so every completion that could give JS something lands in the
/// ring's completion queue) and at least `ODIRECT_BATCH_WAIT` of them are in flight (on
/// tmpfs/ramfs files: `ODIRECT_BATCH_WAIT_TMPFS`, see [`tmpfs_want`]), waits in the kernel for
/// that many, within the wake-up's budget, as fio's `io_uring_enter(min_complete)` loop does
/// (fewer are not waited for: a wait arms a timer, which a few completions do not pay for).
/// True when it waited and completions are there to reap: the caller reaps again in the same
/// wake-up. `first`: the wake-up's first reap (its budget starts afresh). Whether it waits or
/// not, what `advance` left staged goes to the kernel here.
pub fn wait(e: &mut Inner, first: bool) -> bool {
    if first {
        e.batches.wait_since = None;
    }
    match wait_for(e) {
        Some((want, timeout)) => {
            e.batches.waits += 1;
            // The refills `advance` left staged are submitted by the wait's own call.
            e.flush_but_ring();
            e.wait_ring(want, timeout, None)
        }
        None => {
            e.flush();
            false
        }
    }
}

/// Whether every op in flight is a waitable native batch's op on a tmpfs/ramfs file and the
/// tmpfs wait is on (see [`tmpfs_want`]).
fn tmpfs_pending(e: &Inner) -> bool {
    let n = e.batches.waitable;
    n > 0 && e.batches.waitable_inline == n && n == e.inflight() && tmpfs_want() > 0
}

/// How many completions [`wait`] waits for now, and for how long at most (None: no wait).
fn wait_for(e: &mut Inner) -> Option<(usize, Duration)> {
    let n = e.batches.waitable;
    if e.batches.yielded > 0 {
        return None;
    }
    // Every op in flight on a tmpfs/ramfs file: the tmpfs wait (see `tmpfs_want`).
    let tmpfs = tmpfs_pending(e);
    let want = if tmpfs {
        tmpfs_want().min(n)
    } else {
        wait_want()
    };
    if want == 0 || n < want || n != e.inflight() || (e.staged() != 0 && !tmpfs) {
        return None;
    }
    let now = Instant::now();
    let since = *e.batches.wait_since.get_or_insert(now);
    let left = WAIT_BUDGET.checked_sub(now.duration_since(since))?;
    if left.is_zero() {
        return None;
    }
    // A tmpfs wait's timeout is past the next scheduler tick (never reached: an io-wq worker
    // copies each op in microseconds, barring a page of a swapped-out file): one shorter than
    // that arms a timer the CPU must be reprogrammed for (a VM exit) at every wait.
    Some((want, if tmpfs { tmpfs_timeout() } else { left }))
}

/// The tmpfs wait's timeout (`engine::tick_safe_timeout`, read once).
fn tmpfs_timeout() -> Duration {
    static T: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *T.get_or_init(crate::engine::tick_safe_timeout)
}

/// How many completions a native batch's wait waits for when every op in flight is a native
/// batch's op on a tmpfs/ramfs file (`ODIRECT_BATCH_WAIT_TMPFS=k`, read once; by default the
/// refill's 16, see below; 0: as on other files, `ODIRECT_BATCH_WAIT`), at most as many as are in
/// flight. No device
/// is involved there: io-wq workers copy each op in a microsecond or two, so the JS thread, which
/// caps the rate (seventeenth session: 94-96% busy against fio's 71-81%), could sleep in the
/// kernel until `k` are in, as fio does, instead of taking a few per wake-up of the loop with an
/// epoll_pwait, an eventfd read and two io_uring_enter calls each; the refills `advance` stages
/// go to the kernel in the waiting call itself. Its timeout is tick-safe ([`tmpfs_timeout`]);
/// the wake-up's 1 ms budget ([`WAIT_BUDGET`]) bounds how long waits go on before the loop gets
/// its turn. Measured (eighteenth session, README "What the JS thread pays per tmpfs batch
/// write"): JS-thread CPU per op 0.70-0.75x, but IOPS 0.81-0.88x for typed writes (k = 4-32):
/// each wait is a sleep and a wake-up of the JS thread, and the worker idles until it is back.
///
/// Twenty-first session: with the refills of at least [`refill_min`] ops it pays, and it is the
/// default, waiting for as many completions as a refill wants (`ODIRECT_BATCH_REFILL`, 16): the
/// JS thread submits 16 and waits for 16 in one call, as fio does (`--iodepth_batch_submit=16`,
/// `--iodepth_batch_complete_min`). `odirect bench` variants, 7 paired rounds of 1.5 s with fio
/// (load 4.7-5.2), both against the old way (refill at every reap, no wait): typed window
/// writes 1.101x IOPS (6 of 7 rounds faster) at 0.904x CPU per op, `BatchWindow` 1.068x (4/7),
/// two lanes 1.091x (5/7); reads 1.048x (5/7), 1.072x (6/7), 1.012x (4/7); CPU per op lower in
/// all six. `ODIRECT_BATCH_REFILL=1` turns both off (the old way); `ODIRECT_BATCH_WAIT_TMPFS=k`
/// sets the wait alone (0: none).
fn tmpfs_want() -> usize {
    static W: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *W.get_or_init(|| {
        crate::env::number("ODIRECT_BATCH_WAIT_TMPFS").unwrap_or(match refill_k() {
            0 | 1 => 0,
            k => k,
        })
    })
}

/// Cancels batch `key`: ops not started never will be (-ECANCELED), ops in flight are asked to
/// cancel (each still completes, with ECANCELED or its result). Its completion follows.
pub fn cancel(e: &mut Inner, key: u32) {
    let b = key - BATCH_BASE;
    let Some(mut batch) = e.batches.slots.get_mut(b as usize).and_then(Option::take) else {
        return;
    };
    if !batch.done && !batch.aborted {
        batch.aborted = true;
        for i in batch.next..batch.ops.len() {
            batch.results[i] = -libc::ECANCELED;
            batch.failed += 1;
        }
        batch.next = batch.ops.len();
        // Out of its shared window's queue (its slot may serve another batch once taken).
        if let Some(g) = e.batches.groups.get_mut(&batch.group) {
            g.queue.retain(|q| *q != b);
        }
        let live: Vec<u32> = batch.keys.iter().copied().filter(|k| *k != NONE).collect();
        for k in live {
            e.cancel(k);
        }
        if !batch.queued {
            batch.queued = true;
            e.batches.dirty.push(b);
        }
        // A reap (and so `advance`) follows even when nothing is in flight.
        eventfd::signal(e.eventfd());
    }
    e.batches.slots[b as usize] = Some(batch);
}

/// A typed array's element type, data and element count (None: not a typed array).
///
/// # Safety
/// `env` and `v` are live handles of the current call.
unsafe fn typed(env: sys::napi_env, v: sys::napi_value) -> Option<(i32, *const u8, usize)> {
    let mut is = false;
    let (mut ty, mut len, mut off) = (0, 0usize, 0usize);
    let mut data: *mut std::ffi::c_void = ptr::null_mut();
    let mut ab = ptr::null_mut();
    // SAFETY: forwarded contract; each call writes only its out-parameters.
    unsafe {
        if sys::napi_is_typedarray(env, v, &mut is) != sys::Status::napi_ok || !is {
            return None;
        }
        if sys::napi_get_typedarray_info(env, v, &mut ty, &mut len, &mut data, &mut ab, &mut off)
            != sys::Status::napi_ok
        {
            return None;
        }
    }
    Some((ty, data as *const u8, if data.is_null() { 0 } else { len }))
}

/// Element `i` of a typed array's data at `data`.
///
/// # Safety
/// `data` points to more than `i` elements of `T`, aligned for `T`.
unsafe fn element<T: Copy>(data: *const u8, i: usize) -> T {
    // SAFETY: forwarded contract.
    unsafe { ptr::read((data as *const T).add(i)) }
}

/// A position as a file offset: a whole number from 0 to 2^53 - 1 (Float64Array), or from 0 to
/// 2^63 - 1 (BigInt64Array / BigUint64Array).
fn position_of(ty: i32, data: *const u8, i: usize) -> Option<u64> {
    use sys::TypedarrayType as T;
    match ty {
        T::float64_array => {
            // SAFETY: the caller's positions array has more than i elements of this type.
            let x: f64 = unsafe { element(data, i) };
            ((0.0..=9_007_199_254_740_991.0).contains(&x) && x.fract() == 0.0).then_some(x as u64)
        }
        T::bigint64_array | T::biguint64_array => {
            // SAFETY: as above.
            let x: u64 = unsafe { element(data, i) };
            (x <= i64::MAX as u64).then_some(x)
        }
        _ => None,
    }
}

/// The ops of a batch, checked against the region of `region_len` bytes at `base` (code on
/// refusal). Each element of the three arrays is read once, straight into the op (no copy of
/// the arrays first: this runs on every call, before its first op can start).
///
/// # Safety
/// `env` and the values are live handles of the current call.
unsafe fn ops_of(
    env: sys::napi_env,
    offsets: sys::napi_value,
    lengths: sys::napi_value,
    positions: sys::napi_value,
    base: usize,
    region_len: usize,
    mem_align: usize,
) -> std::result::Result<Vec<Op>, BatchCode> {
    use sys::TypedarrayType as T;
    // SAFETY: forwarded contract.
    let (o, l, p) = unsafe {
        (
            typed(env, offsets),
            typed(env, lengths),
            typed(env, positions),
        )
    };
    let (Some((T::uint32_array, od, n)), Some((T::uint32_array, ld, ln)), Some((pt, pd, pn))) =
        (o, l, p)
    else {
        return Err(BatchCode::BadArrays);
    };
    if ln != n || pn != n {
        return Err(BatchCode::BadArrays);
    }
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: typed arrays of n elements of these types (checked above); no JS runs
        // during this loop.
        let (off, len): (u32, u32) = unsafe { (element(od, i), element(ld, i)) };
        let pos = position_of(pt, pd, i).ok_or(BatchCode::BadArrays)?;
        let end = off as usize + len as usize;
        if len == 0 || len > crate::consts::MAX_IO_LENGTH || end > region_len {
            return Err(BatchCode::OutOfRange);
        }
        if mem_align > 1 && !(base + off as usize).is_multiple_of(mem_align) {
            return Err(BatchCode::Misaligned);
        }
        ops.push(Op {
            addr: base + off as usize,
            len,
            mem: 0,
            pos,
        });
    }
    Ok(ops)
}

/// A view's memory, or the code refusing it (detached or empty; not a view).
///
/// # Safety
/// `env` and `v` are live handles of the current call.
unsafe fn view_of(
    env: sys::napi_env,
    v: sys::napi_value,
) -> std::result::Result<memory::View, f64> {
    // SAFETY: forwarded contract.
    match unsafe { memory::view(env, v) } {
        Ok(x) if !x.ptr.is_null() && x.len > 0 => Ok(x),
        Ok(_) => Err(CaptureError::Detached.code()),
        Err(_) => Err(CaptureError::NotView.code()),
    }
}

/// A batch's memory and ops.
type Parsed = std::result::Result<(Vec<Arc<Alloc>>, Vec<Op>), f64>;

/// The typed-array form's region and ops (see `NativeEngine::batch_start`).
///
/// # Safety
/// `env` and the values are live handles of the current call.
unsafe fn region_ops(
    env: sys::napi_env,
    memory: sys::napi_value,
    [offsets, lengths, positions]: [sys::napi_value; 3],
    mem_align: usize,
) -> Parsed {
    // SAFETY: forwarded contract.
    let region = unsafe { view_of(env, memory) }?;
    let base = region.ptr as usize;
    let Some(alloc) = memory::lookup(base, region.len) else {
        return Err(BatchCode::NotOwned as i32 as f64);
    };
    // SAFETY: forwarded contract.
    let ops = unsafe {
        ops_of(
            env, offsets, lengths, positions, base, region.len, mem_align,
        )
    }
    .map_err(|c| c as i32 as f64)?;
    if ops.is_empty() {
        return Err(BatchCode::BadArrays as i32 as f64);
    }
    Ok((vec![alloc], ops))
}

/// The array form's ops: one per view of the JS array `views` (see `NativeEngine::batch_start`).
///
/// # Safety
/// `env` and the values are live handles of the current call.
unsafe fn views_ops(
    env: sys::napi_env,
    views: sys::napi_value,
    positions: sys::napi_value,
    mem_align: usize,
) -> Parsed {
    let bad = BatchCode::BadArrays as i32 as f64;
    let mut n = 0u32;
    // SAFETY: forwarded contract; writes only `n`.
    if unsafe { sys::napi_get_array_length(env, views, &mut n) } != sys::Status::napi_ok {
        return Err(bad);
    }
    let n = n as usize;
    // SAFETY: forwarded contract.
    let Some((sys::TypedarrayType::float64_array, pd, pn)) = (unsafe { typed(env, positions) })
    else {
        return Err(bad);
    };
    if n == 0 || pn < n {
        return Err(bad);
    }
    let mut mems: Vec<Arc<Alloc>> = Vec::new();
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        let mut v = ptr::null_mut();
        // SAFETY: forwarded contract; writes only `v`.
        if unsafe { sys::napi_get_element(env, views, i as u32, &mut v) } != sys::Status::napi_ok {
            return Err(bad);
        }
        // SAFETY: a live handle of this call.
        let view = unsafe { view_of(env, v) }?;
        let addr = view.ptr as usize;
        if view.len > crate::consts::MAX_IO_LENGTH as usize {
            return Err(BatchCode::OutOfRange as i32 as f64);
        }
        if mem_align > 1 && !addr.is_multiple_of(mem_align) {
            return Err(BatchCode::Misaligned as i32 as f64);
        }
        let pos = position_of(sys::TypedarrayType::float64_array, pd, i).ok_or(bad)?;
        // Buffers carved from one allocation share its entry: the registry is asked only
        // when the view leaves the allocation of the op before.
        let inside = |m: &Arc<Alloc>| {
            let start = m.ptr() as usize;
            addr >= start && addr + view.len <= start + m.len()
        };
        if !mems.last().is_some_and(inside) {
            let Some(alloc) = memory::lookup(addr, view.len) else {
                return Err(BatchCode::NotOwned as i32 as f64);
            };
            mems.push(alloc);
        }
        ops.push(Op {
            addr,
            len: view.len as u32,
            mem: (mems.len() - 1) as u32,
            pos,
        });
    }
    Ok((mems, ops))
}

/// Whether a native batch's registered memory goes as READ_FIXED / WRITE_FIXED on a file the
/// kernel serves by copying (tmpfs, ramfs, a buffered fallback), as a single op's does
/// (`pins::fixed_on_copy`, its own switch): a batch's region spans many pages, and the io-wq worker copying
/// into or out of it through the fixed buffer's kernel mapping spends less per op than
/// through the user mapping (4 KiB typed batches at depth 64 on tmpfs, worker + JS-thread CPU
/// per op 2.66-2.81 -> 2.30-2.48 µs for writes, 2.83-3.12 -> 2.59-2.80 for reads; README
/// "Kernel features, measured"). `ODIRECT_BATCH_FIXED_ON_COPY=0` turns it off (read once).
fn fixed_on_copy() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::env::on_unless_zero("ODIRECT_BATCH_FIXED_ON_COPY"))
}

/// `ODIRECT_BATCH_INLINE=0`: a native batch with a window of 1 on a tmpfs/ramfs file sends
/// every op through the ring (the twenty-first session's way) instead of [`start_inline`].
/// Read once.
fn inline_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::env::on_unless_zero("ODIRECT_BATCH_INLINE"))
}

/// A batch with a window of 1 on a tmpfs/ramfs file, nothing else staged or in flight
/// (`Inner::batch_may_inline`): its ops made one after another on the JS thread, in its start
/// call (or, once one went through the ring, at that op's reap: [`refill`]), with
/// pread(2)/pwrite(2), as a lone op's are (`Inner::rw_inline`: reads by default, each small, no
/// page swapped out, within the chain's 1 ms budget), until one is not: that one goes through
/// the ring, its completion through the event loop (no in-kernel wait: `Batch::yielded`), and
/// at its reap (the loop has had its turn: a new chain) the rest are made inline again. Without
/// that, once the budget was spent, the in-kernel waits of the wake-up (`wait`, up to 1 ms)
/// took every op left through the ring (counted: 1,345 SQEs for a batch of 8,192 reads, 6,847
/// inline; 45-50% of the IOPS lost with the io-wq worker on the other vCPU).
///
/// Why: a window of 1 runs one op at a time anyway; through the ring each was handed to an
/// io-wq worker and waited for, a wake-up of another thread per op, which costs 35-55 us when
/// the worker sits on the other, idle vCPU of this VM (an IPI to a halted vCPU) and 2-3 us on
/// the same one: the full runs measured 17-23k IOPS in the bench's own (unpinned) rows, 300k+
/// in a child pinned to one CPU. Memory: every op's range lies in an allocation the batch holds
/// (`Batch::mems`) for the whole call, and no JS runs until it returns.
fn start_inline(e: &mut Inner, batch: &mut Batch) {
    let mut t0 = Instant::now();
    while batch.next < batch.ops.len() {
        let i = batch.next;
        let op = &batch.ops[i];
        let (fd, ptr, len, offset) = (batch.fd, op.addr as *mut u8, op.len as usize, op.pos);
        let kind = if batch.write {
            OpKind::Write {
                fd,
                ptr,
                len,
                offset,
                buf_index: None,
            }
        } else {
            OpKind::Read {
                fd,
                ptr,
                len,
                offset,
                buf_index: None,
            }
        };
        // SAFETY: `ptr[..len]` lies in the allocation `batch.mems[op.mem]`, which the batch
        // holds (an `Arc`) for this whole call; nothing else of this engine is staged or in
        // flight (`batch_may_inline`), the batch's ops run one at a time, and no JS runs
        // before the call returns.
        let Some(r) = (unsafe { e.batch_op_inline(&kind, len) }) else {
            break;
        };
        let t1 = Instant::now();
        batch.record(i, r, t1.duration_since(t0).as_secs_f64() * 1e6);
        t0 = t1;
        batch.next += 1;
        e.batches.inline_ops += 1;
    }
}

/// Starts a batch of `ops` (not empty) in `mems` (see `NativeEngine::batch_start`); returns its
/// id or a negative `CaptureCode`.
#[allow(clippy::too_many_arguments)]
fn start(
    e: &mut Inner,
    kind: BackendKind,
    write: bool,
    fd: i32,
    mems: Vec<Arc<Alloc>>,
    ops: Vec<Op>,
    window: u32,
    rw_flags: i32,
    group: u32,
) -> f64 {
    if let Err(c) = e.ready(kind) {
        return c.code();
    }
    let n = ops.len();
    // The ops in each allocation (what its slot in the automatic table serves).
    let mut uses = vec![0u32; mems.len()];
    for op in &ops {
        if let Some(u) = uses.get_mut(op.mem as usize) {
            *u = u.saturating_add(1);
        }
    }
    let mems = mems
        .into_iter()
        .zip(uses)
        .map(|(a, u)| {
            let fixed = e.fixed_auto(kind, fd, &a, u, fixed_on_copy());
            (a, fixed)
        })
        .collect();
    let mut batch = Batch {
        backend: kind,
        write,
        fd,
        mems,
        rw_flags,
        ops,
        results: vec![0; n],
        keys: vec![NONE; n],
        next: 0,
        window: if group == 0 {
            (window as usize).clamp(1, n)
        } else {
            usize::MAX
        },
        inflight: 0,
        failed: 0,
        aborted: false,
        queued: false,
        done: false,
        lat_sum: 0.0,
        lat_max: 0.0,
        reaped: 0,
        lat_hist: vec![0; crate::consts::LATENCY_BUCKETS as usize],
        group: if group == 0 { NONE } else { group },
        waitable: kind == BackendKind::IoUring && !e.may_block(fd),
        inline: e.copies_inline(fd),
        yielded: false,
    };
    let b = e.batches.reserve();
    if group == 0 {
        refill(e, b, &mut batch, Instant::now());
        if batch.next == n && batch.inflight == 0 {
            // Every op made inline (`start_inline`): done, no completion follows.
            batch.done = true;
            e.batches.inline_batches += 1;
            let failed = batch.failed;
            e.batches.slots[b as usize] = Some(batch);
            return crate::consts::batch_done(BATCH_BASE + b, failed);
        }
    } else {
        let g = e.batches.groups.entry(group).or_insert_with(|| Group {
            window: (window as usize).max(1),
            inflight: 0,
            queue: VecDeque::new(),
        });
        g.queue.push_back(b);
        refill_group(e, group, &mut batch, b, Instant::now());
    }
    e.batches.slots[b as usize] = Some(batch);
    (BATCH_BASE + b) as f64
}

#[napi]
impl NativeEngine {
    /// In-kernel waits made for native batches' ops so far (see `batch::wait`).
    #[napi(getter)]
    pub fn batch_waits(&self) -> Result<f64> {
        self.with(|e| e.batches.waits as f64)
    }

    /// [batches whose every op was made inline in their start call, ops made inline at the
    /// start of a batch] so far (see `batch::start_inline`).
    #[napi(getter)]
    pub fn batch_inline(&self) -> Result<Vec<f64>> {
        self.with(|e| vec![e.batches.inline_batches as f64, e.batches.inline_ops as f64])
    }

    /// Starts a native batch of reads (`write` false) or writes on `fd`, at most `window` ops in
    /// flight, refilled at reap time. Typed-array form: op i moves `lengths[i]` bytes at
    /// `offsets[i]` in `memory` (odirect's own memory) at file position `positions[i]`
    /// (Float64Array or BigInt64Array). Array form (`memory` a JS array of views, from an
    /// array-form `readMany` / `writeMany` validated by JS; `offsets` and `lengths` unused): op
    /// i moves all of `memory[i]` at `positions[i]` (a Float64Array of at least as many whole
    /// numbers); every view must lie in odirect's own memory at an address aligned to
    /// `mem_align` (else `NotOwned` / `Misaligned`: nothing started, and JS runs the ops one by
    /// one through bounce buffers instead). `group` > 0: the batch runs in that shared window
    /// (of `window` ops, shared with the other batches started with the same `group`: they
    /// start their ops in the order they were started, each as soon as the ones before it
    /// leave room). Returns the batch's id (>= 2^31: it completes once, as an op does, with the
    /// number of ops that failed; then `batchTake`), or a negative `BatchCode` / `CaptureCode`;
    /// a batch whose every op completed in this call (`start_inline`) returns its id plus
    /// `2^BATCH_DONE_SHIFT x (1 + ops failed)` and completes no more (`batchTake` follows).
    #[napi]
    pub fn batch_start(
        &self,
        env: Env,
        backend: u32,
        write: bool,
        fd: i32,
        memory: Unknown,
        offsets: Unknown,
        lengths: Unknown,
        positions: Unknown,
        window: u32,
        mem_align: u32,
        rw_flags: i32,
        group: u32,
    ) -> Result<f64> {
        let kind = backend_kind(backend)?;
        let env = env.raw();
        let mut array = false;
        // SAFETY: live handles of this call; writes only `array`.
        unsafe { sys::napi_is_array(env, memory.raw(), &mut array) };
        // SAFETY: live handles of this call.
        let parsed = unsafe {
            if array {
                views_ops(env, memory.raw(), positions.raw(), mem_align as usize)
            } else {
                region_ops(
                    env,
                    memory.raw(),
                    [offsets.raw(), lengths.raw(), positions.raw()],
                    mem_align as usize,
                )
            }
        };
        let (mems, ops) = match parsed {
            Ok(x) => x,
            Err(code) => return Ok(code),
        };
        self.with(|e| {
            start(
                e,
                kind,
                write,
                fd,
                mems,
                ops,
                window,
                rw_flags,
                if array { 0 } else { group },
            )
        })
    }

    /// After batch `id` completed: copies each op's result (bytes, or -errno; -ECANCELED for
    /// one cancelled or never started) into `results` (an Int32Array of at least the batch's
    /// length) and forgets the batch. Returns the number of ops, or -1 when `results` could not
    /// take them (the batch is forgotten all the same). `latency`, a Float64Array of
    /// `LATENCY_BUCKETS + 3` numbers, receives the latencies of the ops reaped: how many fell
    /// in each bucket of the `Histogram`, then their count, sum (us) and maximum (left as it is
    /// when it is not such an array). `ranges`, a Float64Array of at least twice the batch's
    /// length (or anything else: left alone), receives each op's file position and length
    /// (position of op i at 2i, length at 2i + 1): JS asks for them only when it needs them
    /// (errors, dropping a buffered file's cache), instead of copying the arrays at each call.
    #[napi]
    pub fn batch_take(
        &self,
        env: Env,
        id: f64,
        results: Unknown,
        latency: Unknown,
        ranges: Unknown,
    ) -> Result<f64> {
        let b = (id as u32).wrapping_sub(BATCH_BASE);
        let Some(batch) = self.with(|e| {
            let batch = e.batches.slots.get_mut(b as usize).and_then(|s| {
                if s.as_ref().is_some_and(|x| x.done) {
                    s.take()
                } else {
                    None
                }
            })?;
            e.batches.free.push(b);
            Some(batch)
        })?
        else {
            return Ok(-1.0);
        };
        let buckets = batch.lat_hist.len();
        // SAFETY: live handles of this call.
        if let Some((sys::TypedarrayType::float64_array, data, len)) =
            unsafe { typed(env.raw(), latency.raw()) }
        {
            if len >= buckets + 3 {
                // SAFETY: a Float64Array of at least buckets + 3 elements (checked now; no JS
                // runs during the writes).
                let out = unsafe { std::slice::from_raw_parts_mut(data as *mut f64, buckets + 3) };
                for (o, c) in out.iter_mut().zip(&batch.lat_hist) {
                    *o = *c as f64;
                }
                out[buckets] = batch.reaped as f64;
                out[buckets + 1] = batch.lat_sum;
                out[buckets + 2] = batch.lat_max;
            }
        }
        // SAFETY: live handles of this call.
        if let Some((sys::TypedarrayType::float64_array, data, len)) =
            unsafe { typed(env.raw(), ranges.raw()) }
        {
            if len >= 2 * batch.ops.len() {
                // SAFETY: a Float64Array of at least 2 x ops elements (checked now; no JS runs
                // during the writes).
                let out = unsafe { std::slice::from_raw_parts_mut(data as *mut f64, len) };
                for (o, op) in out.chunks_exact_mut(2).zip(&batch.ops) {
                    o[0] = op.pos as f64;
                    o[1] = op.len as f64;
                }
            }
        }
        // SAFETY: live handles of this call.
        match unsafe { typed(env.raw(), results.raw()) } {
            Some((sys::TypedarrayType::int32_array, data, len)) if len >= batch.results.len() => {
                // SAFETY: an Int32Array of at least results.len() elements (checked now; no JS
                // runs during the copy).
                unsafe {
                    ptr::copy_nonoverlapping(
                        batch.results.as_ptr(),
                        data as *mut i32,
                        batch.results.len(),
                    )
                };
                Ok(batch.results.len() as f64)
            }
            _ => Ok(-1.0),
        }
    }
}
