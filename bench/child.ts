// The child side of the Bun and Deno rows of `odirect bench`: runs one odirect per-op workload in
// this process (whatever runtime runs it) and prints one marked JSON line with the result. The
// parent (runInRuntime in harness.ts) starts it through a small ES module that requires this file.
import { open } from '../index'
import { allowedCpuList, CHILD_MARKER, type Limit, odirectRun, type Outcome, type RunMode, type Workload } from './harness'

export interface ChildRequest {
  file: string
  size: number
  workload: Workload
  limit: Limit
  openOptions?: Record<string, unknown>
  mode?: RunMode
}

/** 'Bun 1.2.3', 'Deno 2.1.0' or 'Node v20.1.0'. */
export function runtimeName(): string {
  const g = globalThis as { Bun?: { version?: string }; Deno?: { version?: { deno?: string } } }
  if (g.Bun !== undefined) return `Bun ${g.Bun.version ?? '?'}`
  if (g.Deno !== undefined) return `Deno ${g.Deno.version?.deno ?? '?'}`
  return `Node ${process.version}`
}

export async function childMain(arg: string): Promise<void> {
  let out: Outcome
  try {
    const req = JSON.parse(arg) as ChildRequest
    const fh = await open(req.file, 'r+', req.openOptions)
    try {
      const result = await odirectRun(fh, req.size, req.limit, req.workload, req.mode ?? 'op')
      // Its own CPUs: the parent confirms a pin with them (harness.ts confirmPin).
      out = { ok: true, result: { ...result, runtime: runtimeName(), cpus: allowedCpuList() } }
    } finally {
      await fh.close()
    }
  } catch (e) {
    out = { ok: false, skipped: `failed under ${runtimeName()}: ${(e as Error)?.message ?? String(e)}` }
  }
  // NaN becomes null in JSON; the parent turns it back.
  process.stdout.write(`\n${CHILD_MARKER}${JSON.stringify(out)}\n`)
}
