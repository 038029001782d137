package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/notify-worker/notify-worker/feed"
	"github.com/notify-worker/notify-worker/subjects"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

// recorder is a Deliverer that records what it is given and reports a
// fixed number of sessions per name. If gate is not nil, every delivery
// first waits until gate is closed, holding its dispatch lane (or the
// router, for a durable message).
type recorder struct {
	mu       sync.Mutex
	sessions map[string]int
	got      chan string
	gate     chan struct{}
	// lost receives FeedLost's causes; durable, the durable messages
	// handed over, as "name:seq:prev" ("*" for a broadcast). Both are also
	// put, in order, in events.
	lost    chan string
	durable chan string
	events  chan string
}

func newRecorder() *recorder {
	return &recorder{sessions: map[string]int{}, got: make(chan string, 10000),
		lost: make(chan string, 100), durable: make(chan string, 10000), events: make(chan string, 20000)}
}

func newGatedRecorder() *recorder {
	r := newRecorder()
	r.gate = make(chan struct{})
	return r
}

func (r *recorder) DeliverUser(name string, m feed.Message) int {
	if r.gate != nil {
		<-r.gate
	}
	r.record(name, m)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[name]
}

func (r *recorder) DeliverAll(m feed.Message) int {
	if r.gate != nil {
		<-r.gate
	}
	r.record("*", m)
	return 7
}

func (r *recorder) record(name string, m feed.Message) {
	if m.Durable() {
		d := fmt.Sprintf("%s:%d:%d", name, m.Seq, m.Prev)
		r.durable <- d
		r.events <- "msg " + d
		return
	}
	r.got <- name + ":" + string(m.Payload)
}

func (r *recorder) FeedLost(cause string) {
	r.lost <- cause
	r.events <- "lost " + cause
}

func (r *recorder) next(t *testing.T) string {
	t.Helper()
	select {
	case s := <-r.got:
		return s
	case <-time.After(waitTimeout):
		t.Fatal("nothing delivered")
		return ""
	}
}

