// An AbortSignal aborted at every await point of readFile / writeFile / copyFile, one run per
// point: every native call, node:fs/promises call and FileHandle method the form makes is a point
// (counted by wrappers), aborted either as the call starts ('before') or as its promise settles
// ('after'). After each run, once every call it started has settled (tracked: nothing is timed):
// no temp file next to the destination, no descriptor left open, a rejection is ABORT_ERR, a
// resolution has the whole new data, and with `atomic` / copyFile an aborted run left the old
// destination byte for byte (README: "at any moment ... the destination is untouched and no temp
// file is left").
//
// `--slow-temp-open`: the native open that creates a temp file (an exclusive create) is held until
// the caller removes that temp name, or the call settles, or the event loop has nothing else to run
// (the caller waits for that open): an open that a slow filesystem or a busy thread pool finishes
// after the caller's cleanup (seen on tmpfs under load: copyFile aborted in
// its temp file's open left the temp file behind).
//
// argv: dir [forms, comma separated | all] [--slow-temp-open]; ODIRECT_BACKEND picks the backend.
// Runs in Node, Bun and Deno. Prints RESULT {"runs", "points", "bad": [...]}.
'use strict'
const fs = require('node:fs')
const fsp = require('node:fs/promises')
const path = require('node:path')
const { Readable } = require('node:stream')
const { pipeline } = require('node:stream/promises')

const root = path.join(__dirname, '..', '..')
const binding = require(path.join(root, 'binding.js'))
const od = require(path.join(root, 'dist', 'index.js'))
const { FileHandle } = require(path.join(root, 'dist', 'src', 'handle.js'))

const [dir, formArg = 'all', ...flags] = process.argv.slice(2)
const slowTempOpen = flags.includes('--slow-temp-open')

let count = 0
let target = -1
let mode = 'before'
let ac = new AbortController()
let current = ''
const outstanding = new Set()
/** Held temp opens: release() once the temp's name is unlinked, the call settled, or nothing else is left to run. */
const held = new Map()
// The event loop ran out of work while a temp open is held (the caller waits for that open: it
// cannot unlink first): let the opens go.
process.on('beforeExit', () => {
  for (const rel of held.values()) rel()
  held.clear()
})

function track(p) {
  const t = Promise.resolve(p).then(
    () => {},
    () => {},
  )
  outstanding.add(t)
  t.then(() => outstanding.delete(t))
  return t
}

function wrap(obj, name, label) {
  const f = obj[name]
  if (typeof f !== 'function') return
  obj[name] = function (...args) {
    count++
    const hit = count === target
    if (hit) current = label + name
    if (hit && mode === 'before') ac.abort()
    let r
    if (slowTempOpen && label === 'n.' && name === 'openFile' && String(args[0]).includes('.odirect-tmp-')) {
      let release
      const gate = new Promise((res) => {
        release = res
      })
      held.set(String(args[0]), release)
      r = gate.then(() => f.apply(this, args))
    } else r = f.apply(this, args)
    if (label === 'n.' && name === 'unlinkPath') {
      const rel = held.get(String(args[0]))
      if (rel !== undefined) Promise.resolve(r).finally(rel)
    }
    if (r !== null && typeof r === 'object' && typeof r.then === 'function') {
      const t = track(r)
      if (hit && mode === 'after') {
        const a = ac
        t.then(() => a.abort())
      }
    } else if (hit && mode === 'after') ac.abort()
    return r
  }
}
for (const k of Object.keys(binding)) if (/^[a-z]/.test(k) && typeof binding[k] === 'function') wrap(binding, k, 'n.')
for (const k of ['stat', 'lstat', 'readlink', 'chown', 'open', 'rename', 'unlink']) wrap(fsp, k, 'fsp.')
for (const k of ['read', 'write', 'readv', 'writev', 'stat', 'truncate', 'datasync', 'sync', 'allocate', 'close']) wrap(FileHandle.prototype, k, 'fh.')

/** Waits until every tracked call (and what settling it started) has settled. */
async function drain() {
  for (;;) {
    while (outstanding.size > 0) await Promise.all([...outstanding])
    await new Promise((r) => setImmediate(r))
    if (outstanding.size === 0) return
  }
}
/**
 * What this process's descriptors point to (a leak names its file). Sockets are left out: odirect
 * makes none, and Deno opens socket pairs of its own now and then.
 */
