// The odirect command as a coreutils user meets it: --version, help CMD, CMD --help everywhere,
// exit codes (0 ok, 1 failed, 2 usage, 129 SIGHUP (adversary-s16c), 130 SIGINT, 143 SIGTERM: see streams.spec.ts for the
// signals), --json, MiB units, same-file refusal, sparse-aware cp, CLI-phrased hints, block devices.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'
import { scratchDirs } from './helpers/scratch.ts'

import { isSkip, loopDevice, skipReason } from './helpers/fixtures.js'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const CLI = path.join(root, 'dist', 'cli.js')
const MiB = 1024 * 1024
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 })

const scratch = scratchDirs('cli')

test('--version, -V print the package version', (t) => {
  const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version
  for (const flag of ['--version', '-V']) {
    const r = run(flag)
    t.is(r.status, 0, r.stderr)
    t.is(r.stdout.trim(), `odirect ${version}`)
  }
})

test('help, help CMD and CMD --help print the right usage and exit 0; usage errors exit 2', (t) => {
  const top = run('help')
  t.is(top.status, 0)
  t.regex(top.stdout, /usage: odirect <command>/)
  t.regex(top.stdout, /--json/, '--json is documented')
  for (const [args, want] of [
    [['help', 'cp'], /usage: odirect cp/],
    [['cp', '--help'], /usage: odirect cp/],
    [['help', 'probe'], /usage: odirect probe/],
    [['probe', '--help'], /usage: odirect probe/],
  ] as const) {
    const r = run(...args)
    t.is(r.status, 0, `${args.join(' ')}: ${r.stderr}`)
    t.regex(r.stdout, want)
    t.notRegex(r.stdout, /kernel:/, `${args.join(' ')} does not run the command`)
  }
  t.is(run().status, 2)
  const unknown = run('frobnicate')
  t.is(unknown.status, 2)
  t.regex(unknown.stderr, /unknown command 'frobnicate'/)
  t.is(run('help', 'frobnicate').status, 2)
  t.is(run('probe', '--bogus').status, 2)
  t.is(run('cp', 'a').status, 2)
  t.is(run('cp', 'a', 'b', '--sparse=sometimes').status, 2)
})

test('probe --json is machine-readable; a missing path is a CLI-phrased error', (t) => {
  const dir = scratch()
  const r = run('probe', dir, '--json')
  t.is(r.status, 0, r.stderr)
  const j = JSON.parse(r.stdout) as { direct: { works: boolean }; isBlockDevice: boolean }
  t.true(j.direct.works)
  t.false(j.isBlockDevice)
  const cp = run('cp', path.join(dir, 'missing'), path.join(dir, 'x'))
  t.is(cp.status, 1)
  t.regex(cp.stderr, /No such file or directory \(ENOENT\)/)
  t.notRegex(cp.stderr, /open with|flags|\{ direct/, 'no API advice for a CLI user')
})

test('cp: same file refused (exit 1, nothing touched), tiny copies say no rate, --json result', (t) => {
  const dir = scratch()
  const f = path.join(dir, 'f.txt')
  fs.writeFileSync(f, 'precious')
  const same = run('cp', f, f)
  t.is(same.status, 1)
  t.regex(same.stderr, /same file/)
  t.is(fs.readFileSync(f, 'utf8'), 'precious')
  const viaDir = run('cp', f, dir)
  t.is(viaDir.status, 1, 'copying into its own directory is the same file too')
  t.deepEqual(fs.readdirSync(dir), ['f.txt'])
  const tiny = run('cp', f, path.join(dir, 'g.txt'))
  t.is(tiny.status, 0, tiny.stderr)
  t.regex(tiny.stderr, /^copied 8 bytes \(8 B\) in [\d.]+ s\n$/)
  t.notRegex(tiny.stderr, /MB\/s|0 MB/)
  const j = run('cp', '--json', f, path.join(dir, 'h.txt'))
  t.is(j.status, 0, j.stderr)
  const res = JSON.parse(j.stdout) as { bytes: number; bytesWritten: number; destination: { path: string } }
  t.is(res.bytes, 8)
  t.is(res.destination.path, path.join(dir, 'h.txt'))
})

test('cp keeps holes (allocated blocks before and after) and reports rates in MiB/s', (t) => {
  const dir = scratch()
  const src = path.join(dir, 'sparse.img')
  const fd = fs.openSync(src, 'w')
  fs.writeSync(fd, randomBytes(MiB), 0, MiB, 10 * MiB)
  fs.writeSync(fd, randomBytes(MiB), 0, MiB, 80 * MiB)
  fs.ftruncateSync(fd, 100 * MiB)
  fs.closeSync(fd)
  const dst = path.join(dir, 'copy.img')
  const r = run('cp', '--verify', src, dst)
  t.is(r.status, 0, r.stderr)
  t.regex(r.stderr, /copied 104857600 bytes \(100\.0 MiB\)/)
  t.regex(r.stderr, /98\.0 MiB of holes kept/)
  t.notRegex(r.stderr, /MB\/s/)
  const before = fs.statSync(src).blocks * 512
  const after = fs.statSync(dst).blocks * 512
  t.true(after <= before + 64 * 1024, `copy allocates ${after} bytes, source ${before}`)
  t.true(fs.readFileSync(dst).equals(fs.readFileSync(src)))
  const dense = path.join(dir, 'dense.img')
  t.is(run('cp', '--quiet', '--sparse=never', src, dense).status, 0)
  t.true(fs.statSync(dense).blocks * 512 >= 100 * MiB)
})

const LOOP_REASON = skipReason(['root', 'loop', 'cmd:blockdev'])
;(LOOP_REASON === undefined ? test : test.skip)(`probe of a block device says block device, not the filesystem of /dev${LOOP_REASON ? ` (skipped: ${LOOP_REASON})` : ''}`, (t) => {
  const dev = loopDevice(512, 16)
  if (isSkip(dev)) return t.fail(`the loop device failed although its preconditions hold: ${dev.skip}`)
  try {
    const r = run('probe', dev.device)
    t.regex(r.stdout, /\(block device\)/)
    t.regex(r.stdout, /filesystem: +none \(block device\)/)
    t.notRegex(r.stdout, /tmpfs|devtmpfs/)
    const j = JSON.parse(run('probe', '--json', dev.device).stdout) as { isBlockDevice: boolean; fsType: string }
    t.true(j.isBlockDevice)
    t.is(j.fsType, '')
  } finally {
    dev.cleanup()
  }
})
if (LOOP_REASON !== undefined) console.log(`skipped block-device probe test: ${LOOP_REASON}`)
