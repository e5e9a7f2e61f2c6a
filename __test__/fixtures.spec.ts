/**
 * Proves each fixture of helpers/fixtures.ts really works, using only node:fs and shell
 * tools (no odirect API). Tests whose requirements are missing are registered with
 * `test.skip` and the reason is printed.
 */
import { execFileSync, spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import test from 'ava'
import type { ExecutionContext } from 'ava'

import { until } from './helpers/events.ts'
import { type Body, fxTest, must } from './helpers/fxtest.js'

import {
  alignedBuffer,
  dropCaches,
  evictFile,
  faultFs,
  fullFs,
  isMountpoint,
  isSkip,
  loopDevice,
  loopFs,
  mounts,
  seccompLauncher,
  patternBuffer,
  patternByte,
  ramfsDir,
  residentPages,
  runWithoutIoUring,
  sh,
  skipReason,
  tmpfsDir,
  withIoUringDisabled,
} from './helpers/fixtures.js'
import type { Requirement, Skip } from './helpers/fixtures.js'

const { O_DIRECT, O_RDONLY, O_RDWR, O_WRONLY, O_CREAT } = fs.constants



function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn()
    return undefined
  } catch (e) {
    return (e as NodeJS.ErrnoException).code
  }
}

function loopAttached(device: string): boolean {
  return sh('losetup', ['-l', '-n', '-O', 'NAME']).split('\n').some((l) => l.trim() === device)
}

function ourFixtureDirs(): string[] {
  return fs.readdirSync('/var/tmp').filter((n) => n.startsWith(`odirect-fx-${process.pid}-`))
}

/** Loop devices backed by a file in one of this process's fixture dirs (other processes make their own meanwhile). */
function ourLoops(): string[] {
  return sh('losetup', ['-l', '-n', '-O', 'NAME,BACK-FILE'])
    .split('\n')
    .filter((l) => l.includes(`/var/tmp/odirect-fx-${process.pid}-`))
}

// Tests that assert "no fixture of this process is left" run serially (`'serial'`): a concurrent
// test of this file would have its own fixtures alive.

function kernelAtLeast(major: number, minor: number): boolean {
  const [a = 0, b = 0] = os.release().split(/[.-]/).map(Number)
  return a > major || (a === major && b >= minor)
}

const PROBE_PY = `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)  # struct io_uring_params
fd = libc.syscall(425, 4, params)          # __NR_io_uring_setup on x86_64 and aarch64
if fd >= 0:
    os.close(fd)
    print("ok")
else:
    print("errno", ctypes.get_errno())
`

function uringProbe(): string {
  return execFileSync('python3', ['-c', PROBE_PY], { encoding: 'utf8' }).trim()
}

const LOOP: Requirement[] = ['root', 'loop', 'cmd:blockdev', 'cmd:mkfs.ext4', 'fs:ext4']
const FAULT: Requirement[] = ['root', 'fuse', 'cargo']

// ---------------------------------------------------------------------------------------
// Loop devices

