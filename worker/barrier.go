package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The barrier. Before a replay reads anything, it stores a small message
// on durable.<prefix>.barrier and takes the sequence T in its PubAck as
// the replay's upper bound. The publish goes over the feed's connection,
// after the SUB of the resuming name (Join flushed it): so when the
// stream's leader stores T it already knows this worker's interest, and
// every message stored after T is republished here; every message below
// T is stored when the PubAck comes back. (The stream's last sequence, as
// STREAM.INFO reports it, comes over another path, not ordered with the
// SUB: that is the gap the barrier closes.)
//
// The barrier is stored without Nats-Rollup: a rollup would delete the
// previous barrier, and a deleted message at the head of the stream moves
// its first sequence past cursors that nothing real was stored after,
// which the retention rule must then read as a possible loss (a fresh or
// quiet stream would answer recovered:false to every other resume). Kept,
// barriers are tiny and go with the stream's limits like any message.
//
// The replies come back on a subscription of the feed's connection into
// the inbox, so that every message the connection receives goes through
// the router and is counted.

// barriers routes the replies to barrier messages to the calls waiting
// for them.
type barriers struct {
	prefix  string // the reply subjects' prefix: a fresh inbox and "."; set by Start
	next    atomic.Uint64
	mu      sync.Mutex
	waiting map[string]chan *nats.Msg // reply token -> its caller, buffered 1
}

// answer runs on the router goroutine with a barrier's reply.
func (b *barriers) answer(m *nats.Msg) {
	token := strings.TrimPrefix(m.Subject, b.prefix)
	b.mu.Lock()
	ch := b.waiting[token]
	delete(b.waiting, token)
	b.mu.Unlock()
	if ch != nil { // nil: its caller gave up
		ch <- m
	}
}

// pubAck is JetStream's answer to a publish.
type pubAck struct {
	jetstream.PubAck
	Error *jetstream.APIError `json:"error,omitempty"`
}

// Barriers are shared (rounds.go): a caller needs a barrier published
// after it called (after its SUB), nothing more, so the stream grows by
// one message per round of concurrent resumes instead of one per resume.

// storeBarrier returns the sequence of a barrier stored after the call
// began, sharing it with the calls that need one at the same time.
func (w *Worker) storeBarrier(ctx context.Context) (uint64, error) {
	if !w.started.Load() {
		return 0, errors.New("barrier: the worker is not started")
	}
	seq, err := shared(ctx, w, &w.barrierRounds, w.publishBarrier)
	if err != nil {
		return 0, fmt.Errorf("barrier: %w", err)
	}
	return seq, nil
}

// publishBarrier stores one barrier and returns its sequence.
func (w *Worker) publishBarrier() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	token := strconv.FormatUint(w.barriers.next.Add(1), 36)
	ch := make(chan *nats.Msg, 1)
	w.barriers.mu.Lock()
	w.barriers.waiting[token] = ch
	w.barriers.mu.Unlock()
	defer func() {
		w.barriers.mu.Lock()
		delete(w.barriers.waiting, token)
		w.barriers.mu.Unlock()
	}()
	msg := nats.NewMsg(w.cfg.Scheme.Durable(w.cfg.Scheme.Barrier()))
	msg.Reply = w.barriers.prefix + token
	msg.Header.Set(jetstream.ExpectedStreamHeader, w.cfg.Stream.Name)
	if err := w.nc.PublishMsg(msg); err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	var reply *nats.Msg
	select {
	case reply = <-ch:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-w.quit:
		return 0, nats.ErrConnectionClosed
	}
	if reply.Header.Get(hdrStatus) == "503" {
		w.askRecheck()
		return 0, errNoStreamResponders
	}
	var ack pubAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return 0, fmt.Errorf("pub ack %q: %w", reply.Data, err)
	}
	switch {
	case ack.Error != nil:
		w.askRecheck()
		return 0, ack.Error
	case ack.Stream != w.cfg.Stream.Name || ack.Sequence == 0:
		w.askRecheck()
		return 0, fmt.Errorf("stored by stream %q as %d, want stream %q", ack.Stream, ack.Sequence, w.cfg.Stream.Name)
	}
	w.noteLastSeq(ack.Sequence)
	return ack.Sequence, nil
}
