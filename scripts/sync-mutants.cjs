#!/usr/bin/env node
// A mutation sweep of the durability layer: every call site that makes something durable (a
// datasync/fsync of a file, an fsync of a directory, an RWF_DSYNC/RWF_SYNC flag, O_DSYNC, the
// fdatasync linked after writes, the order of truncate, datasync and rename), removed one at a
// time, must make a power-cut test fail. For each site it patches dist/ in a scratch copy of the
// repository (never the worktree), runs the crash cases that cover the site, and prints caught
// (which cases failed) or SURVIVED. Run from the repository root after `npm run build:ts`:
//
//   node scripts/sync-mutants.cjs              # every site
//   node scripts/sync-mutants.cjs fh-sync ...  # only these sites
//   node scripts/sync-mutants.cjs --list       # the sites and where they are in src/
//
// Needs what the crash bed needs (root, FUSE, the crashfs binary: target/release/crashfs, built
// with `cargo build -p faultfs --release`). Exit status 1 if a site survived or a baseline failed.
// Native sites (the fsync in crates/napi/src/paths.rs, the fdatasync of the three backends, the
// O_DSYNC open bit, IOSQE_IO_LINK in crates/core/src/io/ring.rs) are reached through the JS sites
// below (the JS mutant removes the request before it gets there), except IO_LINK, whose removal is
// caught by the trace test "...go in one submission, linked" (durability.spec.ts), not patched here.
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ROOT = path.resolve(__dirname, '..')
const SPECS = ['__test__/durability.spec.ts', '__test__/durability-s16.spec.ts', '__test__/streams-s19.spec.ts', '__test__/adversary-s20.spec.ts', '__test__/adversary-s21.spec.ts']

/**
 * A site: `file` (under dist/src), `find` (must occur exactly once), `replace`; `src`: where it is in
 * the TypeScript; `cases`: ava --match patterns of the crash cases that must catch its removal.
 */
