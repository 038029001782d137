// Reconnect rules: backoff bounds and jitter, close codes, welcome timeout, staleness,
// token failures, prompt reconnects. Time is the injected clock; nothing waits for real.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { backoffDelay, BACKOFF_BASE, BACKOFF_MAX, NotifyClient } from '../../src/index.js'
import { setup, connected, advance, settle } from './setup.mjs'
import { FakeClock, fakeWebSocket } from '../helpers/fakes.mjs'

describe('backoff', () => {
  test('bounds: min(30 s, 0.5 s * 2^attempt), full jitter', () => {
    const want = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    want.forEach((bound, attempt) => {
      assert.equal(backoffDelay(attempt, () => 0), 0)
      assert.equal(backoffDelay(attempt, () => 0.5), bound / 2)
      assert.ok(backoffDelay(attempt, () => 0.999999) < bound)
    })
    assert.equal(BACKOFF_BASE, 500)
    assert.equal(BACKOFF_MAX, 30000)
    assert.equal(backoffDelay(5000, () => 0.5), 15000)
  })

  test('failed attempts wait random() * bound, growing to the cap', async () => {
    const draws = [0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.8, 0.6, 0.4]
    let i = 0
    const t = setup({ random: () => draws[i++] })
    t.client.connect()
    await settle()
    for (let attempt = 0; attempt < draws.length; attempt++) {
      const n = t.ws.sockets.length
      t.ws.last().end(1006)
      const delay = draws[attempt] * Math.min(30000, 500 * 2 ** attempt)
      assert.equal(t.client.state, 'disconnected')
      if (delay >= 1) {
        await advance(t, delay - 1)
        assert.equal(t.ws.sockets.length, n, `attempt ${attempt}: no socket before ${delay} ms`)
        await advance(t, 1)
      } else await advance(t, delay)
      assert.equal(t.ws.sockets.length, n + 1, `attempt ${attempt}: a socket at ${delay} ms`)
      assert.equal(t.client.state, 'connecting')
    }
    assert.equal(t.errors.length, draws.length)
    assert.ok(t.errors.every((e) => e.code === 1006))
    await t.client.close()
  })

  test('reset once a welcomed connection stayed open 10 s, not before', async () => {
    const t = setup({ random: () => 0.5 })
    await connected(t)
    for (let i = 0; i < 4; i++) { // four failures: the next bound is 8000
      t.ws.last().end(1013)
      assert.deepEqual(t.clock.pending(), [0.5 * 500 * 2 ** i])
      await advance(t, t.clock.pending()[0])
      t.ws.last().open()
    }
    t.ws.last().welcome()
    await advance(t, 9999) // welcomed, but not for 10 s
    t.ws.last().end(1006)
    assert.deepEqual(t.clock.pending(), [4000], 'still backing off: 0.5 * 8000')
    await advance(t, 4000)
    t.ws.last().open()
    t.ws.last().welcome()
    await advance(t, 10000)
    t.ws.last().end(1006)
    assert.deepEqual(t.clock.pending(), [250], 'reset: 0.5 * 500')
    await t.client.close()
  })
})

