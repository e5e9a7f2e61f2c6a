// Adversary pass of the fourteenth session, as a new user and an attacker would meet odirect:
// 1. a block device written in place (copyFile, `odirect cp`, writeFile, write streams) with data
//    that ends inside one of its blocks: the device's bytes after the data must stay as they were,
//    as `cp`, `dd conv=notrunc` and node:fs leave them (a boot sector of 446 bytes must not wipe
//    the partition table after it);
// 2. a destination that is a symbolic link (copyFile, writeFile({ atomic }), `odirect cp`): the
//    data goes to the file the link names and the link stays a link, as node:fs's copyFile and
//    writeFile, GNU cp and npm's write-file-atomic do; a link to the source is the same file;
// 3. RLIMIT_FSIZE (`ulimit -f`, SIGXFSZ ignored: writes past the limit fail EFBIG) in Node, Bun
//    and Deno children: data that fits under the limit is written although its last block,
//    padded, would cross it; data that does not fit fails EFBIG, typed, with what was confirmed
//    really in the file and no temp file left;
// 4. files of odd shapes (empty, 1 byte, a block and a byte, holes at both ends, data at both
//    ends) copied onto ext4 with 1 KiB blocks on a 512-byte-sector device, xfs on a
//    4096-byte-sector device and tmpfs, by copyFile and `odirect cp`;
// 5. a worker terminated in the middle of copyFile, writeFile({ atomic }), writeMany (typed and
//    array, windowed), a read stream or a write stream, in Node, Bun and Deno;
// 6. one handle closed three times at once (and from a stream's 'data') with every kind of op in
//    flight, its descriptor number taken at once by another file;
// 7. the CLI's every command with bad arguments;
// 8. power cuts (crashfs) under writeFile({ atomic }) and copyFile onto a symbolic link;
// 9. the README's complete programs pasted into a user's project, in Node 22, Bun and Deno;
// 10. a write stream, writeMany and writeFile near a full ext4 and xfs;
// 11. process.exit() while copyFile, a write stream or writeMany has its I/O held in FUSE;
// 12. mutants: copyFile, write streams and writeFile({ flush }) without a sync fail the cut checks;
// 13. run as root, replacing another user's file keeps its owner.
// Every check waits on an event (a promise, a child's exit); nothing is timed.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { stripVTControlCharacters } from 'node:util'

import test from 'ava'

import * as od from '../dist/index.js'
import { native } from '../dist/src/native.js'
import { CRASH_REQS, crashSweep, describe, durable, type SweepOptions } from './helpers/crashbed.ts'
import { faultFs, isSkip, type LoopFs, loopDevice, loopFs, skipReason, type Skip, tmpfsDir } from './helpers/fixtures.ts'
import { must } from './helpers/fxtest.ts'
import { childLines } from './helpers/child-lines.ts'
import { runtimePath, runtimes } from './helpers/runtimes.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const CLI = path.join(here, '..', 'dist', 'cli.js')
const KiB = 1024
const MiB = 1024 * KiB
const scratch = scratchDirs('s14')
const temps = (dir: string): string[] => fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))

/** `len` bytes of `dev` from `pos`, read with node:fs (the page cache is invalidated by direct writes). */
function readDev(dev: string, pos: number, len: number): Buffer {
  const b = Buffer.alloc(len)
  const fd = fs.openSync(dev, 'r')
  try {
    fs.readSync(fd, b, 0, len, pos)
  } finally {
    fs.closeSync(fd)
  }
  return b
}

