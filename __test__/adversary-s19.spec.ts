// Adversary pass of the nineteenth session: data trust where a replace meets filesystems and mounts
// (earlier passes: data changing under reads, full disks, RLIMIT_FSIZE, worker deaths, EMFILE,
// CLOEXEC, signal storms, aborts at every await point, close() under in-flight ops, hostile
// numbers, odd names, pseudo-files, what a replaced file keeps, temp names across workers, a
// failed stream's cut-back, the kernel's /tmp protections, folders moved mid-copy).
// 1. A destination that is a mount point (a file bind-mounted over it: a container's /etc/hosts,
//    a volume or a ConfigMap mounted as one file). Found: copyFile, writeFile({ atomic }) and
//    `odirect cp` wrote all of the data into a temp file before the rename failed EBUSY (a copy of
//    gigabytes read and written for nothing; a full disk said ENOSPC, not why). Now statx's
//    STATX_ATTR_MOUNT_ROOT (Linux 5.8) refuses it before any data is read or written
//    (crates/napi/src/xattr.rs, src/fileops.ts keepAttrs; writeFile's reservation moved after it,
//    src/files.ts). Decided: refused, not written in place: these calls promise the destination
//    whole or untouched, which writing in place cannot keep (the hint says how to write in place).
// 2. The exclusive replace (writeFile({ atomic, flag: 'wx' }), copyFile with COPYFILE_EXCL, `odirect
//    cp --no-clobber`) puts its temp file in place with link(2), which vfat and exFAT (USB sticks,
//    SD cards) do not have. This kernel has neither module, so a seccomp filter
//    (helpers/seccomp_deny.c -l) answers link(2) as they do (EPERM). Found: every exclusive replace
//    failed a bare "EPERM: operation not permitted, link" where fs.copyFile(COPYFILE_EXCL) writes
//    the file. Now crates/napi/src/paths.rs falls back to renameat2(RENAME_NOREPLACE), as
//    exclusive (EEXIST when a file appeared meanwhile); where the filesystem has that neither
//    (FUSE servers on libfuse 2: exfat-fuse, fusefat) the error says why and what to do
//    (src/fileops.ts tempError). Checked for real on exFAT through exfat-fuse (skipped without it),
//    and under power cuts (crashfs) on the fallback.
// 3. Found: a replaced file's group changed where fs keeps it (a set-group-ID folder, as root; a
//    member of the file's group, not root) (below).
// 4. Found: destinations named through /proc magic links (a deleted file's /proc/self/fd/N; a pipe
//    at /dev/stdout) (below).
// 5. Found: writeFile's data resized smaller or transferred while it was written (below).
// Attacked by hand, no fault: a bind-mounted DST reached through a symbolic link (EBUSY at statx); a link on a
// nosymfollow mount (the first stat fails ELOOP, as fs's open); exfat-fuse's plain replace,
// write stream and readFile.
// Nothing is timed: each check waits for its child or promise.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import * as od from '../dist/index.js'
import { faultFs, patternBuffer, seccompLauncher, skipReason, tmpfsDir } from './helpers/fixtures.js'
import { bytes, CRASH_REQS, crashSweep, describe as describeCrash, durable } from './helpers/crashbed.js'
import { fxTest, must } from './helpers/fxtest.js'
import { childRunner } from './helpers/child-result.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.join(here, '..', 'dist', 'cli.js')
const DIST = path.join(here, '..', 'dist', 'index.js')
const scratch = scratchDirs('s19')
const runChild = childRunner(path.join(here, 'adversary-s19'))

function tempsUnder(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((n) => n.includes('.odirect-tmp-')).map((n) => path.join(dir, n))
}

async function failure(p: Promise<unknown>): Promise<od.DirectIoError | undefined> {
  try {
    await p
    return undefined
  } catch (e) {
    if (e instanceof od.DirectIoError) return e
    throw e
  }
}

/** `mounted` bind-mounted over `dst` until the test ends (umount in its teardown). */
function bindMount(t: ExecutionContext, mounted: string, dst: string): boolean {
  const m = spawnSync('mount', ['--bind', mounted, dst], { encoding: 'utf8' })
  if (m.status !== 0) {
    t.fail(`mount --bind: ${m.stderr}`)
    return false
  }
  t.teardown(() => void spawnSync('umount', [dst]))
  return true
}