for (const ss of [512, 4096] as const) {
  fxTest(`loopFs(${ss}): ext4 on a loop device with ${ss}-byte logical sectors`, LOOP, (t) => {
    const fx = must(loopFs(ss, 32))
    try {
      t.is(Number(sh('blockdev', ['--getss', fx.device]).trim()), ss)
      t.true(isMountpoint(fx.dir))
      t.is(mounts().find((m) => m.mountPoint === fx.dir)?.fsType, 'ext4')
      t.log(`${fx.device} directIo=${fx.directIo}`)

      const file = path.join(fx.dir, 'f')
      const fd = fs.openSync(file, O_RDWR | O_CREAT | O_DIRECT, 0o644)
      try {
        const buf = alignedBuffer(8192)
        buf.fill(0xab)
        t.is(fs.writeSync(fd, buf, 0, 8192, 0), 8192)
        const back = alignedBuffer(4096)
        t.is(fs.readSync(fd, back, 0, 4096, 4096), 4096)
        t.is(back[0], 0xab)
        // 512-aligned offset and length: fine on 512-byte sectors, EINVAL on 4096.
        const small = alignedBuffer(512)
        const r = errnoOf(() => fs.readSync(fd, small, 0, 512, 512))
        t.is(r, ss === 512 ? undefined : 'EINVAL')
        // Misaligned user memory is refused by O_DIRECT on a block-backed fs (loop's
        // dma_alignment is 511). Plain Buffers are only ~16-byte aligned: use alignedBuffer.
        const misaligned = alignedBuffer(8192).subarray(16, 16 + 4096)
        t.is(errnoOf(() => fs.readSync(fd, misaligned, 0, 4096, 0)), 'EINVAL')
      } finally {
        fs.closeSync(fd)
      }
    } finally {
      fx.cleanup()
    }
    t.false(isMountpoint(fx.dir))
    t.false(loopAttached(fx.device))
    t.false(fs.existsSync(fx.backingFile))
  })
}

fxTest('loopDevice(4096): raw block device enforces 4096-byte O_DIRECT alignment', ['root', 'loop', 'cmd:blockdev'], (t) => {
  const fx = must(loopDevice(4096, 16))
  try {
    t.is(Number(sh('blockdev', ['--getss', fx.device]).trim()), 4096)
    t.is(Number(sh('blockdev', ['--getsize64', fx.device]).trim()), 16 * 1024 * 1024)
    const fd = fs.openSync(fx.device, O_RDWR | O_DIRECT)
    try {
      const buf = alignedBuffer(4096)
      buf.fill(7)
      t.is(fs.writeSync(fd, buf, 0, 4096, 8192), 4096)
      const back = alignedBuffer(4096)
      t.is(fs.readSync(fd, back, 0, 4096, 8192), 4096)
      t.is(back[4095], 7)
      t.is(errnoOf(() => fs.readSync(fd, back, 0, 512, 0)), 'EINVAL')
      t.is(errnoOf(() => fs.readSync(fd, back, 0, 4096, 512)), 'EINVAL')
    } finally {
      fs.closeSync(fd)
    }
  } finally {
    fx.cleanup()
  }
  t.false(loopAttached(fx.device))
})

fxTest('loopFs cleanup copes with a busy mount (lazy umount, loop autoclear)', LOOP, async (t) => {
  const fx = must(loopFs(512, 16))
  const fd = fs.openSync(path.join(fx.dir, 'busy'), 'w')
  fx.cleanup() // umount fails with EBUSY -> umount -l; losetup -d marks the busy loop autoclear
  t.false(isMountpoint(fx.dir))
  fs.closeSync(fd) // last user gone: the fs is released and the loop device clears itself
  // The kernel detaches it asynchronously (autoclear on the last release): wait for that.
  await until(() => !loopAttached(fx.device), `${fx.device} to clear itself`)
  t.deepEqual(ourFixtureDirs(), [])
}, undefined, 'serial')

fxTest('a failing setup undoes what it created', LOOP, (t) => {
  // 16 KiB is too small for mkfs.ext4: losetup succeeds, mkfs fails.
  t.throws(() => loopFs(4096, 1 / 64))
  t.deepEqual(ourLoops(), [])
  t.deepEqual(ourFixtureDirs(), [])
}, undefined, 'serial')

// ---------------------------------------------------------------------------------------
// ramfs / tmpfs / full fs

