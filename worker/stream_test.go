package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/notify-worker/notify-worker/feed"
)

// The stream: created when missing, used with its own limits when it is
// the one the worker needs, refused (logged) when it is not; without
// JetStream or with durable support off, core delivery is unchanged and
// resumes are answered unavailable.

func TestStreamCreated(t *testing.T) {
	srv := startJetStream(t)
	lines := make(logLines, 1000)
	log := slog.New(slog.NewTextHandler(lines, nil))
	w, _ := testWorkerLog(t, srv.ClientURL(), newRecorder(), log, durable(func(c *Config) {
		c.Stream.MaxAge = time.Minute // shorter than the duplicate window: clamped
		c.Stream.MaxMsgsPerSubject = 50
		c.Stream.MaxBytes = 1 << 20
		c.Stream.Storage = StorageMemory
	}))
	line, _ := lines.waitLine(t, "", "durable notifications ready")
	if !strings.Contains(line, "created the stream") || !strings.Contains(line, "level=INFO") {
		t.Errorf("ready line: %s", line)
	}
	if !w.StreamReady() || w.StreamState() != StreamReady {
		t.Fatalf("state %v after the ready line", w.StreamState())
	}
	cfg := streamInfo(t, jetStream(t, srv.ClientURL()), "NOTIFY").Config
	check := func(what string, got, want any) {
		t.Helper()
		if g, w := jsonOf(got), jsonOf(want); g != w {
			t.Errorf("%s = %s, want %s", what, g, w)
		}
	}
	check("subjects", cfg.Subjects, []string{"durable.notify.>"})
	check("subject_transform", cfg.SubjectTransform, jetstream.SubjectTransformConfig{Source: "durable.notify.>", Destination: "notify.>"})
	// The server normalises ">" -> ">" to the transform's destination.
	check("republish", cfg.RePublish, jetstream.RePublish{Source: "notify.>", Destination: "notify.>"})
	check("allow_direct", cfg.AllowDirect, true)
	check("allow_rollup", cfg.AllowRollup, true)
	check("discard", cfg.Discard, jetstream.DiscardOld)
	check("retention", cfg.Retention, jetstream.LimitsPolicy)
	check("max_age", cfg.MaxAge, time.Minute)
	check("max_msgs_per_subject", cfg.MaxMsgsPerSubject, 50)
	check("max_bytes", cfg.MaxBytes, 1<<20)
	check("storage", cfg.Storage, jetstream.MemoryStorage)
	check("replicas", cfg.Replicas, 1)
	check("duplicate_window", cfg.Duplicates, time.Minute)
	// What the worker compares is what it would create.
	if diff := streamDiff(cfg, w.wantStream()); diff != "" {
		t.Errorf("the stream it created differs from the one it wants: %s", diff)
	}
}

func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// createStream creates the stream a test finds there before the worker.
func createStream(t *testing.T, js jetstream.JetStream, cfg jetstream.StreamConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// An existing stream with the right subjects is used as it is: its limits,
// not the worker's, decide what a resume can promise.
func TestStreamExistingUsedWithItsLimits(t *testing.T) {
	srv := startJetStream(t)
	js := jetStream(t, srv.ClientURL())
	createStream(t, js, jetstream.StreamConfig{
		Name: "NOTIFY", Subjects: []string{"durable.notify.>"},
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: "durable.notify.>", Destination: "notify.>"},
		RePublish:        &jetstream.RePublish{Source: ">", Destination: ">"},
		AllowDirect:      true, MaxMsgsPerSubject: 2, Storage: jetstream.MemoryStorage,
	})
	before := streamInfo(t, js, "NOTIFY")
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil) // MaxMsgsPerSubject 10000
	after := streamInfo(t, js, "NOTIFY")
	if !after.Created.Equal(before.Created) || after.Config.MaxMsgsPerSubject != 2 || after.Config.Storage != jetstream.MemoryStorage {
		t.Fatalf("the worker changed the stream: %+v", after.Config)
	}
	start := resumeNow(t, w, "alice", nil)
	publishDurable(t, js, "notify.user.alice", "1")
	r := resumeNow(t, w, "alice", &start.Through)
	if !r.Recovered || len(r.Messages) != 1 {
		t.Fatalf("one message below the stream's limit of 2: %+v", r)
	}
	publishDurable(t, js, "notify.user.alice", "2")
	if r := resumeNow(t, w, "alice", &start.Through); r.Recovered || r.Reason != feed.ReasonRetention || len(r.Messages) != 2 {
		t.Fatalf("at the stream's limit of 2: %+v", r)
	}
}

