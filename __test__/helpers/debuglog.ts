// Reading ODIRECT_DEBUG's per-op lines ("odirect: submit id=N op=read ..." / "odirect: complete
// id=N op=read ...") from a child's stderr.

/** How many `op` ops were submitted, and the most that were submitted and not yet completed at once. */
export function inKernel(stderr: string, op = 'read'): { submits: number; max: number } {
  const submit = new RegExp(`^odirect: submit id=\\d+ op=${op} `)
  const complete = new RegExp(`^odirect: complete id=\\d+ op=${op} `)
  let outstanding = 0
  let max = 0
  let submits = 0
  for (const line of stderr.split('\n')) {
    if (submit.test(line)) {
      submits++
      max = Math.max(max, ++outstanding)
    } else if (complete.test(line)) outstanding--
  }
  return { submits, max }
}
