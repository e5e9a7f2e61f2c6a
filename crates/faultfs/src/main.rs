//! faultfs — a test-only FUSE filesystem with injectable faults.
//!
//! It serves a directory holding one regular file (default name `data`) plus a
//! read-only `.stats` file. The data file's content starts as a deterministic
//! pattern (see [`pattern_byte`]); writes are kept in memory (4 KiB pages over
//! the pattern), so write tests can read back what they wrote.
//!
//! ```text
//! faultfs MOUNTPOINT [--size BYTES] [--eio-at OFF[,OFF...]] [--delay-ms N]
//!         [--hold-file PATH] [--short-reads] [--read-max BYTES] [--short-writes] [--hold-writes]
//!         [--fsync-eio] [--hold-flush] [--page-cache] [--name NAME] [--threads N]
//!         [--allow-other] [--verbose]
//! ```
//!
//! * `--size BYTES`      initial size of the data file (suffixes k/m/g = KiB/MiB/GiB). Default 1m.
//! * `--eio-at OFFSETS`  comma-separated byte offsets: any read or write request whose byte
//!   range `[offset, offset + len)` contains one of them fails with EIO.
//! * `--delay-ms N`      every read reply (and write reply with `--hold-writes`) is sent N ms late.
//! * `--hold-file PATH`  while PATH exists, read replies (and write replies with
//!   `--hold-writes`) are held back; they are sent as soon as PATH is removed.
//! * `--short-reads`     a read returns min(available, max(1, requested / 2)) bytes.
//! * `--read-max BYTES`  a read returns at most BYTES bytes (however many were asked).
//! * `--short-writes`    a write stores and acknowledges max(1, len / 2) bytes.
//! * `--hold-writes`     apply `--delay-ms` and `--hold-file` to writes as well.
//! * `--fsync-eio`       fsync/fdatasync of the data file fail with EIO.
//! * `--hold-flush`      apply `--delay-ms` and `--hold-file` to FLUSH requests of the data file
//!   (each close(2) of it): counted in `inflight` and `held` like data requests.
//! * `--page-cache`      do not set FOPEN_DIRECT_IO on open: buffered opens go through the
//!   page cache, O_DIRECT opens use the kernel's FUSE direct_IO path.
//!   By default every open gets FOPEN_DIRECT_IO (+ FOPEN_PARALLEL_DIRECT_WRITES), so every
//!   read(2)/write(2) reaches this process, split by the kernel into requests of at most
//!   max_pages (usually 1 MiB; 128 KiB on old kernels).
//! * `--threads N`       FUSE worker threads (default 1; delayed/held replies use their own threads).
//! * `--allow-other`     mount with allow_other (let other uids use it).
//!
//! `.stats` holds one line: `reads=R writes=W inflight=I held=H eio=E peak=P` — requests seen,
//! data requests not yet answered, requests currently waiting on the hold file, EIOs sent,
//! the most data requests ever unanswered at once.
//! Every change of a counter also prints that line on stdout (after the change), so a test
//! waiting for a count can watch stdout's file (inotify) instead of polling `.stats`.
//!
//! On start-up the process prints `ready` on stdout once the mount is live. SIGTERM, SIGINT
//! and SIGHUP detach the mount (MNT_DETACH) and exit 0; an external umount ends it too.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    SessionACL, TimeOrNow, WriteFlags,
};

const PAGE: usize = 4096;
const INO_ROOT: u64 = 1;
const INO_DATA: u64 = 2;
const INO_STATS: u64 = 3;
const STATS_NAME: &str = ".stats";

/// Initial content of the data file: byte at offset `o`.
///
/// `s = (o / 256) mod 2^32`, `h = ((s * 0x9E3779B1) mod 2^32) >> 24`,
/// `byte = ((o mod 256) * 31 + 7 + h) mod 256`.
///
/// Within each 256-byte run the bytes are all distinct; `h` varies the runs so that blocks
/// at different sector/page offsets differ (misplaced data is detected). The TypeScript
/// twin is `patternByte` in `__test__/helpers/fixtures.ts`.
pub fn pattern_byte(o: u64) -> u8 {
    let s = (o >> 8) as u32;
    let h = s.wrapping_mul(0x9E37_79B1) >> 24;
    (((o & 0xff) as u32) * 31 + 7 + h) as u8
}

