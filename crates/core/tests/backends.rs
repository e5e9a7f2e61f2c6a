//! Every backend (io_uring, aio, thread pool) against a real file opened with O_DIRECT.
//!
//! Backends that `probe` says cannot run here are skipped with a note on stderr. Linux only
//! (O_DIRECT, fallocate modes, statfs magic numbers).
#![cfg(target_os = "linux")]

use std::alloc::{alloc, dealloc, Layout};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use odirect_core::io::{self, Backend, BackendKind, BackendOptions};
use odirect_core::op::{Completion, Op, OpKind, Segment, Sink};

const BS: usize = 4096;
const WAIT: Duration = Duration::from_secs(60);

/// uring.rs queues ops submitted after shutdown to a ring thread that has already exited, so
/// they never complete. While this is true the io_uring half of the submit-after-shutdown check
/// only warns; set it to false once `UringBackend::submit` answers -ESHUTDOWN itself.
const URING_LATE_SUBMIT_KNOWN_BUG: bool = false;

/// A 4096-aligned heap block.
struct Buf {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: Buf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for Buf {}
// SAFETY: shared references only give out shared slices.
unsafe impl Sync for Buf {}

impl Buf {
    fn new(len: usize) -> Buf {
        let layout = Layout::from_size_align(len, BS).unwrap();
        // SAFETY: layout has a non-zero size (every caller asks for at least one block).
        let ptr = unsafe { alloc(layout) };
        assert!(!ptr.is_null());
        // SAFETY: ptr points at len writable bytes we own.
        unsafe { ptr.write_bytes(0, len) };
        Buf { ptr, layout }
    }

    fn random(len: usize, rng: &mut Rng) -> Buf {
        let mut b = Buf::new(len);
        for chunk in b.as_mut_slice().chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        b
    }

    fn at(&self, off: usize) -> *mut u8 {
        assert!(off <= self.layout.size());
        // SAFETY: off is within (or one past) the allocation.
        unsafe { self.ptr.add(off) }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points at layout.size() initialised bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, with exclusive access through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// xorshift64*: enough randomness for offsets and data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Collects completions from a backend's sink.
struct Collector {
    done: Mutex<Vec<Completion>>,
    cv: Condvar,
    /// While false, the sink blocks (and with it the backend thread that calls it).
    open: Mutex<bool>,
    open_cv: Condvar,
}

impl Collector {
    fn new() -> Arc<Collector> {
        Arc::new(Collector {
            done: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            open: Mutex::new(true),
            open_cv: Condvar::new(),
        })
    }

    fn sink(self: &Arc<Self>) -> Sink {
        let c = self.clone();
        Arc::new(move |batch: Vec<Completion>| {
            assert!(!batch.is_empty(), "empty batch delivered");
            let mut open = c.open.lock().unwrap();
            while !*open {
                open = c.open_cv.wait(open).unwrap();
            }
            drop(open);
            c.done.lock().unwrap().extend(batch);
            c.cv.notify_all();
        })
    }

    fn set_open(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.open_cv.notify_all();
    }

    fn len(&self) -> usize {
        self.done.lock().unwrap().len()
    }

    /// Waits until at least `n` completions have arrived in total; returns them all.
    fn wait_total(&self, n: usize, what: &str) -> Vec<Completion> {
        let deadline = Instant::now() + WAIT;
        let mut g = self.done.lock().unwrap();
        while g.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: timed out with {} of {n} completions",
                g.len()
            );
            g = self.cv.wait_timeout(g, left).unwrap().0;
        }
        g.clone()
    }
}

/// Backends that can run here.
fn kinds() -> Vec<BackendKind> {
    BackendKind::ALL
        .into_iter()
        .filter(|&k| match io::probe(k) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("skipping backend {k}: {e}");
                false
            }
        })
        .collect()
}

fn start(kind: BackendKind, opts: &BackendOptions) -> (Box<dyn Backend>, Arc<Collector>) {
    let c = Collector::new();
    let b =
        io::create(kind, c.sink(), opts).unwrap_or_else(|e| panic!("create {kind}: {}", e.reason));
    assert_eq!(b.kind(), kind);
    (b, c)
}

