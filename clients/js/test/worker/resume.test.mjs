// Resume against a real worker and NATS server with JetStream: dropped connections, a
// killed worker, an app restart, the reset and unavailable welcomes.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { startNATS, startWorker, natsConnect, publishDurable, publishCore, waitFor } from '../helpers/worker.mjs'
import { recordedClient, recordingWebSocket, sharedStorage } from './common.mjs'

let nats, worker, nc, js

before(async () => {
  nats = await startNATS()
  worker = await startWorker({ natsURL: nats.url, env: { NOTIFY_APP_PING: '500ms' } })
  nc = await natsConnect(nats.url)
  js = nc.jetstream()
})

test('a dropped connection resumes with no loss and no duplicate', async () => {
  const { WebSocket, sockets } = recordingWebSocket()
  const c = recordedClient({ url: worker.url, name: 'drop', WebSocket, storage: sharedStorage() })
  c.client.connect()
  await c.waitWelcomes(1)
  const acked = []
  const publishing = (async () => {
    for (let i = 0; i < 300; i++) acked.push(await publishDurable(js, 'drop', { i }))
  })()
  for (let cut = 1; cut <= 3; cut++) {
    await waitFor(() => c.messages.length >= cut * 60, { what: `${cut * 60} messages` })
    sockets.at(-1).terminate() // the connection dies under the client: it sees 1006
    await c.waitWelcomes(cut + 1)
  }
  await publishing
  await c.waitMessages(300)
  await c.client.close()
  assert.deepEqual(c.seqs(), acked, 'every acked seq once, in order')
  assert.deepEqual(c.messages.map((m) => m.data.i), [...Array(300).keys()])
  assert.ok(c.welcomes.every((w) => w.recovered === true), JSON.stringify(c.welcomes))
  assert.ok(c.welcomes.slice(1).some((w) => w.replayed > 0), 'some messages came in a replay')
  assert.ok(c.errors.every((e) => e.code === 1006), c.errors.map((e) => e.code).join())
})

test('the worker killed and restarted while durable messages are published', async () => {
  const c = recordedClient({ url: worker.url, name: 'killed', storage: sharedStorage() })
  c.client.connect()
  await c.waitWelcomes(1)
  const acked = []
  for (let i = 0; i < 20; i++) acked.push(await publishDurable(js, 'killed', { i }))
  await c.waitMessages(20)
  await worker.kill('SIGKILL')
  for (let i = 20; i < 40; i++) acked.push(await publishDurable(js, 'killed', { i })) // stored while no worker runs
  await worker.restart()
  for (let i = 40; i < 60; i++) acked.push(await publishDurable(js, 'killed', { i }))
  await c.waitMessages(60, 30000)
  await c.client.close()
  assert.deepEqual(c.seqs(), acked)
  assert.deepEqual(c.messages.map((m) => m.data.i), [...Array(60).keys()])
  assert.equal(c.welcomes.at(-1).recovered, true)
})

test('the cursor survives a new client instance (an app restart)', async () => {
  const storage = sharedStorage()
  const first = recordedClient({ url: worker.url, name: 'restarted', storage })
  first.client.connect()
  await first.waitWelcomes(1)
  const acked = [await publishDurable(js, 'restarted', 'one'), await publishDurable(js, 'restarted', 'two')]
  await first.waitMessages(2)
  await first.client.close()
  assert.equal(storage.map.get(`${worker.url}#restarted`), String(acked[1]))

  const missed = []
  for (let i = 0; i < 5; i++) missed.push(await publishDurable(js, 'restarted', { missed: i }))
  const second = recordedClient({ url: worker.url, name: 'restarted', storage })
  second.client.connect()
  await second.waitMessages(5)
  assert.equal(second.welcomes[0].recovered, true)
  assert.equal(second.welcomes[0].replayed, 5)
  assert.deepEqual(second.seqs(), missed)
  assert.ok(second.messages.every((m) => m.meta.replay))
  await second.client.close()
})

test('core messages carry no seq; binary payloads arrive as Uint8Array', async () => {
  const c = recordedClient({ url: worker.url, name: 'kinds', storage: sharedStorage() })
  c.client.connect()
  await c.waitWelcomes(1)
  await publishCore(nc, 'kinds', { typing: true })
  const seq = await publishDurable(js, 'kinds', new Uint8Array([0, 255, 1]))
  await c.waitMessages(2)
  await c.client.close()
  // No order between a core and a durable message (docs/protocol.md section 8: core ones arrive
  // as they come; the durable one takes the stream's path).
  const core = c.messages.find((m) => m.meta.seq === undefined)
  const durable = c.messages.find((m) => m.meta.seq !== undefined)
  assert.deepEqual(core, { data: { typing: true }, meta: { seq: undefined, replay: false } })
  assert.ok(durable.data instanceof Uint8Array)
  assert.deepEqual([...durable.data], [0, 255, 1])
  assert.equal(durable.meta.seq, seq)
})

test('a stored cursor ahead of the stream: welcome reset, cursor lowered, delivery goes on', async () => {
  const storage = sharedStorage()
  storage.set(`${worker.url}#ahead`, '900000000')
  const c = recordedClient({ url: worker.url, name: 'ahead', storage })
  c.client.connect()
  await c.waitWelcomes(1)
  const w = c.welcomes[0]
  assert.equal(w.recovered, false)
  assert.equal(w.reason, 'reset')
  assert.equal(c.client.cursor, w.seq)
  const seq = await publishDurable(js, 'ahead', 'after reset')
  await c.waitMessages(1)
  await c.client.close()
  assert.deepEqual(c.seqs(), [seq])
  assert.equal(storage.map.get(`${worker.url}#ahead`), String(seq))
})

test('durable support off: welcome unavailable, the stored cursor left alone', async () => {
  const off = await startWorker({ natsURL: nats.url, env: { NOTIFY_STREAM: 'off' } })
  const storage = sharedStorage()
  storage.set(`${off.url}#nostream`, '42')
  const c = recordedClient({ url: off.url, name: 'nostream', storage })
  c.client.connect()
  await c.waitWelcomes(1)
  assert.equal(c.welcomes[0].recovered, false)
  assert.equal(c.welcomes[0].reason, 'unavailable')
  await publishCore(nc, 'nostream', 'ephemeral')
  await c.waitMessages(1)
  assert.equal(c.client.cursor, 42)
  await c.client.close()
  assert.equal(storage.map.get(`${off.url}#nostream`), '42')
  await off.stop()
})

test('ping cursors keep a quiet client current', async () => {
  const c = recordedClient({ url: worker.url, name: 'quiet', storage: sharedStorage() })
  c.client.connect()
  await c.waitWelcomes(1)
  const start = c.client.cursor
  const other = await publishDurable(js, 'someone-else', 'not for quiet')
  await waitFor(() => c.client.cursor >= other, { what: 'a ping cursor past another user\'s message' })
  assert.ok(c.client.cursor > start)
  assert.equal(c.messages.length, 0)
  await c.client.close()
})
