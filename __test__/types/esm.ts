// ESM consumer ("type": "module", module nodenext): what a user writes. Resolves dist/index.d.mts.
import {
  allocAligned,
  BatchWindow,
  configureEngine,
  constants,
  copyFile,
  type CopyResult,
  createReadStream,
  createWriteStream,
  DirectIoError,
  type DirectIoErrorCode,
  type DirectReadStream,
  type DirectWriteStream,
  type EngineInfo,
  engineInfo,
  type FileHandle,
  type HandleStats,
  type ManyArrays,
  type ManyError,
  open,
  PAGE_SIZE,
  probe,
  type ProbeReport,
  readableWebStream,
  readFile,
  type ReadStreamOptions,
  RegisteredBuffers,
  writableWebStream,
  writeFile,
  type WriteStreamOptions,
} from 'odirect'
import odirectDefault from 'odirect'

export async function copyFirstBlock(src: string, dst: string): Promise<number> {
  await using input: FileHandle = await open(src, 'r')
  await using output = await open(new URL(`file://${dst}`), 'w', { direct: 'prefer', backend: 'auto', mode: 0o644 })
  const buf: Buffer = input.alloc(input.alignment.offset)
  const { bytesRead, buffer }: { bytesRead: number; buffer: Buffer } = await input.read(buf, 0, buf.length, 0)
  const w = await output.write(buffer, { position: 0n })
  void w.bytesWritten
  const r2 = await input.read(buf, { position: 0, timeout: 1000 })
  const v: number[] = await input.readMany([{ buffer: buf, position: 0 }])
  const source: 'statx' | 'ioctl' | 'sysfs' | 'fstat' | 'default' = input.alignment.source
  const ok: boolean = input.alignment.directSupported
  await output.allocate(0, 1 << 20, constants.FALLOC_FL_KEEP_SIZE)
  void source
  void ok
  return bytesRead + r2.bytesRead + (v[0] ?? 0)
}

export async function describe(path: string): Promise<string> {
  const r: ProbeReport = await probe(path)
  const ok: boolean = r.backends.io_uring.available && r.direct.works
  return `${r.kernel} ${ok} ${PAGE_SIZE} ${allocAligned(4096).byteLength} ${typeof odirectDefault.open}`
}

export async function helpers(dir: string): Promise<string> {
  await writeFile(`${dir}/a.txt`, 'hello', { atomic: true, datasync: true })
  const text: string = await readFile(`${dir}/a.txt`, 'utf8')
  const bytes: Buffer = await readFile(`${dir}/a.txt`)
  const r: CopyResult = await copyFile(`${dir}/a.txt`, `${dir}/b.txt`, { verify: true, sparse: true, onProgress: (p) => void p.bytesDone })
  const fh = await open(`${dir}/b.txt`, 'r')
  const rs = fh.createReadStream({ highWaterMark: 1 << 20, encoding: 'utf8' })
  const web: ReadableStream<Uint8Array> = (await open(`${dir}/b.txt`, 'r')).readableWebStream()
  void rs
  void web
  return `${text} ${bytes.length} ${r.bytesWritten} ${r.sha256 ?? ''}`
}

export async function errors(fh: FileHandle): Promise<string> {
  try {
    await fh.read(new Uint8Array(1), { position: 1 })
    return 'ok'
  } catch (e) {
    if (e instanceof DirectIoError) {
      const code: DirectIoErrorCode = e.code
      if (e.code === 'ERR_ODIRECT_ALIGNMENT' || e.code === 'EIO' || e.code === 'ERR_ODIRECT_SAME_FILE') return code
      const errno: number | undefined = e.errno
      const hint: string = e.hint
      return `${code} ${errno ?? ''} ${hint} ${e.syscall ?? ''} ${e.path ?? ''}`
    }
    throw e
  }
}

