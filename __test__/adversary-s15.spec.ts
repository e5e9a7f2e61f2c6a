// Adversary pass of the fifteenth session, at the process's edges (earlier passes covered data
// changing under reads, odd positions and buffers, full disks, RLIMIT_FSIZE, worker deaths):
// 1. EMFILE (`prlimit --nofile`): with the descriptor table full but for 0-8 free slots, every
//    whole-file and stream form, and the engine's own start on the first call, either works with
//    the right bytes or fails typed (EMFILE, DirectIoError with a hint); nothing it opened stays
//    open, no temp file is left, the old destination stays whole, and all works once freed.
//    Found: the engine's start failing EMFILE came out as an uncoded GenericFailure (fixed in
//    src/open.ts); a ring made while its IORING_SQ_TASKRUN probe had no descriptor lost a lone
//    disk op's completion, so copyFile hung (fixed in crates/core/src/io/ring.rs);
// 2. CLOEXEC: a program spawned while copyFile, both streams and readMany run on each backend
//    inherits none of the engine's descriptors (ring, eventfds, epoll, pipes) nor any file;
// 3. a signal storm (SIGUSR2 with a JS handler, SIGSTOP/SIGCONT) from another process during every
//    form on each backend: no EINTR surfaces, data whole;
// 4. reads into and writes from slices of Node's Buffer pool and odd-offset views (bounced): exactly
//    their bytes, nothing around them;
// 5. a memory cgroup far smaller than the file: streams, copyFile and a pipeline complete, no OOM kill;
// 6. an unprivileged user with the default RLIMIT_MEMLOCK: Quick start, registered buffers, the CLI;
// 7. positions past 4 GiB to ext4's and tmpfs's limits by every positioned form: the exact offset;
// 8. a source appended to under copyFile, cp, readFile, a read stream (a prefix of the final file),
//    or renamed over mid-copy by copyFile (the old file whole);
// Every check waits on an event (a promise, a child's exit); nothing is timed.
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { stripVTControlCharacters } from 'node:util'

import test from 'ava'

import * as od from '../dist/index.js'
import { childLines } from './helpers/child-lines.ts'
import { skipReason } from './helpers/fixtures.ts'
import { childRunner } from './helpers/child-result.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { testIf } from './helpers/skips.ts'

const { pattern } = createRequire(import.meta.url)('./adversary-s15/pattern.cjs') as { pattern: (off: number, n: number) => Buffer }

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const kids = path.join(here, 'adversary-s15')
const scratch = scratchDirs('s15')