/** Fills the first `len` bytes of `dev` with `byte` and flushes them. */
function fillDev(dev: string, len: number, byte: number): void {
  const fd = fs.openSync(dev, 'r+')
  try {
    fs.writeSync(fd, Buffer.alloc(len, byte), 0, len, 0)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

// ---------------------------------------------------------------------------------------
// 1. Block devices written in place: the bytes after the data, in its last block, are kept.

const LOOP_REASON = skipReason(['root', 'loop', 'cmd:blockdev'])
const OLD = 0xee

for (const sector of [512, 4096] as const) {
  testIf(LOOP_REASON, `a raw ${sector}-byte-sector block device written in place with data ending inside a block (446, 4096 + 446, 3 sectors + 17 bytes) by copyFile, odirect cp, writeFile (atomic or not), createWriteStream 'r+' and writableWebStream: the device's bytes after the data are kept, as cp, dd conv=notrunc and node:fs keep them`, async (t) => {
    const dev = must(loopDevice(sector, 4))
    t.teardown(() => dev.cleanup())
    const dir = scratch()
    const span = 64 * KiB
    const writers: Array<[string, (data: Buffer, src: string) => Promise<void>]> = [
      ['copyFile', async (_d, src) => void (await od.copyFile(src, dev.device))],
      [
        'odirect cp',
        async (_d, src) => {
          const r = spawnSync(process.execPath, [CLI, 'cp', '--quiet', src, dev.device], { encoding: 'utf8' })
          if (r.status !== 0) throw new Error(`odirect cp exited ${r.status}: ${r.stderr}`)
        },
      ],
      ['writeFile', async (d) => void (await od.writeFile(dev.device, d))],
      ['writeFile atomic', async (d) => void (await od.writeFile(dev.device, d, { atomic: true }))],
      ["createWriteStream 'r+'", (d) => pipeline(Readable.from([d]), od.createWriteStream(dev.device, { flags: 'r+' }))],
      [
        'writableWebStream',
        async (d) => {
          const w = od.writableWebStream(dev.device, { flags: 'r+' }).getWriter()
          await w.write(d)
          await w.close()
        },
      ],
    ]
    for (const len of [446, 4096 + 446, 3 * sector + 17]) {
      for (const [name, write] of writers) {
        fillDev(dev.device, span, OLD)
        const data = randomBytes(len)
        const src = path.join(dir, `src-${len}`)
        fs.writeFileSync(src, data)
        await write(data, src)
        const back = readDev(dev.device, 0, span)
        t.true(back.subarray(0, len).equals(data), `${name}, ${len} bytes: the data`)
        const firstChanged = back.subarray(len).findIndex((b) => b !== OLD)
        t.is(firstChanged, -1, `${name}, ${len} bytes: the device's byte ${len + firstChanged} after the data was overwritten (0x${back[len + firstChanged]?.toString(16)})`)
        t.true(fs.statSync(dev.device).isBlockDevice())
      }
    }
    t.deepEqual(temps(path.dirname(dev.device)), [])
  })
}

// createWriteStream(device) with its default flags 'w' opened the device write-only, then its
// finish read the device's last block to keep the bytes after the data on that write-only handle:
// ERR_ODIRECT_FLAGS, the last block never written. A device opened 'w' is now reopened 'r+'
// (src/streams/core.ts acquire), as writeFile does.
const wstreamDevice = LOOP_REASON === undefined ? test : test.skip
wstreamDevice(`createWriteStream(blockDevice) with its default flags ('w') and data ending inside a block: written, the device's bytes after the data kept`, async (t) => {
  const dev = must(loopDevice(512, 4))
  t.teardown(() => dev.cleanup())
  fillDev(dev.device, 8192, OLD)
  const data = randomBytes(446)
  await pipeline(Readable.from([data]), od.createWriteStream(dev.device))
  const back = readDev(dev.device, 0, 8192)
  t.true(back.subarray(0, 446).equals(data))
  t.is(back.subarray(446).findIndex((b) => b !== OLD), -1)
})

// ---------------------------------------------------------------------------------------
// 2. Destinations that are symbolic links.

test('copyFile, writeFile({ atomic }) and odirect cp onto a symbolic link write the file it names and leave the link a link (as node:fs copyFile/writeFile and GNU cp); a dangling link gets its file created; a link to the source is the same file', async (t) => {
  const dir = scratch()
  const other = scratch()
  const src = path.join(dir, 'src.bin')
  const data = randomBytes(3 * 4096 + 100)
  fs.writeFileSync(src, data)
  // What node:fs does, for reference: the link stays, its target gets the data.
  const fsTarget = path.join(other, 'fs-target')
  fs.writeFileSync(fsTarget, 'old')
  fs.symlinkSync(fsTarget, path.join(dir, 'fs-link'))
  await fs.promises.copyFile(src, path.join(dir, 'fs-link'))
  t.true(fs.lstatSync(path.join(dir, 'fs-link')).isSymbolicLink(), 'node:fs keeps the link')
  t.true(fs.readFileSync(fsTarget).equals(data), 'node:fs writes the target')

  const cases: Array<[string, (link: string) => Promise<void>, Buffer]> = [
    ['copyFile', async (l) => void (await od.copyFile(src, l)), data],
    ['copyFile verify', async (l) => void (await od.copyFile(src, l, { verify: true })), data],
    ['writeFile atomic', (l) => od.writeFile(l, 'new text\n', { atomic: true }), Buffer.from('new text\n')],
    [
      'odirect cp',
      async (l) => {
        const r = spawnSync(process.execPath, [CLI, 'cp', '--quiet', src, l], { encoding: 'utf8' })
        if (r.status !== 0) throw new Error(`odirect cp exited ${r.status}: ${r.stderr}`)
      },
      data,
    ],
  ]
  for (const [name, write, want] of cases) {
    for (const relative of [false, true]) {
      for (const dangling of [false, true]) {
        const tag = `${name.replace(/ /g, '-')}-${relative ? 'rel' : 'abs'}-${dangling ? 'dangling' : 'existing'}`
        const target = path.join(other, `target-${tag}`)
        if (!dangling) fs.writeFileSync(target, 'the old contents')
        const link = path.join(dir, `link-${tag}`)
        fs.symlinkSync(relative ? path.relative(dir, target) : target, link)
        await write(link)
        const what = `${name} onto a ${relative ? 'relative' : 'absolute'} link to ${dangling ? 'a missing' : 'an existing'} file`
        t.true(fs.lstatSync(link).isSymbolicLink(), `${what}: the link is still a link`)
        t.true(fs.existsSync(target) && fs.readFileSync(target).equals(want), `${what}: the file it names has the data`)
        t.deepEqual(temps(dir), [], what)
        t.deepEqual(temps(other), [], what)
      }
    }
  }
  // A relative link reached through a symbolic link to its directory: its '..' is taken from where
  // the link really is (as the kernel takes it), not from the path's text.
  fs.mkdirSync(path.join(other, 'real', 'a'), { recursive: true })
  fs.mkdirSync(path.join(other, 'real', 'b'))
  fs.symlinkSync(path.join(other, 'real', 'a'), path.join(dir, 'A'))
  fs.symlinkSync('../b/t', path.join(other, 'real', 'a', 'l'))
  await od.copyFile(src, path.join(dir, 'A', 'l'))
  t.true(fs.readFileSync(path.join(other, 'real', 'b', 't')).equals(data), "copyFile through A/l: real/b/t has the copy")
  t.false(fs.existsSync(path.join(dir, 'b')), 'nothing made where a lexical ".." would point')
  t.true(fs.lstatSync(path.join(other, 'real', 'a', 'l')).isSymbolicLink())
  await od.writeFile(path.join(dir, 'A', 'l'), 'through', { atomic: true })
  t.is(fs.readFileSync(path.join(other, 'real', 'b', 't'), 'utf8'), 'through')
  // Exclusive (COPYFILE_EXCL, flag 'wx'): a link, even a dangling one, is something at dst: EEXIST
  // as node:fs says (O_CREAT | O_EXCL does not follow it), nothing created where it points.
  const missing = path.join(other, 'never-made')
  const dangling = path.join(dir, 'dangling-excl')
  fs.symlinkSync(missing, dangling)
  await t.throwsAsync(fs.promises.copyFile(src, dangling, fs.constants.COPYFILE_EXCL), { code: 'EEXIST' })
  await t.throwsAsync(od.copyFile(src, dangling, od.constants.COPYFILE_EXCL), { code: 'EEXIST' })
  await t.throwsAsync(od.writeFile(dangling, 'x', { atomic: true, flag: 'wx' }), { code: 'EEXIST' })
  t.false(fs.existsSync(missing))
  t.true(fs.lstatSync(dangling).isSymbolicLink())
  // A hard link of the destination elsewhere: the atomic replace renames under this name only,
  // so the other name keeps the old file (the README says so; fs.copyFile rewrites the shared file).
  const hl = path.join(other, 'hard-a')
  fs.writeFileSync(hl, 'shared old')
  fs.linkSync(hl, path.join(dir, 'hard-b'))
  await od.copyFile(src, path.join(dir, 'hard-b'))
  t.true(fs.readFileSync(path.join(dir, 'hard-b')).equals(data))
  t.is(fs.readFileSync(hl, 'utf8'), 'shared old')
  // A hard link of the source is the source.
  const hardSrc = path.join(dir, 'hard-src')
  fs.linkSync(src, hardSrc)
  await t.throwsAsync(od.copyFile(src, hardSrc), { code: 'ERR_ODIRECT_SAME_FILE' })
  t.is(spawnSync(process.execPath, [CLI, 'cp', hardSrc, src], { encoding: 'utf8' }).status, 1)
  // A link to the source is the source: refused, nothing touched (the source and the link intact).
  const toSrc = path.join(dir, 'to-src')
  fs.symlinkSync(src, toSrc)
  await t.throwsAsync(od.copyFile(src, toSrc), { code: 'ERR_ODIRECT_SAME_FILE' })
  const cp = spawnSync(process.execPath, [CLI, 'cp', src, toSrc], { encoding: 'utf8' })
  t.is(cp.status, 1, cp.stderr)
  t.true(fs.lstatSync(toSrc).isSymbolicLink())
  t.true(fs.readFileSync(src).equals(data))
})

// ---------------------------------------------------------------------------------------
// 3. RLIMIT_FSIZE in each runtime.

const child = path.join(here, 'adversary-s14', 'fsize-child.cjs')
const FSIZE_REASON = skipReason(['cmd:prlimit', 'cmd:bash'])

interface Outcome {
  ok: boolean
  code?: string
  name?: string
  direct?: boolean
  position?: number
  bytesWritten?: number
  streamBytesWritten?: number
  syscall?: string
  hint?: boolean
  message?: string
  bytes?: number
  results?: Array<number | string>
  size: number
  good: number
  temps: number
}

/** Runs the child in `argv`'s runtime under RLIMIT_FSIZE = `limit` bytes with SIGXFSZ ignored. */
function runLimited(argv: readonly string[], dir: string, limit: number, fits: string, over: string): { status: number | null; signal: string | null; out: Record<string, Outcome> & { atomicOverOld: boolean }; stderr: string } {
  // bash ignores SIGXFSZ (an ignored signal stays ignored across exec) and exec's prlimit, which
  // sets the limit and exec's the runtime.
  const r = spawnSync('bash', ['-c', `trap '' XFSZ; exec prlimit --fsize=${limit} -- "$@"`, 'bash', ...argv, child, dist, dir, String(limit), fits, over], { encoding: 'utf8' })
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '))
  return { status: r.status, signal: r.signal, out: line === undefined ? ({} as never) : JSON.parse(line.slice(7)), stderr: `${r.stdout}\n${r.stderr}` }
}

interface Place {
  name: string
  dir: () => string
  cleanup?: () => void
}

function places(): Array<Place | Skip> {
  const out: Array<Place | Skip> = [{ name: '/var/tmp (ext4)', dir: () => scratch() }]
  const tmp = LOOP_REASON === undefined ? tmpfsDir(64) : { skip: LOOP_REASON }
  out.push(isSkip(tmp) ? tmp : { name: 'tmpfs', dir: () => fs.mkdtempSync(path.join(tmp.dir, 's14-')), cleanup: tmp.cleanup })
  const xfs = loopFs(4096, 320, 'xfs')
  out.push(isSkip(xfs) ? xfs : { name: 'xfs on 4096-byte sectors', dir: () => fs.mkdtempSync(path.join(xfs.dir, 's14-')), cleanup: xfs.cleanup })
  return out
}

const fsizePlaces = FSIZE_REASON === undefined ? places() : []
test.after.always(() => {
  for (const p of fsizePlaces) if (!isSkip(p)) p.cleanup?.()
})
for (const p of fsizePlaces) if (isSkip(p)) console.log(`skipped one RLIMIT_FSIZE place: ${p.skip}`)

const FSIZE_LIMIT = 65 * KiB // ulimit -f 65: a multiple of 1 KiB, not of 4 KiB
const FITS = FSIZE_LIMIT - 100
const fsizeRuns = new Map<string, ReturnType<typeof runLimited>>()

/** The child's run in runtime `argv` at `place` (once: two tests read it). */
function fsizeRun(rt: string, argv: readonly string[], place: Place): ReturnType<typeof runLimited> {
  const key = `${rt} ${place.name}`
  let r = fsizeRuns.get(key)
  if (r === undefined) {
    const dir = place.dir()
    const fits = path.join(dir, 'src-fits')
    const over = path.join(dir, 'src-over')
    const pat = (i: number): number => (i * 131 + (i >>> 11) + 7) & 0xff
    const make = (f: string, n: number): void => fs.writeFileSync(f, Buffer.from(Array.from({ length: n }, (_, i) => pat(i))))
    make(fits, FITS)
    make(over, 4 * FSIZE_LIMIT)
    r = runLimited(argv, dir, FSIZE_LIMIT, fits, over)
    fsizeRuns.set(key, r)
  }
  return r
}

for (const [rt, argv] of FSIZE_REASON === undefined ? runtimes() : [['node', [process.execPath]] as [string, string[]]]) {
  for (const place of fsizePlaces.filter((p): p is Place => !isSkip(p))) {
    testIf(FSIZE_REASON, `${rt}, ${place.name}: under RLIMIT_FSIZE (ulimit -f 65) copyFile writes data that fits whole although its last block, padded, would cross the limit (was EFBIG, EIO or EINVAL); data that does not fit fails EFBIG (was EIO on tmpfs, EINVAL on 4096-byte sectors) from copyFile, writeFile (atomic or not), both write streams, counting only what is in the file, no temp file left, an atomic destination untouched; writeMany's ops whole before the limit, EFBIG after`, (t) => {
      const r = fsizeRun(rt, argv, place)
      t.is(r.status, 0, r.stderr)
      const o = r.out
      t.log(JSON.stringify(o))
      const limit = FSIZE_LIMIT
      const x = o.copyFits
      t.true(x.ok, `copyFits: ${JSON.stringify(x)}`)
      t.is(x.size, FITS, "copyFits: the file's size")
      t.is(x.good, FITS, "copyFits: the file's bytes")
      t.is(x.temps, 0, 'copyFits: temp files left')
      for (const k of ['copyOver', 'writeFileOver', 'atomicOver', 'streamOver', 'webOver']) {
        const y = o[k] as Outcome
        t.false(y.ok, `${k}: succeeded past the limit: ${JSON.stringify(y)}`)
        t.is(y.code, 'EFBIG', `${k}: ${JSON.stringify(y)}`)
        t.true(y.direct, `${k}: a DirectIoError`)
        t.true(y.hint, `${k}: a hint`)
        t.true(y.size <= limit, `${k}: the file's size ${y.size} past the limit`)
        t.is(y.temps, 0, `${k}: temp files left`)
      }
      t.regex(o.streamOver.message ?? '', /RLIMIT_FSIZE/, 'the hint names the limit')
      t.is(o.copyOver.size, -1, 'copyFile past the limit: no destination')
      t.true(o.atomicOverOld, 'writeFile atomic past the limit: the old file is untouched')
      // What a failed write says was written is in the file, byte for byte.
      const wf = o.writeFileOver
      t.is(typeof wf.bytesWritten, 'number', JSON.stringify(wf))
      t.true((wf.bytesWritten as number) <= limit && wf.good >= (wf.bytesWritten as number), JSON.stringify(wf))
      const st = o.streamOver
      t.is(typeof st.streamBytesWritten, 'number', JSON.stringify(st))
      t.true((st.streamBytesWritten as number) <= limit && st.good >= (st.streamBytesWritten as number), JSON.stringify(st))
      // writeMany: each 16 KiB op before the limit whole, the one across it cut at the limit (or,
      // where the cut is inside a device block, refused by the kernel: EINVAL), the ones past it EFBIG.
      const many = o.writeManyOver
      t.true(Array.isArray(many.results), JSON.stringify(many))
      const res = many.results as Array<number | string>
      res.forEach((v, i) => {
        const pos = i * 16 * KiB
        if (pos < limit && pos + 16 * KiB > limit) t.true(v === limit - pos || v === 'EINVAL', `writeMany op ${i} at ${pos}: ${v}`)
        else t.is(v, pos + 16 * KiB <= limit ? 16 * KiB : 'EFBIG', `writeMany op ${i} at ${pos}`)
      })
      t.is(many.good, many.size)
      t.true(many.size >= Math.floor(limit / (16 * KiB)) * 16 * KiB && many.size <= limit, `writeMany: ${many.size} bytes in the file`)
    })
    // The write streams (and writeFile, which writes through them) tell writeFully each block's
    // data length (`logical`, src/streams/core.ts BlockWriter #start): a last block whose padding
    // crosses the limit is done once its data is written (it failed EFBIG where the block is
    // larger than the limit's 1 KiB step: tmpfs 4096, 4096-byte sectors).
    const streamTest = FSIZE_REASON !== undefined ? test.skip : test
    streamTest(`${rt}, ${place.name}: under RLIMIT_FSIZE (ulimit -f 65) writeFile (atomic or not), createWriteStream and writableWebStream write data that fits whole although its last block, padded, would cross the limit`, (t) => {
      const r = fsizeRun(rt, argv, place)
      t.is(r.status, 0, r.stderr)
      for (const k of ['writeFileFits', 'atomicFits', 'streamFits', 'webFits']) {
        const x = r.out[k] as Outcome
        t.true(x.ok, `${k}: ${JSON.stringify(x)}`)
        t.is(x.size, FITS, `${k}: the file's size`)
        t.is(x.good, FITS, `${k}: the file's bytes`)
        t.is(x.temps, 0, `${k}: temp files left`)
      }
    })
  }
}

// ---------------------------------------------------------------------------------------
// 4. Odd shapes onto odd filesystems.

/** A source of shape `kind` in `dir`; its bytes. */
function shape(dir: string, kind: string): { file: string; data: Buffer } {
  const file = path.join(dir, `shape-${kind}`)
  let data: Buffer
  if (kind === 'empty') data = Buffer.alloc(0)
  else if (kind === '1 byte') data = Buffer.from([0x5a])
  else if (kind === 'a block and a byte') data = randomBytes(4097)
  else if (kind === 'holes at both ends') {
    data = Buffer.alloc(2 * MiB + 8 * KiB)
    randomBytes(8 * KiB).copy(data, MiB)
  } else {
    // data at both ends, a hole between, and an unaligned end
    data = Buffer.alloc(3 * MiB + 333)
    randomBytes(64 * KiB).copy(data, 0)
    randomBytes(64 * KiB + 333).copy(data, 3 * MiB - 64 * KiB)
  }
  const fd = fs.openSync(file, 'w')
  // Written as runs of non-zero bytes so that the zeros are holes, then sized.
  for (let off = 0; off < data.length; off += 4096) {
    const piece = data.subarray(off, Math.min(data.length, off + 4096))
    if (piece.some((b) => b !== 0)) fs.writeSync(fd, piece, 0, piece.length, off)
  }
  fs.ftruncateSync(fd, data.length)
  fs.closeSync(fd)
  return { file, data }
}

const SHAPES = ['empty', '1 byte', 'a block and a byte', 'holes at both ends', 'data at both ends']

const shapePlaces: Array<[string, () => LoopFs | Skip | { dir: string; cleanup: () => void }]> = [
  ['ext4 with 1 KiB blocks on 512-byte sectors', () => loopFs(512, 64, 'ext4', undefined, ['-b', '1024'])],
  ['xfs on 4096-byte sectors', () => loopFs(4096, 320, 'xfs')],
  ['tmpfs', () => tmpfsDir(32)],
]

for (const [name, make] of shapePlaces) {
  testIf(LOOP_REASON ?? skipReason(['cmd:mount']), `files empty, of 1 byte, of a block and a byte, with holes at both ends and with data at both ends, copied onto ${name} by copyFile and odirect cp, from there back to /var/tmp: every byte, the size, the holes kept`, async (t) => {
    const place = must(make())
    t.teardown(() => place.cleanup())
    const home = scratch()
    for (const kind of SHAPES) {
      const { file, data } = shape(home, kind)
      const srcBlocks = fs.statSync(file).blocks * 512
      const outs: Array<[string, string]> = []
      const a = path.join(place.dir, `copy-${kind}`)
      const r = await od.copyFile(file, a)
      t.is(r.bytes, data.length, `${kind}: copyFile's bytes`)
      outs.push(['copyFile', a])
      const b = path.join(place.dir, `cp-${kind}`)
      const c = spawnSync(process.execPath, [CLI, 'cp', '--quiet', file, b], { encoding: 'utf8' })
      t.is(c.status, 0, `${kind}: odirect cp: ${c.stderr}`)
      outs.push(['odirect cp', b])
      const back = path.join(home, `back-${kind}`)
      await od.copyFile(a, back)
      outs.push(['copyFile back', back])
      for (const [how, f] of outs) {
        const got = fs.readFileSync(f)
        t.is(got.length, data.length, `${kind}, ${how}: size`)
        t.true(got.equals(data), `${kind}, ${how}: bytes`)
        // Holes stay holes: no more allocated than the source's data, within one 64 KiB per run of data.
        const blocks = fs.statSync(f).blocks * 512
        t.true(blocks <= srcBlocks + 128 * KiB, `${kind}, ${how}: ${blocks} bytes allocated vs ${srcBlocks} in the source`)
      }
    }
    t.deepEqual(temps(place.dir), [])
  })
}

// ---------------------------------------------------------------------------------------
// 5. Workers terminated in the middle of an operation, in each runtime.

for (const [rt, argv] of runtimes()) {
  test(`${rt}: a worker terminated while copyFile, writeFile({ atomic }), a typed and an array writeMany (window 8), a read stream or a write stream runs in it exits; the destinations are old, absent or whole, the main thread's I/O is right, its descriptors come back`, async (t) => {
    const dir = scratch()
    const c = childLines(argv[0] as string, [...argv.slice(1), path.join(here, 'adversary-s14', 'worker-kill.mjs'), dist, dir], process.env)
    t.is(await c.exited, 0, c.err().slice(-2000))
    const r = JSON.parse((await c.line('RESULT ')).slice(7)) as { ended: string[]; finished: string[]; states: Record<string, string>; mainOk: boolean; fdsBefore: number; fdsAfter: number; temps: number }
    t.log(`finished before the terminate: ${r.finished.join(', ') || 'none'}; temp files left: ${r.temps}`)
    t.deepEqual(r.ended, ['copyFile', 'writeFileAtomic', 'writeManyTyped', 'writeManyArray', 'readStream', 'writeStream'])
    t.true(['absent', 'new'].includes(r.states.copyFile), `copyFile's destination: ${r.states.copyFile}`)
    t.true(['old', 'new'].includes(r.states.writeFileAtomic), `writeFile atomic's destination: ${r.states.writeFileAtomic}`)
    t.true(r.mainOk, "the main thread's write and read after the terminations")
    t.true(r.fdsAfter - r.fdsBefore <= (rt === 'deno' ? 10 : 0), `descriptors ${r.fdsBefore} -> ${r.fdsAfter}`)
  })
}

// ---------------------------------------------------------------------------------------
// 6. One handle closed three times at once with every kind of op in flight, and its descriptor
//    number reused by the next open at once: no late op may reach the new file.

for (const backend of ['io_uring', 'aio', 'threadpool'] as const) {
  test(`[${backend}] close() called three times at once (and once more from a read stream's 'data') with 64 reads, a windowed writeMany, a datasync and a read stream in flight: every close resolves, 'close' is emitted once, each op settles whole or ERR_ODIRECT_CLOSED (never EBADF), and a file opened right after (same descriptor number) is never touched by them`, async (t) => {
    const dir = scratch()
    const f = path.join(dir, 'f')
    const U = 64 * KiB
    fs.writeFileSync(f, Buffer.alloc(128 * U, 0x11))
    const fh = await od.open(f, 'r+', { backend })
    let closes = 0
    fh.on('close', () => closes++)
    const ops: Array<Promise<unknown>> = []
    for (let i = 0; i < 64; i++) ops.push(fh.read(fh.alloc(U), 0, U, i * U))
    const mem = fh.alloc(32 * U).fill(0x22)
    ops.push(fh.writeMany(Array.from({ length: 32 }, (_, i) => ({ buffer: mem.subarray(i * U, (i + 1) * U), position: (64 + i) * U })), { window: 4 }))
    ops.push(fh.datasync())
    const rs = fh.createReadStream({ autoClose: false, highWaterMark: U })
    // A close from the stream's first chunk (if one comes before the stream ends).
    const fromData = new Promise<unknown>((resolve) => {
      rs.once('data', () => resolve(fh.close()))
      rs.once('close', () => resolve(undefined))
    })
    const streamEnd = new Promise<unknown>((resolve) => {
      rs.on('data', () => {})
      rs.on('error', resolve)
      rs.on('close', () => resolve(undefined))
    })
    const closing = [fh.close(), fh.close(), fh.close()]
    // The descriptor number is free once the close is done: a new file takes it.
    await Promise.all(closing)
    const g = path.join(dir, 'g')
    fs.writeFileSync(g, Buffer.alloc(256 * U, 0x77))
    const other = fs.openSync(g, 'r+')
    try {
      const closed = await Promise.allSettled([...closing, fromData])
      t.deepEqual(closed.map((s) => s.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'], 'every close() resolves')
      const settled = await Promise.allSettled([...ops, streamEnd])
      settled.slice(0, 64).forEach((s, i) => {
        if (s.status === 'fulfilled') t.is((s.value as { bytesRead: number }).bytesRead, U, `read ${i}`)
      })
      for (const s of settled) {
        if (s.status === 'rejected') t.is((s.reason as { code?: string }).code, 'ERR_ODIRECT_CLOSED', String(s.reason))
        else if (s.value instanceof Error) t.is((s.value as { code?: string }).code, 'ERR_ODIRECT_CLOSED', String(s.value))
      }
      t.is(closes, 1, "'close' emitted once")
      t.true(fh.closed)
      await t.throwsAsync(fh.read(fh.alloc(U), 0, U, 0), { code: 'ERR_ODIRECT_CLOSED' })
      const back = fs.readFileSync(g)
      t.true(back.every((b) => b === 0x77), 'the file that took the descriptor number is untouched')
    } finally {
      fs.closeSync(other)
    }
  })
}

// ---------------------------------------------------------------------------------------
// 7. The CLI's every command with bad arguments: a typed message naming the command, the usage
//    exit status (2) for usage errors and 1 for failures, never a stack trace, nothing created.

test('odirect probe, bench and cp with unknown options or bad values exit 2 with "odirect CMD:" and no stack; a missing PATH is an error (exit 1, no report), not "direct I/O does not work" (exit 2)', (t) => {
  const dir = scratch()
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: dir, timeout: 120_000 })
  const noStack = (r: { stderr: string; stdout: string }, what: string): void => {
    t.notRegex(`${r.stdout}\n${r.stderr}`, /^\s+at .+:\d+:\d+\)?$/m, `${what}: a stack trace`)
  }
  for (const args of [
    ['probe', '--bogus'],
    ['probe', 'a', 'b'],
    ['bench', '--bogus'],
    ['bench', '--size', 'banana'],
    ['bench', '--runs', '-1'],
    ['bench', '--qd', '0'],
    ['bench', '--variant', '=x'],
    ['cp', '--bogus', 'a', 'b'],
    ['cp', '--chunk-size', '0', 'a', 'b'],
    ['cp', 'a'],
  ]) {
    const r = run(...args)
    t.is(r.status, 2, `${args.join(' ')}: exit ${r.status}: ${r.stderr.slice(0, 300)}`)
    t.regex(r.stderr, new RegExp(`^odirect ${args[0]}: `), `${args.join(' ')}: ${r.stderr.slice(0, 200)}`)
    t.is(r.stdout, '', `${args.join(' ')}: nothing on stdout`)
    noStack(r, args.join(' '))
  }
  const missing = path.join(dir, 'no', 'such')
  const p = run('probe', missing)
  t.is(p.status, 1, `probe of a missing path: exit ${p.status}: ${p.stdout}${p.stderr}`)
  t.regex(p.stderr, /^odirect probe: .*(ENOENT|No such file)/)
  t.notRegex(p.stdout, /direct I\/O ready/, 'no report for a path that does not exist')
  const pj = run('probe', '--json', missing)
  t.is(pj.status, 1)
  t.truthy((JSON.parse(pj.stdout) as { error?: unknown }).error, 'probe --json of a missing path: { error }')
  const b = run('bench', path.join(missing, 'x'))
  t.is(b.status, 1, b.stderr)
  noStack(b, 'bench of a missing directory')
  t.deepEqual(fs.readdirSync(dir), [], 'nothing created')
})

// ---------------------------------------------------------------------------------------
// 8. Power cuts (crashfs) under writeFile({ atomic }) and copyFile onto a symbolic link whose
//    file is in another directory: after a cut at any point the link is still a link and the file
//    it names is old or new, whole; new once the call resolved. The rename happens in the named
//    file's directory, so that is the directory synced: a mutant that skips that sync is caught.

const C_OLD = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7 + 1) & 0xff))
const C_NEW = Buffer.from(Array.from({ length: 9000 }, (_, i) => (i * 13 + 2) & 0xff))

