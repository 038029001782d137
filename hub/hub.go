// Package hub holds the WebSocket side of notify-worker: the melody
// instance, the first-message handshake, the name -> sessions index,
// delivery to one name or to every identified session, and the limits that
// keep one client from harming the others.
//
// The hub knows nothing of NATS or of JWT. What it needs from outside is
// the Router and Authenticator interfaces below.
package hub

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
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

// Authenticator verifies the token a client presents and returns the name
// it proves and the time the token stops being accepted (for a JWT, its
// exp plus any leeway allowed for clock skew); the session is closed with
// 4001 (token expired) then. A zero time never expires. Its error message
// is sent to the client, so it must be short and safe to show. It runs on
// the session's read goroutine.
type Authenticator interface {
	Authenticate(token string) (name string, expires time.Time, err error)
}

// ErrTokenExpired is the error an Authenticator wraps for an expired
// token; the client is then closed with 4001 (token expired) rather than
// 1008 (policy violation), to tell it to come back with a fresh token.
var ErrTokenExpired = errors.New("token expired")

// Config holds the hub's limits and timings.
type Config struct {
	// IdentifyMaxBytes is the read limit for the first message.
	IdentifyMaxBytes int64
	// MessageMaxBytes is the read limit for messages after the welcome.
	MessageMaxBytes int64
	// IdentifyTimeout is how long a connection may stay unidentified.
	IdentifyTimeout time.Duration
	// JoinTimeout bounds Router.Join.
	JoinTimeout time.Duration
	// QueueSize is the number of messages queued per session; a session
	// whose queue overflows is disconnected with 4002 (too slow).
	QueueSize int
	// WriteTimeout bounds one write to a client.
	WriteTimeout time.Duration
	// PingPeriod is the interval between pings to a client; PongTimeout is
	// how long a client may go without answering one before it is
	// dropped. PingPeriod must be shorter than PongTimeout.
	PingPeriod  time.Duration
	PongTimeout time.Duration
	// HandshakeTimeout bounds the WebSocket upgrade response.
	HandshakeTimeout time.Duration
	// MaxConnections caps open WebSocket connections; further upgrade
	// requests get 503.
	MaxConnections int
	// MaxSessionsPerName caps the sessions of one name on this worker.
	MaxSessionsPerName int
	// UpstreamRate (messages per second) and UpstreamBurst limit what an
	// identified session may send; past the limit it is closed.
	UpstreamRate  float64
	UpstreamBurst int
	// AllowedOrigins lists the browser origins allowed to connect; see
	// originPolicy. Empty means same-origin only.
	AllowedOrigins []string
	// Auth verifies tokens. Nil trusts the name a client sends.
	Auth Authenticator
}

// ConfigError is a Config field whose value the hub cannot use.
// ConfigField names the field, so that the caller can point at the setting
// of its own that fills it.
type ConfigError struct {
	Field string // the Config field, e.g. "QueueSize"
	Err   error  // what is wrong with its value
}

