// Package worker is the NATS side of notify-worker: it holds this worker's
// interest in the subjects of the names connected here, routes each message
// it receives to the hub, answers requests with the number of sessions
// reached, and publishes what clients send upstream.
//
// Interest is per name: the worker subscribes to <prefix>.user.<name> while
// it has at least one session of that name, and to nothing else of the user
// subjects. So a worker receives only its own users' traffic, and a request
// to a name that no worker holds gets "no responders" from NATS at once.
//
// All subscriptions share a fixed set of dispatch goroutines ("lanes"):
// nats.go's ChanSubscribe hands each message to the lane picked by a hash
// of the name, so a subscription costs no goroutine and one name's messages
// stay in order.
//
// Shutdown is two steps, so that the hub can close its sessions in
// between: Drain stops receiving and delivers everything received, Close
// ends the connection and the lanes (and drains first if Drain was not
// called).
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Deliverer is what the worker needs from the WebSocket side. Both methods
// must not block; they return how many sessions the payload was queued to.
type Deliverer interface {
	DeliverUser(name string, payload []byte) int
	DeliverAll(payload []byte) int
}

// ErrNotConnected is returned by Join while the NATS connection is down:
// interest could not be confirmed, so no welcome may be sent.
var ErrNotConnected = errors.New("nats not connected")

// ErrDraining is returned by Join (and Start) once Drain has begun: the
// worker is shutting down and takes no new interest, so the client should
// try again later, most likely on another worker.
var ErrDraining = errors.New("worker draining")

// Worker owns the NATS connection and the dispatch goroutines.
type Worker struct {
	cfg     Config
	nc      *nats.Conn
	log     *slog.Logger
	metrics *metrics
	events  *connEvents
	seed    maphash.Seed
	idJSON  []byte // cfg.ID as a JSON string

	lanes   []chan *nats.Msg // user subjects, picked by a hash of the name
	allLane chan *nats.Msg   // the broadcast subject
	every   []chan *nats.Msg // allLane, then lanes
	started atomic.Bool      // the dispatch goroutines run
	quit    chan struct{}    // closed by Close to stop them
	wg      sync.WaitGroup

	// markersQueued counts Drain's markers still in the lanes, so that a
	// Drain that runs out of time can say how many messages are queued.
	markersQueued atomic.Int64
	handed        atomic.Uint64 // messages given to the Deliverer
	discarded     atomic.Uint64 // messages Close found still queued

	mu             sync.Mutex // guards subs, allSub, draining, markers and droppedRetired
	subs           map[string]*userSub
	allSub         *nats.Subscription
	draining       bool
	markers        map[*nats.Msg]chan struct{} // a waiting Drain's marker -> its lanes reached
	droppedRetired int

	stopOnce  sync.Once
	closeOnce sync.Once
	closed    atomic.Bool // Close has stopped the lanes
}

type userSub struct {
	sub  *nats.Subscription
	refs int
}

// New connects to NATS (or starts retrying in the background if no server
// answers yet) and registers the worker's metrics with reg. Call Start to
// begin delivering, Drain to stop receiving and deliver what was received,
// and Close to end.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	w := &Worker{
		cfg:     cfg,
		log:     log,
		seed:    maphash.MakeSeed(),
		allLane: make(chan *nats.Msg, cfg.LaneBuffer),
		quit:    make(chan struct{}),
		subs:    make(map[string]*userSub),
		markers: make(map[*nats.Msg]chan struct{}),
	}
	id, err := json.Marshal(cfg.ID)
	if err != nil {
		return nil, fmt.Errorf("worker id: %w", err)
	}
	w.idJSON = id
	w.lanes = make([]chan *nats.Msg, cfg.Lanes)
	for i := range w.lanes {
		w.lanes[i] = make(chan *nats.Msg, cfg.LaneBuffer)
	}
	w.every = append([]chan *nats.Msg{w.allLane}, w.lanes...)
	opts, err := cfg.Conn.options()
	if err != nil {
		return nil, fmt.Errorf("nats options: %w", err)
	}
	m, err := newMetrics(reg, w)
	if err != nil {
		return nil, err
	}
	w.metrics = m
	w.events = newConnEvents(log, m, cfg.Conn.FailureLogInterval)
	opts = append(opts, w.events.options()...)
	url := strings.Join(cfg.Conn.URLs, ",")
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	w.nc = nc
	if !nc.IsConnected() {
		log.Warn("nats not reachable yet; retrying in the background", "urls", cfg.Conn.URLs)
	}
	return w, nil
}

// Start subscribes to the broadcast subject and starts the dispatch
// goroutines, which deliver to d until Close.
func (w *Worker) Start(d Deliverer) error {
	w.mu.Lock()
	if w.draining {
		w.mu.Unlock()
		return ErrDraining
	}
	sub, err := w.nc.ChanSubscribe(w.cfg.Scheme.All(), w.allLane)
	if err != nil {
		w.mu.Unlock()
		return fmt.Errorf("subscribe %s: %w", w.cfg.Scheme.All(), err)
	}
	w.allSub = sub
	w.mu.Unlock()
	for _, lane := range w.every {
		w.wg.Add(1)
		go w.dispatch(d, lane)
	}
	w.started.Store(true)
	return nil
}

