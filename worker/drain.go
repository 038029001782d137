package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// checkWait bounds how long Close waits for a stream check in flight.
const checkWait = 2 * time.Second

// flushTimeout bounds a round trip to the server when the caller's context
// has no deadline (nats.go's Flush waits as long).
const flushTimeout = 10 * time.Second

// Drain stops receiving and returns once every message the server has
// handed to this worker has been given to the Deliverer and every reply
// has reached the server. After Drain begins, Join and Resume return
// ErrDraining, Leave does nothing and Upstream keeps working until Close.
// If ctx ends first, Drain returns its error, saying how many messages
// are still queued; the router and lanes go on until Close, which counts
// what they did not reach in notify_nats_discarded_total.
//
// Drain may be called more than once; each call waits for the lanes again.
func (w *Worker) Drain(ctx context.Context) error {
	if w.closed.Load() {
		return nil
	}
	if err := w.drain(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("drain nats: %d messages not dispatched yet: %w", w.queued(), err)
		}
		return fmt.Errorf("drain nats: %w", err)
	}
	return nil
}

func (w *Worker) drain(ctx context.Context) error {
	w.stopReceiving()
	w.stopPresence()
	// This round trip follows every UNSUB on the connection. The server
	// answers it after it has processed them, and nats.go reads the answer
	// after every message the server wrote before: so when it returns, the
	// server sends this worker nothing more and everything it did send is
	// in the inbox.
	if err := w.flush(ctx); err != nil {
		return fmt.Errorf("stop receiving: %w", err)
	}
	if err := w.emptyLanes(ctx); err != nil {
		return err
	}
	// Replies are buffered by nats.go; a second round trip has them at the
	// server.
	if err := w.flush(ctx); err != nil {
		return fmt.Errorf("send replies: %w", err)
	}
	return nil
}

// stopReceiving unsubscribes every name, the broadcast subject and the
// durable side's subscriptions, once.
//
// It uses Subscription.Drain, not Unsubscribe. Both send UNSUB, but
// Unsubscribe also forgets the subscription at once, and nats.go discards
// a message for a subscription it no longer knows (processMsg returns on a
// nil sub, nats.go:3909-3918 in v1.55.0): so the messages the server had
// written before it processed the UNSUB, but nats.go had not read yet,
// would be lost. Drain keeps the
// subscription (unsubscribe skips removeSub in drain mode, nats.go:5614)
// until a flush sent after the UNSUB has come back (checkDrained,
// nats.go:5516 and 5539), so those messages still go to the inbox.
func (w *Worker) stopReceiving() {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		w.draining = true
		subs := make([]*nats.Subscription, 0, len(w.subs)+3)
		if w.allSub != nil {
			subs = append(subs, w.allSub)
		}
		for _, us := range w.subs {
			subs = append(subs, us.sub)
		}
		// The subscriptions leave the live count here; whatever they drop
		// from now on is found when Close balances the books.
		for _, sub := range subs {
			if n, err := sub.Dropped(); err == nil {
				w.droppedRetired += n
			}
		}
		for _, sub := range w.otherSubs {
			if n, err := sub.Dropped(); err == nil {
				w.otherRetired += n
			}
		}
		subs = append(subs, w.otherSubs...)
		w.subs = make(map[string]*userSub)
		w.allSub = nil
		w.otherSubs = nil
		w.mu.Unlock()

		for _, sub := range subs {
			if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				w.log.Warn("unsubscribe failed", "subject", sub.Subject, "err", err)
			}
		}
	})
}

// flush returns once the server has processed everything the connection
// sent before it. A connection that is down is not waited for: it reads
// nothing more, so what it read is already in the inbox, and what it has
// buffered goes out if it reconnects.
func (w *Worker) flush(ctx context.Context) error {
	if !w.nc.IsConnected() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, flushTimeout)
		defer cancel()
	}
	err := w.nc.FlushWithContext(ctx)
	if errors.Is(err, nats.ErrConnectionClosed) {
		// Lost during the round trip (nats.go releases pending flushes on
		// a disconnect): the same as down.
		return nil
	}
	return err
}

