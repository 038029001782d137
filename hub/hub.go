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
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/notify-worker/notify-worker/subjects"
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
// it proves and when that proof expires. Its error message is sent to the
// client, so it must be short and safe to show. It runs on the session's
// read goroutine.
type Authenticator interface {
	Authenticate(token string) (name string, expires time.Time, err error)
}

// ErrTokenExpired is the error an Authenticator wraps for an expired
// token; the client is then closed with CloseTokenExpired rather than
// ClosePolicyViolation, to tell it to come back with a fresh token.
var ErrTokenExpired = errors.New("token expired")

// Close codes the hub sends. melody (gorilla) sends 1009 for an oversize
// frame by itself.
const (
	CloseGoingAway       = websocket.CloseGoingAway       // 1001: worker shutting down
	ClosePolicyViolation = websocket.ClosePolicyViolation // 1008: bad first message or token, identify timeout, a limit
	CloseTryAgainLater   = websocket.CloseTryAgainLater   // 1013: the messaging side is unavailable
	CloseTokenExpired    = 4001                           // the session's token expired: reconnect with a fresh one
	CloseTooSlow         = 4002                           // the session's outbound queue overflowed
)

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
	// whose queue overflows is disconnected with CloseTooSlow.
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

func (c Config) validate() error {
	switch {
	case c.IdentifyMaxBytes <= 0, c.MessageMaxBytes <= 0:
		return errors.New("message size limits must be positive")
	case c.IdentifyTimeout <= 0, c.JoinTimeout <= 0, c.WriteTimeout <= 0,
		c.PingPeriod <= 0, c.PongTimeout <= 0, c.HandshakeTimeout <= 0:
		return errors.New("timeouts must be positive")
	case c.PingPeriod >= c.PongTimeout:
		return errors.New("ping period must be shorter than the pong timeout")
	case c.QueueSize <= 0, c.MaxConnections <= 0, c.MaxSessionsPerName <= 0:
		return errors.New("queue size, connection and session limits must be positive")
	case c.UpstreamRate <= 0, c.UpstreamBurst <= 0:
		return errors.New("upstream rate and burst must be positive")
	}
	return nil
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

	mu      sync.Mutex // guards closing
	closing bool
	// handlers counts the ServeHTTP calls in flight; each holds one
	// session's read goroutine, so Close waits on it.
	handlers sync.WaitGroup
}

// sessionState is a session's handshake and limit state.
type sessionState struct {
	// Touched only on the session's read goroutine (melody runs a
	// session's connect, message and disconnect handlers there, one after
	// another).
	queryToken string
	name       string // set once joined
	joined     bool
	rejected   bool
	// limitRaised says the read limit is MessageMaxBytes. A session
	// identified on connect (query token) gets it only from its second
	// message on: melody sets the read limit when its read loop starts,
	// after the connect handler, and the first frame is read under it.
	limitRaised bool
	limiter     *rate.Limiter
	timer       *time.Timer // identify timeout, then token expiry

	// Read from timers and delivering goroutines.
	identified atomic.Bool // set before the welcome is queued
	slow       atomic.Bool // set when the queue first overflows
}

const (
	keyState = "state" // *sessionState
	keyName  = "name"  // string, for logs on other goroutines
)

// New returns a Hub that routes through router, logs to log and registers
// its metrics with reg.
func New(cfg Config, router Router, log *slog.Logger, reg prometheus.Registerer) (*Hub, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("hub config: %w", err)
	}
	origins, err := newOriginPolicy(cfg.AllowedOrigins)
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

// ServeHTTP upgrades a request to a WebSocket session and serves it until it
// ends. Refusals happen before the upgrade, as HTTP statuses: 426 for a
// request that is not a WebSocket upgrade, 403 for an origin not allowed,
// 503 while the hub closes or when MaxConnections is reached.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case !websocket.IsWebSocketUpgrade(r):
		h.metrics.refused.WithLabelValues("not_websocket").Inc()
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this endpoint speaks WebSocket only", http.StatusUpgradeRequired)
		return
	case !h.origins.allow(r):
		h.metrics.refused.WithLabelValues("origin").Inc()
		h.log.Info("connection refused: origin not allowed", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		http.Error(w, "origin not allowed (NOTIFY_ALLOWED_ORIGINS)", http.StatusForbidden)
		return
	}
	if n := h.conns.Add(1); n > int64(h.cfg.MaxConnections) {
		h.conns.Add(-1)
		h.metrics.refused.WithLabelValues("connection_limit").Inc()
		h.log.Warn("connection refused: limit reached", "limit", h.cfg.MaxConnections, "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "connection limit reached (NOTIFY_MAX_CONNECTIONS="+strconv.Itoa(h.cfg.MaxConnections)+"); try another worker", http.StatusServiceUnavailable)
		return
	}

	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		h.conns.Add(-1)
		h.metrics.refused.WithLabelValues("closing").Inc()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	h.handlers.Add(1)
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
	st := &sessionState{queryToken: r.URL.Query().Get("token")}
	go h.serveSession(&detachedWriter{conn: conn, header: http.Header{}}, upgradeRequest(r), st)
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
// hub and counted in handlers, until the session ends.
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

func (h *Hub) isClosing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}

