// Adversarial suite for odirect's memory-safety promise (issue 9): what JS can do to memory the
// kernel holds, user code running inside a call, view kinds, hostile values for every public
// function, registered-buffer pressure, and ordering. Every memory-corrupting scenario runs in a
// child process (`node --expose-gc __test__/adversarial/<script>.cjs`), so a failure is an exit
// status/signal asserted here, never a crash of ava. Honours ODIRECT_BACKEND (the children
// inherit it); `npm run test:backends` runs this file once per backend.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { faultFs, findCommand, type Requirement, skipReason, tmpfsDir } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'

import { addressOf } from '../dist/index.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const scripts = path.join(here, 'adversarial')
const BACKEND = process.env.ODIRECT_BACKEND || 'auto'
const FAULT: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']

interface Child {
  status: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  result: Record<string, unknown> | undefined
}

/** Runs a child script to its end (asynchronously: the tests of this file run their children concurrently). */
function runChild(script: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; prefix?: readonly string[]; timeoutMs?: number } = {}): Promise<Child> {
  const argv = [...(opts.prefix ?? []), process.execPath, '--expose-gc', path.join(scripts, script), ...args]
  return new Promise((resolve, reject) => {
    // `timeout` only bounds a hung child (it is then killed and reported with its signal).
    const c = spawn(argv[0], argv.slice(1), { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 120_000, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    c.on('error', reject)
    c.on('close', (status, signal) => {
      const line = stdout.split('\n').find((l) => l.startsWith('RESULT '))
      resolve({ status, signal, stdout, stderr, result: line ? (JSON.parse(line.slice(7)) as Record<string, unknown>) : undefined })
    })
  })
}

/** The child ran to its end: exit 0, no signal (no SIGSEGV/SIGABRT from heap corruption). */
function survived(t: ExecutionContext, c: Child, what: string): Record<string, unknown> {
  t.is(c.signal, null, `${what}: killed by ${String(c.signal)}; stderr: ${c.stderr.slice(-2000)}`)
  t.is(c.status, 0, `${what}: exit ${String(c.status)}; stderr: ${c.stderr.slice(-2000)}; stdout: ${c.stdout.slice(-1500)}`)
  t.truthy(c.result, `${what}: no RESULT line; stdout: ${c.stdout.slice(-500)}`)
  return c.result ?? {}
}

function scratch(t: ExecutionContext): string {
  const d = fs.mkdtempSync('/var/tmp/odirect-adv-')
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }))
  return d
}

// ---------------------------------------------------------------------------------------
// 1. Memory given away while reads are held in the kernel (faultfs), then gc + fresh allocations.

const hasTransfer = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function'
const attacks: Array<{ attack: string; memory: string; skip?: string }> = [
  { attack: 'clone', memory: 'alloc' },
  { attack: 'clone', memory: 'plain' },
  { attack: 'post', memory: 'alloc' },
  { attack: 'post', memory: 'plain' },
  { attack: 'transfer', memory: 'alloc', skip: hasTransfer ? undefined : `ArrayBuffer.prototype.transfer is missing in Node ${process.versions.node} (Node 22+)` },
  { attack: 'transfer', memory: 'plain', skip: hasTransfer ? undefined : `ArrayBuffer.prototype.transfer is missing in Node ${process.versions.node} (Node 22+)` },
  { attack: 'resize', memory: 'plain' },
]
for (const { attack, memory, skip } of attacks) {
  const what = { clone: 'structuredClone transfer', post: 'postMessage transfer', transfer: 'ArrayBuffer#transfer()', resize: 'resizable ArrayBuffer resized to 0' }[attack]
  const mem = memory === 'alloc' ? 'fh.alloc memory' : attack === 'resize' ? 'a resizable ArrayBuffer' : 'a plain ArrayBuffer'
  fxTest(
    `[${BACKEND}] ${what} of ${mem} while 16 reads are held in the kernel, then gc + fresh allocations: no file bytes in freed memory, no crash, every read settles`,
    FAULT,
    async (t) => {
      const fx = must(faultFs({ size: 4 << 20, hold: 'held' }))
      t.teardown(() => fx.cleanup())
      const c = await runChild('transfer.cjs', [fx.file, fx.holdFile ?? '', fx.statsFile, fx.outFile, attack, memory])
      const r = survived(t, c, `${attack}/${memory}`)
      t.true(Number(r.heldAtAttack) > 0, 'the reads were held by the filesystem (in the kernel) when the memory was given away')
      t.is(r.found, 0, `file bytes found in ${String(r.found)} fresh allocations (at ${JSON.stringify(r.foundIn)}): the kernel wrote into memory JS had freed`)
      const settled = (r.settled ?? []) as Array<{ status: string; value?: number; code?: string }>
      t.is(settled.length, 16)
      for (const [i, s] of settled.entries()) {
        // odirect-owned memory: the read completes into it; a bounced buffer: ERR_ODIRECT_DETACHED.
        const ok = (s.status === 'fulfilled' && s.value === 65536) || (s.status === 'rejected' && s.code === 'ERR_ODIRECT_DETACHED')
        t.true(ok, `read ${i}: ${JSON.stringify(s)}`)
        if (memory === 'plain') t.is(s.code, 'ERR_ODIRECT_DETACHED', `read ${i} into a detached/shrunk plain buffer must reject`)
      }
    },
    skip,
  )
}

