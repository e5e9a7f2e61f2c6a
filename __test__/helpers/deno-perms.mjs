// Run by layer.spec.ts under Deno with restricted permissions: `deno run <perms> deno-perms.mjs DIR`.
// Tries an atomic writeFile and a copyFile in DIR and prints what each did as one JSON line:
// 'ok', or the error's name, code and whether it is odirect's DirectIoError.
import { createRequire } from 'node:module'

const od = createRequire(import.meta.url)('../../dist/index.js')
const dir = Deno.args[0]
const describe = (e) => ({ name: e?.name, code: e?.code, odirect: e instanceof od.DirectIoError, message: String(e?.message).slice(0, 200) })
const out = {}
try {
  await od.writeFile(`${dir}/dst`, 'new contents', { atomic: true })
  out.writeFile = 'ok'
} catch (e) {
  out.writeFile = describe(e)
}
try {
  await od.copyFile(`${dir}/src`, `${dir}/copy`)
  out.copyFile = 'ok'
} catch (e) {
  out.copyFile = describe(e)
}
console.log(JSON.stringify(out))
