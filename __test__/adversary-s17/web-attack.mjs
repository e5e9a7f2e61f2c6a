// Web streams attacked as a new user meets them, in whatever runtime runs this: BYOB readers with
// views of odd sizes, offsets and element types (a file whose length is not a multiple of the
// element size ends in the runtime's own TypeError, as the Streams spec says), mixed default and
// BYOB readers, tee() with a branch read late, cancelled or read BYOB, cancel() and releaseLock()
// mid-read, pipeThrough/pipeTo aborted at a chunk, a writer's abort() mid-write. Every byte read
// is compared with the file. argv: dir. Prints RESULT {name: outcome}.
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
const od = createRequire(import.meta.url)(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'index.js'))
import * as fs from 'node:fs'
const dir = process.argv[2]
const out = {}
const p = dir + '/src.bin'
const N = 3 * 1024 * 1024 + 1234
const data = Buffer.alloc(N); for (let i = 0; i < N; i++) data[i] = (i * 7 + (i >> 9)) & 255
fs.writeFileSync(p, data)
const opts = { highWaterMark: 65536 }
async function byob(sizes, offsets, ctor = Uint8Array, o = opts) {
  const rs = od.readableWebStream(p, o)
  const r = rs.getReader({ mode: 'byob' })
  const out = []
  let i = 0
  for (;;) {
    const sz = sizes[i % sizes.length], off = offsets[i % offsets.length]; i++
    const ab = new ArrayBuffer(off + sz * ctor.BYTES_PER_ELEMENT + 16)
    const view = ctor === DataView ? new DataView(new ArrayBuffer(off + sz + 16), off, sz) : new ctor(ab, off, sz)
    const { value, done } = await r.read(view)
    if (done) { if (value && value.byteLength) out.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength)); break }
    out.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength))
  }
  return Buffer.concat(out)
}
const t = async (n, f) => { try { const r = await f(); out[n] = typeof r === 'string' ? r : JSON.stringify(r) } catch (e) { out[n] = `ERR ${e.name}` } }
const eq = (b, want = data) => b.equals(want) ? 'ok' : `MISMATCH len ${b.length} vs ${want.length} first diff ${b.findIndex((x, i) => x !== want[i])}`
await t('byob 1 byte', async () => eq(await byob([1], [0], Uint8Array, { highWaterMark: 4096, end: 20000 }), data.subarray(0, 20001)))
await t('byob odd', async () => eq(await byob([4095, 1, 70000, 513, 3], [0, 1, 3, 7])))
await t('byob big', async () => eq(await byob([5 << 20], [0])))
await t('byob u32', async () => eq(await byob([1000, 17], [0, 4], Uint32Array)).toString())
await t('byob u32 file%4', async () => { fs.writeFileSync(dir + '/odd', data.subarray(0, 4097)); const rs = od.readableWebStream(dir + '/odd'); const r = rs.getReader({ mode: 'byob' }); let tot = 0; for (;;) { const { value, done } = await r.read(new Uint32Array(300)); if (value) tot += value.byteLength; if (done) break } return tot })
await t('byob f64 file%8', async () => { const rs = od.readableWebStream(p); const r = rs.getReader({ mode: 'byob' }); let tot = 0; for (;;) { const { value, done } = await r.read(new Float64Array(1000)); if (value) tot += value.byteLength; if (done) break } return tot })
await t('byob u32 whole elements', async () => eq(await byob([1000, 17], [0, 4], Uint32Array, { highWaterMark: 65536, start: 3, end: 3 + 4 * 200000 - 1 }), data.subarray(3, 3 + 4 * 200000)))
await t('byob f64 whole elements', async () => eq(await byob([1, 333], [0, 8], Float64Array, { highWaterMark: 4096, start: 1, end: 8 * 20000 }), data.subarray(1, 1 + 8 * 20000)))
await t('byob dataview', async () => eq(await byob([777], [5], DataView)))
await t('byob start/end', async () => eq(await byob([1000, 3], [1], Uint8Array, { start: 1001, end: 2_000_000 }), data.subarray(1001, 2_000_001)))
await t('default reader', async () => { const out = []; for await (const c of od.readableWebStream(p, opts)) out.push(Buffer.from(c)); return eq(Buffer.concat(out)) })
await t('mixed default/byob', async () => { const rs = od.readableWebStream(p, opts); let r = rs.getReader(); const out = []; let i = 0; for (;;) { let res; if (i++ % 2) { r.releaseLock(); r = rs.getReader({ mode: 'byob' }); res = await r.read(new Uint8Array(1000)) } else { r.releaseLock(); r = rs.getReader(); res = await r.read() } if (res.done) break; out.push(Buffer.from(res.value)) } return eq(Buffer.concat(out)) })
await t('tee both', async () => { const [a, b] = od.readableWebStream(p, opts).tee(); const ra = (async () => { const o = []; for await (const c of a) o.push(Buffer.from(c)); return Buffer.concat(o) })(); const rb = (async () => { const o = []; for await (const c of b) o.push(Buffer.from(c)); return Buffer.concat(o) })(); return eq(await ra) + ' ' + eq(await rb) })
await t('tee one stalled then read', async () => { const [a, b] = od.readableWebStream(p, opts).tee(); const o = []; for await (const c of a) o.push(Buffer.from(c)); const o2 = []; for await (const c of b) o2.push(Buffer.from(c)); return eq(Buffer.concat(o)) + ' ' + eq(Buffer.concat(o2)) })
await t('tee one cancelled', async () => { const [a, b] = od.readableWebStream(p, opts).tee(); void b.cancel(); const o = []; for await (const c of a) o.push(Buffer.from(c)); return eq(Buffer.concat(o)) })
await t('tee byob branch', async () => { const [a, b] = od.readableWebStream(p, opts).tee(); const r = a.getReader({ mode: 'byob' }); const o = []; for (;;) { const { value, done } = await r.read(new Uint8Array(3333)); if (done) break; o.push(Buffer.from(value)) } const o2 = []; for await (const c of b) o2.push(Buffer.from(c)); return eq(Buffer.concat(o)) + ' ' + eq(Buffer.concat(o2)) })
await t('cancel mid read', async () => { const rs = od.readableWebStream(p, opts); const r = rs.getReader(); await r.read(); const pr = r.read(); await r.cancel('x'); return JSON.stringify(await pr) })
await t('cancel byob mid read', async () => { const rs = od.readableWebStream(p, opts); const r = rs.getReader({ mode: 'byob' }); await r.read(new Uint8Array(10)); const pr = r.read(new Uint8Array(100000)); await r.cancel('x'); const v = await pr; return [v.done, v.value?.byteLength] })
await t('releaseLock mid read', async () => { const rs = od.readableWebStream(p, opts); const r = rs.getReader(); const pr = r.read(); r.releaseLock(); let e1; try { await pr } catch (e) { e1 = e.name } const r2 = rs.getReader(); const o = []; for (;;) { const { value, done } = await r2.read(); if (done) break; o.push(Buffer.from(value)) } return e1 + ' ' + Buffer.concat(o).length })
await t('releaseLock byob mid read', async () => { const rs = od.readableWebStream(p, opts); const r = rs.getReader({ mode: 'byob' }); const pr = r.read(new Uint8Array(5000)); r.releaseLock(); let e1; try { await pr } catch (e) { e1 = e.name } const r2 = rs.getReader(); const o = []; for (;;) { const { value, done } = await r2.read(); if (done) break; o.push(Buffer.from(value)) } const b = Buffer.concat(o); return e1 + ' ' + eq(b) })
// pipeTo with abort at chunk k
for (const k of [0, 1, 5, 40]) {
  await t('pipeTo abort at ' + k, async () => {
    const ac = new AbortController(); let n = 0
    const dst = dir + '/dst' + k
    fs.writeFileSync(dst, 'old')
    const ws = od.writableWebStream(dst, {})
    const tr = new TransformStream({ transform(c, ctl) { if (n++ === k) ac.abort(); ctl.enqueue(c) } })
    let err
    try { await od.readableWebStream(p, opts).pipeThrough(tr).pipeTo(ws, { signal: ac.signal }) } catch (e) { err = e.name }
    const got = fs.readFileSync(dst)
    // What the aborted stream left: a prefix of the data (cut back to its confirmed bytes).
    return [err, got.equals(data.subarray(0, got.length)), fs.readdirSync(dir).filter((n) => n.includes('odirect-tmp')).length]
  })
}
await t('writer abort mid write', async () => {
  const dst = dir + '/wab'
  const ws = od.writableWebStream(dst, { highWaterMark: 65536 })
  const w = ws.getWriter()
  const ps = []
  for (let i = 0; i < 50; i++) ps.push(w.write(data.subarray(i * 50000, (i + 1) * 50000)).catch(e => e.name))
  await w.abort(new Error('stop'))
  const rs = await Promise.all(ps)
  const got = fs.readFileSync(dst)
  return [got.equals(data.subarray(0, got.length)), rs.filter(x => x !== undefined).length]
})
console.log(`RESULT ${JSON.stringify(out)}`)
