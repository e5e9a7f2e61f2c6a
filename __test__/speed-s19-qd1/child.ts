// Child of speed-s19-qd1.spec.ts: lone 4 KiB reads/writes one at a time on a block device's file,
// reporting on stdout line by line (`<what> <json>`, with the engine's callStats):
//   node --import @oxc-node/core/register child.ts <file> <scenario> <count>
// It says `ready`, waits for `go` on stdin, runs, says `done` (with how many blocks were wrong),
// then stays open until `end` (the parent stops its trace first). Block i of the file holds
// byte i & 255 in every byte (64 blocks). Scenarios:
// - read: `count` lone reads of block i % 64 into one fh.alloc buffer.
// - write: `count` lone writes of block i % 64 from one fh.alloc buffer (its pattern again),
//   then every block read back (after `done`'s trace window: a fresh buffer each).
// - caller: the caller registers a buffer of its own first (fh.registerBuffers), then `count`
//   lone reads into one fh.alloc buffer, then 4 reads into the registered buffer.
import { open } from '../../dist/index.js'
import { getEngine } from '../../dist/src/engine.js'

const [file, scenario, count] = process.argv.slice(2) as [string, string, string]
const UNIT = 4096
const callStats = (): number[] => getEngine().native.callStats
const say = (what: string, extra: Record<string, unknown> = {}): void => {
  process.stdout.write(`${what} ${JSON.stringify({ callStats: callStats(), ...extra })}\n`)
}
const line = (): Promise<string> =>
  new Promise((resolve) => {
    process.stdin.once('data', (d: Buffer) => resolve(d.toString().trim()))
  })

const fh = await open(file, 'r+', { backend: 'io_uring' })
const reg = scenario === 'caller' ? fh.registerBuffers(1, UNIT) : undefined
const buf = fh.alloc(UNIT)
say('ready', { backend: fh.backend, direct: fh.direct })
await line()
const before = callStats()
let wrong = 0
const n = Number(count)
for (let i = 0; i < n; i++) {
  const b = i % 64
  if (scenario === 'write') {
    buf.fill(b & 255)
    await fh.write(buf, 0, UNIT, b * UNIT)
  } else {
    await fh.read(buf, 0, UNIT, b * UNIT)
    if (!buf.every((x) => x === (b & 255))) wrong++
  }
}
if (reg !== undefined) {
  for (let i = 0; i < 4; i++) {
    const r = reg.buffers[0]
    await fh.read(r, 0, UNIT, i * UNIT)
    if (!r.every((x) => x === (i & 255))) wrong++
  }
}
say('done', { before, wrong })
await line()
if (scenario === 'write') {
  for (let b = 0; b < 64; b++) {
    const back = fh.alloc(UNIT)
    await fh.read(back, 0, UNIT, b * UNIT)
    if (!back.every((x) => x === (b & 255))) wrong++
  }
  say('verified', { wrong })
}
reg?.unregister()
await fh.close()
