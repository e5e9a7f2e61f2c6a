// Runs as another user (nobody): a write stream with write-only flags overwrites the first
// `len` bytes of FILE, which this user may write but not read (mode 0200).
// Usage: node writeonly.mjs DIST_INDEX FILE LEN FORM(node|web)
const [dist, file, len, form] = process.argv.slice(2)
try {
  const od = await import(dist)
  const fs = await import('node:fs')
  const data = Buffer.alloc(Number(len), 0x44)
  let err
  if (form === 'node') {
    const ws = od.createWriteStream(file, { flags: fs.constants.O_WRONLY, chunkSize: 65536 })
    err = await new Promise((resolve) => {
      ws.on('error', (e) => resolve(e.code ?? String(e)))
      ws.on('close', () => resolve(undefined))
      ws.end(data)
    })
  } else {
    const w = od.writableWebStream(file, { flags: fs.constants.O_WRONLY, chunkSize: 65536 }).getWriter()
    try {
      await w.write(data)
      await w.close()
    } catch (e) {
      err = e.code ?? String(e)
    }
  }
  console.log(`RESULT ${JSON.stringify({ err: err ?? null })}`)
} catch (e) {
  console.log(`RESULT ${JSON.stringify({ crash: String(e && e.stack) })}`)
}
