// Second adversary pass of the nineteenth session, on what the first (adversary-s19) changed and
// its neighbours: data trust at mount points, the exclusive replace without hard links, what a
// replaced file keeps, devices and magic links as destinations, buffers resized mid-write.
// Found:
// 1. An aborted operation on a FIFO that has no other end (writeFile, copyFile, readFile of a
//    named pipe nobody opened) rejected AbortError, but its open(2) stayed blocked in one of
//    libuv's four worker threads until some other process opened the FIFO: the process could not
//    exit, and after four such aborts every fs call of the process (odirect's and node:fs's) waited
//    forever. Now the abort opens the other end without blocking and closes it, which lets the
//    waiting open return; it is closed unused (src/fileops.ts SequentialFile.open). The streams
//    (createReadStream / createWriteStream with a signal) never settled at all there: their open now
//    races the signal too, and the same release applies (src/streams/node.ts #seqAbort).
// 2. writeFile(f, '', { atomic }) by a non-root owner over a set-user-ID file kept 04755, where
//    fs.writeFile's O_TRUNC leaves 0755 (with data, the writes dropped it): now dropped (src/files.ts).
// 3. A filesystem mounted over DST's folder while the data was written: the error said "the temp
//    file was removed" and it was not (under the mount): the error now names it (src/fileops.ts).
// 4. A write stream's chunk whose resizable ArrayBuffer is resized to 0 after write(): success at
//    the callback, the bytes never written, the stream never ends: now ERR_ODIRECT_DETACHED at the
//    callback and the stream (src/streams/core.ts write(): the length at the call is what it copies).
// No fault: a DST bind-mounted over mid-copy (EBUSY at the rename, both files untouched, no temp);
// security.capability never kept on a replacement (a guard: root could set it).
// Attacked by hand, no fault (each: the typed error, nothing left behind): a directory mount point
// as DST (EISDIR, as fs); a file bind-mounted onto itself, reached through /proc/self/root or a
// symlinked folder (EBUSY at statx); DST inside a read-only bind mount (EROFS at the temp file's
// open, removed); /dev/full made with mknod as DST of copyFile, writeFile (atomic or not) and a
// write stream (ENOSPC), /dev/null (written); a pipe whose reader exits mid-copy (copyFile,
// writeFile, odirect cp onto /dev/stdout: EPIPE, exit 1, no SIGPIPE death); /dev/stdout a socket (a
// child's stdio pipe): ENXIO, as fs.copyFile and cp; a socket or a tty node as DST (ENXIO, as
// fs); the bind-mount refusal inside a private mount namespace (unshare -m); handle.write,
// writev and writeMany of resizable ArrayBuffers shrunk or transferred after the call (bounced:
// written whole; a windowed writeMany: ERR_ODIRECT_DETACHED for the ops not yet in).
// Nothing is timed: each check waits for its child, its promise, or a thread's state in /proc.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childRunner } from './helpers/child-result.ts'
import { scratchDirs } from './helpers/scratch.ts'
import * as od from '../dist/index.js'
import { faultFs, skipReason } from './helpers/fixtures.js'
import { must } from './helpers/fxtest.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
const scratch = scratchDirs('s19b')
const runChild = childRunner(path.join(here, 'adversary-s19b'))

// ---------------------------------------------------------------------------------------
// An abort while the open of a FIFO waits for its other end

const WCHAN_REASON = fs.existsSync('/proc/self/task') && fs.existsSync(`/proc/self/wchan`) ? undefined : 'no /proc/PID/task/TID/wchan'

