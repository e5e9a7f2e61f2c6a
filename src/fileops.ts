// What the whole-file helpers (readFile, writeFile, copyFile) share besides the engine: the
// AbortSignal as a promise that every wait races against, the temp-file path operations (done
// natively, as the temp file was created natively), and sequential buffered I/O through node:fs
// for the kinds of file that have neither positions nor direct I/O (FIFOs, character devices,
// sockets), which are read and written in place as GNU cp and fs do.
import { randomBytes } from 'node:crypto'
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync, statSync, unlinkSync } from 'node:fs'
import * as fsp from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'

import { callerError, unlisten } from './args'
import { syncParentDir } from './dirsync'
import { abortError, DirectIoError, errno as E, kernelError, misuse } from './errors'
import { native } from './native'

/** A wait that rejects with an AbortError as soon as the signal aborts (or at once, if it did). */
export class AbortRace {
  readonly #signal: AbortSignal | undefined
  readonly #ctx: { syscall: string; path: string }
  readonly #aborted: Promise<never> | undefined
  #unwatch: () => void = () => {}
  #error: DirectIoError | undefined

  constructor(signal: AbortSignal | undefined, path: string, syscall: string) {
    this.#signal = signal
    this.#ctx = { syscall, path }
    if (signal === undefined) return
    this.#aborted = new Promise<never>((_, reject) => {
      const on = (): void => {
        this.#error ??= abortError(signal, this.#ctx)
        reject(this.#error)
      }
      if (signal.aborted) on()
      else {
        signal.addEventListener('abort', on, { once: true })
        this.#unwatch = () => unlisten(signal, on)
      }
    })
    this.#aborted.catch(() => {})
  }

  /** The AbortError once the signal aborted, else undefined. */
  get error(): DirectIoError | undefined {
    if (this.#error === undefined && this.#signal?.aborted === true) this.#error = abortError(this.#signal, this.#ctx)
    return this.#error
  }

  /** Throws the AbortError if the signal aborted. */
  check(): void {
    const e = this.error
    if (e !== undefined) throw e
  }

  /** `p`, or the AbortError if the signal aborts first (`p` then settles unobserved). */
  race<T>(p: Promise<T>): Promise<T> {
    if (this.#aborted === undefined) return p
    p.catch(() => {})
    return Promise.race([p, this.#aborted])
  }

  /** The error to report for `e`: the AbortError when the signal aborted meanwhile (the op failed because of it). */
  settle(e: unknown): unknown {
    return this.error ?? e
  }

  dispose(): void {
    this.#unwatch()
  }
}

/** A promise of node:fs, whose errors (ENOENT..., Deno's permission errors) reach the caller unchanged. */
export function runtime<T>(p: Promise<T>): Promise<T> {
  return p.catch((e: unknown) => {
    throw callerError(e)
  })
}

/** stat(2) of a path, undefined when it does not exist; other errors (EACCES, Deno's permissions) as they are. */
export function statIfExists(p: string): Promise<import('node:fs').Stats | undefined> {
  return runtime(
    fsp.stat(p).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined
      throw e
    }),
  )
}

/**
 * The file a path names once its symbolic links are followed (the path itself when it is not a
 * link, or when what a link names does not exist yet: then the file the link would create). A
 * temp file and rename that replace a destination go there, so a link stays a link and the file
 * it names gets the data, as node:fs's copyFile and writeFile, GNU cp and write-file-atomic do
 * (renaming over the link would replace the link itself). Each link's text is taken relative to
 * its own directory, unnormalised, as the kernel takes it. After 40 links (a loop) the path is
 * left to the open, which reports ELOOP.
 *
 * `named`: the device and inode of the file `p` names (its stat, links followed), for a caller
 * that replaces it: the path found must name that file. A /proc "magic link" (/proc/self/fd/N,
 * /dev/fd/N, /dev/stdout) is followed by the kernel to the open file itself, and its text is no
 * path to it when the file was deleted, is an O_TMPFILE or a memfd ('/tmp/x (deleted)',
 * '/memfd:x (deleted)'), or is in another mount namespace: the temp file and rename made a new
 * file of that name next to it (in / for a memfd, as root) and resolved, where fs writes the open
 * file through the link (adversary-s19). Refused, ERR_ODIRECT_UNSUPPORTED, before any data.
 */
export async function resolveLinks(p: string, named?: { dev: number; ino: number }): Promise<string> {
  let cur = p
  for (let i = 0; i < 40; i++) {
    const st = await runtime(
      fsp.lstat(cur).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined
        throw e
      }),
    )
    if (st === undefined || !st.isSymbolicLink()) {
      if (named !== undefined && cur !== p && (st === undefined || st.dev !== named.dev || st.ino !== named.ino)) throw noPathTo(p, cur)
      return cur
    }
    await refuseProtectedLink(cur, st.uid, p)
    const to = await runtime(fsp.readlink(cur))
    if (to.startsWith('/')) cur = to
    else {
      const slash = cur.lastIndexOf('/')
      cur = slash < 0 ? to : `${cur.slice(0, slash + 1)}${to}`
    }
  }
  return cur
}

