// Per-test scratch directories: every call makes a fresh one (mkdtemp), so tests of one file can
// run concurrently, and all of a file's are removed after its last test.
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

/**
 * Returns `scratch(root?)`: a new empty directory `<root>/odirect-<tag>-XXXXXX` (root defaults
 * to /var/tmp, a disk filesystem with O_DIRECT), removed in the file's `after.always` hook.
 */
export function scratchDirs(tag: string): (root?: string) => string {
  const dirs: string[] = []
  test.after.always(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
  })
  return (root = '/var/tmp') => {
    const d = fs.mkdtempSync(path.join(root, `odirect-${tag}-`))
    dirs.push(d)
    return d
  }
}