/** Runs `rounds` aborted `form`s on a FIFO nobody opens (more than libuv's four worker threads); resolves once the child exited after each wait was given back and a stat ran. */
async function fifoAborts(form: string, rounds = 6): Promise<{ rounds: number; errors: string[] }> {
  const dir = scratch()
  const fifo = path.join(dir, 'fifo')
  const mk = spawnSync('mkfifo', [fifo])
  if (mk.status !== 0) throw new Error('mkfifo failed')
  // (A child that never exits, the old code's, is killed after 10 minutes: a failure, not a hung run.)
  return runChild<{ rounds: number; errors: string[] }>('fifo-abort.mjs', [DIST, fifo, form, String(rounds)], { env: { ...process.env, UV_THREADPOOL_SIZE: '4' }, killAfterMs: 600_000 })
}

for (const form of ['writeFile', 'writeFile atomic', 'copyFile to it', 'readFile', 'copyFile from it']) {
  testIf(WCHAN_REASON, `${form} on a FIFO with no other end, aborted while its open waits, six times: AbortError each, the open given back (no thread left waiting), fs still answers and the process exits (was: each open held a libuv worker thread until a peer came; after four every fs call hung, and the process never exited)`, async (t) => {
    const r = await fifoAborts(form)
    t.deepEqual(r.errors, Array(6).fill('ABORT_ERR'), form)
  })
}

testIf(WCHAN_REASON, 'createWriteStream / createReadStream on a FIFO with no other end, aborted by their signal while the open waits: the stream errors AbortError, the open given back (was: HUNG, the stream did not settle until a peer opened the FIFO: its open was raced against an AbortRace without the signal (src/streams/node.ts #seqAbort) and destroy waits for the open, as node:fs streams do)', async (t) => {
  for (const form of ['createWriteStream', 'createReadStream']) {
    const r = await fifoAborts(form, 1)
    t.deepEqual(r.errors, ['ABORT_ERR'], form)
  }
})

// ---------------------------------------------------------------------------------------
// Set-user-ID and set-group-ID bits of a replaced file

// The kernel drops a file's set-user-ID bit (and its set-group-ID bit where group-executable) on
// any write or O_TRUNC by a process without CAP_FSETID, its owner's included: new contents do
// not run with the old ones' privileges. fs.writeFile (O_TRUNC) leaves 04755 as 0755; odirect's
// replacement is given the old mode before its data (keepAttrs), and the data's writes drop the
// bits as the kernel drops them. Found: with no data to write (writeFile(f, '', { atomic })) the
// replacement kept them: an empty set-user-ID file where fs leaves a plain one. Now the mode kept
// loses them where this process is not root (src/files.ts).
testIf(process.getuid?.() !== 0 ? 'needs root (to run as uid 65534)' : skipReason(['cmd:setpriv']), "writeFile({ atomic }) by a file's owner (not root) over a set-user-ID / set-group-ID file, with data and with none: the bits dropped as fs.writeFile's O_TRUNC and writes drop them (was: kept when the data was empty)", (t) => {
  const dir = scratch()
  fs.chmodSync(dir, 0o777)
  const script = `import * as fs from 'node:fs'
const od = await import(${JSON.stringify(DIST)})
const dir = process.argv[1]
const out = {}
for (const [k, run] of Object.entries({ 'fs.writeFile': (f, d) => fs.promises.writeFile(f, d), 'writeFile atomic': (f, d) => od.writeFile(f, d, { atomic: true }) })) {
  for (const data of ['', 'new']) {
    for (const m of [0o4755, 0o2775, 0o2765, 0o6777]) {
      const f = dir + '/' + k.replace(/\\W+/g, '-') + '-' + data.length + '-' + m.toString(8)
      fs.writeFileSync(f, 'old')
      fs.chmodSync(f, m)
      await run(f, data)
      out[k + ' data ' + data.length + ' mode ' + m.toString(8)] = (fs.statSync(f).mode & 0o7777).toString(8)
    }
  }
}
console.log('RESULT ' + JSON.stringify(out))`
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script, dir], { encoding: 'utf8' })
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '))
  if (line === undefined) return t.fail(`child failed (${r.status}): ${r.stderr}`)
  const out = JSON.parse(line.slice(7)) as Record<string, string>
  t.is(Object.keys(out).length, 16)
  for (const data of [0, 3]) {
    for (const [m, want] of [['4755', '755'], ['2775', '775'], ['2765', '2765'], ['6777', '777']]) {
      t.is(out[`fs.writeFile data ${data} mode ${m}`], want, `the yardstick: fs.writeFile, ${data} bytes over ${m}`)
      t.is(out[`writeFile atomic data ${data} mode ${m}`], want, `writeFile atomic, ${data} bytes over ${m}`)
    }
  }
})

