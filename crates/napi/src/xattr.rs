//! What a file replaced through a temp file and a rename keeps of the file it replaces, as
//! `fs.copyFile` keeps it by rewriting that file in place: its extended attributes (user.*,
//! trusted.*, security.* labels, and with them the POSIX ACLs, `system.posix_acl_access` /
//! `_default`), its owner and group (when run as root), and the mode the caller asks for. The
//! temp file gets them through its descriptor before its data is synced, so the rename and the
//! directory fsync that follow make them durable with the data (a journal commits them in order).
//!
//! Also refuses, before any data is written, a destination that is immutable or append-only
//! (`chattr +i` / `+a`): the rename over it would fail at the end (fs.copyFile fails EPERM at its
//! open); and one that is a mount point (a file bind-mounted over it, as a container's
//! /etc/hosts): no rename can replace it (EBUSY), which was found only after the data was written.
//!
//! Extended attributes go through the `xattr` crate (fd-based `FileExt` for the temp file, path
//! based without following links for the destination, whose links the caller resolved);
//! `statx`, `fchown`, `fstat` and `fchmod` through `libc`.

use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, RawFd};

use ::xattr::FileExt;
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Result, Task};
use napi_derive::napi;

/// The outcome of `replaceAttrs`: `errno` 0 when all was kept; else the call that failed and the
/// attribute it was about (or `immutable` / `append-only` for a refused destination).
#[napi(object)]
pub struct AttrResult {
    pub errno: i32,
    pub syscall: String,
    pub name: String,
}

impl AttrResult {
    fn ok() -> Self {
        AttrResult {
            errno: 0,
            syscall: String::new(),
            name: String::new(),
        }
    }
    fn err(e: &io::Error, syscall: &str, name: &OsStr) -> Self {
        AttrResult {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            syscall: syscall.to_string(),
            name: String::from_utf8_lossy(name.as_bytes()).into_owned(),
        }
    }
}

/// A descriptor this module does not own (the temp file's, owned by its FileHandle): only
/// borrowed for the calls of one task.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl FileExt for Fd {}

/// Attributes about the old contents, never copied: the file capabilities granted to them, which
/// the kernel drops from a file on any write (`file_remove_privs`: fs.copyFile's result has none,
/// neither has ours), and IMA's hash or signature and EVM's HMAC of them (an old hash on new
/// contents would fail appraisal; the kernel computes them for the new file where it keeps them).
const ABOUT_OLD_CONTENTS: &[&[u8]] = &[b"security.capability", b"security.ima", b"security.evm"];

/// Names a new file may get from its directory or the kernel that the replaced file did not have
/// and fs.copyFile's result would not have either: an ACL inherited from the directory's default
/// ACL, removed from the temp file when the replaced file has none (labels an LSM gives the new
/// file, security.*, stay).
fn removable(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b == b"system.posix_acl_access" || b == b"system.posix_acl_default" || b.starts_with(b"user.")
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

pub struct AttrTask {
    dst: String,
    tmp_fd: i32,
    uid: i32,
    gid: i32,
    mode: i32,
    xattrs: bool,
}

/// linux/stat.h: STATX_ATTR_IMMUTABLE, STATX_ATTR_APPEND (`chattr +i`, `+a`), and
/// STATX_ATTR_MOUNT_ROOT (Linux 5.8: the path is the root of a mount).
const STATX_ATTR_IMMUTABLE: u64 = 0x10;
const STATX_ATTR_APPEND: u64 = 0x20;
const STATX_ATTR_MOUNT_ROOT: u64 = 0x2000;

/// Why `dst` cannot be replaced by a rename, known before any data is written.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// `chattr +i` / `+a`: EPERM, as fs.copyFile's open.
    Flag(&'static str),
    /// The root of a mount (a file bind-mounted over `dst`): rename(2) fails EBUSY.
    MountRoot,
}

/// `chattr +i` / `+a` on `dst` (not following a link), or `dst` a mount point, from statx's
/// attributes: one system call, no open (a FUSE or network file would see an open and a release).
/// The mount point is seen although the last link is not followed: a path lookup always crosses
/// into what is mounted on it. A filesystem (or a kernel before 5.8, for the mount root) that does
/// not report an attribute (`stx_attributes_mask`) is not checked for it: the rename reports what
/// it must. statx by its system call number: the glibc wrapper is newer than the 2.17 floor.
fn refused_flags(dst: &CString) -> Option<Refused> {
    // SAFETY: `stx` is plain old data, zeroed.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `dst` is a valid NUL-terminated string and `stx` a writable statx that both live
    // through the call; the other arguments are plain integers (mask 0: the attributes are
    // reported whatever the mask; AT_STATX_DONT_SYNC: a network filesystem is not asked again).
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC,
            0u32,
            &mut stx as *mut libc::statx,
        )
    };
    if r < 0 {
        return None;
    }
    let set = stx.stx_attributes & stx.stx_attributes_mask;
    if set & STATX_ATTR_IMMUTABLE != 0 {
        Some(Refused::Flag("immutable"))
    } else if set & STATX_ATTR_APPEND != 0 {
        Some(Refused::Flag("append-only"))
    } else if set & STATX_ATTR_MOUNT_ROOT != 0 {
        Some(Refused::MountRoot)
    } else {
        None
    }
}