/** `p`'s links lead to `text`, which is not the file `p` names (see resolveLinks' `named`). */
function noPathTo(p: string, text: string): DirectIoError {
  return misuse(
    'ERR_ODIRECT_UNSUPPORTED',
    `${p} names an open file through a link whose text (${text}) is no path to it (a /proc/PID/fd/N or /dev/fd/N link to a deleted file, an O_TMPFILE or memfd, or a file in another mount namespace): it cannot be replaced through a temp file and a rename; nothing was written`,
    'write it in place: writeFile without { atomic }, or fs.copyFile',
    { path: p },
  )
}

/** A /proc/sys/fs switch's value (protected_symlinks, protected_regular), 0 where it cannot be read. */
function sysctlFs(name: string): number {
  try {
    return Number.parseInt(readFileSync(`/proc/sys/fs/${name}`, 'latin1'), 10) || 0
  } catch {
    return 0
  }
}

/** This process's effective uid (the fsuid the kernel checks), undefined where the runtime has none. */
const euid = (): number | undefined => (typeof process !== 'undefined' && typeof process.geteuid === 'function' ? process.geteuid() : undefined)

/**
 * The kernel's fs.protected_symlinks (on by default in most distributions): a symbolic link in a
 * sticky, world-writable directory (/tmp) is followed only by its owner, or when its owner owns
 * the directory; the kernel refuses every other follow EACCES (the classic /tmp link attack: a
 * link another user put at a name a privileged process writes). fs.copyFile and fs.writeFile
 * follow DST's links in the kernel, so it protects them; resolveLinks reads the links itself (a
 * temp file is made next to the file a link names), and read one the kernel would not have
 * followed, between odirect's stat of DST (which the kernel refused or found nothing at) and
 * its lstat (adversary-s18): refused as the kernel refuses it. `uid`: the link's owner.
 */
async function refuseProtectedLink(link: string, uid: number, asked: string): Promise<void> {
  const me = euid()
  if (me === undefined || uid === me || sysctlFs('protected_symlinks') === 0) return
  const slash = link.lastIndexOf('/')
  const dir = slash < 0 ? '.' : slash === 0 ? '/' : link.slice(0, slash)
  const ds = await runtime(fsp.stat(dir))
  if ((ds.mode & 0o1002) !== 0o1002 || ds.uid === uid) return
  const e = kernelError(E.EACCES, { syscall: 'open', path: asked })
  throw withHint(e, `${link} is a symbolic link owned by another user (uid ${uid}) in the sticky, world-writable directory ${dir}: the kernel follows it for no one else (fs.protected_symlinks), as fs.copyFile's and fs.writeFile's open would find; nothing was written`)
}

/**
 * The kernel's fs.protected_regular (1 or 2 in most distributions): a regular file in a sticky
 * directory that is world-writable (2: or group-writable) is opened with O_CREAT only by its
 * owner or the directory's owner (root included); fs.copyFile and fs.writeFile open DST so and
 * get EACCES. A rename over it is allowed to root and the directory's owner, so odirect's temp
 * file and rename replaced another user's file in /tmp that fs may not write (and gave the new
 * file, the caller's data, that user as its owner: keepAttrs): refused here, before any data,
 * as the open refuses it (adversary-s18). `st`: the file's stat (links followed). A FIFO: the
 * same with fs.protected_fifos.
 */
