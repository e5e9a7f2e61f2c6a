// Second adversary pass of the twenty-first session, on the session's new code.
// Found:
// 1. open(path, O_RDONLY | O_TRUNC) with O_DIRECT truncated through a second, writable descriptor
//    reopened from /proc/self/fd (the first pass's fix): at the process's descriptor limit that
//    reopen failed EMFILE, so the open failed where the kernel's (and node:fs's) succeeds with the
//    one descriptor it needs. Now truncate(2) on the /proc/self/fd link (crates/core/src/file.rs
//    truncate_held): no descriptor, the same checks (write permission, append-only, immutable,
//    read-only mount, a running executable: EACCES / EPERM / EROFS / ETXTBSY, file untouched).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { type FaultFs, faultFs, isSkip } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'

delete process.env.ODIRECT_BACKEND
const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
const CHILDREN = path.join(here, 'adversary-s21b')
const scratch = scratchDirs('s21b')
const PRLIMIT = spawnSync('sh', ['-c', 'command -v prlimit']).status === 0 ? undefined : 'prlimit is not installed'

// ---------------------------------------------------------------------------------------
// 1. open(O_RDONLY | O_TRUNC) at the descriptor limit

testIf(PRLIMIT, 'open(path, O_RDONLY | O_TRUNC) with one descriptor left under RLIMIT_NOFILE truncates and opens, as node:fs does (was: EMFILE from the second descriptor the held-back truncate reopened, the file untouched)', (t) => {
  const file = path.join(scratch(), 'emfile')
  const r = spawnSync('prlimit', ['--nofile=64', process.execPath, path.join(CHILDREN, 'emfile.cjs'), DIST, file], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout) as { fs: string; od: string; size: number }
  t.is(out.fs, 'opened 0', 'node:fs opens and truncates with the one descriptor left')
  t.is(out.od, 'opened 0')
  t.is(out.size, 0)
})

// ---------------------------------------------------------------------------------------
// 2. Read streams' ODIRECT_STREAM_READ_COPY=cpu: copies the consumer keeps, scribbles on, detaches
//
// Attacked without a fault. The `=cpu` rule copies a chunk into fresh memory and gives the read's
// buffer back to the stream's pool: a consumer keeping every chunk, overwriting each, or
// transferring its ArrayBuffer away must see the file's bytes in every chunk, then and at the end
// (a buffer the consumer holds read into again would show a later chunk's bytes, a detached one
// a refused or empty read). Counted over a FUSE file whose reads answer 50 ms late (the consumer
// waits for the device: the rule copies after its first window).
let fx: FaultFs | undefined
test.before(() => {
  if (FAULTFS_REASON !== undefined) return
  const f = faultFs({ size: 8 << 20, delayMs: 50, threads: 8 })
  if (isSkip(f)) throw new Error(f.skip)
  fx = f
})
test.after.always(() => fx?.cleanup())

for (const mode of ['keep', 'scribble', 'detach'] as const) {
  testIf(FAULTFS_REASON, `ODIRECT_STREAM_READ_COPY=cpu: a consumer that ${mode === 'keep' ? 'keeps every chunk' : mode === 'scribble' ? 'overwrites every chunk' : "transfers every chunk's ArrayBuffer away"} reads the file's bytes in every chunk, then and at the end`, (t) => {
    if (fx === undefined) throw new Error('no faultfs')
    const env: NodeJS.ProcessEnv = { ...process.env, ODIRECT_STREAM_READ_COPY: 'cpu' }
    for (const k of ['ODIRECT_STREAM_COPY_WAIT_US', 'ODIRECT_STREAM_COPY_BUSY', 'ODIRECT_STREAM_COPY_WAIT_SHARE']) delete env[k]
    const r = spawnSync(process.execPath, [path.join(CHILDREN, 'keep.cjs'), DIST, fx.file, mode, String(256 << 10)], { encoding: 'utf8', env, timeout: 300_000 })
    t.is(r.status, 0, r.stderr)
    const p = JSON.parse(r.stdout) as { chunks: number; bytes: number; size: number; bad: number; badLater: number; copies: number; copyWindows: number }
    t.log(JSON.stringify(p))
    t.is(p.bytes, 8 << 20)
    t.is(p.chunks, 32)
    t.is(p.bad, 0)
    t.is(p.badLater, 0)
    t.true(p.copies >= 4, `${p.copies} chunks were copies (the rule was exercised)`)
  })
}
