#!/usr/bin/env node
// Builds the native addon (`npm run build:native`): `napi build --platform --release` for this
// machine, writing odirect.<platform>.node, binding.js and binding.d.ts at the package root.
//
//   node scripts/build-native.cjs            the binary that ships (on linux-x64: glibc 2.17 baseline)
//   node scripts/build-native.cjs --host     a plain build against this machine's glibc (faster to
//                                            set up, but the binary may not load on older distros)
//   node scripts/build-native.cjs --target T one Linux target T into npm/<platform>/ (see below)
//   node scripts/build-native.cjs --linux-targets   every Linux target (npm run build:targets)
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
// The other Linux targets (cross-compiled on this x86_64 Debian 12 machine; rustup cannot fetch their
// standard libraries here, so they use Debian's own rustc, `rustc-web` 1.96 in /usr/bin, while the
// rustup toolchain stays the default for everything else: RUSTC=/usr/bin/rustc for these builds
// only, with their own target directory, target/debian):
// - aarch64-unknown-linux-gnu: Debian's prebuilt std for aarch64 (libstd-rust-web-dev:arm64) and
//   napi's glibc 2.17 aarch64 toolchain (@napi-rs/cross-toolchain-x64-target-aarch64, unpacked the
//   same way as the x64 one), statx shim included: glibc 2.17 baseline, like x64.
// - x86_64-unknown-linux-musl, aarch64-unknown-linux-musl: no prebuilt std, so std is compiled
//   from Debian's sources (rust-web-src) with cargo's -Z build-std (RUSTC_BOOTSTRAP=1: the
//   unstable flag on a stable compiler), linked by gcc with musl's specs (musl-gcc for x86_64, the
//   same specs file from musl-dev:arm64 around aarch64-linux-gnu-gcc for aarch64), dynamically
//   against musl (-C target-feature=-crt-static, as every Node addon). Rust's musl std then asks
//   for the unwinder as libgcc_s.so.1, which no musl system here has: the build links GCC's
//   static unwinder instead (libgcc_eh.a, offered as libgcc_s.a in a private -L directory), plus
//   scripts/musl-compat/dl_find_object.c, because Debian's libgcc_eh.a calls glibc's
//   _dl_find_object(); and scripts/glibc-compat/statx.c, as musl only has statx() from 1.2.5 on.
//   The addon then needs nothing but musl's libc.so, and only functions musl 1.2.3 has
//   (scripts/check-glibc.cjs --musl checks it); scripts/musl-compat/unwind-check proves the
//   unwinder catches a panic there (without the shim the link fails: undefined _dl_find_object).
// Required Debian packages: see TARGETS below and the README's "Platforms" section.
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const HOST_TRIPLE = 'x86_64-unknown-linux-gnu'
const DEBIAN_RUSTC = '/usr/bin/rustc'
const napiArgs = ['--platform', '--release', '--manifest-path', 'crates/napi/Cargo.toml', '--output-dir', '.', '--js', 'binding.js', '--dts', 'binding.d.ts']

/**
 * The Linux targets this machine builds. napiCross: napi's glibc 2.17 toolchain package (the
 * pinned version npm has: napi's meta package asks for 1.0.5, which was never published for
 * these). musl: the C compiler driver and GCC's library directory (libgcc_eh.a). apt: the Debian
 * packages the build needs (scripts/build-native.cjs says which are missing; .ci/run installs them).
 */