export async function refuseProtectedFile(target: string, st: { uid: number; isFile(): boolean; isFIFO(): boolean }): Promise<void> {
  const me = euid()
  if (me === undefined || st.uid === me || !(st.isFile() || st.isFIFO())) return
  // A FIFO: fs.protected_fifos, the same rule (odirect opens an existing FIFO without O_CREAT,
  // which the kernel does not check: another user's FIFO in /tmp got root's data, where
  // fs.writeFile's and fs.copyFile's open is refused).
  const sysctl = st.isFile() ? 'protected_regular' : 'protected_fifos'
  const level = sysctlFs(sysctl)
  if (level === 0) return
  const dir = dirname(target)
  const ds = await runtime(fsp.stat(dir))
  if ((ds.mode & 0o1000) === 0 || ds.uid === st.uid) return
  if ((ds.mode & 0o002) === 0 && (level < 2 || (ds.mode & 0o020) === 0)) return
  const e = kernelError(E.EACCES, { syscall: 'open', path: target })
  throw withHint(e, `${target} belongs to another user (uid ${st.uid}) in the sticky, ${(ds.mode & 0o002) !== 0 ? 'world' : 'group'}-writable directory ${dir}: the kernel lets only its owner or the directory's open it to write there (fs.${sysctl} = ${level}), as fs.copyFile's and fs.writeFile's open find; nothing was written and ${target} is untouched`)
}

/** The file a temp file replaces: its path (links resolved) and owner. */
export interface Replaced {
  path: string
  uid: number
  gid: number
}

/**
 * Gives the temp file that will be renamed over `replaced` what fs.copyFile keeps of a file it
 * overwrites in place, before any data is written (so the data's sync, the rename and the
 * directory fsync make it durable with the data): natively, on the temp file's descriptor
 * (crates/napi/src/xattr.rs). In order: an immutable or append-only `replaced` is refused (EPERM,
 * as fs.copyFile's open; nothing written yet), one that is a mount point (EBUSY, syscall 'statx':
 * a file bind-mounted over it, which no rename can replace), and one this process may not write (EACCES, as
 * fs.copyFile's open: the rename alone needs only the directory's write permission); run as root, its owner and group (chown, best
 * effort: a filesystem without owners leaves them), else its group where this process is a member
 * of it (the owner: this process's, as a new file's); with `xattrs`, its extended attributes, POSIX
 * ACLs included (not security.capability: any write drops it, fs.copyFile's too), and an ACL the
 * temp file inherited from its directory that `replaced` had not is removed; last `mode` (exact,
 * no umask: fs.copyFile's fchmod), which also sets a kept ACL's mask as fs's fchmod does. An
 * attribute that cannot be set (EPERM for a security.* label or trusted.* one without the
 * privilege, ENOSPC, E2BIG...) fails the call with a typed error naming it: the caller removes the
 * temp file, `replaced` is untouched, and `{ xattrs: false }` replaces it without them.
 */
