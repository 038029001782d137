// Package hub holds the WebSocket side of notify-worker: the melody
// instance, the first-message handshake, the name -> sessions index, and
// delivery to one name or to every identified session.
//
// The hub knows nothing of NATS. What it needs from the messaging side is
// the Router interface below; the worker package provides it.
package hub

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/olahol/melody"
	"github.com/prometheus/client_golang/prometheus"
)

// Router connects the hub to the messaging side.
type Router interface {
	// Join makes sure this worker receives the notifications for name and
	// returns once that is confirmed by the messaging system, so that the
	// welcome sent afterwards is a promise. Every successful Join is
	// followed by exactly one Leave. It runs on the session's read
	// goroutine; ctx carries the join timeout.
	Join(ctx context.Context, name string) error
	// Leave undoes one Join, on the session's read goroutine, when an
	// identified session ends.
	Leave(name string)
	// Upstream forwards a message an identified session sent, on that
	// session's read goroutine. It must not block for long.
	Upstream(name string, msg []byte) error
}

// Config holds the hub's limits and timings. Every field must be positive.
type Config struct {
	// IdentifyMaxBytes is the read limit for the first message.
	IdentifyMaxBytes int64
	// MessageMaxBytes is the read limit for messages after the welcome.
	MessageMaxBytes int64
	// JoinTimeout bounds Router.Join.
	JoinTimeout time.Duration
	// QueueSize is the number of messages queued per session before
	// further ones are dropped (and counted).
	QueueSize int
	// WriteTimeout bounds one write to a client.
	WriteTimeout time.Duration
	// PingPeriod is the interval between pings to a client; PongTimeout is
	// how long a client may stay silent (no pong, no message) before it is
	// dropped. PingPeriod must be shorter than PongTimeout.
	PingPeriod  time.Duration
	PongTimeout time.Duration
}

func (c Config) validate() error {
	switch {
	case c.IdentifyMaxBytes <= 0, c.MessageMaxBytes <= 0:
		return errors.New("message size limits must be positive")
	case c.JoinTimeout <= 0, c.WriteTimeout <= 0, c.PingPeriod <= 0, c.PongTimeout <= 0:
		return errors.New("timeouts must be positive")
	case c.PingPeriod >= c.PongTimeout:
		return errors.New("ping period must be shorter than the pong timeout")
	case c.QueueSize <= 0:
		return errors.New("queue size must be positive")
	}
	return nil
}

// Close codes the hub sends, besides melody's 1009 for an oversize frame.
const (
	CloseGoingAway       = melody.CloseGoingAway       // worker shutting down
	ClosePolicyViolation = melody.ClosePolicyViolation // bad first message
	CloseTryAgainLater   = melody.CloseTryAgainLater   // the messaging side is unavailable
)

// Hub is the set of WebSocket sessions of one worker. Create it with New,
// serve it as an http.Handler, and end it with Close.
type Hub struct {
	cfg     Config
	router  Router
	log     *slog.Logger
	metrics *metrics
	mel     *melody.Melody
	index   *index

	mu      sync.Mutex // guards closing and handlers
	closing bool
	// handlers counts the ServeHTTP calls in flight; each holds one
	// session's read goroutine, so Close waits on it.
	handlers sync.WaitGroup
}

// sessionState is a session's handshake state. It is only touched on the
// session's read goroutine (melody runs a session's message handlers and its
// disconnect handler there, one after another).
type sessionState struct {
	name     string // set once joined
	joined   bool
	rejected bool
}

const (
	keyState = "state" // *sessionState, read goroutine only
	keyName  = "name"  // string, for handlers on other goroutines
)

// New returns a Hub that routes through router, logs to log and registers
// its metrics with reg.
func New(cfg Config, router Router, log *slog.Logger, reg prometheus.Registerer) (*Hub, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("hub config: %w", err)
	}
	h := &Hub{
		cfg:    cfg,
		router: router,
		log:    log,
		mel:    melody.New(),
		index:  newIndex(maphash.MakeSeed()),
	}
	h.mel.Config.MaxMessageSize = cfg.IdentifyMaxBytes
	h.mel.Config.MessageBufferSize = cfg.QueueSize
	h.mel.Config.WriteWait = cfg.WriteTimeout
	h.mel.Config.PingPeriod = cfg.PingPeriod
	h.mel.Config.PongWait = cfg.PongTimeout
	// Zero-size buffers make gorilla reuse the ones net/http allocated for
	// the request; the pool lends a write buffer only while a write runs.
	h.mel.Upgrader.ReadBufferSize = 0
	h.mel.Upgrader.WriteBufferSize = 0
	h.mel.Upgrader.WriteBufferPool = &sync.Pool{}

	h.mel.HandleConnect(h.onConnect)
	h.mel.HandleDisconnect(h.onDisconnect)
	h.mel.HandleMessage(func(s *melody.Session, msg []byte) { h.onMessage(s, msg, false) })
	h.mel.HandleMessageBinary(func(s *melody.Session, msg []byte) { h.onMessage(s, msg, true) })
	h.mel.HandleError(h.onError)

	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	h.metrics = m
	return h, nil
}

// ServeHTTP upgrades a request to a WebSocket session and serves it until it
// ends. A request that is not a WebSocket upgrade gets 426; one that arrives
// while the hub closes gets 503.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this endpoint speaks WebSocket only", http.StatusUpgradeRequired)
		return
	}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	h.handlers.Add(1)
	h.mu.Unlock()
	defer h.handlers.Done()

	keys := map[string]any{keyState: &sessionState{}}
	if err := h.mel.HandleRequestWithKeys(w, r, keys); err != nil {
		// The upgrader has already answered the request.
		h.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
	}
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Upgrade") {
		if asciiEqualFold(v, "websocket") {
			return true
		}
	}
	return false
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i]|0x20, b[i]|0x20
		if ca != cb {
			return false
		}
	}
	return true
}

