// Adversary program run by scripts/pack-test.cjs in the fresh project where odirect was installed
// from its tarballs, in every runtime (Node 20 and 22, Bun, Deno): BatchWindow and the streams as
// a user (or an abuser) calls them through the published entry point. Prints one JSON line of
// what each check saw; the test compares it with what it must be.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import { BatchWindow, configureEngine, createReadStream, createWriteStream, DirectIoError, engineInfo, open } from 'odirect'

const U = 4096
const code = (f) => {
  try {
    f()
    return 'accepted'
  } catch (e) {
    return e instanceof DirectIoError ? e.code : `${e?.constructor?.name}: ${e?.message}`
  }
}
const dir = fs.mkdtempSync('/var/tmp/odirect-smoke-adv-')
const report = {}
try {
  // configureEngine is all or nothing: a refused call leaves sqpoll unset (this is the process's
  // first engine call: sqpoll could still be set).
  const refused = code(() => configureEngine({ sqpoll: 50, waitMicros: -1 }))
  report.sizes = [0, -1, NaN, 2 ** 53, '4', { valueOf: () => 4 }].map((v) => code(() => new BatchWindow(v)))
  const w = new BatchWindow(3)
  report.frozen = code(() => {
    'use strict'
    w.size = 100
  })
  const file = path.join(dir, 'f')
  const all = Buffer.alloc(192 * U)
  for (let b = 0; b < 192; b++) all.fill(b, b * U, (b + 1) * U)
  fs.writeFileSync(file, all)
  const fh = await open(file, 'r+')
  const ops = (first, n) => ({ memory: fh.alloc(n * U), offsets: new Uint32Array(n).map((_, i) => i * U), lengths: new Uint32Array(n).fill(U), positions: new Float64Array(n).map((_, i) => (first + i) * U) })
  const a = ops(0, 64)
  const b = ops(64, 64)
  const c = ops(128, 64)
  const ac = new AbortController()
  const settled = await Promise.allSettled([fh.readMany(a, { window: w }), fh.readMany(b, { window: w, signal: ac.signal }), fh.readMany(c, { window: w }), Promise.resolve().then(() => ac.abort())])
  report.window = settled.slice(0, 3).map((s) => (s.status === 'fulfilled' ? 'ok' : s.reason.code))
  report.windowData = a.memory.equals(all.subarray(0, 64 * U)) && c.memory.equals(all.subarray(128 * U))
  report.fake = await fh.readMany(ops(0, 2), { window: Object.create(BatchWindow.prototype) }).then(() => 'accepted', (e) => e.code)
  await fh.close()
  // A Proxy of a real AbortSignal: a signal (Node) or refused before anything starts (Bun, whose
  // listener methods check their receiver); never an op that runs on after its call rejected,
  // whose ENOSPC would then be an unhandled rejection.
  const unhandled = []
  const onUnhandled = (e) => unhandled.push(e)
  process.on('unhandledRejection', onUnhandled)
  const full = await open('/dev/full', 'r+', { direct: 'off' })
  const px = new Proxy(new AbortController().signal, {})
  const pxCode = await full.write(full.alloc(U), { position: 0, signal: px }).then(() => 'ok', (e) => e.code)
  // close() waits for an op still in flight; its rejection is reported once the microtasks ran.
  await full.close()
  await new Promise((resolve) => setImmediate(resolve))
  process.off('unhandledRejection', onUnhandled)
  report.proxySignal = (pxCode === 'ENOSPC' || pxCode === 'ERR_INVALID_ARG_TYPE') && unhandled.length === 0 ? true : `${pxCode}, unhandled: ${unhandled.map((e) => e?.code)}`
  // Streams: a pipeline out and back, a for-await left early, a destroy with reads in flight.
  const sfile = path.join(dir, 's')
  const src = Array.from({ length: 30 }, (_, i) => Buffer.alloc(70_001, i))
  await pipeline(Readable.from(src), createWriteStream(sfile, { chunkSize: 64 * 1024, writeBehind: 8 }))
  const got = []
  for await (const chunk of createReadStream(sfile, { chunkSize: 64 * 1024, readAhead: 8 })) got.push(Buffer.from(chunk))
  report.stream = Buffer.concat(got).equals(Buffer.concat(src))
  const early = createReadStream(sfile, { chunkSize: 4096, readAhead: 16 })
  const earlyClosed = new Promise((resolve) => early.once('close', resolve))
  early.on('error', () => {})
  for await (const chunk of early) if (chunk) break
  await earlyClosed
  const rs = createReadStream(sfile, { chunkSize: 4096, readAhead: 16 })
  const closed = new Promise((resolve) => rs.once('close', resolve))
  rs.once('data', () => rs.destroy())
  await closed
  report.closed = early.destroyed && rs.destroyed
  report.configure = refused === 'ERR_OUT_OF_RANGE' && !engineInfo().ringSetup.includes('sqpoll') ? true : `${refused}, ring ${engineInfo().ringSetup}`
  // The write stream's pieces at every size around its streaming copy's 64 KiB threshold, from
  // odd offsets of their source; then read back one block at a time with the hybrid wait on.
  const pieces = [65535, 65536, 65537, 65520, 65551, 131071, 1, 200001].map((n, k) => {
    const big = Buffer.alloc(n + 80)
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + k * 7 + (i >> 10)) & 0xff
    return big.subarray(3 + k, 3 + k + n)
  })
  const pfile = path.join(dir, 'p')
  await pipeline(Readable.from(pieces), createWriteStream(pfile, { chunkSize: 64 * 1024 }))
  const want = Buffer.concat(pieces)
  configureEngine({ waitMicros: 1000 })
  const ph = await open(pfile, 'r')
  const blk = ph.alloc(U)
  let same = true
  for (let at = 0; at < want.length; at += U) {
    const { bytesRead } = await ph.read(blk, { position: at })
    same &&= bytesRead === Math.min(U, want.length - at) && blk.subarray(0, bytesRead).equals(want.subarray(at, at + bytesRead))
  }
  await ph.close()
  configureEngine({ waitMicros: 0 })
  report.pieces = same
  // A 'data' listener that throws: an uncaught exception, as with node:fs (Bun ended the process
  // past its 'uncaughtException' handler while odirect's streams made it an unhandled rejection).
  const thrown = new Promise((resolve) => process.once('uncaughtException', (e) => resolve(e?.message)))
  const tr = createReadStream(pfile, { chunkSize: 64 * 1024 })
  tr.once('data', () => {
    tr.destroy()
    throw new Error('listener threw')
  })
  report.listenerThrows = await thrown
} catch (e) {
  report.failed = String(e?.stack ?? e)
} finally {
  fs.rmSync(dir, { recursive: true, force: true })
}
console.log(JSON.stringify(report))
