package hub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notify-worker/notify-worker/feed"
)

// Tests of the v2 handshake and replay: docs/protocol.md, section 8, "First
// message" and "Frames, in order".

// A v1 client sees nothing of v2: raw payloads, durable ones included, and
// the v1 welcome even when it sends a since.
func TestV1Unchanged(t *testing.T) {
	r := newFakeResumer(feed.Replay{Through: 50, Recovered: true})
	h, url, _ := startHubWith(t, v2Config(r), newFakeRouter(), discardLogger())
	plain := join(t, url, "a")
	withSince := dial(t, url)
	send(t, withSince, `{"name":"b","v":1,"since":7}`)
	if got := readFrame(t, withSince); got != `{"type":"welcome","name":"b"}` {
		t.Fatalf("welcome = %s, want the v1 welcome", got)
	}
	h.DeliverUser("a", durable(`{"n":1}`, 51, 50))
	h.DeliverUser("a", core("core \xff"))
	h.DeliverAll(durable("binary\x00", 52, 0))
	for _, want := range []string{`{"n":1}`, "core \xff", "binary\x00"} {
		if got := readFrame(t, plain); got != want {
			t.Fatalf("v1 got %q, want %q", got, want)
		}
	}
	if got := readFrame(t, withSince); got != "binary\x00" {
		t.Fatalf("v1 got %q, want the raw broadcast", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.resumes) != 0 {
		t.Fatalf("a v1 session resumed: %v", r.resumes)
	}
}

// The welcome says what the resume found (rule 2): seq, recovered, the
// reason when not, the number of replayed frames that follow, and the
// app-ping interval; the Resumer is asked with the client's since.
func TestV2Welcome(t *testing.T) {
	msgs := []feed.Message{durable(`"a"`, 11, 0), durable(`"b"`, 12, 0)}
	tests := []struct {
		name     string
		resumer  Resumer // nil: none
		first    string
		since    *uint64
		seq      uint64
		replayed int
		reason   string // "" when recovered
	}{
		{"no resumer", nil, `{"name":"a","v":2,"since":10}`, nil, 0, 0, feed.ReasonUnavailable},
		{"live from now", newFakeResumer(feed.Replay{Through: 40, Recovered: true}),
			`{"name":"a","v":2}`, nil, 40, 0, ""},
		{"recovered", newFakeResumer(feed.Replay{Through: 40, Recovered: true, Messages: msgs}),
			`{"name":"a","v":2,"since":10}`, ptr(10), 40, 2, ""},
		{"retention", newFakeResumer(feed.Replay{Through: 40, Reason: feed.ReasonRetention, Messages: msgs}),
			`{"since":0,"name":"a","v":2}`, ptr(0), 40, 2, feed.ReasonRetention},
		{"reset", newFakeResumer(feed.Replay{Through: 40, Reason: feed.ReasonReset}),
			`{"name":"a","v":2,"since":99}`, ptr(99), 40, 0, feed.ReasonReset},
		{"unavailable", newFakeResumer(feed.Replay{Reason: feed.ReasonUnavailable}),
			`{"name":"a","v":2,"since":5}`, ptr(5), 0, 0, feed.ReasonUnavailable},
		{"a reason this hub does not know", newFakeResumer(feed.Replay{Through: 40, Reason: "newer"}),
			`{"name":"a","v":2,"since":5}`, ptr(5), 40, 0, "newer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.AppPing = 25 * time.Second
			if tt.resumer != nil {
				cfg.Resumer = tt.resumer
			}
			_, url, reg := startHubWith(t, cfg, newFakeRouter(), discardLogger())
			c, w := joinV2(t, url, tt.first)
			if w.Name != "a" || *w.Seq != tt.seq || *w.Replayed != tt.replayed || *w.Ping != 25000 ||
				*w.Recovered != (tt.reason == "") || (w.Reason != nil) != (tt.reason != "") ||
				(w.Reason != nil && *w.Reason != tt.reason) {
				t.Fatalf("welcome %+v: want seq %d, replayed %d, ping 25000, reason %q", w, tt.seq, tt.replayed, tt.reason)
			}
			for i := range tt.replayed {
				if seq, _ := readMsg(t, c); seq != msgs[i].Seq {
					t.Fatalf("replayed seq %d, want %d", seq, msgs[i].Seq)
				}
			}
			// Counted before the welcome is queued.
			outcome, reasons := "recovered", map[string]float64{}
			if tt.reason != "" {
				outcome, reasons[tt.reason] = "not_recovered", 1
				if tt.reason == "newer" {
					reasons = map[string]float64{"other": 1, feed.ReasonUnavailable: 0}
				}
			}
			if got := counter(t, reg, "notify_resumes_total", "outcome", outcome); got != 1 {
				t.Errorf(`notify_resumes_total{outcome=%q} = %v, want 1`, outcome, got)
			}
			for reason, want := range reasons {
				if got := counter(t, reg, "notify_resumes_not_recovered_total", "reason", reason); got != want {
					t.Errorf(`notify_resumes_not_recovered_total{reason=%q} = %v, want %v`, reason, got, want)
				}
			}
			if r, ok := tt.resumer.(*fakeResumer); ok {
				r.mu.Lock()
				defer r.mu.Unlock()
				if len(r.resumes) != 1 || r.resumes[0].name != "a" || !sameCursor(r.resumes[0].since, tt.since) {
					t.Fatalf("resumes %+v, want one for a since %s", r.resumes, showCursor(tt.since))
				}
			}
		})
	}
}

