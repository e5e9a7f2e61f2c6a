// Hostile option objects for the "read once" checks of the adversary specs.

/** `base` with a `key` getter that returns `vals[i]` on its i-th read (the last one after that); `reads()` counts them. */
export function twoFaced<T extends object>(base: T, key: string, vals: readonly unknown[]): T & { reads(): number } {
  let n = 0
  const o = { ...base, reads: () => n }
  Object.defineProperty(o, key, {
    enumerable: true,
    get() {
      return vals[Math.min(n++, vals.length - 1)]
    },
  })
  return o
}
