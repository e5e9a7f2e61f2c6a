// fh.close() at every engine call of each in-flight form, and from user code that runs inside a
// call (an option getter), on the backend ODIRECT_BACKEND names. A run per point: the Nth engine
// call on the handle's descriptor (rw, rwMany, batch, batchViews, rwv, simple, registerBuffers;
// counted by wrappers on the Engine's prototype) calls fh.close() just before it ('before': what a
// getter read inside the call does) or just after it returns ('after'). As soon as close()
// resolves, another file ("the victim", 0x77 throughout) is opened: it takes the freed descriptor
// number. Once everything the run started has settled (tracked; nothing is timed):
// - no op, batch or stream rejected with anything but ERR_ODIRECT_CLOSED (never EBADF);
// - the victim is byte for byte as it was (no late op of the closed handle wrote it);
// - no read returned (or left in its memory) a victim byte: reads see 0x11 (the file) or nothing;
// - every block of the file is wholly old (0x11) or wholly new (0xee);
// - the handle's descriptor was closed once: the victim's number points at the victim at the end;
// - every promise settled (the loop running dry with one pending is a hang: reported).
// argv: dir [forms, comma separated | all]. Prints RESULT {"runs", "points", "bad": [...]}.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { Readable, Writable } = require('node:stream')
const { pipeline } = require('node:stream/promises')

const root = path.join(__dirname, '..', '..')
const od = require(path.join(root, 'dist', 'index.js'))
const { Engine } = require(path.join(root, 'dist', 'src', 'engine.js'))

const [dir, formArg = 'all'] = process.argv.slice(2)
const U = 64 * 1024
const N = 24
const OLD = 0x11
const NEW = 0xee
const VICTIM = 0x77
const file = path.join(dir, 'f')
const other = path.join(dir, 'g')
const victim = path.join(dir, 'v')

let count = 0
let target = -1
let mode = 'before'
let watchFd = -1
let onHit = () => {}
const fdArg = { rw: 2, rwMany: 2, batch: 2, batchViews: 2, rwv: 2, simple: 2 }
for (const name of ['rw', 'rwMany', 'batch', 'batchViews', 'rwv', 'simple', 'registerBuffers']) {
  const f = Engine.prototype[name]
  Engine.prototype[name] = function (...args) {
    const mine = name === 'registerBuffers' ? watchFd >= 0 : args[fdArg[name]] === watchFd && watchFd >= 0
    if (!mine) return f.apply(this, args)
    count++
    const hit = count === target
    if (hit && mode === 'before') onHit()
    try {
      return f.apply(this, args)
    } finally {
      if (hit && mode === 'after') onHit()
    }
  }
}

const outstanding = new Set()
function track(p) {
  const t = Promise.resolve(p).then(
    (v) => ({ ok: true, v }),
    (e) => ({ ok: false, e }),
  )
  outstanding.add(t)
  t.then(() => outstanding.delete(t))
  return t
}

const views = (mem) => Array.from({ length: N }, (_, i) => mem.subarray(i * U, (i + 1) * U))
const typed = (mem, from = 0, n = N) => ({
  memory: mem,
  offsets: new Uint32Array(n).map((_, i) => (from + i) * U),
  lengths: new Uint32Array(n).fill(U),
  positions: new Float64Array(n).map((_, i) => (from + i) * U),
})

/** Per-op calls, 6 in flight, the next started as one settles (those after close() reject). */
function perOp(fh, mem, write) {
  let next = 0
  const one = () => {
    if (next >= N) return undefined
    const i = next++
    const p = write ? fh.write(mem, i * U, U, i * U) : fh.read(mem, i * U, U, i * U)
    return track(p).then((r) => (one(), r))
  }
  for (let k = 0; k < 6; k++) one()
}

