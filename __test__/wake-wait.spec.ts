// The wake-up wait (crates/napi/src/engine.rs `wake_wait`, opt-in: `ODIRECT_WAKE_WAIT=8`; unset
// or 0 off): after a wake-up of the loop that delivered completions to JS, with 32 or more writes in
// flight on the ring and the JS thread on a CPU that services the interrupts of the block device
// of a direct file the engine has open, the thread sleeps in the kernel until 8 completions are
// in (one io_uring_enter with GETEVENTS and min_complete 8) instead of in the loop's epoll, as
// fio's iodepth_batch_complete_min does; it is otherwise woken for almost every write completion
// there (the kworker finishing direct writes runs on that CPU: bench/counts).
//
// Observed deterministically through a FIFO: a child (wake-wait/child.mjs, pinned with taskset)
// opens a file of /var/tmp's block device with O_DIRECT, fills a FIFO, puts N 4 KiB writes to it
// in flight and takes one 4 KiB pipe buffer out at a time: each completes one write, so each
// wake-up delivers one completion with N - 1 writes in flight. The kernel's syscalls:sys_enter_io_uring_enter
// tracepoint (a trace instance of this test's own, filtered to the child) shows the wait's enter
// (min_complete 8), and the engine's waitStats count it. Never time.
import { execFileSync, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childLines } from './helpers/child-lines.js'
import { enterCalls, enterTraceReason, traceGo } from './helpers/tracefs.ts'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const dir = fs.mkdtempSync('/var/tmp/odirect-wake-wait-')
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }))

const disk = path.join(dir, 'disk.bin')
fs.writeFileSync(disk, Buffer.alloc(4096, 1))

/** A CPU list as the kernel prints it ("0-1,4") as CPU numbers. */
function cpuList(s: string): number[] {
  const out: number[] = []
  for (const part of s.trim().split(',').filter(Boolean)) {
    const [a, b] = part.split('-').map(Number)
    for (let c = a; c <= (b ?? a); c++) out.push(c)
  }
  return out
}

/** The CPUs the interrupts (MSI vectors, virtio config ones left out) of `file`'s block device go to. */
function irqCpus(file: string): number[] {
  const dev = fs.statSync(file).dev
  // glibc's major()/minor() of a dev_t (the values fit a double here).
  const major = Math.floor(dev / 256) & 0xfff
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & ~0xff)
  let d: string
  try {
    d = fs.realpathSync(`/sys/dev/block/${major}:${minor}`)
  } catch {
    return []
  }
  for (; d.startsWith('/sys/devices/'); d = path.dirname(d)) {
    let irqs: string[]
    try {
      irqs = fs.readdirSync(path.join(d, 'msi_irqs'))
    } catch {
      continue
    }
    const cpus = new Set<number>()
    for (const irq of irqs) {
      const entries = fs.readdirSync(`/proc/irq/${irq}`, { withFileTypes: true })
      if (entries.some((e) => e.isDirectory() && e.name.endsWith('-config'))) continue
      for (const c of cpuList(fs.readFileSync(`/proc/irq/${irq}/effective_affinity_list`, 'utf8'))) cpus.add(c)
    }
    return [...cpus].sort((a, b) => a - b)
  }
  return []
}

function allowedCpus(): number[] {
  const m = /Cpus_allowed_list:\s*(\S+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))
  return m ? cpuList(m[1]) : []
}

const IRQ = irqCpus(disk)
const ALLOWED = allowedCpus()
const ON = IRQ.find((c) => ALLOWED.includes(c))
const OFF = ALLOWED.find((c) => !IRQ.includes(c))

function reason(): string | undefined {
  const why = enterTraceReason()
  if (why !== undefined) return why
  if (fs.statfsSync(dir).type === 0x01021994) return '/var/tmp is a tmpfs'
  if (spawnSync('taskset', ['-c', '0', 'true']).status !== 0) return 'no taskset'
  if (ON === undefined) return `no MSI interrupt of /var/tmp's device on an allowed CPU (irq CPUs ${JSON.stringify(IRQ)})`
  return undefined
}
const WHY = reason()

interface Done {
  right: number
  waits: number
  found: number
}

