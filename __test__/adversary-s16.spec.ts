// Adversary pass of the sixteenth session, as a new user and an attacker would meet odirect
// (earlier passes: data changing under reads, full disks, RLIMIT_FSIZE, worker deaths, EMFILE,
// CLOEXEC, signal storms, memory cgroups, positions past 4 GiB):
// 1. an AbortSignal aborted at every await point of readFile, writeFile, copyFile and the streams
//    (each native call, node:fs call and FileHandle method counted, aborted as it starts or as it
//    settles): ABORT_ERR or the whole data, no temp file, no descriptor left, the old destination
//    whole. Found: copyFile aborted while its temp file's open was in flight left the temp file
//    (the open created it after the cleanup removed the name; seen on tmpfs under load), fixed in
//    src/files.ts (openRaced / copyBlocks wait for that open before removing the temp file);
// Every check waits on an event (a promise, a child's exit); nothing is timed.
import { execFile } from 'node:child_process'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { scratchDirs } from './helpers/scratch.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const kids = path.join(here, 'adversary-s16')
const scratch = scratchDirs('s16')

/** Runs `node <script> args` and resolves with its RESULT line's JSON. */
function runChild<T>(script: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(kids, script), ...args], { encoding: 'utf8', env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith('RESULT '))
      if (line === undefined) return reject(new Error(`${script} printed no RESULT (${String(err)}):\n${stdout}\n${stderr}`))
      const o = JSON.parse(line.slice(7)) as T & { crash?: string }
      if (o.crash !== undefined) return reject(new Error(`${script} crashed: ${o.crash}\n${stderr}`))
      resolve(o)
    })
  })
}

// ---------------------------------------------------------------------------------------
// 1. Abort at every await point

interface Sweep {
  runs: number
  points: Record<string, number>
  bad: string[]
}

const WHOLE_FILE = 'writeFile atomic,writeFile atomic iterable,writeFile,copyFile,copyFile verify,copyFile sparse,copyFile exclusive,readFile'
const STREAMS = 'read stream,write stream,web read stream'

for (const [where, root] of [
  ['disk', '/var/tmp'],
  ['tmpfs', '/dev/shm'],
] as const) {
  test(`abort at every await point of readFile / writeFile / copyFile on ${where}, the temp file's open held until the caller removes its name (was: copyFile left the temp file when the abort came during that open): ABORT_ERR or the whole data, no temp file, no descriptor, the old destination whole`, async (t) => {
    const r = await runChild<Sweep>('abort-sweep.cjs', [scratch(root), WHOLE_FILE, '--slow-temp-open'])
    t.deepEqual(r.bad, [])
    // Every form was swept past its last point (each makes more than a handful of calls).
    for (const form of WHOLE_FILE.split(',')) for (const m of ['before', 'after']) t.true((r.points[`${form} ${m}`] ?? 0) >= 8, `${form} ${m}: ${r.points[`${form} ${m}`]}`)
  })
}

test('abort at every await point of a read stream, a write stream (pipeline) and a web read stream: ABORT_ERR or the whole data, no descriptor left (attacked: no fault)', async (t) => {
  const r = await runChild<Sweep>('abort-sweep.cjs', [scratch(), STREAMS])
  t.deepEqual(r.bad, [])
  for (const form of STREAMS.split(',')) for (const m of ['before', 'after']) t.true((r.points[`${form} ${m}`] ?? 0) >= 8, `${form} ${m}: ${r.points[`${form} ${m}`]}`)
})
