// The JavaScript runtimes a test can run a child script under: Node (this one), and Bun and
// Deno when scripts/runtime-bin.cjs finds them.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

/** The binary of runtime `name` (bun, deno, node22), or undefined when it is not installed here. */
export function runtimePath(name: string): string | undefined {
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'runtime-bin.cjs'), '--path', name], { encoding: 'utf8' })
  const p = r.status === 0 ? r.stdout.trim() : ''
  return p !== '' && fs.existsSync(p) ? p : undefined
}

/** [name, argv before the script] of Node and of each other runtime found here (Deno with the permissions odirect needs). */
export function runtimes(): Array<[string, string[]]> {
  const out: Array<[string, string[]]> = [['node', [process.execPath]]]
  const bun = runtimePath('bun')
  if (bun !== undefined) out.push(['bun', [bun]])
  const deno = runtimePath('deno')
  if (deno !== undefined) out.push(['deno', [deno, 'run', '--allow-all', '--no-check', '--no-lock', '--node-modules-dir=manual']])
  return out
}
