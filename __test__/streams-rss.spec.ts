// Streams, thirteenth session (opt-in): a default-mode read stream's dropped chunks are freed while it
// waits for its next read (ODIRECT_STREAM_WAIT_GC, ODIRECT_STREAM_SYNC_SWEEP), so the odirect
// memory alive stays near what the stream itself holds, whatever V8's own collections do.
import { spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

import { scratchDirs } from './helpers/scratch.ts'

const scratch = scratchDirs('streams-rss')

const MiB = 1 << 20
const CHUNK = MiB
const READ_AHEAD = 2

/** A file of random bytes in a scratch directory (a disk: the stream waits for its reads) and its sha256. */
function makeFile(name: string, size: number): { file: string; sha: string } {
  const file = path.join(scratch(), name)
  const data = randomBytes(size)
  fs.writeFileSync(file, data)
  return { file, sha: createHash('sha256').update(data).digest('hex') }
}

interface ChildResult {
  sha: string
  chunks: number
  /** Most odirect allocations alive (native memoryStats()[0]) seen after any chunk. */
  maxLive: number
  /** odirect allocations alive with every chunk held (keep mode). */
  liveHeld: number
}

/**
 * One pass of a fresh Node process over `file` (1 MiB chunks, readAhead 2): 'node' reads a
 * createReadStream with for await, 'web' a readableWebStream's default reader, both dropping
 * each chunk once hashed; 'keep' keeps every chunk of a createReadStream and hashes them after.
 */
function child(t: { is: (a: unknown, b: unknown, m?: string) => void }, file: string, mode: 'node' | 'web' | 'keep', env: Record<string, string> = {}): ChildResult {
  const script = `
    const { createHash } = require('node:crypto')
    const od = require(${JSON.stringify(path.join(process.cwd(), 'dist', 'index.js'))})
    const { native } = require(${JSON.stringify(path.join(process.cwd(), 'dist', 'src', 'native.js'))})
    const opts = { chunkSize: ${CHUNK}, readAhead: ${READ_AHEAD} }
    ;(async () => {
      const h = createHash('sha256')
      let maxLive = 0, chunks = 0, liveHeld = 0
      const seen = (c) => { chunks++; maxLive = Math.max(maxLive, native.memoryStats()[0]) }
      if (${JSON.stringify(mode)} === 'web') {
        const r = od.readableWebStream(${JSON.stringify(file)}, opts).getReader()
        for (;;) { const { done, value } = await r.read(); if (done) break; h.update(value); seen(value) }
      } else if (${JSON.stringify(mode)} === 'keep') {
        const kept = []
        for await (const c of od.createReadStream(${JSON.stringify(file)}, opts)) { kept.push(c); seen(c) }
        liveHeld = native.memoryStats()[0]
        for (const c of kept) h.update(c)
      } else {
        for await (const c of od.createReadStream(${JSON.stringify(file)}, opts)) { h.update(c); seen(c) }
      }
      console.log(JSON.stringify({ sha: h.digest('hex'), chunks, maxLive, liveHeld }))
    })()`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ...env } })
  t.is(r.status, 0, r.stderr)
  return JSON.parse(r.stdout) as ChildResult
}

// What the stream holds: readAhead reads in the kernel + 1 held by its chain (a web stream counts
// the held one inside readAhead), 1 chunk in the Readable's buffer or the web stream's queue, 1
// with the consumer; plus what was handed over since its last collection: at most 8 MiB (2 x
// ODIRECT_STREAM_WAIT_GC's 4 MiB, the collection without a wait) of 1 MiB chunks. Without the
// collections (ODIRECT_STREAM_WAIT_GC=0, no ODIRECT_STREAM_SYNC_SWEEP=1: V8's own young collections,
// which the chunks' pressure brings after 16 MiB of them, 32 / 3 MiB for web streams) these
// passes kept 19-20 (Node) and 13-15 (web) alive on this repository's VM; with them 9 and 7.
const OPT_IN = { ODIRECT_STREAM_WAIT_GC: '4', ODIRECT_STREAM_SYNC_SWEEP: '1' }
const BOUND = { node: READ_AHEAD + 1 + 1 + 1 + (8 * MiB) / CHUNK, web: READ_AHEAD + 1 + 1 + (8 * MiB) / CHUNK }

for (const mode of ['node', 'web'] as const) {
  test(`read stream (${mode}, chunks dropped): the odirect memory alive stays within what the stream holds + 8 MiB handed over (collections at its waits)`, (t) => {
    const { file, sha } = makeFile(`drop-${mode}.bin`, 64 * MiB)
    // Both switches are opt-in (src/streams/core.ts WAIT_GC_BYTES, SYNC_SWEEP): the collections
    // at waits without the synchronous sweep bring mark-compacts on a loaded machine.
    const r = child(t, file, mode, OPT_IN)
    t.is(r.sha, sha)
    t.is(r.chunks, 64)
    t.log(`odirect allocations alive: at most ${r.maxLive} (bound ${BOUND[mode]})`)
    t.true(r.maxLive <= BOUND[mode], `odirect allocations alive: at most ${r.maxLive} (bound ${BOUND[mode]})`)
  })
}

test('read stream (chunks kept): the stream\'s collections free no chunk its consumer holds', (t) => {
  const { file, sha } = makeFile('keep.bin', 32 * MiB)
  const r = child(t, file, 'keep', OPT_IN)
  t.is(r.chunks, 32)
  // Every chunk is alive (and right) however many collections the stream ran.
  t.true(r.liveHeld >= 32, `alive with 32 chunks held: ${r.liveHeld}`)
  t.is(r.sha, sha)
})
