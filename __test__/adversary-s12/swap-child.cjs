// Ops over a tmpfs file whose pages are out in a slow swap (adversary-s12.spec.ts), in Node, Bun
// or Deno: `<odirect module path> <file>`. The file holds the faultfs pattern (patternByte
// below, as helpers/fixtures.ts). Lone reads, a lone write, a registered (fixed) read and a
// typed read batch, each at pages apart (swap read-ahead brings a few neighbours back).
// Prints RESULT {json}: which checks held, the engine's in-kernel waits made / that found
// their completion.
'use strict'
const path = require('node:path')

const [mod, file] = process.argv.slice(2)
const od = require(mod)
const { getEngine } = require(path.join(path.dirname(require.resolve(mod)), 'src', 'engine.js'))
const PAGE = 4096

function patternByte(o) {
  const s = Math.floor(o / 256) >>> 0
  const h = Math.imul(s, 0x9e3779b1) >>> 24
  return ((o % 256) * 31 + 7 + h) & 0xff
}
function isPattern(b, pos) {
  for (let i = 0; i < b.length; i++) if (b[i] !== patternByte(pos + i)) return false
  return true
}

;(async () => {
  const fh = await od.open(file, 'r+')
  const [tries0, found0] = getEngine().native.waitStats
  const out = { backend: fh.backend }
  const b = fh.alloc(64 << 10)
  out.lone = (await fh.read(b, 0, PAGE, 20 * PAGE)).bytesRead === PAGE && isPattern(b.subarray(0, PAGE), 20 * PAGE)
  out.lone64k = (await fh.read(b, 0, 64 << 10, 60 * PAGE)).bytesRead === 64 << 10 && isPattern(b, 60 * PAGE)
  out.write = (await fh.write(fh.alloc(PAGE).fill(0xab), 0, PAGE, 100 * PAGE)).bytesWritten === PAGE
  const reg = fh.registerBuffers(1, 64 << 10)
  const m = reg.buffers[0]
  out.fixed = (await fh.read(m, 0, PAGE, 140 * PAGE)).bytesRead === PAGE && isPattern(m.subarray(0, PAGE), 140 * PAGE)
  const n = 8
  const positions = new Float64Array(n).map((_, i) => (160 + i * 12) * PAGE)
  const got = await fh.readMany({ memory: m, offsets: new Uint32Array(n).map((_, i) => i * PAGE), lengths: new Uint32Array(n).fill(PAGE), positions }, { window: 2 })
  out.batch = [...got].every((x) => x === PAGE) && positions.every((p, i) => isPattern(m.subarray(i * PAGE, (i + 1) * PAGE), p))
  reg.unregister()
  await fh.close()
  const [tries, found] = getEngine().native.waitStats
  out.waits = tries - tries0
  out.timedOut = tries - tries0 - (found - found0)
  console.log('RESULT ' + JSON.stringify(out))
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
