package hub

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/feed"
)

// v2Session is the state of a session that speaks protocol v2
// (docs/protocol.md, section 8), from its registration in the index to
// its end.
//
// It is registered replaying: live messages for it are buffered, in
// arrival order, while its read goroutine asks the Resumer and queues the
// welcome and the replay (resume.go). Then the buffer goes out and the
// session turns live: each durable message passes the checks of cursor.admit.
// Once ended, nothing more is queued to it: its close frame is the last.
type v2Session struct {
	s    session
	st   *sessionState
	name string
	m    *metrics
	// overflow hands the session to the slow closer (4002) when its buffer
	// overflows. Like onError's path, it only counts and hands over, so it
	// is safe under an index shard lock.
	overflow func()
	// bufMax bounds buf: a session whose live messages outgrow it while
	// its replay goes out is too slow.
	bufMax int
	// gen is the hub's feed generation when the session was registered;
	// set by v2Registry.add, under its lock, and read-only after.
	gen uint64

	// wake (capacity 1) is poked when a frame is sent (st.sent, by
	// sessionConn.Write on the write pump) or the session is ending, for
	// the replay's pacing.
	wake chan struct{}

	// mu guards the rest. Deliveries take it under an index shard's read
	// lock, so under it nothing blocks, logs or calls out: it only queues
	// frames (Session.Write never blocks) and counts.
	mu        sync.Mutex
	ended     bool
	replaying bool
	buf       []buffered
	cur       cursor
	// cancel ends the context of the Resume call in flight, if any, so
	// that a session that ends stops waiting for its replay.
	cancel context.CancelFunc
}

// buffered is a message held for a replaying session, or one of its
// replay: frame is its envelope when already built (shared with the other
// sessions the delivery reached), nil for a message from the Resumer.
type buffered struct {
	msg   feed.Message
	on    subject
	frame []byte
}

func (v *v2Session) poke() {
	select {
	case v.wake <- struct{}{}:
	default: // already poked; the waiter rereads everything
	}
}

// deliver is one live delivery to the session, on the delivering
// goroutine under the index shard's read lock.
func (v *v2Session) deliver(d *delivery, t *tally) {
	if v.st.slow.Load() {
		t.afterLoss++
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.ended:
		t.closing++
	case v.replaying:
		if len(v.buf) >= v.bufMax {
			// Too slow: what it holds is dropped, its resume stops, and
			// the slow closer sends 4002.
			t.queueFull++
			v.endLocked(0, "", nil)
			if v.st.slow.CompareAndSwap(false, true) {
				v.overflow()
			}
			return
		}
		v.buf = append(v.buf, buffered{msg: d.msg, on: d.on, frame: d.envelope()})
		t.buffered++
	case v.admitLocked(d.on, d.msg, t):
		frame := d.envelope()
		if d.direct && v.st.conn != nil && v.st.conn.sendNow(websocket.TextMessage, frame) {
			t.queued++
			return
		}
		v.writeLocked(frame, t)
	}
}

// admitLocked applies the live checks to m and reports whether to send it;
// a duplicate is counted, a gap ends the session.
func (v *v2Session) admitLocked(on subject, m feed.Message, t *tally) bool {
	switch v.cur.admit(on, m) {
	case admitDuplicate:
		t.duplicate++
		return false
	case admitGap:
		t.closing++ // the message that shows the gap, not sent
		if v.endLocked(closeServiceRestart, reasonFeedLost, v.m.feedCloses.gap) {
			t.gaps++
		}
		return false
	}
	return true
}

// writeLocked queues a notification's frame and counts the outcome in t.
func (v *v2Session) writeLocked(frame []byte, t *tally) {
	v.st.queued.Add(1) // before melody holds it; see sessionState.queue
	err := v.s.Write(frame)
	switch {
	case err != nil, v.st.writeClosed.Load():
		v.st.queued.Add(-1)
		t.closing++
	case v.st.slow.Load():
		v.st.queued.Add(-1)
		t.queueFull++
	default:
		t.queued++
	}
}

