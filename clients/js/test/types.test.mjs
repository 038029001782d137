// The hand-written declarations compile against typical use under tsc --strict.
import { test } from 'node:test'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

test('test/types/usage.ts compiles with tsc --noEmit (strict)', () => {
  const root = fileURLToPath(new URL('..', import.meta.url))
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  try {
    execFileSync(process.execPath, [tsc, '--noEmit', '-p', join(root, 'test', 'types', 'tsconfig.json')], { encoding: 'utf8' })
  } catch (err) {
    throw new Error(`tsc failed:\n${err.stdout}${err.stderr}`)
  }
})
