// Pinned buffers: io_uring registered buffers (VmPin) or mlock (VmLck), released on unregister and
// close, and a typed error naming RLIMIT_MEMLOCK when the limit is too low.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { DirectIoError, open } from '../dist/index.js'

const __dirname = path.dirname(fileURLToPath(import.meta.url))
const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const dir = fs.mkdtempSync('/var/tmp/odirect-pin-')
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }))

function status(field: 'VmPin' | 'VmLck'): number {
  const m = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp(`${field}:\\s+(\\d+) kB`))
  return m ? Number(m[1]) * 1024 : 0
}

// Serial: it reads the process's VmPin/VmLck, which any concurrent registration would move.
test.serial('registerBuffers pins the pages, I/O through them works, unregister and close release them', async (t) => {
  const fh = await open(path.join(dir, 'pin.bin'), 'w+', { backend: BACKEND })
  const field = fh.backend === 'io_uring' ? 'VmPin' : 'VmLck'
  const before = status(field)
  const reg = fh.registerBuffers(32, 65536)
  t.is(reg.buffers.length, 32)
  t.true(status(field) - before >= 32 * 65536, `${field} grew by ${status(field) - before}`)
  reg.buffers[3].fill(0x33)
  t.is((await fh.write(reg.buffers[3], { position: 65536 })).bytesWritten, 65536)
  t.is((await fh.read(reg.buffers[4], { position: 65536 })).bytesRead, 65536)
  t.true(reg.buffers[4].every((x) => x === 0x33))
  // A view inside a registered buffer also works.
  t.is((await fh.read(reg.buffers[5].subarray(4096, 8192), { position: 65536 })).bytesRead, 4096)
  const many = await fh.readMany(reg.buffers.slice(0, 8).map((buffer, i) => ({ buffer, position: i * 65536 })))
  t.is(many.length, 8)
  const kept = reg.buffers[4]
  reg.unregister()
  t.false(reg.registered)
  t.is(reg.buffers.length, 0, 'unregister() drops the buffers list')
  t.true(status(field) - before < 65536, 'released on unregister')
  // A buffer kept from before is still an ordinary aligned buffer after unregistering.
  t.is((await fh.read(kept, { position: 65536 })).bytesRead, 65536)
  fh.registerBuffers(16, 65536)
  t.true(status(field) - before >= 16 * 65536)
  await fh.close()
  t.true(status(field) - before < 65536, 'released on close')
  t.throws(() => fh.registerBuffers(1, 4096), { instanceOf: DirectIoError, code: 'ERR_ODIRECT_CLOSED' })
})

test('registerBuffers validates its arguments', async (t) => {
  await using fh = await open(path.join(dir, 'args.bin'), 'w+', { backend: BACKEND })
  t.throws(() => fh.registerBuffers(0, 4096), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => fh.registerBuffers(1, 0), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => fh.registerBuffers(1.5, 4096), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => fh.registerBuffers(1, 2 ** 31), { code: 'ERR_OUT_OF_RANGE' })
})

const hasTools = spawnSync('sh', ['-c', 'command -v prlimit && command -v setpriv']).status === 0
const memlockTest = (title: string, body: (t: ExecutionContext) => void): void => {
  if (!hasTools) console.log(`skipping "${title}": prlimit/setpriv (util-linux) not installed`)
  ;(hasTools ? test : test.skip)(title, body)
}

/**
 * Runs `body` (the text of an async function of an open FileHandle `fh` on this backend, whose
 * result is printed as JSON; a thrown error prints its code, message and hint) in a child node
 * under an RLIMIT_MEMLOCK of `limit` bytes, without CAP_IPC_LOCK.
 */
function underMemlock(t: ExecutionContext, limit: number, file: string, body: string): unknown {
  const script = `
    const { open } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
    open(${JSON.stringify(path.join(dir, file))}, 'w+', { backend: ${JSON.stringify(BACKEND)} }).then(async (fh) => {
      try { console.log(JSON.stringify(await (${body})(fh))) }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, hint: e.hint })) }
      return fh.close()
    })`
  // Root has CAP_IPC_LOCK, which lifts the limit: drop it so the limit applies, as for a normal user.
  const r = spawnSync('prlimit', [`--memlock=${limit}:${limit}`, 'setpriv', '--inh-caps=-ipc_lock', '--bounding-set=-ipc_lock', process.execPath, '-e', script], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  return JSON.parse(r.stdout.trim())
}

memlockTest('a too-low RLIMIT_MEMLOCK gives ERR_ODIRECT_MEMLOCK naming the limit and the fix', (t) => {
  const out = underMemlock(t, 65536, 'lim.bin', '(fh) => { fh.registerBuffers(64, 1 << 20); return "NO ERROR" }') as { code: string; message: string; hint: string }
  t.is(out.code, 'ERR_ODIRECT_MEMLOCK')
  t.regex(out.message, /RLIMIT_MEMLOCK/)
  t.regex(out.hint, /ulimit -l/)
})

// odirect's memory from 32 KiB up is on 2 MiB transparent huge pages, and io_uring charges a
// registered buffer's whole huge page to RLIMIT_MEMLOCK: registerBuffers takes small pages when
// that charge does not fit, so what fit before huge pages still fits.
memlockTest('under a 1 MiB RLIMIT_MEMLOCK, registered buffers that fit on small pages register and work', (t) => {
  const out = underMemlock(
    t,
    1 << 20,
    'small.bin',
    `async (fh) => {
      const got = []
      for (const [count, size] of [[1, 65536], [4, 131072]]) {
        const reg = fh.registerBuffers(count, size)
        reg.buffers.forEach((b, i) => b.fill(0x10 * count + i + 1))
        for (const [i, b] of reg.buffers.entries()) await fh.write(b, { position: i * size })
        for (const b of reg.buffers) b.fill(0)
        // Read each buffer's bytes back into another one (the last into the first).
        for (const [i, b] of reg.buffers.entries()) await fh.read(b, { position: ((i + 1) % count) * size })
        got.push(reg.buffers.map((b, i) => b.every((x) => x === 0x10 * count + ((i + 1) % count) + 1) && b.length === size))
      }
      let tooBig
      try { fh.registerBuffers(2, 1 << 20); tooBig = 'NO ERROR' }
      catch (e) { tooBig = { code: e.code, message: e.message, hint: e.hint } }
      return { backend: fh.backend, got, tooBig }
    }`,
  ) as { backend: string; got: boolean[][]; tooBig: { code: string; message: string; hint: string } }
  t.deepEqual(out.got, [[true], [true, true, true, true]], JSON.stringify(out))
  // 2 MiB do not fit in 1 MiB on any pages: the typed error.
  t.is(out.tooBig.code, 'ERR_ODIRECT_MEMLOCK', JSON.stringify(out))
  t.regex(out.tooBig.message, /RLIMIT_MEMLOCK \(locked-memory limit, 1048576 bytes\)/)
  if (out.backend === 'io_uring') t.regex(out.tooBig.hint, /per whole 2 MiB page/)
})