export async function keepAttrs(tmpFd: number, replaced: Replaced | undefined, mode: number | undefined, xattrs: boolean): Promise<void> {
  if (replaced === undefined && mode === undefined) return
  const root = typeof process !== 'undefined' && typeof process.getuid === 'function' && process.getuid() === 0
  // Root: the owner and the group. Another user: the group alone, where it may give it (a member
  // of it; the native side ignores EPERM), as an in-place write keeps it: a group-writable file of
  // a shared directory replaced by a member kept the member's own group, and the rest of the group
  // lost it (adversary-s19). The native side changes only what differs from the temp file's.
  const uid = replaced !== undefined && root ? replaced.uid : -1
  const gid = replaced !== undefined ? replaced.gid : -1
  const r = await native.replaceAttrs(replaced?.path ?? '', tmpFd, uid, gid, mode ?? -1, xattrs)
  if (r.errno === 0) return
  const dst = replaced?.path ?? ''
  const e = kernelError(r.errno, { syscall: r.syscall === 'ioctl' || r.syscall === 'access' ? 'open' : r.syscall === 'rename' ? 'statx' : r.syscall, path: dst })
  let hint: string
  if (r.syscall === 'rename') {
    // statx's STATX_ATTR_MOUNT_ROOT (Linux 5.8): a file bind-mounted over `dst`. The rename at
    // the end would fail EBUSY, after all of the data was written to the temp file (a container's
    // /etc/hosts: adversary-s19); refused now instead. Not written in place: the caller asked for
    // a replace that is whole or nothing, which a file written in place is not.
    hint = `${dst} is a mount point (a file bind-mounted over it, as a container's /etc/hosts or /etc/resolv.conf, or a volume mounted as one file): a rename cannot replace it (EBUSY), and the replace is refused before any data is written: ${dst} is untouched, no temp file is left; write it in place: writeFile without { atomic }, or fs.copyFile / cp (not atomic: a crash can leave it half written)`
  } else if (r.syscall === 'access') {
    hint = `this process may not write ${dst} (its mode or owner): fs.copyFile and fs.writeFile fail EACCES at its open too, and a rename over it would replace a file its permissions protect; nothing was written and ${dst} is untouched; make it writable for this user (chmod u+w, or chown), or remove it first`
  } else if (r.syscall === 'ioctl') {
    hint = `${dst} is ${r.name} (chattr +${r.name === 'immutable' ? 'i' : 'a'}): it cannot be replaced or rewritten (fs.copyFile's open fails EPERM too); nothing was written and ${dst} is untouched; remove the attribute first (chattr -${r.name === 'immutable' ? 'i' : 'a'}, as root)`
  } else if (r.syscall === 'fchmod') {
    hint = `the mode of ${dst}'s replacement cannot be set; nothing was replaced: ${dst} is untouched`
  } else {
    const what = r.name === '' ? 'extended attributes' : `extended attribute ${r.name}`
    const why = r.errno === E.EPERM || r.errno === E.EACCES ? (r.syscall === 'getxattr' ? ': this process may not read it' : ': setting it needs a privilege this process lacks (security.* and trusted.* attributes need CAP_SYS_ADMIN or an LSM permission)') : ''
    hint = `the ${what} of ${dst} cannot be ${r.syscall === 'getxattr' || r.syscall.includes('list') ? 'read' : 'given to its replacement'}${why}; fs.copyFile, writing in place, would keep it. Nothing was replaced: ${dst} is untouched. Pass { xattrs: false } to replace it without its extended attributes and ACLs`
  }
  throw withHint(e, hint)
}

interface KindOf {
  isFIFO(): boolean
  isCharacterDevice(): boolean
  isSocket(): boolean
}

/** FIFOs, character devices and sockets: no positions, no direct I/O; read and written in place, in sequence. */
export const isSequential = (st: KindOf): boolean => st.isFIFO() || st.isCharacterDevice() || st.isSocket()

/**
 * The kernel's pseudo filesystems, by statfs magic: their regular files are attributes and
 * controls served by kernel code (sysfs says 4096 bytes for a few, procfs 0), each write(2) one
 * command, with no O_DIRECT and no truncation: procfs, sysfs, debugfs, tracefs, cgroup v1 and v2,
 * configfs, securityfs, efivarfs, pstore, selinuxfs, smackfs, binfmt_misc, fusectl.
 */
const PSEUDO_FS = new Map<number, string>([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x62656570, 'configfs'],
  [0x73636673, 'securityfs'],
  [0xde5e81e4, 'efivarfs'],
  [0x6165676c, 'pstore'],
  [0xf97cff8c, 'selinuxfs'],
  [0x43415d53, 'smackfs'],
  [0x42494e4d, 'binfmt_misc'],
  [0x65735543, 'fusectl'],
])

/**
 * The name of the kernel pseudo filesystem `p` is on (see PSEUDO_FS), or undefined (another
 * filesystem, or a runtime without statfs: then the file is taken as an ordinary one).
 */
export async function pseudoFs(p: string): Promise<string | undefined> {
  const statfs = (fsp as { statfs?: (p: string) => Promise<{ type: number | bigint }> }).statfs
  if (typeof statfs !== 'function') return undefined
  try {
    return PSEUDO_FS.get(Number((await statfs(p)).type))
  } catch {
    return undefined
  }
}

/** What a kind of file is called in messages. */
export function kindName(st: KindOf): string {
  return st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : st.isSocket() ? 'a socket' : 'a special file'
}

