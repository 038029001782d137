package hub

import (
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/feed"
)

// fakeSession stands in for a *melody.Session in the index benchmarks. Its
// Write does what melody's does before the hand-off to the write pump (a
// read lock to check that the session is open) and counts instead of
// queueing, so the numbers are the index's own cost; the real hand-off is
// measured by the loopback benchmarks below.
type fakeSession struct {
	mu     sync.RWMutex
	open   bool
	writes atomic.Int64
}

func (f *fakeSession) Write(msg []byte) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.open {
		f.writes.Add(1)
	}
	return nil
}

func (f *fakeSession) WriteBinary(msg []byte) error { return f.Write(msg) }
func (f *fakeSession) CloseWithMsg([]byte) error    { return nil }

func (f *fakeSession) IsClosed() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return !f.open
}

var sessionCounts = []int{1_000, 10_000, 100_000}

// fillIndex registers n fake sessions under the names u0 ... u<n-1>.
func fillIndex(n int) (*index, []*fakeSession) {
	ix := newIndex(maphash.MakeSeed())
	all := make([]*fakeSession, n)
	welcome := []byte(`{"type":"welcome"}`)
	for i := range all {
		all[i] = &fakeSession{open: true}
		ix.add("u"+strconv.Itoa(i), member{s: all[i], st: &sessionState{}}, welcome, 1, nil)
	}
	return ix, all
}

// BenchmarkDeliverUser is the targeted path: one name, one session, among n
// registered. ns/op must not grow with n.
func BenchmarkDeliverUser(b *testing.B) {
	payload := []byte(`{"id":1,"body":"hello"}`)
	for _, n := range sessionCounts {
		b.Run("sessions="+strconv.Itoa(n), func(b *testing.B) {
			ix, _ := fillIndex(n)
			name := "u" + strconv.Itoa(n/2)
			b.ReportAllocs()
			for b.Loop() {
				d := delivery{msg: feed.Message{Payload: payload}, text: true}
				if ix.deliver(name, &d).queued != 1 {
					b.Fatal("not delivered")
				}
			}
		})
	}
}

// BenchmarkDeliverUserScan is the control: the same delivery done the way
// melody's BroadcastFilter does it, by testing every session. It shows what
// O(n) looks like next to BenchmarkDeliverUser.
func BenchmarkDeliverUserScan(b *testing.B) {
	payload := []byte(`{"id":1,"body":"hello"}`)
	for _, n := range sessionCounts {
		b.Run("sessions="+strconv.Itoa(n), func(b *testing.B) {
			ix, all := fillIndex(n)
			target := all[n/2]
			b.ReportAllocs()
			for b.Loop() {
				if scanDeliver(ix, func(s session) bool { return s == target }, payload) != 1 {
					b.Fatal("not delivered")
				}
			}
		})
	}
}

// scanDeliver writes payload to every session keep accepts, testing each
// session in the index under its shard's lock, as melody's BroadcastFilter
// does with its own session set.
func scanDeliver(ix *index, keep func(session) bool, payload []byte) int {
	n := 0
	for i := range ix.shards {
		sh := &ix.shards[i]
		sh.mu.RLock()
		for _, list := range sh.names {
			for _, m := range list {
				if keep(m.s) {
					_ = m.s.Write(payload)
					n++
				}
			}
		}
		sh.mu.RUnlock()
	}
	return n
}

