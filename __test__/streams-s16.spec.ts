// Streams, sixteenth session. (1) A write stream gives its blocks' memory back to odirect's pool
// when it is done (src/streams/core.ts RELEASE_BLOCKS): the next stream of the process takes no
// new region, and nothing of the stream stays alive waiting for a collection. (2) With
// ODIRECT_POOL_TOUCH=1 (opt-in) the memory pool's helper thread
// faults the spare 2 MiB regions it makes for stream chunks in by writing to them, not with
// madvise(MADV_POPULATE_WRITE) (crates/core/src/mempool.rs `populate_by_touch`). madvise holds
// the process's mmap_lock for the whole fault (a new huge page: 0.2 ms, 3-6 ms where the VM's
// host must back it first), and the JS thread's mmap/munmap calls waited for it; a write faults
// under the region's own VMA lock. Counted with the syscalls:sys_enter_madvise tracepoint on the
// helper thread while a read stream takes new regions.
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

import { once } from 'node:events'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'

import { createWriteStream, open, writableWebStream } from '../dist/index.js'
import { native } from '../dist/src/native.js'
import { childLines } from './helpers/child-lines.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { TRACING, traceEvent } from './helpers/tracefs.ts'

const scratch = scratchDirs('streams-s16')
const HERE = path.dirname(new URL(import.meta.url).pathname)
const MADV_POPULATE_WRITE = 23

function reason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root for tracefs'
  if (!fs.existsSync(path.join(TRACING, 'events', 'syscalls', 'sys_enter_madvise'))) return 'no syscall tracepoints (CONFIG_FTRACE_SYSCALLS) or tracefs not mounted'
  if (!fs.existsSync('/sys/kernel/mm/transparent_hugepage/enabled')) return 'no transparent huge pages (the pool then maps small pages the same way)'
  return undefined
}
const WHY = reason()
if (WHY !== undefined) console.log(`streams-s16.spec: skipped: ${WHY}`)
const serial = WHY === undefined ? test.serial : test.skip
const why = WHY ? ` (skipped: ${WHY})` : ''

const MiB = 1024 * 1024

/** odirect allocations alive now (ArrayBuffers not finalized, ops in flight). */
const alive = (): number => native.memoryStats()[0] as number
/** Write streams' own blocks released at their end so far. */
const released = (): number => native.releasedBlocks()
/** New 2 MiB regions the pool took so far: mapped by the allocating thread + spares taken. */
const regions = (): number => {
  const s = native.poolSpareStats()
  return (s[0] as number) + (s[1] as number)
}

/** Waits (loop turns, bounded at 10 s) until at most `n` odirect allocations are alive. */
async function aliveAtMost(n: number): Promise<number> {
  const until = Date.now() + 10_000
  while (alive() > n && Date.now() < until) await new Promise((r) => setImmediate(r))
  return alive()
}

/** 8 MiB of 1 MiB Buffers through a Node or a web write stream of a fresh handle (chunkSize 256 KiB, writeBehind 2). */
async function writePass(kind: 'node' | 'web', file: string): Promise<void> {
  const fh = await open(file, 'r+')
  const src = (): Readable => Readable.from(Array.from({ length: 8 }, (_, i) => Buffer.alloc(MiB, i + 1)))
  const o = { chunkSize: 256 * 1024, writeBehind: 2, datasync: false, autoClose: true }
  if (kind === 'node') await pipeline(src(), createWriteStream(fh, o))
  else await Readable.toWeb(src()).pipeTo(writableWebStream(fh, o) as WritableStream<unknown>)
}

for (const kind of ['node', 'web'] as const) {
  test.serial(`a ${kind} write stream gives its blocks back to the pool at its end: the next one takes no new region, nothing stays alive for a collection`, async (t) => {
    const file = path.join(scratch(), 'w.dat')
    fs.writeFileSync(file, Buffer.alloc(8 * MiB))
    const a0 = alive()
    const r0 = released()
    await writePass(kind, file)
    const n = released() - r0
    t.true(n >= 3, `the stream released its blocks at its end (${n}; 256 KiB blocks, writeBehind 2: at least 3)`)
    t.is(await aliveAtMost(a0), a0, 'every block of the stream is freed without a collection')
    const g0 = regions()
    await writePass(kind, file)
    t.is(regions() - g0, 0, 'the second stream took no new 2 MiB region: its blocks are the memory of the first')
    t.is(fs.readFileSync(file).subarray(7 * MiB, 7 * MiB + 4).toString('hex'), '08080808', 'the data is written')
    t.is(await aliveAtMost(a0), a0, 'and its blocks are freed too')
  })
}

