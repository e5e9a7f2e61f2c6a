export async function cpCommand(_args: string[]): Promise<number> {
  console.error('odirect cp: not built yet')
  return 1
}