// emptyLanes returns once every message queued in the inbox or a lane
// before the call has been handed over: it queues a marker behind them in
// the inbox, which the router passes on to every lane behind the core
// messages it gave them, and waits until the router and each lane have
// reached it.
func (w *Worker) emptyLanes(ctx context.Context) error {
	if !w.started.Load() {
		return nil // no router or lanes: Close counts what the inbox holds
	}
	marker := &nats.Msg{} // no subject: never a message from NATS
	reached := make(chan struct{}, len(w.every)+1)
	w.mu.Lock()
	w.markers[marker] = reached
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.markers, marker)
		w.mu.Unlock()
	}()
	select {
	case w.inbox <- marker:
		w.markersQueued.Add(1)
	case <-ctx.Done():
		return ctx.Err()
	case <-w.quit:
		return errors.New("closed while draining")
	}
	for range len(w.every) + 1 {
		select {
		case <-reached:
		case <-ctx.Done():
			return ctx.Err()
		case <-w.quit:
			return errors.New("closed while draining")
		}
	}
	return nil
}

// forwardMarker runs on the router goroutine when it reaches a marker:
// every durable message before it has been handed over, and every core
// one is in a lane before the copies it queues now. It returns false if
// Close stopped the goroutines meanwhile.
func (w *Worker) forwardMarker(m *nats.Msg) bool {
	w.markersQueued.Add(-1)
	for _, lane := range w.every {
		select {
		case lane <- laneMsg{m: m}:
			w.markersQueued.Add(1)
		case <-w.quit:
			return false
		}
	}
	w.signalMarker(m)
	return true
}

// passMarker runs on a dispatch goroutine that has reached a marker.
func (w *Worker) passMarker(m *nats.Msg) {
	w.markersQueued.Add(-1)
	w.signalMarker(m)
}

// signalMarker tells m's Drain that one more goroutine has reached it.
func (w *Worker) signalMarker(m *nats.Msg) {
	w.mu.Lock()
	reached := w.markers[m]
	w.mu.Unlock()
	if reached != nil { // nil if its Drain gave up
		reached <- struct{}{} // buffered for every goroutine: does not block
	}
}

// queued is how many messages wait in the inbox and the lanes, not
// counting markers or the message each goroutine is handing over.
func (w *Worker) queued() int64 {
	n := int64(len(w.inbox))
	for _, lane := range w.every {
		n += int64(len(lane))
	}
	return max(n-w.markersQueued.Load(), 0)
}

// Close drains (see Drain) if that was not done, flushes what Upstream
// published, closes the NATS connections and stops the goroutines.
// Messages still queued then, because ctx ended before the inbox and lanes
// were empty, are counted in notify_nats_discarded_total and logged. Close
// returns the drain's error, if any; it may be called more than once.
func (w *Worker) Close(ctx context.Context) error {
	err := w.Drain(ctx)
	w.closeOnce.Do(func() {
		w.stopEvents()
		if ferr := w.flush(ctx); ferr != nil && err == nil {
			err = fmt.Errorf("close nats: flush: %w", ferr)
		}
		w.events.closing.Store(true)
		w.nc.Close()
		select {
		case <-w.events.closed:
		case <-ctx.Done():
		}
		w.goMu.Lock()
		close(w.quit)
		w.goMu.Unlock()
		if w.jsConn != nil {
			// A stream check in flight ends before its connection: a
			// stream the server is still creating when it is told to
			// shut down can outlive the server's own shutdown (its file
			// store's goroutines leak in nats-server v2.15.2). It takes
			// milliseconds with NATS up; with NATS down, its request
			// goes nowhere and is cut after checkWait.
			select {
			case <-w.checking:
			case <-ctx.Done():
			case <-time.After(checkWait):
			}
			w.jsConn.Close()
			select {
			case <-w.jsClosed:
			case <-ctx.Done():
			}
			w.closeReaders(ctx)
		}
		w.wg.Wait()
		w.discardLanes()
		w.closed.Store(true)
	})
	return err
}

// discardLanes empties the inbox and the lanes once nothing else uses
// them: the connection is closed, so nats.go adds nothing, and the router
// and lanes have stopped.
func (w *Worker) discardLanes() {
	var n uint64
	count := func(m *nats.Msg) {
		switch {
		case m.Subject == "": // a marker
		case m.Sub != nil && (m.Sub == w.barrierSub || m.Sub == w.advisorySub):
			w.other.Add(1)
		default:
			n++
		}
	}
	for len(w.inbox) > 0 {
		count(<-w.inbox)
	}
	for _, lane := range w.every {
		for len(lane) > 0 {
			count((<-lane).m)
		}
	}
	w.markersQueued.Store(0)
	if n > 0 {
		w.discarded.Add(n)
		w.log.Warn("nats messages discarded at close: the drain ran out of time", "messages", n)
	}
}
