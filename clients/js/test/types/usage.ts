// Typical use of the package, type-checked by test/types.test.mjs. It imports the package by
// its own name, so the exports map and dist/index.d.ts are what is checked.
import { NotifyClient, backoffDelay } from 'notify-worker-client'
import type { CursorStorage, NotifyError, NotifyState, Welcome, MessageMeta } from 'notify-worker-client'

const storage: CursorStorage = {
  get: async (key: string) => window.localStorage.getItem(key),
  set: (key: string, value: string) => window.localStorage.setItem(key, value)
}

const client = new NotifyClient({
  url: 'wss://push.example.com/ws',
  token: async () => 'jwt',
  cursorKey: 'me',
  storage,
  random: Math.random,
  clock: { now: () => Date.now() }
})

client
  .on('message', (data: unknown, meta: MessageMeta) => {
    const seq: number | undefined = meta.seq
    const replay: boolean = meta.replay
    if (data instanceof Uint8Array) console.log(data.byteLength, seq, replay)
  })
  .on('welcome', (w: Welcome) => {
    if (w.recovered === false) console.log('reload from the backend', w.reason)
  })
  .on('state', (s: NotifyState) => console.log(s))
  .on('error', (e: NotifyError) => {
    const code: number | string = e.code
    console.log(code, e.reason, e.message)
  })

client.connect()
const sent: boolean = client.send({ hello: 'world' })
client.send(new Uint8Array([1, 2]))
const cursor: number | null = client.cursor
const state: NotifyState = client.state
const done: Promise<void> = client.close()
const delay: number = backoffDelay(3, Math.random)

const byName = new NotifyClient({ url: 'ws://127.0.0.1:8888/ws', name: 'alice', WebSocket })
byName.off('message')

// @ts-expect-error: unknown event names are refused
client.on('mesage', () => {})
// @ts-expect-error: url is required
new NotifyClient({ name: 'alice' })

export { sent, cursor, state, done, delay }