fxTest('ramfsDir: ramfs refuses O_DIRECT with EINVAL at open', ['root', 'fs:ramfs'], (t) => {
  const fx = must(ramfsDir())
  try {
    t.is(mounts().find((m) => m.mountPoint === fx.dir)?.fsType, 'ramfs')
    const file = path.join(fx.dir, 'f')
    fs.writeFileSync(file, 'hello')
    // Observed on Linux 6.18: open(O_DIRECT) itself fails with EINVAL (ramfs has no
    // direct_IO support, so do_dentry_open rejects it); it does not open and fail reads.
    t.is(errnoOf(() => fs.openSync(file, O_RDONLY | O_DIRECT)), 'EINVAL')
    // O_CREAT | O_DIRECT creates the file, then the open fails with EINVAL anyway.
    const created = path.join(fx.dir, 'created')
    t.is(errnoOf(() => fs.openSync(created, O_WRONLY | O_CREAT | O_DIRECT, 0o644)), 'EINVAL')
    t.true(fs.existsSync(created))
  } finally {
    fx.cleanup()
  }
  t.false(isMountpoint(fx.dir))
})

fxTest('tmpfsDir: size-limited tmpfs; O_DIRECT behaviour recorded', ['root', 'fs:tmpfs'], (t) => {
  const fx = must(tmpfsDir(8))
  try {
    t.is(mounts().find((m) => m.mountPoint === fx.dir)?.fsType, 'tmpfs')
    const st = fs.statfsSync(fx.dir)
    t.is(st.blocks * st.bsize, 8 * 1024 * 1024)
    const file = path.join(fx.dir, 'f')
    fs.writeFileSync(file, Buffer.alloc(8192, 1))
    const openErr = errnoOf(() => fs.closeSync(fs.openSync(file, O_RDONLY | O_DIRECT)))
    // Linux >= 6.6 accepts O_DIRECT on tmpfs (it still goes through the page cache, and no
    // alignment is enforced: observed on 6.18, an unaligned O_DIRECT read succeeds); older
    // kernels fail the open with EINVAL.
    t.is(openErr, kernelAtLeast(6, 6) ? undefined : 'EINVAL')
    if (openErr === undefined) {
      const fd = fs.openSync(file, O_RDONLY | O_DIRECT)
      try {
        t.is(fs.readSync(fd, Buffer.alloc(100), 0, 100, 3), 100)
      } finally {
        fs.closeSync(fd)
      }
    }
    t.log(`tmpfs open(O_DIRECT) on ${os.release()}: ${openErr ?? 'ok'}`)
  } finally {
    fx.cleanup()
  }
})

function fillUntilEnospc(t: ExecutionContext, file: string, flags: number, limit: number): void {
  const fd = fs.openSync(file, flags, 0o644)
  const chunk = alignedBuffer(1024 * 1024)
  chunk.fill(0x5a)
  let written = 0
  let code: string | undefined
  try {
    while (written <= limit + chunk.length) {
      try {
        const n = fs.writeSync(fd, chunk, 0, chunk.length, written)
        written += n
        if (n < chunk.length) {
          // A short write at the edge; the next one must fail.
          continue
        }
      } catch (e) {
        code = (e as NodeJS.ErrnoException).code
        break
      }
    }
  } finally {
    fs.closeSync(fd)
  }
  t.is(code, 'ENOSPC')
  t.true(written <= limit, `wrote ${written} bytes into a ${limit}-byte fs`)
  t.log(`ENOSPC after ${written} bytes`)
}

fxTest('fullFs (loop-ext4): O_DIRECT and buffered writes hit ENOSPC', LOOP, (t) => {
  const fx = must(fullFs(8))
  try {
    t.is(fx.kind, 'loop-ext4')
    t.true(fx.freeBytes > 6 * 1024 * 1024, `free ${fx.freeBytes}`)
    fillUntilEnospc(t, path.join(fx.dir, 'direct'), O_WRONLY | O_CREAT | O_DIRECT, fx.sizeBytes)
    fs.rmSync(path.join(fx.dir, 'direct'))
    fs.writeFileSync(path.join(fx.dir, 'small'), 'x')
    fillUntilEnospc(t, path.join(fx.dir, 'buffered'), O_WRONLY | O_CREAT, fx.sizeBytes)
  } finally {
    fx.cleanup()
  }
  t.false(isMountpoint(fx.dir))
})

