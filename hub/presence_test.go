package hub

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notify-worker/notify-worker/feed"
)

// recordedEvent is one call to an Events.
type recordedEvent struct {
	kind   string // online, offline, ack
	name   string
	n      int // sessions for online
	code   int
	reason string
	seq    uint64
}

// fakeEvents records the hub's Events calls, in order.
type fakeEvents struct {
	mu     sync.Mutex
	events []recordedEvent
	added  chan struct{} // receives after each event (buffered)
}

func newFakeEvents() *fakeEvents { return &fakeEvents{added: make(chan struct{}, 1000)} }

func (f *fakeEvents) add(e recordedEvent) {
	f.mu.Lock()
	f.events = append(f.events, e)
	f.mu.Unlock()
	f.added <- struct{}{}
}

func (f *fakeEvents) Online(name string, n int) {
	f.add(recordedEvent{kind: "online", name: name, n: n})
}
func (f *fakeEvents) Offline(name string, code int, reason string) {
	f.add(recordedEvent{kind: "offline", name: name, code: code, reason: reason})
}
func (f *fakeEvents) Ack(name string, seq uint64) {
	f.add(recordedEvent{kind: "ack", name: name, seq: seq})
}

// wait returns the events once there are n of them.
func (f *fakeEvents) wait(t *testing.T, n int) []recordedEvent {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		f.mu.Lock()
		got := append([]recordedEvent(nil), f.events...)
		f.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-f.added:
		case <-deadline:
			t.Fatalf("got %d events %+v, want %d", len(got), got, n)
		}
	}
}

func TestParseAck(t *testing.T) {
	for _, tc := range []struct {
		msg   string
		seq   uint64
		isAck bool
		bad   bool
	}{
		{`{"type":"ack","seq":1}`, 1, true, false},
		{` {"seq":42, "type":"ack", "extra":[1,2]} `, 42, true, false},
		{`{"type":"ack","seq":9223372036854775807}`, 1<<63 - 1, true, false},
		{`{"type":"ack","seq":9223372036854775808}`, 0, true, true},
		{`{"type":"ack","seq":0}`, 0, true, true},
		{`{"type":"ack","seq":-1}`, 0, true, true},
		{`{"type":"ack","seq":1.0}`, 0, true, true},
		{`{"type":"ack","seq":1e3}`, 0, true, true},
		{`{"type":"ack","seq":"1"}`, 0, true, true},
		{`{"type":"ack"}`, 0, true, true},
		{`{"type":"ack","seq":1,"seq":2}`, 0, true, true},
		{`{"type":"ack","type":"ack","seq":1}`, 0, true, true},
		{`{"type":"note","type":"ack","seq":1}`, 0, true, true},
		// Not acks: ordinary upstream messages.
		{`{"type":"note","text":"ack"}`, 0, false, false},
		{`{"type":"note","seq":1}`, 0, false, false},
		{`["ack",1]`, 0, false, false},
		{`"ack"`, 0, false, false},
		{`{"type":"ack","seq":1`, 0, false, false},
		{`{"type":"ack","seq":1} {}`, 0, false, false},
		{`{"type":"\u0061ck","seq":1}`, 0, false, false},
		{`hello`, 0, false, false},
		{``, 0, false, false},
	} {
		seq, isAck, err := parseAck([]byte(tc.msg))
		if seq != tc.seq || isAck != tc.isAck || (err != nil) != tc.bad {
			t.Errorf("parseAck(%s) = %d, %v, %v; want %d, %v, bad %v", tc.msg, seq, isAck, err, tc.seq, tc.isAck, tc.bad)
		}
	}
}

// Two sessions of one name give one online event (the first welcome) and
// one offline event (the last session's end, with its close code and
// reason); Sessions counts them meanwhile.
func TestEventsFirstAndLastSession(t *testing.T) {
	ev := newFakeEvents()
	cfg := testConfig()
	cfg.Events = ev
	h, url, _ := startHubWith(t, cfg, newFakeRouter(), discardLogger())

	a := join(t, url, "alice")
	b := join(t, url, "alice")
	if got := ev.wait(t, 1); got[0] != (recordedEvent{kind: "online", name: "alice", n: 1}) {
		t.Fatalf("events = %+v", got)
	}
	if n := h.Sessions("alice"); n != 2 {
		t.Errorf("Sessions(alice) = %d, want 2", n)
	}
	if n := h.Sessions("bob"); n != 0 {
		t.Errorf("Sessions(bob) = %d, want 0", n)
	}
	a.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "first"))
	closeFrame(t, a)
	waitFor(t, "one session left", func() bool { return h.Sessions("alice") == 1 })
	b.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "logged out"))
	closeFrame(t, b)
	got := ev.wait(t, 2)
	if len(got) != 2 || got[1] != (recordedEvent{kind: "offline", name: "alice", code: 4000, reason: "logged out"}) {
		t.Fatalf("events = %+v", got)
	}
}

