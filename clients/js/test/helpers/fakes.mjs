/**
 * Narrow fakes for unit tests of the client's rules: a manual clock and a scripted
 * WebSocket. Behaviour against the real worker is tested with ./worker.mjs.
 */

/** Timers that run only when advance() moves time past them. */
export class FakeClock {
  constructor () {
    this.t = 0
    this.timers = new Map()
    this.nextId = 1
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++
      this.timers.set(id, { at: this.t + Math.max(0, ms || 0), fn, ms })
      return id
    }
    this.clearTimeout = (id) => { this.timers.delete(id) }
    this.now = () => this.t
  }

  /** Runs, in time order, every timer due within ms (including ones they set). */
  advance (ms) {
    const end = this.t + ms
    for (;;) {
      let next
      for (const entry of this.timers) {
        if (entry[1].at <= end && (!next || entry[1].at < next[1].at)) next = entry
      }
      if (!next) break
      this.timers.delete(next[0])
      this.t = next[1].at
      next[1].fn()
    }
    this.t = end
  }

  /** Delays (from now) of the pending timers, sorted. */
  pending () {
    return [...this.timers.values()].map((x) => x.at - this.t).sort((a, b) => a - b)
  }
}

/** Lets promise callbacks (the client's async token and storage steps) run. */
export function settle () {
  return new Promise((resolve) => setImmediate(resolve))
}

/** A WebSocket constructor whose instances the test drives by hand. */
export function fakeWebSocket () {
  const sockets = []
  class FakeSocket {
    constructor (url) {
      this.url = url
      this.sent = []
      this.closedWith = null
      this.terminated = false
      sockets.push(this)
    }

    send (data) { this.sent.push(data) }
    close (code, reason) { this.closedWith = { code, reason } }
    terminate () { this.terminated = true }

    /** The handshake completes. */
    open () { this.onopen({}) }
    /** The worker sends a frame (objects as JSON text). */
    frame (obj) { this.onmessage({ data: typeof obj === 'string' || obj instanceof ArrayBuffer ? obj : JSON.stringify(obj) }) }
    /** The connection ends with a close code. */
    end (code, reason = '') { this.onclose({ code, reason }) }
    /** The first message, parsed. */
    identify () { return JSON.parse(this.sent[0]) }
    welcome (extra = {}) {
      this.frame({ type: 'welcome', name: 'alice', v: 2, seq: 0, recovered: true, replayed: 0, ping: 25000, ...extra })
    }
  }
  return { FakeSocket, sockets, last: () => sockets[sockets.length - 1] }
}

/** A storage over a Map that records every write. */
export function mapStorage (initial = {}) {
  const map = new Map(Object.entries(initial))
  const writes = []
  return {
    map,
    writes,
    get: (k) => (map.has(k) ? map.get(k) : null),
    set: (k, v) => { writes.push([k, v]); map.set(k, v) }
  }
}
