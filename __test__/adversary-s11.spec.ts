// Adversary of the tenth session's additions, from the eleventh (see also liveness-reaper.spec
// for the reaper's). Each test either failed on the code before its fix (named "was: ...") or
// pins down an attack that found no fault. Nothing sleeps; every byte that reached a file is
// checked.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import { fullFs } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const U = 4096

interface ManyOut {
  results: string[]
  size: number
  landed: number[]
}

/** Runs __test__/adversary-s11/many-child.mjs with ODIRECT_MANY_NATIVE=`native`. */
function many(dir: string, mode: 'enospc' | 'abort' | 'close', window: number, n: number, native: '0' | '1'): ManyOut {
  const r = spawnSync(process.execPath, [path.join(here, 'adversary-s11', 'many-child.mjs'), dir, mode, String(window), String(n)], {
    env: { ...process.env, ODIRECT_MANY_NATIVE: native },
    encoding: 'utf8',
  })
  if (r.status !== 0) throw new Error(`child: ${r.status} ${r.stderr}`)
  for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f))
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as ManyOut
}

fxTest(
  'ODIRECT_MANY_NATIVE=1 array-form writeMany on a full tmpfs, plain, aborted in a microtask after the call, or closed right after it: every op\'s result says what reached the file; plain and closed give the JS path\'s results and file byte for byte (attacked: no fault)',
  ['root', 'cmd:mount'],
  async (t) => {
    const fx = must(fullFs(1, { kind: 'tmpfs' }))
    t.teardown(() => fx.cleanup())
    let n = Math.ceil(fx.freeBytes / U) + 40
    if (n % 37 === 0) n++
    for (const window of [0, 1, 4]) {
      for (const mode of ['enospc', 'abort', 'close'] as const) {
        const js = many(fx.dir, mode, window, n, '0')
        const native = many(fx.dir, mode, window, n, '1')
        const what = `${mode}, window ${window}`
        for (const [name, out] of [['js', js], ['native', native]] as const) {
          // results[0] is the batch's error code, then one per op (then close()'s outcome).
          t.is(out.results[0], mode === 'abort' ? 'ABORT_ERR' : 'ENOSPC', `${name} ${what}`)
          const ops = out.results.slice(1, n + 1)
          for (let i = 0; i < n; i++) {
            t.is(ops[i] === String(U), out.landed[i] === 1, `${name} ${what}: op ${i} reported ${ops[i]}, ${out.landed[i] ? '' : 'not '}in the file`)
          }
          t.true(ops.some((r) => r === 'ENOSPC' || r === 'ABORT_ERR'), `${name} ${what}`)
          if (mode === 'close') t.is(out.results[n + 1], 'closed')
        }
        // One op at a time and no abort, nothing depends on timing: the same ops fail, the same
        // bytes land. (With several in flight, which ones find the last free blocks depends on
        // how the kernel or the pool's threads order them: seen differ on the thread pool under
        // load. Aborted, the native batch may submit before or after the microtask that aborts
        // it. Either way each path's results match its own file, checked above.)
        if (mode !== 'abort' && window === 1) t.deepEqual(native, js, what)
      }
    }
  },
)
