#!/usr/bin/env node
// Where a depth-1 disk op spends its time, per op, in the kernel's own tracepoints: the same
// breakdown for any engine (fio, odirect under Node/Bun/Deno, a C loop), so two engines can be
// compared phase by phase (issue 19, "QD 1 p50 <= 1.1x fio's").
//
//   node bench/qd1-phases.cjs PREFIX -- COMMAND [ARGS...]   (root, perf; run COMMAND pinned, e.g.
//                                                           taskset -c 1 fio ... / node loop.cjs)
//   node bench/qd1-phases.cjs --analyze PREFIX.txt [TID]     (an earlier trace again)
//   node bench/qd1-phases.cjs --loop FILE SECONDS [write][,reg]  (odirect's side: 4 KiB random
//                                                           reads/writes one at a time, as the
//                                                           bench's per-op loop; dist/ built; runs
//                                                           under node, bun or deno run -A)
//
// Records, system-wide while COMMAND runs (perf record -a): io_uring_enter entry/exit, every
// system call's entry (counted per op), io_uring submit_req / complete / local_work_run /
// cqring_wait / queue_async_work / task_add / poll_arm, block rq_insert / rq_issue /
// rq_complete, irq handler entry (the virtio completion interrupt), sched_waking / wakeup /
// switch, power:cpu_idle, the hrtimers of waiting io_uring_enter calls (start, expiry: a hybrid
// wait's timer, ODIRECT_WAIT_HYBRID; timestamps on CLOCK_MONOTONIC, the timers' clock). Keeps PREFIX.txt (perf script) unless QD1_PHASES_KEEP=0.
// The submitting thread is the command's thread (or a thread of a process it forked) with the
// most io_uring_enter calls (or TID). An op runs from
// the io_uring_enter that submits its READ/WRITE to the next such enter; its phases (medians, µs):
//   E0 enter -> S submit_req -> I block insert -> D block issue -> Q irq entry -> C block complete
//   -> waking/W wakeup of the submitter -> R switched in -> P CQE posted -> X exit of the enter
//   -> N next enter (X -> N: everything in user space between two ops: the engine, JS, fio).
// Also: whether the CPU went idle during the op (sleep -> idle in, idle out -> R), other tasks run
// on the CPU meanwhile (OWN = threads of the submitter's process), io_uring events and system
// calls per op. QD1_PHASES_ONLY=idle keeps the ops whose CPU went idle and ran nothing else
// (what a quiet machine does); =busy the others.
'use strict'
const fs = require('node:fs')
const { spawnSync } = require('node:child_process')

const EVENTS = [
  'syscalls:sys_enter_io_uring_enter',
  'syscalls:sys_exit_io_uring_enter',
  'raw_syscalls:sys_enter',
  'io_uring:io_uring_submit_req',
  'io_uring:io_uring_complete',
  'io_uring:io_uring_queue_async_work',
  'io_uring:io_uring_task_add',
  'io_uring:io_uring_local_work_run',
  'io_uring:io_uring_cqring_wait',
  'io_uring:io_uring_poll_arm',
  'block:block_rq_insert',
  'block:block_rq_issue',
  'block:block_rq_complete',
  'irq:irq_handler_entry',
  'sched:sched_wakeup',
  'sched:sched_waking',
  'sched:sched_switch',
  'power:cpu_idle',
  'sched:sched_process_fork',
  'timer:hrtimer_start',
  'timer:hrtimer_expire_entry',
]

const LINE = /^\s*(.*?)\s+(\d+)\/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\w+:\w+):\s*(.*)$/
const IDLE_EXIT = 4294967295
const INTERNAL = 1n << 63n

function field(rest, key) {
  const m = new RegExp(`\\b${key}(?:[=:]\\s*| )([^\\s,]+)`).exec(rest)
  return m ? m[1] : undefined
}

function parse(file) {
  const evs = []
  const pidOf = new Map()
  const text = fs.readFileSync(file, 'utf8')
  let at = 0
  while (at < text.length) {
    let nl = text.indexOf('\n', at)
    if (nl < 0) nl = text.length
    const m = LINE.exec(text.slice(at, nl))
    at = nl + 1
    if (!m) continue
    const [, comm, pid, tid, cpu, t, ev, rest] = m
    pidOf.set(Number(tid), Number(pid))
    evs.push({ t: Number(t) * 1e6, tid: Number(tid), cpu: Number(cpu), ev, rest, comm })
  }
  evs.sort((a, b) => a.t - b.t)
  return { evs, pidOf }
}

