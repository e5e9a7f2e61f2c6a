// Files of the kernel's pseudo filesystems (procfs, sysfs, tracefs) are served by code that may
// wait for an event (/proc/kmsg until the kernel logs, tracefs's trace_pipe until a trace event,
// a sysfs attribute asking its device): they are marked "may sleep" at open, as FUSE files,
// FIFOs and character devices are, so configureEngine({ waitMicros }) never makes the JS thread
// wait in the kernel for a read on them (was: one in-kernel wait per lone read, up to 1 ms of
// the JS thread each, or the whole budget on /proc/kmsg). Seen in the engine's count of
// in-kernel waits. Readable files of each filesystem are used (the blocking ones would block
// the test, and reading /proc/kmsg consumes the system's log).
import * as fs from 'node:fs'

import test from 'ava'

import { configureEngine, open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { patterned } from './helpers/qd1.js'
import { scratchDirs } from './helpers/scratch.js'

const scratch = scratchDirs('liveness-maysleep')
const waitsMade = (): number => getEngine().native.waitStats[0]

test.afterEach.always(() => configureEngine({ waitMicros: 0 }))

/** Lone reads of `file` (buffered: these filesystems refuse O_DIRECT); the in-kernel waits they made. */
async function waitsFor(file: string, reads: number): Promise<{ waits: number; backend: string; bytes: number }> {
  const fh = await open(file, 'r', { backend: 'io_uring', direct: 'off' })
  try {
    const before = waitsMade()
    let bytes = 0
    for (let i = 0; i < reads; i++) bytes += (await fh.read(fh.alloc(4096), { position: 0 })).bytesRead
    return { waits: waitsMade() - before, backend: fh.backend, bytes }
  } finally {
    await fh.close()
  }
}

const PSEUDO = [
  { fs: 'procfs', file: '/proc/self/status' },
  { fs: 'sysfs', file: '/sys/kernel/mm/transparent_hugepage/enabled' },
  { fs: 'tracefs', file: '/sys/kernel/tracing/README' },
  { fs: 'character device', file: '/dev/zero' },
]

for (const { fs: name, file } of PSEUDO) {
  const why = fs.existsSync(file) ? undefined : `${file} does not exist here (${name} not mounted)`
  ;(why ? test.skip : test.serial)(`waitMicros: lone reads of a ${name} file (${file}) make no in-kernel wait (the file may sleep)`, async (t) => {
    configureEngine({ waitMicros: 1000 })
    const r = await waitsFor(file, 5)
    if (r.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${r.backend}`)
    t.true(r.bytes > 0, 'the reads returned data')
    t.is(r.waits, 0, `in-kernel waits for reads of ${file}`)
  })
  if (why) console.log(`skipping ${name}: ${why}`)
}

test.serial('waitMicros: lone reads of a regular file on disk still wait in the kernel (the control)', async (t) => {
  configureEngine({ waitMicros: 1000 })
  const r = await waitsFor(patterned(scratch(), 4), 5)
  if (r.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${r.backend}`)
  t.true(r.waits > 0, `in-kernel waits: ${r.waits}`)
})
