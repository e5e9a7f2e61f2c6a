// The exclusive replace (writeFile({ atomic, flag: 'wx' }), copyFile with COPYFILE_EXCL or
// { exclusive }, `odirect cp --no-clobber`) in DIR, for each case: DST absent, DST present, DST
// made by someone else while the data is written (between two chunks of writeFile's data; at
// copyFile's first progress; cp: not made). Prints one RESULT line: per form and case, the error
// (code, hint), what DST holds ('new', 'old', 'theirs', 'absent' or other(N)) and the temp files
// left. Run under `seccomp_deny -l` (helpers/seccomp_deny.c) as if DIR were on vfat or exFAT.
// Usage: node exclusive.mjs DIR DIST_INDEX CLI
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

const [dir, dist, cli] = process.argv.slice(2)
try {
  const od = await import(dist)
  const data = Buffer.alloc(200_000)
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 9)) & 0xff
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, data)
  const OLD = 'old contents'
  const THEIRS = 'theirs, made meanwhile'

  const state = (dst) => {
    if (!fs.existsSync(dst)) return 'absent'
    const got = fs.readFileSync(dst)
    return got.equals(data) ? 'new' : got.toString() === OLD ? 'old' : got.toString() === THEIRS ? 'theirs' : `other(${got.length})`
  }
  const theirs = (dst) => fs.writeFileSync(dst, THEIRS, { flag: 'wx' })

  const forms = {
    'writeFile atomic wx': async (dst, meanwhile) => {
      async function* chunks() {
        yield data.subarray(0, 100_000)
        if (meanwhile) theirs(dst)
        yield data.subarray(100_000)
      }
      await od.writeFile(dst, chunks(), { atomic: true, flag: 'wx' })
    },
    'copyFile COPYFILE_EXCL': async (dst, meanwhile) => {
      if (!meanwhile) return void (await od.copyFile(src, dst, fs.constants.COPYFILE_EXCL))
      let made = false
      await od.copyFile(src, dst, {
        exclusive: true,
        chunkSize: 65536,
        onProgress: () => {
          if (!made) theirs(dst)
          made = true
        },
      })
    },
    'odirect cp --no-clobber': async (dst, meanwhile) => {
      if (meanwhile) return 'skipped'
      const r = spawnSync(process.execPath, [cli, 'cp', '--json', '-n', src, dst], { encoding: 'utf8' })
      if (r.status === 0) return undefined
      let e
      try {
        e = JSON.parse(r.stdout).error
      } catch {
        e = { code: `exit ${r.status}`, hint: r.stderr }
      }
      throw e
    },
  }
  const out = []
  for (const [form, run] of Object.entries(forms)) {
    for (const c of ['absent', 'present', 'meanwhile']) {
      const dst = path.join(dir, `dst-${form.replace(/\W+/g, '-')}-${c}`)
      if (c === 'present') fs.writeFileSync(dst, OLD)
      let err
      let skipped = false
      try {
        skipped = (await run(dst, c === 'meanwhile')) === 'skipped'
      } catch (e) {
        err = { code: e.code ?? String(e), hint: e.hint ?? '', message: e.message ?? '' }
      }
      if (skipped) continue
      const temps = fs.readdirSync(dir).filter((n) => n.includes('odirect-tmp'))
      for (const t of temps) fs.rmSync(path.join(dir, t))
      out.push({ form, case: c, err, state: state(dst), temps })
    }
  }
  console.log(`RESULT ${JSON.stringify({ out })}`)
} catch (e) {
  console.log(`RESULT ${JSON.stringify({ crash: String(e && e.stack) })}`)
}
