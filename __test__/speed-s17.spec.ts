// `ODIRECT_ASYNC_PUNTED=1` (opt-in, read once: child processes): reads and writes on a tmpfs file
// whose kernel refuses RWF_NOWAIT on it (shmem has no FMODE_NOWAIT up to Linux 6.18 at least) go
// to io_uring with IOSQE_ASYNC (crates/napi/src/engine.rs FD_PUNTED): io_uring punts every one of
// them to an io-wq worker after a failed inline attempt anyway, and the flag spares the submitting
// JS thread that attempt. Not the default: the kernel then queues them as unhashed work (a file's
// writes no longer serialized on one worker), which the io_uring_queue_async_work tracepoint shows
// ("normal queue" where plain writes say "hashed queue"). Counted, never timed: the kernel's
// io_uring:io_uring_submit_req tracepoint (request flags, REQ_F_FORCE_ASYNC = IOSQE_ASYNC's bit
// 0x10) and io_uring:io_uring_queue_async_work (the request handed to io-wq, and to which queue), in
// a trace instance of this test's own filtered to the submitting process, and
// `NativeEngine.callStats[6]` (ops the engine flagged).
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { childLines } from './helpers/child-lines.js'
import { traceEvent, traceGo, tracefsReason } from './helpers/tracefs.ts'

const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist')
const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const disk = fs.mkdtempSync('/var/tmp/odirect-speed-s17-')
const shm = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/odirect-speed-s17-') : undefined
test.after.always(() => {
  fs.rmSync(disk, { recursive: true, force: true })
  if (shm !== undefined) fs.rmSync(shm, { recursive: true, force: true })
})

const UNIT = 4096
const N = 64
const knownPunts = (): number => getEngine().native.callStats[6]

/**
 * A typed writeMany then readMany of N blocks each (window 16) on `file`, with the bytes checked;
 * the script's body is shared by this process and the child (as a string for the child).
 */
const BATCHES = `async (open, file, backend) => {
  const fh = await open(file, 'w+', { backend })
  try {
    const memory = fh.alloc(${N} * ${UNIT})
    for (let i = 0; i < ${N}; i++) memory.fill(i + 1, i * ${UNIT}, (i + 1) * ${UNIT})
    const offsets = new Uint32Array(${N}).map((_, i) => i * ${UNIT})
    const lengths = new Uint32Array(${N}).fill(${UNIT})
    const positions = new Float64Array(${N}).map((_, i) => (${N} - 1 - i) * ${UNIT})
    const w = await fh.writeMany({ memory, offsets, lengths, positions }, { window: 16 })
    memory.fill(0)
    const r = await fh.readMany({ memory, offsets, lengths, positions }, { window: 16 })
    let ok = [...w, ...r].every((x) => x === ${UNIT})
    for (let i = 0; i < ${N}; i++) ok &&= memory[i * ${UNIT}] === i + 1 && memory[(i + 1) * ${UNIT} - 1] === i + 1
    return { backend: fh.backend, ok }
  } finally {
    await fh.close()
  }
}`
const batches = new Function(`return ${BATCHES}`)() as (o: typeof open, file: string, backend: string) => Promise<{ backend: string; ok: boolean }>

interface Seen {
  /** READ/WRITE(_FIXED) submissions. */
  rw: number
  /** Of them, with REQ_F_FORCE_ASYNC (IOSQE_ASYNC). */
  forced: number
  /** Requests handed to io-wq. */
  queued: number
  /** Writes handed to io-wq on the hashed queue (serialized per file). */
  hashedWrites: number
}

function count(trace: string): Seen {
  let rw = 0
  let forced = 0
  for (const m of trace.matchAll(/io_uring_submit_req:.*opcode (\w+), flags 0x([0-9a-f]+)/g)) {
    if (!/^(READ|WRITE)(_FIXED)?$/.test(m[1])) continue
    rw++
    if (BigInt(`0x${m[2]}`) & 0x10n) forced++
  }
  const queued = [...trace.matchAll(/io_uring_queue_async_work:/g)].length
  const hashedWrites = [...trace.matchAll(/io_uring_queue_async_work:.*opcode WRITE(_FIXED)?,.* hashed queue/g)].length
  return { rw, forced, queued, hashedWrites }
}

