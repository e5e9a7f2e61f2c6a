#!/usr/bin/env node
// Checks that a Linux gnu addon loads on glibc 2.17 (the baseline napi-rs packages build for:
// CentOS/RHEL 7, Amazon Linux 2, Debian 8+, Ubuntu 14.04+).
//
//   node scripts/check-glibc.cjs FILE.node... [--max 2.17] [--load]
//   node scripts/check-glibc.cjs FILE.node... --musl /usr/lib/x86_64-linux-musl/libc.so
//
// Static check (objdump -T / -p, from binutils), fails when the file:
// - needs a GLIBC_x.y symbol version newer than --max (e.g. pthread_create@GLIBC_2.34: linked
//   against a newer glibc than the baseline);
// - has a strong undefined symbol with no version at all other than the Node-API/libuv ones the
//   host process provides (e.g. `statx` linked against a glibc that lacks it: the addon is
//   BIND_NOW, so loading fails with "undefined symbol" on any glibc without it). Weak ones are
//   fine: they resolve to null where missing and Rust's std checks before calling them.
// --load also dlopen()s the file with RTLD_NOW under glibc 2.17's own dynamic linker and libc,
// from the sysroot of the cross toolchain scripts/build-native.cjs uses (skipped with a reason
// when that toolchain is not unpacked here); an aarch64 file runs there under qemu-aarch64.
// --musl LIBC checks a musl build instead: every symbol it imports must be in that libc.so.
//
// Prints one line per file and exits 1 on any failure.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const HOST_SYMBOLS = /^(napi_|node_api_|uv_)/

function cmp(a, b) {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] || 0) - (y[i] || 0)
    if (d) return d
  }
  return 0
}

