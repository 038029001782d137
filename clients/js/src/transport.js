/**
 * Transports open one connection each and report to handlers:
 *   open(url, {open(), message(data: string | ArrayBuffer | Uint8Array), close(code, reason)})
 *   -> {send(data: string | ArrayBuffer), close(code, reason, abort)}
 * After close() the connection reports nothing more. Every handler runs on the event loop
 * turn of the socket event that caused it.
 */

const noop = () => {}

/**
 * A transport over a WebSocket constructor (the browser's, or one passed in such as ws).
 * @param {any} WebSocketCtor
 */
export function webSocketTransport (WebSocketCtor) {
  return {
    kind: 'websocket',
    open (url, h) {
      const ws = new WebSocketCtor(url)
      try {
        ws.binaryType = 'arraybuffer'
      } catch (_) {
        // an implementation without binaryType: binary frames come as it delivers them
      }
      ws.onopen = () => h.open()
      ws.onmessage = (ev) => h.message(ev.data)
      ws.onclose = (ev) => h.close(ev.code, ev.reason || '')
      // An error event is always followed by a close event, which carries the code.
      ws.onerror = noop
      return {
        send (data) { ws.send(data) },
        close (code, reason, abort) {
          // Handlers stay set (to no-ops): some implementations (ws) throw on an error
          // event that nobody listens to.
          ws.onopen = ws.onmessage = ws.onclose = noop
          try {
            if (abort && typeof ws.terminate === 'function') ws.terminate()
            else ws.close(code, reason)
          } catch (_) {
            // already closed, or closing before the handshake: nothing left to do
          }
        }
      }
    }
  }
}

/**
 * A transport over the mini-program's wx.connectSocket: one SocketTask per connection and its
 * own onOpen/onMessage/onClose/onError, never the global wx.onSocket* callbacks (those are
 * shared by every socket of the mini-program).
 * @param {any} wx
 */
export function wxTransport (wx) {
  return {
    kind: 'wx',
    open (url, h) {
      let done = false
      const finish = (code, reason) => {
        if (done) return
        done = true
        h.close(code, reason)
      }
      const task = wx.connectSocket({
        url,
        fail: (res) => finish(1006, (res && res.errMsg) || 'wx.connectSocket failed')
      })
      if (!task || typeof task.onOpen !== 'function') {
        throw new Error('wx.connectSocket returned no SocketTask')
      }
      task.onOpen(() => { if (!done) h.open() })
      task.onMessage((res) => { if (!done) h.message(res && res.data) })
      task.onClose((res) => finish((res && res.code) || 1006, (res && res.reason) || ''))
      // SocketTask.onError is not always followed by onClose: treat it as the end.
      task.onError((res) => {
        if (done) return
        finish(1006, (res && res.errMsg) || 'socket error')
        try { task.close({}) } catch (_) { /* already closed */ }
      })
      return {
        send (data) { task.send({ data, fail: noop }) },
        close (code, reason) {
          done = true
          try { task.close({ code, reason }) } catch (_) { /* already closed */ }
        }
      }
    }
  }
}
