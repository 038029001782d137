/**
 * Real-process test harness for notify-worker-client.
 *
 * Builds the worker of this repository and runs it, with a NATS server (JetStream) in a
 * process of its own, on loopback ports chosen by the kernel. Every process started here
 * is killed when the test file's root `after` hook runs (and, as a backstop, when the
 * Node process exits), so a failing test leaks nothing.
 *
 *   import { buildWorker, startNATS, startWorker, natsConnect, publishDurable } from './helpers/worker.mjs'
 *
 *   const nats = await startNATS()                       // {url, port, dir, stop()}
 *   const worker = await startWorker({ natsURL: nats.url, env: { NOTIFY_APP_PING: '1s' } })
 *   worker.url                                           // ws://127.0.0.1:P/ws
 *   await worker.kill('SIGKILL'); await worker.restart() // same port, same NATS
 *   const nc = await natsConnect(nats.url)
 *   const seq = await publishDurable(nc.jetstream(), 'alice', { title: 'hi' })  // PubAck seq
 *
 * - buildWorker() -> {worker, bench}: `go build` of the worker (repository root) and of
 *   ./bench, once per process, into a directory under os.tmpdir() keyed by the repository
 *   path; `go build` leaves an up-to-date binary alone, so later test files pay nothing.
 * - startNATS({jetstreamDir}) -> {url, port, dir, stop()}: `bench natsd -port -1 -jetstream DIR`
 *   (the server picks a free port and prints its URL). DIR defaults to a fresh temporary
 *   directory, removed by stop(). NATS outlives a killed worker, so durable messages published
 *   meanwhile are stored.
 * - startWorker({natsURL, env, addr, waitStream}) -> {url, httpURL, addr, kill(sig), restart(),
 *   stop(), metric(name), logs()}: runs the worker with NOTIFY_ADDR=addr (default
 *   127.0.0.1:0, the port then read from the "notify-worker serving" log line),
 *   NOTIFY_NATS_URL, NOTIFY_LOG_FORMAT=json, NOTIFY_DRAIN_DELAY=0s, plus env (no NOTIFY_*
 *   variable of the calling environment leaks in). Resolves once /readyz answers 200 and,
 *   unless env.NOTIFY_STREAM is 'off' or waitStream is false, /metrics shows
 *   `notify_stream_ready 1`. restart() starts it again on the same port; kill(sig) defaults
 *   to SIGKILL; stop() is SIGTERM (a graceful shutdown) then SIGKILL past a deadline.
 * - natsConnect(url) -> a nats.js connection (closed by the teardown too).
 * - publishDurable(js, name, payload) -> the PubAck's stream sequence (subject
 *   durable.notify.user.<name>); publishDurableAll(js, payload) for durable.notify.all;
 *   publishCore(nc, name, payload) publishes to notify.user.<name> and flushes.
 *   A payload that is a string or Uint8Array is sent as it is, anything else as JSON.
 * - waitFor(condition, {timeout, interval, what}) polls a condition with a deadline.
 */
import { spawn, execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after } from 'node:test'
import { connect as natsConnectRaw } from 'nats'

/** Root of the notify-worker repository (the Go module). */
export const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url))

const live = new Set() // running child processes
const connections = new Set() // open NATS connections
const tempDirs = new Set()

after(stopAll)
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL')
})

/** Kills every process and closes every NATS connection this harness started. */
export async function stopAll () {
  await Promise.all([...connections].map((nc) => nc.close().catch(() => {})))
  connections.clear()
  await Promise.all([...live].map((child) => killChild(child, 'SIGKILL')))
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
  tempDirs.clear()
}

let built
/**
 * Builds the worker and the bench tool (which carries the NATS server) once per process.
 * @returns {Promise<{worker: string, bench: string}>}
 */
export function buildWorker () {
  if (!built) {
    const key = createHash('sha256').update(repoRoot).digest('hex').slice(0, 12)
    const dir = join(tmpdir(), 'notify-worker-js-test', key)
    mkdirSync(dir, { recursive: true })
    const bins = { worker: join(dir, 'notify-worker'), bench: join(dir, 'bench') }
    built = Promise.all([
      goBuild(bins.worker, '.'),
      goBuild(bins.bench, './bench')
    ]).then(() => bins)
  }
  return built
}

function goBuild (out, pkg) {
  return new Promise((resolve, reject) => {
    execFile('go', ['build', '-o', out, pkg], { cwd: repoRoot, timeout: 300_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`go build ${pkg}: ${err.message}\n${stderr}`))
      else resolve()
    })
  })
}

/**
 * Starts a NATS server with JetStream in its own process.
 * @param {{jetstreamDir?: string}} [opts]
 */
export async function startNATS ({ jetstreamDir } = {}) {
  const { bench } = await buildWorker()
  const dir = jetstreamDir ?? tempDir('nwjs-nats-')
  const child = track(spawn(bench, ['natsd', '-port', '-1', '-jetstream', dir, '-max-run', '15m'], {
    stdio: ['ignore', 'pipe', 'pipe']
  }))
  const lines = collectLines(child)
  const line = await lines.waitFor((l) => l.startsWith('nats://'), 15_000, 'the NATS server URL')
  const url = line.trim()
  return {
    url,
    port: Number(new URL(url).port),
    dir,
    stop: () => killChild(child, 'SIGTERM')
  }
}

/**
 * Starts a worker process against an external NATS server.
 * @param {{natsURL: string, env?: Record<string, string>, addr?: string, waitStream?: boolean}} opts
 */
