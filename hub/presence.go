package hub

import (
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// Events is told what happens to the names of this hub, for the events
// a worker publishes (docs/protocol.md, section 9).
//
// Online and Offline are called on the goroutine of the session that made
// the transition, while the hub holds the lock of that name's index shard,
// so that the transitions of one name reach Events in the order they
// happened. They must therefore return at once and never call back into
// the hub: queue and return. Ack is called on the session's read
// goroutine, with no lock held, and must not block either.
type Events interface {
	// Online: the first session named name on this hub was welcomed;
	// sessions is the number of welcomed sessions of name now (1).
	Online(name string, sessions int)
	// Offline: the last welcomed session named name on this hub ended,
	// with the close code and reason it ended with (see closeInfo).
	Offline(name string, code int, reason string)
	// Ack: a v2 session named name acknowledged the durable message seq.
	Ack(name string, seq uint64)
}

// Sessions returns the number of sessions named name on this hub
// (welcomed, or v2 sessions still being resumed). It looks name up in its
// index shard under the read lock: it costs the same whatever the number
// of sessions, and never blocks a delivery for long. Safe on any goroutine.
func (h *Hub) Sessions(name string) int {
	sh := h.index.shard(name)
	sh.mu.RLock()
	n := len(sh.names[name])
	sh.mu.RUnlock()
	return n
}

// closeInfo is the close code and reason a session ended with, as it is
// reported in an offline event: the first close frame sent or received
// wins. A session that ended without one (the connection dropped, a
// timeout) is reported as 1006 with a reason saying which.
type closeInfo struct {
	code   int
	reason string
}

// Reasons of an offline event for a session that ended without a close
// frame. 1006 is never sent on the wire; it is the code WebSocket
// reserves for "closed abnormally".
const (
	closeAbnormal       = websocket.CloseAbnormalClosure // 1006
	reasonLost          = "connection lost"
	reasonPongTimeout   = "pong timeout"
	reasonWriteTimeout  = "write timeout"
	reasonClientNoCause = "closed by the client"
)

// noteClose records code and reason as how st's session ended, unless
// something did already. Safe on any goroutine.
func (st *sessionState) noteClose(code int, reason string) {
	st.closed.CompareAndSwap(nil, &closeInfo{code: code, reason: reason})
}

// closedWith returns how st's session ended, for its offline event.
func (st *sessionState) closedWith() (int, string) {
	if c := st.closed.Load(); c != nil {
		return c.code, c.reason
	}
	return closeAbnormal, reasonLost
}

// noteClientClose records the close frame a client sent, from the read
// error melody reports; a frame without a status is 1005, and a dropped
// connection (which gorilla reports as 1006) is reasonLost.
func noteClientClose(s *melody.Session, err error) {
	ce, ok := err.(*websocket.CloseError)
	if !ok {
		return
	}
	reason := ce.Text
	if ce.Code == closeAbnormal {
		// gorilla's own report of a dropped connection, not a frame.
		reason = reasonLost
	} else if reason == "" {
		reason = reasonClientNoCause
	}
	state(s).noteClose(ce.Code, reason)
}

// welcomeName counts a welcomed session of name and tells events (under
// the shard lock) when it is the first. Called on the session's read
// goroutine, before its welcome is queued (a v1 session is counted by
// index.add instead); st.welcomed must be set.
func (ix *index) welcomeName(name string, ev Events) {
	sh := ix.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.welcomeLocked(name, ev)
}

// welcomeLocked is welcomeName with sh's lock held.
func (sh *shard) welcomeLocked(name string, ev Events) {
	sh.welcomed[name]++
	if sh.welcomed[name] == 1 && ev != nil {
		ev.Online(name, 1)
	}
}

// unwelcomeName undoes welcomeName for a session that ends, and tells
// events when it was the last welcomed session of name.
func (ix *index) unwelcomeName(name string, st *sessionState, ev Events) {
	sh := ix.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := sh.welcomed[name] - 1
	if n > 0 {
		sh.welcomed[name] = n
		return
	}
	delete(sh.welcomed, name)
	if ev != nil {
		code, reason := st.closedWith()
		ev.Offline(name, code, reason)
	}
}
