/**
 * notify-worker-client: a client for notify-worker's WebSocket protocol v2.
 *
 * Sequences are JavaScript numbers: cursors above 2^53 (Number.MAX_SAFE_INTEGER) are not
 * supported.
 */

/** The connection state reported by the 'state' event. */
export type NotifyState = 'connecting' | 'connected' | 'disconnected' | 'closed'

/** Where the cursor is kept. get may return a Promise; set's result may be a Promise. */
export interface CursorStorage {
  get(key: string): string | null | undefined | Promise<string | null | undefined>
  set(key: string, value: string): void | Promise<unknown>
}

/** Time as the client sees it; injectable for tests and advanced use. */
export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: any): void
  /** Milliseconds, monotonic enough for intervals. */
  now(): number
}

/** The subset of the WeChat mini-program API the client uses. */
export interface WxLike {
  connectSocket(options: { url: string; fail?: (res: { errMsg?: string }) => void }): WxSocketTask
  getStorageSync?(key: string): any
  setStorageSync?(key: string, value: string): void
  onNetworkStatusChange?(fn: (res: { isConnected: boolean }) => void): void
  offNetworkStatusChange?(fn: (res: { isConnected: boolean }) => void): void
  onAppShow?(fn: () => void): void
  offAppShow?(fn: () => void): void
}

/** A WeChat SocketTask, as far as the client uses it. */
export interface WxSocketTask {
  onOpen(fn: () => void): void
  onMessage(fn: (res: { data: string | ArrayBuffer }) => void): void
  onClose(fn: (res: { code?: number; reason?: string }) => void): void
  onError(fn: (res: { errMsg?: string }) => void): void
  send(options: { data: string | ArrayBuffer; fail?: (res: unknown) => void }): void
  close(options: { code?: number; reason?: string }): void
}

export interface NotifyClientOptions {
  /** ws:// or wss:// URL of the worker, e.g. wss://push.example.com/ws. */
  url: string
  /** The name to identify as (NOTIFY_AUTH=none, or beside a token whose sub it equals). */
  name?: string
  /** A JWT, or a function returning one (called before every connection attempt). */
  token?: string | (() => string | Promise<string>)
  /** Cursor storage; default localStorage, wx storage, or memory. */
  storage?: CursorStorage
  /** Storage key for the cursor; default url + '#' + name, or url without a name. */
  cursorKey?: string
  /** WebSocket constructor (in Node: require('ws')); default the platform's. */
  WebSocket?: new (url: string) => any
  /** The mini-program API object; default the global wx. For tests and advanced use. */
  wx?: WxLike
  /** Timers and time; default the global ones. For tests and advanced use. */
  clock?: Partial<Clock>
  /** A value in [0, 1) for the reconnect jitter; default Math.random. For tests and advanced use. */
  random?: () => number
}

/** The welcome frame as the 'welcome' event receives it (without its type). */
export interface Welcome {
  name: string
  v?: number
  /** U: the last stream sequence the replay covers. */
  seq?: number
  /** false: something after the cursor may be missing; reload from the app's backend. */
  recovered?: boolean
  /** K: how many replayed messages follow. */
  replayed?: number
  /** App-ping interval in milliseconds. */
  ping?: number
  /** This session's upstream limit: messages per second, and the burst; send() paces by it. */
  upstream_rate?: number
  upstream_burst?: number
  /** Why recovered is false: 'reset' | 'retention' | 'replay_max' | 'unavailable'. */
  reason?: string
  [key: string]: unknown
}

export interface MessageMeta {
  /** Stream sequence of a durable message; undefined for an ephemeral (core) one. */
  seq: number | undefined
  /** True for the messages replayed after a welcome. */
  replay: boolean
}

/**
 * What the 'error' event receives. code is the close code (a number) or one of:
 * 'token' (the token function threw, rejected or returned no string), 'timeout' (no welcome
 * within 15 s), 'stale' (no frame for two ping intervals), 'transport' (the socket could not
 * be opened or written), 'storage' (the cursor could not be read or stored), 'protocol'
 * (an undecodable frame), 'listener' (an event listener threw).
 */
export interface NotifyError extends Error {
  code: number | 'token' | 'timeout' | 'stale' | 'transport' | 'storage' | 'protocol' | 'listener'
  /** The worker's reason (its error frame, or the close frame's reason), or ''. */
  reason: string
  cause?: unknown
}

/** A JSON value as a message's data. */
export type JSONValue = null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue }

export interface NotifyClientEvents {
  /** data: the parsed JSON payload, or a Uint8Array for a binary (data_b64) payload. */
  message: (data: any, meta: MessageMeta) => void
  welcome: (welcome: Welcome) => void
  state: (state: NotifyState) => void
  error: (error: NotifyError) => void
}

export class NotifyClient {
  constructor(options: NotifyClientOptions)
  readonly state: NotifyState
  /** The highest stream sequence seen, or null before any. */
  readonly cursor: number | null
  on<E extends keyof NotifyClientEvents>(event: E, listener: NotifyClientEvents[E]): this
  off<E extends keyof NotifyClientEvents>(event: E, listener?: NotifyClientEvents[E]): this
  connect(): this
  /**
   * Objects as JSON text, strings as text, Uint8Array/ArrayBuffer as binary. Buffered (up to
   * 100, in order) while not welcomed and while sending now would go over the worker's upstream
   * limit (the welcome's upstream_rate / upstream_burst); false when the buffer is full.
   */
  send(data: unknown): boolean
  /**
   * Acknowledges the durable message seq (a message's meta.seq): sends {"type":"ack","seq":seq}
   * through send() (paced, buffered, under the same limit); the worker publishes it to
   * <prefix>.event.ack.<name>. Returns as send(). Throws a RangeError unless seq is an integer
   * from 1 to 2^63-1 (a safe integer number, or a bigint).
   */
  ack(seq: number | bigint): boolean
  /** Stops; resolves once the cursor is stored. */
  close(): Promise<void>
}

/** Full-jitter backoff: random() * min(BACKOFF_MAX, BACKOFF_BASE * 2^attempt) ms. */
export function backoffDelay(attempt: number, random: () => number): number
export const BACKOFF_BASE: number
export const BACKOFF_MAX: number
export const SEND_BUFFER_SIZE: number
export const WELCOME_TIMEOUT: number
export const STABLE_AFTER: number
export const STORE_INTERVAL: number
export const RESTART_JITTER: number