func startServer(t *testing.T) *server.Server {
	t.Helper()
	srv := natstest.RunRandClientPortServer()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

func testWorker(t *testing.T, url string, d Deliverer) *Worker {
	t.Helper()
	w, _ := testWorkerConfig(t, url, d, nil) // lanes of 4096: above any burst in these tests
	return w
}

func testWorkerLanes(t *testing.T, url string, d Deliverer, laneBuffer int) *Worker {
	t.Helper()
	w, _ := testWorkerConfig(t, url, d, func(c *Config) { c.Lanes, c.LaneBuffer = 2, laneBuffer })
	return w
}

// testWorkerConfig starts a worker on url delivering to d, with the test
// defaults changed by change, and returns it with its metrics registry.
// Close runs in t.Cleanup and must succeed.
func testWorkerConfig(t *testing.T, url string, d Deliverer, change func(*Config)) (*Worker, *prometheus.Registry) {
	t.Helper()
	return testWorkerLog(t, url, d, slog.New(slog.NewTextHandler(io.Discard, nil)), change)
}

// testWorkerLog is testWorkerConfig with the worker logging to log.
func testWorkerLog(t *testing.T, url string, d Deliverer, log *slog.Logger, change func(*Config)) (*Worker, *prometheus.Registry) {
	t.Helper()
	scheme, err := subjects.New(subjects.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Conn: ConnConfig{
			URLs: []string{url}, Name: "worker-test", ConnectTimeout: time.Second,
			MaxReconnects: -1, ReconnectWait: 50 * time.Millisecond, PingInterval: time.Second, MaxPingsOut: 2,
		},
		Scheme: scheme, ID: "w1", Lanes: 0, LaneBuffer: 4096,
	}
	if change != nil {
		change(&cfg)
	}
	reg := prometheus.NewRegistry()
	w, err := New(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return w, reg
}

func producer(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func joinNow(t *testing.T, w *Worker, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := w.Join(ctx, name); err != nil {
		t.Fatal(err)
	}
}

func TestJoinConfirmsInterest(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	w := testWorker(t, srv.ClientURL(), rec)
	nc := producer(t, srv.ClientURL())

	joinNow(t, w, "alice")
	// No wait between Join and publish: Join returned after the server
	// confirmed the subscription.
	if err := nc.Publish("notify.user.alice", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got := rec.next(t); got != "alice:hi" {
		t.Fatalf("got %q", got)
	}
	if err := nc.Publish("notify.all", []byte("everyone")); err != nil {
		t.Fatal(err)
	}
	if got := rec.next(t); got != "*:everyone" {
		t.Fatalf("got %q", got)
	}
}

func TestRefCountAndReplies(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	rec.sessions["bob"] = 2
	w := testWorker(t, srv.ClientURL(), rec)
	nc := producer(t, srv.ClientURL())

	joinNow(t, w, "bob")
	joinNow(t, w, "bob")
	if n := w.subscriptionCount(); n != 1 {
		t.Fatalf("%d subscriptions for one name, want 1", n)
	}
	request := func() (map[string]any, error) {
		m, err := nc.Request("notify.user.bob", []byte("q"), waitTimeout)
		if err != nil {
			return nil, err
		}
		var reply map[string]any
		if err := json.Unmarshal(m.Data, &reply); err != nil {
			t.Fatalf("reply %q: %v", m.Data, err)
		}
		return reply, nil
	}
	reply, err := request()
	if err != nil {
		t.Fatal(err)
	}
	if reply["delivered"] != 2.0 || reply["worker"] != "w1" {
		t.Fatalf("reply %v", reply)
	}

	w.Leave("bob")
	if _, err := request(); err != nil {
		t.Fatalf("after one of two leaves: %v", err)
	}
	w.Leave("bob")
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := request(); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("after the last leave: %v, want no responders", err)
	}
	w.Leave("bob") // an unbalanced Leave is harmless
}

func TestOrderPerName(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	w := testWorker(t, srv.ClientURL(), rec)
	nc := producer(t, srv.ClientURL())
	for _, name := range []string{"a", "b", "c"} {
		joinNow(t, w, name)
	}
	const n = 1000
	for i := range n {
		for _, name := range []string{"a", "b", "c"} {
			if err := nc.Publish("notify.user."+name, []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	next := map[string]int{}
	for range 3 * n {
		got := rec.next(t)
		name, seq := got[:1], got[2:]
		if seq != strconv.Itoa(next[name]) {
			t.Fatalf("%s: got %s, want %d", name, seq, next[name])
		}
		next[name]++
	}
	if n := w.droppedTotal(); n != 0 {
		t.Fatalf("%d messages dropped", n)
	}
}

func TestUpstream(t *testing.T) {
	srv := startServer(t)
	w := testWorker(t, srv.ClientURL(), newRecorder())
	nc := producer(t, srv.ClientURL())
	sub, err := nc.SubscribeSync("notify.inbound.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := w.Upstream("carol", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "notify.inbound.carol" || string(m.Data) != "hello" {
		t.Fatalf("got %s %q", m.Subject, m.Data)
	}
}

func TestJoinWhileDisconnected(t *testing.T) {
	srv := natstest.RunRandClientPortServer()
	w := testWorker(t, srv.ClientURL(), newRecorder())
	srv.Shutdown()
	srv.WaitForShutdown()
	deadline := time.Now().Add(waitTimeout)
	for w.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("still ready after the server stopped")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := w.Join(ctx, "dave"); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Join = %v, want ErrNotConnected", err)
	}
	if n := w.subscriptionCount(); n != 0 {
		t.Fatalf("%d subscriptions left after a failed join", n)
	}
}

// blocked is a Deliverer that holds the dispatch goroutine until released.
type blocked struct {
	release   chan struct{}
	delivered chan struct{}
}

func (b *blocked) DeliverUser(string, feed.Message) int {
	<-b.release
	b.delivered <- struct{}{}
	return 1
}

func (b *blocked) DeliverAll(feed.Message) int { return 0 }
func (b *blocked) FeedLost(string)             {}

// When a lane is full nats.go drops the message; every such loss is
// counted.
func TestLaneOverflowIsCounted(t *testing.T) {
	srv := startServer(t)
	b := &blocked{release: make(chan struct{}), delivered: make(chan struct{}, 100)}
	w := testWorkerLanes(t, srv.ClientURL(), b, 4)
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "ivy")
	const n = 100
	for i := range n {
		if err := nc.Publish("notify.user.ivy", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Wait until the worker has seen all n: each was queued or dropped.
	deadline := time.Now().Add(waitTimeout)
	for {
		w.mu.Lock()
		in := 0
		if us := w.subs["ivy"]; us != nil {
			d, _ := us.sub.Delivered()
			dropped, _ := us.sub.Dropped()
			in = int(d) + dropped
		}
		w.mu.Unlock()
		if in == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker saw %d of %d messages", in, n)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	close(b.release)
	dropped := w.droppedTotal()
	if dropped == 0 {
		t.Fatal("a 4-message lane took 100 messages without a drop")
	}
	for range n - dropped {
		select {
		case <-b.delivered:
		case <-time.After(waitTimeout):
			t.Fatal("queued messages were not delivered")
		}
	}
	t.Logf("%d delivered, %d dropped and counted", n-dropped, dropped)
}

// metricValue reads one sample from reg: the metric called name whose
// labels include the given name/value pairs.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labelPairs ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labelPairs); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labelPairs[i] && lp.GetValue() == labelPairs[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s %v", name, labelPairs)
	return 0
}

// eventually polls cond until it holds, failing t after waitTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, waitTimeout)
		}
		time.Sleep(2 * time.Millisecond) // polling interval
	}
}

func publishN(t *testing.T, nc *nats.Conn, subject string, n int) {
	t.Helper()
	for i := range n {
		if err := nc.Publish(subject, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// The server has routed every message to the worker's connection once
	// the producer's flush returns.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// waitQueued returns once nats.go has put n messages of name's
// subscription into its dispatch lane.
func waitQueued(t *testing.T, w *Worker, name string, n int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d messages for %s in the lane", n, name), func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		us := w.subs[name]
		if us == nil {
			return false
		}
		d, _ := us.sub.Delivered()
		return d == n
	})
}

// waitUnsubscribed returns once the worker's connection holds no
// subscription: the drain has told the server to stop sending.
func waitUnsubscribed(t *testing.T, w *Worker) {
	t.Helper()
	eventually(t, "no subscriptions left", func() bool { return w.nc.NumSubscriptions() == 0 })
}

// checkInOrder takes n deliveries for name that must already have been
// made, and checks they are payloads 0 ... n-1 in order.
func checkInOrder(t *testing.T, rec *recorder, name string, n int) {
	t.Helper()
	if got := len(rec.got); got != n {
		t.Fatalf("%d of %d messages delivered", got, n)
	}
	for i := range n {
		if got, want := <-rec.got, name+":"+strconv.Itoa(i); got != want {
			t.Fatalf("delivery %d: got %q, want %q", i, got, want)
		}
	}
}

// JetStream harness.

// startJetStream runs a NATS server with JetStream on a random port,
// storing under dir ("" for a fresh temporary one), stopped in t.Cleanup.
func startJetStream(t *testing.T) *server.Server {
	t.Helper()
	return runJetStream(t, -1, t.TempDir())
}

// runJetStream runs a JetStream server on port (-1: random) storing
// under dir.
func runJetStream(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = port
	opts.JetStream = true
	opts.StoreDir = dir
	srv := natstest.RunServer(&opts)
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// testStream is the stream configuration of the durable tests.
func testStream() StreamConfig {
	return StreamConfig{
		Name: "NOTIFY", MaxAge: time.Hour, MaxMsgsPerSubject: 10000, MaxBytes: 1 << 30,
		Storage: StorageFile, Replicas: 1, DuplicateWindow: 2 * time.Minute,
	}
}

// durable turns durable support on, then applies change.
func durable(change func(*Config)) func(*Config) {
	return func(c *Config) {
		c.Stream = testStream()
		c.ReplayMax = 1000
		c.ReplayConcurrency = 4
		if change != nil {
			change(c)
		}
	}
}

// durableWorker starts a worker with durable support on url and waits
// until its stream is ready.
func durableWorker(t *testing.T, url string, d Deliverer, change func(*Config)) (*Worker, *prometheus.Registry) {
	t.Helper()
	w, reg := testWorkerConfig(t, url, d, durable(change))
	eventually(t, "stream ready", w.StreamReady)
	return w, reg
}

// jetStream returns a JetStream context on a producer connection to url.
func jetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(producer(t, url))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publishDurable stores payload under the durable form of subject and
// returns its sequence.
func publishDurable(t *testing.T, js jetstream.JetStream, subject, payload string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ack, err := js.Publish(ctx, "durable."+subject, []byte(payload))
	if err != nil {
		t.Fatalf("durable publish to %s: %v", subject, err)
	}
	return ack.Sequence
}

// resumeNow resumes name from since (nil: no cursor) and fails t on error.
func resumeNow(t *testing.T, w *Worker, name string, since *uint64) feed.Replay {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	r, err := w.Resume(ctx, name, since)
	if err != nil {
		t.Fatalf("resume %s: %v", name, err)
	}
	return r
}

func ptr(v uint64) *uint64 { return &v }

// seqs returns the sequences of msgs.
func seqs(msgs []feed.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

// streamInfo reads the stream's info as a producer sees it.
func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo()
}

// nextEvent returns the next string on ch, failing t after waitTimeout.
func nextEvent(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(waitTimeout):
		t.Fatalf("no %s", what)
		return ""
	}
}
