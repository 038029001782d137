package worker

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// These tests prove the worker's part of docs/protocol.md section 7: every
// message the NATS server has handed to the worker is delivered, and every
// request answered, before the sessions are closed.

func drainNow(t *testing.T, w *Worker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := w.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// whileHeld runs stop (Drain or Close) while rec's gate holds the lanes,
// opens the gate once shutdown has gone as far as it can without the lanes
// moving (the worker has unsubscribed, and either waits for its lanes or
// has closed its connection), and returns stop's error.
func whileHeld(t *testing.T, w *Worker, rec *recorder, stop func(context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- stop(ctx) }()
	waitUnsubscribed(t, w)
	eventually(t, "shutdown waiting for the lanes", func() bool {
		w.mu.Lock()
		waiting := len(w.markers) > 0
		w.mu.Unlock()
		return waiting || w.nc.IsClosed()
	})
	close(rec.gate)
	select {
	case err := <-done:
		return err
	case <-time.After(2 * waitTimeout):
		t.Fatal("stop did not return")
		return nil
	}
}

// Messages already queued in a dispatch lane when Drain begins are all
// delivered before it returns.
func TestDrainDeliversQueued(t *testing.T) {
	srv := startServer(t)
	rec := newGatedRecorder()
	w, reg := testWorkerConfig(t, srv.ClientURL(), rec, func(c *Config) { c.LaneBuffer = 1024 })
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "ann")
	const n = 600
	publishN(t, nc, "notify.user.ann", n)
	waitQueued(t, w, "ann", n)

	if err := whileHeld(t, w, rec, w.Drain); err != nil {
		t.Fatalf("drain: %v", err)
	}
	checkInOrder(t, rec, "ann", n)
	check := func(when string) {
		t.Helper()
		if got := metricValue(t, reg, "notify_nats_messages_total", "kind", "user"); got != n {
			t.Errorf("%s: messages_total{user} = %v, want %d", when, got, n)
		}
		if got := metricValue(t, reg, "notify_nats_dropped_total"); got != 0 {
			t.Errorf("%s: dropped_total = %v, want 0", when, got)
		}
		if got := metricValue(t, reg, "notify_nats_discarded_total"); got != 0 {
			t.Errorf("%s: discarded_total = %v, want 0", when, got)
		}
	}
	check("after drain")
	closeNow(t, w)
	check("after close")
	if in := w.nc.Stats().InMsgs; in != n {
		t.Errorf("the connection received %d messages, want %d", in, n)
	}
}

// A burst still on its way from the server when Drain begins is delivered
// whole and in order: the unsubscribe must not make nats.go discard what
// the server had already sent.
func TestDrainBurstInOrder(t *testing.T) {
	srv := startServer(t)
	rec := newGatedRecorder()
	w, reg := testWorkerConfig(t, srv.ClientURL(), rec, func(c *Config) { c.LaneBuffer = 8192 })
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "bo")
	const n = 5000
	publishN(t, nc, "notify.user.bo", n) // most still on their way to the worker
	if err := whileHeld(t, w, rec, w.Drain); err != nil {
		t.Fatalf("drain: %v", err)
	}
	checkInOrder(t, rec, "bo", n)
	if got := metricValue(t, reg, "notify_nats_messages_total", "kind", "user"); got != n {
		t.Errorf("messages_total{user} = %v, want %d", got, n)
	}
}

