// Child of adversary-s19b.spec.ts: `rounds` operations on a FIFO that has no other end, each
// aborted once one of this process's threads waits in the FIFO's open (wait_for_partner), then
// waits until no thread waits there any more (the open given back), and stats a file (which needs
// a libuv worker thread: four stuck opens take them all). Prints RESULT { rounds, errors } (HUNG: not settled within 100000 turns of the event loop after
// the abort; THREAD HELD: settled, but a thread still waits in the open 100000 turns later).
// Usage: fifo-abort.mjs DIST FIFO FORM ROUNDS
import * as fs from 'node:fs'

const [dist, fifo, form, rounds] = process.argv.slice(2)
const od = await import(dist)

/** How many of this process's threads wait for a FIFO's other end now. */
function waiting() {
  let n = 0
  for (const t of fs.readdirSync('/proc/self/task')) {
    try {
      if (fs.readFileSync(`/proc/self/task/${t}/wchan`, 'utf8').trim() === 'wait_for_partner') n++
    } catch {}
  }
  return n
}
const turn = () => new Promise((r) => setImmediate(r))
async function until(cond) {
  while (!cond()) await turn()
}

const start = {
  writeFile: (signal) => od.writeFile(fifo, 'data', { signal }),
  'writeFile atomic': (signal) => od.writeFile(fifo, 'data', { signal, atomic: true }),
  'copyFile to it': (signal) => od.copyFile(process.argv[1], fifo, { signal }),
  readFile: (signal) => od.readFile(fifo, { signal }),
  'copyFile from it': (signal) => od.copyFile(fifo, `${fifo}.copy`, { signal }),
  createWriteStream: (signal) =>
    new Promise((resolve, reject) => {
      const w = od.createWriteStream(fifo, { signal })
      w.on('error', reject)
      w.on('finish', resolve)
      w.end('data')
    }),
  createReadStream: (signal) =>
    new Promise((resolve, reject) => {
      const r = od.createReadStream(fifo, { signal })
      r.on('error', reject)
      r.on('end', resolve)
      r.resume()
    }),
}[form]

/** Opens the other end without blocking and closes it: a waiting open of the FIFO returns. */
function peer() {
  const reads = ['readFile', 'copyFile from it', 'createReadStream'].includes(form)
  fs.closeSync(fs.openSync(fifo, (reads ? fs.constants.O_WRONLY : fs.constants.O_RDONLY) | fs.constants.O_NONBLOCK))
}

const errors = []
try {
  for (let i = 0; i < Number(rounds); i++) {
    const ac = new AbortController()
    const p = start(ac.signal)
    p.catch(() => {})
    await until(() => waiting() === 1)
    ac.abort()
    let outcome
    p.then(
      () => (outcome = 'resolved'),
      (e) => (outcome = e.code ?? e.name),
    )
    // Settled within 100000 turns of the event loop (it takes a few), or reported HUNG and let go
    // by a reader or writer of the other end opened here (the peer that never came). HUNG only
    // while a thread still waits in the open: once the open has returned, its settling is on its
    // way (on a busy machine it can take more turns than that: seen in CI, where the peer opened
    // here then found no one at the other end, ENXIO), so wait for it.
    for (let n = 0; outcome === undefined && (n < 100_000 || waiting() === 0); n++) await turn()
    if (outcome === undefined) {
      errors.push('HUNG')
      peer()
      await p.catch(() => {})
    } else errors.push(outcome)
    // The open given back within 100000 turns, or reported (the thread stays in the kernel) and let go.
    for (let n = 0; n < 100_000 && waiting() > 0; n++) await turn()
    if (waiting() > 0) {
      errors.push('THREAD HELD')
      peer()
      await until(() => waiting() === 0)
    }
  }
  await fs.promises.stat(fifo)
  console.log('RESULT ' + JSON.stringify({ rounds: Number(rounds), errors }))
} catch (e) {
  console.log('RESULT ' + JSON.stringify({ crash: String(e?.stack ?? e) }))
}
