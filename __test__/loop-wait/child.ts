// Child of loop-wait.spec.ts: one lone read on a device (a loop device over faultfs's file)
// while the event loop has something, reporting on stdout line by line:
//   node --import @oxc-node/core/register child.ts <device> <scenario>
// Scenarios (the parent holds the device's reads in faultfs where said):
// - event: after 'go' on stdin, a lone read (held) waits in its call; the parent writes 'event'
//   on stdin once the read is held: the wait ends because the loop's descriptor is readable,
//   the stdin callback runs ('event'), then the parent releases the read ('read').
// - timer: after 'go' on stdin, a 30 ms timer set and a lone read (held) waits in its call
//   until the timer is due; the timer fires ('timer') while the read is held; the parent then
//   releases it ('read').
// - immediate: a setImmediate pending, a lone read (not held) does not wait in its call.
// - plain: 200 lone reads one at a time (not held), nothing else: they wait in their call.
// Every line: `<what> <json of the engine's counters and the read's result>`.
import { open } from '../../dist/index.js'
import { getEngine } from '../../dist/src/engine.js'

const [device, scenario] = process.argv.slice(2) as [string, string]
const UNIT = 4096
const counters = (): { waitStats: number[]; callStats: number[] } => ({ waitStats: getEngine().native.waitStats, callStats: getEngine().native.callStats })
const say = (what: string, extra: Record<string, unknown> = {}): void => {
  process.stdout.write(`${what} ${JSON.stringify({ ...counters(), ...extra })}\n`)
}

const fh = await open(device, 'r', { backend: 'io_uring' })
const buf = fh.alloc(UNIT)
const readOnce = async (): Promise<{ bytesRead: number; ok: boolean }> => {
  const { bytesRead } = await fh.read(buf, 0, UNIT, 0)
  return { bytesRead, ok: buf.every((x) => x === 0x5a) }
}
// The engine and its ring exist and have read once (not held yet).
await readOnce()

if (scenario === 'event') {
  let finish = (): void => {}
  const finished = new Promise<void>((resolve) => (finish = resolve))
  let pending: Promise<{ bytesRead: number; ok: boolean }> | undefined
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (d: string) => {
    for (const line of d.split('\n').filter((x) => x !== '')) {
      if (line === 'go') {
        const before = counters()
        say('started', { before })
        pending = readOnce()
        // Here only once the wait ended (the event) or timed out (the parent's cap is long).
        say('returned')
        void pending.then((r) => {
          say('read', r)
          process.stdin.destroy()
          finish()
        })
      } else if (line === 'event') {
        say('event', { readPending: pending !== undefined })
      }
    }
  })
  say('ready')
  await finished
} else if (scenario === 'timer') {
  let finish = (): void => {}
  const finished = new Promise<void>((resolve) => (finish = resolve))
  process.stdin.setEncoding('utf8')
  process.stdin.once('data', () => {
    setTimeout(() => say('timer'), 30)
    say('started')
    void readOnce().then((r) => {
      say('read', r)
      process.stdin.destroy()
      finish()
    })
  })
  say('ready')
  await finished
} else if (scenario === 'immediate') {
  let ran = false
  setImmediate(() => (ran = true))
  const r = await readOnce()
  say('read', { ...r, immediateRan: ran })
} else if (scenario === 'plain') {
  let wrong = 0
  for (let i = 0; i < 200; i++) if (!(await readOnce()).ok) wrong++
  say('read', { wrong })
}
await fh.close()
