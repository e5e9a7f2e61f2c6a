// Loads the napi-rs generated loader (binding.js at the package root), from dist/src/ when
// compiled, or from src/ when a runtime runs the TypeScript directly.
import type * as Binding from '../binding'

function load(): typeof Binding {
  const errors: unknown[] = []
  for (const p of ['../../binding.js', '../binding.js']) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(p) as typeof Binding
    } catch (e) {
      const code = (e as { code?: string }).code
      if (code !== 'MODULE_NOT_FOUND' || !String((e as Error).message).includes('binding.js')) throw e
      errors.push(e)
    }
  }
  throw new Error(`odirect: cannot find binding.js next to the package (${errors.map(String).join('; ')})`)
}

export const native: typeof Binding = load()
export type { AlignmentInfo, OpenResult, ProbeInfo, StatResult, NativeEngine } from '../binding'