// ---------------------------------------------------------------------------------------
// 1. A destination that is a mount point, refused before any data

const MOUNT_REASON = skipReason(['root', 'cmd:mount', 'cmd:umount']) ?? FAULTFS_REASON

testIf(MOUNT_REASON, 'copyFile, writeFile({ atomic }) and odirect cp onto a bind-mounted file: EBUSY saying it is a mount point before any byte of the source is read or any data pulled (was: all of it copied into a temp file, then EBUSY at the rename)', async (t) => {
  const dir = scratch()
  const mounted = path.join(dir, 'mounted')
  fs.writeFileSync(mounted, 'mounted contents')
  const dst = path.join(dir, 'dst')
  fs.writeFileSync(dst, 'under the mount')
  if (!bindMount(t, mounted, dst)) return
  // The source on FUSE: its server counts every read request.
  const fx = must(faultFs({ size: 1024 * 1024 }))
  t.teardown(() => fx.cleanup())
  const untouched = (form: string): void => {
    t.is(fs.readFileSync(dst, 'utf8'), 'mounted contents', `${form}: the mounted file untouched`)
    t.deepEqual(tempsUnder(dir), [], `${form}: no temp file`)
  }
  const refused = (form: string, e: { code?: string; hint?: string } | undefined): void => {
    t.is(e?.code, 'EBUSY', `${form}: EBUSY (${String(e)})`)
    t.regex(e?.hint ?? '', /mount point.*before any data/, `${form}: the hint says why and that nothing was written`)
  }

  let progress = 0
  refused('copyFile', await failure(od.copyFile(fx.file, dst, { onProgress: () => void progress++ })))
  t.is(fx.stats().reads, 0, 'copyFile: not one read of the source')
  t.is(progress, 0, 'copyFile: no chunk copied')
  untouched('copyFile')

  let pulled = 0
  async function* data(): AsyncGenerator<Buffer> {
    for (let i = 0; i < 4; i++) {
      pulled++
      yield patternBuffer(i * 65536, 65536)
    }
  }
  refused('writeFile atomic (an async iterable)', await failure(od.writeFile(dst, data(), { atomic: true })))
  t.is(pulled, 0, 'writeFile atomic: no chunk of the data asked for')
  untouched('writeFile atomic (an async iterable)')
  refused('writeFile atomic (a string)', await failure(od.writeFile(dst, 'new contents', { atomic: true })))
  untouched('writeFile atomic (a string)')

  const j = spawnSync(process.execPath, [CLI, 'cp', '--json', fx.file, dst], { encoding: 'utf8' })
  t.is(j.status, 1, j.stderr)
  refused('odirect cp', (JSON.parse(j.stdout) as { error: { code: string; hint: string } }).error)
  t.is(fx.stats().reads, 0, 'odirect cp: not one read of the source')
  untouched('odirect cp')

  // Written in place where the caller did not ask for a replace: as fs.writeFile.
  await od.writeFile(dst, 'in place')
  t.is(fs.readFileSync(mounted, 'utf8'), 'in place', 'writeFile without atomic writes through the mount')
})

testIf(skipReason(['root', 'cmd:mount', 'cmd:umount']), 'writeFile({ atomic }) of more than the disk holds onto a bind-mounted file: EBUSY naming the mount point (was: ENOSPC from the reservation made first, "free space")', async (t) => {
  const small = must(tmpfsDir(1))
  t.teardown(() => small.cleanup())
  const mounted = path.join(small.dir, 'mounted')
  fs.writeFileSync(mounted, 'mounted contents')
  const dst = path.join(small.dir, 'dst')
  fs.writeFileSync(dst, 'under the mount')
  if (!bindMount(t, mounted, dst)) return
  const e = await failure(od.writeFile(dst, Buffer.alloc(4 * 1024 * 1024, 0x61), { atomic: true }))
  t.is(e?.code, 'EBUSY', String(e))
  t.regex(e?.hint ?? '', /mount point/)
  t.is(fs.readFileSync(dst, 'utf8'), 'mounted contents')
  t.deepEqual(tempsUnder(small.dir), [])
})

