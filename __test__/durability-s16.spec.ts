// Power-cut cases for durability sites that the mutation sweep (scripts/sync-mutants.cjs) found
// unproven by __test__/durability.spec.ts: each fails when its sync is removed (the site named in
// the test's comment) and passes with it. Same bed: crates/faultfs/src/crashfs.rs through
// __test__/helpers/crashbed.ts, the power cut at every mutating operation, torn sectors.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'

import test from 'ava'
import type { ExecutionContext } from 'ava'

import { constants, copyFile, createWriteStream, open, probe, writeFile } from '../dist/index.js'
import { bytes, CRASH_REQS, crashRun, crashSweep, describe, durable, type SweepOptions } from './helpers/crashbed.js'
import { skipReason } from './helpers/fixtures.js'
import { fxTest } from './helpers/fxtest.js'

delete process.env.ODIRECT_BACKEND
delete process.env.ODIRECT_MANY_NATIVE
const __dirname = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.join(__dirname, '..', 'dist', 'cli.js')
type Backend = 'io_uring' | 'aio' | 'threadpool'
const where = await probe('/var/tmp')
const BACKENDS = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => where.backends[b].available)

async function sweep<T>(t: ExecutionContext, name: string, o: SweepOptions<T>): Promise<void> {
  const r = await crashSweep(o)
  t.log(`${name}: ${r.ops} ops, ${r.points.length + 1} cut points, ${r.runs} runs, acknowledged in ${r.acked}`)
  t.deepEqual(r.violations, [], `${name}: guarantee broken after a power cut`)
  t.true(r.ops >= 2 || process.env.CRASH_CUT !== undefined, 'the workload reached the disk')
  t.true(r.acked > 0, 'the workload was acknowledged in some run')
}

const BLOCK = 4096
const FILE = bytes(16 * BLOCK, 7)
const SLOTS = [1, 2, 6, 13]

// ---------------------------------------------------------------------------------------
// fh.sync() (src/handle.ts: OP_FSYNC): durability.spec.ts only proves fh.datasync() and the
// per-write flags; a sync() that did nothing survived the sweep.

for (const backend of BACKENDS) {
  fxTest(`fh.sync() (${backend}): once it resolved every block written before it is durable; other blocks never change`, CRASH_REQS, async (t) => {
    await sweep(t, `write + sync (${backend})`, {
      torn: true,
      image: (d) => fs.writeFileSync(path.join(d, 'data'), FILE),
      workload: async (root) => {
        const fh = await open(path.join(root, 'data'), 'r+', { backend })
        try {
          for (const s of SLOTS) {
            const b = fh.alloc(BLOCK)
            b.set(bytes(BLOCK, 300 + s))
            await fh.write(b, { position: s * BLOCK })
          }
          await fh.sync()
        } finally {
          await fh.close().catch(() => undefined)
        }
      },
      check: (run) => {
        const got = durable(run, 'data')
        if (got === undefined || got.length !== FILE.length) return `data is ${got?.length ?? 'absent'}`
        for (let s = 0; s < FILE.length / BLOCK; s++) {
          const blk = got.subarray(s * BLOCK, (s + 1) * BLOCK)
          if (!SLOTS.includes(s)) {
            if (!blk.equals(FILE.subarray(s * BLOCK, (s + 1) * BLOCK))) return `block ${s} (not written) changed`
          } else if (run.outcome.ok && !blk.equals(bytes(BLOCK, 300 + s))) return `block ${s} not durable after sync resolved`
        }
        return undefined
      },
    })
  })
}

// ---------------------------------------------------------------------------------------
// The exclusive commit (src/fileops.ts commitTemp: link the temp file to dst, unlink the temp
// name, then fsync the directory): writeFile atomic with flag 'wx', copyFile with
// COPYFILE_EXCL / { exclusive: true }, `odirect cp --no-clobber`. durability.spec.ts only runs
// the rename path: a directory fsync skipped on the link path survived the sweep.

const NEW = bytes(9000, 2)
const SRC = bytes(200 * 1024 + 77, 3)

/** dst absent before; after a cut: absent or `want`, whole; `want` once the workload resolved. */
function exclusiveCheck(want: Buffer) {
  return (run: Parameters<SweepOptions<void>['check']>[0]): string | undefined => {
    const what = describe(durable(run, 'dst'), { new: want })
    if (run.outcome.ok && what !== 'new') return `resolved but dst is ${what}`
    if (what !== 'new' && what !== 'absent') return `dst is ${what}`
    return undefined
  }
}