fxTest('fullFs (tmpfs): writes past size= fail with ENOSPC', ['root', 'fs:tmpfs'], (t) => {
  const fx = must(fullFs(4, { kind: 'tmpfs' }))
  try {
    t.is(fx.kind, 'tmpfs')
    fillUntilEnospc(t, path.join(fx.dir, 'f'), O_WRONLY | O_CREAT, fx.sizeBytes)
  } finally {
    fx.cleanup()
  }
})

// ---------------------------------------------------------------------------------------
// Page cache helpers

fxTest('residentPages / evictFile / dropCaches track the page cache (machine-wide)', [...LOOP, 'cmd:fincore', 'cmd:dd'], (t) => {
  const fx = must(loopFs(4096, 32))
  try {
    const file = path.join(fx.dir, 'cached')
    fs.writeFileSync(file, Buffer.alloc(1024 * 1024, 3))
    const fd = fs.openSync(file, 'r+')
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    const afterWrite = residentPages(file)
    t.is(afterWrite.total, (1024 * 1024) / 4096)
    t.is(afterWrite.sizeBytes, 1024 * 1024)
    t.true(afterWrite.resident > 0)
    evictFile(file)
    t.is(residentPages(file).resident, 0)
    fs.readFileSync(file)
    t.is(residentPages(file).resident, afterWrite.total)
    dropCaches()
    t.is(residentPages(file).resident, 0)
    // An O_DIRECT read leaves the page cache alone.
    const dfd = fs.openSync(file, O_RDONLY | O_DIRECT)
    fs.readSync(dfd, alignedBuffer(65536), 0, 65536, 0)
    fs.closeSync(dfd)
    t.is(residentPages(file).resident, 0)
  } finally {
    fx.cleanup()
  }
})

// ---------------------------------------------------------------------------------------
// faultfs

fxTest('faultfs: pattern content, O_DIRECT open, unaligned O_DIRECT allowed', FAULT, (t) => {
  const fx = must(faultFs({ size: 3 * 65536 + 123 }))
  try {
    t.is(fs.statSync(fx.file).size, 3 * 65536 + 123)
    t.deepEqual(fs.readFileSync(fx.file), patternBuffer(0, 3 * 65536 + 123))
    t.is(patternByte(0), 7)
    t.is(patternByte(1), 38)
    t.not(patternBuffer(4096, 512).compare(patternBuffer(0, 512)), 0)
    t.not(patternBuffer(512, 512).compare(patternBuffer(0, 512)), 0)
    const fd = fs.openSync(fx.file, O_RDONLY | O_DIRECT)
    try {
      const b = Buffer.alloc(100)
      t.is(fs.readSync(fd, b, 0, 100, 3), 100)
      t.deepEqual(b, patternBuffer(3, 100))
      // Reads past EOF are clamped.
      t.is(fs.readSync(fd, Buffer.alloc(4096), 0, 4096, 3 * 65536), 123)
    } finally {
      fs.closeSync(fd)
    }
  } finally {
    fx.cleanup()
  }
  t.false(isMountpoint(fx.dir))
  t.false(fs.existsSync(`/proc/${fx.pid}/cmdline`) && fs.readFileSync(`/proc/${fx.pid}/cmdline`, 'utf8').includes('faultfs'))
})

fxTest('faultfs: --eio-at makes reads covering the offset fail with EIO', FAULT, (t) => {
  const fx = must(faultFs({ size: 1 << 20, eioAt: [8192, 65536 + 100] }))
  try {
    const fd = fs.openSync(fx.file, O_RDONLY | O_DIRECT)
    try {
      const b = alignedBuffer(4096)
      t.is(fs.readSync(fd, b, 0, 4096, 4096), 4096)
      t.is(errnoOf(() => fs.readSync(fd, b, 0, 4096, 8192)), 'EIO')
      t.is(errnoOf(() => fs.readSync(fd, b, 0, 1, 8192)), 'EIO')
      t.is(fs.readSync(fd, b, 0, 4096, 8193), 4096)
      t.is(errnoOf(() => fs.readSync(fd, b, 0, 4096, 65536)), 'EIO')
      t.is(fs.readSync(fd, b, 0, 100, 65536), 100) // [65536, 65636) stops short of 65636
      t.is(fx.stats().eio, 3)
    } finally {
      fs.closeSync(fd)
    }
    // Buffered opens too (every open is FOPEN_DIRECT_IO).
    const bfd = fs.openSync(fx.file, O_RDONLY)
    try {
      t.is(errnoOf(() => fs.readSync(bfd, Buffer.alloc(4096), 0, 4096, 8192)), 'EIO')
    } finally {
      fs.closeSync(bfd)
    }
  } finally {
    fx.cleanup()
  }
})