// Each form starts its I/O on `fh` (the file holds OLD; `mem` is fh.alloc(N * U) filled with NEW
// for writes, 0xcc for reads); `fh2` is a second handle (on `other`) the form may use.
const forms = {
  read: { write: false, run: (fh, mem) => perOp(fh, mem, false) },
  write: { write: true, run: (fh, mem) => perOp(fh, mem, true) },
  'readv+writev': { write: true, run: (fh, mem) => (track(fh.writev(views(mem).slice(0, 8), 0)), track(fh.readv(views(fh.alloc(N * U)).slice(0, 4), 8 * U))) },
  'readMany array window 4': { write: false, run: (fh, mem) => track(fh.readMany(views(mem).map((buffer, i) => ({ buffer, position: i * U })), { window: 4 })) },
  'writeMany array window 4': { write: true, run: (fh, mem) => track(fh.writeMany(views(mem).map((buffer, i) => ({ buffer, position: i * U })), { window: 4 })) },
  'writeMany array datasync': { write: true, run: (fh, mem) => track(fh.writeMany(views(mem).map((buffer, i) => ({ buffer, position: i * U })), { window: 4, datasync: true })) },
  'readMany typed window 4': { write: false, run: (fh, mem) => track(fh.readMany(typed(mem), { window: 4 })) },
  'writeMany typed window 4': { write: true, run: (fh, mem) => track(fh.writeMany(typed(mem), { window: 4 })) },
  'writeMany typed 2 lanes': { write: true, run: (fh, mem) => (track(fh.writeMany(typed(mem, 0, N / 2), { window: 3 })), track(fh.writeMany(typed(mem, N / 2, N / 2), { window: 3 }))) },
  'readMany BatchWindow queue': {
    write: false,
    run: (fh, mem, fh2) => {
      const w = new od.BatchWindow(4)
      track(fh2.readMany(typed(fh2.alloc(N * U)), { window: w }))
      for (let b = 0; b < 3; b++) track(fh.readMany(typed(mem, b * 8, 8), { window: w }))
    },
  },
  'writeMany BatchWindow queue': {
    write: true,
    run: (fh, mem, fh2) => {
      const w = new od.BatchWindow(4)
      track(fh2.writeMany(typed(fh2.alloc(N * U).fill(NEW)), { window: w }))
      for (let b = 0; b < 3; b++) track(fh.writeMany(typed(mem, b * 8, 8), { window: w }))
    },
  },
  registered: {
    write: true,
    run: (fh) => {
      let reg
      try {
        reg = fh.registerBuffers(1, N * U)
      } catch (e) {
        track(Promise.reject(e))
        return
      }
      const m = reg.buffers[0].fill(NEW)
      track(fh.writeMany(typed(m, 0, N - 4), { window: 4 }))
      for (let i = N - 4; i < N; i++) track(fh.write(m, i * U, U, i * U))
    },
  },
  'read stream': {
    write: false,
    run: (fh, _mem, _fh2, got) => {
      const rs = fh.createReadStream({ autoClose: false, highWaterMark: 2 * U })
      track(pipeline(rs, new Writable({ write: (c, _e, cb) => (got.push(Buffer.from(c)), cb()) })))
    },
  },
  'write stream': {
    write: true,
    run: (fh) => {
      const ws = fh.createWriteStream({ start: 0, autoClose: false, highWaterMark: 2 * U })
      track(pipeline(Readable.from((function* () { for (let i = 0; i < N / 2; i++) yield Buffer.alloc(2 * U, NEW) })()), ws))
    },
  },
  'read stream piped to a write stream': {
    write: false,
    run: (fh, _mem, fh2) => track(pipeline(fh.createReadStream({ autoClose: false, highWaterMark: 2 * U }), fh2.createWriteStream({ start: 0, autoClose: false }))),
  },
}

// close() from user code that runs inside a call of the handle, after its closed-check and before
// it counted its ops in flight: getters of ops and options (onHit closes the handle once).
const at = (i, get) => (mem) => Array.from({ length: N }, (_, k) => (k === i ? { buffer: mem.subarray(k * U, (k + 1) * U), get position() { return get(k * U) } } : { buffer: mem.subarray(k * U, (k + 1) * U), position: k * U }))
const closing = (v) => (onHit(), v)
const getters = {
  "writeMany, window 4: op 1's position getter": { write: true, run: (fh, mem) => track(fh.writeMany(at(1, closing)(mem), { window: 4 })) },
  "readMany, window 4: op 1's position getter": { write: false, run: (fh, mem) => track(fh.readMany(at(1, closing)(mem), { window: 4 })) },
  "writeMany: the last op's position getter": { write: true, run: (fh, mem) => track(fh.writeMany(at(N - 1, closing)(mem))) },
  "writeMany, window 4, datasync: op 2's position getter": { write: true, run: (fh, mem) => track(fh.writeMany(at(2, closing)(mem), { window: 4, datasync: true })) },
  "typed writeMany, window 4: the results getter": { write: true, run: (fh, mem) => track(fh.writeMany({ ...typed(mem), get results() { return closing(undefined) } }, { window: 4 })) },
  "typed readMany, window 4: the results getter": { write: false, run: (fh, mem) => track(fh.readMany({ ...typed(mem), get results() { return closing(undefined) } }, { window: 4 })) },
  'typed readMany in a BatchWindow behind another handle: the results getter': {
    write: false,
    run: (fh, mem, fh2) => {
      const w = new od.BatchWindow(2)
      track(fh2.readMany(typed(fh2.alloc(N * U)), { window: w }))
      track(fh.readMany({ ...typed(mem), get results() { return closing(undefined) } }, { window: w }))
    },
  },
  "writev: element 7's getter": {
    write: true,
    run: (fh, mem) => {
      const a = views(mem).slice(0, 8)
      Object.defineProperty(a, 7, { get: () => closing(mem.subarray(7 * U, 8 * U)), enumerable: true })
      track(fh.writev(a, 0))
    },
  },
  "write: the options' signal getter": { write: true, run: (fh, mem) => track(fh.write(mem, { offset: 0, length: U, position: 0, get signal() { return closing(undefined) } })) },
  "datasync: the options' signal getter, writes in flight": {
    write: true,
    run: (fh, mem) => {
      for (let i = 0; i < 8; i++) track(fh.write(mem, i * U, U, i * U))
      track(fh.datasync({ get signal() { return closing(undefined) } }))
    },
  },
}

