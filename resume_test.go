package main

// Section 8 of docs/protocol.md: protocol v2. A client that was away gets
// exactly the durable messages it missed, in order, with the welcome's
// recovered flag telling when that cannot be promised; pings keep a quiet
// client's cursor fresh; v1 clients are unchanged. The worker runs with its
// embedded NATS server and JetStream, as `go run .` does.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func ptr(v uint64) *uint64 { return &v }

func TestResumeReplaysWhatWasMissed(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	js := jetStream(t, tw)
	nc := connectNATS(t, tw.natsURL)

	c, w := resume(t, tw, "alice", nil)
	if !*w.Recovered || w.Replayed != 0 || w.Reason != "" || w.Ping != 25000 || w.UpRate != 10 || w.UpBurst != 20 {
		t.Fatalf("welcome without since: %+v", w)
	}
	first := publishDurable(t, js, "notify.user.alice", `{"n":1}`)
	if f := readMsgV2(t, c); f.seq() != first || string(f.Data) != `{"n":1}` || first <= w.seq() {
		t.Fatalf("live durable message: %+v (published as %d, welcome seq %d)", f, first, w.seq())
	}
	c.Close()

	// While alice is away: hers, broadcasts, someone else's, and a payload
	// that is not JSON.
	var want []uint64
	want = append(want, publishDurable(t, js, "notify.user.alice", `{"n":2}`))
	publishDurable(t, js, "notify.user.bob", `{"bob":1}`)
	want = append(want, publishDurable(t, js, "notify.all", `{"all":1}`))
	want = append(want, publishDurable(t, js, "notify.user.alice", "not json"))
	// Ephemeral, and gone: sent as requests until no worker holds alice,
	// so that none is still on its way to the worker when she resumes.
	eventually(t, "no responders for alice", func() bool {
		_, err := nc.Request("notify.user.alice", []byte(`{"core":"missed"}`), time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})
	want = append(want, publishDurable(t, js, "notify.user.alice", `{"n":3}`))

	c, w = resume(t, tw, "alice", ptr(first))
	if !*w.Recovered || w.Replayed != len(want) || w.seq() < want[len(want)-1] {
		t.Fatalf("welcome resuming from %d: %+v, want %d replayed", first, w, len(want))
	}
	var got []uint64
	for range want {
		f := readMsgV2(t, c)
		got = append(got, f.seq())
		if f.seq() == want[2] {
			if f.Data != nil || f.DataB64 != base64.StdEncoding.EncodeToString([]byte("not json")) {
				t.Errorf("non-JSON payload: %+v", f)
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	// Then live: durable above the welcome's seq, core without a seq.
	live := publishDurable(t, js, "notify.user.alice", `{"n":4}`)
	if f := readMsgV2(t, c); f.seq() != live || live <= w.seq() {
		t.Fatalf("live after replay: %+v, want seq %d", f, live)
	}
	publish(t, nc, "notify.user.alice", `{"core":1}`)
	if f := readMsgV2(t, c); f.Seq != nil || string(f.Data) != `{"core":1}` {
		t.Fatalf("core message to a v2 client: %+v", f)
	}
}

func TestV1ClientGetsDurablePayloadsRaw(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	js := jetStream(t, tw)
	c := client(t, tw, "alice")
	publishDurable(t, js, "notify.user.alice", `{"title":"durable"}`)
	expect(t, c, `{"title":"durable"}`)
	publishDurable(t, js, "notify.all", `{"title":"everyone"}`)
	expect(t, c, `{"title":"everyone"}`)
}

// TestResumeNotRecovered runs every reason of protocol.md's recovered:false
// table, and the neighbouring case that is still recovered.
func TestResumeNotRecovered(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*Config)
		away   func(t *testing.T, publish func(subject, payload string) uint64) // while alice is away
		since  func(welcome uint64) uint64
		reason string // "" for recovered
		// replayed lists the indexes, in the publishes of away, of the
		// messages replayed.
		replayed []int
	}{
		{
			name:   "reset: since ahead of the stream",
			since:  func(uint64) uint64 { return 1 << 40 },
			reason: "reset",
		},
		{
			name: "below the per-subject limit",
			edit: func(c *Config) { c.StreamMaxMsgsPerSubject = 3 },
			away: func(t *testing.T, publish func(string, string) uint64) {
				publish("notify.user.alice", `{"n":0}`)
				publish("notify.user.alice", `{"n":1}`)
			},
			replayed: []int{0, 1},
		},
		{
			name: "retention: a subject at its per-subject limit",
			edit: func(c *Config) { c.StreamMaxMsgsPerSubject = 3 },
			away: func(t *testing.T, publish func(string, string) uint64) {
				for i := range 3 {
					publish("notify.user.alice", fmt.Sprintf(`{"n":%d}`, i))
				}
			},
			reason:   "retention",
			replayed: []int{0, 1, 2},
		},
		{
			name: "retention: evicted past the limit, the newest replayed",
			edit: func(c *Config) { c.StreamMaxMsgsPerSubject = 3 },
			away: func(t *testing.T, publish func(string, string) uint64) {
				for i := range 5 {
					publish("notify.user.alice", fmt.Sprintf(`{"n":%d}`, i))
				}
			},
			reason:   "retention",
			replayed: []int{2, 3, 4},
		},
		{
			name: "retention: removed by the stream's size limit",
			edit: func(c *Config) { c.StreamMaxBytes = 8 << 10 },
			away: func(t *testing.T, publish func(string, string) uint64) {
				publish("notify.user.alice", `{"gone":true}`)
				big := `{"pad":"` + strings.Repeat("x", 1000) + `"}`
				for range 20 {
					publish("notify.user.bob", big)
				}
			},
			reason: "retention",
		},
		{
			name: "replay_max: the newest that fit",
			edit: func(c *Config) { c.ReplayMax = 3 },
			away: func(t *testing.T, publish func(string, string) uint64) {
				publish("notify.user.alice", `{"n":0}`)
				publish("notify.all", `{"n":1}`)
				publish("notify.user.alice", `{"n":2}`)
				publish("notify.user.bob", `{"bob":true}`)
				publish("notify.all", `{"n":3}`)
				publish("notify.user.alice", `{"n":4}`)
			},
			reason:   "replay_max",
			replayed: []int{2, 4, 5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tt.edit != nil {
				tt.edit(&cfg)
			}
			tw := startWorker(t, cfg)
			js := jetStream(t, tw)
			c, w := resume(t, tw, "alice", nil)
			c.Close()
			var seqs []uint64
			if tt.away != nil {
				tt.away(t, func(subject, payload string) uint64 {
					s := publishDurable(t, js, subject, payload)
					seqs = append(seqs, s)
					return s
				})
			}
			since := w.seq()
			if tt.since != nil {
				since = tt.since(since)
			}
			c, w = resume(t, tw, "alice", &since)
			if *w.Recovered != (tt.reason == "") || w.Reason != tt.reason || w.Replayed != len(tt.replayed) {
				t.Fatalf("welcome: %+v, want reason %q and %d replayed", w, tt.reason, len(tt.replayed))
			}
			for _, i := range tt.replayed {
				if f := readMsgV2(t, c); f.seq() != seqs[i] {
					t.Fatalf("replayed %+v, want seq %d", f, seqs[i])
				}
			}
		})
	}
}

func TestResumeWithoutDurableSupport(t *testing.T) {
	noJetStream := startNATS(t, nil)
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"NOTIFY_STREAM=off", func(c *Config) { c.Stream = "off" }},
		{"a NATS server without JetStream", func(c *Config) { c.NATSURLs = []string{noJetStream.ClientURL()} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.edit(&cfg)
			tw := startWorker(t, cfg)
			c, w := resume(t, tw, "alice", ptr(7))
			if *w.Recovered || w.Reason != "unavailable" || w.Replayed != 0 {
				t.Fatalf("welcome: %+v", w)
			}
			// Core delivery is unchanged, in envelopes.
			publish(t, connectNATS(t, tw.natsURL), "notify.user.alice", `{"core":true}`)
			if f := readMsgV2(t, c); f.Seq != nil || string(f.Data) != `{"core":true}` {
				t.Fatalf("core message: %+v", f)
			}
			if code := status(t, tw.url("/readyz")); code != 200 {
				t.Fatalf("/readyz = %d without JetStream", code)
			}
		})
	}
}

