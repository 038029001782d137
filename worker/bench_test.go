package worker

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/feed"
	"github.com/notify-worker/notify-worker/subjects"
)

// countingDeliverer counts deliveries and wakes a waiter once a target is
// reached. The dispatch lanes call it.
type countingDeliverer struct {
	mu   sync.Mutex
	n    int64
	want int64
	done chan struct{}
}

func (c *countingDeliverer) DeliverUser(string, feed.Message) int { c.add(); return 1 }
func (c *countingDeliverer) DeliverAll(feed.Message) int          { c.add(); return 1 }
func (c *countingDeliverer) FeedLost(string)                      {}

func (c *countingDeliverer) add() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if c.done != nil && c.n >= c.want {
		close(c.done)
		c.done = nil
	}
}

// wait returns once want messages have been delivered, failing b after 10s.
func (c *countingDeliverer) wait(b *testing.B, want int64) {
	c.mu.Lock()
	if c.n >= want {
		c.mu.Unlock()
		return
	}
	done := make(chan struct{})
	c.want, c.done = want, done
	c.mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.Fatalf("fewer than %d deliveries in 10s", want)
	}
}

// benchWorker starts an embedded NATS server on a random loopback port, a
// worker on it that has joined names u0 ... u<names-1>, and a separate
// producer connection; with stream set, durable support is on and ready.
// Everything is stopped in b.Cleanup.
func benchWorker(b *testing.B, names int, stream bool) (*Worker, *countingDeliverer, *nats.Conn, subjects.Scheme) {
	b.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", JetStreamDir: b.TempDir()}, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	scheme, err := subjects.New(subjects.DefaultPrefix)
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{
		Conn: ConnConfig{
			URLs: []string{srv.ClientURL()}, Name: "bench",
			ConnectTimeout: 2 * time.Second, ReconnectWait: time.Second,
			PingInterval: time.Minute, MaxPingsOut: 2,
		},
		Scheme: scheme, ID: "bench", Lanes: 4, LaneBuffer: 8192,
	}
	if stream {
		cfg.Stream = StreamConfig{Name: "NOTIFY", MaxAge: time.Hour, MaxMsgsPerSubject: 100000, MaxBytes: 1 << 30,
			Storage: StorageFile, Replicas: 1, DuplicateWindow: 2 * time.Minute}
		cfg.ReplayMax, cfg.ReplayConcurrency = 1000, 64
	}
	w, err := New(cfg, log, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Close(ctx)
	})
	d := &countingDeliverer{}
	if err := w.Start(d); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range names {
		if err := w.Join(ctx, "u"+strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
	}
	for stream && !w.StreamReady() {
		if ctx.Err() != nil {
			b.Fatal("stream not ready")
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	pub, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pub.Close)
	return w, d, pub, scheme
}

// BenchmarkWorkerUser is one targeted message from a producer through the
// NATS server, the worker's subscription and its dispatch lane to the hub.
// The server runs in the benchmark process, so ns/op includes its work.
func BenchmarkWorkerUser(b *testing.B) {
	const names = 1000
	_, d, pub, scheme := benchWorker(b, names, false)
	subs := make([]string, names)
	for i := range subs {
		subs[i] = scheme.User("u" + strconv.Itoa(i))
	}
	payload := []byte(`{"id":1,"body":"hello"}`)
	var sent int64
	b.ReportAllocs()
	for b.Loop() {
		if err := pub.Publish(subs[sent%names], payload); err != nil {
			b.Fatal(err)
		}
		sent++
		// Stay well inside the lane buffers so nothing is dropped.
		if sent%1024 == 0 {
			d.wait(b, sent)
		}
	}
	d.wait(b, sent)
}

// BenchmarkWorkerAll is one broadcast message through NATS to the worker's
// broadcast lane.
func BenchmarkWorkerAll(b *testing.B) {
	_, d, pub, scheme := benchWorker(b, 0, false)
	payload := []byte(`{"id":1,"body":"to everyone"}`)
	var sent int64
	b.ReportAllocs()
	for b.Loop() {
		if err := pub.Publish(scheme.All(), payload); err != nil {
			b.Fatal(err)
		}
		sent++
		if sent%1024 == 0 {
			d.wait(b, sent)
		}
	}
	d.wait(b, sent)
}

// BenchmarkWorkerDurableUser is BenchmarkWorkerUser for a durable message:
// a JetStream publish stored by the stream, whose republished copy goes
// through the worker's router (with the stream's sequence) to the hub.
// The producer publishes asynchronously, so ns/op is throughput, not the
// latency of one message; compare with BenchmarkWorkerUser, and see
// BenchmarkWorkerDurableLatency for one message at a time.
func BenchmarkWorkerDurableUser(b *testing.B) {
	const names = 1000
	_, d, pub, scheme := benchWorker(b, names, true)
	js, err := jetstream.New(pub)
	if err != nil {
		b.Fatal(err)
	}
	subs := make([]string, names)
	for i := range subs {
		subs[i] = scheme.Durable(scheme.User("u" + strconv.Itoa(i)))
	}
	payload := []byte(`{"id":1,"body":"hello"}`)
	var sent int64
	b.ReportAllocs()
	for b.Loop() {
		if _, err := js.PublishAsync(subs[sent%names], payload); err != nil {
			b.Fatal(err)
		}
		sent++
		if sent%1024 == 0 {
			d.wait(b, sent)
		}
	}
	d.wait(b, sent)
}

// BenchmarkWorkerLatency and BenchmarkWorkerDurableLatency are one message
// at a time from the producer's publish to the hub, core and durable
// (where the producer waits for nothing but the delivery, not the PubAck).
func BenchmarkWorkerLatency(b *testing.B) { benchLatency(b, false) }

func BenchmarkWorkerDurableLatency(b *testing.B) { benchLatency(b, true) }

func benchLatency(b *testing.B, stream bool) {
	_, d, pub, scheme := benchWorker(b, 1, stream)
	subject := scheme.User("u0")
	if stream {
		subject = scheme.Durable(subject)
	}
	payload := []byte(`{"id":1,"body":"hello"}`)
	var sent int64
	for b.Loop() {
		if err := pub.Publish(subject, payload); err != nil {
			b.Fatal(err)
		}
		sent++
		d.wait(b, sent)
	}
}

// BenchmarkResume is a resume that missed 1,000 messages (500 of its name
// and 500 broadcasts, among 500 of another name): barrier, Direct Get
// pages, stream info.
func BenchmarkResume(b *testing.B) {
	w, _, pub, _ := benchWorker(b, 0, true)
	js, err := jetstream.New(pub)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start, err := w.Resume(ctx, "alice", nil)
	if err != nil {
		b.Fatal(err)
	}
	publishAsync(b, js, 1500, func(i int) string {
		return [...]string{"durable.notify.user.alice", "durable.notify.all", "durable.notify.user.bob"}[i%3]
	}, nil)
	payload := 0
	b.ReportAllocs()
	for b.Loop() {
		r, err := w.Resume(ctx, "alice", &start.Through)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Messages) != 1000 || !r.Recovered {
			b.Fatalf("%d messages, recovered %v", len(r.Messages), r.Recovered)
		}
		payload = len(r.Messages)
	}
	b.ReportMetric(float64(payload), "msgs/op")
}