for (const backend of BACKENDS) {
  fxTest(`writeFile atomic with flag 'wx', dst absent (${backend}): after a cut dst is absent or new, whole; new once it resolved`, CRASH_REQS, async (t) => {
    await sweep(t, `writeFile atomic wx (${backend})`, {
      torn: true,
      workload: (root) => writeFile(path.join(root, 'dst'), NEW, { atomic: true, flag: 'wx', backend }),
      check: exclusiveCheck(NEW),
    })
  })

  fxTest(`copyFile with COPYFILE_EXCL, dst absent (${backend}): after a cut dst is absent or the whole copy; the copy once it resolved`, CRASH_REQS, async (t) => {
    await sweep(t, `copyFile COPYFILE_EXCL (${backend})`, {
      torn: true,
      image: (d) => fs.writeFileSync(path.join(d, 'src'), SRC),
      workload: (root) => copyFile(path.join(root, 'src'), path.join(root, 'dst'), constants.COPYFILE_EXCL).then(() => undefined),
      check: (run) => (durable(run, 'src')?.equals(SRC) ? exclusiveCheck(SRC)(run) : 'src changed'),
    })
  })
}

fxTest('odirect cp --no-clobber, dst absent: after a cut dst is absent or the whole copy; the copy once it exited 0', CRASH_REQS, async (t) => {
  await sweep(t, 'odirect cp --no-clobber', {
    torn: true,
    maxPoints: 16,
    image: (d) => fs.writeFileSync(path.join(d, 'src'), SRC),
    workload: async (root) => {
      const r = spawnSync(process.execPath, [CLI, 'cp', '--quiet', '--no-clobber', path.join(root, 'src'), path.join(root, 'dst')], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`odirect cp exited ${r.status}: ${r.stderr}`)
    },
    check: (run) => (durable(run, 'src')?.equals(SRC) ? exclusiveCheck(SRC)(run) : 'src changed'),
  })
})

// ---------------------------------------------------------------------------------------
// writeMany(ops, { datasync: true }) on io_uring when the writes are not linked to the fdatasync
// (src/handle.ts #thenDatasync, unlinked: more than 16 ops, a `window`, or the typed-array form):
// durability.spec.ts runs io_uring only with 5 linked ops, so an fdatasync skipped on these paths
// of io_uring survived the sweep.

const MANY_FILE = bytes(40 * BLOCK, 8)

type Unlinked = '24 ops' | 'window 2' | 'typed arrays'

function unlinkedSweep(form: Unlinked): SweepOptions<void> {
  const slots = form === '24 ops' ? Array.from({ length: 24 }, (_, i) => i + (i >= 12 ? 4 : 0)) : [0, 5, 6, 11, 30]
  return {
    torn: true,
    maxPoints: 30,
    image: (d) => fs.writeFileSync(path.join(d, 'data'), MANY_FILE),
    workload: async (root) => {
      const fh = await open(path.join(root, 'data'), 'r+', { backend: 'io_uring' })
      try {
        if (form === 'typed arrays') {
          const memory = fh.alloc(slots.length * BLOCK)
          slots.forEach((s, i) => memory.set(bytes(BLOCK, 500 + s), i * BLOCK))
          const offsets = new Uint32Array(slots.map((_, i) => i * BLOCK))
          const lengths = new Uint32Array(slots.length).fill(BLOCK)
          const positions = new Float64Array(slots.map((s) => s * BLOCK))
          await fh.writeMany({ memory, offsets, lengths, positions }, { datasync: true })
        } else {
          const ops = slots.map((s) => {
            const buf = fh.alloc(BLOCK)
            buf.set(bytes(BLOCK, 500 + s))
            return { buffer: buf, position: s * BLOCK }
          })
          await fh.writeMany(ops, form === 'window 2' ? { datasync: true, window: 2 } : { datasync: true })
        }
      } finally {
        await fh.close().catch(() => undefined)
      }
    },
    check: (run) => {
      const got = durable(run, 'data')
      if (got === undefined || got.length !== MANY_FILE.length) return `data is ${got?.length ?? 'absent'}`
      for (let s = 0; s < MANY_FILE.length / BLOCK; s++) {
        const blk = got.subarray(s * BLOCK, (s + 1) * BLOCK)
        if (!slots.includes(s)) {
          if (!blk.equals(MANY_FILE.subarray(s * BLOCK, (s + 1) * BLOCK))) return `block ${s} (not written) changed`
        } else if (run.outcome.ok && !blk.equals(bytes(BLOCK, 500 + s))) return `block ${s} not durable after writeMany resolved`
      }
      return undefined
    },
  }
}

