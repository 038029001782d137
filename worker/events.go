package worker

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Events (docs/protocol.md, section 9): the hub tells the worker of a
// name's online and offline transitions and of a v2 session's acks
// through Online, Offline and Ack (the hub's Events interface). They never
// block: each queues an event in a bounded buffer and returns; one
// goroutine the worker owns publishes them, in the order they were queued,
// until Close. An event that finds the buffer full is dropped, counted in
// notify_events_dropped_total{reason="queue_full"} and logged by that
// goroutine. Each transition is published once, in order: a name that goes
// offline and online again before the queue is drained gives both events.

// DefaultEventBuffer is the event buffer used when Config.EventBuffer is 0.
const DefaultEventBuffer = 8192

// Label values of notify_events_total and notify_events_dropped_total.
const (
	eventOnline  = "online"
	eventOffline = "offline"
	eventAck     = "ack"

	dropQueueFull     = "queue_full"     // the buffer was full
	dropClosed        = "closed"         // queued after Close began
	dropPublishFailed = "publish_failed" // nats.go refused the publish
)

// event is one queued event.
type event struct {
	kind     string
	name     string
	sessions int
	code     int
	reason   string
	seq      uint64
	at       time.Time
}

// eventQueue is the worker's event side.
type eventQueue struct {
	queue   chan event
	stop    chan struct{} // closed by stopEvents
	done    chan struct{} // closed when the publishing goroutine ends
	stopped atomic.Bool
	once    sync.Once

	overflowed atomic.Uint64 // events dropped for a full queue; the goroutine logs the growth
	published  map[string]prometheus.Counter
	dropped    map[string]prometheus.Counter
}

func newEventQueue(size int, reg prometheus.Registerer) (*eventQueue, error) {
	if size == 0 {
		size = DefaultEventBuffer
	}
	published := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_events_total",
		Help: "Events published, by kind (" + eventOnline + ": a name's first session here was welcomed; " +
			eventOffline + ": its last session here ended; " + eventAck + ": a v2 session acknowledged a message).",
	}, []string{"kind"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_events_dropped_total",
		Help: "Events not published, by reason (" + dropQueueFull + ": the event buffer was full, also logged; " +
			dropClosed + ": the event came after the worker began to close; " + dropPublishFailed + ": the publish was refused).",
	}, []string{"reason"})
	for _, c := range []prometheus.Collector{published, dropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register event metrics: %w", err)
		}
	}
	q := &eventQueue{
		queue:     make(chan event, size),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		published: map[string]prometheus.Counter{},
		dropped:   map[string]prometheus.Counter{},
	}
	for _, k := range []string{eventOnline, eventOffline, eventAck} {
		q.published[k] = published.WithLabelValues(k)
	}
	for _, r := range []string{dropQueueFull, dropClosed, dropPublishFailed} {
		q.dropped[r] = dropped.WithLabelValues(r)
	}
	return q, nil
}

// Online queues the online event of name; a no-op when events are off.
// It never blocks (see the hub's Events).
func (w *Worker) Online(name string, sessions int) {
	if w.cfg.Events {
		w.queueEvent(event{kind: eventOnline, name: name, sessions: sessions, at: time.Now()})
	}
}

// Offline queues the offline event of name, with the close code and reason
// of its last session; a no-op when events are off. It never blocks.
func (w *Worker) Offline(name string, code int, reason string) {
	if w.cfg.Events {
		w.queueEvent(event{kind: eventOffline, name: name, code: code, reason: reason, at: time.Now()})
	}
}

// Ack queues the ack event of a session named name for seq. Acks are
// published whether or not online and offline events are on: a client
// asks for them. It never blocks.
func (w *Worker) Ack(name string, seq uint64) {
	w.queueEvent(event{kind: eventAck, name: name, seq: seq, at: time.Now()})
}

func (w *Worker) queueEvent(e event) {
	q := w.evq
	if q.stopped.Load() {
		q.dropped[dropClosed].Inc()
		return
	}
	select {
	case q.queue <- e:
	default:
		q.dropped[dropQueueFull].Inc()
		q.overflowed.Add(1)
	}
}

// publishEvents runs on a goroutine of its own, started by New; it ends
// when stopEvents is called, after publishing what was queued by then.
func (w *Worker) publishEvents() {
	q := w.evq
	defer close(q.done)
	var logged uint64
	buf := make([]byte, 0, 256)
	for {
		select {
		case e := <-q.queue:
			buf = w.publishEvent(e, buf)
		case <-q.stop:
			for {
				select {
				case e := <-q.queue:
					buf = w.publishEvent(e, buf)
				default:
					w.logOverflow(&logged)
					return
				}
			}
		}
		if len(q.queue) == 0 {
			w.logOverflow(&logged)
		}
	}
}

// logOverflow logs the events dropped for a full queue since the last call.
func (w *Worker) logOverflow(logged *uint64) {
	if n := w.evq.overflowed.Load(); n > *logged {
		w.log.Warn("events dropped: the event buffer was full", "dropped", n-*logged, "buffer", cap(w.evq.queue))
		*logged = n
	}
}

// publishEvent publishes e, using buf for its payload, and returns buf.
func (w *Worker) publishEvent(e event, buf []byte) []byte {
	var subject string
	switch e.kind {
	case eventOnline:
		subject = w.cfg.Scheme.EventOnline(e.name)
	case eventOffline:
		subject = w.cfg.Scheme.EventOffline(e.name)
	default:
		subject = w.cfg.Scheme.EventAck(e.name)
	}
	buf = w.appendEvent(buf[:0], e)
	if err := w.nc.Publish(subject, buf); err != nil {
		w.evq.dropped[dropPublishFailed].Inc()
		w.log.Warn("event publish failed", "subject", subject, "err", err)
		return buf
	}
	w.evq.published[e.kind].Inc()
	return buf
}

// eventTime is the layout of an event's "at": RFC 3339 in UTC, with
// milliseconds.
const eventTime = "2006-01-02T15:04:05.000Z07:00"

// appendEvent appends e's JSON payload: for online and offline
// {"name":..,"worker":..,"sessions":N,"at":..}, offline with "code" and
// "reason" too; for an ack {"name":..,"seq":N,"worker":..,"at":..}.
func (w *Worker) appendEvent(b []byte, e event) []byte {
	b = append(b, `{"name":"`...)
	b = append(b, e.name...) // passed subjects.ValidName: no escaping
	b = append(b, '"')
	if e.kind == eventAck {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, e.seq, 10)
	}
	b = append(b, `,"worker":`...)
	b = append(b, w.idJSON...)
	if e.kind != eventAck {
		b = append(b, `,"sessions":`...)
		b = strconv.AppendInt(b, int64(e.sessions), 10)
	}
	b = append(b, `,"at":"`...)
	b = e.at.UTC().AppendFormat(b, eventTime)
	b = append(b, '"')
	if e.kind == eventOffline {
		b = append(b, `,"code":`...)
		b = strconv.AppendInt(b, int64(e.code), 10)
		b = append(b, `,"reason":`...)
		reason, _ := json.Marshal(e.reason) // a string always marshals
		b = append(b, reason...)
	}
	return append(b, '}')
}

// stopEvents makes later events count as dropped (closed), waits for
// the goroutine to publish what is queued, and returns; called once by
// Close, before the connection closes.
func (w *Worker) stopEvents() {
	q := w.evq
	q.once.Do(func() {
		q.stopped.Store(true)
		close(q.stop)
	})
	<-q.done
}