/** Runs the child on `cpu` with `env`; returns its io_uring_enter calls' (to_submit, min_complete) and its report. */
async function run(t: import('ava').ExecutionContext, cpu: number, writes: number, single: number, env: Record<string, string>): Promise<{ calls: [number, number][]; done: Done } | undefined> {
  const fifo = path.join(dir, `fifo-${cpu}-${writes}-${Object.values(env).join('-')}-${fs.readdirSync(dir).length}`)
  execFileSync('mkfifo', [fifo])
  const cfg = JSON.stringify({ disk, fifo, writes, single })
  const c = childLines('taskset', ['-c', String(cpu), process.execPath, path.join(HERE, 'wake-wait', 'child.mjs'), cfg], { ...process.env, ...env }, true)
  const { child, line, exited, err } = c
  const ready = (await line('ready')).split(' ')
  if (ready[1] !== 'io_uring' || ready[2] !== 'true') {
    child.stdin?.end('go\nend\n')
    t.is(await exited, 0, err())
    t.log(`backend ${ready[1]}, disk direct ${ready[2]}: nothing to observe`)
    return undefined
  }
  t.is(Number(ready[3]), writes, 'every write is in flight before the first buffer is taken')
  const { done, trace } = await traceGo(c, 'syscalls/sys_enter_io_uring_enter')
  child.stdin?.write('end\n')
  t.is(await exited, 0, err())
  // e.g. `sys_io_uring_enter(fd: 0x14, to_submit: 0, min_complete: 7, flags: 9, ...)`
  return { calls: enterCalls(trace), done: JSON.parse(done.slice(5)) as Done }
}

const serial = WHY === undefined ? test.serial : test.skip
if (WHY !== undefined) console.log(`wake-wait.spec: skipped: ${WHY}`)
const why = WHY ? ` (skipped: ${WHY})` : ''

serial(`on the CPU of the disk's interrupt, after a wake-up that delivered 1 write with 63 in flight the thread waits in the kernel for a batch of 8${why}`, async (t) => {
  const r = await run(t, ON as number, 64, 3, { ODIRECT_WAKE_WAIT: '8' })
  if (r === undefined) return
  t.log(`CPU ${ON} (irq CPUs ${JSON.stringify(IRQ)}): ${JSON.stringify(r.done)}, enters with min_complete > 1: ${JSON.stringify(r.calls.filter(([, m]) => m > 1))}`)
  t.is(r.done.right, 64, 'every write went whole into the FIFO, and the FIFO gave back every byte')
  t.true(r.done.waits >= 1, 'wake-ups waited (waitStats)')
  t.true(
    r.calls.some(([, min]) => min > 1),
    'an io_uring_enter waited for a batch of completions',
  )
  t.false(
    r.calls.some(([, min]) => min > 8),
    'never for more than a batch',
  )
})

for (const value of [undefined, '0']) {
  serial(`ODIRECT_WAKE_WAIT${value === undefined ? ' unset (the default)' : `=${value}`}: the same wake-ups go back to the loop${why}`, async (t) => {
    const env: Record<string, string> = {}
    if (value !== undefined) env.ODIRECT_WAKE_WAIT = value
    const saved = process.env.ODIRECT_WAKE_WAIT
    delete process.env.ODIRECT_WAKE_WAIT
    try {
      const r = await run(t, ON as number, 64, 3, env)
      if (r === undefined) return
      t.is(r.done.right, 64, 'every write went whole into the FIFO, and the FIFO gave back every byte')
      t.is(r.done.waits, 0, 'no wake-up waited')
      t.deepEqual(r.calls.filter(([, min]) => min > 1), [], 'no io_uring_enter waited for more than one completion')
    } finally {
      if (saved !== undefined) process.env.ODIRECT_WAKE_WAIT = saved
    }
  })
}

serial(`a shallow queue (16 in flight) never waits${why}`, async (t) => {
  const r = await run(t, ON as number, 16, 3, { ODIRECT_WAKE_WAIT: '8' })
  if (r === undefined) return
  t.is(r.done.right, 16, 'every write went whole into the FIFO, and the FIFO gave back every byte')
  t.is(r.done.waits, 0, 'no wake-up waited')
  t.deepEqual(r.calls.filter(([, min]) => min > 1), [], 'no io_uring_enter waited for more than one completion')
})

const offSkip = WHY ?? (OFF === undefined ? `every allowed CPU takes the disk's interrupts (irq CPUs ${JSON.stringify(IRQ)})` : undefined)
;(offSkip === undefined ? test.serial : test.skip)(`off the disk interrupt's CPUs no wake-up waits (ODIRECT_WAKE_WAIT_CPU=0: it does)${offSkip ? ` (skipped: ${offSkip})` : ''}`, async (t) => {
  const r = await run(t, OFF as number, 64, 3, { ODIRECT_WAKE_WAIT: '8' })
  if (r === undefined) return
  t.is(r.done.right, 64, 'every write went whole into the FIFO, and the FIFO gave back every byte')
  t.is(r.done.waits, 0, `no wake-up waited on CPU ${OFF}`)
  t.deepEqual(r.calls.filter(([, min]) => min > 1), [], 'no io_uring_enter waited for more than one completion')
  const any = await run(t, OFF as number, 64, 3, { ODIRECT_WAKE_WAIT: '8', ODIRECT_WAKE_WAIT_CPU: '0' })
  if (any === undefined) return
  t.is(any.done.right, 64, 'every write went whole into the FIFO, and the FIFO gave back every byte')
  t.true(any.done.waits >= 1, 'with the CPU check off, wake-ups waited there too')
  t.true(any.calls.some(([, min]) => min > 1 && min <= 8), 'an io_uring_enter waited for the rest of a batch of 8')
})
