package hub

import (
	"sync/atomic"
	"time"

	"github.com/olahol/melody"
	"golang.org/x/time/rate"
)

// sessionState is a session's handshake and limit state, kept in the
// melody session's Keys under keyState.
type sessionState struct {
	// Touched only on the session's read goroutine: melody runs a
	// session's connect, message and disconnect handlers there, one after
	// another (ConcurrentMessageHandling stays off).
	queryToken string
	// upgraded is when ServeHTTP admitted the upgrade request, since the
	// hub's epoch: the start of notify_handshake_duration_seconds.
	upgraded time.Duration
	name     string // set once joined
	joined   bool
	// welcomed says the welcome was queued: at the join for a v1 session,
	// once its resume is answered for a v2 one.
	welcomed bool
	// limitRaised says the read limit is MessageMaxBytes. A session
	// identified on connect (query token) gets it only from its second
	// message on: melody sets the read limit when its read loop starts,
	// after the connect handler, and the first frame is read under it.
	limitRaised bool
	limiter     *rate.Limiter
	// timer is the identify timeout, then the token expiry. It is set and
	// stopped on the read goroutine; its function runs on a goroutine of
	// its own.
	timer *time.Timer

	// Read and written from any goroutine: the read goroutine, the write
	// pump (through onError), timers, and the goroutines delivering to
	// the session, some under an index shard lock.
	identified atomic.Bool // set before the welcome is queued
	// v2 is the session's v2 state; nil for a v1 session. Set once, on the
	// read goroutine, before the session is in the index.
	v2   atomic.Pointer[v2Session]
	slow atomic.Bool // set when the queue first overflows
	// queued counts the text and binary frames the hub queued to the
	// session (see queue) or sent directly, sent those written to its
	// socket (sessionConn.Write, sendNow). Their difference is what is in
	// flight: a v2 replay is paced by it, the connection holds a frame
	// back while another one follows (sessionConn), and a frame is sent
	// directly only when it is 0 (direct.go).
	queued atomic.Int64
	sent   atomic.Int64
	// conn is the connection the session writes to, for direct sends
	// (direct.go); set before the session starts, nil in tests without one.
	conn *sessionConn
	// writeClosed is set when melody found the session closed in a write
	// that had passed Write's own check, so Write returned nil for a
	// message it dropped. The session is closed for good: nothing written
	// to it since has been queued either.
	writeClosed atomic.Bool
	// closing is set by the first reason to close the session (a failed
	// handshake, a limit, a timeout), which alone counts the close. Once
	// it is set, frames the client still sends are ignored.
	closing atomic.Bool
	// closed is the close code and reason the session ended with, for its
	// offline event; see closeInfo.
	closed atomic.Pointer[closeInfo]
}

// frameWriter is what a frame is queued through: a melody session.
type frameWriter interface{ Write([]byte) error }

// queue hands frame to w and reports whether it was queued. It is counted
// in queued before melody holds it, and the count is taken back if it was
// not queued, so that queued never lags behind what melody holds: equal
// counts then mean nothing is in flight, which a direct send relies on
// (direct.go). melody's Write returns nil for a frame it dropped because
// the queue was full (onError then marks the session slow) or because the
// session closed meanwhile (writeClosed).
func (st *sessionState) queue(w frameWriter, frame []byte) bool {
	st.queued.Add(1)
	if err := w.Write(frame); err != nil || st.writeClosed.Load() || st.slow.Load() {
		st.queued.Add(-1)
		return false
	}
	return true
}

// Keys of a melody session.
const (
	keyState = "state" // *sessionState
	keyName  = "name"  // string, for logs on other goroutines
)

// state returns s's state; every session has one from its upgrade on.
func state(s *melody.Session) *sessionState {
	v, _ := s.Get(keyState)
	return v.(*sessionState)
}

// remoteAddr is s's peer address, for logs.
func remoteAddr(s *melody.Session) string {
	if a := s.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
