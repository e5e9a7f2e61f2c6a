// README's API tables and the package's runtime exports agree: every export of dist/index.js has
// a row in a table headed `| export | ... |` (the "## API" table and those of later sections), and
// every name such a table's first column documents is exported. (Types are not runtime exports; dist/index.d.ts is checked by scripts/pack-test.cjs.)
import { spawnSync, type SpawnSyncReturns } from 'node:child_process'
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')

/**
 * Names in the first column of README's API tables: every table whose header row starts with
 * `| export |` (the "## API" table, and the ones sections such as streams add).
 */
function documented(readme: string): string[] {
  const names: string[] = []
  let inApiTable = false
  for (const line of readme.split('\n')) {
    if (!line.startsWith('|')) {
      inApiTable = false
      continue
    }
    const first = line.split('|')[1] ?? ''
    if (/^\s*export\s*$/i.test(first)) {
      inApiTable = true
      continue
    }
    if (!inApiTable || /^\s*:?-+:?\s*$/.test(first)) continue
    for (const m of first.matchAll(/`([A-Za-z_$][\w$]*)/g)) names.push(m[1]!)
  }
  return [...new Set(names)].sort()
}

test('every runtime export of dist/index.js is in README\'s API tables, and every name there is exported', (t) => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8')
  const table = documented(readme)
  t.true(table.includes('open') && table.includes('FileHandle'), `the API table lists names: ${table.join(', ')}`)
  const mod = createRequire(import.meta.url)(path.join(root, 'dist', 'index.js')) as Record<string, unknown>
  const exported = Object.keys(mod)
    .filter((k) => k !== 'default' && k !== '__esModule')
    .sort()
  const undocumented = exported.filter((n) => !table.includes(n))
  const stale = table.filter((n) => !exported.includes(n))
  t.deepEqual(undocumented, [], `exported but not in README's API table: ${undocumented.join(', ')}`)
  t.deepEqual(stale, [], `in README's API table but not exported: ${stale.join(', ')}`)
  // The ESM entry (dist/index.mjs) re-exports the same names.
  const mjs = fs.readFileSync(path.join(root, 'dist', 'index.mjs'), 'utf8')
  t.deepEqual(exported.filter((n) => !new RegExp(`^export const ${n.replace('$', '\\$')} = `, 'm').test(mjs)), [], 'dist/index.mjs re-exports every name')
})

/** The first fenced block of a README section. */
function firstBlock(readme: string, heading: string, lang: string): string {
  const at = readme.indexOf(`\n${heading}\n`)
  if (at < 0) throw new Error(`README has no "${heading}" section`)
  const m = new RegExp('```' + lang + '\\n([\\s\\S]*?)\\n```').exec(readme.slice(at))
  if (m === null) throw new Error(`no \`\`\`${lang} block under "${heading}"`)
  return m[1]!
}

/** Runs `code` as `file` with Node in a fresh directory where `odirect` is installed (linked to this checkout). */
function runInstalled(code: string, file: string): { dir: string; r: SpawnSyncReturns<string> } {
  const dir = fs.mkdtempSync('/var/tmp/odirect-readme-')
  fs.mkdirSync(path.join(dir, 'node_modules'))
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'odirect'), 'dir')
  fs.writeFileSync(path.join(dir, file), code)
  return { dir, r: spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8', timeout: 60_000 }) }
}

test("README's Quick start runs as pasted on this Node (20) with the package installed", (t) => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8')
  const code = firstBlock(readme, '## Quick start', 'js')
  t.notRegex(code, /await using/, 'the Node 20 Quick start does not use await using')
  const { dir, r } = runInstalled(code, 'quickstart.mjs')
  try {
    t.is(r.status, 0, r.stderr)
    const lines = r.stdout.trim().split('\n')
    t.regex(lines[0]!, /^true (io_uring|aio|threadpool) \d+$/)
    t.is(lines[1], '1048576 1048576 odirect ')
    t.is(lines[2], '[ 4096, 4096, 4096, 4096 ]')
    t.regex(lines[3]!, /^ERR_ODIRECT_ALIGNMENT - ./)
    t.is(lines[4], 'hello, direct I/O')
    t.is(fs.readFileSync(path.join(dir, 'hello.txt'), 'utf8'), 'hello, direct I/O\n')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test("README's append-log example runs as pasted", (t) => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8')
  const code = firstBlock(readme, '### Append logs: preallocate', 'js')
  const { dir, r } = runInstalled(code, 'log.mjs')
  try {
    t.is(r.status, 0, r.stderr)
    t.is(fs.readFileSync(path.join(dir, 'app.log'), 'utf8'), 'x'.repeat(4096))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
