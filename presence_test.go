package main

// Section 9 of docs/protocol.md: presence, events and acknowledgements.
// Presence is answered by the workers holding a name (or, in bulk, by every
// worker) and delivers nothing; online and offline events mark a name's
// first and last session on a worker; a v2 client's ack is published as an
// event, not upstream, under the upstream rate limit. The bulk answer with
// a frozen worker is fleet/presence_test.go.

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/notify-worker/notify-worker/presence"
	"github.com/notify-worker/notify-worker/subjects"
)

// The presence example in README.md builds as pasted.
func TestREADMEPresenceCompiles(t *testing.T) {
	buildREADMEProgram(t, readmeBlock(t, "## Presence, events and acks", "go"))
}

func within(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func defaultScheme(t *testing.T) subjects.Scheme {
	t.Helper()
	s, err := subjects.New(subjects.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// eventMsg is an online, offline or ack event.
type eventMsg struct {
	subject  string
	Name     string  `json:"name"`
	Worker   string  `json:"worker"`
	Sessions *int    `json:"sessions"`
	At       string  `json:"at"`
	Code     int     `json:"code"`
	Reason   string  `json:"reason"`
	Seq      *uint64 `json:"seq"`
}

func nextEvent(t *testing.T, sub *nats.Subscription) eventMsg {
	t.Helper()
	m := next(t, sub)
	var e eventMsg
	if err := json.Unmarshal(m.Data, &e); err != nil {
		t.Fatalf("event %s: %v", m.Data, err)
	}
	if _, err := time.Parse(time.RFC3339, e.At); err != nil {
		t.Fatalf("event %s: at: %v", m.Data, err)
	}
	e.subject = m.Subject
	return e
}

// Presence with names on several workers and on none: the holders answer
// with their counts, no session receives anything, and a name nobody
// holds is offline at once. Bulk presence and the roll call reach every
// worker.
func TestPresenceAcrossWorkers(t *testing.T) {
	srv := startNATS(t, nil)
	var workers []*testWorker
	for _, id := range []string{"worker-1", "worker-2", "worker-3"} {
		cfg := testConfig(t)
		cfg.NATSURLs = []string{srv.ClientURL()}
		cfg.WorkerID = id
		cfg.Stream = "off"
		workers = append(workers, startWorker(t, cfg))
	}
	// Each worker's Join has flushed its connection after its bulk
	// subscription, so every worker answers from here on.
	g1 := client(t, workers[0], "gus")
	client(t, workers[0], "gus")
	g2 := client(t, workers[1], "gus")
	client(t, workers[2], "hal")
	nc := connectNATS(t, srv.ClientURL())
	scheme := defaultScheme(t)

	res, err := presence.Name(within(t, 500*time.Millisecond), nc, scheme, "gus")
	if err != nil || !res.Online || res.Sessions != 3 || res.Workers["worker-1"] != 2 || res.Workers["worker-2"] != 1 || len(res.Workers) != 2 {
		t.Fatalf("gus: %+v, %v", res, err)
	}
	start := time.Now()
	if res, err := presence.Name(within(t, waitTimeout), nc, scheme, "nobody"); err != nil || res.Online {
		t.Fatalf("nobody: %+v, %v", res, err)
	}
	if took := time.Since(start); took > waitTimeout/2 {
		t.Errorf("an offline name took %s: no responders should answer at once", took)
	}

	fleet, err := presence.RollCall(within(t, 500*time.Millisecond), nc, scheme)
	if err != nil || strings.Join(fleet, ",") != "worker-1,worker-2,worker-3" {
		t.Fatalf("roll call: %v, %v", fleet, err)
	}
	bulk, err := presence.Bulk(within(t, waitTimeout), nc, scheme, []string{"gus", "hal", "nobody"}, len(fleet))
	if err != nil || bulk.Partial || bulk.Online["gus"] != 3 || bulk.Online["hal"] != 1 || len(bulk.Online) != 2 {
		t.Fatalf("bulk: %+v, %v", bulk, err)
	}

	// No session saw a presence request: the next frame is a notification.
	publish(t, nc, "notify.user.gus", "after")
	expect(t, g1, "after")
	expect(t, g2, "after")
	for _, tw := range workers {
		if n := metric(t, tw.addr, `notify_deliveries_total{kind="user"}`); n > 2 {
			t.Errorf("%s delivered %v", tw.addr, n)
		}
	}
	if n := metric(t, workers[0].addr, `notify_presence_requests_total{kind="name",result="answered"}`); n != 1 {
		t.Errorf("worker-1 answered %v presence requests, want 1", n)
	}
	if n := metric(t, workers[2].addr, `notify_presence_requests_total{kind="bulk",result="answered"}`); n != 2 {
		t.Errorf("worker-3 answered %v bulk requests, want 2 (roll call and bulk)", n)
	}
}

// Every bad presence input row of section 9 gets its answer and delivers
// nothing.
func TestPresenceBadInput(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)
	c := client(t, tw, "ivy")
	tooMany := "[" + strings.Repeat(`"a",`, subjects.MaxPresenceNames) + `"a"]`
	for _, row := range []struct {
		subject string
		header  string
		body    string
		want    string
	}{
		{"notify.user.ivy", "2", "", "Notify-Presence must be 1"},
		{"notify.user.ivy", "", "", "Notify-Presence must be 1"},
		{"notify.all", "1", "", "presence of one name: ask <prefix>.user.<name>; of many: <prefix>.presence"},
		{"notify.presence", "", `{"names":["ivy"]}`, "body must be a JSON array of names"},
		{"notify.presence", "", `null`, "body must be a JSON array of names"},
		{"notify.presence", "", `[1]`, "body must be a JSON array of names"},
		{"notify.presence", "", tooMany, "at most 1000 names"},
		{"notify.presence", "", `["ivy","a.b"]`, "invalid name at index 1: name may contain only A-Z a-z 0-9 _ -"},
	} {
		m := nats.NewMsg(row.subject)
		if row.subject != "notify.presence" {
			m.Header.Set("Notify-Presence", row.header)
		}
		m.Data = []byte(row.body)
		r, err := nc.RequestMsg(m, waitTimeout)
		if err != nil {
			t.Fatalf("%s %q: %v", row.subject, row.body, err)
		}
		var got map[string]string
		if err := json.Unmarshal(r.Data, &got); err != nil || got["error"] != row.want || got["worker"] != "test-worker" {
			t.Errorf("%s %.30q: %s, want error %q", row.subject, row.body, r.Data, row.want)
		}
	}
	publish(t, nc, "notify.user.ivy", "after")
	expect(t, c, "after")
}

// Two sessions of one name give one online event, at the first welcome,
// and one offline event, when the last ends, with its close code and
// reason.
func TestEventsFirstAndLastSession(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)
	sub := subscribe(t, nc, "notify.event.>")

	a := client(t, tw, "alice")
	b := client(t, tw, "alice")
	e := nextEvent(t, sub)
	if e.subject != "notify.event.online.alice" || e.Name != "alice" || e.Worker != "test-worker" || e.Sessions == nil || *e.Sessions != 1 {
		t.Fatalf("first event %+v", e)
	}
	a.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "tab closed"))
	readClose(t, a)
	eventually(t, "alice's first session gone", func() bool { return metric(t, tw.addr, "notify_sessions_identified") == 1 })
	b.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "logged out"))
	readClose(t, b)
	e = nextEvent(t, sub)
	if e.subject != "notify.event.offline.alice" || *e.Sessions != 0 || e.Code != 4000 || e.Reason != "logged out" {
		t.Fatalf("second event %+v, want alice's offline with 4000", e)
	}
	// Nothing more for alice: the next event is another name's.
	client(t, tw, "zed")
	if e := nextEvent(t, sub); e.subject != "notify.event.online.zed" {
		t.Fatalf("third event %+v, want zed's online", e)
	}
}

