#!/usr/bin/env node
// Where a stream pass spends its time (issue 19 item 1): one sequential pass per engine, with the
// block layer's tracepoints (block_rq_issue / block_rq_complete, trace_clock mono, a private
// tracing instance) beside the engine's own marks (process.hrtime, also CLOCK_MONOTONIC).
// Prints, per engine, medians over rounds of: wall time, open (start -> 'open'), first I/O issued,
// time to first chunk, the device's busy span (first issue -> last data completion), idle time
// inside it (nothing in flight), completion-to-next-issue gaps, tail (last data completion ->
// end, incl. a flush), and MB/s over the wall and over the device span.
//
//   node bench/phases.cjs FILE SIZE_MIB ROUNDS [engine,...]   (root; dist/ built; fio for the fio rows)
//
// Engines: odirect-read odirect-reuse web-read web-byob odirect-write web-write fio-read fio-write
// fio-read-huge fio-write-huge dd-read dd-write; odirect-write-transfer web-write-transfer (a source
// of odirect 2 MiB chunks made before the clock, transferChunks), perop-write (1 MiB fh.write x 4). `engine@NAME=value+NAME2=value` runs the child
// with those environment variables (A/B rows in one interleaved run), e.g. PHASES_CHUNK (bytes)
// and PHASES_DEPTH (readAhead / writeBehind). PHASES_DUMP=PREFIX keeps each run's trace (with the
// io_uring_enter calls) in PREFIX-ENGINE-ROUND.trace. The writes overwrite FILE in place.
// Columns (µs): wall = call to end; open = call to 'open'; issue1 = call to the first request;
// first = call to the first chunk; span = first request issued to last completed; idle = nothing
// in flight within the span; gapMed/gapSum = a completion to the next request issued; refill =
// median per burst, its first completion until the queue depth is back; tail = last completion
// to the end; flush = last data completion to the flush's completion; then MB/s over wall, span
// and fio's own figure (fioRt: fio's runtime), CPU seconds of the pass, requests issued.
// PHASES_ROUNDS=1 also prints each run's MB/s, idle and requests on stderr, one JSON line per run.
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { Readable } = require('node:stream')
const { pipeline } = require('node:stream/promises')

const DIST = path.join(__dirname, '..', 'dist')
const now = () => Number(process.hrtime.bigint()) / 1e3 // µs, CLOCK_MONOTONIC