function linkedReplace(kind: 'writeFile' | 'copyFile'): SweepOptions<unknown> {
  return {
    torn: true,
    image: (d) => {
      fs.mkdirSync(path.join(d, 'a'))
      fs.mkdirSync(path.join(d, 'b'))
      fs.writeFileSync(path.join(d, 'b', 'target'), C_OLD)
      fs.symlinkSync('../b/target', path.join(d, 'a', 'link'))
      if (kind === 'copyFile') fs.writeFileSync(path.join(d, 'src'), C_NEW)
    },
    workload: (root) => (kind === 'writeFile' ? od.writeFile(path.join(root, 'a', 'link'), C_NEW, { atomic: true }) : od.copyFile(path.join(root, 'src'), path.join(root, 'a', 'link'))),
    check: (run) => {
      let isLink = false
      try {
        isLink = fs.lstatSync(path.join(run.dump, 'a', 'link')).isSymbolicLink()
      } catch {
        isLink = false
      }
      if (!isLink) return `a/link is no longer a symbolic link after ${kind}`
      const what = describe(durable(run, 'b/target'), { old: C_OLD, new: C_NEW })
      if (run.outcome.ok && what !== 'new') return `${kind} resolved but the linked file is ${what}`
      if (what !== 'new' && what !== 'old') return `the linked file is ${what}`
      return undefined
    },
  }
}