// A stream of that name that is not the worker's is left alone: the
// worker says what differs and answers resumes unavailable.
func TestStreamExistingDifferent(t *testing.T) {
	srv := startJetStream(t)
	js := jetStream(t, srv.ClientURL())
	createStream(t, js, jetstream.StreamConfig{
		Name: "NOTIFY", Subjects: []string{"durable.notify.>"}, Storage: jetstream.MemoryStorage,
	})
	lines := make(logLines, 1000)
	log := slog.New(slog.NewTextHandler(lines, nil))
	rec := newRecorder()
	w, _ := testWorkerLog(t, srv.ClientURL(), rec, log, durable(nil))
	line, _ := lines.waitLine(t, "", "durable notifications unavailable")
	for _, want := range []string{"level=WARN", "subject_transform is none, want durable.notify.> -> notify.>",
		"republish is none, want notify.> -> notify.>", "allow_direct is false, want true"} {
		if !strings.Contains(line, want) {
			t.Errorf("the unavailable line does not say %q: %s", want, line)
		}
	}
	if st := w.StreamState(); st != StreamUnavailable {
		t.Fatalf("state %v", st)
	}
	if r := resumeNow(t, w, "alice", ptr(3)); r.Recovered || r.Reason != feed.ReasonUnavailable {
		t.Fatalf("resume: %+v", r)
	}
	if info := streamInfo(t, js, "NOTIFY"); info.Config.RePublish != nil {
		t.Fatal("the worker changed a stream that is not its own")
	}
	coreStillDelivered(t, w, rec, srv.ClientURL())
}

// coreStillDelivered checks that a core message reaches rec.
func coreStillDelivered(t *testing.T, w *Worker, rec *recorder, url string) {
	t.Helper()
	joinNow(t, w, "alice")
	if err := producer(t, url).Publish("notify.user.alice", []byte("core")); err != nil {
		t.Fatal(err)
	}
	if got := rec.next(t); got != "alice:core" {
		t.Fatalf("core delivery: got %q", got)
	}
}

func TestStreamOffOrNoJetStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server func(t *testing.T) string
		change func(*Config)
		state  StreamState
	}{
		{"durable support off", func(t *testing.T) string { return startJetStream(t).ClientURL() },
			func(c *Config) { c.Stream.Name = "" }, StreamOff},
		{"a server without JetStream", func(t *testing.T) string { return startServer(t).ClientURL() },
			nil, StreamUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := tc.server(t)
			rec := newRecorder()
			w, _ := testWorkerConfig(t, url, rec, durable(tc.change))
			// Resume waits for the check, which finds out at once.
			if r := resumeNow(t, w, "alice", ptr(7)); r.Recovered || r.Reason != feed.ReasonUnavailable || len(r.Messages) != 0 {
				t.Fatalf("resume: %+v", r)
			}
			if st := w.StreamState(); st != tc.state {
				t.Fatalf("state %v, want %v", st, tc.state)
			}
			coreStillDelivered(t, w, rec, url)
			if _, err := w.Snapshot(context.Background(), []string{"alice"}); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("snapshot: %v, want ErrUnavailable", err)
			}
		})
	}
}

