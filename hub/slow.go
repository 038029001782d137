package hub

import (
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// Slow consumers. melody reports a full queue to onError on the goroutine
// that wrote the message that did not fit: usually a delivery holding an
// index shard's read lock, which joins and leaves of that shard's names
// wait for. Under it nothing may log, block or start a goroutine. So
// onError only marks the session and hands it to a slowCloser, whose
// goroutine (the hub's, started with the first connection and ended by
// Close) starts closeSlow for it on a goroutine of its own, which Close
// also waits for: no goroutine of the hub outlives Close.

// slowCloser takes sessions whose queue overflowed and starts closing each
// of them, off every lock.
type slowCloser struct {
	closeFn func(*melody.Session) // run on a goroutine of its own per session

	mu      sync.Mutex
	pending []*melody.Session // handed over, not yet started; guarded by mu

	wake     chan struct{} // capacity 1: pending may hold sessions
	stop     chan struct{} // closed by shutdown
	stopOnce sync.Once
	done     chan struct{} // closed when run returns

	// closing counts the closeFn goroutines running. Only run adds to
	// it, so once run has returned it only goes down.
	closing sync.WaitGroup
}

func newSlowCloser(closeFn func(*melody.Session)) *slowCloser {
	return &slowCloser{
		closeFn: closeFn,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// handOver queues s to be closed. It takes a short mutex, may grow a slice
// and never blocks otherwise, so it is safe under an index lock.
func (c *slowCloser) handOver(s *melody.Session) {
	c.mu.Lock()
	c.pending = append(c.pending, s)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // already woken; run takes every pending session at once
	}
}

// run is the closer's goroutine: it starts closing each session handed
// over, until shutdown.
func (c *slowCloser) run() {
	defer close(c.done)
	for {
		select {
		case <-c.wake:
			c.startPending()
		case <-c.stop:
			c.startPending() // what was handed over before the stop
			return
		}
	}
}

func (c *slowCloser) startPending() {
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, s := range pending {
		c.closing.Add(1)
		go func() {
			defer c.closing.Done()
			c.closeFn(s)
		}()
	}
}

// shutdown ends run, after it has started closing every session handed
// over, and waits for it and for every closeFn it started; started says
// whether run was started. Safe to call more than once.
func (c *slowCloser) shutdown(started bool) {
	c.stopOnce.Do(func() { close(c.stop) })
	if started {
		<-c.done
	}
	c.closing.Wait()
}

// overflowed runs in onError when s's queue first overflows, on the
// delivering goroutine and often under an index lock: it counts the close
// (an atomic add) and hands s over.
func (h *Hub) overflowed(s *melody.Session, st *sessionState) {
	// Whatever else was closing it, its close frame may be the frame the
	// full queue lost: the session is cut either way, but counted once.
	if st.closing.CompareAndSwap(false, true) {
		h.metrics.closes.slowConsumer.Inc()
	}
	h.slow.handOver(s)
}

// closeSlow runs on a goroutine of its own per slow session, started by
// the slowCloser. It sends closeTooSlow if the connection can still take
// it, then cuts it. The queue is full, so the close frame cannot wait in
// it; and the session's writer may be blocked on the socket for up to
// WriteTimeout, so this waits that long at most. A client that has stopped
// reading entirely sees the connection drop without the close frame.
func (h *Hub) closeSlow(s *melody.Session) {
	name, _ := s.Get(keyName)
	h.log.Warn("disconnecting slow client: outbound queue full", "name", name, "remote", remoteAddr(s), "queue", h.cfg.QueueSize)
	state(s).noteClose(closeTooSlow, reasonTooSlow)
	conn := s.WebsocketConnection()
	_ = conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(closeTooSlow, reasonTooSlow), time.Now().Add(h.cfg.WriteTimeout))
	_ = conn.Close()
}
