// When staged reads reach the kernel. Reads started one by one in one tick on a file of a block
// device go to the kernel in groups of 4 as they are staged (the engine's SUBMIT_EVERY), not all
// at the end of the tick: when a wake-up delivers a round of completions, the first
// continuations' new reads reach the device while later ones still run. On tmpfs no device
// works on them (only CPUs copying), nor on a buffered file (a page-cache hit is copied by the
// submitting call), so those wait for the end of the tick (one call). The first of the tick,
// started with nothing else in flight, goes in its own call everywhere (a lone op: see
// alone.spec.ts). Seen in the ring's own SQ head (/proc/self/fdinfo of the io_uring
// descriptor): what the kernel took.
// The tmpfs rows test the loop's path: a lone small op on tmpfs otherwise is made inline
// (inline-tmpfs.spec.ts) or waits in the kernel (qd1-tmpfs.spec.ts). Read at the engine's
// creation, before any open().
process.env.ODIRECT_WAIT_TMPFS = '0'
process.env.ODIRECT_INLINE_TMPFS = '0'

import * as fs from 'node:fs'

import test from 'ava'

import { open } from '../dist/index.js'
import { sqHeads } from './helpers/qd1.js'
import { scratchDirs } from './helpers/scratch.js'

const scratch = scratchDirs('submit')
const UNIT = 4096


for (const where of ['disk', 'tmpfs', 'disk, buffered'] as const) {
  test.serial(`${where}: 9 reads started in one tick: ${where === 'disk' ? '5 reach the kernel before the tick ends: the first alone, then a group of 4' : 'only the first (alone) reaches the kernel before the tick ends'}`, async (t) => {
    const dir = where === 'tmpfs' ? scratch('/dev/shm') : scratch()
    const file = `${dir}/data`
    fs.writeFileSync(file, Buffer.alloc(16 * UNIT, 5))
    const fh = await open(file, 'r', { backend: 'io_uring', direct: where === 'disk, buffered' ? 'off' : 'prefer' })
    try {
      if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
      t.is(fh.fsType === 'tmpfs', where === 'tmpfs', `the file is on ${fh.fsType}`)
      t.is(fh.direct, where !== 'disk, buffered')
      const bufs = Array.from({ length: 9 }, () => fh.alloc(UNIT))
      // The ring exists (made by the first op) and is idle.
      await fh.read(bufs[0], { position: 0 })
      const before = sqHeads()
      const ps = bufs.map((b, i) => fh.read(b, { position: i * UNIT }))
      const during = sqHeads() - before
      await Promise.all(ps)
      const after = sqHeads() - before
      t.is(during, where === 'disk' ? 5 : 1)
      t.is(after, 9, 'all 9 went in by the end of the tick')
      t.true(bufs.every((b) => b.every((x) => x === 5)))
    } finally {
      await fh.close()
    }
  })
}

// A native (typed-array) batch stages its first window in the call itself, and refills it at
// reap time: on a device's file its ops go to the kernel in groups of 8 as they are staged
// (io_uring holds a submission's block requests until its last SQE is issued), on tmpfs and
// buffered files at the end of the tick.
for (const where of ['disk', 'tmpfs', 'disk, buffered'] as const) {
  test.serial(`${where}: a typed readMany of 20 ops: ${where === 'disk' ? '16 reach the kernel before the call returns, in 2 groups of 8' : 'none reaches the kernel before the tick ends'}`, async (t) => {
    const dir = where === 'tmpfs' ? scratch('/dev/shm') : scratch()
    const file = `${dir}/data`
    const content = Buffer.alloc(32 * UNIT)
    for (let i = 0; i < 32; i++) content.fill(i + 1, i * UNIT, (i + 1) * UNIT)
    fs.writeFileSync(file, content)
    const fh = await open(file, 'r', { backend: 'io_uring', direct: where === 'disk, buffered' ? 'off' : 'prefer' })
    try {
      if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
      t.is(fh.fsType === 'tmpfs', where === 'tmpfs', `the file is on ${fh.fsType}`)
      const n = 20
      const memory = fh.alloc(n * UNIT)
      const offsets = new Uint32Array(n).map((_, i) => i * UNIT)
      const lengths = new Uint32Array(n).fill(UNIT)
      // Backwards through the file: op i reads block 31 - i.
      const positions = new Float64Array(n).map((_, i) => (31 - i) * UNIT)
      await fh.read(fh.alloc(UNIT), { position: 0 })
      const before = sqHeads()
      const p = fh.readMany({ memory, offsets, lengths, positions }, { window: n })
      const during = sqHeads() - before
      const results = await p
      t.is(sqHeads() - before, n, 'all went in by the end of the tick')
      t.is(during, where === 'disk' ? 16 : 0)
      t.deepEqual([...results], new Array<number>(n).fill(UNIT))
      for (let i = 0; i < n; i++) t.is(memory[i * UNIT], 32 - i, `op ${i} read its own block`)
    } finally {
      await fh.close()
    }
  })
}