/** The longest name of a directory entry (NAME_MAX on Linux's filesystems), in bytes. */
const NAME_MAX = 255
const utf8 = new TextEncoder()
/**
 * A temp name next to `dst` (same directory, so the rename is atomic): `NAME.odirect-tmp-PID-R`,
 * R 12 random hex digits, NAME cut (on a character) where the whole would pass NAME_MAX: a
 * destination name of 231 to 255 bytes is valid, and its temp file's name must be too. R was a
 * counter per thread: two worker threads' first temp files for one destination had one name (the
 * second failed EEXIST and its cleanup removed the first one's temp file), as would two processes
 * of one PID in different PID namespaces sharing a directory, and a temp file a killed worker left
 * failed the next worker's write (adversary-s17).
 */
export const tmpName = (dst: string): string => {
  const suffix = `.odirect-tmp-${typeof process !== 'undefined' ? process.pid : 0}-${randomBytes(6).toString('hex')}`
  const slash = dst.lastIndexOf('/')
  const chars = [...dst.slice(slash + 1)]
  let bytes = utf8.encode(chars.join('')).length
  if (bytes + suffix.length <= NAME_MAX) return `${dst}${suffix}`
  while (chars.length > 0 && bytes + suffix.length > NAME_MAX) bytes -= utf8.encode(chars.pop()).length
  return `${dst.slice(0, slash + 1)}${chars.join('')}${suffix}`
}

/**
 * A permission error of the temp-file path (the temp file's create, the rename or link over `dst`)
 * with a hint that says why, where fs.copyFile and an in-place writeFile would succeed: the temp
 * file is made in `dst`'s directory, which must be writable (`dst` being writable is not enough),
 * and in a sticky directory (/tmp) only the owner of `dst` or of the directory may replace it.
 * Another kernel error of the temp file (ENOSPC...) says that the temp file is gone and `dst`
 * untouched. The rename (or link) into place failing because `dst` changed under the write says
 * how: ENOENT / ENOTDIR, its directory moved or replaced (`movedTo`: where removeTemp found the
 * temp file); EISDIR, `dst` made a directory; EBUSY, `dst` a mount point (adversary-s18). Any
 * other error is returned as it is.
 */
