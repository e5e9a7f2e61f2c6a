// Second adversary pass of the seventeenth session, on what it landed: copyFile /
// writeFile({ atomic }) / `odirect cp` keeping the replaced file's attributes, each compared with
// node:fs (which writes the destination in place).
// 1. An unprivileged user (uid 65534) replacing a file it may not write (root's, mode 0644; its
//    own, mode 0444) in a directory it may write: fs.copyFile and fs.writeFile fail EACCES at the
//    open and the file is untouched; odirect renamed its temp file over it (the rename needs only
//    the directory's write permission): the read-only file was replaced, and root's file became
//    nobody's. Now refused EACCES before any data (crates/napi/src/xattr.rs: access(W_OK) of DST).
// 2. A destination whose extended attributes fill its inode's space (ext4: one 4096-byte block)
//    in a directory with a default ACL: the temp file inherits an ACL the destination has not,
//    which took space the copied attributes needed: ENOSPC at the last fsetxattr, where
//    fs.copyFile succeeds. Now the inherited ACL is removed before the copy.
// 3. `odirect cp` text for the new errors (an attribute this user may not set, an immutable DST)
//    and `--no-xattrs` (copyFile's `xattrs: false`): the EPERM message named no attribute
//    ("check the permissions"), and cp had no way to waive them.
// 4. copyFile / `odirect cp` onto a kernel pseudo-file (below);
// 5. write streams (Node, web) onto a pseudo-file, and web streams onto a FIFO or /dev/null (below);
// 6. a write stream ending inside a block while another writer wrote past its end (below).
// Attacked without a fault found: xattr values of 64 KiB (tmpfs), 94 names filling an ext4 inode,
// names with bytes that are not UTF-8, newlines, 255-byte names; an ACL of 480 entries; a DST
// whose 64 KiB attribute is set and removed by another process during 600 replacements; security.*
// labels without an LSM; pseudo-files through writeFile with atomic and flush. Not attacked: vfat
// (this kernel has no vfat module).
// Nothing is timed: each check waits for its child or promise.
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import test, { type ExecutionContext } from 'ava'

import { copyFile, createWriteStream, writableWebStream, writeFile } from '../dist/index.js'
import { skipReason } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.ts'
import { testIf } from './helpers/skips.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.join(here, '..', 'dist', 'cli.js')
const INDEX = path.join(here, '..', 'dist', 'index.js')
const scratch = scratchDirs('advs17b')

const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
const NOBODY_REASON = process.getuid?.() !== 0 ? 'needs root (to become uid 65534)' : skipReason(['cmd:setpriv', 'cmd:python3'])
const ACL_REASON = skipReason(['cmd:python3', 'cmd:setfacl'])
const CHATTR_REASON = skipReason(['root', 'cmd:chattr'])

/** Runs node (a script's text, or a file and its arguments) as uid 65534 (`caps`: with these capabilities, ambient). */
function asNobody(args: string[], caps: string[] = []): { status: number | null; out: string; err: string } {
  const withCaps = caps.length === 0 ? [] : [`--inh-caps=${caps.map((c) => `+${c}`).join(',')}`, `--ambient-caps=${caps.map((c) => `+${c}`).join(',')}`]
  const r = spawnSync(NOBODY[0], [...NOBODY.slice(1), ...withCaps, process.execPath, ...args], { encoding: 'utf8' })
  return { status: r.status, out: r.stdout, err: r.stderr }
}

