// Protocol v2 rules on the client side (docs/protocol.md section 8): the first message, the
// cursor, exactly-once delivery, payload decoding, error frames, storage and the send buffer.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { NotifyClient } from '../../src/index.js'
import { decodeBase64 } from '../../src/base64.js'
import { setup, connected, advance, settle, URL } from './setup.mjs'
import { mapStorage } from '../helpers/fakes.mjs'

const KEY = URL + '#alice'

describe('first message', () => {
  test('name, v 2, no since without a stored cursor', async () => {
    const t = setup()
    const s = await connected(t)
    assert.equal(s.url, URL)
    assert.deepEqual(s.identify(), { name: 'alice', v: 2 })
    await t.client.close()
  })

  test('since is the stored cursor; the token travels in the message, never the URL', async () => {
    const t = setup({ storage: mapStorage({ 'custom-key': '41' }), name: undefined, token: 'jwt.x.y', cursorKey: 'custom-key' })
    const s = await connected(t)
    assert.equal(s.url, URL)
    assert.deepEqual(s.identify(), { token: 'jwt.x.y', v: 2, since: 41 })
    await t.client.close()
  })

  test('a token-only client keys its cursor by the URL', async () => {
    const t = setup({ storage: mapStorage({ [URL]: '7' }), name: undefined, token: () => 'tok' })
    const s = await connected(t)
    assert.equal(s.identify().since, 7)
    await t.client.close()
  })

  test('a stored value that is not a sequence is reported and ignored', async () => {
    for (const bad of ['-1', '1.5', 'abc', '99999999999999999', '']) {
      const t = setup({ storage: mapStorage({ [KEY]: bad }) })
      const s = await connected(t)
      assert.equal(s.identify().since, undefined, bad)
      assert.equal(t.errors[0].code, 'storage', bad)
      await t.client.close()
    }
  })
})

