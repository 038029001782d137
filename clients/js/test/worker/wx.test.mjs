// The mini-program transport, driven through a wx shim over ws against the real worker:
// wx.connectSocket SocketTasks, wx storage as the default cursor store, and
// onNetworkStatusChange / onAppShow as the prompt reconnects.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { NotifyClient } from '../../src/index.js'
import { startNATS, startWorker, natsConnect, publishDurable, waitFor } from '../helpers/worker.mjs'

/** The parts of the wx API the client may touch, over ws; the global socket API throws. */
function wxShim () {
  const storage = new Map()
  const listeners = { net: new Set(), show: new Set() }
  const refuse = (name) => () => { throw new Error(`wx.${name} must not be used: it is shared by every socket`) }
  const shim = {
    tasks: [],
    storage,
    listeners,
    connectSocket ({ url }) {
      const ws = new WebSocket(url)
      ws.binaryType = 'arraybuffer'
      const task = {
        ws,
        onOpen: (fn) => ws.on('open', () => fn({ header: {} })),
        onMessage: (fn) => ws.on('message', (data, isBinary) => fn({ data: isBinary ? data : data.toString() })),
        onClose: (fn) => ws.on('close', (code, reason) => fn({ code, reason: reason.toString() })),
        onError: (fn) => ws.on('error', (err) => fn({ errMsg: err.message })),
        send: ({ data }) => ws.send(data),
        close: ({ code, reason } = {}) => ws.close(code, reason)
      }
      shim.tasks.push(task)
      return task
    },
    getStorageSync: (k) => (storage.has(k) ? storage.get(k) : ''),
    setStorageSync: (k, v) => { storage.set(k, v) },
    onNetworkStatusChange: (fn) => listeners.net.add(fn),
    offNetworkStatusChange: (fn) => listeners.net.delete(fn),
    onAppShow: (fn) => listeners.show.add(fn),
    offAppShow: (fn) => listeners.show.delete(fn),
    onSocketOpen: refuse('onSocketOpen'),
    onSocketMessage: refuse('onSocketMessage'),
    onSocketClose: refuse('onSocketClose'),
    onSocketError: refuse('onSocketError'),
    sendSocketMessage: refuse('sendSocketMessage'),
    closeSocket: refuse('closeSocket')
  }
  return shim
}

/** Real timers stretched 1000 times: a backoff never ends within the test, only a nudge reconnects. */
const slowClock = {
  setTimeout: (fn, ms) => setTimeout(fn, ms * 1000),
  clearTimeout: (h) => clearTimeout(h),
  now: () => Date.now()
}

let nats, worker, js
before(async () => {
  nats = await startNATS()
  worker = await startWorker({ natsURL: nats.url })
  js = (await natsConnect(nats.url)).jetstream()
})
after(() => { delete globalThis.wx })

test('mini-program: SocketTask per connection, wx storage, network and app-show reconnects', async () => {
  const wx = wxShim()
  globalThis.wx = wx
  const client = new NotifyClient({ url: worker.url, name: 'miniapp', clock: slowClock })
  const messages = []
  const welcomes = []
  const states = []
  client.on('message', (data, meta) => messages.push({ data, meta }))
  client.on('welcome', (w) => welcomes.push(w))
  client.on('state', (s) => states.push(s))
  client.connect()
  await waitFor(() => welcomes.length === 1, { what: 'the welcome' })
  assert.equal(wx.tasks.length, 1)
  assert.equal(wx.listeners.net.size, 1)
  assert.equal(wx.listeners.show.size, 1)

  const acked = [await publishDurable(js, 'miniapp', { n: 1 }), await publishDurable(js, 'miniapp', new Uint8Array([7, 0, 7]))]
  await waitFor(() => messages.length === 2, { what: 'two messages' })
  assert.deepEqual(messages[0].data, { n: 1 })
  assert.deepEqual([...messages[1].data], [7, 0, 7])

  // The network drops: the socket dies, the client waits in a (stretched) backoff.
  wx.tasks[0].ws.terminate()
  await waitFor(() => client.state === 'disconnected', { what: 'disconnected' })
  acked.push(await publishDurable(js, 'miniapp', { n: 3 }))
  for (const fn of wx.listeners.net) fn({ isConnected: false, networkType: 'none' })
  assert.equal(wx.tasks.length, 1, 'offline: no attempt')
  for (const fn of wx.listeners.net) fn({ isConnected: true, networkType: 'wifi' })
  await waitFor(() => welcomes.length === 2, { what: 'the welcome after the network came back' })
  assert.equal(wx.tasks.length, 2)
  assert.equal(welcomes[1].replayed, 1)

  // The app goes to the background and its socket is closed; showing it reconnects.
  wx.tasks[1].ws.terminate()
  await waitFor(() => client.state === 'disconnected', { what: 'disconnected again' })
  acked.push(await publishDurable(js, 'miniapp', { n: 4 }))
  for (const fn of wx.listeners.show) fn({ scene: 1001 })
  await waitFor(() => messages.length === 4, { what: 'the replay after onAppShow' })
  assert.equal(wx.tasks.length, 3)

  await client.close()
  assert.deepEqual(messages.map((m) => m.meta.seq), acked)
  assert.equal(wx.storage.get(`${worker.url}#miniapp`), String(client.cursor))
  assert.equal(wx.listeners.net.size, 0, 'offNetworkStatusChange')
  assert.equal(wx.listeners.show.size, 0, 'offAppShow')
  assert.equal(states.at(-1), 'closed')

  // A new instance (the mini-program restarted) resumes from wx storage.
  const missed = await publishDurable(js, 'miniapp', { n: 5 })
  const again = new NotifyClient({ url: worker.url, name: 'miniapp', clock: slowClock })
  const got = []
  again.on('message', (d, meta) => got.push(meta.seq))
  again.connect()
  await waitFor(() => got.length === 1, { what: 'the replay to the new instance' })
  assert.deepEqual(got, [missed])
  await again.close()
})
