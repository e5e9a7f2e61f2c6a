// readMany/writeMany with { window }: every op is captured at the call, at most `window` are in
// the kernel at once (checked from the engine's own ODIRECT_DEBUG submit/complete lines), each
// completion lets the next one in, and the data is right.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { open } from '../dist/index.js'
import { inKernel } from './helpers/debuglog.js'

const __dirname = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(__dirname, '..', 'dist', 'index.js')
const BACKEND = process.env.ODIRECT_BACKEND || 'auto'
const dir = fs.mkdtempSync('/var/tmp/odirect-window-')
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }))

const UNIT = 4096

test(`[${BACKEND}] writeMany then readMany of 600 ops with { window: 8 }: every block lands and reads back`, async (t) => {
  const file = path.join(dir, 'data')
  const fh = await open(file, 'w+', { backend: BACKEND as 'auto' })
  const n = 600
  const order = Array.from({ length: n }, (_, i) => i).sort(() => Math.random() - 0.5)
  const bufs = order.map((blk) => {
    const b = fh.alloc(UNIT)
    b.fill(blk & 0xff)
    b.writeUInt32LE(blk, 0)
    return b
  })
  const wrote = await fh.writeMany(
    order.map((blk, i) => ({ buffer: bufs[i], position: blk * UNIT })),
    { window: 8 },
  )
  t.deepEqual(wrote, order.map(() => UNIT))
  const back = order.map(() => fh.alloc(UNIT))
  const read = await fh.readMany(
    order.map((blk, i) => ({ buffer: back[i], position: blk * UNIT })),
    { window: 8 },
  )
  t.deepEqual(read, order.map(() => UNIT))
  for (let i = 0; i < n; i++) {
    t.is(back[i].readUInt32LE(0), order[i], `block ${order[i]}`)
    t.is(back[i][UNIT - 1], order[i] & 0xff)
  }
  t.is(fh.inflight, 0)
  await fh.close()
})

test(`[${BACKEND}] window bounds what is in the kernel: never more than 4 ops submitted and not completed`, (t) => {
  const file = path.join(dir, 'debug')
  fs.writeFileSync(file, Buffer.alloc(256 * UNIT, 7))
  const script = `
    const { open } = require(${JSON.stringify(DIST)});
    (async () => {
      const fh = await open(${JSON.stringify(file)}, 'r', { backend: ${JSON.stringify(BACKEND)} });
      const ops = Array.from({ length: 128 }, (_, i) => ({ buffer: fh.alloc(${UNIT}), position: (i % 256) * ${UNIT} }));
      const r = await fh.readMany(ops, { window: 4 });
      console.log(r.length, r.every((x) => x === ${UNIT}));
      await fh.close();
    })();`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ODIRECT_DEBUG: '1' }, timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout.trim(), '128 true')
  const { submits, max } = inKernel(r.stderr)
  t.is(submits, 128)
  t.true(max <= 4, `at most 4 in the kernel, saw ${max}`)
  t.true(max >= 2, `the window was used (saw ${max} at once)`)
})

test('window option is validated', async (t) => {
  const fh = await open(path.join(dir, 'v'), 'w+')
  const b = fh.alloc(UNIT)
  await t.throwsAsync(fh.readMany([{ buffer: b, position: 0 }], { window: 0 }), { code: 'ERR_OUT_OF_RANGE' })
  await t.throwsAsync(fh.readMany([{ buffer: b, position: 0 }], { window: 1.5 }), { code: 'ERR_OUT_OF_RANGE' })
  await t.throwsAsync(fh.readMany([{ buffer: b, position: 0 }], 'x' as unknown as { window: number }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.deepEqual(await fh.readMany([{ buffer: b, position: 0 }], { window: 64 }), [0])
  await fh.close()
})