func ptr(n uint64) *uint64 { return &n }

// Live messages that arrive while the Resumer works are buffered: those at
// or below Through join the replay (once, in seq order), the others follow
// it in arrival order, then the session is live. Nothing is sent twice.
func TestV2ReplayThenLive(t *testing.T) {
	gate := make(chan struct{})
	r := newFakeResumer(feed.Replay{})
	r.resume = gatedResume(gate, feed.Replay{Through: 20, Recovered: true, Messages: []feed.Message{
		durable(`"r6"`, 6, 0), durable(`"r7"`, 7, 0), durable(`"r8"`, 8, 6), durable(`"r10"`, 10, 9),
	}})
	h, url, reg := startHubWith(t, v2Config(r), newFakeRouter(), discardLogger())
	c := dial(t, url)
	send(t, c, `{"name":"a","v":2,"since":5}`)
	r.waitCalls(t, 1, 0) // registered, replaying

	for _, d := range []struct {
		all bool
		m   feed.Message
	}{
		{false, durable(`"l9"`, 9, 8)},    // in (since, Through], missing from the replay: merged
		{false, durable(`"l10"`, 10, 9)},  // in the replay too: once
		{false, durable(`"l4"`, 4, 0)},    // at or below since: the client has it
		{false, core(`"c1"`)},             // core: after the replay, in arrival order
		{true, durable(`"l21"`, 21, 7)},   // newer than the replay
		{false, durable(`"l22"`, 22, 10)}, // newer than the replay
	} {
		n := 0
		if d.all {
			n = h.DeliverAll(d.m)
		} else {
			n = h.DeliverUser("a", d.m)
		}
		if n != 1 {
			t.Fatalf("delivery of %s: %d sessions, want 1 (buffered)", d.m.Payload, n)
		}
	}
	close(gate)

	w := readV2(t, c)
	if *w.Seq != 20 || !*w.Recovered || *w.Replayed != 5 {
		t.Fatalf("welcome %+v, want seq 20, recovered, replayed 5", w)
	}
	want := []struct {
		seq  uint64
		data string
	}{{6, `"r6"`}, {7, `"r7"`}, {8, `"r8"`}, {9, `"l9"`}, {10, `"r10"`}, {0, `"c1"`}, {21, `"l21"`}, {22, `"l22"`}}
	for _, w := range want {
		if seq, data := readMsg(t, c); seq != w.seq || data != w.data {
			t.Fatalf("got seq %d %s, want seq %d %s", seq, data, w.seq, w.data)
		}
	}
	// Live now: checked against what was sent.
	waitFor(t, "the session to be live", func() bool { return !replaying(v2Of(h, "a")) })
	if n := h.DeliverUser("a", durable(`"l22"`, 22, 10)); n != 0 {
		t.Fatalf("a duplicate was queued to %d sessions", n)
	}
	h.DeliverUser("a", durable(`"l23"`, 23, 22))
	if seq, _ := readMsg(t, c); seq != 23 {
		t.Fatalf("got seq %d, want 23", seq)
	}

	for _, m := range []struct {
		name, label, value string
		want               float64
	}{
		{"notify_replayed_messages_total", "", "", 5},
		{"notify_duplicates_total", "", "", 3}, // l10, l4, the second l22
		{"notify_deliveries_total", "kind", "user", 3},
		{"notify_deliveries_total", "kind", "all", 1},
		{"notify_resumes_total", "outcome", "recovered", 1},
		{"notify_handshakes_total", "result", "ok", 1},
	} {
		if got := counter(t, reg, m.name, m.label, m.value); got != m.want {
			t.Errorf("%s{%s=%q} = %v, want %v", m.name, m.label, m.value, got, m.want)
		}
	}
	if n := histogramCount(t, reg, "notify_replay_duration_seconds"); n != 1 {
		t.Errorf("notify_replay_duration_seconds has %d observations, want 1", n)
	}
}