// The types are precise, not `any`: each of these is a compile error.
export async function misuse(fh: FileHandle, e: DirectIoError): Promise<void> {
  // @ts-expect-error append flags are not OpenFlags
  await open('/x', 'a')
  // @ts-expect-error unknown option
  await open('/x', 'r', { odirect: true })
  // @ts-expect-error direct takes 'require' | 'prefer' | 'off'
  await open('/x', 'r', { direct: true })
  // @ts-expect-error read resolves with { bytesRead, buffer }, not a number
  const s: number = await fh.read(fh.alloc(4096), 0, 4096, 0)
  // @ts-expect-error a typo in an error code does not compile
  if (e.code === 'ERR_ODIRECT_ALIGNMNT') return
  // @ts-expect-error fallocate modes are named constants, not strings
  await fh.allocate(0, 4096, 'keep-size')
  // @ts-expect-error fs's `fs` stream option is not supported
  fh.createReadStream({ fs: {} })
  void s
}

// The newest options (streams' chunk sizes and read-ahead / write-behind, typed-array batches
// and their shared BatchWindow, registered buffers, engine options and stats), as a user writes them.
export async function newest(path: string): Promise<number> {
  const rsOpts: ReadStreamOptions = { chunkSize: 1 << 20, readAhead: 4, reuseChunks: true, start: 0, end: (1 << 30) - 1, highWaterMark: 1 << 20, direct: 'prefer', backend: 'io_uring', signal: AbortSignal.timeout(1000), encoding: null, emitClose: true }
  const rs: DirectReadStream = createReadStream(path, rsOpts)
  const wsOpts: WriteStreamOptions = { chunkSize: 1 << 20, writeBehind: 2, datasync: false, flush: true, mode: 0o600, flags: 'w', start: 0, encoding: 'utf8', transferChunks: true }
  const ws: DirectWriteStream = createWriteStream(`${path}.out`, wsOpts)
  const moved: number = ws.bytesTransferred
  void moved
  const web: ReadableStream<Uint8Array> = readableWebStream(path, { readAhead: 2 })
  const sink: WritableStream<Uint8Array> = writableWebStream(`${path}.web`, { writeBehind: 1 })
  const fh = await open(path, 'r+')
  const window = new BatchWindow(64)
  const size: number = window.size
  const arrays: ManyArrays = { memory: fh.alloc(8192), offsets: new Uint32Array([0, 4096]), lengths: new Uint32Array([4096, 4096]), positions: new BigInt64Array([0n, 4096n]) }
  const got: Int32Array = await fh.readMany(arrays, { window, signal: AbortSignal.timeout(1000) })
  const put: Int32Array = await fh.writeMany({ ...arrays, positions: new Float64Array([0, 4096]), results: new Int32Array(2) }, { window: 2, dsync: true, datasync: true })
  const ops: number[] = await fh.readMany([{ buffer: fh.alloc(4096), position: 0 }], { window: 1 })
  const reg: RegisteredBuffers = fh.registerBuffers(2, 1 << 16)
  const pinned: readonly Buffer[] = reg.buffers
  reg.unregister()
  const st: HandleStats = fh.stats()
  configureEngine({ sqpoll: 0, waitMicros: 50 })
  const info: EngineInfo = engineInfo()
  const how: 'libuv' | 'thread' = info.path
  try {
    await fh.writeMany(arrays)
  } catch (e) {
    if (e instanceof DirectIoError && 'results' in e) {
      const each: ReadonlyArray<number | DirectIoError> = (e as ManyError).results
      void each
    }
  }
  void [rs, ws, web, sink, size, got, put, ops, pinned, how]
  return st.latencyUs.p99 + st.bounced + info.inflight
}

// Each of these is a compile error.
export async function misuseNewest(fh: FileHandle): Promise<void> {
  // @ts-expect-error a BatchWindow is made with its size
  void new BatchWindow()
  // @ts-expect-error typed positions are a Float64Array or BigInt64Array
  await fh.readMany({ memory: fh.alloc(4096), offsets: new Uint32Array(1), lengths: new Uint32Array(1), positions: new Uint32Array(1) })
  // @ts-expect-error a typed batch resolves with an Int32Array, not number[]
  const r: number[] = await fh.readMany({ memory: fh.alloc(4096), offsets: new Uint32Array(1), lengths: new Uint32Array(1), positions: new Float64Array(1) })
  // @ts-expect-error writeBehind is a number
  createWriteStream('/x', { writeBehind: 'many' })
  // @ts-expect-error readAhead belongs to read streams
  createWriteStream('/x', { readAhead: 4 })
  // @ts-expect-error transferChunks is a boolean
  createWriteStream('/x', { transferChunks: 'yes' })
  // @ts-expect-error window is a number or a BatchWindow
  await fh.readMany([{ buffer: fh.alloc(4096), position: 0 }], { window: '4' })
  void r
}

