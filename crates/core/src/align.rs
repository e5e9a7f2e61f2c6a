//! Alignment discovery: what O_DIRECT needs for a given file or block device.
//!
//! Order of sources, first that answers wins:
//! 1. `statx(STATX_DIOALIGN)` (Linux 6.1+): memory and file-offset alignment from the filesystem
//!    itself (0 there means the file cannot do direct I/O).
//! 2. block device ioctls `BLKSSZGET` / `BLKPBSZGET` when the path is a block device.
//! 3. sysfs `queue/logical_block_size` of the device that holds the file.
//! 4. the filesystem's block size (`st_blksize`), capped to 4096 and at least 512.

use std::io;
use std::os::fd::RawFd;

/// What direct I/O needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alignment {
    /// Required alignment of user memory addresses.
    pub memory: u32,
    /// Required alignment of file offsets and lengths.
    pub offset: u32,
    /// Logical block (sector) size of the device, when known, else `offset`.
    pub logical_block_size: u32,
    /// Physical block size of the device, when known, else `logical_block_size`.
    pub physical_block_size: u32,
    /// Which source answered.
    pub source: AlignSource,
    /// False when the filesystem says it cannot do direct I/O on this file (statx gave 0).
    pub direct_supported: bool,
    /// Torn-write-free write limits (RWF_ATOMIC), all 0 where the file has none.
    pub atomic: AtomicWrite,
}

/// What `statx(STATX_WRITE_ATOMIC)` says about untorn writes (RWF_ATOMIC) on a file: a write of
/// a power-of-two length in `[unit_min, unit_max]`, naturally aligned (position a multiple of
/// its length), of at most `segments_max` iovecs, lands whole or not at all across a power cut.
/// All 0: no atomic writes (the kernel, the filesystem or the device lacks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtomicWrite {
    pub unit_min: u32,
    pub unit_max: u32,
    pub segments_max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlignSource {
    Statx,
    Ioctl,
    Sysfs,
    Fstat,
    Default,
}

impl AlignSource {
    pub fn name(self) -> &'static str {
        match self {
            AlignSource::Statx => "statx",
            AlignSource::Ioctl => "ioctl",
            AlignSource::Sysfs => "sysfs",
            AlignSource::Fstat => "fstat",
            AlignSource::Default => "default",
        }
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

pub fn is_pow2(n: u64) -> bool {
    n != 0 && n & (n - 1) == 0
}

/// Discovers the alignment (and the atomic write limits) for an open file descriptor.
pub fn discover(fd: RawFd) -> io::Result<Alignment> {
    let mut a = discover_alignment(fd)?;
    #[cfg(target_os = "linux")]
    if let Some(w) = statx_atomic(fd) {
        a.atomic = w;
    }
    Ok(a)
}

/// `statx` of `fd` itself for `mask`: the answer where the kernel and filesystem report every
/// bit of `mask`, else None.
#[cfg(target_os = "linux")]
fn statx_fd(fd: RawFd, mask: u32) -> Option<libc::statx> {
    // SAFETY: statx writes into the zeroed POD `stx`; the empty C string with AT_EMPTY_PATH
    // makes it describe `fd` itself.
    let (r, stx) = unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let r = libc::statx(fd, c"".as_ptr(), libc::AT_EMPTY_PATH, mask, &mut stx);
        (r, stx)
    };
    (r >= 0 && stx.stx_mask & mask == mask).then_some(stx)
}

/// The birth time of `fd`'s file from `statx(STATX_BTIME)`, as (seconds, nanoseconds): (0, 0)
/// where the filesystem reports none, as libuv (node:fs) gives it then.
#[cfg(target_os = "linux")]
pub fn statx_btime(fd: RawFd) -> (i64, u32) {
    statx_fd(fd, libc::STATX_BTIME).map_or((0, 0), |s| (s.stx_btime.tv_sec, s.stx_btime.tv_nsec))
}

/// Atomic write limits from `statx(STATX_WRITE_ATOMIC)` (Linux 6.11+), if reported.
#[cfg(target_os = "linux")]
pub fn statx_atomic(fd: RawFd) -> Option<AtomicWrite> {
    let stx = statx_fd(fd, libc::STATX_WRITE_ATOMIC)?;
    Some(AtomicWrite {
        unit_min: stx.stx_atomic_write_unit_min,
        unit_max: stx.stx_atomic_write_unit_max,
        segments_max: stx.stx_atomic_write_segments_max,
    })
}