const runChildIn = childRunner(kids)
/** Runs `node <script> args` (under `prefix`, e.g. prlimit) and resolves with its RESULT line's JSON. */
const runChild = <T>(prefix: string[], script: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<T> => runChildIn<T>(script, args, { env, argv: [...prefix, process.execPath] })

// ---------------------------------------------------------------------------------------
// 1. EMFILE

interface EmfileRound {
  form: string
  free: number
  ok: boolean
  right?: boolean
  code?: string
  direct?: boolean
  hint?: boolean
  message?: string
  leaked: string[]
  temps: string[]
  dst?: string
}

const PRLIMIT = skipReason(['cmd:prlimit'])
const withBackend = (backend: string): NodeJS.ProcessEnv => ({ ...process.env, ODIRECT_BACKEND: backend })

for (const backend of ['io_uring', 'aio', 'threadpool']) {
  testIf(PRLIMIT, `EMFILE [${backend}]: with 0-8 descriptors free every form works or fails EMFILE typed, leaks nothing, leaves no temp file, keeps the old destination; all works once freed`, async (t) => {
    const dir = scratch()
    const o = await runChild<{ rounds: EmfileRound[]; final: Record<string, unknown>; backend: string }>(['prlimit', '--nofile=64:64'], 'emfile-child.cjs', [dist, dir], withBackend(backend))
    t.is(o.backend, backend)
    for (const r of o.rounds) {
      const what = `${r.form} with ${r.free} free: ${JSON.stringify(r)}`
      if (r.ok) t.true(r.right, what)
      else {
        t.is(r.code, 'EMFILE', what)
        t.true(r.direct && r.hint, what)
        if (r.dst !== undefined) t.true(r.dst === 'old' || r.dst === 'new', what)
      }
      t.deepEqual(r.leaked, [], what)
      t.deepEqual(r.temps, [], what)
    }
    // Some rounds must really have met the limit, and some must have got through it.
    t.true(o.rounds.some((r) => !r.ok))
    t.true(o.rounds.some((r) => r.ok))
    for (const [form, v] of Object.entries(o.final)) t.is(v, 'right', form)
  })
}

// A ring made while only 3 descriptors were free (the file, the eventfd, the ring: not the pipe its
// setup uses to check that the kernel sets IORING_SQ_TASKRUN, crates/core/src/io/ring.rs
// taskrun_flag_works) ran with taskrun_flag = false for the engine's whole life, and on that path
// a lone disk op's completion (copyFile's last block) was never delivered: with DEFER_TASKRUN the
// kernel signals the eventfd only when its task-work list turns non-empty, and without the flag
// `pending()` cannot see task work queued between the wake-up's GETEVENTS and the eventfd's reset.
// The process hung in epoll_wait (after 4-136 copies in every run). Fixed: without a pipe the probe
// assumes the flag (the kernel accepted IORING_SETUP_TASKRUN_FLAG; every kernel that does sets it).
testIf(PRLIMIT, 'EMFILE at the ring\'s setup (no descriptor for its IORING_SQ_TASKRUN probe): copyFile after the descriptors are freed completes, 400 times', async (t) => {
  const dir = scratch()
  const o = await runChild<{ first: string; done: number; right: number }>(['prlimit', '--nofile=40:40'], 'emfile-hang.cjs', [dist, dir, '3', '400'])
  t.is(o.first, 'io_uring')
  t.is(o.done, 400)
  t.is(o.right, 400)
})

interface FirstResult {
  k: number
  first: { ok: boolean; backend?: string; code?: string; direct?: boolean; hint?: boolean; message?: string }
  after: string[]
  uring: number
  eventfd: number
}

testIf(PRLIMIT, "EMFILE on a process's first call (the engine's start): fails EMFILE typed or works; once freed the engine works and holds what an unlimited one holds", async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, Buffer.alloc(100_000, 3))
  const free = await runChild<FirstResult>([], 'emfile-first.cjs', [dist, '99', src])
  t.true(free.first.ok, JSON.stringify(free))
  let failed = 0
  // 0: the eventfd fails; 1: the eventfd is made, the file's open fails; 2: the ring's setup fails
  // (the file goes to aio). 3 and 4 (the ring made without its setup probe) are the case below.
  for (const k of [0, 1, 2]) {
    const r = await runChild<FirstResult>(['prlimit', '--nofile=40:40'], 'emfile-first.cjs', [dist, String(k), src])
    const what = `${k} free: ${JSON.stringify(r)}`
    if (!r.first.ok) {
      failed++
      t.is(r.first.code, 'EMFILE', what)
      t.true(r.first.direct && r.first.hint, what)
    } else t.is(r.first.backend?.split(':')[1], '8192', what)
    // Freed: the next two calls work on the backend an unlimited process uses.
    t.deepEqual(r.after, [free.first.backend, free.first.backend], what)
    t.is(r.uring, free.uring, what)
    t.is(r.eventfd, free.eventfd, what)
  }
  t.true(failed > 0)
})

// ---------------------------------------------------------------------------------------
// 2. CLOEXEC

interface CloexecResult {
  base: string[]
  seen: string[][]
  n: number
  backend: string
}

/** "fd kind" without the inode numbers that differ between children (pipe:[123] -> pipe). */
const kinds = (fds: string[]): string[] => fds.map((l) => l.replace(/:\[\d+\]$/, '')).sort()

for (const backend of ['auto', 'aio', 'threadpool']) {
  test(`CLOEXEC [${backend}]: a program spawned with copyFile, both streams and readMany in flight inherits no engine descriptor and no file`, async (t) => {
    const dir = scratch()
    const o = await runChild<CloexecResult>([], 'cloexec-child.cjs', [dist, dir], backend === 'auto' ? process.env : withBackend(backend))
    t.is(o.n, 32 * 1024 * 1024)
    if (backend !== 'auto') t.is(o.backend, backend)
    for (const s of o.seen) {
      t.deepEqual(kinds(s), kinds(o.base), JSON.stringify(o))
      for (const l of s) t.notRegex(l, /io_uring|eventfd|eventpoll|\[aio\]|odirect-s15/, l)
    }
  })
}