fxTest('faultfs: --delay-ms holds every read reply back', [...FAULT, 'cmd:dd'], async (t) => {
  // Long enough that the reader is still waiting when the daemon's counter is read (the delay is
  // what is tested; its length is not measured). Serial: this file's synchronous fixture tests
  // (mkfs, losetup) would otherwise block this event loop for seconds at a time.
  const fx = must(faultFs({ size: 65536, delayMs: 3000 }))
  try {
    const child = spawn('dd', [`if=${fx.file}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct', 'status=none'], {
      stdio: 'ignore',
    })
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    await fx.waitFor((s) => s.inflight === 1, 'the read in flight')
    t.is(fx.stats().reads, 1)
    t.is(child.exitCode, null, 'the reader still waits')
    t.is(await exited, 0)
    t.is(fx.stats().inflight, 0)
  } finally {
    fx.cleanup()
  }
}, undefined, 'serial')

fxTest('faultfs: the hold file keeps a read in flight until released', [...FAULT, 'cmd:dd'], async (t) => {
  const fx = must(faultFs({ size: 65536, hold: 'held' }))
  try {
    const child = spawn('dd', [`if=${fx.file}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct', 'status=none'], {
      stdio: 'ignore',
    })
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    await fx.waitForHeld(1)
    t.is(child.exitCode, null, 'read must still be in flight')
    t.is(fx.stats().inflight, 1)
    fx.release()
    t.is(await exited, 0)
    t.is(fx.stats().held, 0)
    t.is(fx.stats().inflight, 0)
  } finally {
    fx.cleanup()
  }
})