const CRASH_REASON = skipReason(CRASH_REQS)
for (const kind of ['writeFile', 'copyFile'] as const) {
  testIf(CRASH_REASON, `power cut at any point of ${kind === 'writeFile' ? 'writeFile({ atomic })' : 'copyFile'} onto a symbolic link to a file in another directory: the link stays a link, the file it names is old or new, whole; new once it resolved`, async (t) => {
    const r = await crashSweep(linkedReplace(kind))
    t.log(`${kind}: ${r.ops} mutating ops, ${r.points.length} cut points, ${r.runs} runs, ${r.acked} acknowledged`)
    t.deepEqual(r.violations, [])
    t.true(r.ops >= 2 && r.acked > 0)
  })
}

// Serial (ava runs serial tests before the concurrent ones): it patches the addon for the process.
testIf(
  CRASH_REASON,
  "mutant: writeFile({ atomic }) onto a symbolic link that skips the sync of the linked file's directory (as if it synced the link's) is caught by the crash check",
  async (t) => {
    const binding = native as unknown as { syncDir: (dir: string) => Promise<number> }
    const real = binding.syncDir
    binding.syncDir = async (dir: string): Promise<number> => (path.basename(dir) === 'b' ? 0 : real.call(native, dir))
    let r: Awaited<ReturnType<typeof crashSweep>>
    try {
      r = await crashSweep(linkedReplace('writeFile'))
    } finally {
      binding.syncDir = real
    }
    t.log(r.violations[0])
    t.true(r.violations.some((v) => v.includes('resolved but the linked file is old')), r.violations.join('\n'))
  },
  true,
)

