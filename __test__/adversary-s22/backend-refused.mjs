// Every call that opens a path to write, with a backend this process cannot have (`backend`
// argument, or ODIRECT_BACKEND in the environment): what is left of the file it named.
//   node backend-refused.mjs DIST DIR BACKEND
// Prints RESULT {"out":[{"call","code","size","names"}...]}: `size` of DIR/data after the call
// (8192 before each), `names` the entries of DIR besides data.
import * as fs from 'node:fs'
import * as path from 'node:path'

const [dist, dir, backend] = process.argv.slice(2)
try {
  const od = await import(dist)
  const p = path.join(dir, 'data')
  const opts = { backend }
  const { O_RDWR, O_TRUNC, O_CREAT, O_EXCL } = fs.constants
  const untilEnd = (s) =>
    new Promise((resolve, reject) => {
      s.on('error', reject)
      s.on('finish', resolve)
      s.end(Buffer.alloc(4096, 2))
    })
  const calls = {
    "open 'w'": () => od.open(p, 'w', opts),
    "open 'w+'": () => od.open(p, 'w+', opts),
    'open O_RDWR | O_TRUNC': () => od.open(p, O_RDWR | O_TRUNC, opts),
    "open 'wx' (new)": () => od.open(path.join(dir, 'new'), 'wx', opts),
    'open O_RDWR | O_CREAT | O_EXCL (new)': () => od.open(path.join(dir, 'new2'), O_RDWR | O_CREAT | O_EXCL, opts),
    "open 'w', direct prefer": () => od.open(p, 'w', { ...opts, direct: 'prefer' }),
    "open 'w', direct off": () => od.open(p, 'w', { ...opts, direct: 'off' }),
    writeFile: () => od.writeFile(p, Buffer.alloc(4096, 2), opts),
    'writeFile atomic': () => od.writeFile(p, Buffer.alloc(4096, 2), { ...opts, atomic: true }),
    copyFile: () => od.copyFile(p, path.join(dir, 'copy'), opts),
    createWriteStream: () => untilEnd(od.createWriteStream(p, opts)),
    writableWebStream: async () => {
      const w = od.writableWebStream(p, opts).getWriter()
      await w.write(new Uint8Array(4096))
      await w.close()
    },
  }
  const out = []
  for (const [call, run] of Object.entries(calls)) {
    fs.writeFileSync(p, Buffer.alloc(8192, 1))
    let code = 'resolved'
    try {
      const r = await run()
      if (r && typeof r.close === 'function') await r.close()
    } catch (e) {
      code = e.code
    }
    const names = fs.readdirSync(dir).filter((n) => n !== 'data')
    for (const n of names) fs.rmSync(path.join(dir, n), { force: true })
    out.push({ call, code, size: fs.statSync(p).size, same: fs.readFileSync(p).equals(Buffer.alloc(8192, 1)), names })
  }
  console.log(`RESULT ${JSON.stringify({ out })}`)
} catch (e) {
  console.log(`RESULT ${JSON.stringify({ crash: String(e && e.stack ? e.stack : e) })}`)
}