/// Submits `ops` and waits for exactly their completions, checking each arrives once.
fn run(b: &dyn Backend, c: &Collector, ops: Vec<Op>, what: &str) -> Vec<Completion> {
    let before = c.len();
    let ids: Vec<u64> = ops.iter().map(|o| o.id).collect();
    // SAFETY: every buffer and fd named by the ops outlives this call, which returns only once
    // all their completions have been delivered.
    unsafe { b.submit(ops) };
    let all = c.wait_total(before + ids.len(), what);
    let new = all[before..].to_vec();
    check_once(&new, &ids, what);
    new
}

fn check_once(done: &[Completion], ids: &[u64], what: &str) {
    let mut got: Vec<u64> = done.iter().map(|c| c.id).collect();
    got.sort_unstable();
    let mut want = ids.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{what}: not exactly one completion per op");
}

fn by_id(done: &[Completion], id: u64) -> Completion {
    *done.iter().find(|c| c.id == id).expect("completion for id")
}

/// A temp dir on a real (non-tmpfs) filesystem when there is one, so that O_DIRECT alignment
/// is enforced.
fn tmp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("odirect-test")
        .tempdir_in("/var/tmp")
        .or_else(|_| tempfile::Builder::new().prefix("odirect-test").tempdir())
        .expect("temp dir")
}

fn is_tmpfs(f: &File) -> bool {
    // SAFETY: an all-zero statfs is a valid value; fstatfs fills it in.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is a live local of the right type and the fd is open.
    let r = unsafe { libc::fstatfs(f.as_raw_fd(), &mut s) };
    r == 0 && s.f_type == libc::TMPFS_MAGIC
}

struct TestFile {
    file: File,
    _dir: tempfile::TempDir,
}

impl TestFile {
    fn new(len: u64) -> TestFile {
        let dir = tmp_dir();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("data"))
            .expect("open with O_DIRECT");
        file.set_len(len).unwrap();
        TestFile { file, _dir: dir }
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn len(&self) -> u64 {
        self.file.metadata().unwrap().len()
    }
}

fn read_op(id: u64, fd: RawFd, ptr: *mut u8, len: usize, offset: u64) -> Op {
    Op::new(
        id,
        id as usize * 3,
        OpKind::Read {
            fd,
            ptr,
            len,
            offset,
            buf_index: None,
        },
    )
}

fn write_op(id: u64, fd: RawFd, ptr: *const u8, len: usize, offset: u64) -> Op {
    Op::new(
        id,
        id as usize * 3,
        OpKind::Write {
            fd,
            ptr,
            len,
            offset,
            buf_index: None,
        },
    )
}

fn opts(queue_depth: u32, threads: usize) -> BackendOptions {
    BackendOptions {
        queue_depth,
        threads,
    }
}

#[test]
fn probe_agrees_with_create() {
    for kind in BackendKind::ALL {
        let c = Collector::new();
        match (io::probe(kind), io::create(kind, c.sink(), &opts(8, 2))) {
            (Ok(()), Ok(b)) => b.shutdown(),
            (Err(e), Err(e2)) => {
                assert!(!e.reason.is_empty() && e.errno > 0, "{kind}: {e:?}");
                assert_eq!(e.errno, e2.errno);
            }
            (p, c) => panic!("{kind}: probe {p:?} but create {:?}", c.map(|_| ())),
        }
    }
    assert!(io::probe(BackendKind::ThreadPool).is_ok());
}