// ---------------------------------------------------------------------------------------
// 9. The README's complete programs, pasted by a new user into a project where odirect is
//    installed, run with the command the README gives for each runtime (Deno with exactly the
//    permissions the README names), in Node 22, Bun and Deno (readme.spec runs them in Node 20).

function readmeBlock(heading: string): string {
  const readme = fs.readFileSync(path.join(here, '..', 'README.md'), 'utf8')
  const at = readme.indexOf(`\n${heading}\n`)
  const m = /```js\n([\s\S]*?)\n```/.exec(readme.slice(at))
  if (at < 0 || m === null) throw new Error(`README has no js block under "${heading}"`)
  return m[1] as string
}

/** A project directory as `npm install odirect` leaves it (the package linked to this checkout). */
function userProject(): string {
  const dir = scratch()
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', dependencies: { odirect: '^0.1.0' } }, null, 2))
  fs.mkdirSync(path.join(dir, 'node_modules'))
  fs.symlinkSync(path.join(here, '..'), path.join(dir, 'node_modules', 'odirect'), 'dir')
  return dir
}

const readmeRuntimes: Array<[string, string[] | undefined]> = [
  ['node22', ((p) => (p === undefined ? undefined : [p]))(runtimePath('node22'))],
  ['bun', ((p) => (p === undefined ? undefined : [p]))(runtimePath('bun'))],
  ['deno', ((p) => (p === undefined ? undefined : [p, 'run', '--allow-ffi', '--allow-env', '--allow-read']))(runtimePath('deno'))],
]
for (const [rt, argv] of readmeRuntimes) {
  testIf(argv === undefined ? `${rt} is not installed here (scripts/runtime-bin.cjs)` : undefined, `${rt}: the README's Quick start, append-log and await using programs run as pasted, with the README's command for ${rt}`, (t) => {
    const cmd = argv as string[]
    const dir = userProject()
    fs.writeFileSync(path.join(dir, 'quickstart.mjs'), readmeBlock('## Quick start'))
    fs.writeFileSync(path.join(dir, 'log.mjs'), readmeBlock('### Append logs: preallocate'))
    const q = spawnSync(cmd[0] as string, [...cmd.slice(1), 'quickstart.mjs'], { cwd: dir, encoding: 'utf8', timeout: 120_000 })
    t.is(q.status, 0, `${q.stdout}\n${q.stderr}`)
    // Deno colours console.log's values when it thinks the output is a terminal (it did under
    // CI=true): compare the text.
    const lines = stripVTControlCharacters(q.stdout).trim().split('\n')
    t.regex(lines[0] ?? '', /^true (io_uring|aio|threadpool) \d+$/)
    t.is(lines[1], '1048576 1048576 odirect ')
    t.is(lines[2], '[ 4096, 4096, 4096, 4096 ]')
    t.regex(lines[3] ?? '', /^ERR_ODIRECT_ALIGNMENT - ./)
    t.is(lines[4], 'hello, direct I/O')
    t.is(fs.readFileSync(path.join(dir, 'hello.txt'), 'utf8'), 'hello, direct I/O\n')
    const l = spawnSync(cmd[0] as string, [...cmd.slice(1), 'log.mjs'], { cwd: dir, encoding: 'utf8', timeout: 120_000 })
    t.is(l.status, 0, `${l.stdout}\n${l.stderr}`)
    t.is(fs.readFileSync(path.join(dir, 'app.log'), 'utf8'), 'x'.repeat(4096))
    // The `await using` snippet, with its import: Bun and Deno run it, Node 22 refuses the syntax.
    const readme = fs.readFileSync(path.join(here, '..', 'README.md'), 'utf8')
    const using = /```js\n(await using fh = [\s\S]*?)\n```/.exec(readme)?.[1]
    t.truthy(using, "README's await using snippet")
    fs.writeFileSync(path.join(dir, 'using.mjs'), `import { open } from 'odirect'\n${using}\nconsole.log(bytesRead, buffer.length)\n`)
    const u = spawnSync(cmd[0] as string, [...cmd.slice(1), 'using.mjs'], { cwd: dir, encoding: 'utf8', timeout: 120_000 })
    if (rt === 'node22') t.regex(u.stderr, /SyntaxError/, 'the README says plain Node 22 rejects await using')
    else {
      t.is(u.status, 0, `${u.stdout}\n${u.stderr}`)
      t.is(stripVTControlCharacters(u.stdout).trim(), '4096 4096')
    }
  })
}

