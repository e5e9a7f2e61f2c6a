// Adversary, twentieth session, second pass (advb): the automatic io_uring registration of odirect
// memory (crates/napi/src/pins.rs AutoTable, ODIRECT_AUTO_REG), read streams' copies
// (src/streams/core.ts READ_COPY), and this session's other changes. Every byte is checked.
process.env.ODIRECT_INLINE_TMPFS = '0'

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { faultFs, isSkip } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const scratch = scratchDirs('s20b')
const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : undefined
const MEMLOCK_TOOLS = spawnSync('sh', ['-c', 'command -v prlimit && command -v setpriv']).status === 0

const UNIT = 4096
/** [registered so far, slots emptied by sweeps so far, slots in use now] of this thread's engine. */
const auto = (): number[] => (getEngine().native.callStats as number[]).slice(8, 11)

testIf(
  FAULTFS_REASON,
  "a typed batch staged op by op (window 1) on a slow FUSE file, its region in the automatic table, while the caller's registration replaces the table and is let go: its later ops, staged with the region's old slot index, go plain and land (without the ring's holds() check: 7 of 8 EFAULT)",
  async (t) => {
    const n = 8
    const fx = faultFs({ size: n * UNIT, hold: true, threads: 4 })
    if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
    try {
      const fh = await open(fx.file, 'r+')
      try {
        const memory = fh.alloc(n * UNIT)
        for (let i = 0; i < n; i++) memory.fill(i + 1, i * UNIT, (i + 1) * UNIT)
        const batch = {
          memory,
          offsets: Uint32Array.from({ length: n }, (_, i) => i * UNIT),
          lengths: new Uint32Array(n).fill(UNIT),
          positions: Float64Array.from({ length: n }, (_, i) => i * UNIT),
        }
        await fh.writeMany(batch)
        memory.fill(0)
        await fh.readMany(batch) // the region's second use: it has a slot now
        const s = auto()
        t.log('backend', fh.backend, 'direct', fh.direct, 'auto', s)
        if (fh.backend === 'io_uring' && fh.direct) t.is(s[2], 1, 'the region in a slot')
        memory.fill(0)
        fx.hold()
        const p = fh.readMany(batch, { window: 1 })
        await fx.waitForHeld(1)
        const reg = fh.registerBuffers(4, UNIT)
        reg.unregister()
        fx.release()
        const r = await p.then(
          (v) => v,
          (e: NodeJS.ErrnoException) => e,
        )
        if (r instanceof Error) t.fail(`the batch failed: ${r.code} ${r.message}`)
        else t.deepEqual([...r], new Array<number>(n).fill(UNIT))
        for (let i = 0; i < n; i++) t.true(memory.subarray(i * UNIT, (i + 1) * UNIT).every((x) => x === i + 1), `block ${i}`)
      } finally {
        await fh.close()
      }
    } finally {
      fx.cleanup()
    }
  },
  true,
)

{
  const why = MEMLOCK_TOOLS ? undefined : 'prlimit/setpriv (util-linux) not installed'
  ;(why === undefined ? test : test.skip)(
    `under an 8 MiB RLIMIT_MEMLOCK without CAP_IPC_LOCK (a normal user's default), the automatic table spends none of the user's locked memory: after 250 x 64 KiB buffers written twice here, a worker's fh.registerBuffers(48, 64 KiB) works (was: ERR_ODIRECT_MEMLOCK, 86 automatic slots had taken the limit; io_uring charges per user)${why ? ` (skipped: ${why})` : ''}`,
    (t) => {
      const dir = scratch(shm)
      const limit = 8 << 20
      const r = spawnSync(
        'prlimit',
        [`--memlock=${limit}:${limit}`, 'setpriv', '--inh-caps=-ipc_lock', '--bounding-set=-ipc_lock', process.execPath, path.join(HERE, 'adversary-s20b', 'memlock.cjs'), path.join(dir, 'auto.bin'), path.join(dir, 'reg.bin'), '250'],
        { encoding: 'utf8', timeout: 120_000 },
      )
      t.is(r.status, 0, r.stderr)
      const out = JSON.parse(r.stdout.trim()) as { auto: number[]; worker: string; backend: string; kept: number }
      t.log(JSON.stringify(out))
      t.is(out.kept, 250)
      t.is(out.worker, 'ok', "the worker's registration")
    },
  )
}
