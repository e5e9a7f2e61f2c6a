export async function benchCommand(_args: string[]): Promise<number> {
  console.error('odirect bench: not built yet')
  return 1
}
