// The committed dist/ (and the demo page's copy of the min.js) equal a fresh build, and the
// min.js defines NotifyWorkerClient as a script and as a required module.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import vm from 'node:vm'

const root = fileURLToPath(new URL('..', import.meta.url))
const files = ['index.mjs', 'index.cjs', 'index.d.ts', 'notify-worker-client.min.js']

test('dist/ is a fresh build of src/ (run npm run build after changing src/)', (t) => {
  const out = mkdtempSync(join(tmpdir(), 'nwjs-build-'))
  t.after(() => rmSync(out, { recursive: true, force: true }))
  execFileSync(process.execPath, [join(root, 'scripts', 'build.mjs'), '--outdir', out])
  for (const f of files) {
    assert.ok(readFileSync(join(root, 'dist', f)).equals(readFileSync(join(out, f))), `dist/${f} is stale`)
  }
  const demo = join(root, '..', '..', 'demo', 'static', 'notify-worker-client.min.js')
  assert.ok(readFileSync(demo).equals(readFileSync(join(out, 'notify-worker-client.min.js'))), 'demo/static copy is stale')
})

test('the min.js defines the global NotifyWorkerClient, and module.exports where there is a module', () => {
  const src = readFileSync(join(root, 'dist', 'notify-worker-client.min.js'), 'utf8')
  const page = vm.createContext({})
  vm.runInContext(src, page)
  assert.equal(typeof vm.runInContext('NotifyWorkerClient.NotifyClient', page), 'function')
  const module = { exports: {} }
  vm.runInContext(src, vm.createContext({ module }))
  assert.equal(typeof module.exports.NotifyClient, 'function')
})

test('the CommonJS and ES module builds export the same API', async () => {
  const { createRequire } = await import('node:module')
  const cjs = createRequire(import.meta.url)('../dist/index.cjs')
  const esm = await import('../dist/index.mjs')
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort())
  assert.equal(typeof esm.NotifyClient, 'function')
})