const bad = []
const points = {}
let runs = 0
let current = ''
let finished = false
process.on('beforeExit', () => {
  if (finished) return
  finished = true
  bad.push(`${current}: hang (the loop ran dry with ${outstanding.size} promise(s) pending)`)
  console.log(`RESULT ${JSON.stringify({ runs, points, bad })}`)
})

const codeOf = (e) => (e && typeof e === 'object' ? e.code : undefined)
function checkSettled(label, results) {
  for (const r of results) {
    if (r.ok) continue
    const c = codeOf(r.e)
    // ECANCELED: a write stream's op cancelled by the close; a pipeline from a read stream over
    // the handle ends ERR_STREAM_PREMATURE_CLOSE (the stream ends with 'close' and no 'end', as
    // fs's does when its FileHandle closes under it).
    if (c !== 'ERR_ODIRECT_CLOSED' && c !== 'ECANCELED' && !(c === 'ERR_STREAM_PREMATURE_CLOSE' && label.startsWith('read stream'))) bad.push(`${label}: rejected ${c ?? ''} ${String(r.e && r.e.message).slice(0, 160)}`)
  }
}

async function drain() {
  const all = []
  for (;;) {
    while (outstanding.size > 0) all.push(...(await Promise.all([...outstanding])))
    await new Promise((r) => setImmediate(r))
    if (outstanding.size === 0) return all
  }
}

async function runOne(name, form, m, n) {
  const label = `${name} ${m} #${n}`
  current = label
  fs.writeFileSync(file, Buffer.alloc(N * U, OLD))
  fs.writeFileSync(other, Buffer.alloc(N * U, OLD))
  fs.writeFileSync(victim, Buffer.alloc(N * U, VICTIM))
  const fh = await od.open(file, 'r+')
  const fh2 = await od.open(other, 'r+')
  const fd = fh.fd
  const mem = fh.alloc(N * U).fill(form.write ? NEW : 0xcc)
  const got = []
  let closing
  let victimFd = -1
  count = 0
  target = n
  mode = m
  watchFd = fd
  onHit = () => {
    if (closing !== undefined) return
    closing = track(
      fh.close().then(() => {
        victimFd = fs.openSync(victim, 'r+')
      }),
    )
  }
  try {
    form.run(fh, mem, fh2, got)
  } catch (e) {
    track(Promise.reject(e))
  }
  const results = await drain()
  watchFd = -1
  const calls = count
  const hit = closing !== undefined
  if (!hit) await track(fh.close().then(() => (victimFd = fs.openSync(victim, 'r+'))))
  await drain()
  await fh2.close()
  checkSettled(label, results)
  // The victim: untouched, and its descriptor still its own.
  const vb = fs.readFileSync(victim)
  const touched = vb.findIndex((b) => b !== VICTIM)
  if (touched >= 0) bad.push(`${label}: the file opened after close() (fd ${victimFd}, the handle's was ${fd}) was written at ${touched}: ${vb.filter((b) => b !== VICTIM).length} bytes`)
  try {
    if (fs.readlinkSync(`/proc/self/fd/${victimFd}`) !== victim) bad.push(`${label}: fd ${victimFd} no longer the victim`)
  } catch (e) {
    bad.push(`${label}: the victim's fd ${victimFd} was closed under it (${e.code})`)
  }
  fs.closeSync(victimFd)
  // Reads: nothing of the victim's in any memory a read wrote.
  const readMem = form.write ? [] : [mem, ...got]
  for (const b of readMem) if (b.includes(VICTIM)) bad.push(`${label}: a read returned the victim's bytes`)
  // The file: each block wholly old or wholly new.
  const fb = fs.readFileSync(file)
  for (let i = 0; i < N; i++) {
    const blk = fb.subarray(i * U, (i + 1) * U)
    if (!blk.every((b) => b === blk[0]) || (blk[0] !== OLD && blk[0] !== NEW)) bad.push(`${label}: block ${i} torn or foreign (${blk[0]})`)
  }
  runs++
  return { calls, hit }
}

async function main() {
  if (formArg === 'getters') {
    for (const [name, form] of Object.entries(getters)) {
      const r = await runOne(name, form, 'getter', 0)
      if (!r.hit) bad.push(`${name}: the getter never ran`)
      else points[name] = 1
    }
    finished = true
    console.log(`RESULT ${JSON.stringify({ runs, points, bad })}`)
    return
  }
  const names = formArg === 'all' ? Object.keys(forms) : formArg.split(',')
  for (const name of names) {
    const form = forms[name]
    if (form === undefined) throw new Error(`no form ${name}`)
    for (const m of ['before', 'after']) {
      for (let n = 1; ; n++) {
        const r = await runOne(name, form, m, n)
        if (!r.hit) break
        points[`${name} ${m}`] = n
      }
    }
  }
  finished = true
  console.log(`RESULT ${JSON.stringify({ runs, points, bad })}`)
}
main().catch((e) => {
  finished = true
  console.log(`RESULT ${JSON.stringify({ runs, points, bad, crash: String((e && e.stack) || e) })}`)
})
