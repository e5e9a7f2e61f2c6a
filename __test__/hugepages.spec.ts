// Huge pages: odirect's own memory (fh.alloc, allocAligned, stream chunks) is physically
// contiguous in 2 MiB pieces where the kernel has transparent huge pages, so a 1 MiB direct I/O
// is one segment for the device, not 256 scattered pages; with them off everything still works.
// The physical side is read from the kernel: /proc/self/pagemap (page frame numbers, root only)
// and /proc/kpageflags (KPF_THP).
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { pipeline } from 'node:stream/promises'

import { addressOf, allocAligned, createReadStream, createWriteStream, open, PAGE_SIZE } from '../dist/index.js'
import { isRoot, thpMode, withThp } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.ts'
import { testIf } from './helpers/skips.ts'

const MiB = 1024 * 1024
const HUGE = 2 * MiB
const KPF_THP = 1n << 22n
const scratch = scratchDirs('hugepages')

/** Why physical pages cannot be seen here, if they cannot. */
function physicalReason(): string | undefined {
  if (!isRoot()) return 'needs root to read page frame numbers from /proc/self/pagemap'
  if (!fs.existsSync('/proc/kpageflags')) return 'no /proc/kpageflags'
  return undefined
}

/** Why huge pages cannot be expected here, if they cannot. */
function hugeReason(): string | undefined {
  const mode = thpMode()
  if (mode === undefined) return 'the kernel has no transparent huge pages'
  if (mode === 'never') return 'transparent huge pages are off on this machine (enabled=never)'
  return physicalReason()
}

// Serial (testIf's last argument), in this order: the last test turns transparent huge pages off
// machine-wide, which run beside the others made their memory small pages (and the pool keeps
// regions faulted in then).

interface Page {
  present: boolean
  pfn: bigint
  thp: boolean
}

/** The physical page behind each page of `b`'s memory. */
function physicalPages(b: Uint8Array): Page[] {
  const addr = addressOf(b)
  const first = Math.floor(addr / PAGE_SIZE)
  const n = Math.ceil((addr + b.byteLength) / PAGE_SIZE) - first
  const map = Buffer.alloc(8 * n)
  const pm = fs.openSync('/proc/self/pagemap', 'r')
  const kf = fs.openSync('/proc/kpageflags', 'r')
  try {
    fs.readSync(pm, map, 0, map.length, first * 8)
    return Array.from({ length: n }, (_, i) => {
      const e = map.readBigUInt64LE(8 * i)
      const pfn = e & ((1n << 55n) - 1n)
      const present = e >> 63n === 1n && pfn !== 0n
      const flags = Buffer.alloc(8)
      if (present) fs.readSync(kf, flags, 0, 8, Number(pfn) * 8)
      return { present, pfn, thp: (flags.readBigUInt64LE(0) & KPF_THP) !== 0n }
    })
  } finally {
    fs.closeSync(pm)
    fs.closeSync(kf)
  }
}

/** Every page of `b` is in a transparent huge page, and each 2 MiB piece of it is one physical range. */
function isContiguousHuge(b: Uint8Array): boolean {
  const pages = physicalPages(b)
  const first = Math.floor(addressOf(b) / PAGE_SIZE)
  return pages.every((p, i) => p.present && p.thp && (i === 0 || ((first + i) * PAGE_SIZE) % HUGE === 0 || p.pfn === pages[i - 1].pfn + 1n))
}

function dataFile(size: number): { file: string; data: Buffer } {
  const file = path.join(scratch(), 'data')
  const data = randomBytes(size)
  fs.writeFileSync(file, data)
  return { file, data }
}

testIf(hugeReason(), 'allocAligned and fh.alloc of 1 MiB: one physically contiguous huge-page range, first touched by the user or by a direct read', async (t) => {
  const { file, data } = dataFile(4 * MiB)
  const a = allocAligned(MiB)
  a.fill(1)
  t.true(isContiguousHuge(a), 'allocAligned(1 MiB), written by JS')
  const fh = await open(file, 'r')
  try {
    // Never touched by JS: the kernel faults the memory in as the read pins it.
    const b = fh.alloc(MiB)
    const c = fh.alloc(MiB)
    await fh.read(b, { position: MiB })
    await fh.read(c, { position: 2 * MiB })
    t.true(isContiguousHuge(b), 'fh.alloc(1 MiB), filled by a direct read')
    t.true(isContiguousHuge(c))
    t.true(b.equals(data.subarray(MiB, 2 * MiB)) && c.equals(data.subarray(2 * MiB, 3 * MiB)))
    // Larger: every 2 MiB piece is one huge page (pieces need not be adjacent to each other).
    const big = fh.alloc(4 * MiB)
    await fh.read(big, { position: 0 })
    t.true(isContiguousHuge(big), 'fh.alloc(4 MiB)')
    t.true(big.equals(data))
  } finally {
    await fh.close()
  }
}, true)

testIf(hugeReason(), 'createReadStream chunks: physically contiguous huge-page memory', async (t) => {
  const { file, data } = dataFile(3 * MiB)
  const chunks: Buffer[] = []
  for await (const c of createReadStream(file)) chunks.push(c as Buffer)
  // The default chunk: 2 MiB, one huge page.
  t.is(chunks.length, 2)
  for (const c of chunks) t.true(isContiguousHuge(c), `chunk at ${2 * chunks.indexOf(c)} MiB`)
  t.true(Buffer.concat(chunks).equals(data))
}, true)

testIf(physicalReason() ?? (thpMode() === undefined ? 'the kernel has no transparent huge pages' : undefined), 'with transparent huge pages off (enabled=never): allocations and direct I/O work on small pages, the setting is restored (machine-wide)', async (t) => {
  const before = thpMode()
  const { file, data } = dataFile(6 * MiB + PAGE_SIZE)
  const copy = path.join(path.dirname(file), 'copy')
  await withThp('never', async () => {
    t.is(thpMode(), 'never')
    const fh = await open(file, 'r')
    try {
      // A size no other test here allocates: a new mapping, faulted in under 'never'.
      const b = fh.alloc(data.length)
      await fh.read(b, { position: 0 })
      t.true(b.equals(data))
      const pages = physicalPages(b)
      t.true(pages.every((p) => p.present && !p.thp), 'small pages only')
      const one = allocAligned(MiB)
      await fh.read(one, { position: 0 })
      t.true(one.equals(data.subarray(0, MiB)))
    } finally {
      await fh.close()
    }
    await pipeline(createReadStream(file), createWriteStream(copy))
    t.true(fs.readFileSync(copy).equals(data))
  })
  t.is(thpMode(), before, 'restored')
}, true)
