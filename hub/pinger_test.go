package hub

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notify-worker/notify-worker/feed"
)

// Tests of the app pings and their cursor: docs/protocol.md, section 8,
// "The cursor" and "Why the guarantee holds".

// The live checks of cursor.admit, as a table.
func TestCursorAdmit(t *testing.T) {
	type step struct {
		on   subject
		m    feed.Message
		want verdict
	}
	tests := []struct {
		name    string
		through uint64
		steps   []step
	}{
		{"in order", 10, []step{{onUser, durable("", 11, 10), admitSend}, {onUser, durable("", 12, 11), admitSend}}},
		{"prev at or below the replay", 10, []step{{onUser, durable("", 15, 3), admitSend}, {onAll, durable("", 16, 0), admitSend}}},
		{"duplicate", 10, []step{{onUser, durable("", 10, 9), admitDuplicate}, {onUser, durable("", 11, 10), admitSend},
			{onUser, durable("", 11, 10), admitDuplicate}}},
		{"gap", 10, []step{{onUser, durable("", 13, 12), admitGap}}},
		{"subjects apart", 10, []step{{onAll, durable("", 12, 10), admitSend}, {onUser, durable("", 13, 11), admitGap}}},
		{"core always", 10, []step{{onUser, core(""), admitSend}}},
		{"no baseline: first let through", 0, []step{{onUser, durable("", 50, 40), admitSend}, {onAll, durable("", 51, 45), admitSend},
			{onUser, durable("", 53, 52), admitGap}}},
	}
	for _, tt := range tests {
		c := newCursor(tt.through)
		for i, s := range tt.steps {
			if got := c.admit(s.on, s.m); got != s.want {
				t.Errorf("%s: step %d (seq %d prev %d): %v, want %v", tt.name, i, s.m.Seq, s.m.Prev, got, s.want)
			}
		}
	}
}

// The ping cursor of one session, as a table: a subject is clear up to the
// snapshot's V when its newest message is one the session was sent;
// otherwise it holds the cursor to what was sent on it. The cursor never
// goes back, nor below Through; a Last.Seq not sent in two snapshots in a
// row is stuck.
func TestCursorObserve(t *testing.T) {
	type snapshot struct {
		user, all feed.Last
		c         uint64
		stuck     bool
	}
	l := func(seq, through uint64) feed.Last { return feed.Last{Seq: seq, Through: through} }
	tests := []struct {
		name    string
		through uint64
		live    []feed.Message // sent on the user subject before the snapshots
		snaps   []snapshot
	}{
		{"both clear", 100, nil, []snapshot{{l(90, 150), l(100, 150), 150, false}}},
		{"quiet subjects", 100, nil, []snapshot{{l(0, 150), l(0, 150), 150, false}}},
		{"user clear after live", 100, []feed.Message{durable("", 120, 90)},
			[]snapshot{{l(120, 200), l(100, 200), 200, false}}},
		{"all unclear", 100, []feed.Message{durable("", 120, 90)},
			[]snapshot{{l(120, 200), l(130, 200), 100, false}}},
		{"user unclear, held at what was sent", 100, []feed.Message{durable("", 120, 90)},
			[]snapshot{{l(125, 200), l(100, 200), 120, false}}},
		{"stale snapshot below Through", 100, nil, []snapshot{{l(50, 80), l(60, 80), 100, false}}},
		{"monotonic", 100, nil, []snapshot{{l(90, 150), l(100, 150), 150, false}, {l(90, 120), l(100, 120), 150, false},
			{l(160, 170), l(100, 170), 150, false}}},
		{"not taken for a subject", 100, nil, []snapshot{{l(0, 0), l(100, 150), 100, false}}},
		{"stuck", 100, nil, []snapshot{{l(105, 110), l(100, 110), 100, false}, {l(105, 112), l(100, 112), 100, true}}},
		{"stuck on all", 100, nil, []snapshot{{l(90, 110), l(105, 110), 100, false}, {l(90, 112), l(105, 112), 100, true}}},
		{"moving is not stuck", 100, nil, []snapshot{{l(100, 110), l(105, 110), 100, false},
			{l(100, 112), l(107, 112), 100, false}, {l(100, 115), l(107, 115), 100, true}}},
		{"a snapshot not taken in between", 100, nil, []snapshot{{l(105, 110), l(100, 110), 100, false},
			{l(0, 0), l(100, 111), 100, false}, {l(105, 112), l(100, 112), 100, true}}},
		{"a clear snapshot in between", 100, nil, []snapshot{{l(105, 110), l(100, 110), 100, false},
			{l(90, 111), l(100, 111), 111, false}, {l(105, 112), l(100, 112), 111, false}}},
		{"no baseline", 0, nil, []snapshot{{l(5, 10), l(0, 10), 0, false}, {l(5, 10), l(0, 10), 0, false}}},
	}
	for _, tt := range tests {
		c := newCursor(tt.through)
		for _, m := range tt.live {
			if c.admit(onUser, m) != admitSend {
				t.Fatalf("%s: live %d not admitted", tt.name, m.Seq)
			}
		}
		for i, s := range tt.snaps {
			stuck := c.observe([subjectCount]feed.Last{onUser: s.user, onAll: s.all})
			if c.c != s.c || stuck != s.stuck {
				t.Errorf("%s: snapshot %d: cursor %d, stuck %v; want %d, %v", tt.name, i, c.c, stuck, s.c, s.stuck)
			}
		}
	}
}

