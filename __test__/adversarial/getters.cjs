// Attack: user code that runs INSIDE a call (option getters, an AbortSignal's `aborted` getter,
// Proxy arrays' element getters) detaches or shrinks buffers after they were looked at; and an
// AbortSignal aborted in the same tick as the call. Also typed-array kinds the bridge might size
// wrongly (Float16Array, BigInt64Array, DataView). Every scenario records how the call settled
// and whether the file changed anywhere it should not have.
//
// argv: <scratch dir>. Prints RESULT { scenarios: { name: { status, code?, value?, ...checks } } }.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { od, result, detachers, settle } = require('./common.cjs')

const dir = process.argv[2]
const UNIT = 4096
const SIZE = 64 * 1024
const out = {}

const detach = (ab) => detachers.clone(ab)

/** A fresh file of SIZE bytes of 0xee, and its handle. */
async function fresh(name) {
  const file = path.join(dir, name)
  fs.writeFileSync(file, Buffer.alloc(SIZE, 0xee))
  const fh = await od.open(file, 'r+')
  return { file, fh }
}
/** Whether the file still holds SIZE bytes of 0xee (first changed offset otherwise). */
function unchanged(file) {
  const b = fs.readFileSync(file)
  if (b.length !== SIZE) return `size ${b.length}`
  for (let i = 0; i < b.length; i++) if (b[i] !== 0xee) return `byte ${i} is ${b[i]}`
  return true
}
/**
 * A plain V8 buffer (detachable). odirect's own buffers (fh.alloc) are not detached by
 * structuredClone/postMessage on Node 20 (they are copied: external memory), so the attacks
 * use memory a program can really take away under the call.
 */
function filled(fh, n, v) {
  const b = new Uint8Array(n)
  b.fill(v)
  return b
}

async function scenario(name, fn) {
  try {
    out[name] = await fn()
  } catch (e) {
    out[name] = { status: 'threw-in-harness', message: String(e && e.stack ? e.stack : e) }
  }
}

