// Which io_uring opcodes reads/writes of registered buffers go as: READ_FIXED / WRITE_FIXED on a
// file on a block device (the kernel would pin each op's pages otherwise), plain READ / WRITE on
// tmpfs (nothing to pin: the kernel copies, and the fixed-buffer import only costs). Observed
// through the kernel's io_uring:io_uring_submit_req tracepoint, in a trace instance of this
// test's own (so nothing global is touched), filtered to this process's JS thread.
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

import { open } from '../dist/index.js'

const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const TRACING = '/sys/kernel/tracing'
const disk = fs.mkdtempSync('/var/tmp/odirect-regfix-')
const shm = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/odirect-regfix-') : undefined
test.after.always(() => {
  fs.rmSync(disk, { recursive: true, force: true })
  if (shm !== undefined) fs.rmSync(shm, { recursive: true, force: true })
})

/** Runs `fn` with io_uring_submit_req traced for this process; returns the opcodes submitted. */
async function opcodes(fn: () => Promise<void>): Promise<string[]> {
  const inst = fs.mkdtempSync(path.join(TRACING, 'instances', `odirect-regfix-${process.pid}-`))
  try {
    const ev = path.join(inst, 'events', 'io_uring', 'io_uring_submit_req')
    fs.writeFileSync(path.join(ev, 'filter'), `common_pid == ${process.pid}`)
    fs.writeFileSync(path.join(ev, 'enable'), '1')
    try {
      await fn()
    } finally {
      fs.writeFileSync(path.join(ev, 'enable'), '0')
    }
    const trace = fs.readFileSync(path.join(inst, 'trace'), 'utf8')
    return [...trace.matchAll(/opcode (\w+)/g)].map((m) => m[1])
  } finally {
    fs.rmdirSync(inst)
  }
}

function tracing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root for tracefs'
  if (!fs.existsSync(path.join(TRACING, 'events', 'io_uring', 'io_uring_submit_req'))) return `no io_uring tracepoints under ${TRACING}`
  if (!fs.existsSync(path.join(TRACING, 'instances'))) return 'tracefs has no instances directory'
  return undefined
}
const TRACE_WHY = tracing()

for (const [where, dir, expected] of [
  ['a file on a block device (ext4 /var/tmp)', disk, ['WRITE_FIXED', 'READ_FIXED']],
  ['a tmpfs file', shm, ['WRITE', 'READ']],
] as const) {
  const why = TRACE_WHY ?? (dir === undefined ? 'no /dev/shm' : undefined)
  const title = `registered buffers on ${where} go to io_uring as ${expected.join(' / ')}${why ? ` (skipped: ${why})` : ''}`
  if (why !== undefined) console.log(`skipped: ${title}`)
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    if (dir === undefined) return t.fail('no directory')
    const fh = await open(path.join(dir, 'f.bin'), 'w+', { backend: BACKEND })
    try {
      if (fh.backend !== 'io_uring' || !fh.direct) {
        // Only io_uring names buffers by index; elsewhere they are mlock'ed, nothing to observe.
        t.log(`backend ${fh.backend}, direct ${fh.direct}: no fixed buffers to observe`)
        const reg = fh.registerBuffers(2, 4096)
        reg.buffers[0].fill(7)
        t.is((await fh.write(reg.buffers[0], { position: 0 })).bytesWritten, 4096)
        t.is((await fh.read(reg.buffers[1], { position: 0 })).bytesRead, 4096)
        t.true(reg.buffers[1].every((x) => x === 7))
        return
      }
      const reg = fh.registerBuffers(2, 4096)
      reg.buffers[0].fill(9)
      const seen = await opcodes(async () => {
        t.is((await fh.write(reg.buffers[0], { position: 4096 })).bytesWritten, 4096)
        t.is((await fh.read(reg.buffers[1], { position: 4096 })).bytesRead, 4096)
      })
      t.true(reg.buffers[1].every((x) => x === 9), 'the bytes written are read back')
      t.deepEqual(
        seen.filter((o) => /^(READ|WRITE)/.test(o)),
        [...expected],
        `opcodes submitted: ${seen.join(', ')}`,
      )
      reg.unregister()
    } finally {
      await fh.close()
    }
  })
}

// A native batch (typed readMany / writeMany) over registered memory goes fixed on tmpfs too: its
// region spans many pages, and the io-wq worker copies through the fixed buffer's kernel mapping
// for less than through the user mapping (crates/napi/src/batch.rs fixed_on_copy).
{
  const why = TRACE_WHY ?? (shm === undefined ? 'no /dev/shm' : undefined)
  const title = `a typed batch over registered buffers on a tmpfs file goes to io_uring as WRITE_FIXED / READ_FIXED${why ? ` (skipped: ${why})` : ''}`
  if (why !== undefined) console.log(`skipped: ${title}`)
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    const fh = await open(path.join(shm as string, 'batch.bin'), 'w+', { backend: BACKEND })
    try {
      const n = 8
      const reg = fh.registerBuffers(2, n * 4096)
      const [src, dst] = reg.buffers
      for (let i = 0; i < n; i++) src.fill(i + 1, i * 4096, (i + 1) * 4096)
      const ops = (memory: Buffer) => ({ memory, offsets: new Uint32Array(n).map((_, i) => i * 4096), lengths: new Uint32Array(n).fill(4096), positions: new Float64Array(n).map((_, i) => (n - 1 - i) * 4096) })
      const seen = await opcodes(async () => {
        t.deepEqual([...(await fh.writeMany(ops(src)))], new Array<number>(n).fill(4096))
        t.deepEqual([...(await fh.readMany(ops(dst)))], new Array<number>(n).fill(4096))
      })
      t.true(dst.equals(src), 'the bytes written are read back')
      const rw = seen.filter((o) => /^(READ|WRITE)/.test(o))
      if (fh.backend !== 'io_uring' || !fh.direct) {
        t.log(`backend ${fh.backend}, direct ${fh.direct}: no fixed buffers to observe`)
        t.deepEqual(rw, [])
      } else t.deepEqual(rw, [...new Array<string>(n).fill('WRITE_FIXED'), ...new Array<string>(n).fill('READ_FIXED')], `opcodes submitted: ${seen.join(', ')}`)
      reg.unregister()
    } finally {
      await fh.close()
    }
  })
}
