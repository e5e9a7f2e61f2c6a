// Child of speed-s19-streams.spec: a Node write stream (chunkSize 128 KiB, writeBehind 4, copied
// blocks) on FILE offered 12 blocks at once; after 200 ticks (no completion reaches JS before the
// loop's poll phase): the blocks accepted (called back), the writes in the kernel and those the
// engine's chain holds back. Run with the environment under test (ODIRECT_STREAM_READY).
'use strict'
const path = require('node:path')
const { once } = require('node:events')
const DIST = path.join(__dirname, '..', '..', 'dist')
const od = require(path.join(DIST, 'index.js'))
const { getEngine } = require(path.join(DIST, 'src', 'engine.js'))

;(async () => {
  const fh = await od.open(process.argv[2], 'w+')
  const ws = fh.createWriteStream({ chunkSize: 128 * 1024, writeBehind: 4, datasync: false })
  await once(ws, 'ready')
  let accepted = 0
  const block = Buffer.alloc(128 * 1024, 7)
  for (let i = 0; i < 12; i++) ws.write(block, () => accepted++)
  for (let i = 0; i < 200; i++) await new Promise((r) => process.nextTick(r))
  const n = getEngine().native
  const held = n.chainStats[2]
  const inKernel = fh.stats().inflight - held
  const early = accepted
  ws.end()
  await once(ws, 'finish')
  process.stdout.write(JSON.stringify({ accepted: early, inKernel, held, size: require('node:fs').statSync(process.argv[2]).size }))
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
