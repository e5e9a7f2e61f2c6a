//! crashfs — a test-only FUSE filesystem that models a disk with a volatile write cache,
//! so that power cuts can be simulated at any point of a workload.
//!
//! ```text
//! crashfs MOUNTPOINT --dump DIR [--image DIR] [--cut-after N] [--seed S] [--torn]
//!         [--ignore-sync] [--verbose]
//! ```
//!
//! Every file and directory has two states: the *current* one (what a running program sees)
//! and the *durable* one (what survives a power cut).
//!
//! * A write (or truncate, fallocate) changes the current state only — it sits in the
//!   "volatile cache" — unless it was issued with O_DSYNC / O_SYNC (open flag or per-op
//!   RWF_DSYNC / RWF_SYNC: the kernel passes both in the FUSE write request), which makes the
//!   file's data and size durable before the reply (FUA).
//! * `fsync` / `fdatasync` on a file make its data and size durable (both the same here: the
//!   size is the metadata needed to read the data back).
//! * Directory operations (create, mknod, mkdir, unlink, rmdir, rename, link, symlink)
//!   change the current directory only; `fsync` of the directory (FUSE_FSYNCDIR) makes that
//!   directory's entries durable. A file whose entry is durable but whose data never was
//!   shows its durable data (empty if it was never synced), as after a real crash.
//! * A **cut** happens when mutating operation number N (0-based, `--cut-after N`) arrives,
//!   or when `cut` is written to the control file `/.crashfs`. The durable tree is written
//!   to `--dump DIR` (a real directory) *before* the cutting request is answered; from then
//!   on every request fails with EIO (the disk is gone). With `--torn`, each 512-byte sector
//!   written since the file's last sync (including the write in flight at the cut) survives
//!   or not by a coin flip seeded by `--seed` (LazyFS / CrashMonkey "torn" model); sectors
//!   past the durable size are lost with it.
//! * `--image DIR` loads a real directory tree as the initial, fully durable state: a dump
//!   can be mounted again ("remount after the crash").
//! * `--ignore-sync` acknowledges fsync/fsyncdir/O_DSYNC without making anything durable:
//!   a lying disk, to show that the crash tests notice missing syncs.
//!
//! Mutating operations (counted): write, setattr with a size, fallocate, create, mknod,
//! mkdir, unlink, rmdir, rename, link, symlink, fsync, fsyncdir.
//!
//! How requests reach the daemon: every open gets FOPEN_DIRECT_IO (no kernel page cache, so
//! each read/write — O_DIRECT or not — is a FUSE request; no writeback cache), entry and
//! attribute TTLs are 0 (every lookup and stat asks the daemon), and FSYNC / FSYNCDIR are
//! implemented (a FUSE server answering ENOSYS makes the kernel skip all later fsyncs silently).
//! FUSE_ASYNC_DIO is requested as libfuse does. Not modelled: RWF_ATOMIC (FUSE refuses it),
//! mode/owner changes (durable at once), and ext4/XFS's habit of committing a new file's
//! directory entry with the file's own fsync (here only a directory fsync does: the POSIX rule).
//!
//! `/.crashfs` (not listed by readdir) reads as `ops=N cut=0|1 cutAt=K syncs=S dirsyncs=D`.
//! On start-up the process prints `ready` once the mount is live. SIGTERM/SIGINT/SIGHUP
//! detach the mount and exit 0.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const SECTOR: u64 = 512;
const INO_ROOT: u64 = 1;
const INO_CTL: u64 = 2;
const CTL_NAME: &str = ".crashfs";
const TTL: Duration = Duration::ZERO;

#[derive(Debug, Clone, Default)]
struct Opts {
    mountpoint: PathBuf,
    dump: PathBuf,
    image: Option<PathBuf>,
    cut_after: Option<u64>,
    seed: u64,
    torn: bool,
    ignore_sync: bool,
    verbose: bool,
}

const USAGE: &str = "usage: crashfs MOUNTPOINT --dump DIR [--image DIR] [--cut-after N] \
[--seed S] [--torn] [--ignore-sync] [--verbose]";

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut mountpoint = None;
    let mut dump = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
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
        let num = |name: &str, v: String| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("invalid {name}: {v:?}"))
        };
        match flag {
            "--dump" => dump = Some(PathBuf::from(value("--dump")?)),
            "--image" => o.image = Some(PathBuf::from(value("--image")?)),
            "--cut-after" => o.cut_after = Some(num("--cut-after", value("--cut-after")?)?),
            "--seed" => o.seed = num("--seed", value("--seed")?)?,
            "--torn" => o.torn = true,
            "--ignore-sync" => o.ignore_sync = true,
            "--verbose" | "-v" => o.verbose = true,
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
    o.dump = dump.ok_or_else(|| "missing --dump DIR".to_string())?;
    Ok(o)
}