export function tempError(e: unknown, dst: string, movedTo?: TempFate): unknown {
  if (!(e instanceof DirectIoError) || e.errno === undefined || e.path === undefined) return e
  const dir = dirname(dst)
  const ofTemp = e.path.includes('.odirect-tmp-') && dirname(e.path) === dir
  const commit = (e.syscall === 'rename' || e.syscall === 'link') && e.path === dst
  if (commit && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) {
    // The temp file was made in `dir`, so the rename finding nothing there means the directory
    // (or the temp file) was moved, replaced or removed while the data was written.
    const where =
      movedTo === undefined
        ? 'the temp file was removed'
        : typeof movedTo === 'object'
          ? `the temp file ${movedTo.left} could not be removed: that path no longer reaches the directory it is in (a filesystem mounted over the directory meanwhile); it shows again once that is unmounted: remove it then`
          : `the temp file, found in the directory's new place (${movedTo}), was removed`
    return withHint(e, `the directory ${dir} was moved or replaced (or the temp file removed) while the data was written: nothing was replaced, ${where}; write to the directory's new path`)
  }
  if (commit && e.code === 'EBUSY') {
    // rename(2) refuses to replace a mount point: a file bind-mounted over `dst` (a container's
    // /etc/hosts or /etc/resolv.conf, a volume or a ConfigMap mounted as one file), which
    // fs.copyFile and fs.writeFile write in place.
    return withHint(e, `${dst} is a mount point (a file bind-mounted over it, as a container's /etc/hosts or a volume mounted as one file): a rename cannot replace it; nothing was replaced and the temp file was removed; write it in place: writeFile without { atomic }, or fs.copyFile / cp (not atomic)`)
  }
  if (commit && e.syscall === 'link' && (e.code === 'EPERM' || e.code === 'EOPNOTSUPP' || e.code === 'ENOTSUP' || e.code === 'ENOSYS')) {
    // Neither link(2) nor renameat2(RENAME_NOREPLACE) (paths.rs, its fallback where the
    // filesystem has no hard links: vfat, exFAT) could put the temp file at `dst` without
    // replacing a file that appeared there meanwhile (adversary-s19).
    return withHint(e, `the filesystem of ${dir} makes no hard links and refused a rename that replaces nothing (RENAME_NOREPLACE): an exclusive replace ('wx', COPYFILE_EXCL, cp --no-clobber) cannot put its temp file in place there without risking a file that appeared meanwhile; nothing was written to ${dst} and the temp file was removed; write it in place instead: writeFile with { flag: 'wx' } and without { atomic }, or fs.copyFile with COPYFILE_EXCL (not atomic: a crash can leave it half written)`)
  }
  if (commit && e.code === 'EISDIR') {
    return withHint(e, `${dst} is a directory now (it was not when the write started: it was replaced meanwhile): nothing was replaced and the temp file was removed; name a file, or remove the directory first`)
  }
  if (e.code !== 'EACCES' && e.code !== 'EPERM') {
    // Any other kernel error of the temp file (ENOSPC, EDQUOT, EIO...): what the kernel's hint
    // says of the data written before it is of a file that is gone; the destination is untouched.
    if (!ofTemp) return e
    return withHint(e, `${e.hint.replace(/;? ?data written before this error is intact/, '')}${e.hint ? '; ' : ''}that was the temp file, now removed: ${dst} is untouched`)
  }
  const inPlace = 'or write it in place: writeFile without { atomic }, or fs.copyFile (not atomic: a crash can leave it half written)'
  let hint: string
  if (e.syscall === 'open' && ofTemp) {
    hint = `${dst} is replaced through a temp file made next to it and renamed over it, and this process may not create files in ${dir} (the directory's write permission: ${dst} being writable is not enough); make ${dir} writable for this user, ${inPlace}`
  } else if ((e.syscall === 'rename' || e.syscall === 'link') && e.path === dst) {
    let sticky = false
    try {
      sticky = (statSync(dir).mode & 0o1000) !== 0 // S_ISVTX
    } catch {
      // Unknown: the kernel's own hint stays.
    }
    if (!sticky) return e
    hint = `${dir} is a sticky directory (mode +t, as /tmp): only the owner of ${dst} or of ${dir} may replace ${dst}, even where ${dst} is writable; run as its owner, ${inPlace}`
  } else return e
  return withHint(e, hint)
}

/** `e` with `hint` in place of its own (in its message too). */
function withHint(e: DirectIoError, hint: string): DirectIoError {
  const message = e.hint !== '' && e.message.includes(e.hint) ? e.message.replace(e.hint, hint) : `${e.message} — ${hint}`
  const out = new DirectIoError(message, { code: e.code, errno: e.errno, syscall: e.syscall, path: e.path, position: e.position, length: e.length, bytesWritten: e.bytesWritten, hint })
  out.stack = `${out.name}: ${message}${e.stack?.slice(e.stack.indexOf('\n')) ?? ''}`
  return out
}

const check = (errno: number, syscall: string, path: string): void => {
  if (errno !== 0) throw kernelError(errno, { syscall, path })
}

/**
 * Whether `e` is the temp file's own create finding the name taken ('wx': EEXIST): that file is
 * someone else's, and the cleanup must not remove it.
 */
export const tempTaken = (e: unknown, tmp: string): boolean => e instanceof DirectIoError && e.code === 'EEXIST' && e.path === tmp

/**
 * Removes a temp file made by the native open (natively: a runtime's permission checks cannot
 * strand it). Never throws. `fd`: the temp file's descriptor, still open: the file is removed
 * where it is now, found through /proc/self/fd, as its directory may have been moved (`mv dir
 * dir.old`) or replaced (by a link to another directory) since it was made: `tmp` then names
 * nothing, or another directory's entry, and the temp file, the size of the data, stayed in the
 * moved directory for good (adversary-s18). Resolves with the path it was removed at when that
 * is not `tmp` (its directory moved), else undefined.
 */
/**
 * The temp files this thread made (their open succeeded) and has neither renamed into place nor
 * removed: removed when the process exits through `process.exit()` or an uncaught exception,
 * whose 'exit' listeners run (synchronous code only). Such an exit mid-copy left the temp file, as
 * large as the reservation (a 256 MiB copyFile ended by process.exit() left 256 MiB; npm's
 * write-file-atomic removes its temp files then too). A kill or worker.terminate() runs no
 * JavaScript: that temp file stays (README "Troubleshooting").
 */
