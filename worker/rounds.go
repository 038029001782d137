package worker

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
)

// Shared requests. Some requests of a replay need only to have been sent
// after a point in the caller's own progress: the barrier after its SUB,
// the stream info after its read. So while one is on its way, every caller
// that comes meanwhile joins the next one, which is sent as soon as that
// one is answered: however many replays need one at once, at most two are
// under way, and each caller's is sent after it joined.

// round is one shared request and the callers it serves.
type round[T any] struct {
	done chan struct{} // closed once val or err is set
	val  T
	err  error
}

// sharedRounds holds the round on its way and the one that follows it.
type sharedRounds[T any] struct {
	mu      sync.Mutex
	running *round[T] // sent (or being sent), not answered yet
	next    *round[T] // waits for running; sent after it
}

// shared returns the answer of a do started after the call, sharing it
// with the calls that need one at the same time. do runs on a goroutine
// of the worker's (counted in wg), with its own time limit: it serves
// callers whose contexts differ. A caller whose ctx ends stops waiting
// (the round goes on for the others); at Close every caller gets closed.
func shared[T any](ctx context.Context, w *Worker, rs *sharedRounds[T], do func() (T, error)) (T, error) {
	r := rs.join(w, do)
	select {
	case <-r.done:
		return r.val, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	case <-w.quit:
		var zero T
		return zero, nats.ErrConnectionClosed
	}
}

// join returns the round that serves a caller arriving now: a new one
// started at once if none is on its way, else the next one, which the
// first to join it starts.
func (rs *sharedRounds[T]) join(w *Worker, do func() (T, error)) *round[T] {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	w.goMu.Lock() // no close(quit) between the check and wg.Add
	defer w.goMu.Unlock()
	if w.isQuitting() {
		// Close has begun: no new goroutine for it to wait for.
		r := &round[T]{done: make(chan struct{}), err: nats.ErrConnectionClosed}
		close(r.done)
		return r
	}
	if rs.running == nil {
		r := &round[T]{done: make(chan struct{})}
		rs.running = r
		w.wg.Add(1)
		go rs.run(w, r, nil, do)
		return r
	}
	if rs.next == nil {
		rs.next = &round[T]{done: make(chan struct{})}
		w.wg.Add(1)
		go rs.run(w, rs.next, rs.running, do)
	}
	return rs.next
}

// run does r's request once after (if not nil) has been answered, and
// answers r's callers.
func (rs *sharedRounds[T]) run(w *Worker, r, after *round[T], do func() (T, error)) {
	defer w.wg.Done()
	if after != nil {
		select {
		case <-after.done:
		case <-w.quit:
			r.err = nats.ErrConnectionClosed
			close(r.done)
			return
		}
		rs.mu.Lock()
		rs.running, rs.next = r, nil
		rs.mu.Unlock()
	}
	r.val, r.err = do()
	rs.mu.Lock()
	if rs.running == r {
		rs.running = nil
	}
	rs.mu.Unlock()
	close(r.done)
}
