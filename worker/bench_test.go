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
// producer connection. Everything is stopped in b.Cleanup.
func benchWorker(b *testing.B, names int) (*countingDeliverer, *nats.Conn, subjects.Scheme) {
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
	w, err := New(Config{
		Conn: ConnConfig{
			URLs: []string{srv.ClientURL()}, Name: "bench",
			ConnectTimeout: 2 * time.Second, ReconnectWait: time.Second,
			PingInterval: time.Minute, MaxPingsOut: 2,
		},
		Scheme: scheme, ID: "bench", Lanes: 4, LaneBuffer: 8192,
	}, log, prometheus.NewRegistry())
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
	pub, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pub.Close)
	return d, pub, scheme
}

// BenchmarkWorkerUser is one targeted message from a producer through the
// NATS server, the worker's subscription and its dispatch lane to the hub.
// The server runs in the benchmark process, so ns/op includes its work.
func BenchmarkWorkerUser(b *testing.B) {
	const names = 1000
	d, pub, scheme := benchWorker(b, names)
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
	d, pub, scheme := benchWorker(b, 0)
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