const liveTemps = new Map<string, string>()
let exitHooked = false

/**
 * `tmp` is about to be created by this thread's open ('wx'): removed at exit until it is renamed
 * or removed (or let go: its open found another's file there, see tempLetGo).
 * Kept with its absolute path: a relative one (copyFile('a', 'b')) names another file once the
 * process changed its working directory, and the temp file was left (adversary-s21b).
 */
export function tempOwned(tmp: string): void {
  const abs = resolve(tmp)
  liveTemps.set(tmp, abs)
  // Natively too: removed at exit(3) when no 'exit' listener runs (Deno after an uncaught
  // exception; crates/napi/src/paths.rs TEMPS).
  native.tempHeld(abs)
  if (exitHooked || typeof process === 'undefined' || typeof process.on !== 'function') return
  exitHooked = true
  process.on('exit', () => {
    for (const t of liveTemps.values()) {
      try {
        unlinkSync(t)
      } catch {
        // Gone already (renamed a moment ago), or its directory moved: nothing more to do now.
      }
    }
  })
}

export async function removeTemp(tmp: string, fd?: number): Promise<TempFate> {
  try {
    return await removeTempNow(tmp, fd)
  } finally {
    tempDone(tmp)
  }
}

/** `tmp` was put in place or removed, or (its open failed EEXIST) is another's: no longer removed at exit. */
export function tempLetGo(tmp: string): void {
  tempDone(tmp)
}

/** `tmp` was put in place or removed: no longer removed at exit. */
function tempDone(tmp: string): void {
  const abs = liveTemps.get(tmp)
  if (abs === undefined) return
  liveTemps.delete(tmp)
  native.tempLetGo(abs)
}

async function removeTempNow(tmp: string, fd?: number): Promise<TempFate> {
  let at: string | undefined
  if (fd !== undefined && fd >= 0) {
    // The path of the open file now (a removed one ends ' (deleted)': its name differs then). A
    // runtime that may not read /proc (Deno without --allow-read) falls back to the name.
    const now = await fsp.readlink(`/proc/self/fd/${fd}`).catch(() => undefined)
    if (now !== undefined && basename(now) === basename(tmp)) at = now
  }
  await native.unlinkPath(at ?? tmp).catch(() => 0)
  // Still linked: its directory is no longer reached through its path (a filesystem mounted over
  // the directory while the data was written: the path names the new mount's entry, the temp file
  // is under it, seen again once it is unmounted; adversary-s19b). Said, not claimed removed.
  if (fd !== undefined && fd >= 0 && linksOf(fd) > 0) return { left: at ?? tmp }
  if (at === undefined) return undefined
  return dirname(at) === (await fsp.realpath(dirname(tmp)).catch(() => undefined)) ? undefined : at
}

/** What removeTemp did: removed in its place (undefined), removed where its directory was moved (that path), or left where no path reaches it now. */
export type TempFate = string | { left: string } | undefined

/** The link count of the open file `fd` (0: removed), or 0 where fstat fails. */
function linksOf(fd: number): number {
  try {
    return fstatSync(fd).nlink
  } catch {
    return 0
  }
}

/**
 * Puts the finished temp file in place: rename over `dst`, or (`exclusive`) link it there (EEXIST
 * if something appeared meanwhile) and unlink the temp name (on a filesystem without hard links,
 * vfat or exFAT, native.linkPath moves it there with renameat2(RENAME_NOREPLACE), as exclusive:
 * the unlink then finds nothing); then fsyncs the directory, whose error is reported (the data is
 * in place, its name may not be durable).
 */
export async function commitTemp(tmp: string, dst: string, exclusive: boolean): Promise<void> {
  if (exclusive) {
    check(await native.linkPath(tmp, dst), 'link', dst)
    await removeTemp(tmp)
  } else {
    check(await native.renamePath(tmp, dst), 'rename', dst)
    tempDone(tmp)
  }
  try {
    await syncParentDir(dst)
  } catch (e) {
    // The data is in place already: the error must say so (EMFILE opening the directory, EIO
    // syncing it), or a caller takes the destination for untouched (adversary-s18b).
    if (!(e instanceof DirectIoError)) throw e
    throw withHint(e, `${dst} was replaced (the new data is in place), but syncing its directory ${dirname(dst)} failed: the replacement may not survive a crash; sync the directory again`)
  }
}