// replaying reports whether v still holds its live messages back.
func replaying(v *v2Session) bool {
	if v == nil {
		return true
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.replaying
}

// numbered returns n durable messages with seqs 1..n, each of size bytes
// or more.
func numbered(n, size int) []feed.Message {
	pad := strings.Repeat("x", size)
	msgs := make([]feed.Message, n)
	for i := range msgs {
		msgs[i] = durable(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i+1, pad), uint64(i+1), uint64(i))
	}
	return msgs
}

// A replay far larger than the session queue is paced to fit it (rule 8):
// 1,000 messages through a queue of 8 reach a client that reads normally,
// all of them, in order, and the session stays.
func TestV2LargeReplayIsPaced(t *testing.T) {
	const n = 1000
	cfg := v2Config(newFakeResumer(feed.Replay{Through: n, Recovered: true, Messages: numbered(n, 0)}))
	cfg.QueueSize = 8
	h, url, reg := startHubWith(t, cfg, newFakeRouter(), discardLogger())
	c, w := joinV2(t, url, `{"name":"a","v":2,"since":0}`)
	if *w.Replayed != n {
		t.Fatalf("replayed %d, want %d", *w.Replayed, n)
	}
	for i := range n {
		if seq, _ := readMsg(t, c); seq != uint64(i+1) {
			t.Fatalf("frame %d: seq %d", i, seq)
		}
	}
	waitFor(t, "the session to be live", func() bool { return !replaying(v2Of(h, "a")) })
	h.DeliverUser("a", durable(`"live"`, n+1, n))
	if seq, data := readMsg(t, c); seq != n+1 || data != `"live"` {
		t.Fatalf("got %d %s after the replay", seq, data)
	}
	if got := counter(t, reg, "notify_limit_closes_total", "reason", "slow_consumer"); got != 0 {
		t.Fatalf("%v slow consumer closes", got)
	}
	if got := counter(t, reg, "notify_replayed_messages_total", "", ""); got != n {
		t.Fatalf("notify_replayed_messages_total = %v, want %d", got, n)
	}
}

// slowReplayConfig is for a client that does not read while its replay
// goes out: a replay of big messages through a small queue, and writes
// that wait long enough for the test to act.
func slowReplayConfig(r Resumer) Config {
	cfg := v2Config(r)
	cfg.QueueSize = 8
	cfg.WriteTimeout = waitTimeout
	cfg.PingPeriod, cfg.PongTimeout = 30*time.Second, time.Minute
	return cfg
}

// slowReplay is a replay of 1,000 messages of 16 KiB: far more than the
// sockets between a hub and a client that is not reading hold.
func slowReplay() feed.Replay {
	return feed.Replay{Through: 1000, Recovered: true, Messages: numbered(1000, 16<<10)}
}

// dialStalled connects with a small receive buffer and sends first, but
// reads nothing: the hub's writes to it soon block.
func dialStalled(t *testing.T, url, first string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: smallReceiveBuffer}).DialContext}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	send(t, c, first)
	return c
}

// waitReplaying waits until name's session has queued its welcome and is
// held up in its replay.
func waitReplaying(t *testing.T, h *Hub, name string) *v2Session {
	t.Helper()
	var v *v2Session
	waitFor(t, "a replay held up by pacing", func() bool {
		v = v2Of(h, name)
		return v != nil && v.st.queued.Load() > replayWindow(h.cfg.QueueSize) && replaying(v)
	})
	return v
}