// ---------------------------------------------------------------------------------------
// A write stream's chunk losing its bytes after write() returned

// The yardstick is a transferred chunk: the write's callback and the stream error
// ERR_ODIRECT_DETACHED, then 'close'. A chunk of a resizable ArrayBuffer resized to 0 the same
// way is taken as an empty chunk: the callback reports success, 4 MiB are silently not written,
// and the stream then never emits 'finish', 'error' or 'close' (the process exits with its event
// loop empty, status 0, the file empty): a pipeline or `finished` never settles.
const RAB = typeof (ArrayBuffer.prototype as { resize?: unknown }).resize === 'function'

async function shrunkChunk(how: 'resize' | 'transfer'): Promise<{ events: string[]; cb: string | null; size: number }> {
  return runChild('stream-shrunk.mjs', [DIST, path.join(scratch(), 'out'), how])
}

testIf(RAB ? undefined : 'no resizable ArrayBuffer in this runtime', 'createWriteStream: a chunk transferred right after write(): ERR_ODIRECT_DETACHED at its callback and the stream, then close (the yardstick of the next)', async (t) => {
  const r = await shrunkChunk('transfer')
  t.is(r.cb, 'ERR_ODIRECT_DETACHED')
  t.deepEqual(r.events, ['error ERR_ODIRECT_DETACHED', 'close'])
})

testIf(RAB ? undefined : 'no resizable ArrayBuffer in this runtime', "createWriteStream: a chunk whose resizable ArrayBuffer is resized to 0 right after write(): ERR_ODIRECT_DETACHED and the stream closed (was: the callback reported success, nothing was written, and no 'finish', 'error' or 'close' ever came: src/streams/core.ts write() took the shrunk view for an empty chunk, and its loop re-read src.byteLength after each await)", async (t) => {
  const r = await shrunkChunk('resize')
  t.is(r.cb, 'ERR_ODIRECT_DETACHED', JSON.stringify(r))
  t.deepEqual(r.events, ['error ERR_ODIRECT_DETACHED', 'close'], JSON.stringify(r))
})

// ---------------------------------------------------------------------------------------
// A destination that becomes a mount point after the check

