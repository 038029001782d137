// Package worker is the NATS side of notify-worker: it holds this worker's
// interest in the subjects of the names connected here, routes each message
// it receives to the hub, answers requests with the number of sessions
// reached, publishes what clients send upstream, and, with a JetStream
// stream, replays the durable notifications a resuming client missed.
//
// Interest is per name: the worker subscribes to <prefix>.user.<name> while
// it has at least one session of that name, and to nothing else of the user
// subjects. So a worker receives only its own users' traffic, and a request
// to a name that no worker holds gets "no responders" from NATS at once.
//
// Every subscription delivers into one inbox channel (nats.go's ChanSubscribe
// keeps the connection's order there), so a subscription costs no goroutine.
// One router goroutine reads it: it hands durable messages (stored by the
// stream, which republishes them to the same subjects with their sequence)
// to the hub itself, in stream order, and core messages for users too,
// unless Config.Lanes asks for dispatch goroutines ("lanes") picked by a
// hash of the name; core broadcasts always go to a lane of their own, so
// that a broadcast's fan-out does not hold up the users' messages. One
// name's core messages stay in order either way. See router.go.
//
// Durable support (stream.go, resume.go, snapshot.go) uses NATS
// connections of its own for its reads (jsconn.go: one for JetStream's API
// and a small pool for Direct Gets), so that a herd of replays does not
// share the live feed's connection; the barrier a replay starts with goes
// over the feed's connection, because its order relative to the
// subscriptions is what makes the replay exact (see barrier.go).
//
// Shutdown is two steps, so that the hub can close its sessions in
// between: Drain stops receiving and delivers everything received, Close
// ends the connections and the goroutines (and drains first if Drain was
// not called).
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/feed"
)

// Deliverer is what the worker needs from the WebSocket side. None of its
// methods may block.
type Deliverer interface {
	// DeliverUser and DeliverAll queue m to the sessions of name, or to
	// every identified session, and return how many they reached. The
	// router goroutine calls them for durable messages, one at a time in
	// stream order, and for core messages to users when there are no user
	// lanes; the dispatch lanes call them, concurrently, for the other
	// core messages (m.Seq == 0).
	DeliverUser(name string, m feed.Message) int
	DeliverAll(m feed.Message) int
	// FeedLost says that durable messages may have been lost on their way
	// to this worker (cause is one of the Cause* constants): every v2
	// session registered before the call must be closed so that it
	// resumes from its cursor. The worker calls it before it hands over
	// any durable message it received after the loss: from the router
	// goroutine, from nats.go's callback goroutine (a disconnect) or from
	// the stream check's goroutine (the stream created again).
	FeedLost(cause string)
}

// feedLossCauses lists every cause the worker passes to Deliverer.FeedLost
// (feed.Cause*), so that each has a series of notify_feed_losses_total from
// the start.
var feedLossCauses = []string{feed.CauseDisconnect, feed.CauseSlowConsumer, feed.CauseLeaderChange, feed.CauseStreamReset}

// ErrNotConnected is returned by Join while the NATS connection is down:
// interest could not be confirmed, so no welcome may be sent.
var ErrNotConnected = errors.New("nats not connected")

// ErrDraining is returned by Join (and Start, Resume) once Drain has begun:
// the worker is shutting down and takes no new interest, so the client
// should try again later, most likely on another worker.
var ErrDraining = errors.New("worker draining")

// ErrUnavailable is wrapped by the error Resume and Snapshot return when
// JetStream could not answer in time (the stream is still being set up, a
// leader election, a timeout): the condition is transient, and the client
// should try again later.
var ErrUnavailable = errors.New("jetstream unavailable")

