package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// producer sends one run's notifications to the server under test. Its
// methods are called from one goroutine, the publishing loop.
type producer interface {
	// targeted sends payload to the sessions of name u<n>; intended is
	// the time the schedule meant it to leave.
	targeted(n int, payload []byte, intended time.Time) error
	// broadcast sends payload to every session and returns once the
	// server has accepted it.
	broadcast(payload []byte, intended time.Time) error
	// finish sends whatever is still queued, waits for the server's
	// answers and reports.
	finish() *producerStats
}

// producerStats is what a producer saw. lag is, per message, the time
// from its intended send time to the moment it left this process (for the
// HTTP API: the start of the request carrying it).
type producerStats struct {
	lag      histogram
	requests int64
	errors   int64 // messages the server refused or that could not be sent
	firstErr string
}

// natsProducer publishes plain payloads to the subjects notify-worker
// reads (prefix.user.<name>, prefix.all); Centrifugo's NATS broker in raw
// mode reads the same subjects.
type natsProducer struct {
	nc    *nats.Conn
	subs  []string
	all   string
	stats producerStats
}

func newNATSProducer(url, prefix string, names int) (*natsProducer, error) {
	nc, err := nats.Connect(url, nats.Name("bench-compare-producer"))
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	p := &natsProducer{nc: nc, subs: make([]string, names), all: prefix + ".all"}
	for i := range p.subs {
		p.subs[i] = prefix + ".user.u" + strconv.Itoa(i)
	}
	return p, nil
}

func (p *natsProducer) targeted(n int, payload []byte, intended time.Time) error {
	if err := p.nc.Publish(p.subs[n], payload); err != nil {
		return fmt.Errorf("publish to %s: %w", p.subs[n], err)
	}
	p.stats.lag.record(time.Since(intended))
	return nil
}

func (p *natsProducer) broadcast(payload []byte, intended time.Time) error {
	if err := p.nc.Publish(p.all, payload); err != nil {
		return fmt.Errorf("publish to %s: %w", p.all, err)
	}
	if err := p.nc.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	p.stats.lag.record(time.Since(intended))
	return nil
}

func (p *natsProducer) finish() *producerStats {
	if err := p.nc.Flush(); err != nil && p.stats.firstErr == "" {
		p.stats.firstErr = err.Error()
	}
	p.nc.Close()
	return &p.stats
}

// apiProducer publishes through Centrifugo's HTTP API: targeted messages
// in /api/batch requests, broadcasts one /api/publish each. Names are
// split into conns shards, each with its own batch, queue and sending
// goroutine (so its own keep-alive connection most of the time): one slow
// answer does not hold the whole schedule back, and the messages of one
// name still reach Centrifugo in order, one request after another. A
// batch leaves when it holds batch commands or its first message has
// been open for wait.
type apiProducer struct {
	client *http.Client
	base   string
	key    string
	batch  int
	wait   time.Duration
	cur    []*apiBatch      // per shard, the batch being filled (nil: none)
	queues []chan *apiBatch // per shard
	wg     sync.WaitGroup
	stats  producerStats
	reqs   atomic.Int64
	errs   atomic.Int64
	errMu  sync.Mutex
	ctx    context.Context
}

// apiBatch is the body of one /api/batch request and the intended send
// times of its messages.
type apiBatch struct {
	body     []byte
	intended []int64
	started  int64 // Unix ns when its first message was added
}

func newAPIProducer(ctx context.Context, base, key string, batch, conns int, wait time.Duration) *apiProducer {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}
	p := &apiProducer{
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		base:   base, key: key, batch: batch, wait: wait,
		cur: make([]*apiBatch, conns), queues: make([]chan *apiBatch, conns),
		ctx: ctx,
	}
	for i := range p.queues {
		p.queues[i] = make(chan *apiBatch, 4)
		p.wg.Add(1)
		go p.send(p.queues[i])
	}
	return p
}

