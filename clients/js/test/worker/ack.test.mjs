// ack() against a real worker: the ack of a durable message is published to
// notify.event.ack.<name> (seen with nats.js), and not upstream.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { startNATS, startWorker, natsConnect, publishDurable, waitFor } from '../helpers/worker.mjs'
import { recordedClient, sharedStorage } from './common.mjs'

let nats, nc, js

before(async () => {
  nats = await startNATS()
  nc = await natsConnect(nats.url)
  js = nc.jetstream()
})

test('ack(meta.seq) publishes {"name","seq","worker","at"} to notify.event.ack.<name>', async () => {
  const worker = await startWorker({ natsURL: nats.url, waitStream: true })
  const acks = []
  const upstream = []
  const ackSub = nc.subscribe('notify.event.ack.fay', { callback: (err, m) => { if (!err) acks.push(m.json()) } })
  const inSub = nc.subscribe('notify.inbound.fay', { callback: (err, m) => { if (!err) upstream.push(m.string()) } })
  await nc.flush()
  const c = recordedClient({ url: worker.url, name: 'fay', storage: sharedStorage() })
  c.client.on('message', (_data, meta) => { if (meta.seq !== undefined) c.client.ack(meta.seq) })
  c.client.connect()
  await c.waitWelcomes(1)
  const seq = await publishDurable(js, 'fay', '{"title":"shown"}')
  await waitFor(() => acks.length >= 1, { what: 'the ack event' })
  assert.equal(acks[0].name, 'fay')
  assert.equal(acks[0].seq, seq)
  assert.equal(typeof acks[0].worker, 'string')
  assert.ok(!Number.isNaN(Date.parse(acks[0].at)), `at ${acks[0].at}`)
  // An ordinary send after it is the first upstream message: the ack was not one.
  c.client.send('after')
  await waitFor(() => upstream.length >= 1, { what: 'the upstream message' })
  assert.deepEqual(upstream, ['after'])
  assert.deepEqual(c.errors, [])
  await c.client.close()
  ackSub.unsubscribe()
  inSub.unsubscribe()
  await worker.stop()
})
