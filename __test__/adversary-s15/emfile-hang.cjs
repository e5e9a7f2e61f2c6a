// `<odirect module> <dir> <free> <copies>`, under prlimit --nofile: the process's first odirect
// call is made with only `free` descriptors left (enough for the file, the eventfd and the ring,
// not for the pipe of the ring's setup probe of IORING_SQ_TASKRUN), then every descriptor is freed
// and `copies` copyFiles run one after another. Prints RESULT {json}: how many completed and
// whether each copy is right. A copy whose last write's completion is never delivered hangs.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { fillFds } = require('./fill-fds.cjs')

const [mod, dir, freeArg, copiesArg] = process.argv.slice(2)
const od = require(mod)
const src = path.join(dir, 'src')
const data = Buffer.alloc(1024 * 1024 + 123)
for (let i = 0; i < data.length; i++) data[i] = (i * 131 + 7) & 0xff
fs.writeFileSync(src, data)

async function main() {
  const fillers = fillFds(Number(freeArg))
  let first = 'ok'
  try {
    const fh = await od.open(src, 'r')
    first = fh.backend
    await fh.close()
  } catch (e) {
    first = String(e && e.code)
  }
  for (const fd of fillers) fs.closeSync(fd)
  let done = 0
  let right = 0
  for (let i = 0; i < Number(copiesArg); i++) {
    const dst = path.join(dir, `dst-${i % 4}`)
    await od.copyFile(src, dst)
    done++
    if (Buffer.compare(fs.readFileSync(dst), data) === 0) right++
  }
  console.log('RESULT ' + JSON.stringify({ first, done, right }))
}
main().catch((e) => {
  console.log('RESULT ' + JSON.stringify({ crash: String(e && e.stack) }))
  process.exitCode = 1
})
