// Adversary of the eighth session's work (issue 19): the hybrid completion wait
// (configureEngine({ waitMicros }), wake.rs flush_and_deliver), ODIRECT_WAKE=ring, the write
// streams' streaming copy (copyInto), native batches submitted in groups, readFully's re-read of
// a short O_DIRECT read, configureEngine under hostile options. Each test here failed on the code
// before its fix, or pins down a behaviour attacked without finding a fault (named as such).
// Every wait is on an event (a promise, a child's exit); nothing sleeps.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { configureEngine, createWriteStream, open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { faultFs, type Requirement } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const U = 4096
const FAULT: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']

/** In-kernel waits the engine made so far (see NativeEngine.waitStats). */
const waitsMade = (): number => getEngine().native.waitStats[0]

// ---------------------------------------------------------------------------------------
// 1. The hybrid wait: never for an op that may sleep in a server

fxTest('waitMicros: closing a FUSE file makes no in-kernel wait (a close sends FLUSH to the server; was: the close of a lone handle waited, its descriptor already out of the engine table)', FAULT, async (t) => {
  const fx = must(faultFs({ size: 64 * U }))
  t.teardown(() => fx.cleanup())
  configureEngine({ waitMicros: 1000 })
  t.teardown(() => configureEngine({ waitMicros: 0 }))
  for (const flags of ['r', 'r+'] as const) {
    const fh = await open(fx.file, flags, { backend: 'io_uring' })
    if (fh.backend !== 'io_uring') {
      await fh.close()
      return t.fail(`io_uring is not available here: ${fh.backend}`)
    }
    const before = waitsMade()
    const b = fh.alloc(U)
    t.is((await fh.read(b, { position: U })).bytesRead, U)
    if (flags === 'r+') t.is((await fh.write(b, { position: 2 * U })).bytesWritten, U)
    await fh.close()
    t.is(waitsMade() - before, 0, `${flags}: in-kernel waits for ops on a FUSE file (read, write, close)`)
  }
})

// ---------------------------------------------------------------------------------------
// 2. configureEngine: all or nothing

test('configureEngine refuses an options object with one bad option without applying the others (was: sqpoll applied, then waitMicros refused)', (t) => {
  // A fresh process: sqpoll can only be set before the thread's first ring exists.
  const script = `
    const { configureEngine, engineInfo, open } = require(${JSON.stringify(dist)})
    const fs = require('node:fs')
    let refused = ''
    try { configureEngine({ sqpoll: 50, waitMicros: -1 }) } catch (e) { refused = e.code }
    const dir = fs.mkdtempSync('/var/tmp/odirect-adv-s9-')
    open(dir + '/f', 'w+', { backend: 'io_uring' }).then(async (fh) => {
      await fh.write(fh.alloc(4096), { position: 0 })
      console.log(JSON.stringify({ refused, backend: fh.backend, ring: engineInfo().ringSetup }))
      await fh.close()
      fs.rmSync(dir, { recursive: true, force: true })
    })`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout) as { refused: string; backend: string; ring: string }
  t.is(out.refused, 'ERR_OUT_OF_RANGE')
  if (out.backend !== 'io_uring') return t.log(`backend ${out.backend}: no ring to look at`)
  t.false(out.ring.includes('sqpoll'), `the refused call left its sqpoll applied: ${out.ring}`)
})

// ---------------------------------------------------------------------------------------
// 3. The write streams' streaming copy (copyInto, >= 64 KiB pieces): attacked, no fault found

test('write streams: pieces at every size around the streaming copy\'s 64 KiB threshold, from odd offsets of Buffers, DataViews, Float64Arrays and SharedArrayBuffers, land byte for byte', async (t) => {
  const dir = fs.mkdtempSync('/var/tmp/odirect-adv-s9-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const sizes = [65535, 65536, 65537, 65536 - 16, 65536 + 15, 65536 + 64, 131071, 131075, 200001, 1, 4095]
  const bytes = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 131 + seed * 7 + (i >> 8)) & 0xff)
  for (const chunkSize of [64 * 1024, 128 * 1024, 3 * 4096, 1 << 20]) {
    for (const [kind, skew] of [['Buffer', 1], ['DataView', 3], ['Float64Array', 8], ['SharedArrayBuffer', 17]] as const) {
      const pieces: ArrayBufferView[] = sizes.map((n, k) => {
        const len = kind === 'Float64Array' ? Math.ceil(n / 8) * 8 : n
        const ab = kind === 'SharedArrayBuffer' ? new SharedArrayBuffer(len + skew + 64) : new ArrayBuffer(len + skew + 64)
        new Uint8Array(ab).set(bytes(len + skew + 64, k + skew))
        if (kind === 'DataView') return new DataView(ab, skew, len)
        if (kind === 'Float64Array') return new Float64Array(ab, skew, len / 8)
        return kind === 'Buffer' ? Buffer.from(ab, skew, len) : new Uint8Array(ab, skew, len)
      })
      const file = path.join(dir, `${chunkSize}-${kind}`)
      const ws = createWriteStream(file, { chunkSize })
      for (const p of pieces) await new Promise<void>((resolve, reject) => ws.write(p, (e) => (e ? reject(e) : resolve())))
      await new Promise<void>((resolve, reject) => {
        ws.once('error', reject)
        ws.end(resolve)
      })
      const want = Buffer.concat(pieces.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)))
      t.true(fs.readFileSync(file).equals(want), `chunkSize ${chunkSize}, ${kind} pieces`)
    }
  }
})

// ---------------------------------------------------------------------------------------
// 4. A listener that throws: an uncaught exception, as with node:fs

test('a read stream\'s throwing \'data\' listener and a write stream\'s throwing write callback are uncaught exceptions, as with node:fs (was: unhandled rejections: an \'unhandledRejection\' handler took them, and Bun ended the process past its \'uncaughtException\' handler)', (t) => {
  const dir = fs.mkdtempSync('/var/tmp/odirect-adv-s9-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, Buffer.alloc(256 * 1024, 7))
  const script = `
    const fs = require('node:fs')
    const od = require(${JSON.stringify(dist)})
    const seen = []
    const note = (how) => (e, origin) => {
      seen.push([how, e && e.message, origin === undefined ? null : origin])
      if (seen.length === 4) { console.log(JSON.stringify(seen)); process.exit(0) }
    }
    process.on('uncaughtException', note('uncaughtException'))
    process.on('unhandledRejection', note('unhandledRejection'))
    for (const lib of [fs, od]) {
      const name = lib === fs ? 'fs' : 'odirect'
      let n = 0
      const rs = lib.createReadStream(${JSON.stringify(src)}, { highWaterMark: 65536 })
      rs.on('data', () => { if (++n === 2) throw new Error(name + ' data') })
      const ws = lib.createWriteStream(${JSON.stringify(path.join(dir, 'out'))} + name)
      ws.write(Buffer.alloc(65536, 1), () => { throw new Error(name + ' write callback') })
    }`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  const seen = (JSON.parse(r.stdout) as Array<[string, string, string | null]>).map(([how, msg, origin]) => `${msg}: ${how} (${origin})`).sort()
  t.deepEqual(seen, ['fs data', 'fs write callback', 'odirect data', 'odirect write callback'].map((m) => `${m}: uncaughtException (uncaughtException)`))
})
