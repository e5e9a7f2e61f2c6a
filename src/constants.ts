// `constants`: node:fs's constants (COPYFILE_*, O_*, S_*, F_OK...), so code ported from fs keeps
// its meaning (`copyFile(a, b, constants.COPYFILE_EXCL)` refuses to overwrite), plus the
// fallocate(2) mode bits of `fh.allocate(offset, length, mode)`.
import { constants as fsConstants } from 'node:fs'

/** fallocate(2) mode bits, for `fh.allocate(offset, length, mode)`. */
export const FALLOC = {
  FALLOC_FL_KEEP_SIZE: 0x01,
  FALLOC_FL_PUNCH_HOLE: 0x02,
  FALLOC_FL_COLLAPSE_RANGE: 0x08,
  FALLOC_FL_ZERO_RANGE: 0x10,
  FALLOC_FL_INSERT_RANGE: 0x20,
  FALLOC_FL_UNSHARE_RANGE: 0x40,
} as const
export const FALLOC_KNOWN = 0x01 | 0x02 | 0x08 | 0x10 | 0x20 | 0x40

/**
 * node:fs's `constants` plus `FALLOC_FL_*`. Numeric open flags built from them are taken by
 * `open()` (O_APPEND refused); `COPYFILE_EXCL` by `copyFile()`.
 */
export const constants: Readonly<typeof fsConstants & typeof FALLOC> = Object.freeze({ ...fsConstants, ...FALLOC })