const EVENTS = ['io_uring/io_uring_submit_req', 'io_uring/io_uring_queue_async_work']
const TRACE_WHY = tracefsReason('io_uring_submit_req') ?? tracefsReason('io_uring_queue_async_work')

/** The child: ODIRECT_ASYNC_PUNTED=1, the same batches once told to on stdin, traced from here. */
async function childRun(file: string): Promise<{ seen: Seen; backend: string; ok: string; punts: string }> {
  const script = `
    const { open } = require(${JSON.stringify(path.join(DIST, 'index.js'))})
    const { getEngine } = require(${JSON.stringify(path.join(DIST, 'src', 'engine.js'))})
    ;(async () => {
      // The engine and its ring exist before the traced part.
      const fh = await open(process.argv[1], 'w+', { backend: process.argv[2] })
      await fh.close()
      process.stdout.write('ready\\n')
      await new Promise((resolve) => process.stdin.once('data', resolve))
      const p0 = getEngine().native.callStats[6]
      const r = await (${BATCHES})(open, process.argv[1], process.argv[2])
      process.stdout.write('done ' + r.backend + ' ' + r.ok + ' ' + (getEngine().native.callStats[6] - p0) + '\\n')
      process.stdin.destroy()
    })()`
  const c = childLines(process.execPath, ['-e', script, file, BACKEND], { ...process.env, ODIRECT_ASYNC_PUNTED: '1' }, true)
  await c.line('ready')
  const { done, trace } = await traceGo(c, EVENTS)
  const code = await c.exited
  if (code !== 0) throw new Error(`child exited ${code}: ${c.err()}`)
  const [, backend, ok, punts] = done.split(' ')
  return { seen: count(trace), backend, ok, punts }
}

{
  const why = TRACE_WHY ?? (shm === undefined ? 'no /dev/shm' : undefined)
  const title = `tmpfs batches: by default no IOSQE_ASYNC (writes on io-wq's hashed queue); ODIRECT_ASYNC_PUNTED=1 sends every read/write the kernel punts anyway with it, punted all the same${why ? ` (skipped: ${why})` : ''}`
  if (why !== undefined) console.log(`skipped: ${title}`)
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    const dir = shm as string
    const file = path.join(dir, 'default.bin')
    // The engine and its ring exist before the traced part.
    await (await open(file, 'w+', { backend: BACKEND })).close()
    const p0 = knownPunts()
    let r = { backend: '', ok: false }
    const trace = await traceEvent(EVENTS, process.pid, async () => {
      r = await batches(open, file, BACKEND)
    })
    t.true(r.ok, 'the bytes written are read back')
    if (r.backend !== 'io_uring') {
      t.log(`backend ${r.backend}: no io_uring flags to observe`)
      return
    }
    const seen = count(trace)
    t.is(seen.rw, 2 * N, `submissions seen: ${JSON.stringify(seen)}`)
    t.is(seen.forced, 0, `no IOSQE_ASYNC by default: ${JSON.stringify(seen)}`)
    t.is(knownPunts() - p0, 0, 'no op flagged by default (callStats[6])')
    // Every op goes to io-wq anyway on a kernel whose shmem refuses RWF_NOWAIT; a kernel that
    // takes some inline must see no flag from the engine (its probe finds no refusal).
    const kernelPuntsAll = seen.queued === 2 * N
    t.log(`default: ${seen.queued} of ${2 * N} ops handed to io-wq by the kernel, ${seen.hashedWrites} writes on the hashed queue`)
    if (kernelPuntsAll) t.is(seen.hashedWrites, N, "plain writes go on io-wq's hashed queue (one worker per file)")

    const on = await childRun(path.join(dir, 'on.bin'))
    t.is(on.backend, 'io_uring')
    t.is(on.ok, 'true', 'the child read back what it wrote')
    t.is(on.seen.rw, 2 * N, `submissions seen: ${JSON.stringify(on.seen)}`)
    const want = kernelPuntsAll ? 2 * N : 0
    t.is(on.seen.forced, want, `IOSQE_ASYNC seen by the kernel with ODIRECT_ASYNC_PUNTED=1: ${JSON.stringify(on.seen)}`)
    t.is(on.punts, String(want), 'ops the engine flagged (callStats[6])')
    if (kernelPuntsAll) {
      t.is(on.seen.queued, 2 * N, 'each flagged op handed to io-wq')
      t.is(on.seen.hashedWrites, 0, 'flagged writes reach io-wq unhashed (their file not yet assigned)')
    }
  })
}