// onConnect runs on the session's handler goroutine, which becomes its read
// goroutine, before its pumps start.
func (h *Hub) onConnect(s *melody.Session) {
	h.metrics.connections.Inc()
	// Past the upgrade only the remote address is read, for logs; melody
	// would keep the upgrade headers for the session's life. The pumps
	// start after this handler, so nothing reads Request concurrently.
	s.Request = &http.Request{RemoteAddr: s.Request.RemoteAddr}
	if h.isClosing() {
		// Close took its snapshot of sessions before this one registered.
		h.closeWith(s, CloseGoingAway, "server shutting down")
		return
	}
	st := state(s)
	if st.queryToken != "" && h.cfg.Auth != nil {
		h.identify(s, st, Identify{Token: st.queryToken})
		// melody's read loop, which starts after this handler, sets the
		// identify read limit; onMessage raises it after the first frame.
		st.limitRaised = false
		return
	}
	st.timer = time.AfterFunc(h.cfg.IdentifyTimeout, func() {
		if !st.identified.Load() {
			h.metrics.closes.WithLabelValues("identify_timeout").Inc()
			h.refuse(s, ClosePolicyViolation, "identify timeout: send the first message sooner")
		}
	})
}

// onDisconnect runs on the session's read goroutine after its last message.
func (h *Hub) onDisconnect(s *melody.Session) {
	h.metrics.connections.Dec()
	st := state(s)
	if st.timer != nil {
		st.timer.Stop()
	}
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
	case st.rejected:
		// The close frame is on its way; ignore what the client still sends.
	case st.joined:
		if !st.limitRaised {
			s.WebsocketConnection().SetReadLimit(h.cfg.MessageMaxBytes)
			st.limitRaised = true
		}
		h.upstream(s, st, msg)
	case binary:
		h.reject(s, st, ClosePolicyViolation, "first message must be a text frame")
	default:
		id, err := ParseIdentify(msg)
		if err != nil {
			h.reject(s, st, ClosePolicyViolation, err.Error())
			return
		}
		h.identify(s, st, id)
	}
}

// identify authenticates id, joins the name, and sends the welcome.
func (h *Hub) identify(s *melody.Session, st *sessionState, id Identify) {
	name, expires := id.Name, time.Time{}
	if h.cfg.Auth != nil {
		if id.Token == "" {
			h.reject(s, st, ClosePolicyViolation, "token required")
			return
		}
		sub, exp, err := h.cfg.Auth.Authenticate(id.Token)
		if err != nil {
			code := ClosePolicyViolation
			if errors.Is(err, ErrTokenExpired) {
				code = CloseTokenExpired
			}
			h.reject(s, st, code, err.Error())
			return
		}
		if err := subjects.ValidName(sub); err != nil {
			h.reject(s, st, ClosePolicyViolation, "token subject: "+err.Error())
			return
		}
		if name != "" && name != sub {
			h.reject(s, st, ClosePolicyViolation, "name does not match the token subject")
			return
		}
		name, expires = sub, exp
	} else if name == "" {
		h.reject(s, st, ClosePolicyViolation, ErrNameMissing.Error())
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.JoinTimeout)
	err := h.router.Join(ctx, name)
	cancel()
	if err != nil {
		h.log.Warn("join failed", "name", name, "remote", s.Request.RemoteAddr, "err", err)
		h.metrics.handshakes.WithLabelValues("unavailable").Inc()
		st.rejected = true
		h.refuse(s, CloseTryAgainLater, "service unavailable, try again later")
		return
	}
	// add queues the welcome under the index lock, so no delivery can
	// overtake it.
	newName, ok := h.index.add(name, member{s, st}, welcomeFrame(name), h.cfg.MaxSessionsPerName)
	if !ok {
		h.router.Leave(name)
		h.metrics.closes.WithLabelValues("session_limit").Inc()
		h.reject(s, st, ClosePolicyViolation, "too many sessions for this name (limit "+strconv.Itoa(h.cfg.MaxSessionsPerName)+")")
		return
	}
	if newName {
		h.metrics.names.Inc()
	}
	st.joined, st.name = true, name
	s.Set(keyName, name)
	s.WebsocketConnection().SetReadLimit(h.cfg.MessageMaxBytes)
	st.limitRaised = true
	h.metrics.handshakes.WithLabelValues("ok").Inc()
	h.metrics.identified.Inc()

	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	if !expires.IsZero() {
		st.timer = time.AfterFunc(time.Until(expires), func() {
			h.metrics.closes.WithLabelValues("token_expired").Inc()
			h.refuse(s, CloseTokenExpired, "token expired")
		})
	}
}

