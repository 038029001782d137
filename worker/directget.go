package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Direct Get: reads of stored messages that any of the stream's replicas
// answers, outside JetStream's bounded API queue. The jetstream package
// has no batched or multi-subject form, so these are raw requests on the
// JetStream connection (nats-server's getDirectRequest and getDirectMulti,
// server/stream.go in v2.15.2). An answer is a run of messages followed by
// a "204 EOB" status message, or a lone "404" when nothing matched.

// Limits of one Direct Get answer.
const (
	// pageBytes asks the server to stop a batch after this many bytes; a
	// longer replay takes several pages.
	pageBytes = 4 << 20
	// multiLastMax is the most subjects a multi_last request asks for
	// (the server answers at most 1024).
	multiLastMax = 1000
)

// Headers of an answer. nats.go's own names for the status ones are not
// exported.
const (
	hdrStatus      = "Status"
	hdrDescription = "Description"
	hdrNumPending  = "Nats-Num-Pending"
	hdrUpTo        = "Nats-UpTo-Sequence"
	hdrSubject     = "Nats-Subject"
)

// dgRequest is JetStream's JSApiMsgGetRequest, the fields used here.
type dgRequest struct {
	Seq       uint64   `json:"seq,omitempty"`
	NextFor   string   `json:"next_by_subj,omitempty"`
	Batch     int      `json:"batch,omitempty"`
	MaxBytes  int      `json:"max_bytes,omitempty"`
	MultiLast []string `json:"multi_last,omitempty"`
	UpToSeq   uint64   `json:"up_to_seq,omitempty"`
}

// storedMsg is one message of an answer.
type storedMsg struct {
	seq     uint64
	subject string
	data    []byte
}

// dgAnswer is a whole answer.
type dgAnswer struct {
	msgs  []storedMsg
	found bool // false: the server had nothing that matched (404)
	// firstPending is the first message's Nats-Num-Pending: for a batch,
	// the messages matching after it, to the end of the stream, when the
	// request was served.
	firstPending uint64
	// eobPending is the EOB's Nats-Num-Pending: what matched but was not
	// sent (a batch stopped by its size or count; for multi_last, only by
	// max_bytes).
	eobPending uint64
	// upTo is the EOB's Nats-UpTo-Sequence (multi_last): the responder's
	// last sequence, read together with the answer.
	upTo uint64
}

// directGet is a request sent whose answer is still to be read; sending
// several before reading any lets them run at once without a goroutine
// each.
type directGet struct {
	sub *nats.Subscription
	ch  chan *nats.Msg
}

// startDirectGet sends req and returns the pending answer.
func (w *Worker) startDirectGet(req dgRequest) (*directGet, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("direct get: %w", err)
	}
	// Room for every message the answer can hold and its EOB, so that
	// nats.go never drops one (a SubscribeSync channel would take 64k
	// slots, half a megabyte, per request).
	room := max(req.Batch, len(req.MultiLast), 1) + 1
	inbox := w.jsConn.NewInbox()
	ch := make(chan *nats.Msg, room)
	sub, err := w.jsConn.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("direct get: subscribe: %w", err)
	}
	if err := w.jsConn.PublishRequest("$JS.API.DIRECT.GET."+w.cfg.Stream.Name, inbox, body); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("direct get: %w", err)
	}
	return &directGet{sub: sub, ch: ch}, nil
}

// cancel gives up a pending answer.
func (g *directGet) cancel() { _ = g.sub.Unsubscribe() }

// collect reads the answer, waiting at most attemptTimeout.
func (g *directGet) collect(ctx context.Context) (dgAnswer, error) {
	defer g.cancel()
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	var a dgAnswer
	for {
		var m *nats.Msg
		select {
		case m = <-g.ch:
		case <-ctx.Done():
			return a, fmt.Errorf("direct get: %w", ctx.Err())
		}
		if status := m.Header.Get(hdrStatus); status != "" {
			switch status {
			case "204":
				a.eobPending, _ = strconv.ParseUint(lastValue(m.Header, hdrNumPending), 10, 64)
				a.upTo, _ = strconv.ParseUint(lastValue(m.Header, hdrUpTo), 10, 64)
				return a, nil
			case "404":
				return a, nil
			case "503":
				return a, fmt.Errorf("direct get: %w", errNoStreamResponders)
			default:
				return a, fmt.Errorf("direct get: status %s %s", status, m.Header.Get(hdrDescription))
			}
		}
		seq, err := strconv.ParseUint(lastValue(m.Header, hdrSequence), 10, 64)
		if err != nil {
			return a, fmt.Errorf("direct get: a message without a sequence: %w", err)
		}
		if !a.found {
			a.found = true
			a.firstPending, _ = strconv.ParseUint(lastValue(m.Header, hdrNumPending), 10, 64)
		}
		a.msgs = append(a.msgs, storedMsg{seq: seq, subject: lastValue(m.Header, hdrSubject), data: m.Data})
	}
}

// directGetAll sends every request, then reads every answer.
func (w *Worker) directGetAll(ctx context.Context, reqs []dgRequest) ([]dgAnswer, error) {
	gets := make([]*directGet, 0, len(reqs))
	defer func() {
		for _, g := range gets {
			g.cancel() // harmless after collect
		}
	}()
	for _, req := range reqs {
		g, err := w.startDirectGet(req)
		if err != nil {
			return nil, err
		}
		gets = append(gets, g)
	}
	answers := make([]dgAnswer, len(gets))
	for i, g := range gets {
		a, err := g.collect(ctx)
		if err != nil {
			return nil, err
		}
		answers[i] = a
	}
	return answers, nil
}
