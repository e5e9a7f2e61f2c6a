// Nineteenth session, write streams: the directory a stream's finish syncs is the one that holds
// the file's name *now* (src/streams/core.ts entryNow: /proc/self/fd/N, checked against the
// descriptor's device and inode), not the one of the path it opened. Power-cut bed:
// crates/faultfs/src/crashfs.rs through helpers/crashbed.ts (a directory entry is durable only
// once its directory is fsynced; `/.crashfs` counts the directory fsyncs). Each case fails with
// ODIRECT_STREAM_DIR_NOW=0 (the old form: the opened path's directory).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import type { ExecutionContext } from 'ava'

import { createWriteStream, writableWebStream } from '../dist/index.js'
import { bytes, CRASH_REQS, crashRun, crashSweep, describe, durable, type SweepOptions } from './helpers/crashbed.js'
import { fxTest } from './helpers/fxtest.js'

delete process.env.ODIRECT_BACKEND

async function sweep<T>(t: ExecutionContext, name: string, o: SweepOptions<T>): Promise<void> {
  const r = await crashSweep(o)
  t.log(`${name}: ${r.ops} ops, ${r.points.length + 1} cut points, ${r.runs} runs, acknowledged in ${r.acked}`)
  t.deepEqual(r.violations, [], `${name}: guarantee broken after a power cut`)
  t.true(r.ops >= 2, 'the workload reached the disk')
  t.true(r.acked > 0, 'the workload was acknowledged in some run')
}

const CHUNK = 64 * 1024
const DATA = bytes(3 * CHUNK + 1000, 19)
const HEAD = DATA.subarray(0, 2 * CHUNK)
const TAIL = DATA.subarray(2 * CHUNK)

/** Two folders, `a` (where the stream opens its file) and `b` (where it is moved mid-stream). */
const twoDirs = (d: string): void => {
  fs.mkdirSync(path.join(d, 'a'))
  fs.mkdirSync(path.join(d, 'b'))
}

/** The `dirsyncs` count of the mounted bed (directory fsyncs so far). */
const dirSyncs = (root: string): number => Number(/dirsyncs=(\d+)/.exec(fs.readFileSync(path.join(root, '.crashfs'), 'utf8'))?.[1] ?? NaN)

/** A Node write stream of root/a/log: HEAD written (called back), then `between(root)`, then TAIL and the end. */
async function nodeStream(root: string, between: (root: string) => void): Promise<void> {
  const ws = createWriteStream(path.join(root, 'a', 'log'), { chunkSize: CHUNK, writeBehind: 2 })
  const src = Readable.from(
    (async function* () {
      yield HEAD
      // Called back: the stream took HEAD (its blocks written or in flight) before the move.
      await new Promise<void>((r) => ws.write(Buffer.alloc(0), () => r()))
      between(root)
      yield TAIL
    })(),
  )
  await pipeline(src, ws)
}

/** The same through writableWebStream. */
async function webStream(root: string, between: (root: string) => void): Promise<void> {
  const w = writableWebStream(path.join(root, 'a', 'log'), { chunkSize: CHUNK, writeBehind: 2 }).getWriter()
  await w.write(HEAD)
  between(root)
  await w.write(TAIL)
  await w.close()
}

const moveToB = (root: string): void => fs.renameSync(path.join(root, 'a', 'log'), path.join(root, 'b', 'log'))

for (const [kind, run] of [
  ['createWriteStream', nodeStream],
  ['writableWebStream', webStream],
] as const) {
  fxTest(`${kind} of a file moved into another folder mid-stream (log rotation): once it finished, the file is durable under its new name (was: the stream synced the folder of the name it opened)`, CRASH_REQS, async (t) => {
    await sweep(t, `${kind}, moved mid-stream`, {
      torn: true,
      maxPoints: 16,
      rounds: 2,
      image: twoDirs,
      workload: (root) => run(root, moveToB),
      check: (r) => {
        if (!r.outcome.ok) return undefined
        const what = describe(durable(r, 'b/log'), { new: DATA })
        return what === 'new' ? undefined : `finished but b/log is ${what}`
      },
    })
  })
}

fxTest("createWriteStream of a file unlinked mid-stream: it finishes, its data written, and syncs no folder (the file has no name left to keep; was: the folder of the name it opened)", CRASH_REQS, async (t) => {
  const r = await crashRun({ image: twoDirs }, async (root) => {
    const before = dirSyncs(root)
    await nodeStream(root, (at) => fs.unlinkSync(path.join(at, 'a', 'log')))
    return dirSyncs(root) - before
  })
  try {
    t.true(r.outcome.ok, r.outcome.ok ? '' : String(r.outcome.error))
    if (r.outcome.ok) t.is(r.outcome.value, 0, 'directory fsyncs during the stream')
    t.is(durable(r, 'a/log'), undefined)
  } finally {
    r.cleanup()
  }
})

fxTest('createWriteStream of a file renamed in its own folder mid-stream, a new file made at its old name: the renamed file is durable under its new name, the folder synced once', CRASH_REQS, async (t) => {
  const other = bytes(5000, 23)
  const r = await crashRun({ image: twoDirs }, async (root) => {
    const before = dirSyncs(root)
    await nodeStream(root, (at) => {
      fs.renameSync(path.join(at, 'a', 'log'), path.join(at, 'a', 'log.1'))
      fs.writeFileSync(path.join(at, 'a', 'log'), other)
    })
    return dirSyncs(root) - before
  })
  try {
    t.true(r.outcome.ok, r.outcome.ok ? '' : String(r.outcome.error))
    if (r.outcome.ok) t.is(r.outcome.value, 1, 'directory fsyncs during the stream')
    t.is(describe(durable(r, 'a/log.1'), { new: DATA }), 'new')
  } finally {
    r.cleanup()
  }
})
