import { probe } from '../index'

const USAGE = `usage: odirect <command> [args]
  probe [PATH]      what odirect finds for PATH (default .): kernel, backends, O_DIRECT, alignment
  bench [PATH]      benchmark odirect against fio and node:fs (see odirect bench --help)
  cp SRC DST        copy with direct I/O on both sides
  help              this text`

function yesNo(b: boolean): string {
  return b ? 'yes' : 'no'
}

export async function probeCommand(args: string[]): Promise<number> {
  const json = args.includes('--json')
  const path = args.find((a) => !a.startsWith('--')) ?? '.'
  const r = await probe(path)
  if (json) {
    console.log(JSON.stringify(r, null, 2))
    return r.direct.works ? 0 : 2
  }
  const out: string[] = []
  out.push(`path:            ${path}${r.isBlockDevice ? ' (block device)' : ''}`)
  out.push(`kernel:          ${r.kernel}`)
  out.push(`filesystem:      ${r.fsType || 'unknown'}`)
  for (const [name, b] of Object.entries(r.backends)) {
    out.push(`backend ${name.padEnd(10)} ${b.available ? 'available' : `unavailable: ${b.reason}`}`)
  }
  if (r.ioUringDisabled !== undefined) out.push(`io_uring_disabled: ${r.ioUringDisabled}`)
  out.push(`O_DIRECT:        ${r.direct.works ? 'works' : `does not work: ${r.direct.reason}`} (tested on ${r.direct.tested})`)
  if (r.alignment) {
    const a = r.alignment
    out.push(`alignment:       memory ${a.memory}, offset ${a.offset}, logical block ${a.logicalBlockSize}, physical block ${a.physicalBlockSize} (source: ${a.source})`)
  }
  out.push(`direct I/O ready: ${yesNo(r.direct.works)}`)
  console.log(out.join('\n'))
  return r.direct.works ? 0 : 2
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  switch (cmd) {
    case 'probe':
      return probeCommand(rest)
    case 'bench': {
      const m = (await import('./bench')) as { benchCommand: (a: string[]) => Promise<number> }
      return m.benchCommand(rest)
    }
    case 'cp': {
      const m = (await import('./cp')) as { cpCommand: (a: string[]) => Promise<number> }
      return m.cpCommand(rest)
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE)
      return cmd === undefined ? 1 : 0
    default:
      console.error(`odirect: unknown command '${cmd}'\n${USAGE}`)
      return 1
  }
}