// The stream captures durable.* only: a core request to a name nobody
// holds still gets "no responders" at once, and one to a held name the
// worker's receipt, not a PubAck.
func TestRequestsWithTheStream(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	rec.sessions["alice"] = 2
	w, _ := durableWorker(t, srv.ClientURL(), rec, nil)
	nc := producer(t, srv.ClientURL())
	start := time.Now()
	if _, err := nc.Request("notify.user.nobody", []byte("q"), waitTimeout); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request to a name nobody holds: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("no responders after %s", d)
	}
	joinNow(t, w, "alice")
	m, err := nc.Request("notify.user.alice", []byte("q"), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != `{"delivered":2,"worker":"w1"}` {
		t.Fatalf("reply %q", m.Data)
	}
	if got := rec.next(t); got != "alice:q" {
		t.Fatalf("delivered %q", got)
	}
}

func TestStreamDiffNormalisesRePublish(t *testing.T) {
	base := func() jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Subjects:         []string{"durable.notify.>"},
			SubjectTransform: &jetstream.SubjectTransformConfig{Source: "durable.notify.>", Destination: "notify.>"},
			RePublish:        &jetstream.RePublish{Source: ">", Destination: ">"},
			AllowDirect:      true,
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*jetstream.StreamConfig)
		diff   string // "" for none
	}{
		{"as asked", func(*jetstream.StreamConfig) {}, ""},
		{"as stored", func(c *jetstream.StreamConfig) {
			c.RePublish = &jetstream.RePublish{Source: "notify.>", Destination: "notify.>"}
		}, ""},
		{"empty source", func(c *jetstream.StreamConfig) { c.RePublish.Source = "" }, ""},
		{"limits differ", func(c *jetstream.StreamConfig) { c.MaxAge, c.MaxBytes, c.Replicas = time.Second, 5, 3 }, ""},
		{"headers only", func(c *jetstream.StreamConfig) { c.RePublish.HeadersOnly = true }, "republish"},
		{"elsewhere", func(c *jetstream.StreamConfig) { c.RePublish.Destination = "other.>" }, "republish"},
		{"no transform", func(c *jetstream.StreamConfig) { c.SubjectTransform = nil }, "subject_transform"},
		{"more subjects", func(c *jetstream.StreamConfig) { c.Subjects = append(c.Subjects, "x.>") }, "subjects"},
		{"interest", func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy }, "retention"},
		{"no ack", func(c *jetstream.StreamConfig) { c.NoAck = true }, "no_ack"},
	} {
		have := base()
		tc.change(&have)
		diff := streamDiff(have, base())
		if tc.diff == "" && diff != "" || tc.diff != "" && !strings.HasPrefix(diff, tc.diff+" ") {
			t.Errorf("%s: diff %q, want %q", tc.name, diff, tc.diff)
		}
	}
}

// JetStream that answers, but not yet (a cluster electing its meta leader
// says "temporarily unavailable"): the check retries, each failure
// counted, and resumes wait, then return ErrUnavailable, not recovered
// false.
func TestStreamCheckRetries(t *testing.T) {
	srv := startServer(t) // no JetStream: the test answers its API
	nc := producer(t, srv.ClientURL())
	answered := make(chan struct{}, 100)
	if _, err := nc.Subscribe("$JS.API.INFO", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.account_info_response",` +
			`"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`))
		select {
		case answered <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	w, reg := testWorkerConfig(t, srv.ClientURL(), newRecorder(), durable(nil))
	<-answered
	<-answered // a second check: the first failure was retried
	if got := metricValue(t, reg, "notify_jetstream_errors_total", "op", opSetup); got < 1 {
		t.Errorf("jetstream_errors_total{setup} = %v", got)
	}
	if st := w.StreamState(); st != StreamPending {
		t.Fatalf("state %v, want pending", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if r, err := w.Resume(ctx, "alice", ptr(1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Resume = %+v, %v; want ErrUnavailable", r, err)
	}
}