// With NOTIFY_EVENTS=off no online or offline event is published.
func TestEventsOff(t *testing.T) {
	cfg := testConfig(t)
	cfg.Events = "off"
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	sub := subscribe(t, nc, "notify.event.>")
	client(t, tw, "alice").Close()
	c, _ := resume(t, tw, "bob", nil)
	send(t, c, `{"type":"ack","seq":3}`)
	if e := nextEvent(t, sub); e.subject != "notify.event.ack.bob" {
		t.Fatalf("first event %+v, want bob's ack alone", e)
	}
}

// A v2 client's ack is published to <prefix>.event.ack.<name>, not
// upstream; a malformed one gets an error frame and the session stays;
// acks count against the upstream rate limit; a v1 client's ack frame is
// an ordinary upstream message.
func TestAcks(t *testing.T) {
	tw := startWorker(t, limitsConfig(t)) // upstream burst 5
	js := jetStream(t, tw)
	nc := connectNATS(t, tw.natsURL)
	events := subscribe(t, nc, "notify.event.ack.>")
	inbound := subscribe(t, nc, "notify.inbound.>")

	c, _ := resume(t, tw, "alice", nil)
	seq := publishDurable(t, js, "notify.user.alice", `{"title":"hi"}`)
	if f := readMsgV2(t, c); f.seq() != seq {
		t.Fatalf("got %+v, want seq %d", f, seq)
	}
	send(t, c, `{"type":"ack","seq":`+strconv.FormatUint(seq, 10)+`}`) // 1 of 5
	e := nextEvent(t, events)
	if e.subject != "notify.event.ack.alice" || e.Name != "alice" || e.Seq == nil || *e.Seq != seq || e.Worker != "test-worker" {
		t.Fatalf("ack event %+v", e)
	}
	for _, bad := range []string{`{"type":"ack","seq":0}`, `{"type":"ack","seq":"1"}`} { // 2, 3 of 5
		send(t, c, bad)
		if f := readV2(t, c); f.Type != "error" || f.Error != "ack needs one seq, an integer from 1 to 2^63-1" {
			t.Fatalf("after %s: %+v", bad, f)
		}
	}
	send(t, c, `{"type":"note"}`) // 4 of 5: upstream, the first message there
	if m := next(t, inbound); m.Subject != "notify.inbound.alice" || string(m.Data) != `{"type":"note"}` {
		t.Fatalf("inbound %s %s: an ack went upstream", m.Subject, m.Data)
	}
	send(t, c, `{"type":"ack","seq":1}`) // 5 of 5
	nextEvent(t, events)
	send(t, c, `{"type":"ack","seq":1}`) // past the burst
	if _, code, reason := readClose(t, c); code != websocket.ClosePolicyViolation || reason != "upstream rate limit exceeded" {
		t.Fatalf("close %d %q, want 1008 for the rate limit", code, reason)
	}

	v1 := client(t, tw, "bob")
	send(t, v1, `{"type":"ack","seq":1}`)
	if m := next(t, inbound); m.Subject != "notify.inbound.bob" || string(m.Data) != `{"type":"ack","seq":1}` {
		t.Fatalf("inbound %s %s, want the v1 ack upstream", m.Subject, m.Data)
	}
	if n := metric(t, tw.addr, `notify_acks_total{result="accepted"}`); n != 2 {
		t.Errorf("accepted acks %v, want 2", n)
	}
}

