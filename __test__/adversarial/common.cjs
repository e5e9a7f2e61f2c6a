// Shared bits of the adversarial child scripts (run by __test__/adversarial.spec.ts as
// `node --expose-gc <script> ...`, so a memory-safety failure kills the child, not ava).
// Results are printed as one line `RESULT <json>` on stdout.
'use strict'
const path = require('node:path')

const od = require(path.join(__dirname, '..', '..', 'dist', 'index.js'))

function result(obj) {
  process.stdout.write(`RESULT ${JSON.stringify(obj)}\n`)
}

/** Detaches `ab` with structuredClone's transfer list (the new owner is dropped at once). */
function detachByClone(ab) {
  structuredClone(ab, { transfer: [ab] })
}

/** Detaches `ab` by posting it through a MessageChannel (the receiving side is closed). */
function detachByPost(ab) {
  const { port1, port2 } = new MessageChannel()
  port1.postMessage(ab, [ab])
  port1.close()
  port2.close()
}

/** Detaches `ab` with ArrayBuffer.prototype.transfer (Node 22+), dropping the result. */
function detachByTransfer(ab) {
  ab.transfer()
}

const detachers = { clone: detachByClone, post: detachByPost, transfer: detachByTransfer }

/** What a settled promise gave, as plain data. */
function describe(s) {
  if (s.status === 'fulfilled') {
    const v = s.value
    return { status: 'fulfilled', value: v && typeof v === 'object' && 'bytesRead' in v ? v.bytesRead : v && typeof v === 'object' && 'bytesWritten' in v ? v.bytesWritten : v }
  }
  const e = s.reason
  return { status: 'rejected', code: e && typeof e === 'object' ? e.code : undefined, name: e && e.name, message: String(e && e.message) }
}

async function settle(p) {
  return describe((await Promise.allSettled([p]))[0])
}

function gcHard(rounds = 6) {
  for (let i = 0; i < rounds; i++) globalThis.gc()
}

const tick = () => new Promise((r) => setImmediate(r))

module.exports = { od, result, detachers, describe, settle, gcHard, tick }