// writeFrameLocked queues a frame that is not a notification (welcome,
// ping) and reports whether it was queued.
func (v *v2Session) writeFrameLocked(frame []byte) bool {
	var t tally
	v.writeLocked(frame, &t)
	return t.queued == 1
}

// writeFrame is writeFrameLocked for a session that may have ended.
func (v *v2Session) writeFrame(frame []byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return !v.ended && v.writeFrameLocked(frame)
}

// end is endLocked, taking the lock.
func (v *v2Session) end(code int, reason string, cause prometheus.Counter) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.endLocked(code, reason, cause)
}

// endLocked makes the session take nothing more: the messages it buffered
// are dropped (counted as closing), its Resume is cancelled and its replay
// stops. With code 0 that is all: whoever calls it closes the session, or
// it is closed already. Otherwise, unless something else has started
// closing the session, it queues a close frame with code and reason after
// what is queued, counts the close in cause (when not nil), and reports
// true.
func (v *v2Session) endLocked(code int, reason string, cause prometheus.Counter) bool {
	if v.ended {
		return false
	}
	v.ended = true
	if n := len(v.buf); n > 0 {
		v.m.dropped.closing.Add(float64(n))
	}
	v.buf = nil
	if v.cancel != nil {
		v.cancel()
	}
	defer v.poke()
	if code == 0 || !v.st.closing.CompareAndSwap(false, true) {
		return false // closing for another reason, which sends its own close frame
	}
	if cause != nil {
		cause.Inc() // before the frame the client acts on
	}
	v.st.noteClose(code, reason)
	_ = v.s.CloseWithMsg(websocket.FormatCloseMessage(code, truncateReason(reason)))
	return true
}

// stopped reports whether the session has ended or is closing for any
// reason, so that its replay stops.
func (v *v2Session) stopped() bool {
	v.mu.Lock()
	ended := v.ended
	v.mu.Unlock()
	return ended || v.st.closing.Load() || v.st.slow.Load() || v.s.IsClosed()
}

// live reports whether the session is past its replay and not ended.
func (v *v2Session) live() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return !v.ended && !v.replaying
}

// ping queues the session's app ping, after applying snap to its cursor
// when have is true, on the hub's app-ping goroutine. A session still
// replaying gets none: its replay is traffic, and its cursor is not
// settled until the replay is out. It reports whether a ping was queued
// and whether the session was closed for a stuck message instead.
func (v *v2Session) ping(snap feed.Snapshot, have bool) (pinged, stuck bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ended || v.replaying {
		return false, false
	}
	if have && v.cur.observe([subjectCount]feed.Last{onUser: snap.Users[v.name], onAll: snap.All}) {
		return false, v.endLocked(closeServiceRestart, reasonFeedLost, v.m.feedCloses.stuck)
	}
	return v.writeFrameLocked(pingFrame(v.cur.c)), false
}

// v2Registry is the set of a hub's v2 sessions, for FeedLost and the app
// pings, which reach every v2 session and no v1 one.
type v2Registry struct {
	mu       sync.Mutex
	sessions map[*v2Session]struct{}
}

// add registers v under the current feed generation, read under the lock
// so that FeedLost, which bumps it before listing, sees v or v sees the
// new generation.
func (r *v2Registry) add(v *v2Session, gen *atomic.Uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v.gen = gen.Load()
	r.sessions[v] = struct{}{}
}

func (r *v2Registry) remove(v *v2Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.sessions, v)
}

// any reports whether a session is registered now.
func (r *v2Registry) any() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions) > 0
}

// list returns the sessions registered now.
func (r *v2Registry) list() []*v2Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := make([]*v2Session, 0, len(r.sessions))
	for v := range r.sessions {
		list = append(list, v)
	}
	return list
}
