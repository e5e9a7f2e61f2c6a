// Run by __test__/adversary-s9b.spec.ts under Node 20, Node 22, Bun and Deno (OD_DIST: the
// build's dist/index.mjs): hand-over read stream chunks kept, transferred, cloned, delivered before
// a destroy, piped into a write stream of the library; then collections and streams that reuse
// freed memory. Prints one JSON line: 'ok' or what differs for each.
const od = await import(process.env.OD_DIST)
const fs = await import('node:fs')
const path = await import('node:path')
const dir = fs.mkdtempSync('/var/tmp/odirect-adv-s9b-rt-')
const K = 65536
const pat = (seed, n) => { const b = Buffer.alloc(n); for (let i = 0; i < n; i += 4) b.writeUInt32LE(((i + seed) * 2654435761) >>> 0, i); return b }
const a = pat(1, 24 * K), z = pat(7, 48 * K)
fs.writeFileSync(path.join(dir, 'a'), a)
fs.writeFileSync(path.join(dir, 'z'), z)
const gc = () => { if (typeof Bun !== 'undefined') Bun.gc(true); else globalThis.gc?.() }
const move = (ab) => {
  if (typeof ab.transfer === 'function') return ab.transfer()
  const c = structuredClone(ab, { transfer: [ab] }); return c
}
const out = {}
// 1. Node stream, default mode: keep all, transfer every third chunk's memory, clone every fourth.
{
  const kept = []; let i = 0; let moved = 0
  for await (const c of od.createReadStream(path.join(dir, 'a'), { chunkSize: K, readAhead: 4 })) {
    if (i % 3 === 1) { const off = c.byteOffset, len = c.length; const ab = move(c.buffer); if (c.buffer.byteLength === 0) moved++; kept.push(new Uint8Array(ab, off, len)) }
    else if (i % 4 === 0) kept.push(structuredClone(c))
    else kept.push(c)
    i++
  }
  out.node = { moved, chunks: i, kept }
}
// 2. web stream, default reader: same.
{
  const kept = []; let i = 0
  const r = od.readableWebStream(path.join(dir, 'a'), { chunkSize: K }).getReader()
  for (;;) { const { value, done } = await r.read(); if (done) break; const off = value.byteOffset, len = value.byteLength; kept.push(i % 3 === 1 ? new Uint8Array(move(value.buffer), off, len) : value); i++ }
  out.web = { chunks: i, kept }
}
// 3. a stream destroyed mid-read, its delivered chunks kept.
{
  const kept = []
  const s = od.createReadStream(path.join(dir, 'a'), { chunkSize: K, readAhead: 8 })
  await new Promise((res, rej) => { s.on('data', (c) => { kept.push(c); if (kept.length === 5) { s.destroy(); res() } }); s.on('error', rej) })
  await new Promise((res) => s.once('close', res))
  out.destroyed = { kept }
}
// 4. piped into odirect's own write stream (default mode both ways).
{
  const { pipeline } = await import('node:stream/promises')
  await pipeline(od.createReadStream(path.join(dir, 'a'), { chunkSize: K, readAhead: 4 }), od.createWriteStream(path.join(dir, 'p')))
  out.pipe = fs.readFileSync(path.join(dir, 'p')).equals(a) ? 'ok' : 'differs'
}
// Freed memory goes back to the pool: read another file over it, collect, read again.
for (let round = 0; round < 3; round++) {
  gc()
  for await (const c of od.createReadStream(path.join(dir, 'z'), { chunkSize: K, readAhead: 8 })) void c
}
gc()
const cmp = (parts, want) => { const got = Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))); return got.equals(want) ? 'ok' : `differs (${got.length} vs ${want.length} bytes)` }
const res = { node: cmp(out.node.kept, a), moved: out.node.moved, web: cmp(out.web.kept, a), destroyed: cmp(out.destroyed.kept, a.subarray(0, 5 * K)), pipe: out.pipe }
fs.rmSync(dir, { recursive: true, force: true })
console.log(JSON.stringify(res))
