// Adversary pass s16c: the CLI and the whole-file helpers under signals and odd trees
// (earlier passes: aborts at every await point, pseudo-files, hostile numbers, same-file via hard
// links and bind mounts, ENOSPC with and without the up-front reservation: attacked again here by
// hand, no fault):
// 1. `odirect cp` hung up (SIGHUP: the terminal closed, the ssh session dropped) mid-copy. Found:
//    Node's default for SIGHUP killed it and left DST.odirect-tmp-PID-N (the size of SRC,
//    reserved) next to DST; now it is an interrupt as SIGINT and SIGTERM are: the temp file
//    removed, DST untouched, exit 129 (128 + SIGHUP), `signal` in --json (cli/cp.ts);
// 2. copyFile / writeFile({ atomic }) as an unprivileged user where fs.copyFile succeeds in place:
//    a destination the user may write in a directory it may not (the temp file cannot be made
//    there), and a world-writable destination owned by another user in a sticky directory (the
//    rename over it is refused). Found: the typed EACCES / EPERM said "check the file's mode and
//    owner" (the file's are fine) or "a seccomp profile, a read-only or immutable file"; now the
//    hint names the directory and the reason (src/fileops.ts tempError), and `odirect cp` prints it.
// 3. `odirect cp` with names whose bytes are not UTF-8 (Latin-1 trees). Found: Node decodes argv
//    with U+FFFD for each invalid byte, so `odirect cp good $'c\xfe'` made a file of another name
//    (63 ef bf bd) and exited 0, and a SRC $'a\xff' would copy a file named 'a\u{FFFD}'; now
//    refused (exit 1, ERR_INVALID_ARG_VALUE), the raw bytes read from /proc/self/cmdline (cli/cp.ts).
// 4. destination names near NAME_MAX. Found: copyFile, writeFile({ atomic }) and odirect cp onto a
//    valid name of 231-255 bytes failed ENAMETOOLONG (the temp name NAME.odirect-tmp-PID-N passed
//    255 bytes) where fs.copyFile writes it; now NAME is cut to fit (src/fileops.ts tmpName).
// 5. `odirect cp` interrupted while a FIFO read waits for data (or a FIFO open for a reader). Found:
//    "interrupted by SIGINT (partial copy removed)" was printed and the process kept running until
//    the FIFO's writer wrote or closed (the blocked thread-pool read held the loop; process.exit()
//    would hang too: libuv joins its pool at exit); now the signal's default action ends it once the
//    temp file is gone (cli/cp.ts).
// 6. a second Ctrl-C while the first one's cleanup waits for a read in flight (a slow source: a
//    FUSE file whose reads are held). Found: copyFile closed both files (each close waiting for
//    its I/O) before it removed the temp file, and the second signal's default action left
//    DST.odirect-tmp-*; now the temp file is removed first (src/files.ts copyBlocks).
// 7. what a replaced file keeps: owner and group (root) and the source's mode, as fs.copyFile;
//    its extended attributes and ACLs were dropped (fs.copyFile writes in place and keeps them):
//    kept since session 17 (crates/napi/src/xattr.rs; every case: replace-keeps.spec.ts).
// 8. ENOSPC of the temp file without the up-front reservation. Found: the hint said "data written
//    before this error is intact (N bytes ...)" of a temp file already removed; now it says the
//    temp file is gone and DST untouched (src/fileops.ts tempError).
// Every check waits on an event (a child's exit, an inotify event); nothing is timed.
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { until, watchUntil } from './helpers/events.ts'
import { COPY_SIZE, interruptCopy } from './helpers/cpinterrupt.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, FULLFS_REASON, testIf } from './helpers/skips.ts'
import { faultFs, fullFs, isSkip, skipReason } from './helpers/fixtures.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.join(here, '..', 'dist', 'cli.js')
const INDEX = path.join(here, '..', 'dist', 'index.js')
const scratch = scratchDirs('s16c')
const MiB = 1024 * 1024

const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0
const NOBODY_REASON = IS_ROOT ? undefined : 'needs root to run a child as uid 65534 and to own files as another user'

// ---------------------------------------------------------------------------------------
// 1. odirect cp hung up

