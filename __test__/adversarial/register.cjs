// registerBuffers under pressure. argv: <scratch dir> <mode: rss|huge>
//   rss:  12 x registerBuffers(64, 1 MiB) + unregister() on one handle, refs dropped, gc():
//         RSS must come back near the baseline (the memory is released by unregister, not close).
//   huge: registerBuffers(16384, 2034381) (run under `prlimit --as=8G`): a coded error, no abort.
// Prints RESULT {...}.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { od, result, gcHard, tick } = require('./common.cjs')

const [dir, mode] = process.argv.slice(2)
const MiB = 1 << 20

async function main() {
  const fh = await od.open(path.join(dir, `reg-${mode}`), 'w+')
  if (mode === 'rss') {
    gcHard()
    await tick()
    const base = process.memoryUsage().rss
    let peak = 0
    for (let i = 0; i < 12; i++) {
      let reg = fh.registerBuffers(64, MiB)
      for (const b of reg.buffers) b.fill(i + 1) // touch every page
      peak = Math.max(peak, process.memoryUsage().rss)
      reg.unregister()
      reg = undefined
      gcHard(2)
      await tick()
    }
    gcHard()
    await tick()
    gcHard()
    const after = process.memoryUsage().rss
    await fh.close()
    result({ base, peak, after, growth: after - base })
  } else {
    let r
    try {
      const reg = fh.registerBuffers(16384, 2034381)
      r = { threw: false, buffers: reg.buffers.length }
      reg.unregister()
    } catch (e) {
      r = { threw: true, code: e && e.code, name: e && e.name, message: String(e && e.message) }
    }
    await fh.close()
    result(r)
  }
}
main().catch((e) => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(2)
})
