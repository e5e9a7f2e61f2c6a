// A cap on how many of a file's tests run a heavy step at once: ava starts every test of a file
// together, and a file of 60 child processes on a 2-core machine only makes each of them slow.

/** Returns `run(fn)`: calls `fn` once fewer than `n` earlier calls are still running. */
export function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let running = 0
  const queue: Array<() => void> = []
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (running >= n) await new Promise<void>((resolve) => queue.push(resolve))
    running++
    try {
      return await fn()
    } finally {
      running--
      queue.shift()?.()
    }
  }
}
