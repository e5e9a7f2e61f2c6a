// The pool's child (see ../streams-s16.spec.ts): read streams of `file` whose consumer keeps
// every chunk, so each read takes a new 2 MiB region of the memory pool
// (crates/core/src/mempool.rs) and the pool's helper thread (`odirect-pool`) makes spare regions
// as they are taken. A first pass starts the helper; says `ready`; once told `go` on stdin, a
// second pass, then waits until the helper has made a spare since the pass began (the event,
// not a time) and prints `done` with the pool's counts over the pass; exits when told `end`.
//
// argv[2]: the file (at least 16 MiB)
'use strict'
const od = require('../../dist/index.js')
const { native } = require('../../dist/src/native.js')

const file = process.argv[2]
const kept = []

async function pass() {
  const fh = await od.open(file, 'r')
  for await (const chunk of od.createReadStream(fh, { chunkSize: 2 << 20, readAhead: 2, end: (16 << 20) - 1, autoClose: true })) kept.push(chunk)
}

const lines = []
let wake
process.stdin.setEncoding('utf8').on('data', (d) => {
  lines.push(...d.split('\n').filter(Boolean))
  wake?.()
})
const told = async (word) => {
  while (!lines.includes(word)) await new Promise((r) => (wake = r))
}

;(async () => {
  await pass()
  console.log('ready')
  await told('go')
  // [new regions mapped by the allocating thread, taken from the spares, spares made, recycled, held]
  const s0 = native.poolSpareStats()
  await pass()
  const made = () => native.poolSpareStats()[2] - s0[2]
  while (made() < 1) await new Promise((r) => setImmediate(r))
  const s1 = native.poolSpareStats()
  console.log(`done ${JSON.stringify({ taken: s1[1] - s0[1], made: s1[2] - s0[2], held: s1[4], kept: kept.length })}`)
  await told('end')
  process.exit(0)
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
