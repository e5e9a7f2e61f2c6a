// Tenth-session adversary: what a user (or an abuser) does to the ninth session's additions.
// ODIRECT_INLINE_TMPFS=1 makes a lone read of a tmpfs file with pread(2) on the JS thread: while
// another process truncates the file, punches holes in it and rewrites it, every inline read
// returns at most what was asked, each byte either the block's own pattern or a hole's zero
// (never another block's bytes, never past the buffer), and the engine keeps going.
//
// The switch is read once per process at the first engine's creation: set before any open().
process.env.ODIRECT_INLINE_TMPFS = '1'

import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

import { open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { scratchDirs } from './helpers/scratch.js'

const scratch = scratchDirs('adversary-s10')
const U = 4096
const N = 256

test.serial('ODIRECT_INLINE_TMPFS=1: inline reads of a tmpfs file another process truncates, hole-punches and rewrites return only its own bytes or zeros', async (t) => {
  const file = path.join(scratch('/dev/shm'), 'f')
  const pat = Buffer.alloc(N * U)
  for (let i = 0; i < N; i++) pat.fill(i + 1, i * U, (i + 1) * U)
  fs.writeFileSync(file, pat)
  // The mutator: 3000 rounds of a truncate to a random sector boundary, a punched 4 KiB hole
  // (fallocate(1), util-linux) or the whole pattern written back.
  const script = `
    const fs = require('node:fs'); const { execFileSync } = require('node:child_process')
    const f = process.argv[1]; const pat = fs.readFileSync(f); const fd = fs.openSync(f, 'r+')
    let punch = true
    for (let i = 0; i < 3000; i++) {
      const r = Math.random()
      if (r < 0.3) fs.ftruncateSync(fd, Math.floor(Math.random() * ${(N * U) / 512}) * 512)
      else if (r < 0.4 && punch) {
        try { execFileSync('fallocate', ['-p', '-o', String(Math.floor(Math.random() * ${N}) * ${U}), '-l', '${U}', f]) } catch { punch = false }
      } else fs.writeSync(fd, pat, 0, pat.length, 0)
    }`
  const child = spawn(process.execPath, ['-e', script, file], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  child.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  let done = false
  void exited.then(() => (done = true))

  const fh = await open(file, 'r', { direct: 'prefer' })
  const inline0 = getEngine().native.inlineReads
  let reads = 0
  let short = 0
  const wrong: string[] = []
  try {
    const b = fh.alloc(U)
    while (!done) {
      const i = Math.floor(Math.random() * N)
      b.fill(0xee)
      const { bytesRead } = await fh.read(b, { position: i * U })
      reads++
      if (bytesRead < U) short++
      if (bytesRead > U || bytesRead < 0) wrong.push(`block ${i}: bytesRead ${bytesRead}`)
      for (let k = 0; k < bytesRead; k++) {
        if (b[k] !== 0 && b[k] !== i + 1) {
          wrong.push(`block ${i} byte ${k}: ${b[k]}`)
          break
        }
      }
      if (wrong.length > 5) break
    }
  } finally {
    await fh.close()
    child.kill()
  }
  t.is(await exited, wrong.length > 5 ? null : 0, err)
  const inline = getEngine().native.inlineReads - inline0
  t.log(`${reads} reads (${inline} inline, ${short} short) beside 3000 truncates / hole punches / rewrites`)
  t.deepEqual(wrong, [])
  t.true(inline > 0, 'reads were made inline')
})
