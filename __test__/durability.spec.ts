// Durability after a power cut (issue 18), on the crashfs bed (crates/faultfs/src/crashfs.rs):
// a FUSE disk with a volatile write cache. Each workload runs through the public API once
// uncut and then with the power cut at every mutating operation (a seeded sample when there
// are many), with torn sectors; the durable tree is checked against the guarantee.
// Mutants (a library whose datasync does nothing, a disk that ignores syncs) must be caught.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'

import test from 'ava'
import type { ExecutionContext } from 'ava'

import { copyFile, createWriteStream, type DirectIoError, FileHandle, type ManyError, open, probe, readFile, writeFile } from '../dist/index.js'
import { native } from '../dist/src/native.js'
import { bytes, CRASH_REQS, type CrashRun, crashRun, crashSweep, describe, durable, type SweepOptions, type SweepResult } from './helpers/crashbed.js'
import { evictFile, faultFs, loopFs, ramfsDir, residentPages, type Requirement, skipReason, tmpfsDir } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'

delete process.env.ODIRECT_BACKEND
const __dirname = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.join(__dirname, '..', 'dist', 'cli.js')
const FAULT_REQS: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']
type Backend = 'io_uring' | 'aio' | 'threadpool'
const where = await probe('/var/tmp')
// Backends this process can use (io_uring may be refused by a seccomp profile).
const BACKENDS = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => where.backends[b].available)

function report(t: ExecutionContext, name: string, r: SweepResult): void {
  t.log(`${name}: ${r.ops} ops, ${r.points.length + 1} cut points, ${r.runs} runs, acknowledged in ${r.acked}`)
}

async function sweep<T>(t: ExecutionContext, name: string, o: SweepOptions<T>): Promise<SweepResult> {
  const r = await crashSweep(o)
  report(t, name, r)
  t.deepEqual(r.violations, [], `${name}: guarantee broken after a power cut`)
  t.true(r.ops >= 2 || process.env.CRASH_CUT !== undefined, 'the workload reached the disk')
  return r
}

/**
 * A mutant test patches a prototype for the whole process: it runs serially (ava runs serial
 * tests before the concurrent ones), so no other test sees the mutant.
 */
function mutantTest(title: string, fn: (t: ExecutionContext) => Promise<void>): void {
  const reason = skipReason(CRASH_REQS)
  if (reason) {
    console.log(`skipping "${title}": ${reason}`)
    test.skip(title, fn)
  } else test.serial(title, fn)
}

/** Runs `fn` with FileHandle.prototype.datasync turned into a no-op (a library mutant). */
async function withoutDatasync<T>(fn: () => Promise<T>): Promise<T> {
  const proto = FileHandle.prototype as unknown as { datasync: (...a: unknown[]) => Promise<void> }
  const real = proto.datasync
  proto.datasync = async function (): Promise<void> {}
  try {
    return await fn()
  } finally {
    proto.datasync = real
  }
}

// ---------------------------------------------------------------------------------------
// The bed itself

fxTest('bed: unsynced data and directory entries are lost; fsync, fsyncdir, O_DSYNC make them durable', CRASH_REQS, async (t) => {
  const run = await crashRun({ image: (d) => fs.writeFileSync(path.join(d, 'old'), 'old') }, async (root) => {
    const fd = fs.openSync(path.join(root, 'synced'), 'w')
    fs.writeSync(fd, 'data synced')
    fs.fdatasyncSync(fd)
    fs.closeSync(fd)
    const dfd = fs.openSync(root, 'r')
    fs.fsyncSync(dfd)
    fs.closeSync(dfd)
    fs.writeFileSync(path.join(root, 'lost'), 'created after the directory sync')
    // Entry durable (dir synced above), data written later without a sync: lost.
    fs.appendFileSync(path.join(root, 'synced'), ' + unsynced tail')
    const ds = fs.openSync(path.join(root, 'old'), fs.constants.O_WRONLY | fs.constants.O_DSYNC)
    fs.writeSync(ds, 'OLD', 0)
    fs.closeSync(ds)
    fs.renameSync(path.join(root, 'old'), path.join(root, 'renamed')) // dir not synced again
    // odirect through the same bed
    const fh = await open(path.join(root, 'renamed'), 'r+')
    t.true(fh.direct)
    const blk = fh.alloc(4096)
    blk.fill(0x55)
    await fh.write(blk, 0, 4096, 0)
    await fh.close()
  })
  try {
    t.true(run.outcome.ok, String(!run.outcome.ok && run.outcome.error))
    t.deepEqual(fs.readdirSync(run.dump).sort(), ['old', 'synced'])
    t.is(fs.readFileSync(path.join(run.dump, 'synced'), 'utf8'), 'data synced')
    t.is(fs.readFileSync(path.join(run.dump, 'old'), 'utf8'), 'OLD')
  } finally {
    run.cleanup()
  }
})

fxTest('bed: the durable tree after a cut mounts again (remount) and reads back through odirect', CRASH_REQS, async (t) => {
  const first = await crashRun({}, async (root) => {
    await writeFile(path.join(root, 'kept'), NEW, { atomic: true })
    await writeFile(path.join(root, 'lost'), OLD) // no datasync, no directory sync
  })
  try {
    t.true(first.outcome.ok)
    const again = await crashRun({ image: (d) => fs.cpSync(first.dump, d, { recursive: true }) }, async (root) => {
      return { names: fs.readdirSync(root).sort(), kept: await readFile(path.join(root, 'kept')) }
    })
    try {
      if (!again.outcome.ok) throw again.outcome.error
      t.deepEqual(again.outcome.value.names, ['kept'])
      t.true(again.outcome.value.kept.equals(NEW))
    } finally {
      again.cleanup()
    }
  } finally {
    first.cleanup()
  }
})

