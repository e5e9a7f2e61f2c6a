// fsync of a directory: what makes a create, rename or link in it survive a power cut. Shared by
// writeFile/copyFile (after the rename into place, fileops.commitTemp) and the write streams
// (after creating the file). Done natively (crates/napi/src/paths.rs), off the JS thread, as the
// temp files' rename and unlink are. Filesystems that cannot sync a directory answer EINVAL /
// ENOTSUP (there is nothing to wait for): counted as done there. Any other error — EIO from a
// failing disk — is thrown: the caller must not be told the new name is durable.
import * as nodePath from 'node:path'

import { kernelError } from './errors'
import { native } from './native'

/** fsync the directory holding `file`. */
export async function syncParentDir(file: string): Promise<void> {
  const dir = nodePath.dirname(file)
  const errno = await native.syncDir(dir)
  if (errno !== 0) throw kernelError(errno, { syscall: 'fsync', path: dir })
}
