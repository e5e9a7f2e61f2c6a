// Whole-file locks (fh.lock / tryLock / unlock) on real files: two handles on one file conflict,
// as two processes do (open file description locks); another process sees the lock too.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import test from 'ava'

import { open } from '../dist/index.js'
import { threadStates, until } from './helpers/events.ts'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'odirect-locks-'))
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }))

test('tryLock: a second handle on the same file cannot take an exclusive lock until the first unlocks', async (t) => {
  const file = path.join(dir, 'a')
  const a = await open(file, 'w+', { direct: 'prefer' })
  const b = await open(file, 'r+', { direct: 'prefer' })
  t.true(a.tryLock())
  t.false(b.tryLock(), 'held by the other handle')
  t.false(b.tryLock({ exclusive: false }), 'a shared lock conflicts with an exclusive one')
  a.unlock()
  t.true(b.tryLock({ exclusive: false }))
  t.true(a.tryLock({ exclusive: false }), 'shared locks coexist')
  t.false(a.tryLock(), 'exclusive while another shares it: refused')
  await a.close()
  await b.close()
})

test('lock() waits for the holder; closing the holder releases it', async (t) => {
  const file = path.join(dir, 'b')
  const a = await open(file, 'w+', { direct: 'prefer' })
  const b = await open(file, 'r+', { direct: 'prefer' })
  await a.lock()
  let got = false
  const waiting = b.lock().then(() => {
    got = true
  })
  // b's waiter thread has tried and gone to sleep until its next try (it polls F_OFD_SETLK:
  // crates/napi/src/locks.rs).
  await until(() => threadStates('odirect-lock').join() === 'S', "b's lock waiter to try and wait")
  t.false(got, 'still waiting while a holds it')
  await a.close()
  await waiting
  t.true(got)
  t.false((await open(file, 'r+', { direct: 'prefer' }).then(async (c) => [c.tryLock(), await c.close()]))[0] as boolean)
  await b.close()
})

const hasPython = spawnSync('python3', ['-c', 'import fcntl'], { encoding: 'utf8' }).status === 0
if (!hasPython) console.log('skipping the cross-process lock test: python3 is not installed')
;(hasPython ? test : test.skip)('another process sees the lock (fcntl OFD locks via python3)', (t) => {
  return (async () => {
    const file = path.join(dir, 'c')
    const a = await open(file, 'w+', { direct: 'prefer' })
    await a.lock()
    // OFD locks and flock() are separate on Linux; test with an OFD lock through fcntl's raw struct.
    const ofd = `
import fcntl, os, struct, sys
F_OFD_SETLK = 37
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
    print("free")
except OSError:
    print("held")
`
    const held = spawnSync('python3', ['-c', ofd, file], { encoding: 'utf8' })
    t.is(held.stdout.trim(), 'held', held.stderr)
    a.unlock()
    const free = spawnSync('python3', ['-c', ofd, file], { encoding: 'utf8' })
    t.is(free.stdout.trim(), 'free', free.stderr)
    await a.close()
  })()
})

test('lock options and closed handles are typed errors', async (t) => {
  const fh = await open(path.join(dir, 'd'), 'w+', { direct: 'prefer' })
  t.throws(() => fh.tryLock({ exclusive: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => fh.tryLock(42 as unknown as { exclusive: boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  await fh.close()
  t.throws(() => fh.tryLock(), { code: 'ERR_ODIRECT_CLOSED' })
  await t.throwsAsync(fh.lock(), { code: 'ERR_ODIRECT_CLOSED' })
  t.throws(() => fh.unlock(), { code: 'ERR_ODIRECT_CLOSED' })
})