// TestQuietClientStaysRecoverable: a client that receives nothing while other
// users' traffic pushes the stream past its size limit resumes recovered
// with the cursor its pings gave it, and would not have with its welcome's.
func TestQuietClientStaysRecoverable(t *testing.T) {
	cfg := testConfig(t)
	cfg.StreamMaxBytes = 8 << 10
	cfg.AppPing = 100 * time.Millisecond
	tw := startWorker(t, cfg)
	js := jetStream(t, tw)
	c, w := resume(t, tw, "alice", nil)
	big := `{"pad":"` + strings.Repeat("x", 1000) + `"}`
	var last uint64
	for range 20 {
		last = publishDurable(t, js, "notify.user.bob", big)
	}
	var cursor uint64
	for cursor < last {
		f := readV2(t, c)
		if f.Type != "ping" {
			t.Fatalf("a quiet client got %+v", f)
		}
		cursor = max(cursor, f.seq())
	}
	c.Close()
	if _, stale := resume(t, tw, "alice", ptr(w.seq())); *stale.Recovered || stale.Reason != "retention" {
		t.Fatalf("resuming from the welcome's seq after eviction: %+v", stale)
	}
	if _, fresh := resume(t, tw, "alice", &cursor); !*fresh.Recovered {
		t.Fatalf("resuming from the ping's cursor %d: %+v", cursor, fresh)
	}
}

