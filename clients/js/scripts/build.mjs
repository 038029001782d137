// Builds dist/ from src/ with esbuild:
//   dist/index.mjs                  ES module
//   dist/index.cjs                  CommonJS
//   dist/notify-worker-client.min.js  minified IIFE defining the global NotifyWorkerClient
//                                   (and module.exports where there is a module, as in a
//                                   mini-program's require), target ES2017
//   dist/index.d.ts                 copied from src/index.d.ts
// and copies the min.js to ../../demo/static/ for the worker's demo page.
//
//   node scripts/build.mjs                 build dist/ and the demo copy
//   node scripts/build.mjs --outdir DIR    build into DIR only (the freshness test)
import { build } from 'esbuild'
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const i = args.indexOf('--outdir')
const outdir = i >= 0 ? args[i + 1] : join(root, 'dist')
if (i >= 0 && !outdir) throw new Error('--outdir needs a directory')
const toDemo = i < 0

const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const banner = `/*! notify-worker-client ${version} | MIT */`
const entry = join(root, 'src', 'index.js')
const common = { entryPoints: [entry], bundle: true, target: 'es2017', legalComments: 'none', logLevel: 'warning' }

mkdirSync(outdir, { recursive: true })
await build({ ...common, format: 'esm', outfile: join(outdir, 'index.mjs'), banner: { js: banner } })
await build({ ...common, format: 'cjs', outfile: join(outdir, 'index.cjs'), banner: { js: banner } })
await build({
  ...common,
  format: 'iife',
  globalName: 'NotifyWorkerClient',
  minify: true,
  mangleProps: /^_/,
  outfile: join(outdir, 'notify-worker-client.min.js'),
  banner: { js: banner },
  footer: { js: 'if(typeof module==="object"&&module&&module.exports)module.exports=NotifyWorkerClient;' }
})
copyFileSync(join(root, 'src', 'index.d.ts'), join(outdir, 'index.d.ts'))

if (toDemo) {
  const demoStatic = join(root, '..', '..', 'demo', 'static')
  mkdirSync(demoStatic, { recursive: true })
  copyFileSync(join(outdir, 'notify-worker-client.min.js'), join(demoStatic, 'notify-worker-client.min.js'))
}
