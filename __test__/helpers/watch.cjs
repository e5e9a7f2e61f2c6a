// watchUntil: waiting on a change fs.watch (inotify) reports. Plain CommonJS without the addon, so
// that helpers/fixtures.ts and the adversarial child scripts (run by plain node) share it;
// helpers/events.ts re-exports it.
'use strict'
const fs = require('node:fs')

/**
 * Resolves once `cond()` holds, checking it at the start and on each change fs.watch reports for
 * `target`: a directory, or a file another process writes whenever its state changes (faultfs
 * prints its counters on stdout at every change). With `ms`, rejects after that long naming
 * `what`: it only bounds a failure, a passing run never waits for it.
 * @param {string} target
 * @param {() => boolean} cond
 * @param {string} [what]
 * @param {number} [ms]
 * @returns {Promise<void>}
 */
function watchUntil(target, cond, what = `a change in ${target}`, ms = undefined) {
  return new Promise((resolve, reject) => {
    const w = fs.watch(target, () => check())
    const timer = ms === undefined ? undefined : setTimeout(() => end(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
    function end(e) {
      clearTimeout(timer)
      w.close()
      if (e === undefined) resolve()
      else reject(e)
    }
    w.on('error', end)
    function check() {
      try {
        if (cond()) end()
      } catch (e) {
        // The file vanished between the event and the check: wait for the next event.
        if (e.code !== 'ENOENT') end(e)
      }
    }
    check()
  })
}

module.exports = { watchUntil }
