// hugeback.js (eighteenth session): how much of this process's odirect pool memory is backed by
// transparent huge pages. The pool's regions and large blocks are the process's only mappings
// marked MADV_HUGEPAGE ("hg" in /proc/self/smaps VmFlags; V8 and glibc mark none). Returns
// { mappings, sizeKiB, rssKiB, anonHugeKiB } summed over them.
'use strict'
const fs = require('node:fs')
module.exports = function hugeBacking() {
  const out = { mappings: 0, sizeKiB: 0, rssKiB: 0, anonHugeKiB: 0 }
  let cur = null
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      cur = {}
      continue
    }
    if (cur === null) continue
    const m = /^(\w+):\s+(\d+) kB/.exec(line)
    if (m) cur[m[1]] = Number(m[2])
    else if (line.startsWith('VmFlags:') && / hg( |$)/.test(line)) {
      out.mappings++
      out.sizeKiB += cur.Size ?? 0
      out.rssKiB += cur.Rss ?? 0
      out.anonHugeKiB += cur.AnonHugePages ?? 0
    }
  }
  return out
}
