// open(FILE, O_RDONLY | O_TRUNC) with odirect at the process's descriptor limit (adversary-s21b):
// run under `prlimit --nofile=64`. The engine is warmed first (its own descriptors exist), then
// descriptors are taken until EMFILE and one given back: node:fs's open(O_RDONLY | O_TRUNC) gets it
// and truncates; odirect's must too. Prints one JSON line: fs's outcome, odirect's, the size after.
'use strict'
const fs = require('node:fs')
const [dist, file] = process.argv.slice(2)
const od = require(dist)
const { O_RDONLY, O_TRUNC } = fs.constants
;(async () => {
  fs.writeFileSync(file, Buffer.alloc(8192, 1))
  await (await od.open(file, 'r')).close()
  const fds = []
  try {
    for (;;) fds.push(fs.openSync('/dev/null', 'r'))
  } catch {}
  fs.closeSync(fds.pop())
  let viaFs
  try {
    const fd = fs.openSync(file, O_RDONLY | O_TRUNC)
    viaFs = `opened ${fs.fstatSync(fd).size}`
    fs.closeSync(fd)
  } catch (e) {
    viaFs = e.code
  }
  fs.writeFileSync(file, Buffer.alloc(8192, 1))
  let viaOd
  try {
    const fh = await od.open(file, O_RDONLY | O_TRUNC)
    viaOd = `opened ${(await fh.stat()).size}`
    await fh.close()
  } catch (e) {
    viaOd = `${e.code} ${e.syscall}`
  }
  for (const fd of fds) fs.closeSync(fd)
  process.stdout.write(JSON.stringify({ fs: viaFs, od: viaOd, size: fs.statSync(file).size }) + '\n')
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