function ops(evs, pidOf, tids) {
  const out = []
  let cur
  const own = (tid) => pidOf.get(tid) === pidOf.get([...tids][0])
  const live = () => cur !== undefined && cur.S !== undefined && cur.X === undefined
  for (const e of evs) {
    const { t, tid, cpu, ev, rest } = e
    if (ev === 'sched:sched_switch') {
      const next = Number(field(rest, 'next_pid'))
      const prev = Number(field(rest, 'prev_pid'))
      if (live()) {
        if (!tids.has(next) && next !== 0) cur.others.add((own(next) ? 'OWN ' : '') + (/next_comm=(.*?) next_pid/.exec(rest)?.[1] ?? next))
        if (tids.has(next) && cur.W !== undefined && cur.R === undefined) cur.R = t
        if (tids.has(next) && cur.TW !== undefined && cur.TR === undefined) cur.TR = t
        if (tids.has(prev) && cur.sleep === undefined) {
          cur.sleep = t
          cur.sleepCpu = cpu
        }
      }
      continue
    }
    if (ev === 'power:cpu_idle') {
      if (live() && Number(field(rest, 'cpu_id')) === (cur.sleepCpu ?? cpu)) {
        if (Number(field(rest, 'state')) !== IDLE_EXIT) cur.idleIn ??= t
        else cur.idleOut ??= t
      }
      continue
    }
    if (ev === 'timer:hrtimer_start' || ev === 'timer:hrtimer_expire_entry') {
      // The timer of a waiting io_uring_enter (its EXT_ARG timeout): a hybrid wait's short sleep.
      if (!/function=io_cqring_(min_)?timer_wakeup/.test(rest) || cur === undefined) continue
      if (ev === 'timer:hrtimer_start') {
        if (tids.has(tid) && cur.C === undefined && cur.Texp === undefined) cur.Texp = Number(field(rest, 'expires')) / 1000
      } else if (cur.Texp !== undefined && cur.T === undefined && Number(field(rest, 'now')) / 1000 <= cur.Texp + 1e5) {
        cur.T = t
        cur.Tnow = Number(field(rest, 'now')) / 1000
      }
      continue
    }
    if (ev === 'irq:irq_handler_entry') {
      if (cur?.D !== undefined && cur.C === undefined && /virtio.*req|nvme/.test(rest)) {
        cur.Q ??= t
        cur.irqCpu ??= cpu
      }
      continue
    }
    if (ev.startsWith('block:')) {
      if (!live()) continue
      if (ev === 'block:block_rq_insert') cur.I ??= t
      else if (ev === 'block:block_rq_issue' && cur.D === undefined) {
        cur.D = t
        cur.issueCpu = cpu
      } else if (ev === 'block:block_rq_complete' && cur.D !== undefined) cur.C ??= t
      continue
    }
    if (ev === 'sched:sched_wakeup' || ev === 'sched:sched_waking') {
      if (tids.has(Number(field(rest, 'pid'))) && cur?.T !== undefined && cur.C === undefined && ev === 'sched:sched_waking') cur.TW ??= t
      if (tids.has(Number(field(rest, 'pid'))) && cur?.C !== undefined) {
        if (ev === 'sched:sched_wakeup') cur.W ??= t
        else cur.Wg ??= t
        cur.wakeCpu ??= cpu
      }
      continue
    }
    if (!tids.has(tid)) continue
    if (ev === 'syscalls:sys_enter_io_uring_enter') {
      if (cur?.X !== undefined) {
        cur.N = t
        out.push(cur)
        cur = undefined
      }
      cur ??= { E0: t, enters: 0, others: new Set(), uring: new Map(), sys: new Map(), args: [] }
      cur.enters++
      cur.args.push(rest)
      continue
    }
    if (ev === 'raw_syscalls:sys_enter') {
      if (cur !== undefined) {
        const nr = field(rest, 'NR')
        cur.sys.set(nr, (cur.sys.get(nr) ?? 0) + 1)
      }
      continue
    }
    if (ev.startsWith('io_uring:') && cur !== undefined) {
      cur.uring.set(ev, (cur.uring.get(ev) ?? 0) + 1)
      if (ev === 'io_uring:io_uring_submit_req') {
        const op = /opcode (\w+)/.exec(rest)?.[1] ?? ''
        if (op.startsWith('READ') || op.startsWith('WRITE')) cur.S ??= t
      } else if (ev === 'io_uring:io_uring_complete') {
        const ud = BigInt(field(rest, 'user_data') ?? '0')
        if (ud < INTERNAL && cur.S !== undefined) cur.P ??= t
      }
      continue
    }
    if (ev === 'syscalls:sys_exit_io_uring_enter' && cur?.P !== undefined) cur.X = t
  }
  return out
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[s.length >> 1] : NaN
}
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))] : NaN
}