// A session the server closes reports the code and reason it sent; one
// whose connection drops reports 1006.
func TestEventsOfflineCodes(t *testing.T) {
	ev := newFakeEvents()
	cfg := testConfig()
	cfg.Events = ev
	cfg.UpstreamBurst = 1
	cfg.UpstreamRate = 0.001
	_, url, _ := startHubWith(t, cfg, newFakeRouter(), discardLogger())

	a := join(t, url, "a")
	send(t, a, "one")
	send(t, a, "two")
	if code := closeCode(t, a); code != closePolicyViolation {
		t.Fatalf("close code %d", code)
	}
	got := ev.wait(t, 2)
	if got[1] != (recordedEvent{kind: "offline", name: "a", code: closePolicyViolation, reason: reasonUpstreamRate}) {
		t.Fatalf("events = %+v", got)
	}

	b := join(t, url, "b")
	b.UnderlyingConn().Close()
	got = ev.wait(t, 4)
	if got[3] != (recordedEvent{kind: "offline", name: "b", code: 1006, reason: reasonLost}) {
		t.Fatalf("events = %+v", got)
	}
}

// A v2 session's ack goes to Events, counts against the upstream limit and
// is not forwarded upstream; a malformed one gets an error frame and the
// session stays; a v1 session's ack frame is an ordinary upstream message.
func TestAckFrames(t *testing.T) {
	ev := newFakeEvents()
	r := newFakeRouter()
	cfg := v2Config(newFakeResumer(feed.Replay{Through: 10, Recovered: true}))
	cfg.Events = ev
	cfg.UpstreamBurst = 3
	cfg.UpstreamRate = 0.001
	h, url, reg := startHubWith(t, cfg, r, discardLogger())

	v1 := join(t, url, "old")
	send(t, v1, `{"type":"ack","seq":5}`)
	c := joinLive(t, h, url, "alice")
	ev.wait(t, 2) // two onlines
	send(t, c, `{"type":"ack","seq":7}`)
	if got := ev.wait(t, 3); got[2] != (recordedEvent{kind: "ack", name: "alice", seq: 7}) {
		t.Fatalf("events = %+v", got)
	}
	send(t, c, `{"type":"ack","seq":0}`)
	if f := readV2(t, c); f.Type != "error" || f.Error != errAckSeq.Error() {
		t.Fatalf("frame = %+v, want the ack error", f)
	}
	// The third message of a burst of 3: allowed; the fourth closes.
	send(t, c, `{"type":"ack","seq":8}`)
	ev.wait(t, 4)
	send(t, c, `{"type":"ack","seq":9}`)
	if ce := closeFrame(t, c); ce.Code != closePolicyViolation || ce.Text != reasonUpstreamRate {
		t.Fatalf("close = %v", ce)
	}
	r.waitLeft(t, "alice", 1)

	r.mu.Lock()
	up := strings.Join(r.upstream, "|")
	r.mu.Unlock()
	if up != `old:{"type":"ack","seq":5}` {
		t.Errorf("upstream = %s, want only the v1 message", up)
	}
	if got := counter(t, reg, "notify_acks_total", "result", "accepted"); got != 2 {
		t.Errorf("acks accepted = %v, want 2", got)
	}
	if got := counter(t, reg, "notify_acks_total", "result", "invalid"); got != 1 {
		t.Errorf("acks invalid = %v, want 1", got)
	}
}

// Without Events, an ack gets an error frame and the session stays.
func TestAckWithoutEvents(t *testing.T) {
	h, url, _ := startHubWith(t, v2Config(newFakeResumer(feed.Replay{Through: 1, Recovered: true})), newFakeRouter(), discardLogger())
	c := joinLive(t, h, url, "alice")
	send(t, c, `{"type":"ack","seq":1}`)
	if f := readV2(t, c); f.Type != "error" || f.Error != reasonAcksOff {
		t.Fatalf("frame = %+v", f)
	}
	send(t, c, `{"type":"ack","seq":1}`)
	if f := readV2(t, c); f.Type != "error" {
		t.Fatalf("frame = %+v: the session should still be open", f)
	}
}

// parseAck never panics, and what it accepts is an ack with a seq in
// range that its own frame spells back.
func FuzzParseAck(f *testing.F) {
	for _, s := range []string{`{"type":"ack","seq":1}`, `{"type":"ack","seq":0}`, `{"type":"ack"}`, `{"seq":5,"type":"ack"}`,
		`{"type":"ack","seq":9223372036854775808}`, `{"type":"note","ack":"ack"}`, `"ack"`, `{"type":"ack","seq":1,"seq":2}`, "\xef\xbb\xbf{\"type\":\"ack\",\"seq\":3}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		seq, isAck, err := parseAck(msg)
		if !isAck && (err != nil || seq != 0) {
			t.Fatalf("not an ack, yet %d, %v", seq, err)
		}
		if isAck && err == nil && (seq == 0 || seq > maxCursor) {
			t.Fatalf("accepted seq %d", seq)
		}
	})
}

// A message that is not an ack costs a substring search; an ack, one
// small decode.
func BenchmarkParseAck(b *testing.B) {
	for _, bc := range []struct{ name, msg string }{
		{"upstream", `{"type":"read","id":"9f8e7d6c","at":1733100000}`},
		{"ack", `{"type":"ack","seq":123456789}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			msg := []byte(bc.msg)
			b.ReportAllocs()
			for b.Loop() {
				_, _, _ = parseAck(msg)
			}
		})
	}
}

// Sessions is one shard lookup under its read lock, whatever the number
// of sessions.
func BenchmarkSessions(b *testing.B) {
	ix, _ := fillIndex(100000)
	h := &Hub{index: ix}
	names := make([]string, 1024)
	for i := range names {
		names[i] = "u" + strconv.Itoa(i*97)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if h.Sessions(names[i%len(names)]) != 1 {
			b.Fatal("lost a session")
		}
		i++
	}
}