test('odirect cp hung up (SIGHUP) mid-copy: exit 129, temp file removed, DST untouched, signal in --json', async (t) => {
  const r = await interruptCopy(scratch(), 'SIGHUP', ['--json'])
  if (r.status === 0) {
    // The copy won the race (a very fast disk): nothing to interrupt; the result must still be whole.
    t.is(fs.statSync(r.dst).size, COPY_SIZE)
    return
  }
  t.is(r.signal, null, `killed by ${r.signal}: the default action of ${r.signal} ran, no cleanup`)
  t.is(r.status, 129, r.stderr)
  t.regex(r.stderr, /interrupted by SIGHUP \(partial copy removed\)/)
  t.deepEqual(r.temps(), [])
  t.is(fs.readFileSync(r.dst, 'utf8'), 'old contents')
  const j = JSON.parse(r.stdout) as { error: { signal?: string } }
  t.is(j.error.signal, 'SIGHUP')
})

// ---------------------------------------------------------------------------------------
// 2. Replacing a file where only an in-place write is allowed

interface Outcome {
  ok?: true
  code?: string
  syscall?: string
  path?: string
  hint?: string
  message?: string
}

/** Runs copyFile, writeFile({ atomic }) and writeFile onto `dst` as uid 65534; each one's outcome. */
function asNobody(src: string, dst: string): Record<string, Outcome> {
  const script = `
    const od = require(${JSON.stringify(INDEX)})
    const [src, dst] = process.argv.slice(1)
    const forms = {
      copyFile: () => od.copyFile(src, dst),
      'writeFile atomic': () => od.writeFile(dst, 'atomic', { atomic: true }),
    }
    ;(async () => {
      const out = {}
      for (const [k, f] of Object.entries(forms)) {
        try { await f(); out[k] = { ok: true } } catch (e) { out[k] = { code: e.code, syscall: e.syscall, path: e.path, hint: e.hint, message: e.message } }
      }
      console.log('RESULT ' + JSON.stringify(out))
    })()`
  const r = spawnSync(process.execPath, ['-e', script, src, dst], { encoding: 'utf8', uid: 65534, gid: 65534 })
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '))
  if (line === undefined) throw new Error(`no RESULT (status ${r.status}):\n${r.stdout}\n${r.stderr}`)
  return JSON.parse(line.slice(7)) as Record<string, Outcome>
}

/** A scratch directory uid 65534 can reach, with a source it can read. */
function nobodyTree(): { dir: string; src: string } {
  const dir = scratch()
  fs.chmodSync(dir, 0o755)
  const src = path.join(dir, 'src.bin')
  fs.writeFileSync(src, randomBytes(100_000))
  fs.chmodSync(src, 0o644)
  return { dir, src }
}

testIf(NOBODY_REASON, 'copyFile / writeFile atomic onto a writable file in a directory the user may not write: EACCES whose hint names the directory', (t) => {
  const { dir, src } = nobodyTree()
  const sub = path.join(dir, 'ro')
  fs.mkdirSync(sub, { mode: 0o755 })
  const dst = path.join(sub, 'dst')
  fs.writeFileSync(dst, 'old')
  fs.chownSync(dst, 65534, 65534)
  const r = asNobody(src, dst)
  for (const form of ['copyFile', 'writeFile atomic']) {
    const o = r[form]
    t.is(o.code, 'EACCES', `${form}: ${JSON.stringify(o)}`)
    t.is(o.syscall, 'open', form)
    t.regex(o.path ?? '', /\.odirect-tmp-/, form)
    // The hint says why: the temp file is made in the directory, which is not writable.
    t.true(o.hint?.includes(`create files in ${sub}`), `${form}: ${o.hint}`)
    t.true(o.message?.includes(o.hint ?? '-'), `${form}: the message carries the hint: ${o.message}`)
  }
  t.is(fs.readFileSync(dst, 'utf8'), 'old')
  t.deepEqual(fs.readdirSync(sub), ['dst'])
  // odirect cp says the same.
  const c = spawnSync(process.execPath, [CLI, 'cp', src, dst], { encoding: 'utf8', uid: 65534, gid: 65534 })
  t.is(c.status, 1, c.stderr)
  t.true(c.stderr.includes(`create files in ${sub}`), c.stderr)
  t.deepEqual(fs.readdirSync(sub), ['dst'])
})