export async function startWorker ({ natsURL, env = {}, addr = '127.0.0.1:0', waitStream } = {}) {
  const { worker: bin } = await buildWorker()
  const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NOTIFY_')))
  const wantStream = waitStream ?? env.NOTIFY_STREAM !== 'off'
  let child
  let lines
  let current = addr
  const history = []

  async function start () {
    child = track(spawn(bin, [], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...baseEnv,
        NOTIFY_ADDR: current,
        NOTIFY_NATS_URL: natsURL,
        NOTIFY_LOG_FORMAT: 'json',
        NOTIFY_DRAIN_DELAY: '0s',
        ...env
      }
    }))
    lines = collectLines(child, history)
    const serving = await lines.waitFor((l) => l.includes('"notify-worker serving"'), 20_000, 'the worker to serve')
    current = JSON.parse(serving).addr
    handle.addr = current
    handle.url = `ws://${current}/ws`
    handle.httpURL = `http://${current}`
    await waitFor(async () => (await httpGet(`${handle.httpURL}/readyz`)).status === 200,
      { timeout: 20_000, what: 'the worker to be ready' })
    if (wantStream) {
      await waitFor(async () => (await metric(handle.httpURL, 'notify_stream_ready')) === 1,
        { timeout: 20_000, what: 'the durable stream' })
    }
  }

  const handle = {
    url: '',
    httpURL: '',
    addr: '',
    /** Sends sig (default SIGKILL) and waits for the process to exit. */
    kill: (sig = 'SIGKILL') => killChild(child, sig),
    /** Stops the worker if it runs, then starts it again on the same address. */
    restart: async () => {
      await killChild(child, 'SIGKILL')
      await start()
    },
    /** Graceful stop (SIGTERM), SIGKILL past 20 s. */
    stop: () => killChild(child, 'SIGTERM'),
    /** The value of an unlabelled metric, or undefined. */
    metric: (name) => metric(handle.httpURL, name),
    /** Every log line the worker wrote, across restarts. */
    logs: () => history.slice()
  }
  await start()
  return handle
}

/** A nats.js connection, closed at teardown. */
export async function natsConnect (url) {
  const nc = await natsConnectRaw({ servers: url, reconnect: true, maxReconnectAttempts: -1 })
  connections.add(nc)
  nc.closed().then(() => connections.delete(nc))
  return nc
}

/** Publishes durably to durable.notify.user.<name>; resolves with the stream sequence. */
export async function publishDurable (js, name, payload) {
  const ack = await js.publish(`durable.notify.user.${name}`, encode(payload))
  return ack.seq
}

/** Publishes durably to durable.notify.all; resolves with the stream sequence. */
export async function publishDurableAll (js, payload) {
  const ack = await js.publish('durable.notify.all', encode(payload))
  return ack.seq
}

/** Publishes to notify.user.<name> (core, ephemeral) and flushes. */
export async function publishCore (nc, name, payload) {
  nc.publish(`notify.user.${name}`, encode(payload))
  await nc.flush()
}

/**
 * Polls condition (sync or async) until it returns a truthy value, which is returned.
 * Rejects after timeout ms, naming what it waited for.
 */
export async function waitFor (condition, { timeout = 10_000, interval = 25, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeout
  let lastError
  for (;;) {
    try {
      const v = await condition()
      if (v) return v
    } catch (err) {
      lastError = err
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}` + (lastError ? `: ${lastError.message}` : ''))
    }
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

function encode (payload) {
  if (payload instanceof Uint8Array) return payload
  return new TextEncoder().encode(typeof payload === 'string' ? payload : JSON.stringify(payload))
}

function tempDir (prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  tempDirs.add(dir)
  return dir
}

function track (child) {
  live.add(child)
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    live.delete(child)
    resolve({ code, signal })
  }))
  return child
}

async function killChild (child, sig) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return
  child.kill(sig)
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  await child.exited
  clearTimeout(timer)
}

/** Splits a child's stdout and stderr into lines and lets a caller wait for one. */
function collectLines (child, history = []) {
  const waiters = new Set()
  const seen = []
  const feed = (stream) => {
    let rest = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk) => {
      rest += chunk
      let i
      while ((i = rest.indexOf('\n')) >= 0) {
        const line = rest.slice(0, i)
        rest = rest.slice(i + 1)
        seen.push(line)
        history.push(line)
        for (const w of waiters) if (w.match(line)) w.resolve(line)
      }
    })
  }
  feed(child.stdout)
  feed(child.stderr)
  return {
    waitFor (match, timeout, what) {
      const found = seen.find(match)
      if (found) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const w = {
          match,
          resolve: (line) => { done(); resolve(line) }
        }
        const timer = setTimeout(() => { done(); reject(new Error(`timed out waiting for ${what}; output:\n${seen.join('\n')}`)) }, timeout)
        const onExit = () => { done(); reject(new Error(`process exited while waiting for ${what}; output:\n${seen.join('\n')}`)) }
        const done = () => { clearTimeout(timer); waiters.delete(w); child.off('exit', onExit) }
        child.once('exit', onExit)
        waiters.add(w)
      })
    }
  }
}

async function httpGet (url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
  const body = await res.text()
  return { status: res.status, body }
}

async function metric (httpURL, name) {
  const { body } = await httpGet(`${httpURL}/metrics`)
  for (const line of body.split('\n')) {
    if (line.startsWith(name + ' ')) return Number(line.slice(name.length + 1))
  }
  return undefined
}
