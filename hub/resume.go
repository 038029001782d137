package hub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/olahol/melody"

	"github.com/notify-worker/notify-worker/feed"
)

// The v2 handshake after the join (docs/protocol.md, section 8), on
// the session's read goroutine: melody runs a session's connect, message
// and disconnect handlers there one after another, so the session's
// disconnect waits for its replay, and the replay can block on pacing
// without holding anyone else up.

// newV2Session returns the v2 state of s, replaying: registered, its live
// messages are buffered until its replay is out.
func (h *Hub) newV2Session(s *melody.Session, st *sessionState, name string) *v2Session {
	return &v2Session{
		s:         s,
		st:        st,
		name:      name,
		m:         h.metrics,
		overflow:  func() { h.overflowed(s, st) },
		bufMax:    replayBufferMax(h.cfg.QueueSize),
		wake:      make(chan struct{}, 1),
		replaying: true,
	}
}

// replayBufferMax is how many live messages a replaying session may have
// waiting for its replay: more than a fast replay ever meets, little
// memory (they share their payload and envelope with the other sessions).
func replayBufferMax(queueSize int) int { return max(1024, 4*queueSize) }

// replayWindow is how many text frames a replaying session may have queued
// and not yet written to its socket: half its queue, so that a replay of
// any length never fills the queue, and the close or error frame that may
// follow still fits.
func replayWindow(queueSize int) int64 { return int64(max(1, queueSize/2)) }

// errSessionEnded is the resume of a session that ended before it ran.
var errSessionEnded = errors.New("session ended")

// resume asks the Resumer for v's replay, then queues the welcome, the
// replay and the live messages buffered meanwhile, paced, and turns v live.
// A session that ends meanwhile (client gone, FeedLost, Close, a limit)
// stops it at once.
func (h *Hub) resume(s *melody.Session, st *sessionState, v *v2Session, since *uint64) {
	start := time.Now()
	if h.isClosing() {
		// Close may have listed the sessions before this one was v2.
		v.end(closeServiceRestart, reasonRestart, nil)
		return
	}
	rep, err := h.askResume(v, since)
	if err != nil {
		h.resumeFailed(s, st, v, err)
		return
	}

	p := &pacer{v: v, window: replayWindow(h.cfg.QueueSize), backstopEvery: h.cfg.PingPeriod}
	defer p.stop()
	// Counted for events before the welcome can reach the client, and
	// outside v.mu: a delivery holds the shard's lock while it takes v.mu.
	// A session that ends before its welcome then reports online and
	// offline, which is what it was: accepted, then gone.
	st.welcomed = true
	h.metrics.identified.Inc()
	h.index.welcomeName(v.name, h.cfg.Events)
	v.mu.Lock()
	if v.ended {
		v.mu.Unlock()
		return
	}
	replay, dups := mergeReplay(rep, v.buf, since)
	v.buf = replay.rest
	v.cur = newCursor(rep.Through)
	// Counted before the welcome, which a client may act on at once.
	h.metrics.duplicates.Add(float64(dups))
	h.metrics.countResume(rep)
	h.handshakeEnd(st, &h.metrics.handshakes.ok).Inc()
	welcomed := v.writeFrameLocked(welcomeV2Frame(v.name, rep, len(replay.msgs), h.cfg.AppPing, upstreamLimit{h.cfg.UpstreamRate, h.cfg.UpstreamBurst}))
	v.mu.Unlock()
	if !welcomed {
		v.end(0, "", nil)
		return
	}

	for _, e := range replay.msgs {
		frame := e.frame
		if frame == nil {
			frame = envelopeFrame(e.msg)
		}
		if !p.wait() || !v.writeFrame(frame) {
			v.end(0, "", nil)
			return
		}
		h.metrics.replayed.Inc()
	}
	h.metrics.replayDuration.Observe(time.Since(start).Seconds())
	h.drainReplayBuffer(v, p)
	// melody reads pongs, which push the read deadline on, only between
	// messages, and a replay paced to a slow reader may outlast the pong
	// timeout; the client has been taking frames, so it counts as one.
	_ = s.WebsocketConnection().SetReadDeadline(time.Now().Add(h.cfg.PongTimeout))
}

// askResume calls the Resumer with the join timeout, in a context that the
// session's end cancels. Without a Resumer, the answer is unavailable.
func (h *Hub) askResume(v *v2Session, since *uint64) (feed.Replay, error) {
	if h.cfg.Resumer == nil {
		return feed.Replay{Recovered: false, Reason: feed.ReasonUnavailable}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.JoinTimeout)
	defer cancel()
	v.mu.Lock()
	if v.ended {
		v.mu.Unlock()
		return feed.Replay{}, errSessionEnded
	}
	v.cancel = cancel
	v.mu.Unlock()

	rep, err := h.cfg.Resumer.Resume(ctx, v.name, since)

	v.mu.Lock()
	v.cancel = nil
	v.mu.Unlock()
	if err != nil {
		return feed.Replay{}, fmt.Errorf("resume %s: %w", v.name, err)
	}
	return rep, nil
}

// resumeFailed ends a session whose Resume failed: unregistered and left
// before it is closed with 1013 (try again later), never told recovered
// false. A session that ended while Resume ran is left by its disconnect.
func (h *Hub) resumeFailed(s *melody.Session, st *sessionState, v *v2Session, err error) {
	if v.stopped() {
		return
	}
	h.log.Warn("resume failed", "name", v.name, "remote", remoteAddr(s), "err", err)
	h.unregister(s, st)
	h.closeFor(s, st, closeTryAgainLater, reasonUnavailable, h.handshakeEnd(st, &h.metrics.handshakes.unavailable), h.metrics.resumes.unavailable)
}