function objdump(args) {
  const r = spawnSync('objdump', args, { encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.error) throw new Error(`objdump: ${r.error.code === 'ENOENT' ? 'not found (apt-get install binutils)' : r.error.message}`)
  if (r.status !== 0) throw new Error(`objdump ${args.join(' ')} exited ${r.status}: ${r.stderr}`)
  return r.stdout
}

/** Undefined dynamic symbols: { name, version (or ''), weak }. */
function undefinedSymbols(file) {
  const out = []
  for (const line of objdump(['-T', file]).split('\n')) {
    if (!line.includes('*UND*')) continue
    // "0000000000000000  w   DF *UND*	0000000000000000 (GLIBC_2.2.5) name" or "... GCC_3.0    name"
    const m = /^[0-9a-f]+\s+(.{7})\s*\S*\s+\*UND\*\s+[0-9a-f]+\s+(?:\(?([A-Za-z_][\w.]*?)\)?\s+)?(\S+)\s*$/.exec(line)
    if (!m) continue
    const ver = m[2] && /^(GLIBC|GCC|CXXABI|GLIBCXX)_/.test(m[2]) ? m[2] : ''
    out.push({ name: m[3], version: ver, weak: /w/.test(m[1]) })
  }
  return out
}

/** Version names the file requires (its .gnu.version_r), e.g. ['GLIBC_2.2.5', 'GCC_3.0']. */
function versionReferences(file) {
  const text = objdump(['-p', file])
  const i = text.indexOf('Version References:')
  if (i < 0) return []
  return [...text.slice(i).matchAll(/\b((?:GLIBC|GCC|GLIBCXX|CXXABI)_[\d.]+)\b/g)].map((m) => m[1])
}

/** { ok, maxGlibc, problems: string[] } for one file. */
function checkFile(file, max = '2.17') {
  const problems = []
  const syms = undefinedSymbols(file)
  const versions = new Set(versionReferences(file))
  for (const s of syms) if (s.version) versions.add(s.version)
  const glibc = [...versions].filter((v) => v.startsWith('GLIBC_')).map((v) => v.slice(6)).sort(cmp)
  const maxGlibc = glibc.length ? glibc[glibc.length - 1] : null
  const newer = syms.filter((s) => s.version.startsWith('GLIBC_') && cmp(s.version.slice(6), max) > 0)
  for (const s of newer) problems.push(`${s.name}@${s.version}${s.weak ? ' (weak)' : ''} is newer than glibc ${max}`)
  for (const v of glibc.filter((x) => cmp(x, max) > 0)) {
    if (!newer.some((s) => s.version === `GLIBC_${v}`)) problems.push(`requires version GLIBC_${v}, newer than glibc ${max}`)
  }
  for (const s of syms) {
    if (s.version || s.weak || HOST_SYMBOLS.test(s.name)) continue
    problems.push(`${s.name} is a strong undefined symbol with no version: the libc it was linked against lacks it, and loading fails where glibc does not define it`)
  }
  return { ok: problems.length === 0, maxGlibc, undefinedCount: syms.length, problems }
}

/** ELF machine of a file: 'x86_64', 'aarch64' or the number. */
function elfMachine(file) {
  const head = Buffer.alloc(20)
  const fd = fs.openSync(file, 'r')
  try {
    fs.readSync(fd, head, 0, 20, 0)
  } finally {
    fs.closeSync(fd)
  }
  const m = head.readUInt16LE(18)
  return { 0x3e: 'x86_64', 0xb7: 'aarch64' }[m] || String(m)
}

/** The glibc 2.17 toolchain scripts/build-native.cjs unpacks for `triple`, or null when it is not here. */
function toolchain(triple = 'x86_64-unknown-linux-gnu') {
  try {
    const { napiToolchainDir, TARGETS } = require('./build-native.cjs')
    const dir = napiToolchainDir(triple)
    const gcc = path.join(dir, 'bin', `${triple}-gcc`)
    const sysroot = path.join(dir, triple, 'sysroot')
    const ld = path.join(sysroot, TARGETS[triple].napiCross.ld)
    return fs.existsSync(gcc) && fs.existsSync(ld) ? { gcc, sysroot, ld } : null
  } catch {
    return null
  }
}

/**
 * musl check: every strong undefined symbol (but the host's Node-API/libuv) must be defined by the
 * musl libc.so given (Debian 12's musl 1.2.3 by default: the oldest the musl builds promise).
 * musl binds every symbol at load time, so one it lacks makes dlopen fail.
 */
function checkMusl(file, libc) {
  const defined = new Set()
  for (const line of objdump(['-T', libc]).split('\n')) {
    if (line.includes('*UND*')) continue
    const m = /\s(\S+)\s*$/.exec(line)
    if (m && /^[0-9a-f]+\s/.test(line)) defined.add(m[1])
  }
  const problems = []
  const syms = undefinedSymbols(file)
  for (const s of syms) {
    if (s.weak || HOST_SYMBOLS.test(s.name) || defined.has(s.name)) continue
    problems.push(`${s.name} is not defined by ${libc}: loading fails on that musl`)
  }
  return { ok: problems.length === 0, undefinedCount: syms.length, problems }
}

const LOADER_C = `#include <dlfcn.h>
#include <stdio.h>
#include <gnu/libc-version.h>
int main(int argc, char **argv) {
  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) { printf("glibc %s: dlopen failed: %s\\n", gnu_get_libc_version(), dlerror()); return 1; }
  void *s = dlsym(h, "napi_register_module_v1");
  printf("glibc %s: loaded, napi_register_module_v1 %s\\n", gnu_get_libc_version(), s ? "found" : "missing");
  return s ? 0 : 1;
}
`

/**
 * dlopen(file, RTLD_NOW) under glibc 2.17 (x86_64 natively, aarch64 under qemu-aarch64):
 * { ran: false, why } or { ran: true, ok, output }.
 */
function loadWithGlibc217(file) {
  if (process.platform !== 'linux' || process.arch !== 'x64') return { ran: false, why: `no glibc 2.17 sysroot for ${process.platform}-${process.arch}` }
  const machine = elfMachine(file)
  const triple = `${machine}-unknown-linux-gnu`
  if (machine !== 'x86_64' && machine !== 'aarch64') return { ran: false, why: `no glibc 2.17 sysroot for ELF machine ${machine}` }
  const prefix = machine === 'aarch64' ? ['qemu-aarch64'] : []
  if (prefix.length && spawnSync('sh', ['-c', 'command -v qemu-aarch64'], { stdio: 'ignore' }).status !== 0) return { ran: false, why: 'qemu-aarch64 is not installed (apt-get install qemu-user)' }
  const tc = toolchain(triple)
  if (!tc) return { ran: false, why: `the glibc 2.17 toolchain for ${triple} is not unpacked here (npm run build:native / build:targets does it)` }
  const dir = path.join(root, '.tmp', 'glibc-compat', triple)
  fs.mkdirSync(dir, { recursive: true })
  const src = path.join(dir, 'dlopen-check.c')
  const exe = path.join(dir, 'dlopen-check')
  fs.writeFileSync(src, LOADER_C)
  const cc = spawnSync(tc.gcc, ['-O2', '-o', exe, src, '-ldl'], { encoding: 'utf8' })
  if (cc.status !== 0) throw new Error(`compiling the glibc 2.17 loader failed: ${cc.stderr || cc.error}`)
  // x86_64: the sysroot's ld.so run as a program. aarch64: qemu-aarch64 -L <sysroot> (qemu looks
  // up the interpreter and every library path inside the sysroot first; running the 2.17 ld.so
  // itself as qemu's program crashes in qemu 7.2).
  const libs = ['lib64', 'usr/lib64', 'lib', 'usr/lib'].map((d) => (prefix.length ? `/${d}` : path.join(tc.sysroot, d))).join(':')
  const argv = prefix.length ? [...prefix, '-L', tc.sysroot, exe, path.resolve(file)] : [tc.ld, '--library-path', libs, exe, path.resolve(file)]
  const env = { PATH: process.env.PATH, ...(prefix.length ? { LD_LIBRARY_PATH: libs } : {}) }
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env })
  if (r.error) throw r.error
  return { ran: true, ok: r.status === 0, output: `${r.stdout}${r.stderr}`.trim() + (prefix.length ? ' (under qemu-aarch64)' : '') }
}