// appendPublishCommand appends one publish command of the batch API:
// {"publish":{"channel":"...","data":PAYLOAD}}. The payload is a JSON
// object already, so it goes in as it is.
func appendPublishCommand(b []byte, channel string, payload []byte) []byte {
	b = append(b, `{"publish":{"channel":"`...)
	b = append(b, channel...)
	b = append(b, `","data":`...)
	b = append(b, payload...)
	return append(b, `}}`...)
}

func (p *apiProducer) targeted(n int, payload []byte, intended time.Time) error {
	shard := n % len(p.cur)
	b := p.cur[shard]
	if b == nil {
		b = &apiBatch{body: append(make([]byte, 0, p.batch*(len(payload)+64)), `{"commands":[`...), started: time.Now().UnixNano()}
		p.cur[shard] = b
	} else {
		b.body = append(b.body, ',')
	}
	b.body = appendPublishCommand(b.body, cfPersonalChannel("u"+strconv.Itoa(n)), payload)
	b.intended = append(b.intended, intended.UnixNano())
	if len(b.intended) >= p.batch {
		if err := p.flush(shard); err != nil {
			return err
		}
	}
	// Batches that have been open long enough. The wait counts from the
	// batch's start, not from its messages' intended times: a publisher
	// behind schedule would otherwise send one message per request and
	// fall further behind.
	now := time.Now().UnixNano()
	for i, b := range p.cur {
		if b != nil && now-b.started >= int64(p.wait) {
			if err := p.flush(i); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *apiProducer) flush(shard int) error {
	b := p.cur[shard]
	if b == nil {
		return nil
	}
	p.cur[shard] = nil
	b.body = append(b.body, "]}"...)
	select {
	case p.queues[shard] <- b:
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

// send posts the batches of one shard, one after another, until its queue
// closes. It runs on a goroutine of its own.
func (p *apiProducer) send(queue <-chan *apiBatch) {
	defer p.wg.Done()
	for b := range queue {
		start := time.Now()
		for _, t := range b.intended {
			p.stats.lag.record(start.Sub(time.Unix(0, t)))
		}
		if err := p.post("/batch", b.body, len(b.intended)); err != nil {
			p.fail(int64(len(b.intended)), err)
		}
	}
}

// post sends one API request and counts the commands the answer refuses.
func (p *apiProducer) post(path string, body []byte, commands int) error {
	req, err := http.NewRequestWithContext(p.ctx, http.MethodPost, p.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("api %s: %w", path, err)
	}
	req.Header.Set("X-API-Key", p.key)
	req.Header.Set("Content-Type", "application/json")
	p.reqs.Add(1)
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("api %s: %w", path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("api %s: read answer: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("api %s: %s: %.200s", path, resp.Status, answer)
	}
	if refused := apiErrors(answer); refused > 0 {
		p.fail(int64(min(refused, commands)), fmt.Errorf("api %s: %.200s", path, answer))
	}
	return nil
}

// apiErrors counts the error objects in an API answer: one per refused
// command ({"replies":[{"publish":{}},{"error":{...}}]}, or a top-level
// {"error":...}).
func apiErrors(answer []byte) int {
	return bytes.Count(answer, []byte(`"error":`))
}

func (p *apiProducer) fail(n int64, err error) {
	p.errs.Add(n)
	p.errMu.Lock()
	if p.stats.firstErr == "" {
		p.stats.firstErr = err.Error()
	}
	p.errMu.Unlock()
}

func (p *apiProducer) broadcast(payload []byte, intended time.Time) error {
	body := appendPublishCommand(nil, cfBroadcast, payload)
	// /api/publish takes the publish request itself, not a command.
	body = body[len(`{"publish":`) : len(body)-1]
	if err := p.post("/publish", body, 1); err != nil {
		return err
	}
	p.stats.lag.record(time.Since(intended))
	return nil
}

func (p *apiProducer) finish() *producerStats {
	for i := range p.cur {
		if err := p.flush(i); err != nil {
			p.fail(0, err)
		}
		close(p.queues[i])
	}
	p.wg.Wait()
	p.client.CloseIdleConnections()
	p.stats.requests = p.reqs.Load()
	p.stats.errors = p.errs.Load()
	return &p.stats
}