// drainReplayBuffer queues the live messages buffered during the replay,
// paced like it and with the live checks, then turns v live: a delivery
// that finds the buffer empty under v's lock writes directly from then on,
// so order is kept.
func (h *Hub) drainReplayBuffer(v *v2Session, p *pacer) {
	for {
		if !p.wait() {
			v.end(0, "", nil)
			return
		}
		done, gaps := v.drainSome(p.room())
		if gaps > 0 {
			h.log.Warn("closed v2 sessions that missed a durable message", "name", v.name, "sessions", gaps)
		}
		if done {
			return
		}
	}
}

// drainSome queues up to n buffered messages, counting them as live
// deliveries, and reports whether the session is done with its buffer
// (live, or ended) and whether a gap closed it.
func (v *v2Session) drainSome(n int) (done bool, gaps int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var t [subjectCount]tally
	kinds := [subjectCount]deliveryKind{onUser: v.m.delivered.user, onAll: v.m.delivered.all}
	now := time.Now()
	for ; n > 0 && len(v.buf) > 0 && !v.ended; n-- {
		e := v.buf[0]
		v.buf[0] = buffered{}
		v.buf = v.buf[1:]
		if v.admitLocked(e.on, e.msg, &t[e.on]) {
			queued := t[e.on].queued
			v.writeLocked(e.frame, &t[e.on])
			if t[e.on].queued > queued && !e.msg.Arrived.IsZero() {
				kinds[e.on].delay.Observe(now.Sub(e.msg.Arrived).Seconds())
			}
		}
	}
	// Counted before the session can turn live; the delays are observed
	// above, each from its own message's arrival.
	v.m.record(kinds[onUser], t[onUser], time.Time{})
	v.m.record(kinds[onAll], t[onAll], time.Time{})
	gaps = int(t[onUser].gaps + t[onAll].gaps)
	if v.ended {
		return true, gaps
	}
	if len(v.buf) == 0 {
		v.buf = nil
		v.replaying = false
		return true, gaps
	}
	return false, gaps
}

// merged is a replay merged with the live messages buffered while it was
// fetched: msgs go out after the welcome, in sequence order; rest, the
// buffered messages newer than the replay and the core ones, after it, in
// arrival order.
type merged struct {
	msgs []buffered
	rest []buffered
}

// mergeReplay merges rep with buf (docs/protocol.md, section 8). The replay's
// messages outside (since, Through] are dropped (they are at or below the
// client's cursor, or will come live). A buffered durable message at or
// below Through joins the replay if it is above since (and, for a replay
// that is not recovered, not below its first message) and not in it
// already; otherwise it is a duplicate: the client has it (or, without
// since, asked only for what comes after the welcome's seq). dups counts
// those, and buffered messages the replay also holds.
func mergeReplay(rep feed.Replay, buf []buffered, since *uint64) (m merged, dups int) {
	var low uint64
	if since != nil {
		low = *since
	}
	if !rep.Recovered && len(rep.Messages) > 0 {
		// A cut replay (the newest that fit the cap, or what retention
		// left) starts at its first message: one buffered below it would
		// make it more than the newest that fit, with a hole before them.
		first := slices.MinFunc(rep.Messages, func(a, b feed.Message) int { return cmp.Compare(a.Seq, b.Seq) }).Seq
		low = max(low, first-1)
	}
	inReplay := func(seq uint64) bool { return seq > low && seq <= rep.Through }
	m.msgs = make([]buffered, 0, len(rep.Messages))
	for _, msg := range rep.Messages {
		if msg.Durable() && inReplay(msg.Seq) {
			m.msgs = append(m.msgs, buffered{msg: msg})
		}
	}
	for _, e := range buf {
		switch {
		case !e.msg.Durable() || e.msg.Seq > rep.Through:
			m.rest = append(m.rest, e)
		case since != nil && inReplay(e.msg.Seq):
			m.msgs = append(m.msgs, e)
		default:
			dups++
		}
	}
	if !slices.IsSortedFunc(m.msgs, bySeq) {
		// Stable: of two with one sequence, the Resumer's comes first.
		slices.SortStableFunc(m.msgs, bySeq)
	}
	kept := m.msgs[:0]
	for _, e := range m.msgs {
		if len(kept) > 0 && kept[len(kept)-1].msg.Seq == e.msg.Seq {
			dups++
			continue
		}
		kept = append(kept, e)
	}
	m.msgs = kept
	return m, dups
}

func bySeq(a, b buffered) int { return cmp.Compare(a.msg.Seq, b.msg.Seq) }

// pacer keeps a replaying session's frames in flight (queued, not yet on
// the socket) under window, waiting on the session's write pump
// (sessionConn counts what it wrote) as needed: a replay never fills the session's queue.
type pacer struct {
	v      *v2Session
	window int64
	// backstop wakes the wait now and then in case an end came without a
	// poke; every way a session ends pokes it, so it is a safety net.
	backstopEvery time.Duration
	backstop      *time.Ticker
}

func (p *pacer) inFlight() int64 { return p.v.st.queued.Load() - p.v.st.sent.Load() }

// wait returns once fewer than window frames are in flight, true, or once
// the session stops, false.
func (p *pacer) wait() bool {
	for p.inFlight() >= p.window {
		if p.v.stopped() {
			return false
		}
		if p.backstop == nil {
			p.backstop = time.NewTicker(p.backstopEvery)
		}
		select {
		case <-p.v.wake:
		case <-p.backstop.C:
		}
	}
	return !p.v.stopped()
}

// room is how many more frames may be queued now; at least 1 after wait.
func (p *pacer) room() int { return int(max(1, p.window-p.inFlight())) }

func (p *pacer) stop() {
	if p.backstop != nil {
		p.backstop.Stop()
	}
}