// Every option the README's API table documents for readFile / writeFile / copyFile / open / the
// streams / the handle's methods, as a user writes them; then wrong types for them, each a compile
// error (the sixteenth session's adversary pass).
export async function everyDocumentedOption(fh: FileHandle, signal: AbortSignal): Promise<void> {
  await readFile('/x', { encoding: 'utf8', flag: 'r', signal, direct: 'prefer', backend: 'aio' })
  await readFile(fh, 'utf8')
  await writeFile('/x', 'd', { encoding: 'utf8', mode: 0o600, flag: 'wx', datasync: true, flush: true, atomic: true, xattrs: false, signal, direct: 'off', backend: 'threadpool' })
  await writeFile('/x', [Buffer.from('a'), new Uint8Array(2)])
  await writeFile('/x', (async function* () { yield 'x' })())
  await writeFile(fh, new DataView(new ArrayBuffer(8)))
  const r = await copyFile('/a', '/b', { onProgress: ({ phase, bytesDone, totalBytes }) => void [phase, bytesDone, totalBytes], verify: true, sparse: false, signal, chunkSize: 1 << 20, exclusive: true, xattrs: true, direct: 'require', backend: 'io_uring' })
  void r.source.direct, r.destination.path
  await copyFile('/a', '/b', 1)
  await open('/x', 'r+', { direct: 'prefer', backend: 'auto', dsync: true, noatime: true, mode: 0o644 })
  await open('/x', 0o2)
  createReadStream(fh, { start: 0, end: 10, autoClose: false, emitClose: false, flags: 'r' })
  createReadStream('/x', { fd: fh })
  createWriteStream('/x', { fd: fh, autoClose: true, flags: 'r+', encoding: 'latin1' })
  await fh.write(fh.alloc(4096), { position: 0, dsync: true, sync: false, atomic: true, signal, timeout: 5 })
  await fh.writev([fh.alloc(4096)], 0, { dsync: true, datasync: true })
  await fh.readv([fh.alloc(4096)], 0)
  await fh.writeMany([{ buffer: fh.alloc(4096), position: 0 }], { window: 2, signal, dsync: true, sync: true, datasync: true })
  await fh.lock({ exclusive: true, signal })
  const got: boolean = await fh.tryLock()
  await fh.unlock()
  await fh.truncate(0, { signal })
  await fh.datasync({ signal })
  await fh.sync()
  const st = await fh.stat()
  void st.size
  const p: number = fh.position
  const infl: number = fh.inflight
  const rp = await probe('/x')
  void [rp.alignment, rp.fsType, got, p, infl]
  configureEngine({ waitMicros: 0 })
  const e = new DirectIoError('m', { code: 'EIO', hint: 'h' })
  void e.bytesWritten, e.position, e.length
}
export async function everyWrongOption(fh: FileHandle): Promise<void> {
  // @ts-expect-error readFile has no atomic
  await readFile('/x', { atomic: true })
  // @ts-expect-error writeFile's atomic is a boolean
  await writeFile('/x', 'd', { atomic: 'yes' })
  // @ts-expect-error copyFile's chunkSize is a number
  await copyFile('/a', '/b', { chunkSize: '1M' })
  // @ts-expect-error copyFile has no mode option
  await copyFile('/a', '/b', { mode: 0o600 })
  // @ts-expect-error backend names are fixed
  await readFile('/x', { backend: 'uring' })
  // @ts-expect-error open's dsync is a boolean
  await open('/x', 'r', { dsync: 1 })
  // @ts-expect-error lock's exclusive is a boolean
  await fh.lock({ exclusive: 'yes' })
  // @ts-expect-error write's timeout is a number
  await fh.write(fh.alloc(4096), { position: 0, timeout: '5s' })
  // @ts-expect-error writeFile data cannot be a number
  await writeFile('/x', 5)
  // @ts-expect-error readFile's flag cannot be an append flag
  await readFile('/x', { flag: 'a' })
  // @ts-expect-error createReadStream's start is a number
  createReadStream('/x', { start: 0n })
  // @ts-expect-error onProgress takes a function
  await copyFile('/a', '/b', { onProgress: true })
}