/// fstat of the temp file now, None if it fails.
fn stat_of(fd: i32) -> Option<libc::stat> {
    // SAFETY: `st` is plain old data fstat fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is the temp file's descriptor, open for the whole task (see fchown); `st`
    // lives through the call.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st)
}

/// The permission bits of the temp file now, None if fstat fails.
fn mode_of(fd: i32) -> Option<i32> {
    stat_of(fd).map(|st| (st.st_mode & 0o7777) as i32)
}

/// The names of `dst`'s extended attributes (not following a link), none where the filesystem has
/// no extended attributes.
fn names_of_path(dst: &str) -> io::Result<Vec<OsString>> {
    match ::xattr::list(dst) {
        Ok(l) => Ok(l.collect()),
        Err(e) if unsupported(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn names_of_fd(fd: &Fd) -> io::Result<Vec<OsString>> {
    match fd.list_xattr() {
        Ok(l) => Ok(l.collect()),
        Err(e) if unsupported(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Copies `dst`'s extended attributes onto the temp file, after removing those the temp file got
/// from elsewhere (an ACL inherited from the directory's default ACL) that `dst` has not: first,
/// as they take the space the copied ones need (ext4 keeps one inode's attributes in one block: a
/// `dst` whose attributes fill it could not get them all back next to an inherited ACL: ENOSPC
/// where fs.copyFile, in place, keeps them).
fn copy_xattrs(dst: &str, tmp: &Fd) -> std::result::Result<(), AttrResult> {
    let names = names_of_path(dst).map_err(|e| AttrResult::err(&e, "listxattr", OsStr::new("")))?;
    let listed: HashSet<&OsStr> = names.iter().map(|n| n.as_os_str()).collect();
    let own = names_of_fd(tmp).map_err(|e| AttrResult::err(&e, "flistxattr", OsStr::new("")))?;
    let remove = |name: &OsStr| match tmp.remove_xattr(name) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        Err(e) => Err(AttrResult::err(&e, "fremovexattr", name)),
    };
    for name in &own {
        if removable(name) && !listed.contains(name.as_os_str()) {
            remove(name)?;
        }
    }
    for name in &names {
        if ABOUT_OLD_CONTENTS.contains(&name.as_bytes()) {
            continue;
        }
        let value = match ::xattr::get(dst, name) {
            Ok(Some(v)) => v,
            // Removed since it was listed: nothing to keep, and an inherited one of that name
            // (kept above as `dst` had it) goes too.
            Ok(None) => {
                if removable(name) {
                    remove(name)?;
                }
                continue;
            }
            Err(e) => return Err(AttrResult::err(&e, "getxattr", name)),
        };
        // The same value already there (an LSM label the new file got from the policy): nothing
        // to set, and no privilege asked for.
        if matches!(tmp.get_xattr(name), Ok(Some(ref v)) if *v == value) {
            continue;
        }
        tmp.set_xattr(name, &value)
            .map_err(|e| AttrResult::err(&e, "fsetxattr", name))?;
    }
    Ok(())
}

/// faccessat2(2): 439 on x86_64 and aarch64 alike (the numbers from 424 on are shared by every
/// architecture); by number, as neither glibc 2.17 nor every libc target names it.
const SYS_FACCESSAT2: libc::c_long = 439;

/// Whether this process may write `dst` (links followed: `dst` is the resolved file) as its open
/// would decide: a file fs.copyFile / fs.writeFile could not open for writing (EACCES: another
/// user's file, or a read-only mode, where the directory is writable) must not be replaced by a
/// rename, which needs only the directory's permission. faccessat2 with AT_EACCESS checks the
/// effective ids and capabilities, as open does (a non-root process with CAP_DAC_OVERRIDE may
/// write it); before Linux 5.8 (ENOSYS) faccessat, which checks the real ids (the same for a
/// process that did not change them). Other errors (ENOENT: removed meanwhile) are left to the
/// rename.
fn refused_write(dst: &CString) -> bool {
    // SAFETY: `dst` is a valid NUL-terminated string that lives through the call; the others are
    // plain integers.
    let mut r = unsafe {
        libc::syscall(
            SYS_FACCESSAT2,
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::W_OK,
            libc::AT_EACCESS,
        )
    };
    if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // SAFETY: as above (faccessat has no flags argument).
        r = unsafe {
            libc::syscall(
                libc::SYS_faccessat,
                libc::AT_FDCWD,
                dst.as_ptr(),
                libc::W_OK,
            )
        };
    }
    r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
}

impl AttrTask {
    fn run(&self) -> AttrResult {
        let tmp = Fd(self.tmp_fd);
        let mut mode = self.mode;
        if !self.dst.is_empty() {
            let Ok(cdst) = CString::new(self.dst.as_bytes()) else {
                return AttrResult::err(
                    &io::Error::from_raw_os_error(libc::EINVAL),
                    "open",
                    OsStr::new(""),
                );
            };
            match refused_flags(&cdst) {
                Some(Refused::Flag(which)) => {
                    return AttrResult::err(
                        &io::Error::from_raw_os_error(libc::EPERM),
                        "ioctl",
                        OsStr::new(which),
                    )
                }
                Some(Refused::MountRoot) => {
                    return AttrResult::err(
                        &io::Error::from_raw_os_error(libc::EBUSY),
                        "rename",
                        OsStr::new("mount point"),
                    )
                }
                None => {}
            }
            if refused_write(&cdst) {
                return AttrResult::err(
                    &io::Error::from_raw_os_error(libc::EACCES),
                    "access",
                    OsStr::new(""),
                );
            }
            // First the owner and group (chown clears set-user-ID bits and file capabilities: the
            // attributes and the mode come after it). Only what differs from the temp file's: a
            // temp file made in a set-group-ID directory has the directory's group, not `dst`'s
            // (root's file root:root became root:<the directory's group>, readable by that group
            // where its mode let the group read: adversary-s19), and no-op chowns cost an inode
            // update each.
            let now = stat_of(self.tmp_fd);
            if mode < 0 {
                // The chown clears set-user-ID and set-group-ID bits, and setting an ACL rewrites
                // the mode from it: the mode the temp file has now is given back after.
                mode = now.map_or(-1, |st| (st.st_mode & 0o7777) as i32);
            }
            if self.uid >= 0 || self.gid >= 0 {
                if let Some((uid, gid)) = now.map(|st| (st.st_uid, st.st_gid)) {
                    let change_uid = self.uid >= 0 && self.uid as libc::uid_t != uid;
                    let change_gid = self.gid >= 0 && self.gid as libc::gid_t != gid;
                    if change_uid || change_gid {
                        // SAFETY: fchown takes plain integers (-1, all ones: that id unchanged);
                        // `tmp_fd` is the temp file's descriptor, open for the whole task (its
                        // FileHandle is not closed before the task settles). Best effort, as
                        // fs.copyFile keeps the owner only where the filesystem has owners, and a
                        // process that is not root gives a group only where it is a member of it
                        // (EPERM otherwise: the temp file keeps its own).
                        unsafe {
                            libc::fchown(
                                self.tmp_fd,
                                if change_uid {
                                    self.uid as libc::uid_t
                                } else {
                                    libc::uid_t::MAX
                                },
                                if change_gid {
                                    self.gid as libc::gid_t
                                } else {
                                    libc::gid_t::MAX
                                },
                            )
                        };
                    }
                }
            }
            if self.xattrs {
                if let Err(r) = copy_xattrs(&self.dst, &tmp) {
                    return r;
                }
            }
        }
        // Last: setting an ACL rewrote the mode from it; this gives the mode asked for (and the
        // ACL's mask and other entries with it, as fs.copyFile's fchmod does).
        // A filesystem without modes (EPERM, ENOTSUP: CIFS, some FUSE) keeps the one the file was
        // created with, as libuv's copyfile lets CIFS do.
        // Not when the mode is already that (a no-op fchmod, ACL included, still costs a
        // journaled inode update): the usual case without an ACL.
        if mode >= 0 && mode_of(self.tmp_fd) != Some(mode) {
            // SAFETY: as fchown above.
            if unsafe { libc::fchmod(self.tmp_fd, mode as libc::mode_t) } < 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::ENOSYS)
                ) {
                    return AttrResult::err(&e, "fchmod", OsStr::new(""));
                }
            }
        }
        AttrResult::ok()
    }
}

impl Task for AttrTask {
    type Output = AttrResult;
    type JsValue = AttrResult;

    fn compute(&mut self) -> Result<AttrResult> {
        Ok(self.run())
    }

    fn resolve(&mut self, _env: Env, output: AttrResult) -> Result<AttrResult> {
        Ok(output)
    }
}

/// Gives a temp file (`tmpFd`, about to be renamed over `dst`) what fs.copyFile would keep of
/// `dst`, off the JS thread: refuses an immutable or append-only `dst` (EPERM, name `immutable` /
/// `append-only`), a `dst` that is a mount point (EBUSY, syscall `rename`, name `mount point`: no
/// rename can replace it), and one this process may not write (EACCES, syscall `access`);
/// `uid`/`gid` >= 0: fchown to those (-1: that id kept) where the temp file's differ, best effort;
/// `xattrs`: `dst`'s extended attributes (ACLs too; not security.capability / .ima / .evm, which
/// are about the old contents) set on the temp file, and an ACL the temp file inherited that `dst`
/// had not is removed; `mode` < 0 with `xattrs`: the temp file's own mode given back after;
/// `mode` >= 0: fchmod last. `dst` '' (nothing replaced): only the mode. Resolves errno 0, or the
/// failed call and the attribute's name.
#[napi(ts_return_type = "Promise<AttrResult>")]
pub fn replace_attrs(
    dst: String,
    tmp_fd: i32,
    uid: i32,
    gid: i32,
    mode: i32,
    xattrs: bool,
) -> AsyncTask<AttrTask> {
    AsyncTask::new(AttrTask {
        dst,
        tmp_fd,
        uid,
        gid,
        mode,
        xattrs,
    })
}