fxTest('bed: a cut fails every later request with EIO and keeps only what was durable', CRASH_REQS, async (t) => {
  const run = await crashRun({ cutAfter: 3 }, async (root) => {
    const fd = fs.openSync(path.join(root, 'f'), 'w') // op 0: create
    fs.writeSync(fd, 'a') // op 1
    fs.fsyncSync(fd) // op 2
    const dfd = fs.openSync(root, 'r')
    try {
      fs.fsyncSync(dfd) // op 3: the cut
    } finally {
      fs.closeSync(dfd)
      fs.closeSync(fd)
    }
  })
  try {
    t.is(run.cutAt, 3)
    t.false(run.outcome.ok)
    t.is(!run.outcome.ok && (run.outcome.error as NodeJS.ErrnoException).code, 'EIO')
    t.deepEqual(fs.readdirSync(run.dump), [], 'the directory was never synced: the file is gone')
  } finally {
    run.cleanup()
  }
})

// ---------------------------------------------------------------------------------------
// writeFile({ atomic: true })

const OLD = bytes(5000, 1)
const NEW = bytes(9000, 2)

function atomicWriteFile(dstExists: boolean, backend?: Backend): SweepOptions<void> {
  return {
    torn: true,
    image: (d) => {
      if (dstExists) fs.writeFileSync(path.join(d, 'dst'), OLD)
    },
    workload: (root) => writeFile(path.join(root, 'dst'), NEW, { atomic: true, backend }),
    check: (run) => {
      const got = durable(run, 'dst')
      const what = describe(got, { old: dstExists ? OLD : undefined, new: NEW })
      if (run.outcome.ok && what !== 'new') return `writeFile resolved but dst is ${what}`
      if (what !== 'new' && what !== (dstExists ? 'old' : 'absent')) return `dst is ${what}`
      return undefined
    },
  }
}

for (const backend of BACKENDS) {
  fxTest(`writeFile atomic over an old file (${backend}): after a cut at any point dst is old or new, whole; new once it resolved`, CRASH_REQS, async (t) => {
    await sweep(t, `writeFile atomic (dst old, ${backend})`, atomicWriteFile(true, backend))
  })

  fxTest(`writeFile atomic, dst absent (${backend}): after a cut dst is absent or new, whole; new once it resolved`, CRASH_REQS, async (t) => {
    await sweep(t, `writeFile atomic (dst absent, ${backend})`, atomicWriteFile(false, backend))
  })
}

fxTest('writeFile(path, data, { flush: true }) creating the file: once it resolved, the file and its name are durable', CRASH_REQS, async (t) => {
  await sweep(t, 'writeFile flush (new file)', {
    torn: true,
    workload: (root) => writeFile(path.join(root, 'f'), NEW, { flush: true }),
    check: (run) => {
      if (!run.outcome.ok) return undefined
      const what = describe(durable(run, 'f'), { new: NEW })
      return what === 'new' ? undefined : `writeFile resolved but the file is ${what}`
    },
  })
})

mutantTest('mutant: writeFile atomic with datasync skipped is caught by the crash check', async (t) => {
  const r = await withoutDatasync(() => crashSweep(atomicWriteFile(true)))
  t.log(r.violations[0])
  t.true(r.violations.length > 0, 'a library that skips the datasync must fail the check')
})

mutantTest('mutant: writeFile atomic with the directory fsync skipped is caught by the crash check', async (t) => {
  // The directory sync is the addon's syncDir (src/dirsync.ts): make it a no-op that reports success.
  const binding = native as unknown as { syncDir: (dir: string) => Promise<number> }
  const real = binding.syncDir
  binding.syncDir = async (): Promise<number> => 0
  let r: SweepResult
  try {
    r = await crashSweep(atomicWriteFile(true))
  } finally {
    binding.syncDir = real
  }
  t.log(r.violations[0])
  t.true(r.violations.some((v) => v.includes('writeFile resolved but dst is old')))
})

fxTest('mutant: a disk that ignores syncs is caught by the crash check', CRASH_REQS, async (t) => {
  const r = await crashSweep({ ...atomicWriteFile(true), ignoreSync: true })
  t.log(r.violations[0])
  t.true(r.violations.length > 0)
})

// ---------------------------------------------------------------------------------------
// copyFile and `odirect cp`

const SRC = bytes(300 * 1024 + 123, 3)

function copy(dst: 'absent' | 'old', via: 'copyFile' | 'cli', backend?: Backend): SweepOptions<void> {
  return {
    torn: true,
    maxPoints: via === 'cli' ? 16 : 40,
    image: (d) => {
      fs.writeFileSync(path.join(d, 'src'), SRC)
      if (dst === 'old') fs.writeFileSync(path.join(d, 'dst'), OLD)
    },
    workload: async (root) => {
      if (via === 'copyFile') {
        await copyFile(path.join(root, 'src'), path.join(root, 'dst'), { backend })
        return
      }
      const env = backend === undefined ? process.env : { ...process.env, ODIRECT_BACKEND: backend }
      const r = spawnSync(process.execPath, [CLI, 'cp', '--quiet', path.join(root, 'src'), path.join(root, 'dst')], { encoding: 'utf8', env })
      if (r.status !== 0) throw new Error(`odirect cp exited ${r.status}: ${r.stderr}`)
    },
    check: (run) => {
      if (!durable(run, 'src')?.equals(SRC)) return 'src changed'
      const what = describe(durable(run, 'dst'), { old: dst === 'old' ? OLD : undefined, new: SRC })
      if (run.outcome.ok && what !== 'new') return `the copy was acknowledged but dst is ${what}`
      if (what !== 'new' && what !== dst) return `dst is ${what}`
      return undefined
    },
  }
}