// At shutdown every session's offline event is still published (the events
// go out before the NATS connection closes), with the close code the
// session was sent: 1001 for v1, 1012 for v2.
func TestEventsAtShutdown(t *testing.T) {
	srv := startNATS(t, func(o *server.Options) { o.JetStream = true; o.StoreDir = t.TempDir() })
	cfg := testConfig(t)
	cfg.NATSURLs = []string{srv.ClientURL()}
	tw := startWorker(t, cfg)
	nc := connectNATS(t, srv.ClientURL())
	sub := subscribe(t, nc, "notify.event.offline.>")
	client(t, tw, "old")
	resume(t, tw, "new", nil)
	if err := tw.stop(t); err != nil {
		t.Fatal(err)
	}
	got := map[string]eventMsg{}
	for range 2 {
		e := nextEvent(t, sub)
		got[e.Name] = e
	}
	if e := got["old"]; e.Code != websocket.CloseGoingAway || e.Reason != "server shutting down" {
		t.Errorf("old: %+v, want 1001", e)
	}
	if e := got["new"]; e.Code != websocket.CloseServiceRestart || e.Reason != "server restarting: reconnect and resume" {
		t.Errorf("new: %+v, want 1012", e)
	}
}

// section9NotEndToEnd are the section 9 series no end-to-end test can
// aim at, with where they are proven instead.
var section9NotEndToEnd = map[string]string{
	`notify_presence_requests_total{kind="name",result="failed"}`: "nats.go refusing a reply (the connection closing) between a request and its answer: an instant",
	`notify_presence_requests_total{kind="bulk",result="failed"}`: "nats.go refusing a reply (the connection closing) between a request and its answer: an instant",
	`notify_events_dropped_total{reason="queue_full"}`:            "a full event buffer: worker/ (TestEventsOverflow)",
	`notify_events_dropped_total{reason="closed"}`:                "an event after the worker began to close: run closes the hub first; worker/ (TestEventsOverflow)",
	`notify_events_dropped_total{reason="publish_failed"}`:        "nats.go refusing a publish (the connection closing): an instant",
	`notify_acks_total{result="refused"}`:                         "a hub without Events: run always gives it the worker; hub/ (TestAckWithoutEvents)",
}