// BenchmarkResumeFew is the common resume: a client away for a moment,
// that missed 2 of the last 1,000 messages stored (the rest for other
// names): its fixed cost, barrier, four Direct Gets without batch (alice's
// two and the end of each subject) and a stream info. Every resume stores
// a barrier after the fixed cursor, so the stream grows as it does under a
// herd of resumes from one cursor.
func BenchmarkResumeFew(b *testing.B) {
	w, _, pub, _ := benchWorker(b, 0, true)
	js, err := jetstream.New(pub)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start, err := w.Resume(ctx, "alice", nil)
	if err != nil {
		b.Fatal(err)
	}
	publishAsync(b, js, 1000, func(i int) string {
		if i%500 == 0 {
			return "durable.notify.user.alice"
		}
		return "durable.notify.user.u" + strconv.Itoa(i)
	}, nil)
	b.ReportAllocs()
	for b.Loop() {
		r, err := w.Resume(ctx, "alice", &start.Through)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Messages) != 2 || !r.Recovered {
			b.Fatalf("%d messages, recovered %v", len(r.Messages), r.Recovered)
		}
	}
}

// BenchmarkUserName is the subject parse every targeted message goes
// through on a dispatch lane.
func BenchmarkUserName(b *testing.B) {
	scheme, err := subjects.New(subjects.DefaultPrefix)
	if err != nil {
		b.Fatal(err)
	}
	subject := scheme.User("alice_01-Example")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := scheme.UserName(subject); !ok {
			b.Fatal("not a user subject")
		}
	}
}