for (const dst of ['absent', 'old'] as const) {
  for (const backend of BACKENDS) {
    fxTest(`copyFile, dst ${dst} (${backend}): after a cut dst is ${dst} or the whole copy; the copy once it resolved`, CRASH_REQS, async (t) => {
      await sweep(t, `copyFile (dst ${dst}, ${backend})`, copy(dst, 'copyFile', backend))
    })
  }
  fxTest(`odirect cp, dst ${dst}: after a cut dst is ${dst} or the whole copy; the copy once it exited 0`, CRASH_REQS, async (t) => {
    await sweep(t, `odirect cp (dst ${dst})`, copy(dst, 'cli'))
  })
}

// ---------------------------------------------------------------------------------------
// Write streams: every byte written before 'finish' is durable once 'finish' fired

const CHUNKS = Array.from({ length: 12 }, (_, i) => bytes(7000 + i * 311, 10 + i))
const STREAMED = Buffer.concat(CHUNKS)

for (const backend of BACKENDS) {
  fxTest(`write stream to a new file (${backend}): once 'finish' fired, every byte is durable (file and its entry)`, CRASH_REQS, async (t) => {
    await sweep(t, `write stream (${backend})`, {
      torn: true,
      workload: async (root) => {
        await pipeline(Readable.from(CHUNKS), createWriteStream(path.join(root, 'out'), { chunkSize: 16384, backend }))
      },
      check: (run) => {
        if (!run.outcome.ok) return undefined
        const what = describe(durable(run, 'out'), { 'all bytes': STREAMED })
        return what === 'all bytes' ? undefined : `'finish' fired but the file is ${what}`
      },
    })
  })
}

// ---------------------------------------------------------------------------------------
// writeMany + datasync

const BLOCK = 4096
const FILE = bytes(64 * 1024, 20)
const SLOTS = [0, 3, 4, 9, 15]

/**
 * What a cut left of FILE after a workload wrote `written` blocks (block s with bytes(BLOCK,
 * seed + s)): the other blocks unchanged, the written ones durable if the call resolved.
 */
function checkBlocks(run: CrashRun<void>, written: readonly number[], seed: number, call: string): string | undefined {
  const got = durable(run, 'data')
  if (got === undefined || got.length !== FILE.length) return `data is ${got?.length ?? 'absent'}`
  for (let s = 0; s < FILE.length / BLOCK; s++) {
    const blk = got.subarray(s * BLOCK, (s + 1) * BLOCK)
    if (!written.includes(s)) {
      if (!blk.equals(FILE.subarray(s * BLOCK, (s + 1) * BLOCK))) return `block ${s} (not written) changed`
    } else if (run.outcome.ok && !blk.equals(bytes(BLOCK, seed + s))) return `block ${s} not durable after ${call} resolved`
  }
  return undefined
}

/** `linked`: writeMany(ops, { datasync: true }); else writeMany(ops) then datasync(). */
function writeManyDatasync(backend?: Backend, linked = false): SweepOptions<void> {
  return {
    torn: true,
    image: (d) => fs.writeFileSync(path.join(d, 'data'), FILE),
    workload: async (root) => {
      const fh = await open(path.join(root, 'data'), 'r+', { backend })
      try {
        const ops = SLOTS.map((s) => {
          const buf = fh.alloc(BLOCK)
          buf.set(bytes(BLOCK, 100 + s))
          return { buffer: buf, position: s * BLOCK }
        })
        if (linked) await fh.writeMany(ops, { datasync: true })
        else {
          await fh.writeMany(ops)
          await fh.datasync()
        }
      } finally {
        await fh.close().catch(() => undefined)
      }
    },
    check: (run) => checkBlocks(run, SLOTS, 100, 'datasync'),
  }
}

for (const backend of BACKENDS) {
  fxTest(`writeMany + datasync (${backend}): once datasync resolved every block is durable; other blocks never change`, CRASH_REQS, async (t) => {
    await sweep(t, `writeMany + datasync (${backend})`, writeManyDatasync(backend))
  })
}

// ---------------------------------------------------------------------------------------
// A write-ahead log with group commit, through the public API

const REC_HDR = 16
const MAGIC = 0x57414c31

function payload(seq: number): Buffer {
  return bytes(20 + ((seq * 97) % 300), 1000 + seq)
}

function fnv(b: Uint8Array): number {
  let h = 0x811c9dc5
  for (const x of b) h = Math.imul(h ^ x, 0x01000193) >>> 0
  return h
}

/** How a WAL group is made durable: write + datasync, one RWF_DSYNC write, or writeMany({ datasync: true }). */
type Commit = 'datasync' | 'dsync' | 'writeMany'