func (h *Hub) isClosing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}

// onConnect runs on the session's handler goroutine before its pumps start.
func (h *Hub) onConnect(s *melody.Session) {
	h.metrics.connections.Inc()
	if h.isClosing() {
		// Close took its snapshot of sessions before this one registered.
		_ = s.CloseWithMsg(melody.FormatCloseMessage(CloseGoingAway, "server shutting down"))
	}
}

// onDisconnect runs on the session's read goroutine after its last message.
func (h *Hub) onDisconnect(s *melody.Session) {
	h.metrics.connections.Dec()
	st := state(s)
	if !st.joined {
		return
	}
	if h.index.remove(st.name, s) {
		h.metrics.names.Dec()
	}
	h.metrics.identified.Dec()
	h.router.Leave(st.name)
}

// onMessage runs on the session's read goroutine.
func (h *Hub) onMessage(s *melody.Session, msg []byte, binary bool) {
	st := state(s)
	switch {
	case st.joined:
		h.upstream(s, st.name, msg)
	case st.rejected:
		// The close frame is on its way; ignore what the client still sends.
	case binary:
		h.reject(s, st, "first message must be a text frame")
	default:
		h.identify(s, st, msg)
	}
}

func (h *Hub) identify(s *melody.Session, st *sessionState, msg []byte) {
	id, err := ParseIdentify(msg)
	if err != nil {
		h.reject(s, st, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.JoinTimeout)
	err = h.router.Join(ctx, id.Name)
	cancel()
	if err != nil {
		h.log.Warn("join failed", "name", id.Name, "remote", s.Request.RemoteAddr, "err", err)
		h.metrics.handshakes.WithLabelValues("unavailable").Inc()
		st.rejected = true
		_ = s.Write(errorFrame("service unavailable, try again later"))
		_ = s.CloseWithMsg(melody.FormatCloseMessage(CloseTryAgainLater, "service unavailable"))
		return
	}
	st.joined, st.name = true, id.Name
	s.Set(keyName, id.Name)
	s.WebsocketConnection().SetReadLimit(h.cfg.MessageMaxBytes)
	h.metrics.handshakes.WithLabelValues("ok").Inc()
	h.metrics.identified.Inc()
	// add queues the welcome under the index lock, so no delivery can
	// overtake it.
	if h.index.add(id.Name, s, welcomeFrame(id.Name)) {
		h.metrics.names.Inc()
	}
}

func (h *Hub) reject(s *melody.Session, st *sessionState, reason string) {
	st.rejected = true
	h.metrics.handshakes.WithLabelValues("rejected").Inc()
	h.log.Info("first message rejected", "remote", s.Request.RemoteAddr, "reason", reason)
	_ = s.Write(errorFrame(reason))
	_ = s.CloseWithMsg(melody.FormatCloseMessage(ClosePolicyViolation, reason))
}

func (h *Hub) upstream(s *melody.Session, name string, msg []byte) {
	if err := h.router.Upstream(name, msg); err != nil {
		h.metrics.upstream.WithLabelValues("failed").Inc()
		h.log.Warn("upstream publish failed", "name", name, "err", err)
		_ = s.Write(errorFrame("message not forwarded: service unavailable"))
		return
	}
	h.metrics.upstream.WithLabelValues("ok").Inc()
}

// onError runs on whichever goroutine met the error: a delivering goroutine
// for a full queue, the session's pumps for I/O errors.
func (h *Hub) onError(s *melody.Session, err error) {
	if errors.Is(err, melody.ErrMessageBufferFull) {
		h.metrics.dropped.Inc()
		name, _ := s.Get(keyName)
		h.log.Warn("message dropped: session queue full", "name", name, "remote", s.Request.RemoteAddr)
		return
	}
	h.log.Debug("session error", "remote", s.Request.RemoteAddr, "err", err)
}

func state(s *melody.Session) *sessionState {
	v, _ := s.Get(keyState)
	return v.(*sessionState)
}

// DeliverUser queues payload to every session named name and returns how
// many sessions it was queued to. It costs in proportion to that name's
// sessions, whatever the total. It never blocks: a session whose queue is
// full loses the message, and the loss is counted and logged.
func (h *Hub) DeliverUser(name string, payload []byte) int {
	n := h.index.deliver(name, payload, utf8.Valid(payload))
	h.metrics.deliveredUser.Add(float64(n))
	return n
}

// DeliverAll queues payload to every identified session and returns how
// many sessions it was queued to. Unidentified sessions receive nothing.
func (h *Hub) DeliverAll(payload []byte) int {
	n := h.index.deliverAll(payload, utf8.Valid(payload))
	h.metrics.deliveredAll.Add(float64(n))
	return n
}

// Close turns new sessions away, closes every session with 1001 (going
// away) after the messages already queued to it, and waits for them to end.
// When ctx ends first, it cuts the remaining connections and returns
// ctx's error. Calling Close again waits again.
func (h *Hub) Close(ctx context.Context) error {
	h.mu.Lock()
	h.closing = true
	h.mu.Unlock()

	sessions, err := h.mel.Sessions()
	if err != nil {
		sessions = nil // already closed by an earlier call
	}
	bye := melody.FormatCloseMessage(CloseGoingAway, "server shutting down")
	for _, s := range sessions {
		_ = s.CloseWithMsg(bye)
	}

	done := make(chan struct{})
	go func() {
		h.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		for _, s := range sessions {
			_ = s.WebsocketConnection().Close()
		}
		<-done
		_ = h.mel.Close()
		return fmt.Errorf("close sessions: %w", ctx.Err())
	}
	_ = h.mel.Close()
	return nil
}