testIf(NOBODY_REASON, "copyFile / writeFile atomic onto another user's world-writable file in a sticky directory: EPERM whose hint says sticky", (t) => {
  const { dir, src } = nobodyTree()
  const sub = path.join(dir, 'sticky')
  fs.mkdirSync(sub)
  fs.chmodSync(sub, 0o1777)
  const dst = path.join(sub, 'dst')
  fs.writeFileSync(dst, 'old')
  fs.chmodSync(dst, 0o666)
  const r = asNobody(src, dst)
  for (const form of ['copyFile', 'writeFile atomic']) {
    const o = r[form]
    t.is(o.code, 'EPERM', `${form}: ${JSON.stringify(o)}`)
    t.is(o.syscall, 'rename', form)
    t.true(o.hint?.includes('sticky'), `${form}: ${o.hint}`)
    t.true(o.message?.includes(o.hint ?? '-'), `${form}: the message carries the hint: ${o.message}`)
  }
  t.is(fs.readFileSync(dst, 'utf8'), 'old')
  t.deepEqual(fs.readdirSync(sub), ['dst'])
  const c = spawnSync(process.execPath, [CLI, 'cp', src, dst], { encoding: 'utf8', uid: 65534, gid: 65534 })
  t.is(c.status, 1, c.stderr)
  t.regex(c.stderr, /sticky/)
  t.deepEqual(fs.readdirSync(sub), ['dst'])
})

// ---------------------------------------------------------------------------------------
// 3. Names that are not UTF-8

// Node decodes argv as UTF-8, each invalid byte becoming U+FFFD: `odirect cp good $'c\xfe'` would
// create 'c\u{FFFD}' (bytes 63 ef bf bd), another name than asked, and say "copied"; a SRC
// $'a\xff' would copy a file that is really named 'a\u{FFFD}'. odirect takes UTF-8 paths (the API
// refuses a Buffer path that is not UTF-8): the CLI now says so, exit 1, nothing made or read.
test('odirect cp with a SRC or DST that is not UTF-8 (argv bytes): refused, exit 1, no other file copied or made', (t) => {
  const dir = scratch()
  fs.writeFileSync(path.join(dir, 'good'), 'good')
  // A file whose name is the U+FFFD spelling of the one asked for: never the one copied.
  fs.writeFileSync(path.join(dir, 'a\u{FFFD}'), 'the wrong file')
  const before = fs.readdirSync(dir).sort()
  // sh gives the child the raw bytes (Node's spawn would encode its strings as UTF-8).
  const run = (args: string): ReturnType<typeof spawnSync> =>
    spawnSync('sh', ['-c', `exec "$0" "$1" cp ${args}`, process.execPath, CLI], { cwd: dir, encoding: 'utf8' })
  for (const [what, args] of [['DST', `good "$(printf 'c\\376')"`], ['SRC', `"$(printf 'a\\377')" copy`], ['SRC into a directory', `"$(printf 'a\\377')" .`]] as const) {
    const r = run(args)
    t.is(r.status, 1, `${what}: ${String(r.stderr)}`)
    t.regex(String(r.stderr), /not valid UTF-8/, what)
    t.deepEqual(fs.readdirSync(dir).sort(), before, what)
  }
  // --json: the error is JSON, with a code.
  const j = run(`--json good "$(printf 'c\\376')"`)
  t.is(j.status, 1)
  t.is((JSON.parse(String(j.stdout)) as { error: { code: string } }).error.code, 'ERR_INVALID_ARG_VALUE')
  t.deepEqual(fs.readdirSync(dir).sort(), before)
  // A name with U+FFFD itself (valid UTF-8) is copied as any other.
  const ok = run(`"a\u{FFFD}" copy`)
  t.is(ok.status, 0, String(ok.stderr))
  t.is(fs.readFileSync(path.join(dir, 'copy'), 'utf8'), 'the wrong file')
})

// ---------------------------------------------------------------------------------------
// 4. Names near NAME_MAX