async function child(engine, file, size) {
  const od = require(path.join(DIST, 'index.js'))
  const { native } = require(path.join(DIST, 'src', 'native.js'))
  // PHASES_CHUNK / PHASES_DEPTH (bytes, ops in flight): other than the streams' defaults.
  const tune = {}
  if (process.env.PHASES_CHUNK) tune.chunkSize = Number(process.env.PHASES_CHUNK)
  const CH = tune.chunkSize ?? 2 << 20
  const marks = {}
  const depth = (k) => (process.env.PHASES_DEPTH ? { [k]: Number(process.env.PHASES_DEPTH) } : {})
  const run = async (sz, mark) => {
    const m = mark ? (k, reset) => (reset ? (marks[k] = now()) : (marks[k] ??= now())) : () => {}
    m('t0')
    if (engine === 'odirect-read' || engine === 'odirect-reuse') {
      const s = od.createReadStream(file, { ...tune, ...depth('readAhead'), end: sz - 1, reuseChunks: engine === 'odirect-reuse' })
      s.once('open', () => m('open'))
      let n = 0
      for await (const c of s) {
        m('first')
        n += c.length
      }
      m('last')
      return n
    }
    if (engine === 'web-read' || engine === 'web-byob') {
      const byob = engine === 'web-byob'
      const r = od.readableWebStream(file, { ...tune, ...depth('readAhead'), end: sz - 1 }).getReader(byob ? { mode: 'byob' } : undefined)
      let view = new Uint8Array(CH)
      let n = 0
      for (;;) {
        const { done, value } = byob ? await r.read(view) : await r.read()
        if (done || value === undefined) break
        m('first')
        n += value.length
        if (byob) view = new Uint8Array(value.buffer)
      }
      m('last')
      return n
    }
    const src = Buffer.alloc(1 << 20)
    for (let i = 0; i < src.length; i += 8) src[i] = (i % 251) + 1
    if (engine === 'perop-write') {
      // The bench's per-op row: 1 MiB writes (PHASES_CHUNK), PHASES_DEPTH (4) in flight from
      // reused fh.alloc buffers, each refilled from its own completion; then a datasync.
      const fh = await od.open(file, 'r+')
      const qd = Number(process.env.PHASES_DEPTH ?? 4)
      const bs = tune.chunkSize ?? 1 << 20
      // PHASES_BUFS: that many buffers taken in turn (a stream's rotation of blocks), default qd.
      const bufs = Array.from({ length: Math.max(qd, Number(process.env.PHASES_BUFS ?? qd)) }, () => {
        const b = fh.alloc(bs)
        for (let o = 0; o < bs; o += src.length) b.set(src.subarray(0, Math.min(src.length, bs - o)), o)
        return b
      })
      m('open')
      let next = 0
      let turn = 0
      const lane = async () => {
        while (next < sz) {
          const at = next
          next += bs
          const b = bufs[turn++ % bufs.length]
          // PHASES_REFILL=1: new data into the buffer before each write (the write stream's
          // non-temporal copy, 1 MiB source pieces), =2: a plain copy (TypedArray.set).
          if (process.env.PHASES_REFILL === '1') for (let o = 0; o < b.length; o += src.length) native.copyInto(b, o, src)
          else if (process.env.PHASES_REFILL === '2') for (let o = 0; o < b.length; o += src.length) b.set(src, o)
          await fh.write(b, { position: at })
        }
      }
      await Promise.all(Array.from({ length: qd }, lane))
      await fh.datasync()
      m('last')
      await fh.close()
      return sz
    }
    if (engine === 'odirect-write-transfer' || engine === 'web-write-transfer') {
      // The bench's transfer rows: a source of odirect chunks (2 MiB, or PHASES_CHUNK) made before
      // the clock, each taken over by the stream (transferChunks) and written in place.
      const bs = tune.chunkSize ?? 2 << 20
      const chunks = []
      for (let at = 0; at < sz; at += bs) {
        const b = od.allocAligned(Math.min(bs, sz - at))
        for (let o = 0; o < b.length; o += src.length) b.set(src.subarray(0, Math.min(src.length, b.length - o)), o)
        chunks.push(b)
      }
      const gen = (function* () {
        for (let i = 0; i < chunks.length; i++) {
          const c = chunks[i]
          chunks[i] = undefined
          yield c
        }
      })()
      // PHASES_FH=1: the file opened before the clock and handed to the stream (as the bench's rows).
      const fh = process.env.PHASES_FH === '1' ? await od.open(file, 'r+') : undefined
      const opts = { ...tune, ...depth('writeBehind'), ...(fh ? { autoClose: true } : { flags: 'r+' }), datasync: true, transferChunks: true }
      const target = fh ?? file
      m('t0', true)
      if (engine === 'odirect-write-transfer') {
        const w = od.createWriteStream(target, opts)
        w.once('open', () => m('open'))
        w.once('finish', () => m('last'))
        await pipeline(Readable.from(gen), w)
      } else {
        const rs = new ReadableStream({
          pull(c) {
            const r = gen.next()
            if (r.done === true) c.close()
            else c.enqueue(r.value)
          },
        })
        await rs.pipeTo(od.writableWebStream(target, opts))
        m('last')
      }
      return sz
    }
    const gen = Readable.from((function* () { for (let i = 0; i < sz / src.length; i++) yield src })())
    const opts = { ...tune, ...depth('writeBehind'), flags: 'r+', datasync: true }
    if (engine === 'odirect-write') {
      const w = od.createWriteStream(file, opts)
      w.once('open', () => m('open'))
      w.once('finish', () => m('last'))
      await pipeline(gen, w)
    } else {
      await Readable.toWeb(gen).pipeTo(od.writableWebStream(file, opts))
      m('last')
    }
    return sz
  }
  await run(Math.min(size, 8 << 20), false)
  const fd = fs.openSync(file, 'r')
  native.dropCache(fd, 0, 0)
  fs.closeSync(fd)
  const c0 = process.cpuUsage()
  const n = await run(size, true)
  marks.end = now()
  const c = process.cpuUsage(c0)
  if (n !== size) throw new Error(`moved ${n} of ${size}`)
  marks.cpu = (c.user + c.system) / 1e6
  process.stdout.write(JSON.stringify(marks))
}