// adversary-s19's check (statx STATX_ATTR_MOUNT_ROOT) runs before any data; a file bind-mounted
// over DST while the copy runs (the source on FUSE, its reads held, the mount made, then let go)
// is found by the rename: EBUSY, and then the temp file must go and the mounted file stay.
testIf(skipReason(['root', 'cmd:mount', 'cmd:umount']) ?? FAULTFS_REASON, 'copyFile and writeFile({ atomic }) whose DST becomes a mount point while the data is copied (a file bind-mounted over it mid-copy): EBUSY at the rename, the mounted file and the file under it untouched, no temp file left', async (t) => {
  const dir = scratch()
  const dst = path.join(dir, 'dst')
  fs.writeFileSync(dst, 'under the mount')
  const mounted = path.join(dir, 'mounted')
  fs.writeFileSync(mounted, 'mounted contents')
  const fx = must(faultFs({ size: 1 << 20, hold: 'held' }))
  t.teardown(() => fx.cleanup())
  const p = od.copyFile(fx.file, dst).then(
    () => undefined,
    (e: { code?: string; syscall?: string }) => e,
  )
  await fx.waitForHeld(1)
  const m = spawnSync('mount', ['--bind', mounted, dst], { encoding: 'utf8' })
  if (m.status !== 0) return t.fail(`mount --bind: ${m.stderr}`)
  t.teardown(() => void spawnSync('umount', [dst]))
  fx.release()
  const e = await p
  t.is(e?.code, 'EBUSY', String(e))
  t.is(fs.readFileSync(dst, 'utf8'), 'mounted contents', 'the mounted file untouched')
  t.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-')), [], 'no temp file')
  spawnSync('umount', [dst])
  t.is(fs.readFileSync(dst, 'utf8'), 'under the mount', 'the file under the mount untouched')

  // writeFile({ atomic }) of an iterable, the mount made while it waits for its second chunk.
  let mountNow: () => void = () => {}
  const asked = new Promise<void>((r) => (mountNow = r))
  let go: () => void = () => {}
  const mountedNow = new Promise<void>((r) => (go = r))
  async function* data(): AsyncGenerator<Buffer> {
    yield Buffer.alloc(1 << 20, 0x62)
    mountNow()
    await mountedNow
    yield Buffer.alloc(1 << 20, 0x63)
  }
  const w = od.writeFile(dst, data(), { atomic: true }).then(
    () => undefined,
    (err: { code?: string }) => err,
  )
  await asked
  const m2 = spawnSync('mount', ['--bind', mounted, dst], { encoding: 'utf8' })
  if (m2.status !== 0) return t.fail(`mount --bind: ${m2.stderr}`)
  go()
  const e2 = await w
  t.is(e2?.code, 'EBUSY', `writeFile atomic: ${String(e2)}`)
  t.is(fs.readFileSync(dst, 'utf8'), 'mounted contents', 'writeFile atomic: the mounted file untouched')
  t.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-')), [], 'writeFile atomic: no temp file')
  spawnSync('umount', [dst])
  t.is(fs.readFileSync(dst, 'utf8'), 'under the mount', 'writeFile atomic: the file under the mount untouched')
})

// security.capability (setcap) is about the old contents: any write drops it (fs.copyFile's and
// fs.writeFile's too), and a replacement that kept it would run new code with the old file's
// privileges. keepAttrs copies every other extended attribute of the replaced file, as root too.
testIf(process.getuid?.() !== 0 ? 'needs root (setcap)' : skipReason(['cmd:setcap', 'cmd:getcap']), "copyFile, writeFile({ atomic }) and odirect cp as root over a file with file capabilities (setcap) and set-user-ID: the capability is not kept (as fs.copyFile's writes drop it), another extended attribute is, and the owner and mode as fs keeps them", async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, 'new program')
  fs.chmodSync(src, 0o4755)
  const CLI = path.join(here, '..', 'dist', 'cli.js')
  const forms: Record<string, (dst: string) => Promise<unknown>> = {
    'fs.copyFile (the yardstick)': (dst) => fs.promises.copyFile(src, dst),
    copyFile: (dst) => od.copyFile(src, dst),
    'writeFile atomic': (dst) => od.writeFile(dst, 'new program', { atomic: true }),
    'odirect cp': async (dst) => {
      const r = spawnSync(process.execPath, [CLI, 'cp', '-q', src, dst], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(r.stderr)
    },
  }
  for (const [form, run] of Object.entries(forms)) {
    const dst = path.join(dir, `prog-${form.replace(/\W+/g, '-')}`)
    fs.writeFileSync(dst, 'old program')
    fs.chownSync(dst, 1000, 1000)
    fs.chmodSync(dst, 0o4755)
    const cap = spawnSync('setcap', ['cap_net_raw+ep', dst], { encoding: 'utf8' })
    if (cap.status !== 0) return t.fail(`setcap: ${cap.stderr}`)
    if (!form.startsWith('fs.')) spawnSync('setfattr', ['-n', 'user.note', '-v', 'kept', dst])
    t.regex(spawnSync('getcap', [dst], { encoding: 'utf8' }).stdout, /cap_net_raw/, `${form}: the old file has the capability`)
    await run(dst)
    t.is(fs.readFileSync(dst, 'utf8'), 'new program', form)
    t.is(spawnSync('getcap', [dst], { encoding: 'utf8' }).stdout.trim(), '', `${form}: no capability on the new contents`)
    const st = fs.statSync(dst)
    t.deepEqual([st.uid, st.gid, st.mode & 0o7777], [1000, 1000, 0o4755], `${form}: owner, group and mode as fs leaves them (root keeps set-user-ID)`)
    if (!form.startsWith('fs.') && spawnSync('getfattr', ['--version']).status === 0) {
      t.regex(spawnSync('getfattr', ['-n', 'user.note', '--only-values', dst], { encoding: 'utf8' }).stdout, /^kept/, `${form}: another extended attribute kept`)
    }
  }
})