// ---------------------------------------------------------------------------------------
// 3. A signal storm: another process sends SIGUSR2 (a JS handler installed) as fast as it can,
//    with a SIGSTOP/SIGCONT pair every 500, for the whole run of every form on each backend:
//    no EINTR (or any error) surfaces, every byte is right.

for (const backend of ['io_uring', 'aio', 'threadpool']) {
  test(`signal storm [${backend}]: SIGUSR2 with a JS handler and SIGSTOP/SIGCONT during copyFile, writeFile, streams, readMany, read/write: no error, data whole`, async (t) => {
    const dir = scratch()
    const c = childLines(process.execPath, [path.join(kids, 'signal-child.cjs'), dist, dir, '2'], withBackend(backend))
    await c.line('READY')
    const storm = childLines(process.execPath, [path.join(kids, 'storm.cjs'), String(c.child.pid)], process.env)
    const line = await c.line('RESULT ')
    await Promise.all([c.exited, storm.exited])
    const o = JSON.parse(line.slice(7)) as { failures: unknown[]; signals: number; backend: string; crash?: string }
    t.is(o.crash, undefined, c.err())
    t.deepEqual(o.failures, [])
    t.is(o.backend, backend)
    // The child starts on the storm's first signal; the storm ends only when the child is gone.
    t.true(o.signals > 0, storm.err())
  })
}

// ---------------------------------------------------------------------------------------
// 4. Caller memory that odirect must bounce: slices of Node's shared Buffer pool
//    (Buffer.from('x'), allocUnsafe), DataView / Float64Array / Uint16Array / subarray views at
//    odd byte offsets. A read (read, readv, readMany) fills exactly its bytes, bytesRead of them
//    at EOF (never the zeros of the padded block past it); every other byte of the ArrayBuffer
//    stays as it was. A write from them writes exactly its bytes and leaves the memory as it was.

const memoryViews: [string, () => ArrayBufferView][] = [
  ['pool slice', () => new Uint8Array(Buffer.from('xyz').buffer)],
  ['allocUnsafe pool', () => new Uint8Array(Buffer.allocUnsafe(100).buffer)],
  ['DataView +3', () => new DataView(new ArrayBuffer(20_000), 3, 19_990)],
  ['Float64Array +8', () => new Float64Array(new ArrayBuffer(20_000), 8, 2400)],
  ['subarray +1', () => new Uint8Array(new ArrayBuffer(20_000)).subarray(1, 19_999)],
  ['Uint16Array +2', () => new Uint16Array(new ArrayBuffer(20_000), 2, 9000)],
]