#[test]
fn random_blocks_write_then_read_back() {
    const BLOCKS: usize = 512;
    for kind in kinds() {
        let what = format!("{kind} random blocks");
        let (b, c) = start(kind, &opts(32, 4));
        let f = TestFile::new((BLOCKS * BS) as u64);
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ kind as u64);
        let wbuf = Buf::random(BLOCKS * BS, &mut rng);
        let rbuf = Buf::new(BLOCKS * BS);

        // Block i of the buffer goes to file block perm[i]: random offsets, all in flight at
        // once, submitted from four threads.
        let mut perm: Vec<usize> = (0..BLOCKS).collect();
        rng.shuffle(&mut perm);
        let mut writes: Vec<Op> = perm
            .iter()
            .enumerate()
            .map(|(i, &blk)| write_op(i as u64, f.fd(), wbuf.at(i * BS), BS, (blk * BS) as u64))
            .collect();
        let ids: Vec<u64> = writes.iter().map(|o| o.id).collect();
        std::thread::scope(|s| {
            let b = &*b;
            while !writes.is_empty() {
                let chunk: Vec<Op> = writes.drain(..writes.len().min(BLOCKS / 4)).collect();
                // SAFETY: wbuf and the file outlive the scope, and we wait below for every
                // completion before touching them.
                s.spawn(move || unsafe { b.submit(chunk) });
            }
        });
        let done = c.wait_total(BLOCKS, &what);
        check_once(&done, &ids, &what);
        for d in &done {
            assert_eq!(d.result, BS as i64, "{what}: write {} failed: {d:?}", d.id);
            assert_eq!(d.token, d.id as usize * 3, "{what}: token not handed back");
            assert!(d.latency_ns > 0, "{what}: no latency");
        }

        // Read every file block back into its own slot, in a different random order.
        let mut order: Vec<usize> = (0..BLOCKS).collect();
        rng.shuffle(&mut order);
        let reads: Vec<Op> = order
            .iter()
            .map(|&blk| {
                read_op(
                    (BLOCKS + blk) as u64,
                    f.fd(),
                    rbuf.at(blk * BS),
                    BS,
                    (blk * BS) as u64,
                )
            })
            .collect();
        let done = run(&*b, &c, reads, &what);
        assert!(
            done.iter().all(|d| d.result == BS as i64),
            "{what}: {done:?}"
        );
        for (i, &blk) in perm.iter().enumerate() {
            assert!(
                wbuf.as_slice()[i * BS..(i + 1) * BS] == rbuf.as_slice()[blk * BS..(blk + 1) * BS],
                "{what}: file block {blk} does not hold what was written"
            );
        }
        b.shutdown();
    }
}

#[test]
fn readv_and_writev() {
    for kind in kinds() {
        let what = format!("{kind} readv/writev");
        let (b, c) = start(kind, &opts(8, 2));
        let f = TestFile::new(0);
        let mut rng = Rng::new(7 + kind as u64);
        let src = [
            Buf::random(BS, &mut rng),
            Buf::random(2 * BS, &mut rng),
            Buf::random(BS, &mut rng),
        ];
        let segs: Vec<Segment> = src
            .iter()
            .map(|s| Segment {
                ptr: s.at(0),
                len: s.layout.size(),
            })
            .collect();
        let off = 3 * BS as u64;
        let w = run(
            &*b,
            &c,
            vec![Op::new(
                1,
                0,
                OpKind::Writev {
                    fd: f.fd(),
                    segs,
                    offset: off,
                },
            )],
            &what,
        );
        assert_eq!(w[0].result, 4 * BS as i64, "{what}: {w:?}");
        assert_eq!(f.len(), off + 4 * BS as u64);

        let dst = [Buf::new(2 * BS), Buf::new(2 * BS)];
        let segs: Vec<Segment> = dst
            .iter()
            .map(|s| Segment {
                ptr: s.at(0),
                len: s.layout.size(),
            })
            .collect();
        let r = run(
            &*b,
            &c,
            vec![Op::new(
                2,
                0,
                OpKind::Readv {
                    fd: f.fd(),
                    segs,
                    offset: off,
                },
            )],
            &what,
        );
        assert_eq!(r[0].result, 4 * BS as i64, "{what}: {r:?}");
        let wrote: Vec<u8> = src.iter().flat_map(|s| s.as_slice().to_vec()).collect();
        let read: Vec<u8> = dst.iter().flat_map(|s| s.as_slice().to_vec()).collect();
        assert!(
            wrote == read,
            "{what}: readv did not return what writev wrote"
        );

        // A short read at end of file is reported as it is.
        let tail = Buf::new(2 * BS);
        let r = run(
            &*b,
            &c,
            vec![read_op(3, f.fd(), tail.at(0), 2 * BS, off + 3 * BS as u64)],
            &what,
        );
        assert_eq!(r[0].result, BS as i64, "{what}: short read {r:?}");
        b.shutdown();
    }
}

