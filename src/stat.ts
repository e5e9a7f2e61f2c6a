// fh.stat(): node:fs's fstat on odirect's descriptor, with a block device's real size, and a
// native fstat shaped as fs.Stats where node:fs cannot fstat a descriptor it did not open (Deno).
import type * as fsTypes from 'node:fs'

import { errno as E, kernelError } from './errors'
import { native } from './native'

/** fstat of `fd` as fs/promises' FileHandle.stat gives it (`BigIntStats` with `bigint`). */
export async function fstat(fd: number, path: string, bigint: boolean): Promise<fsTypes.Stats | fsTypes.BigIntStats> {
  const fs = nodeFs()
  let st: fsTypes.Stats | fsTypes.BigIntStats
  try {
    st = await new Promise<fsTypes.Stats | fsTypes.BigIntStats>((resolve, reject) =>
      fs.fstat(fd, { bigint }, (err: NodeJS.ErrnoException | null, s: fsTypes.Stats | fsTypes.BigIntStats) => {
        if (err) reject(err)
        else resolve(s)
      }),
    )
  } catch (e) {
    // Deno's node:fs only knows descriptors it opened itself (EBADF for ours): fstat natively.
    const errno = typeof (e as NodeJS.ErrnoException).errno === 'number' ? Math.abs((e as NodeJS.ErrnoException).errno as number) : E.EIO
    if (errno !== E.EBADF) throw kernelError(errno, { syscall: 'fstat', path })
    const n = await native.statFd(fd)
    if (n.errno !== 0) throw kernelError(n.errno, { syscall: 'fstat', path })
    return nativeStats(n, bigint)
  }
  if (st.isBlockDevice()) {
    const s = await native.statFd(fd)
    if (s.errno === 0) (st as { size: number | bigint }).size = bigint ? BigInt(s.size) : s.size
  }
  return st
}

const S_IFMT = 0o170000
type NativeStat = Awaited<ReturnType<typeof native.statFd>>

/** An fs.Stats-shaped object from a native fstat (where node:fs cannot fstat our descriptor). */
function nativeStats(n: NativeStat, bigint: boolean): fsTypes.Stats | fsTypes.BigIntStats {
  const type = (t: number) => () => (n.mode & S_IFMT) === t
  const num = (v: number): number | bigint => (bigint ? BigInt(Math.trunc(v)) : v)
  const o: Record<string, unknown> = {
    dev: num(n.dev),
    ino: num(n.ino),
    mode: num(n.mode),
    nlink: num(n.nlink),
    uid: num(n.uid),
    gid: num(n.gid),
    rdev: num(n.rdev),
    size: num(n.size),
    blksize: num(n.blksize),
    blocks: num(n.blocks),
    atimeMs: num(n.atimeMs),
    mtimeMs: num(n.mtimeMs),
    ctimeMs: num(n.ctimeMs),
    birthtimeMs: num(n.birthtimeMs),
    // node:fs's Dates: the milliseconds rounded (BigIntStats: floored, below).
    atime: new Date(Math.round(n.atimeMs)),
    mtime: new Date(Math.round(n.mtimeMs)),
    ctime: new Date(Math.round(n.ctimeMs)),
    birthtime: new Date(Math.round(n.birthtimeMs)),
    isFile: type(0o100000),
    isDirectory: type(0o040000),
    isBlockDevice: () => n.isBlockDevice,
    isCharacterDevice: type(0o020000),
    isSymbolicLink: type(0o120000),
    isFIFO: type(0o010000),
    isSocket: type(0o140000),
  }
  if (bigint) {
    // Exact nanoseconds from the seconds and nanoseconds the kernel gave (was: from the
    // milliseconds as a double, wrong in the last digits), and the milliseconds as node:fs's
    // BigIntStats give them (the nanoseconds, floored).
    const t = n.times
    ;(['atime', 'mtime', 'ctime', 'birthtime'] as const).forEach((k, i) => {
      const ns = BigInt(t[2 * i]) * 1_000_000_000n + BigInt(t[2 * i + 1])
      o[`${k}Ns`] = ns
      o[`${k}Ms`] = ns / 1_000_000n
      o[k] = new Date(Number(ns / 1_000_000n))
    })
  }
  return o as unknown as fsTypes.Stats | fsTypes.BigIntStats
}

let fsMod: typeof fsTypes | undefined
function nodeFs(): typeof fsTypes {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (fsMod === undefined) fsMod = require('node:fs') as typeof fsTypes
  return fsMod
}

