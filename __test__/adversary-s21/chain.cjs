// writeMany(ops, { datasync: true }) on one file with one backend, then close; prints
// `RESULT {"results": [...]}` (bytes per op, or its error code) or `{"code", "results"}` when the
// call rejected.
// argv: <dist/index.js> <file> <backend> <ops: JSON [[fill byte, length, position], ...]> [barrier]
// `barrier`: an fh.datasync() called right after writeMany, before it settled.
const [dist, file, backend, spec, barrier] = process.argv.slice(2)
const od = require(dist)
;(async () => {
  const fh = await od.open(file, 'r+', { backend })
  try {
    const ops = JSON.parse(spec).map(([fill, len, pos]) => ({ buffer: fh.alloc(len).fill(fill), position: pos }))
    const call = fh.writeMany(ops, { datasync: true })
    const sync = barrier === 'barrier' ? fh.datasync() : undefined
    const out = await call.then(
      (results) => ({ results }),
      (e) => ({ code: e.code, message: e.message, results: e.results?.map((r) => (typeof r === 'number' ? r : r.code)) }),
    )
    await sync
    console.log(`RESULT ${JSON.stringify({ backend: fh.backend, ...out })}`)
  } finally {
    await fh.close()
  }
})().catch((e) => console.log(`RESULT ${JSON.stringify({ crash: String(e?.stack ?? e) })}`))
