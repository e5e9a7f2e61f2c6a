// Child of helpers/qd1.ts `depthOneInChild`: N reads one at a time on a file, once per
// waitMicros value given, counted in a process of its own. An ava worker reads its IPC channel
// now and then (hundreds of read(2) calls under load), which would blur the read(2) count.
//   node --import @oxc-node/core/register qd1-child.ts <file> <n> <waitMicros>...
import { configureEngine, engineInfo, open } from '../../dist/index.js'
import { getEngine } from '../../dist/src/engine.js'
import { readsOneAtATime } from './qd1.js'

const [file, n, ...waits] = process.argv.slice(2)
const fh = await open(file, 'r', { backend: 'io_uring' })
try {
  await fh.read(fh.alloc(4096), { position: 0 })
  const rounds = []
  for (const w of waits) {
    configureEngine({ waitMicros: Number(w) })
    const [tries0, found0] = getEngine().native.waitStats
    const [call0, inlineR0, inlineW0, , skips0] = getEngine().native.callStats
    const { wrong, reads } = await readsOneAtATime(fh, Number(n))
    const [tries, found] = getEngine().native.waitStats
    const [call, inlineR, inlineW, , skips] = getEngine().native.callStats
    rounds.push({ waitMicros: Number(w), wrong, reads, tries: tries - tries0, found: found - found0, inCall: call - call0, inline: inlineR + inlineW - inlineR0 - inlineW0, skips: (skips ?? NaN) - (skips0 ?? NaN) })
  }
  const info = engineInfo()
  process.stdout.write(JSON.stringify({ backend: fh.backend, path: info.path, ringSetup: info.ringSetup, rounds }))
} finally {
  await fh.close()
}