test.serial('a write stream destroyed in the middle gives its blocks back once nothing is in flight', async (t) => {
  const file = path.join(scratch(), 'd.dat')
  fs.writeFileSync(file, Buffer.alloc(8 * MiB))
  const a0 = alive()
  const r0 = released()
  const fh = await open(file, 'r+')
  const ws = createWriteStream(fh, { chunkSize: 256 * 1024, writeBehind: 2, datasync: false, autoClose: true })
  // The first chunk copied into blocks (its callback), then two more with writes in flight.
  await new Promise((r) => ws.write(Buffer.alloc(MiB, 1), r))
  ws.write(Buffer.alloc(MiB, 2))
  ws.write(Buffer.alloc(MiB, 3))
  ws.destroy()
  await once(ws, 'close')
  t.true(released() - r0 >= 1, 'its blocks were released')
  t.is(await aliveAtMost(a0), a0, 'nothing of the stream is alive without a collection')
})

/** The thread of `pid` named `name`, or undefined. */
function threadNamed(pid: number, name: string): number | undefined {
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      if (fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === name) return Number(tid)
    } catch {
      // The thread ended meanwhile.
    }
  }
  return undefined
}

interface Done {
  taken: number
  made: number
  held: number
  kept: number
}

/** Runs the child with `env`; returns its counts over the second pass and the helper's madvise behaviours meanwhile. */
async function run(t: import('ava').ExecutionContext, env: Record<string, string>): Promise<{ done: Done; advice: number[] }> {
  const dir = scratch()
  const file = path.join(dir, 'src.dat')
  fs.writeFileSync(file, Buffer.alloc(16 << 20, 7))
  const { child, line, exited, err } = childLines(process.execPath, [path.join(HERE, 'streams-s16', 'pool-child.cjs'), file], { ...process.env, ODIRECT_POOL_SPARES: '2', ...env }, true)
  await line('ready')
  const helper = threadNamed(child.pid as number, 'odirect-pool')
  if (helper === undefined) {
    child.stdin?.end('go\nend\n')
    await exited
    throw new Error(`the child has no odirect-pool thread after a pass that kept 8 chunks: ${err()}`)
  }
  let done = ''
  const trace = await traceEvent('syscalls/sys_enter_madvise', helper, async () => {
    child.stdin?.write('go\n')
    done = await line('done')
  })
  child.stdin?.end('end\n')
  t.is(await exited, 0, err())
  // e.g. `sys_madvise(start: 0x7f..., len_in: 0x00200000, behavior: 0x00000017)`
  const advice = [...trace.matchAll(/behavior: (0x[0-9a-f]+)/g)].map((m) => Number(m[1]))
  return { done: JSON.parse(done.slice(5)) as Done, advice }
}

serial(`ODIRECT_POOL_TOUCH=1: the pool's helper faults the spare regions it makes by writing to them: no madvise(MADV_POPULATE_WRITE) holds the mmap_lock${why}`, async (t) => {
  const { done, advice } = await run(t, { ODIRECT_POOL_TOUCH: '1' })
  t.log(`pass: ${JSON.stringify(done)}, helper's madvise behaviours: ${JSON.stringify(advice)}`)
  t.is(done.kept, 16, 'both passes kept their 8 chunks')
  t.true(done.taken >= 1, 'the second pass took spare regions')
  t.true(done.made >= 1, 'the helper made spare regions during the second pass')
  t.false(advice.includes(MADV_POPULATE_WRITE), 'no spare was faulted in by madvise(MADV_POPULATE_WRITE)')
})

serial(`by default the helper faults each spare region in with madvise(MADV_POPULATE_WRITE)${why}`, async (t) => {
  const { done, advice } = await run(t, {})
  t.log(`pass: ${JSON.stringify(done)}, helper's madvise behaviours: ${JSON.stringify(advice)}`)
  t.true(done.made >= 1, 'the helper made spare regions during the second pass')
  t.true(advice.filter((a) => a === MADV_POPULATE_WRITE).length >= done.made, 'each spare made was populated by madvise')
})