#[test]
fn fsync_truncate_fallocate_close() {
    for kind in kinds() {
        let what = format!("{kind} sync/metadata ops");
        let (b, c) = start(kind, &opts(8, 2));
        let f = TestFile::new(0);
        let data = Buf::new(BS);
        let one = |op: Op| run(&*b, &c, vec![op], &what)[0];

        assert_eq!(
            one(write_op(1, f.fd(), data.at(0), BS, 0)).result,
            BS as i64
        );
        let r = one(Op::new(
            2,
            0,
            OpKind::Fsync {
                fd: f.fd(),
                datasync: false,
            },
        ));
        assert_eq!(r.result, 0, "{what}: fsync {r:?}");
        let r = one(Op::new(
            3,
            0,
            OpKind::Fsync {
                fd: f.fd(),
                datasync: true,
            },
        ));
        assert_eq!(r.result, 0, "{what}: fdatasync {r:?}");

        let r = one(Op::new(
            4,
            0,
            OpKind::Ftruncate {
                fd: f.fd(),
                len: 1 << 20,
            },
        ));
        assert_eq!(r.result, 0, "{what}: ftruncate {r:?}");
        assert_eq!(f.len(), 1 << 20);

        let r = one(Op::new(
            5,
            0,
            OpKind::Fallocate {
                fd: f.fd(),
                mode: 0,
                offset: 1 << 20,
                len: 64 << 10,
            },
        ));
        assert_eq!(r.result, 0, "{what}: fallocate {r:?}");
        assert_eq!(f.len(), (1 << 20) + (64 << 10));

        let r = one(Op::new(
            6,
            0,
            OpKind::Fallocate {
                fd: f.fd(),
                mode: libc::FALLOC_FL_KEEP_SIZE,
                offset: 2 << 20,
                len: 64 << 10,
            },
        ));
        assert_eq!(r.result, 0, "{what}: fallocate KEEP_SIZE {r:?}");
        assert_eq!(f.len(), (1 << 20) + (64 << 10));

        let r = one(Op::new(
            7,
            0,
            OpKind::Ftruncate {
                fd: f.fd(),
                len: BS as u64,
            },
        ));
        assert_eq!(r.result, 0, "{what}: shrinking ftruncate {r:?}");
        assert_eq!(f.len(), BS as u64);

        // Close a duplicate descriptor through the backend.
        // SAFETY: dup has no memory preconditions.
        let dup = unsafe { libc::dup(f.fd()) };
        assert!(dup >= 0);
        let r = one(Op::new(8, 0, OpKind::Close { fd: dup }));
        assert_eq!(r.result, 0, "{what}: close {r:?}");
        // SAFETY: F_GETFD takes no memory; the fd is expected to be closed.
        let still = unsafe { libc::fcntl(dup, libc::F_GETFD) };
        assert_eq!(still, -1, "{what}: close op left the fd open");

        // Errors come back as -errno.
        let r = one(Op::new(9, 0, OpKind::Ftruncate { fd: -1, len: 0 }));
        assert_eq!(r.result, -(libc::EBADF as i64), "{what}: {r:?}");
        let r = one(Op::new(
            10,
            0,
            OpKind::Fsync {
                fd: -1,
                datasync: false,
            },
        ));
        assert_eq!(r.result, -(libc::EBADF as i64), "{what}: {r:?}");
        b.shutdown();
    }
}

