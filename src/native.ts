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
      if (e instanceof Error && e.message.startsWith('Cannot find native binding')) throw noBinary(e)
      const code = (e as { code?: string }).code
      if (code !== 'MODULE_NOT_FOUND' || !String((e as Error).message).includes('binding.js')) throw e
      errors.push(e)
    }
  }
  throw new Error(`odirect: cannot find binding.js next to the package (${errors.map(String).join('; ')})`)
}

/** '-gnu' / '-musl' on Linux (as napi-rs's loader decides), '' elsewhere. */
function libcSuffix(): string {
  if (process.platform !== 'linux') return process.platform === 'win32' ? '-msvc' : ''
  try {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header
    return header?.glibcVersionRuntime ? '-gnu' : '-musl'
  } catch {
    return '-gnu'
  }
}

/** Restates napi-rs's loader failure: what was tried, which package would fit, how to fix it. */
function noBinary(e: Error): Error {
  const tried: string[] = []
  for (let c = (e as { cause?: unknown }).cause; c instanceof Error; c = (c as { cause?: unknown }).cause) {
    const line = c.message.split('\n')[0]
    if (!/wasi/i.test(line)) tried.unshift(line)
  }
  const pkg = tried.map((t) => /'(odirect-[^'/]+)'/.exec(t)?.[1]).find((n) => n !== undefined) ?? `odirect-${process.platform}-${process.arch}${libcSuffix()}`
  let version = ''
  try {
    version = `@${(require('../../package.json') as { version: string }).version}`
  } catch {
    // running from the sources
  }
  const err = new Error(
    `odirect: no native binary loads on this machine (${pkg.slice('odirect-'.length)}). Tried, in order:\n` +
      tried.map((t, i) => `  ${i + 1}. ${t}`).join('\n') +
      `\nThe prebuilt binary for this machine is the optional dependency ${pkg}: install it (\`npm install ${pkg}${version}\`) and do not omit optional dependencies (--omit=optional, --no-optional). ` +
      'Prebuilt: linux-x64-gnu (glibc >= 2.17). Elsewhere, build from source with `npm run build:native` (needs Rust).',
    { cause: e },
  )
  ;(err as Error & { code: string }).code = 'ERR_ODIRECT_NO_BINARY'
  return err
}

export const native: typeof Binding = load()
export type { AlignmentInfo, OpenResult, ProbeInfo, StatResult, NativeEngine } from '../binding'