// ---------------------------------------------------------------------------------------
// 2. The exclusive replace on a filesystem without hard links

/** The argv prefix of the seccomp launcher with hard links refused (`seccomp_deny -l`): a filesystem without them. */
function nolink(): string[] {
  return [must(seccompLauncher()), '-l']
}

interface ExclusiveRow {
  form: string
  case: 'absent' | 'present' | 'meanwhile'
  err?: { code: string; hint: string; message: string }
  state: string
  temps: string[]
}

async function exclusiveRows(dir: string, wrapper: string[]): Promise<ExclusiveRow[]> {
  const r = await runChild<{ out: ExclusiveRow[] }>('exclusive.mjs', [dir, DIST, CLI], { argv: [...wrapper, process.execPath] })
  return r.out
}

/** What an exclusive replace must give where it can be made: DST new when absent; EEXIST and the other file untouched, else (cp -n: exit 0, untouched). */
function checkExclusive(t: ExecutionContext, rows: ExclusiveRow[], where: string): void {
  t.is(rows.length, 8, `${where}: every form and case ran`)
  for (const r of rows) {
    const label = `${where}: ${r.form}, DST ${r.case}`
    t.deepEqual(r.temps, [], `${label}: no temp file left`)
    if (r.case === 'absent') {
      t.is(r.err, undefined, `${label}: written (${r.err?.message})`)
      t.is(r.state, 'new', `${label}: DST is the new data`)
    } else if (r.form.includes('cp') && r.case === 'present') {
      t.is(r.err, undefined, `${label}: cp -n leaves it and exits 0 (${r.err?.message})`)
      t.is(r.state, 'old', `${label}: DST untouched`)
    } else {
      t.is(r.err?.code, 'EEXIST', `${label}: EEXIST (${r.err?.message})`)
      t.is(r.state, r.case === 'present' ? 'old' : 'theirs', `${label}: the other file untouched`)
    }
  }
}

test('exclusive replaces (writeFile atomic wx, copyFile COPYFILE_EXCL, odirect cp -n) on an ordinary filesystem: new when absent, EEXIST when present or made meanwhile (the yardstick of the next two)', async (t) => {
  checkExclusive(t, await exclusiveRows(scratch(), []), 'ext4 with hard links')
})

testIf(skipReason(['cc']), 'exclusive replaces where link(2) fails EPERM as on vfat/exFAT: new when absent, EEXIST when present or made meanwhile (renameat2 RENAME_NOREPLACE; was: a bare EPERM at link, nothing written)', async (t) => {
  checkExclusive(t, await exclusiveRows(scratch(), nolink()), 'no hard links')
  checkExclusive(t, await exclusiveRows(scratch(), [...nolink(), '-e', '38']), 'no hard links (ENOSYS, as some FUSE)')
})

testIf(skipReason(['cc']), 'exclusive replaces where neither link(2) nor RENAME_NOREPLACE exists (FUSE on libfuse 2): a typed error saying why and to write in place, DST absent or the other file untouched, no temp file (was: a bare EPERM)', async (t) => {
  const rows = await exclusiveRows(scratch(), [...nolink(), '-r'])
  t.is(rows.length, 8)
  for (const r of rows) {
    const label = `${r.form}, DST ${r.case}`
    t.deepEqual(r.temps, [], `${label}: no temp file left`)
    if (r.case === 'present') {
      // Seen before any data: EEXIST (cp -n: exit 0), as where links exist.
      t.is(r.state, 'old', label)
      if (!r.form.includes('cp')) t.is(r.err?.code, 'EEXIST', label)
      continue
    }
    // (A real filesystem finds a name taken meanwhile before its link: EEXIST, see the exfat-fuse
    // case; the filter answers first.)
    t.is(r.err?.code, 'EPERM', `${label}: ${r.err?.message}`)
    t.regex(r.err?.hint ?? '', /no hard links.*RENAME_NOREPLACE.*write it in place/, `${label}: the hint says why and what to do`)
    t.is(r.state, r.case === 'absent' ? 'absent' : 'theirs', `${label}: nothing written to DST`)
  }
})