// A destination name of 231 to 255 bytes is valid, and fs.copyFile / fs.writeFile write it; the
// temp name `NAME.odirect-tmp-PID-N` was then longer than NAME_MAX (255): ENAMETOOLONG before a
// byte was copied. Now the temp name keeps as much of NAME as fits (cut on a character).
test('copyFile, writeFile atomic and odirect cp onto a name of 250 to 255 bytes (ASCII and multibyte): written, no temp file left', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 's')
  const data = randomBytes(70_000)
  fs.writeFileSync(src, data)
  // 255 bytes: 'é' is 2 bytes, so the cut must fall between characters.
  const names = ['a'.repeat(250), 'b'.repeat(255), `${'é'.repeat(127)}x`, `${'€'.repeat(84)}yyy`]
  for (const n of names) t.is(Buffer.byteLength(n), n.startsWith('a') ? 250 : 255)
  const od = (await import(INDEX)) as typeof import('../dist/index.js')
  for (const n of names) {
    const dst = path.join(dir, n)
    fs.writeFileSync(dst, 'old')
    await od.copyFile(src, dst)
    t.deepEqual(fs.readFileSync(dst), data, `copyFile ${n.length}`)
    await od.writeFile(dst, 'atomic', { atomic: true })
    t.is(fs.readFileSync(dst, 'utf8'), 'atomic', `writeFile atomic ${n.length}`)
    fs.rmSync(dst)
    const r = spawnSync(process.execPath, [CLI, 'cp', '--quiet', src, dst], { encoding: 'utf8' })
    t.is(r.status, 0, r.stderr)
    t.deepEqual(fs.readFileSync(dst), data, `odirect cp ${n.length}`)
  }
  t.deepEqual(fs.readdirSync(dir).sort(), [...names, 's'].sort())
})

// ---------------------------------------------------------------------------------------
// 5. Interrupted while a FIFO holds a read or an open

