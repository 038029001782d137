package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/presence"
	"github.com/notify-worker/notify-worker/subjects"
)

// Sessions makes the recorder a SessionCounter: the fixed counts its
// tests set.
func (r *recorder) Sessions(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions[name]
}

func testScheme(t *testing.T) subjects.Scheme {
	t.Helper()
	s, err := subjects.New(subjects.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func withID(id string) func(*Config) { return func(c *Config) { c.ID = id } }

func deadline(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// rawRequest sends a request with headers and returns the first reply.
func rawRequest(t *testing.T, nc *nats.Conn, subject string, hdr nats.Header, body string) map[string]any {
	t.Helper()
	m := &nats.Msg{Subject: subject, Header: hdr, Data: []byte(body)}
	reply, err := nc.RequestMsg(m, waitTimeout)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	var got map[string]any
	if err := json.Unmarshal(reply.Data, &got); err != nil {
		t.Fatalf("reply %s: %v", reply.Data, err)
	}
	return got
}

// Names on two workers and on none: each worker holding the name answers
// with its count, nothing is delivered, and a name no worker holds is
// offline at once (no responders).
func TestPresenceName(t *testing.T) {
	srv := startServer(t)
	r1, r2 := newRecorder(), newRecorder()
	r1.sessions["alice"], r1.sessions["bob"] = 2, 1
	r2.sessions["alice"] = 1
	w1, reg1 := testWorkerConfig(t, srv.ClientURL(), r1, withID("w1"))
	w2, _ := testWorkerConfig(t, srv.ClientURL(), r2, withID("w2"))
	joinNow(t, w1, "alice")
	joinNow(t, w1, "bob")
	joinNow(t, w2, "alice")
	nc := producer(t, srv.ClientURL())
	scheme := testScheme(t)

	res, err := presence.Name(deadline(t, 300*time.Millisecond), nc, scheme, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Online || res.Sessions != 3 || res.Workers["w1"] != 2 || res.Workers["w2"] != 1 || len(res.Workers) != 2 {
		t.Fatalf("alice: %+v", res)
	}
	res, err = presence.Name(deadline(t, 300*time.Millisecond), nc, scheme, "bob")
	if err != nil || !res.Online || res.Sessions != 1 || len(res.Workers) != 1 {
		t.Fatalf("bob: %+v, %v", res, err)
	}
	start := time.Now()
	res, err = presence.Name(deadline(t, waitTimeout), nc, scheme, "carol")
	if err != nil || res.Online || len(res.Workers) != 0 {
		t.Fatalf("carol: %+v, %v", res, err)
	}
	if took := time.Since(start); took > waitTimeout/2 {
		t.Errorf("no responders took %s: it should end the wait", took)
	}
	if _, err := presence.Name(context.Background(), nc, scheme, "bad.name"); err == nil {
		t.Error("an invalid name was sent")
	}

	// Nothing reached a session, and the feed counted no message.
	select {
	case got := <-r1.got:
		t.Fatalf("delivered %q", got)
	case got := <-r2.got:
		t.Fatalf("delivered %q", got)
	default:
	}
	if n := metricValue(t, reg1, "notify_nats_messages_total", "kind", "user"); n != 0 {
		t.Errorf("notify_nats_messages_total{user} = %v, want 0", n)
	}
	if n := metricValue(t, reg1, "notify_presence_requests_total", "kind", "name", "result", "answered"); n != 2 {
		t.Errorf("answered = %v, want 2", n)
	}
	// An ordinary request still delivers.
	if _, err := nc.Request(scheme.User("bob"), []byte("hi"), waitTimeout); err != nil {
		t.Fatal(err)
	}
	if got := r1.next(t); got != "bob:hi" {
		t.Fatalf("got %q", got)
	}
}

// A presence header with another value, or on the broadcast subject, is
// refused with an error reply; without a reply subject it is dropped and
// counted. None is delivered.
func TestPresenceBadRequests(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	rec.sessions["alice"] = 1
	w, reg := testWorkerConfig(t, srv.ClientURL(), rec, nil)
	joinNow(t, w, "alice")
	nc := producer(t, srv.ClientURL())
	scheme := testScheme(t)

	for _, tc := range []struct {
		subject string
		hdr     nats.Header
		want    string
	}{
		{scheme.User("alice"), nats.Header{"Notify-Presence": {"2"}}, errPresenceValue.Error()},
		{scheme.User("alice"), nats.Header{"Notify-Presence": {""}}, errPresenceValue.Error()},
		{scheme.User("alice"), nats.Header{"Notify-Presence": {"1", "1"}}, errPresenceValue.Error()},
		{scheme.All(), nats.Header{"Notify-Presence": {"1"}}, errPresenceAll.Error()},
	} {
		got := rawRequest(t, nc, tc.subject, tc.hdr, "")
		if got["error"] != tc.want || got["worker"] != "w1" {
			t.Errorf("%s %v: reply %v, want error %q", tc.subject, tc.hdr, got, tc.want)
		}
	}
	// Any spelling of the key; the answer is a count.
	if got := rawRequest(t, nc, scheme.User("alice"), nats.Header{"notify-presence": {"1"}}, ""); got["sessions"] != 1.0 {
		t.Errorf("lower-case header: %v", got)
	}
	// No reply subject: dropped.
	if err := nc.PublishMsg(&nats.Msg{Subject: scheme.User("alice"), Header: nats.Header{"Notify-Presence": {"1"}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no_reply counted", func() bool {
		return metricValue(t, reg, "notify_presence_requests_total", "kind", "name", "result", "no_reply") == 1
	})
	if n := metricValue(t, reg, "notify_presence_requests_total", "kind", "name", "result", "refused"); n != 4 {
		t.Errorf("refused = %v, want 4", n)
	}
	select {
	case got := <-rec.got:
		t.Fatalf("delivered %q", got)
	default:
	}
}

// Bulk presence: every worker answers with the names it holds (an empty
// object for none), a roll call learns the fleet, and Bulk stops once the
// expected workers answered.
func TestPresenceBulk(t *testing.T) {
	srv := startServer(t)
	r1, r2 := newRecorder(), newRecorder()
	r1.sessions["alice"], r1.sessions["bob"] = 2, 1
	r2.sessions["alice"] = 1
	for i, r := range []*recorder{r1, r2, newRecorder()} {
		w, _ := testWorkerConfig(t, srv.ClientURL(), r, withID(fmt.Sprint("w", i+1)))
		// The bulk subscription is registered once the server answers.
		if err := w.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	nc := producer(t, srv.ClientURL())
	scheme := testScheme(t)

	fleet, err := presence.RollCall(deadline(t, 300*time.Millisecond), nc, scheme)
	if err != nil || strings.Join(fleet, ",") != "w1,w2,w3" {
		t.Fatalf("roll call: %v, %v", fleet, err)
	}
	start := time.Now()
	res, err := presence.Bulk(deadline(t, waitTimeout), nc, scheme, []string{"alice", "bob", "carol", "alice"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > waitTimeout/2 {
		t.Errorf("took %s: Bulk should end when the 3 workers answered", took)
	}
	if res.Partial || res.Online["alice"] != 3 || res.Online["bob"] != 1 || len(res.Online) != 2 ||
		len(res.Workers["w3"]) != 0 || res.Workers["w1"]["alice"] != 2 {
		t.Fatalf("bulk: %+v", res)
	}
	// Expecting a fourth worker: partial, at the deadline.
	res, err = presence.Bulk(deadline(t, 200*time.Millisecond), nc, scheme, []string{"alice"}, 4)
	if err != nil || !res.Partial || len(res.Answered) != 3 {
		t.Fatalf("bulk expecting 4: %+v, %v", res, err)
	}
	// The client side refuses bad names before sending.
	too := make([]string, subjects.MaxPresenceNames+1)
	for i := range too {
		too[i] = fmt.Sprint("n", i)
	}
	if _, err := presence.Bulk(context.Background(), nc, scheme, too, 3); err != presence.ErrTooManyNames {
		t.Errorf("1001 names: %v", err)
	}
	if _, err := presence.Bulk(context.Background(), nc, scheme, []string{"ok", "a b"}, 3); err == nil {
		t.Error("an invalid name was sent")
	}
}

// Every bad bulk body gets an error reply from every worker and is
// counted; none panics.
func TestPresenceBulkBadInput(t *testing.T) {
	srv := startServer(t)
	rec := newRecorder()
	rec.sessions["alice"] = 1
	w, reg := testWorkerConfig(t, srv.ClientURL(), rec, nil)
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := producer(t, srv.ClientURL())
	scheme := testScheme(t)

	too := make([]string, subjects.MaxPresenceNames+1)
	for i := range too {
		too[i] = fmt.Sprint("n", i)
	}
	tooMany, _ := json.Marshal(too)
	long := strings.Repeat("x", subjects.MaxNameLen+1)
	for _, tc := range []struct{ body, want string }{
		{``, errBulkNotArray.Error()},
		{`null`, errBulkNotArray.Error()},
		{`{"names":["alice"]}`, errBulkNotArray.Error()},
		{`"alice"`, errBulkNotArray.Error()},
		{`[1,2]`, errBulkNotArray.Error()},
		{`["alice",null]`, "invalid name at index 1: name is empty"},
		{`["alice"`, errBulkNotArray.Error()},
		{`["alice"] x`, errBulkNotArray.Error()},
		{string(tooMany), errBulkTooMany.Error()},
		{`["alice","bad.name"]`, "invalid name at index 1: " + subjects.ErrNameChars.Error()},
		{`["` + long + `"]`, "invalid name at index 0: " + subjects.ErrNameTooLong.Error()},
		{`[""]`, "invalid name at index 0: " + subjects.ErrNameEmpty.Error()},
		{"\xff", errBulkNotArray.Error()},
	} {
		got := rawRequest(t, nc, scheme.Presence(), nil, tc.body)
		if got["error"] != tc.want || got["worker"] != "w1" {
			t.Errorf("body %.40q: reply %v, want error %q", tc.body, got, tc.want)
		}
	}
	if n := metricValue(t, reg, "notify_presence_requests_total", "kind", "bulk", "result", "refused"); n != 13 {
		t.Errorf("refused = %v, want 13", n)
	}
	// A good one still works, and [] is a roll call.
	if got := rawRequest(t, nc, scheme.Presence(), nil, ` ["alice","bob"] `); fmt.Sprint(got["online"]) != "map[alice:1]" {
		t.Errorf("reply %v", got)
	}
	if got := rawRequest(t, nc, scheme.Presence(), nil, `[]`); fmt.Sprint(got["online"]) != "map[]" {
		t.Errorf("roll call reply %v", got)
	}
}

// A presence request to a stored name's subject is not stored: the stream
// captures only durable.<prefix>.>. A durable copy that carries the header
// (a producer set it on a durable publish) is a notification like any.
func TestPresenceNotStored(t *testing.T) {
	srv := startJetStream(t)
	rec := newRecorder()
	rec.sessions["alice"] = 1
	w, _ := durableWorker(t, srv.ClientURL(), rec, nil)
	joinNow(t, w, "alice")
	nc := producer(t, srv.ClientURL())
	js := jetStream(t, srv.ClientURL())
	scheme := testScheme(t)

	if got := rawRequest(t, nc, scheme.User("alice"), nats.Header{"Notify-Presence": {"1"}}, ""); got["sessions"] != 1.0 {
		t.Fatalf("reply %v", got)
	}
	ctx := deadline(t, waitTimeout)
	st, err := js.Stream(ctx, testStream().Name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The worker's own barrier messages may be there; no user message is.
	if n := info.State.NumSubjects; n > 1 {
		t.Errorf("stream holds %d subjects after a presence request", n)
	}
	if _, err := st.GetLastMsgForSubject(ctx, scheme.User("alice")); err == nil {
		t.Error("the presence request was stored")
	}

	m := nats.NewMsg("durable." + scheme.User("alice"))
	m.Header.Set("Notify-Presence", "1")
	m.Data = []byte("stored")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got := <-rec.durable; !strings.HasPrefix(got, "alice:") {
		t.Fatalf("durable %q", got)
	}
}

// Online, offline and ack events are published to their subjects with
// the documented payloads, in order; offline carries code and reason.
func TestEventsPublished(t *testing.T) {
	srv := startServer(t)
	w, reg := testWorkerConfig(t, srv.ClientURL(), newRecorder(), func(c *Config) { c.Events = true })
	nc := producer(t, srv.ClientURL())
	sub, err := nc.SubscribeSync("notify.event.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	w.Online("alice", 1)
	w.Ack("alice", 42)
	w.Offline("alice", 4000, `bye "now"`)
	want := []struct{ subject, keys string }{
		{"notify.event.online.alice", "at name sessions worker"},
		{"notify.event.ack.alice", "at name seq worker"},
		{"notify.event.offline.alice", "at code name reason sessions worker"},
	}
	for _, wt := range want {
		m, err := sub.NextMsg(waitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != wt.subject {
			t.Fatalf("subject %s, want %s", m.Subject, wt.subject)
		}
		var got map[string]any
		if err := json.Unmarshal(m.Data, &got); err != nil {
			t.Fatalf("%s: %v", m.Data, err)
		}
		var keys []string
		for k := range got {
			keys = append(keys, k)
		}
		if strings.Join(sortStrings(keys), " ") != wt.keys {
			t.Errorf("%s keys %v, want %s", m.Data, keys, wt.keys)
		}
		at, err := time.Parse(time.RFC3339, got["at"].(string))
		if err != nil || time.Since(at) > time.Minute || got["worker"] != "w1" || got["name"] != "alice" {
			t.Errorf("%s: at %v", m.Data, err)
		}
		switch wt.subject {
		case "notify.event.online.alice":
			if got["sessions"] != 1.0 {
				t.Errorf("%s", m.Data)
			}
		case "notify.event.ack.alice":
			if got["seq"] != 42.0 {
				t.Errorf("%s", m.Data)
			}
		default:
			if got["sessions"] != 0.0 || got["code"] != 4000.0 || got["reason"] != `bye "now"` {
				t.Errorf("%s", m.Data)
			}
		}
	}
	if n := metricValue(t, reg, "notify_events_total", "kind", "ack"); n != 1 {
		t.Errorf("acks published = %v", n)
	}
}

// With events off, online and offline are not published; acks are.
func TestEventsOff(t *testing.T) {
	srv := startServer(t)
	w, _ := testWorkerConfig(t, srv.ClientURL(), newRecorder(), nil)
	nc := producer(t, srv.ClientURL())
	sub, err := nc.SubscribeSync("notify.event.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	w.Online("alice", 1)
	w.Offline("alice", 1000, "")
	w.Ack("alice", 1)
	m, err := sub.NextMsg(waitTimeout)
	if err != nil || m.Subject != "notify.event.ack.alice" {
		t.Fatalf("first event %v, %v: want the ack alone", m, err)
	}
}

// A full buffer drops the event without blocking and counts it; events
// after Close began are counted as closed.
func TestEventsOverflow(t *testing.T) {
	reg := prometheus.NewRegistry()
	q, err := newEventQueue(2, reg)
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{cfg: Config{Events: true}, evq: q, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for range 5 {
		w.Online("alice", 1) // nothing drains the queue: no goroutine runs
	}
	if n := metricValue(t, reg, "notify_events_dropped_total", "reason", "queue_full"); n != 3 {
		t.Errorf("queue_full = %v, want 3", n)
	}
	q.stopped.Store(true)
	w.Ack("alice", 1)
	if n := metricValue(t, reg, "notify_events_dropped_total", "reason", "closed"); n != 1 {
		t.Errorf("closed = %v, want 1", n)
	}
}

func sortStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// parseBulk never panics; what it accepts is at most MaxPresenceNames
// valid, distinct names.
func FuzzParseBulk(f *testing.F) {
	for _, s := range []string{`[]`, `["alice","bob"]`, `["a","a"]`, `null`, `{}`, `[1]`, `["a.b"]`, `["alice"`, ` ["x"] `, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		names, err := parseBulk(body)
		if err != nil {
			return
		}
		if len(names) > subjects.MaxPresenceNames {
			t.Fatalf("%d names", len(names))
		}
		seen := map[string]bool{}
		for _, n := range names {
			if subjects.ValidName(n) != nil || seen[n] {
				t.Fatalf("accepted %q", n)
			}
			seen[n] = true
		}
	})
}

// One bulk request of 1,000 names, decoded and answered from the counter
// (the reply is published to a real server).
func BenchmarkAnswerBulk(b *testing.B) {
	srv := natstest.RunRandClientPortServer()
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	rec := newRecorder()
	names := make([]string, subjects.MaxPresenceNames)
	for i := range names {
		names[i] = "u" + strconv.Itoa(i)
		if i%3 == 0 {
			rec.sessions[names[i]] = 1
		}
	}
	body, _ := json.Marshal(names)
	scheme, _ := subjects.New(subjects.DefaultPrefix)
	reg := prometheus.NewRegistry()
	w, err := New(Config{
		Conn:   ConnConfig{URLs: []string{srv.ClientURL()}, ConnectTimeout: time.Second, MaxReconnects: -1, PingInterval: time.Second, MaxPingsOut: 2},
		Scheme: scheme, ID: "w1", Lanes: 1, LaneBuffer: 16,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close(context.Background())
	if err := w.Start(rec); err != nil {
		b.Fatal(err)
	}
	m := &nats.Msg{Subject: scheme.Presence(), Reply: "bench.reply", Data: body}
	b.ReportAllocs()
	for b.Loop() {
		w.answerBulk(m)
	}
}
