// A failed copy or write onto a character device or FIFO leaves the device node where it is.
// node:fs's copyFile (libuv's uv_fs_copyfile) unlinks its destination when the copy fails: as
// root, fs.copyFile(f, '/dev/full') (ENOSPC) removed the machine's /dev/full, and the next
// program to open it created a regular file there (seen on this project's machine: CI cases that
// expect ENOSPC from /dev/full then wrote into a file). odirect writes a device or FIFO
// destination in place and never removes it. The devices here are private nodes (mknod) in a
// scratch directory: the machine's own are never touched.
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import * as od from '../dist/index.js'
import { scratchDirs } from './helpers/scratch.ts'
import { testIf } from './helpers/skips.ts'
import { skipReason } from './helpers/fixtures.js'

const scratch = scratchDirs('devdst')
const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js')
const MKNOD_REASON = skipReason(['root', 'cmd:mknod'])

/** A private full device (major 1, minor 7: every write fails ENOSPC) in `dir`. */
function fullDevice(dir: string): string {
  const p = path.join(dir, 'full')
  const r = spawnSync('mknod', ['-m', '666', p, 'c', '1', '7'], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`mknod: ${r.stderr}`)
  return p
}

testIf(MKNOD_REASON, 'copyFile, writeFile (plain, atomic, flush), a write stream and odirect cp onto a full character device fail ENOSPC and leave the device node (node:fs copyFile removes it)', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, randomBytes(100_000))
  const dev = fullDevice(dir)
  const isDev = (): boolean => fs.lstatSync(dev, { throwIfNoEntry: false })?.isCharacterDevice() === true
  const code = (p: Promise<unknown>): Promise<unknown> => p.then(() => 'ok', (e: { code?: unknown }) => e.code)
  t.is(await code(od.copyFile(src, dev)), 'ENOSPC', 'copyFile')
  t.true(isDev(), 'copyFile left the device')
  for (const o of [{}, { atomic: true }, { flush: true }]) {
    t.is(await code(od.writeFile(dev, 'data', o)), 'ENOSPC', `writeFile ${JSON.stringify(o)}`)
    t.true(isDev(), `writeFile ${JSON.stringify(o)} left the device`)
  }
  const ws = od.createWriteStream(dev)
  const err = await new Promise<unknown>((resolve) => {
    ws.on('error', (e: { code?: unknown }) => resolve(e.code))
    ws.on('finish', () => resolve('finish'))
    ws.end(Buffer.alloc(8192, 1))
  })
  t.is(err, 'ENOSPC', 'write stream')
  t.true(isDev(), 'the write stream left the device')
  const cp = spawnSync(process.execPath, [CLI, 'cp', '--quiet', src, dev], { encoding: 'utf8' })
  t.not(cp.status, 0)
  t.true(isDev(), 'odirect cp left the device')
  t.deepEqual(fs.readdirSync(dir).sort(), ['full', 'src'], 'no temp file')
  // The reference (logged, not asserted: a fixed libuv would keep it).
  await fsp.copyFile(src, dev).catch(() => undefined)
  t.log(`node:fs copyFile onto the device, failing: the node ${isDev() ? 'stays' : 'was removed'}`)
})