const TARGETS = {
  'x86_64-unknown-linux-gnu': {
    abi: 'linux-x64-gnu',
    napiCross: { pkg: '@napi-rs/cross-toolchain-x64-target-x86_64', version: '1.0.0', ld: 'lib64/ld-linux-x86-64.so.2' },
    apt: ['xz-utils'],
  },
  'aarch64-unknown-linux-gnu': {
    abi: 'linux-arm64-gnu',
    debianRustc: true,
    napiCross: { pkg: '@napi-rs/cross-toolchain-x64-target-aarch64', version: '1.0.3', ld: 'lib/ld-linux-aarch64.so.1' },
    apt: ['xz-utils', 'rustc-web', 'libstd-rust-web-dev:arm64'],
  },
  'x86_64-unknown-linux-musl': {
    abi: 'linux-x64-musl',
    debianRustc: true,
    musl: { cc: 'musl-gcc', gccLib: '/usr/lib/gcc/x86_64-linux-gnu/12' },
    apt: ['rustc-web', 'rust-web-src', 'musl-tools', 'musl-dev'],
  },
  'aarch64-unknown-linux-musl': {
    abi: 'linux-arm64-musl',
    debianRustc: true,
    musl: { gcc: 'aarch64-linux-gnu-gcc', specs: '/usr/lib/aarch64-linux-musl/musl-gcc.specs', gccLib: '/usr/lib/gcc-cross/aarch64-linux-gnu/12' },
    apt: ['rustc-web', 'rust-web-src', 'gcc-aarch64-linux-gnu', 'musl-dev:arm64'],
  },
}
const LINUX_TARGETS = Object.keys(TARGETS)
// Kept for scripts/check-glibc.cjs and older callers.
const TRIPLE = HOST_TRIPLE
const TOOLCHAIN_PKG = TARGETS[HOST_TRIPLE].napiCross.pkg
const TOOLCHAIN_VERSION = TARGETS[HOST_TRIPLE].napiCross.version

function napiCli() {
  return path.join(path.dirname(require.resolve('@napi-rs/cli/package.json', { paths: [root] })), 'dist', 'cli.js')
}

