// Child of small-s22.spec.ts (item 5), run as an unprivileged user under RLIMIT_MEMLOCK 0:
// prints RESULT {"reason": ...}, the io_uring backend's refusal (probe), or null if it is available.
const [dist, dir] = process.argv.slice(2)
const out = {}
try {
  const od = await import(dist)
  const w = await od.probe(dir)
  out.reason = w.backends.io_uring.available ? null : w.backends.io_uring.reason
} catch (e) {
  out.crash = String(e?.stack ?? e)
}
console.log(`RESULT ${JSON.stringify(out)}`)