// Requests in flight when Drain begins get their replies before it
// returns.
func TestDrainAnswersRequests(t *testing.T) {
	srv := startServer(t)
	rec := newGatedRecorder()
	rec.sessions["cy"] = 3
	w, reg := testWorkerConfig(t, srv.ClientURL(), rec, nil)
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "cy")
	inbox := nats.NewInbox()
	replies, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := range n {
		if err := nc.PublishRequest("notify.user.cy", inbox, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitQueued(t, w, "cy", n)

	if err := whileHeld(t, w, rec, w.Drain); err != nil {
		t.Fatalf("drain: %v", err)
	}
	for i := range n {
		m, err := replies.NextMsg(waitTimeout)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		var reply struct {
			Delivered int    `json:"delivered"`
			Worker    string `json:"worker"`
		}
		if err := json.Unmarshal(m.Data, &reply); err != nil || reply.Delivered != 3 || reply.Worker != "w1" {
			t.Fatalf("reply %d: %q (%v)", i, m.Data, err)
		}
	}
	if got := metricValue(t, reg, "notify_nats_replies_total"); got != n {
		t.Errorf("replies_total = %v, want %d", got, n)
	}
}

// After Drain begins the worker takes no new interest, Leave is harmless,
// and Upstream works until Close.
func TestJoinAfterDrain(t *testing.T) {
	srv := startServer(t)
	w, reg := testWorkerConfig(t, srv.ClientURL(), newRecorder(), nil)
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "dee")
	drainNow(t, w)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, name := range []string{"eve", "dee"} {
		if err := w.Join(ctx, name); !errors.Is(err, ErrDraining) {
			t.Fatalf("Join(%s) after Drain = %v, want ErrDraining", name, err)
		}
	}
	w.Leave("dee")
	w.Leave("dee")
	if got := metricValue(t, reg, "notify_nats_subscriptions"); got != 0 {
		t.Errorf("subscriptions = %v after Drain, want 0", got)
	}
	// The server no longer sends this worker anything.
	if _, err := nc.Request("notify.user.dee", []byte("q"), waitTimeout); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("request after Drain: %v, want no responders", err)
	}
	if _, err := nc.Request("notify.all", []byte("q"), waitTimeout); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("broadcast request after Drain: %v, want no responders", err)
	}

	inbound, err := nc.SubscribeSync("notify.inbound.dee")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := w.Upstream("dee", []byte("still here")); err != nil {
		t.Fatalf("Upstream after Drain: %v", err)
	}
	if m, err := inbound.NextMsg(waitTimeout); err != nil || string(m.Data) != "still here" {
		t.Fatalf("upstream after Drain: %v", err)
	}
	drainNow(t, w) // a second Drain is harmless
	closeNow(t, w)
	if err := w.Upstream("dee", []byte("gone")); err == nil {
		t.Error("Upstream after Close succeeded")
	}
}

// Close without a Drain first delivers everything all the same.
func TestCloseWithoutDrainDelivers(t *testing.T) {
	srv := startServer(t)
	rec := newGatedRecorder()
	w, _ := testWorkerConfig(t, srv.ClientURL(), rec, func(c *Config) { c.LaneBuffer = 1024 })
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "fay")
	const n = 600
	publishN(t, nc, "notify.user.fay", n)
	waitQueued(t, w, "fay", n)

	if err := whileHeld(t, w, rec, w.Close); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkInOrder(t, rec, "fay", n)
}

// A Drain that runs out of time says how much is still queued; what Close
// then throws away is counted, so that every message the connection
// received is accounted for.
func TestDrainTimeoutIsCounted(t *testing.T) {
	srv := startServer(t)
	rec := newGatedRecorder()
	w, reg := testWorkerConfig(t, srv.ClientURL(), rec, nil)
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "gus")
	const n = 100
	publishN(t, nc, "notify.user.gus", n)
	waitQueued(t, w, "gus", n)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := w.Drain(ctx) // the gate holds the lane past the deadline
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not dispatched") {
		t.Fatalf("Drain past its deadline = %v", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close(ctx) }()
	// Open the gate once Close is stopping the lanes: each dispatch
	// goroutine then hands over the message it holds and stops.
	eventually(t, "Close stopping the lanes", func() bool {
		select {
		case <-w.quit:
			return true
		default:
			return false
		}
	})
	close(rec.gate)
	if err := <-closed; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close past its deadline = %v", err)
	}
	handed := metricValue(t, reg, "notify_nats_messages_total", "kind", "user")
	discarded := metricValue(t, reg, "notify_nats_discarded_total")
	dropped := metricValue(t, reg, "notify_nats_dropped_total")
	if discarded == 0 || handed+discarded != n || dropped != 0 || handed != float64(len(rec.got)) {
		t.Fatalf("handed %v + discarded %v != %d (dropped %v, delivered %d)", handed, discarded, n, dropped, len(rec.got))
	}
	t.Logf("%v handed to the hub, %v discarded and counted", handed, discarded)
}

func closeNow(t *testing.T, w *Worker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}
