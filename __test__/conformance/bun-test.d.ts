// The part of `bun:test` the Bun adapter uses (bun-types is not a dependency).
declare module 'bun:test' {
  type Fn = () => void | Promise<void>
  export const test: ((name: string, fn: Fn, timeoutMs?: number) => void) & { skip(name: string, fn: Fn): void }
  export function expect(value: unknown): { toBe(expected: unknown): void }
}
