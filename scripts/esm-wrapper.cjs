// Writes dist/index.mjs: an ES module that re-exports the CommonJS build by name, so
// `import { open } from 'odirect'` works in Node, Bun and Deno. Also lays dist/ out flat:
// tsc writes dist/index.js + dist/src/*.js (+ dist/cli/, dist/bench/) because rootDir is the package root.
//
// The CommonJS build is loaded with createRequire(), not `import m from './index.js'`: when the
// native binary is missing or broken, index.js throws while loading, and Node 20 treats a CommonJS
// module that throws under the ESM loader's translator as fatal (the process exits 1 with a stack
// even inside `try { await import('odirect') } catch {}`). A require() that throws during this
// module's evaluation is an ordinary exception: the import() rejects with odirect's error (what was
// tried, the install command), in Node 20 and 22, Bun and Deno alike.
const fs = require('node:fs')
const path = require('node:path')
const dist = path.join(__dirname, '..', 'dist')
const cjs = require(path.join(dist, 'index.js'))
const names = Object.keys(cjs).filter((n) => n !== 'default' && n !== '__esModule')
const lines = [
  "import { createRequire } from 'node:module'",
  "const m = createRequire(import.meta.url)('./index.js')",
  ...names.map((n) => `export const ${n} = m.${n}`),
  'export default m',
  '',
]
fs.writeFileSync(path.join(dist, 'index.mjs'), lines.join('\n'))
// The CLI needs a shebang and the execute bit.
const cli = path.join(dist, 'cli.js')
if (fs.existsSync(path.join(dist, 'cli', 'cli.js'))) {
  fs.writeFileSync(cli, "#!/usr/bin/env node\n'use strict'\nrequire('./cli/cli.js').main(process.argv.slice(2)).then((c) => { process.exitCode = c }, (e) => { console.error(e && e.message ? e.message : e); process.exitCode = 1 })\n")
  fs.chmodSync(cli, 0o755)
}
// Declarations: tsc keeps import specifiers as written, so `src/native.ts`'s `'../binding'` (the
// napi-generated binding.d.ts at the package root) lands in dist/src/native.d.ts pointing at
// dist/binding.d.ts, which does not exist, and a user's tsc fails with TS2307. Re-point every
// specifier that meant the root binding at it from the file's place in dist/.
const root = path.join(__dirname, '..')
const rootBinding = path.join(root, 'binding')
function fixDeclarations(dir) {
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, ent.name)
    if (ent.isDirectory()) fixDeclarations(file)
    if (!ent.isFile() || !ent.name.endsWith('.d.ts')) continue
    const srcDir = path.join(root, path.relative(dist, dir))
    const text = fs.readFileSync(file, 'utf8')
    const fixed = text.replace(/(from\s+|import\()(['"])(\.{1,2}\/[^'"]*?binding)(\.js)?\2/g, (m, pre, q, spec, ext) => {
      if (path.resolve(srcDir, spec) !== rootBinding) return m
      let rel = path.relative(dir, rootBinding).split(path.sep).join('/')
      if (!rel.startsWith('.')) rel = `./${rel}`
      return `${pre}${q}${rel}${ext || ''}${q}`
    })
    if (fixed !== text) fs.writeFileSync(file, fixed)
  }
}
fixDeclarations(dist)
// Source maps: tsc's maps name the TypeScript sources (../index.ts, ../../src/*.ts), which are not
// published. Embed each source's text in its map (sourcesContent), so a shipped map is complete on
// its own: --enable-source-maps, debuggers and bundlers' source-map loaders show the TypeScript
// without looking for files that are not in the package.
function embedSources(dir) {
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, ent.name)
    if (ent.isDirectory()) embedSources(file)
    if (!ent.isFile() || !ent.name.endsWith('.map')) continue
    const map = JSON.parse(fs.readFileSync(file, 'utf8'))
    const base = path.resolve(dir, map.sourceRoot || '')
    const missing = map.sources.filter((s) => !fs.existsSync(path.resolve(base, s)))
    if (missing.length) {
      // Output of a source that no longer exists (tsc does not clean dist/): it would be published.
      const js = file.replace(/\.map$/, '')
      for (const f of [js, file, js.replace(/\.js$/, '.d.ts')]) fs.rmSync(f, { force: true })
      process.stderr.write(`esm-wrapper: removed stale ${path.relative(root, js)} (its source ${missing.join(', ')} is gone)\n`)
      continue
    }
    map.sourcesContent = map.sources.map((s) => fs.readFileSync(path.resolve(base, s), 'utf8'))
    fs.writeFileSync(file, JSON.stringify(map))
  }
}
embedSources(dist)