/** Where napi's --use-napi-cross looks for an unpacked toolchain (see pickCrossToolchain in @napi-rs/cli). */
function napiToolchainDir(triple = HOST_TRIPLE) {
  const cli = path.dirname(require.resolve('@napi-rs/cli/package.json', { paths: [root] }))
  const meta = require(require.resolve('@napi-rs/cross-toolchain/package.json', { paths: [cli] }))
  return path.join(os.homedir(), '.napi-rs', 'cross-toolchain', meta.version, triple)
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: root, ...opts })
  if (r.error) throw r.error
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}`)
}

/** Makes sure the glibc 2.17 toolchain for `triple` is unpacked where napi looks; returns its directory. */
function ensureToolchain(triple = HOST_TRIPLE) {
  const { pkg, version } = TARGETS[triple].napiCross
  const dir = napiToolchainDir(triple)
  const gcc = path.join(dir, 'bin', `${triple}-gcc`)
  if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(gcc)) return dir
  // One npm prefix per toolchain: npm prunes what a --no-save install did not name.
  const prefix = path.join(root, '.tmp', 'cross-toolchain', triple)
  const pkgDir = path.join(prefix, 'node_modules', ...pkg.split('/'))
  const archive = path.join(pkgDir, `${triple}.tar.xz`)
  if (!fs.existsSync(archive)) {
    fs.mkdirSync(prefix, { recursive: true })
    fs.writeFileSync(path.join(prefix, 'package.json'), JSON.stringify({ name: 'odirect-cross-toolchain', private: true }) + '\n')
    const spec = `${pkg}@${version}`
    process.stderr.write(`build-native: installing ${spec} (gcc + glibc 2.17 sysroot, ~45 MB) into ${path.relative(root, prefix)}\n`)
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
    run(npm, ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--ignore-scripts', '--no-audit', '--no-fund', spec])
  }
  process.stderr.write(`build-native: unpacking ${path.relative(root, archive)} into ${dir}\n`)
  const tmp = `${dir}.tmp-${process.pid}`
  fs.rmSync(tmp, { recursive: true, force: true })
  fs.mkdirSync(tmp, { recursive: true })
  try {
    run('tar', ['-xJf', archive, '-C', tmp])
    if (!fs.existsSync(path.join(tmp, 'bin', `${triple}-gcc`))) throw new Error(`${archive} has no bin/${triple}-gcc`)
    fs.rmSync(dir, { recursive: true, force: true })
    fs.renameSync(tmp, dir)
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  return dir
}

/** Compiles the C shims in scripts/<dir> with `cc` (argv array); returns the object files. */
function compileShims(dir, cc, outName) {
  const out = path.join(root, '.tmp', outName)
  fs.mkdirSync(out, { recursive: true })
  const objs = []
  for (const f of fs.readdirSync(path.join(__dirname, dir)).filter((n) => n.endsWith('.c')).sort()) {
    const obj = path.join(out, f.replace(/\.c$/, '.o'))
    run(cc[0], [...cc.slice(1), '-O2', '-fPIC', '-Wall', '-Werror', '-c', path.join(__dirname, dir, f), '-o', obj])
    objs.push(obj)
  }
  return objs
}

/** The glibc-compat shims, compiled with the glibc 2.17 toolchain's gcc for `triple`. */
function compatObjects(toolchain, triple = HOST_TRIPLE) {
  return compileShims('glibc-compat', [path.join(toolchain, 'bin', `${triple}-gcc`)], path.join('glibc-compat', triple))
}

/** Which commands/files a target's build needs and are missing, as `apt-get install` names. */
function missingPackages(triple) {
  const t = TARGETS[triple]
  const need = []
  const onPath = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
  if (t.debianRustc && !fs.existsSync(DEBIAN_RUSTC)) need.push('rustc-web')
  if (t.debianRustc && !t.musl && !fs.existsSync(`/usr/lib/rustlib/${triple}/lib`)) need.push('libstd-rust-web-dev:arm64')
  if (t.musl && !fs.existsSync('/usr/lib/rustlib/src/rust/library/std')) need.push('rust-web-src')
  if (t.musl && t.musl.cc && !onPath(t.musl.cc)) need.push('musl-tools')
  if (t.musl && t.musl.gcc && !onPath(t.musl.gcc)) need.push('gcc-aarch64-linux-gnu')
  if (t.musl && t.musl.specs && !fs.existsSync(t.musl.specs)) need.push('musl-dev:arm64')
  if (t.musl && !fs.existsSync(path.join(t.musl.gccLib, 'libgcc_eh.a'))) need.push(t.musl.gcc ? 'gcc-aarch64-linux-gnu' : 'gcc')
  if (t.napiCross && !onPath('xz')) need.push('xz-utils')
  return [...new Set(need)]
}

/**
 * Environment and extra napi arguments for a musl target: the linker (a gcc driver with musl's
 * specs), std built from source, the static unwinder and its _dl_find_object shim.
 */
function muslSetup(triple) {
  const m = TARGETS[triple].musl
  const dir = path.join(root, '.tmp', 'musl', triple)
  fs.mkdirSync(dir, { recursive: true })
  let cc = m.cc
  if (!cc) {
    // musl-gcc for another architecture: the same wrapper musl-tools installs for the host.
    cc = path.join(dir, `${triple}-gcc`)
    fs.writeFileSync(cc, `#!/bin/sh\nexec ${m.gcc} "$@" -specs ${m.specs}\n`)
    fs.chmodSync(cc, 0o755)
  }
  // -lgcc_s finds this libgcc_s.a (GCC's static unwinder) before the driver's own directories.
  const unwind = path.join(dir, 'unwind')
  fs.mkdirSync(unwind, { recursive: true })
  fs.copyFileSync(path.join(m.gccLib, 'libgcc_eh.a'), path.join(unwind, 'libgcc_s.a'))
  // statx: musl added its wrapper in 1.2.5 (Alpine 3.20); the glibc-compat shim makes the raw
  // system call, so the addon loads on older musl (Debian 12's 1.2.3, Alpine 3.17-3.19) as well.
  const shims = [...compileShims('musl-compat', [cc], path.join('musl-compat', triple)), ...compileShims('glibc-compat', [cc], path.join('glibc-compat', triple))]
  const rustflags = ['-C', 'target-feature=-crt-static', '-L', `native=${unwind}`, ...shims.flatMap((o) => ['-C', `link-arg=${o}`])]
  const upper = triple.toUpperCase().replace(/-/g, '_')
  return {
    env: {
      RUSTFLAGS: [process.env.RUSTFLAGS, ...rustflags].filter(Boolean).join(' '),
      [`CARGO_TARGET_${upper}_LINKER`]: cc,
      [`CC_${triple.replace(/-/g, '_')}`]: cc,
      RUSTC_BOOTSTRAP: '1',
      // cargo -Z build-std=std,panic_abort (as configuration, so napi passes it through untouched)
      CARGO_UNSTABLE_BUILD_STD: 'std,panic_abort',
    },
  }
}