// Live messages that arrive while a slow client takes its replay wait for
// it, and follow it in order; app pings wait for it too.
func TestV2LiveDuringSlowReplay(t *testing.T) {
	res := newFakeResumer(feed.Replay{})
	slow := slowReplay()
	res.resume = func(_ context.Context, name string, _ *uint64) (feed.Replay, error) {
		if name == "a" {
			return slow, nil
		}
		return feed.Replay{Through: 1000, Recovered: true}, nil
	}
	cfg := slowReplayConfig(res)
	// Pings tick during the replay (the live session "other" has them).
	// Once live, "a" is pinged like any other while its client still
	// reads the replay's tail: the queue leaves room for a dozen pings.
	cfg.AppPing = 25 * time.Millisecond
	cfg.QueueSize = 32
	h, url, _ := startHubWith(t, cfg, newFakeRouter(), discardLogger())
	joinLive(t, h, url, "other")
	c := dialStalled(t, url, `{"name":"a","v":2,"since":0}`)
	v := waitReplaying(t, h, "a")
	res.waitCalls(t, 2, res.snapsNow()+2) // ticks during the replay

	h.DeliverUser("a", durable(`"l1001"`, 1001, 1000))
	h.DeliverUser("a", core(`"c"`))
	h.DeliverAll(durable(`"l1002"`, 1002, 0))
	v.mu.Lock()
	held := len(v.buf)
	v.mu.Unlock()
	if held != 3 {
		t.Fatalf("%d live messages held during the replay, want 3", held)
	}

	if w := readV2(t, c); *w.Replayed != 1000 {
		t.Fatalf("welcome %+v", w)
	}
	for i := range 1000 {
		if seq, _ := readMsg(t, c); seq != uint64(i+1) {
			t.Fatalf("replay frame %d: seq %d", i, seq)
		}
	}
	for _, want := range []string{`"l1001"`, `"c"`, `"l1002"`} {
		if _, data := readMsg(t, c); data != want {
			t.Fatalf("after the replay got %s, want %s", data, want)
		}
	}
}

// A session that ends in the middle of its replay stops it at once: its
// read goroutine returns, the name is left, and (goleak in TestMain) no
// goroutine or timer is left behind.
func TestV2EndDuringReplay(t *testing.T) {
	tests := []struct {
		name string
		end  func(t *testing.T, h *Hub, c *websocket.Conn)
		code int // the close code the client reads; 0: it hung up itself
	}{
		{"client gone", func(t *testing.T, h *Hub, c *websocket.Conn) { c.Close() }, 0},
		{"feed lost", func(t *testing.T, h *Hub, c *websocket.Conn) { h.FeedLost("disconnect") }, closeServiceRestart},
		{"hub closed", func(t *testing.T, h *Hub, c *websocket.Conn) {
			closed := make(chan error, 1)
			go func() { closed <- h.Close(context.Background()) }()
			t.Cleanup(func() {
				if err := <-closed; err != nil {
					t.Errorf("close: %v", err)
				}
			})
		}, closeServiceRestart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newFakeRouter()
			h, url, reg := startHubWith(t, slowReplayConfig(newFakeResumer(slowReplay())), r, discardLogger())
			c := dialStalled(t, url, `{"name":"a","v":2,"since":0}`)
			waitReplaying(t, h, "a")
			h.DeliverUser("a", core("held")) // dropped when the session ends
			tt.end(t, h, c)
			if tt.code != 0 {
				if ce := closeFrame(t, c); ce.Code != tt.code || ce.Text == "" {
					t.Fatalf("close %d %q, want %d", ce.Code, ce.Text, tt.code)
				}
			}
			r.waitLeft(t, "a", 1)
			if got := counter(t, reg, "notify_dropped_total", "reason", "closing"); got != 1 {
				t.Errorf(`notify_dropped_total{reason="closing"} = %v, want 1 (the held message)`, got)
			}
			if n := histogramCount(t, reg, "notify_replay_duration_seconds"); n != 0 {
				t.Errorf("a replay cut short was observed")
			}
		})
	}
}

