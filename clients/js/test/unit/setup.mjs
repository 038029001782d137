import { NotifyClient } from '../../src/index.js'
import { FakeClock, fakeWebSocket, mapStorage, settle } from '../helpers/fakes.mjs'

export const URL = 'ws://worker.test/ws'

/** A client over a scripted socket and a manual clock, with every event recorded. */
export function setup ({ random = () => 0.5, storage = mapStorage(), ...options } = {}) {
  const clock = new FakeClock()
  const ws = fakeWebSocket()
  const client = new NotifyClient({ url: URL, name: 'alice', WebSocket: ws.FakeSocket, clock, random, storage, ...options })
  const states = []
  const errors = []
  const messages = []
  const welcomes = []
  client.on('state', (s) => states.push(s))
  client.on('error', (e) => errors.push(e))
  client.on('message', (data, meta) => messages.push({ data, meta }))
  client.on('welcome', (w) => welcomes.push(w))
  return { client, clock, ws, storage, states, errors, messages, welcomes }
}

/** Connects and waits for the socket of the first attempt, opened. */
export async function connected (t, welcome) {
  t.client.connect()
  await settle()
  const s = t.ws.last()
  s.open()
  if (welcome) s.welcome(welcome)
  return s
}

/** Advances the clock and lets the attempt that may start open its socket. */
export async function advance (t, ms) {
  t.clock.advance(ms)
  await settle()
}

export { settle }
