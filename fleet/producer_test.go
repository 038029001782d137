package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// durableProducer publishes durable notifications at a steady rate, as a
// backend does: with js.Publish and a Nats-Msg-Id per logical message,
// retrying the same id after an error or a timeout, so that each logical
// message is stored once however often it is sent. It records the
// sequence of each PubAck; that record is what every client must get.
type durableProducer struct {
	js     jetstream.JetStream
	names  []string      // message i goes to names[i%(len+1)], or to everyone when that is len
	every  time.Duration // one logical message per tick
	prefix string        // of the message ids, unique to the producer

	mu       sync.Mutex
	sent     []sentMsg      // in publish order, which is also sequence order
	bySeq    map[uint64]int // index in sent
	attempts int            // publishes sent, retries included
	failures map[string]int // failed attempts by error
	dupAcks  int            // retries answered "duplicate": the first try had been stored
	problems []string       // acks that break the stream's promises
	stopped  bool

	stop chan struct{} // closed to ask the producer to finish
	done chan struct{} // closed when it has
}

// sentMsg is one logical message and its PubAck.
type sentMsg struct {
	i        int
	name     string // "" for a broadcast
	seq      uint64
	sentAt   time.Time // first attempt
	ackedAt  time.Time
	attempts int
}

// payload is the JSON body of message i; clients decode it to check that
// what they got is what was published for them.
type payload struct {
	I  int    `json:"i"`
	To string `json:"to"` // a name, or "all"
}

func newDurableProducer(js jetstream.JetStream, names []string, every time.Duration) *durableProducer {
	return &durableProducer{
		js: js, names: names, every: every, prefix: strconv.FormatInt(time.Now().UnixNano(), 36),
		bySeq: map[uint64]int{}, failures: map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// start publishes until stop is called, in a goroutine that ends before
// the test does.
func (p *durableProducer) start(t *testing.T) {
	go p.run()
	t.Cleanup(func() { p.finish(t) })
}

// finish asks the producer to stop after the message it is publishing is
// acknowledged, and waits for that.
func (p *durableProducer) finish(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	if !p.stopped {
		p.stopped = true
		close(p.stop)
	}
	p.mu.Unlock()
	select {
	case <-p.done:
	case <-time.After(2 * waitTimeout):
		t.Fatalf("the producer did not finish within %s", 2*waitTimeout)
	}
}

func (p *durableProducer) run() {
	defer close(p.done)
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		if !p.publish(i) {
			return
		}
	}
}

// publish stores logical message i, retrying its id until it is
// acknowledged; a stop request does not interrupt that, since a message
// that may or may not be stored would make the accounting inexact. It
// gives up only after twice waitTimeout, and reports false then.
func (p *durableProducer) publish(i int) bool {
	m := sentMsg{i: i, sentAt: time.Now()}
	to := "all"
	subject := "durable.notify.all"
	if k := i % (len(p.names) + 1); k < len(p.names) {
		m.name, to = p.names[k], p.names[k]
		subject = "durable.notify.user." + m.name
	}
	data, _ := json.Marshal(payload{I: i, To: to})
	id := fmt.Sprintf("%s-%d", p.prefix, i)
	backoff := 50 * time.Millisecond
	deadline := m.sentAt.Add(2 * waitTimeout)
	for {
		m.attempts++
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ack, err := p.js.Publish(ctx, subject, data, jetstream.WithMsgID(id), jetstream.WithRetryAttempts(0))
		cancel()
		p.mu.Lock()
		p.attempts++
		if err == nil {
			p.record(m, ack)
			p.mu.Unlock()
			return true
		}
		p.failures[failureKind(err)]++
		p.mu.Unlock()
		if time.Now().After(deadline) {
			p.mu.Lock()
			p.problems = append(p.problems, fmt.Sprintf("message %d not stored after %d attempts: %v", i, m.attempts, err))
			p.mu.Unlock()
			return false
		}
		// A retry after a short pause (a leader election takes seconds),
		// not an interrupting stop: see above.
		time.Sleep(backoff)
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// record keeps ack as message m's, under p.mu, checking what JetStream
// promises: the stream's name, and sequences that grow with publish order
// (a retried id answers with the sequence of the copy it stored).
func (p *durableProducer) record(m sentMsg, ack *jetstream.PubAck) {
	m.seq, m.ackedAt = ack.Sequence, time.Now()
	if ack.Duplicate {
		p.dupAcks++
	}
	if ack.Stream != streamName {
		p.problems = append(p.problems, fmt.Sprintf("message %d acknowledged by stream %q", m.i, ack.Stream))
	}
	if n := len(p.sent); n > 0 && m.seq <= p.sent[n-1].seq {
		p.problems = append(p.problems, fmt.Sprintf("message %d stored as %d, after message %d as %d", m.i, m.seq, p.sent[n-1].i, p.sent[n-1].seq))
	}
	p.bySeq[m.seq] = len(p.sent)
	p.sent = append(p.sent, m)
}

// failureKind names an error for the counts in the logs.
func failureKind(err error) string {
	s := err.Error()
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return s
}

// last returns the newest acknowledged sequence, 0 if none.
func (p *durableProducer) last() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sent) == 0 {
		return 0
	}
	return p.sent[len(p.sent)-1].seq
}

// count returns the number of acknowledged messages.
func (p *durableProducer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sent)
}

// firstAckedAfter returns the first message acknowledged at or after t0.
func (p *durableProducer) firstAckedAfter(t0 time.Time) (sentMsg, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := sort.Search(len(p.sent), func(i int) bool { return !p.sent[i].ackedAt.Before(t0) })
	if i == len(p.sent) {
		return sentMsg{}, false
	}
	return p.sent[i], true
}

// stall returns the longest a logical message sent at or after t0 took
// from its first attempt to its PubAck, and how many attempts it took:
// the publish outage a fault caused, as a producer sees it.
func (p *durableProducer) stall(t0 time.Time) (time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var worst time.Duration
	attempts := 0
	for _, m := range p.sent {
		if d := m.ackedAt.Sub(m.sentAt); !m.ackedAt.Before(t0) && d > worst {
			worst, attempts = d, m.attempts
		}
	}
	return worst, attempts
}

// want returns the sequences a client of name must get: every message
// to name or to everyone, in sequence order.
func (p *durableProducer) want(name string) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var want []uint64
	for _, m := range p.sent {
		if m.name == "" || m.name == name {
			want = append(want, m.seq)
		}
	}
	return want
}

// message returns the logical message stored as seq.
func (p *durableProducer) message(seq uint64) (sentMsg, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.bySeq[seq]
	if !ok {
		return sentMsg{}, false
	}
	return p.sent[i], true
}

// summary says what the producer did, for the logs.
func (p *durableProducer) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	kinds := make([]string, 0, len(p.failures))
	for k, n := range p.failures {
		kinds = append(kinds, fmt.Sprintf("%d×%q", n, k))
	}
	sort.Strings(kinds)
	if len(kinds) == 0 {
		kinds = []string{"none"}
	}
	return fmt.Sprintf("%d messages stored in %d publishes (%d retries answered duplicate; failed attempts: %s)",
		len(p.sent), p.attempts, p.dupAcks, strings.Join(kinds, ", "))
}

// check fails t with every broken promise the producer saw.
func (p *durableProducer) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.problems {
		t.Errorf("producer: %s", pr)
	}
}
