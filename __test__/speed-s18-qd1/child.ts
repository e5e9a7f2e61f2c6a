// Child of speed-s18-qd1.spec.ts: lone reads one at a time on a block device's file, reporting
// on stdout line by line (every line: `<what> <json>`, with the engine's waitStats and the
// read's result):
//   node --import @oxc-node/core/register child.ts <file> <scenario> [reads]
// It reads 8 blocks first (the engine's start, and the hybrid wait's learning of the file), says
// `ready`, then waits for `go` on stdin. Scenarios:
// - loop: `reads` lone reads of block i (byte i & 255 in every byte of block i), then `done`
//   with how many were wrong; stays open until `end` (the parent stops its trace first).
// - held: one lone read of block 0 (the parent holds it in faultfs): `started`, then `returned`
//   when the read's call returns (its wait ended), `read` when the read has settled.
// - signal: a SIGUSR2 handler, a signal to itself (libuv's signal pipe is then readable: the
//   loop has an event it has not polled yet), and at once a lone read: `returned` when its call
//   returns, `signal` when the handler runs, `read` when the read completes.
import { open } from '../../dist/index.js'
import { getEngine } from '../../dist/src/engine.js'

const [file, scenario, count] = process.argv.slice(2) as [string, string, string | undefined]
const UNIT = 4096
const waitStats = (): number[] => getEngine().native.waitStats
const say = (what: string, extra: Record<string, unknown> = {}): void => {
  process.stdout.write(`${what} ${JSON.stringify({ waitStats: waitStats(), ...extra })}\n`)
}
const line = (): Promise<string> =>
  new Promise((resolve) => {
    process.stdin.once('data', (d: Buffer) => resolve(d.toString().trim()))
  })

const fh = await open(file, 'r', { backend: 'io_uring' })
const buf = fh.alloc(UNIT)
const expect = (i: number): number => (scenario === 'held' ? 0x5a : i & 255)
const readOnce = async (i: number): Promise<{ bytesRead: number; ok: boolean }> => {
  const { bytesRead } = await fh.read(buf, 0, UNIT, i * UNIT)
  return { bytesRead, ok: buf.every((x) => x === expect(i)) }
}
for (let i = 0; i < 8; i++) await readOnce(i)
say('ready', { backend: fh.backend, direct: fh.direct })

if (scenario === 'loop') {
  await line()
  const before = waitStats()
  let wrong = 0
  const n = Number(count ?? 200)
  for (let i = 0; i < n; i++) if (!(await readOnce(i % 64)).ok) wrong++
  say('done', { before, wrong })
  await line()
} else if (scenario === 'held') {
  await line()
  say('started')
  const pending = readOnce(0)
  // Here only once the wait ended (the read released: the parent's cap is long).
  say('returned')
  say('read', await pending)
} else if (scenario === 'signal') {
  await line()
  let order: string[] = []
  process.on('SIGUSR2', () => {
    order.push('signal')
    say('signal')
  })
  const before = waitStats()
  process.kill(process.pid, 'SIGUSR2')
  const pending = readOnce(1)
  order.push('returned')
  say('returned', { before })
  const r = await pending
  say('read', { ...r, order })
  order = []
}
await fh.close()
process.stdin.destroy()