/** Each of odirect's replacing calls, as uid 65534: 'OK' or the error's code and syscall. */
function replaceAsNobody(src: string, dst: string, caps: string[] = []): Record<string, string> {
  const script = `import { copyFile, writeFile } from ${JSON.stringify(INDEX)}
import * as fs from 'node:fs'
const [src, dst] = process.argv.slice(1)
const out = {}
const calls = {
  'fs.copyFile': () => fs.promises.copyFile(src, dst),
  'fs.writeFile': () => fs.promises.writeFile(dst, 'theirs'),
  copyFile: () => copyFile(src, dst),
  'writeFile atomic': () => writeFile(dst, 'theirs', { atomic: true }),
  'writeFile atomic xattrs false': () => writeFile(dst, 'theirs', { atomic: true, xattrs: false }),
}
for (const [k, f] of Object.entries(calls)) {
  try { await f(); out[k] = 'OK' } catch (e) { out[k] = e.code + ' ' + e.syscall }
}
console.log('RESULT ' + JSON.stringify(out))`
  const r = asNobody(['--input-type=module', '-e', script, src, dst], caps)
  const line = r.out.split('\n').find((l) => l.startsWith('RESULT '))
  if (r.status !== 0 || line === undefined) throw new Error(`child failed (${r.status}): ${r.err}`)
  return JSON.parse(line.slice(7)) as Record<string, string>
}

const tempsIn = (dir: string): string[] => fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))

testIf(NOBODY_REASON, 'uid 65534 cannot replace a file it may not write (root-owned 0644, its own 0444) in a directory it may write: EACCES as fs, file untouched', (t) => {
  const dir = scratch()
  fs.chmodSync(dir, 0o777)
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, 'new contents')
  fs.chmodSync(src, 0o644)
  const cases = [
    { name: 'roots', uid: 0, mode: 0o644 },
    { name: 'own-readonly', uid: 65534, mode: 0o444 },
  ]
  for (const c of cases) {
    const dst = path.join(dir, c.name)
    fs.writeFileSync(dst, 'old contents')
    fs.chownSync(dst, c.uid, c.uid)
    fs.chmodSync(dst, c.mode)
    const got = replaceAsNobody(src, dst)
    t.deepEqual(
      got,
      {
        'fs.copyFile': 'EACCES copyfile',
        'fs.writeFile': 'EACCES open',
        copyFile: 'EACCES open',
        'writeFile atomic': 'EACCES open',
        'writeFile atomic xattrs false': 'EACCES open',
      },
      c.name,
    )
    const cp = asNobody([CLI, 'cp', src, dst])
    t.is(cp.status, 1, `${c.name}: odirect cp ${cp.err}`)
    t.regex(cp.err, /EACCES/, c.name)
    const st = fs.statSync(dst)
    t.is(fs.readFileSync(dst, 'utf8'), 'old contents', c.name)
    t.is(st.uid, c.uid, c.name)
    t.is(st.mode & 0o7777, c.mode, c.name)
    t.deepEqual(tempsIn(dir), [], c.name)
  }
  // A file it may write (another user's, mode 0666): replaced, as fs.writeFile writes it (its
  // owner becomes the writer's: only root can keep it, README). fs.copyFile writes it, then its
  // fchmod to the source's mode fails EPERM (not the owner).
  const open = path.join(dir, 'writable')
  fs.writeFileSync(open, 'old contents')
  fs.chmodSync(open, 0o666)
  const got = replaceAsNobody(src, open)
  t.deepEqual(got, { 'fs.copyFile': 'EPERM copyfile', 'fs.writeFile': 'OK', copyFile: 'OK', 'writeFile atomic': 'OK', 'writeFile atomic xattrs false': 'OK' })
  t.is(fs.readFileSync(open, 'utf8'), 'theirs')
  // With CAP_DAC_OVERRIDE (ambient), as its open may, it writes root's 0644 file: the check is
  // of the effective ids and capabilities (faccessat2 AT_EACCESS), not the real uid's.
  const roots = path.join(dir, 'roots-cap')
  fs.writeFileSync(roots, 'old contents')
  fs.chmodSync(roots, 0o644)
  const capped = replaceAsNobody(src, roots, ['dac_override'])
  t.deepEqual(capped, { 'fs.copyFile': 'EPERM copyfile', 'fs.writeFile': 'OK', copyFile: 'OK', 'writeFile atomic': 'OK', 'writeFile atomic xattrs false': 'OK' })
})