// ---- parent ----
const TR = '/sys/kernel/tracing'
function traceInstance() {
  // The file first: a missing one must not leave a tracing instance behind.
  const dev = fs.statSync(fs.realpathSync(process.argv[2])).dev
  const dir = path.join(TR, 'instances', `odirect-phases-${process.pid}`)
  fs.mkdirSync(dir)
  const w = (f, v) => fs.writeFileSync(path.join(dir, f), v)
  w('trace_clock', 'mono')
  w('buffer_size_kb', '8192')
  w('events/block/block_rq_issue/enable', '1')
  w('events/block/block_rq_complete/enable', '1')
  // With PHASES_DUMP: the io_uring_enter calls too (when the JS thread reaps and submits).
  if (process.env.PHASES_DUMP) w('events/syscalls/sys_enter_io_uring_enter/enable', '1')
  // PHASES_EVENTS=a/b,c/d: more tracepoints in the dump (e.g. syscalls/sys_exit_io_uring_enter).
  const extra = process.env.PHASES_DUMP && process.env.PHASES_EVENTS ? process.env.PHASES_EVENTS.split(',') : []
  for (const e of extra) w(`events/${e}/enable`, '1')
  return {
    start() {
      w('tracing_on', '0')
      w('trace', '')
      w('tracing_on', '1')
    },
    stop() {
      w('tracing_on', '0')
      return fs.readFileSync(path.join(dir, 'trace'), 'utf8')
    },
    dev: `${Math.floor(dev / 256) & 0xfff},${(dev & 0xff) | ((dev >> 12) & 0xfff00)}`,
    remove() {
      try {
        w('tracing_on', '0')
        w('events/block/enable', '0')
        if (process.env.PHASES_DUMP) w('events/syscalls/sys_enter_io_uring_enter/enable', '0')
        for (const e of extra) w(`events/${e}/enable`, '0')
      } catch {}
      fs.rmdirSync(dir)
    },
  }
}

/** The file's extents as [first sector, end sector) pairs (filefrag -v, 4 KiB blocks; the filesystem fills its device). */
function extents(file) {
  const out = spawnSync('filefrag', ['-v', '-b4096', file], { encoding: 'utf8' }).stdout
  const xs = []
  for (const m of out.matchAll(/^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)) xs.push([Number(m[1]) * 8, (Number(m[2]) + 1) * 8])
  return xs
}

