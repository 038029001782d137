/**
 * HS256 tokens for a worker run with NOTIFY_AUTH=jwt and NOTIFY_JWT_SECRET, signed with
 * node:crypto.
 *
 *   signToken({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 2 }, secret)
 */
import { createHmac } from 'node:crypto'

/** A fixed 32-byte secret for tests. */
export const testSecret = 'notify-worker-client-test-secret-0123456789'

/** Signs claims as a compact HS256 JWT. */
export function signToken (claims, secret = testSecret) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
  const body = b64url(JSON.stringify(claims))
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${sig}`
}

function b64url (s) {
  return Buffer.from(s).toString('base64url')
}