const SITES = [
  {
    id: 'stream-datasync',
    src: 'src/streams/core.ts:1295 (BlockWriter.finish: fh.datasync; writeFile flush/atomic temp, write streams)',
    file: 'streams/core.js',
    find: 'await this.track(fh.datasync({ signal: this.opSignal }));',
    replace: '/* mutant */;',
    cases: ['writeFile atomic*', 'writeFile(path, data, { flush: true })*', 'write stream to a new file*'],
  },
  {
    id: 'stream-truncate-after-datasync',
    src: 'src/streams/core.ts:1289-1295 (order: truncate to the exact length, then datasync)',
    file: 'streams/core.js',
    find: `            await this.track(fh.truncate(finalSize, { signal: this.opSignal }));
            this.#check();
        }
        if (this.#cfg.datasync) {
            await this.track(fh.datasync({ signal: this.opSignal }));`,
    replace: `            this.__mutantTruncate = finalSize;
        }
        if (this.#cfg.datasync) {
            await this.track(fh.datasync({ signal: this.opSignal }));
            if (this.__mutantTruncate !== undefined) await this.track(fh.truncate(this.__mutantTruncate, { signal: this.opSignal }));`,
    cases: ['writeFile atomic*', 'writeFile(path, data, { flush: true })*', 'write stream to a new file*'],
  },
  {
    id: 'stream-dirsync',
    src: 'src/streams/core.ts:1600 (BlockWriter.finish: fsync of the directory holding the name of a file it created, the file a dangling link names)',
    file: 'streams/core.js',
    find: 'await this.track((0, dirsync_1.syncParentDir)(at));',
    replace: '/* mutant */;',
    cases: ['writeFile(path, data, { flush: true })*', 'write stream to a new file*', 'createWriteStream(link)*', 'createWriteStream of a file moved*', 'writableWebStream of a file moved*'],
  },
  {
    id: 'stream-dirsync-opened-path',
    src: "src/streams/core.ts entryNow (the directory synced is the one holding the file's name at the end, not the opened path's)",
    file: 'streams/core.js',
    find: "const DIR_NOW = process.env.ODIRECT_STREAM_DIR_NOW !== '0';",
    replace: 'const DIR_NOW = false;',
    cases: ['createWriteStream of a file moved*', 'writableWebStream of a file moved*'],
  },
  {
    id: 'stream-dirsync-hardlinked',
    src: "src/streams/core.ts entryNow (a file unlinked under its opened name but still hard-linked: the opened path's directory synced, not none)",
    file: 'streams/core.js',
    find: 'return own.nlink > 0 ? fallback() : undefined;',
    replace: 'return undefined;',
    cases: ['createWriteStream of a file rotated mid-stream by a hard link*'],
  },
  {
    id: 'writefile-link-dirsync',
    src: 'src/files.ts:352 (writeFile flush creating through a dangling link: fsync of the directory of the file the link names)',
    file: 'files.js',
    find: `            if (created !== dst)
                await (0, dirsync_1.syncParentDir)(created);`,
    replace: `            if (created !== dst)
                await (0, dirsync_1.syncParentDir)(dst);`,
    cases: ['writeFile(link, data, { flush: true })*'],
  },
  {
    id: 'commit-dirsync',
    src: 'src/fileops.ts:223 (commitTemp: fsync of the directory after the rename/link into place)',
    file: 'fileops.js',
    find: 'await (0, dirsync_1.syncParentDir)(dst);',
    replace: '/* mutant */;',
    cases: ['writeFile atomic*', 'copyFile, dst*', 'odirect cp, dst*'],
  },
  {
    id: 'commit-dirsync-before-rename',
    src: 'src/fileops.ts commitTemp (order: rename/link into place, then the directory fsync)',
    file: 'fileops.js',
    find: `    if (exclusive) {
        check(await native_1.native.linkPath(tmp, dst), 'link', dst);
        await removeTemp(tmp);
    }
    else {
        check(await native_1.native.renamePath(tmp, dst), 'rename', dst);
        tempDone(tmp);
    }
    try {
        await (0, dirsync_1.syncParentDir)(dst);
    }`,
    replace: `    await (0, dirsync_1.syncParentDir)(dst);
    if (exclusive) {
        check(await native_1.native.linkPath(tmp, dst), 'link', dst);
        await removeTemp(tmp);
    }
    else {
        check(await native_1.native.renamePath(tmp, dst), 'rename', dst);
        tempDone(tmp);
    }
    try {
    }`,
    cases: ['writeFile atomic*', 'copyFile*', 'odirect cp*'],
  },
  {
    id: 'commit-dirsync-exclusive',
    src: "src/fileops.ts:220-223 (commitTemp, exclusive: link + unlink, then the directory fsync; writeFile atomic 'wx', copyFile exclusive)",
    file: 'fileops.js',
    find: 'await (0, dirsync_1.syncParentDir)(dst);',
    replace: 'if (!exclusive) await (0, dirsync_1.syncParentDir)(dst);',
    cases: ['writeFile atomic*', 'copyFile*', 'odirect cp*'],
  },
  {
    id: 'syncdir-native',
    src: 'src/dirsync.ts:15 (native.syncDir: the fsync in crates/napi/src/paths.rs:72)',
    file: 'dirsync.js',
    find: 'const errno = await native_1.native.syncDir(dir);',
    replace: 'const errno = 0;',
    cases: ['writeFile atomic*', 'writeFile(path, data, { flush: true })*', 'write stream to a new file*', 'copyFile*', 'odirect cp, dst*'],
  },
  {
    id: 'copy-datasync',
    src: 'src/files.ts:724 (copyFile: datasync of the temp copy before the rename)',
    file: 'files.js',
    find: 'await o2.datasync(signal ? { signal } : undefined);',
    replace: '/* mutant */;',
    cases: ['copyFile*', 'odirect cp, dst*'],
  },
  {
    id: 'copy-truncate-after-datasync',
    src: 'src/files.ts:723-724 (copyFile order: truncate to the exact length, then datasync)',
    file: 'files.js',
    find: `            await o2.truncate(end, signal ? { signal } : undefined);
        await o2.datasync(signal ? { signal } : undefined);`,
    replace: `            ;
        await o2.datasync(signal ? { signal } : undefined);
        if (!inPlace)
            await o2.truncate(end, signal ? { signal } : undefined);`,
    cases: ['copyFile*', 'odirect cp, dst*'],
  },
  {
    id: 'fh-datasync',
    src: 'src/handle.ts:645 (fh.datasync: OP_FDATASYNC on io_uring/aio/threadpool)',
    file: 'handle.js',
    find: "() => this.#simple('fdatasync', engine_1.OP_FDATASYNC, 0, 0, 0, {}, options));",
    replace: '() => Promise.resolve());',
    cases: ['writeMany + datasync*', 'WAL with group commit (write + datasync*', 'writeFile atomic*', 'copyFile*'],
  },
  {
    id: 'fh-sync',
    src: 'src/handle.ts:640 (fh.sync: OP_FSYNC)',
    file: 'handle.js',
    find: "() => this.#simple('fsync', engine_1.OP_FSYNC, 0, 0, 0, {}, options));",
    replace: '() => Promise.resolve());',
    cases: ['fh.sync()*'],
  },
  {
    id: 'sync-after-writes',
    src: 'src/handle.ts:635 (#simple: fsync/fdatasync start only after every write issued before them, io.ts startAfterWrites)',
    file: 'handle.js',
    find: 'await this.#io.startAfterWrites(this.#simpleOp(syscall, op, a, b, mode, { ...ctx, signal, timeout }));',
    replace: 'await this.#io.start(this.#simpleOp(syscall, op, a, b, mode, { ...ctx, signal, timeout }));',
    cases: ['*with writes in flight*'],
  },
  {
    id: 'linked-datasync',
    src: 'src/handle.ts:616 (writeMany/writev { datasync } on io_uring: the fdatasync linked after the writes)',
    file: 'handle.js',
    find: "const sync = io.start(this.#simpleOp('fdatasync', engine_1.OP_FDATASYNC, 0, 0, 0, { chainEnd: true }));",
    replace: 'const sync = Promise.resolve();',
    cases: ['writeMany({ datasync: true }) (io_uring)*', 'writev(buffers, position, { datasync: true }) on io_uring*', 'WAL with group commit (writeMany { datasync }, io_uring)*'],
  },
  {
    id: 'then-datasync',
    src: 'src/handle.ts:634 (writeMany/writev { datasync } unlinked: the fdatasync after the writes; aio, threadpool, windows, > 16 ops)',
    file: 'handle.js',
    find: '            await fdatasync();\n            return r;',
    replace: '            /* mutant */;\n            return r;',
    cases: ['writeMany({ datasync: true })*', 'writev(buffers, position, { datasync: true })*', 'WAL with group commit (writeMany { datasync }*'],
  },
  {
    id: 'then-datasync-io_uring',
    src: 'src/handle.ts:634 on io_uring only (writeMany { datasync } past 16 ops, with a window, or typed arrays: not linked)',
    file: 'handle.js',
    find: '            await fdatasync();\n            return r;',
    replace: "            if (this.backend !== 'io_uring') await fdatasync();\n            return r;",
    cases: ['writeMany({ datasync: true }) unlinked*'],
  },
  {
    id: 'linked-rerun-datasync',
    src: 'src/handle.ts #thenDatasync, linked (io_uring): the fdatasync after the re-run of writes a short write cancelled (many.ts rerunCancelled)',
    file: 'handle.js',
    find: '                finally {\n                    writesDone();\n                }\n                await fdatasync();\n                return r;',
    replace: '                finally {\n                    writesDone();\n                }\n                /* mutant */;\n                return r;',
    cases: ['writeMany(ops, { datasync: true }) on io_uring under RLIMIT_FSIZE*'],
  },
  {
    id: 'linked-short-datasync',
    src: 'src/handle.ts #thenDatasync, linked (io_uring): the fdatasync made again when a short last write cancelled the chain\'s',
    file: 'handle.js',
    find: '                        throw e;\n                    await fdatasync();',
    replace: '                        throw e;\n                    /* mutant */;',
    cases: ['writeMany / writev({ datasync: true }) on io_uring with a write straddling*'],
  },
  {
    id: 'rwf-dsync',
    src: 'src/args.ts:492 (RWF_DSYNC of a write { dsync: true })',
    file: 'args.js',
    find: "rwFlag(o.dsync, 'dsync', exports.RWF_DSYNC, syscall)",
    replace: "rwFlag(o.dsync, 'dsync', 0, syscall)",
    cases: ['*({ dsync: true }) on*', 'WAL with group commit (write { dsync }*'],
  },
  {
    id: 'rwf-sync',
    src: 'src/args.ts:492 (RWF_SYNC of a write { sync: true })',
    file: 'args.js',
    find: "rwFlag(o.sync, 'sync', exports.RWF_SYNC, syscall)",
    replace: "rwFlag(o.sync, 'sync', 0, syscall)",
    cases: ['*({ sync: true }) on*'],
  },
  // Where the RWF_DSYNC / RWF_SYNC bits travel to the engine, by path (mutant: both bits cleared there).
  {
    id: 'flags-single-write',
    src: 'src/io.ts:222 (a lone write: engine.rw with its rw flags)',
    file: 'io.js',
    find: 'sink, this.rwFlags(d.rwFlags), alone);',
    replace: 'sink, this.rwFlags(d.rwFlags & ~6), alone);',
    cases: ['write({ dsync: true }) on*', 'write({ sync: true }) on*', 'WAL with group commit (write { dsync }*'],
  },
  {
    id: 'flags-staged-ops',
    src: 'src/io.ts:241 (HandleIo.flagged: writev, array-form writeMany, a window\'s later ops)',
    file: 'io.js',
    find: 'const f = this.rwFlags(rwFlags);',
    replace: 'const f = this.rwFlags(rwFlags & ~6);',
    cases: ['writev({ dsync: true }) on*', 'writev({ sync: true }) on*', 'writeMany({ dsync: true }) on*', 'writeMany({ sync: true }) on*'],
  },
  {
    id: 'flags-many-native',
    src: 'src/many.ts:210 (array-form writeMany in the engine, ODIRECT_MANY_NATIVE=1: batchViews flags)',
    file: 'many.js',
    find: 'd.memAlign, io.rwFlags(d.rwFlags), batch);',
    replace: 'd.memAlign, io.rwFlags(d.rwFlags & ~6), batch);',
    cases: ['writeMany({ dsync: true }) with ODIRECT_MANY_NATIVE=1*'],
  },
  {
    id: 'flags-typed-batch',
    src: 'src/many.ts:378 (typed-array writeMany: the native batch\'s flags)',
    file: 'many.js',
    find: 'const flags = io.file.uncached ? d.rwFlags | args_1.RWF_DONTCACHE : d.rwFlags;',
    replace: 'const flags = (io.file.uncached ? d.rwFlags | args_1.RWF_DONTCACHE : d.rwFlags) & ~6;',
    cases: ['typed-array writeMany({ dsync: true })*', 'typed-array writeMany({ sync: true })*'],
  },
  {
    id: 'open-dsync',
    src: "src/open.ts:112 (open(path, flags, { dsync: true }): O_DSYNC, crates/core/src/file.rs:220)",
    file: 'open.js',
    find: 'native_1.native.openFile(p, f, opts.direct, opts.dsync,',
    replace: 'native_1.native.openFile(p, f, opts.direct, false,',
    cases: ["open(path, 'r+', { dsync: true })*"],
  },
  {
    id: 'open-sync-flags',
    src: "src/open.ts:112 (open(path, 'rs+') and numeric O_SYNC / O_DSYNC flags, parsed in crates/core/src/file.rs:67,111)",
    file: 'open.js',
    find: 'native_1.native.openFile(p, f, opts.direct,',
    // Numeric flags reach the native open as a decimal string (args.ts checkFlags).
    replace: "native_1.native.openFile(p, f === 'rs+' || f === 'sr+' ? 'r+' : /^\\d+$/.test(f) ? String(Number(f) & ~0o4010000) : f, opts.direct,",
    cases: ["open(path, 'rs+')*", 'open(path, O_RDWR | O_DSYNC)*'],
  },
]

