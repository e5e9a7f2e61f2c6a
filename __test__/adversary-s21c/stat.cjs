// fh.stat() and fh.stat({ bigint: true }) of each path given, as one RESULT line of JSON (every
// number and bigint as a string): run under Node, Bun and Deno by adversary-s21c.spec.ts.
// argv: DIST PATH...
const od = require(process.argv[2])

const FIELDS = ['dev', 'ino', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'size', 'blksize', 'blocks', 'atimeMs', 'mtimeMs', 'ctimeMs', 'birthtimeMs', 'atimeNs', 'mtimeNs', 'ctimeNs', 'birthtimeNs']
const KINDS = ['isFile', 'isDirectory', 'isBlockDevice', 'isCharacterDevice', 'isSymbolicLink', 'isFIFO', 'isSocket']

;(async () => {
  const out = {}
  for (const p of process.argv.slice(3)) {
    const fh = await od.open(p, 'r', { direct: 'prefer' })
    try {
      const shape = (s) => {
        const o = {}
        for (const k of FIELDS) if (s[k] !== undefined) o[k] = String(s[k])
        for (const k of ['atime', 'mtime', 'ctime', 'birthtime']) o[k] = String(s[k].getTime())
        for (const k of KINDS) o[k] = String(s[k]())
        return o
      }
      out[p] = { number: shape(await fh.stat()), bigint: shape(await fh.stat({ bigint: true })) }
    } finally {
      await fh.close()
    }
  }
  console.log(`RESULT ${JSON.stringify(out)}`)
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
