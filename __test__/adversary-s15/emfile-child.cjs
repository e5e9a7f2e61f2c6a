// Run under a small RLIMIT_NOFILE (prlimit --nofile=N:N), backend from ODIRECT_BACKEND:
// `<odirect module> <dir>`. Starts the engine (one read, all descriptors free: its start under
// EMFILE is emfile-first.cjs's), then, round by round, fills the descriptor table with /dev/null
// descriptors, frees `free` of them (0..8) and runs one odirect form (open+read, readFile,
// writeFile, writeFile atomic, copyFile, read stream, write stream). Each must succeed with the right bytes or fail typed
// (EMFILE, a DirectIoError with a hint); once the fillers are closed, no descriptor it opened may
// stay open and no temp file may be left; a last round with every descriptor free must work.
// Prints one line: RESULT {json}.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { fillFds } = require('./fill-fds.cjs')

const [mod, dir] = process.argv.slice(2)
const od = require(mod)

const pat = (i) => (i * 131 + (i >>> 11) + 7) & 0xff
function data(n, salt = 0) {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (pat(i) + salt) & 0xff
  return b
}
const SIZE = 1024 * 1024 + 123
const src = path.join(dir, 'src')
fs.writeFileSync(src, data(SIZE))
const want = data(SIZE)
const old = data(5000, 9)

/** This process's descriptors: number -> what it names. */
function fdTable() {
  const t = new Map()
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      t.set(fd, fs.readlinkSync(`/proc/self/fd/${fd}`))
    } catch {
      // the readdir's own descriptor
    }
  }
  return t
}
const temps = () => fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))

function describe(e) {
  return {
    ok: false,
    code: e && e.code,
    direct: e instanceof od.DirectIoError,
    hint: !!(e && typeof e.hint === 'string' && e.hint.length > 0),
    message: e && String(e.message).slice(0, 200),
  }
}

async function drain(stream) {
  const parts = []
  for await (const c of stream) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

const forms = {
  async openRead() {
    const fh = await od.open(src, 'r')
    try {
      const b = fh.alloc(SIZE + 4096)
      const { bytesRead } = await fh.read(b, 0, b.length, 0)
      return Buffer.from(b.subarray(0, bytesRead))
    } finally {
      await fh.close()
    }
  },
  readFile: () => od.readFile(src),
  async writeFile(dst) {
    await od.writeFile(dst, want)
    return fs.readFileSync(dst)
  },
  async writeAtomic(dst) {
    await od.writeFile(dst, want, { atomic: true })
    return fs.readFileSync(dst)
  },
  async copyFile(dst) {
    await od.copyFile(src, dst)
    return fs.readFileSync(dst)
  },
  readStream: () => drain(od.createReadStream(src)),
  async writeStream(dst) {
    const ws = od.createWriteStream(dst)
    await new Promise((resolve, reject) => {
      ws.on('error', reject)
      ws.on('finish', resolve)
      ws.write(want.subarray(0, 300000))
      ws.end(want.subarray(300000))
    })
    await new Promise((resolve) => (ws.closed ? resolve() : ws.on('close', resolve)))
    return fs.readFileSync(dst)
  },
}

async function main() {
  const out = { rounds: [], engine: null }
  const forms_ = Object.keys(forms)
  await forms.openRead()
  let n = 0
  for (const form of forms_) {
    for (let free = 0; free <= 8; free++) {
      const dst = path.join(dir, `dst-${n++}`)
      const writes = form !== 'openRead' && form !== 'readFile' && form !== 'readStream'
      if (writes) fs.writeFileSync(dst, old)
      await new Promise((r) => setImmediate(r))
      const before = fdTable()
      if (process.env.S15_TRACE) fs.writeSync(2, `round ${form} ${free}\n`)
      const fillers = fillFds(free)
      let r
      try {
        const got = await forms[form](dst)
        r = { ok: true, right: Buffer.compare(got, want) === 0, len: got.length }
      } catch (e) {
        r = describe(e)
      }
      for (const fd of fillers) fs.closeSync(fd)
      // Let streams' and handles' closes that were already started finish.
      for (let i = 0; i < 3; i++) await new Promise((res) => setImmediate(res))
      const after = fdTable()
      const leaked = []
      for (const [fd, what] of after) if (!before.has(fd) || before.get(fd) !== what) leaked.push(`${fd}:${what}`)
      r.form = form
      r.free = free
      r.leaked = leaked
      r.temps = temps()
      if (writes && !r.ok) {
        const now = fs.existsSync(dst) ? fs.readFileSync(dst) : null
        // A failed whole-file write leaves the old file or the new one, nothing in between
        // (writeFile without atomic may leave a prefix: recorded, judged by the spec).
        r.dst = now === null ? 'absent' : Buffer.compare(now, old) === 0 ? 'old' : Buffer.compare(now, want) === 0 ? 'new' : `other:${now.length}`
      }
      out.rounds.push(r)
    }
  }
  // Everything free: each form works.
  out.final = {}
  for (const form of forms_) {
    try {
      const got = await forms[form](path.join(dir, `final-${form}`))
      out.final[form] = Buffer.compare(got, want) === 0 ? 'right' : 'wrong'
    } catch (e) {
      out.final[form] = describe(e)
    }
  }
  out.engine = od.engineInfo()
  const fh = await od.open(src, 'r')
  out.backend = fh.backend
  await fh.close()
  console.log('RESULT ' + JSON.stringify(out))
}
main().catch((e) => {
  console.log('RESULT ' + JSON.stringify({ crash: String(e && e.stack) }))
  process.exitCode = 1
})
