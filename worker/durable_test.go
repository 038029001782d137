package worker

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/notify-worker/notify-worker/feed"
)

// The live path of durable messages: each reaches the hub with its stream
// sequence and the previous one on its subject, in stream order across
// names and the broadcast subject; and before any durable message that
// follows a possible loss, the hub is told (FeedLost).

func TestDurableDelivery(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	w, reg := durableWorker(t, srv.ClientURL(), rec, nil)
	js := jetStream(t, srv.ClientURL())
	joinNow(t, w, "alice")
	s1 := publishDurable(t, js, "notify.user.alice", "one")
	if got, want := nextEvent(t, rec.durable, "durable message"), fmt.Sprintf("alice:%d:0", s1); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	a1 := publishDurable(t, js, "notify.all", "everyone")
	if got, want := nextEvent(t, rec.durable, "durable broadcast"), fmt.Sprintf("*:%d:0", a1); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	s2 := publishDurable(t, js, "notify.user.alice", "two")
	if got, want := nextEvent(t, rec.durable, "durable message"), fmt.Sprintf("alice:%d:%d", s2, s1); got != want {
		t.Fatalf("got %s, want %s (Prev is the previous on the subject)", got, want)
	}
	if len(rec.got) != 0 {
		t.Fatalf("a durable message was also handed over as core: %q", <-rec.got)
	}
	drainNow(t, w)
	if got := metricValue(t, reg, "notify_durable_received_total"); got != 3 {
		t.Errorf("durable_received_total = %v, want 3", got)
	}
	if got := metricValue(t, reg, "notify_nats_messages_total", "kind", "user"); got != 2 {
		t.Errorf("messages_total{user} = %v, want 2", got)
	}
}