func (e *ConfigError) Error() string       { return e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error       { return e.Err }
func (e *ConfigError) ConfigField() string { return e.Field }

// Validate reports the first field of c the hub cannot use, as a
// *ConfigError, or nil. It does no I/O, so a caller can check its whole
// configuration before it starts anything; New checks the same.
func (c Config) Validate() error {
	_, err := c.validate()
	return err
}

// validate is Validate, returning the origin policy it parsed.
func (c Config) validate() (originPolicy, error) {
	positive := []struct {
		field string
		ok    bool
		value any
	}{
		{"IdentifyMaxBytes", c.IdentifyMaxBytes > 0, c.IdentifyMaxBytes},
		{"MessageMaxBytes", c.MessageMaxBytes > 0, c.MessageMaxBytes},
		{"IdentifyTimeout", c.IdentifyTimeout > 0, c.IdentifyTimeout},
		{"JoinTimeout", c.JoinTimeout > 0, c.JoinTimeout},
		{"QueueSize", c.QueueSize > 0, c.QueueSize},
		{"WriteTimeout", c.WriteTimeout > 0, c.WriteTimeout},
		{"PingPeriod", c.PingPeriod > 0, c.PingPeriod},
		{"PongTimeout", c.PongTimeout > 0, c.PongTimeout},
		{"HandshakeTimeout", c.HandshakeTimeout > 0, c.HandshakeTimeout},
		{"MaxConnections", c.MaxConnections > 0, c.MaxConnections},
		{"MaxSessionsPerName", c.MaxSessionsPerName > 0, c.MaxSessionsPerName},
		{"UpstreamRate", c.UpstreamRate > 0, c.UpstreamRate}, // false for NaN too
		{"UpstreamBurst", c.UpstreamBurst > 0, c.UpstreamBurst},
	}
	for _, p := range positive {
		if !p.ok {
			return originPolicy{}, &ConfigError{p.field, fmt.Errorf("%v is not positive", p.value)}
		}
	}
	if c.PingPeriod >= c.PongTimeout {
		return originPolicy{}, &ConfigError{"PingPeriod", fmt.Errorf("%s is not shorter than the pong timeout (%s)", c.PingPeriod, c.PongTimeout)}
	}
	origins, err := newOriginPolicy(c.AllowedOrigins)
	if err != nil {
		return originPolicy{}, &ConfigError{"AllowedOrigins", err}
	}
	return origins, nil
}

// Hub is the set of WebSocket sessions of one worker. Create it with New,
// serve it as an http.Handler, and end it with Close.
type Hub struct {
	cfg     Config
	router  Router
	log     *slog.Logger
	metrics *metrics
	mel     *melody.Melody
	index   *index
	origins originPolicy

	// conns counts upgrade requests admitted and not yet ended, against
	// cfg.MaxConnections.
	conns atomic.Int64

	// slow closes the sessions whose queue overflowed; see slow.go.
	slow *slowCloser

	mu      sync.Mutex // guards closing and slowStarted
	closing bool
	// slowStarted says slow's goroutine runs: ServeHTTP starts it with
	// the first connection admitted, Close ends it.
	slowStarted bool
	// handlers counts the ServeHTTP calls in flight; each holds one
	// session's read goroutine, so Close waits on it.
	handlers sync.WaitGroup
}

// New returns a Hub that routes through router, logs to log and registers
// its metrics with reg.
func New(cfg Config, router Router, log *slog.Logger, reg prometheus.Registerer) (*Hub, error) {
	origins, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("hub config: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	h := &Hub{
		cfg:     cfg,
		router:  router,
		log:     log,
		metrics: m,
		mel:     melody.New(),
		index:   newIndex(maphash.MakeSeed()),
		origins: origins,
	}
	h.slow = newSlowCloser(h.closeSlow)
	h.mel.Config.MaxMessageSize = cfg.IdentifyMaxBytes
	h.mel.Config.MessageBufferSize = cfg.QueueSize
	h.mel.Config.WriteWait = cfg.WriteTimeout
	h.mel.Config.PingPeriod = cfg.PingPeriod
	h.mel.Config.PongWait = cfg.PongTimeout
	up := h.mel.Upgrader
	// Zero sizes make gorilla use the detached connection's small buffers
	// (see detachedWriter).
	up.ReadBufferSize = 0
	up.WriteBufferSize = 0
	// A compressed frame can inflate far past the read limit.
	up.EnableCompression = false
	up.HandshakeTimeout = cfg.HandshakeTimeout
	up.CheckOrigin = origins.allow

	h.mel.HandleConnect(h.onConnect)
	h.mel.HandleDisconnect(h.onDisconnect)
	h.mel.HandleMessage(func(s *melody.Session, msg []byte) { h.onMessage(s, msg, false) })
	h.mel.HandleMessageBinary(func(s *melody.Session, msg []byte) { h.onMessage(s, msg, true) })
	h.mel.HandleError(h.onError)
	return h, nil
}

func (h *Hub) isClosing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}

// DeliverUser queues payload to every session named name and returns how
// many sessions it was queued to. It costs in proportion to that name's
// sessions, whatever the total, and never blocks: a session whose queue is
// full loses the message and is disconnected with 4002 (too slow). Every
// loss is counted in notify_dropped_total{reason}.
func (h *Hub) DeliverUser(name string, payload []byte) int {
	t := h.index.deliver(name, payload, utf8.Valid(payload))
	h.metrics.record(h.metrics.delivered.user, t)
	return t.queued
}

// DeliverAll queues payload to every identified session and returns how
// many sessions it was queued to. Unidentified sessions receive nothing.
func (h *Hub) DeliverAll(payload []byte) int {
	t := h.index.deliverAll(payload, utf8.Valid(payload))
	h.metrics.record(h.metrics.delivered.all, t)
	return t.queued
}

// Close turns new sessions away, closes every session with 1001 (going
// away) after the messages already queued to it, and waits for them to end
// and for every goroutine the hub started: none outlives Close. When ctx
// ends first, it cuts the remaining connections and returns ctx's error.
// Calling Close again waits again.
func (h *Hub) Close(ctx context.Context) error {
	h.mu.Lock()
	h.closing = true
	slowStarted := h.slowStarted
	h.mu.Unlock()

	sessions, err := h.mel.Sessions()
	if err != nil {
		sessions = nil // already closed by an earlier call
	}
	for _, s := range sessions {
		h.closeWith(s, closeGoingAway, reasonShuttingDown)
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
		h.slow.shutdown(slowStarted)
		_ = h.mel.Close()
		return fmt.Errorf("close sessions: %w", ctx.Err())
	}
	h.slow.shutdown(slowStarted)
	_ = h.mel.Close()
	return nil
}