// Worker owns the NATS connections and the goroutines that route messages.
type Worker struct {
	cfg     Config
	nc      *nats.Conn
	log     *slog.Logger
	metrics *metrics
	events  *connEvents
	idJSON  []byte // cfg.ID as a JSON string

	inbox   chan *nats.Msg // every subscription's messages, in connection order
	lanes   []chan laneMsg // core messages of user subjects, picked by a hash of the name
	allLane chan laneMsg   // core messages of the broadcast subject
	every   []chan laneMsg // allLane, then lanes
	epoch   time.Time      // laneMsg.arrived counts from it
	routing router         // the router goroutine's own state
	started atomic.Bool    // the router and lanes run
	quit    chan struct{}  // closed by Close to stop the goroutines
	wg      sync.WaitGroup
	// goMu orders the wg.Add of a goroutine started after Start (a shared
	// round) against Close's close(quit), so that none is added once
	// Close may be waiting in wg.Wait.
	goMu sync.Mutex

	// deliverer is set by Start, before the router starts; the disconnect
	// handler reads it from nats.go's callback goroutine.
	deliverer atomic.Pointer[Deliverer]

	// Durable support; js is nil (and the rest unused) when
	// cfg.Stream.Name is "".
	jsConn        *nats.Conn
	jsClosed      chan struct{} // closed by jsConn's closed handler
	js            jetstream.JetStream
	reads         readPool // the connections Direct Gets are sent on, jsConn's first
	stream        *streamStatus
	recheck       chan struct{} // asks the stream check to run again; buffered 1
	replaySlots   chan struct{} // semaphore of ReplayConcurrency
	checking      chan struct{} // closed when the stream check goroutine has ended; nil without durable support
	barriers      barriers
	barrierRounds sharedRounds[uint64]      // the shared barriers under way
	infoRounds    sharedRounds[*leaderInfo] // the shared post-read stream infos
	lastSeq       atomic.Uint64             // notify_stream_last_sequence

	// lossMu serialises the FeedLost calls for connection losses, so that
	// the router does not hand over a durable message while the disconnect
	// handler's call is still closing sessions; lossCovered is the
	// connection's reconnect count up to which FeedLost has been called.
	lossMu      sync.Mutex
	lossCovered uint64

	// markersQueued counts Drain's markers still in the inbox and lanes,
	// so that a Drain that runs out of time can say how many messages are
	// queued.
	markersQueued atomic.Int64
	handed        atomic.Uint64 // feed messages given to the Deliverer
	discarded     atomic.Uint64 // feed messages Close found still queued
	other         atomic.Uint64 // non-feed messages taken from the inbox: barrier replies, advisories

	mu             sync.Mutex // guards the subscriptions, draining, markers and the retired drop counts
	subs           map[string]*userSub
	allSub         *nats.Subscription
	barrierSub     *nats.Subscription   // replies to barriers; set by Start, read-only after (the router compares)
	advisorySub    *nats.Subscription   // stream leader elections; likewise
	otherSubs      []*nats.Subscription // barrierSub and advisorySub until Drain retires them
	draining       bool
	markers        map[*nats.Msg]chan struct{} // a waiting Drain's marker -> its goroutines reached
	droppedRetired int                         // feed messages nats.go dropped for subscriptions ended since
	otherRetired   int                         // the same for barrierSub and advisorySub

	presence presenceState // presence.go
	evq      *eventQueue   // events.go

	stopOnce  sync.Once
	closeOnce sync.Once
	closed    atomic.Bool // Close has stopped everything
}

type userSub struct {
	sub  *nats.Subscription
	refs int
}

// New connects to NATS (or starts retrying in the background if no server
// answers yet), registers the worker's metrics with reg and, when
// cfg.Stream.Name is set, starts checking the stream in the background.
// Call Start to begin delivering, Drain to stop receiving and deliver what
// was received, and Close to end.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	lanes := cfg.Lanes
	w := &Worker{
		cfg:     cfg,
		log:     log,
		inbox:   make(chan *nats.Msg, cfg.LaneBuffer*(lanes+1)),
		allLane: make(chan laneMsg, cfg.LaneBuffer),
		epoch:   time.Now(),
		quit:    make(chan struct{}),
		subs:    make(map[string]*userSub),
		markers: make(map[*nats.Msg]chan struct{}),
		stream:  newStreamStatus(cfg.Stream.Name != ""),
		recheck: make(chan struct{}, 1),
	}
	w.routing = newRouter()
	w.barriers.waiting = make(map[string]chan *nats.Msg)
	id, err := json.Marshal(cfg.ID)
	if err != nil {
		return nil, fmt.Errorf("worker id: %w", err)
	}
	w.idJSON = id
	w.lanes = make([]chan laneMsg, lanes)
	for i := range w.lanes {
		w.lanes[i] = make(chan laneMsg, cfg.LaneBuffer)
	}
	w.every = append([]chan laneMsg{w.allLane}, w.lanes...)
	opts, err := cfg.Conn.options()
	if err != nil {
		return nil, fmt.Errorf("nats options: %w", err)
	}
	m, err := newMetrics(reg, w)
	if err != nil {
		return nil, err
	}
	w.metrics = m
	if w.presence.requests, err = newPresenceMetrics(reg); err != nil {
		return nil, err
	}
	if w.evq, err = newEventQueue(cfg.EventBuffer, reg); err != nil {
		return nil, err
	}
	w.events = newConnEvents(log, m, cfg.Conn.FailureLogInterval)
	w.events.lost = w.disconnected
	w.events.reconnected = func(*nats.Conn) { w.askRecheck() }
	url := strings.Join(cfg.Conn.URLs, ",")
	nc, err := nats.Connect(url, append(opts, w.events.options()...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	w.nc = nc
	w.lossMu.Lock()
	w.lossCovered = initialReconnects(nc)
	w.routing.reconnects = w.lossCovered
	w.lossMu.Unlock()
	if !nc.IsConnected() {
		log.Warn("nats not reachable yet; retrying in the background", "urls", cfg.Conn.URLs)
	}
	if cfg.Stream.Name != "" {
		if err := w.connectJetStream(url, opts); err != nil {
			nc.Close()
			return nil, err
		}
		w.replaySlots = make(chan struct{}, cfg.ReplayConcurrency)
		w.wg.Add(1)
		w.checking = make(chan struct{})
		go func() {
			defer close(w.checking)
			w.keepStream()
		}()
	}
	go w.publishEvents()
	return w, nil
}

// initialReconnects is the reconnect count that does not mean a loss: with
// RetryOnFailedConnect, nats.go counts a late first connection as a
// reconnect.
func initialReconnects(nc *nats.Conn) uint64 {
	connected := nc.IsConnected()
	r := nc.Stats().Reconnects
	if !connected && r == 0 {
		return 1
	}
	return r
}

// Start subscribes to the broadcast subject (and, with a stream, to the
// replies to barriers and to the stream's leader elections) and starts the
// router and the dispatch lanes, which deliver to d until Close.
func (w *Worker) Start(d Deliverer) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.draining {
		return ErrDraining
	}
	if w.started.Load() {
		return errors.New("worker already started")
	}
	sub, err := w.nc.ChanSubscribe(w.cfg.Scheme.All(), w.inbox)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", w.cfg.Scheme.All(), err)
	}
	w.allSub = sub
	if w.cfg.Stream.Name != "" {
		w.barriers.prefix = w.nc.NewInbox() + "."
		if w.barrierSub, err = w.nc.ChanSubscribe(w.barriers.prefix+"*", w.inbox); err != nil {
			return fmt.Errorf("subscribe to barrier replies: %w", err)
		}
		advisory := leaderElectedSubject(w.cfg.Stream.Name)
		if w.advisorySub, err = w.nc.ChanSubscribe(advisory, w.inbox); err != nil {
			return fmt.Errorf("subscribe %s: %w", advisory, err)
		}
		w.otherSubs = []*nats.Subscription{w.barrierSub, w.advisorySub}
	}
	if err := w.startPresence(d); err != nil {
		return err
	}
	w.deliverer.Store(&d)
	w.wg.Add(1)
	go w.route(d)
	for _, lane := range w.every {
		w.wg.Add(1)
		go w.dispatch(d, lane)
	}
	w.started.Store(true)
	return nil
}

