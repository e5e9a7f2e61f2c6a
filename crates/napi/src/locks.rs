//! Whole-file locks (open file description locks; `flock` where the kernel has none) and the
//! waiters of `fh.lock()`.
//!
//! A waiter never sleeps where nobody can wake it: each runs on its own thread (never libuv's
//! shared pool, whose four threads `open()` and node:fs need, and whose threads process exit
//! joins), polling `F_OFD_SETLK` with a backoff (1 ms doubling to 20 ms) between tries while
//! waiting on an eventfd that cancels it at once. So an AbortSignal, `close()`, worker
//! termination and process exit end a wait within one poll, and a waiter thread that is still
//! running at process exit holds nothing up (it is not joined there). The price of polling
//! over `F_OFD_SETLKW`: up to 20 ms between the holder's unlock and the waiter's lock, and no
//! FIFO order among waiters. (Interrupting `F_OFD_SETLKW` would take a signal handler installed
//! in the host runtime's process, which odirect does not do.)
//!
//! The waiter owns a duplicate of the handle's descriptor: the lock belongs to the open file
//! description, which the duplicate shares, and closing the handle's descriptor meanwhile can
//! never make the waiter lock another file that reuses the number.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use odirect_core::io::eventfd;

/// Keys of lock waits, above every op key (the engine's op keys are slab indexes).
pub const LOCK_BASE: u32 = 1 << 30;

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// One attempt (`wait`: F_OFD_SETLKW) at a whole-file lock of `kind` (F_RDLCK, F_WRLCK,
/// F_UNLCK): 0, EAGAIN when another holder has it, or another errno.
pub fn ofd_lock(fd: i32, kind: libc::c_int, wait: bool) -> i32 {
    // SAFETY: a zeroed flock struct is valid; fcntl reads it (and for GETLK writes it).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: fcntl with a live flock struct.
        let r = unsafe { libc::fcntl(fd, cmd, &mut fl as *mut libc::flock) };
        if r == 0 {
            return 0;
        }
        match errno() {
            libc::EINTR => continue,
            // Kernels before 3.15 have no OFD locks: flock() has the same per-open-file scope.
            libc::EINVAL => {
                let op = match kind {
                    libc::F_UNLCK => libc::LOCK_UN,
                    libc::F_WRLCK => libc::LOCK_EX,
                    _ => libc::LOCK_SH,
                } | if wait { 0 } else { libc::LOCK_NB };
                // SAFETY: flock has no memory arguments.
                let r = unsafe { libc::flock(fd, op) };
                return if r == 0 {
                    0
                } else {
                    match errno() {
                        libc::EWOULDBLOCK => libc::EAGAIN,
                        x => x,
                    }
                };
            }
            libc::EACCES => return libc::EAGAIN,
            e => return e,
        }
    }
}

/// Tries the lock until it is taken (0), fails (-errno) or `stop` is signalled (-ECANCELED).
fn wait_lock(fd: &OwnedFd, kind: libc::c_int, stop: &OwnedFd) -> i64 {
    let mut backoff_ms = 1;
    loop {
        match ofd_lock(fd.as_raw_fd(), kind, false) {
            libc::EAGAIN => {}
            e => return -(e as i64),
        }
        let mut p = libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let r = unsafe { libc::poll(&mut p, 1, backoff_ms) };
        if r > 0 {
            return -(libc::ECANCELED as i64);
        }
        backoff_ms = (backoff_ms * 2).min(20);
    }
}

struct Waiter {
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// The lock waits of one engine: completions go to `done` and wake the engine's eventfd.
pub struct Waiters {
    waiting: HashMap<u32, Waiter>,
    next: u32,
    done: Arc<Mutex<Vec<(u64, i64)>>>,
}

impl Waiters {
    pub fn new() -> Waiters {
        Waiters {
            waiting: HashMap::new(),
            next: 0,
            done: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Starts waiting for a lock on `fd`; its completion (key, 0 or -errno) is signalled on
    /// `wake`. Err(errno) when the wait cannot start.
    pub fn start(&mut self, fd: i32, exclusive: bool, wake: Arc<OwnedFd>) -> Result<u32, i32> {
        // SAFETY: F_DUPFD_CLOEXEC takes integers only; the result is a new descriptor we own.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(errno());
        }
        // SAFETY: dup is a fresh descriptor owned by nobody else.
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        let stop =
            Arc::new(eventfd::new(false).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?);
        let key = LOCK_BASE + self.next;
        self.next = (self.next + 1) % LOCK_BASE;
        let kind = if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        };
        let (done, s2) = (self.done.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("odirect-lock".into())
            .spawn(move || {
                let r = wait_lock(&dup, kind, &s2);
                drop(dup);
                done.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((key as u64, r));
                eventfd::signal(wake.as_raw_fd());
            })
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EAGAIN))?;
        self.waiting.insert(
            key,
            Waiter {
                stop,
                thread: Some(thread),
            },
        );
        Ok(key)
    }

    pub fn is_lock(key: u64) -> bool {
        key >= LOCK_BASE as u64 && key < 2 * LOCK_BASE as u64
    }

    /// Ends the wait `key` (it completes with -ECANCELED unless it took the lock first).
    pub fn cancel(&self, key: u32) {
        if let Some(w) = self.waiting.get(&key) {
            eventfd::signal(w.stop.as_raw_fd());
        }
    }

    /// Completed waits (their threads joined: each has returned or is returning).
    pub fn take_done(&mut self, out: &mut Vec<(u64, i64)>) {
        let done = std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()));
        for (k, r) in done {
            if let Some(mut w) = self.waiting.remove(&(k as u32)) {
                if let Some(t) = w.thread.take() {
                    let _ = t.join();
                }
            }
            out.push((k, r));
        }
    }

    /// Cancels every wait and joins the waiter threads (each returns within one poll).
    pub fn shutdown(&mut self, out: &mut Vec<(u64, i64)>) {
        for w in self.waiting.values() {
            eventfd::signal(w.stop.as_raw_fd());
        }
        for (_, mut w) in self.waiting.drain() {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        out.append(&mut self.done.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Default for Waiters {
    fn default() -> Waiters {
        Waiters::new()
    }
}