describe('cursor', () => {
  test('the welcome seq counts only once the K replayed frames arrived', async () => {
    const t = setup({ storage: mapStorage({ [KEY]: '10' }) })
    const s = await connected(t, { seq: 20, replayed: 2 })
    assert.equal(t.client.cursor, 10)
    s.frame({ type: 'ping', seq: 25 }) // during the replay: held back
    s.frame({ type: 'msg', seq: 12, data: 'a' })
    assert.equal(t.client.cursor, 12)
    s.frame({ type: 'msg', seq: 15, data: 'b' })
    assert.equal(t.client.cursor, 25)
    s.frame({ type: 'msg', seq: 26, data: 'c' })
    assert.deepEqual(t.messages, [
      { data: 'a', meta: { seq: 12, replay: true } },
      { data: 'b', meta: { seq: 15, replay: true } },
      { data: 'c', meta: { seq: 26, replay: false } }
    ])
    assert.deepEqual(t.welcomes, [{ name: 'alice', v: 2, seq: 20, recovered: true, replayed: 2, ping: 25000 }])
    await t.client.close()
  })

  test('a connection lost mid-replay resumes from the last replayed seq, not the welcome seq', async () => {
    const t = setup({ storage: mapStorage({ [KEY]: '10' }) })
    const s = await connected(t, { seq: 20, replayed: 3 })
    s.frame({ type: 'msg', seq: 12, data: 1 })
    s.end(1006)
    await advance(t, t.clock.pending()[0])
    t.ws.last().open()
    assert.equal(t.ws.last().identify().since, 12)
    await t.client.close()
  })

  test('exactly once: a seq not above the cursor is dropped; core messages always pass', async () => {
    const t = setup({ storage: mapStorage({ [KEY]: '5' }) })
    const s = await connected(t, { seq: 5 })
    s.frame({ type: 'msg', seq: 4, data: 'old' })
    s.frame({ type: 'msg', seq: 5, data: 'dup' })
    s.frame({ type: 'msg', seq: 6, data: 'new' })
    s.frame({ type: 'msg', seq: 6, data: 'dup' })
    s.frame({ type: 'msg', data: { typing: true } })
    s.frame({ type: 'msg', data: { typing: true } })
    s.frame({ type: 'ping', seq: 9 })
    s.frame({ type: 'msg', seq: 8, data: 'below ping' })
    assert.deepEqual(t.messages.map((m) => [m.data, m.meta.seq]), [
      ['new', 6], [{ typing: true }, undefined], [{ typing: true }, undefined]
    ])
    assert.equal(t.client.cursor, 9)
    await t.client.close()
  })

  test('data_b64 is a Uint8Array; data is the parsed JSON value (null included)', async () => {
    const t = setup()
    const s = await connected(t, { seq: 0 })
    s.frame({ type: 'msg', seq: 1, data_b64: 'AAECA/8=' })
    s.frame({ type: 'msg', seq: 2, data: null })
    s.frame({ type: 'msg', seq: 3, data: [1, 'two'] })
    s.frame({ type: 'msg', seq: 4, data_b64: 'not base64!' })
    s.frame({ type: 'msg', seq: 5, data: 'text' })
    assert.ok(t.messages[0].data instanceof Uint8Array)
    assert.deepEqual([...t.messages[0].data], [0, 1, 2, 3, 255])
    assert.deepEqual(t.messages.slice(1).map((m) => m.data), [null, [1, 'two'], 'text'])
    assert.equal(t.errors[0].code, 'protocol')
    assert.equal(t.client.cursor, 5)
    await t.client.close()
  })

  test('recovered:false reason reset lowers the cursor to the welcome seq', async () => {
    const t = setup({ storage: mapStorage({ [KEY]: '1000000' }) })
    const s = await connected(t, { seq: 3, recovered: false, reason: 'reset' })
    assert.equal(t.client.cursor, 3)
    assert.equal(t.welcomes[0].recovered, false)
    assert.equal(t.welcomes[0].reason, 'reset')
    s.frame({ type: 'msg', seq: 4, data: 'after the reset' })
    assert.deepEqual(t.messages.map((m) => m.meta.seq), [4])
    await t.client.close()
    assert.equal(t.storage.map.get(KEY), '4')
  })

  test('recovered:false reason unavailable (seq 0) leaves the cursor alone', async () => {
    const t = setup({ storage: mapStorage({ [KEY]: '42' }) })
    const s = await connected(t, { seq: 0, recovered: false, reason: 'unavailable' })
    assert.equal(t.client.cursor, 42)
    s.frame({ type: 'msg', data: 'core' })
    assert.equal(t.messages.length, 1)
    s.end(1006)
    await advance(t, t.clock.pending()[0])
    t.ws.last().open()
    assert.equal(t.ws.last().identify().since, 42)
    await t.client.close()
  })

  test('a fresh empty stream gives cursor 0, so a gap before the first message is replayed', async () => {
    const t = setup()
    const s = await connected(t, { seq: 0 })
    assert.equal(t.client.cursor, 0)
    s.end(1006)
    await advance(t, t.clock.pending()[0])
    t.ws.last().open()
    assert.equal(t.ws.last().identify().since, 0)
    await t.client.close()
  })

  test('nothing before the welcome is delivered; text and binary frames after it are', async () => {
    const t = setup()
    const s = await connected(t)
    s.frame({ type: 'msg', seq: 1, data: 'early' })
    s.welcome()
    s.frame('plain text')
    s.frame(new Uint8Array([1, 2]).buffer)
    assert.deepEqual(t.messages.map((m) => m.data), ['plain text', new Uint8Array([1, 2])])
    await t.client.close()
  })
})

describe('errors', () => {
  test('the error frame reason goes with the close code', async () => {
    const t = setup({ random: () => 0 })
    const s = await connected(t, {})
    s.frame({ type: 'error', error: 'too slow: outbound queue full' })
    s.end(4002, 'too slow')
    assert.equal(t.errors[0].code, 4002)
    assert.equal(t.errors[0].reason, 'too slow: outbound queue full')
    assert.match(t.errors[0].message, /4002: too slow: outbound queue full/)
    await advance(t, 0)
    t.ws.last().open()
    t.ws.last().end(1006, '') // the next connection's reason is its own
    assert.equal(t.errors[1].reason, '')
    await t.client.close()
  })
})