/// xorshift64*: small, seeded, replayable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

enum Body {
    File {
        cur: Vec<u8>,
        dur: Vec<u8>,
        /// Sectors written since the last sync (the torn model picks among them).
        dirty: BTreeSet<u64>,
        /// Truncated or fallocated since the last sync: the next sync copies the whole file
        /// (otherwise only the dirty sectors).
        reshaped: bool,
    },
    Dir {
        cur: BTreeMap<String, u64>,
        dur: BTreeMap<String, u64>,
    },
    Symlink(PathBuf),
}

struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    /// Current link count (entries in current directories).
    nlink: u32,
    body: Body,
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    ops: u64,
    cut: bool,
    cut_at: Option<u64>,
    syncs: u64,
    dirsyncs: u64,
    rng: Rng,
}

struct CrashFs {
    opts: Opts,
    st: Mutex<State>,
    start: SystemTime,
}

impl State {
    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }
    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }
    fn entries(&self, dir: u64) -> Result<&BTreeMap<String, u64>, Errno> {
        match &self.node(dir)?.body {
            Body::Dir { cur, .. } => Ok(cur),
            _ => Err(Errno::ENOTDIR),
        }
    }
    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<String, u64>, Errno> {
        match &mut self.node_mut(dir)?.body {
            Body::Dir { cur, .. } => Ok(cur),
            _ => Err(Errno::ENOTDIR),
        }
    }
    fn file_mut(&mut self, ino: u64) -> Result<(&mut Vec<u8>, &mut BTreeSet<u64>), Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::File { cur, dirty, .. } => Ok((cur, dirty)),
            Body::Dir { .. } => Err(Errno::EISDIR),
            Body::Symlink(_) => Err(Errno::EINVAL),
        }
    }

    /// As `file_mut`, for a change of the file's shape (truncate, fallocate): the next sync
    /// copies the whole file.
    fn reshape(&mut self, ino: u64) -> Result<(&mut Vec<u8>, &mut BTreeSet<u64>), Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::File {
                cur,
                dirty,
                reshaped,
                ..
            } => {
                *reshaped = true;
                Ok((cur, dirty))
            }
            Body::Dir { .. } => Err(Errno::EISDIR),
            Body::Symlink(_) => Err(Errno::EINVAL),
        }
    }

    fn add(&mut self, mode: u32, uid: u32, gid: u32, body: Body) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                mode,
                uid,
                gid,
                nlink: 0,
                body,
            },
        );
        ino
    }

    fn link_into(&mut self, parent: u64, name: &str, ino: u64) -> Result<(), Errno> {
        let e = self.entries_mut(parent)?;
        if e.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        e.insert(name.to_string(), ino);
        self.node_mut(ino)?.nlink += 1;
        Ok(())
    }

    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.node_mut(ino)?.body {
            Body::File {
                cur,
                dur,
                dirty,
                reshaped,
            } => {
                if *reshaped {
                    dur.clone_from(cur);
                } else {
                    dur.resize(cur.len(), 0);
                    for &sec in dirty.iter() {
                        let a = (sec * SECTOR) as usize;
                        let b = (a + SECTOR as usize).min(cur.len());
                        if a < b {
                            dur[a..b].copy_from_slice(&cur[a..b]);
                        }
                    }
                }
                dirty.clear();
                *reshaped = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Drop the volatile cache: with `torn`, keep a random half of the dirty sectors.
    fn power_cut(&mut self, torn: bool) {
        for node in self.nodes.values_mut() {
            if let Body::File {
                cur,
                dur,
                dirty,
                reshaped,
            } = &mut node.body
            {
                *reshaped = false;
                if torn {
                    for &s in dirty.iter() {
                        if self.rng.next() & 1 == 1 {
                            let a = (s * SECTOR) as usize;
                            let b = (a + SECTOR as usize).min(cur.len()).min(dur.len());
                            if a < b {
                                dur[a..b].copy_from_slice(&cur[a..b]);
                            }
                        }
                    }
                }
                dirty.clear();
                cur.clone_from(dur);
            }
            if let Body::Dir { cur, dur } = &mut node.body {
                cur.clone_from(dur);
            }
        }
    }

    fn dump(&self, ino: u64, to: &Path) -> std::io::Result<()> {
        let Some(node) = self.nodes.get(&ino) else {
            return Ok(());
        };
        match &node.body {
            Body::Dir { dur, .. } => {
                if ino != INO_ROOT {
                    std::fs::create_dir(to)?;
                }
                for (name, child) in dur {
                    self.dump(*child, &to.join(name))?;
                }
            }
            Body::File { dur, .. } => std::fs::write(to, dur)?,
            Body::Symlink(t) => std::os::unix::fs::symlink(t, to)?,
        }
        if !matches!(node.body, Body::Symlink(_)) {
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(node.mode & 0o7777))?;
        }
        Ok(())
    }

    fn load(&mut self, dir: u64, from: &Path) -> std::io::Result<()> {
        for ent in std::fs::read_dir(from)? {
            let ent = ent?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(ent.path())?;
            let mode = md.permissions().mode();
            let body = if md.is_dir() {
                Body::Dir {
                    cur: BTreeMap::new(),
                    dur: BTreeMap::new(),
                }
            } else if md.file_type().is_symlink() {
                Body::Symlink(std::fs::read_link(ent.path())?)
            } else {
                let data = std::fs::read(ent.path())?;
                Body::File {
                    cur: data.clone(),
                    dur: data,
                    dirty: BTreeSet::new(),
                    reshaped: false,
                }
            };
            let ino = self.add(mode, 0, 0, body);
            self.link_into(dir, &name, ino)
                .map_err(|_| std::io::Error::other("duplicate name in image"))?;
            if md.is_dir() {
                self.load(ino, &ent.path())?;
            }
        }
        if let Body::Dir { cur, dur } = &mut self.node_mut(dir).expect("loaded dir").body {
            dur.clone_from(cur);
        }
        Ok(())
    }
}

