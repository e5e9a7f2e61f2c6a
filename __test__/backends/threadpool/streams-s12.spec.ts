// streams-s12.spec.ts again with ODIRECT_BACKEND=threadpool, as a file of its own so that ava runs it beside the default pass.
process.env.ODIRECT_BACKEND = 'threadpool'
await import('../../streams-s12.spec.ts')
