package hub

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/feed"
)

// counter reads one series of a counter from reg, as a scrape would: the
// series of name whose label has value (label "": the counter has no
// labels). A series that is not there fails t.
func counter(t *testing.T, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label == "" && len(m.GetLabel()) == 0 {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// histogramCount reads the number of observations of an unlabelled
// histogram from reg.
func histogramCount(t *testing.T, reg prometheus.Gatherer, name string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no histogram %s", name)
	return 0
}

func send(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// notify_handshakes_total counts handshakes, each once, by result; a close
// after the welcome is not a handshake.
func TestHandshakesMetric(t *testing.T) {
	tests := []struct {
		name    string
		joinErr error
		client  func(t *testing.T, url string, r *fakeRouter)
		// want is notify_handshakes_total by result; closes, some of
		// notify_limit_closes_total by reason.
		want, closes map[string]float64
	}{
		{"welcomed", nil, func(t *testing.T, url string, r *fakeRouter) {
			// The welcome may arrive before it is counted; the leave comes
			// after, on the same goroutine.
			join(t, url, "a").Close()
			r.waitLeft(t, "a", 1)
		}, map[string]float64{"ok": 1, "rejected": 0, "unavailable": 0}, nil},
		{"welcomed, then closed for its upstream rate", nil, func(t *testing.T, url string, r *fakeRouter) {
			c := join(t, url, "a")
			send(t, c, "within the burst")
			send(t, c, "past the rate")
			if code := closeCode(t, c); code != closePolicyViolation {
				t.Fatalf("close %d, want %d", code, closePolicyViolation)
			}
		}, map[string]float64{"ok": 1, "rejected": 0, "unavailable": 0}, map[string]float64{"upstream_rate": 1}},
		{"bad first message", nil, func(t *testing.T, url string, r *fakeRouter) {
			c := dial(t, url)
			send(t, c, `{"name":"*"}`)
			if code := closeCode(t, c); code != closePolicyViolation {
				t.Fatalf("close %d, want %d", code, closePolicyViolation)
			}
		}, map[string]float64{"ok": 0, "rejected": 1, "unavailable": 0}, nil},
		{"join failed", errors.New("nats down"), func(t *testing.T, url string, r *fakeRouter) {
			c := dial(t, url)
			send(t, c, `{"name":"a"}`)
			if code := closeCode(t, c); code != closeTryAgainLater {
				t.Fatalf("close %d, want %d", code, closeTryAgainLater)
			}
		}, map[string]float64{"ok": 0, "rejected": 0, "unavailable": 1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newFakeRouter()
			r.joinErr = tt.joinErr
			cfg := testConfig()
			cfg.UpstreamRate, cfg.UpstreamBurst = 1, 1
			_, url, reg := startHubWith(t, cfg, r, discardLogger())
			tt.client(t, url, r)
			// Each count is made before the frame that ends the client's
			// wait: a close frame, or the welcome's leave.
			for result, want := range tt.want {
				if got := counter(t, reg, "notify_handshakes_total", "result", result); got != want {
					t.Errorf(`notify_handshakes_total{result=%q} = %v, want %v`, result, got, want)
				}
			}
			for reason, want := range tt.closes {
				if got := counter(t, reg, "notify_limit_closes_total", "reason", reason); got != want {
					t.Errorf(`notify_limit_closes_total{reason=%q} = %v, want %v`, reason, got, want)
				}
			}
		})
	}
}

// notify_limit_closes_total counts each session closed by a limit once,
// by the limit that closed it: a stalled client whose queue overflowed is a
// slow consumer, not also a timed-out write; a write that times out is not
// a pong timeout.
func TestLimitClosesMetric(t *testing.T) {
	big := make([]byte, 1<<20)
	silent := testConfig()
	silent.PingPeriod, silent.PongTimeout = 100*time.Millisecond, 300*time.Millisecond
	tests := []struct {
		name   string
		cfg    Config
		client func(t *testing.T, h *Hub, url string)
		want   map[string]float64
	}{
		{"stalled client, queue never full", stalledConfig(), func(t *testing.T, h *Hub, url string) {
			joinStalled(t, url, "a")
			// More than the sockets hold, less than the queue.
			for range 16 {
				if h.DeliverUser("a", feed.Message{Payload: big}) != 1 {
					t.Fatal("a message was not queued")
				}
			}
		}, map[string]float64{"write_timeout": 1, "pong_timeout": 0, "slow_consumer": 0}},
		{"stalled client, queue overflows", stalledConfig(), func(t *testing.T, h *Hub, url string) {
			joinStalled(t, url, "a")
			for i := 0; h.DeliverUser("a", feed.Message{Payload: big}) == 1; i++ {
				if i > 1000 {
					t.Fatal("the queue never overflowed")
				}
			}
		}, map[string]float64{"slow_consumer": 1, "write_timeout": 0, "pong_timeout": 0}},
		{"silent peer", silent, func(t *testing.T, h *Hub, url string) {
			// Pings are answered only while a client reads.
			join(t, url, "a")
		}, map[string]float64{"pong_timeout": 1, "write_timeout": 0, "slow_consumer": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // the stalled clients wait out their write timeout
			r := newFakeRouter()
			h, url, reg := startHubWith(t, tt.cfg, r, discardLogger())
			tt.client(t, h, url)
			r.waitLeft(t, "a", 1) // every count is made before the session ends
			for _, reason := range slices.Sorted(maps.Keys(tt.want)) {
				if got, want := counter(t, reg, "notify_limit_closes_total", "reason", reason), tt.want[reason]; got != want {
					t.Errorf(`notify_limit_closes_total{reason=%q} = %v, want %v`, reason, got, want)
				}
			}
		})
	}
}
