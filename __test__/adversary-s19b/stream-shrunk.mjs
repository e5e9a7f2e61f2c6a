// Child of adversary-s19b.spec.ts: createWriteStream, a 4 MiB chunk whose resizable ArrayBuffer is
// resized to 0 (or transferred) right after write() returned, then end(). Prints at the process's
// exit (its event loop empty: nothing left to wait for) RESULT { events, cb, size }: the stream's
// events, the write callback's error code, the file's length.
// Usage: stream-shrunk.mjs DIST FILE resize|transfer
import * as fs from 'node:fs'

const [dist, file, how] = process.argv.slice(2)
const od = await import(dist)
const MiB = 1 << 20
const rab = new ArrayBuffer(4 * MiB, { maxByteLength: 8 * MiB })
const view = new Uint8Array(rab, 0, 4 * MiB).fill(0x61)
const w = od.createWriteStream(file)
const events = []
let cb = 'not called'
for (const ev of ['error', 'finish', 'close']) w.on(ev, (e) => events.push(e ? `${ev} ${e.code}` : ev))
process.on('exit', () => {
  console.log('RESULT ' + JSON.stringify({ events, cb, size: fs.existsSync(file) ? fs.statSync(file).size : -1 }))
})
w.write(view, (e) => (cb = e?.code ?? null))
if (how === 'resize') rab.resize(0)
else structuredClone(rab, { transfer: [rab] })
w.end()