function parseTrace(text, dev, ext, from) {
  const ev = []
  const re = /\s(\d+\.\d+): block_rq_(issue|complete): (\d+,\d+) (\S+) .*?(\d+) \+ (\d+)/
  for (const line of text.split('\n')) {
    const m = re.exec(line)
    if (!m || m[3] !== dev) continue
    const t = Number(m[1]) * 1e6
    if (t < from) continue
    const sec = Number(m[5])
    const flushOnly = /^F+$/.test(m[4]) || Number(m[6]) === 0
    if (!flushOnly && !ext.some(([a, b]) => sec >= a && sec < b)) continue
    ev.push({ t, issue: m[2] === 'issue', rwbs: flushOnly ? 'F' : m[4] })
  }
  ev.sort((a, b) => a.t - b.t)
  const data = ev.filter((e) => e.rwbs !== 'F')
  const flush = ev.filter((e) => e.rwbs === 'F')
  if (data.length === 0) return undefined
  const firstIssue = data.find((e) => e.issue)?.t
  const lastDone = [...data].reverse().find((e) => !e.issue)?.t
  // The queue depth the engine keeps (the most in flight at once), and per burst of completions
  // the time from its first completion until that depth is reached again ("refill").
  let depth = 0
  {
    let n = 0
    for (const e of data) {
      n = e.issue ? n + 1 : Math.max(0, n - 1)
      depth = Math.max(depth, n)
    }
  }
  const refills = []
  let burst
  let inflight = 0
  let idle = 0
  let since = firstIssue
  const gaps = []
  let lastComplete
  for (const e of data) {
    if (e.issue) {
      if (inflight === 0 && since !== undefined) idle += e.t - since
      if (lastComplete !== undefined) {
        gaps.push(e.t - lastComplete)
        lastComplete = undefined
      }
      inflight++
      if (inflight === depth && burst !== undefined) {
        refills.push(e.t - burst)
        burst = undefined
      }
    } else {
      if (inflight === depth) burst = e.t
      inflight = Math.max(0, inflight - 1)
      if (inflight === 0) since = e.t
      lastComplete = e.t
    }
  }
  const issues = data.filter((e) => e.issue).length
  const flushDone = flush.filter((e) => !e.issue).map((e) => e.t)
  return { firstIssue, lastDone, idle, gaps, refills, issues, flushDone: flushDone.length ? Math.max(...flushDone) : undefined }
}

const med = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN
}

function runFio(file, size, write, hugePages) {
  // The stream bench's fio row (bench/streams.ts runFioStream): the harness's peak options for
  // 1 MiB at depth 4, one pass over the file; writes end with an fdatasync.
  const { fioArgs } = require(path.join(DIST, 'bench', 'harness.js'))
  const ctx = { path: file, size, limit: { durationMs: 0, ops: size / (1 << 20), rampMs: 0 }, hugePages }
  const w = { write, random: false, bs: 1 << 20, qd: 4 }
  const args = [...fioArgs(ctx, w, 'io_uring', 1, hugePages !== undefined), ...(write ? ['--end_fsync=1'] : [])]
  const t0 = now()
  const r = spawnSync('fio', args, { encoding: 'utf8' })
  const t1 = now()
  if (r.status !== 0) throw new Error(r.stderr)
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')))
  const s = write ? j.jobs[0].write : j.jobs[0].read
  return { t0, end: t1, fioRuntimeUs: s.runtime * 1000, fioMBps: s.bw_bytes / 1e6 }
}

function runDd(file, size, write) {
  const count = String(size >> 20)
  const args = write ? ['if=/dev/zero', `of=${file}`, 'oflag=direct', 'bs=1M', `count=${count}`, 'conv=notrunc,fdatasync'] : [`if=${file}`, 'of=/dev/null', 'iflag=direct', 'bs=1M', `count=${count}`]
  const t0 = now()
  spawnSync('dd', args)
  return { t0, end: now() }
}