test('caller memory: reads into pool slices and odd-offset views fill exactly their bytes (bytesRead at EOF), nothing around them; writes from them write exactly theirs', async (t) => {
  const dir = scratch()
  const f = path.join(dir, 'f')
  const N = 3 * 4096 + 100
  const data = Buffer.alloc(N)
  for (let i = 0; i < N; i++) data[i] = ((i * 7 + 3) & 0xff) || 1
  fs.writeFileSync(f, data)
  const fh = await od.open(f, 'r+')
  t.teardown(() => fh.close())
  const cases: [number, number][] = [[0, 512], [512, 4096], [0, 4096], [8192, 8192], [12_288, 4096], [12_288, 512], [4096, 1024], [16_384, 512]]
  let tried = 0
  for (const [name, make] of memoryViews) {
    for (const [pos, len] of cases) {
      for (const form of ['read', 'readv', 'readMany'] as const) {
        const whole = make()
        const all = new Uint8Array(whole.buffer)
        const off = 1
        const at = whole.byteOffset + off
        if (at + len > all.length) continue
        all.fill(0xee)
        const target = new Uint8Array(whole.buffer, at, len)
        let got: number
        if (form === 'read') got = (await fh.read(whole, off, len, pos)).bytesRead
        else if (form === 'readv') got = (await fh.readv([target], pos)).bytesRead
        else {
          await fh.readMany([{ buffer: target, position: pos }])
          got = Math.max(0, Math.min(len, N - pos))
        }
        const exp = Math.max(0, Math.min(len, N - pos))
        const what = `${name} ${form} ${len} at ${pos}`
        t.is(got, exp, what)
        let wrong = -1
        for (let i = 0; i < all.length && wrong < 0; i++) {
          const rel = i - at
          if (all[i] !== (rel >= 0 && rel < exp ? data[pos + rel] : 0xee)) wrong = i
        }
        t.is(wrong, -1, `${what}: byte ${wrong} of the ArrayBuffer`)
        tried++
      }
      // A write of `len` bytes from the same kind of memory, at `pos`, then read back.
      if (pos + len > N) continue
      const whole = make()
      const all = new Uint8Array(whole.buffer)
      const at = whole.byteOffset + 1
      if (at + len > all.length) continue
      for (let i = 0; i < all.length; i++) all[i] = (i * 13 + pos) & 0xff
      const before = Buffer.from(all)
      await fh.write(new Uint8Array(whole.buffer, at, len), 0, len, pos)
      t.deepEqual(Buffer.from(all), before, `${name} write: memory unchanged`)
      const back = fs.readFileSync(f)
      t.is(back.length, N)
      t.deepEqual(back.subarray(pos, pos + len), before.subarray(at, at + len), `${name} write ${len} at ${pos}`)
      t.deepEqual(back.subarray(0, pos), data.subarray(0, pos), `${name} write ${len} at ${pos}: before it`)
      t.deepEqual(back.subarray(pos + len), data.subarray(pos + len), `${name} write ${len} at ${pos}: after it`)
      // Restore the file for the next case.
      fs.writeFileSync(f, data)
    }
  }
  t.true(tried > 100)
})

// ---------------------------------------------------------------------------------------
// 5. A memory cgroup whose limit (128 MiB, swap included where v1 counts it) is well under the
//    file (320 MiB): read streams (Node, web), copyFile, read -> write pipeline and a write
//    stream run in a child placed in it complete with the right bytes, and nothing in the group
//    is OOM-killed (direct I/O charges no page cache; the streams' memory is bounded).