/** An exFAT image (mkfs.exfat) on a loop device (exfat-fuse, as root, wants a block device) mounted with exfat-fuse until the test ends; undefined (failed) if it did not mount. */
function exfatFuse(t: ExecutionContext, sizeMiB: number): string | undefined {
  const top = scratch()
  const img = path.join(top, 'exfat.img')
  fs.writeFileSync(img, '')
  fs.truncateSync(img, sizeMiB * 1024 * 1024)
  const mk = spawnSync('mkfs.exfat', [img], { encoding: 'utf8' })
  if (mk.status !== 0) {
    t.fail(`mkfs.exfat: ${mk.stderr}`)
    return undefined
  }
  const lo = spawnSync('losetup', ['-f', '--show', img], { encoding: 'utf8' })
  if (lo.status !== 0) {
    t.fail(`losetup: ${lo.stderr}`)
    return undefined
  }
  const dev = lo.stdout.trim()
  const mnt = path.join(top, 'mnt')
  fs.mkdirSync(mnt)
  const m = spawnSync('mount.exfat-fuse', [dev, mnt], { encoding: 'utf8' })
  // Teardowns run last registered first: the unmount, then the loop device's detach.
  t.teardown(() => void spawnSync('losetup', ['-d', dev]))
  if (m.status !== 0) {
    t.fail(`mount.exfat-fuse: ${m.stderr}`)
    return undefined
  }
  t.teardown(() => void spawnSync('umount', [mnt]))
  return mnt
}

const EXFAT_REASON = skipReason(['root', 'fuse', 'loop', 'cmd:mkfs.exfat', 'cmd:mount.exfat-fuse', 'cmd:umount'])

testIf(EXFAT_REASON, 'exclusive replaces on exFAT through FUSE (exfat-fuse, libfuse 2: no hard links, no RENAME_NOREPLACE): the typed error saying why, nothing written to DST, no temp file; a plain replace works', async (t) => {
  const mnt = exfatFuse(t, 64)
  if (mnt === undefined) return
  const rows = await exclusiveRows(mnt, [])
  t.is(rows.length, 8)
  for (const r of rows) {
    const label = `exfat-fuse: ${r.form}, DST ${r.case}`
    t.deepEqual(r.temps, [], `${label}: no temp file left`)
    if (r.case === 'present') {
      t.is(r.state, 'old', label)
      continue
    }
    if (r.case === 'meanwhile') {
      // The kernel finds the name taken before it asks the filesystem to link: EEXIST, as exclusive.
      t.is(r.err?.code, 'EEXIST', `${label}: ${r.err?.message}`)
      t.is(r.state, 'theirs', `${label}: the other file untouched`)
      continue
    }
    t.is(r.err?.code, 'EPERM', `${label}: ${r.err?.message}`)
    t.regex(r.err?.hint ?? '', /no hard links.*RENAME_NOREPLACE.*write it in place/, `${label}: the hint says why and what to do`)
    t.is(r.state, 'absent', `${label}: nothing written to DST`)
  }
  // Replacing (rename over DST) needs neither: it works there.
  const dst = path.join(mnt, 'plain')
  fs.writeFileSync(dst, 'old')
  await od.writeFile(dst, patternBuffer(0, 100_000), { atomic: true })
  t.true(fs.readFileSync(dst).equals(patternBuffer(0, 100_000)), 'writeFile atomic replaced it')
  fs.writeFileSync(path.join(mnt, 'src'), patternBuffer(7, 300_000))
  await od.copyFile(path.join(mnt, 'src'), dst)
  t.true(fs.readFileSync(dst).equals(patternBuffer(7, 300_000)), 'copyFile replaced it')
  t.deepEqual(tempsUnder(mnt), [])
})

// The fallback's durability: README's row for the exclusive replace ("dst absent or whole; whole
// once it resolved / exited 0") on a filesystem without hard links, where the temp file is moved
// into place by renameat2(RENAME_NOREPLACE) and the directory synced. The power-cut bed
// (crashfs: a disk with a volatile write cache, cut at each mutating operation, torn sectors) with
// the workload in a child under nolink (crashfs has hard links; the filter takes them away).
const SRC_CRASH = bytes(200 * 1024 + 77, 3)