/** Fills `file`'s extended-attribute space with 20-byte user.* values; returns how many fit. */
function fillXattrs(file: string): number {
  const py = 'import os,sys\nn=0\nwhile n < 5000:\n  try: os.setxattr(sys.argv[1], "user.n%05d"%n, bytes([n%251])*20)\n  except OSError: break\n  n+=1\nprint(n)'
  const r = spawnSync('python3', ['-c', py, file], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(r.stderr)
  return Number(r.stdout.trim())
}

function userXattrs(file: string): string {
  const py = 'import os,sys; print(sorted((n, os.getxattr(sys.argv[1], n).hex()) for n in os.listxattr(sys.argv[1]) if n.startswith("user.")))'
  const r = spawnSync('python3', ['-c', py, file], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(r.stderr)
  return r.stdout
}

testIf(ACL_REASON, 'ext4: a destination whose xattrs fill the inode, in a directory with a default ACL, is replaced with all of them (as fs.copyFile)', async (t) => {
  const dir = scratch() // /var/tmp: ext4 on the CI machine (xattrs of one inode share a block)
  const acl = spawnSync('setfacl', ['-d', '-m', 'u:65534:rwx,u:1:rw,u:2:rw,u:3:rw,u:4:rw,g:5:r,g:6:r', dir], { encoding: 'utf8' })
  if (acl.status !== 0) {
    // ACL_REASON found setfacl and ext4 here: a refusal is a failure, never a silent pass.
    t.fail(`setfacl -d: ${acl.stderr}`)
    return
  }
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, 'new')
  const forms: Array<[string, (d: string) => Promise<unknown>]> = [
    ['fs.copyFile', (d) => fs.promises.copyFile(src, d)],
    ['copyFile', (d) => copyFile(src, d)],
    ['writeFile atomic', (d) => writeFile(d, 'new', { atomic: true })],
  ]
  let filled = 0
  for (const [name, f] of forms) {
    const dst = path.join(dir, `dst-${name.replace(/ /g, '-')}`)
    fs.writeFileSync(dst, 'old')
    spawnSync('setfacl', ['-b', dst]) // the destination has no ACL
    filled = fillXattrs(dst)
    const before = userXattrs(dst)
    await f(dst)
    t.is(fs.readFileSync(dst, 'utf8'), 'new', name)
    t.is(userXattrs(dst), before, name)
  }
  t.log(`${filled} user.* attributes of 20 bytes filled each destination`)
  t.deepEqual(tempsIn(dir), [])
})

testIf(NOBODY_REASON, 'odirect cp: an attribute uid 65534 may not set is named (with --no-xattrs), --no-xattrs replaces without them', (t) => {
  const dir = scratch()
  fs.chmodSync(dir, 0o777)
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, 'new')
  const dst = path.join(dir, 'dst')
  fs.writeFileSync(dst, 'old')
  fs.chownSync(dst, 65534, 65534)
  const set = spawnSync('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "security.advb", b"label"); os.setxattr(sys.argv[1], "user.kept", b"v")', dst], { encoding: 'utf8' })
  t.is(set.status, 0, set.stderr)
  const refused = asNobody([CLI, 'cp', src, dst])
  t.is(refused.status, 1)
  t.regex(refused.err, /security\.advb/)
  t.regex(refused.err, /--no-xattrs/)
  t.notRegex(refused.err, /check the permissions/)
  t.is(fs.readFileSync(dst, 'utf8'), 'old')
  const json = asNobody([CLI, 'cp', '--json', src, dst])
  t.is(json.status, 1)
  t.regex(JSON.parse(json.out).error.hint as string, /--no-xattrs/)
  const waived = asNobody([CLI, 'cp', '--no-xattrs', '-q', src, dst])
  t.is(waived.status, 0, waived.err)
  t.is(fs.readFileSync(dst, 'utf8'), 'new')
  t.is(userXattrs(dst), '[]\n')
  t.deepEqual(tempsIn(dir), [])
})

