//! Which CPUs service a block device's completions: the effective affinity of its interrupt
//! lines (MSI/MSI-X vectors), found from a descriptor of a file on it (or of the device).
//!
//! Used by the engine's wake-up wait (`ODIRECT_WAKE_WAIT`): a JS thread that runs on the CPU
//! of the device's interrupt shares that CPU with the completion work (the interrupt, and for
//! writes the kworker that finishes a direct write), so it is woken for almost every completion
//! (counted in bench/counts: 1,820 epoll wake-ups per 10k writes there vs 299 on the other CPU).

use std::os::fd::RawFd;

/// A set of CPUs (bit `n`: CPU n; CPUs past 63 are not represented).
pub type CpuMask = u64;

/// The CPUs the interrupts of the block device holding `fd`'s file (or `fd`'s device) are
/// delivered to; 0 when unknown (not a block-backed file, a virtual device without interrupts of
/// its own such as loop, device-mapper or md, no sysfs/procfs). Virtio configuration-change
/// interrupts (`*-config`) are left out: they never carry completions.
pub fn completion_cpus(fd: RawFd) -> CpuMask {
    match block_device_of(fd) {
        Some(dev) => device_cpus(libc::major(dev), libc::minor(dev)),
        None => 0,
    }
}

/// The block device whose queue serves I/O on `fd`: the device itself for a block device,
/// else the device of the filesystem holding the file; None when fstat fails.
pub fn block_device_of(fd: RawFd) -> Option<libc::dev_t> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live stat buffer; fstat on a bad descriptor fails with EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some(if st.st_mode & libc::S_IFMT == libc::S_IFBLK {
        st.st_rdev
    } else {
        st.st_dev
    })
}

/// [`completion_cpus`] for the block device `major:minor`.
pub fn device_cpus(major: u32, minor: u32) -> CpuMask {
    let Ok(mut dir) = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")) else {
        return 0;
    };
    // Up from the block device (or partition) to the first ancestor with MSI vectors (the PCI
    // function: /sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda -> 0000:00:02.0).
    loop {
        if let Ok(entries) = std::fs::read_dir(dir.join("msi_irqs")) {
            let mut mask = 0;
            for e in entries.flatten() {
                if let Some(irq) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    mask |= irq_cpus(irq);
                }
            }
            return mask;
        }
        if !dir.pop() || !dir.starts_with("/sys/devices") {
            return 0;
        }
    }
}

/// The effective affinity of interrupt `irq`, unless it is a virtio configuration interrupt
/// (its action directory in /proc/irq/N is named `virtioK-config`).
fn irq_cpus(irq: u32) -> CpuMask {
    let base = format!("/proc/irq/{irq}");
    if let Ok(entries) = std::fs::read_dir(&base) {
        let config = entries.flatten().any(|e| {
            e.file_type().is_ok_and(|t| t.is_dir())
                && e.file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with("-config"))
        });
        if config {
            return 0;
        }
    }
    std::fs::read_to_string(format!("{base}/effective_affinity_list"))
        .or_else(|_| std::fs::read_to_string(format!("{base}/smp_affinity_list")))
        .map_or(0, |s| parse_list(&s))
}

/// A CPU list as the kernel prints it ("0-3,8,10-11") as a mask; CPUs past 63 are dropped.
pub fn parse_list(s: &str) -> CpuMask {
    let mut mask = 0u64;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>(), b.parse::<u32>()),
            None => (part.parse::<u32>(), part.parse::<u32>()),
        };
        let (Ok(a), Ok(b)) = (a, b) else { continue };
        for cpu in a..=b.min(63) {
            mask |= 1 << cpu;
        }
    }
    mask
}

/// The CPU the calling thread runs on now (None if the kernel cannot say).
pub fn current_cpu() -> Option<u32> {
    // SAFETY: no arguments; reads the current CPU (vDSO / rseq).
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_list("0\n"), 1);
        assert_eq!(parse_list("1"), 2);
        assert_eq!(parse_list("0-1"), 3);
        assert_eq!(parse_list("0-2,5,7-8\n"), 0b1_1010_0111);
        assert_eq!(parse_list(""), 0);
        assert_eq!(parse_list("62-70"), (1 << 62) | (1 << 63));
    }

    #[test]
    fn a_tmpfs_file_has_no_device_interrupts() {
        let Ok(f) = std::fs::File::create("/dev/shm/odirect-irq-test") else {
            return;
        };
        let _ = std::fs::remove_file("/dev/shm/odirect-irq-test");
        assert_eq!(completion_cpus(std::os::fd::AsRawFd::as_raw_fd(&f)), 0);
    }

    #[test]
    fn a_closed_descriptor_is_unknown() {
        assert_eq!(completion_cpus(-1), 0);
    }
}
