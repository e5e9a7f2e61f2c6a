#!/usr/bin/env node
// Builds the native addon (`npm run build:native`): `napi build --platform --release` for this
// machine, writing odirect.<platform>.node, binding.js and binding.d.ts at the package root.
//
//   node scripts/build-native.cjs            the binary that ships (on linux-x64: glibc 2.17 baseline)
//   node scripts/build-native.cjs --host     a plain build against this machine's glibc (faster to
//                                            set up, but the binary may not load on older distros)
//
// On Linux x64 the release binary is linked against glibc 2.17 (CentOS 7 / RHEL 7 era), as
// napi-rs's own packages are: with `napi build --use-napi-cross`, whose gcc and sysroot come from
// the npm package @napi-rs/cross-toolchain-x64-target-x86_64. Linking against this machine's glibc
// (2.36 on Debian 12) instead pulls in GLIBC_2.34 symbol versions (pthread_*, dl*: glibc 2.34 moved
// them into libc.so.6), and such a binary does not load on Debian 11, Ubuntu 20.04, RHEL 8 or
// Amazon Linux 2. `scripts/check-glibc.cjs` checks the result.
//
// Why not let napi fetch the toolchain itself: `--use-napi-cross` runs `npm pack
// @napi-rs/cross-toolchain-x64-target-x86_64@<version of @napi-rs/cross-toolchain>`, and the
// x86_64 package was only ever published as 1.0.0 while the meta package napi depends on is 1.0.5
// (ETARGET); it also decompresses with @napi-rs/lzma, whose platform package may be missing. So
// this script installs the pinned 1.0.0 package into .tmp/cross-toolchain (npm, no install
// scripts), unpacks it with tar/xz into the directory napi looks in first
// (~/.napi-rs/cross-toolchain/<version>/x86_64-unknown-linux-gnu), and napi then only sets the
// linker, CC, AR and sysroot variables from it.
//
// glibc 2.17 has no statx() wrapper (2.28 added it) and crates/core calls libc::statx: the cross
// build links scripts/glibc-compat/statx.c (a hidden statx() that makes the raw system call) into
// the addon, compiled with the same toolchain, so the binary holds no reference to a symbol glibc
// 2.17 lacks.
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const TRIPLE = 'x86_64-unknown-linux-gnu'
const TOOLCHAIN_PKG = '@napi-rs/cross-toolchain-x64-target-x86_64'
const TOOLCHAIN_VERSION = '1.0.0'
const napiArgs = ['--platform', '--release', '--manifest-path', 'crates/napi/Cargo.toml', '--output-dir', '.', '--js', 'binding.js', '--dts', 'binding.d.ts']

function napiCli() {
  return path.join(path.dirname(require.resolve('@napi-rs/cli/package.json', { paths: [root] })), 'dist', 'cli.js')
}

/** Where napi's --use-napi-cross looks for an unpacked toolchain (see pickCrossToolchain in @napi-rs/cli). */
function napiToolchainDir() {
  const cli = path.dirname(require.resolve('@napi-rs/cli/package.json', { paths: [root] }))
  const meta = require(require.resolve('@napi-rs/cross-toolchain/package.json', { paths: [cli] }))
  return path.join(os.homedir(), '.napi-rs', 'cross-toolchain', meta.version, TRIPLE)
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts })
  if (r.error) throw r.error
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}`)
}

/** Makes sure the glibc 2.17 toolchain is unpacked where napi looks; returns its directory. */
function ensureToolchain() {
  const dir = napiToolchainDir()
  const gcc = path.join(dir, 'bin', `${TRIPLE}-gcc`)
  if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(gcc)) return dir
  const prefix = path.join(root, '.tmp', 'cross-toolchain')
  const pkgDir = path.join(prefix, 'node_modules', ...TOOLCHAIN_PKG.split('/'))
  const archive = path.join(pkgDir, `${TRIPLE}.tar.xz`)
  if (!fs.existsSync(archive)) {
    fs.mkdirSync(prefix, { recursive: true })
    fs.writeFileSync(path.join(prefix, 'package.json'), JSON.stringify({ name: 'odirect-cross-toolchain', private: true }) + '\n')
    const spec = `${TOOLCHAIN_PKG}@${TOOLCHAIN_VERSION}`
    process.stderr.write(`build-native: installing ${spec} (gcc + glibc 2.17 sysroot, ~48 MB) into ${path.relative(root, prefix)}\n`)
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
    run(npm, ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--ignore-scripts', '--no-audit', '--no-fund', spec])
  }
  process.stderr.write(`build-native: unpacking ${path.relative(root, archive)} into ${dir}\n`)
  const tmp = `${dir}.tmp-${process.pid}`
  fs.rmSync(tmp, { recursive: true, force: true })
  fs.mkdirSync(tmp, { recursive: true })
  try {
    run('tar', ['-xJf', archive, '-C', tmp])
    if (!fs.existsSync(path.join(tmp, 'bin', `${TRIPLE}-gcc`))) throw new Error(`${archive} has no bin/${TRIPLE}-gcc`)
    fs.rmSync(dir, { recursive: true, force: true })
    fs.renameSync(tmp, dir)
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  return dir
}

/** Compiles the glibc-compat shims with the toolchain's gcc; returns the object files. */
function compatObjects(toolchain) {
  const out = path.join(root, '.tmp', 'glibc-compat')
  fs.mkdirSync(out, { recursive: true })
  const gcc = path.join(toolchain, 'bin', `${TRIPLE}-gcc`)
  const objs = []
  for (const f of fs.readdirSync(path.join(__dirname, 'glibc-compat')).filter((n) => n.endsWith('.c')).sort()) {
    const obj = path.join(out, f.replace(/\.c$/, '.o'))
    run(gcc, ['-O2', '-fPIC', '-Wall', '-Werror', '-c', path.join(__dirname, 'glibc-compat', f), '-o', obj])
    objs.push(obj)
  }
  return objs
}

function main(argv) {
  const host = argv.includes('--host') || process.env.ODIRECT_NATIVE_BUILD === 'host'
  const extra = argv.filter((a) => a !== '--host')
  const cross = !host && process.platform === 'linux' && process.arch === 'x64'
  const t0 = Date.now()
  if (cross) {
    const dir = ensureToolchain()
    process.stderr.write(`build-native: ${TRIPLE} against glibc 2.17 (napi --use-napi-cross, toolchain ${dir})\n`)
    const flagsVar = `CARGO_TARGET_${TRIPLE.toUpperCase().replace(/-/g, '_')}_RUSTFLAGS`
    const links = compatObjects(dir).map((o) => `-C link-arg=${o}`)
    const env = { ...process.env, [flagsVar]: [process.env[flagsVar], ...links].filter(Boolean).join(' ') }
    run(process.execPath, [napiCli(), 'build', ...napiArgs, '--use-napi-cross', '--target', TRIPLE, ...extra], { env })
  } else {
    if (process.platform === 'linux') process.stderr.write(`build-native: host build against this machine's glibc${host ? '' : ` (no glibc 2.17 toolchain for ${process.arch} here)`}\n`)
    run(process.execPath, [napiCli(), 'build', ...napiArgs, ...extra])
  }
  process.stderr.write(`build-native: done in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`)
}

if (require.main === module) {
  try {
    main(process.argv.slice(2))
  } catch (e) {
    process.stderr.write(`build-native: ${e && e.message ? e.message : e}\n`)
    process.exitCode = 1
  }
}

module.exports = { ensureToolchain, napiToolchainDir, TRIPLE, TOOLCHAIN_PKG, TOOLCHAIN_VERSION }
