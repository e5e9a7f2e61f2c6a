// Streams, sixteenth session: with ODIRECT_POOL_TOUCH=1 (opt-in) the memory pool's helper thread
// faults the spare 2 MiB regions it makes for stream chunks in by writing to them, not with
// madvise(MADV_POPULATE_WRITE) (crates/core/src/mempool.rs `populate_by_touch`). madvise holds
// the process's mmap_lock for the whole fault (a new huge page: 0.2 ms, 3-6 ms where the VM's
// host must back it first), and the JS thread's mmap/munmap calls waited for it; a write faults
// under the region's own VMA lock. Counted with the syscalls:sys_enter_madvise tracepoint on the
// helper thread while a read stream takes new regions.
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

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