for (const form of ['writeFile atomic wx', 'odirect cp --no-clobber'] as const) {
  fxTest(`${form} without hard links (renameat2 RENAME_NOREPLACE), dst absent: after a power cut dst is absent or whole; whole once it exited 0`, [...CRASH_REQS, 'cc'], async (t) => {
    const [launcher, ...filter] = nolink()
    const r = await crashSweep({
      torn: true,
      maxPoints: 16,
      image: (d) => fs.writeFileSync(path.join(d, 'src'), SRC_CRASH),
      workload: async (root) => {
        const src = path.join(root, 'src')
        const dst = path.join(root, 'dst')
        const args =
          form === 'odirect cp --no-clobber'
            ? [process.execPath, CLI, 'cp', '--quiet', '--no-clobber', src, dst]
            : [process.execPath, '--input-type=module', '-e', `import * as fs from 'node:fs'; const od = await import(${JSON.stringify(DIST)}); await od.writeFile(process.argv[2], fs.readFileSync(process.argv[1]), { atomic: true, flag: 'wx' })`, src, dst]
        const c = spawnSync(launcher, [...filter, ...args], { encoding: 'utf8' })
        if (c.status !== 0) throw new Error(`${form} exited ${c.status}: ${c.stderr}`)
      },
      check: (run) => {
        if (!durable(run, 'src')?.equals(SRC_CRASH)) return 'src changed'
        const what = describeCrash(durable(run, 'dst'), { new: SRC_CRASH })
        if (run.outcome.ok && what !== 'new') return `exited 0 but dst is ${what}`
        if (what !== 'new' && what !== 'absent') return `dst is ${what}`
        return undefined
      },
    })
    t.log(`${form}: ${r.ops} ops, ${r.points.length + 1} cut points, ${r.runs} runs, acknowledged in ${r.acked}`)
    t.deepEqual(r.violations, [], `${form}: guarantee broken after a power cut`)
    t.true(r.ops >= 2 || process.env.CRASH_CUT !== undefined, 'the workload reached the disk')
    t.true(r.acked > 0, 'the workload was acknowledged in some run')
  })
}

// ---------------------------------------------------------------------------------------
// 3. The group of a replaced file

// fs.copyFile and fs.writeFile write the file in place: it keeps its owner and group. odirect's
// replacement is a new file, given the old one's owner and group when run as root (keepAttrs);
// found: (a) as root in a set-group-ID directory (a team's shared folder: chmod g+s), a file
// chgrp'd root to keep it from the team (root:root 0640) came out root:<team>, readable by the
// whole team: the temp file had the directory's group and the chown was skipped for root:root
// files; (b) as a member of the file's group (not root), in a shared folder without g+s, a
// group-writable file (root:team 0664) came out <me>:<my own group>: the rest of the team could
// no longer write it. Now the group is given wherever this process may give it (root, or a member
// of it), and only what differs is changed (crates/napi/src/xattr.rs, src/fileops.ts keepAttrs).
// The owner stays this process's when it is not root (a new file's; README).
const TEAM = 4242

/** A folder /var/tmp/odirect-s19-XXXX/shared of group TEAM with `mode`, traversable by anyone. */
function sharedFolder(mode: number): string {
  const top = scratch()
  fs.chmodSync(top, 0o755)
  const shared = path.join(top, 'shared')
  fs.mkdirSync(shared)
  fs.chownSync(shared, 0, TEAM)
  fs.chmodSync(shared, mode)
  return shared
}