// A session that ends while the Resumer works gets no welcome: its Resume
// is cancelled, and FeedLost's 1012 is all it reads.
func TestV2FeedLostDuringResume(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	res := newFakeResumer(feed.Replay{})
	res.resume = gatedResume(gate, feed.Replay{Through: 5, Recovered: true})
	r := newFakeRouter()
	h, url, reg := startHubWith(t, v2Config(res), r, discardLogger())
	c := dial(t, url)
	send(t, c, `{"name":"a","v":2,"since":1}`)
	res.waitCalls(t, 1, 0)
	h.FeedLost("leader_change")
	_, msg, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != closeServiceRestart {
		t.Fatalf("read %q, %v; want close 1012 and nothing before it", msg, err)
	}
	r.waitLeft(t, "a", 1)
	if got := counter(t, reg, "notify_feed_closes_total", "cause", "leader_change"); got != 1 {
		t.Errorf(`notify_feed_closes_total{cause="leader_change"} = %v, want 1`, got)
	}
	if got := counter(t, reg, "notify_resumes_total", "outcome", "unavailable"); got != 0 {
		t.Errorf("a cancelled resume counted as unavailable")
	}
}

// Live messages that outgrow the buffer of a session still resuming make
// it too slow: 4002, the message that did not fit counted as queue_full,
// the ones it held as closing, and its Resume cancelled.
func TestV2ReplayBufferOverflow(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	res := newFakeResumer(feed.Replay{})
	res.resume = gatedResume(gate, feed.Replay{Through: 1, Recovered: true})
	r := newFakeRouter()
	h, url, reg := startHubWith(t, v2Config(res), r, discardLogger())
	c := dial(t, url)
	send(t, c, `{"name":"a","v":2,"since":0}`)
	res.waitCalls(t, 1, 0)
	held := replayBufferMax(h.cfg.QueueSize)
	for i := range held {
		if n := h.DeliverUser("a", core(strconv.Itoa(i))); n != 1 {
			t.Fatalf("message %d held by %d sessions, want 1", i, n)
		}
	}
	if n := h.DeliverUser("a", core("one too many")); n != 0 {
		t.Fatalf("the message past the buffer was queued to %d sessions", n)
	}
	if ce := closeFrame(t, c); ce.Code != closeTooSlow {
		t.Fatalf("close %d, want 4002", ce.Code)
	}
	r.waitLeft(t, "a", 1)
	for _, m := range []struct {
		name, label, value string
		want               float64
	}{
		{"notify_dropped_total", "reason", "queue_full", 1},
		{"notify_dropped_total", "reason", "closing", float64(held)},
		{"notify_limit_closes_total", "reason", "slow_consumer", 1},
		{"notify_resumes_total", "outcome", "unavailable", 0},
	} {
		if got := counter(t, reg, m.name, m.label, m.value); got != m.want {
			t.Errorf("%s{%s=%q} = %v, want %v", m.name, m.label, m.value, got, m.want)
		}
	}
}

// A Resume that fails is never answered recovered false (rule 10): the
// session is unregistered, its name left, and it is closed with 1013.
func TestV2ResumeErrorTryAgainLater(t *testing.T) {
	res := newFakeResumer(feed.Replay{})
	res.resume = func(context.Context, string, *uint64) (feed.Replay, error) {
		return feed.Replay{}, errors.New("stream leader election in progress")
	}
	r := newFakeRouter()
	h, url, reg := startHubWith(t, v2Config(res), r, discardLogger())
	c := dial(t, url)
	send(t, c, `{"name":"a","v":2,"since":3}`)
	if f := readV2(t, c); f.Type != "error" || f.Error != reasonUnavailable {
		t.Fatalf("got %+v, want the error frame %q", f, reasonUnavailable)
	}
	if code := closeCode(t, c); code != closeTryAgainLater {
		t.Fatalf("close %d, want 1013", code)
	}
	r.waitLeft(t, "a", 1)
	if n := h.DeliverUser("a", core("x")); n != 0 {
		t.Fatalf("delivered to %d sessions after a failed resume", n)
	}
	r.mu.Lock()
	joins := r.joins["a"]
	r.mu.Unlock()
	if joins != 0 {
		t.Fatalf("%d joins without a leave", joins)
	}
	for _, m := range []struct{ name, label, value string }{
		{"notify_resumes_total", "outcome", "unavailable"},
		{"notify_handshakes_total", "result", "unavailable"},
	} {
		if got := counter(t, reg, m.name, m.label, m.value); got != 1 {
			t.Errorf("%s{%s=%q} = %v, want 1", m.name, m.label, m.value, got)
		}
	}
}