const fdTargets = () =>
  fs
    .readdirSync('/proc/self/fd')
    .map((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`)
      } catch {
        return '?'
      }
    })
    .filter((t) => !t.startsWith('socket:'))

const size = 3 * 1048576 + 100
const NEW = Buffer.alloc(size)
for (let i = 0; i < size; i++) NEW[i] = (i * 7 + 3) & 255
const OLD = Buffer.from('old file contents\n')
const src = path.join(dir, 'src')
fs.writeFileSync(src, NEW)
const sparse = path.join(dir, 'sparse')
{
  const fd = fs.openSync(sparse, 'w')
  fs.writeSync(fd, NEW, 0, 8192, 1 << 20)
  fs.ftruncateSync(fd, 3 << 20)
  fs.closeSync(fd)
}
const SPARSE = fs.readFileSync(sparse)
const dst = path.join(dir, 'dst')
const chunks = function* () {
  for (let i = 0; i < size; i += 700000) yield NEW.subarray(i, i + 700000)
}
const forms = {
  'writeFile atomic': { atomic: true, expect: NEW, run: (signal) => od.writeFile(dst, NEW, { atomic: true, signal }) },
  'writeFile atomic iterable': { atomic: true, expect: NEW, run: (signal) => od.writeFile(dst, chunks(), { atomic: true, signal }) },
  writeFile: { atomic: false, expect: NEW, run: (signal) => od.writeFile(dst, NEW, { signal }) },
  copyFile: { atomic: true, expect: NEW, run: (signal) => od.copyFile(src, dst, { signal, chunkSize: 1 << 19 }) },
  'copyFile verify': { atomic: true, expect: NEW, run: (signal) => od.copyFile(src, dst, { signal, verify: true, chunkSize: 1 << 19 }) },
  'copyFile sparse': { atomic: true, expect: SPARSE, run: (signal) => od.copyFile(sparse, dst, { signal, chunkSize: 1 << 19 }) },
  'copyFile exclusive': { atomic: true, fresh: true, expect: NEW, run: (signal) => od.copyFile(src, dst, { signal, exclusive: true, chunkSize: 1 << 19 }) },
  readFile: { read: true, expect: NEW, run: (signal) => od.readFile(src, { signal }) },
  // A handle left inside a block by readFile: writeFile reads that block's head back first.
  'writeFile handle mid-block': { atomic: false, expect: Buffer.concat([OLD, NEW]), run: (signal) => handleWrite(signal) },
  'read stream': { read: true, expect: NEW, run: (signal) => collect(od.createReadStream(src, { signal, highWaterMark: 1 << 20 })) },
  'write stream': { atomic: false, expect: NEW, run: (signal) => pipeline(Readable.from(chunks()), od.createWriteStream(dst, { signal, highWaterMark: 1 << 20 })) },
  'web read stream': { read: true, expect: NEW, run: (signal) => webRead(signal) },
}

async function handleWrite(signal) {
  const fh = await od.open(dst, 'r+')
  try {
    await fh.readFile()
    await od.writeFile(fh, NEW, { signal })
  } finally {
    await fh.close()
  }
}

async function collect(stream) {
  const parts = []
  for await (const c of stream) parts.push(c)
  return Buffer.concat(parts)
}

/** fh.readableWebStream() read to its end, the handle closed; the signal cancels the reader (then ABORT_ERR). */
async function webRead(signal) {
  const aborted = () => Object.assign(new Error('the reader was cancelled'), { code: 'ABORT_ERR' })
  if (signal.aborted) throw aborted()
  const fh = await od.open(src, 'r')
  try {
    const reader = fh.readableWebStream().getReader()
    const onAbort = () => reader.cancel(signal.reason).catch(() => {})
    signal.addEventListener('abort', onAbort, { once: true })
    const parts = []
    try {
      for (;;) {
        if (signal.aborted) throw aborted()
        const { done, value } = await reader.read()
        if (signal.aborted) throw aborted()
        if (done) break
        parts.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength))
      }
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
    return Buffer.concat(parts)
  } finally {
    await fh.close()
  }
}

async function main() {
  // The engine's own descriptors are made before the first count (on tmpfs a small read also
  // opens /proc/swaps, which the engine keeps to see swap come and go).
  await od.readFile(src)
  fs.writeFileSync(dst, OLD)
  await od.readFile(dst)
  const names = formArg === 'all' ? Object.keys(forms) : formArg.split(',')
  const out = { runs: 0, points: {}, bad: [] }
  for (const name of names) {
    const form = forms[name]
    for (const m of ['before', 'after']) {
      for (let n = 1; ; n++) {
        fs.rmSync(dst, { force: true })
        if (!form.fresh && !form.read) fs.writeFileSync(dst, OLD)
        const fds = fdTargets()
        ac = new AbortController()
        count = 0
        target = n
        mode = m
        current = ''
        let res
        let err
        const call = form.run(ac.signal)
        track(call)
        try {
          res = await call
        } catch (e) {
          err = e
        }
        for (const rel of held.values()) rel()
        held.clear()
        const points = count
        await drain()
        out.runs++
        const problems = []
        const left = fs.readdirSync(dir).filter((f) => !['src', 'sparse', 'dst'].includes(f))
        if (left.length > 0) problems.push(`left behind: ${left.join(', ')}`)
        const now = fdTargets()
        if (now.length !== fds.length) {
          const added = now.filter((x) => !fds.includes(x))
          problems.push(`descriptors ${fds.length} -> ${now.length} (new: ${added.join(', ')})`)
        }
        if (err !== undefined && err.code !== 'ABORT_ERR') problems.push(`rejected ${err.code}: ${err.message}`)
        if (form.read) {
          if (err === undefined && !res.equals(form.expect)) problems.push('resolved with the wrong bytes')
        } else {
          const got = fs.existsSync(dst) ? fs.readFileSync(dst) : null
          if (err === undefined && !(got !== null && got.equals(form.expect))) problems.push(`resolved, destination ${got === null ? 'absent' : `${got.length} bytes, not the data`}`)
          if (err !== undefined && form.atomic) {
            const ok = form.fresh ? got === null : got !== null && got.equals(OLD)
            if (!ok) problems.push(`aborted, destination ${got === null ? 'absent' : `${got.length} bytes`}`)
          }
        }
        if (problems.length > 0) out.bad.push(`${name} ${m} point ${n}/${points} (${current}), ${err === undefined ? 'resolved' : 'rejected'}: ${problems.join('; ')}`)
        for (const f of left) fs.rmSync(path.join(dir, f), { force: true })
        if (n > points) {
          out.points[`${name} ${m}`] = points
          break
        }
      }
    }
  }
  console.log(`RESULT ${JSON.stringify(out)}`)
}
main().catch((e) => console.log(`RESULT ${JSON.stringify({ crash: String(e && e.stack) })}`))