/**
 * Lets an open of the FIFO at `path` that waits for its other end return (SequentialFile.open
 * after an abort): opens that end without blocking (O_NONBLOCK: a FIFO's read end opens at once;
 * its write end opens while a reader, the waiting open itself, is there) and closes it at once.
 * Nothing where `path` is no longer a FIFO or cannot be opened so.
 */
function releaseFifoOpen(path: string, write: boolean): void {
  try {
    if (!statSync(path).isFIFO()) return
    const fd = openSync(path, (write ? fsConstants.O_RDONLY : fsConstants.O_WRONLY) | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY)
    closeSync(fd)
  } catch {
    // Gone, replaced, or refused: the open waits for another process, as it would have.
  }
}

/** A file of a sequential kind opened with node:fs (buffered: direct I/O does not apply to it). */
export class SequentialFile {
  private constructor(
    readonly path: string,
    private readonly h: fsp.FileHandle,
  ) {}

  /**
   * Opens `path` for reading, or for writing in place (O_WRONLY, neither created nor truncated:
   * a device stays a device). Opening a FIFO waits for the other end; an abort stops the wait.
   */
  static async open(path: string, write: boolean, abort: AbortRace): Promise<SequentialFile> {
    const opening = runtime(fsp.open(path, write ? fsConstants.O_WRONLY | fsConstants.O_NOCTTY : fsConstants.O_RDONLY | fsConstants.O_NOCTTY))
    try {
      return new SequentialFile(path, await abort.race(opening))
    } catch (e) {
      // Aborted while the open waits (a FIFO without the other end): close it when it comes.
      let settled = false
      void opening
        .then((h) => h.close())
        .catch(() => {})
        .finally(() => {
          settled = true
        })
      // It comes only when another process opens the other end: until then the open holds one of
      // libuv's four worker threads (every fs call of this process waits once four are held) and
      // keeps the process from exiting (adversary-s19b). The other end, opened and closed here
      // without blocking, lets it return (the kernel wakes a FIFO's waiting open when the other
      // end's open count changes), and the handle is closed above without a byte written or read.
      // (Any other process waiting in an open of this FIFO then returns too, and finds no one at
      // the other end: EOF for a reader, EPIPE for a writer, as if the process it waited for had
      // come and gone.)
      await Promise.resolve()
      if (!settled) releaseFifoOpen(path, write)
      throw e
    }
  }

  /** The descriptor (as fs's stream.fd). */
  get fd(): number {
    return this.h.fd
  }

  /** Reads up to `buf.length` bytes from where the previous read ended: 0 at the end. */
  async read(buf: Buffer, abort: AbortRace): Promise<number> {
    return (await abort.race(runtime(this.h.read(buf, 0, buf.length, null)))).bytesRead
  }

  /** Writes all of `data` (going on after partial writes to a pipe). */
  async write(data: Uint8Array, abort: AbortRace): Promise<void> {
    let off = 0
    while (off < data.byteLength) {
      const { bytesWritten } = await abort.race(runtime(this.h.write(data, off, data.byteLength - off, null)))
      if (bytesWritten <= 0) throw kernelError(E.EIO, { syscall: 'write', path: this.path }, `the kernel wrote ${bytesWritten} bytes`)
      off += bytesWritten
    }
  }

  /** Closes it; after an abort the close is not waited for (a read may still be blocked in the kernel). */
  async close(abort: AbortRace): Promise<void> {
    const c = this.h.close()
    if (abort.error !== undefined) {
      c.catch(() => {})
      return
    }
    await runtime(c)
  }
}

/** The bytes of each chunk of a sequential file, until its end (a reused buffer: consume before the next). */
export async function* sequentialChunks(f: SequentialFile, chunk: number, abort: AbortRace): AsyncGenerator<Uint8Array> {
  const buf = Buffer.allocUnsafe(chunk)
  for (;;) {
    abort.check()
    const n = await f.read(buf, abort)
    if (n === 0) return
    yield buf.subarray(0, n)
  }
}