#[derive(Debug, Clone)]
struct Opts {
    mountpoint: PathBuf,
    size: u64,
    eio_at: Vec<u64>,
    delay: Duration,
    hold_file: Option<PathBuf>,
    short_reads: bool,
    read_max: Option<usize>,
    short_writes: bool,
    hold_writes: bool,
    fsync_eio: bool,
    hold_flush: bool,
    page_cache: bool,
    name: String,
    threads: usize,
    allow_other: bool,
    verbose: bool,
}

const USAGE: &str =
    "usage: faultfs MOUNTPOINT [--size BYTES] [--eio-at OFF[,OFF...]] [--delay-ms N] \
[--hold-file PATH] [--short-reads] [--short-writes] [--hold-writes] [--fsync-eio] [--hold-flush] [--page-cache] \
[--name NAME] [--threads N] [--allow-other] [--verbose]";

fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1u64 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1u64 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("invalid byte count: {s:?}"))
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut mountpoint = None;
    let mut o = Opts {
        mountpoint: PathBuf::new(),
        size: 1 << 20,
        eio_at: Vec::new(),
        delay: Duration::ZERO,
        hold_file: None,
        short_reads: false,
        read_max: None,
        short_writes: false,
        hold_writes: false,
        fsync_eio: false,
        hold_flush: false,
        page_cache: false,
        name: "data".to_string(),
        threads: 1,
        allow_other: false,
        verbose: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        // Accept both `--opt value` and `--opt=value`.
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if a.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "--size" => o.size = parse_bytes(&value("--size")?)?,
            "--eio-at" => {
                for part in value("--eio-at")?
                    .split(',')
                    .filter(|p| !p.trim().is_empty())
                {
                    o.eio_at.push(parse_bytes(part)?);
                }
            }
            "--delay-ms" => {
                let v = value("--delay-ms")?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("invalid --delay-ms: {v:?}"))?;
                o.delay = Duration::from_millis(ms);
            }
            "--hold-file" => o.hold_file = Some(PathBuf::from(value("--hold-file")?)),
            "--short-reads" => o.short_reads = true,
            "--read-max" => {
                let v = parse_bytes(&value("--read-max")?)?;
                if v == 0 {
                    return Err("--read-max must be at least 1".to_string());
                }
                o.read_max =
                    Some(usize::try_from(v).map_err(|_| format!("--read-max too large: {v}"))?);
            }
            "--short-writes" => o.short_writes = true,
            "--hold-writes" => o.hold_writes = true,
            "--fsync-eio" => o.fsync_eio = true,
            "--hold-flush" => o.hold_flush = true,
            "--page-cache" => o.page_cache = true,
            "--allow-other" => o.allow_other = true,
            "--verbose" | "-v" => o.verbose = true,
            "--name" => {
                let v = value("--name")?;
                if v.is_empty() || v.contains('/') || v == "." || v == ".." || v == STATS_NAME {
                    return Err(format!("invalid --name: {v:?}"));
                }
                o.name = v;
            }
            "--threads" => {
                let v = value("--threads")?;
                o.threads = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("invalid --threads: {v:?}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            f if f.starts_with('-') => return Err(format!("unknown option {f}")),
            _ => {
                if mountpoint.replace(PathBuf::from(a)).is_some() {
                    return Err("more than one mountpoint given".to_string());
                }
            }
        }
    }
    o.mountpoint = mountpoint.ok_or_else(|| "missing MOUNTPOINT".to_string())?;
    o.eio_at.sort_unstable();
    o.eio_at.dedup();
    Ok(o)
}

/// The data file: the pattern, overlaid with written 4 KiB pages.
struct Store {
    size: u64,
    /// Unwritten bytes below this offset read as the pattern, at or above it as zeros
    /// (lowered by truncation, so truncate + extend gives zeros like a real file).
    pattern_limit: u64,
    pages: HashMap<u64, Box<[u8]>>,
}

impl Store {
    fn base(&self, o: u64) -> u8 {
        if o < self.pattern_limit {
            pattern_byte(o)
        } else {
            0
        }
    }