describe('storage', () => {
  test('throttled to once a second, and close() stores the latest', async () => {
    const t = setup()
    const s = await connected(t, { seq: 0 })
    await settle()
    assert.deepEqual(t.storage.writes, [[KEY, '0']])
    for (let seq = 1; seq <= 50; seq++) s.frame({ type: 'msg', seq, data: seq })
    await settle()
    assert.equal(t.storage.writes.length, 1)
    await advance(t, 1000)
    assert.deepEqual(t.storage.writes.at(-1), [KEY, '50'])
    s.frame({ type: 'msg', seq: 51, data: 51 })
    await t.client.close()
    assert.deepEqual(t.storage.writes, [[KEY, '0'], [KEY, '50'], [KEY, '51']])
    assert.deepEqual(t.clock.pending(), [])
  })

  test('async storage; failures are reported as errors, never thrown', async () => {
    let fail = true
    const stored = new Map([[KEY, '3']])
    const storage = {
      get: async (k) => stored.get(k) ?? null,
      set: async (k, v) => { if (fail) throw new Error('quota'); stored.set(k, v) }
    }
    const t = setup({ storage })
    const s = await connected(t, { seq: 3 })
    assert.equal(s.identify().since, 3)
    s.frame({ type: 'msg', seq: 4, data: 4 })
    await t.client.close()
    assert.equal(t.errors[0].code, 'storage')
    assert.match(t.errors[0].message, /quota/)
    assert.equal(t.client.state, 'closed')

    const u = setup({ storage: { get () { throw new Error('denied') }, set () { throw new Error('denied') } } })
    const s2 = await connected(u, { seq: 9 })
    assert.equal(s2.identify().since, undefined)
    assert.equal(u.errors[0].code, 'storage')
    await u.client.close()
    assert.equal(u.errors.length, 2)
    fail = false
  })
})

describe('send', () => {
  test('buffered up to 100 before the welcome, then false; flushed in order after it, paced by the upstream limit', async () => {
    const t = setup()
    for (let i = 0; i < 100; i++) assert.equal(t.client.send({ i }), true)
    assert.equal(t.client.send({ i: 100 }), false)
    const s = await connected(t)
    const at = []
    const send = s.send.bind(s)
    s.send = (data) => { at.push(t.clock.now()); send(data) }
    assert.equal(t.client.send('while identifying'), false, 'still full')
    assert.equal(s.sent.length, 1, 'only the first message before the welcome')
    s.welcome({ upstream_rate: 10, upstream_burst: 20 })
    assert.equal(s.sent.length, 1 + 19, 'the burst less one at once')
    await advance(t, 1000)
    assert.ok(s.sent.length >= 1 + 19 + 8 && s.sent.length <= 1 + 19 + 9, `about 9/s after the burst: ${s.sent.length - 1} sent`)
    assert.equal(t.client.send({ now: true }), true, 'queued behind the buffer')
    await advance(t, 10000)
    assert.deepEqual(s.sent.slice(1, 101).map((x) => JSON.parse(x).i), [...Array(100).keys()])
    assert.equal(s.sent.at(-1), '{"now":true}')
    assert.equal(s.sent.length, 102)
    // The worker's limiter (golang.org/x/time/rate: 10/s, burst 20, full at the first message)
    // never runs dry.
    let tokens = 20
    let last = at[0]
    for (const x of at) {
      tokens = Math.min(20, tokens + (x - last) * 10 / 1000)
      last = x
      assert.ok(tokens >= 1, `over the limit at ${x} ms`)
      tokens -= 1
    }
    await t.client.close()
  })

  test('without upstream_rate in the welcome, the default limit (10/s, burst 20) paces the sends', async () => {
    const t = setup()
    const s = await connected(t, {})
    for (let i = 0; i < 30; i++) assert.equal(t.client.send({ i }), true)
    assert.equal(s.sent.length, 1 + 19)
    await advance(t, 2000)
    assert.equal(s.sent.length, 1 + 30)
    await t.client.close()
  })

  test('a new session starts with a full bucket; a pace timer of the old one does nothing', async () => {
    const t = setup({ random: () => 0 })
    const s = await connected(t, { upstream_rate: 1, upstream_burst: 2 })
    for (let i = 0; i < 5; i++) t.client.send({ i })
    assert.equal(s.sent.length, 1 + 1)
    s.end(1012, 'server restarting')
    await advance(t, 0)
    const s2 = t.ws.last()
    assert.notEqual(s2, s)
    s2.open()
    s2.welcome({ upstream_rate: 1, upstream_burst: 2 })
    assert.equal(s2.sent.length, 1 + 1, 'one at once on the new session')
    await advance(t, 5000)
    assert.equal(s.sent.length, 2, 'nothing more on the old socket')
    assert.deepEqual(s2.sent.slice(1).map((x) => JSON.parse(x).i), [1, 2, 3, 4])
    await t.client.close()
  })

  test('text as text, bytes as binary; no JSON form throws', async () => {
    const t = setup()
    const s = await connected(t, {})
    t.client.send('hello')
    t.client.send(new Uint8Array([9, 8, 7]).subarray(1))
    t.client.send(new Uint8Array([1]).buffer)
    assert.equal(s.sent[1], 'hello')
    assert.ok(s.sent[2] instanceof ArrayBuffer)
    assert.deepEqual([...new Uint8Array(s.sent[2])], [8, 7])
    assert.deepEqual([...new Uint8Array(s.sent[3])], [1])
    assert.throws(() => t.client.send(undefined), TypeError)
    assert.throws(() => t.client.send(10n), TypeError)
    await t.client.close()
  })
})

