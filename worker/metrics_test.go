package worker

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"
)

// Every worker metric counts what its help says, read from the registry.
// (prometheus/testutil would need a module this repository does not
// require, so metricValue reads the registry's Gather.)

func TestMetricsMessagesAndReplies(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	w, reg := testWorkerConfig(t, srv.ClientURL(), rec, nil)
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "ida")
	if got := metricValue(t, reg, "notify_nats_subscriptions"); got != 1 {
		t.Errorf("subscriptions = %v after a join, want 1", got)
	}
	if got := metricValue(t, reg, "notify_nats_connected"); got != 1 {
		t.Errorf("connected = %v, want 1", got)
	}
	publishN(t, nc, "notify.user.ida", 3)
	publishN(t, nc, "notify.all", 2)
	for i := range 4 {
		if _, err := nc.Request("notify.user.ida", []byte(strconv.Itoa(i)), waitTimeout); err != nil {
			t.Fatal(err)
		}
	}
	drainNow(t, w) // everything received is handed over when it returns
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"notify_nats_messages_total", []string{"kind", "user"}, 3 + 4},
		{"notify_nats_messages_total", []string{"kind", "all"}, 2},
		{"notify_nats_replies_total", nil, 4},
		{"notify_nats_dropped_total", nil, 0},
		{"notify_nats_discarded_total", nil, 0},
		{"notify_nats_subscriptions", nil, 0},
		{"notify_nats_errors_total", nil, 0},
	} {
		if got := metricValue(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	closeNow(t, w)
	if got := metricValue(t, reg, "notify_nats_connected"); got != 0 {
		t.Errorf("connected = %v after Close, want 0", got)
	}
}

// An outage counts one disconnect and one reconnect; closing the worker
// loses nothing and counts no disconnect.
func TestMetricsDisconnects(t *testing.T) {
	srv := startServer(t)
	w, reg := testWorkerConfig(t, srv.ClientURL(), newRecorder(), nil)
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	eventually(t, "disconnected", func() bool { return !w.Ready() })
	opts := natstest.DefaultTestOptions
	opts.Port = port
	srv2 := natstest.RunServer(&opts)
	t.Cleanup(srv2.Shutdown)
	eventually(t, "reconnected", func() bool {
		return metricValue(t, reg, "notify_nats_reconnects_total") == 1
	})
	if got := metricValue(t, reg, "notify_nats_disconnects_total"); got != 1 {
		t.Errorf("disconnects = %v after one outage, want 1", got)
	}
	closeNow(t, w)
	if got := metricValue(t, reg, "notify_nats_disconnects_total"); got != 1 {
		t.Errorf("disconnects = %v after Close, want still 1", got)
	}
}

// Lane overflow is counted as it happens and stays counted after Close.
func TestMetricsDroppedSurvivesClose(t *testing.T) {
	srv := startServer(t)
	rec := newGatedRecorder()
	w, reg := testWorkerConfig(t, srv.ClientURL(), rec, func(c *Config) { c.LaneBuffer = 4 })
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "jo")
	const n = 100
	publishN(t, nc, "notify.user.jo", n)
	eventually(t, "all seen", func() bool { return w.nc.Stats().InMsgs == n })
	dropped := metricValue(t, reg, "notify_nats_dropped_total")
	if dropped == 0 {
		t.Fatal("a 4-message lane took 100 messages without a drop")
	}
	if got := metricValue(t, reg, "notify_nats_errors_total"); got < 1 {
		t.Errorf("errors = %v, want the slow consumer reported", got)
	}
	close(rec.gate)
	closeNow(t, w)
	handed := metricValue(t, reg, "notify_nats_messages_total", "kind", "user")
	if got := metricValue(t, reg, "notify_nats_dropped_total"); got != dropped || handed+got != n {
		t.Fatalf("after Close: dropped %v (was %v), handed %v, of %d", got, dropped, handed, n)
	}
}