testIf(CHATTR_REASON, 'odirect cp onto an immutable or append-only DST: the message says which and how to lift it', (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, 'new')
  for (const [flag, word] of [
    ['i', 'immutable'],
    ['a', 'append-only'],
  ]) {
    const dst = path.join(dir, `dst-${flag}`)
    fs.writeFileSync(dst, 'old')
    const on = spawnSync('chattr', [`+${flag}`, dst], { encoding: 'utf8' })
    if (on.status !== 0) {
      t.log(`chattr +${flag}: ${on.stderr}`)
      continue
    }
    try {
      const r = spawnSync(process.execPath, [CLI, 'cp', src, dst], { encoding: 'utf8' })
      t.is(r.status, 1)
      t.regex(r.stderr, new RegExp(`EPERM.*${word}.*chattr -${flag}`))
      t.notRegex(r.stderr, /check the permissions/)
    } finally {
      spawnSync('chattr', [`-${flag}`, dst])
    }
    t.is(fs.readFileSync(dst, 'utf8'), 'old')
  }
})

// 4. copyFile / `odirect cp` onto a kernel pseudo-file (a cgroup control, /proc/self/comm, a sysfs
//    attribute): writeFile writes these in place, in sequence, as node:fs does; copyFile made a
//    temp file next to it (ENOENT "the directory /proc/self does not exist", EACCES "may not
//    create files in /sys/...") where fs.copyFile writes the file (its value set, or the kernel's
//    own EINVAL for a value it refuses; /proc/self/comm: fs.copyFile fails EPERM at its fchmod,
//    fs.writeFile sets it). Now copyFile writes them as writeFile does.
const CG_REASON = skipReason(['root', 'cmd:mount', 'fs:cgroup2'])

/** A cgroup v2 hierarchy mounted in a scratch directory, and a group of its own in it (removed after). */
async function withCgroup(t: ExecutionContext, fn: (group: string, dir: string) => Promise<void>): Promise<void> {
  const dir = scratch('/tmp')
  const mnt = path.join(dir, 'cg')
  fs.mkdirSync(mnt)
  const m = spawnSync('mount', ['-t', 'cgroup2', 'none', mnt], { encoding: 'utf8' })
  if (m.status !== 0) {
    // CG_REASON found root, mount and cgroup2 here: a refused mount is a failure, never a silent pass.
    t.fail(`mount -t cgroup2: ${m.stderr}`)
    return
  }
  const group = path.join(mnt, `odirect-${path.basename(dir)}`)
  try {
    fs.mkdirSync(group)
    await fn(group, dir)
  } finally {
    try {
      fs.rmdirSync(group)
    } finally {
      spawnSync('umount', [mnt])
    }
  }
}

testIf(CG_REASON, 'copyFile, writeFile and odirect cp onto a cgroup v2 control file: written in place (value set), a refused value EINVAL with the file untouched', (t) =>
  withCgroup(t, async (group, dir) => {
    const knob = path.join(group, 'cgroup.max.depth')
    t.is(fs.readFileSync(knob, 'utf8'), 'max\n')
    const val = (s: string): string => {
      const f = path.join(dir, `v${s.trim()}`)
      fs.writeFileSync(f, s)
      return f
    }
    const r = await copyFile(val('2\n'), knob)
    t.is(fs.readFileSync(knob, 'utf8'), '2\n')
    t.is(r.bytes, 2)
    t.false(r.destination.direct)
    await writeFile(knob, '4\n', { atomic: true })
    t.is(fs.readFileSync(knob, 'utf8'), '4\n')
    const cp = spawnSync(process.execPath, [CLI, 'cp', '-q', val('5\n'), knob], { encoding: 'utf8' })
    t.is(cp.status, 0, cp.stderr)
    t.is(fs.readFileSync(knob, 'utf8'), '5\n')
    // A value the kernel refuses: its error, as fs.copyFile's, and the value as it was.
    const ref = await fs.promises.copyFile(val('bogus\n'), knob).then(
      () => 'OK',
      (e: NodeJS.ErrnoException) => e.code,
    )
    t.is(ref, 'EINVAL')
    const e = await t.throwsAsync(copyFile(val('bogus\n'), knob))
    t.is((e as { code?: string }).code, 'EINVAL')
    const bad = spawnSync(process.execPath, [CLI, 'cp', val('bogus\n'), knob], { encoding: 'utf8' })
    t.is(bad.status, 1)
    t.regex(bad.stderr, /EINVAL/)
    t.is(fs.readFileSync(knob, 'utf8'), '5\n')
    // verify would read the kernel's value back, not the data: refused before any write.
    const v = await t.throwsAsync(copyFile(val('7\n'), knob, { verify: true }))
    t.is((v as { code?: string }).code, 'ERR_ODIRECT_UNSUPPORTED')
    t.is(fs.readFileSync(knob, 'utf8'), '5\n')
    t.deepEqual(tempsIn(group), [])
  }),
)

