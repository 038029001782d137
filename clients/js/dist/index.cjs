/*! notify-worker-client 0.1.0 | MIT */
var __defProp = Object.defineProperty;
var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __hasOwnProp = Object.prototype.hasOwnProperty;
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};
var __copyProps = (to, from, except, desc) => {
  if (from && typeof from === "object" || typeof from === "function") {
    for (let key of __getOwnPropNames(from))
      if (!__hasOwnProp.call(to, key) && key !== except)
        __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
  }
  return to;
};
var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);

// src/index.js
var index_exports = {};
__export(index_exports, {
  BACKOFF_BASE: () => BACKOFF_BASE,
  BACKOFF_MAX: () => BACKOFF_MAX,
  NotifyClient: () => NotifyClient,
  RESTART_JITTER: () => RESTART_JITTER,
  SEND_BUFFER_SIZE: () => SEND_BUFFER_SIZE,
  STABLE_AFTER: () => STABLE_AFTER,
  STORE_INTERVAL: () => STORE_INTERVAL,
  WELCOME_TIMEOUT: () => WELCOME_TIMEOUT,
  backoffDelay: () => backoffDelay
});
module.exports = __toCommonJS(index_exports);

// src/backoff.js
var BACKOFF_BASE = 500;
var BACKOFF_MAX = 3e4;
function backoffDelay(attempt, random) {
  return random() * Math.min(BACKOFF_MAX, BACKOFF_BASE * Math.pow(2, attempt));
}

// src/base64.js
var ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
var table;
function decodeBase64(s) {
  if (!table) {
    table = new Uint8Array(128).fill(255);
    for (let i = 0; i < ALPHABET.length; i++) table[ALPHABET.charCodeAt(i)] = i;
  }
  let len = s.length;
  while (len > 0 && s.charCodeAt(len - 1) === 61) len--;
  if (len % 4 === 1 || s.length - len > 2) throw new SyntaxError("invalid base64");
  const out = new Uint8Array(len * 3 >> 2);
  let acc = 0;
  let bits = 0;
  let j = 0;
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? table[c] : 255;
    if (v === 255) throw new SyntaxError("invalid base64");
    acc = (acc << 6 | v) & 16777215;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[j++] = acc >> bits & 255;
    }
  }
  return out;
}

// src/storage.js
function memoryStorage() {
  const values = /* @__PURE__ */ new Map();
  return {
    get: (key) => values.has(key) ? values.get(key) : null,
    set: (key, value) => {
      values.set(key, value);
    }
  };
}
function wxStorage(wx2) {
  return {
    get(key) {
      const v = wx2.getStorageSync(key);
      return typeof v === "string" && v !== "" ? v : null;
    },
    set(key, value) {
      wx2.setStorageSync(key, value);
    }
  };
}
function webStorage(ls) {
  return {
    get: (key) => ls.getItem(key),
    set: (key, value) => {
      ls.setItem(key, value);
    }
  };
}
function defaultStorage(wx2) {
  if (wx2 && typeof wx2.getStorageSync === "function" && typeof wx2.setStorageSync === "function") {
    return wxStorage(wx2);
  }
  try {
    const ls = globalThis.localStorage;
    if (ls && typeof ls.getItem === "function") return webStorage(ls);
  } catch (_) {
  }
  return memoryStorage();
}

