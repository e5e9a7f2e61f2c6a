// `odirect bench --scaling N [PATH]`: scaling over threads (issue 19 item 4). For n = 1..N: n
// worker_threads, each with its own engine and handle, 4 KiB random reads per op at QD 64 each,
// against `fio --numjobs=n --iodepth=64` (io_uring, --direct=1) on the same file; runs interleaved,
// medians; the ratio is the median of the per-run ratios odirect / fio.
import { spawnSync } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'

import { open } from '../index'

const BS = 4096
const QD = 64

export interface ScalingRow {
  threads: number
  engine: 'odirect-workers' | 'fio-io_uring'
  /** Median total IOPS over the runs; absent when skipped. */
  iops?: number
  /** odirect rows: median of per-run odirect / fio IOPS (absent without fio). */
  ratio?: number
  skipped?: string
}

interface WorkerJob {
  file: string
  durationMs: number
}

/** One worker: its own handle (and so its engine), QD reads in flight until the time is up. */
async function workerMain(job: WorkerJob): Promise<void> {
  const fh = await open(job.file, 'r')
  try {
    const blocks = Math.floor((await fh.stat()).size / BS)
    let ops = 0
    const t0 = performance.now()
    const end = t0 + job.durationMs
    await Promise.all(
      Array.from({ length: QD }, async () => {
        const b = fh.alloc(BS)
        while (performance.now() < end) {
          await fh.read(b, { position: Math.floor(Math.random() * blocks) * BS })
          ops++
        }
      }),
    )
    parentPort?.postMessage({ ops, secs: (performance.now() - t0) / 1000 })
  } finally {
    await fh.close()
  }
}

if (!isMainThread && (workerData as { odirectScaling?: WorkerJob } | null)?.odirectScaling !== undefined) {
  void workerMain((workerData as { odirectScaling: WorkerJob }).odirectScaling).catch((e: unknown) => {
    throw e
  })
}

async function runWorkers(file: string, n: number, durationMs: number): Promise<number> {
  const res = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<{ ops: number; secs: number }>((resolve, reject) => {
          const w = new Worker(__filename, { workerData: { odirectScaling: { file, durationMs } } })
          w.once('message', resolve)
          w.once('error', reject)
          w.once('exit', (code) => {
            if (code !== 0) reject(new Error(`worker exited with code ${code}`))
          })
        }),
    ),
  )
  const secs = Math.max(...res.map((r) => r.secs))
  return res.reduce((a, r) => a + r.ops, 0) / secs
}

function runFio(fio: string, file: string, n: number, durationMs: number): number | string {
  const args = [
    '--name=scaling',
    `--filename=${file}`,
    '--rw=randread',
    `--bs=${BS}`,
    `--iodepth=${QD}`,
    '--ioengine=io_uring',
    '--direct=1',
    `--numjobs=${n}`,
    // fio's peak configuration, as in the main tables (bench/harness.ts fioArgs). Its default
    // buffers: huge-page ones (--mem=mmaphuge, the 1 MiB rows' best) made no consistent
    // difference to these 4 KiB reads (measured at 1 and 2 jobs on tmpfs).
    '--iodepth_batch_submit=16',
    '--iodepth_batch_complete_min=8',
    '--iodepth_batch_complete_max=16',
    '--fixedbufs',
    '--registerfiles',
    '--hipri=0',
    '--sqthread_poll=0',
    '--norandommap',
    '--randrepeat=0',
    '--group_reporting',
    '--time_based',
    `--runtime=${Math.max(1, Math.round(durationMs))}ms`,
    '--output-format=json',
  ]
  const r = spawnSync(fio, args, { encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.error || r.status !== 0) return `fio failed: ${(r.error?.message ?? r.stderr ?? '').trim().split('\n')[0] || `exit ${r.status}`}`
  const at = r.stdout.indexOf('{')
  const j = JSON.parse(r.stdout.slice(at)) as { jobs: { read: { iops: number } }[] }
  return j.jobs.reduce((a, job) => a + job.read.iops, 0)
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b)
  return s[Math.floor((s.length - 1) / 2)]
}

/** A file of `size` random bytes in `dir` (removed by the caller). */
function makeFile(dir: string, size: number): string {
  const file = path.join(dir, `odirect-bench-${process.pid}-scaling.dat`)
  const fd = fs.openSync(file, 'w')
  try {
    const buf = Buffer.allocUnsafe(1 << 20)
    for (let at = 0; at < size; at += buf.length) fs.writeSync(fd, randomFillSync(buf), 0, Math.min(buf.length, size - at))
  } finally {
    fs.closeSync(fd)
  }
  return file
}

export async function scalingBench(dir: string, maxThreads: number, size: number, runs: number, durationMs: number, fio: string | undefined, log: (m: string) => void): Promise<ScalingRow[]> {
  const file = makeFile(dir, size)
  try {
    const od = new Map<number, number[]>()
    const fi = new Map<number, number[]>()
    const ratios = new Map<number, number[]>()
    let fioSkip: string | undefined = fio === undefined ? 'fio is not installed (apt-get install fio)' : undefined
    for (let r = 0; r < runs; r++) {
      for (let n = 1; n <= maxThreads; n++) {
        // Alternate which engine goes first, so neither always follows the other.
        let f: number | undefined
        let o = 0
        const doFio = (): void => {
          if (fioSkip !== undefined || fio === undefined) return
          const x = runFio(fio, file, n, durationMs)
          if (typeof x === 'string') fioSkip = x
          else f = x
        }
        if (r % 2 === 0) doFio()
        o = await runWorkers(file, n, durationMs)
        if (r % 2 === 1) doFio()
        od.set(n, [...(od.get(n) ?? []), o])
        if (f !== undefined) {
          fi.set(n, [...(fi.get(n) ?? []), f])
          ratios.set(n, [...(ratios.get(n) ?? []), o / f])
        }
        log(`[run ${r + 1}/${runs}] ${n} thread(s): odirect ${Math.round(o)} IOPS${f !== undefined ? `, fio ${Math.round(f)} IOPS (${(o / f).toFixed(2)}x)` : ''}`)
      }
    }
    const rows: ScalingRow[] = []
    for (let n = 1; n <= maxThreads; n++) {
      const rs = ratios.get(n)
      rows.push({ threads: n, engine: 'odirect-workers', iops: median(od.get(n) ?? []), ...(rs?.length ? { ratio: median(rs) } : {}) })
      const fs_ = fi.get(n)
      rows.push(fs_?.length ? { threads: n, engine: 'fio-io_uring', iops: median(fs_) } : { threads: n, engine: 'fio-io_uring', skipped: fioSkip ?? 'not run' })
    }
    return rows
  } finally {
    fs.rmSync(file, { force: true })
  }
}

export function scalingTable(rows: ScalingRow[], where: string, heading = true): string {
  const out = [
    ...(heading ? [`Scaling: 4 KiB random reads, QD ${QD} per thread, on ${where}`, ''] : []),
    '| threads | engine | IOPS (median) | odirect / fio (median of runs) |',
    '|---:|---|---:|---:|',
  ]
  for (const r of rows) {
    const label = r.engine === 'fio-io_uring' ? `fio io_uring --numjobs=${r.threads}` : `odirect, ${r.threads} worker_thread(s)`
    out.push(`| ${r.threads} | ${label} | ${r.iops !== undefined ? Math.round(r.iops).toLocaleString('en-US') : `skipped: ${r.skipped}`} | ${r.ratio !== undefined ? `${r.ratio.toFixed(2)}×` : ''} |`)
  }
  return out.join('\n')
}
