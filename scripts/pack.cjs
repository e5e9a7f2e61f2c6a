#!/usr/bin/env node
// Packs what would be published: the main package and each per-platform package whose binary
// is present, as `napi pre-publish` lays them out, into a directory of .tgz files.
//
//   node scripts/pack.cjs [--out DIR]        (default: .tmp/pack)
//
// - The per-platform packages live in npm/<platformArchABI>/ (made by `napi create-npm-dirs`
//   from package.json's napi.targets). Each gets its `<binaryName>.<platformArchABI>.node` copied
//   in from the package root (where `npm run build:native` / `napi artifacts` put it) in a staging
//   copy, so npm/ itself only ever holds package.json and README.md; the root LICENSE goes in too.
// - The main package gets `optionalDependencies` on every platform package at its own version,
//   exactly as `napi pre-publish` writes them at publish time. They are not in the repository's
//   package.json: npm records a not-yet-published optional dependency in package-lock.json in a
//   way `npm ci` then rejects ("Missing: odirect-darwin-x64@ from lock file").
//
// Prints one JSON line: { main, platforms: { abi: tgz }, skipped: { abi: reason }, dir }.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const npmCmd = process.platform === 'win32' ? 'npm.cmd' : 'npm'

function parseTriple(triple) {
  // @napi-rs/cli's own parser when installed (a dev machine); a small fallback otherwise.
  try {
    return require('@napi-rs/cli').parseTriple(triple)
  } catch {
    const [cpu, , sys, abi] = triple.split('-')
    const arch = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' }[cpu] || cpu
    const platform = { linux: 'linux', darwin: 'darwin', windows: 'win32' }[sys] || sys
    return { triple, platform, arch, abi: abi || null, platformArchABI: [platform, arch, abi].filter(Boolean).join('-') }
  }
}

/** The package layout: root package.json, napi config, one entry per target. */
function layout() {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
  const napi = pkg.napi || {}
  const binaryName = napi.binaryName || pkg.name
  const packageName = napi.packageName || pkg.name
  const targets = (napi.targets || []).map((t) => {
    const p = parseTriple(t)
    return {
      triple: t,
      abi: p.platformArchABI,
      platform: p.platform,
      arch: p.arch,
      libc: p.abi,
      dir: path.join(root, 'npm', p.platformArchABI),
      name: `${packageName}-${p.platformArchABI}`,
      binary: `${binaryName}.${p.platformArchABI}.node`,
    }
  })
  return { pkg, binaryName, packageName, targets }
}

/** What `napi pre-publish` puts in the main package's optionalDependencies. */
function optionalDependencies({ pkg, targets }) {
  const out = {}
  for (const t of targets) out[t.name] = pkg.version
  return out
}

function npmPack(dir, out) {
  const json = execFileSync(npmCmd, ['pack', '--json', '--ignore-scripts', '--pack-destination', out], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  const r = JSON.parse(json)[0]
  return { file: path.join(out, r.filename), files: r.files.map((f) => f.path) }
}

function copyInto(src, dest) {
  fs.mkdirSync(path.dirname(dest), { recursive: true })
  fs.cpSync(src, dest, { recursive: true, dereference: true })
}

function pack(out) {
  const L = layout()
  fs.mkdirSync(out, { recursive: true })
  const stage = fs.mkdtempSync(path.join(out, 'stage-'))
  const result = { dir: out, main: '', mainFiles: [], platforms: {}, platformFiles: {}, skipped: {} }
  try {
    // Per-platform packages: only where the binary exists (this machine builds its own target).
    for (const t of L.targets) {
      const bin = [path.join(root, t.binary), path.join(t.dir, t.binary)].find((f) => fs.existsSync(f))
      if (!fs.existsSync(path.join(t.dir, 'package.json'))) {
        result.skipped[t.abi] = `npm/${t.abi}/package.json missing (run: npx napi create-npm-dirs)`
        continue
      }
      if (bin === undefined) {
        result.skipped[t.abi] = `no ${t.binary} built here (built by CI on a ${t.platform}-${t.arch} machine)`
        continue
      }
      const d = path.join(stage, t.abi)
      for (const f of fs.readdirSync(t.dir)) if (!f.endsWith('.node')) copyInto(path.join(t.dir, f), path.join(d, f))
      copyInto(bin, path.join(d, t.binary))
      copyInto(path.join(root, 'LICENSE'), path.join(d, 'LICENSE'))
      const r = npmPack(d, out)
      result.platforms[t.abi] = r.file
      result.platformFiles[t.abi] = r.files
    }
    // Main package: package.json with optionalDependencies, plus what `files` names.
    const d = path.join(stage, 'main')
    const manifest = { ...L.pkg, optionalDependencies: { ...(L.pkg.optionalDependencies || {}), ...optionalDependencies(L) } }
    delete manifest.devDependencies
    fs.mkdirSync(d, { recursive: true })
    fs.writeFileSync(path.join(d, 'package.json'), JSON.stringify(manifest, null, 2) + '\n')
    const extra = fs.readdirSync(root).filter((f) => /^(readme|license|licence|changelog)(\.|$)/i.test(f))
    for (const f of [...(L.pkg.files || []), ...extra]) {
      const src = path.join(root, f)
      if (!fs.existsSync(src)) throw new Error(`package.json "files" names ${f}, which does not exist: run npm run build first`)
      copyInto(src, path.join(d, f))
    }
    const r = npmPack(d, out)
    result.main = r.file
    result.mainFiles = r.files
  } finally {
    fs.rmSync(stage, { recursive: true, force: true })
  }
  return result
}

/**
 * One tarball per platform package: the packed one where its binary was built, else a local
 * stand-in (its package.json from npm/, a placeholder in place of the binary; never published), so
 * a package manager sees every optional dependency with its real os/cpu/libc fields. Returns
 * { name: tgz }.
 */
function platformTarballs(packed, dir) {
  const L = layout()
  const out = {}
  for (const t of L.targets) {
    if (packed.platforms[t.abi]) {
      out[t.name] = packed.platforms[t.abi]
      continue
    }
    const d = path.join(dir, t.abi)
    fs.mkdirSync(d, { recursive: true })
    fs.copyFileSync(path.join(t.dir, 'package.json'), path.join(d, 'package.json'))
    fs.writeFileSync(path.join(d, t.binary), 'pack-test fixture: not a binary\n')
    fs.copyFileSync(path.join(root, 'LICENSE'), path.join(d, 'LICENSE'))
    out[t.name] = npmPack(d, dir).file
  }
  return out
}

module.exports = { layout, npmPack, optionalDependencies, pack, parseTriple, platformTarballs }

if (require.main === module) {
  const i = process.argv.indexOf('--out')
  const out = path.resolve(i > 0 ? process.argv[i + 1] : path.join(root, '.tmp', 'pack'))
  try {
    const r = pack(out)
    process.stdout.write(JSON.stringify({ main: r.main, platforms: r.platforms, skipped: r.skipped, dir: r.dir }) + '\n')
  } catch (e) {
    process.stderr.write(`pack: ${e && e.message ? e.message : e}\n`)
    process.exitCode = 1
  }
}
