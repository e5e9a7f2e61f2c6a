// `odirect bench --durable [PATH]`: the cost of one durable 4 KiB write, by primitive (issue 18).
// Each op is a 4 KiB write at a random block of a 64 MiB file that must be durable before the
// next starts (QD 1, what a write-ahead log commit waits for):
//   write + datasync         two round trips (write, then fdatasync)
//   write { dsync }          one write with RWF_DSYNC (FUA where the device has it)
//   writeMany { datasync }   the write and an fdatasync in one submission (io_uring: IOSQE_IO_DRAIN)
// per backend; median of runs; ratios to write + datasync on the same backend.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { open } from '../index'
import type { BackendName } from '../index'

export type DurableMode = 'write+datasync' | 'dsync' | 'writeMany+datasync'
export const DURABLE_MODES: readonly DurableMode[] = ['write+datasync', 'dsync', 'writeMany+datasync']

export interface DurableRow {
  backend: BackendName
  mode: DurableMode
  opsPerSec: number
  p50us: number
  p99us: number
  /** opsPerSec / opsPerSec of write+datasync on this backend. */
  ratio: number
}

const FILE_SIZE = 64 << 20
const BS = 4096

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b)
  return s.length === 0 ? 0 : s[Math.floor((s.length - 1) / 2)]
}

function pct(v: number[], p: number): number {
  const s = [...v].sort((a, b) => a - b)
  return s.length === 0 ? 0 : s[Math.min(s.length - 1, Math.floor(p * s.length))]
}

async function oneRun(file: string, backend: BackendName, mode: DurableMode, durationMs: number): Promise<{ ops: number; lat: number[]; secs: number }> {
  const fh = await open(file, 'r+', { backend })
  try {
    const buf = fh.alloc(BS)
    buf.fill(0x5a)
    const blocks = FILE_SIZE / BS
    const lat: number[] = []
    let x = 0x9e3779b9
    const t0 = process.hrtime.bigint()
    const end = t0 + BigInt(durationMs) * 1_000_000n
    for (;;) {
      x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) ^ 0x297a2d39) >>> 0
      const position = (x % blocks) * BS
      const s = process.hrtime.bigint()
      if (mode === 'write+datasync') {
        await fh.write(buf, { position })
        await fh.datasync()
      } else if (mode === 'dsync') {
        await fh.write(buf, { position, dsync: true })
      } else {
        await fh.writeMany([{ buffer: buf, position }], { datasync: true })
      }
      const e = process.hrtime.bigint()
      lat.push(Number(e - s) / 1000)
      if (e >= end) return { ops: lat.length, lat, secs: Number(e - t0) / 1e9 }
    }
  } finally {
    await fh.close()
  }
}

/** Measures every mode on every backend given, runs interleaved; returns one row per cell. */
export async function durableBench(dir: string, backends: readonly BackendName[], runs: number, durationMs: number, log: (m: string) => void): Promise<DurableRow[]> {
  const file = path.join(dir, `odirect-durable-${process.pid}.dat`)
  const fd = fs.openSync(file, 'w')
  try {
    fs.writeSync(fd, Buffer.alloc(1 << 20, 1), 0, 1 << 20, 0)
    for (let o = 1 << 20; o < FILE_SIZE; o += 1 << 20) fs.writeSync(fd, Buffer.alloc(1 << 20, 1), 0, 1 << 20, o)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  try {
    const cells = new Map<string, { rates: number[]; lat: number[] }>()
    for (let r = 0; r < runs; r++) {
      for (const backend of backends) {
        for (const mode of DURABLE_MODES) {
          const k = `${backend}|${mode}`
          const c = cells.get(k) ?? { rates: [], lat: [] }
          const res = await oneRun(file, backend, mode, durationMs)
          c.rates.push(res.ops / res.secs)
          c.lat.push(...res.lat)
          cells.set(k, c)
          log(`durable ${backend} ${mode} run ${r + 1}: ${(res.ops / res.secs).toFixed(0)} ops/s`)
        }
      }
    }
    const rows: DurableRow[] = []
    for (const backend of backends) {
      const base = median(cells.get(`${backend}|write+datasync`)?.rates ?? [0])
      for (const mode of DURABLE_MODES) {
        const c = cells.get(`${backend}|${mode}`) ?? { rates: [0], lat: [0] }
        const ops = median(c.rates)
        rows.push({ backend, mode, opsPerSec: ops, p50us: pct(c.lat, 0.5), p99us: pct(c.lat, 0.99), ratio: base > 0 ? ops / base : 0 })
      }
    }
    return rows
  } finally {
    fs.rmSync(file, { force: true })
  }
}

/** The rows as a markdown table. */
export function durableTable(rows: readonly DurableRow[], where: string): string {
  const out = [`4 KiB durable writes at QD 1 on ${where} (median ops/s; latency percentiles over all runs; ratio to write + datasync)`, '', '| backend | primitive | ops/s | p50 µs | p99 µs | vs write + datasync |', '|---|---|---:|---:|---:|---:|']
  for (const r of rows) out.push(`| ${r.backend} | ${r.mode} | ${r.opsPerSec.toFixed(0)} | ${r.p50us.toFixed(0)} | ${r.p99us.toFixed(0)} | ${r.ratio.toFixed(2)}x |`)
  return out.join('\n')
}