/** The memory cgroup root (v1 memory controller, or v2 with memory enabled), or undefined. */
function memoryCgroupRoot(): { dir: string; v: 1 | 2 } | undefined {
  if (fs.existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes')) return { dir: '/sys/fs/cgroup/memory', v: 1 }
  try {
    if (fs.readFileSync('/sys/fs/cgroup/cgroup.subtree_control', 'utf8').split(/\s+/).includes('memory')) return { dir: '/sys/fs/cgroup', v: 2 }
  } catch {
    // no cgroup v2 root with the memory controller
  }
  return undefined
}

const CGROUP = memoryCgroupRoot()
const CGROUP_REASON = process.getuid?.() !== 0 ? 'needs root' : CGROUP === undefined ? 'no memory cgroup (v1 memory controller or v2 with memory enabled)' : undefined

/** OOM kills counted in a memory cgroup (v1 memory.oom_control, v2 memory.events). */
function oomKills(cg: string, v: 1 | 2): number {
  const text = fs.readFileSync(path.join(cg, v === 1 ? 'memory.oom_control' : 'memory.events'), 'utf8')
  return Number(/^oom_kill (\d+)$/m.exec(text)?.[1] ?? 0)
}

testIf(CGROUP_REASON, 'memory cgroup of 128 MiB: streams, copyFile and a pipeline of a 320 MiB file complete with the right bytes, nothing OOM-killed', async (t) => {
  const root = CGROUP as { dir: string; v: 1 | 2 }
  const cg = fs.mkdtempSync(path.join(root.dir, `odirect-s15-${process.pid}-`))
  t.teardown(() => fs.rmdirSync(cg))
  const limit = 128 * 1024 * 1024
  if (root.v === 1) {
    fs.writeFileSync(path.join(cg, 'memory.limit_in_bytes'), String(limit))
    if (fs.existsSync(path.join(cg, 'memory.memsw.limit_in_bytes'))) fs.writeFileSync(path.join(cg, 'memory.memsw.limit_in_bytes'), String(limit))
  } else {
    fs.writeFileSync(path.join(cg, 'memory.max'), String(limit))
    if (fs.existsSync(path.join(cg, 'memory.swap.max'))) fs.writeFileSync(path.join(cg, 'memory.swap.max'), '0')
  }
  const dir = scratch()
  const src = path.join(dir, 'src')
  // 320 MiB of varied bytes, written from this process (outside the group), hashed as written.
  const h = createHash('sha256')
  const fd = fs.openSync(src, 'w')
  const chunk = Buffer.alloc(1024 * 1024)
  for (let m = 0; m < 320; m++) {
    for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((Math.imul(m * 262_144 + i / 4, 2_654_435_761) >>> 0), i)
    fs.writeSync(fd, chunk)
    h.update(chunk)
  }
  fs.closeSync(fd)
  const want = h.digest('hex')
  const before = oomKills(cg, root.v)
  const o = await runChild<{ out: Record<string, string>; want: string; size: number }>([], 'cgroup-child.cjs', [dist, cg, dir, src, want])
  t.is(o.size, 320 * 1024 * 1024)
  for (const [form, got] of Object.entries(o.out)) t.is(got, want, form)
  t.is(Object.keys(o.out).length, 5)
  t.is(oomKills(cg, root.v), before)
})

// ---------------------------------------------------------------------------------------
// 6. As an unprivileged user (uid/gid 65534, no groups) with the default 8 MiB RLIMIT_MEMLOCK, in
//    a project of its own that depends on odirect: the README's Quick start runs as pasted and
//    prints what it says; registered buffers within the limit work, past it fail
//    ERR_ODIRECT_MEMLOCK naming the limit; `odirect cp` and `odirect probe` work.

const NOBODY_REASON = process.getuid?.() !== 0 ? 'needs root (to become uid 65534)' : skipReason(['cmd:setpriv', 'cmd:prlimit'])

testIf(NOBODY_REASON, 'unprivileged user, 8 MiB RLIMIT_MEMLOCK: Quick start as pasted, registered buffers within and past the limit, odirect cp and probe', async (t) => {
  const dir = scratch()
  fs.chmodSync(dir, 0o755)
  fs.mkdirSync(path.join(dir, 'node_modules'))
  fs.symlinkSync(path.join(here, '..'), path.join(dir, 'node_modules', 'odirect'))
  const readme = fs.readFileSync(path.join(here, '..', 'README.md'), 'utf8')
  const quick = /## Quick start[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1]
  t.truthy(quick)
  fs.writeFileSync(path.join(dir, 'quickstart.mjs'), quick as string)
  fs.writeFileSync(
    path.join(dir, 'reg.mjs'),
    `import { open, DirectIoError } from 'odirect'
const fh = await open('reg.bin', 'w+')
const out = []
for (const [n, size] of [[2, 1 << 20], [4, 4 << 20]]) {
  try {
    const r = await fh.registerBuffers(n, size)
    r.buffers[0].fill(7)
    await fh.write(r.buffers[0], 0, size, 0)
    const { bytesRead } = await fh.read(r.buffers[1], 0, size, 0)
    out.push({ n, ok: r.buffers[1].every((x) => x === 7) && bytesRead === size })
    r.unregister()
  } catch (e) {
    out.push({ n, direct: e instanceof DirectIoError, code: e.code, limit: /8388608/.test(e.message) })
  }
}
await fh.close()
console.log('RESULT ' + JSON.stringify(out))
`,
  )
  for (const f of [dir, ...fs.readdirSync(dir).map((n) => path.join(dir, n))]) fs.lchownSync(f, 65534, 65534)
  const asNobody = (args: string[]): Promise<{ code: number; out: string; err: string }> =>
    new Promise((resolve) => {
      const cmd = ['prlimit', '--memlock=8388608:8388608', 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'env', `HOME=${dir}`, process.execPath, ...args]
      execFile(cmd[0], cmd.slice(1), { cwd: dir, encoding: 'utf8' }, (err, out, stderr) => resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? -1), out, err: stderr }))
    })
  const q = await asNobody(['quickstart.mjs'])
  t.is(q.code, 0, q.err)
  t.is(stripVTControlCharacters(q.out), "true io_uring 512\n1048576 1048576 odirect \n[ 4096, 4096, 4096, 4096 ]\nERR_ODIRECT_ALIGNMENT - use positions that are multiples of fh.alignment.offset (512)\nhello, direct I/O\n\n")
  t.is(fs.statSync(path.join(dir, 'demo.bin')).uid, 65534)
  const r = await asNobody(['reg.mjs'])
  t.is(r.code, 0, r.err)
  t.deepEqual(JSON.parse(r.out.split('\n').find((l) => l.startsWith('RESULT '))?.slice(7) ?? 'null'), [
    { n: 2, ok: true },
    { n: 4, direct: true, code: 'ERR_ODIRECT_MEMLOCK', limit: true },
  ])
  const cp = await asNobody([path.join(here, '..', 'dist', 'cli.js'), 'cp', 'demo.bin', 'copy.bin'])
  t.is(cp.code, 0, cp.err)
  t.deepEqual(fs.readFileSync(path.join(dir, 'copy.bin')), fs.readFileSync(path.join(dir, 'demo.bin')))
  const probe = await asNobody([path.join(here, '..', 'dist', 'cli.js'), 'probe', '.'])
  t.is(probe.code, 0, probe.err)
  t.regex(probe.out, /direct I\/O ready: yes/)
})

