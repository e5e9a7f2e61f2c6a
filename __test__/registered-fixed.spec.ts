// Which io_uring opcodes reads/writes of registered buffers go as: READ_FIXED / WRITE_FIXED on a
// file on a block device (the kernel would pin each op's pages otherwise) and on tmpfs too
// (nothing to pin there, but the io-wq worker copies through the fixed buffer's kernel mapping
// for less: crates/napi/src/pins.rs fixed_on_copy); plain READ / WRITE on tmpfs with
// ODIRECT_FIXED_ON_COPY=0 (a child process: the switch is read once). Observed through the
// kernel's io_uring:io_uring_submit_req tracepoint, in a trace instance of this test's own (so
// nothing global is touched), filtered to the process that submits.
// A lone small op on tmpfs is made inline by default (pread/pwrite, inline-tmpfs.spec) and never
// reaches the ring: turned off here (and in the child, which inherits it) to see the opcodes.
process.env.ODIRECT_INLINE_TMPFS = '0'

import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { open } from '../dist/index.js'
import { childLines } from './helpers/child-lines.js'
import { traceEvent, tracefsReason } from './helpers/tracefs.ts'

const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'index.js')
const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const disk = fs.mkdtempSync('/var/tmp/odirect-regfix-')
const shm = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/odirect-regfix-') : undefined
test.after.always(() => {
  fs.rmSync(disk, { recursive: true, force: true })
  if (shm !== undefined) fs.rmSync(shm, { recursive: true, force: true })
})

/** Runs `fn` with io_uring_submit_req traced for process `pid` (this one by default); returns the opcodes submitted. */
async function opcodes(fn: () => Promise<void>, pid = process.pid): Promise<string[]> {
  const trace = await traceEvent('io_uring/io_uring_submit_req', pid, fn)
  return [...trace.matchAll(/opcode (\w+)/g)].map((m) => m[1])
}

function tracing(): string | undefined {
  return tracefsReason('io_uring_submit_req')
}
const TRACE_WHY = tracing()

for (const [where, dir, expected] of [
  ['a file on a block device (ext4 /var/tmp)', disk, ['WRITE_FIXED', 'READ_FIXED']],
  ['a tmpfs file', shm, ['WRITE_FIXED', 'READ_FIXED']],
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

// ODIRECT_FIXED_ON_COPY=0 (the A/B switch, read once: a child process) sends single ops on
// registered memory on tmpfs as plain WRITE / READ. The child opens and registers, says `ready`,
// and makes its write + read once told to on stdin; this process traces the child's pid meanwhile.
{
  const why = TRACE_WHY ?? (shm === undefined ? 'no /dev/shm' : undefined)
  const title = `ODIRECT_FIXED_ON_COPY=0: registered buffers on a tmpfs file go to io_uring as WRITE / READ${why ? ` (skipped: ${why})` : ''}`
  if (why !== undefined) console.log(`skipped: ${title}`)
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    const script = `
      const { open } = require(${JSON.stringify(DIST)})
      ;(async () => {
        const fh = await open(process.argv[1], 'w+', { backend: process.argv[2] })
        const reg = fh.registerBuffers(2, 4096)
        reg.buffers[0].fill(5)
        process.stdout.write('ready ' + fh.backend + ' ' + fh.direct + '\\n')
        await new Promise((resolve) => process.stdin.once('data', resolve))
        const w = (await fh.write(reg.buffers[0], { position: 4096 })).bytesWritten
        const r = (await fh.read(reg.buffers[1], { position: 4096 })).bytesRead
        process.stdout.write('done ' + w + ' ' + r + ' ' + reg.buffers[1].every((x) => x === 5) + '\\n')
        reg.unregister()
        await fh.close()
        process.stdin.destroy()
      })()`
    const { child, line, exited, err: stderr } = childLines(process.execPath, ['-e', script, path.join(shm as string, 'plain.bin'), BACKEND], { ...process.env, ODIRECT_FIXED_ON_COPY: '0' }, true)
    const ready = (await line('ready')).split(' ')
    if (ready[1] !== 'io_uring' || ready[2] !== 'true') {
      child.stdin?.end('go\n')
      t.log(`backend ${ready[1]}, direct ${ready[2]}: no fixed buffers to observe`)
      t.is(await exited, 0, stderr())
      return
    }
    let done = ''
    const seen = await opcodes(async () => {
      child.stdin?.write('go\n')
      done = await line('done')
    }, child.pid)
    t.is(await exited, 0, stderr())
    t.is(done, 'done 4096 4096 true')
    t.deepEqual(
      seen.filter((o) => /^(READ|WRITE)/.test(o)),
      ['WRITE', 'READ'],
      `opcodes submitted: ${seen.join(', ')}`,
    )
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
