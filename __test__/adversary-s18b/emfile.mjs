// Replaces (writeFile { atomic }, copyFile) with the descriptor table full but for `free`
// descriptors, free = 0..12: each either replaces the destination whole or fails, and never
// leaves a temp file or a destination that is neither the old nor the new content.
// Usage: node emfile.mjs DIR DIST_INDEX
import * as fs from 'node:fs'
import * as path from 'node:path'

const [dir, dist] = process.argv.slice(2)
try {
  const od = await import(dist)
  const src = path.join(dir, 'src')
  const oldData = Buffer.alloc(70_000, 0x6f)
  const newData = Buffer.alloc(130_000, 0x6e)
  for (let i = 0; i < newData.length; i += 997) newData[i] = i & 0xff
  fs.writeFileSync(src, newData)
  // Warm the engine and the modules the calls use.
  fs.writeFileSync(path.join(dir, 'warm'), oldData)
  await od.writeFile(path.join(dir, 'warm'), newData, { atomic: true })
  await od.copyFile(src, path.join(dir, 'warm'))
  fs.rmSync(path.join(dir, 'warm'))
  const out = []
  for (const op of ['writeFile', 'copyFile', 'writeFileString']) {
    for (let free = 0; free <= 12; free++) {
      const dst = path.join(dir, `dst-${op}-${free}`)
      fs.writeFileSync(dst, oldData)
      const held = []
      for (;;) {
        try {
          held.push(fs.openSync('/dev/null', 'r'))
        } catch {
          break
        }
      }
      for (let i = 0; i < free && held.length > 0; i++) fs.closeSync(held.pop())
      let err
      try {
        if (op === 'writeFile') await od.writeFile(dst, newData, { atomic: true })
        else if (op === 'writeFileString') await od.writeFile(dst, newData.toString('latin1'), { atomic: true, encoding: 'latin1' })
        else await od.copyFile(src, dst)
      } catch (e) {
        err = e.code ?? String(e)
        // The error says whether the destination was replaced (the rename done, its directory's sync failed).
        if (/was replaced/.test(e.hint ?? '')) err += ' (replaced)'
      }
      for (const fd of held) fs.closeSync(fd)
      const got = fs.readFileSync(dst)
      const state = got.equals(newData) ? 'new' : got.equals(oldData) ? 'old' : `other(${got.length})`
      const temps = fs.readdirSync(dir).filter((n) => n.includes('odirect-tmp'))
      for (const t of temps) fs.rmSync(path.join(dir, t))
      out.push({ op, free, err, state, temps })
    }
  }
  console.log(`RESULT ${JSON.stringify({ out })}`)
} catch (e) {
  console.log(`RESULT ${JSON.stringify({ crash: String(e && e.stack) })}`)
}