    fn read(&self, off: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut o = off;
        let end = off + len as u64;
        while o < end {
            let idx = o / PAGE as u64;
            let in_page = (o % PAGE as u64) as usize;
            let n = ((end - o) as usize).min(PAGE - in_page);
            match self.pages.get(&idx) {
                Some(p) => out.extend_from_slice(&p[in_page..in_page + n]),
                None => out.extend((o..o + n as u64).map(|x| self.base(x))),
            }
            o += n as u64;
        }
        out
    }

    fn write(&mut self, off: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let o = off + done as u64;
            let idx = o / PAGE as u64;
            let in_page = (o % PAGE as u64) as usize;
            let n = (data.len() - done).min(PAGE - in_page);
            if !self.pages.contains_key(&idx) {
                let start = idx * PAGE as u64;
                let page: Box<[u8]> = (start..start + PAGE as u64).map(|x| self.base(x)).collect();
                self.pages.insert(idx, page);
            }
            let page = self.pages.get_mut(&idx).expect("page just inserted");
            page[in_page..in_page + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.size = self.size.max(off + data.len() as u64);
    }

    fn truncate(&mut self, new_size: u64) {
        if new_size < self.size {
            self.pattern_limit = self.pattern_limit.min(new_size);
            let first_dead = new_size.div_ceil(PAGE as u64);
            self.pages.retain(|&idx, _| idx < first_dead);
            let tail = (new_size % PAGE as u64) as usize;
            if tail != 0 {
                if let Some(p) = self.pages.get_mut(&(new_size / PAGE as u64)) {
                    p[tail..].fill(0);
                }
            }
        }
        self.size = new_size;
    }
}

#[derive(Default)]
struct Stats {
    reads: AtomicU64,
    writes: AtomicU64,
    inflight: AtomicU64,
    held: AtomicU64,
    eio: AtomicU64,
    /// The most data requests ever unanswered at once (`inflight`'s high-water mark).
    peak: AtomicU64,
}

impl Stats {
    fn inc(&self, counter: &AtomicU64) {
        let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if std::ptr::eq(counter, &self.inflight) {
            self.peak.fetch_max(now, Ordering::SeqCst);
        }
        self.announce();
    }

    fn dec(&self, counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::SeqCst);
        self.announce();
    }

    /// The `.stats` line on stdout, after each change (see the module doc).
    fn announce(&self) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", self.text());
        let _ = out.flush();
    }

    fn text(&self) -> String {
        format!(
            "reads={} writes={} inflight={} held={} eio={} peak={}\n",
            self.reads.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
            self.inflight.load(Ordering::SeqCst),
            self.held.load(Ordering::SeqCst),
            self.eio.load(Ordering::SeqCst),
            self.peak.load(Ordering::SeqCst),
        )
    }
}

struct FaultFs {
    opts: Opts,
    store: Mutex<Store>,
    stats: Arc<Stats>,
    uid: u32,
    gid: u32,
    start: SystemTime,
}

enum Outcome<T> {
    Ok(T),
    Err(Errno),
}

impl FaultFs {
    fn new(opts: Opts) -> Self {
        // SAFETY: geteuid/getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let store = Store {
            size: opts.size,
            pattern_limit: opts.size,
            pages: HashMap::new(),
        };
        FaultFs {
            opts,
            store: Mutex::new(store),
            stats: Arc::new(Stats::default()),
            uid,
            gid,
            start: SystemTime::now(),
        }
    }

    fn log(&self, msg: std::fmt::Arguments<'_>) {
        if self.opts.verbose {
            eprintln!("faultfs: {msg}");
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, nlink, size) = match ino {
            INO_ROOT => (FileType::Directory, 0o755, 2, 0),
            INO_DATA => (
                FileType::RegularFile,
                0o644,
                1,
                self.store.lock().expect("store lock").size,
            ),
            INO_STATS => (
                FileType::RegularFile,
                0o444,
                1,
                self.stats.text().len() as u64,
            ),
            _ => return None,
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.start,
            mtime: self.start,
            ctime: self.start,
            crtime: self.start,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: PAGE as u32,
        })
    }

    fn hits_eio(&self, off: u64, len: u64) -> bool {
        let e = &self.opts.eio_at;
        let i = e.partition_point(|&x| x < off);
        i < e.len() && e[i] < off.saturating_add(len.max(1))
    }

    fn must_wait(&self, is_write: bool) -> bool {
        if is_write && !self.opts.hold_writes {
            return false;
        }
        !self.opts.delay.is_zero() || self.opts.hold_file.as_deref().is_some_and(Path::exists)
    }

    /// Run `send` now, or — when a delay or the hold file applies — on a helper thread after
    /// the delay has passed and the hold file is gone, so the FUSE loop keeps serving.
    fn answer<F: FnOnce() + Send + 'static>(&self, is_write: bool, send: F) {
        let stats = self.stats.clone();
        if !self.must_wait(is_write) {
            send();
            stats.dec(&stats.inflight);
            return;
        }
        let delay = self.opts.delay;
        let hold = self.opts.hold_file.clone();
        std::thread::spawn(move || {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            if let Some(h) = hold {
                if h.exists() {
                    stats.inc(&stats.held);
                    while h.exists() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    stats.dec(&stats.held);
                }
            }
            send();
            stats.dec(&stats.inflight);
        });
    }
}