testIf(process.getuid?.() !== 0 ? 'needs root' : undefined, "copyFile and writeFile({ atomic }) as root over root:root 0640 in a set-group-ID folder: the file stays root:root as fs leaves it (was: the folder's group, which could then read it)", async (t) => {
  const shared = sharedFolder(0o2775)
  const src = path.join(shared, 'src')
  fs.writeFileSync(src, 'new secret')
  fs.chmodSync(src, 0o640)
  fs.chownSync(src, 0, 0)
  const forms: Record<string, (dst: string) => Promise<unknown>> = {
    'fs.copyFile (the yardstick)': (dst) => fs.promises.copyFile(src, dst),
    copyFile: (dst) => od.copyFile(src, dst),
    'writeFile atomic': (dst) => od.writeFile(dst, 'new secret', { atomic: true }),
    'odirect cp': async (dst) => {
      const r = spawnSync(process.execPath, [CLI, 'cp', '-q', src, dst], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(r.stderr)
    },
  }
  for (const [form, run] of Object.entries(forms)) {
    const dst = path.join(shared, `secret-${form.replace(/\W+/g, '-')}`)
    fs.writeFileSync(dst, 'old secret')
    fs.chownSync(dst, 0, 0)
    fs.chmodSync(dst, 0o640)
    t.is(fs.statSync(dst).gid, 0, `${form}: the folder's g+s gave the file its group; chgrp root took it back`)
    await run(dst)
    const st = fs.statSync(dst)
    t.is(fs.readFileSync(dst, 'utf8'), 'new secret', form)
    t.deepEqual([st.uid, st.gid, st.mode & 0o7777], [0, 0, 0o640], `${form}: root:root 0640 kept`)
  }
})

const MEMBER_REASON = process.getuid?.() !== 0 ? 'needs root (to become uid 65534 in a group)' : skipReason(['cmd:setpriv'])

testIf(MEMBER_REASON, "copyFile and writeFile({ atomic }) by a member of a file's group (uid 65534, not root) in a shared folder: the file keeps its group as fs keeps it (was: the member's own group; the team lost write access)", async (t) => {
  const shared = sharedFolder(0o775)
  const src = path.join(shared, 'src')
  fs.writeFileSync(src, 'new plan')
  fs.chmodSync(src, 0o664)
  const script = `import * as fs from 'node:fs'
const od = await import(${JSON.stringify(DIST)})
const [src, shared] = process.argv.slice(1)
const out = {}
const forms = {
  'fs.writeFile': (dst) => fs.promises.writeFile(dst, 'new plan'),
  copyFile: (dst) => od.copyFile(src, dst),
  'writeFile atomic': (dst) => od.writeFile(dst, 'new plan', { atomic: true }),
}
for (const [k, f] of Object.entries(forms)) {
  const dst = shared + '/plan-' + k.replace(/\\W+/g, '-')
  try {
    await f(dst)
    const st = fs.statSync(dst)
    out[k] = { data: fs.readFileSync(dst, 'utf8'), uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 }
  } catch (e) { out[k] = { error: e.code + ' ' + e.message } }
}
console.log('RESULT ' + JSON.stringify(out))`
  for (const k of ['fs.writeFile', 'copyFile', 'writeFile atomic']) {
    const dst = path.join(shared, `plan-${k.replace(/\W+/g, '-')}`)
    fs.writeFileSync(dst, 'old plan')
    fs.chownSync(dst, 0, TEAM)
    fs.chmodSync(dst, 0o664)
  }
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', `--groups=${TEAM}`, process.execPath, '--input-type=module', '-e', script, src, shared], { encoding: 'utf8' })
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '))
  if (line === undefined) return t.fail(`child failed (${r.status}): ${r.stderr}`)
  const out = JSON.parse(line.slice(7)) as Record<string, { data?: string; uid?: number; gid?: number; mode?: number; error?: string }>
  for (const [k, o] of Object.entries(out)) {
    t.is(o.error, undefined, k)
    t.is(o.data, 'new plan', k)
    t.is(o.gid, TEAM, `${k}: the team's group kept`)
    t.is(o.mode, 0o664, `${k}: the mode kept`)
  }
  // fs in place keeps the owner; odirect's new file is this user's (README: the owner only as root).
  // (fs.copyFile is no yardstick here: its fchmod of a file this user does not own fails EPERM,
  // and libuv then unlinks the team's file.)
  t.is(out['fs.writeFile']?.uid, 0)
  t.is(out.copyFile?.uid, 65534)
})

// ---------------------------------------------------------------------------------------
// 4. Destinations named through /proc "magic links" (/proc/self/fd/N, /dev/fd/N, /dev/stdout)

// The kernel follows such a link to the open file itself; its text is a path only while the file
// has one. Found: (a) copyFile, writeFile({ atomic }) and `odirect cp` onto /proc/self/fd/N of a
// deleted file read the link's text ('/dir/victim (deleted)') as the path to replace: with
// { xattrs: false } (cp --no-xattrs) they made a new file of that name and resolved, the open file
// the caller named never got the data (fs writes it through the link; for a memfd,
// '/memfd:x (deleted)', that file is made in /); by default they failed ENOENT at listxattr
// saying the attributes "cannot be read; fs.copyFile would keep them". Now refused,
// ERR_ODIRECT_UNSUPPORTED, before any data (src/fileops.ts resolveLinks' `named`). (b) copyFile
// and `odirect cp` onto /dev/stdout when it is a pipe (`odirect cp f /dev/stdout | sha256sum`)
// failed ENOENT, as did bash's process substitution (`odirect cp f >(sha256sum)`, /dev/fd/63):
// the destination's links were read before the FIFO was written in place, and 'pipe:[N]' is no
// path; now written through the path as given (src/files.ts).
test('copyFile, writeFile({ atomic }) and odirect cp onto /proc/self/fd/N of a deleted file: ERR_ODIRECT_UNSUPPORTED, no file "NAME (deleted)" made, the open file untouched (was: a new file of that name got the data)', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, patternBuffer(3, 20_000))
  const victim = path.join(dir, 'victim')
  fs.writeFileSync(victim, 'the open file')
  const fd = fs.openSync(victim, 'r+')
  t.teardown(() => fs.closeSync(fd))
  fs.unlinkSync(victim)
  const link = `/proc/self/fd/${fd}`
  const leftovers = (): string[] => fs.readdirSync(dir).filter((n) => n !== 'src')
  const openFile = (): string => {
    const b = Buffer.alloc(100)
    return b.subarray(0, fs.readSync(fd, b, 0, 100, 0)).toString()
  }
  for (const [form, run] of Object.entries({
    copyFile: () => od.copyFile(src, link),
    'copyFile xattrs false': () => od.copyFile(src, link, { xattrs: false }),
    'writeFile atomic': () => od.writeFile(link, 'new', { atomic: true }),
    'writeFile atomic xattrs false': () => od.writeFile(link, 'new', { atomic: true, xattrs: false }),
  })) {
    const e = await failure(run())
    t.is(e?.code, 'ERR_ODIRECT_UNSUPPORTED', `${form}: ${String(e)}`)
    t.regex(e?.message ?? '', /no path to it/, form)
    t.deepEqual(leftovers(), [], `${form}: no file made next to it, no temp file`)
    t.is(openFile(), 'the open file', `${form}: the open file untouched`)
  }
  // The shell's form: a descriptor opened on a file since removed, named /dev/fd/3.
  const r = spawnSync('sh', ['-c', `exec 3<>"$1"; rm "$1"; "$2" "$3" cp -q --no-xattrs "$4" /dev/fd/3; echo "exit $?"`, 'sh', path.join(dir, 'other'), process.execPath, CLI, src], { encoding: 'utf8' })
  t.regex(r.stdout, /exit 1/, r.stderr)
  t.regex(r.stderr, /no path to it/)
  t.deepEqual(leftovers(), [], 'odirect cp: no file made')
  // Written in place (fs's way) it gets the data.
  await od.writeFile(link, 'in place')
  t.is(openFile(), 'in place')
})