// ---------------------------------------------------------------------------------------
// 10. Near a full disk (ext4 on 512-byte sectors, xfs on 4096-byte sectors, ~2 MiB free): a write
//     stream, an array writeMany and writeFile of 8 MiB each. What the caller is told must be
//     true of the file: the error is ENOSPC, typed with a hint; every byte it counts as written
//     (bytesWritten, a writeMany op's count) is in the file, in order.

const fullPlaces: Array<[string, () => LoopFs | Skip]> = [
  ['ext4 on 512-byte sectors', () => loopFs(512, 64, 'ext4')],
  ['xfs on 4096-byte sectors', () => loopFs(4096, 320, 'xfs')],
]
for (const [name, make] of fullPlaces) {
  testIf(LOOP_REASON ?? skipReason(['cmd:fallocate', 'cmd:mount']), `${name} with 2 MiB free: a write stream, an array writeMany and writeFile of 8 MiB each fail ENOSPC, typed with a hint, and every byte they count as written is in the file`, async (t) => {
    const place = must(make())
    t.teardown(() => place.cleanup())
    const st = fs.statfsSync(place.dir)
    const free = Number(st.bavail) * Number(st.bsize)
    const filler = path.join(place.dir, 'filler')
    const f = spawnSync('fallocate', ['-l', String(free - 2 * MiB), filler], { encoding: 'utf8' })
    t.is(f.status, 0, f.stderr)
    const total = 8 * MiB
    const data = randomBytes(total)
    const prefixOk = (file: string, n: number): boolean => {
      const b = fs.readFileSync(file)
      return b.length >= n && b.subarray(0, n).equals(data.subarray(0, n))
    }
    // A write stream.
    const sf = path.join(place.dir, 'stream')
    const ws = od.createWriteStream(sf, { chunkSize: 256 * KiB, writeBehind: 4 })
    const se = await pipeline(Readable.from([data.subarray(0, 3 * MiB), data.subarray(3 * MiB)]), ws).then(
      () => undefined,
      (e: unknown) => e as od.DirectIoError,
    )
    t.is(se?.code, 'ENOSPC', String(se))
    t.true(se instanceof od.DirectIoError && typeof se.hint === 'string' && se.hint.length > 0)
    t.true(prefixOk(sf, ws.bytesWritten), `stream: ${ws.bytesWritten} bytes counted, not all in the file`)
    fs.rmSync(sf)
    // An array writeMany.
    const mf = path.join(place.dir, 'many')
    const fh = await od.open(mf, 'w+')
    const U = 64 * KiB
    const mem = fh.alloc(total)
    mem.set(data)
    const ops = Array.from({ length: total / U }, (_, i) => ({ buffer: mem.subarray(i * U, (i + 1) * U), position: i * U }))
    const me = await fh.writeMany(ops, { window: 8 }).then(
      () => undefined,
      (e: unknown) => e as od.DirectIoError & { results?: Array<number | od.DirectIoError> },
    )
    await fh.close()
    t.is(me?.code, 'ENOSPC', String(me))
    const results = me?.results ?? []
    t.is(results.length, ops.length)
    const back = fs.readFileSync(mf)
    results.forEach((r, i) => {
      if (typeof r === 'number') t.true(back.length >= i * U + r && back.subarray(i * U, i * U + r).equals(data.subarray(i * U, i * U + r)), `writeMany op ${i}: ${r} bytes counted, not in the file`)
      else t.is(r.code, 'ENOSPC', `writeMany op ${i}`)
    })
    t.true(results.some((r) => typeof r !== 'number'), 'some op failed')
    t.true(results.some((r) => r === U) && ws.bytesWritten > 0, 'some data fitted (the test is not vacuous)')
    t.log(`stream ${ws.bytesWritten} bytes confirmed, writeMany ${results.filter((r) => typeof r === 'number').length} of ${ops.length} ops`)
    fs.rmSync(mf)
    // writeFile.
    const wf = path.join(place.dir, 'wf')
    const we = await od.writeFile(wf, data).then(
      () => undefined,
      (e: unknown) => e as od.DirectIoError,
    )
    t.is(we?.code, 'ENOSPC', String(we))
    t.is(typeof we?.bytesWritten, 'number')
    t.true(prefixOk(wf, we?.bytesWritten ?? 0), `writeFile: ${we?.bytesWritten} bytes counted, not all in the file`)
  })
}