function run(cmd, args, opts) {
  return spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts })
}

function scratchCopy() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-tests-sync-mutants-'))
  for (const name of fs.readdirSync(ROOT)) {
    if (['.git', 'target', 'node_modules', 'crates', 'bench', 'npm'].includes(name)) continue
    fs.cpSync(path.join(ROOT, name), path.join(dir, name), { recursive: true, dereference: false, verbatimSymlinks: true })
  }
  fs.symlinkSync(fs.realpathSync(path.join(ROOT, 'node_modules')), path.join(dir, 'node_modules'))
  return dir
}

/** Runs the crash cases matching `cases`; the titles that failed (or a note if none matched). */
function runCases(dir, cases) {
  const specs = SPECS.filter((s) => fs.existsSync(path.join(dir, s)))
  const args = [path.join(ROOT, 'node_modules', 'ava', 'entrypoints', 'cli.mjs'), ...specs, '--concurrency', '2', '--timeout', '10m', '--tap']
  for (const c of cases) args.push('--match', c)
  const env = { ...process.env, FAULTFS_BIN: process.env.FAULTFS_BIN ?? path.join(ROOT, 'target', 'release', 'faultfs'), ODIRECT_ROOT: dir }
  delete env.CRASH_CUT
  delete env.CRASH_SEED
  const r = run(process.execPath, args, { cwd: dir, env })
  const out = `${r.stdout}\n${r.stderr}`
  // TAP: "ok N - title" / "not ok N - title"; a case's short name is its title up to the first ':'.
  const short = (m) => {
    const title = m[1].replace(/ # .*$/, '')
    let depth = 0
    for (let i = 0; i < title.length; i++) {
      const c = title[i]
      if (c === '(' || c === '{') depth++
      else if (c === ')' || c === '}') depth--
      else if (c === ':' && depth === 0 && title[i + 1] === ' ') return title.slice(0, i)
    }
    return title
  }
  const failed = [...out.matchAll(/^not ok \d+ - (.+)$/gm)].map(short)
  const passed = [...out.matchAll(/^ok \d+ - (.+)$/gm)].map(short)
  const ran = failed.length + passed.length > 0
  return { status: r.status, failed: [...new Set(failed)], passed, ran, out }
}

function main() {
  const argv = process.argv.slice(2)
  if (argv.includes('--list')) {
    for (const s of SITES) console.log(`${s.id.padEnd(30)} ${s.src}\n${''.padEnd(30)} cases: ${s.cases.join(' | ')}`)
    return 0
  }
  const pick = argv.filter((a) => !a.startsWith('-'))
  const unknown = pick.filter((id) => !SITES.some((s) => s.id === id))
  if (unknown.length) throw new Error(`unknown site(s): ${unknown.join(', ')} (see --list)`)
  const sites = pick.length ? SITES.filter((s) => pick.includes(s.id)) : SITES
  const dir = scratchCopy()
  let bad = 0
  const summary = []
  try {
    // Baseline: the unpatched library must pass every case named.
    const all = [...new Set(sites.flatMap((s) => s.cases))]
    const base = runCases(dir, all)
    if (base.status !== 0 || !base.ran) {
      console.log(`baseline FAILED (the unpatched library must pass these cases):\n${base.out.slice(-4000)}`)
      return 1
    }
    console.log(`baseline: ${base.passed.length} cases pass unpatched`)
    for (const s of sites) {
      const file = path.join(dir, 'dist', 'src', s.file)
      const orig = fs.readFileSync(file, 'utf8')
      const n = orig.split(s.find).length - 1
      if (n !== 1) {
        console.log(`${s.id}: the site's text occurs ${n} times in dist/src/${s.file} (the source moved: update SITES)`)
        summary.push(`${s.id.padEnd(30)} SITE NOT FOUND`)
        bad++
        continue
      }
      fs.writeFileSync(file, orig.replace(s.find, () => s.replace))
      let r
      try {
        r = runCases(dir, s.cases)
      } finally {
        fs.writeFileSync(file, orig)
      }
      if (!r.ran) {
        console.log(`${s.id}: no case ran (patterns: ${s.cases.join(' | ')})`)
        summary.push(`${s.id.padEnd(30)} NO CASE RAN`)
        bad++
      } else if (r.status !== 0 && r.failed.length > 0) {
        console.log(`${s.id}: caught by ${r.failed.length}/${r.failed.length + r.passed.length}: ${r.failed.join(' ; ')}`)
        summary.push(`${s.id.padEnd(30)} caught ${r.failed.length}/${r.failed.length + r.passed.length}`)
      } else if (r.status !== 0) {
        console.log(`${s.id}: caught (ava exited ${r.status}):\n${r.out.slice(-1500)}`)
        summary.push(`${s.id.padEnd(30)} caught (ava exited ${r.status})`)
      } else {
        console.log(`${s.id}: SURVIVED (${r.passed.length} cases passed with the sync removed)`)
        summary.push(`${s.id.padEnd(30)} SURVIVED`)
        bad++
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  console.log(`\nsummary (${sites.length} sites, ${bad} not caught):\n${summary.join('\n')}`)
  return bad ? 1 : 0
}

process.exitCode = main()
