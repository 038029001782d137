package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/subjects"
)

// Presence (docs/protocol.md, section 9) is answered from the hub's index,
// never by a delivery:
//
//   - a request to <prefix>.user.<name> with the Notify-Presence header
//     comes through the name's own subscription, so it needs no interest
//     of its own; the router answers it before it would hand the message
//     to a lane, and it reaches no session;
//   - a bulk request to <prefix>.presence comes through one subscription
//     with a callback of its own (nats.go runs it on that subscription's
//     goroutine), so a thousand lookups do not hold up the feed.

// SessionCounter is what presence needs from the WebSocket side: the
// number of sessions of one name, safe on any goroutine and quick (a
// lookup, not a scan). The Deliverer passed to Start provides it when it
// has the method; without it every name counts as 0.
type SessionCounter interface {
	Sessions(name string) int
}

// Reasons a presence request is refused, sent in {"worker":..,"error":..}.
var (
	errPresenceValue   = errors.New(subjects.PresenceHeader + " must be 1")
	errPresenceAll     = errors.New("presence of one name: ask <prefix>.user.<name>; of many: <prefix>.presence")
	errBulkNotArray    = errors.New("body must be a JSON array of names")
	errBulkTooMany     = fmt.Errorf("at most %d names", subjects.MaxPresenceNames)
	errBulkInvalidName = errors.New("invalid name at index ")
)

// Label values of notify_presence_requests_total.
const (
	presenceKindName = "name" // <prefix>.user.<name> with the header
	presenceKindBulk = "bulk" // <prefix>.presence

	presenceAnswered = "answered"
	presenceRefused  = "refused"  // answered with an error
	presenceNoReply  = "no_reply" // nothing to answer to; dropped
	presenceFailed   = "failed"   // the reply could not be published
)

// presenceState is the worker's presence side.
type presenceState struct {
	counter SessionCounter // set by Start before any subscription

	mu  sync.Mutex
	sub *nats.Subscription // the bulk subscription, nil once stopped

	requests map[string]map[string]prometheus.Counter // kind -> result
}

func newPresenceMetrics(reg prometheus.Registerer) (map[string]map[string]prometheus.Counter, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_presence_requests_total",
		Help: "Presence requests, by kind (" + presenceKindName + ": a request to <prefix>.user.<name> with the " +
			subjects.PresenceHeader + " header; " + presenceKindBulk + ": a bulk request to <prefix>.presence) and result (" +
			presenceAnswered + "; " + presenceRefused + ": answered with an error, a bad header value or bad names; " +
			presenceNoReply + ": no reply subject, dropped; " + presenceFailed + ": the reply could not be published). " +
			"They never reach a session and are not counted in notify_nats_messages_total.",
	}, []string{"kind", "result"})
	if err := reg.Register(vec); err != nil {
		return nil, fmt.Errorf("register presence metrics: %w", err)
	}
	m := map[string]map[string]prometheus.Counter{}
	for _, k := range []string{presenceKindName, presenceKindBulk} {
		m[k] = map[string]prometheus.Counter{}
		for _, r := range []string{presenceAnswered, presenceRefused, presenceNoReply, presenceFailed} {
			m[k][r] = vec.WithLabelValues(k, r)
		}
	}
	return m, nil
}

// startPresence takes the session counter from d and subscribes to bulk
// presence requests. Start calls it with the worker's lock held.
func (w *Worker) startPresence(d Deliverer) error {
	if c, ok := d.(SessionCounter); ok {
		w.presence.counter = c
	}
	subject := w.cfg.Scheme.Presence()
	sub, err := w.nc.Subscribe(subject, w.answerBulk)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	w.presence.mu.Lock()
	w.presence.sub = sub
	w.presence.mu.Unlock()
	return nil
}

// stopPresence ends the bulk subscription, once: a draining worker stops
// answering, as it stops receiving its names' subjects. Like
// stopReceiving, it drains the subscription, so that the requests the
// server sent before it processed the UNSUB are still answered (and
// counted) rather than lost to nats.go.
func (w *Worker) stopPresence() {
	w.presence.mu.Lock()
	sub := w.presence.sub
	w.presence.sub = nil
	w.presence.mu.Unlock()
	if sub == nil {
		return
	}
	if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		w.log.Warn("unsubscribe failed", "subject", sub.Subject, "err", err)
	}
}

func (w *Worker) sessions(name string) int {
	if w.presence.counter == nil {
		return 0
	}
	return w.presence.counter.Sessions(name)
}