#[test]
fn errors_come_back_as_negative_errno() {
    for kind in kinds() {
        let what = format!("{kind} errors");
        let (b, c) = start(kind, &opts(8, 2));
        let f = TestFile::new(16 * BS as u64);
        let buf = Buf::new(4 * BS);
        // Real data: on ext4 (iomap) a direct read of a hole is served without any alignment
        // check, so the misaligned reads below must hit written blocks to fail.
        let data = Buf::random(16 * BS, &mut Rng::new(3));
        let w = run(
            &*b,
            &c,
            vec![write_op(100, f.fd(), data.at(0), 16 * BS, 0)],
            &what,
        );
        assert_eq!(w[0].result, 16 * BS as i64, "{what}: {w:?}");

        let r = run(&*b, &c, vec![read_op(1, -1, buf.at(0), BS, 0)], &what);
        assert_eq!(r[0].result, -(libc::EBADF as i64), "{what}: bad fd {r:?}");

        if is_tmpfs(&f.file) {
            eprintln!("{what}: temp dir is on tmpfs, which does not enforce O_DIRECT alignment");
        } else {
            let r = run(
                &*b,
                &c,
                vec![
                    // Misaligned memory.
                    read_op(2, f.fd(), buf.at(1), BS, 0),
                    // Misaligned file offset.
                    read_op(3, f.fd(), buf.at(BS), BS, 1),
                    // Misaligned length.
                    read_op(4, f.fd(), buf.at(2 * BS), 100, 0),
                    // And an aligned one in the same batch, which works.
                    read_op(5, f.fd(), buf.at(3 * BS), BS, 0),
                ],
                &what,
            );
            for id in 2..=4 {
                assert_eq!(
                    by_id(&r, id).result,
                    -(libc::EINVAL as i64),
                    "{what}: unaligned O_DIRECT read {id}: {r:?}"
                );
            }
            assert_eq!(by_id(&r, 5).result, BS as i64, "{what}: {r:?}");
        }
        b.shutdown();
    }
}

#[test]
fn cancel_queued_ops() {
    const N: usize = 512;
    for kind in kinds() {
        let what = format!("{kind} cancel");
        // A small queue and one worker, so that most ops are still waiting when cancelled.
        let (b, c) = start(kind, &opts(4, 1));
        let f = TestFile::new((64 * BS) as u64);
        let buf = Buf::new(N * BS);
        let mut rng = Rng::new(99);
        let ops: Vec<Op> = (0..N)
            .map(|i| {
                read_op(
                    i as u64,
                    f.fd(),
                    buf.at(i * BS),
                    BS,
                    (rng.next() % 64) * BS as u64,
                )
            })
            .collect();
        let ids: Vec<u64> = ops.iter().map(|o| o.id).collect();
        // The backend's thread blocks in its first delivery until every cancel has been
        // issued, so that most ops are certainly still queued.
        c.set_open(false);
        // SAFETY: buf and the file outlive every completion, which we wait for below.
        unsafe { b.submit(ops) };
        for id in (0..N as u64).rev() {
            b.cancel(id);
        }
        b.cancel(1_000_000); // unknown: no effect
        c.set_open(true);
        let done = c.wait_total(N, &what);
        check_once(&done, &ids, &what);
        let mut cancelled = 0;
        for d in &done {
            match d.result {
                r if r == BS as i64 => {}
                r if r == -(libc::ECANCELED as i64) => cancelled += 1,
                r if kind == BackendKind::IoUring && r == -(libc::EINTR as i64) => cancelled += 1,
                r => panic!("{what}: op {} ended with {r}", d.id),
            }
        }
        eprintln!("{what}: {cancelled} of {N} cancelled");
        assert!(cancelled >= N / 2, "{what}: only {cancelled} cancelled");
        // Nothing more arrives later.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.len(), N, "{what}: extra completions");
        b.shutdown();
    }
}