async function parent() {
  const [file, sizeMiB, rounds, list] = process.argv.slice(2)
  const size = Number(sizeMiB) << 20
  const engines = (list ?? 'odirect-read,web-read,fio-read-huge,odirect-write,web-write,fio-write-huge').split(',')
  let huge
  if (engines.some((e) => e.endsWith('-huge'))) {
    const { reserveHugePages } = require(path.join(DIST, 'bench', 'hugepages.js'))
    huge = reserveHugePages(4)
    if (typeof huge === 'string') throw new Error(huge)
  }
  const tr = traceInstance()
  const ext = extents(file)
  const rows = {}
  try {
    for (let r = 0; r < Number(rounds); r++) {
      for (const e of engines) {
        const write = e.split('@')[0].includes('write')
        const { native } = require(path.join(DIST, 'src', 'native.js'))
        const fd = fs.openSync(file, 'r')
        native.dropCache(fd, 0, 0)
        fs.closeSync(fd)
        tr.start()
        let marks
        if (e.startsWith('fio')) marks = runFio(file, size, write, e.endsWith('-huge') ? huge : undefined)
        else if (e.startsWith('dd')) marks = runDd(file, size, write)
        else {
          // "engine@NAME=value+NAME2=value": the child runs with that environment variable (A/B experiments).
          const [name, env] = e.split('@')
          const extra = env === undefined ? {} : Object.fromEntries(env.split('+').map((kv) => kv.split('=')))
          const c = spawnSync(process.execPath, [__filename, '--child', name, file, String(size)], { encoding: 'utf8', env: { ...process.env, ...extra } })
          if (c.status !== 0) throw new Error(c.stderr)
          marks = JSON.parse(c.stdout)
        }
        const text = tr.stop()
        if (process.env.PHASES_DUMP) fs.writeFileSync(`${process.env.PHASES_DUMP}-${e}-${r}.trace`, text)
        const t = parseTrace(text, tr.dev, ext, marks.t0)
        if (t === undefined) throw new Error(`${e}: no request on ${file}'s extents was traced (a file not yet written back has none: sync it first)`)
        const row = (rows[e] ??= [])
        // PHASES_ROUNDS=1: each run's figures on stderr too (paired ratios between engines of a round).
        if (process.env.PHASES_ROUNDS === '1') console.error(JSON.stringify({ round: r, engine: e, mbWall: size / (marks.end - marks.t0), mbDev: size / (t.lastDone - t.firstIssue), idle: t.idle, reqs: t.issues }))
        const firstIssue = t.firstIssue
        const wall = marks.end - marks.t0
        row.push({
          wall,
          open: marks.open !== undefined ? marks.open - marks.t0 : NaN,
          issue1: firstIssue - marks.t0,
          first: marks.first !== undefined ? marks.first - marks.t0 : NaN,
          span: t.lastDone - firstIssue,
          idle: t.idle,
          gapMed: med(t.gaps),
          gapSum: t.gaps.reduce((a, b) => a + b, 0),
          refill: med(t.refills),
          tail: marks.end - t.lastDone,
          flush: t.flushDone !== undefined ? t.flushDone - t.lastDone : NaN,
          mbWall: size / wall,
          mbDev: size / (t.lastDone - firstIssue),
          mbFio: marks.fioMBps ?? NaN,
          fioRt: marks.fioRuntimeUs ?? NaN,
          cpu: marks.cpu ?? NaN,
          reqs: t.issues,
        })
      }
    }
  } finally {
    tr.remove()
    if (typeof huge === 'object') huge.release()
  }
  const keys = ['wall', 'open', 'issue1', 'first', 'span', 'idle', 'gapMed', 'gapSum', 'refill', 'tail', 'flush', 'mbWall', 'mbDev', 'mbFio', 'fioRt', 'cpu', 'reqs']
  console.log(['engine (µs; MB/s)', ...keys].join('\t'))
  for (const [e, row] of Object.entries(rows)) console.log([e, ...keys.map((k) => { const v = med(row.map((x) => x[k])); return Number.isFinite(v) ? (k === 'cpu' ? v.toFixed(3) : Math.round(v)) : '-' })].join('\t'))
}

if (process.argv[2] === '--child') child(process.argv[3], process.argv[4], Number(process.argv[5])).catch((e) => { console.error(e); process.exit(1) })
else parent().catch((e) => { console.error(e); process.exit(1) })