// Messages the server had already sent when the last Leave unsubscribed
// are discarded by nats.go; Close finds and counts them.
func TestMetricsDroppedAfterLeave(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	w, reg := testWorkerConfig(t, srv.ClientURL(), rec, func(c *Config) { c.LaneBuffer = 8192 })
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "kit")
	const n = 5000
	publishN(t, nc, "notify.user.kit", n)
	w.Leave("kit") // most of the burst is still on its way
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	closeNow(t, w)
	handed := metricValue(t, reg, "notify_nats_messages_total", "kind", "user")
	dropped := metricValue(t, reg, "notify_nats_dropped_total")
	in := w.nc.Stats().InMsgs
	if handed+dropped != float64(in) {
		t.Fatalf("received %d, handed %v + dropped %v", in, handed, dropped)
	}
	t.Logf("of %d published, %d reached the worker: %v handed over, %v dropped after the Leave", n, in, handed, dropped)
}

// The durable side's metrics: the stream's state and last sequence, and
// a transient failure counted by the operation it hit: the router held by
// the hub, a barrier's reply waits in the inbox past the resume's time.
func TestMetricsDurable(t *testing.T) {
	srv := startJetStream(t)
	rec := newGatedRecorder()
	w, reg := durableWorker(t, srv.ClientURL(), rec, nil)
	if got := metricValue(t, reg, "notify_stream_ready"); got != 1 {
		t.Errorf("stream_ready = %v, want 1", got)
	}
	js := jetStream(t, srv.ClientURL())
	joinNow(t, w, "alice")
	seq := publishDurable(t, js, "notify.user.alice", "held") // the router waits on the gate with it
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := w.Resume(ctx, "alice", nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("resume behind a held router: %v, want ErrUnavailable", err)
	}
	if got := metricValue(t, reg, "notify_jetstream_errors_total", "op", opBarrier); got < 1 {
		t.Errorf("jetstream_errors_total{barrier} = %v, want the barrier that timed out", got)
	}
	close(rec.gate)
	r := resumeNow(t, w, "alice", nil)
	if got := metricValue(t, reg, "notify_stream_last_sequence"); got != float64(r.Through) || r.Through <= seq {
		t.Errorf("stream_last_sequence = %v, want the last barrier's %d", got, r.Through)
	}
	for _, op := range []string{opFetch, opInfo, opSnapshot, opSetup} {
		metricValue(t, reg, "notify_jetstream_errors_total", "op", op) // every series exists
	}
	for _, cause := range feedLossCauses {
		metricValue(t, reg, "notify_feed_losses_total", "cause", cause)
	}
}

func TestMetricsStreamOff(t *testing.T) {
	srv := startServer(t)
	_, reg := testWorkerConfig(t, srv.ClientURL(), newRecorder(), nil)
	for _, name := range []string{"notify_stream_ready", "notify_stream_last_sequence", "notify_durable_received_total"} {
		if got := metricValue(t, reg, name); got != 0 {
			t.Errorf("%s = %v with durable support off", name, got)
		}
	}
}

// With durable support the feed's connection also receives the replies to
// barriers and the leader advisories; they are not notifications, and
// Close's balance still finds nothing dropped.
func TestMetricsDurableBooksBalance(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	w, reg := durableWorker(t, srv.ClientURL(), rec, nil)
	js := jetStream(t, srv.ClientURL())
	nc := producer(t, srv.ClientURL())
	joinNow(t, w, "alice")
	for range 3 {
		resumeNow(t, w, "alice", nil)
		publishDurable(t, js, "notify.user.alice", "d")
	}
	publishN(t, nc, "notify.user.alice", 4)
	if err := nc.Publish(leaderElectedSubject("NOTIFY"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, rec.lost, "loss")
	drainNow(t, w)
	closeNow(t, w)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"notify_nats_messages_total", []string{"kind", "user"}, 7},
		{"notify_durable_received_total", nil, 3},
		{"notify_nats_dropped_total", nil, 0},
		{"notify_nats_discarded_total", nil, 0},
	} {
		if got := metricValue(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
