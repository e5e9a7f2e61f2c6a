// CommonJS consumer (.cts under module nodenext): require() of the same package.
import odirect = require('odirect')
import type { FileHandle } from 'odirect'

export async function roundTrip(path: string): Promise<boolean> {
  const fh: FileHandle = await odirect.open(path, 'w+')
  try {
    const a = fh.alloc(1 << 16).fill(7)
    await fh.write(a, 0)
    const b = odirect.allocAligned(1 << 16, Math.max(odirect.PAGE_SIZE, fh.alignment.memory))
    const n: number = await fh.read(b, 0)
    const st = await fh.stat()
    return n === b.length && st.size === a.length && st.isFile() && fh.direct
  } catch (e) {
    if (e instanceof odirect.DirectIoError && e.code === 'ERR_ODIRECT_ALIGNMENT') return false
    throw e
  } finally {
    await fh.close()
  }
}
