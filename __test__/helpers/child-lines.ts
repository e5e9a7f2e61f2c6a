// A child process whose stdout lines a test waits for, line by line, as it prints them (no
// polling, no time bound: a child that exits first rejects the wait with its stderr).
import { type ChildProcess, spawn } from 'node:child_process'

export interface ChildLines {
  child: ChildProcess
  /** Resolves with every stdout line so far once there are at least `n`. */
  next(n: number): Promise<string[]>
  /** Resolves with the first stdout line starting with `prefix`, once it is printed. */
  line(prefix: string): Promise<string>
  /** The exit code (null: killed), once all output is read. */
  exited: Promise<number | null>
  /** stderr so far. */
  err(): string
}

/** Spawns `cmd args` (stdin a pipe when `stdin`, else ignored) and follows its stdout lines. */
export function childLines(cmd: string, args: string[], env: NodeJS.ProcessEnv, stdin = false): ChildLines {
  const child = spawn(cmd, args, { env, stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  const waiters: (() => void)[] = []
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d
    for (const w of waiters.splice(0)) w()
  })
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d))
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
  const got = (): string[] => out.split('\n').filter((x) => x !== '')
  /** Resolves with `find()`'s value once it has one; rejects if the child exits before. */
  const when = <T>(find: () => T | undefined, what: string): Promise<T> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const v = find()
        if (v !== undefined) resolve(v)
        else waiters.push(check)
      }
      check()
      void exited.then(() => {
        const v = find()
        if (v !== undefined) resolve(v)
        else reject(new Error(`${cmd} exited before ${what}: ${out} ${err}`))
      })
    })
  return {
    child,
    next: (n) => when(() => (got().length >= n ? got() : undefined), `${n} lines`),
    line: (prefix) => when(() => got().find((x) => x.startsWith(prefix)), `'${prefix}'`),
    exited,
    err: () => err,
  }
}