{
  const why = shm === undefined ? 'no /dev/shm' : undefined
  const title = `ODIRECT_ASYNC_PUNTED=1: the engine flags a typed batch's ops on tmpfs on a kernel whose shmem refuses RWF_NOWAIT, none on a file that takes it (O_DIRECT on ext4 /var/tmp), none by default (callStats[6])${why ? ` (skipped: ${why})` : ''}`
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    const dir = shm as string
    // Whether this kernel refuses RWF_NOWAIT on tmpfs, asked without the addon (python3's
    // os.preadv with RWF_NOWAIT: EOPNOTSUPP), when python3 is there.
    let refuses: boolean | undefined
    try {
      const probe = path.join(dir, 'probe.bin')
      fs.writeFileSync(probe, Buffer.alloc(UNIT))
      const out = execFileSync('python3', ['-c', `import os\nfd=os.open(${JSON.stringify(probe)}, os.O_RDONLY)\ntry:\n  os.preadv(fd,[bytearray(1)],0,os.RWF_NOWAIT); print('takes')\nexcept OSError as e:\n  print('refuses' if e.errno==95 else 'other')`], { encoding: 'utf8' }).trim()
      refuses = out === 'refuses' ? true : out === 'takes' ? false : undefined
    } catch {
      refuses = undefined
    }
    // By default (this process): none.
    const file = path.join(dir, 'count.bin')
    await (await open(file, 'w+', { backend: BACKEND })).close()
    const p0 = knownPunts()
    const r = await batches(open, file, BACKEND)
    t.true(r.ok, 'the bytes written are read back')
    t.is(knownPunts() - p0, 0, 'by default')

    const script = `
      const { open } = require(${JSON.stringify(path.join(DIST, 'index.js'))})
      const { getEngine } = require(${JSON.stringify(path.join(DIST, 'src', 'engine.js'))})
      ;(async () => {
        const out = []
        for (const file of process.argv.slice(1, 3)) {
          await (await open(file, 'w+', { backend: process.argv[3] })).close()
          const p0 = getEngine().native.callStats[6]
          const r = await (${BATCHES})(open, file, process.argv[3])
          out.push(r.backend + ' ' + r.ok + ' ' + (getEngine().native.callStats[6] - p0))
        }
        process.stdout.write(out.join(' | ') + '\\n')
      })()`
    const out = execFileSync(process.execPath, ['-e', script, path.join(dir, 'count-on.bin'), path.join(disk, 'disk.bin'), BACKEND], { env: { ...process.env, ODIRECT_ASYNC_PUNTED: '1' }, encoding: 'utf8' }).trim()
    const [tmpfsRun, diskRun] = out.split(' | ').map((x) => x.split(' '))
    t.is(tmpfsRun[1], 'true', out)
    t.is(diskRun[1], 'true', out)
    t.is(diskRun[2], '0', `a file that takes RWF_NOWAIT: no flag (${out})`)
    const flagged = Number(tmpfsRun[2])
    if (tmpfsRun[0] !== 'io_uring') t.is(flagged, 0, `backend ${tmpfsRun[0]}: no ring, no flag`)
    else if (refuses === undefined) t.true(flagged === 0 || flagged === 2 * N, `all or none: ${flagged}`)
    else t.is(flagged, refuses ? 2 * N : 0, `kernel ${refuses ? 'refuses' : 'takes'} RWF_NOWAIT on tmpfs`)
  })
}
