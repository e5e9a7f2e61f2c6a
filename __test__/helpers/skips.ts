// Choosing at registration between running a test and skipping it with a printed reason, and the
// reasons several specs share.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { skipReason } from './fixtures.js'

/** `test` (`test.serial` with `serial`), or `test.skip` with the reason printed when a precondition is missing. */
export function testIf(reason: string | undefined, title: string, fn: Parameters<typeof test>[1], serial = false): void {
  if (reason === undefined) (serial ? test.serial : test)(title, fn)
  else {
    console.log(`skipped '${title}': ${reason}`)
    test.skip(`${title} (skipped: ${reason})`, fn)
  }
}

/** Why FUSE fault tests cannot run here (no FUSE, or crates/faultfs not built), or undefined. */
export const FAULTFS_REASON =
  skipReason(['fuse']) ??
  (fs.existsSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'target', 'release', 'faultfs')) || process.env.FAULTFS_BIN ? undefined : 'faultfs not built (cargo build -p faultfs --release)')

/** Why a small full ext4 on a loop device cannot be made here, or undefined. */
export const FULLFS_REASON = skipReason(['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4'])
