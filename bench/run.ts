// The full benchmark, as recorded in bench/RESULTS.md (with bench/results.png beside it):
//
//   npm run build:ts && node --import @oxc-node/core/register bench/run.ts [more options]
//
// the same as `node dist/cli.js bench --full --out bench/RESULTS.md` (--full: 512 MiB file, 256 MiB
// on tmpfs, 5 interleaved runs of 2 s per cell, every engine incl. Bun and Deno). More options
// override these defaults (e.g. `--runs 7`, `--duration 3`, or a PATH on another filesystem); see
// `node dist/cli.js bench --help`. The harness itself is bench/bench.ts and the rest of bench/ (it ships in
// dist/ so `odirect bench` works from an installed package); it is loaded from the build because
// the package's TypeScript is CommonJS (src/native.ts uses require) while this entry runs as ESM.
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import { benchCommand } from '../dist/bench/bench.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const defaults = ['--full', '--out', path.join(here, 'RESULTS.md')]

benchCommand([...defaults, ...process.argv.slice(2)]).then(
  (code) => {
    process.exitCode = code
  },
  (e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e)
    process.exitCode = 1
  },
)