// Ready reports whether the NATS connection is up.
func (w *Worker) Ready() bool { return w.nc != nil && w.nc.IsConnected() }

// Join subscribes to name's subject if this worker did not hold it yet,
// and returns once the server has confirmed the interest (a round trip
// that follows the SUB on the same connection). Every successful Join must
// be followed by one Leave. Once Drain has begun it returns ErrDraining.
func (w *Worker) Join(ctx context.Context, name string) error {
	subject := w.cfg.Scheme.User(name)
	w.mu.Lock()
	if w.draining {
		w.mu.Unlock()
		return ErrDraining
	}
	if !w.nc.IsConnected() {
		w.mu.Unlock()
		return ErrNotConnected
	}
	us := w.subs[name]
	if us == nil {
		sub, err := w.nc.ChanSubscribe(subject, w.lanes[maphash.String(w.seed, name)%uint64(len(w.lanes))])
		if err != nil {
			w.mu.Unlock()
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
		us = &userSub{sub: sub}
		w.subs[name] = us
	}
	us.refs++
	w.mu.Unlock()

	if err := w.nc.FlushWithContext(ctx); err != nil {
		w.Leave(name)
		return fmt.Errorf("confirm interest in %s: %w", subject, err)
	}
	w.mu.Lock()
	draining := w.draining
	w.mu.Unlock()
	if draining {
		// Drain took the subscription while it was being confirmed: the
		// interest is gone, so no welcome may be sent.
		w.Leave(name)
		return ErrDraining
	}
	return nil
}

// Leave undoes one Join; the last one for a name unsubscribes. After Drain
// has begun it does nothing: Drain has unsubscribed every name.
func (w *Worker) Leave(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	us := w.subs[name]
	if us == nil {
		return
	}
	us.refs--
	if us.refs > 0 {
		return
	}
	delete(w.subs, name)
	if n, err := us.sub.Dropped(); err == nil {
		w.droppedRetired += n
	}
	if err := us.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		w.log.Warn("unsubscribe failed", "subject", us.sub.Subject, "err", err)
	}
}

// Upstream publishes a client's message to <prefix>.inbound.<name>. The
// publish is buffered by nats.go and does not wait for the network.
func (w *Worker) Upstream(name string, msg []byte) error {
	subject := w.cfg.Scheme.Inbound(name)
	if err := w.nc.Publish(subject, msg); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// dispatch runs on a goroutine started by Start and owned by the worker;
// it ends when Close closes quit.
func (w *Worker) dispatch(d Deliverer, lane <-chan *nats.Msg) {
	defer w.wg.Done()
	reply := make([]byte, 0, 64)
	for {
		var m *nats.Msg
		select {
		case m = <-lane:
		case <-w.quit:
			return
		}
		if m.Subject == "" {
			w.passMarker(m)
			continue
		}
		var n int
		if m.Subject == w.cfg.Scheme.All() {
			n = d.DeliverAll(m.Data)
			w.metrics.handedAll.Inc()
		} else if name, ok := w.cfg.Scheme.UserName(m.Subject); ok {
			n = d.DeliverUser(name, m.Data)
			w.metrics.handedUser.Inc()
		} else {
			w.log.Warn("message on an unexpected subject", "subject", m.Subject)
			continue
		}
		w.handed.Add(1)
		if m.Reply != "" {
			reply = w.appendReply(reply[:0], n)
			if err := w.nc.Publish(m.Reply, reply); err != nil {
				w.log.Warn("reply failed", "subject", m.Subject, "err", err)
			} else {
				w.metrics.replies.Inc()
			}
		}
	}
}

// appendReply appends the answer to a request: how many sessions on this
// worker the message was queued to, and which worker says so.
func (w *Worker) appendReply(b []byte, delivered int) []byte {
	b = append(b, `{"delivered":`...)
	b = strconv.AppendInt(b, int64(delivered), 10)
	b = append(b, `,"worker":`...)
	b = append(b, w.idJSON...)
	return append(b, '}')
}

func (w *Worker) subscriptionCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.subs)
}

// droppedTotal is notify_nats_dropped_total: the drops nats.go reports for
// the subscriptions held and for those retired by Leave and Drain; once
// Close has stopped everything, every message the connection received was
// handed to the hub, discarded by Close or dropped, so the drops nats.go
// could not report (a message for a subscription just ended) are the rest.
func (w *Worker) droppedTotal() int {
	w.mu.Lock()
	total := w.droppedRetired
	if n, err := w.allSub.Dropped(); err == nil {
		total += n
	}
	for _, us := range w.subs {
		if n, err := us.sub.Dropped(); err == nil {
			total += n
		}
	}
	w.mu.Unlock()
	if w.closed.Load() {
		lost := int64(w.nc.Stats().InMsgs) - int64(w.handed.Load()) - int64(w.discarded.Load())
		total = max(total, int(lost))
	}
	return total
}