describe('close codes', () => {
  for (const code of [1008, 1009]) {
    test(`${code} stops: state closed, error with the reason, no second attempt`, async () => {
      const t = setup()
      const s = await connected(t)
      s.frame({ type: 'error', error: 'name may contain only A-Z a-z 0-9 _ -' })
      s.end(code, 'truncated close reason')
      assert.equal(t.client.state, 'closed')
      assert.equal(t.errors.length, 1)
      assert.equal(t.errors[0].code, code)
      assert.equal(t.errors[0].reason, 'name may contain only A-Z a-z 0-9 _ -')
      assert.ok(t.errors[0] instanceof Error)
      assert.deepEqual(t.states, ['connecting', 'closed'])
      assert.deepEqual(t.clock.pending(), [])
      await advance(t, 3600000)
      assert.equal(t.ws.sockets.length, 1)
    })
  }

  test('4001 calls the token function again and reconnects at once', async () => {
    let calls = 0
    const t = setup({ name: undefined, token: async () => `token-${++calls}` })
    await connected(t, {})
    assert.deepEqual(t.ws.last().identify(), { token: 'token-1', v: 2 })
    t.ws.last().frame({ type: 'error', error: 'token expired' })
    t.ws.last().end(4001, 'token expired')
    assert.equal(t.errors[0].code, 4001)
    assert.equal(t.errors[0].reason, 'token expired')
    assert.deepEqual(t.clock.pending(), [0])
    await advance(t, 0)
    assert.equal(calls, 2)
    t.ws.last().open()
    assert.deepEqual(t.ws.last().identify(), { token: 'token-2', v: 2, since: 0 })
    // Expired again before any welcome: the token function hands out stale tokens; back off.
    t.ws.last().end(4001, 'token expired')
    assert.deepEqual(t.clock.pending(), [250])
    await t.client.close()
  })

  test('4001 with a fixed token string stops', async () => {
    const t = setup({ token: 'fixed' })
    const s = await connected(t, {})
    assert.deepEqual(s.identify(), { name: 'alice', token: 'fixed', v: 2 })
    s.end(4001, 'token expired')
    assert.equal(t.client.state, 'closed')
    assert.deepEqual(t.clock.pending(), [])
  })

  for (const code of [1012, 1001]) {
    test(`${code} reconnects after random() * 1 s`, async () => {
      const t = setup({ random: () => 0.25 })
      await connected(t, {})
      t.ws.last().end(code, 'server restarting: reconnect and resume')
      assert.deepEqual(t.clock.pending(), [250])
      await advance(t, 250)
      assert.equal(t.ws.sockets.length, 2)
      await t.client.close()
    })
  }

  for (const code of [1013, 4002, 1006, 1000, 1011, 4999]) {
    test(`${code} backs off`, async () => {
      const t = setup({ random: () => 0.5 })
      await connected(t, {})
      t.ws.last().end(code)
      assert.deepEqual(t.clock.pending(), [250])
      assert.equal(t.client.state, 'disconnected')
      await t.client.close()
      assert.deepEqual(t.clock.pending(), [])
    })
  }
})

describe('failed attempts without a close code', () => {
  test('a token function that throws or rejects: error, back off, then connect', async () => {
    const outcomes = [() => { throw new Error('backend down') }, () => Promise.reject(new Error('503')), () => '', () => 'ok']
    let i = 0
    const t = setup({ name: undefined, token: () => outcomes[i++]() })
    t.client.connect()
    await settle()
    assert.equal(t.ws.sockets.length, 0)
    assert.equal(t.errors[0].code, 'token')
    assert.match(t.errors[0].message, /backend down/)
    assert.deepEqual(t.clock.pending(), [250])
    await advance(t, 250)
    assert.equal(t.errors[1].code, 'token')
    assert.deepEqual(t.clock.pending(), [500])
    await advance(t, 500)
    assert.equal(t.errors[2].code, 'token')
    assert.match(t.errors[2].message, /empty string/)
    await advance(t, 1000)
    assert.equal(t.ws.sockets.length, 1)
    assert.equal(t.errors.length, 3)
    await t.client.close()
  })

  test('no welcome within 15 s: the socket is dropped, error timeout, back off', async () => {
    const t = setup({ random: () => 0.5 })
    const s = await connected(t)
    await advance(t, 14999)
    assert.equal(t.errors.length, 0)
    await advance(t, 1)
    assert.equal(t.errors[0].code, 'timeout')
    assert.ok(s.terminated)
    assert.equal(t.client.state, 'disconnected')
    s.end(1006) // the dropped socket's own close is not another failure
    assert.equal(t.errors.length, 1)
    assert.deepEqual(t.clock.pending(), [250])
    await t.client.close()
  })

  test('a WebSocket constructor that throws counts as a failed attempt', async () => {
    const clock = new FakeClock()
    let n = 0
    class Throwing { constructor () { n++; throw new SyntaxError('bad URL') } }
    const errors = []
    const c = new NotifyClient({ url: 'ws://x/ws', name: 'a', WebSocket: Throwing, clock, random: () => 0.5 })
    c.on('error', (e) => errors.push(e))
    c.connect()
    await settle()
    assert.equal(errors[0].code, 'transport')
    assert.equal(c.state, 'disconnected')
    clock.advance(250)
    await settle()
    assert.equal(n, 2)
    await c.close()
  })
})

describe('staleness', () => {
  test('no frame for two ping intervals: closed and reconnected', async () => {
    const t = setup({ random: () => 0.5 })
    const s = await connected(t, { ping: 1000 })
    await advance(t, 1500)
    s.frame({ type: 'ping', seq: 0 }) // a frame: alive
    await advance(t, 1999)
    assert.equal(t.errors.length, 0)
    await advance(t, 1)
    assert.equal(t.errors[0].code, 'stale')
    assert.ok(s.terminated)
    assert.equal(t.client.state, 'disconnected')
    await advance(t, 250)
    assert.equal(t.ws.sockets.length, 2)
    await t.client.close()
  })

  test('no ping in the welcome: no staleness timer', async () => {
    const t = setup()
    await connected(t, { ping: undefined })
    assert.deepEqual(t.clock.pending(), [])
    await t.client.close()
  })
})

