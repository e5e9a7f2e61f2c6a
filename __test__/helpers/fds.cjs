// anonFds: counting this process's descriptors on anonymous inodes (/proc/self/fd). Plain
// CommonJS without the addon, so that the specs (liveness-reaper) and the child scripts run by
// plain Node 20/22 (adversary-s13b/child.cjs, liveness/held-child.mjs) share it.
'use strict'
const fs = require('node:fs')

/**
 * This process's descriptors on anonymous inodes of `kind` (io_uring, eventfd).
 * @param {string} kind
 * @returns {number}
 */
function anonFds(kind) {
  let n = 0
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === `anon_inode:[${kind}]`) n++
    } catch {
      // closed meanwhile
    }
  }
  return n
}

module.exports = { anonFds }
