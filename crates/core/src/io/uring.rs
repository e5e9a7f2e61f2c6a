//! io_uring backend, on the maintained `io-uring` crate.
//!
//! One ring per backend, owned by a dedicated thread (the "ring thread"). Callers push commands
//! onto a mutex-guarded queue and wake the ring thread through an eventfd only when it sleeps;
//! the ring thread keeps an IORING_OP_POLL_ADD armed on that eventfd, so it blocks in exactly one
//! place: `io_uring_enter` waiting for any completion. Completions are handed to the sink in one
//! batch per wake-up.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use io_uring::{opcode, squeue, types, IoUring};

use super::{Backend, BackendKind, BackendOptions, Unavailable};
use crate::op::{Completion, Op, OpKind, Segment, Sink};

const WAKE: u64 = u64::MAX;
const CANCEL: u64 = u64::MAX - 1;

/// Reads `/proc/sys/kernel/io_uring_disabled` (0, 1 or 2; absent before Linux 6.6).
pub fn disabled_sysctl() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Can a ring be set up here?
pub fn probe() -> Result<(), Unavailable> {
    match IoUring::new(4) {
        Ok(_) => Ok(()),
        Err(e) => Err(explain_setup_error(&e)),
    }
}

pub(crate) fn explain_setup_error(e: &io::Error) -> Unavailable {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    let sysctl = disabled_sysctl();
    let reason = match (errno, sysctl) {
        (libc::ENOSYS, _) => {
            "io_uring_setup: ENOSYS: this kernel has no io_uring (needs Linux 5.1+, 5.6+ for all ops)"
                .to_string()
        }
        (libc::EPERM, Some(v)) if v > 0 => format!(
            "io_uring_setup: EPERM: kernel.io_uring_disabled = {v} (sysctl); set it to 0 or use backend 'aio'"
        ),
        (libc::EPERM, _) => "io_uring_setup: EPERM: refused by a seccomp filter (Docker, containerd and Kubernetes RuntimeDefault profiles block io_uring); use backend 'aio' or 'threadpool', or allow io_uring_setup/io_uring_enter/io_uring_register in the profile".to_string(),
        (libc::ENOMEM, _) => "io_uring_setup: ENOMEM: the ring's memory could not be locked (RLIMIT_MEMLOCK too low on kernels before 5.12); raise it with `ulimit -l` or prlimit".to_string(),
        _ => format!("io_uring_setup failed: {e}"),
    };
    Unavailable { errno, reason }
}

enum Cmd {
    Ops(Vec<Op>),
    Cancel(u64),
    Register(Vec<Segment>, mpsc::Sender<io::Result<()>>),
    Unregister(mpsc::Sender<io::Result<()>>),
}

struct Shared {
    queue: Mutex<Vec<Cmd>>,
    sleeping: AtomicBool,
    shutdown: AtomicBool,
    eventfd: OwnedFd,
}

impl Shared {
    fn push(&self, cmd: Cmd) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cmd);
        self.wake_if_sleeping();
    }

    fn wake_if_sleeping(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    fn wake(&self) {
        super::eventfd::signal(self.eventfd.as_raw_fd());
    }
}

pub struct UringBackend {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    sink: Sink,
}

impl UringBackend {
    pub fn new(sink: Sink, opts: &BackendOptions) -> Result<UringBackend, Unavailable> {
        let eventfd = super::eventfd::new(false).map_err(|e| explain_setup_error(&e))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            sleeping: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            eventfd,
        });
        let (tx, rx) = mpsc::channel();
        let entries = opts.queue_depth.clamp(8, 4096).next_power_of_two();
        let sh = shared.clone();
        let sink_for_backend = sink.clone();
        let thread = std::thread::Builder::new()
            .name("odirect-uring".into())
            .spawn(move || {
                // The ring is made on its own thread: with SINGLE_ISSUER the creating task is
                // the only one allowed to submit.
                let ring = match build_ring(entries) {
                    Ok(r) => {
                        let _ = tx.send(Ok(()));
                        r
                    }
                    Err(e) => {
                        let _ = tx.send(Err(explain_setup_error(&e)));
                        return;
                    }
                };
                RingThread::new(ring, sh, sink).run();
            })
            .map_err(|e| Unavailable {
                errno: e.raw_os_error().unwrap_or(libc::EAGAIN),
                reason: format!("could not start the io_uring thread: {e}"),
            })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(UringBackend {
                shared,
                thread: Mutex::new(Some(thread)),
                sink: sink_for_backend,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Unavailable {
                    errno: libc::EIO,
                    reason: "the io_uring thread died while setting up".into(),
                })
            }
        }
    }

    fn request<F>(&self, make: F) -> io::Result<()>
    where
        F: FnOnce(mpsc::Sender<io::Result<()>>) -> Cmd,
    {
        if self.shared.shutdown.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ESHUTDOWN));
        }
        let (tx, rx) = mpsc::channel();
        self.shared.push(make(tx));
        rx.recv()
            .unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::ESHUTDOWN)))
    }
}

