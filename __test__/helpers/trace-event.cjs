// traceEvent: tracing kernel events in a trace instance of the caller's own (so nothing global is
// touched). Plain CommonJS without the addon, so that the specs (through helpers/tracefs.ts:
// wait-spin, registered-fixed, prealloc) and the child scripts run by plain node (streams-s13)
// share it.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const TRACING = '/sys/kernel/tracing'

/**
 * Removes the trace instances of odirect processes that no longer live (a child killed at its
 * timeout never reaches traceEvent's `finally`): an instance left with an event enabled keeps
 * that tracepoint on for every process of the machine (seen: sys_enter_io_uring_enter on for hours,
 * ~3% of a benchmark's JS thread).
 */
function removeStale() {
  const root = path.join(TRACING, 'instances')
  let names
  try {
    names = fs.readdirSync(root)
  } catch {
    return
  }
  for (const name of names) {
    const m = /^odirect-(\d+)-/.exec(name)
    if (m === null || fs.existsSync(`/proc/${m[1]}`)) continue
    const inst = path.join(root, name)
    try {
      // Every event of the instance off at once.
      fs.writeFileSync(path.join(inst, 'events', 'enable'), '0')
      fs.rmdirSync(inst)
    } catch {
      // Another process removed it meanwhile, or it is not ours to remove: leave it.
    }
  }
}

/**
 * Runs `fn` with each of `events` (e.g. 'syscalls/sys_enter_io_uring_enter') enabled in a fresh
 * trace instance, filtered to the threads `pids`; returns the instance's trace text. The events
 * are disabled, and the instance removed, whatever `fn` does.
 * @param {string | readonly string[]} events
 * @param {number | string | readonly (number | string)[]} pids
 * @param {() => Promise<unknown>} fn
 * @returns {Promise<string>}
 */
async function traceEvent(events, pids, fn) {
  removeStale()
  const evs = (Array.isArray(events) ? events : [events]).map(String)
  const filter = (Array.isArray(pids) ? pids : [pids]).map((p) => `common_pid == ${p}`).join(' || ')
  const inst = fs.mkdtempSync(path.join(TRACING, 'instances', `odirect-${process.pid}-`))
  try {
    const dirs = evs.map((e) => path.join(inst, 'events', ...e.split('/')))
    try {
      for (const ev of dirs) {
        fs.writeFileSync(path.join(ev, 'filter'), filter)
        fs.writeFileSync(path.join(ev, 'enable'), '1')
      }
      await fn()
    } finally {
      for (const ev of dirs) fs.writeFileSync(path.join(ev, 'enable'), '0')
    }
    return fs.readFileSync(path.join(inst, 'trace'), 'utf8')
  } finally {
    fs.rmdirSync(inst)
  }
}

module.exports = { TRACING, traceEvent }
