//! The three drivers (io_uring ring, Linux AIO, thread pool) through the one `Driver` trait, as
//! the napi engine drives them: push, submit, wait for the eventfd, reap.
//!
//! Files are real files opened with O_DIRECT in a temp dir on a real filesystem (/var/tmp when it
//! is not tmpfs, so that O_DIRECT alignment is enforced). A driver that `probe` says cannot run
//! here is skipped with its reason on stderr. Ops held in the kernel are reads of an empty pipe.
//! Nothing here sleeps or measures time: every wait is a `poll` on the driver's eventfd (with a
//! generous guard that turns a missing wake-up into a failure instead of a hang).

#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use odirect_core::buf::AlignedBuf;
use odirect_core::io::{
    self, eventfd, BackendKind, Driver, DriverOptions, Placement, FD_BUFFERED, FD_MAY_BLOCK,
};
use odirect_core::op::{OpKind, OpRef, Segment};

const BS: usize = 4096;
/// A wake-up that never comes fails the test after this long instead of hanging it.
const GUARD_MS: i32 = 120_000;

/// One driver with its eventfd, as the engine holds them.
struct Rig {
    kind: BackendKind,
    d: Box<dyn Driver>,
    efd: Arc<OwnedFd>,
}

fn rig(kind: BackendKind, queue_depth: u32, threads: usize) -> Option<Rig> {
    if let Err(u) = io::probe(kind) {
        eprintln!("skipping the {kind} driver: {u}");
        return None;
    }
    let efd = Arc::new(eventfd::new(false).expect("eventfd"));
    let opts = DriverOptions {
        queue_depth,
        threads,
        ..DriverOptions::default()
    };
    let d = io::create(kind, &efd, &opts).unwrap_or_else(|u| panic!("{kind}: {u}"));
    assert_eq!(d.kind(), kind);
    Some(Rig { kind, d, efd })
}

/// Every driver that can run here.
fn rigs(queue_depth: u32, threads: usize) -> Vec<Rig> {
    BackendKind::ALL
        .iter()
        .filter_map(|&k| rig(k, queue_depth, threads))
        .collect()
}

/// An op of a test, with the iovec array of a vectored op (built from its segments).
struct Op {
    key: u64,
    kind: OpKind,
    iov: Option<Vec<libc::iovec>>,
    rw_flags: i32,
}

fn op(key: u64, kind: OpKind) -> Op {
    let iov = match &kind {
        OpKind::Readv { segs, .. } | OpKind::Writev { segs, .. } => Some(
            segs.iter()
                .map(|s| libc::iovec {
                    iov_base: s.ptr as *mut libc::c_void,
                    iov_len: s.len,
                })
                .collect(),
        ),
        _ => None,
    };
    Op {
        key,
        kind,
        iov,
        rw_flags: 0,
    }
}

impl Op {
    fn as_ref(&self) -> OpRef<'_> {
        OpRef {
            iov: self.iov.as_deref(),
            rw_flags: self.rw_flags,
            ..OpRef::new(self.key, &self.kind)
        }
    }
}

impl Rig {
    /// Pushes `o`.
    ///
    /// # Safety
    /// As for `Driver::push`.
    unsafe fn push(&mut self, o: &Op) {
        // SAFETY: forwarded contract.
        unsafe { self.d.push(&o.as_ref()) }
            .unwrap_or_else(|e| panic!("{}: push {}: {e}", self.kind, o.key));
    }

