// Package hub holds the WebSocket side of notify-worker: the melody
// instance, the first-message handshake, the name -> sessions index,
// delivery to one name or to every identified session, and the limits that
// keep one client from harming the others.
//
// The hub knows nothing of NATS or of JWT. What it needs from outside is
// the Router, Resumer and Authenticator interfaces below, and Events
// (presence.go), which it tells of online and offline transitions and acks.
package hub

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/olahol/melody"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/feed"
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

// Resumer is what a v2 session needs from the messaging side's stream.
type Resumer interface {
	// Resume answers a v2 session's resume: the durable messages of name
	// and of the broadcast subject after since (nil: none, live from now)
	// up to Replay.Through. It runs on the session's read goroutine, after
	// the session is registered to buffer live messages, with the join
	// timeout in ctx, which also ends when the session closes. An error
	// means "unavailable for now" (the session is closed with 1013); a
	// permanent unavailability is an answer (Recovered false, reason
	// unavailable), not an error.
	Resume(ctx context.Context, name string, since *uint64) (feed.Replay, error)
	// Snapshot tells, for the broadcast subject and each of names, the
	// newest durable message at or below a sequence the stream had
	// reached (see feed.Snapshot). It runs on the hub's app-ping goroutine,
	// one call at a time, once per Config.AppPing, bounded by a timeout in
	// ctx; on error the sessions are pinged with the cursor they had.
	Snapshot(ctx context.Context, names []string) (feed.Snapshot, error)
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
	// AppPing is the interval of the application-level ping frames sent
	// to v2 sessions (their clients cannot see WebSocket pings); it is
	// also told to them in the welcome.
	AppPing time.Duration
	// Resumer answers v2 resumes and snapshots. Nil: every v2 session is
	// welcomed with recovered false, reason unavailable and seq 0, and
	// gets live messages.
	Resumer Resumer
	// Events is told when a name comes online or goes offline here and
	// when a v2 session acknowledges a message. Nil: nobody is told, and
	// ack frames are answered with an error frame.
	Events Events
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
		{"AppPing", c.AppPing > 0, c.AppPing},
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
	// epoch is what sessionState.upgraded counts from.
	epoch time.Time
	// broadcastEnded is when the last DeliverAll returned, since epoch:
	// whether the next may be sent directly (direct.go).
	broadcastEnded atomic.Int64
	// coalesce holds the buffers of frames held back to be written
	// together (sessionConn).
	coalesce *sync.Pool
	// fanout spreads broadcasts over the CPUs.
	fanout *fanout

	// conns counts upgrade requests admitted and not yet ended, against
	// cfg.MaxConnections.
	conns atomic.Int64

	// slow closes the sessions whose queue overflowed; see slow.go.
	slow *slowCloser
	// pinger sends the v2 sessions their app pings; see pinger.go.
	pinger *pinger
	// v2 is the set of v2 sessions (v2session.go), and gen the feed
	// generation they are registered under (feedloss.go).
	v2  v2Registry
	gen atomic.Uint64

	mu      sync.Mutex // guards closing and started
	closing bool
	// started says the goroutines of slow and pinger run: ServeHTTP
	// starts them with the first connection admitted, Close ends them.
	started bool
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
		epoch:   time.Now(),
		// Shared by the sessions in a burst; see sessionConn.
		coalesce: newCoalescePool(),
		fanout:   newFanout(),
	}
	h.slow = newSlowCloser(h.closeSlow)
	h.pinger = newPinger(h.pingAll, cfg.AppPing)
	h.v2.sessions = make(map[*v2Session]struct{})
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

// handshakeEnd is r for st's handshake, ending now.
func (h *Hub) handshakeEnd(st *sessionState, r *handshakeResult) handshakeEnd {
	return handshakeEnd{r: r, took: time.Since(h.epoch) - st.upgraded}
}

func (h *Hub) isClosing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}

// DeliverUser queues m to every session named name and returns how many
// sessions it was queued to (for a v2 session still replaying: held until
// its replay is out). A v1 session gets m.Payload as it is, a v2 session
// an envelope, built once per call; a v2 session is skipped for a durable
// message it already has, and closed with 1012 for one that shows it
// missed another (see v2session.go). It costs in proportion to that
// name's sessions, whatever the total, and never blocks: a session whose
// queue is full loses the message and is disconnected with 4002 (too
// slow). Every loss is counted in notify_dropped_total{reason}.
//
// Durable messages must be handed over in stream order, one call after
// another (the v2 checks rely on it); core ones in any order.
func (h *Hub) DeliverUser(name string, m feed.Message) int {
	d := delivery{msg: m, on: onUser, text: utf8.Valid(m.Payload), direct: true}
	t := h.index.deliver(name, &d)
	h.recordDelivery(h.metrics.delivered.user, t, name, m.Arrived)
	return int(t.queued + t.buffered)
}

// DeliverAll is DeliverUser to every identified session. Unidentified
// sessions receive nothing.
func (h *Hub) DeliverAll(m feed.Message) int {
	start := time.Since(h.epoch)
	direct := start-time.Duration(h.broadcastEnded.Load()) >= broadcastDirectPause
	defer func() { h.broadcastEnded.Store(int64(time.Since(h.epoch))) }()
	d := delivery{msg: m, on: onAll, text: utf8.Valid(m.Payload), direct: direct}
	if h.v2.any() {
		// Built once here rather than by each part of the fan-out.
		d.envelope()
	}
	t := h.fanout.deliverAll(h.index, &d)
	h.recordDelivery(h.metrics.delivered.all, t, "", m.Arrived)
	return int(t.queued + t.buffered)
}

// recordDelivery counts the outcome of one delivery call, and logs the v2
// sessions it closed for a gap, off every lock.
func (h *Hub) recordDelivery(kind deliveryKind, t tally, name string, arrived time.Time) {
	h.metrics.record(kind, t, arrived)
	if t.gaps > 0 {
		// A copy, so that name does not escape: a caller's name may stay
		// on its stack.
		h.log.Warn("closed v2 sessions that missed a durable message", "name", strings.Clone(name), "sessions", t.gaps)
	}
}

// Close turns new sessions away, closes every v1 session with 1001 (going
// away) and every v2 session with 1012 (service restart: resume now
// elsewhere), each after the messages already queued to it, and waits for
// them to end and for every goroutine the hub started: none outlives
// Close. When ctx ends first, it cuts the remaining connections and
// returns ctx's error. Calling Close again waits again.
func (h *Hub) Close(ctx context.Context) error {
	defer h.fanout.stop()
	h.mu.Lock()
	h.closing = true
	started := h.started
	h.mu.Unlock()
	// No ping may follow a close frame; a Snapshot in flight is cancelled.
	h.pinger.shutdown(started)

	sessions, err := h.mel.Sessions()
	if err != nil {
		sessions = nil // already closed by an earlier call
	}
	for _, s := range sessions {
		if v := state(s).v2.Load(); v != nil {
			v.end(closeServiceRestart, reasonRestart, nil)
			continue
		}
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
		h.slow.shutdown(started)
		_ = h.mel.Close()
		return fmt.Errorf("close sessions: %w", ctx.Err())
	}
	h.slow.shutdown(started)
	_ = h.mel.Close()
	return nil
}