#[test]
fn shutdown_with_ops_in_flight_then_submit_after() {
    const N: usize = 256;
    for kind in kinds() {
        let what = format!("{kind} shutdown");
        let (b, c) = start(kind, &opts(8, 2));
        let f = TestFile::new((N * BS) as u64);
        let mut rng = Rng::new(5);
        let wbuf = Buf::random(N * BS, &mut rng);
        let rbuf = Buf::new(N * BS);
        let ops: Vec<Op> = (0..N)
            .map(|i| {
                if i % 2 == 0 {
                    write_op(i as u64, f.fd(), wbuf.at(i * BS), BS, (i * BS) as u64)
                } else {
                    read_op(i as u64, f.fd(), rbuf.at(i * BS), BS, (i * BS) as u64)
                }
            })
            .collect();
        let ids: Vec<u64> = ops.iter().map(|o| o.id).collect();
        // SAFETY: the buffers and file outlive shutdown(), which returns only once every
        // completion has been delivered.
        unsafe { b.submit(ops) };
        b.shutdown();
        // Everything was delivered before shutdown returned: no waiting here.
        let done = c.done.lock().unwrap().clone();
        check_once(&done, &ids, &what);
        for d in &done {
            assert!(
                d.result == BS as i64 || d.result == -(libc::ECANCELED as i64),
                "{what}: op {} ended with {}",
                d.id,
                d.result
            );
        }
        b.shutdown(); // idempotent
        b.cancel(0); // harmless

        let late = vec![
            read_op(1000, f.fd(), rbuf.at(0), BS, 0),
            Op::new(
                1001,
                0,
                OpKind::Fsync {
                    fd: f.fd(),
                    datasync: false,
                },
            ),
            Op::new(1002, 0, OpKind::Ftruncate { fd: f.fd(), len: 0 }),
        ];
        // SAFETY: as above; the completions are awaited below (and for a backend that never
        // completes them, the buffers are leaked rather than freed under it).
        unsafe { b.submit(late) };
        if kind == BackendKind::IoUring && URING_LATE_SUBMIT_KNOWN_BUG {
            let deadline = Instant::now() + Duration::from_secs(2);
            while c.len() < N + 3 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if c.len() < N + 3 {
                eprintln!(
                    "{what}: KNOWN BUG: io_uring never completes ops submitted after shutdown \
                     (expected -ESHUTDOWN); see URING_LATE_SUBMIT_KNOWN_BUG"
                );
                std::mem::forget(rbuf);
                continue;
            }
        }
        let all = c.wait_total(N + 3, &format!("{what}: submit after shutdown"));
        let late = &all[N..];
        check_once(late, &[1000, 1001, 1002], &what);
        for d in late {
            assert_eq!(d.result, -(libc::ESHUTDOWN as i64), "{what}: {d:?}");
        }
        assert_eq!(
            f.len(),
            (N * BS) as u64,
            "{what}: ftruncate ran after shutdown"
        );
        let seg = [Segment {
            ptr: rbuf.at(0),
            len: BS,
        }];
        // SAFETY: rbuf outlives the backend.
        assert!(
            unsafe { b.register_buffers(&seg) }.is_err(),
            "{what}: register after shutdown"
        );
        drop(b);
    }
}

#[test]
fn drop_without_shutdown_delivers_everything() {
    const N: usize = 64;
    for kind in kinds() {
        let what = format!("{kind} drop");
        let (b, c) = start(kind, &opts(8, 2));
        let f = TestFile::new((N * BS) as u64);
        let buf = Buf::new(N * BS);
        let ops: Vec<Op> = (0..N)
            .map(|i| read_op(i as u64, f.fd(), buf.at(i * BS), BS, (i * BS) as u64))
            .collect();
        // SAFETY: buf and the file outlive the backend, whose drop waits for every completion.
        unsafe { b.submit(ops) };
        drop(b);
        assert_eq!(c.len(), N, "{what}");
    }
}