/** The child's exit status, or an error naming `what` if it is still running after `ms` (a hang: a liveness bound, never reached by a passing run). */
function exitOf(child: ReturnType<typeof spawn>, what: string, ms = 30_000): Promise<number | NodeJS.Signals | null> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: still running ${ms} ms after the signal`)), ms)
    child.on('close', (c, sig) => {
      clearTimeout(timer)
      resolve(c ?? sig)
    })
  })
}

/** Exit 128 + n, or killed by the signal itself (the shell's $? is 128 + n either way). */
const interruptedBy = (sig: NodeJS.Signals): Array<number | NodeJS.Signals> => [128 + (os.constants.signals[sig] as number), sig]

/** Whether a thread of `pid` waits in the kernel at `wchan`: the other end of a FIFO (wait_for_partner), a FIFO's data (anon_pipe_read). */
function waitsIn(pid: number, wchan: string): boolean {
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      if (fs.readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8') === wchan) return true
    } catch {
      // The thread ended.
    }
  }
  return false
}

// The abort ends the copy at once, but the FIFO's read (or open) stays blocked in a thread-pool
// thread, and it kept Node's loop alive: the message "interrupted by SIGINT (partial copy
// removed)" was printed and the process went on running until the FIFO's writer wrote or closed
// (or a reader came): `timeout 10 odirect cp`, a script's `kill`, a second Ctrl-C were needed.
test('odirect cp from a FIFO whose writer stays silent, interrupted: ends (130, or by SIGINT) without waiting for the writer, no temp file', async (t) => {
  const dir = scratch()
  const fifo = path.join(dir, 'fifo')
  t.is(spawnSync('mkfifo', [fifo]).status, 0)
  // O_RDWR: Linux opens a FIFO so without waiting for a reader; the writer stays open and silent.
  const w = fs.openSync(fifo, fs.constants.O_RDWR)
  try {
    fs.writeSync(w, 'some data, then nothing')
    const dst = path.join(dir, 'dst')
    const child = spawn(process.execPath, [CLI, 'cp', fifo, dst], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const exited = exitOf(child, 'odirect cp interrupted during a FIFO read')
    const temps = (): string[] => fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))
    await watchUntil(dir, () => temps().length > 0)
    // Its data read, the next read waits for more.
    await until(() => waitsIn(child.pid as number, 'anon_pipe_read'), 'a read of the FIFO to wait for data')
    child.kill('SIGINT')
    const st = await exited
    t.true(interruptedBy('SIGINT').includes(st as number), `${st}: ${stderr}`)
    t.regex(stderr, /interrupted by SIGINT/)
    t.deepEqual(fs.readdirSync(dir), ['fifo'])
  } finally {
    // A hung child: the writer's close lets its read end, so that it ends.
    fs.closeSync(w)
  }
})

test('odirect cp onto a FIFO without a reader, interrupted while its open waits: ends (143, or by SIGTERM)', async (t) => {
  const dir = scratch()
  const fifo = path.join(dir, 'fifo')
  t.is(spawnSync('mkfifo', [fifo]).status, 0)
  fs.writeFileSync(path.join(dir, 's'), 'data')
  const child = spawn(process.execPath, [CLI, 'cp', path.join(dir, 's'), fifo], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = exitOf(child, 'odirect cp interrupted during a FIFO open')
  try {
    await until(() => waitsIn(child.pid as number, 'wait_for_partner'), 'the open of the FIFO to wait for a reader')
    child.kill('SIGTERM')
    const st = await exited
    t.true(interruptedBy('SIGTERM').includes(st as number), `${st}: ${stderr}`)
    t.regex(stderr, /interrupted by SIGTERM/)
    t.deepEqual(fs.readdirSync(dir).sort(), ['fifo', 's'])
  } finally {
    // A hung child: a reader lets its open go, so that it ends.
    if (child.exitCode === null) fs.closeSync(fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK))
    await exited.catch(() => {})
  }
})

// ---------------------------------------------------------------------------------------
// 6. A second Ctrl-C while the first one's cleanup waits

/** Whether `pid` has `file` open (/proc/PID/fd). */
function hasOpen(pid: number, file: string): boolean {
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === file) return true
    } catch {
      // Closed meanwhile.
    }
  }
  return false
}

// The first SIGINT aborts the copy; the cleanup closed both files, each close waiting for its
// reads or writes in flight, and only then removed the temp file. With the source on a slow
// device (NFS, a USB stick: here a FUSE file whose reads are held) a second Ctrl-C meanwhile took
// Node's default action and left DST.odirect-tmp-* behind, the size of SRC reserved. Now the temp
// file is removed first (src/files.ts copyBlocks), then the files are closed.
testIf(FAULTFS_REASON, 'odirect cp: a second SIGINT while the first one waits for a held source read: no temp file left', async (t) => {
  const fx = faultFs({ size: 8 * MiB, hold: true })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  t.teardown(() => fx.cleanup())
  const dir = scratch()
  const dst = path.join(dir, 'dst')
  fs.writeFileSync(dst, 'old contents')
  fx.hold()
  const child = spawn(process.execPath, [CLI, 'cp', '--sparse=never', fx.file, dst], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = exitOf(child, 'odirect cp with a held read, interrupted twice')
  try {
    const temps = (): string[] => fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))
    await fx.waitForHeld(1)
    await watchUntil(dir, () => temps().length > 0)
    const tmp = path.join(dir, temps()[0])
    await until(() => hasOpen(child.pid as number, tmp), 'the temp file open in the child')
    child.kill('SIGINT')
    // The first signal is being handled: the copy is aborted and its cleanup has begun (the temp
    // file closed, or already removed), while the source's read is still held.
    await until(() => !hasOpen(child.pid as number, tmp) || temps().length === 0, 'the cleanup to begin')
    t.true(fx.stats().held > 0, 'the read is still held')
    child.kill('SIGINT')
    // Let the child's second signal land before the read goes (its handler or its default action).
    await until(() => temps().length === 0 || child.exitCode !== null || child.signalCode !== null, 'the temp file removed, or the child gone')
  } finally {
    fx.release()
  }
  const st = await exited
  t.true(interruptedBy('SIGINT').includes(st as number), `${st}: ${stderr}`)
  t.deepEqual(fs.readdirSync(dir), ['dst'])
  t.is(fs.readFileSync(dst, 'utf8'), 'old contents')
})

// ---------------------------------------------------------------------------------------
// 7. What a replaced file keeps

/** The user.* extended attributes of `file` (python3's os.listxattr: Node has no xattr API). */
function xattrs(file: string, set?: string): string[] {
  const py = set === undefined ? 'import os,sys; print(",".join(sorted(os.listxattr(sys.argv[1]))))' : 'import os,sys; os.setxattr(sys.argv[1], sys.argv[2], b"kept")'
  const r = spawnSync('python3', ['-c', py, file, ...(set === undefined ? [] : [set])], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`python3 xattr: ${r.stderr}`)
  return r.stdout.trim() === '' ? [] : r.stdout.trim().split(',')
}

// copyFile and writeFile({ atomic }) replace the file through a temp file and a rename: the old
// file's extended attributes (user.*, and with them POSIX ACLs, system.posix_acl_access) were not
// carried over, where fs.copyFile, writing in place, keeps them. Now the temp file gets them
// before any data (src/fileops.ts keepAttrs, crates/napi/src/xattr.rs); replace-keeps.spec.ts
// compares every attribute with node:fs.
const XATTR_REASON = skipReason(['cmd:python3'])
if (XATTR_REASON === undefined) {
  test("copyFile and writeFile atomic keep the replaced file's extended attributes, as fs.copyFile does", async (t) => {
    const dir = scratch()
    const src = path.join(dir, 's')
    fs.writeFileSync(src, 'new')
    const a = path.join(dir, 'a')
    const b = path.join(dir, 'b')
    const c = path.join(dir, 'c')
    for (const f of [a, b, c]) {
      fs.writeFileSync(f, 'old')
      xattrs(f, 'user.tag')
    }
    fs.copyFileSync(src, a)
    t.deepEqual(xattrs(a), ['user.tag'], 'fs.copyFile keeps them (the reference)')
    const od = (await import(INDEX)) as typeof import('../dist/index.js')
    await od.copyFile(src, b)
    await od.writeFile(c, 'new', { atomic: true })
    t.is(fs.readFileSync(b, 'utf8'), 'new')
    t.deepEqual(xattrs(b), ['user.tag'], 'copyFile')
    t.deepEqual(xattrs(c), ['user.tag'], 'writeFile atomic')
  })
} else {
  console.log(`skipped 'extended attributes of a replaced file': ${XATTR_REASON}`)
  test.skip(`extended attributes of a replaced file (skipped: ${XATTR_REASON})`, () => undefined)
}

// ---------------------------------------------------------------------------------------
// 8. What an ENOSPC of the temp file says

// Without the up-front reservation (ODIRECT_PREALLOCATE=0, or data of unknown length) a full
// filesystem fails a write of the temp file. The error said "data written before this error is
// intact (N bytes of the data were written before the error)": of a temp file that was removed,
// while the destination is untouched. Now the hint says that.
testIf(FULLFS_REASON, 'copyFile and writeFile atomic out of space in the temp file: the hint says the temp file was removed and DST is untouched', async (t) => {
  const fx = fullFs(8, { kind: 'tmpfs' })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  t.teardown(() => fx.cleanup())
  const dst = path.join(fx.dir, 'dst')
  fs.writeFileSync(dst, 'old')
  const src = path.join(scratch(), 'src')
  fs.writeFileSync(src, randomBytes(fx.freeBytes + 4 * MiB))
  const script = `
    const od = require(${JSON.stringify(INDEX)})
    const [src, dst] = process.argv.slice(1)
    async function* chunks() { for (let i = 0; i < ${Math.ceil((fx.freeBytes + 4 * MiB) / MiB)}; i++) yield Buffer.alloc(${MiB}, i) }
    const forms = {
      copyFile: () => od.copyFile(src, dst),
      'writeFile atomic': () => od.writeFile(dst, chunks(), { atomic: true }),
    }
    ;(async () => {
      const out = {}
      for (const [k, f] of Object.entries(forms)) {
        try { await f(); out[k] = { ok: true } } catch (e) { out[k] = { code: e.code, path: e.path, hint: e.hint, message: e.message } }
      }
      console.log('RESULT ' + JSON.stringify(out))
    })()`
  const r = spawnSync(process.execPath, ['-e', script, src, dst], { encoding: 'utf8', env: { ...process.env, ODIRECT_PREALLOCATE: '0' } })
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '))
  if (line === undefined) return t.fail(`no RESULT: ${r.stdout}\n${r.stderr}`)
  const out = JSON.parse(line.slice(7)) as Record<string, Outcome>
  for (const form of ['copyFile', 'writeFile atomic']) {
    const o = out[form]
    t.is(o.code, 'ENOSPC', `${form}: ${JSON.stringify(o)}`)
    t.regex(o.path ?? '', /\.odirect-tmp-/, form)
    t.false(/data written before this error is intact/.test(o.message ?? ''), `${form}: ${o.message}`)
    t.true(o.hint?.includes(`${dst} is untouched`), `${form}: ${o.hint}`)
    t.true(o.message?.includes(o.hint ?? '-'), `${form}: ${o.message}`)
  }
  t.is(fs.readFileSync(dst, 'utf8'), 'old')
  t.deepEqual(fs.readdirSync(fx.dir), ['dst'])
})
