import WebSocket from 'ws'
import { NotifyClient } from '../../src/index.js'
import { waitFor } from '../helpers/worker.mjs'

/** ws, with every socket it opens recorded so a test can cut one under the client. */
export function recordingWebSocket () {
  const sockets = []
  class Recording extends WebSocket {
    constructor (url) {
      super(url)
      sockets.push(this)
    }
  }
  return { WebSocket: Recording, sockets }
}

/** A shared in-memory storage, as an app's persistent store would be across restarts. */
export function sharedStorage () {
  const map = new Map()
  return { map, get: (k) => (map.has(k) ? map.get(k) : null), set: (k, v) => { map.set(k, v) } }
}

/** A client with every event recorded; random defaults to a short, fixed jitter. */
export function recordedClient (options) {
  const client = new NotifyClient({ WebSocket, random: () => 0.1, ...options })
  const rec = { client, states: [], errors: [], messages: [], welcomes: [] }
  client.on('state', (s) => rec.states.push(s))
  client.on('error', (e) => rec.errors.push(e))
  client.on('message', (data, meta) => rec.messages.push({ data, meta }))
  client.on('welcome', (w) => rec.welcomes.push(w))
  rec.waitWelcomes = (n, timeout = 15000) => waitFor(() => rec.welcomes.length >= n, { timeout, what: `${n} welcomes` })
  rec.waitMessages = (n, timeout = 15000) => waitFor(() => rec.messages.length >= n, { timeout, what: `${n} messages (have ${rec.messages.length})` })
  rec.seqs = () => rec.messages.filter((m) => m.meta.seq !== undefined).map((m) => m.meta.seq)
  return rec
}