// src/transport.js
var noop = () => {
};
function webSocketTransport(WebSocketCtor) {
  return {
    kind: "websocket",
    open(url, h) {
      const ws = new WebSocketCtor(url);
      try {
        ws.binaryType = "arraybuffer";
      } catch (_) {
      }
      ws.onopen = () => h.open();
      ws.onmessage = (ev) => h.message(ev.data);
      ws.onclose = (ev) => h.close(ev.code, ev.reason || "");
      ws.onerror = noop;
      return {
        send(data) {
          ws.send(data);
        },
        close(code, reason, abort) {
          ws.onopen = ws.onmessage = ws.onclose = noop;
          try {
            if (abort && typeof ws.terminate === "function") ws.terminate();
            else ws.close(code, reason);
          } catch (_) {
          }
        }
      };
    }
  };
}
function wxTransport(wx2) {
  return {
    kind: "wx",
    open(url, h) {
      let done = false;
      const finish = (code, reason) => {
        if (done) return;
        done = true;
        h.close(code, reason);
      };
      const task = wx2.connectSocket({
        url,
        fail: (res) => finish(1006, res && res.errMsg || "wx.connectSocket failed")
      });
      if (!task || typeof task.onOpen !== "function") {
        throw new Error("wx.connectSocket returned no SocketTask");
      }
      task.onOpen(() => {
        if (!done) h.open();
      });
      task.onMessage((res) => {
        if (!done) h.message(res && res.data);
      });
      task.onClose((res) => finish(res && res.code || 1006, res && res.reason || ""));
      task.onError((res) => {
        if (done) return;
        finish(1006, res && res.errMsg || "socket error");
        try {
          task.close({});
        } catch (_) {
        }
      });
      return {
        send(data) {
          task.send({ data, fail: noop });
        },
        close(code, reason) {
          done = true;
          try {
            task.close({ code, reason });
          } catch (_) {
          }
        }
      };
    }
  };
}