impl CrashFs {
    fn new(opts: Opts) -> std::io::Result<Self> {
        let mut st = State {
            nodes: HashMap::new(),
            next_ino: INO_CTL + 1,
            ops: 0,
            cut: false,
            cut_at: None,
            syncs: 0,
            dirsyncs: 0,
            rng: Rng::new(opts.seed),
        };
        st.nodes.insert(
            INO_ROOT,
            Node {
                mode: libc::S_IFDIR | 0o755,
                uid: 0,
                gid: 0,
                nlink: 2,
                body: Body::Dir {
                    cur: BTreeMap::new(),
                    dur: BTreeMap::new(),
                },
            },
        );
        if let Some(img) = &opts.image {
            st.load(INO_ROOT, img)?;
        }
        Ok(CrashFs {
            opts,
            st: Mutex::new(st),
            start: SystemTime::now(),
        })
    }

    fn log(&self, msg: std::fmt::Arguments<'_>) {
        if self.opts.verbose {
            eprintln!("crashfs: {msg}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().expect("state lock")
    }

    fn status(&self) -> String {
        let st = self.lock();
        format!(
            "ops={} cut={} cutAt={} syncs={} dirsyncs={}\n",
            st.ops,
            u8::from(st.cut),
            st.cut_at.map_or(-1, |c| c as i64),
            st.syncs,
            st.dirsyncs
        )
    }

    /// Cut the power now: drop the volatile cache, write the durable tree to the dump
    /// directory. Every later request fails with EIO.
    fn do_cut(&self, st: &mut State) {
        st.cut = true;
        st.cut_at = Some(st.ops);
        st.power_cut(self.opts.torn);
        if let Err(e) = st.dump(INO_ROOT, &self.opts.dump) {
            eprintln!("crashfs: dump to {}: {e}", self.opts.dump.display());
        }
        // The marker says the dump is complete.
        let _ = std::fs::write(
            self.opts.dump.with_extension("done"),
            format!("cutAt={}\n", st.ops),
        );
        self.log(format_args!("power cut at op {}", st.ops));
    }

    /// Count one mutating operation; run `apply` unless the power is (or goes) out now.
    /// `in_flight` is applied to the current state before a cut (a write the disk was
    /// receiving when the power went: with `--torn` some of its sectors may survive).
    fn mutate<T>(
        &self,
        what: &str,
        in_flight: bool,
        apply: impl FnOnce(&mut State) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let mut st = self.lock();
        if st.cut {
            return Err(Errno::EIO);
        }
        if self.opts.cut_after == Some(st.ops) {
            if in_flight {
                let _ = apply(&mut st);
            }
            self.do_cut(&mut st);
            return Err(Errno::EIO);
        }
        st.ops += 1;
        self.log(format_args!("op {} {what}", st.ops - 1));
        apply(&mut st)
    }

    /// Non-mutating requests fail once the power is out.
    fn alive(&self) -> Result<std::sync::MutexGuard<'_, State>, Errno> {
        let st = self.lock();
        if st.cut {
            Err(Errno::EIO)
        } else {
            Ok(st)
        }
    }

    fn attr_of(&self, ino: u64, n: &Node) -> FileAttr {
        let (kind, size) = match &n.body {
            Body::File { cur, .. } => (FileType::RegularFile, cur.len() as u64),
            Body::Dir { cur, .. } => (FileType::Directory, cur.len() as u64),
            Body::Symlink(t) => (FileType::Symlink, t.as_os_str().len() as u64),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.start,
            mtime: self.start,
            ctime: self.start,
            crtime: self.start,
            kind,
            perm: (n.mode & 0o7777) as u16,
            nlink: n
                .nlink
                .max(u32::from(matches!(n.body, Body::Dir { .. })) * 2),
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }

    fn ctl_attr(&self) -> FileAttr {
        let n = Node {
            mode: 0o644,
            uid: 0,
            gid: 0,
            nlink: 1,
            body: Body::Symlink(PathBuf::new()),
        };
        let mut a = self.attr_of(INO_CTL, &n);
        a.kind = FileType::RegularFile;
        a.size = 4096;
        a
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        if ino == INO_CTL {
            return Ok(self.ctl_attr());
        }
        let st = self.alive()?;
        Ok(self.attr_of(ino, st.node(ino)?))
    }

    fn entry_reply(&self, r: Result<u64, Errno>, reply: ReplyEntry) {
        match r.and_then(|ino| self.attr(ino)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn new_node(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        body: Body,
    ) -> Result<u64, Errno> {
        let name = name_of(name)?;
        let what = format!("create {name}");
        self.mutate(&what, false, |st| {
            let ino = st.add(mode, req.uid(), req.gid(), body);
            st.link_into(parent, name, ino)?;
            Ok(ino)
        })
    }

    fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let name = name_of(name)?;
        self.mutate(&format!("remove {name}"), false, |st| {
            let ino = *st.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
            match (&st.node(ino)?.body, dir) {
                (Body::Dir { cur, .. }, true) if !cur.is_empty() => return Err(Errno::ENOTEMPTY),
                (Body::Dir { .. }, false) => return Err(Errno::EISDIR),
                (Body::Dir { .. }, true) => {}
                (_, true) => return Err(Errno::ENOTDIR),
                _ => {}
            }
            st.entries_mut(parent)?.remove(name);
            let n = st.node_mut(ino)?;
            n.nlink = n.nlink.saturating_sub(1);
            Ok(())
        })
    }
}

fn name_of(name: &OsStr) -> Result<&str, Errno> {
    match name.to_str() {
        Some(n) if n != CTL_NAME => Ok(n),
        Some(_) => Err(Errno::EACCES),
        None => Err(Errno::EINVAL),
    }
}

fn reply_empty(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

const DIRECT: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

impl Filesystem for CrashFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // As libfuse does by default. Without it, an io_uring O_DIRECT read that the daemon
        // answers short (end of file) completes with the full requested length on 6.18.
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if u64::from(parent) == INO_ROOT && name == CTL_NAME {
            return reply.entry(&TTL, &self.ctl_attr(), Generation(0));
        }
        let r = self.alive().and_then(|st| {
            let n = name.to_str().ok_or(Errno::ENOENT)?;
            st.entries(parent.into())?
                .get(n)
                .copied()
                .ok_or(Errno::ENOENT)
        });
        self.entry_reply(r, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.into()) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
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
        if ino == INO_CTL {
            return reply.attr(&TTL, &self.ctl_attr());
        }
        let r = (|| {
            if let Some(sz) = size {
                self.mutate(&format!("truncate ino={ino} {sz}"), false, |st| {
                    let (cur, dirty) = st.reshape(ino)?;
                    cur.resize(sz as usize, 0);
                    dirty.retain(|&s| s * SECTOR < sz);
                    Ok(())
                })?;
            }
            // Mode and owner are kept durable at once (metadata outside the model).
            let mut st = self.alive()?;
            let n = st.node_mut(ino)?;
            if let Some(m) = mode {
                n.mode = (n.mode & !0o7777) | (m & 0o7777);
            }
            if let Some(u) = uid {
                n.uid = u;
            }
            if let Some(g) = gid {
                n.gid = g;
            }
            Ok(())
        })();
        match r.and_then(|()| self.attr(ino)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self
            .alive()
            .and_then(|st| match &st.node(ino.into())?.body {
                Body::Symlink(t) => Ok(t.as_os_str().as_encoded_bytes().to_vec()),
                _ => Err(Errno::EINVAL),
            });
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let body = Body::File {
            cur: Vec::new(),
            dur: Vec::new(),
            dirty: BTreeSet::new(),
            reshaped: false,
        };
        let r = self.new_node(req, parent.into(), name, mode & !umask, body);
        self.entry_reply(r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let body = Body::Dir {
            cur: BTreeMap::new(),
            dur: BTreeMap::new(),
        };
        let mode = libc::S_IFDIR | (mode & !umask & 0o7777);
        let r = self.new_node(req, parent.into(), name, mode, body);
        self.entry_reply(r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.remove(parent.into(), name, false), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.remove(parent.into(), name, true), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let body = Body::Symlink(target.to_path_buf());
        let r = self.new_node(req, parent.into(), link_name, libc::S_IFLNK | 0o777, body);
        self.entry_reply(r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return reply.error(Errno::EINVAL);
        }
        let r = name_of(name).and_then(|from| {
            let to = name_of(newname)?;
            self.mutate(&format!("rename {from} -> {to}"), false, |st| {
                let (p, np) = (u64::from(parent), u64::from(newparent));
                let ino = *st.entries(p)?.get(from).ok_or(Errno::ENOENT)?;
                if let Some(&old) = st.entries(np)?.get(to) {
                    if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                        return Err(Errno::EEXIST);
                    }
                    if old == ino {
                        return Ok(());
                    }
                    if let Body::Dir { cur, .. } = &st.node(old)?.body {
                        if !cur.is_empty() {
                            return Err(Errno::ENOTEMPTY);
                        }
                    }
                    let n = st.node_mut(old)?;
                    n.nlink = n.nlink.saturating_sub(1);
                }
                st.entries_mut(p)?.remove(from);
                st.entries_mut(np)?.insert(to.to_string(), ino);
                Ok(())
            })
        });
        reply_empty(r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = name_of(newname).and_then(|to| {
            self.mutate(&format!("link {to}"), false, |st| {
                if matches!(st.node(ino.into())?.body, Body::Dir { .. }) {
                    return Err(Errno::EPERM);
                }
                st.link_into(newparent.into(), to, ino.into())?;
                Ok(u64::from(ino))
            })
        });
        self.entry_reply(r, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let ino = u64::from(ino);
        if ino == INO_CTL {
            return reply.opened(FileHandle(0), DIRECT);
        }
        match self.alive().and_then(|st| {
            st.node(ino).and_then(|n| match n.body {
                Body::File { .. } => Ok(()),
                _ => Err(Errno::EISDIR),
            })
        }) {
            Ok(()) => reply.opened(FileHandle(0), DIRECT),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let body = Body::File {
            cur: Vec::new(),
            dur: Vec::new(),
            dirty: BTreeSet::new(),
            reshaped: false,
        };
        let mode = libc::S_IFREG | (mode & !umask & 0o7777);
        match self
            .new_node(req, parent.into(), name, mode, body)
            .and_then(|ino| self.attr(ino))
        {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), DIRECT),
            Err(e) => reply.error(e),
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
        if ino == INO_CTL {
            let text = self.status().into_bytes();
            let a = (offset as usize).min(text.len());
            let b = (a + size as usize).min(text.len());
            return reply.data(&text[a..b]);
        }
        let r = self.alive().and_then(|st| match &st.node(ino)?.body {
            Body::File { cur, .. } => {
                let a = (offset as usize).min(cur.len());
                let b = (a + size as usize).min(cur.len());
                Ok(cur[a..b].to_vec())
            }
            _ => Err(Errno::EISDIR),
        });
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let ino = u64::from(ino);
        if ino == INO_CTL {
            let cmd = String::from_utf8_lossy(data);
            if cmd.trim() == "cut" {
                let mut st = self.lock();
                if !st.cut {
                    self.do_cut(&mut st);
                }
                return reply.written(data.len() as u32);
            }
            return reply.error(Errno::EINVAL);
        }
        // The kernel ORs O_DSYNC / O_SYNC into the request's flags for O_DSYNC opens and for
        // RWF_DSYNC / RWF_SYNC writes alike (fuse_write_flags()).
        let dsync = flags.0 & libc::O_DSYNC != 0;
        let what = format!(
            "write ino={ino} off={offset} len={}{}",
            data.len(),
            if dsync { " dsync" } else { "" }
        );
        let ignore_sync = self.opts.ignore_sync;
        let r = self.mutate(&what, true, |st| {
            let (cur, dirty) = st.file_mut(ino)?;
            let end = offset as usize + data.len();
            if cur.len() < end {
                cur.resize(end, 0);
            }
            cur[offset as usize..end].copy_from_slice(data);
            if !data.is_empty() {
                dirty.extend(offset / SECTOR..(end as u64).div_ceil(SECTOR));
            }
            if dsync && !ignore_sync {
                st.syncs += 1;
                st.sync_file(ino)?;
            }
            Ok(data.len() as u32)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let ino = u64::from(ino);
        if ino == INO_CTL {
            return reply.ok();
        }
        let ignore = self.opts.ignore_sync;
        let what = format!("{} ino={ino}", if datasync { "fdatasync" } else { "fsync" });
        let r = self.mutate(&what, false, |st| {
            st.syncs += 1;
            if ignore {
                return Ok(());
            }
            st.sync_file(ino)
        });
        reply_empty(r, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.alive().and_then(|st| {
            let mut v: Vec<(u64, FileType, String)> = vec![
                (ino.into(), FileType::Directory, ".".into()),
                (INO_ROOT, FileType::Directory, "..".into()),
            ];
            for (name, &child) in st.entries(ino.into())? {
                let kind = match st.node(child)?.body {
                    Body::File { .. } => FileType::RegularFile,
                    Body::Dir { .. } => FileType::Directory,
                    Body::Symlink(_) => FileType::Symlink,
                };
                v.push((child, kind, name.clone()));
            }
            Ok(v)
        });
        match r {
            Ok(v) => {
                for (i, (ino, kind, name)) in v.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let ino = u64::from(ino);
        let ignore = self.opts.ignore_sync;
        let r = self.mutate(&format!("fsyncdir ino={ino}"), false, |st| {
            st.dirsyncs += 1;
            if ignore {
                return Ok(());
            }
            match &mut st.node_mut(ino)?.body {
                Body::Dir { cur, dur } => {
                    dur.clone_from(cur);
                    Ok(())
                }
                _ => Err(Errno::ENOTDIR),
            }
        });
        reply_empty(r, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        if self.alive().is_err() {
            return reply.error(Errno::EIO);
        }
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let ino = u64::from(ino);
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & libc::FALLOC_FL_PUNCH_HOLE != 0;
        if mode & !(libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE) != 0 || (punch && !keep)
        {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let r = self.mutate(&format!("fallocate ino={ino} mode={mode}"), false, |st| {
            let (cur, dirty) = st.reshape(ino)?;
            let end = (offset + length) as usize;
            if punch {
                let b = end.min(cur.len());
                let a = (offset as usize).min(b);
                cur[a..b].fill(0);
                dirty.extend(offset / SECTOR..(b as u64).div_ceil(SECTOR));
            } else if !keep && cur.len() < end {
                cur.resize(end, 0);
            }
            Ok(())
        });
        reply_empty(r, reply);
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
                eprintln!("crashfs: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let mountpoint = match opts.mountpoint.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("crashfs: mountpoint {}: {e}", opts.mountpoint.display());
            std::process::exit(1);
        }
    };
    let fs = match CrashFs::new(opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crashfs: image: {e}");
            std::process::exit(1);
        }
    };
    install_signal_exit(&mountpoint);
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("crashfs".to_string()),
        MountOption::Subtype("crashfs".to_string()),
    ];
    cfg.n_threads = Some(1);
    let session = match fuser::spawn_mount(fs, &mountpoint, &cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crashfs: mount on {}: {e}", mountpoint.display());
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
            eprintln!("crashfs: session ended: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(torn: bool) -> CrashFs {
        CrashFs::new(Opts {
            torn,
            seed: 7,
            ..Opts::default()
        })
        .unwrap()
    }

    fn file(st: &mut State, name: &str, data: &[u8]) -> u64 {
        let ino = st.add(
            libc::S_IFREG | 0o644,
            0,
            0,
            Body::File {
                cur: data.to_vec(),
                dur: Vec::new(),
                dirty: (0..(data.len() as u64).div_ceil(SECTOR)).collect(),
                reshaped: false,
            },
        );
        st.link_into(INO_ROOT, name, ino).unwrap();
        ino
    }

    fn cur_dur(st: &State, ino: u64) -> (Vec<u8>, Vec<u8>) {
        match &st.nodes[&ino].body {
            Body::File { cur, dur, .. } => (cur.clone(), dur.clone()),
            _ => panic!("not a file"),
        }
    }

    #[test]
    fn unsynced_data_and_entries_are_lost() {
        let f = fs(false);
        let mut st = f.lock();
        let a = file(&mut st, "a", b"hello");
        st.power_cut(false);
        assert!(cur_dur(&st, a).0.is_empty());
        assert!(st.entries(INO_ROOT).unwrap().is_empty());
    }

    #[test]
    fn synced_data_under_synced_entry_survives() {
        let f = fs(false);
        let mut st = f.lock();
        let a = file(&mut st, "a", b"hello");
        st.sync_file(a).unwrap();
        if let Body::Dir { cur, dur } = &mut st.node_mut(INO_ROOT).unwrap().body {
            dur.clone_from(cur);
        }
        st.file_mut(a).unwrap().0.extend_from_slice(b" world");
        st.power_cut(false);
        assert_eq!(cur_dur(&st, a).1, b"hello");
        assert_eq!(st.entries(INO_ROOT).unwrap().get("a"), Some(&a));
    }

    #[test]
    fn torn_keeps_some_dirty_sectors_within_the_durable_size() {
        let f = fs(true);
        let mut st = f.lock();
        let a = file(&mut st, "a", &[1u8; 8192]);
        st.sync_file(a).unwrap();
        let (cur, dirty) = st.file_mut(a).unwrap();
        cur.fill(2);
        cur.resize(16384, 2);
        dirty.extend(0..32);
        st.power_cut(true);
        let d = cur_dur(&st, a).1;
        assert_eq!(d.len(), 8192);
        let new = d.chunks(512).filter(|s| s[0] == 2).count();
        assert!(new > 0 && new < 16, "{new} of 16 sectors survived");
        assert!(d.chunks(512).all(|s| s.iter().all(|&b| b == s[0])));
    }

    #[test]
    fn sync_after_truncate_and_rewrite_keeps_no_stale_bytes() {
        let f = fs(false);
        let mut st = f.lock();
        let a = file(&mut st, "a", &[0xaa; 8192]);
        st.sync_file(a).unwrap();
        // Shrink to 0, then write only the second page: the first reads as zeros.
        st.reshape(a).unwrap().0.clear();
        let (cur, dirty) = st.file_mut(a).unwrap();
        cur.resize(8192, 0);
        cur[4096..].fill(0xbb);
        dirty.extend(8..16);
        st.sync_file(a).unwrap();
        let d = cur_dur(&st, a).1;
        assert!(d[..4096].iter().all(|&b| b == 0));
        assert!(d[4096..].iter().all(|&b| b == 0xbb));
        // A plain overwrite syncs only its sectors, and they are right.
        let (cur, dirty) = st.file_mut(a).unwrap();
        cur[0..512].fill(0xcc);
        dirty.insert(0);
        st.sync_file(a).unwrap();
        let d = cur_dur(&st, a).1;
        assert!(d[..512].iter().all(|&b| b == 0xcc) && d[512..4096].iter().all(|&b| b == 0));
    }

    #[test]
    fn args() {
        let o = parse_args(&[
            "/m".into(),
            "--dump=/d".into(),
            "--cut-after".into(),
            "12".into(),
            "--torn".into(),
        ])
        .unwrap();
        assert_eq!(o.cut_after, Some(12));
        assert!(o.torn);
        assert!(parse_args(&["/m".into()]).is_err());
    }
}
