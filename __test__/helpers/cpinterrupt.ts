// `odirect cp` of a 1 GiB file interrupted by a signal once it has written into its temp file:
// shared by streams.spec (SIGINT, SIGTERM) and adversary-s16c (SIGHUP, with --json).
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import { watchUntil } from './events.ts'

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'cli.js')
export const COPY_SIZE = 1024 * 1024 * 1024

export interface Interrupted {
  status: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** DST after the child closed. */
  dst: string
  /** Temp files left in `dir`. */
  temps(): string[]
}

/**
 * Copies a 1 GiB sparse file (written out: --sparse=never, 64 KiB chunks, so the copy takes long
 * enough to interrupt) onto DST holding 'old contents' in `dir`, and sends `sig` once the copy has
 * written into its temp file, or (a copy that finished while the caller's loop was held up: the
 * temp renamed away) once DST is whole. Resolves at the child's 'close' (all output read).
 */
export async function interruptCopy(dir: string, sig: NodeJS.Signals, extraArgs: string[] = []): Promise<Interrupted> {
  const src = path.join(dir, 'big.sparse')
  fs.closeSync(fs.openSync(src, 'w'))
  fs.truncateSync(src, COPY_SIZE)
  const dst = path.join(dir, 'dst.bin')
  fs.writeFileSync(dst, 'old contents')
  const child = spawn(process.execPath, [CLI, 'cp', ...extraArgs, '--sparse=never', '--chunk-size', '64k', src, dst], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  // 'close', not 'exit': only then has all of its output been read.
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('close', (c, s) => r([c, s])))
  const temps = (): string[] => fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))
  const whole = (): boolean => fs.statSync(dst).size === COPY_SIZE
  await watchUntil(dir, () => whole() || temps().some((n) => (fs.statSync(path.join(dir, n), { throwIfNoEntry: false })?.size ?? 0) > 0))
  child.kill(sig)
  const [status, signal] = await exited
  return { status, signal, stdout, stderr, dst, temps }
}