const TTL: Duration = Duration::ZERO;

impl Filesystem for FaultFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Let the kernel issue O_DIRECT requests asynchronously (matters with --page-cache).
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match (u64::from(parent), name.to_str()) {
            (INO_ROOT, Some(n)) if n == self.opts.name => INO_DATA,
            (INO_ROOT, Some(STATS_NAME)) => INO_STATS,
            _ => return reply.error(Errno::ENOENT),
        };
        match self.attr(ino) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.into()) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = u64::from(ino);
        if let Some(sz) = size {
            if ino != INO_DATA {
                return reply.error(Errno::EACCES);
            }
            self.log(format_args!("truncate {sz}"));
            self.store.lock().expect("store lock").truncate(sz);
        }
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let ino = u64::from(ino);
        self.log(format_args!("open ino={ino} flags={flags:?}"));
        let direct = FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES;
        match ino {
            INO_DATA if self.opts.page_cache => reply.opened(FileHandle(0), FopenFlags::empty()),
            INO_DATA | INO_STATS => reply.opened(FileHandle(0), direct),
            _ => reply.error(Errno::EISDIR),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let ino = u64::from(ino);
        if ino == INO_STATS {
            let text = self.stats.text().into_bytes();
            let start = (offset as usize).min(text.len());
            let end = (start + size as usize).min(text.len());
            return reply.data(&text[start..end]);
        }
        if ino != INO_DATA {
            return reply.error(Errno::EISDIR);
        }
        self.stats.inc(&self.stats.reads);
        self.stats.inc(&self.stats.inflight);
        let outcome = if self.hits_eio(offset, size.into()) {
            self.stats.inc(&self.stats.eio);
            Outcome::Err(Errno::EIO)
        } else {
            let store = self.store.lock().expect("store lock");
            let avail = store.size.saturating_sub(offset).min(size.into()) as usize;
            let n = if self.opts.short_reads {
                avail.min((size as usize / 2).max(1))
            } else {
                avail
            };
            let n = self.opts.read_max.map_or(n, |m| n.min(m));
            Outcome::Ok(store.read(offset, n))
        };
        match &outcome {
            Outcome::Ok(d) => {
                self.log(format_args!("read off={offset} size={size} -> {}", d.len()))
            }
            Outcome::Err(_) => self.log(format_args!("read off={offset} size={size} -> EIO")),
        }
        self.answer(false, move || match outcome {
            Outcome::Ok(d) => reply.data(&d),
            Outcome::Err(e) => reply.error(e),
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if u64::from(ino) != INO_DATA {
            return reply.error(Errno::EACCES);
        }
        self.stats.inc(&self.stats.writes);
        self.stats.inc(&self.stats.inflight);
        let outcome = if self.hits_eio(offset, data.len() as u64) {
            self.stats.inc(&self.stats.eio);
            Outcome::Err(Errno::EIO)
        } else {
            let n = if self.opts.short_writes && !data.is_empty() {
                (data.len() / 2).max(1)
            } else {
                data.len()
            };
            self.store
                .lock()
                .expect("store lock")
                .write(offset, &data[..n]);
            Outcome::Ok(n as u32)
        };
        match &outcome {
            Outcome::Ok(n) => {
                self.log(format_args!("write off={offset} len={} -> {n}", data.len()))
            }
            Outcome::Err(_) => {
                self.log(format_args!("write off={offset} len={} -> EIO", data.len()))
            }
        }
        self.answer(true, move || match outcome {
            Outcome::Ok(n) => reply.written(n),
            Outcome::Err(e) => reply.error(e),
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if self.opts.hold_flush && u64::from(ino) == INO_DATA {
            self.stats.inc(&self.stats.inflight);
            self.answer(false, move || reply.ok());
        } else {
            reply.ok();
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.opts.fsync_eio && u64::from(ino) == INO_DATA {
            self.stats.inc(&self.stats.eio);
            reply.error(Errno::EIO);
        } else {
            reply.ok();
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != INO_ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INO_ROOT, FileType::Directory, "."),
            (INO_ROOT, FileType::Directory, ".."),
            (INO_DATA, FileType::RegularFile, self.opts.name.as_str()),
            (INO_STATS, FileType::RegularFile, STATS_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let size = self.store.lock().expect("store lock").size;
        reply.statfs(
            size.div_ceil(PAGE as u64),
            0,
            0,
            2,
            0,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }
}

/// Block the termination signals in this thread (and so in every thread spawned later),
/// then wait for one on a dedicated thread: detach the mount and exit.
fn install_signal_exit(mountpoint: &Path) {
    // SAFETY: plain libc signal-set manipulation on a zeroed, then initialised sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let mp = CString::new(mountpoint.as_os_str().as_encoded_bytes()).expect("no NUL in path");
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid, initialised sigset_t; `sig` is a valid out pointer.
        unsafe { libc::sigwait(&set, &mut sig) };
        // SAFETY: `mp` is a valid NUL-terminated path.
        unsafe { libc::umount2(mp.as_ptr(), libc::MNT_DETACH) };
        std::process::exit(0);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("faultfs: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let mountpoint = match opts.mountpoint.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("faultfs: mountpoint {}: {e}", opts.mountpoint.display());
            std::process::exit(1);
        }
    };
    install_signal_exit(&mountpoint);

    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("faultfs".to_string()),
        MountOption::Subtype("faultfs".to_string()),
    ];
    cfg.n_threads = Some(opts.threads);
    if opts.allow_other {
        cfg.acl = SessionACL::All;
    }
    let session = match fuser::spawn_mount(FaultFs::new(opts), &mountpoint, &cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("faultfs: mount on {}: {e}", mountpoint.display());
            std::process::exit(1);
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    match session.join() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("faultfs: session ended: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_known_values() {
        assert_eq!(pattern_byte(0), 7);
        assert_eq!(pattern_byte(1), 38);
        // Runs of 256 bytes differ from each other.
        assert_ne!(pattern_byte(512), pattern_byte(0));
        assert_ne!(pattern_byte(4096), pattern_byte(0));
    }

    #[test]
    fn store_overlay_and_truncate() {
        let mut s = Store {
            size: 10000,
            pattern_limit: 10000,
            pages: HashMap::new(),
        };
        s.write(4090, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let r = s.read(4088, 12);
        assert_eq!(r[0], pattern_byte(4088));
        assert_eq!(&r[2..10], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r[11], pattern_byte(4099));
        s.truncate(4092);
        s.truncate(9000);
        let r = s.read(4088, 8);
        assert_eq!(r[0], pattern_byte(4088));
        assert_eq!(&r[2..4], &[1, 2]);
        assert_eq!(&r[4..], &[0, 0, 0, 0]);
        assert_eq!(s.read(8000, 4), vec![0, 0, 0, 0]);
    }

    #[test]
    fn eio_ranges() {
        let o = parse_args(&["/x".into(), "--eio-at".into(), "8192,1m".into()]).unwrap();
        let fs = FaultFs::new(o);
        assert!(fs.hits_eio(8192, 1));
        assert!(fs.hits_eio(4096, 4097));
        assert!(!fs.hits_eio(4096, 4096));
        assert!(fs.hits_eio(1 << 20, 4096));
        assert!(!fs.hits_eio(8193, 4096));
    }
}