// TestRequestsWithTheStreamPresent: the stream captures durable.* only, so
// core requests keep their receipts and "no responders".
func TestRequestsWithTheStreamPresent(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)
	_ = client(t, tw, "alice")
	waitStream(t, tw)
	if r := request(t, nc, "notify.user.alice", []byte(`{}`)); r.Delivered != 1 || r.Worker != "test-worker" {
		t.Fatalf("receipt: %+v", r)
	}
	start := time.Now()
	if _, err := nc.Request("notify.user.nobody", []byte(`{}`), waitTimeout); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request to a name nobody holds: %v", err)
	}
	t.Logf("no responders after %s", time.Since(start))
	msg, err := nc.Request("durable.notify.user.alice", []byte(`{}`), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var ack struct {
		Stream string `json:"stream"`
		Seq    uint64 `json:"seq"`
	}
	if err := json.Unmarshal(msg.Data, &ack); err != nil || ack.Stream != "NOTIFY" || ack.Seq == 0 {
		t.Fatalf("a request to a durable subject is answered by the stream: %q", msg.Data)
	}
}

// TestShutdownClosesV2With1012: at shutdown a v2 client is told to resume
// elsewhere now, after what was queued to it; a v1 client still gets 1001.
func TestShutdownClosesV2With1012(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	js := jetStream(t, tw)
	v1 := client(t, tw, "bob")
	v2, _ := resume(t, tw, "alice", nil)
	s := publishDurable(t, js, "notify.user.alice", `{"last":true}`)
	if f := readMsgV2(t, v2); f.seq() != s {
		t.Fatalf("before shutdown: %+v", f)
	}
	if err := tw.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, code, _ := readClose(t, v2); code != websocket.CloseServiceRestart {
		t.Errorf("v2 close code %d, want 1012", code)
	}
	if _, code, _ := readClose(t, v1); code != websocket.CloseGoingAway {
		t.Errorf("v1 close code %d, want 1001", code)
	}
}

// TestResumeHostileSince: every since that is not an integer from 0 to
// 2^63-1 gets the error frame and 1008; a valid one far ahead gets reset.
func TestResumeHostileSince(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	for _, since := range []string{`-1`, `1.5`, `1e3`, `"5"`, `null`, `true`, `1000000000000000000000000000000`, `9223372036854775808`} {
		t.Run(since, func(t *testing.T) {
			c := dial(t, tw.addr, "/")
			send(t, c, `{"name":"alice","v":2,"since":`+since+`}`)
			frames, code, _ := readClose(t, c)
			if code != websocket.ClosePolicyViolation || len(frames) != 1 || !strings.Contains(frames[0], `"type":"error"`) {
				t.Fatalf("since %s: frames %q, close %d", since, frames, code)
			}
		})
	}
	if _, w := resume(t, tw, "alice", ptr(1<<63-1)); *w.Recovered || w.Reason != "reset" {
		t.Fatalf("since 2^63-1: %+v", w)
	}
}

// TestResumeSwitching is the randomized switch test: clients drop and resume
// at random moments while a producer publishes durably to their names and
// to everyone; each client, across all its connections, gets every durable
// message for it after its first welcome exactly once and in order.
const closeTooSlow = 4002

