// ack(seq): the ack frame through the send path, and the seq values it refuses.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setup, connected, settle } from './setup.mjs'

test('ack sends {"type":"ack","seq":N} after the welcome, buffered before it', async () => {
  const t = setup()
  assert.equal(t.client.ack(3), true, 'buffered before connecting')
  const s = await connected(t, { seq: 0 })
  await settle()
  assert.equal(t.client.ack(42), true)
  assert.equal(t.client.ack(9223372036854775807n), true)
  await settle()
  const acks = s.sent.slice(1)
  assert.deepEqual(acks, ['{"type":"ack","seq":3}', '{"type":"ack","seq":42}', '{"type":"ack","seq":9223372036854775807}'])
  await t.client.close()
})

test('ack refuses anything but an integer from 1 to 2^63-1', async () => {
  const t = setup()
  for (const bad of [0, -1, 1.5, NaN, Infinity, 2 ** 53, '1', null, undefined, 0n, 9223372036854775808n]) {
    assert.throws(() => t.client.ack(bad), RangeError, String(bad))
  }
  await t.client.close()
})