// leaderElectedSubject is the advisory JetStream publishes when stream
// gets a new leader.
func leaderElectedSubject(stream string) string {
	return "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED." + stream
}

// Ready reports whether the NATS connection is up. It says nothing of
// JetStream: see StreamState.
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
		sub, err := w.nc.ChanSubscribe(subject, w.inbox)
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

// disconnected runs on nats.go's callback goroutine when the feed's
// connection is lost (not at Close). If the connection is still down, the
// sessions are closed at once; if it is already back, the router does it
// before the first durable message it reads (coverLoss).
func (w *Worker) disconnected(nc *nats.Conn) {
	if w.cfg.Stream.Name == "" || nc.IsConnected() {
		return
	}
	// The reconnection that ends this outage will be number r+1.
	w.coverLoss(nc.Stats().Reconnects + 1)
}

// coverLoss calls FeedLost for the connection losses up to reconnect
// count r, unless that was done already. It returns after FeedLost has.
func (w *Worker) coverLoss(r uint64) {
	w.lossMu.Lock()
	defer w.lossMu.Unlock()
	if r <= w.lossCovered {
		return
	}
	w.lossCovered = r
	w.feedLost(feed.CauseDisconnect)
}

// feedLost tells the hub that durable messages may have been lost.
func (w *Worker) feedLost(cause string) {
	d := w.deliverer.Load()
	if d == nil {
		return // not started: no session to close
	}
	w.metrics.feedLosses[cause].Inc()
	w.log.Warn("durable messages may have been lost on their way here; closing v2 sessions so they resume", "cause", cause)
	(*d).FeedLost(cause)
}

func (w *Worker) subscriptionCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.subs)
}

// droppedTotal is notify_nats_dropped_total: the drops nats.go reports for
// the feed's subscriptions held and for those retired by Leave and Drain;
// once Close has stopped everything, every message the connection received
// was handed to the hub, discarded by Close, dropped, or was not for the
// hub (a barrier's reply, an advisory), so the drops nats.go could not
// report (a message for a subscription just ended) are the rest.
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
	otherDropped := w.otherRetired
	for _, sub := range w.otherSubs {
		if n, err := sub.Dropped(); err == nil {
			otherDropped += n
		}
	}
	w.mu.Unlock()
	if w.closed.Load() {
		lost := int64(w.nc.Stats().InMsgs) - int64(w.handed.Load()) - int64(w.discarded.Load()) -
			int64(w.other.Load()) - int64(otherDropped)
		total = max(total, int(lost))
	}
	return total
}

// inboxDrops is every drop nats.go has counted for a subscription that
// delivers into the inbox, feed or not; it only grows. The router
// compares it to tell whether the inbox overflowed.
func (w *Worker) inboxDrops() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	total := w.droppedRetired + w.otherRetired
	for _, sub := range append([]*nats.Subscription{w.allSub}, w.otherSubs...) {
		if n, err := sub.Dropped(); err == nil {
			total += n
		}
	}
	for _, us := range w.subs {
		if n, err := us.sub.Dropped(); err == nil {
			total += n
		}
	}
	return total
}
