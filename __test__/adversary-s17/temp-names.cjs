// writeFile({ atomic: true }) of one destination from two worker threads of one process, each
// one's own writeFile call (what a pool of workers saving one cache or config file does):
// - concurrent: worker A's write holds its temp file open (its data is an async iterable that
//   waits after the first chunk); worker B writes the same destination meanwhile; then A goes on.
//   Both calls must succeed (node:fs's writeFile, in place, and write-file-atomic's per-thread
//   temp names both do), and the destination is A's data, whole;
// - leftover: worker A is terminated while its temp file is open (README: the temp file stays,
//   no JavaScript runs there to remove it); then worker B writes the same destination: B's call
//   must succeed, the destination is B's data.
// Each worker's temp names were NAME.odirect-tmp-PID-N with N counted per thread from 1, so two
// threads' first temp names were the same file (now PID-R, R random: src/fileops.ts tmpName).
// argv: dir. Prints RESULT {concurrent: {a, b, whole}, leftover: {b, whole}, temps}.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { Worker } = require('node:worker_threads')

const root = path.join(__dirname, '..', '..')
const [dir] = process.argv.slice(2)
const MiB = 1 << 20

const body = `
const { workerData, parentPort } = require('node:worker_threads')
const od = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))})
const { kind, dst, byte } = workerData
const MiB = 1 << 20
let go
parentPort.on('message', (m) => { if (m === 'go') go() })
async function* held() {
  yield Buffer.alloc(MiB, byte)
  parentPort.postMessage('holding')
  await new Promise((resolve) => { go = resolve })
  yield Buffer.alloc(MiB, byte)
}
const data = kind === 'hold' ? held() : Buffer.alloc(2 * MiB, byte)
od.writeFile(dst, data, { atomic: true }).then(
  () => parentPort.postMessage('done'),
  (e) => parentPort.postMessage('error ' + (e && e.code) + ': ' + (e && e.message)),
)
`
const workerFile = path.join(dir, 'worker.cjs')
fs.writeFileSync(workerFile, body)

/** A worker writing `dst` with `byte`s; `on(message, worker)` sees its messages; resolves its last one. */
function run(kind, dst, byte, on = () => {}) {
  return new Promise((resolve) => {
    const w = new Worker(workerFile, { workerData: { kind, dst, byte } })
    let last = 'exited without an answer'
    w.on('message', (m) => {
      if (m !== 'holding') last = m
      on(m, w)
      if (m !== 'holding') void w.terminate()
    })
    w.on('error', (e) => {
      last = `worker error ${String(e)}`
    })
    w.on('exit', () => resolve(last))
  })
}

const wholeOf = (p, byte) => {
  if (!fs.existsSync(p)) return 'absent'
  const b = fs.readFileSync(p)
  return b.length === 2 * MiB && b.every((x) => x === byte)
}

async function main() {
  const c = path.join(dir, 'concurrent')
  fs.writeFileSync(c, 'old')
  let b = 'not run'
  const a = await run('hold', c, 0xaa, (m, w) => {
    if (m === 'holding') {
      void run('plain', c, 0xbb).then((r) => {
        b = r
        w.postMessage('go')
      })
    }
  })
  const concurrent = { a, b, whole: wholeOf(c, 0xaa) }

  const l = path.join(dir, 'leftover')
  fs.writeFileSync(l, 'old')
  await run('hold', l, 0xcc, (m, w) => {
    if (m === 'holding') void w.terminate()
  })
  const lb = await run('plain', l, 0xdd)
  const leftover = { b: lb, whole: wholeOf(l, 0xdd) }
  const temps = fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))
  console.log(`RESULT ${JSON.stringify({ concurrent, leftover, temps })}`)
}
main()
  .catch((e) => console.log(`RESULT ${JSON.stringify({ crash: String((e && e.stack) || e) })}`))
  .finally(() => process.exit(0))