fn vm_locked_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmLck:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn registered_buffers() {
    for kind in kinds() {
        let what = format!("{kind} registered buffers");
        let (b, c) = start(kind, &opts(8, 2));
        let f = TestFile::new(0);
        let mut rng = Rng::new(11);
        let mut buf = Buf::random(16 * BS, &mut rng);
        buf.as_mut_slice()[8 * BS..].fill(0);
        let before = vm_locked_kb();
        let seg = [Segment {
            ptr: buf.at(0),
            len: 16 * BS,
        }];
        // SAFETY: buf outlives the registration (unregistered below, before it is dropped).
        if let Err(e) = unsafe { b.register_buffers(&seg) } {
            // RLIMIT_MEMLOCK may be tiny somewhere; it is reported, not hidden.
            eprintln!("{what}: register_buffers failed: {e}");
            assert!(matches!(
                e.raw_os_error(),
                Some(libc::ENOMEM) | Some(libc::EPERM) | Some(libc::EAGAIN)
            ));
            b.shutdown();
            continue;
        }
        if kind != BackendKind::IoUring {
            if let (Some(a), Some(n)) = (before, vm_locked_kb()) {
                assert!(n >= a + 64, "{what}: VmLck {a} kB -> {n} kB");
            }
        }
        let fixed = |id: u64, write: bool, off: usize| {
            let kind = if write {
                OpKind::Write {
                    fd: f.fd(),
                    ptr: buf.at(off),
                    len: 8 * BS,
                    offset: 0,
                    buf_index: Some(0),
                }
            } else {
                OpKind::Read {
                    fd: f.fd(),
                    ptr: buf.at(off),
                    len: 8 * BS,
                    offset: 0,
                    buf_index: Some(0),
                }
            };
            Op::new(id, 0, kind)
        };
        let w = run(&*b, &c, vec![fixed(1, true, 0)], &what);
        assert_eq!(w[0].result, 8 * BS as i64, "{what}: {w:?}");
        let r = run(&*b, &c, vec![fixed(2, false, 8 * BS)], &what);
        assert_eq!(r[0].result, 8 * BS as i64, "{what}: {r:?}");
        assert!(
            buf.as_slice()[..8 * BS] == buf.as_slice()[8 * BS..],
            "{what}: data differs"
        );
        b.unregister_buffers().unwrap();
        if kind != BackendKind::IoUring {
            if let (Some(a), Some(n)) = (before, vm_locked_kb()) {
                assert_eq!(n, a, "{what}: VmLck not back after unregister");
            }
        }
        b.shutdown();
    }
}

#[test]
fn buffered_file_and_pipe() {
    for kind in kinds() {
        let what = format!("{kind} buffered");
        let (b, c) = start(kind, &opts(8, 2));
        // Without O_DIRECT (AIO then does the work inside io_submit).
        let dir = tmp_dir();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("buffered"))
            .unwrap();
        let fd = file.as_raw_fd();
        let src = b"hello, buffered world";
        let w = run(
            &*b,
            &c,
            vec![write_op(1, fd, src.as_ptr(), src.len(), 3)],
            &what,
        );
        assert_eq!(w[0].result, src.len() as i64, "{what}: {w:?}");
        let mut dst = [0u8; 64];
        let r = run(
            &*b,
            &c,
            vec![read_op(2, fd, dst.as_mut_ptr(), dst.len(), 3)],
            &what,
        );
        assert_eq!(r[0].result, src.len() as i64, "{what}: {r:?}");
        assert_eq!(&dst[..src.len()], src);

        // fsync on a pipe: no fsync there (for aio, io_submit refuses IOCB_CMD_FSYNC and the
        // helper thread runs fsync(2), which says the same).
        let mut p = [0; 2];
        // SAFETY: pipe writes two fds into the live local array.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        let r = run(
            &*b,
            &c,
            vec![Op::new(
                3,
                0,
                OpKind::Fsync {
                    fd: p[0],
                    datasync: false,
                },
            )],
            &what,
        );
        assert_eq!(r[0].result, -(libc::EINVAL as i64), "{what}: {r:?}");
        let r = run(
            &*b,
            &c,
            vec![
                Op::new(4, 0, OpKind::Close { fd: p[0] }),
                Op::new(5, 0, OpKind::Close { fd: p[1] }),
            ],
            &what,
        );
        assert!(r.iter().all(|d| d.result == 0), "{what}: {r:?}");
        b.shutdown();
    }
}