fn build_ring(entries: u32) -> io::Result<IoUring> {
    // Fastest setup first (as fio does): one submitter, task work deferred to our own
    // io_uring_enter calls. Older kernels say EINVAL; then fall back step by step.
    let cq = entries * 4;
    let attempts: [fn(&mut io_uring::Builder); 3] = [
        |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        },
        |b| {
            b.setup_coop_taskrun();
        },
        |_| {},
    ];
    let mut last = None;
    for f in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq);
        f(&mut b);
        match b.build(entries) {
            Ok(r) => return Ok(r),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

impl Backend for UringBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::IoUring
    }

    unsafe fn submit(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        {
            // The shutdown flag is set under this lock and the ring thread drains the queue
            // once more after seeing it, so an op either reaches the ring thread or is
            // completed here with ESHUTDOWN: never lost.
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            if self.shared.shutdown.load(Ordering::SeqCst) {
                drop(q);
                super::pool::deliver_late(&self.sink, ops, libc::ESHUTDOWN);
                return;
            }
            q.push(Cmd::Ops(ops));
        }
        self.shared.wake_if_sleeping();
    }

    fn cancel(&self, id: u64) {
        self.shared.push(Cmd::Cancel(id));
    }

    fn shutdown(&self) {
        {
            let _q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.shutdown.store(true, Ordering::SeqCst);
        }
        self.shared.wake();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    unsafe fn register_buffers(&self, bufs: &[Segment]) -> io::Result<()> {
        let bufs = bufs.to_vec();
        self.request(move |tx| Cmd::Register(bufs, tx))
    }

    fn unregister_buffers(&self) -> io::Result<()> {
        self.request(Cmd::Unregister)
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The completion of an op that never reached the kernel.
fn failed(op: &Op, errno: i32) -> Completion {
    Completion {
        id: op.id,
        token: op.token,
        result: -(errno as i64),
        latency_ns: op.submitted.elapsed().as_nanos() as u64,
    }
}

struct Inflight {
    token: usize,
    submitted: std::time::Instant,
    // Keeps the iovec array of readv/writev alive until the kernel is done with the request.
    _iov: Option<Box<[libc::iovec]>>,
}

struct RingThread {
    ring: IoUring,
    shared: Arc<Shared>,
    sink: Sink,
    inflight: HashMap<u64, Inflight>,
    backlog: VecDeque<Op>,
    cancels: Vec<u64>,
    poll_armed: bool,
    max_inflight: usize,
    ftruncate_supported: bool,
    registered: bool,
    done: Vec<Completion>,
}

impl RingThread {
    fn new(ring: IoUring, shared: Arc<Shared>, sink: Sink) -> RingThread {
        let mut probe = io_uring::Probe::new();
        let ftruncate_supported = ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::Ftruncate::CODE);
        let max_inflight = ring.params().cq_entries() as usize - 8;
        RingThread {
            ring,
            shared,
            sink,
            inflight: HashMap::new(),
            backlog: VecDeque::new(),
            cancels: Vec::new(),
            poll_armed: false,
            max_inflight,
            ftruncate_supported,
            registered: false,
            done: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut stopping = false;
        loop {
            self.take_commands();
            if !stopping && self.shared.shutdown.load(Ordering::SeqCst) {
                stopping = true;
                // Nothing new starts; what is queued completes as cancelled; what is in flight
                // is cancelled where the kernel can, and waited for where it cannot.
                for op in self.backlog.drain(..) {
                    self.done.push(failed(&op, libc::ECANCELED));
                }
                self.cancels.extend(self.inflight.keys().copied());
            }
            if stopping {
                // Commands that raced with shutdown.
                for op in self.backlog.drain(..) {
                    self.done.push(failed(&op, libc::ESHUTDOWN));
                }
            }
            if !self.poll_armed && !stopping {
                let sqe = opcode::PollAdd::new(
                    types::Fd(self.shared.eventfd.as_raw_fd()),
                    libc::POLLIN as u32,
                )
                .build()
                .user_data(WAKE);
                self.push_sqe(&sqe);
                self.poll_armed = true;
            }
            for id in std::mem::take(&mut self.cancels) {
                let sqe = opcode::AsyncCancel::new(id).build().user_data(CANCEL);
                self.push_sqe(&sqe);
            }
            while self.inflight.len() < self.max_inflight {
                let Some(op) = self.backlog.pop_front() else {
                    break;
                };
                self.start(op);
            }
            if !self.done.is_empty() {
                (self.sink)(std::mem::take(&mut self.done));
            }
            if stopping && self.inflight.is_empty() {
                break;
            }

            // Sleep in io_uring_enter unless new commands arrived meanwhile.
            self.shared.sleeping.store(true, Ordering::SeqCst);
            let more = !self
                .shared
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
                || (!stopping && self.shared.shutdown.load(Ordering::SeqCst));
            let want = if more || (stopping && self.inflight.is_empty()) {
                self.shared.sleeping.store(false, Ordering::SeqCst);
                0
            } else {
                1
            };
            loop {
                match self.ring.submit_and_wait(want) {
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
                    Err(e) => {
                        // Should not happen; do not spin: report and retry after a pause.
                        eprintln!("odirect: io_uring_enter failed: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        break;
                    }
                }
            }
            self.shared.sleeping.store(false, Ordering::SeqCst);
            self.reap();
        }
        // Commands that arrived after the last look (the shutdown flag blocks new ones).
        self.take_commands();
        for op in self.backlog.drain(..) {
            self.done.push(failed(&op, libc::ESHUTDOWN));
        }
        if !self.done.is_empty() {
            (self.sink)(std::mem::take(&mut self.done));
        }
    }

    fn take_commands(&mut self) {
        let cmds =
            std::mem::take(&mut *self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for cmd in cmds {
            match cmd {
                Cmd::Ops(ops) => self.backlog.extend(ops),
                Cmd::Cancel(id) => {
                    if let Some(pos) = self.backlog.iter().position(|o| o.id == id) {
                        let op = self.backlog.remove(pos).expect("position is valid");
                        self.done.push(failed(&op, libc::ECANCELED));
                    } else if self.inflight.contains_key(&id) {
                        self.cancels.push(id);
                    }
                }
                Cmd::Register(bufs, tx) => {
                    let _ = tx.send(self.register(&bufs));
                }
                Cmd::Unregister(tx) => {
                    let r = if self.registered {
                        self.registered = false;
                        self.ring.submitter().unregister_buffers()
                    } else {
                        Ok(())
                    };
                    let _ = tx.send(r);
                }
            }
        }
    }

    fn register(&mut self, bufs: &[Segment]) -> io::Result<()> {
        if self.registered {
            self.ring.submitter().unregister_buffers()?;
            self.registered = false;
        }
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|s| libc::iovec {
                iov_base: s.ptr as *mut libc::c_void,
                iov_len: s.len,
            })
            .collect();
        // SAFETY: the caller of `Backend::register_buffers` guarantees the memory stays valid
        // until unregistration or shutdown; the kernel pins the pages itself.
        unsafe { self.ring.submitter().register_buffers(&iov)? };
        self.registered = true;
        Ok(())
    }

    fn push_sqe(&mut self, sqe: &squeue::Entry) {
        loop {
            // SAFETY: every SQE we build points only at memory that outlives its completion:
            // caller memory under the `Backend::submit` contract, iovec arrays kept in
            // `Inflight`, or nothing at all (poll, cancel, fsync...).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return;
            }
            // Submission queue full: hand what we have to the kernel and retry.
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // Completion queue backed up: reap to make room.
                    self.reap();
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    eprintln!("odirect: io_uring submit failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }

    fn start(&mut self, op: Op) {
        let id = op.id;
        let mut iov: Option<Box<[libc::iovec]>> = None;
        let sqe = match &op.kind {
            OpKind::Read {
                fd,
                ptr,
                len,
                offset,
                buf_index,
            } => match buf_index {
                Some(i) if self.registered => {
                    opcode::ReadFixed::new(types::Fd(*fd), *ptr, *len as u32, *i)
                        .offset(*offset)
                        .rw_flags(op.rw_flags as _)
                        .build()
                }
                _ => opcode::Read::new(types::Fd(*fd), *ptr, *len as u32)
                    .offset(*offset)
                    .rw_flags(op.rw_flags as _)
                    .build(),
            },
            OpKind::Write {
                fd,
                ptr,
                len,
                offset,
                buf_index,
            } => match buf_index {
                Some(i) if self.registered => {
                    opcode::WriteFixed::new(types::Fd(*fd), *ptr, *len as u32, *i)
                        .offset(*offset)
                        .rw_flags(op.rw_flags as _)
                        .build()
                }
                _ => opcode::Write::new(types::Fd(*fd), *ptr, *len as u32)
                    .offset(*offset)
                    .rw_flags(op.rw_flags as _)
                    .build(),
            },
            OpKind::Readv { fd, segs, offset } | OpKind::Writev { fd, segs, offset } => {
                let v: Box<[libc::iovec]> = segs
                    .iter()
                    .map(|s| libc::iovec {
                        iov_base: s.ptr as *mut libc::c_void,
                        iov_len: s.len,
                    })
                    .collect();
                let p = v.as_ptr();
                let n = v.len() as u32;
                iov = Some(v);
                if matches!(op.kind, OpKind::Readv { .. }) {
                    opcode::Readv::new(types::Fd(*fd), p, n)
                        .offset(*offset)
                        .rw_flags(op.rw_flags as _)
                        .build()
                } else {
                    opcode::Writev::new(types::Fd(*fd), p, n)
                        .offset(*offset)
                        .rw_flags(op.rw_flags as _)
                        .build()
                }
            }
            OpKind::Fsync { fd, datasync } => {
                let mut f = opcode::Fsync::new(types::Fd(*fd));
                if *datasync {
                    f = f.flags(types::FsyncFlags::DATASYNC);
                }
                f.build()
            }
            OpKind::Fallocate {
                fd,
                mode,
                offset,
                len,
            } => opcode::Fallocate::new(types::Fd(*fd), *len)
                .offset(*offset)
                .mode(*mode)
                .build(),
            OpKind::Ftruncate { fd, len } => {
                if !self.ftruncate_supported {
                    // Kernels before 6.9 have no IORING_OP_FTRUNCATE: run it on a helper thread.
                    let (fd, len) = (*fd, *len);
                    let sink = self.sink.clone();
                    let (token, submitted) = (op.token, op.submitted);
                    std::thread::spawn(move || {
                        // SAFETY: ftruncate takes no memory; the fd stays open until this op's
                        // completion (Backend::submit contract).
                        let r = unsafe { libc::ftruncate(fd, len as libc::off_t) };
                        let result = if r < 0 {
                            -(io::Error::last_os_error()
                                .raw_os_error()
                                .unwrap_or(libc::EIO) as i64)
                        } else {
                            0
                        };
                        sink(vec![Completion {
                            id,
                            token,
                            result,
                            latency_ns: submitted.elapsed().as_nanos() as u64,
                        }]);
                    });
                    return;
                }
                opcode::Ftruncate::new(types::Fd(*fd), *len).build()
            }
            OpKind::Close { fd } => opcode::Close::new(types::Fd(*fd)).build(),
        };
        let sqe = sqe.user_data(id);
        self.inflight.insert(
            id,
            Inflight {
                token: op.token,
                submitted: op.submitted,
                _iov: iov,
            },
        );
        self.push_sqe(&sqe);
    }

    fn reap(&mut self) {
        let mut woke = false;
        for cqe in self.ring.completion() {
            match cqe.user_data() {
                WAKE => {
                    self.poll_armed = false;
                    woke = true;
                }
                CANCEL => {}
                id => {
                    if let Some(f) = self.inflight.remove(&id) {
                        self.done.push(Completion {
                            id,
                            token: f.token,
                            result: cqe.result() as i64,
                            latency_ns: f.submitted.elapsed().as_nanos() as u64,
                        });
                    }
                }
            }
        }
        if woke {
            super::eventfd::drain(self.shared.eventfd.as_raw_fd());
        }
    }
}
