// Child of __test__/adversary-s11.spec.ts, run with ODIRECT_MANY_NATIVE=0 and =1: an array-form
// writeMany of N blocks (each filled with a byte of its op's, positions permuted) onto a small full
// tmpfs, plain (`enospc`), aborted in a microtask right after the call (`abort`), or with close()
// right after the call (`close`). Prints each op's result, the file's size and which ops' data
// reached the file.
// argv: DIR MODE WINDOW (0: no window) N (ops; not a multiple of 37)
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
const od = createRequire(import.meta.url)('../../dist/index.js')
const [dir, mode, windowArg, nArg] = process.argv.slice(2)
const window = Number(windowArg)
const U = 4096
const n = Number(nArg)
const file = `${dir}/f-${process.env.ODIRECT_MANY_NATIVE}-${mode}-${window}`
const fh = await od.open(file, 'w+', { direct: 'prefer' })
// Op i's block is all byte mark(i) (never 0: a hole reads as zeros).
const mark = (i) => (i % 251) + 1
const bufs = Array.from({ length: n }, (_, i) => fh.alloc(U).fill(mark(i)))
const ops = bufs.map((buffer, i) => ({ buffer, position: ((i * 37) % n) * U }))
let res
const opt = window > 0 ? { window } : {}
const ac = new AbortController()
if (mode === 'abort') opt.signal = ac.signal
const p = fh.writeMany(ops, opt)
if (mode === 'abort') queueMicrotask(() => ac.abort())
let closing
if (mode === 'close') closing = fh.close().then(() => 'closed', (e) => 'close:' + e.code)
try { res = (await p).map(String) } catch (e) { res = [e.code, ...(e.results ?? []).map((r) => (typeof r === 'number' ? String(r) : r.code))] }
if (closing) res.push(await closing)
else await fh.close()
const data = fs.readFileSync(file)
// Which ops' data is in the file.
const landed = ops.map((o, i) => (data.length >= o.position + U && data.subarray(o.position, o.position + U).every((b) => b === mark(i)) ? 1 : 0))
console.log(JSON.stringify({ results: res, size: data.length, landed }))