// A hostile since is a bad first message like any other: the error
// frame, then 1008; the Resumer is not asked.
func TestV2HostileSince(t *testing.T) {
	res := newFakeResumer(feed.Replay{Through: 1, Recovered: true})
	_, url, _ := startHubWith(t, v2Config(res), newFakeRouter(), discardLogger())
	for _, since := range []string{"-1", "1.0", "1e3", `"5"`, "1" + strings.Repeat("0", 30), "null", "true",
		strconv.FormatUint(maxCursor+1, 10), "[1]"} {
		c := dial(t, url)
		send(t, c, `{"name":"a","v":2,"since":`+since+`}`)
		if f := readV2(t, c); f.Type != "error" || f.Error != errSince.Error() {
			t.Errorf("since %s: got %+v, want the error frame %q", since, f, errSince)
		}
		if ce := closeFrame(t, c); ce.Code != closePolicyViolation || ce.Text != errSince.Error() {
			t.Errorf("since %s: close %d %q, want 1008", since, ce.Code, ce.Text)
		}
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	if len(res.resumes) != 0 {
		t.Fatalf("hostile first messages reached the Resumer: %v", res.resumes)
	}
}

// mergeReplay's rule as a table.
func TestMergeReplay(t *testing.T) {
	b := func(seq uint64) buffered { return buffered{msg: durable("", seq, 0)} }
	c := buffered{msg: core("c")}
	seqs := func(list []buffered) []uint64 {
		out := []uint64{}
		for _, e := range list {
			out = append(out, e.msg.Seq)
		}
		return out
	}
	tests := []struct {
		name       string
		replay     []uint64
		through    uint64
		since      *uint64
		buf        []buffered
		msgs, rest []uint64
		dups       int
		cut        bool // the replay is the newest that fit: not recovered
	}{
		{"nothing buffered", []uint64{3, 4}, 4, ptr(2), nil, []uint64{3, 4}, []uint64{}, 0, false},
		{"buffered newer", []uint64{3}, 4, ptr(2), []buffered{b(5), c, b(6)}, []uint64{3}, []uint64{5, 0, 6}, 0, false},
		{"buffered in range and missing", []uint64{3, 6}, 6, ptr(2), []buffered{b(4), b(6), b(7)}, []uint64{3, 4, 6}, []uint64{7}, 1, false},
		{"buffered at or below since", []uint64{}, 6, ptr(5), []buffered{b(5), b(6)}, []uint64{6}, []uint64{}, 1, false},
		{"without since: none merged", []uint64{}, 6, nil, []buffered{b(5), c, b(7)}, []uint64{}, []uint64{0, 7}, 1, false},
		{"replay out of order and out of range", []uint64{5, 3, 9, 2}, 6, ptr(2), nil, []uint64{3, 5}, []uint64{}, 0, false},
		{"replay duplicates", []uint64{3, 3, 4}, 6, ptr(2), nil, []uint64{3, 4}, []uint64{}, 1, false},
		{"cut replay: none merged below its first", []uint64{5, 6}, 6, ptr(2), []buffered{b(3), b(4), b(5)}, []uint64{5, 6}, []uint64{}, 3, true},
		{"cut replay: merged inside it", []uint64{4, 6}, 6, ptr(2), []buffered{b(3), b(5)}, []uint64{4, 5, 6}, []uint64{}, 1, true},
	}
	for _, tt := range tests {
		rep := feed.Replay{Through: tt.through, Recovered: !tt.cut}
		for _, s := range tt.replay {
			rep.Messages = append(rep.Messages, durable("", s, 0))
		}
		m, dups := mergeReplay(rep, tt.buf, tt.since)
		if fmt.Sprint(seqs(m.msgs)) != fmt.Sprint(tt.msgs) || fmt.Sprint(seqs(m.rest)) != fmt.Sprint(tt.rest) || dups != tt.dups {
			t.Errorf("%s: msgs %v rest %v dups %d; want %v %v %d", tt.name, seqs(m.msgs), seqs(m.rest), dups, tt.msgs, tt.rest, tt.dups)
		}
	}
}
