// CommonJS consumer (.cts under module nodenext): require() of the same package. Resolves dist/index.d.ts.
import odirect = require('odirect')
import type { FileHandle } from 'odirect'

export async function roundTrip(path: string): Promise<boolean> {
  const fh: FileHandle = await odirect.open(path, 'w+')
  try {
    const a = fh.alloc(1 << 16).fill(7)
    const { bytesWritten } = await fh.write(a, 0, a.length, 0)
    const b = odirect.allocAligned(1 << 16, Math.max(odirect.PAGE_SIZE, fh.alignment.memory))
    const { bytesRead } = await fh.read(b, { position: 0 })
    const st = await fh.stat()
    const text: string = await odirect.readFile(path, { encoding: 'latin1' })
    return bytesRead === b.length && bytesWritten === a.length && st.size === a.length && st.isFile() && fh.direct && text.length === a.length
  } catch (e) {
    if (e instanceof odirect.DirectIoError && e.code === 'ERR_ODIRECT_ALIGNMENT') return false
    throw e
  } finally {
    await fh.close()
  }
}