test('copyFile and odirect cp onto /dev/stdout when it is a pipe: the bytes reach the reader (was: ENOENT, the link read as a path)', (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  const data = patternBuffer(5, 300_000)
  fs.writeFileSync(src, data)
  const out = path.join(dir, 'out')
  const script = `const od = await import(${JSON.stringify(DIST)}); await od.copyFile(process.argv[1], '/dev/stdout')`
  for (const [form, cmd] of Object.entries({
    copyFile: `{ "$1" --input-type=module -e "$4" "$2"; echo $? > "$3.status"; } | cat > "$3"`,
    'odirect cp': `{ "$1" "$5" cp -q "$2" /dev/stdout; echo $? > "$3.status"; } | cat > "$3"`,
  })) {
    fs.rmSync(out, { force: true })
    const r = spawnSync('sh', ['-c', cmd, 'sh', process.execPath, src, out, script, CLI], { encoding: 'utf8' })
    t.is(fs.readFileSync(`${out}.status`, 'utf8').trim(), '0', `${form}: ${r.stderr}`)
    t.true(fs.existsSync(out) && fs.readFileSync(out).equals(data), `${form}: the reader got the file`)
  }
})

// ---------------------------------------------------------------------------------------
// 5. writeFile's data losing its bytes while it is written

// The data's ArrayBuffer resized smaller (a resizable ArrayBuffer) or transferred while writeFile
// is writing it: the moment is setImmediate's, armed as an iterable yields its 64 MiB second
// chunk (the chunk's writes complete on later turns of the event loop). Found: writeFile resolved
// with the chunk written as far as it still reached (16 of 64 MiB), and with { atomic } the old
// file was replaced by that. node:fs throws a RangeError for one view shrunk mid-write and never
// settles for the iterable. Now ERR_ODIRECT_DETACHED, the old file untouched with { atomic }
// (src/files.ts whileWritten). A view shrunk before writeFile read any of it is written as it
// reads then, as node:fs writes it (adversary-s18); one transferred before: ERR_ODIRECT_DETACHED
// (was ERR_INVALID_ARG_VALUE, "Cannot perform Construct on a detached ArrayBuffer").
const RAB_REASON = typeof (ArrayBuffer.prototype as { resize?: unknown }).resize === 'function' ? undefined : 'no resizable ArrayBuffer in this runtime'

