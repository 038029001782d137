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
)

// Direct Get: reads of stored messages that any of the stream's replicas
// answers, outside JetStream's bounded API queue. The jetstream package
// has no batched or multi-subject form, so these are raw requests on the
// read pool's connections (jsconn.go; nats-server's getDirectRequest and
// getDirectMulti, server/stream.go in v2.15.2). The answer to a batch or multi_last request
// is a run of messages followed by a "204 EOB" status message, or a lone
// "404" when nothing matched; the answer to a request with neither is one
// message or the 404. Only a batch makes the server count the subject's
// messages from the request's sequence to the end of the stream
// (Nats-Num-Pending, fileStore.NumPending), which walks every message of
// the stream from there to the end of the subject's last block; a request
// without batch only looks for the next matching message.

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

// dgMux routes the answers to single Direct Gets (one message each) sent
// on one connection: one wildcard subscription into a fresh inbox, and a
// token per request, so that such a request costs no SUB and UNSUB of its
// own. It also tracks the batches under way on the connection. Its
// handler runs on the subscription's nats.go goroutine and never blocks.
type dgMux struct {
	nc      *nats.Conn
	prefix  string // the inbox and "."
	sub     *nats.Subscription
	next    atomic.Uint64
	mu      sync.Mutex
	waiting map[string]*directGet // token -> the pending answer
}

// newDGMux subscribes to the answers of the Direct Gets sent on nc.
func newDGMux(nc *nats.Conn) (*dgMux, error) {
	x := &dgMux{nc: nc, prefix: nc.NewInbox() + ".", waiting: make(map[string]*directGet)}
	sub, err := nc.Subscribe(x.prefix+"*", x.answer)
	if err != nil {
		return nil, fmt.Errorf("direct get: subscribe: %w", err)
	}
	// The handler only hands each message on, so nats.go is never asked
	// to drop one for a full pending buffer.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("direct get: %w", err)
	}
	x.sub = sub
	return x, nil
}

// answer hands m to the request it answers; one that has given up gets
// nothing, and one whose room is full (which its room rules out) is told
// its answer is lost.
func (x *dgMux) answer(m *nats.Msg) {
	token := strings.TrimPrefix(m.Subject, x.prefix)
	x.mu.Lock()
	defer x.mu.Unlock()
	g := x.waiting[token]
	if g == nil {
		return
	}
	select {
	case g.ch <- m:
	default:
		delete(x.waiting, token)
		close(g.lost)
	}
}

// underWay is how many requests wait for their answers.
func (x *dgMux) underWay() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.waiting)
}

// abandon tells every request waiting for an answer that it will not
// come: its connection dropped (nats.go's disconnect handler calls it),
// and what was under way on it is lost.
func (x *dgMux) abandon() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for token, g := range x.waiting {
		delete(x.waiting, token)
		close(g.lost)
	}
}

// directGet is a request sent whose answer is still to be read; sending
// several before reading any lets them run at once without a goroutine
// each, on the read pool's connections.
type directGet struct {
	mux    *dgMux
	token  string
	single bool // a request without batch or multi_last: one message or a status
	ch     chan *nats.Msg
	lost   chan struct{}      // closed when a message did not fit in ch, or the connection dropped
	sub    *nats.Subscription // a batch's own inbox; nil for a single request
}

// startDirectGet sends req on the next connection of the read pool and
// returns the pending answer.
func (w *Worker) startDirectGet(req dgRequest) (*directGet, error) {
	return w.startDirectGetOn(w.reads.pick(), req)
}

// startDirectGetOn sends req on x's connection.
func (w *Worker) startDirectGetOn(x *dgMux, req dgRequest) (*directGet, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("direct get: %w", err)
	}
	// Room for every message the answer can hold and its EOB.
	room := max(req.Batch, len(req.MultiLast), 1) + 1
	g := &directGet{
		mux:    x,
		token:  strconv.FormatUint(x.next.Add(1), 36),
		single: req.Batch == 0 && len(req.MultiLast) == 0,
		ch:     make(chan *nats.Msg, room),
		lost:   make(chan struct{}),
	}
	x.mu.Lock()
	x.waiting[g.token] = g // for a batch too: underWay and abandon count it
	x.mu.Unlock()
	reply := x.prefix + g.token
	if !g.single {
		// A batch's messages go from the connection's read loop straight
		// into ch: through the shared inbox's handler each would take one
		// more goroutine hop, which costs more than a SUB and UNSUB for
		// an answer of many messages.
		reply = x.nc.NewInbox()
		sub, err := x.nc.ChanSubscribe(reply, g.ch)
		if err != nil {
			g.cancel()
			return nil, fmt.Errorf("direct get: subscribe: %w", err)
		}
		g.sub = sub
	}
	if err := x.nc.PublishRequest("$JS.API.DIRECT.GET."+w.cfg.Stream.Name, reply, body); err != nil {
		g.cancel()
		return nil, fmt.Errorf("direct get: %w", err)
	}
	return g, nil
}

// cancel gives up a pending answer.
func (g *directGet) cancel() {
	g.mux.mu.Lock()
	if g.mux.waiting[g.token] == g {
		delete(g.mux.waiting, g.token)
	}
	g.mux.mu.Unlock()
	if g.sub != nil {
		_ = g.sub.Unsubscribe()
	}
}

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
		case <-g.lost:
			// Nothing is sent to ch once lost is closed: what it holds
			// came before.
			select {
			case m = <-g.ch:
			default:
				return a, errors.New("direct get: the answer was lost (its connection dropped)")
			}
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
		if g.single {
			return a, nil
		}
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