// ---------------------------------------------------------------------------------------
// 2 + 3 + 8b. User code inside calls; same-tick detach/abort; view kinds (one child, one test each).

type Scenario = Record<string, unknown> & { status: string; code?: string; value?: unknown }
// One getters child for all the scenario tests below (started by the first of them).
let getters: Promise<{ scenarios: Record<string, Scenario>; child: Child }> | undefined
function gettersRun(): Promise<{ scenarios: Record<string, Scenario>; child: Child }> {
  getters ??= (async () => {
    const d = fs.mkdtempSync('/var/tmp/odirect-adv-g-')
    try {
      const child = await runChild('getters.cjs', [d])
      return { scenarios: (child.result?.scenarios ?? {}) as Record<string, Scenario>, child }
    } finally {
      fs.rmSync(d, { recursive: true, force: true })
    }
  })()
  return getters
}
async function scenario(t: ExecutionContext, name: string): Promise<Scenario> {
  const g = await gettersRun()
  survived(t, g.child, 'getters child')
  const s = g.scenarios[name]
  t.truthy(s, `scenario "${name}" missing`)
  return s ?? { status: 'missing' }
}

const detachedRejects: Array<[string, boolean]> = [
  ['write: position getter detaches the buffer', true],
  ['read: position getter detaches the buffer', false],
  ['write: signal getter detaches the buffer', true],
  ["write: the signal's aborted getter detaches the buffer", true],
  ["writev: element 1's getter detaches element 0", true],
  ["writeMany: op 1's getter detaches op 0's buffer", true],
  ["readMany: op 1's getter detaches op 0's buffer", false],
  ["readv: element 1's getter detaches element 0", false],
  ['read: position getter shrinks a resizable buffer to 0', false],
]
for (const [name, isWrite] of detachedRejects) {
  test(`[${BACKEND}] ${name}: rejects ERR_ODIRECT_DETACHED${isWrite ? ', nothing written anywhere' : ''}`, async (t) => {
    const s = await scenario(t, name)
    t.is(s.status, 'rejected', `resolved with ${JSON.stringify(s.value)}: validated is not what was submitted`)
    t.is(s.code, 'ERR_ODIRECT_DETACHED', String(s.message))
    if (isWrite) t.is(s.unchanged, true, `the file changed: ${String(s.unchanged)}`)
    if ('b1Untouched' in s) t.is(s.b1Untouched, true, 'no element of the refused batch was read into')
  })
}

test(`[${BACKEND}] write: buffer detached right after the call (same tick): written in full from captured memory, or refused with nothing written`, async (t) => {
  const s = await scenario(t, 'write: buffer detached right after the call (same tick)')
  if (s.status === 'fulfilled') {
    t.is(s.value, 4096)
    t.is(s.fullWrite, true, 'a resolved write wrote exactly the captured bytes')
  } else {
    t.is(s.code, 'ERR_ODIRECT_DETACHED')
    t.is(s.unchanged, true)
  }
})

test(`[${BACKEND}] AbortSignal aborted in the same tick as a write: AbortError, file unchanged`, async (t) => {
  const s = await scenario(t, 'write: signal aborted right after the call (same tick)')
  t.is(s.status, 'rejected')
  t.is(s.code, 'ABORT_ERR')
  t.is(s.name, 'AbortError')
  t.is(s.unchanged, true, `the aborted write reached the file: ${String(s.unchanged)}`)
})

test(`[${BACKEND}] AbortSignal aborted in the same tick as a read: AbortError, buffer untouched`, async (t) => {
  const s = await scenario(t, 'read: signal aborted right after the call (same tick)')
  t.is(s.status, 'rejected')
  t.is(s.code, 'ABORT_ERR')
  t.is(s.bufferUntouched, true)
})

const hasFloat16 = typeof (globalThis as { Float16Array?: unknown }).Float16Array === 'function'
for (const kind of ['Float16Array', 'BigInt64Array', 'Float64Array', 'Uint16Array', 'DataView']) {
  const title = `[${BACKEND}] ${kind} views: bytes moved == byteLength (write and read), file size exact, neighbours untouched`
  if (kind === 'Float16Array' && !hasFloat16) {
    console.log(`skipping "${title}": Node ${process.versions.node} has no Float16Array`)
    test.skip(title, () => {})
    continue
  }
  test(title, async (t) => {
    const s = await scenario(t, `view kind ${kind}: bytes moved == byteLength`)
    t.is(s.status, 'fulfilled', String(s.code))
    t.is(s.written, s.byteLength)
    t.is(s.read, s.byteLength)
    t.is(s.size, 4096, 'the file grew by exactly the view')
    t.is(s.contentOk, true)
    t.is(s.readOk, true)
    t.is(s.tailUntouched, true, 'the read wrote past the view')
  })
}

// ---------------------------------------------------------------------------------------
// 5. Fuzz of every public function with every JS type.

