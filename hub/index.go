package hub

import (
	"hash/maphash"
	"sync"
)

// shardCount spreads the name index over independent locks, so that joins,
// leaves and deliveries for different names rarely wait on each other.
const shardCount = 64

// session is the part of a *melody.Session the index uses. Keeping the
// index to this small interface lets benchmarks register a hundred thousand
// sessions without a socket each.
type session interface {
	Write(msg []byte) error
	WriteBinary(msg []byte) error
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
}

func newIndex(seed maphash.Seed) *index {
	ix := &index{seed: seed}
	for i := range ix.shards {
		ix.shards[i].names = make(map[string][]member)
	}
	return ix
}

func (ix *index) shard(name string) *shard {
	return &ix.shards[maphash.String(ix.seed, name)%shardCount]
}

// add registers m under name, unless name already has max sessions, and
// marks it identified and queues welcome to it before any delivery can see
// it. It reports whether name is new to this index and whether m was added.
func (ix *index) add(name string, m member, welcome []byte, max int) (newName, added bool) {
	sh := ix.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.names[name]
	if len(list) >= max {
		return false, false
	}
	m.st.identified.Store(true)
	_ = m.s.Write(welcome)
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
// for: queued, or lost for one of three reasons.
type tally struct {
	queued    int
	queueFull int // the session's queue was full (it is then disconnected)
	afterLoss int // the session had already lost a message and is being disconnected
	closing   int // the session was closing
}

// deliver queues payload to the sessions of name.
func (ix *index) deliver(name string, payload []byte, text bool) tally {
	sh := ix.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	var t tally
	for _, m := range sh.names[name] {
		m.write(payload, text, &t)
	}
	return t
}

// deliverAll queues payload to every session in the index.
func (ix *index) deliverAll(payload []byte, text bool) tally {
	var t tally
	for i := range ix.shards {
		sh := &ix.shards[i]
		sh.mu.RLock()
		for _, list := range sh.names {
			for _, m := range list {
				m.write(payload, text, &t)
			}
		}
		sh.mu.RUnlock()
	}
	return t
}

// write queues payload to m and records the outcome in t. A session that
// has already lost a message gets nothing more: it is being disconnected,
// and must not receive anything after the gap.
func (m member) write(payload []byte, text bool, t *tally) {
	if m.st.slow.Load() {
		t.afterLoss++
		return
	}
	var err error
	if text {
		err = m.s.Write(payload)
	} else {
		err = m.s.WriteBinary(payload)
	}
	switch {
	case err != nil, m.st.writeClosed.Load():
		// Closed before the write, or while it ran (see onError).
		t.closing++
	case m.st.slow.Load():
		// melody reported the full queue, synchronously, from this Write.
		t.queueFull++
	default:
		t.queued++
	}
}
