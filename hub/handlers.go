package hub

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"golang.org/x/time/rate"

	"github.com/notify-worker/notify-worker/subjects"
)

// onConnect runs on the session's handler goroutine, which becomes its read
// goroutine, before its pumps start.
func (h *Hub) onConnect(s *melody.Session) {
	h.metrics.connections.Inc()
	// Nothing reads the upgrade request past the upgrade (logs take the
	// remote address from the connection), and melody would keep it for
	// the session's life. The pumps start after this handler, so nothing
	// reads Request concurrently.
	s.Request = nil
	if h.isClosing() {
		// Close took its snapshot of sessions before this one registered.
		h.closeWith(s, closeGoingAway, reasonShuttingDown)
		return
	}
	st := state(s)
	if st.queryToken != "" && h.cfg.Auth != nil {
		h.identify(s, st, identifyMessage{token: st.queryToken})
		// melody's read loop, which starts after this handler, sets the
		// identify read limit; onMessage raises it after the first frame.
		st.limitRaised = false
		return
	}
	st.timer = time.AfterFunc(h.cfg.IdentifyTimeout, func() {
		if !st.identified.Load() {
			h.closeFor(s, st, closePolicyViolation, reasonIdentifyTimeout, h.metrics.closes.identifyTimeout)
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
	if st.welcomed {
		h.metrics.identified.Dec()
		h.index.unwelcomeName(st.name, st, h.cfg.Events)
	}
	if st.joined {
		h.unregister(s, st)
	}
}

// unregister undoes a join, on the session's read goroutine: the session
// leaves the index (and the v2 sessions), and its name is left.
func (h *Hub) unregister(s *melody.Session, st *sessionState) {
	if v := st.v2.Load(); v != nil {
		v.end(0, "", nil)
		h.v2.remove(v)
	}
	if h.index.remove(st.name, s) {
		h.metrics.names.Dec()
	}
	st.joined = false
	h.router.Leave(st.name)
}

// onMessage runs on the session's read goroutine.
func (h *Hub) onMessage(s *melody.Session, msg []byte, binary bool) {
	st := state(s)
	switch {
	case st.closing.Load():
		// The session is being closed; ignore what the client still sends.
	case st.joined:
		if !st.limitRaised {
			s.WebsocketConnection().SetReadLimit(h.cfg.MessageMaxBytes)
			st.limitRaised = true
		}
		h.upstream(s, st, msg)
	case binary:
		h.reject(s, st, closePolicyViolation, reasonBinaryFirst)
	default:
		id, err := parseIdentify(msg)
		if err != nil {
			h.reject(s, st, closePolicyViolation, err.Error())
			return
		}
		h.identify(s, st, id)
	}
}

// identify authenticates id, joins the name, and sends the welcome, on the
// session's read goroutine.
func (h *Hub) identify(s *melody.Session, st *sessionState, id identifyMessage) {
	name, expires := id.name, time.Time{}
	if h.cfg.Auth != nil {
		if id.token == "" {
			h.reject(s, st, closePolicyViolation, reasonTokenRequired)
			return
		}
		sub, exp, err := h.cfg.Auth.Authenticate(id.token)
		if err != nil {
			code := closePolicyViolation
			if errors.Is(err, ErrTokenExpired) {
				code = closeTokenExpired
			}
			h.reject(s, st, code, err.Error())
			return
		}
		if err := subjects.ValidName(sub); err != nil {
			h.reject(s, st, closePolicyViolation, reasonTokenSubject+err.Error())
			return
		}
		if name != "" && name != sub {
			h.reject(s, st, closePolicyViolation, reasonNameMismatch)
			return
		}
		name, expires = sub, exp
	} else if name == "" {
		h.reject(s, st, closePolicyViolation, errNameMissing.Error())
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.JoinTimeout)
	err := h.router.Join(ctx, name)
	cancel()
	if err != nil {
		h.log.Warn("join failed", "name", name, "remote", remoteAddr(s), "err", err)
		h.closeFor(s, st, closeTryAgainLater, reasonUnavailable, h.handshakeEnd(st, &h.metrics.handshakes.unavailable))
		return
	}
	// add queues a v1 welcome under the index lock, so no delivery can
	// overtake it. A v2 session is registered replaying instead: what is
	// delivered to it waits until its welcome and replay are queued.
	welcome := welcomeFrame(name)
	var v *v2Session
	if id.v == 2 {
		welcome = nil
		v = h.newV2Session(s, st, name)
		st.v2.Store(v)
		h.v2.add(v, &h.gen)
	}
	newName, ok := h.index.add(name, member{s, st}, welcome, h.cfg.MaxSessionsPerName, h.cfg.Events)
	if !ok {
		if v != nil {
			h.v2.remove(v)
		}
		h.router.Leave(name)
		// A failed handshake, and a limit.
		h.turnAway(s, st, closePolicyViolation, reasonTooManySessions(h.cfg.MaxSessionsPerName),
			h.handshakeEnd(st, &h.metrics.handshakes.rejected), h.metrics.closes.sessionLimit)
		return
	}
	if newName {
		h.metrics.names.Inc()
	}
	st.joined, st.name = true, name
	s.Set(keyName, name)
	s.WebsocketConnection().SetReadLimit(h.cfg.MessageMaxBytes)
	st.limitRaised = true
	if v == nil {
		st.welcomed = true
		h.handshakeEnd(st, &h.metrics.handshakes.ok).Inc()
		h.metrics.identified.Inc()
	}

	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	if !expires.IsZero() {
		st.timer = time.AfterFunc(time.Until(expires), func() {
			h.closeFor(s, st, closeTokenExpired, reasonTokenExpired, h.metrics.closes.tokenExpired)
		})
	}
	if v != nil {
		h.resume(s, st, v, id.since)
	}
}

// reject ends a handshake that failed, on the session's read goroutine:
// it is turned away and counted as a rejected handshake.
func (h *Hub) reject(s *melody.Session, st *sessionState, code int, reason string) {
	h.turnAway(s, st, code, reason, h.handshakeEnd(st, &h.metrics.handshakes.rejected))
}

// turnAway is closeFor on the session's read goroutine, during its
// handshake or after its welcome, with a log line.
func (h *Hub) turnAway(s *melody.Session, st *sessionState, code int, reason string, counts ...incrementer) {
	if h.closeFor(s, st, code, reason, counts...) {
		h.log.Info("client rejected", "remote", remoteAddr(s), "code", code, "reason", reason)
	}
}

// closeFor starts closing s for one reason: it counts the close in each of
// counts, then queues an error frame and a close frame with code and
// reason. Only the first reason to close a session does so, and it reports
// whether this was it, so that a session is counted once, by what closed
// it. Safe on any goroutine.
func (h *Hub) closeFor(s *melody.Session, st *sessionState, code int, reason string, counts ...incrementer) bool {
	if !st.closing.CompareAndSwap(false, true) {
		return false
	}
	for _, c := range counts {
		c.Inc()
	}
	if v := st.v2.Load(); v != nil {
		// Nothing more is queued to it, and its replay stops.
		v.end(0, "", nil)
	}
	h.refuse(s, code, reason)
	return true
}

// incrementer is what closeFor counts a close in: a prometheus.Counter, or a
// handshakeEnd, which also observes the handshake's duration.
type incrementer interface{ Inc() }

// refuse queues an error frame and a close frame, counting nothing; safe on
// any goroutine.
func (h *Hub) refuse(s *melody.Session, code int, reason string) {
	state(s).queue(s, errorFrame(reason))
	h.closeWith(s, code, reason)
}

// closeWith queues a close frame; safe on any goroutine.
func (h *Hub) closeWith(s *melody.Session, code int, reason string) {
	state(s).noteClose(code, reason)
	_ = s.CloseWithMsg(websocket.FormatCloseMessage(code, truncateReason(reason)))
}

// upstream forwards a message from an identified session, on its read
// goroutine.
func (h *Hub) upstream(s *melody.Session, st *sessionState, msg []byte) {
	if st.limiter == nil {
		// Most sessions never send: they get a limiter with their first message.
		st.limiter = rate.NewLimiter(rate.Limit(h.cfg.UpstreamRate), h.cfg.UpstreamBurst)
	}
	if !st.limiter.Allow() {
		// A limit after the welcome, not a handshake: counted as a close only.
		h.turnAway(s, st, closePolicyViolation, reasonUpstreamRate, h.metrics.closes.upstreamRate)
		return
	}
	if st.v2.Load() != nil {
		if seq, isAck, err := parseAck(msg); isAck {
			h.ack(s, st, seq, err)
			return
		}
	}
	if err := h.router.Upstream(st.name, msg); err != nil {
		h.metrics.upstream.failed.Inc()
		h.log.Warn("upstream publish failed", "name", st.name, "err", err)
		st.queue(s, errorFrame(reasonNotForwarded))
		return
	}
	h.metrics.upstream.ok.Inc()
}

// onError runs on whichever goroutine met the error: for a full queue or
// a write racing the close, the goroutine that wrote, often a delivery
// holding an index shard's read lock (so these cases only mark the session
// and hand it over); for I/O errors, the session's pumps.
func (h *Hub) onError(s *melody.Session, err error) {
	if v := state(s).v2.Load(); v != nil {
		defer h.v2Error(v, err)
	}
	switch {
	case errors.Is(err, melody.ErrMessageBufferFull):
		// The lost message is counted as queue_full by the delivering
		// index.write.
		if st := state(s); st.slow.CompareAndSwap(false, true) {
			h.overflowed(s, st)
		}
	case errors.Is(err, melody.ErrWriteClosed):
		// A write raced the session's close and returned no error. Only
		// index.write knows whether it was a notification (it counts it
		// as closing, not queued); an error or close frame is not one.
		state(s).writeClosed.Store(true)
	case isTimeout(err):
		if !state(s).closing.CompareAndSwap(false, true) {
			// Closed for another reason first, e.g. a slow consumer whose
			// stalled socket then timed out the write in progress.
			return
		}
		if isReadTimeout(err) {
			state(s).noteClose(closeAbnormal, reasonPongTimeout)
			// melody's read deadline is the pong wait.
			h.metrics.closes.pongTimeout.Inc()
			h.log.Debug("client stopped answering pings", "remote", remoteAddr(s))
		} else {
			state(s).noteClose(closeAbnormal, reasonWriteTimeout)
			h.metrics.closes.writeTimeout.Inc()
			h.log.Debug("write to client timed out", "remote", remoteAddr(s))
		}
	default:
		noteClientClose(s, err)
		h.log.Debug("session error", "remote", remoteAddr(s), "err", err)
	}
}

// v2Error tells a v2 session's replay about err, after onError. A full
// queue or a write racing the close comes from a delivery, maybe under an
// index lock: the replay is only woken to recheck the session. Any other
// error comes from a pump that is ending the connection (melody closes it
// only after onError returns): the session ends now, so that a replay
// waiting on it stops at once.
func (h *Hub) v2Error(v *v2Session, err error) {
	if errors.Is(err, melody.ErrMessageBufferFull) || errors.Is(err, melody.ErrWriteClosed) {
		v.poke()
		return
	}
	v.end(0, "", nil)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isReadTimeout tells a timeout on reading from the client from one on
// writing to it.
func isReadTimeout(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Op == "read"
	}
	// gorilla replaces a temporary net error, as a timeout is, by one that
	// keeps only its text, which a *net.OpError starts with its operation.
	return strings.HasPrefix(err.Error(), "read ")
}