async function main() {
  // 1. position getter detaches the buffer of a write.
  await scenario('write: position getter detaches the buffer', async () => {
    const { file, fh } = await fresh('g1')
    const b = filled(fh, UNIT, 0x11)
    const r = await settle(fh.write(b, { get position() { detach(b.buffer); return UNIT } }))
    await fh.close()
    return { ...r, unchanged: unchanged(file) }
  })
  // 2. position getter detaches the buffer of a read.
  await scenario('read: position getter detaches the buffer', async () => {
    const { fh } = await fresh('g2')
    const b = new Uint8Array(UNIT)
    const r = await settle(fh.read(b, { get position() { detach(b.buffer); return 0 } }))
    await fh.close()
    return r
  })
  // 3. signal getter detaches the buffer of a write.
  await scenario('write: signal getter detaches the buffer', async () => {
    const { file, fh } = await fresh('g3')
    const b = filled(fh, UNIT, 0x22)
    const ac = new AbortController()
    const r = await settle(fh.write(b, { position: 0, get signal() { detach(b.buffer); return ac.signal } }))
    await fh.close()
    return { ...r, unchanged: unchanged(file) }
  })
  // 4. a real AbortSignal whose own `aborted` getter detaches the buffer.
  await scenario("write: the signal's aborted getter detaches the buffer", async () => {
    const { file, fh } = await fresh('g4')
    const b = filled(fh, UNIT, 0x33)
    const signal = new AbortController().signal
    Object.defineProperty(signal, 'aborted', { get() { detach(b.buffer); return false } })
    const r = await settle(fh.write(b, { position: 0, signal }))
    await fh.close()
    return { ...r, unchanged: unchanged(file) }
  })
  // 5. writev([b0, b1], 8192) with b0 detached by b1's element getter: nothing may be written.
  await scenario("writev: element 1's getter detaches element 0", async () => {
    const { file, fh } = await fresh('g5')
    const b0 = filled(fh, UNIT, 0x44)
    const b1 = filled(fh, UNIT, 0x55)
    const arr = new Proxy([b0, b1], {
      get(target, key, recv) {
        if (key === '1') detach(b0.buffer)
        return Reflect.get(target, key, recv)
      },
    })
    const r = await settle(fh.writev(arr, 2 * UNIT))
    await fh.close()
    return { ...r, unchanged: unchanged(file) }
  })
  // 6. writeMany with op 1's getter detaching op 0's buffer: none may be submitted.
  await scenario("writeMany: op 1's getter detaches op 0's buffer", async () => {
    const { file, fh } = await fresh('g6')
    const b0 = filled(fh, UNIT, 0x66)
    const b1 = filled(fh, UNIT, 0x77)
    const ops = new Proxy([{ buffer: b0, position: 0 }, { buffer: b1, position: UNIT }], {
      get(target, key, recv) {
        if (key === '1') detach(b0.buffer)
        return Reflect.get(target, key, recv)
      },
    })
    const r = await settle(fh.writeMany(ops))
    await fh.close()
    return { ...r, unchanged: unchanged(file) }
  })
  // 7. readMany, same attack: rejects, reports nothing as read.
  await scenario("readMany: op 1's getter detaches op 0's buffer", async () => {
    const { fh } = await fresh('g7')
    const b0 = new Uint8Array(UNIT)
    const b1 = new Uint8Array(UNIT)
    const ops = new Proxy([{ buffer: b0, position: 0 }, { buffer: b1, position: UNIT }], {
      get(target, key, recv) {
        if (key === '1') detach(b0.buffer)
        return Reflect.get(target, key, recv)
      },
    })
    const r = await settle(fh.readMany(ops))
    await fh.close()
    return { ...r, b1Untouched: b1.every((x) => x === 0) }
  })
  // 8. an op object whose buffer getter detaches the previous op's buffer (readv form).
  await scenario("readv: element 1's getter detaches element 0", async () => {
    const { fh } = await fresh('g8')
    const b0 = new Uint8Array(UNIT)
    const b1 = new Uint8Array(UNIT)
    const arr = new Proxy([b0, b1], {
      get(target, key, recv) {
        if (key === '1') detach(b0.buffer)
        return Reflect.get(target, key, recv)
      },
    })
    const r = await settle(fh.readv(arr, 0))
    await fh.close()
    return { ...r, b1Untouched: b1.every((x) => x === 0) }
  })
  // 9. a resizable buffer shrunk to 0 by the position getter.
  await scenario('read: position getter shrinks a resizable buffer to 0', async () => {
    const { fh } = await fresh('g9')
    const ab = new ArrayBuffer(UNIT, { maxByteLength: UNIT })
    const v = new Uint8Array(ab)
    const r = await settle(fh.read(v, { get position() { ab.resize(0); return 0 } }))
    await fh.close()
    return r
  })
  // 10. a buffer detached in the same tick, after the call returned (before the flush).
  await scenario('write: buffer detached right after the call (same tick)', async () => {
    const { file, fh } = await fresh('g10')
    const b = filled(fh, UNIT, 0x88)
    const p = settle(fh.write(b, { position: 0 }))
    detach(b.buffer)
    const r = await p
    await fh.close()
    // Captured at the call: either written in full (from odirect-owned memory) or refused.
    const content = fs.readFileSync(file)
    return { ...r, unchanged: unchanged(file), fullWrite: content.subarray(0, UNIT).every((x) => x === 0x88) && content.subarray(UNIT).every((x) => x === 0xee) }
  })
  // 11. AbortSignal aborted in the same tick as the call, before any flush.
  await scenario('write: signal aborted right after the call (same tick)', async () => {
    const { file, fh } = await fresh('g11')
    const b = filled(fh, UNIT, 0x99)
    const ac = new AbortController()
    const p = settle(fh.write(b, { position: 0, signal: ac.signal }))
    ac.abort()
    const r = await p
    await fh.close()
    return { ...r, unchanged: unchanged(file) }
  })
  await scenario('read: signal aborted right after the call (same tick)', async () => {
    const { fh } = await fresh('g12')
    const b = fh.alloc(UNIT)
    const ac = new AbortController()
    const p = settle(fh.read(b, { position: 0, signal: ac.signal }))
    ac.abort()
    const r = await p
    await fh.close()
    return { ...r, bufferUntouched: b.every((x) => x === 0) }
  })
  // 13. view kinds: bytes moved == byteLength, file size and content exact.
  const kinds = {
    Float16Array: typeof Float16Array === 'function' ? Float16Array : undefined,
    BigInt64Array,
    Float64Array,
    Uint16Array,
    DataView,
  }
  for (const [kind, Ctor] of Object.entries(kinds)) {
    await scenario(`view kind ${kind}: bytes moved == byteLength`, async () => {
      if (Ctor === undefined) return { status: 'unavailable' }
      const file = path.join(dir, `k-${kind}`)
      const fh = await od.open(file, 'w+')
      const raw = fh.alloc(4 * UNIT)
      for (let i = 0; i < raw.length; i++) raw[i] = (i * 7 + 1) & 0xff
      // A view of exactly one block (UNIT bytes) at the start of a larger aligned buffer.
      const elems = Ctor === DataView ? UNIT : UNIT / Ctor.BYTES_PER_ELEMENT
      const view = new Ctor(raw.buffer, raw.byteOffset, elems)
      const w = await settle(fh.write(view, { position: 0 }))
      const size = fs.statSync(file).size
      const onDisk = fs.readFileSync(file)
      const contentOk = onDisk.length >= UNIT && onDisk.subarray(0, UNIT).equals(raw.subarray(0, UNIT))
      const back = fh.alloc(4 * UNIT)
      back.fill(0xcd)
      const rview = new Ctor(back.buffer, back.byteOffset, elems)
      const r = await settle(fh.read(rview, { position: 0 }))
      await fh.close()
      return { status: w.status, code: w.code, written: w.value, read: r.value, readStatus: r.status, byteLength: view.byteLength, size, contentOk, readOk: back.subarray(0, UNIT).equals(raw.subarray(0, UNIT)), tailUntouched: back.subarray(UNIT).every((x) => x === 0xcd) }
    })
  }
  result({ scenarios: out })
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(2)
})