    /// Waits on the eventfd until `n` completions have been reaped.
    fn wait(&mut self, n: usize) -> Vec<(u64, i64)> {
        let mut out = Vec::new();
        loop {
            // The engine's order: post deferred completions, reset the eventfd, reap.
            self.d.prepare_reap();
            eventfd::drain(self.efd.as_raw_fd());
            self.d.reap(&mut out);
            if out.len() >= n {
                return out;
            }
            if self.d.pending() {
                // Left waiting in the kernel, not announced again: reap again at once.
                continue;
            }
            let mut p = libc::pollfd {
                fd: self.efd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let r = unsafe { libc::poll(&mut p, 1, GUARD_MS) };
            assert!(
                r != 0,
                "{}: no completion announced on the eventfd ({} of {n} reaped)",
                self.kind,
                out.len()
            );
        }
    }

    /// Pushes `ops` and submits them.
    ///
    /// # Safety
    /// As for `Driver::push`, for every op.
    unsafe fn start(&mut self, ops: &[Op]) {
        for o in ops {
            // SAFETY: forwarded contract.
            unsafe { self.push(o) };
        }
        self.d.submit();
    }

    /// Pushes `ops`, submits, waits for exactly their completions (each key once).
    ///
    /// # Safety
    /// As for `Driver::push`, for every op.
    unsafe fn run(&mut self, ops: &[Op]) -> HashMap<u64, i64> {
        // SAFETY: forwarded contract.
        unsafe { self.start(ops) };
        let done = self.wait(ops.len());
        once(self.kind, &done, ops.iter().map(|o| o.key))
    }

    /// Runs one op.
    ///
    /// # Safety
    /// As for `Driver::push`.
    unsafe fn one(&mut self, key: u64, kind: OpKind) -> i64 {
        // SAFETY: forwarded contract.
        let done = unsafe { self.run(&[op(key, kind)]) };
        done[&key]
    }
}

/// The completions by key, checking that each expected key came exactly once.
fn once(
    kind: BackendKind,
    done: &[(u64, i64)],
    keys: impl Iterator<Item = u64>,
) -> HashMap<u64, i64> {
    let mut m = HashMap::new();
    for &(k, r) in done {
        assert!(
            m.insert(k, r).is_none(),
            "{kind}: key {k} completed twice: {done:?}"
        );
    }
    let keys: Vec<u64> = keys.collect();
    assert_eq!(m.len(), keys.len(), "{kind}: {done:?}");
    for k in keys {
        assert!(
            m.contains_key(&k),
            "{kind}: no completion for {k}: {done:?}"
        );
    }
    m
}

/// xorshift64*: enough randomness for offsets and data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn block(len: usize) -> AlignedBuf {
    AlignedBuf::new(len, BS)
}

/// A temp dir on a real (non-tmpfs) filesystem when there is one.
fn tmp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("odirect-drivers")
        .tempdir_in("/var/tmp")
        .or_else(|_| tempfile::Builder::new().prefix("odirect-drivers").tempdir())
        .expect("temp dir")
}

fn is_tmpfs(fd: RawFd) -> bool {
    // SAFETY: an all-zero statfs is a valid value; fstatfs fills it in.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is a live local of the right type.
    let r = unsafe { libc::fstatfs(fd, &mut s) };
    r == 0 && s.f_type == libc::TMPFS_MAGIC
}

/// A file opened with O_DIRECT (read-write), holding `data`.
struct Direct {
    file: File,
    _dir: tempfile::TempDir,
}

impl Direct {
    fn with(data: &[u8]) -> Direct {
        let dir = tmp_dir();
        let path = dir.path().join("data");
        let mut f = File::create(&path).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .expect("open with O_DIRECT");
        Direct { file, _dir: dir }
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn len(&self) -> u64 {
        self.file.metadata().unwrap().len()
    }
}

fn read(fd: RawFd, b: &mut AlignedBuf, at: usize, len: usize, offset: u64) -> OpKind {
    assert!(at + len <= b.len());
    OpKind::Read {
        fd,
        // SAFETY: in bounds (checked above).
        ptr: unsafe { b.as_mut_ptr().add(at) },
        len,
        offset,
        buf_index: None,
    }
}

/// Reads of blocks `0..n` of `fd` into the same blocks of `dst`, keyed by block.
fn block_reads(fd: RawFd, dst: &mut AlignedBuf, n: usize) -> Vec<Op> {
    (0..n)
        .map(|i| op(i as u64, read(fd, dst, i * BS, BS, (i * BS) as u64)))
        .collect()
}

fn write(fd: RawFd, b: &AlignedBuf, at: usize, len: usize, offset: u64) -> OpKind {
    assert!(at + len <= b.len());
    OpKind::Write {
        fd,
        // SAFETY: in bounds (checked above).
        ptr: unsafe { b.as_ptr().add(at) },
        len,
        offset,
        buf_index: None,
    }
}

fn seg(b: &mut AlignedBuf, at: usize, len: usize) -> Segment {
    assert!(at + len <= b.len());
    Segment {
        // SAFETY: in bounds (checked above).
        ptr: unsafe { b.as_mut_ptr().add(at) },
        len,
    }
}

/// A pipe (read end, write end): a read of the empty pipe stays in the kernel until written.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the live local array.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two fresh descriptors nothing else owns.
    unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1]))
    }
}