/** Builds one Linux target into npm/<abi>/odirect.<abi>.node; returns the file. */
function buildTarget(triple, extra = []) {
  const t = TARGETS[triple]
  if (!t) throw new Error(`unknown target ${triple}: one of ${LINUX_TARGETS.join(', ')}`)
  const missing = missingPackages(triple)
  if (missing.length) throw new Error(`${triple} needs Debian packages: apt-get install ${missing.join(' ')}${missing.some((p) => p.endsWith(':arm64')) ? ' (after dpkg --add-architecture arm64 && apt-get update)' : ''}`)
  const outDir = path.join('npm', t.abi)
  const env = { ...process.env }
  const args = ['build', '--platform', '--release', '--manifest-path', 'crates/napi/Cargo.toml', '--output-dir', outDir, '--no-js', '--dts', path.relative(outDir, path.join('.tmp', 'targets', `${t.abi}.d.ts`))]
  if (t.debianRustc) {
    env.RUSTC = DEBIAN_RUSTC
    args.push('--target-dir', path.join('target', 'debian'))
  }
  const upper = triple.toUpperCase().replace(/-/g, '_')
  if (t.napiCross) {
    const dir = ensureToolchain(triple)
    const flagsVar = `CARGO_TARGET_${upper}_RUSTFLAGS`
    env[flagsVar] = [process.env[flagsVar], ...compatObjects(dir, triple).map((o) => `-C link-arg=${o}`)].filter(Boolean).join(' ')
    args.push('--use-napi-cross')
  }
  if (t.musl) Object.assign(env, muslSetup(triple).env)
  fs.mkdirSync(path.join(root, '.tmp', 'targets'), { recursive: true })
  const how = [t.debianRustc ? `rustc ${DEBIAN_RUSTC}` : 'rustup rustc', t.napiCross ? 'glibc 2.17 (napi cross toolchain)' : '', t.musl ? 'musl, -Z build-std, static libgcc_eh' : ''].filter(Boolean).join(', ')
  process.stderr.write(`build-native: ${triple} (${how}) -> ${outDir}\n`)
  const t0 = Date.now()
  run(process.execPath, [napiCli(), ...args, '--target', triple, ...extra], { env })
  const file = path.join(root, outDir, `odirect.${t.abi}.node`)
  if (!fs.existsSync(file)) throw new Error(`napi build finished but ${path.relative(root, file)} is missing`)
  process.stderr.write(`build-native: ${triple} done in ${((Date.now() - t0) / 1000).toFixed(1)}s: ${path.relative(root, file)} (${fs.statSync(file).size} bytes)\n`)
  checkBuilt(triple, file)
  if (t.musl) unwindCheck(triple, env)
  return file
}

/**
 * Builds scripts/musl-compat/unwind-check with the addon's toolchain, flags and std (same target
 * directory, so std is reused) and runs it on Debian's musl 1.2.3 (aarch64 under qemu-aarch64):
 * a panic must be caught and a backtrace walked, through the static unwinder and its shim.
 */
function unwindCheck(triple, env) {
  const manifest = path.join(__dirname, 'musl-compat', 'unwind-check', 'Cargo.toml')
  run('cargo', ['build', '--release', '--quiet', '--manifest-path', manifest, '--target', triple, '--target-dir', path.join(root, 'target', 'debian')], { env })
  const exe = path.join(root, 'target', 'debian', triple, 'release', 'odirect-unwind-check')
  const argv = triple.startsWith('aarch64') ? ['qemu-aarch64', exe] : [exe]
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' })
  const out = `${r.stdout || ''}${r.stderr || ''}`.trim()
  if (r.status !== 0) throw new Error(`${triple}: the static unwinder check failed (exit ${r.status ?? r.signal}): ${out || r.error}`)
  process.stderr.write(`build-native: ${triple}: unwinder (static libgcc_eh + _dl_find_object shim) under musl: ${out}\n`)
}

