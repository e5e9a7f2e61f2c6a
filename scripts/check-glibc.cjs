#!/usr/bin/env node
// Checks that a Linux gnu addon loads on glibc 2.17 (the baseline napi-rs packages build for:
// CentOS/RHEL 7, Amazon Linux 2, Debian 8+, Ubuntu 14.04+).
//
//   node scripts/check-glibc.cjs FILE.node... [--max 2.17] [--load]
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
// when that toolchain is not unpacked here).
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

/** The glibc 2.17 toolchain scripts/build-native.cjs unpacks, or null when it is not here. */
function toolchain() {
  try {
    const { napiToolchainDir, TRIPLE } = require('./build-native.cjs')
    const dir = napiToolchainDir()
    const gcc = path.join(dir, 'bin', `${TRIPLE}-gcc`)
    const sysroot = path.join(dir, TRIPLE, 'sysroot')
    const ld = path.join(sysroot, 'lib64', 'ld-linux-x86-64.so.2')
    return fs.existsSync(gcc) && fs.existsSync(ld) ? { gcc, sysroot, ld } : null
  } catch {
    return null
  }
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

/** dlopen(file, RTLD_NOW) under glibc 2.17: { ran: false, why } or { ran: true, ok, output }. */
function loadWithGlibc217(file) {
  if (process.platform !== 'linux' || process.arch !== 'x64') return { ran: false, why: `no glibc 2.17 sysroot for ${process.platform}-${process.arch}` }
  const tc = toolchain()
  if (!tc) return { ran: false, why: 'the glibc 2.17 toolchain is not unpacked here (npm run build:native does it)' }
  const dir = path.join(root, '.tmp', 'glibc-compat')
  fs.mkdirSync(dir, { recursive: true })
  const src = path.join(dir, 'dlopen-check.c')
  const exe = path.join(dir, 'dlopen-check')
  fs.writeFileSync(src, LOADER_C)
  const cc = spawnSync(tc.gcc, ['-O2', '-o', exe, src, '-ldl'], { encoding: 'utf8' })
  if (cc.status !== 0) throw new Error(`compiling the glibc 2.17 loader failed: ${cc.stderr || cc.error}`)
  const libs = ['lib64', 'usr/lib64'].map((d) => path.join(tc.sysroot, d)).join(':')
  const r = spawnSync(tc.ld, ['--library-path', libs, exe, path.resolve(file)], { encoding: 'utf8', env: { PATH: process.env.PATH } })
  if (r.error) throw r.error
  return { ran: true, ok: r.status === 0, output: `${r.stdout}${r.stderr}`.trim() }
}

function main(argv) {
  let max = '2.17'
  let load = false
  const files = []
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--max') max = argv[++i]
    else if (argv[i] === '--load') load = true
    else files.push(argv[i])
  }
  if (files.length === 0) {
    process.stderr.write('usage: node scripts/check-glibc.cjs FILE.node... [--max 2.17] [--load]\n')
    return 2
  }
  let bad = 0
  for (const f of files) {
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

module.exports = { checkFile, loadWithGlibc217, undefinedSymbols }

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2))
  } catch (e) {
    process.stderr.write(`check-glibc: ${e && e.message ? e.message : e}\n`)
    process.exitCode = 1
  }
}