describe('options', () => {
  test('bad options throw at construction, with the reason', () => {
    const WebSocket = class {}
    const cases = [
      [{}, /url/],
      [{ url: 'http://x/ws', name: 'a', WebSocket }, /url/],
      [{ url: 'ws://x/ws', WebSocket }, /name or a token/],
      [{ url: 'ws://x/ws', name: '', WebSocket }, /name/],
      [{ url: 'ws://x/ws', token: 5, WebSocket }, /token/],
      [{ url: 'ws://x/ws', name: 'a', WebSocket, storage: {} }, /storage/],
      [{ url: 'ws://x/ws', name: 'a', WebSocket: 'ws' }, /WebSocket/],
      [{ url: 'ws://x/ws', name: 'a', WebSocket, clock: { now: 1 } }, /clock/]
    ]
    for (const [o, re] of cases) assert.throws(() => new NotifyClient(o), re, JSON.stringify(o))
  })

  test('no WebSocket anywhere (Node 20 without the option): a clear error', () => {
    assert.equal(typeof globalThis.WebSocket, 'undefined')
    assert.throws(() => new NotifyClient({ url: 'ws://x/ws', name: 'a' }), /pass the WebSocket option/)
  })

  test('unknown events are refused', () => {
    const t = setup()
    assert.throws(() => t.client.on('mesage', () => {}), /unknown event/)
    assert.throws(() => t.client.on('message', 'fn'), /function/)
  })
})

test('base64 decoding', () => {
  const b = (s) => [...decodeBase64(s)]
  assert.deepEqual(b(''), [])
  assert.deepEqual(b('AA=='), [0])
  assert.deepEqual(b('AAE='), [0, 1])
  assert.deepEqual(b('AAEC'), [0, 1, 2])
  assert.deepEqual(b('AAECAw'), [0, 1, 2, 3])
  const all = new Uint8Array(256).map((_, i) => i)
  assert.deepEqual(decodeBase64(Buffer.from(all).toString('base64')), all)
  for (const bad of ['A', 'A===', '@@@@', 'AA=A', 'é']) assert.throws(() => decodeBase64(bad), SyntaxError, bad)
})