// ---------------------------------------------------------------------------------------
// 7. Positions past 4 GiB, to 2^44 - 16 KiB (ext4's limit) and 2^53 - 8 KiB (tmpfs), by every
//    positioned form (write/read, writev/readv, array and typed batches with Float64Array and
//    BigInt64Array positions, streams with `start`): the bytes land at the exact offset (node:fs
//    reads them there with a BigInt position), read back the same, and nothing lands at the
//    position cut to 32 or 31 bits.

for (const root of ['/var/tmp', '/dev/shm']) {
  test(`${root}: positions past 4 GiB up to the filesystem's limit, by every positioned form, land at the exact offset and nowhere else`, async (t) => {
    const f = path.join(scratch(root), 'far')
    const U = 4096
    const pat = (seed: number): Buffer => {
      const b = Buffer.alloc(U)
      for (let i = 0; i < U; i++) b[i] = ((seed * 31 + i * 7 + 1) & 0xff) || 1
      return b
    }
    const positions = [2 ** 32 - U, 2 ** 32, 2 ** 32 + U, 2 ** 40 + 2 * U, root === '/dev/shm' ? 2 ** 53 - 2 * U : 2 ** 44 - 4 * U]
    const fh = await od.open(f, 'w+')
    t.teardown(() => fh.close())
    let seed = 0
    for (const pos of positions) {
      for (const form of ['write/read', 'writev/readv', 'writeMany/readMany', 'typed f64', 'typed bigint', 'streams']) {
        const data = pat(++seed)
        const back = fh.alloc(U)
        const b = fh.alloc(U)
        data.copy(b)
        if (form === 'write/read') {
          await fh.write(b, 0, U, pos)
          await fh.read(back, 0, U, pos)
        } else if (form === 'writev/readv') {
          await fh.writev([b], pos)
          await fh.readv([back], pos)
        } else if (form === 'writeMany/readMany') {
          await fh.writeMany([{ buffer: b, position: pos }])
          await fh.readMany([{ buffer: back, position: pos }])
        } else if (form.startsWith('typed')) {
          const positionsArr = form === 'typed f64' ? new Float64Array([pos]) : new BigInt64Array([BigInt(pos)])
          await fh.writeMany({ memory: b, offsets: new Uint32Array([0]), lengths: new Uint32Array([U]), positions: positionsArr })
          await fh.readMany({ memory: back, offsets: new Uint32Array([0]), lengths: new Uint32Array([U]), positions: positionsArr })
        } else {
          const ws = od.createWriteStream(f, { flags: 'r+', start: pos })
          await new Promise((resolve, reject) => {
            ws.on('error', reject)
            ws.on('close', resolve)
            ws.end(data)
          })
          const parts: Buffer[] = []
          for await (const c of od.createReadStream(f, { start: pos, end: pos + U - 1 })) parts.push(Buffer.from(c as Uint8Array))
          Buffer.concat(parts).copy(back)
        }
        const fd = fs.openSync(f, 'r')
        const there = Buffer.alloc(U)
        fs.readSync(fd, there, 0, U, BigInt(pos))
        fs.closeSync(fd)
        t.deepEqual(there, data, `${form} at ${pos}: node:fs there`)
        t.deepEqual(back, data, `${form} at ${pos}: read back`)
      }
    }
    const fd = fs.openSync(f, 'r')
    for (const pos of positions) {
      for (const alias of [pos % 2 ** 32, pos % 2 ** 31]) {
        if (alias === pos || alias >= 2 ** 32 - 2 * U) continue
        const there = Buffer.alloc(U)
        fs.readSync(fd, there, 0, U, alias)
        t.true(there.every((x) => x === 0), `${pos} cut to ${alias}`)
      }
    }
    fs.closeSync(fd)
  })
}

