// ESM consumer ("type": "module", module nodenext): what a user writes. Resolves dist/index.d.mts.
import {
  allocAligned,
  constants,
  copyFile,
  type CopyResult,
  DirectIoError,
  type DirectIoErrorCode,
  type FileHandle,
  open,
  PAGE_SIZE,
  probe,
  type ProbeReport,
  readFile,
  writeFile,
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
