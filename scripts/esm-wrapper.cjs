// Writes dist/index.mjs: an ES module that re-exports the CommonJS build by name, so
// `import { open } from 'odirect'` works in Node, Bun and Deno. Also lays dist/ out flat:
// tsc writes dist/index.js + dist/src/*.js because rootDir is the package root.
const fs = require('node:fs')
const path = require('node:path')
const dist = path.join(__dirname, '..', 'dist')
const cjs = require(path.join(dist, 'index.js'))
const names = Object.keys(cjs).filter((n) => n !== 'default' && n !== '__esModule')
const lines = ["import m from './index.js'", ...names.map((n) => `export const ${n} = m.${n}`), 'export default m', '']
fs.writeFileSync(path.join(dist, 'index.mjs'), lines.join('\n'))
// The CLI needs a shebang and the execute bit.
const cli = path.join(dist, 'cli.js')
if (fs.existsSync(path.join(dist, 'src', 'cli.js'))) {
  fs.writeFileSync(cli, "#!/usr/bin/env node\n'use strict'\nrequire('./src/cli.js').main(process.argv.slice(2)).then((c) => { process.exitCode = c }, (e) => { console.error(e && e.message ? e.message : e); process.exitCode = 1 })\n")
  fs.chmodSync(cli, 0o755)
}
