package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// RecentEvents is how many events Events keeps.
const RecentEvents = 100

// Event is one event a worker published, as the page shows it.
type Event struct {
	// Kind is the subject's token after "event.": online, offline, ack.
	Kind string `json:"kind"`
	// Name is the subject's last token.
	Name    string `json:"name"`
	Subject string `json:"subject"`
	// Data is the event's body when it is JSON, else null.
	Data json.RawMessage `json:"data"`
	// Received is when this worker received it.
	Received time.Time `json:"received"`
}

// Events keeps the last RecentEvents events of the fleet. Its state is
// owned by the goroutine running Run; Recent asks that goroutine.
type Events struct {
	prefix string // the subjects' start, "<prefix>.event."
	sub    *nats.Subscription
	msgs   chan *nats.Msg
	asks   chan chan []Event
	done   chan struct{} // closed when Run returns
}

// eventBuffer is how many events may wait for Run; past it nats.go drops
// them and reports a slow consumer, which loses only lines of this page.
const eventBuffer = 1024

// SubscribeEvents subscribes nc to every subject under eventPrefix (which
// ends with a dot). Call Run to keep them.
func SubscribeEvents(nc *nats.Conn, eventPrefix string) (*Events, error) {
	e := &Events{
		prefix: eventPrefix,
		msgs:   make(chan *nats.Msg, eventBuffer),
		asks:   make(chan chan []Event),
		done:   make(chan struct{}),
	}
	sub, err := nc.ChanSubscribe(eventPrefix+">", e.msgs)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s>: %w", eventPrefix, err)
	}
	e.sub = sub
	return e, nil
}

// Run keeps the events until ctx ends, then unsubscribes.
func (e *Events) Run(ctx context.Context) {
	defer close(e.done)
	defer func() { _ = e.sub.Unsubscribe() }()
	ring := make([]Event, 0, RecentEvents)
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-e.msgs:
			if len(ring) == RecentEvents {
				copy(ring, ring[1:])
				ring = ring[:RecentEvents-1]
			}
			ring = append(ring, e.event(m))
		case reply := <-e.asks:
			out := make([]Event, len(ring))
			for i := range ring {
				out[len(ring)-1-i] = ring[i] // newest first
			}
			reply <- out
		}
	}
}

// Recent returns the kept events, newest first; none once Run has ended.
func (e *Events) Recent(ctx context.Context) []Event {
	reply := make(chan []Event, 1)
	select {
	case e.asks <- reply:
		return <-reply
	case <-e.done:
	case <-ctx.Done():
	}
	return []Event{}
}

func (e *Events) event(m *nats.Msg) Event {
	ev := Event{Subject: m.Subject, Received: time.Now().UTC()}
	rest := strings.TrimPrefix(m.Subject, e.prefix)
	ev.Kind, ev.Name, _ = strings.Cut(rest, ".")
	if json.Valid(m.Data) {
		ev.Data = json.RawMessage(m.Data)
	}
	return ev
}