fn put(w: &OwnedFd, bytes: &[u8]) {
    // SAFETY: writes from a live slice to our own pipe.
    let n = unsafe { libc::write(w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(n, bytes.len() as isize);
}

const ECANCELED: i64 = -(libc::ECANCELED as i64);

/// Shuffled block writes, a vectored write, a write with RWF_DSYNC and fdatasync, then every
/// block read back (plain and vectored) into other memory: the bytes match on every driver.
#[test]
fn writes_and_reads_o_direct_blocks() {
    const N: usize = 64;
    for mut r in rigs(16, 2) {
        let f = Direct::with(&vec![0u8; N * BS]);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut src = block(N * BS);
        rng.fill(src.as_mut_slice());
        let mut order: Vec<usize> = (0..N - 4).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let mut ops: Vec<Op> = order
            .iter()
            .map(|&i| op(i as u64, write(f.fd(), &src, i * BS, BS, (i * BS) as u64)))
            .collect();
        // The last four blocks: one pwritev of two segments (two blocks each, given backwards
        // in memory); then one more block with RWF_DSYNC, past the end.
        let segs = vec![
            seg(&mut src, (N - 2) * BS, 2 * BS),
            seg(&mut src, (N - 4) * BS, 2 * BS),
        ];
        let offset = ((N - 4) * BS) as u64;
        ops.push(op(
            1000,
            OpKind::Writev {
                fd: f.fd(),
                segs,
                offset,
            },
        ));
        ops.push(Op {
            rw_flags: libc::RWF_DSYNC,
            ..op(1001, write(f.fd(), &src, 0, BS, (N * BS) as u64))
        });
        // SAFETY: src and the file outlive the completions (waited for in run).
        let done = unsafe { r.run(&ops) };
        for (k, v) in &done {
            let want = match k {
                1000 => 4 * BS,
                _ => BS,
            };
            assert_eq!(*v, want as i64, "{}: op {k}: {done:?}", r.kind);
        }
        let sync = OpKind::Fsync {
            fd: f.fd(),
            datasync: true,
        };
        // SAFETY: no memory.
        assert_eq!(unsafe { r.one(1002, sync) }, 0, "{}", r.kind);
        assert_eq!(f.len(), ((N + 1) * BS) as u64);

        let mut dst = block((N + 1) * BS);
        let mut ops = block_reads(f.fd(), &mut dst, N - 4);
        let segs = vec![
            seg(&mut dst, (N - 4) * BS, 3 * BS),
            seg(&mut dst, (N - 1) * BS, 2 * BS),
        ];
        ops.push(op(
            2000,
            OpKind::Readv {
                fd: f.fd(),
                segs,
                offset,
            },
        ));
        // SAFETY: dst and the file outlive the completions (waited for in run).
        let done = unsafe { r.run(&ops) };
        for (k, v) in &done {
            let want = if *k == 2000 { 5 * BS } else { BS };
            assert_eq!(*v, want as i64, "{}: op {k}: {done:?}", r.kind);
        }
        let want: Vec<u8> = [
            &src.as_slice()[..(N - 4) * BS],
            &src.as_slice()[(N - 2) * BS..],
            &src.as_slice()[(N - 4) * BS..(N - 2) * BS],
            &src.as_slice()[..BS],
        ]
        .concat();
        assert!(
            dst.as_slice() == &want[..],
            "{}: data read back differs",
            r.kind
        );
        assert_eq!(r.d.inflight(), 0, "{}", r.kind);
    }
}

/// A read that crosses the end of the file returns the bytes up to it; one at the end returns 0.
#[test]
fn short_reads_at_end_of_file() {
    for mut r in rigs(8, 2) {
        let mut data = vec![0u8; 2 * BS + 1000];
        Rng(7).fill(&mut data);
        let f = Direct::with(&data);
        let mut dst = block(8 * BS);
        let ops = [
            op(1, read(f.fd(), &mut dst, 0, 4 * BS, 0)),
            op(2, read(f.fd(), &mut dst, 4 * BS, BS, (3 * BS) as u64)),
        ];
        // SAFETY: dst and the file outlive the completions (waited for in run).
        let done = unsafe { r.run(&ops) };
        assert_eq!(done[&1], data.len() as i64, "{}: {done:?}", r.kind);
        assert_eq!(done[&2], 0, "{}: {done:?}", r.kind);
        assert!(dst.as_slice()[..data.len()] == data[..], "{}", r.kind);
    }
}

/// Failures come back as the op's result, a negated errno: a bad descriptor (EBADF), O_DIRECT
/// misalignment of memory, offset or length (EINVAL, with an aligned read in the same batch
/// that works), fsync of a pipe (EINVAL).
#[test]
fn errors_come_back_as_negative_errno() {
    for mut r in rigs(8, 2) {
        let mut data = vec![0u8; 4 * BS];
        Rng(3).fill(&mut data);
        // Written blocks: on ext4 a direct read of a hole skips the alignment check.
        let f = Direct::with(&data);
        let mut dst = block(8 * BS);
        // SAFETY: dst outlives the completion (waited for in one).
        let bad = unsafe { r.one(1, read(-1, &mut dst, 0, BS, 0)) };
        assert_eq!(bad, -(libc::EBADF as i64), "{}", r.kind);
        if is_tmpfs(f.fd()) {
            eprintln!(
                "{}: the temp dir is on tmpfs, which does not enforce O_DIRECT alignment",
                r.kind
            );
        } else {
            let ops = [
                op(2, read(f.fd(), &mut dst, 1, BS, 0)),
                op(3, read(f.fd(), &mut dst, BS, BS, 1)),
                op(4, read(f.fd(), &mut dst, 2 * BS, 100, 0)),
                op(5, read(f.fd(), &mut dst, 3 * BS, BS, 0)),
            ];
            // SAFETY: dst and the file outlive the completions (waited for in run).
            let done = unsafe { r.run(&ops) };
            for k in 2..=4 {
                assert_eq!(
                    done[&k],
                    -(libc::EINVAL as i64),
                    "{}: op {k}: {done:?}",
                    r.kind
                );
            }
            assert_eq!(done[&5], BS as i64, "{}: {done:?}", r.kind);
            assert!(dst.as_slice()[3 * BS..4 * BS] == data[..BS], "{}", r.kind);
        }
        let (rd, _wr) = pipe();
        let sync = OpKind::Fsync {
            fd: rd.as_raw_fd(),
            datasync: false,
        };
        // SAFETY: no memory; the pipe outlives the completion.
        assert_eq!(
            unsafe { r.one(6, sync) },
            -(libc::EINVAL as i64),
            "{}",
            r.kind
        );
    }
}

/// fallocate, ftruncate and close on every driver that runs them (placement not Elsewhere);
/// a driver pushed an op it cannot run refuses it at once (EOPNOTSUPP) instead of losing it.
#[test]
fn ops_without_memory() {
    for mut r in rigs(8, 2) {
        let f = Direct::with(&[]);
        let fd = f.fd();
        let alloc = OpKind::Fallocate {
            fd,
            mode: 0,
            offset: 0,
            len: (3 * BS) as u64,
        };
        let trunc = OpKind::Ftruncate { fd, len: BS as u64 };
        for (key, o, len) in [(1, alloc, 3 * BS), (2, trunc, BS)] {
            if r.d.placement(&o, 0) == Placement::Elsewhere {
                // SAFETY: no memory.
                let e = unsafe { r.d.push(&OpRef::new(key, &o)) }
                    .map(|_| ())
                    .unwrap_err();
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP),
                    "{}: {o:?}",
                    r.kind
                );
                eprintln!("{}: {} runs on the pool instead", r.kind, o.syscall());
                continue;
            }
            // SAFETY: no memory.
            assert_eq!(unsafe { r.one(key, o) }, 0, "{}", r.kind);
            assert_eq!(f.len(), len as u64, "{}", r.kind);
        }
        // Close the write end of a pipe: the read end then sees end-of-file (a check that
        // holds while other tests open descriptors that may reuse the closed number).
        let (rd, wr) = pipe();
        let close = OpKind::Close { fd: wr.as_raw_fd() };
        if r.d.placement(&close, 0) == Placement::Elsewhere {
            continue;
        }
        let n = std::os::fd::IntoRawFd::into_raw_fd(wr);
        // SAFETY: no memory; the descriptor is handed over to the op.
        assert_eq!(
            unsafe { r.one(3, OpKind::Close { fd: n }) },
            0,
            "{}",
            r.kind
        );
        // SAFETY: fcntl and read on our own pipe's read end, into a live local byte.
        let eof = unsafe {
            libc::fcntl(rd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
            let mut x = 0u8;
            libc::read(rd.as_raw_fd(), (&mut x as *mut u8).cast(), 1)
        };
        assert_eq!(eof, 0, "{}: the write end is still open", r.kind);
    }
}

/// Where each driver wants each op (the engine routes by this): the ring punts ops on
/// descriptors whose submission may sleep and sends ftruncate elsewhere only without
/// IORING_OP_FTRUNCATE; aio sends fallocate/ftruncate/close and every op on a buffered or
/// may-block descriptor to the pool; the pool runs everything. Only the ring has fixed
/// buffers and links.
#[test]
fn placement_fixed_buffers_and_links() {
    let read = OpKind::Read {
        fd: 0,
        ptr: std::ptr::null_mut(),
        len: 0,
        offset: 0,
        buf_index: None,
    };
    let trunc = OpKind::Ftruncate { fd: 0, len: 0 };
    let alloc = OpKind::Fallocate {
        fd: 0,
        mode: 0,
        offset: 0,
        len: 1,
    };
    let close = OpKind::Close { fd: 0 };
    for r in rigs(8, 1) {
        let p = |o: &OpKind, facts| r.d.placement(o, facts);
        match r.kind {
            BackendKind::IoUring => {
                assert_eq!(p(&read, 0), Placement::Inline);
                assert_eq!(p(&read, FD_MAY_BLOCK), Placement::Punt);
                assert_eq!(p(&read, FD_BUFFERED), Placement::Inline);
                assert_eq!(p(&alloc, 0), Placement::Inline);
                assert_eq!(p(&close, 0), Placement::Inline);
                assert!(matches!(
                    p(&trunc, 0),
                    Placement::Inline | Placement::Elsewhere
                ));
                assert!(r.d.fixed_buffers() && r.d.links());
                assert!(!r.d.describe().is_empty());
            }
            BackendKind::Aio => {
                assert_eq!(p(&read, 0), Placement::Inline);
                for facts in [FD_MAY_BLOCK, FD_BUFFERED] {
                    assert_eq!(p(&read, facts), Placement::Elsewhere);
                }
                for o in [&alloc, &trunc, &close] {
                    assert_eq!(p(o, 0), Placement::Elsewhere, "{o:?}");
                }
                assert!(!r.d.fixed_buffers() && !r.d.links());
            }
            BackendKind::ThreadPool => {
                for o in [&read, &alloc, &trunc, &close] {
                    for facts in [0, FD_MAY_BLOCK, FD_BUFFERED] {
                        assert_eq!(p(o, facts), Placement::Inline, "{o:?}");
                    }
                }
                assert!(!r.d.fixed_buffers() && !r.d.links());
            }
        }
    }
}

/// A one-byte read of the pipe `rd` into `b[at]`. The offset says "no position": -1 (the
/// current position) for io_uring; for the pool, pread's ESPIPE makes it a plain read.
fn pipe_read(kind: BackendKind, rd: &OwnedFd, b: &mut AlignedBuf, at: usize) -> OpKind {
    assert!(at < b.len());
    OpKind::Read {
        fd: rd.as_raw_fd(),
        // SAFETY: in bounds (checked above).
        ptr: unsafe { b.as_mut_ptr().add(at) },
        len: 1,
        offset: if kind == BackendKind::IoUring {
            u64::MAX
        } else {
            0
        },
        buf_index: None,
    }
}

/// io_uring: a read held in the kernel (an empty pipe) is cancelled (-ECANCELED); a second one
/// still reads what is written afterwards; an unknown key is harmless.
#[test]
fn ring_cancels_an_op_held_in_the_kernel() {
    let Some(mut r) = rig(BackendKind::IoUring, 8, 0) else {
        return;
    };
    let (rd, wr) = pipe();
    let mut b = block(BS);
    let ops = [
        op(1, pipe_read(r.kind, &rd, &mut b, 0)),
        op(2, pipe_read(r.kind, &rd, &mut b, 1)),
    ];
    // SAFETY: b and the pipe outlive the completions (waited for below).
    unsafe {
        r.push(&ops[0]);
        r.push(&ops[1]);
    }
    r.d.submit();
    r.d.cancel(1);
    r.d.cancel(12345);
    assert_eq!(r.wait(1), vec![(1, ECANCELED)]);
    put(&wr, b"x");
    assert_eq!(r.wait(1), vec![(2, 1)]);
    assert_eq!(b.as_slice()[1], b'x');
    assert_eq!(r.d.inflight(), 0);
}

/// aio: file I/O in flight cannot be cancelled by Linux, but ops waiting for room in the
/// context (depth 1 here) are, at once; the one in flight completes with its bytes.
#[test]
fn aio_cancels_ops_waiting_for_room() {
    let Some(mut r) = rig(BackendKind::Aio, 1, 0) else {
        return;
    };
    let f = Direct::with(&vec![5u8; 4 * BS]);
    let mut dst = block(4 * BS);
    let ops = block_reads(f.fd(), &mut dst, 4);
    // SAFETY: dst and the file outlive the completions (waited for below).
    unsafe { r.start(&ops) };
    for k in 1..4 {
        r.d.cancel(k);
    }
    r.d.cancel(12345);
    let done = r.wait(4);
    let done = once(r.kind, &done, 0..4);
    assert_eq!(done[&0], BS as i64, "{done:?}");
    for k in 1..4 {
        assert_eq!(done[&k], ECANCELED, "{done:?}");
    }
    assert_eq!(r.d.inflight(), 0);
}

/// Pool: an op queued behind one that blocks the only worker (a read of an empty pipe) is
/// cancelled at once, without waiting for that worker; the blocked one then completes normally.
#[test]
fn pool_cancels_a_queued_op_while_the_worker_is_blocked() {
    let Some(mut r) = rig(BackendKind::ThreadPool, 0, 1) else {
        return;
    };
    let (rd, wr) = pipe();
    let f = Direct::with(&vec![1u8; BS]);
    let mut b = block(2 * BS);
    let blocked = op(1, pipe_read(r.kind, &rd, &mut b, 0));
    let queued = op(2, read(f.fd(), &mut b, BS, BS, 0));
    // SAFETY: b, the pipe and the file outlive the completions (waited for below).
    unsafe {
        r.push(&blocked);
        r.push(&queued);
    }
    r.d.submit();
    r.d.cancel(2);
    assert_eq!(r.wait(1), vec![(2, ECANCELED)]);
    put(&wr, b"y");
    assert_eq!(r.wait(1), vec![(1, 1)]);
    assert_eq!(b.as_slice()[0], b'y');
    assert_eq!(b.as_slice()[BS], 0, "the cancelled read ran");
}

/// Teardown with ops in flight: `wait_all` returns once nothing is in flight, with every op's
/// completion exactly once; then dropping the driver with more ops in flight returns too.
/// io_uring: reads held in the kernel (an empty pipe) are cancelled.
#[test]
fn ring_teardown_with_ops_held_in_the_kernel() {
    let Some(mut r) = rig(BackendKind::IoUring, 8, 0) else {
        return;
    };
    let (rd, _wr) = pipe();
    let mut b = block(BS);
    let ops: Vec<Op> = (0..3)
        .map(|i| op(i, pipe_read(r.kind, &rd, &mut b, i as usize)))
        .collect();
    // SAFETY: b and the pipe outlive the ring (wait_all below, then drop).
    unsafe { r.start(&ops) };
    let mut out = Vec::new();
    r.d.wait_all(&mut out);
    let done = once(r.kind, &out, 0..3);
    assert!(done.values().all(|&v| v == ECANCELED), "{done:?}");
    assert_eq!(r.d.inflight(), 0);
    // SAFETY: as above.
    unsafe { r.push(&ops[0]) };
    r.d.submit();
    drop(r);
}

/// aio: teardown with reads in flight and waiting for room (depth 2): the waiting ones are
/// cancelled, those in the kernel complete; every op exactly once.
#[test]
fn aio_teardown_with_ops_in_flight() {
    let Some(mut r) = rig(BackendKind::Aio, 2, 0) else {
        return;
    };
    let f = Direct::with(&vec![9u8; 16 * BS]);
    let mut dst = block(16 * BS);
    let ops = block_reads(f.fd(), &mut dst, 16);
    // SAFETY: dst and the file outlive the driver (wait_all below, then drop).
    unsafe { r.start(&ops) };
    let mut out = Vec::new();
    r.d.wait_all(&mut out);
    let done = once(r.kind, &out, 0..16);
    assert_eq!(done[&0], BS as i64, "{done:?}");
    assert!(
        done.values().all(|&v| v == BS as i64 || v == ECANCELED),
        "{done:?}"
    );
    assert!((2..16).all(|k| done[&k] == ECANCELED), "{done:?}");
    assert_eq!(r.d.inflight(), 0);
    // SAFETY: as above.
    unsafe { r.start(&ops[..4]) };
    drop(r);
}

/// Pool: teardown with one worker blocked (an empty pipe) and reads queued behind it: the
/// queued ones are cancelled, and `wait_all` returns once the blocked one ends (the pipe is
/// written by another thread when the cancellations are announced, i.e. once teardown began).
#[test]
fn pool_teardown_with_a_blocked_worker() {
    let Some(mut r) = rig(BackendKind::ThreadPool, 0, 1) else {
        return;
    };
    let (rd, wr) = pipe();
    let f = Direct::with(&vec![2u8; 4 * BS]);
    let mut b = block(5 * BS);
    let mut ops = vec![op(0, pipe_read(r.kind, &rd, &mut b, 0))];
    ops.extend((1..5).map(|i| op(i as u64, read(f.fd(), &mut b, i * BS, BS, 0))));
    // SAFETY: b, the pipe and the file outlive the driver (wait_all below, then drop).
    unsafe { r.start(&ops) };
    let efd = r.efd.clone();
    let writer = std::thread::spawn(move || {
        let mut p = libc::pollfd {
            fd: efd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        assert_eq!(
            unsafe { libc::poll(&mut p, 1, GUARD_MS) },
            1,
            "no cancellation announced"
        );
        put(&wr, b"z");
    });
    let mut out = Vec::new();
    r.d.wait_all(&mut out);
    writer.join().unwrap();
    let done = once(r.kind, &out, 0..5);
    // The blocked read ends with its byte, or was cancelled before the worker took it.
    assert!(matches!(done[&0], 1 | ECANCELED), "{done:?}");
    assert!((1..5).all(|k| done[&k] == ECANCELED), "{done:?}");
    assert_eq!(r.d.inflight(), 0);
    // Dropping with reads queued returns (the worker finishes or skips them).
    // SAFETY: as above.
    unsafe { r.start(&ops[1..]) };
    drop(r);
}

fn vm_locked_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmLck:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Registered buffers: io_uring fixed buffers (READ_FIXED / WRITE_FIXED by index) move the
/// right bytes; aio and the pool lock the memory (VmLck grows by it, and shrinks back after
/// unregistering) and their ops on it work as before.
#[test]
fn registered_buffers() {
    for mut r in rigs(8, 2) {
        let f = Direct::with(&[]);
        let mut buf = block(16 * BS);
        Rng(11).fill(&mut buf.as_mut_slice()[..8 * BS]);
        let before = vm_locked_kb();
        let segs = [seg(&mut buf, 0, 16 * BS)];
        // SAFETY: buf outlives the registration (unregistered below, before it is dropped).
        if let Err(e) = unsafe { r.d.register_buffers(&segs) } {
            // A tiny RLIMIT_MEMLOCK is the only expected refusal; say so rather than hide it.
            eprintln!("{}: register_buffers refused here: {e}", r.kind);
            assert!(matches!(
                e.raw_os_error(),
                Some(libc::ENOMEM | libc::EPERM | libc::EAGAIN)
            ));
            continue;
        }
        let locks = !r.d.fixed_buffers();
        if let (true, Some(a), Some(n)) = (locks, before, vm_locked_kb()) {
            assert!(n >= a + 64, "{}: VmLck {a} kB -> {n} kB", r.kind);
        }
        let fixed = r.d.fixed_buffers().then_some(0);
        let mut w = write(f.fd(), &buf, 0, 8 * BS, 0);
        let mut rd = read(f.fd(), &mut buf, 8 * BS, 8 * BS, 0);
        for o in [&mut w, &mut rd] {
            if let OpKind::Read { buf_index, .. } | OpKind::Write { buf_index, .. } = o {
                *buf_index = fixed;
            }
        }
        for (key, kind) in [(1, w), (2, rd)] {
            let o = op(key, kind);
            // SAFETY: buf and the file outlive the completion; buffer 0 contains it.
            let res = unsafe {
                r.d.push(&OpRef {
                    fixed,
                    ..o.as_ref()
                })
                .unwrap();
                r.d.submit();
                r.wait(1)
            };
            assert_eq!(res, vec![(key, (8 * BS) as i64)], "{}", r.kind);
        }
        assert!(
            buf.as_slice()[..8 * BS] == buf.as_slice()[8 * BS..],
            "{}: data differs",
            r.kind
        );
        r.d.unregister_buffers().unwrap();
        if let (true, Some(a), Some(n)) = (locks, before, vm_locked_kb()) {
            assert_eq!(n, a, "{}: VmLck not back after unregister", r.kind);
        }
    }
}

/// io_uring link chains through `OpRef::link` (writeMany's writes + fdatasync): in order on
/// success; on a failure (a read-only descriptor) the linked fdatasync is cancelled.
#[test]
fn ring_links_a_write_to_its_fdatasync() {
    let Some(mut r) = rig(BackendKind::IoUring, 8, 0) else {
        return;
    };
    let f = Direct::with(&[]);
    let b = block(BS);
    let ro = File::open(f._dir.path().join("data")).unwrap();
    for (fd, want) in [
        (f.fd(), [BS as i64, 0]),
        (ro.as_raw_fd(), [-(libc::EBADF as i64), ECANCELED]),
    ] {
        let w = write(fd, &b, 0, BS, 0);
        let s = OpKind::Fsync { fd, datasync: true };
        // SAFETY: b and the descriptors outlive the completions (waited for below).
        unsafe {
            r.d.push(&OpRef {
                link: true,
                ..OpRef::new(1, &w)
            })
            .unwrap();
            r.d.push(&OpRef::new(2, &s)).unwrap();
        }
        r.d.submit();
        let mut done = r.wait(2);
        done.sort();
        assert_eq!(done, vec![(1, want[0]), (2, want[1])]);
    }
}
