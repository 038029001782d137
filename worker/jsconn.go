package worker

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connectJetStream opens the connection durable support reads the stream
// with: the stream check, Direct Gets and stream infos. It is a second
// connection, with the feed's options, so that replays (many messages, in
// a herd of resumes) do not queue behind or ahead of the live feed in one
// read loop, and so that the feed connection's received-message count
// stays a count of the feed (notify_nats_dropped_total balances it). Its
// handlers run on its own callback goroutine. It also opens the other
// connections of the read pool.
func (w *Worker) connectJetStream(url string, opts []nats.Option) error {
	w.jsClosed = make(chan struct{})
	log := w.log.With("conn", "jetstream")
	var mux atomic.Pointer[dgMux]
	nc, err := nats.Connect(url, append(opts[:len(opts):len(opts)],
		nats.Name(w.cfg.Conn.Name+" jetstream"),
		nats.ConnectHandler(func(*nats.Conn) { w.askRecheck() }),
		nats.ReconnectHandler(func(*nats.Conn) {
			log.Info("nats reconnected")
			w.askRecheck()
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			abandon(&mux)
			if !w.events.closing.Load() {
				log.Info("nats disconnected", "err", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(w.jsClosed) }),
		nats.ErrorHandler(logAsyncError(log)),
	)...)
	if err != nil {
		return fmt.Errorf("connect to nats for jetstream: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	x, err := newDGMux(nc)
	if err != nil {
		nc.Close()
		return err
	}
	mux.Store(x)
	w.jsConn, w.js = nc, js
	w.reads.conns = []*dgMux{x}
	w.reads.closed = []chan struct{}{w.jsClosed}
	for i := 2; i <= readPoolSize; i++ {
		if err := w.connectReader(url, opts, i); err != nil {
			w.closeReaders(context.Background())
			nc.Close()
			return err
		}
	}
	return nil
}

// abandon fails the Direct Gets under way on a connection that dropped,
// so that their replays try again at once instead of at their timeout.
func abandon(mux *atomic.Pointer[dgMux]) {
	if x := mux.Load(); x != nil {
		x.abandon()
	}
}

// logAsyncError is a connection's handler of nats.go's asynchronous errors.
func logAsyncError(log *slog.Logger) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		subject := ""
		if sub != nil {
			subject = sub.Subject
		}
		log.Warn("nats error", "subject", subject, "err", err)
	}
}

// readPoolSize is how many connections Direct Gets may be spread over,
// the JetStream connection included. nats-server answers a Direct Get from
// a client connection in that connection's read loop, one at a time, so
// the reads of concurrent replays on one connection queue behind each
// other on one goroutine whatever the number of cores.
const readPoolSize = 3

// spreadAt is how many Direct Gets may wait for their answers on a
// connection before the next one goes to another. Spreading costs CPU
// (each connection wakes and flushes for itself: 10-15 % more per resume
// measured at 1,000 resumes/s, BENCHMARKS.md), so the pool is used only
// once the reads queue: a herd of far-behind cursors, whose reads are long.
const spreadAt = 8

// readPool is the connections Direct Gets are sent on, each with its
// answers' inbox. conns[0] is on jsConn; the others carry nothing else.
type readPool struct {
	conns  []*dgMux
	closed []chan struct{} // closed by each connection's closed handler
}

// pick returns the first connected connection of the pool with fewer than
// spreadAt requests under way, else the connected one with the fewest, or
// jsConn's when none is connected (its requests then fail or time out, as
// they would on any one connection).
func (p *readPool) pick() *dgMux {
	var best *dgMux
	fewest := 0
	for _, x := range p.conns {
		if !x.nc.IsConnected() {
			continue
		}
		n := x.underWay()
		if n < spreadAt {
			return x
		}
		if best == nil || n < fewest {
			best, fewest = x, n
		}
	}
	if best == nil {
		return p.conns[0]
	}
	return best
}

// connectReader opens the pool's i-th connection. A reader that loses its
// connection is skipped by pick until nats.go has it back; what it had
// under way fails and its replay tries again. Its handlers run on its own
// callback goroutine.
func (w *Worker) connectReader(url string, opts []nats.Option, i int) error {
	log := w.log.With("conn", "jetstream reader "+strconv.Itoa(i))
	closed := make(chan struct{})
	var mux atomic.Pointer[dgMux]
	nc, err := nats.Connect(url, append(opts[:len(opts):len(opts)],
		nats.Name(w.cfg.Conn.Name+" jetstream reader "+strconv.Itoa(i)),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") }),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			abandon(&mux)
			if !w.events.closing.Load() {
				log.Info("nats disconnected", "err", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ErrorHandler(logAsyncError(log)),
	)...)
	if err != nil {
		return fmt.Errorf("connect to nats for jetstream reads: %w", err)
	}
	x, err := newDGMux(nc)
	if err != nil {
		nc.Close()
		<-closed
		return err
	}
	mux.Store(x)
	w.reads.conns = append(w.reads.conns, x)
	w.reads.closed = append(w.reads.closed, closed)
	return nil
}

// closeReaders closes the pool's connections other than jsConn and waits
// for their closed handlers, or until ctx ends.
func (w *Worker) closeReaders(ctx context.Context) {
	for i := 1; i < len(w.reads.conns); i++ {
		w.reads.conns[i].nc.Close()
		select {
		case <-w.reads.closed[i]:
		case <-ctx.Done():
		}
	}
}
