// Fuzz of every public function with every kind of JS value (fast-check, fixed seed): each call
// must return/resolve, or throw/reject an Error with a string `code` — never an uncoded
// TypeError/RangeError/URIError, never an abort, never a hang — and RSS stays bounded.
//
// argv: <scratch dir (a small tmpfs: writes/fallocate can't fill a real disk)> <calls>
// Prints RESULT { calls, byFn, bad: [{ fn, args, error }], hangs, maxRss }. A call that never
// settles stops the run there: the parent's timeout (SIGTERM), or the event loop running dry
// with the call pending, prints RESULT with `hangs: 1` and that call in `bad`, and exits 4.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const fc = require('fast-check')
const { od, result, gcHard } = require('./common.cjs')

const [dir, callsArg] = process.argv.slice(2)
const CALLS = Number(callsArg)
const RSS_CAP = 3 * 1024 ** 3
process.chdir(dir)

const file = path.join(dir, 'f')
fs.writeFileSync(file, Buffer.alloc(64 * 1024, 1))

/** What the hostile getters throw: the caller's own error, which may reach the caller unchanged (as fs). */
const getterError = new Error('getter threw')

/** Detached, shrunk and other hostile values the generic arbitraries don't make. */
function hostile() {
  const det = new Uint8Array(4096)
  structuredClone(det.buffer, { transfer: [det.buffer] })
  const rab = new ArrayBuffer(4096, { maxByteLength: 8192 })
  const shrunk = new Uint8Array(rab)
  rab.resize(0)
  const revoked = Proxy.revocable({}, {})
  revoked.revoke()
  const throwing = { get position() { throw getterError }, get buffer() { throw getterError } }
  return [det, shrunk, new Uint8Array(new SharedArrayBuffer(4096)), new DataView(new ArrayBuffer(4096)), new BigInt64Array(512),
    revoked.proxy, throwing, Object.create(null), new URL('file:///nonexistent/x'), new URL('http://example.com/x'), new URL('file://otherhost/x'),
    'file:///%E0%A4%A', -1, -1n, 2 ** 53, 2 ** 32 + 3, NaN, Infinity, -0, 0x7ffff000, Symbol('s'), () => 1, new Error('x'), [], [[]], new Array(3),
    { buffer: det, position: 0 }, { length: -1 }, { chunkSize: 0x7ffff000 }, { highWaterMark: 2 ** 40 }, { start: -5, end: 2 ** 60 }, AbortSignal.abort(),
    { signal: AbortSignal.abort() }, { direct: Object.create(null) }, { mode: new Uint8Array(0) }, { flags: 'w+' }, 'r', 'w+', 'x', '\0', '', '.', 'f', file]
}
const H = hostile()
/** fast-check inspects generated values (a revoked Proxy breaks it): it sees refs, calls get values. */
class HostileRef {
  constructor(i) {
    this.i = i
  }
}
const anyValue = fc.oneof(
  { weight: 3, arbitrary: fc.anything({ withBigInt: true, withBoxedValues: true, withMap: true, withSet: true, withObjectString: true, withNullPrototype: true, withTypedArray: true, withSparseArray: true, withDate: true }) },
  { weight: 2, arbitrary: fc.nat(H.length - 1).map((i) => new HostileRef(i)) },
  { weight: 1, arbitrary: fc.integer({ min: -(2 ** 33), max: 2 ** 33 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, 512, 4096, 8192, 65536, 1, 3) },
)

/** Strings used as paths stay inside the scratch dir. */
function confine(v) {
  if (typeof v === 'string' && v.startsWith('/') && v !== file) return path.join(dir, 'p', v.replace(/[^\w.-]/g, '_').slice(0, 64))
  let isUrl = false
  try {
    // The harness itself must not trip over hostile values (a revoked Proxy throws on instanceof):
    // those go to odirect as they are.
    isUrl = v instanceof URL
  } catch {
    return v
  }
  if (isUrl && v.protocol === 'file:' && v.hostname === '' && !v.pathname.startsWith(dir)) return new URL(`file://${path.join(dir, 'u')}`)
  return v
}

let fh
async function handle() {
  if (!fh || fh.closed) fh = await od.open(file, 'r+')
  return fh
}

/** Quietly consumes a stream a fuzz call made (errors become events, not crashes). */
function tame(v) {
  if (v && typeof v === 'object') {
    if (typeof v.on === 'function' && typeof v.destroy === 'function') {
      v.on('error', () => undefined)
      v.destroy()
    } else if (typeof v.cancel === 'function' && typeof v.getReader === 'function') {
      v.cancel().catch(() => undefined)
    } else if (typeof v.abort === 'function' && typeof v.getWriter === 'function') {
      v.abort().catch(() => undefined)
    }
  }
}

const targets = [
  ['open', 3, (a) => od.open(confine(a[0]), a[1], a[2]).then((h) => h.close())],
  ['probe', 1, (a) => od.probe(confine(a[0]))],
  ['allocAligned', 2, (a) => { od.allocAligned(a[0], a[1]) }],
  ['addressOf', 1, (a) => od.addressOf(a[0])],
  ['readFile', 2, (a) => od.readFile && od.readFile(confine(a[0]), a[1])],
  ['writeFile', 3, (a) => od.writeFile && od.writeFile(confine(a[0]), a[1], a[2])],
  ['copyFile', 3, (a) => od.copyFile && od.copyFile(confine(a[0]), confine(a[1]), a[2])],
  ['createReadStream', 2, (a) => tame(od.createReadStream(confine(a[0]), a[1]))],
  ['createWriteStream', 2, (a) => tame(od.createWriteStream(confine(a[0]) === file ? path.join(dir, 'ws') : confine(a[0]), a[1]))],
  ['readableWebStream', 2, (a) => tame(od.readableWebStream(confine(a[0]), a[1]))],
  ['writableWebStream', 2, (a) => tame(od.writableWebStream(confine(a[0]) === file ? path.join(dir, 'ws') : confine(a[0]), a[1]))],
  ['fh.read', 4, async (a) => (await handle()).read(a[0], a[1], a[2], a[3])],
  ['fh.write', 4, async (a) => (await handle()).write(a[0], a[1], a[2], a[3])],
  ['fh.readv', 2, async (a) => (await handle()).readv(a[0], a[1])],
  ['fh.writev', 2, async (a) => (await handle()).writev(a[0], a[1])],
  ['fh.readMany', 1, async (a) => (await handle()).readMany(a[0])],
  ['fh.writeMany', 1, async (a) => (await handle()).writeMany(a[0])],
  ['fh.stat', 1, async (a) => (await handle()).stat(a[0])],
  ['fh.truncate', 1, async (a) => (await handle()).truncate(a[0])],
  ['fh.allocate', 3, async (a) => (await handle()).allocate(a[0], a[1], a[2])],
  ['fh.sync', 0, async () => (await handle()).sync()],
  ['fh.datasync', 0, async () => (await handle()).datasync()],
  ['fh.alloc', 1, async (a) => { (await handle()).alloc(a[0]) }],
  ['fh.registerBuffers', 2, async (a) => { const r = (await handle()).registerBuffers(a[0], a[1]); r.unregister() }],
  ['fh.createReadStream', 1, async (a) => { const h = await handle(); if (typeof h.createReadStream === 'function') tame(h.createReadStream(a[0])) }],
  ['fh.close', 0, async () => (await handle()).close()],
]

function show(v) {
  try {
    if (typeof v === 'bigint') return `${v}n`
    if (typeof v === 'symbol' || typeof v === 'function') return String(v)
    if (ArrayBuffer.isView(v)) return `${v.constructor.name}(${v.byteLength})`
    return (JSON.stringify(v) ?? String(v)).slice(0, 120)
  } catch {
    try {
      return Object.prototype.toString.call(v)
    } catch {
      return '<revoked Proxy>'
    }
  }
}

function judge(e) {
  if (e instanceof Error && typeof e.code === 'string' && e.code.length > 0) return undefined
  // The caller's own error object, passed through unchanged: the only uncoded error allowed.
  if (e === getterError) return undefined
  return e instanceof Error ? `${e.name}: ${e.message} (code ${String(e.code)})` : `non-Error thrown: ${show(e)}`
}

async function main() {
  const start = Date.now()
  let calls = 0
  const byFn = {}
  const bad = []
  const seen = new Set()
  let maxRss = 0
  let seed = 1
  // The call being awaited, reported if it never settles.
  let current
  const hung = () => {
    bad.push({ fn: current.fn, args: current.args, error: 'never settled' })
    // How far it got and for how long: a run slowed past the spawn timeout by a loaded machine
    // (SIGTERM) is told apart from a call that never settles (the loop ran dry: 'beforeExit').
    result({ calls, byFn, bad, hangs: 1, maxRss, ms: Date.now() - start, how: killedBy ?? 'beforeExit' })
    process.exit(4)
  }
  let killedBy
  process.once('SIGTERM', () => {
    killedBy = 'SIGTERM'
    return current ? hung() : process.exit(5)
  })
  process.once('beforeExit', () => current && hung())
  while (calls < CALLS) {
    const batch = fc.sample(fc.array(anyValue, { minLength: 4, maxLength: 4 }), { seed: seed++, numRuns: 200 })
    for (const args of batch) {
      const [name, arity, fn] = targets[calls % targets.length]
      const a = args.slice(0, Math.max(arity, 0)).map((v) => (v instanceof HostileRef ? H[v.i] : v))
      calls++
      byFn[name] = (byFn[name] || 0) + 1
      let err
      try {
        const r = fn(a)
        if (r && typeof r.then === 'function') {
          current = { fn: name, args: a.map(show) }
          const v = await r.then(
            () => 'ok',
            (e) => ({ e }),
          )
          current = undefined
          if (v !== 'ok') err = v.e
        }
      } catch (e) {
        err = e
      }
      if (err !== undefined) {
        const why = judge(err)
        if (why !== undefined) {
          const key = `${name}|${why.split(':')[0]}|${String(err && err.message).slice(0, 40)}`
          if (!seen.has(key) && bad.length < 40) {
            seen.add(key)
            bad.push({ fn: name, args: a.map(show), error: why })
          }
        }
      }
    }
    gcHard(1)
    const rss = process.memoryUsage().rss
    maxRss = Math.max(maxRss, rss)
    if (rss > RSS_CAP) {
      result({ calls, byFn, bad, hangs: 0, maxRss, rssExceeded: true })
      process.exit(3)
    }
  }
  if (fh && !fh.closed) await fh.close()
  result({ calls, byFn, bad, hangs: 0, maxRss, ms: Date.now() - start })
  // Leftover streams/timers must not keep the process alive (stdout is a pipe: written already).
  process.exit(0)
}
main().catch((e) => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(2)
})
