package hub

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/feed"
)

// Tests of the v2 frames: docs/protocol.md, section 8, "Frames, in order".

// A payload that is valid UTF-8 JSON is embedded as data; anything else
// (not JSON, JSON with invalid UTF-8, binary, empty) travels as data_b64.
// A core message has no seq. Every frame is valid JSON.
func TestEnvelopeFrames(t *testing.T) {
	tests := []struct {
		name    string
		m       feed.Message
		asJSON  bool
		wantSeq uint64
	}{
		{"json object", durable(`{"a":[1,"é"]}`, 7, 3), true, 7},
		{"json with space", durable(" [1, 2]\n", 8, 0), true, 8},
		{"json string", durable(`"x"`, 18446744073709551615, 0), true, 18446744073709551615},
		{"not json", durable(`hello`, 9, 0), false, 9},
		{"json with invalid utf-8", durable("\"\xff\"", 10, 0), false, 10},
		{"binary", durable("\x00\x01\xfe\xff", 11, 0), false, 11},
		{"empty", durable("", 12, 0), false, 12},
		{"core json", core(`{"ephemeral":true}`), true, 0},
		{"core binary", core("\x00"), false, 0},
	}
	for _, tt := range tests {
		f := decodeFrame(t, envelopeFrame(tt.m))
		if f.Type != "msg" {
			t.Errorf("%s: type %q", tt.name, f.Type)
		}
		switch {
		case tt.wantSeq == 0 && f.Seq != nil:
			t.Errorf("%s: a core message has seq %d", tt.name, *f.Seq)
		case tt.wantSeq != 0 && (f.Seq == nil || *f.Seq != tt.wantSeq):
			t.Errorf("%s: seq %v, want %d", tt.name, f.Seq, tt.wantSeq)
		}
		if tt.asJSON {
			// A decoder hands the value over without the space around it.
			if f.DataB64 != nil || string(f.Data) != strings.TrimSpace(string(tt.m.Payload)) {
				t.Errorf("%s: data %s, data_b64 %v; want data %s", tt.name, f.Data, f.DataB64, tt.m.Payload)
			}
			continue
		}
		if f.Data != nil || f.DataB64 == nil {
			t.Errorf("%s: data %s, want data_b64", tt.name, f.Data)
			continue
		}
		if got, err := base64.StdEncoding.DecodeString(*f.DataB64); err != nil || string(got) != string(tt.m.Payload) {
			t.Errorf("%s: data_b64 decodes to %q, %v; want %q", tt.name, got, err, tt.m.Payload)
		}
	}
}

// The welcome and the ping are valid JSON whatever the reason a Resumer
// gives.
func TestV2FrameEncoding(t *testing.T) {
	w := decodeFrame(t, welcomeV2Frame("alice", feed.Replay{Through: 9, Reason: "odd \"reason\"\n"}, 3, 1500*time.Millisecond, upstreamLimit{0.5, 3}))
	if w.Type != "welcome" || w.Name != "alice" || w.V != 2 || *w.Seq != 9 || *w.Recovered || *w.Replayed != 3 ||
		*w.Ping != 1500 || *w.UpRate != 0.5 || *w.UpBurst != 3 || *w.Reason != "odd \"reason\"\n" {
		t.Errorf("welcome = %+v", w)
	}
	if got, want := string(welcomeV2Frame("bob", feed.Replay{Through: 4, Recovered: true}, 0, time.Second, upstreamLimit{10, 20})),
		`{"type":"welcome","name":"bob","v":2,"seq":4,"recovered":true,"replayed":0,"ping":1000,"upstream_rate":10,"upstream_burst":20}`; got != want {
		t.Errorf("welcome = %s, want %s", got, want)
	}
	if got, want := string(pingFrame(42)), `{"type":"ping","seq":42}`; got != want {
		t.Errorf("ping = %s, want %s", got, want)
	}
}

// Over a real connection, a v2 session gets one envelope per message: a
// durable one with its seq, a core one without, binary payloads base64;
// a v1 session of the same name gets the same messages raw.
func TestV2Envelopes(t *testing.T) {
	h, url, _ := startHubWith(t, v2Config(newFakeResumer(feed.Replay{Through: 1, Recovered: true})), newFakeRouter(), discardLogger())
	c, _ := joinV2(t, url, `{"name":"a","v":2}`)
	v1 := join(t, url, "a")
	msgs := []feed.Message{durable(`{"n":2}`, 2, 0), core(`{"eph":1}`), durable("\x00bin", 3, 2), core("not json")}
	for _, m := range msgs {
		if n := h.DeliverUser("a", m); n != 2 {
			t.Fatalf("delivered to %d sessions, want 2", n)
		}
	}
	for _, m := range msgs {
		if seq, data := readMsg(t, c); seq != m.Seq || data != string(m.Payload) {
			t.Fatalf("got seq %d %q, want seq %d %q", seq, data, m.Seq, m.Payload)
		}
		if got := readFrame(t, v1); got != string(m.Payload) {
			t.Fatalf("v1 got %q, want the raw payload %q", got, m.Payload)
		}
	}
}

// A delivery builds the v2 envelope once, whatever the number of v2
// sessions it reaches, and nothing at all when it reaches only v1 ones.
func TestDeliveryAllocations(t *testing.T) {
	h, err := New(testConfig(), newFakeRouter(), discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	add := func(name string, v2 bool) {
		fs := &fakeSession{open: true}
		st := &sessionState{}
		if v2 {
			st.v2.Store(&v2Session{s: fs, st: st, name: name, m: h.metrics, wake: make(chan struct{}, 1), cur: newCursor(1)})
		}
		h.index.add(name, member{s: fs, st: st}, nil, 10, nil)
	}
	add("v1", false)
	add("v1", false)
	for range 3 {
		add("v2", true)
	}
	payload := []byte(`{"n":1}`)
	seq := uint64(1)
	// A name made at run time, as the worker's are: it stays on the
	// caller's stack only if DeliverUser does not keep it.
	v1Name := []byte("v1")
	tests := []struct {
		name    string
		deliver func()
		want    float64
	}{
		{"v1 user", func() { h.DeliverUser(string(v1Name), feed.Message{Payload: payload, Seq: seq + 1}) }, 0},
		{"v2 user", func() { h.DeliverUser("v2", feed.Message{Payload: payload, Seq: seq + 1}) }, 1},
		{"all", func() { h.DeliverAll(feed.Message{Payload: payload, Seq: seq + 1}) }, 1},
	}
	for _, tt := range tests {
		if got := testing.AllocsPerRun(100, func() { tt.deliver(); seq++ }); got != tt.want {
			t.Errorf("%s: %v allocations per delivery, want %v", tt.name, got, tt.want)
		}
	}
}
