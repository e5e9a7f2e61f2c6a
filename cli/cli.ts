// The odirect command: probe, bench, cp; `--version`, `help CMD` and `CMD --help` everywhere.
import * as fs from 'node:fs'
import * as nodePath from 'node:path'

import { CP_USAGE, describeForCli, errorJson } from './cp'
import { probe } from '../index'

const USAGE = `usage: odirect <command> [args]
  probe [PATH] [--json]   what odirect finds for PATH (default .): kernel, backends, O_DIRECT, alignment
  bench [PATH]            benchmark odirect against fio and node:fs (odirect bench --help)
  cp SRC DST              copy with direct I/O on both sides, holes kept (odirect cp --help)
  help [COMMAND]          this text, or a command's
  --version, -V           odirect's version
Every command takes --help. --json (probe, cp, bench) prints machine-readable results on stdout.`

export const PROBE_USAGE = `usage: odirect probe [PATH] [--json]
  Reports what odirect finds for PATH (a directory, a file or a block device; default .):
  the kernel, which I/O backends work (io_uring, aio, threadpool), whether O_DIRECT works
  there (for a directory: on a temp file made and removed in it) and the alignment needed.
  --json       print the report as JSON on stdout
  --help, -h   this text
exit status: 0 direct I/O works at PATH, 2 it does not, 1 error`

function yesNo(b: boolean): string {
  return b ? 'yes' : 'no'
}

export function version(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(nodePath.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: unknown }
    return typeof pkg.version === 'string' ? pkg.version : 'unknown'
  } catch {
    return 'unknown'
  }
}

export async function probeCommand(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(PROBE_USAGE)
    return 0
  }
  const json = args.includes('--json')
  const unknown = args.find((a) => a.startsWith('-') && a !== '--json')
  const paths = args.filter((a) => !a.startsWith('-'))
  if (unknown !== undefined || paths.length > 1) {
    console.error(`odirect probe: ${unknown !== undefined ? `unknown option '${unknown}'` : 'give one PATH'}\n${PROBE_USAGE}`)
    return 2
  }
  const path = paths[0] ?? '.'
  // A path that is not there is an error (exit 1), not a place where direct I/O does not work.
  // (An empty path is probe()'s to refuse, as a bad argument.)
  if (path !== '' && fs.statSync(path, { throwIfNoEntry: false }) === undefined) {
    const msg = `${path}: No such file or directory (ENOENT)`
    console.error(`odirect probe: ${msg}`)
    if (json) console.log(JSON.stringify({ error: { code: 'ENOENT', message: msg, path } }, null, 2))
    return 1
  }
  let r
  try {
    r = await probe(path)
  } catch (e) {
    console.error(`odirect probe: ${describeForCli(e)}`)
    if (json) console.log(JSON.stringify({ error: errorJson(e, describeForCli(e)) }, null, 2))
    return 1
  }
  if (json) {
    console.log(JSON.stringify(r, null, 2))
    return r.direct.works ? 0 : 2
  }
  const out: string[] = []
  out.push(`path:            ${path}${r.isBlockDevice ? ' (block device)' : ''}`)
  out.push(`kernel:          ${r.kernel}`)
  out.push(r.isBlockDevice ? 'filesystem:      none (block device)' : `filesystem:      ${r.fsType || 'unknown'}`)
  for (const [name, b] of Object.entries(r.backends)) {
    out.push(`backend ${name.padEnd(10)} ${b.available ? 'available' : `unavailable: ${b.reason}`}`)
  }
  if (r.ioUringDisabled !== undefined) out.push(`io_uring_disabled: ${r.ioUringDisabled}`)
  out.push(`completions:     ${r.completionPath === 'libuv' ? "reaped on the JS thread's event loop (libuv)" : 'a reaper thread wakes the JS thread (no libuv here)'}`)
  out.push(`O_DIRECT:        ${r.direct.works ? 'works' : `does not work: ${r.direct.reason}`} (tested on ${r.direct.tested})`)
  if (r.alignment) {
    const a = r.alignment
    out.push(`alignment:       memory ${a.memory}, offset ${a.offset}, logical block ${a.logicalBlockSize}, physical block ${a.physicalBlockSize} (source: ${a.source})`)
    out.push(`atomic writes:   ${a.atomicWriteMax > 0 ? `${a.atomicWriteMin} to ${a.atomicWriteMax} bytes, ${a.atomicWriteSegmentsMax} segment(s) (write { atomic: true }, RWF_ATOMIC)` : 'none (statx STATX_WRITE_ATOMIC)'}`)
  }
  out.push(`uncached I/O:    ${r.uncached.works ? "works (direct: 'uncached', RWF_DONTCACHE)" : `unavailable: ${r.uncached.reason}`}`)
  out.push(`direct I/O ready: ${yesNo(r.direct.works)}`)
  console.log(out.join('\n'))
  return r.direct.works ? 0 : 2
}

async function run(cmd: string, rest: string[]): Promise<number | undefined> {
  switch (cmd) {
    case 'probe':
      return probeCommand(rest)
    case 'bench': {
      const m = (await import('../bench/bench')) as { benchCommand: (a: string[]) => Promise<number> }
      return m.benchCommand(rest)
    }
    case 'cp': {
      const m = (await import('./cp')) as { cpCommand: (a: string[]) => Promise<number> }
      return m.cpCommand(rest)
    }
  }
  return undefined
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  switch (cmd) {
    case '--version':
    case '-V':
    case 'version':
      console.log(`odirect ${version()}`)
      return 0
    case undefined:
      console.error(USAGE)
      return 2
    case 'help':
    case '--help':
    case '-h': {
      const topic = rest[0]
      if (topic === undefined) {
        console.log(USAGE)
        return 0
      }
      if (topic === 'cp') console.log(CP_USAGE)
      else if (topic === 'probe') console.log(PROBE_USAGE)
      else if (topic === 'bench') return (await run('bench', ['--help'])) ?? 0
      else {
        console.error(`odirect: no help for '${topic}': not a command\n${USAGE}`)
        return 2
      }
      return 0
    }
  }
  const code = await run(cmd, rest)
  if (code !== undefined) return code
  console.error(`odirect: unknown command '${cmd}'\n${USAGE}`)
  return 2
}