// pingConfig sends app pings every few milliseconds.
func pingConfig(r Resumer) Config {
	cfg := v2Config(r)
	cfg.AppPing = 20 * time.Millisecond
	return cfg
}

// readPing reads frames until a ping, failing on anything else.
func readPing(t *testing.T, c *websocket.Conn) uint64 {
	t.Helper()
	f := readV2(t, c)
	if f.Type != "ping" || f.Seq == nil {
		t.Fatalf("got %+v, want a ping", f)
	}
	return *f.Seq
}

// Live v2 sessions are pinged with the cursor a snapshot of their names
// gives, queued after the messages it counts; after a failed snapshot, with
// the cursor they had. v1 sessions get no pings and are not asked about.
func TestAppPings(t *testing.T) {
	res := newFakeResumer(feed.Replay{Through: 100, Recovered: true})
	res.setSnapshot(func([]string) (feed.Snapshot, error) {
		return feed.Snapshot{All: feed.Last{Seq: 100, Through: 150}, Users: map[string]feed.Last{"a": {Seq: 90, Through: 150}}}, nil
	})
	h, url, reg := startHubWith(t, pingConfig(res), newFakeRouter(), discardLogger())
	v1 := join(t, url, "b")
	c, w := joinV2(t, url, `{"name":"a","v":2,"since":50}`)
	if *w.Ping != 20 {
		t.Fatalf("welcome ping %d, want 20", *w.Ping)
	}
	if seq := readPing(t, c); seq != 150 {
		t.Fatalf("first ping seq %d, want 150", seq)
	}

	// A live message: it comes before the ping that counts it.
	h.DeliverUser("a", durable(`"155"`, 155, 90))
	res.setSnapshot(func([]string) (feed.Snapshot, error) {
		return feed.Snapshot{All: feed.Last{Seq: 100, Through: 160}, Users: map[string]feed.Last{"a": {Seq: 155, Through: 160}}}, nil
	})
	for {
		f := readV2(t, c)
		if f.Type == "msg" {
			if *f.Seq != 155 {
				t.Fatalf("got seq %d", *f.Seq)
			}
			break
		}
		if *f.Seq != 150 {
			t.Fatalf("ping seq %d before the message, want 150", *f.Seq)
		}
	}
	for readPing(t, c) != 160 {
	}

	res.setSnapshot(func([]string) (feed.Snapshot, error) { return feed.Snapshot{}, errors.New("no responders") })
	n := res.snapsNow()
	res.waitCalls(t, 1, n+1)
	for range 3 {
		if seq := readPing(t, c); seq != 160 {
			t.Fatalf("ping seq %d after a failed snapshot, want 160", seq)
		}
	}

	h.DeliverUser("b", core("first"))
	if got := readFrame(t, v1); got != "first" {
		t.Fatalf("v1 got %q, want its message and no ping", got)
	}
	res.mu.Lock()
	for _, names := range res.asked {
		if !slices.Equal(names, []string{"a"}) {
			t.Errorf("snapshot asked for %v, want [a]", names)
		}
	}
	res.mu.Unlock()
	// Each tick counts its pings once they are queued: every tick before
	// the last one read has.
	if got := counter(t, reg, "notify_app_pings_total", "", ""); got < 4 {
		t.Errorf("notify_app_pings_total = %v, want at least 4 of the 5 pings read", got)
	}
}

func (r *fakeResumer) snapsNow() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snaps
}

// A message that two snapshots in a row show on the session's subjects,
// and that never reached it, is lost: the session is closed with 1012 to
// resume from its cursor.
func TestStuckMessageCloses(t *testing.T) {
	res := newFakeResumer(feed.Replay{Through: 100, Recovered: true})
	res.setSnapshot(func([]string) (feed.Snapshot, error) {
		return feed.Snapshot{All: feed.Last{Seq: 100, Through: 110}, Users: map[string]feed.Last{"a": {Seq: 105, Through: 110}}}, nil
	})
	_, url, reg := startHubWith(t, pingConfig(res), newFakeRouter(), discardLogger())
	c, _ := joinV2(t, url, `{"name":"a","v":2,"since":50}`)
	if seq := readPing(t, c); seq != 100 {
		t.Fatalf("ping seq %d, want 100 (105 not sent)", seq)
	}
	if ce := closeFrame(t, c); ce.Code != closeServiceRestart || ce.Text != reasonFeedLost {
		t.Fatalf("close %d %q, want 1012 %q", ce.Code, ce.Text, reasonFeedLost)
	}
	if got := counter(t, reg, "notify_feed_closes_total", "cause", "stuck"); got != 1 {
		t.Errorf(`notify_feed_closes_total{cause="stuck"} = %v, want 1`, got)
	}
}