// ---------------------------------------------------------------------------------------
// 11. process.exit() while a whole operation's I/O is held by a FUSE server (copyFile reading
//     from it, a write stream and an array writeMany writing to it), in Node, Bun and Deno: the
//     process exits at once with its status, the held requests still unanswered.

const HELD: Record<'copy' | 'wstream' | 'many', number> = { copy: 4, wstream: 2, many: 4 } // copyFile keeps 4 reads in flight
for (const [rt, argv] of runtimes()) {
  for (const mode of ['copy', 'wstream', 'many'] as const) {
    testIf(FAULTFS_REASON, `${rt}: process.exit() from a read's callback while ${mode === 'copy' ? 'a copyFile reads' : mode === 'wstream' ? 'a write stream writes' : 'an array writeMany (window 4) writes'} through a FUSE server that holds the requests exits at once with its status`, async (t) => {
      const fx = must(faultFs({ size: 1 << 20, hold: 'held', holdWrites: mode !== 'copy', threads: 4 }))
      t.teardown(() => fx.cleanup())
      const dir = scratch()
      const plain = path.join(dir, 'plain')
      fs.writeFileSync(plain, Buffer.alloc(256 * KiB, 3))
      const env = { ...process.env, ODIRECT_BACKEND: 'io_uring' }
      const c = childLines(argv[0] as string, [...argv.slice(1), path.join(here, 'adversary-s14', 'exit-held.cjs'), dist, fx.file, plain, dir, mode], env, true)
      // Only bounds a failure (a child that does not exit): a passing run exits at once.
      const killer = setTimeout(() => c.child.kill('SIGKILL'), 60_000)
      try {
        await c.line('ready')
        await fx.waitForHeld(HELD[mode])
        c.child.stdin?.write('go\n')
        const code = await c.exited
        t.is(code, 7, `exit status ${String(code)} (null: killed, the exit hung); stderr ${c.err().slice(-1500)}`)
        t.is(fx.stats().held, HELD[mode], 'the process exited with the requests still held')
      } finally {
        clearTimeout(killer)
        fx.release()
      }
    })
  }
}

