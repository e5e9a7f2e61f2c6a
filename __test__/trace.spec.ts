// ODIRECT_DEBUG traces every op to stderr. Node makes a piped stderr non-blocking, so a trace
// line that finds the pipe full got EAGAIN, and the panic of a failed eprintln! aborted the
// process (seen under load: SIGABRT mid-line). The engine now waits for room, as Node's own
// synchronous stderr writes do. The child fills its stderr pipe itself (until EAGAIN), stages
// reads whose traces find it full, then says so on stdout; only then does this side drain it.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { scratchDirs } from './helpers/scratch.js'

const __dirname = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(__dirname, '..', 'dist', 'index.js')
const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const scratch = scratchDirs('trace')

test(`[${BACKEND}] ODIRECT_DEBUG with a full, non-blocking stderr pipe: the traces wait for room, the process ends normally`, async (t) => {
  const file = path.join(scratch(), 'data')
  fs.writeFileSync(file, Buffer.alloc(64 * 4096, 3))
  const script = `
    const fs = require('node:fs');
    const { open } = require(${JSON.stringify(DIST)});
    (async () => {
      const fh = await open(${JSON.stringify(file)}, 'r', { backend: ${JSON.stringify(BACKEND)} });
      const bufs = Array.from({ length: 64 }, () => fh.alloc(4096));
      process.stderr; // libuv makes the pipe non-blocking
      const ps = bufs.map((b, i) => fh.read(b, { position: i * 4096 }));
      const chunk = Buffer.alloc(4096, 0x2e);
      let filled = 0;
      for (;;) {
        try { filled += fs.writeSync(2, chunk) } catch (e) { if (e.code === 'EAGAIN') break; throw e }
      }
      process.stdout.write('full ' + filled + '\\n');
      const rs = await Promise.all(ps);
      console.log('done', rs.every((r) => r.bytesRead === 4096), bufs.every((b) => b.every((x) => x === 3)));
      await fh.close();
    })();`
  const child = spawn(process.execPath, ['-e', script], { env: { ...process.env, ODIRECT_DEBUG: '1' }, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stderr.pause()
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (d: string) => {
    out += d
    // The pipe was full when the reads' traces were written: drain it now.
    if (/full \d+/.test(out) && child.stderr.isPaused()) child.stderr.on('data', (e: Buffer) => (err += e.toString('latin1'))).resume()
  })
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])))
  t.is(signal, null, `ended by ${String(signal)}: ${err.slice(-400)}`)
  t.is(code, 0)
  t.regex(out, /full \d+/)
  t.regex(out, /done true true/)
  // (The first line follows the filler's dots, which end without a newline.)
  const submits = err.match(/odirect: submit id=\d+ op=read /g)?.length ?? 0
  t.is(submits, 64, 'every trace line was written')
})
