// traceEvent: tracing kernel events in a trace instance of the caller's own (so nothing global is
// touched). Plain CommonJS without the addon, so that the specs (through helpers/tracefs.ts:
// wait-spin, registered-fixed, prealloc) and the child scripts run by plain node (streams-s13)
// share it.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const TRACING = '/sys/kernel/tracing'

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
