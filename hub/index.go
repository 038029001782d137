package hub

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/olahol/melody"
)

// shardCount spreads the name index over independent locks, so that joins,
// leaves and deliveries for different names rarely wait on each other.
const shardCount = 64

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
	names map[string][]*melody.Session
}

func newIndex(seed maphash.Seed) *index {
	ix := &index{seed: seed}
	for i := range ix.shards {
		ix.shards[i].names = make(map[string][]*melody.Session)
	}
	return ix
}

func (ix *index) shard(name string) *shard {
	return &ix.shards[maphash.String(ix.seed, name)%shardCount]
}

// add registers s under name, unless name already has max sessions, and
// marks it identified and queues welcome to it before any delivery can see
// it. It reports whether name is new to this index and whether s was added.
func (ix *index) add(name string, s *melody.Session, welcome []byte, max int, identified *atomic.Bool) (newName, added bool) {
	sh := ix.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.names[name]
	if len(list) >= max {
		return false, false
	}
	identified.Store(true)
	_ = s.Write(welcome)
	sh.names[name] = append(list, s)
	return len(list) == 0, true
}

// remove unregisters s from name and reports whether name has no sessions
// left.
func (ix *index) remove(name string, s *melody.Session) bool {
	sh := ix.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.names[name]
	for i, x := range list {
		if x == s {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
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
	list := sh.names[name]
	for _, s := range list {
		write(s, payload, text)
	}
	return len(list)
}

// deliverAll queues payload to every session in the index.
func (ix *index) deliverAll(payload []byte, text bool) int {
	n := 0
	for i := range ix.shards {
		sh := &ix.shards[i]
		sh.mu.RLock()
		for _, list := range sh.names {
			for _, s := range list {
				write(s, payload, text)
			}
			n += len(list)
		}
		sh.mu.RUnlock()
	}
	return n
}

func write(s *melody.Session, payload []byte, text bool) {
	if text {
		_ = s.Write(payload)
	} else {
		_ = s.WriteBinary(payload)
	}
}
