// `<odirect module> <dir> <rounds>`, backend from ODIRECT_BACKEND. Prints "READY" once its
// SIGUSR2 handler is installed (the spec then starts a storm of SIGUSR2 with SIGSTOP/SIGCONT
// pairs at this process), and from the storm's first signal runs copyFile, writeFile (plain and atomic), a hashed read stream,
// a write stream, readMany (array and typed) and fh.read/write `rounds` times, checking every
// byte. Prints RESULT {json}: each form's failures (error codes, wrong bytes) and how many
// signals arrived.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')

const [mod, dir, roundsArg] = process.argv.slice(2)
const od = require(mod)
let signals = 0
let stormStarted
const storming = new Promise((r) => (stormStarted = r))
process.on('SIGUSR2', () => {
  if (signals++ === 0) stormStarted()
})

const MiB = 1024 * 1024
const data = crypto.randomBytes(24 * MiB + 777)
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex')
const want = sha(data)
const src = path.join(dir, 'src')
fs.writeFileSync(src, data)

const failures = []
async function check(form, fn) {
  try {
    const ok = await fn()
    if (ok !== true) failures.push({ form, wrong: String(ok) })
  } catch (e) {
    failures.push({ form, code: e && e.code, message: String(e && e.message).slice(0, 200) })
  }
}

async function round(i) {
  const d = (n) => path.join(dir, `${n}-${i % 2}`)
  await check('copyFile', async () => {
    await od.copyFile(src, d('copy'))
    return sha(fs.readFileSync(d('copy'))) === want
  })
  await check('writeFile', async () => {
    await od.writeFile(d('wf'), data)
    return sha(fs.readFileSync(d('wf'))) === want
  })
  await check('writeFile atomic', async () => {
    await od.writeFile(d('wfa'), data, { atomic: true })
    return sha(fs.readFileSync(d('wfa'))) === want
  })
  await check('readFile', async () => sha(await od.readFile(src)) === want)
  await check('read stream', async () => {
    const h = crypto.createHash('sha256')
    for await (const c of od.createReadStream(src)) h.update(c)
    return h.digest('hex') === want
  })
  await check('write stream', async () => {
    const ws = od.createWriteStream(d('ws'))
    await new Promise((res, rej) => {
      ws.on('error', rej)
      ws.on('close', res)
      for (let o = 0; o < data.length; o += 3 * MiB + 5) ws.write(data.subarray(o, o + 3 * MiB + 5))
      ws.end()
    })
    return sha(fs.readFileSync(d('ws'))) === want
  })
  await check('readMany + fh.read/write', async () => {
    const fh = await od.open(src, 'r')
    const out = await od.open(d('many'), 'w+')
    try {
      const bufs = Array.from({ length: 24 }, () => fh.alloc(MiB))
      await fh.readMany(bufs.map((buffer, k) => ({ buffer, position: k * MiB })))
      for (let k = 0; k < 24; k++) if (Buffer.compare(bufs[k], data.subarray(k * MiB, (k + 1) * MiB)) !== 0) return `readMany op ${k}`
      const mem = fh.alloc(24 * MiB)
      const offsets = new Uint32Array(24)
      const lengths = new Uint32Array(24).fill(MiB)
      const positions = new Float64Array(24)
      for (let k = 0; k < 24; k++) {
        offsets[k] = k * MiB
        positions[k] = (23 - k) * MiB
      }
      await fh.readMany({ memory: mem, offsets, lengths, positions })
      for (let k = 0; k < 24; k++) if (Buffer.compare(mem.subarray(k * MiB, (k + 1) * MiB), data.subarray((23 - k) * MiB, (24 - k) * MiB)) !== 0) return `typed op ${k}`
      await out.writeMany(bufs.map((buffer, k) => ({ buffer, position: k * MiB })))
      const one = fh.alloc(4096)
      for (let k = 0; k < 64; k++) {
        const pos = ((k * 7919) % 6000) * 4096
        const { bytesRead } = await fh.read(one, 0, 4096, pos)
        if (bytesRead !== 4096 || Buffer.compare(one, data.subarray(pos, pos + 4096)) !== 0) return `read at ${pos}`
        const { bytesWritten } = await out.write(one, 0, 4096, pos)
        if (bytesWritten !== 4096) return `write at ${pos}`
      }
    } finally {
      await fh.close()
      await out.close()
    }
    return sha(fs.readFileSync(d('many')).subarray(0, 24 * MiB)) === sha(data.subarray(0, 24 * MiB))
  })
}

async function main() {
  console.log('READY')
  // The run starts with the storm (its first signal), so every form meets it. A signal handler
  // does not keep the loop alive: an idle interval does until then (it never fires in practice).
  const alive = setInterval(() => {}, 1 << 30)
  await storming
  clearInterval(alive)
  const rounds = Number(roundsArg)
  for (let i = 0; i < rounds; i++) await round(i)
  const fh = await od.open(src, 'r')
  const backend = fh.backend
  await fh.close()
  console.log('RESULT ' + JSON.stringify({ failures, signals, backend }))
}
main().catch((e) => {
  console.log('RESULT ' + JSON.stringify({ crash: String(e && e.stack) }))
  process.exitCode = 1
})