/** The baseline check of a built target (scripts/check-glibc.cjs): glibc 2.17, or musl 1.2.3's symbols. */
function checkBuilt(triple, file) {
  const { checkFile, checkMusl, loadWithGlibc217 } = require('./check-glibc.cjs')
  const t = TARGETS[triple]
  const problems = []
  if (t.musl) {
    const libc = `/usr/lib/${triple.split('-')[0]}-linux-musl/libc.so`
    const r = checkMusl(file, libc)
    problems.push(...r.problems)
    if (r.ok) process.stderr.write(`build-native: ${triple}: all ${r.undefinedCount} imports are in Debian's musl 1.2.3 (${libc}) or the host process\n`)
  } else {
    const r = checkFile(file, '2.17')
    problems.push(...r.problems)
    const l = loadWithGlibc217(file)
    if (l.ran && !l.ok) problems.push(`dlopen under glibc 2.17: ${l.output}`)
    if (r.ok) process.stderr.write(`build-native: ${triple}: needs glibc ${r.maxGlibc} at most; ${l.ran ? l.output : `dlopen check skipped: ${l.why}`}\n`)
  }
  if (problems.length) throw new Error(`${path.relative(root, file)} fails its baseline check:\n  ${problems.join('\n  ')}`)
}

function main(argv) {
  const ti = argv.indexOf('--target')
  if (ti >= 0) {
    buildTarget(argv[ti + 1], argv.filter((_, i) => i !== ti && i !== ti + 1))
    return
  }
  if (argv.includes('--linux-targets')) {
    const t0 = Date.now()
    for (const triple of LINUX_TARGETS) buildTarget(triple, argv.filter((a) => a !== '--linux-targets'))
    process.stderr.write(`build-native: ${LINUX_TARGETS.length} Linux targets in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`)
    return
  }
  const host = argv.includes('--host') || process.env.ODIRECT_NATIVE_BUILD === 'host'
  const extra = argv.filter((a) => a !== '--host')
  const cross = !host && process.platform === 'linux' && process.arch === 'x64'
  const t0 = Date.now()
  if (cross) {
    const dir = ensureToolchain(HOST_TRIPLE)
    process.stderr.write(`build-native: ${HOST_TRIPLE} against glibc 2.17 (napi --use-napi-cross, toolchain ${dir})\n`)
    const flagsVar = `CARGO_TARGET_${HOST_TRIPLE.toUpperCase().replace(/-/g, '_')}_RUSTFLAGS`
    const links = compatObjects(dir).map((o) => `-C link-arg=${o}`)
    const env = { ...process.env, [flagsVar]: [process.env[flagsVar], ...links].filter(Boolean).join(' ') }
    run(process.execPath, [napiCli(), 'build', ...napiArgs, '--use-napi-cross', '--target', HOST_TRIPLE, ...extra], { env })
  } else {
    if (process.platform === 'linux') process.stderr.write(`build-native: host build against this machine's glibc${host ? '' : ` (no glibc 2.17 toolchain for ${process.arch} here)`}\n`)
    run(process.execPath, [napiCli(), 'build', ...napiArgs, ...extra])
  }
  process.stderr.write(`build-native: done in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`)
}

// Before main(): scripts/check-glibc.cjs, required while main() runs, reads these.
module.exports = { ensureToolchain, napiToolchainDir, buildTarget, TARGETS, LINUX_TARGETS, TRIPLE, TOOLCHAIN_PKG, TOOLCHAIN_VERSION }

if (require.main === module) {
  try {
    main(process.argv.slice(2))
  } catch (e) {
    process.stderr.write(`build-native: ${e && e.message ? e.message : e}\n`)
    process.exitCode = 1
  }
}
