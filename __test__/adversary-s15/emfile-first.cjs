// `<odirect module> <free> <file>`, under prlimit --nofile: fills the descriptor table but for
// `free` slots, makes the process's first odirect call (open + read: the engine starts in it),
// frees everything and makes two more. Prints RESULT {json}: what the first call did (its
// backend, or its error), the next two's backends, the engine's io_uring / eventfd descriptors.
'use strict'
const fs = require('node:fs')
const { anonFds } = require('../helpers/fds.cjs')
const { fillFds } = require('./fill-fds.cjs')

const [mod, freeArg, src] = process.argv.slice(2)
const od = require(mod)
const k = Number(freeArg)

async function rd() {
  const fh = await od.open(src, 'r')
  try {
    const b = fh.alloc(8192)
    const r = await fh.read(b, 0, 8192, 0)
    return `${fh.backend}:${r.bytesRead}`
  } finally {
    await fh.close()
  }
}

async function main() {
  const fillers = fillFds(k)
  let first
  try {
    const b = await rd()
    first = { ok: true, backend: b }
  } catch (e) {
    first = { ok: false, code: e && e.code, direct: e instanceof od.DirectIoError, hint: !!(e && typeof e.hint === 'string' && e.hint), message: String(e && e.message) }
  }
  for (const fd of fillers) fs.closeSync(fd)
  const after = [await rd(), await rd()]
  console.log('RESULT ' + JSON.stringify({ k, first, after, uring: anonFds('io_uring'), eventfd: anonFds('eventfd') }))
}
main().catch((e) => {
  console.log('RESULT ' + JSON.stringify({ crash: String(e && e.stack) }))
  process.exitCode = 1
})
