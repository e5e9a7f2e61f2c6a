// A failed write stream's cut-back (src/streams/core.ts BlockWriter.beforeClose, ownTail): it
// cuts the file back to the first byte it did not write only when every byte past that point is
// provably its own (what its blocks wrote, read back and compared, or zeros where a block failed);
// another writer's bytes there leave the size as it is, as fs's stream (which never truncates)
// leaves them. adversary-s18.spec has the Node stream's case; here the web stream's, and the cut
// with transferChunks (the taken blocks kept for the comparison until the stream's end).
// Deterministic: faultfs holds the first block in the server while the others queue behind it,
// then fails the second with EIO; nothing is timed (the web stream's teardown has no event: the
// wait is for its descriptor to go, bounded).
import * as fs from 'node:fs'

import test from 'ava'

import * as od from '../dist/index.js'
import { faultFs, isSkip } from './helpers/fixtures.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'
import { openedNoMore } from './helpers/holds.ts'
import { writeAll } from './helpers/wstream.ts'

const block = 64 * 1024

function range(file: string, from: number, len: number): Buffer {
  const fd = fs.openSync(file, 'r')
  try {
    const b = Buffer.alloc(len)
    const n = fs.readSync(fd, b, 0, len, from)
    return b.subarray(0, n)
  } finally {
    fs.closeSync(fd)
  }
}

testIf(FAULTFS_REASON, 'web write stream failing EIO at its second block keeps the bytes another writer wrote inside that block meanwhile: the size is left as it is (was: cut back to the first block, their bytes gone) (faultfs)', async (t) => {
  const fx = faultFs({ size: 0, eioAt: [block + 100], hold: true, holdWrites: true, threads: 4 })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  t.teardown(() => fx.cleanup())
  const w = od.writableWebStream(fx.file, { chunkSize: block, writeBehind: 4, datasync: false, direct: 'prefer', flags: 'r+' }).getWriter()
  // An empty chunk: resolved once the stream's file is open (its size then: 0).
  await w.write(new Uint8Array(0))
  const theirs = Buffer.alloc(100, 0x5a)
  const fd = fs.openSync(fx.file, 'r+')
  t.is(fs.writeSync(fd, theirs, 0, 100, block + 200), 100)
  fs.closeSync(fd)
  fx.hold()
  const failed = writeAll(w, [Buffer.alloc(4 * block, 0x11)])
  await fx.waitForHeld(1)
  fx.release()
  const e = (await failed) as { code?: string; position?: number } | undefined
  t.is(e?.code, 'EIO')
  t.is(e?.position, block)
  t.true(await openedNoMore(fx.file), 'the stream closed its file')
  const size = fs.statSync(fx.file).size
  t.true(size >= block + 300, `the file is ${size} bytes: the other writer's bytes at ${block + 200}..${block + 300} were cut`)
  t.deepEqual(range(fx.file, block + 200, 100), theirs, "the other writer's bytes are there")
  t.deepEqual(range(fx.file, 0, block), Buffer.alloc(block, 0x11), 'the first block is the stream\'s')
})

for (const form of ['node', 'web'] as const) {
  testIf(FAULTFS_REASON, `${form} write stream with transferChunks failing EIO at its second block while the two after it are written: cut back to the first block (the taken blocks after the failure are kept and compared with the file, not given back before the cut) (faultfs)`, async (t) => {
    const fx = faultFs({ size: 0, eioAt: [block + 100], hold: 'held', holdWrites: true, threads: 4 })
    if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
    t.teardown(() => fx.cleanup())
    const options = { chunkSize: block, writeBehind: 4, datasync: false, direct: 'prefer', transferChunks: true } as const
    const chunks = [0x11, 0x22, 0x33, 0x44].map((v) => od.allocAligned(block).fill(v))
    let failed: Promise<unknown>
    let transferred: () => number
    if (form === 'node') {
      const ws = od.createWriteStream(fx.file, options)
      transferred = () => ws.bytesTransferred
      failed = new Promise((resolve) => {
        ws.on('error', resolve)
        ws.on('close', () => resolve(undefined))
      })
      for (const c of chunks) ws.write(c)
      ws.end()
    } else {
      // (The web stream has no bytesTransferred: its chunks' buffers are detached once taken.)
      transferred = () => chunks.filter((c) => c.byteLength === 0).length * block
      const w = od.writableWebStream(fx.file, options).getWriter()
      failed = writeAll(w, chunks)
    }
    await fx.waitForHeld(1)
    fx.release()
    const e = (await failed) as { code?: string; position?: number } | undefined
    t.is(e?.code, 'EIO')
    t.is(e?.position, block)
    t.true(transferred() >= 3 * block, `bytes taken over: ${transferred()} (the blocks were written in place)`)
    t.true(await openedNoMore(fx.file), 'the stream closed its file')
    t.is(fs.statSync(fx.file).size, block, 'the file holds the blocks confirmed in order, nothing after the failed one')
    t.deepEqual(range(fx.file, 0, block), Buffer.alloc(block, 0x11))
  })
}