// A producer's own Nats-Sequence header does not pass for the stream's.
func TestDurableSequenceIsTheServers(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	w, _ := durableWorker(t, srv.ClientURL(), rec, nil)
	js := jetStream(t, srv.ClientURL())
	joinNow(t, w, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	msg := jetstreamMsg("durable.notify.user.alice", "x")
	msg.Header.Set("Nats-Sequence", "999999")
	msg.Header.Set("Nats-Stream", "OTHER")
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := nextEvent(t, rec.durable, "durable message"), fmt.Sprintf("alice:%d:0", ack.Sequence); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// Durable messages to names and to everyone, interleaved, reach the hub in
// stream order, although core ones go through separate lanes.
func TestDurableOrderAcrossSubjects(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	w, _ := durableWorker(t, srv.ClientURL(), rec, nil)
	js := jetStream(t, srv.ClientURL())
	names := []string{"a", "b", "c", "d"}
	for _, n := range names {
		joinNow(t, w, n)
	}
	const n = 400
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var futures []jetstream.PubAckFuture
	for i := range n {
		subject := "durable.notify.all"
		if i%3 != 0 {
			subject = "durable.notify.user." + names[i%len(names)]
		}
		f, err := js.PublishAsync(subject, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishes not acknowledged")
	}
	var last uint64
	for range futures {
		got := nextEvent(t, rec.durable, "durable message")
		seq, err := strconv.ParseUint(strings.Split(got, ":")[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if seq <= last {
			t.Fatalf("seq %d after %d", seq, last)
		}
		last = seq
	}
}

// A disconnection makes the worker tell the hub before it hands over any
// durable message stored meanwhile or after.
func TestFeedLostOnReconnect(t *testing.T) {
	dir := t.TempDir()
	srv := runJetStream(t, -1, dir)
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	w, reg := durableWorker(t, srv.ClientURL(), rec, nil)
	joinNow(t, w, "alice")
	before := publishDurable(t, jetStream(t, srv.ClientURL()), "notify.user.alice", "before")
	if got := nextEvent(t, rec.events, "event"); got != fmt.Sprintf("msg alice:%d:0", before) {
		t.Fatalf("got %s", got)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	srv2 := runJetStream(t, port, dir) // the same store: the stream survives
	eventually(t, "reconnected", func() bool { return metricValue(t, reg, "notify_nats_reconnects_total") == 1 })
	if err := w.nc.Flush(); err != nil { // the server has the subscriptions back
		t.Fatal(err)
	}
	after := publishDurable(t, jetStream(t, srv2.ClientURL()), "notify.user.alice", "after")
	if got := nextEvent(t, rec.events, "event"); got != "lost "+feed.CauseDisconnect {
		t.Fatalf("first event after the outage: %s, want the loss", got)
	}
	if got := nextEvent(t, rec.events, "event"); got != fmt.Sprintf("msg alice:%d:%d", after, before) {
		t.Fatalf("got %s", got)
	}
	if got := metricValue(t, reg, "notify_feed_losses_total", "cause", feed.CauseDisconnect); got != 1 {
		t.Errorf("feed_losses_total{disconnect} = %v, want 1", got)
	}
}

// When the router's own check sees the reconnection first (the
// disconnect handler found the connection already back), the loss is
// still reported, once, before the next durable message.
func TestFeedLostCoveredOnce(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	w, reg := durableWorker(t, srv.ClientURL(), rec, nil)
	r := w.nc.Stats().Reconnects
	w.coverLoss(r + 1)
	w.coverLoss(r + 1)
	if got := nextEvent(t, rec.lost, "loss"); got != feed.CauseDisconnect {
		t.Fatalf("cause %s", got)
	}
	if got := metricValue(t, reg, "notify_feed_losses_total", "cause", feed.CauseDisconnect); got != 1 {
		t.Errorf("feed_losses_total{disconnect} = %v, want 1", got)
	}
}

// nats.go drops messages when the inbox is full; the first durable message
// handed over after a drop comes after FeedLost.
func TestFeedLostOnSlowConsumer(t *testing.T) {
	srv := startJetStream(t)
	rec := newGatedRecorder()
	w, reg := durableWorker(t, srv.ClientURL(), rec, func(c *Config) { c.LaneBuffer = 2 }) // an inbox of 6
	js := jetStream(t, srv.ClientURL())
	joinNow(t, w, "alice")
	const n = 200
	var published []uint64
	for i := range n {
		published = append(published, publishDurable(t, js, "notify.user.alice", strconv.Itoa(i)))
	}
	// Every copy reached the worker: queued, held by the router, or dropped.
	eventually(t, "all seen", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		us := w.subs["alice"]
		d, _ := us.sub.Delivered()
		dropped, _ := us.sub.Dropped()
		return int(d)+dropped == n
	})
	close(rec.gate)
	// Each delivered message's Prev is the previous published one; the
	// first whose Prev was not handed over must follow a loss.
	var handed uint64
	lost := false
	delivered := 0
	for delivered < n-w.droppedTotal() {
		ev := nextEvent(t, rec.events, "event")
		if ev == "lost "+feed.CauseSlowConsumer {
			lost = true
			continue
		}
		var seq, prev uint64
		if _, err := fmt.Sscanf(ev, "msg alice:%d:%d", &seq, &prev); err != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		if handed != 0 && prev != handed && !lost {
			t.Fatalf("seq %d (after %d) handed over after a gap, before FeedLost", seq, prev)
		}
		handed = seq
		delivered++
	}
	if !lost || w.droppedTotal() == 0 {
		t.Fatalf("no loss reported (%d dropped)", w.droppedTotal())
	}
	if got := metricValue(t, reg, "notify_feed_losses_total", "cause", feed.CauseSlowConsumer); got < 1 {
		t.Errorf("feed_losses_total{slow_consumer} = %v", got)
	}
	t.Logf("%d of %d delivered; the rest dropped and reported", delivered, len(published))
}

// A new stream leader may not have republished what the old one stored.
func TestFeedLostOnLeaderChange(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	durableWorker(t, srv.ClientURL(), rec, nil)
	nc := producer(t, srv.ClientURL())
	if err := nc.Publish(leaderElectedSubject("NOTIFY"), []byte(`{"type":"io.nats.jetstream.advisory.v1.stream_leader_elected"}`)); err != nil {
		t.Fatal(err)
	}
	if got := nextEvent(t, rec.lost, "loss"); got != feed.CauseLeaderChange {
		t.Fatalf("cause %s", got)
	}
}

// Sequences going backwards (a stream deleted and created again starts
// over) make the worker tell the hub before it hands over the first such
// message. A copy with the stream's headers stands for the new stream's
// first message, since a test that deletes and creates the stream while
// the worker may be creating it too runs into a nats-server race.
func TestFeedLostOnSequenceBackwards(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	w, _ := durableWorker(t, srv.ClientURL(), rec, nil)
	js := jetStream(t, srv.ClientURL())
	joinNow(t, w, "alice")
	for range 3 {
		publishDurable(t, js, "notify.user.alice", "old")
		nextEvent(t, rec.events, "event")
	}
	m := jetstreamMsg("notify.user.alice", "new")
	m.Header.Set("Nats-Stream", "NOTIFY")
	m.Header.Set("Nats-Sequence", "1")
	if err := producer(t, srv.ClientURL()).PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if got := nextEvent(t, rec.events, "event"); got != "lost "+feed.CauseStreamReset {
		t.Fatalf("first event: %s, want the loss", got)
	}
	if got := nextEvent(t, rec.events, "event"); got != "msg alice:1:0" {
		t.Fatalf("got %s", got)
	}
}

// A stream deleted under a ready worker is created again, the hub told,
// and resumes go on against the new stream.
func TestStreamCreatedAgain(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	w, _ := durableWorker(t, srv.ClientURL(), rec, nil)
	js := jetStream(t, srv.ClientURL())
	publishDurable(t, js, "notify.user.alice", "x")
	before := streamInfo(t, js, "NOTIFY").Created
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := js.DeleteStream(ctx, "NOTIFY"); err != nil {
		t.Fatal(err)
	}
	r := resumeNow(t, w, "alice", nil) // its barrier finds no stream; the worker creates it
	if !r.Recovered || r.Through == 0 {
		t.Fatalf("resume across the stream's deletion: %+v", r)
	}
	if got := nextEvent(t, rec.lost, "loss"); got != feed.CauseStreamReset {
		t.Errorf("loss %s, want %s", got, feed.CauseStreamReset)
	}
	if info := streamInfo(t, js, "NOTIFY"); info.Created.Equal(before) || info.State.LastSeq != r.Through {
		t.Errorf("stream %v (was %v), last seq %d, want the new barrier %d", info.Created, before, info.State.LastSeq, r.Through)
	}
}

func jetstreamMsg(subject, data string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	return m
}

// A republished copy is durable while the stream is still pending: a
// resume waiting for the stream replays it, and handing it over as core
// too would send it twice. Once the stream is found unusable, copies of a
// stream of that name are core.
func TestDurableWhileTheStreamIsPending(t *testing.T) {
	w := &Worker{cfg: Config{Stream: StreamConfig{Name: "NOTIFY"}}, stream: newStreamStatus(true)}
	m := jetstreamMsg("notify.user.alice", "x")
	m.Header.Set("Nats-Stream", "NOTIFY")
	m.Header.Set("Nats-Sequence", "42")
	m.Header.Set("Nats-Last-Sequence", "40")
	if fm, ok := w.durableMessage(m); !ok || fm.Seq != 42 || fm.Prev != 40 {
		t.Fatalf("pending: %+v, durable %v", fm, ok)
	}
	w.stream.set(StreamReady, streamLimits{})
	if _, ok := w.durableMessage(m); !ok {
		t.Fatal("ready: not durable")
	}
	w.stream.set(StreamUnavailable, streamLimits{})
	if fm, ok := w.durableMessage(m); ok || fm.Seq != 0 {
		t.Fatalf("unavailable: %+v, durable %v", fm, ok)
	}
	other := jetstreamMsg("notify.user.alice", "x")
	other.Header.Set("Nats-Stream", "OTHER")
	other.Header.Set("Nats-Sequence", "42")
	w.stream.set(StreamReady, streamLimits{})
	if _, ok := w.durableMessage(other); ok {
		t.Fatal("a copy of another stream is durable")
	}
}
