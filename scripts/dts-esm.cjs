// Writes dist/index.d.mts, the declarations of the ES module entry (dist/index.mjs), so that ESM
// importers get ESM types and CommonJS importers the CommonJS ones (dist/index.d.ts): the
// package's exports map names each per condition (checked by `npm run test:types`, arethetypeswrong).
const fs = require('node:fs')
const path = require('node:path')
const dist = path.join(__dirname, '..', 'dist')
const text = [
  '// ES module entry of odirect: the same API as the CommonJS entry (index.js), re-exported by name.',
  "export * from './index.js'",
  "import * as odirect from './index.js'",
  'export default odirect',
  '',
].join('\n')
fs.writeFileSync(path.join(dist, 'index.d.mts'), text)