function main(argv) {
  let max = '2.17'
  let load = false
  let musl = null
  const files = []
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--max') max = argv[++i]
    else if (argv[i] === '--load') load = true
    else if (argv[i] === '--musl') musl = argv[++i]
    else files.push(argv[i])
  }
  if (files.length === 0) {
    process.stderr.write('usage: node scripts/check-glibc.cjs FILE.node... [--max 2.17] [--load] | FILE.node... --musl LIBC.so\n')
    return 2
  }
  let bad = 0
  for (const f of files) {
    if (musl) {
      const r = checkMusl(f, musl)
      if (r.ok) console.log(`ok - ${f}: every symbol it imports (${r.undefinedCount}) is in ${musl} or provided by the host process`)
      else {
        bad++
        console.log(`not ok - ${f}: imports what ${musl} lacks\n  ${r.problems.join('\n  ')}`)
      }
      continue
    }
    const r = checkFile(f, max)
    if (r.ok) console.log(`ok - ${f}: needs glibc ${r.maxGlibc ?? '(none)'} at most (limit ${max}), no unversioned strong imports`)
    else {
      bad++
      console.log(`not ok - ${f}: needs more than glibc ${max}\n  ${r.problems.join('\n  ')}`)
    }
    if (load) {
      const l = loadWithGlibc217(f)
      if (!l.ran) console.log(`ok - ${f}: dlopen under glibc 2.17 # SKIP ${l.why}`)
      else if (l.ok) console.log(`ok - ${f}: dlopen under glibc 2.17's ld.so and libc: ${l.output}`)
      else {
        bad++
        console.log(`not ok - ${f}: dlopen under glibc 2.17 failed: ${l.output}`)
      }
    }
  }
  return bad ? 1 : 0
}

module.exports = { checkFile, checkMusl, loadWithGlibc217, undefinedSymbols }

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2))
  } catch (e) {
    process.stderr.write(`check-glibc: ${e && e.message ? e.message : e}\n`)
    process.exitCode = 1
  }
}