describe('prompt reconnect', () => {
  test('online and visibilitychange in a browser', async (tt) => {
    const listeners = new Map()
    const doc = { visibilityState: 'hidden', listeners: new Map() }
    doc.addEventListener = (type, fn) => doc.listeners.set(type, fn)
    doc.removeEventListener = (type, fn) => { if (doc.listeners.get(type) === fn) doc.listeners.delete(type) }
    globalThis.addEventListener = (type, fn) => listeners.set(type, fn)
    globalThis.removeEventListener = (type, fn) => { if (listeners.get(type) === fn) listeners.delete(type) }
    globalThis.document = doc
    tt.after(() => { delete globalThis.addEventListener; delete globalThis.removeEventListener; delete globalThis.document })

    const t = setup({ random: () => 0.99 })
    const s = await connected(t, { ping: 1000 })
    assert.ok(listeners.has('online') && doc.listeners.has('visibilitychange'))
    s.end(1006)
    for (let i = 0; i < 5; i++) { // back off to a long wait
      await advance(t, 60000)
      t.ws.last().end(1006)
    }
    assert.ok(t.clock.pending()[0] > 10000)
    const n = t.ws.sockets.length
    listeners.get('online')()
    await settle()
    assert.equal(t.ws.sockets.length, n + 1, 'online: reconnect now')
    t.ws.last().end(1006)
    doc.listeners.get('visibilitychange')() // still hidden: nothing
    await settle()
    assert.equal(t.ws.sockets.length, n + 1)
    doc.visibilityState = 'visible'
    doc.listeners.get('visibilitychange')()
    await settle()
    assert.equal(t.ws.sockets.length, n + 2, 'visible: reconnect now')

    // Connected: a staleness check, using the time since the last frame.
    const live = t.ws.last()
    live.open()
    live.welcome({ ping: 1000 })
    t.clock.t += 2500 // timers frozen in a background tab
    listeners.get('online')()
    assert.equal(t.errors.at(-1).code, 'stale')
    assert.ok(live.terminated)

    await t.client.close()
    assert.equal(listeners.size, 0)
    assert.equal(doc.listeners.size, 0)
  })

  test('wx.onNetworkStatusChange and wx.onAppShow in a mini-program, removed by close()', async () => {
    const calls = []
    const wx = {
      net: null,
      show: null,
      connectSocket () { throw new Error('not used: WebSocket option wins') },
      onNetworkStatusChange (fn) { calls.push('onNet'); this.net = fn },
      offNetworkStatusChange (fn) { calls.push('offNet'); if (this.net === fn) this.net = null },
      onAppShow (fn) { calls.push('onShow'); this.show = fn },
      offAppShow (fn) { calls.push('offShow'); if (this.show === fn) this.show = null }
    }
    const t = setup({ random: () => 0.99, wx })
    await connected(t, {})
    t.ws.last().end(1006)
    const n = t.ws.sockets.length
    wx.net({ isConnected: false })
    await settle()
    assert.equal(t.ws.sockets.length, n)
    wx.net({ isConnected: true, networkType: 'wifi' })
    await settle()
    assert.equal(t.ws.sockets.length, n + 1)
    t.ws.last().end(1006)
    wx.show({ scene: 1001 })
    await settle()
    assert.equal(t.ws.sockets.length, n + 2)
    await t.client.close()
    assert.deepEqual(calls.sort(), ['offNet', 'offShow', 'onNet', 'onShow'])
    assert.equal(wx.net, null)
    assert.equal(wx.show, null)
  })
})

test('a listener that throws is reported as an error event, and the client goes on', async () => {
  const clock = new FakeClock()
  const ws = fakeWebSocket()
  const c = new NotifyClient({ url: 'ws://x/ws', name: 'a', WebSocket: ws.FakeSocket, clock, random: () => 0.5 })
  const errors = []
  const got = []
  c.on('message', () => { throw new Error('app bug') })
  c.on('message', (d) => got.push(d))
  c.on('error', (e) => errors.push(e))
  c.connect()
  await settle()
  ws.last().open()
  ws.last().welcome()
  ws.last().frame({ type: 'msg', seq: 1, data: 1 })
  ws.last().frame({ type: 'msg', seq: 2, data: 2 })
  assert.deepEqual(got, [1, 2])
  assert.equal(errors.length, 2)
  assert.equal(errors[0].code, 'listener')
  assert.equal(errors[0].cause.message, 'app bug')
  await c.close()
})