// reject turns a client away on its read goroutine: an error frame, then a
// close frame with code and reason. Later frames from it are ignored.
func (h *Hub) reject(s *melody.Session, st *sessionState, code int, reason string) {
	st.rejected = true
	h.metrics.handshakes.WithLabelValues("rejected").Inc()
	h.log.Info("client rejected", "remote", s.Request.RemoteAddr, "code", code, "reason", reason)
	h.refuse(s, code, reason)
}

// refuse queues an error frame and a close frame; safe on any goroutine.
func (h *Hub) refuse(s *melody.Session, code int, reason string) {
	_ = s.Write(errorFrame(reason))
	h.closeWith(s, code, reason)
}

func (h *Hub) closeWith(s *melody.Session, code int, reason string) {
	_ = s.CloseWithMsg(websocket.FormatCloseMessage(code, truncateReason(reason)))
}

// truncateReason keeps a close reason within the 123 bytes a close frame
// holds, without splitting a UTF-8 sequence.
func truncateReason(reason string) string {
	const max = 123
	if len(reason) <= max {
		return reason
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
}

func (h *Hub) upstream(s *melody.Session, st *sessionState, msg []byte) {
	if st.limiter == nil {
		// Most sessions never send: they get a limiter with their first message.
		st.limiter = rate.NewLimiter(rate.Limit(h.cfg.UpstreamRate), h.cfg.UpstreamBurst)
	}
	if !st.limiter.Allow() {
		h.metrics.closes.WithLabelValues("upstream_rate").Inc()
		h.reject(s, st, ClosePolicyViolation, "upstream rate limit exceeded")
		return
	}
	if err := h.router.Upstream(st.name, msg); err != nil {
		h.metrics.upstream.WithLabelValues("failed").Inc()
		h.log.Warn("upstream publish failed", "name", st.name, "err", err)
		_ = s.Write(errorFrame("message not forwarded: service unavailable"))
		return
	}
	h.metrics.upstream.WithLabelValues("ok").Inc()
}

// onError runs on whichever goroutine met the error: a delivering goroutine
// for a full queue, the session's pumps for I/O errors.
func (h *Hub) onError(s *melody.Session, err error) {
	switch {
	case errors.Is(err, melody.ErrMessageBufferFull):
		// Counted as queue_full by the delivering index.write.
		if st := state(s); st.slow.CompareAndSwap(false, true) {
			name, _ := s.Get(keyName)
			h.metrics.closes.WithLabelValues("slow_consumer").Inc()
			h.log.Warn("disconnecting slow client: outbound queue full", "name", name, "remote", s.Request.RemoteAddr, "queue", h.cfg.QueueSize)
			// The queue is full, so the close frame cannot wait in it; and
			// the writer may be blocked on the socket, so this must not
			// run on the delivering goroutine.
			go closeSlow(s.WebsocketConnection(), h.cfg.WriteTimeout)
		}
	case errors.Is(err, melody.ErrWriteClosed):
		// A write raced the session's close: index.write saw no error.
		h.metrics.droppedClosing.Inc()
	case isTimeout(err):
		h.metrics.closes.WithLabelValues("pong_timeout").Inc()
		h.log.Debug("client stopped answering pings", "remote", s.Request.RemoteAddr)
	default:
		h.log.Debug("session error", "remote", s.Request.RemoteAddr, "err", err)
	}
}

// closeSlow sends CloseTooSlow if the connection can still take it, then
// cuts it. A client that has stopped reading entirely sees the connection
// drop without the close frame.
func closeSlow(conn *websocket.Conn, wait time.Duration) {
	_ = conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(CloseTooSlow, "too slow: outbound queue full"), time.Now().Add(wait))
	_ = conn.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func state(s *melody.Session) *sessionState {
	v, _ := s.Get(keyState)
	return v.(*sessionState)
}

// DeliverUser queues payload to every session named name and returns how
// many sessions it was queued to. It costs in proportion to that name's
// sessions, whatever the total, and never blocks: a session whose queue is
// full loses the message and is disconnected with CloseTooSlow. Every
// loss is counted in notify_dropped_total{reason}.
func (h *Hub) DeliverUser(name string, payload []byte) int {
	t := h.index.deliver(name, payload, utf8.Valid(payload))
	h.metrics.record(h.metrics.deliveredUser, t)
	return t.queued
}

// DeliverAll queues payload to every identified session and returns how
// many sessions it was queued to. Unidentified sessions receive nothing.
func (h *Hub) DeliverAll(payload []byte) int {
	t := h.index.deliverAll(payload, utf8.Valid(payload))
	h.metrics.record(h.metrics.deliveredAll, t)
	return t.queued
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
	for _, s := range sessions {
		h.closeWith(s, CloseGoingAway, "server shutting down")
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
