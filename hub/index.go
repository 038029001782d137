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

// deliver queues payload to the sessions of name and returns their number.
func (ix *index) deliver(name string, payload []byte, text bool) int {
	sh := ix.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	n := 0
	for _, m := range sh.names[name] {
		n += m.write(payload, text)
	}
	return n
}

// deliverAll queues payload to every session in the index.
func (ix *index) deliverAll(payload []byte, text bool) int {
	n := 0
	for i := range ix.shards {
		sh := &ix.shards[i]
		sh.mu.RLock()
		for _, list := range sh.names {
			for _, m := range list {
				n += m.write(payload, text)
			}
		}
		sh.mu.RUnlock()
	}
	return n
}

// write queues payload to m and returns 1, or returns 0 for a session that
// has already lost a message: it is being disconnected, and must not
// receive anything after the gap.
func (m member) write(payload []byte, text bool) int {
	if m.st.slow.Load() {
		return 0
	}
	if text {
		_ = m.s.Write(payload)
	} else {
		_ = m.s.WriteBinary(payload)
	}
	return 1
}