for (const form of ['24 ops', 'window 2', 'typed arrays'] as const) {
  fxTest(
    `writeMany({ datasync: true }) unlinked on io_uring (${form}): durable when it resolves, at every cut point`,
    CRASH_REQS,
    async (t) => {
      await sweep(t, `writeMany { datasync: true } unlinked (${form})`, unlinkedSweep(form))
    },
    BACKENDS.includes('io_uring') ? undefined : 'io_uring is not available to this process',
  )
}

// ---------------------------------------------------------------------------------------
// RWF_DSYNC / RWF_SYNC on the batch paths durability.spec.ts does not run: the typed-array
// writeMany (src/many.ts manyArrays: the native batch's flags) and the array form run in the
// engine (ODIRECT_MANY_NATIVE=1, src/many.ts startMany: batchViews' flags). Block 0 written with
// the flag, block 1 plain after it, then the cut: only block 0 must survive.

const FLAGGED = bytes(3 * BLOCK, 40)

async function flagRun(t: ExecutionContext, backend: Backend, flag: 'dsync' | 'sync', form: 'typed' | 'native'): Promise<void> {
  const run = await crashRun({ image: (d) => fs.writeFileSync(path.join(d, 'data'), FLAGGED) }, async (root) => {
    const fh = await open(path.join(root, 'data'), 'r+', { backend })
    try {
      const a = fh.alloc(BLOCK).fill(0xa1)
      if (form === 'typed') {
        await fh.writeMany({ memory: a, offsets: new Uint32Array([0]), lengths: new Uint32Array([BLOCK]), positions: new Float64Array([0]) }, { [flag]: true })
      } else {
        // Read by startMany at the call; this test is serial, so no other test sees it.
        process.env.ODIRECT_MANY_NATIVE = '1'
        try {
          await fh.writeMany([{ buffer: a, position: 0 }], { [flag]: true })
        } finally {
          delete process.env.ODIRECT_MANY_NATIVE
        }
      }
      await fh.write(fh.alloc(BLOCK).fill(0xb2), { position: BLOCK })
    } finally {
      await fh.close()
    }
  })
  try {
    if (!run.outcome.ok) throw run.outcome.error
    const got = durable(run, 'data')
    t.truthy(got)
    t.true(got?.subarray(0, BLOCK).every((x) => x === 0xa1), 'the flagged write survived the cut')
    t.true(got?.subarray(BLOCK, 2 * BLOCK).equals(FLAGGED.subarray(BLOCK, 2 * BLOCK)), 'the plain write was in the volatile cache only')
  } finally {
    run.cleanup()
  }
}

for (const backend of BACKENDS) {
  for (const flag of ['dsync', 'sync'] as const) {
    fxTest(`typed-array writeMany({ ${flag}: true }) on ${backend}: durable when it resolves; the plain write after it is not`, CRASH_REQS, (t) => flagRun(t, backend, flag, 'typed'))
  }
  fxTest(`writeMany({ dsync: true }) with ODIRECT_MANY_NATIVE=1 on ${backend}: durable when it resolves; the plain write after it is not`, CRASH_REQS, (t) => flagRun(t, backend, 'dsync', 'native'), undefined, 'serial')
}

// ---------------------------------------------------------------------------------------
// O_SYNC / O_DSYNC given in the open flags ('rs+', numeric fs.constants), not by { dsync: true }:
// durability.spec.ts only proves the option. A write through such a handle is durable when it
// resolves; nothing else is synced.

for (const backend of BACKENDS) {
  for (const how of ["'rs+'", 'O_RDWR | O_DSYNC'] as const) {
    fxTest(`open(path, ${how}) on ${backend}: every write durable when it resolves`, CRASH_REQS, async (t) => {
      const run = await crashRun({ image: (d) => fs.writeFileSync(path.join(d, 'data'), FLAGGED) }, async (root) => {
        const flags = how === "'rs+'" ? 'rs+' : constants.O_RDWR | constants.O_DSYNC
        const fh = await open(path.join(root, 'data'), flags, { backend })
        try {
          await fh.write(fh.alloc(BLOCK).fill(0xd5), { position: BLOCK })
        } finally {
          await fh.close()
        }
      })
      try {
        t.true(run.outcome.ok, String(!run.outcome.ok && run.outcome.error))
        t.true(durable(run, 'data')?.subarray(BLOCK, 2 * BLOCK).every((x) => x === 0xd5), 'the write survived the cut')
        t.true(durable(run, 'data')?.subarray(0, BLOCK).equals(FLAGGED.subarray(0, BLOCK)))
      } finally {
        run.cleanup()
      }
    })
  }
}