// TestSection9Metrics brings about, for every label value of the section 9
// counters, the situation its help text names, and asserts that exactly
// the series it concerns moved.
func TestSection9Metrics(t *testing.T) {
	const (
		online         = `notify_events_total{kind="online"}`
		offline        = `notify_events_total{kind="offline"}`
		ackEvents      = `notify_events_total{kind="ack"}`
		acksAccepted   = `notify_acks_total{result="accepted"}`
		acksInvalid    = `notify_acks_total{result="invalid"}`
		nameAnswered   = `notify_presence_requests_total{kind="name",result="answered"}`
		nameRefused    = `notify_presence_requests_total{kind="name",result="refused"}`
		nameNoReply    = `notify_presence_requests_total{kind="name",result="no_reply"}`
		bulkAnswered   = `notify_presence_requests_total{kind="bulk",result="answered"}`
		bulkRefused    = `notify_presence_requests_total{kind="bulk",result="refused"}`
		bulkNoReply    = `notify_presence_requests_total{kind="bulk",result="no_reply"}`
		presenceHeader = "Notify-Presence"
	)
	ask := func(t *testing.T, tw *testWorker, subject, header, body string, reply bool) {
		t.Helper()
		nc := connectNATS(t, tw.natsURL)
		m := nats.NewMsg(subject)
		if header != "" {
			m.Header.Set(presenceHeader, header)
		}
		m.Data = []byte(body)
		if !reply {
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			return
		}
		if _, err := nc.RequestMsg(m, waitTimeout); err != nil {
			t.Fatal(err)
		}
	}
	rows := []struct {
		name string
		run  func(t *testing.T, m *meter) map[string]float64
	}{
		{"a name's first session is welcomed", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			m.mark(nil)
			client(t, tw, "alice")
			client(t, tw, "alice")
			return map[string]float64{online: 1}
		}},
		{"a name's last session ends", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			a, b := client(t, tw, "alice"), client(t, tw, "alice")
			m.mark(map[string]float64{online: 1})
			a.Close()
			b.Close()
			return map[string]float64{offline: 1}
		}},
		{"a v2 client acks", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			c, _ := resume(t, tw, "alice", nil)
			m.mark(map[string]float64{online: 1})
			send(t, c, `{"type":"ack","seq":1}`)
			return map[string]float64{acksAccepted: 1, ackEvents: 1}
		}},
		{"a v2 client sends a malformed ack", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			c, _ := resume(t, tw, "alice", nil)
			m.mark(map[string]float64{online: 1})
			send(t, c, `{"type":"ack","seq":0}`)
			if f := readV2(t, c); f.Type != "error" {
				t.Fatalf("frame %+v", f)
			}
			return map[string]float64{acksInvalid: 1}
		}},
		{"a presence request is answered", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			client(t, tw, "alice")
			m.mark(map[string]float64{online: 1})
			ask(t, tw, "notify.user.alice", "1", "", true)
			return map[string]float64{nameAnswered: 1}
		}},
		{"a presence request with another value is refused", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			client(t, tw, "alice")
			m.mark(map[string]float64{online: 1})
			ask(t, tw, "notify.user.alice", "2", "", true)
			return map[string]float64{nameRefused: 1}
		}},
		{"a presence request without a reply subject", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			client(t, tw, "alice")
			m.mark(map[string]float64{online: 1})
			ask(t, tw, "notify.user.alice", "1", "", false)
			return map[string]float64{nameNoReply: 1}
		}},
		{"a bulk presence request is answered", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			client(t, tw, "alice") // its join flushed the bulk subscription
			m.mark(map[string]float64{online: 1})
			ask(t, tw, "notify.presence", "", `["alice","bob"]`, true)
			return map[string]float64{bulkAnswered: 1}
		}},
		{"a bulk presence request that is not an array", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			client(t, tw, "alice")
			m.mark(map[string]float64{online: 1})
			ask(t, tw, "notify.presence", "", `{"names":[]}`, true)
			return map[string]float64{bulkRefused: 1}
		}},
		{"a bulk presence request without a reply subject", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			client(t, tw, "alice")
			m.mark(map[string]float64{online: 1})
			ask(t, tw, "notify.presence", "", `[]`, false)
			return map[string]float64{bulkNoReply: 1}
		}},
	}
	moved := map[string]bool{}
	var series []string
	recorded := 0
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			m := &meter{t: t, section9: true}
			want := row.run(t, m)
			recorded++
			series = m.series
			for s, d := range want {
				if d != 0 {
					moved[s] = true
				}
			}
			m.check(want)
		})
	}
	if recorded < len(rows) {
		t.Skipf("%d of %d rows ran; coverage of the labels not checked", recorded, len(rows))
	}
	for _, s := range series {
		if _, ok := section9NotEndToEnd[s]; !moved[s] && !ok {
			t.Errorf("no row moves %s: add the situation it counts", s)
		}
	}
	for s := range section9NotEndToEnd {
		if !slices.Contains(series, s) {
			t.Errorf("section9NotEndToEnd lists %s, which /metrics does not serve", s)
		}
	}
}