fn discover_alignment(fd: RawFd) -> io::Result<Alignment> {
    let st = fstat(fd)?;
    let is_blk = (st.st_mode & libc::S_IFMT) == libc::S_IFBLK;
    let (mut lbs, mut pbs) = (0u32, 0u32);
    #[cfg(target_os = "linux")]
    if is_blk {
        if let Some((l, p)) = blk_sizes(fd) {
            lbs = l;
            pbs = p;
        }
    } else if let Some((l, p)) = sysfs_sizes(st.st_dev) {
        lbs = l;
        pbs = p;
    }
    #[cfg(target_os = "linux")]
    if let Some((mem, off)) = statx_dioalign(fd) {
        if off == 0 {
            // The filesystem says: no direct I/O for this file.
            let bs = if lbs > 0 { lbs } else { 512 };
            return Ok(Alignment {
                memory: bs,
                offset: bs,
                logical_block_size: bs,
                physical_block_size: if pbs > 0 { pbs } else { bs },
                source: AlignSource::Statx,
                direct_supported: false,
                atomic: AtomicWrite::default(),
            });
        }
        let l = if lbs > 0 { lbs } else { off };
        return Ok(Alignment {
            memory: mem.max(1),
            offset: off,
            logical_block_size: l,
            physical_block_size: if pbs >= l { pbs } else { l },
            source: AlignSource::Statx,
            direct_supported: true,
            atomic: AtomicWrite::default(),
        });
    }
    if lbs > 0 {
        return Ok(Alignment {
            memory: lbs,
            offset: lbs,
            logical_block_size: lbs,
            physical_block_size: pbs.max(lbs),
            source: if is_blk {
                AlignSource::Ioctl
            } else {
                AlignSource::Sysfs
            },
            direct_supported: true,
            atomic: AtomicWrite::default(),
        });
    }
    let bs = st.st_blksize as u64;
    let (v, source) = if bs >= 512 && is_pow2(bs) {
        (bs.min(4096) as u32, AlignSource::Fstat)
    } else {
        (4096, AlignSource::Default)
    };
    Ok(Alignment {
        memory: v,
        offset: v,
        logical_block_size: v,
        physical_block_size: v,
        source,
        direct_supported: true,
        atomic: AtomicWrite::default(),
    })
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: `st` is a plain-old-data out parameter fully written by fstat on success.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }
}

/// (memory, offset) alignment from statx, if the kernel and filesystem report it.
#[cfg(target_os = "linux")]
pub fn statx_dioalign(fd: RawFd) -> Option<(u32, u32)> {
    let stx = statx_fd(fd, libc::STATX_DIOALIGN)?;
    Some((stx.stx_dio_mem_align, stx.stx_dio_offset_align))
}

/// (logical, physical) sector size of a block device.
#[cfg(target_os = "linux")]
pub fn blk_sizes(fd: RawFd) -> Option<(u32, u32)> {
    let mut l: libc::c_int = 0;
    let mut p: libc::c_uint = 0;
    // SAFETY: BLKSSZGET writes one int and BLKPBSZGET one unsigned int into our locals.
    let (rl, rp) = unsafe {
        (
            libc::ioctl(fd, libc::BLKSSZGET, &mut l),
            libc::ioctl(fd, libc::BLKPBSZGET, &mut p),
        )
    };
    if rl < 0 || l <= 0 {
        return None;
    }
    let l = l as u32;
    // Some virtual devices report a physical size of 0.
    let p = if rp < 0 || p < l { l } else { p };
    Some((l, p))
}

/// `_IOR(0x12, 114, size_t)`: not exported by the libc crate.
#[cfg(target_os = "linux")]
const BLKGETSIZE64: libc::Ioctl = ((2 << 30) | (8 << 16) | (0x12 << 8) | 114) as libc::Ioctl;

/// Size in bytes of a block device.
#[cfg(target_os = "linux")]
pub fn blk_size_bytes(fd: RawFd) -> Option<u64> {
    let mut n: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 into our local.
    let r = unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut n) };
    if r < 0 {
        None
    } else {
        Some(n)
    }
}

/// (logical, physical) block size of the device holding a file, from sysfs.
#[cfg(target_os = "linux")]
fn sysfs_sizes(dev: libc::dev_t) -> Option<(u32, u32)> {
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    if maj == 0 {
        return None; // tmpfs, overlayfs, nfs...: anonymous device, no queue
    }
    let base = format!("/sys/dev/block/{maj}:{min}");
    let read = |name: &str| -> Option<u32> {
        for dir in [format!("{base}/queue"), format!("{base}/../queue")] {
            if let Ok(s) = std::fs::read_to_string(format!("{dir}/{name}")) {
                if let Ok(v) = s.trim().parse::<u32>() {
                    return Some(v);
                }
            }
        }
        None
    };
    let l = read("logical_block_size")?.max(512);
    let p = read("physical_block_size").unwrap_or(l).max(l);
    Some((l, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn discovers_something_sane_for_a_temp_file() {
        let f = tempfile::tempfile_in("/var/tmp").unwrap();
        let a = discover(f.as_raw_fd()).unwrap();
        assert!(is_pow2(a.offset as u64), "{a:?}");
        assert!(is_pow2(a.memory as u64), "{a:?}");
        assert!(a.offset >= 512 && a.offset <= 65536, "{a:?}");
        assert!(a.physical_block_size >= a.logical_block_size);
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(is_pow2(page_size() as u64));
    }
}