fxTest('faultfs: cleanup works while a read is held', FAULT, async (t) => {
  const fx = must(faultFs({ size: 65536, hold: 'held' }))
  const child = spawn('dd', [`if=${fx.file}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct', 'status=none'], {
    stdio: 'ignore',
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  try {
    await fx.waitForHeld(1)
  } finally {
    fx.cleanup()
  }
  t.is(await exited, 0) // cleanup released the hold before unmounting
  t.false(isMountpoint(fx.dir))
  t.deepEqual(ourFixtureDirs(), [])
}, undefined, 'serial')

fxTest('faultfs: --short-reads returns half of each request', FAULT, (t) => {
  const fx = must(faultFs({ size: 65536, shortReads: true }))
  try {
    const fd = fs.openSync(fx.file, O_RDONLY | O_DIRECT)
    try {
      const b = Buffer.alloc(8192)
      t.is(fs.readSync(fd, b, 0, 8192, 0), 4096)
      t.deepEqual(b.subarray(0, 4096), patternBuffer(0, 4096))
      t.is(fs.readSync(fd, b, 0, 1, 100), 1)
      t.is(fs.readSync(fd, b, 0, 8192, 65536 - 10), 10)
    } finally {
      fs.closeSync(fd)
    }
  } finally {
    fx.cleanup()
  }
})

fxTest('faultfs: writes are stored in memory and obey --eio-at', FAULT, (t) => {
  const fx = must(faultFs({ size: 65536, eioAt: [40960] }))
  try {
    const fd = fs.openSync(fx.file, O_RDWR | O_DIRECT)
    try {
      const w = Buffer.from('written by a test')
      t.is(fs.writeSync(fd, w, 0, w.length, 1000), w.length)
      const b = Buffer.alloc(w.length + 2)
      fs.readSync(fd, b, 0, b.length, 999)
      t.is(b[0], patternByte(999))
      t.deepEqual(b.subarray(1, 1 + w.length), w)
      t.is(b[b.length - 1], patternByte(1000 + w.length))
      t.is(errnoOf(() => fs.writeSync(fd, alignedBuffer(4096), 0, 4096, 40960)), 'EIO')
      // Extending writes grow the file.
      t.is(fs.writeSync(fd, w, 0, w.length, 65536), w.length)
      t.is(fs.fstatSync(fd).size, 65536 + w.length)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
  } finally {
    fx.cleanup()
  }
})

fxTest('faultfs: a failing start cleans up after itself', FAULT, (t) => {
  t.throws(() => faultFs({ name: 'a/b' }), { message: /faultfs exited before mounting/ })
  t.deepEqual(ourFixtureDirs(), [])
}, undefined, 'serial')

// ---------------------------------------------------------------------------------------
// io_uring switches

fxTest('seccomp_deny -u: io_uring_setup gives EPERM under the seccomp filter', ['cc', 'python3'], (t) => {
  const launcher = must(seccompLauncher())
  const outside = uringProbe()
  t.log(`io_uring_setup outside the filter: ${outside}`)
  t.is(execFileSync(launcher, ['-u', 'python3', '-c', PROBE_PY], { encoding: 'utf8' }).trim(), 'errno 1')
  t.is(execFileSync(launcher, ['-u', '-e', '38', 'python3', '-c', PROBE_PY], { encoding: 'utf8' }).trim(), 'errno 38')
})

fxTest('runWithoutIoUring: a node child and its children see EPERM', ['cc', 'python3'], (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'odirect-nouring-'))
  try {
    const script = path.join(dir, 'child.ts')
    fs.writeFileSync(
      script,
      [
        "import { execFileSync } from 'node:child_process'",
        "import { readFileSync } from 'node:fs'",
        "const seccomp: string = /Seccomp:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '?'",
        `const probe: string = execFileSync('python3', ['-c', ${JSON.stringify(PROBE_PY)}], { encoding: 'utf8' }).trim()`,
        'console.log(JSON.stringify({ seccomp, probe, marker: process.env.MARKER }))',
      ].join('\n'),
    )
    const r = must(runWithoutIoUring(script, { MARKER: 'm1' }))
    t.is(r.status, 0, r.stderr)
    t.deepEqual(JSON.parse(r.stdout.trim()), { seccomp: '2', probe: 'errno 1', marker: 'm1' })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

fxTest('withIoUringDisabled: io_uring_disabled=2 gives EPERM, then is restored (machine-wide)', ['root', 'io_uring_disabled', 'python3'], async (t) => {
  const knob = '/proc/sys/kernel/io_uring_disabled'
  const before = fs.readFileSync(knob, 'utf8').trim()
  const inside = withIoUringDisabled(() => {
    t.is(fs.readFileSync(knob, 'utf8').trim(), '2')
    return uringProbe()
  })
  t.is(inside, 'errno 1')
  t.is(fs.readFileSync(knob, 'utf8').trim(), before)
  const asyncInside = await withIoUringDisabled(async () => {
    await new Promise((r) => setImmediate(r))
    return uringProbe()
  })
  t.is(asyncInside, 'errno 1')
  t.is(fs.readFileSync(knob, 'utf8').trim(), before)
  t.throws(() =>
    withIoUringDisabled(() => {
      throw new Error('boom')
    }),
  )
  t.is(fs.readFileSync(knob, 'utf8').trim(), before)
})

test.after.always('no fixture of this process is left behind', (t) => {
  t.deepEqual(ourFixtureDirs(), [])
  t.deepEqual(
    mounts().filter((m) => m.mountPoint.startsWith(`/var/tmp/odirect-fx-${process.pid}-`)),
    [],
  )
})
