// Adversary of the eleventh session's defaults (twelfth session): registered memory as
// READ_FIXED / WRITE_FIXED on tmpfs (pins.rs, batch.rs), the lone tmpfs op's in-kernel wait
// (engine.rs tmpfs_wait) over swapped-out pages, and the lookup of registered memory when the
// registration changes under ops already called. Every check waits on an event (a promise, a
// kernel counter); none on time.
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

import { open } from '../dist/index.js'
import { scratchDirs } from './helpers/scratch.ts'

const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const scratch = scratchDirs('adv-s12')
const KiB = 1024
const roots = ['/var/tmp', ...(fs.existsSync('/dev/shm') ? ['/dev/shm'] : [])]

// ---------------------------------------------------------------------------------------
// 1. Registered buffers replaced while ops on the old ones are called but not yet submitted
//
// An op on registered memory records its fixed-buffer index when it is called; it reaches the
// kernel at the flush (a microtask later) or, for a windowed batch, at a later reap. A new
// registration made in between (fh.registerBuffers replaces the backend's table) gave the
// old index to a table where that index is another buffer: the kernel refused the op with
// EFAULT, an op the caller made on memory that was (and stays) valid.

for (const root of roots) {
  test.serial(`${root}: ops on registered buffers called just before a new registration succeed with the right bytes`, async (t) => {
    const fh = await open(path.join(scratch(root), 'f'), 'w+', { backend: BACKEND })
    try {
      const init = Buffer.alloc(64 * KiB, 7)
      await fh.write(fh.alloc(64 * KiB).fill(7), 0, 64 * KiB, 0)
      const reg = fh.registerBuffers(2, 64 * KiB)
      const [a, b] = reg.buffers as [Buffer, Buffer]
      a.fill(0)
      b.fill(9)
      const p = [fh.read(a, 0, 4 * KiB, 0), fh.write(b, 0, 4 * KiB, 8 * KiB)]
      const reg2 = fh.registerBuffers(2, 64 * KiB)
      const r = await Promise.allSettled(p)
      t.deepEqual(
        r.map((x) => (x.status === 'fulfilled' ? x.value : (x.reason as Error).message)).map((v) => (typeof v === 'string' ? v : 'bytesRead' in v ? v.bytesRead : v.bytesWritten)),
        [4 * KiB, 4 * KiB],
      )
      t.true(a.subarray(0, 4 * KiB).equals(init.subarray(0, 4 * KiB)), 'the read brought the file bytes')
      const back = fh.alloc(4 * KiB)
      await fh.read(back, 0, 4 * KiB, 8 * KiB)
      t.true(back.equals(Buffer.alloc(4 * KiB, 9)), 'the write put its bytes in the file')
      // The new registration still works as registered memory.
      const c = reg2.buffers[0] as Buffer
      t.is((await fh.read(c, 0, 4 * KiB, 8 * KiB)).bytesRead, 4 * KiB)
      t.true(c.subarray(0, 4 * KiB).equals(back))
      reg2.unregister()
      reg.unregister()
    } finally {
      await fh.close()
    }
  })

  test.serial(`${root}: a windowed typed batch over registered memory survives a new registration while it runs`, async (t) => {
    const fh = await open(path.join(scratch(root), 'f'), 'w+', { backend: BACKEND })
    try {
      const n = 64
      const reg = fh.registerBuffers(1, n * 4 * KiB)
      const mem = reg.buffers[0] as Buffer
      for (let i = 0; i < n; i++) mem.fill(i + 1, i * 4 * KiB, (i + 1) * 4 * KiB)
      const offsets = new Uint32Array(n).map((_, i) => i * 4 * KiB)
      const lengths = new Uint32Array(n).fill(4 * KiB)
      const positions = new Float64Array(n).map((_, i) => i * 4 * KiB)
      // window 2: most ops go in at later reaps, after the registration below.
      const w = fh.writeMany({ memory: mem, offsets, lengths, positions }, { window: 2 })
      const reg2 = fh.registerBuffers(1, 4 * KiB)
      const results = await w.then(
        (r) => [...r],
        (e: { results?: unknown; message: string }) => e.results ?? e.message,
      )
      t.deepEqual(results, new Array<number>(n).fill(4 * KiB))
      const back = fh.alloc(n * 4 * KiB)
      await fh.read(back, 0, n * 4 * KiB, 0)
      t.true(back.equals(mem), 'every op wrote its bytes')
      reg2.unregister()
      reg.unregister()
    } finally {
      await fh.close()
    }
  })
}
