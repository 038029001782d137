package hub

import (
	"context"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/notify-worker/notify-worker/feed"
)

// Tests of what a v2 session is never sent: a durable message newer than
// one it missed (docs/protocol.md, section 8, "Losses on the way").

// joinLive joins name as a v2 session whose replay went through seq
// through, and waits until it is live.
func joinLive(t *testing.T, h *Hub, url, name string) *websocket.Conn {
	t.Helper()
	c, _ := joinV2(t, url, `{"name":"`+name+`","v":2,"since":0}`)
	waitFor(t, name+" to be live", func() bool { return !replaying(v2Of(h, name)) })
	return c
}

// A message whose Prev is above what the session was sent shows a gap: the
// session is closed with 1012 before it, and sent nothing newer. A
// duplicate is skipped; a gap on one name leaves other names alone.
func TestV2GapCloses(t *testing.T) {
	h, url, reg := startHubWith(t, v2Config(newFakeResumer(feed.Replay{Through: 10, Recovered: true})), newFakeRouter(), discardLogger())
	a := joinLive(t, h, url, "a")
	b := joinLive(t, h, url, "b")

	if n := h.DeliverUser("a", durable(`"11"`, 11, 10)); n != 1 {
		t.Fatalf("11: %d sessions", n)
	}
	if n := h.DeliverUser("a", durable(`"11"`, 11, 10)); n != 0 {
		t.Fatalf("a duplicate went to %d sessions", n)
	}
	if n := h.DeliverUser("a", durable(`"13"`, 13, 12)); n != 0 { // 12 never came
		t.Fatalf("13, after a gap: %d sessions", n)
	}
	for _, m := range []struct {
		name, label, value string
		want               float64
	}{
		{"notify_feed_closes_total", "cause", "gap", 1},
		{"notify_duplicates_total", "", "", 1},
		{"notify_dropped_total", "reason", "closing", 1}, // 13
	} {
		if got := counter(t, reg, m.name, m.label, m.value); got != m.want {
			t.Errorf("%s{%s=%q} = %v, want %v", m.name, m.label, m.value, got, m.want)
		}
	}
	// Until the session is gone, nothing more is queued to it.
	if n := h.DeliverUser("a", durable(`"14"`, 14, 13)); n != 0 {
		t.Fatalf("14, after the close: %d sessions", n)
	}
	h.DeliverAll(durable(`"15"`, 15, 0))

	if seq, _ := readMsg(t, a); seq != 11 {
		t.Fatalf("got seq %d, want 11", seq)
	}
	if ce := closeFrame(t, a); ce.Code != closeServiceRestart || ce.Text != reasonFeedLost {
		t.Fatalf("close %d %q, want 1012 %q and nothing after 11", ce.Code, ce.Text, reasonFeedLost)
	}
	if seq, _ := readMsg(t, b); seq != 15 {
		t.Fatalf("b got seq %d, want 15", seq)
	}
}

// A session welcomed unavailable (seq 0) has no baseline to check a first
// message against: it gets it, and the checks apply from then on.
func TestV2UnavailableGetsLiveMessages(t *testing.T) {
	h, url, _ := startHubWith(t, testConfig(), newFakeRouter(), discardLogger()) // no Resumer
	c, w := joinV2(t, url, `{"name":"a","v":2,"since":99}`)
	if *w.Recovered || *w.Reason != feed.ReasonUnavailable || *w.Seq != 0 {
		t.Fatalf("welcome %+v, want unavailable with seq 0", w)
	}
	h.DeliverUser("a", durable(`"500"`, 500, 480))
	h.DeliverAll(durable(`"501"`, 501, 470))
	h.DeliverUser("a", durable(`"502"`, 502, 500))
	h.DeliverUser("a", durable(`"504"`, 504, 503))
	for _, want := range []uint64{500, 501, 502} {
		if seq, _ := readMsg(t, c); seq != want {
			t.Fatalf("got seq %d, want %d", seq, want)
		}
	}
	if code := closeCode(t, c); code != closeServiceRestart {
		t.Fatalf("close %d after a gap, want 1012", code)
	}
}

// FeedLost closes, with 1012 and after what is queued, the v2 sessions
// registered before it, and none other: not v1 sessions, not v2 sessions
// registered after it.
func TestFeedLost(t *testing.T) {
	h, url, reg := startHubWith(t, v2Config(newFakeResumer(feed.Replay{Through: 10, Recovered: true})), newFakeRouter(), discardLogger())
	before := joinLive(t, h, url, "a")
	v1 := join(t, url, "b")
	h.DeliverUser("a", durable(`"queued"`, 11, 10))

	h.FeedLost("slow_consumer")
	after := joinLive(t, h, url, "c")

	if _, data := readMsg(t, before); data != `"queued"` {
		t.Fatalf("got %s, want what was queued before the loss", data)
	}
	if ce := closeFrame(t, before); ce.Code != closeServiceRestart || ce.Text != reasonFeedLost {
		t.Fatalf("close %d %q, want 1012 %q", ce.Code, ce.Text, reasonFeedLost)
	}
	h.DeliverAll(durable(`"12"`, 12, 0))
	if got := readFrame(t, v1); got != `"12"` {
		t.Fatalf("v1 got %q", got)
	}
	if seq, _ := readMsg(t, after); seq != 12 {
		t.Fatalf("a session registered after the loss got seq %d, want 12", seq)
	}
	h.FeedLost("no such cause")
	if code := closeCode(t, after); code != closeServiceRestart {
		t.Fatalf("close %d, want 1012", code)
	}
	for cause, want := range map[string]float64{"slow_consumer": 1, "other": 1, "disconnect": 0} {
		if got := counter(t, reg, "notify_feed_closes_total", "cause", cause); got != want {
			t.Errorf(`notify_feed_closes_total{cause=%q} = %v, want %v`, cause, got, want)
		}
	}
}

// Close sends v2 sessions 1012 (resume elsewhere) and v1 sessions 1001,
// each after what is queued to it.
func TestCloseV2ServiceRestart(t *testing.T) {
	h, url, _ := startHubWith(t, v2Config(newFakeResumer(feed.Replay{Through: 10, Recovered: true})), newFakeRouter(), discardLogger())
	v2 := joinLive(t, h, url, "a")
	v1 := join(t, url, "b")
	h.DeliverAll(durable(`"last"`, 11, 0))

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, data := readMsg(t, v2); data != `"last"` {
		t.Fatalf("v2 got %s before the close", data)
	}
	if ce := closeFrame(t, v2); ce.Code != closeServiceRestart || ce.Text != reasonRestart {
		t.Fatalf("v2 close %d %q, want 1012 %q", ce.Code, ce.Text, reasonRestart)
	}
	if got := readFrame(t, v1); got != `"last"` {
		t.Fatalf("v1 got %q before the close", got)
	}
	if code := closeCode(t, v1); code != closeGoingAway {
		t.Fatalf("v1 close %d, want 1001", code)
	}
}
