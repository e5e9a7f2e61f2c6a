// Streams, eleventh session: the write stream's bound on writes in the kernel when its native
// chain refuses a block, and the read stream's chunk memory faulted in before its read.
import { spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { once } from 'node:events'

import test from 'ava'

import { createWriteStream, open } from '../dist/index.js'
import { scratchDirs } from './helpers/scratch.ts'
import { endSamplingKernel, inKernel, offerBlocks, refuseChain } from './helpers/wstream.ts'

const scratch = scratchDirs('streams-s11')


test.serial('write stream: a block its chain refuses (the write not staged as its own) keeps the writes in the kernel at writeBehind', async (t) => {
  const file = path.join(scratch(), 'refused.bin')
  await using fh = await open(file, 'w+')
  const chain = refuseChain(t)
  const writeBehind = 2
  const ws = createWriteStream(fh, { chunkSize: 64 * 1024, writeBehind })
  await once(ws, 'ready')
  // Ten blocks offered at once (every block the stream started is then in the kernel or staged).
  const { early, accepted, block } = await offerBlocks(fh, ws, 10, 64 * 1024)
  const most = await endSamplingKernel(fh, ws, early.inKernel)
  chain.restore()
  t.true(chain.refused() >= 1)
  t.deepEqual(early, { inKernel: writeBehind, accepted: 2 * writeBehind - 1 })
  t.true(most <= writeBehind, `in the kernel: ${most}`)
  t.is(accepted(), 10)
  t.true(fs.readFileSync(file).equals(Buffer.concat(Array.from({ length: 10 }, () => block))))
})

test('read stream: chunks in new memory regions come faulted in by the pool\'s helper thread, not by the read that fills them (ODIRECT_POOL_SPARES)', (t) => {
  const file = path.join(scratch(), 'spares.bin')
  const data = randomBytes(48 * 1024 * 1024)
  fs.writeFileSync(file, data)
  const want = createHash('sha256').update(data).digest('hex')
  // A process of its own: a pool that holds no memory yet, so the stream's chunks need new
  // regions. It reads the file in default mode (chunks dropped) and hashes it.
  const child = (spares: string): { sha: string; stats: number[] } => {
    const script = `
      const { createHash } = require('node:crypto')
      const od = require(${JSON.stringify(path.join(process.cwd(), 'dist', 'index.js'))})
      const { native } = require(${JSON.stringify(path.join(process.cwd(), 'dist', 'src', 'native.js'))})
      ;(async () => {
        const h = createHash('sha256')
        for await (const c of od.createReadStream(${JSON.stringify(file)})) h.update(c)
        console.log(JSON.stringify({ sha: h.digest('hex'), stats: native.poolSpareStats() }))
      })()`
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ODIRECT_POOL_SPARES: spares } })
    t.is(r.status, 0, r.stderr)
    return JSON.parse(r.stdout) as { sha: string; stats: number[] }
  }
  const on = child('1')
  const off = child('0')
  t.is(on.sha, want)
  t.is(off.sha, want)
  // [mapped by the allocating (JS) thread, taken from the spares, made by the helper, ...]
  const [hereOn, takenOn, madeOn] = on.stats
  const [hereOff, takenOff, madeOff] = off.stats
  t.true(takenOn >= 1, `spares taken: ${on.stats}`)
  t.true(madeOn >= takenOn)
  // Without spares every new region is mapped (and faulted in) by the JS thread.
  t.true(hereOff >= 1, `regions the JS thread mapped: ${hereOn} with a spare, ${hereOff} without`)
  t.deepEqual([takenOff, madeOff], [0, 0])
})
