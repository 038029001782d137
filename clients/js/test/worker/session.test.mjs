// Identify, token refresh and upstream against a real worker: 4001 then a fresh token and
// a resume, 1008 stops, the send buffer flushed in order after the welcome.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { startNATS, startWorker, natsConnect, publishDurable, waitFor } from '../helpers/worker.mjs'
import { signToken, testSecret } from '../helpers/jwt.mjs'
import { recordedClient, sharedStorage } from './common.mjs'

let nats, nc, js

before(async () => {
  nats = await startNATS()
  nc = await natsConnect(nats.url)
  js = nc.jetstream()
})

/** Real timers, each one recorded while pending, so a test can see that nothing is scheduled. */
function trackedClock () {
  const pending = new Set()
  return {
    pending,
    setTimeout: (fn, ms) => {
      const h = setTimeout(() => { pending.delete(h); fn() }, ms)
      pending.add(h)
      return h
    },
    clearTimeout: (h) => { pending.delete(h); clearTimeout(h) },
    now: () => Date.now()
  }
}

test('token refresh on 4001: the token function is called again and the client resumes', async () => {
  const worker = await startWorker({
    natsURL: nats.url,
    env: { NOTIFY_AUTH: 'jwt', NOTIFY_JWT_SECRET: testSecret, NOTIFY_JWT_LEEWAY: '0s' }
  })
  let calls = 0
  const token = async () => {
    calls++
    // The first token expires in one to two seconds; the next ones last.
    const life = calls === 1 ? 2 : 3600
    return signToken({ sub: 'carol', exp: Math.floor(Date.now() / 1000) + life })
  }
  const c = recordedClient({ url: worker.url, token, storage: sharedStorage(), cursorKey: 'carol' })
  c.client.connect()
  await c.waitWelcomes(1)
  const acked = [await publishDurable(js, 'carol', 'before expiry')]
  await c.waitMessages(1)
  await waitFor(() => c.errors.some((e) => e.code === 4001), { timeout: 8000, what: 'the 4001 close' })
  acked.push(await publishDurable(js, 'carol', 'while reconnecting'))
  await c.waitWelcomes(2)
  acked.push(await publishDurable(js, 'carol', 'after refresh'))
  await c.waitMessages(3)
  await c.client.close()
  assert.equal(calls, 2)
  assert.equal(c.errors.find((e) => e.code === 4001).reason, 'token expired')
  assert.equal(c.welcomes[1].name, 'carol')
  assert.equal(c.welcomes[1].recovered, true)
  assert.deepEqual(c.seqs(), acked)
  await worker.stop()
})

test('1008 stops: a bad name gives state closed, the error code and reason, no second attempt', async () => {
  const worker = await startWorker({ natsURL: nats.url })
  const clock = trackedClock()
  let opened = 0
  const { default: WS } = await import('ws')
  class Counting extends WS { constructor (url) { super(url); opened++ } }
  const c = recordedClient({ url: worker.url, name: 'not a valid name!', WebSocket: Counting, clock, storage: sharedStorage() })
  c.client.connect()
  await waitFor(() => c.client.state === 'closed', { what: 'state closed' })
  assert.deepEqual(c.states, ['connecting', 'closed'])
  assert.equal(c.errors.length, 1)
  assert.equal(c.errors[0].code, 1008)
  assert.equal(c.errors[0].reason, 'name may contain only A-Z a-z 0-9 _ -')
  assert.equal(opened, 1)
  assert.equal(clock.pending.size, 0, 'no reconnect scheduled')
  await worker.stop()
})

test('send: 100 buffered before connecting, the 101st refused, flushed in order after the welcome at the pace the worker allows', async () => {
  // A burst far below 100: a flush at once would be closed with 1008.
  const worker = await startWorker({ natsURL: nats.url, env: { NOTIFY_UPSTREAM_RATE: '50', NOTIFY_UPSTREAM_BURST: '5' } })
  const got = []
  const sub = nc.subscribe('notify.inbound.dave', { callback: (err, m) => { if (!err) got.push(m) } })
  await nc.flush()
  const c = recordedClient({ url: worker.url, name: 'dave', storage: sharedStorage() })
  for (let i = 0; i < 100; i++) assert.equal(c.client.send({ i }), true)
  assert.equal(c.client.send({ i: 100 }), false)
  c.client.connect()
  await waitFor(() => got.length >= 100, { what: `100 upstream messages (have ${got.length})` })
  assert.equal(c.client.send('text'), true)
  assert.equal(c.client.send(new Uint8Array([1, 2, 3])), true)
  await waitFor(() => got.length >= 102, { what: 'the live sends' })
  await c.client.close()
  sub.unsubscribe()
  assert.deepEqual(got.slice(0, 100).map((m) => m.json().i), [...Array(100).keys()])
  assert.equal(got[100].string(), 'text')
  assert.deepEqual([...got[101].data], [1, 2, 3])
  assert.deepEqual(c.errors, [], 'no close for going over the upstream limit')
  assert.equal(await worker.metric('notify_limit_closes_total{reason="upstream_rate"}'), 0)
  await worker.stop()
})
