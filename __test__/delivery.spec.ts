// How completions are handed to JS: a wake-up that reaps more completions than one delivery array
// holds (4096) delivers them in several calls, and the promises settled by the first call start
// new ops before the next call runs (their continuations run in between, as after any I/O
// callback). Those new ops must not take the ids of completions still being delivered.
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

import { open } from '../dist/index.js'

const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : '/var/tmp', 'odirect-delivery-'))
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }))

const UNIT = 4096
const N = 6000

test('[threadpool] 6000 reads reaped in one wake-up, each continuation starting a new read: every promise settles with its own result', async (t) => {
  t.timeout(120_000)
  const file = path.join(dir, 'data')
  fs.writeFileSync(file, Buffer.alloc(UNIT, 0xab))
  const fh = await open(file, 'r', { backend: 'threadpool' })
  try {
    const first = Array.from({ length: N }, () => fh.alloc(UNIT))
    const second = Array.from({ length: N }, () => fh.alloc(UNIT))
    for (const b of [...first, ...second]) b.fill(0)
    const done: Promise<number>[] = first.map((b, i) =>
      fh.read(b, { position: 0 }).then(async (r) => {
        t.is(r.bytesRead, UNIT)
        // Started while later completions of the same reap may still wait for their delivery.
        const r2 = await fh.read(second[i], { position: 0 })
        return r2.bytesRead
      }),
    )
    // The reads reach the pool at this microtask checkpoint.
    await Promise.resolve()
    // Keep the JS thread from reaping until the pool has read every block (the bytes arriving
    // in the buffers are the event waited for): the completions pile up for one wake-up.
    for (;;) {
      let filled = 0
      for (const b of first) if (b[0] === 0xab && b[UNIT - 1] === 0xab) filled++
      if (filled === N) break
    }
    const got = await Promise.all(done)
    t.true(got.every((n) => n === UNIT))
    t.true(second.every((b) => b[0] === 0xab && b[UNIT - 1] === 0xab))
  } finally {
    await fh.close()
  }
})
