// streams-s12.spec.ts again with ODIRECT_BACKEND=aio, as a file of its own so that ava runs it beside the default pass.
process.env.ODIRECT_BACKEND = 'aio'
await import('../../streams-s12.spec.ts')
