package hub

import (
	"hash/maphash"
	"sync"

	"github.com/gorilla/websocket"
)

// shardCount spreads the name index over independent locks, so that joins,
// leaves and deliveries for different names rarely wait on each other.
const shardCount = 64

// session is the part of a *melody.Session the index and v2 sessions use.
// Keeping them to this small interface lets benchmarks register a hundred
// thousand sessions without a socket each.
type session interface {
	Write(msg []byte) error
	WriteBinary(msg []byte) error
	CloseWithMsg(msg []byte) error
	IsClosed() bool
}

// member is one identified session in the index.
type member struct {
	s  session
	st *sessionState
}

// index maps a name to the sessions identified by it.
//
// Writes to a session (melody's Session.Write) never block, so deliveries
// write while holding the shard's read lock; this keeps a delivery free of
// allocations and makes "added, then welcomed" atomic with respect to it.
// A write melody cannot queue calls the hub's onError under that lock,
// which therefore only marks the session and hands it over (slow.go).
type index struct {
	seed   maphash.Seed
	shards [shardCount]shard
}

type shard struct {
	mu    sync.RWMutex
	names map[string][]member
	// welcomed counts the welcomed sessions of each name, for the online
	// and offline transitions (presence.go).
	welcomed map[string]int
}

func newIndex(seed maphash.Seed) *index {
	ix := &index{seed: seed}
	for i := range ix.shards {
		ix.shards[i].names = make(map[string][]member)
		ix.shards[i].welcomed = make(map[string]int)
	}
	return ix
}

func (ix *index) shard(name string) *shard {
	return &ix.shards[maphash.String(ix.seed, name)%shardCount]
}

// add registers m under name, unless name already has max sessions, and
// marks it identified and queues welcome to it (unless nil: a v2 session
// is welcomed after its resume) before any delivery can see it. A welcomed
// session is counted for events in the same step, so that no client holds
// a welcome its hub has not counted yet (a name's other session ending
// meanwhile would otherwise report the name offline). It reports whether
// name is new to this index and whether m was added.
func (ix *index) add(name string, m member, welcome []byte, max int, ev Events) (newName, added bool) {
	sh := ix.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.names[name]
	if len(list) >= max {
		return false, false
	}
	m.st.identified.Store(true)
	if welcome != nil {
		sh.welcomeLocked(name, ev)
		m.st.queue(m.s, welcome)
	}
	sh.names[name] = append(list, m)
	return len(list) == 0, true
}

// remove unregisters s from name and reports whether name has no sessions
// left.
func (ix *index) remove(name string, s session) bool {
	sh := ix.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.names[name]
	for i, m := range list {
		if m.s == s {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = member{}
			list = list[:last]
			break
		}
	}
	if len(list) == 0 {
		delete(sh.names, name)
		return true
	}
	sh.names[name] = list
	return false
}

// tally counts what became of one message across the sessions it was
// for: queued, held for a v2 session's replay to go out first, skipped as
// a duplicate, or lost for one of three reasons. Its counts are int32 to
// keep it small: it is returned from every delivery, and seven ints
// measured a few ns slower per BenchmarkDeliverUser op.
type tally struct {
	queued    int32
	buffered  int32 // held by a replaying v2 session, counted when it leaves the buffer
	duplicate int32 // a v2 session had it already
	queueFull int32 // the session's queue (or replay buffer) was full (it is then disconnected)
	afterLoss int32 // the session had already lost a message and is being disconnected
	closing   int32 // the session was closing, or is closed by this message (a gap)
	gaps      int32 // v2 sessions closed with 1012 because this message showed a gap
}

// add adds the counts of u to t.
func (t *tally) add(u tally) {
	t.queued += u.queued
	t.buffered += u.buffered
	t.duplicate += u.duplicate
	t.queueFull += u.queueFull
	t.afterLoss += u.afterLoss
	t.closing += u.closing
	t.gaps += u.gaps
}

// deliver hands d to the sessions of name.
func (ix *index) deliver(name string, d *delivery) tally {
	sh := ix.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	var t tally
	for _, m := range sh.names[name] {
		m.deliver(d, &t)
	}
	return t
}

// deliverAll hands d to every session in the index.
func (ix *index) deliverAll(d *delivery) tally { return ix.deliverShards(0, shardCount, d) }

// deliverShards hands d to every session in shards [from, to).
func (ix *index) deliverShards(from, to int, d *delivery) tally {
	var t tally
	for i := from; i < to; i++ {
		sh := &ix.shards[i]
		sh.mu.RLock()
		for _, list := range sh.names {
			for _, m := range list {
				m.deliver(d, &t)
			}
		}
		sh.mu.RUnlock()
	}
	return t
}

// deliver hands d to m: the payload as it is to a v1 session, the
// envelope to a v2 one.
func (m member) deliver(d *delivery, t *tally) {
	if v := m.st.v2.Load(); v != nil {
		v.deliver(d, t)
		return
	}
	m.write(d.msg.Payload, d.text, d.direct, t)
}

// write sends payload to m directly (direct.go) or queues it, and records
// the outcome in t. A session that
// has already lost a message gets nothing more: it is being disconnected,
// and must not receive anything after the gap.
func (m member) write(payload []byte, text, direct bool, t *tally) {
	if m.st.slow.Load() {
		t.afterLoss++
		return
	}
	op := byte(websocket.TextMessage)
	if !text {
		op = websocket.BinaryMessage
	}
	if direct && m.st.conn != nil && m.st.conn.sendNow(op, payload) {
		t.queued++
		return
	}
	// Counted before melody holds it; see sessionState.queue.
	m.st.queued.Add(1)
	var err error
	if text {
		err = m.s.Write(payload)
	} else {
		err = m.s.WriteBinary(payload)
	}
	switch {
	case err != nil, m.st.writeClosed.Load():
		// Closed before the write, or while it ran (see onError).
		m.st.queued.Add(-1)
		t.closing++
	case m.st.slow.Load():
		// melody reported the full queue, synchronously, from this Write.
		m.st.queued.Add(-1)
		t.queueFull++
	default:
		t.queued++
	}
}
