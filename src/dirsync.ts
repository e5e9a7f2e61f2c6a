// fsync of a directory: what makes a create, rename or link in it survive a power cut.
// Shared by writeFile/copyFile (after the rename into place) and the write streams (after
// creating the file). Filesystems that cannot sync a directory answer EINVAL / ENOTSUP (there
// is nothing to wait for): ignored, as is a directory we may not open. Any other error — EIO
// from a failing disk — is thrown: the caller must not be told the new name is durable.
import * as fsp from 'node:fs/promises'
import * as nodePath from 'node:path'

import { kernelError } from './errors'

const CANNOT_SYNC = new Set(['EINVAL', 'ENOTSUP', 'EOPNOTSUPP'])
const CANNOT_OPEN = new Set(['EACCES', 'EPERM'])

function rethrow(e: unknown, syscall: string, path: string, ignore: Set<string>): void {
  const err = e as NodeJS.ErrnoException
  if (typeof err?.code === 'string' && ignore.has(err.code)) return
  throw typeof err?.errno === 'number' ? kernelError(Math.abs(err.errno), { syscall, path }) : e
}

/** fsync the directory holding `file`. */
export async function syncParentDir(file: string): Promise<void> {
  const dir = nodePath.dirname(file)
  let h: fsp.FileHandle
  try {
    h = await fsp.open(dir, 'r')
  } catch (e) {
    return rethrow(e, 'open', dir, CANNOT_OPEN)
  }
  try {
    await h.sync()
  } catch (e) {
    rethrow(e, 'fsync', dir, CANNOT_SYNC)
  } finally {
    await h.close().catch(() => {})
  }
}