function tally(list, f) {
  const m = new Map()
  for (const o of list) for (const [k, v] of f(o)) m.set(k, (m.get(k) ?? 0) + v)
  return [...m].sort((a, b) => b[1] - a[1])
}

function report(file, tidArg) {
  const { evs, pidOf } = parse(file)
  let tids
  if (tidArg === undefined || tidArg === 'auto') {
    // The command's own threads: perf's child ('perf-exec' until it execs) and every task it
    // forked or cloned, so that other programs' rings on the machine are not taken for it.
    const root = evs.find((e) => e.comm === 'perf-exec')?.tid
    const mine = new Set(root === undefined ? [] : [root])
    for (const e of evs) {
      if (e.ev !== 'sched:sched_process_fork') continue
      const parent = Number(field(e.rest, 'pid'))
      const child = Number(field(e.rest, 'child_pid'))
      if (mine.has(parent) || mine.has(e.tid)) mine.add(child)
    }
    const c = tally(
      evs.filter((e) => e.ev === 'syscalls:sys_enter_io_uring_enter' && (mine.size === 0 || mine.has(e.tid))),
      (e) => [[e.tid, 1]],
    )
    if (c.length === 0) throw new Error(`${file}: no io_uring_enter in the trace`)
    tids = new Set([c[0][0]])
  } else tids = new Set([Number(tidArg)])
  const all = ops(evs, pidOf, tids)
  let full = all.filter((o) => ['E0', 'S', 'D', 'C', 'P', 'X', 'N'].every((k) => o[k] !== undefined))
  const only = process.env.QD1_PHASES_ONLY
  if (only === 'idle') full = full.filter((o) => o.idleIn !== undefined && o.others.size === 0)
  else if (only === 'busy') full = full.filter((o) => o.idleIn === undefined)
  const comm = evs.find((e) => tids.has(e.tid) && e.ev === 'syscalls:sys_enter_io_uring_enter')?.comm
  console.log(`${file}: thread ${[...tids]} (${comm}), ops ${all.length}, complete ${full.length}${only ? ` (${only} only)` : ''}`)
  if (full.length === 0) return
  const row = (name, a, b) => {
    const xs = full.filter((o) => o[a] !== undefined && o[b] !== undefined).map((o) => o[b] - o[a])
    const v = xs.length ? `${median(xs).toFixed(1).padStart(7)} µs  (n ${xs.length}, p10 ${pct(xs, 0.1).toFixed(1)}, p90 ${pct(xs, 0.9).toFixed(1)})` : '      -'
    console.log(`  ${name.padEnd(40)} ${v}`)
  }
  row('enter -> submit_req (E0 -> S)', 'E0', 'S')
  row('S -> block insert', 'S', 'I')
  row('S -> block issue (D)', 'S', 'D')
  row('D -> irq entry (Q)', 'D', 'Q')
  row('D -> block complete (C)', 'D', 'C')
  row('C -> waking', 'C', 'Wg')
  row('C -> wakeup (W)', 'C', 'W')
  row('W -> switched in (R)', 'W', 'R')
  row('R -> CQE posted (P)', 'R', 'P')
  row('C -> CQE posted (P)', 'C', 'P')
  row('P -> exit of the enter (X)', 'P', 'X')
  row('X -> next enter (N): user space', 'X', 'N')
  row('E0 -> X: in the kernel', 'E0', 'X')
  row('E0 -> N: the op period', 'E0', 'N')
  row('S -> switched out (sleep)', 'S', 'sleep')
  row('sleep -> idle in', 'sleep', 'idleIn')
  row('idle out -> R', 'idleOut', 'R')
  // A hybrid wait (ODIRECT_WAIT_HYBRID): the thread's timer, not the completion, woke it (perf
  // records with -k CLOCK_MONOTONIC, the timers' clock, so deadlines compare with event times).
  const timed = full.filter((o) => o.T !== undefined && (o.C === undefined || o.T < o.C))
  if (timed.length) {
    console.log(`  woken by the wait's timer before the completion: ${timed.length} ops; by the completion: ${full.filter((o) => o.W !== undefined).length}`)
    row('timer deadline -> expiry (T)', 'Texp', 'T')
    row('T -> waking', 'T', 'TW')
    row('T -> switched in (timer wake)', 'T', 'TR')
    row('timer deadline -> switched in', 'Texp', 'TR')
    row('idle out -> timer wake switched in', 'idleOut', 'TR')
    row('timer wake switched in -> complete (C)', 'TR', 'C')
  }
  row('Q irq entry -> R (completion wake)', 'Q', 'R')
  const n = full.length
  const per = (pairs) => pairs.slice(0, 8).map(([k, v]) => `${k} ${(v / n).toFixed(2)}`).join(', ')
  console.log(`  enters per op: ${tally(full, (o) => [[o.enters, 1]]).map(([k, v]) => `${k}: ${v}`).join(', ')}`)
  for (const k of [1, 2]) {
    const xs = full.filter((o) => o.enters === k).map((o) => o.N - o.E0)
    if (xs.length) console.log(`  op period with ${k} enter(s): median ${median(xs).toFixed(1)} µs (${xs.length} ops)`)
  }
  console.log(`  issue CPU ${per(tally(full, (o) => [[o.issueCpu, 1]]))}; irq CPU ${per(tally(full, (o) => [[o.irqCpu, 1]]))}; wakeup from CPU ${per(tally(full, (o) => [[o.wakeCpu, 1]]))}`)
  console.log(`  CPU went idle in ${full.filter((o) => o.idleIn !== undefined).length} ops; other tasks on the CPU during the op: ${per(tally(full, (o) => [...o.others].map((x) => [x, 1])))}`)
  console.log(`  io_uring events per op: ${per(tally(full, (o) => o.uring))}`)
  console.log(`  system calls per op (NR): ${per(tally(full, (o) => o.sys))}`)
  console.log(`  an op's io_uring_enter calls: ${full[n >> 1].args.join(' | ')}`)
}