/** A log: records appended into an aligned tail image; one writer writes the dirty blocks and makes them durable per group. */
class Wal {
  readonly #fh: FileHandle
  readonly #commit: Commit
  readonly #img: Buffer
  #end = 0
  #durableEnd = 0
  #seq = 0
  #waiting: Array<{ end: number; resolve: () => void; reject: (e: unknown) => void }> = []
  #flushing = false
  #failed: unknown
  groups = 0

  constructor(fh: FileHandle, size: number, commit: Commit) {
    this.#fh = fh
    this.#commit = commit
    this.#img = fh.alloc(size)
    this.#img.fill(0)
  }

  append(data: Buffer): { seq: number; done: Promise<void> } {
    if (this.#failed !== undefined) return { seq: -1, done: Promise.reject(this.#failed) }
    const seq = this.#seq++
    const h = this.#img
    const at = this.#end
    h.writeUInt32LE(MAGIC, at)
    h.writeUInt32LE(seq, at + 4)
    h.writeUInt32LE(data.length, at + 8)
    h.writeUInt32LE(fnv(data), at + 12)
    data.copy(h, at + REC_HDR)
    this.#end = at + REC_HDR + data.length
    const done = new Promise<void>((resolve, reject) => this.#waiting.push({ end: this.#end, resolve, reject }))
    void this.#flush()
    return { seq, done }
  }

  async #flush(): Promise<void> {
    if (this.#flushing) return
    this.#flushing = true
    try {
      while (this.#waiting.length > 0 && this.#failed === undefined) {
        const end = this.#end
        const from = Math.floor(this.#durableEnd / BLOCK) * BLOCK
        const to = Math.ceil(end / BLOCK) * BLOCK
        const batch = this.#waiting.filter((w) => w.end <= end)
        this.#waiting = this.#waiting.filter((w) => w.end > end)
        try {
          const group = this.#img.subarray(from, to)
          if (this.#commit === 'dsync') await this.#fh.write(group, { position: from, dsync: true })
          else if (this.#commit === 'writeMany') await this.#fh.writeMany([{ buffer: group, position: from }], { datasync: true })
          else {
            await this.#fh.write(group, { position: from })
            await this.#fh.datasync()
          }
        } catch (e) {
          this.#failed = e
          for (const w of [...batch, ...this.#waiting]) w.reject(e)
          this.#waiting = []
          return
        }
        this.groups++
        this.#durableEnd = end
        for (const w of batch) w.resolve()
      }
    } finally {
      this.#flushing = false
    }
  }
}

function parseWal(b: Buffer): { records: number; error?: string } {
  let pos = 0
  let seq = 0
  while (pos + REC_HDR <= b.length && b.readUInt32LE(pos) === MAGIC) {
    const len = b.readUInt32LE(pos + 8)
    if (b.readUInt32LE(pos + 4) !== seq || pos + REC_HDR + len > b.length) break
    const data = b.subarray(pos + REC_HDR, pos + REC_HDR + len)
    if (fnv(data) !== b.readUInt32LE(pos + 12)) break // torn record: the log ends here
    if (!data.equals(payload(seq))) return { records: seq, error: `record ${seq} passes its checksum but holds wrong data` }
    pos += REC_HDR + len
    seq++
  }
  return { records: seq }
}

const WAL_SIZE = 128 * 1024
function walSweep(commit: Commit, backend?: Backend): SweepOptions<number> {
  // Records acknowledged in the current run (runs of one sweep are sequential).
  let walAcked = new Set<number>()
  return {
    torn: true,
    maxPoints: 40,
    image: (d) => fs.writeFileSync(path.join(d, 'wal'), Buffer.alloc(WAL_SIZE)),
    workload: async (root) => {
      walAcked = new Set()
      const fh = await open(path.join(root, 'wal'), 'r+', { backend })
      const wal = new Wal(fh, WAL_SIZE, commit)
      try {
        // 6 clients, 8 records each, each waiting for its previous record's commit.
        let next = 0
        const client = async (): Promise<void> => {
          for (let i = 0; i < 8; i++) {
            const { seq, done } = wal.append(payload(next++))
            await done
            walAcked.add(seq)
          }
        }
        await Promise.all(Array.from({ length: 6 }, client))
        return wal.groups
      } finally {
        await fh.close().catch(() => undefined)
      }
    },
    check: (run) => {
      const got = durable(run, 'wal')
      if (got === undefined) return 'the log is gone'
      const p = parseWal(got)
      if (p.error !== undefined) return p.error
      const lost = [...walAcked].filter((s) => s >= p.records)
      return lost.length > 0 ? `acknowledged records lost: ${lost.join(',')} (log holds ${p.records})` : undefined
    },
  }
}

for (const backend of BACKENDS) {
  for (const commit of ['datasync', 'dsync', 'writeMany'] as const) {
    fxTest(`WAL with group commit (${commit === 'datasync' ? 'write + datasync' : commit === 'dsync' ? 'write { dsync }' : 'writeMany { datasync }'}, ${backend}): no acknowledged record lost, no torn record accepted`, CRASH_REQS, async (t) => {
      const r = await sweep(t, `WAL group commit (${commit}, ${backend})`, walSweep(commit, backend))
      t.true(r.acked > 0)
    })
  }
}

mutantTest('mutant: the WAL with datasync skipped loses acknowledged records', async (t) => {
  const r = await withoutDatasync(() => crashSweep(walSweep('datasync')))
  t.log(r.violations[0])
  t.true(r.violations.length > 0)
})


// ---------------------------------------------------------------------------------------
// Per-op durability flags: write / writev / writeMany { dsync | sync } (RWF_DSYNC / RWF_SYNC)


const FLAGGED = bytes(3 * BLOCK, 40)
type Call = 'write' | 'writev' | 'writeMany'

/** Block 0 written with the flag, block 1 without; then the power goes. Only block 0 must survive. */
async function flagRun(backend: Backend, call: Call, flag: 'dsync' | 'sync'): Promise<Buffer | undefined> {
  const run = await crashRun({ image: (d) => fs.writeFileSync(path.join(d, 'data'), FLAGGED) }, async (root) => {
    const fh = await open(path.join(root, 'data'), 'r+', { backend })
    try {
      const a = fh.alloc(BLOCK)
      a.fill(0xa1)
      const b = fh.alloc(BLOCK)
      b.fill(0xb2)
      const opt = { [flag]: true }
      if (call === 'write') await fh.write(a, { position: 0, ...opt })
      else if (call === 'writev') await fh.writev([a], 0, opt)
      else await fh.writeMany([{ buffer: a, position: 0 }], opt)
      await fh.write(b, { position: BLOCK })
    } finally {
      await fh.close()
    }
  })
  try {
    if (!run.outcome.ok) throw run.outcome.error
    return durable(run, 'data')
  } finally {
    run.cleanup()
  }
}

for (const backend of BACKENDS) {
  for (const call of ['write', 'writev', 'writeMany'] as const) {
    for (const flag of ['dsync', 'sync'] as const) {
      fxTest(`${call}({ ${flag}: true }) on ${backend}: durable when it resolves, without an fdatasync; the plain write after it is not`, CRASH_REQS, async (t) => {
        const got = await flagRun(backend, call, flag)
        t.truthy(got)
        t.true(got?.subarray(0, BLOCK).every((x) => x === 0xa1), 'the flagged write survived the cut')
        t.true(got?.subarray(BLOCK, 2 * BLOCK).equals(FLAGGED.subarray(BLOCK, 2 * BLOCK)), 'the unflagged write was in the volatile cache only')
      })
    }
  }
}

for (const backend of BACKENDS) {
  fxTest(`open(path, 'r+', { dsync: true }) on ${backend}: every write durable when it resolves (O_DSYNC)`, CRASH_REQS, async (t) => {
    const run = await crashRun({ image: (d) => fs.writeFileSync(path.join(d, 'data'), FLAGGED) }, async (root) => {
      const fh = await open(path.join(root, 'data'), 'r+', { backend, dsync: true })
      try {
        await fh.write(fh.alloc(BLOCK).fill(0xd5), { position: BLOCK })
      } finally {
        await fh.close()
      }
    })
    try {
      t.true(run.outcome.ok)
      t.true(durable(run, 'data')?.subarray(BLOCK, 2 * BLOCK).every((x) => x === 0xd5))
    } finally {
      run.cleanup()
    }
  })
}

fxTest('dsync / sync / datasync options are validated and refused on reads', CRASH_REQS, async (t) => {
  const tmp = fs.mkdtempSync('/var/tmp/odirect-dsync-')
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
  const fh = await open(path.join(tmp, 'f'), 'w+')
  t.teardown(() => fh.close())
  const b = fh.alloc(BLOCK)
  await t.throwsAsync(fh.write(b, { position: 0, dsync: 1 as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  await t.throwsAsync(fh.read(b, { position: 0, dsync: true }), { code: 'ERR_INVALID_ARG_VALUE' })
  await t.throwsAsync(fh.readMany([{ buffer: b, position: 0 }], { sync: true }), { code: 'ERR_INVALID_ARG_VALUE' })
  await t.throwsAsync(fh.readMany([{ buffer: b, position: 0 }], { datasync: true }), { code: 'ERR_INVALID_ARG_VALUE' })
  await t.throwsAsync(fh.writeMany([{ buffer: b, position: 0 }], { datasync: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.is((await fh.write(b, { position: 0, dsync: true, sync: true })).bytesWritten, BLOCK)
})

// ---------------------------------------------------------------------------------------
// writeMany(ops, { datasync: true }): the writes, then one fdatasync only if all succeeded

for (const backend of BACKENDS) {
  fxTest(`writeMany({ datasync: true }) (${backend}): durable when it resolves, at every cut point`, CRASH_REQS, async (t) => {
    await sweep(t, `writeMany { datasync: true } (${backend})`, writeManyDatasync(backend, true))
  })
}

for (const backend of BACKENDS) {
  fxTest(`writev(buffers, position, { datasync: true }) on ${backend}: durable when it resolves, at every cut point`, CRASH_REQS, async (t) => {
    const blocks = [8, 9, 10]
    await sweep(t, `writev { datasync: true } (${backend})`, {
      torn: true,
      image: (d) => fs.writeFileSync(path.join(d, 'data'), FILE),
      workload: async (root) => {
        const fh = await open(path.join(root, 'data'), 'r+', { backend })
        try {
          const bufs = blocks.map((s) => {
            const b = fh.alloc(BLOCK)
            b.set(bytes(BLOCK, 200 + s))
            return b
          })
          await fh.writev(bufs, blocks[0] * BLOCK, { datasync: true })
        } finally {
          await fh.close().catch(() => undefined)
        }
      },
      check: (run) => checkBlocks(run, blocks, 200, 'writev'),
    })
  })
}

/** Runs `script` (CommonJS, `open` in scope) in a child with ODIRECT_DEBUG=1; its submit/complete lines. */
function debugRun(t: ExecutionContext, script: string): string[] {
  const r = spawnSync(process.execPath, ['-e', `const { open } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});\n(async () => {\n${script}\n})().catch((e) => { console.error(e); process.exit(1) });`], {
    encoding: 'utf8',
    env: { ...process.env, ODIRECT_DEBUG: '1' },
    timeout: 30_000,
  })
  t.is(r.status, 0, r.stderr)
  return r.stderr.split('\n').filter((l) => /^odirect: (submit|complete) /.test(l))
}

for (const backend of BACKENDS) {
  const uring = backend === 'io_uring'
  fxTest(`writeMany({ datasync: true }) on ${backend}: a failed write rejects naming the op, and the fdatasync never runs`, FAULT_REQS, async (t) => {
    const f = must(faultFs({ size: 64 * 1024, eioAt: [2 * BLOCK + 10] }))
    t.teardown(() => f.cleanup())
    const fh = await open(f.file, 'r+', { backend })
    t.teardown(() => fh.close())
    const ops = [0, 1, 2, 3].map((i) => ({ buffer: fh.alloc(BLOCK).fill(i + 1), position: i * BLOCK }))
    const e = await t.throwsAsync<ManyError>(fh.writeMany(ops, { datasync: true }))
    t.is(e?.code, 'EIO')
    // io_uring links the writes and the fdatasync (IOSQE_IO_LINK): the failure cancels the rest.
    t.deepEqual(e?.results.map((r) => (typeof r === 'number' ? r : r.code)), [BLOCK, BLOCK, 'EIO', uring ? 'ECANCELED' : BLOCK])
    if (!uring) t.is(fh.stats().ops, 4, 'the four writes, no fdatasync')
    await fh.writeMany(ops.slice(0, 2), { datasync: true })
    // (io_uring's fdatasync of the first call, cancelled by its chain, is not counted: the
    // caller never saw it; adversary-s21c.)
    t.is(fh.stats().ops, 7, 'then two writes and their fdatasync')
    if (uring) {
      // The first call's fdatasync completed with ECANCELED: it never ran.
      const lines = debugRun(
        t,
        `const fh = await open(${JSON.stringify(f.file)}, 'r+', { backend: 'io_uring' });
         const ops = [0, 1, 2, 3].map((i) => ({ buffer: fh.alloc(4096).fill(i + 1), position: i * 4096 }));
         await fh.writeMany(ops, { datasync: true }).catch(() => {});
         await fh.close();`,
      )
      t.truthy(lines.find((l) => /^odirect: complete id=\d+ op=fdatasync .*result=-125 \(ECANCELED\)/.test(l)), lines.join('\n'))
    }
  })
}

fxTest('writeMany / writev({ datasync: true }) on io_uring: the writes and the fdatasync go in one submission, linked (IOSQE_IO_LINK)', [], async (t) => {
  const dir = fs.mkdtempSync('/var/tmp/odirect-link-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (const call of ['writeMany', 'writev']) {
    const lines = debugRun(
      t,
      `const fh = await open(${JSON.stringify(path.join(dir, 'f'))}, 'w+', { backend: 'io_uring' });
       const bufs = Array.from({ length: 16 }, (_, i) => fh.alloc(4096).fill(i));
       ${call === 'writeMany' ? 'await fh.writeMany(bufs.map((buffer, i) => ({ buffer, position: i * 4096 })), { datasync: true });' : 'await fh.writev(bufs, 0, { datasync: true });'}
       await fh.close();`,
    )
    const firstComplete = lines.findIndex((l) => l.startsWith('odirect: complete'))
    const submitted = lines.slice(0, firstComplete)
    // 16 writes (the chain's most): more than the engine's early-submission group (4 on a disk
    // file), so a chain split across two submissions (its first writes in without their link)
    // fails here.
    t.is(submitted.filter((l) => / op=writev? .* link$/.test(l)).length, call === 'writeMany' ? 16 : 1, lines.join('\n'))
    t.truthy(submitted.find((l) => / op=fdatasync /.test(l)), `${call}: the fdatasync was submitted with the writes`)
  }
}, BACKENDS.includes('io_uring') ? undefined : `io_uring is not available here (${where.backends.io_uring.reason})`)

// ---------------------------------------------------------------------------------------
// Untorn writes: write(buf, { position, atomic: true }) with RWF_ATOMIC

const XFS_REQS: Requirement[] = ['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.xfs', 'fs:xfs']
const EXT4_REQS: Requirement[] = ['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4']

for (const backend of BACKENDS) {
  fxTest(`atomic writes on XFS (${backend}): limits in fh.alignment from statx, 4 KiB and 64 KiB untorn writes land, bad sizes refused before any system call`, XFS_REQS, async (t) => {
    const fx = must(loopFs(4096, 320, 'xfs'))
    t.teardown(() => fx.cleanup())
    const fh = await open(path.join(fx.dir, 'f'), 'w+', { backend, direct: 'require' })
    t.teardown(() => fh.close())
    const a = fh.alignment
    t.log(`XFS atomic writes: ${a.atomicWriteMin}..${a.atomicWriteMax} bytes, ${a.atomicWriteSegmentsMax} segment(s)`)
    if (a.atomicWriteMax === 0) return t.fail('statx reports no atomic writes on XFS here')
    t.true(a.atomicWriteMin >= 512 && a.atomicWriteMin <= a.atomicWriteMax)
    const four = fh.alloc(4096).fill(0x44)
    t.is((await fh.write(four, { position: 8192, atomic: true })).bytesWritten, 4096)
    if (a.atomicWriteMax >= 65536) {
      const big = fh.alloc(65536).fill(0x64)
      t.is((await fh.write(big, { position: 65536, atomic: true, dsync: true })).bytesWritten, 65536)
      const back = fh.alloc(65536)
      await fh.read(back, { position: 65536 })
      t.true(back.equals(big))
    }
    const before = fh.stats().ops
    const e1 = await t.throwsAsync(fh.write(fh.alloc(8192), { position: 4096, atomic: true }), { code: 'ERR_ODIRECT_ATOMIC' })
    t.regex(e1?.message ?? '', /multiple of the length/)
    await t.throwsAsync(fh.write(fh.alloc(12288), { position: 0, atomic: true }), { code: 'ERR_ODIRECT_ATOMIC', message: /power of two/ })
    await t.throwsAsync(fh.write(fh.alloc(a.atomicWriteMax * 2), { position: 0, atomic: true }), { code: 'ERR_ODIRECT_ATOMIC' })
    await t.throwsAsync(fh.writev([four], 0, { atomic: true } as never), { code: 'ERR_INVALID_ARG_VALUE' })
    t.is(fh.stats().ops, before, 'refused without a system call')
    // The flag reaches the submission (ODIRECT_DEBUG logs each op's RWF_* flags): RWF_ATOMIC | RWF_DSYNC.
    const script = `
      const { open } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      (async () => {
        const fh = await open(${JSON.stringify(path.join(fx.dir, 'f'))}, 'r+', { backend: ${JSON.stringify(backend)} });
        await fh.write(fh.alloc(4096).fill(7), { position: 0, atomic: true, dsync: true });
        await fh.close();
      })();`
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ODIRECT_DEBUG: '1' }, timeout: 30_000 })
    t.is(r.status, 0, r.stderr)
    t.regex(r.stderr, /^odirect: submit id=\d+ op=write fd=\d+ offset=0 length=4096 rw_flags=0x42$/m)
    // `odirect probe` shows the limits.
    const pr = spawnSync(process.execPath, [CLI, 'probe', fx.dir], { encoding: 'utf8', timeout: 30_000 })
    t.regex(pr.stdout, new RegExp(`^atomic writes: +${a.atomicWriteMin} to ${a.atomicWriteMax} bytes`, 'm'))
  })
}

fxTest('atomic writes on ext4: statx reports none, so write({ atomic: true }) is refused with ERR_ODIRECT_ATOMIC before any system call', EXT4_REQS, async (t) => {
  const fx = must(loopFs(4096, 64))
  t.teardown(() => fx.cleanup())
  const fh = await open(path.join(fx.dir, 'f'), 'w+', { direct: 'require' })
  t.teardown(() => fh.close())
  t.is(fh.alignment.atomicWriteMax, 0)
  await t.throwsAsync(fh.write(fh.alloc(4096), { position: 0, atomic: true }), { code: 'ERR_ODIRECT_ATOMIC', message: /no atomic writes/ })
  t.is(fh.stats().ops, 0)
})

// ---------------------------------------------------------------------------------------
// Uncached I/O: direct: 'uncached' (RWF_DONTCACHE)

const UNCACHED_BACKENDS = BACKENDS.filter((b) => b !== 'aio') // aio is only asynchronous with O_DIRECT
const uncachedSkip = where.uncached.works ? undefined : `RWF_DONTCACHE unavailable here: ${where.uncached.reason}`

for (const backend of UNCACHED_BACKENDS) {
  fxTest(
    `direct: 'uncached' on ${backend}: any length and alignment; a read leaves no page cached (direct: 'off' does)`,
    EXT4_REQS,
    async (t) => {
      const fx = must(loopFs(4096, 64))
      t.teardown(() => fx.cleanup())
      const p = path.join(fx.dir, 'f')
      const data = bytes(1 << 20, 77)
      fs.writeFileSync(p, data)
      const sfd = fs.openSync(p, 'r')
      fs.fsyncSync(sfd)
      fs.closeSync(sfd)
      evictFile(p)
      t.is(residentPages(p).resident, 0)
      const fh = await open(p, 'r+', { backend, direct: 'uncached' })
      t.teardown(() => fh.close())
      t.false(fh.direct)
      t.true(fh.uncached)
      // Unaligned lengths, positions and memory.
      const odd = Buffer.from('an unaligned uncached write')
      t.is((await fh.write(odd, { position: 1001 })).bytesWritten, odd.length)
      const back = Buffer.alloc(odd.length + 2)
      await fh.read(back, { position: 1000 })
      t.true(back.subarray(1, 1 + odd.length).equals(odd))
      await fh.datasync()
      evictFile(p)
      const whole = Buffer.alloc(data.length)
      t.is((await fh.read(whole, { position: 0 })).bytesRead, data.length)
      data.set(odd, 1001)
      t.true(whole.equals(data))
      t.is(residentPages(p).resident, 0, 'RWF_DONTCACHE: the kernel dropped the pages behind the read')
      // Control: the same read buffered leaves the file cached.
      const off = await open(p, 'r', { backend, direct: 'off' })
      await off.read(Buffer.alloc(data.length), { position: 0 })
      await off.close()
      t.true(residentPages(p).resident > 0)
    },
    uncachedSkip,
  )
}

fxTest("ext4 data=journal (O_DIRECT accepted, buffered behind the flag): 'prefer' falls back to uncached I/O and says why, 'require' is refused", ['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4'], async (t) => {
  const fx = must(loopFs(4096, 64, 'ext4', 'data=journal'))
  t.teardown(() => fx.cleanup())
  const p = path.join(fx.dir, 'f')
  const pr = await probe(fx.dir)
  t.false(pr.direct.works, 'statx reports no direct I/O under data=journal')
  const e = await t.throwsAsync(open(p, 'w+', { direct: 'require' }), { code: 'EINVAL' })
  t.regex(e?.message ?? '', /data=journal.*buffered/)
  const fh = await open(p, 'w+', { direct: 'prefer' })
  try {
    t.false(fh.direct, 'O_DIRECT would be buffered behind the flag: not reported as direct')
    t.regex(fh.fallbackReason ?? '', /mounted data=journal/)
    t.is(fh.uncached, pr.uncached.works, 'uncached buffered I/O wherever RWF_DONTCACHE works')
    const data = Buffer.alloc(1 << 20, 7)
    t.is((await fh.write(data, 0, data.length, 0)).bytesWritten, data.length)
    await fh.datasync()
    const back = Buffer.alloc(data.length)
    t.is((await fh.read(back, 0, back.length, 0)).bytesRead, data.length)
    t.true(back.equals(data))
  } finally {
    await fh.close()
  }
  if (pr.uncached.works) t.is(residentPages(p).resident, 0, 'uncached I/O leaves no page of the file in the cache')
})

fxTest("ext4 journal-data flag on one file (chattr +j, nodelalloc): that file is refused under 'require', its neighbour stays direct", ['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'cmd:debugfs', 'fs:ext4'], async (t) => {
  const fx = must(loopFs(4096, 64, 'ext4'))
  t.teardown(() => fx.cleanup())
  const journaled = path.join(fx.dir, 'journaled')
  const plain = path.join(fx.dir, 'plain')
  fs.writeFileSync(journaled, Buffer.alloc(8192, 1))
  fs.writeFileSync(plain, Buffer.alloc(8192, 2))
  // chattr +j needs CAP_SYS_RESOURCE (not every root has it): set the inode flag offline instead,
  // EXT4_EXTENTS_FL | EXT4_JOURNAL_DATA_FL.
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' })
    t.is(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`)
  }
  run('umount', [fx.dir])
  run('debugfs', ['-w', '-R', 'set_inode_field /journaled flags 0x84000', fx.device])
  // ext4 honours a file's journal-data flag only without delayed allocation.
  run('mount', ['-t', 'ext4', '-o', 'nodelalloc', fx.device, fx.dir])
  t.regex(spawnSync('lsattr', [journaled], { encoding: 'utf8' }).stdout, /^\S*j/, 'the flag is set')
  const e = await t.throwsAsync(open(journaled, 'r', { direct: 'require' }), { code: 'EINVAL' })
  t.regex(e?.message ?? '', /journal-data flag/)
  const fb = await open(journaled, 'r', { direct: 'prefer' })
  t.false(fb.direct)
  t.regex(fb.fallbackReason ?? '', /chattr \+j/)
  await fb.close()
  const fh = await open(plain, 'r', { direct: 'require' })
  t.true(fh.direct)
  const b = fh.alloc(4096)
  t.is((await fh.read(b, 0, 4096, 0)).bytesRead, 4096)
  t.is(b[0], 2)
  await fh.close()
})

fxTest("direct: 'uncached' where the filesystem lacks RWF_DONTCACHE (tmpfs): a coded error and the file left as it was", ['root', 'cmd:mount'], async (t) => {
  const fx = must(tmpfsDir(16))
  t.teardown(() => fx.cleanup())
  const p = path.join(fx.dir, 'f')
  fs.writeFileSync(p, 'keep me')
  const e = await t.throwsAsync(open(p, 'w', { direct: 'uncached' }), { code: 'EOPNOTSUPP' })
  t.is((e as DirectIoError).syscall, 'preadv2')
  t.is(fs.readFileSync(p, 'utf8'), 'keep me', "'w' did not truncate")
  await t.throwsAsync(open(path.join(fx.dir, 'new'), 'w', { direct: 'uncached' }), { code: 'EOPNOTSUPP' })
  t.false(fs.existsSync(path.join(fx.dir, 'new')), 'no file left behind')
  const r = await probe(fx.dir)
  t.false(r.uncached.works)
  t.regex(r.uncached.reason, /RWF_DONTCACHE/)
})

fxTest("probe() reports uncached I/O; direct: 'prefer' falls back to RWF_DONTCACHE only where it works (ramfs: fadvise)", ['root', 'cmd:mount', 'fs:ramfs'], async (t) => {
  const r = await probe('/var/tmp')
  t.is(typeof r.uncached.works, 'boolean')
  const fx = must(ramfsDir())
  t.teardown(() => fx.cleanup())
  t.false((await probe(fx.dir)).uncached.works)
  const fh = await open(path.join(fx.dir, 'f'), 'w+', { direct: 'prefer' })
  t.teardown(() => fh.close())
  t.false(fh.direct)
  t.false(fh.uncached)
  t.notRegex(fh.fallbackReason, /RWF_DONTCACHE/)
})