testIf(RAB_REASON, "writeFile (plain and { atomic }) whose data's ArrayBuffer is resized smaller or transferred while it is written: ERR_ODIRECT_DETACHED, the old file untouched with atomic (was: resolved with the part still reachable, 16 of 64 MiB, replacing the old file)", async (t) => {
  const dir = scratch()
  const MiB = 1024 * 1024
  type Resizable = ArrayBuffer & { resize(n: number): void }
  // Transferred (detached) as postMessage transfers it: ArrayBuffer.prototype.transfer is newer than Node 20.
  const detach = (b: Resizable): void => void structuredClone(b, { transfer: [b] })
  const cases = {
    'one view, transferred before it is read': { iterable: false, tracking: false, take: detach },
    "an iterable's 64 MiB chunk, resized while it is written": { iterable: true, tracking: false, take: (b: Resizable) => b.resize(MiB) },
    "an iterable's 64 MiB chunk, transferred while it is written": { iterable: true, tracking: false, take: detach },
  }
  for (const [what, c] of Object.entries(cases)) {
    for (const atomic of [false, true]) {
      const label = `${what}${atomic ? ', atomic' : ''}`
      const dst = path.join(dir, `out-${Object.keys(cases).indexOf(what)}-${atomic}`)
      fs.writeFileSync(dst, 'old contents')
      const rab = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => Resizable)(64 * MiB, { maxByteLength: 128 * MiB })
      const view = c.tracking ? new Uint8Array(rab) : new Uint8Array(rab, 0, 64 * MiB)
      view.fill(0x61)
      let taken = false
      const arm = (): void => {
        setImmediate(() => {
          c.take(rab)
          taken = true
        })
      }
      async function* chunks(): AsyncGenerator<Uint8Array> {
        yield Buffer.from('head')
        arm()
        yield view
      }
      if (!c.iterable) arm()
      const e = await failure(od.writeFile(dst, c.iterable ? chunks() : view, { atomic }))
      t.true(taken, `${label}: the buffer was taken while writeFile ran`)
      t.is(e?.code, 'ERR_ODIRECT_DETACHED', `${label}: ${String(e)} (the file: ${fs.statSync(dst).size} bytes)`)
      if (atomic) t.is(fs.readFileSync(dst, 'utf8'), 'old contents', `${label}: the old file untouched`)
      t.deepEqual(tempsUnder(dir), [], `${label}: no temp file`)
    }
  }
  // A view of an ordinary ArrayBuffer is written as it reads (adversary-s18's changing getter).
  const plain = path.join(dir, 'plain')
  await od.writeFile(plain, new Uint8Array(4096).fill(0x62), { atomic: true })
  t.is(fs.readFileSync(plain).length, 4096)
})