// BenchmarkDeliverAll is a broadcast over n sessions; ns/session is the
// figure to compare.
func BenchmarkDeliverAll(b *testing.B) {
	payload := []byte(`{"id":1,"body":"to everyone"}`)
	for _, n := range sessionCounts {
		b.Run("sessions="+strconv.Itoa(n), func(b *testing.B) {
			ix, _ := fillIndex(n)
			b.ReportAllocs()
			for b.Loop() {
				d := delivery{msg: feed.Message{Payload: payload}, on: onAll, text: true}
				if int(ix.deliverAll(&d).queued) != n {
					b.Fatal("not delivered to all")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/session")
		})
	}
}

// loopRouter accepts every name and discards upstream messages.
type loopRouter struct{}

func (loopRouter) Join(context.Context, string) error { return nil }
func (loopRouter) Leave(string)                       {}
func (loopRouter) Upstream(string, []byte) error      { return nil }

// loopbackHub serves a Hub on a loopback port with n identified clients
// named u0 ... u<n-1>. Each client reads until closed and adds one to
// received per frame after its welcome.
func loopbackHub(b *testing.B, n int, received *frameCounter) *Hub {
	b.Helper()
	h, err := New(Config{
		IdentifyMaxBytes:   1024,
		MessageMaxBytes:    1024,
		JoinTimeout:        5 * time.Second,
		QueueSize:          64,
		WriteTimeout:       10 * time.Second,
		PingPeriod:         time.Minute,
		PongTimeout:        2 * time.Minute,
		IdentifyTimeout:    10 * time.Second,
		HandshakeTimeout:   10 * time.Second,
		MaxConnections:     n + 1,
		MaxSessionsPerName: 1,
		UpstreamRate:       10,
		UpstreamBurst:      10,
		AppPing:            time.Minute,
	}, loopRouter{}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	var readers sync.WaitGroup
	conns := make([]*websocket.Conn, 0, n)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.Close(ctx)
		for _, c := range conns {
			_ = c.Close()
		}
		readers.Wait()
		srv.Close()
	})
	for i := range n {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		if err := c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"name":"u%d"}`, i))); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			b.Fatal("welcome:", err)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				received.add()
			}
		}()
	}
	return h
}

// frameCounter counts the frames the clients read and wakes a waiter once
// a target is reached.
type frameCounter struct {
	mu   sync.Mutex
	n    int64
	want int64
	done chan struct{}
}

func (c *frameCounter) add() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if c.done != nil && c.n >= c.want {
		close(c.done)
		c.done = nil
	}
}

// wait returns once want frames have been read, failing b after 10s.
func (c *frameCounter) wait(b *testing.B, want int64) {
	c.mu.Lock()
	if c.n >= want {
		c.mu.Unlock()
		return
	}
	done := make(chan struct{})
	c.want, c.done = want, done
	c.mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.Fatalf("clients read fewer than %d frames in 10s", want)
	}
}

// BenchmarkHubDeliverUserLoopback is DeliverUser with real melody sessions
// over loopback, each op followed until the client has read the frame: the
// whole WebSocket side of one targeted delivery.
func BenchmarkHubDeliverUserLoopback(b *testing.B) {
	const n = 1000
	var received frameCounter
	h := loopbackHub(b, n, &received)
	payload := []byte(`{"id":1,"body":"hello"}`)
	var want int64
	b.ReportAllocs()
	for b.Loop() {
		if h.DeliverUser("u"+strconv.Itoa(int(want)%n), feed.Message{Payload: payload, Arrived: time.Now()}) != 1 {
			b.Fatal("not delivered")
		}
		want++
		// Keep at most a few frames in flight so no queue overflows.
		if want%16 == 0 {
			received.wait(b, want)
		}
	}
	received.wait(b, want)
}

// BenchmarkHubDeliverAllLoopback broadcasts to 1,000 real sessions and waits
// until every client has read the frame; ns/op is one full fan-out.
func BenchmarkHubDeliverAllLoopback(b *testing.B) {
	const n = 1000
	var received frameCounter
	h := loopbackHub(b, n, &received)
	payload := []byte(`{"id":1,"body":"to everyone"}`)
	var want int64
	b.ReportAllocs()
	for b.Loop() {
		if h.DeliverAll(feed.Message{Payload: payload, Arrived: time.Now()}) != n {
			b.Fatal("not delivered to all")
		}
		want += n
		received.wait(b, want)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/session")
}

// BenchmarkMelodyBroadcastFilterLoopback is the control for
// BenchmarkHubDeliverUserLoopback: the same delivery to one of 1,000 real
// sessions, made with melody's BroadcastFilter, which runs the filter over
// every session. The difference between the two is the O(n) scan.
func BenchmarkMelodyBroadcastFilterLoopback(b *testing.B) {
	const n = 1000
	var received frameCounter
	h := loopbackHub(b, n, &received)
	payload := []byte(`{"id":1,"body":"hello"}`)
	var want int64
	b.ReportAllocs()
	for b.Loop() {
		target := "u" + strconv.Itoa(int(want)%n)
		err := h.mel.BroadcastFilter(payload, func(s *melody.Session) bool {
			name, _ := s.Get(keyName)
			return name == target
		})
		if err != nil {
			b.Fatal(err)
		}
		want++
		if want%16 == 0 {
			received.wait(b, want)
		}
	}
	received.wait(b, want)
}

// fillIndexV2 registers n fake sessions under the names u0 ... u<n-1>, as
// live v2 sessions whose replay went through sequence 1.
func fillIndexV2(b *testing.B, n int) *index {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	ix := newIndex(maphash.MakeSeed())
	for i := range n {
		fs := &fakeSession{open: true}
		st := &sessionState{}
		st.v2.Store(&v2Session{s: fs, st: st, name: "u" + strconv.Itoa(i), m: m, wake: make(chan struct{}, 1), cur: newCursor(1)})
		ix.add("u"+strconv.Itoa(i), member{s: fs, st: st}, nil, 1, nil)
	}
	return ix
}

// BenchmarkDeliverUserV2 is BenchmarkDeliverUser to a v2 session: durable
// messages, each checked against the session's cursor and sent as an
// envelope (the one allocation per op). ns/op must not grow with n.
func BenchmarkDeliverUserV2(b *testing.B) {
	payload := []byte(`{"id":1,"body":"hello"}`)
	for _, n := range sessionCounts {
		b.Run("sessions="+strconv.Itoa(n), func(b *testing.B) {
			ix := fillIndexV2(b, n)
			name := "u" + strconv.Itoa(n/2)
			seq := uint64(1)
			b.ReportAllocs()
			for b.Loop() {
				d := delivery{msg: feed.Message{Payload: payload, Seq: seq + 1, Prev: seq}, text: true}
				seq++
				if ix.deliver(name, &d).queued != 1 {
					b.Fatal("not delivered")
				}
			}
		})
	}
}

// BenchmarkDeliverAllV2 is a durable broadcast to n v2 sessions: one
// envelope per op, shared by every session (allocs/op stays 1).
func BenchmarkDeliverAllV2(b *testing.B) {
	payload := []byte(`{"id":1,"body":"to everyone"}`)
	for _, n := range sessionCounts[:2] {
		b.Run("sessions="+strconv.Itoa(n), func(b *testing.B) {
			ix := fillIndexV2(b, n)
			seq := uint64(1)
			b.ReportAllocs()
			for b.Loop() {
				d := delivery{msg: feed.Message{Payload: payload, Seq: seq + 1, Prev: seq}, on: onAll, text: true}
				seq++
				if int(ix.deliverAll(&d).queued) != n {
					b.Fatal("not delivered to all")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/session")
		})
	}
}

func BenchmarkEnvelope(b *testing.B) {
	for _, tt := range []struct {
		name    string
		payload []byte
	}{
		{"json", []byte(`{"id":1,"body":"hello, a notification of a usual size","at":"2025-01-01T00:00:00Z"}`)},
		{"binary", []byte("\x00\x01\x02 not json, a notification of a usual size \xff\xfe")},
	} {
		b.Run(tt.name, func(b *testing.B) {
			m := feed.Message{Payload: tt.payload, Seq: 123456789, Prev: 123456700}
			b.ReportAllocs()
			for b.Loop() {
				_ = envelopeFrame(m)
			}
		})
	}
}

// replayResumer answers every resume with the same replay.
type replayResumer struct{ replay feed.Replay }

func (r replayResumer) Resume(context.Context, string, *uint64) (feed.Replay, error) {
	return r.replay, nil
}

func (r replayResumer) Snapshot(context.Context, []string) (feed.Snapshot, error) {
	return feed.Snapshot{}, nil
}

// BenchmarkReplayLoopback is the resume of a client that missed 1,000
// messages, over loopback with the production queue size (32): one op is
// a connection, its first message, the welcome and the 1,000 frames of its
// replay read. welcome-to-last-ms is the target (< 50 ms).
func BenchmarkReplayLoopback(b *testing.B) {
	const missed = 1000
	msgs := make([]feed.Message, missed)
	for i := range msgs {
		msgs[i] = feed.Message{Payload: []byte(`{"id":` + strconv.Itoa(i) + `,"body":"hello"}`), Seq: uint64(i + 1)}
	}
	cfg := Config{
		IdentifyMaxBytes: 1024, MessageMaxBytes: 1024, JoinTimeout: 5 * time.Second, QueueSize: 32,
		WriteTimeout: 10 * time.Second, PingPeriod: time.Minute, PongTimeout: 2 * time.Minute,
		IdentifyTimeout: 10 * time.Second, HandshakeTimeout: 10 * time.Second, MaxConnections: 10,
		MaxSessionsPerName: 10, UpstreamRate: 10, UpstreamBurst: 10, AppPing: time.Minute,
		Resumer: replayResumer{feed.Replay{Through: missed, Recovered: true, Messages: msgs}},
	}
	h, err := New(cfg, loopRouter{}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.Close(ctx)
		srv.Close()
	})
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	var afterWelcome time.Duration
	for b.Loop() {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"name":"u","v":2,"since":0}`)); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); err != nil {
			b.Fatal("welcome:", err)
		}
		welcomed := time.Now()
		for range missed {
			if _, _, err := c.ReadMessage(); err != nil {
				b.Fatal(err)
			}
		}
		afterWelcome += time.Since(welcomed)
		c.Close()
	}
	b.ReportMetric(float64(afterWelcome.Microseconds())/1000/float64(b.N), "welcome-to-last-ms")
}

// BenchmarkRecordDelivery is what counting one delivery costs: the
// counters, and, with an arrival time, one clock read and one
// notify_delivery_delay_seconds observation per frame queued.
func BenchmarkRecordDelivery(b *testing.B) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	for _, queued := range []int32{1, 1000} {
		for _, timed := range []bool{false, true} {
			b.Run("queued="+strconv.Itoa(int(queued))+"/delay="+strconv.FormatBool(timed), func(b *testing.B) {
				var arrived time.Time
				if timed {
					arrived = time.Now()
				}
				b.ReportAllocs()
				for b.Loop() {
					m.record(m.delivered.user, tally{queued: queued}, arrived)
				}
			})
		}
	}
}
