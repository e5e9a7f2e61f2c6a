// Adversary pass of the twenty-second session: what a serious storage user would meet.
// Found:
// 1. open() chose its backend after the open: a backend refused then (an ODIRECT_BACKEND typo,
//    `backend: 'io_uring'` where a seccomp profile such as Docker's blocks io_uring) failed the
//    call ERR_ODIRECT_BACKEND with the file already emptied by 'w' / O_TRUNC, or created by
//    'wx' (a retry then failed EEXIST): open, writeFile, createWriteStream, writableWebStream.
//    The backend is settled before the open now (src/open.ts openImpl).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childRunner } from './helpers/child-result.ts'
import { isSkip, seccompLauncher } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.ts'

delete process.env.ODIRECT_BACKEND
const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
const CHILDREN = path.join(here, 'adversary-s22')
const scratch = scratchDirs('s22')
const run = childRunner(CHILDREN)

// ---------------------------------------------------------------------------------------
// 1. A backend refused after the open

interface Refused {
  out: Array<{ call: string; code: string; size: number; same: boolean; names: string[] }>
}

function checkRefused(t: import('ava').ExecutionContext, r: Refused): void {
  t.is(r.out.length, 12)
  for (const o of r.out) {
    t.is(o.code, 'ERR_ODIRECT_BACKEND', `${o.call}: refused`)
    t.true(o.same, `${o.call}: the file was changed (now ${o.size} bytes, was 8192)`)
    t.deepEqual(o.names, [], `${o.call}: files left or made`)
  }
}

test('open(path, \'w\' | \'wx\' | O_TRUNC), writeFile, copyFile and both write streams with an ODIRECT_BACKEND that is no backend: ERR_ODIRECT_BACKEND with the file as it was, nothing created (was: emptied, or created, then refused)', async (t) => {
  const r = await run<Refused>('backend-refused.mjs', [DIST, scratch(), 'auto'], { env: { ...process.env, ODIRECT_BACKEND: 'iouring' } })
  checkRefused(t, r)
})

const launcher = seccompLauncher()
const seccompTest = isSkip(launcher) ? test.skip : test
seccompTest(`the same calls with { backend: 'io_uring' } where a seccomp filter refuses io_uring_setup (as Docker's default profile): ERR_ODIRECT_BACKEND with the file as it was, nothing created${isSkip(launcher) ? ` (skipped: ${launcher.skip})` : ''}`, async (t) => {
  const r = await run<Refused>('backend-refused.mjs', [DIST, scratch(), 'io_uring'], { argv: [launcher as string, '-u', process.execPath] })
  checkRefused(t, r)
})
