// A child script (of a spec's own folder of children) that prints one `RESULT <json>` line: run it
// to its end and resolve with that JSON. Shared by the adversary specs (s15, s16, s17).
import { execFile } from 'node:child_process'
import * as path from 'node:path'

export interface ChildRun {
  /** The child's environment (default: this process's). */
  env?: NodeJS.ProcessEnv
  /** The command before the script: a runtime and its flags, maybe under a wrapper such as prlimit (default: this Node). */
  argv?: string[]
  /** Kills the child after this many milliseconds (0, the default: never). */
  killAfterMs?: number
}

/**
 * Returns `runChild(script, args, run?)`: runs `<argv> <folder>/<script> args` and resolves with the
 * JSON of its `RESULT ` line; rejects when it prints none, or a `{ crash }` (with its stderr).
 */
export function childRunner(folder: string): <T>(script: string, args: string[], run?: ChildRun) => Promise<T> {
  return <T>(script: string, args: string[], run: ChildRun = {}): Promise<T> => {
    const argv = run.argv ?? [process.execPath]
    return new Promise((resolve, reject) => {
      execFile(argv[0], [...argv.slice(1), path.join(folder, script), ...args], { encoding: 'utf8', env: run.env ?? process.env, maxBuffer: 64 << 20, timeout: run.killAfterMs ?? 0 }, (err, stdout, stderr) => {
        const line = stdout.split('\n').find((l) => l.startsWith('RESULT '))
        if (line === undefined) return reject(new Error(`${script} printed no RESULT (${String(err)}):\n${stdout}\n${stderr}`))
        const o = JSON.parse(line.slice(7)) as T & { crash?: string }
        if (o.crash !== undefined) return reject(new Error(`${script} crashed: ${o.crash}\n${stderr}`))
        resolve(o)
      })
    })
  }
}
