// ESM consumer ("type": "module", module nodenext): what a user writes.
import { allocAligned, DirectIoError, type FileHandle, open, PAGE_SIZE, probe, type ProbeReport } from 'odirect'

export async function copyFirstBlock(src: string, dst: string): Promise<number> {
  await using input: FileHandle = await open(src, 'r')
  await using output = await open(dst, 'w', { direct: 'prefer', backend: 'auto', mode: 0o644 })
  const buf: Uint8Array = input.alloc(input.alignment.offset)
  const n: number = await input.read(buf, 0)
  await output.write({ buffer: buf, position: 0n })
  const v: number[] = await input.readMany([{ buffer: buf, position: 0 }])
  const source: 'statx' | 'ioctl' | 'sysfs' | 'fstat' | 'default' = input.alignment.source
  void source
  return n + (v[0] ?? 0)
}

export async function describe(path: string): Promise<string> {
  const r: ProbeReport = await probe(path)
  const ok: boolean = r.backends.io_uring.available && r.direct.works
  return `${r.kernel} ${ok} ${PAGE_SIZE} ${allocAligned(4096).byteLength}`
}

export async function errors(fh: FileHandle): Promise<string> {
  try {
    await fh.read(new Uint8Array(1), 1)
    return 'ok'
  } catch (e) {
    if (e instanceof DirectIoError) {
      const code: string = e.code
      const errno: number | undefined = e.errno
      const hint: string = e.hint
      return `${code} ${errno ?? ''} ${hint} ${e.syscall ?? ''} ${e.path ?? ''}`
    }
    throw e
  }
}

// The types are precise, not `any`: each of these is a compile error.
export async function misuse(fh: FileHandle): Promise<void> {
  // @ts-expect-error append flags are not OpenFlags
  await open('/x', 'a')
  // @ts-expect-error unknown option
  await open('/x', 'r', { odirect: true })
  // @ts-expect-error direct takes 'require' | 'prefer' | 'off'
  await open('/x', 'r', { direct: true })
  // @ts-expect-error read resolves with a number
  const s: string = await fh.read(fh.alloc(4096), 0)
  // @ts-expect-error a string is not a buffer
  await fh.write('text', 0)
  void s
}
