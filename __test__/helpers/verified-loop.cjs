'use strict'
// The main thread's own verified I/O beside worker sweeps (adversary-s16b/worker-sweep.cjs,
// adversary-s17/worker-kill.cjs): writes a 64 KiB block of a known byte at one of 8 positions of
// `file`, reads it back and counts the reads that do not match, until stopped.
// Returns { stop(): Promise<{ wrong, ops }> }; stop() ends the loop and waits for its close.

/**
 * @param {typeof import('../../index')} od the odirect module the child loaded
 * @param {string} file the loop's own file (created)
 */
function verifiedLoop(od, file) {
  let stop = false
  let wrong = 0
  let ops = 0
  const done = (async () => {
    const fh = await od.open(file, 'w+')
    const w = fh.alloc(65536)
    const r = fh.alloc(65536)
    for (let i = 0; !stop; i++) {
      w.fill((i * 7) & 0xff)
      await fh.write(w, 0, w.length, (i % 8) * w.length)
      await fh.read(r, 0, r.length, (i % 8) * r.length)
      if (!r.every((b) => b === ((i * 7) & 0xff))) wrong++
      ops++
    }
    await fh.close()
  })()
  return {
    async stop() {
      stop = true
      await done
      return { wrong, ops }
    },
  }
}

module.exports = { verifiedLoop }