fxTest(`[${BACKEND}] fuzz: >= 20k calls of every public function with every kind of JS value: coded errors only, no abort, no hang, bounded RSS`, ['root', 'cmd:mount'], async (t) => {
  const fx = must(tmpfsDir(64))
  t.teardown(() => fx.cleanup())
  const c = await runChild('fuzz.cjs', [fx.dir, '20000'], { timeoutMs: 150_000 })
  const r = survived(t, c, 'fuzz')
  t.true(Number(r.calls) >= 20_000, `only ${String(r.calls)} calls`)
  t.is(r.rssExceeded, undefined, `RSS reached ${String(r.maxRss)}`)
  t.is(r.hangs, 0)
  const bad = (r.bad ?? []) as Array<{ fn: string; args: string[]; error: string }>
  t.deepEqual(bad.map((b) => `${b.fn}(${b.args.join(', ')}) -> ${b.error}`), [], 'uncoded errors')
  t.log(`${String(r.calls)} calls in ${String(r.ms)} ms, max RSS ${Math.round(Number(r.maxRss) / 2 ** 20)} MiB`)
})

// ---------------------------------------------------------------------------------------
// 7. registerBuffers pressure; addressOf of non-views.

test(`[${BACKEND}] registerBuffers: 12 x (64 x 1 MiB) + unregister(): RSS returns near the baseline before close()`, async (t) => {
  const c = await runChild('register.cjs', [scratch(t), 'rss'])
  const r = survived(t, c, 'register rss')
  t.log(`base ${Math.round(Number(r.base) / 2 ** 20)} MiB, peak ${Math.round(Number(r.peak) / 2 ** 20)} MiB, after ${Math.round(Number(r.after) / 2 ** 20)} MiB`)
  t.true(Number(r.growth) < 3 * 64 * 2 ** 20, `RSS grew by ${Math.round(Number(r.growth) / 2 ** 20)} MiB after unregister()`)
})

const prlimitSkip = skipReason(['cmd:prlimit'])
if (prlimitSkip) console.log(`skipping registerBuffers under prlimit: ${prlimitSkip}`)
;(prlimitSkip ? test.skip : test)(`[${BACKEND}] registerBuffers(16384, 2034381) under prlimit --as=8G: a coded error, not SIGABRT`, async (t) => {
  const c = await runChild('register.cjs', [scratch(t), 'huge'], { prefix: [findCommand('prlimit') ?? 'prlimit', `--as=${8 * 2 ** 30}`] })
  const r = survived(t, c, 'register huge')
  t.is(r.threw, true)
  t.is(typeof r.code, 'string', String(r.message))
  t.true(['ERR_OUT_OF_RANGE', 'ERR_ODIRECT_NOMEM', 'ENOMEM'].includes(String(r.code)), String(r.code))
})

test('addressOf(undefined | null | number | string | {} | detached): a coded error, not a bare TypeError; an ArrayBuffer has an address', (t) => {
  const detached = new Uint8Array(8)
  structuredClone(detached.buffer, { transfer: [detached.buffer] })
  const revoked = Proxy.revocable({}, {})
  revoked.revoke()
  for (const v of [undefined, null, 42, 'x', {}, detached, revoked.proxy]) {
    const e = t.throws(() => addressOf(v as never))
    t.is(typeof (e as { code?: unknown }).code, 'string', `addressOf(${typeof v}): ${String(e)}`)
  }
  const ab = new ArrayBuffer(8)
  t.is(addressOf(ab), addressOf(new Uint8Array(ab)), 'an ArrayBuffer and a view of it from byte 0 share the address')
  t.true(addressOf(ab) > 0)
})

// ---------------------------------------------------------------------------------------
// 8a. Ordering: un-awaited write, then await datasync()/sync(): the write completes first.

test(`[${BACKEND}] an un-awaited write followed by await datasync()/sync(): each write completes before the flush is submitted (ODIRECT_DEBUG)`, async (t) => {
  const c = await runChild('order.cjs', [scratch(t)], { env: { ODIRECT_DEBUG: '1' } })
  const r = survived(t, c, 'order')
  const fd = Number(r.fd)
  const lines = c.stderr.split('\n').filter((l) => l.startsWith('odirect: ') && l.includes(` fd=${fd} `))
  let flushes = 0
  for (let i = 0; i < 4; i++) {
    const off = i * 64 * 1024
    const done = lines.findIndex((l) => l.startsWith('odirect: complete ') && l.includes(' op=write ') && l.includes(` offset=${off} `))
    t.true(done >= 0, `no completion line for the write at ${off}`)
    // The i-th flush submitted (datasync for even i, sync for odd i).
    let seen = -1
    const idx = lines.findIndex((l) => l.startsWith('odirect: submit ') && / op=(fdatasync|fsync) /.test(l) && ++seen === i)
    t.true(idx >= 0, `no submit line for flush ${i}`)
    if (idx >= 0) flushes++
    t.true(done < idx, `the write at ${off} completed (line ${done}) after flush ${i} was submitted (line ${idx})`)
  }
  t.is(flushes, 4)
  t.deepEqual(r.n, [65536, 65536, 65536, 65536])
})