// presenceValue returns the value of the Notify-Presence header of m and
// whether it has one. The key is matched without regard to case, as an
// HTTP-minded producer may spell it; a durable copy (it carries the
// stream's Nats-Stream header) never counts: it is a stored notification,
// and the stream stores nothing a presence request is sent to.
func presenceValue(m *nats.Msg) (string, bool) {
	if len(m.Header) == 0 {
		return "", false
	}
	vals, ok := m.Header[subjects.PresenceHeader]
	if !ok {
		for k, v := range m.Header {
			if strings.EqualFold(k, subjects.PresenceHeader) {
				vals, ok = v, true
				break
			}
		}
	}
	if !ok || len(m.Header[hdrStream]) > 0 {
		return "", false
	}
	if len(vals) != 1 {
		return "", true // a repeated header is not the value 1
	}
	return vals[0], true
}

// answerPresence answers m if it is a presence request to a user or the
// broadcast subject, and reports whether it was one; such a message is
// never delivered. It runs on the router goroutine: a lookup under the
// name's index shard lock and a buffered publish.
func (w *Worker) answerPresence(m *nats.Msg) bool {
	value, ok := presenceValue(m)
	if !ok {
		return false
	}
	w.other.Add(1)
	counts := w.presence.requests[presenceKindName]
	if m.Reply == "" {
		counts[presenceNoReply].Inc()
		return true
	}
	var reply []byte
	name, isUser := w.cfg.Scheme.UserName(m.Subject)
	switch {
	case !isUser:
		reply = w.presenceError(errPresenceAll)
	case value != "1":
		reply = w.presenceError(errPresenceValue)
	default:
		reply = append(reply, `{"worker":`...)
		reply = append(reply, w.idJSON...)
		reply = append(reply, `,"sessions":`...)
		reply = strconv.AppendInt(reply, int64(w.sessions(name)), 10)
		reply = append(reply, '}')
	}
	w.sendPresence(counts, m, reply, !isUser || value != "1")
	return true
}

// answerBulk answers a bulk presence request, on the bulk subscription's
// goroutine.
func (w *Worker) answerBulk(m *nats.Msg) {
	// Received on the feed's connection but not a feed message: kept out
	// of notify_nats_dropped_total's balance.
	w.other.Add(1)
	counts := w.presence.requests[presenceKindBulk]
	if m.Reply == "" {
		counts[presenceNoReply].Inc()
		return
	}
	names, err := parseBulk(m.Data)
	if err != nil {
		w.sendPresence(counts, m, w.presenceError(err), true)
		return
	}
	reply := make([]byte, 0, 32+len(w.idJSON)+len(names)*8)
	reply = append(reply, `{"worker":`...)
	reply = append(reply, w.idJSON...)
	reply = append(reply, `,"online":{`...)
	first := true
	for _, name := range names {
		n := w.sessions(name)
		if n == 0 {
			continue
		}
		if !first {
			reply = append(reply, ',')
		}
		first = false
		reply = append(reply, '"')
		reply = append(reply, name...) // passed subjects.ValidName: no escaping
		reply = append(reply, `":`...)
		reply = strconv.AppendInt(reply, int64(n), 10)
	}
	reply = append(reply, "}}"...)
	w.sendPresence(counts, m, reply, false)
}

// parseBulk decodes a bulk request: a JSON array of at most
// MaxPresenceNames valid names (a name twice is answered once).
func parseBulk(data []byte) ([]string, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '[' {
		return nil, errBulkNotArray
	}
	var names []string
	if err := json.Unmarshal(data, &names); err != nil {
		return nil, errBulkNotArray
	}
	if len(names) > subjects.MaxPresenceNames {
		return nil, errBulkTooMany
	}
	seen := make(map[string]struct{}, len(names))
	out := names[:0]
	for i, n := range names {
		if err := subjects.ValidName(n); err != nil {
			return nil, fmt.Errorf("%w%d: %w", errBulkInvalidName, i, err)
		}
		if _, dup := seen[n]; dup {
			continue
		}
		seen[n] = struct{}{}
		out = append(out, n)
	}
	return out, nil
}

// presenceError is the reply refusing a presence request.
func (w *Worker) presenceError(err error) []byte {
	msg, _ := json.Marshal(err.Error()) // a string always marshals
	b := make([]byte, 0, 24+len(w.idJSON)+len(msg))
	b = append(b, `{"worker":`...)
	b = append(b, w.idJSON...)
	b = append(b, `,"error":`...)
	b = append(b, msg...)
	return append(b, '}')
}

// sendPresence publishes reply to m's reply subject and counts it.
func (w *Worker) sendPresence(counts map[string]prometheus.Counter, m *nats.Msg, reply []byte, refused bool) {
	if err := w.nc.Publish(m.Reply, reply); err != nil {
		counts[presenceFailed].Inc()
		w.log.Warn("presence reply failed", "subject", m.Subject, "err", err)
		return
	}
	if refused {
		counts[presenceRefused].Inc()
		return
	}
	counts[presenceAnswered].Inc()
}