// Found: a filesystem mounted over DST's folder while the data is copied (the temp file is in the
// covered folder, the rename's path reaches the new mount: ENOENT). The error said "the temp file
// was removed", but its unlink by path reached the new mount too: the temp file stayed in the
// covered folder, out of reach until the unmount. No path reaches it now (an unlinkat would need a
// descriptor of the folder, held since the temp file's create); the error now says it was left,
// where, and why (src/fileops.ts removeTemp checks the descriptor's link count).
testIf(skipReason(['root', 'cmd:mount', 'cmd:umount']) ?? FAULTFS_REASON, "copyFile and writeFile({ atomic }) whose DST's folder gets a filesystem mounted over it while the data is written: ENOENT, nothing written into the new mount, and the error names the temp file left in the covered folder (was: 'the temp file was removed', and it was not)", async (t) => {
  const top = scratch()
  const dir = path.join(top, 'dir')
  fs.mkdirSync(dir)
  const dst = path.join(dir, 'dst')
  fs.writeFileSync(dst, 'old')
  const fx = must(faultFs({ size: 1 << 20, hold: 'held' }))
  t.teardown(() => fx.cleanup())
  const mount = (): boolean => {
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'wt-tests-s19b', dir], { encoding: 'utf8' })
    if (m.status !== 0) t.fail(`mount: ${m.stderr}`)
    return m.status === 0
  }
  t.teardown(() => void spawnSync('umount', [dir]))
  const check = (form: string, e: { code?: string; hint?: string } | undefined): void => {
    t.is(e?.code, 'ENOENT', `${form}: ${String(e)}`)
    t.deepEqual(fs.readdirSync(dir), [], `${form}: nothing written into the new mount`)
    spawnSync('umount', [dir])
    const temps = fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))
    t.is(temps.length, 1, `${form}: the temp file under the mount`)
    t.regex(e?.hint ?? '', new RegExp(`temp file ${path.join(dir, temps[0] ?? 'none')} could not be removed.*mounted over`), `${form}: the error names it and why`)
    t.is(fs.readFileSync(dst, 'utf8'), 'old', `${form}: DST untouched`)
    for (const n of temps) fs.rmSync(path.join(dir, n))
  }

  const p = od.copyFile(fx.file, dst).then(
    () => undefined,
    (e: { code?: string; hint?: string }) => e,
  )
  await fx.waitForHeld(1)
  if (!mount()) return
  fx.release()
  check('copyFile', await p)

  let mountNow: () => void = () => {}
  const asked = new Promise<void>((r) => (mountNow = r))
  let go: () => void = () => {}
  const mounted = new Promise<void>((r) => (go = r))
  async function* data(): AsyncGenerator<Buffer> {
    yield Buffer.alloc(1 << 20, 0x62)
    mountNow()
    await mounted
    yield Buffer.alloc(1 << 20, 0x63)
  }
  const w = od.writeFile(dst, data(), { atomic: true }).then(
    () => undefined,
    (e: { code?: string; hint?: string }) => e,
  )
  await asked
  if (!mount()) return
  go()
  check('writeFile atomic', await w)
})