func TestResumeSwitching(t *testing.T) {
	cfg := testConfig(t)
	cfg.AppPing = 50 * time.Millisecond
	cfg.SessionQueue = 32
	tw := startWorker(t, cfg)
	js := jetStream(t, tw)

	const (
		names     = 6
		perName   = 2
		publishes = 1200
	)
	clients := make([]*switchClient, 0, names*perName)
	for n := range names {
		for range perName {
			clients = append(clients, &switchClient{name: fmt.Sprintf("user%d", n), closes: map[int]int{}})
		}
	}
	// Every client has its first welcome before the producer starts, so
	// that each must get every message.
	for _, sc := range clients {
		c, w := resume(t, tw, sc.name, nil)
		sc.cursor = w.seq()
		sc.first = w.seq()
		c.Close()
	}

	p := &switchProducer{done: make(chan struct{})}
	go p.run(t, js, names, publishes)

	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for i, sc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sc.run(tw.addr, rand.New(rand.NewPCG(uint64(i), 99)), p); err != nil {
				errs <- fmt.Errorf("%s: %w", sc.name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	resumes, closes := 0, map[int]int{}
	for _, sc := range clients {
		resumes += sc.connections
		for code, n := range sc.closes {
			closes[code] += n
		}
		want := p.want(sc.name, sc.first)
		if !slices.Equal(sc.got, want) {
			t.Errorf("%s (%d connections): got %d messages, want %d; first difference at index %d",
				sc.name, sc.connections, len(sc.got), len(want), firstDifference(sc.got, want))
		}
	}
	t.Logf("%d clients, %d connections, %d durable publishes; resumed after close codes %v", len(clients), resumes, publishes, closes)
}

// switchProducer publishes durably to random names and to everyone, and
// remembers what it published.
type switchProducer struct {
	mu   sync.Mutex
	log  []switchSent
	err  error
	done chan struct{} // closed when it has published everything
}

type switchSent struct {
	seq  uint64
	name string // "" for a broadcast
}

func (p *switchProducer) run(t *testing.T, js jetstream.JetStream, names, n int) {
	defer close(p.done)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		name, subject := "", "durable.notify.all"
		if r.IntN(8) != 0 {
			name = fmt.Sprintf("user%d", r.IntN(names))
			subject = "durable.notify.user." + name
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		ack, err := js.Publish(ctx, subject, []byte(fmt.Sprintf(`{"i":%d}`, i)))
		cancel()
		p.mu.Lock()
		if err != nil {
			p.err = err
			p.mu.Unlock()
			return
		}
		p.log = append(p.log, switchSent{ack.Sequence, name})
		p.mu.Unlock()
	}
}

// last returns the producer's last sequence once it is done.
func (p *switchProducer) last() (uint64, bool, error) {
	select {
	case <-p.done:
	default:
		return 0, false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil || len(p.log) == 0 {
		return 0, true, p.err
	}
	return p.log[len(p.log)-1].seq, true, nil
}

// want is what a client of name whose first welcome said first must get.
func (p *switchProducer) want(name string, first uint64) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var want []uint64
	for _, s := range p.log {
		if s.seq > first && (s.name == "" || s.name == name) {
			want = append(want, s.seq)
		}
	}
	return want
}

// switchClient is one logical v2 client across its connections.
type switchClient struct {
	name        string
	first       uint64 // the first welcome's seq
	cursor      uint64
	got         []uint64 // durable sequences received, in order, across connections
	connections int
	closes      map[int]int // close codes that made it resume, by code
}

// run connects, reads a random number of frames, drops the connection and
// resumes with its cursor, until the producer is done and the cursor has
// reached its last message.
func (sc *switchClient) run(addr string, r *rand.Rand, p *switchProducer) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		last, done, err := p.last()
		if err != nil {
			return fmt.Errorf("producer: %w", err)
		}
		if done && sc.cursor >= last {
			return nil
		}
		if err := sc.connect(addr, r.IntN(40)+1, deadline); err != nil {
			return err
		}
	}
	return errors.New("did not reach the producer's last message in time")
}

// connect runs one connection: identify with the cursor, read up to frames
// frames (the replay always in full), keeping the cursor as protocol.md's
// section 8 says.
func (sc *switchClient) connect(addr string, frames int, deadline time.Time) error {
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	if err != nil {
		return err
	}
	defer c.Close()
	sc.connections++
	_ = c.SetReadDeadline(deadline)
	if err := c.WriteMessage(websocket.TextMessage, []byte(firstV2(sc.name, &sc.cursor))); err != nil {
		return err
	}
	var w v2Frame
	if err := c.ReadJSON(&w); err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	if w.Type != "welcome" || w.Recovered == nil || !*w.Recovered {
		return fmt.Errorf("welcome resuming from %d: %+v", sc.cursor, w)
	}
	for i := 0; i < w.Replayed || i < frames; i++ {
		var f v2Frame
		if err := c.ReadJSON(&f); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && (ce.Code == websocket.CloseServiceRestart || ce.Code == closeTooSlow) {
				// Resume, as a client does on 1012, and on 4002 (a
				// client that fell behind, which two shared cores
				// can make of any client: it loses nothing either).
				sc.closes[ce.Code]++
				return nil
			}
			return fmt.Errorf("frame %d: %w", i, err)
		}
		switch {
		case f.Type == "ping":
			sc.cursor = max(sc.cursor, f.seq())
		case f.Type == "msg" && f.Seq != nil:
			if n := len(sc.got); n > 0 && f.seq() <= sc.got[n-1] {
				return fmt.Errorf("seq %d after %d", f.seq(), sc.got[n-1])
			}
			sc.got = append(sc.got, f.seq())
			sc.cursor = max(sc.cursor, f.seq())
		default:
			return fmt.Errorf("unexpected frame %+v", f)
		}
		if i+1 == w.Replayed {
			sc.cursor = max(sc.cursor, w.seq())
		}
	}
	if w.Replayed == 0 {
		sc.cursor = max(sc.cursor, w.seq())
	}
	return nil
}

// firstDifference returns the first index where a and b differ.
func firstDifference(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