/** The depth-1 loop of `odirect bench` (perOpLoop): prints its JS p50 and the engine's own. */
async function loop(file, seconds, mode) {
  const { open } = require('../dist/index.js')
  const fh = await open(file, 'r+')
  try {
    const blocks = Math.floor(Number((await fh.stat()).size) / 4096)
    // `mode`: 'write' and/or 'reg' (comma-separated): writes; a registered buffer (READ_FIXED /
    // WRITE_FIXED) instead of fh.alloc's.
    const flags = String(mode ?? '').split(',')
    const write = flags.includes('write')
    const reg = flags.includes('reg') ? fh.registerBuffers(1, 4096) : undefined
    const buf = reg !== undefined ? reg.buffers[0] : fh.alloc(4096)
    if (write) buf.fill(7)
    const lat = []
    const cpu0 = process.cpuUsage()
    const end = performance.now() + Number(seconds) * 1000
    for (let t0 = performance.now(); t0 < end; t0 = performance.now()) {
      const position = Math.floor(Math.random() * blocks) * 4096
      await (write ? fh.write(buf, { position }) : fh.read(buf, { position }))
      lat.push(performance.now() - t0)
    }
    const cpu = process.cpuUsage(cpu0)
    const { getEngine } = require('../dist/src/engine.js')
    const n = getEngine().native
    console.log(JSON.stringify({ ops: lat.length, p50: median(lat) * 1000, cpuUs: (cpu.user + cpu.system) / lat.length, native: fh.stats().latencyUs, callStats: n.callStats, waitStats: n.waitStats }))
    reg?.unregister()
  } finally {
    await fh.close()
  }
}

function main() {
  const argv = process.argv.slice(2)
  if (argv[0] === '--analyze') return report(argv[1], argv[2])
  if (argv[0] === '--loop') return loop(argv[1], argv[2], argv[3])
  const sep = argv.indexOf('--')
  if (sep !== 1 || argv.length < 3) {
    console.error('usage: node bench/qd1-phases.cjs PREFIX -- COMMAND [ARGS...] | --analyze PREFIX.txt [TID]')
    process.exit(2)
  }
  const prefix = argv[0]
  const cmd = argv.slice(2)
  const rec = spawnSync('perf', ['record', '-q', '-k', 'CLOCK_MONOTONIC', '-o', `${prefix}.data`, ...EVENTS.flatMap((e) => ['-e', e]), '-a', '--', ...cmd], { stdio: ['ignore', 'inherit', 'inherit'] })
  if (rec.status !== 0) throw new Error(`perf record exited ${rec.status}`)
  const out = fs.openSync(`${prefix}.txt`, 'w')
  spawnSync('perf', ['script', '-i', `${prefix}.data`, '-F', 'comm,pid,tid,cpu,time,event,trace', '--ns'], { stdio: ['ignore', out, 'ignore'], maxBuffer: 1 << 30 })
  fs.closeSync(out)
  fs.rmSync(`${prefix}.data`, { force: true })
  report(`${prefix}.txt`)
  if (process.env.QD1_PHASES_KEEP === '0') fs.rmSync(`${prefix}.txt`, { force: true })
}

main()
