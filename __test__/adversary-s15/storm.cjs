// `<pid>`: sends SIGUSR2 to pid as fast as it can, with a SIGSTOP/SIGCONT pair every 500
// signals, until pid is gone (ESRCH). Prints how many it sent on stderr when it ends.
'use strict'
const pid = Number(process.argv[2])
let n = 0
for (;;) {
  try {
    process.kill(pid, 'SIGUSR2')
    if (++n % 500 === 0) {
      process.kill(pid, 'SIGSTOP')
      process.kill(pid, 'SIGCONT')
    }
  } catch {
    break
  }
}
process.stderr.write(`sent ${n}\n`)
