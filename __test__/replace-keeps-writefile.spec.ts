// writeFile's two gaps left by session 16 (src/files.ts):
// 1. writeFile onto a kernel pseudo-file (a sysfs attribute): node:fs writes it; odirect failed
//    EINVAL (sysfs has no O_DIRECT) by default and ERR_ODIRECT_FLAGS with direct 'prefer' or
//    'off' (fstat says 4096 bytes, so the last block was to be read back from a write-only
//    handle), and with `atomic` tried to make a temp file in /sys. Now written in place, in
//    sequence, buffered, as node:fs writes it, with or without `atomic` (as a device).
// 2. writeFile({ atomic }) aborted with writes in flight removed its temp file only after the
//    close, which waits for those writes: on a slow device a kill meanwhile (a second Ctrl-C) left
//    NAME.odirect-tmp-*. Now the temp file is removed first (as copyBlocks since session 16).
// Every check waits on an event (the FUSE server's counters, the directory's entries).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'

import test from 'ava'

import { writeFile } from '../dist/index.js'
import { until } from './helpers/events.ts'
import { faultFs, isSkip, loopDevice, sh, skipReason } from './helpers/fixtures.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'

const MiB = 1024 * 1024
const SYSFS_REASON = skipReason(['root', 'loop', 'cmd:blockdev']) ?? (fs.existsSync('/sys/block') ? undefined : 'no /sys/block')

// The read-ahead of a loop device of our own: a sysfs attribute that takes a number, harmless.
testIf(SYSFS_REASON, 'writeFile onto a sysfs attribute writes it in place, as node:fs (default, direct prefer/off, atomic, an iterable)', async (t) => {
  const dev = loopDevice(512, 4)
  if (isSkip(dev)) return t.fail(`the fixture failed although its preconditions hold: ${dev.skip}`)
  t.teardown(() => dev.cleanup())
  const attr = `/sys/block/${path.basename(dev.device)}/queue/read_ahead_kb`
  const value = (): string => fs.readFileSync(attr, 'utf8').trim()
  t.true(fs.statSync(attr).isFile())
  await fsp.writeFile(attr, '64')
  t.is(value(), '64', 'node:fs writes it (the reference)')
  const cases: Array<[string, () => Promise<void>, string]> = [
    ['default', () => writeFile(attr, '96'), '96'],
    ["direct: 'prefer'", () => writeFile(attr, '112', { direct: 'prefer' }), '112'],
    ["direct: 'off'", () => writeFile(attr, '128', { direct: 'off' }), '128'],
    ['atomic', () => writeFile(attr, Buffer.from('144'), { atomic: true }), '144'],
    // Each chunk one write(2), as fs.writeFile writes an iterable: the last one is the value.
    ['an iterable', () => writeFile(attr, ['8', '160']), '160'],
  ]
  for (const [name, write, want] of cases) {
    await write()
    t.is(value(), want, name)
  }
  t.false(fs.readdirSync(path.dirname(attr)).some((n) => n.includes('.odirect-tmp-')))
})

// A loop device over a faultfs file whose writes the test can hold, with ext4 on it: writeFile's
// temp file lives there, its direct writes reach the FUSE server and wait for the release.
testIf(FAULTFS_REASON ?? skipReason(['root', 'loop', 'cmd:mkfs.ext4', 'cmd:mount']), "writeFile({ atomic }) aborted while its writes are held: the temp file is gone before they complete (a kill then leaves nothing)", async (t) => {
  const fx = faultFs({ size: 64 * MiB, hold: true, holdWrites: true, threads: 4 })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  let device = ''
  let mnt = ''
  let writing: Promise<void> | undefined
  t.teardown(async () => {
    fx.release()
    // The write's descriptor is closed once it settles (a failed run may get here before).
    await writing?.catch(() => {})
    if (mnt !== '') {
      if (spawnSync('umount', [mnt]).status !== 0) spawnSync('umount', ['-l', mnt])
      fs.rmSync(mnt, { recursive: true, force: true })
    }
    if (device !== '') spawnSync('losetup', ['-d', device])
    fx.cleanup()
  })
  device = sh('losetup', ['--find', '--show', fx.file]).trim()
  sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'nodiscard', device])
  mnt = fs.mkdtempSync('/tmp/odirect-keeps-wf-')
  sh('mount', ['-t', 'ext4', device, mnt])
  const dst = path.join(mnt, 'dst')
  fs.writeFileSync(dst, 'old contents')
  spawnSync('sync', ['-f', dst])
  const temps = (): string[] => fs.readdirSync(mnt).filter((n) => n.includes('.odirect-tmp-'))

  fx.hold()
  const ac = new AbortController()
  const data = Buffer.alloc(8 * MiB, 0x61)
  writing = writeFile(dst, data, { atomic: true, signal: ac.signal })
  writing.catch(() => {})
  // A write of the temp file is held at the server (the loop device's request for it).
  await fx.waitFor((s) => s.held > 0, 'a write of the temp file held', 30_000)
  t.is(temps().length, 1, 'the temp file exists while its writes are held')
  ac.abort()
  // The abort's cleanup: the temp file goes while the write is still held (before: only after the
  // close, which waits for that write, so only after the release).
  await until(() => temps().length === 0, 'the temp file removed while its write is held', 20_000)
  t.true(fx.stats().held > 0, 'the write is still held')
  fx.release()
  const e = await t.throwsAsync(writing)
  t.is((e as { code?: string }).code, 'ABORT_ERR')
  t.deepEqual(temps(), [])
  t.is(fs.readFileSync(dst, 'utf8'), 'old contents')
})