// ---------------------------------------------------------------------------------------
// 12. The power-cut checks of copyFile, a write stream creating its file and writeFile({ flush })
//     are not vacuous: with the data's datasync or the directory's fsync removed from the library
//     (patched out for the process: serial), each sweep finds a cut where what resolved is lost.

function resolvedIsNew(name: string, workload: (root: string) => Promise<unknown>, image?: (d: string) => void): SweepOptions<unknown> {
  return {
    torn: true,
    image,
    workload,
    check: (run) => {
      const what = describe(durable(run, 'dst'), { new: C_NEW })
      return run.outcome.ok && what !== 'new' ? `${name} resolved but dst is ${what}` : undefined
    },
  }
}

const durabilityWorkloads: Array<[string, SweepOptions<unknown>]> = [
  ['copyFile', resolvedIsNew('copyFile', (root) => od.copyFile(path.join(root, 'src'), path.join(root, 'dst')), (d) => fs.writeFileSync(path.join(d, 'src'), C_NEW))],
  ['createWriteStream (new file)', resolvedIsNew('the write stream', (root) => pipeline(Readable.from([C_NEW.subarray(0, 3000), C_NEW.subarray(3000)]), od.createWriteStream(path.join(root, 'dst'))))],
  ['writeFile({ flush }) (new file)', resolvedIsNew('writeFile', (root) => od.writeFile(path.join(root, 'dst'), C_NEW, { flush: true }))],
]

testIf(
  CRASH_REASON,
  "mutants: copyFile, a write stream creating its file and writeFile({ flush }) with the datasync or the directory's fsync removed are each caught by the power-cut check (and pass it unpatched)",
  async (t) => {
    const proto = od.FileHandle.prototype as unknown as { datasync: (...a: unknown[]) => Promise<void> }
    const binding = native as unknown as { syncDir: (dir: string) => Promise<number> }
    const realDatasync = proto.datasync
    const realSyncDir = binding.syncDir
    for (const [name, o] of durabilityWorkloads) {
      const clean = await crashSweep(o)
      t.deepEqual(clean.violations, [], `${name}, unpatched`)
      for (const mutant of ['datasync', 'directory fsync'] as const) {
        // A file the workload creates needs its directory synced; copyFile's data its datasync.
        if (mutant === 'datasync') proto.datasync = async function (): Promise<void> {}
        else binding.syncDir = async (): Promise<number> => 0
        let r: Awaited<ReturnType<typeof crashSweep>>
        try {
          r = await crashSweep(o)
        } finally {
          proto.datasync = realDatasync
          binding.syncDir = realSyncDir
        }
        t.true(r.violations.length > 0, `${name} without its ${mutant}: no cut found it (${r.runs} runs)`)
        t.log(`${name} without its ${mutant}: ${r.violations[0]}`)
      }
    }
  },
  true,
)

// ---------------------------------------------------------------------------------------
// 13. Run as root, replacing another user's file keeps its owner (as fs.copyFile and cp keep it).

testIf(skipReason(['root']), "as root, copyFile, writeFile({ atomic }) and odirect cp onto another user's file keep its owner and group, as node:fs's copyFile does (the temp file took root's)", async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, 'new contents')
  const make = (name: string): string => {
    const f = path.join(dir, name)
    fs.writeFileSync(f, 'old')
    fs.chownSync(f, 65534, 65533)
    fs.chmodSync(f, 0o640)
    return f
  }
  const ref = make('fs-ref')
  await fs.promises.copyFile(src, ref)
  t.deepEqual([fs.statSync(ref).uid, fs.statSync(ref).gid], [65534, 65533], 'node:fs keeps the owner')
  const a = make('a')
  await od.copyFile(src, a)
  const b = make('b')
  await od.writeFile(b, 'new contents', { atomic: true })
  const c = make('c')
  const r = spawnSync(process.execPath, [CLI, 'cp', '--quiet', src, c], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  for (const [name, f] of [['copyFile', a], ['writeFile atomic', b], ['odirect cp', c]] as const) {
    const st = fs.statSync(f)
    t.deepEqual([st.uid, st.gid], [65534, 65533], `${name}: owner and group`)
    t.is(fs.readFileSync(f, 'utf8'), 'new contents', name)
  }
  t.is(fs.statSync(b).mode & 0o777, 0o640, 'writeFile atomic keeps the old mode')
  t.deepEqual(temps(dir), [])
})
