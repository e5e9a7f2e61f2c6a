// The EMFILE children's descriptor table: filled with /dev/null up to the process's limit, then
// `free` of them closed again.
'use strict'
const fs = require('node:fs')

/** Opens /dev/null until EMFILE, closes `free` of those descriptors; returns the ones kept open. */
function fillFds(free) {
  const fds = []
  for (;;) {
    try {
      fds.push(fs.openSync('/dev/null', 'r'))
    } catch (e) {
      if (e.code !== 'EMFILE') throw e
      break
    }
  }
  for (let i = 0; i < free && fds.length > 0; i++) fs.closeSync(fds.pop())
  return fds
}

module.exports = { fillFds }
