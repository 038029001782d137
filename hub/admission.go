package hub

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
)

// ServeHTTP upgrades a request to a WebSocket session and serves it until it
// ends. Refusals happen before the upgrade, as HTTP statuses: 426 for a
// request that is not a WebSocket upgrade, 403 for an origin not allowed,
// 503 while the hub closes or when MaxConnections is reached.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case !websocket.IsWebSocketUpgrade(r):
		h.metrics.refused.notWebSocket.Inc()
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, bodyNotWebSocket, http.StatusUpgradeRequired)
		return
	case !h.origins.allow(r):
		h.metrics.refused.origin.Inc()
		h.log.Info("connection refused: origin not allowed", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		http.Error(w, bodyOrigin, http.StatusForbidden)
		return
	}
	if n := h.conns.Add(1); n > int64(h.cfg.MaxConnections) {
		h.conns.Add(-1)
		h.metrics.refused.connectionLimit.Inc()
		h.log.Warn("connection refused: limit reached", "limit", h.cfg.MaxConnections, "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", retryAfterSeconds)
		http.Error(w, bodyConnectionLimit(h.cfg.MaxConnections), http.StatusServiceUnavailable)
		return
	}

	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		h.conns.Add(-1)
		h.metrics.refused.closing.Inc()
		http.Error(w, bodyShuttingDown, http.StatusServiceUnavailable)
		return
	}
	h.handlers.Add(1)
	if !h.started {
		// Under the lock, so that Close, which reads started under it,
		// finds them running.
		h.started = true
		go h.slow.run()
		h.pinger.start()
	}
	h.mu.Unlock()

	conn, brw, err := http.NewResponseController(w).Hijack()
	if err == nil && brw.Reader.Buffered() > 0 {
		// A WebSocket client must wait for the 101 before it sends.
		conn.Close()
		err = errors.New("client sent data before the handshake completed")
	}
	if err != nil {
		h.handlers.Done()
		h.conns.Add(-1)
		h.log.Debug("hijack failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	// The session outlives this handler; see detachedWriter.
	st := &sessionState{queryToken: r.URL.Query().Get("token"), upgraded: time.Since(h.epoch)}
	ws := newSessionConn(conn, st, h.coalesce, h.cfg.WriteTimeout)
	st.conn = ws
	go h.serveSession(&detachedWriter{conn: conn, ws: ws, header: http.Header{}}, upgradeRequest(r), st)
}

// upgradeRequest keeps of r what the upgrade and the session's logs read.
// melody holds the request for the session's whole life; r's other
// headers, URL and context would cost about 1.4 KB per idle session.
func upgradeRequest(r *http.Request) *http.Request {
	h := make(http.Header, 7)
	for _, k := range []string{"Connection", "Upgrade", "Origin", "Sec-Websocket-Key",
		"Sec-Websocket-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions"} {
		if v, ok := r.Header[k]; ok {
			h[k] = v
		}
	}
	return &http.Request{Method: r.Method, Host: r.Host, RemoteAddr: r.RemoteAddr, URL: &url.URL{}, Header: h}
}

// serveSession runs one session's read loop, on a goroutine owned by the
// hub and counted in handlers, until the session ends. melody runs the
// connect, message and disconnect handlers on it.
func (h *Hub) serveSession(w *detachedWriter, r *http.Request, st *sessionState) {
	defer h.handlers.Done()
	defer h.conns.Add(-1)
	defer w.conn.Close()
	remote := r.RemoteAddr
	if err := h.mel.HandleRequestWithKeys(w, r, map[string]any{keyState: st}); err != nil {
		// The upgrader has already answered the request.
		h.log.Debug("websocket upgrade failed", "remote", remote, "err", err)
	}
}