// src/client.js
var SEND_BUFFER_SIZE = 100;
var WELCOME_TIMEOUT = 15e3;
var STABLE_AFTER = 1e4;
var STORE_INTERVAL = 1e3;
var RESTART_JITTER = 1e3;
var DEFAULT_UPSTREAM = { rate: 10, burst: 20 };
var UPSTREAM_MARGIN = 0.9;
var EVENTS = ["message", "welcome", "state", "error"];
function clientError(message, code, reason, cause) {
  const err = new Error(message);
  err.code = code;
  err.reason = reason === void 0 ? "" : reason;
  if (cause !== void 0) err.cause = cause;
  return err;
}
function detectWx() {
  return typeof wx !== "undefined" ? wx : void 0;
}
function detectWebSocket() {
  return typeof WebSocket !== "undefined" ? WebSocket : void 0;
}
function isFunction(f) {
  return typeof f === "function";
}
function encodeOutgoing(data) {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return data;
  if (ArrayBuffer.isView(data)) {
    return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  }
  const text = JSON.stringify(data);
  if (text === void 0) throw new TypeError("NotifyClient.send: the value has no JSON form");
  return text;
}
function ackSeq(seq) {
  if (typeof seq === "number" && Number.isSafeInteger(seq) && seq >= 1) return String(seq);
  if (typeof seq === "bigint") {
    const text = seq.toString();
    if (/^[1-9][0-9]{0,18}$/.test(text) && (text.length < 19 || text <= "9223372036854775807")) return text;
  }
  throw new RangeError("NotifyClient.ack: seq must be an integer from 1 to 2^63-1");
}
function toBytes(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return data;
}
var NotifyClient = class {
  /**
   * @param {import('./index').NotifyClientOptions} options
   */
  constructor(options) {
    const o = options || {};
    if (typeof o.url !== "string" || !/^wss?:\/\/./i.test(o.url)) {
      throw new TypeError("NotifyClient: url must be a ws:// or wss:// URL");
    }
    if (o.name !== void 0 && (typeof o.name !== "string" || o.name === "")) {
      throw new TypeError("NotifyClient: name must be a non-empty string");
    }
    if (o.token !== void 0 && !(typeof o.token === "string" && o.token !== "") && !isFunction(o.token)) {
      throw new TypeError("NotifyClient: token must be a non-empty string or a function returning one");
    }
    if (o.name === void 0 && o.token === void 0) {
      throw new TypeError("NotifyClient: give a name or a token");
    }
    if (o.cursorKey !== void 0 && typeof o.cursorKey !== "string") {
      throw new TypeError("NotifyClient: cursorKey must be a string");
    }
    if (o.storage !== void 0 && !(o.storage && isFunction(o.storage.get) && isFunction(o.storage.set))) {
      throw new TypeError("NotifyClient: storage must have get(key) and set(key, value)");
    }
    if (o.WebSocket !== void 0 && !isFunction(o.WebSocket)) {
      throw new TypeError("NotifyClient: WebSocket must be a constructor");
    }
    if (o.random !== void 0 && !isFunction(o.random)) {
      throw new TypeError("NotifyClient: random must be a function");
    }
    const clock = o.clock || {};
    for (const k of ["setTimeout", "clearTimeout", "now"]) {
      if (clock[k] !== void 0 && !isFunction(clock[k])) {
        throw new TypeError(`NotifyClient: clock.${k} must be a function`);
      }
    }
    const wxApi = o.wx !== void 0 ? o.wx : detectWx();
    const wxUsable = !!wxApi && isFunction(wxApi.connectSocket);
    const globalWebSocket = detectWebSocket();
    if (o.WebSocket) this._transport = webSocketTransport(o.WebSocket);
    else if (wxUsable) this._transport = wxTransport(wxApi);
    else if (isFunction(globalWebSocket)) this._transport = webSocketTransport(globalWebSocket);
    else {
      throw new Error('NotifyClient: no WebSocket in this environment: pass the WebSocket option (in Node: require("ws"))');
    }
    this._url = o.url;
    this._name = o.name;
    this._token = o.token;
    this._key = o.cursorKey !== void 0 ? o.cursorKey : o.name !== void 0 ? o.url + "#" + o.name : o.url;
    this._storage = o.storage || defaultStorage(wxApi);
    this._wx = wxApi;
    this._random = o.random || Math.random;
    this._setTimeout = clock.setTimeout || ((fn, ms) => setTimeout(fn, ms));
    this._clearTimeout = clock.clearTimeout || ((h) => clearTimeout(h));
    this._now = clock.now || (() => Date.now());
    this._handlers = {};
    this._state = "closed";
    this._running = false;
    this._gen = 0;
    this._conn = null;
    this._welcomed = false;
    this._welcomedAt = 0;
    this._errorReason = "";
    this._attempt = 0;
    this._expiredInARow = 0;
    this._retryTimer = null;
    this._welcomeTimer = null;
    this._staleTimer = null;
    this._pingMs = 0;
    this._lastFrameAt = 0;
    this._cursor = null;
    this._loaded = false;
    this._replayLeft = 0;
    this._welcomeSeq = void 0;
    this._pingSeq = void 0;
    this._storedCursor = null;
    this._lastStoreAt = -Infinity;
    this._storeTimer = null;
    this._storing = Promise.resolve();
    this._buffer = [];
    this._paceTimer = null;
    this._upRate = 0;
    this._upBurst = 0;
    this._tokens = 0;
    this._tokensAt = 0;
    this._detach = null;
  }
  /** 'connecting' | 'connected' | 'disconnected' | 'closed' */
  get state() {
    return this._state;
  }
  /** The highest stream sequence seen (see README, "The cursor"), or null before any. */
  get cursor() {
    return this._cursor;
  }
  /**
   * Adds a listener for 'message', 'welcome', 'state' or 'error'.
   * @returns {this}
   */
  on(event, fn) {
    if (EVENTS.indexOf(event) < 0) throw new TypeError(`NotifyClient.on: unknown event ${JSON.stringify(event)}`);
    if (!isFunction(fn)) throw new TypeError("NotifyClient.on: listener must be a function");
    (this._handlers[event] || (this._handlers[event] = [])).push(fn);
    return this;
  }
  /**
   * Removes a listener added with on(); without fn, every listener of the event.
   * @returns {this}
   */
  off(event, fn) {
    const list = this._handlers[event];
    if (!list) return this;
    if (fn === void 0) delete this._handlers[event];
    else {
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }
  /**
   * Starts connecting (and reconnecting until close() or a 1008/1009 close). Calling it while
   * running does nothing.
   * @returns {this}
   */
  connect() {
    if (this._running) return this;
    this._running = true;
    this._attachNudges();
    this._begin();
    return this;
  }
  /**
   * Sends to the worker, which publishes it upstream: objects as JSON text, strings as text,
   * Uint8Array/ArrayBuffer as binary. Before the welcome, and whenever sending now would go
   * over the worker's upstream limit (the welcome's upstream_rate and upstream_burst), it is
   * buffered (up to 100, in order) and sent as soon as the connection and the limit allow.
   * @returns {boolean} true when sent or buffered, false when the buffer is full
   * @throws {TypeError} when the value has no JSON form (undefined, a function, a BigInt, a cycle)
   */
  send(data) {
    const frame = encodeOutgoing(data);
    if (this._welcomed && this._conn && this._buffer.length === 0 && this._take()) {
      try {
        this._conn.send(frame);
        return true;
      } catch (_) {
      }
    }
    if (this._buffer.length >= SEND_BUFFER_SIZE) return false;
    this._buffer.push(frame);
    this._flush();
    return true;
  }
  /**
   * Tells the worker that the app has shown the durable message seq (meta.seq of a 'message'
   * event): sends {"type":"ack","seq":seq} through send(), so it is paced and buffered like any
   * upstream message and counts against the same limit. The worker publishes it to
   * <prefix>.event.ack.<name> for the backend, not upstream.
   * @param {number|bigint} seq a stream sequence: an integer from 1 to 2^63-1 (a number must be
   *   a safe integer; use a bigint above 2^53-1)
   * @returns {boolean} as send(): true when sent or buffered, false when the buffer is full
   * @throws {RangeError} when seq is not such an integer
   */
  ack(seq) {
    return this.send('{"type":"ack","seq":' + ackSeq(seq) + "}");
  }
  /**
   * Closes the connection, stops reconnecting, and stores the latest cursor. Messages still
   * buffered by send() stay buffered for a later connect().
   * @returns {Promise<void>} settles once the cursor is stored (a storage failure is reported
   *   as an 'error' event; the promise still resolves)
   */
  close() {
    this._running = false;
    this._clearRetry();
    this._release({ code: 1e3, reason: "client closed" });
    this._detachNudges();
    this._setState("closed");
    return this._storeNow();
  }
  // --- attempts -------------------------------------------------------------------------
  _begin() {
    this._clearRetry();
    const gen = ++this._gen;
    this._setState("connecting");
    this._welcomeTimer = this._setTimeout(() => {
      if (gen !== this._gen) return;
      this._fail(clientError(`no welcome within ${WELCOME_TIMEOUT} ms`, "timeout"), true);
    }, WELCOME_TIMEOUT);
    this._prepare().then((token) => {
      if (gen === this._gen) this._open(gen, token);
    }, (err) => {
      if (gen !== this._gen) return;
      this._fail(clientError(`token function failed: ${err && err.message ? err.message : String(err)}`, "token", void 0, err));
    });
  }
  /** Loads the stored cursor (first attempt only) and gets the token. */
  async _prepare() {
    if (!this._loaded) await this._loadCursor();
    if (!isFunction(this._token)) return this._token;
    const token = await this._token();
    if (typeof token !== "string" || token === "") {
      throw new TypeError("it returned " + (token === "" ? "an empty string" : typeof token) + ", not a token");
    }
    return token;
  }
  _open(gen, token) {
    let conn;
    try {
      conn = this._transport.open(this._url, {
        open: () => {
          if (gen === this._gen) this._identify(token);
        },
        message: (data) => {
          if (gen === this._gen) this._onFrame(data);
        },
        close: (code, reason) => {
          if (gen === this._gen) this._onClose(code, reason);
        }
      });
    } catch (err) {
      if (gen === this._gen) this._fail(clientError(`cannot open a connection: ${err && err.message}`, "transport", void 0, err));
      return;
    }
    if (gen !== this._gen) {
      conn.close(1e3, "", true);
      return;
    }
    this._conn = conn;
  }
  _identify(token) {
    const first = {};
    if (this._name !== void 0) first.name = this._name;
    if (token !== void 0) first.token = token;
    first.v = 2;
    if (this._cursor !== null) first.since = this._cursor;
    try {
      this._conn.send(JSON.stringify(first));
    } catch (err) {
      this._fail(clientError(`cannot send the first message: ${err && err.message}`, "transport", void 0, err), true);
    }
  }
  /** Ends the current connection (if any) and invalidates its callbacks and timers. */
  _release(closeWith) {
    this._gen++;
    if (this._conn && closeWith) this._conn.close(closeWith.code, closeWith.reason, closeWith.abort);
    this._conn = null;
    this._welcomed = false;
    this._errorReason = "";
    this._replayLeft = 0;
    this._pingSeq = void 0;
    if (this._welcomeTimer !== null) this._clearTimeout(this._welcomeTimer);
    if (this._staleTimer !== null) this._clearTimeout(this._staleTimer);
    if (this._paceTimer !== null) this._clearTimeout(this._paceTimer);
    this._welcomeTimer = this._staleTimer = this._paceTimer = null;
  }
  /** A failed attempt that did not end with a close code: report it and back off. */
  _fail(err, abort) {
    this._release({ code: 1e3, reason: String(err.code), abort });
    this._emitError(err);
    this._retryWithBackoff();
  }
  _onClose(code, reason) {
    const why = this._errorReason || reason || "";
    const welcomed = this._welcomed;
    if (welcomed && this._now() - this._welcomedAt >= STABLE_AFTER) this._attempt = 0;
    this._release(null);
    const err = clientError(`connection closed with code ${code}${why ? ": " + why : ""}`, code, why);
    this._emitError(err);
    if (code === 1008 || code === 1009 || code === 4001 && !isFunction(this._token)) {
      this._stop();
    } else if (code === 4001) {
      if (this._expiredInARow++ === 0) this._retry(0);
      else this._retryWithBackoff();
    } else if (code === 1012 || code === 1001) {
      this._retry(this._random() * RESTART_JITTER);
    } else {
      this._retryWithBackoff();
    }
  }
  _stop() {
    if (!this._running) return;
    this._running = false;
    this._clearRetry();
    this._detachNudges();
    this._setState("closed");
    this._storeNow();
  }
  _retryWithBackoff() {
    const delay = backoffDelay(this._attempt, this._random);
    this._attempt++;
    this._retry(delay);
  }
  _retry(delay) {
    if (!this._running) return;
    this._clearRetry();
    this._setState("disconnected");
    if (!this._running) return;
    this._retryTimer = this._setTimeout(() => {
      this._retryTimer = null;
      if (this._running) this._begin();
    }, delay);
  }
  _clearRetry() {
    if (this._retryTimer !== null) this._clearTimeout(this._retryTimer);
    this._retryTimer = null;
  }
  // --- frames ---------------------------------------------------------------------------
  _onFrame(data) {
    this._lastFrameAt = this._now();
    if (typeof data !== "string") {
      if (this._welcomed) this._deliver(toBytes(data), void 0, false);
      return;
    }
    let f;
    try {
      f = JSON.parse(data);
    } catch (_) {
      if (this._welcomed) this._deliver(data, void 0, false);
      return;
    }
    const type = f !== null && typeof f === "object" ? f.type : void 0;
    if (type === "welcome") this._onWelcome(f);
    else if (type === "msg") {
      if (this._welcomed) this._onMsg(f);
    } else if (type === "ping") this._onPing(f);
    else if (type === "error") this._errorReason = typeof f.error === "string" ? f.error : JSON.stringify(f.error);
    else if (this._welcomed) this._deliver(f, void 0, false);
  }
  _onWelcome(w) {
    if (this._welcomed) return;
    this._welcomed = true;
    this._welcomedAt = this._now();
    this._expiredInARow = 0;
    if (this._welcomeTimer !== null) this._clearTimeout(this._welcomeTimer);
    this._welcomeTimer = null;
    const gen = this._gen;
    const seq = typeof w.seq === "number" ? w.seq : void 0;
    const replayed = typeof w.replayed === "number" && w.replayed > 0 ? w.replayed : 0;
    this._welcomeSeq = seq;
    this._replayLeft = replayed;
    if (w.recovered === false && w.reason === "reset") {
      if (seq !== void 0) this._setCursor(seq);
    } else if (w.recovered === false && w.reason === "unavailable") {
    } else if (replayed === 0) {
      this._advance(seq);
    }
    this._pingMs = typeof w.ping === "number" && w.ping > 0 ? w.ping : 0;
    if (this._pingMs > 0) this._armStale(2 * this._pingMs);
    this._startPacing(w.upstream_rate, w.upstream_burst);
    const shown = {};
    for (const k in w) if (k !== "type") shown[k] = w[k];
    this._emit("welcome", shown);
    if (gen !== this._gen) return;
    this._setState("connected");
    if (gen !== this._gen) return;
    this._flush();
  }
  _onMsg(f) {
    const seq = typeof f.seq === "number" ? f.seq : void 0;
    let replay = false;
    if (seq !== void 0) {
      const duplicate = this._cursor !== null && seq <= this._cursor;
      if (!duplicate) this._setCursor(seq);
      if (this._replayLeft > 0) {
        replay = true;
        if (--this._replayLeft === 0) {
          this._advance(this._welcomeSeq);
          this._advance(this._pingSeq);
          this._pingSeq = void 0;
        }
      }
      if (duplicate) return;
    }
    let payload = null;
    if ("data" in f) payload = f.data;
    else if (typeof f.data_b64 === "string") {
      try {
        payload = decodeBase64(f.data_b64);
      } catch (err) {
        this._emitError(clientError(`message ${seq} has a data_b64 that is not base64: dropped`, "protocol", void 0, err));
        return;
      }
    }
    this._deliver(payload, seq, replay);
  }
  _onPing(f) {
    if (typeof f.seq !== "number") return;
    if (this._replayLeft > 0) {
      if (this._pingSeq === void 0 || f.seq > this._pingSeq) this._pingSeq = f.seq;
    } else {
      this._advance(f.seq);
    }
  }
  _deliver(data, seq, replay) {
    this._emit("message", data, { seq, replay });
  }
  _flush() {
    while (this._buffer.length > 0 && this._welcomed && this._conn && this._paceTimer === null) {
      if (!this._take()) {
        const gen = this._gen;
        const wait = Math.max(1, Math.ceil((1 - this._tokens) / this._upRate));
        this._paceTimer = this._setTimeout(() => {
          this._paceTimer = null;
          if (gen === this._gen) this._flush();
        }, wait);
        return;
      }
      try {
        this._conn.send(this._buffer[0]);
      } catch (_) {
        return;
      }
      this._buffer.shift();
    }
  }
  // --- upstream pacing ------------------------------------------------------------------
  /**
   * A token bucket a little below the session's upstream limit, full at the welcome (the
   * worker's is full until the session's first message).
   */
  _startPacing(rate, burst) {
    const r = typeof rate === "number" && rate > 0 ? rate : DEFAULT_UPSTREAM.rate;
    const b = typeof burst === "number" && burst >= 1 ? Math.floor(burst) : DEFAULT_UPSTREAM.burst;
    this._upRate = r * UPSTREAM_MARGIN / 1e3;
    this._upBurst = Math.max(1, b - 1);
    this._tokens = this._upBurst;
    this._tokensAt = this._now();
  }
  /** Takes one message from the bucket, if it holds one. */
  _take() {
    const now = this._now();
    this._tokens = Math.min(this._upBurst, this._tokens + (now - this._tokensAt) * this._upRate);
    this._tokensAt = now;
    if (this._tokens < 1) return false;
    this._tokens -= 1;
    return true;
  }
  // --- staleness and nudges -------------------------------------------------------------
  _armStale(ms) {
    const gen = this._gen;
    this._staleTimer = this._setTimeout(() => {
      this._staleTimer = null;
      if (gen === this._gen) this._checkStale();
    }, ms);
  }
  /** Closes a connection that has shown no frame for two app-ping intervals. */
  _checkStale() {
    if (!this._welcomed || this._pingMs <= 0) return;
    const idle = this._now() - this._lastFrameAt;
    const limit = 2 * this._pingMs;
    if (idle >= limit) {
      this._fail(clientError(`no frame for ${idle} ms (twice the ping interval)`, "stale"), true);
      return;
    }
    if (this._staleTimer === null) this._armStale(limit - idle);
  }
  /** Network back, page visible, app shown: reconnect now if waiting, check if connected. */
  _nudge() {
    if (!this._running) return;
    if (this._retryTimer !== null) this._begin();
    else if (this._welcomed) this._checkStale();
  }
  _attachNudges() {
    if (this._detach) return;
    const nudge = () => this._nudge();
    const undo = [];
    const wxApi = this._wx;
    if (wxApi) {
      const onNet = (res) => {
        if (res && res.isConnected) nudge();
      };
      if (isFunction(wxApi.onNetworkStatusChange)) {
        wxApi.onNetworkStatusChange(onNet);
        if (isFunction(wxApi.offNetworkStatusChange)) undo.push(() => wxApi.offNetworkStatusChange(onNet));
      }
      if (isFunction(wxApi.onAppShow)) {
        wxApi.onAppShow(nudge);
        if (isFunction(wxApi.offAppShow)) undo.push(() => wxApi.offAppShow(nudge));
      }
    }
    if (typeof addEventListener === "function" && typeof removeEventListener === "function") {
      addEventListener("online", nudge);
      undo.push(() => removeEventListener("online", nudge));
    }
    if (typeof document !== "undefined" && document && isFunction(document.addEventListener)) {
      const doc = document;
      const onVisible = () => {
        if (doc.visibilityState === "visible") nudge();
      };
      doc.addEventListener("visibilitychange", onVisible);
      undo.push(() => doc.removeEventListener("visibilitychange", onVisible));
    }
    this._detach = () => {
      for (const f of undo) f();
    };
  }
  _detachNudges() {
    if (!this._detach) return;
    const d = this._detach;
    this._detach = null;
    try {
      d();
    } catch (_) {
    }
  }
  // --- cursor and storage ---------------------------------------------------------------
  async _loadCursor() {
    this._loaded = true;
    let raw;
    try {
      raw = await this._storage.get(this._key);
    } catch (err) {
      this._emitError(clientError(`cannot read the stored cursor: ${err && err.message}`, "storage", void 0, err));
      return;
    }
    if (raw === null || raw === void 0) return;
    const n = typeof raw === "string" && /^[0-9]{1,16}$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n)) {
      this._emitError(clientError(`the stored cursor ${JSON.stringify(String(raw)).slice(0, 40)} is not a sequence number: ignored`, "storage"));
      return;
    }
    if (this._cursor === null || n > this._cursor) {
      this._cursor = n;
      this._storedCursor = n;
    }
  }
  /** Raises the cursor to seq when seq is higher. */
  _advance(seq) {
    if (typeof seq !== "number" || !(seq >= 0)) return;
    if (this._cursor !== null && seq <= this._cursor) return;
    this._setCursor(seq);
  }
  _setCursor(seq) {
    if (seq === this._cursor) return;
    this._cursor = seq;
    this._scheduleStore();
  }
  _scheduleStore() {
    if (this._storeTimer !== null) return;
    const wait = this._lastStoreAt + STORE_INTERVAL - this._now();
    if (wait <= 0) {
      this._storeNow();
      return;
    }
    this._storeTimer = this._setTimeout(() => {
      this._storeTimer = null;
      this._storeNow();
    }, wait);
  }
  /** Writes the cursor if it changed; resolves when every write so far has settled. */
  _storeNow() {
    if (this._storeTimer !== null) this._clearTimeout(this._storeTimer);
    this._storeTimer = null;
    if (this._cursor === null || this._cursor === this._storedCursor) return this._storing;
    const value = String(this._cursor);
    this._storedCursor = this._cursor;
    this._lastStoreAt = this._now();
    this._storing = this._storing.then(() => this._storage.set(this._key, value)).then(() => {
    }, (err) => {
      this._emitError(clientError(`cannot store the cursor: ${err && err.message}`, "storage", void 0, err));
    });
    return this._storing;
  }
  // --- events ---------------------------------------------------------------------------
  _setState(s) {
    if (this._state === s) return;
    this._state = s;
    this._emit("state", s);
  }
  _emitError(err) {
    this._emit("error", err);
  }
  _emit(event, a, b) {
    const list = this._handlers[event];
    if (!list) return;
    for (const fn of list.slice()) {
      try {
        fn.call(this, a, b);
      } catch (err) {
        if (event === "error") {
          Promise.resolve().then(() => {
            throw err;
          });
        } else {
          this._emitError(clientError(`a '${event}' listener threw: ${err && err.message}`, "listener", void 0, err));
        }
      }
    }
  }
};