// ---------------------------------------------------------------------------------------
// 8. A source another process appends to (O_APPEND, 777-byte pieces, 128 MiB more) while
//    copyFile (sparse and not), `odirect cp`, readFile and a read stream run, 3 times each: what
//    comes back is a prefix of what the file finally holds, at least what it held at the start
//    (never zeros or stale bytes past a real end). A source renamed over mid-copy: the copy is
//    the old file whole (the copy reads the descriptor it opened).

test('a source growing under copyFile, odirect cp, readFile and a read stream: each result is a prefix of the final file, at least its size at the start', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  const INIT = 32 * 1024 * 1024 + 333
  fs.writeFileSync(src, pattern(0, INIT))
  const app = childLines(process.execPath, [path.join(kids, 'appender.cjs'), src, String(INIT), String(128 * 1024 * 1024)], process.env, true)
  await app.line('go')
  const got: [string, Buffer][] = []
  for (let i = 0; i < 3; i++) {
    const dst = path.join(dir, `dst-${i}`)
    await od.copyFile(src, dst)
    got.push([`copyFile ${i}`, fs.readFileSync(dst)])
    await od.copyFile(src, dst, { sparse: false })
    got.push([`copyFile sparse: false ${i}`, fs.readFileSync(dst)])
    const cp = await new Promise<number | null>((resolve) => execFile(process.execPath, [path.join(here, '..', 'dist', 'cli.js'), 'cp', '--quiet', src, dst], (e) => resolve(e === null ? 0 : Number((e as { code?: number }).code ?? -1))))
    t.is(cp, 0)
    got.push([`odirect cp ${i}`, fs.readFileSync(dst)])
    fs.rmSync(dst)
    got.push([`readFile ${i}`, await od.readFile(src)])
    const parts: Buffer[] = []
    for await (const c of od.createReadStream(src)) parts.push(Buffer.from(c as Uint8Array))
    got.push([`read stream ${i}`, Buffer.concat(parts)])
  }
  await app.line('stopped')
  app.child.stdin?.end()
  await app.exited
  const final = fs.readFileSync(src)
  t.is(final.length, INIT + Math.ceil((128 * 1024 * 1024) / 777) * 777)
  for (const [what, b] of got) {
    t.true(b.length >= INIT && b.length <= final.length, `${what}: ${b.length} bytes`)
    t.true(b.equals(final.subarray(0, b.length)), `${what}: not a prefix of the file`)
  }
})

test('a source renamed over while copyFile (sparse and not) copies it: the copy is the old file whole', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  const old = pattern(0, 48 * 1024 * 1024 + 5)
  const repl = Buffer.alloc(4096 + 7, 0x5a)
  for (const form of ['copyFile', 'copyFile sparse: false']) {
    fs.writeFileSync(src, old)
    const dst = path.join(dir, 'dst')
    let replaced = false
    await od.copyFile(src, dst, {
      ...(form === 'copyFile' ? {} : { sparse: false }),
      // At the first progress (the copy under way), the name gets a new, shorter file.
      onProgress: () => {
        if (replaced) return
        replaced = true
        fs.writeFileSync(path.join(dir, 'new'), repl)
        fs.renameSync(path.join(dir, 'new'), src)
      },
    })
    t.true(replaced)
    t.true(fs.readFileSync(dst).equals(old), form)
    t.true(fs.readFileSync(src).equals(repl))
  }
})