// 5. A Node write stream onto a pseudo-file (createWriteStream(knob).end('3\n'), as with
//    fs.createWriteStream): refused EINVAL "the cgroup2 filesystem refused O_DIRECT" by default;
//    with direct 'prefer' written as a padded block of 4096 bytes (the kernel parsed '3\n' and
//    NULs; a refused value's error spoke of O_DIRECT alignment), then an fdatasync that procfs
//    fails EINVAL. Now written in place, in sequence, as a FIFO's (src/streams/node.ts).
testIf(CG_REASON, 'createWriteStream onto a cgroup v2 control file: the value set (default and direct prefer), a refused value EINVAL with the file untouched, as fs', (t) =>
  withCgroup(t, async (group) => {
    const knob = path.join(group, 'cgroup.max.depth')
    const write = (s: fs.WriteStream | NodeJS.WritableStream, v: string): Promise<string> =>
      pipeline(Readable.from([Buffer.from(v)]), s).then(
        () => 'OK',
        (e: NodeJS.ErrnoException) => `${e.code}`,
      )
    t.is(await write(createWriteStream(knob), '3\n'), 'OK')
    t.is(fs.readFileSync(knob, 'utf8'), '3\n')
    t.is(await write(createWriteStream(knob, { direct: 'prefer' }), '6\n'), 'OK')
    t.is(fs.readFileSync(knob, 'utf8'), '6\n')
    t.is(await write(fs.createWriteStream(knob), 'bogus\n'), 'EINVAL')
    t.is(await write(createWriteStream(knob), 'bogus\n'), 'EINVAL')
    t.is(fs.readFileSync(knob, 'utf8'), '6\n')
    // The web stream too (was EINVAL "the 0x63677270 filesystem refused O_DIRECT").
    const web = async (v: string): Promise<string> => {
      const w = writableWebStream(knob).getWriter()
      try {
        await w.write(Buffer.from(v))
        await w.close()
        return 'OK'
      } catch (e) {
        return `${(e as NodeJS.ErrnoException).code}`
      }
    }
    t.is(await web('7\n'), 'OK')
    t.is(fs.readFileSync(knob, 'utf8'), '7\n')
    t.is(await web('bogus\n'), 'EINVAL')
    t.is(fs.readFileSync(knob, 'utf8'), '7\n')
  }),
)