// ---------------------------------------------------------------------------------------
// fh.datasync() / fh.sync() called while writes are still in flight (not awaited): the README
// promises they cover every write issued before them (src/handle.ts #simple -> io.ts
// startAfterWrites). durability.spec.ts always awaits the writes first.

const BIG = 1024 * 1024
const INFLIGHT_SLOTS = [0, 2, 3, 5, 6, 7]
const INFLIGHT_FILE = bytes(8 * BIG, 9)

for (const backend of BACKENDS) {
  for (const call of ['datasync', 'sync'] as const) {
    fxTest(`fh.${call}() with writes in flight (${backend}): once it resolved, every write issued before it is durable`, CRASH_REQS, async (t) => {
      // The power is cut the moment the sync resolved, before the writes' own promises are awaited.
      // Rounds: a sync that overtook the writes loses one of them only when it wins the race.
      for (let round = 0; round < 6; round++) await inflightRound(t, backend, call)
    })
  }
}

async function inflightRound(t: ExecutionContext, backend: Backend, call: 'datasync' | 'sync'): Promise<void> {
  const run = await crashRun({ image: (d) => fs.writeFileSync(path.join(d, 'data'), INFLIGHT_FILE) }, async (root) => {
    const fh = await open(path.join(root, 'data'), 'r+', { backend })
    try {
      const writes = INFLIGHT_SLOTS.map((s) => {
        const b = fh.alloc(BIG)
        b.set(bytes(BIG, 600 + s))
        return fh.write(b, { position: s * BIG })
      })
      writes.forEach((w) => w.catch(() => undefined))
      await fh[call]()
      fs.writeFileSync(path.join(root, '.crashfs'), 'cut')
      await Promise.allSettled(writes)
    } finally {
      await fh.close().catch(() => undefined)
    }
  })
  try {
    t.true(run.outcome.ok, String(!run.outcome.ok && run.outcome.error))
    const got = durable(run, 'data')
    t.is(got?.length, INFLIGHT_FILE.length)
    for (const s of INFLIGHT_SLOTS) t.true(got?.subarray(s * BIG, (s + 1) * BIG).equals(bytes(BIG, 600 + s)), `the write at ${s * BIG} is durable once ${call} resolved`)
  } finally {
    run.cleanup()
  }
}

// ---------------------------------------------------------------------------------------
// A file created through a dangling symbolic link into another directory: O_CREAT makes the file
// the link names, so its entry is in *that* directory, and that is the directory to fsync. Found
// by this sweep: writeFile(link, data, { flush: true }) and createWriteStream(link) synced the
// link's own directory, and after the promise resolved / 'finish' fired a cut lost the file.

const LINKED = bytes(10000, 11)

function danglingLink(d: string): void {
  fs.mkdirSync(path.join(d, 'sub'))
  fs.symlinkSync('sub/target', path.join(d, 'link'))
}

function linkCheck(run: Parameters<SweepOptions<void>['check']>[0]): string | undefined {
  if (!run.outcome.ok) return undefined
  const what = describe(durable(run, 'sub/target'), { new: LINKED })
  return what === 'new' ? undefined : `resolved but the file the link names is ${what}`
}

fxTest('writeFile(link, data, { flush: true }) through a dangling link into another directory: once it resolved, the file it created and its name are durable', CRASH_REQS, async (t) => {
  await sweep(t, 'writeFile flush through a dangling link', {
    torn: true,
    image: danglingLink,
    workload: (root) => writeFile(path.join(root, 'link'), LINKED, { flush: true }),
    check: linkCheck,
  })
})

// The write stream's directory sync (src/streams/core.ts BlockWriter.finish) synced the link's directory: now the created file's.
const streamLinkTitle = "createWriteStream(link) through a dangling link into another directory: once 'finish' fired, the file it created and its name are durable (was: the stream synced the link's directory, not the file's)"
const streamLinkSkip = skipReason(CRASH_REQS)
if (streamLinkSkip) {
  console.log(`skipping "${streamLinkTitle}": ${streamLinkSkip}`)
  test.skip(streamLinkTitle, () => undefined)
} else {
  test(streamLinkTitle, async (t) => {
    await sweep(t, 'write stream through a dangling link', {
      torn: true,
      image: danglingLink,
      workload: async (root) => {
        await pipeline(Readable.from([LINKED]), createWriteStream(path.join(root, 'link')))
      },
      check: linkCheck,
    })
  })
}
