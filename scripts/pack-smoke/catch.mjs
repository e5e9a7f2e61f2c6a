// Run by scripts/pack-test.cjs with the platform package missing or its binary broken: a user's
// `try { await import('odirect') } catch {}` must catch the failure (Node 20 used to exit 1 with a
// stack when the ESM entry re-exported a throwing CommonJS module), in every runtime.
let out
try {
  const m = await import('odirect')
  out = { loaded: true, exports: Object.keys(m).length }
} catch (e) {
  const all = []
  for (let c = e; c; c = c.cause) all.push(String(c && c.message))
  out = { loaded: false, code: e && e.code, message: String(e && e.message), all: all.join('\n') }
}
console.log(JSON.stringify(out))