test.serial('writableWebStream onto /dev/null and a FIFO: written in sequence, as createWriteStream (was EINVAL: O_DIRECT refused)', async (t) => {
  const w = writableWebStream('/dev/null').getWriter()
  await w.write(Buffer.alloc(10000, 1))
  await w.write(new Uint16Array(7))
  const fds = (): number =>
    fs.readdirSync('/proc/self/fd').filter((n) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${n}`) === '/dev/null'
      } catch {
        return false // the directory's own descriptor, gone
      }
    }).length
  const open = fds()
  await t.throwsAsync(w.write('text' as unknown as Uint8Array), { code: 'ERR_INVALID_ARG_TYPE' })
  t.is(fds(), open - 1, 'the errored stream closed its /dev/null')
  const dir = scratch()
  const fifo = path.join(dir, 'fifo')
  const mk = spawnSync('mkfifo', [fifo])
  if (mk.status !== 0) return
  const reading = fs.promises.readFile(fifo) // the reader opens first: node:fs's pool, not this thread
  const f = writableWebStream(fifo).getWriter()
  await f.write(Buffer.from('through '))
  await f.write(Buffer.from('a pipe'))
  await f.close()
  t.is((await reading).toString(), 'through a pipe')
})

test('copyFile onto /proc/self/comm (a child process): its name set, as fs.writeFile sets it', (t) => {
  const dir = scratch()
  const src = path.join(dir, 'name')
  fs.writeFileSync(src, 'odirect-advb')
  const script = `import { copyFile } from ${JSON.stringify(INDEX)}
import * as fs from 'node:fs'
let r
try { await copyFile(process.argv[1], '/proc/self/comm'); r = 'OK' } catch (e) { r = e.code + ' ' + e.message }
console.log('RESULT ' + JSON.stringify({ r, comm: fs.readFileSync('/proc/self/comm', 'utf8') }))`
  const c = spawnSync(process.execPath, ['--input-type=module', '-e', script, src], { encoding: 'utf8' })
  const line = c.stdout.split('\n').find((l) => l.startsWith('RESULT '))
  t.truthy(line, c.stderr)
  t.deepEqual(JSON.parse((line as string).slice(7)), { r: 'OK', comm: 'odirect-advb\n' })
})

// 6. A write stream ending inside a block (its last block padded with zeros, then the file cut to
//    its end) while another writer wrote past that end after the stream opened: fs's stream writes
//    only its own bytes. odirect's finish cut the file to the stream's end (the size it had at the
//    open, or the stream's end), dropping another writer's later block (a second stream of the
//    same file, a handle), and its padded last block wrote zeros over another writer's bytes in
//    that block. Now the size at the finish decides: a file grown past the stream's end keeps its
//    length, and the last block is read back first (src/streams/core.ts finish).
type Opener = (p: string) => { write: (b: Buffer) => Promise<void>; end: () => Promise<void>; opened: Promise<void> }

const STREAMS: Array<[string, Opener]> = [
  [
    'Node stream',
    (p) => {
      const s = createWriteStream(p)
      return {
        opened: once(s, 'ready').then(() => {}),
        write: (b) => new Promise<void>((resolve, reject) => s.write(b, (e) => (e ? reject(e) : resolve()))),
        end: () => new Promise<void>((resolve, reject) => {
          s.once('error', reject)
          s.end(() => resolve())
        }),
      }
    },
  ],
  [
    'web stream',
    (p) => {
      const w = writableWebStream(p).getWriter()
      return { opened: w.ready, write: (b) => w.write(b), end: () => w.close() }
    },
  ],
]

for (const [name, open] of STREAMS) {
  test(`${name} ending inside a block keeps another writer's later block and its bytes in that last block (as fs's stream)`, async (t) => {
    const dir = scratch()
    const p = path.join(dir, 'shared')
    const s = open(p)
    await s.opened
    await s.write(Buffer.alloc(1000, 0x41)) // held: less than a block
    // Another writer, after the stream's open: a later block, and bytes inside the stream's last block.
    const fd = fs.openSync(p, 'r+')
    fs.writeSync(fd, Buffer.alloc(4096, 0x42), 0, 4096, 8192)
    // Right after the stream's 1000 bytes: inside its last block whatever the block size (512, 4096).
    fs.writeSync(fd, Buffer.alloc(20, 0x43), 0, 20, 1002)
    fs.closeSync(fd)
    await s.end()
    const got = fs.readFileSync(p)
    t.is(got.length, 12288)
    t.true(got.subarray(0, 1000).every((x) => x === 0x41))
    t.true(got.subarray(1000, 1002).every((x) => x === 0))
    t.true(got.subarray(1002, 1022).every((x) => x === 0x43), 'the other writer\'s bytes in the last block')
    t.true(got.subarray(1022, 8192).every((x) => x === 0))
    t.true(got.subarray(8192).every((x) => x === 0x42), 'the other writer\'s later block')
  })
}
