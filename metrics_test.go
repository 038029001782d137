package main

// What each labelled notify_* counter counts, end to end: every row brings
// about one situation through a real worker and asserts, from /metrics,
// which series moved and by how much; every other series of every
// labelled notify_* counter must stay where it was.

import (
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

const (
	handshakesOK          = `notify_handshakes_total{result="ok"}`
	handshakesRejected    = `notify_handshakes_total{result="rejected"}`
	handshakesUnavailable = `notify_handshakes_total{result="unavailable"}`

	closesIdentifyTimeout = `notify_limit_closes_total{reason="identify_timeout"}`
	closesTokenExpired    = `notify_limit_closes_total{reason="token_expired"}`
	closesSlowConsumer    = `notify_limit_closes_total{reason="slow_consumer"}`
	closesUpstreamRate    = `notify_limit_closes_total{reason="upstream_rate"}`
	closesSessionLimit    = `notify_limit_closes_total{reason="session_limit"}`
	closesPongTimeout     = `notify_limit_closes_total{reason="pong_timeout"}`
	closesWriteTimeout    = `notify_limit_closes_total{reason="write_timeout"}`

	refusedNotWebSocket    = `notify_refused_total{reason="not_websocket"}`
	refusedOrigin          = `notify_refused_total{reason="origin"}`
	refusedConnectionLimit = `notify_refused_total{reason="connection_limit"}`
	refusedClosing         = `notify_refused_total{reason="closing"}`

	upstreamOK     = `notify_upstream_total{result="ok"}`
	upstreamFailed = `notify_upstream_total{result="failed"}`

	droppedQueueFull = `notify_dropped_total{reason="queue_full"}`
	droppedAfterLoss = `notify_dropped_total{reason="after_loss"}`
	droppedClosing   = `notify_dropped_total{reason="closing"}`

	deliveriesUser = `notify_deliveries_total{kind="user"}`
	deliveriesAll  = `notify_deliveries_total{kind="all"}`

	natsMessagesUser = `notify_nats_messages_total{kind="user"}`
	natsMessagesAll  = `notify_nats_messages_total{kind="all"}`

	resumesRecovered    = `notify_resumes_total{outcome="recovered"}`
	resumesNotRecovered = `notify_resumes_total{outcome="not_recovered"}`
	resumesUnavailable  = `notify_resumes_total{outcome="unavailable"}`

	notRecoveredReset       = `notify_resumes_not_recovered_total{reason="reset"}`
	notRecoveredRetention   = `notify_resumes_not_recovered_total{reason="retention"}`
	notRecoveredReplayMax   = `notify_resumes_not_recovered_total{reason="replay_max"}`
	notRecoveredUnavailable = `notify_resumes_not_recovered_total{reason="unavailable"}`
	notRecoveredOther       = `notify_resumes_not_recovered_total{reason="other"}`

	feedClosesGap          = `notify_feed_closes_total{cause="gap"}`
	feedClosesStuck        = `notify_feed_closes_total{cause="stuck"}`
	feedClosesDisconnect   = `notify_feed_closes_total{cause="disconnect"}`
	feedClosesSlowConsumer = `notify_feed_closes_total{cause="slow_consumer"}`
	feedClosesLeaderChange = `notify_feed_closes_total{cause="leader_change"}`
	feedClosesStreamReset  = `notify_feed_closes_total{cause="stream_reset"}`
	feedClosesOther        = `notify_feed_closes_total{cause="other"}`

	feedLossesDisconnect   = `notify_feed_losses_total{cause="disconnect"}`
	feedLossesSlowConsumer = `notify_feed_losses_total{cause="slow_consumer"}`
	feedLossesLeaderChange = `notify_feed_losses_total{cause="leader_change"}`
	feedLossesStreamReset  = `notify_feed_losses_total{cause="stream_reset"}`

	jetStreamErrorsBarrier  = `notify_jetstream_errors_total{op="barrier"}`
	jetStreamErrorsFetch    = `notify_jetstream_errors_total{op="fetch"}`
	jetStreamErrorsInfo     = `notify_jetstream_errors_total{op="info"}`
	jetStreamErrorsSnapshot = `notify_jetstream_errors_total{op="snapshot"}`
	jetStreamErrorsSetup    = `notify_jetstream_errors_total{op="setup"}`
)

// notEndToEnd holds the labelled series no situation brought about
// through a whole worker can move on demand, and why; packages hub and
// worker cover them.
var notEndToEnd = map[string]string{
	// run stops accepting connections before it closes the hub, so an
	// upgrade reaches a closing hub only if it was already being served
	// when the hub began to close: a race no test can aim at.
	refusedClosing: "no upgrade reaches a closing hub through run",
	// A message meets a closing session only between melody marking the
	// session closed and the hub taking it out of the name index, an
	// instant no client can hold open.
	droppedClosing: "a message meets a closing session only in an instant",

	// Durable notifications: what takes a NATS cluster (fleet/ stages it
	// with real servers) or a fault inside the connection (worker/ and
	// hub/ bring it about on their own).
	resumesUnavailable:      "JetStream briefly unavailable (a leader election): fleet/ and hub/",
	notRecoveredOther:       "a reason the hub does not know: only a Resumer other than the worker gives one (hub/)",
	feedClosesStuck:         "a stored message that never reaches the worker: hub/ (a Resumer's snapshot)",
	feedClosesSlowConsumer:  "nats.go dropping from a full inbox: worker/ and hub/",
	feedClosesLeaderChange:  "a new stream leader: fleet/ (R3 leader killed), worker/ and hub/",
	feedClosesOther:         "a cause the hub does not know: hub/",
	feedLossesSlowConsumer:  "nats.go dropping from a full inbox: worker/",
	feedLossesLeaderChange:  "a new stream leader: fleet/, worker/",
	jetStreamErrorsBarrier:  "JetStream failing a request for a while: worker/",
	jetStreamErrorsFetch:    "JetStream failing a request for a while: worker/",
	jetStreamErrorsInfo:     "JetStream failing a request for a while: worker/",
	jetStreamErrorsSnapshot: "JetStream failing a request for a while: worker/",
	jetStreamErrorsSetup:    "JetStream failing a request for a while: worker/",
}

// section9Families are the counters of section 9. TestSection9Metrics
// (presence_test.go) meters them; TestMetricsCountWhatTheirHelpSays meters the others.
var section9Families = map[string]bool{
	"notify_presence_requests_total": true,
	"notify_events_total":            true,
	"notify_events_dropped_total":    true,
	"notify_acks_total":              true,
}

// meter reads one worker's labelled counters before and after a
// situation.
type meter struct {
	t      *testing.T
	addr   string
	series []string // every series of the labelled notify_* counters
	before map[string]float64
	// section9 meters only the counters of section 9 (presence, events,
	// acks: TestSection9Metrics); otherwise every other one.
	section9 bool
}

// start runs a worker for the row and meters it.
func (m *meter) start(cfg Config) *testWorker {
	m.t.Helper()
	tw := startWorker(m.t, cfg)
	m.addr = tw.addr
	return tw
}

// mark waits until every series in settled has that value, so that what
// the row's setup moved is counted, then takes the snapshot the row's
// situation is measured from.
func (m *meter) mark(settled map[string]float64) {
	m.t.Helper()
	var samples map[string]float64
	eventually(m.t, "the setup to be counted", func() bool {
		samples, _ = scrape(m.t, m.addr)
		for s, v := range settled {
			if samples[s] != v {
				return false
			}
		}
		return true
	})
	_, counters := scrape(m.t, m.addr)
	m.series = nil
	for s := range samples {
		family, _, labelled := strings.Cut(s, "{")
		if labelled && counters[family] && section9Families[family] == m.section9 {
			m.series = append(m.series, s)
		}
	}
	slices.Sort(m.series)
	m.before = samples
}

// check waits until every series in want has moved by its amount since
// mark, then asserts that each moved by exactly that and every other one
// not at all.
func (m *meter) check(want map[string]float64) {
	m.t.Helper()
	for s := range want {
		if !slices.Contains(m.series, s) {
			m.t.Fatalf("no labelled counter series %s in /metrics", s)
		}
	}
	var after map[string]float64
	for deadline := time.Now().Add(waitTimeout); ; {
		after, _ = scrape(m.t, m.addr)
		reached := true
		for s, d := range want {
			if after[s]-m.before[s] < d {
				reached = false
			}
		}
		if reached || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
	for _, s := range m.series {
		if got := after[s] - m.before[s]; got != want[s] {
			m.t.Errorf("%s moved by %v, want %v", s, got, want[s])
		}
	}
	// Each latency histogram observes once per count of its counter.
	for hist, count := range histogramCounts {
		if h, c := after[hist]-m.before[hist], after[count]-m.before[count]; h != c {
			m.t.Errorf("%s moved by %v, %s by %v: want the same", hist, h, count, c)
		}
	}
}

// histogramCounts pairs the count of each series of the latency
// histograms with the counter series it observes once per count of.
var histogramCounts = map[string]string{
	`notify_handshake_duration_seconds_count{result="ok"}`:          handshakesOK,
	`notify_handshake_duration_seconds_count{result="rejected"}`:    handshakesRejected,
	`notify_handshake_duration_seconds_count{result="unavailable"}`: handshakesUnavailable,
	`notify_delivery_delay_seconds_count{kind="user"}`:              deliveriesUser,
	`notify_delivery_delay_seconds_count{kind="all"}`:               deliveriesAll,
}

// The latency histograms: a handshake is observed once, by its result,
// and a delivery once per session it is queued to, by kind, core and
// durable, v1 and v2 alike; every row of TestMetricsCountWhatTheirHelpSays
// also checks each histogram's count against its counter.
func TestLatencyHistograms(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	waitStream(t, tw)
	m := &meter{t: t, addr: tw.addr}
	m.mark(nil)
	alice := live(t, client(t, tw, "alice"))
	bob := live(t, client(t, tw, "bob"))
	c := dial(t, tw.addr, "/")
	send(t, c, `{"name":"*"}`)
	expectRejected(t, c, 1008, "name may contain only")
	v2, _ := resume(t, tw, "carol", nil)

	nc := connectNATS(t, tw.natsURL)
	publish(t, nc, "notify.user.alice", `{"core":1}`)
	alice.expect(t, `{"core":1}`)
	publish(t, nc, "notify.all", `{"everyone":1}`)
	alice.expect(t, `{"everyone":1}`)
	bob.expect(t, `{"everyone":1}`)
	if f := readMsgV2(t, v2); string(f.Data) != `{"everyone":1}` {
		t.Fatalf("v2 session got %+v, want the broadcast", f)
	}
	publishDurable(t, jetStream(t, tw), "notify.user.carol", `{"durable":1}`)
	if f := readMsgV2(t, v2); string(f.Data) != `{"durable":1}` || f.seq() == 0 {
		t.Fatalf("v2 session got %+v, want the durable message", f)
	}

	want := map[string]float64{
		`notify_handshake_duration_seconds_count{result="ok"}`:       3,
		`notify_handshake_duration_seconds_count{result="rejected"}`: 1,
		`notify_delivery_delay_seconds_count{kind="user"}`:           2,
		`notify_delivery_delay_seconds_count{kind="all"}`:            3,
	}
	var after map[string]float64
	eventually(t, "the histograms to count", func() bool {
		after, _ = scrape(t, tw.addr)
		for s, d := range want {
			if after[s]-m.before[s] < d {
				return false
			}
		}
		return true
	})
	for hist := range histogramCounts {
		if got := after[hist] - m.before[hist]; got != want[hist] {
			t.Errorf("%s moved by %v, want %v", hist, got, want[hist])
		}
		sum := strings.Replace(hist, "_count{", "_sum{", 1)
		if d := after[sum] - m.before[sum]; (want[hist] > 0) != (d > 0) || d > 10*want[hist] {
			t.Errorf("%s moved by %v for %v observations", sum, d, want[hist])
		}
		inf := strings.Replace(hist, "_count{", `_bucket{`, 1)
		inf = strings.Replace(inf, "}", `,le="+Inf"}`, 1)
		if after[inf] != after[hist] {
			t.Errorf("%s = %v, %s = %v", inf, after[inf], hist, after[hist])
		}
	}
}

// stalledConfig lets a client that stops reading overflow its queue of 4
// soon, and keeps its session in the index for a while after: the close
// that follows the loss waits up to NOTIFY_WRITE_TIMEOUT on the stalled
// writer.
func stalledConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.SessionQueue = 4
	cfg.WriteTimeout = 30 * time.Second
	cfg.PingPeriod, cfg.PongTimeout = 30*time.Second, time.Minute
	return cfg
}

// fillUntilDropped sends requests of 256 KiB to name's stalled session
// until one is not queued, and returns how many were. Each reply comes
// after the delivery was counted.
func fillUntilDropped(t *testing.T, tw *testWorker, name string) int {
	t.Helper()
	nc := connectNATS(t, tw.natsURL)
	payload := make([]byte, 256<<10)
	most := 2*sendBufferMax(t)/len(payload) + 1 // more than the socket and a queue of 4 hold
	for queued := 0; queued < most; queued++ {
		if r := request(t, nc, "notify.user."+name, payload); r.Delivered == 0 {
			return queued
		}
	}
	t.Fatalf("%d messages of %d bytes queued to a client that does not read; its queue never overflowed", most, len(payload))
	return 0
}

// TestMetricsCountWhatTheirHelpSays brings about, for every label value of
// every labelled notify_* counter, the situation its help text names, and
// asserts that exactly the series that situation concerns moved.
func TestMetricsCountWhatTheirHelpSays(t *testing.T) {
	rows := []struct {
		name string
		// run starts a worker with m.start, calls m.mark once the worker
		// is in the state before the situation, brings the situation
		// about and waits for its outcome; it returns how far each series
		// must have moved since the mark.
		run func(t *testing.T, m *meter) map[string]float64
	}{
		{"a client identifies", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			m.mark(nil)
			client(t, tw, "alice")
			return map[string]float64{handshakesOK: 1}
		}},
		{"a client identifies with a token in the query", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(withJWT(testConfig(t)))
			m.mark(nil)
			c := dial(t, tw.addr, "/?token="+token(t, "alice", nil))
			expect(t, c, welcome("alice"))
			return map[string]float64{handshakesOK: 1}
		}},
		{"a first message breaks the name rule", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			m.mark(nil)
			c := dial(t, tw.addr, "/")
			send(t, c, `{"name":"*"}`)
			expectRejected(t, c, 1008, "name may contain only")
			return map[string]float64{handshakesRejected: 1}
		}},
		{"a first message holds an expired token", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(withJWT(testConfig(t)))
			m.mark(nil)
			c := dial(t, tw.addr, "/")
			send(t, c, `{"token":"`+token(t, "alice", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() })+`"}`)
			expectRejected(t, c, 4001, "token expired")
			return map[string]float64{handshakesRejected: 1}
		}},
		{"NATS is down when a client identifies", func(t *testing.T, m *meter) map[string]float64 {
			srv := startNATS(t, nil)
			cfg := testConfig(t)
			cfg.NATSURLs = []string{srv.ClientURL()}
			// Without durable support: the loss of the feed is another
			// row's, and would be counted by nats.go's callback at a time
			// /readyz does not tell.
			cfg.Stream = streamOff
			tw := m.start(cfg)
			stopNATS(srv)
			eventually(t, "/readyz 503 without NATS", func() bool { return status(t, tw.url("/readyz")) == 503 })
			m.mark(nil)
			c := dial(t, tw.addr, "/")
			send(t, c, `{"name":"alice"}`)
			expectRejected(t, c, 1013, "service unavailable")
			return map[string]float64{handshakesUnavailable: 1}
		}},
		{"one session more than NOTIFY_MAX_SESSIONS_PER_NAME", func(t *testing.T, m *meter) map[string]float64 {
			cfg := testConfig(t)
			cfg.MaxSessionsPerName = 1
			tw := m.start(cfg)
			client(t, tw, "alice")
			m.mark(map[string]float64{handshakesOK: 1})
			c := dial(t, tw.addr, "/")
			send(t, c, `{"name":"alice"}`)
			expectRejected(t, c, 1008, "too many sessions for this name")
			return map[string]float64{closesSessionLimit: 1, handshakesRejected: 1}
		}},
		{"no first message within NOTIFY_IDENTIFY_TIMEOUT", func(t *testing.T, m *meter) map[string]float64 {
			cfg := testConfig(t)
			cfg.IdentifyTimeout = 200 * time.Millisecond
			tw := m.start(cfg)
			m.mark(nil)
			expectRejected(t, dial(t, tw.addr, "/"), 1008, "identify timeout")
			return map[string]float64{closesIdentifyTimeout: 1}
		}},
		{"the token expires while connected", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(withJWT(testConfig(t)))
			c := dial(t, tw.addr, "/")
			send(t, c, `{"token":"`+token(t, "alice", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(2 * time.Second).Unix() })+`"}`)
			expect(t, c, welcome("alice"))
			m.mark(map[string]float64{handshakesOK: 1})
			expectRejected(t, c, 4001, "token expired")
			return map[string]float64{closesTokenExpired: 1}
		}},
		// A session closed for its upstream rate was identified: its
		// handshake counts as ok, never also as rejected.
		{"upstream faster than NOTIFY_UPSTREAM_RATE", func(t *testing.T, m *meter) map[string]float64 {
			cfg := testConfig(t)
			cfg.UpstreamRate, cfg.UpstreamBurst = 0.001, 3 // no refill within the test
			tw := m.start(cfg)
			c := client(t, tw, "alice")
			m.mark(map[string]float64{handshakesOK: 1})
			for range cfg.UpstreamBurst + 1 {
				send(t, c, "up")
			}
			expectRejected(t, c, 1008, "upstream rate limit exceeded")
			return map[string]float64{closesUpstreamRate: 1, upstreamOK: float64(cfg.UpstreamBurst)}
		}},
		{"no pong within NOTIFY_PONG_TIMEOUT", func(t *testing.T, m *meter) map[string]float64 {
			cfg := testConfig(t)
			cfg.PingPeriod, cfg.PongTimeout = 100*time.Millisecond, 500*time.Millisecond
			tw := m.start(cfg)
			m.mark(nil)
			c := client(t, tw, "alice")
			c.SetPingHandler(func(string) error { return nil }) // reads, but never answers a ping
			if _, code, _ := readClose(t, c); code != 1006 {
				t.Fatalf("close %d, want the connection cut", code)
			}
			return map[string]float64{handshakesOK: 1, closesPongTimeout: 1}
		}},
		{"a write to a client that stopped reading outlasts NOTIFY_WRITE_TIMEOUT", func(t *testing.T, m *meter) map[string]float64 {
			cfg := stalledConfig(t)
			cfg.SessionQueue = 1024 // the queue holds what the socket does not: no slow-consumer close
			cfg.WriteTimeout = 2 * time.Second
			tw := m.start(cfg)
			stalled := dialStalled(t, tw.addr, "/")
			identify(t, stalled, "stuck")
			m.mark(map[string]float64{handshakesOK: 1})
			nc := connectNATS(t, tw.natsURL)
			payload := make([]byte, 256<<10)
			n := 2*sendBufferMax(t)/len(payload) + 1 // more than the socket holds
			for range n {
				if r := request(t, nc, "notify.user.stuck", payload); r.Delivered != 1 {
					t.Fatalf("reply %+v, want the message queued", r)
				}
			}
			// The client reads nothing, so the close shows only in the metric.
			eventually(t, "the write timeout", func() bool { return metric(t, tw.addr, closesWriteTimeout) == 1 })
			return map[string]float64{closesWriteTimeout: 1, deliveriesUser: float64(n), natsMessagesUser: float64(n)}
		}},
		{"a slow client's queue overflows", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(stalledConfig(t))
			identify(t, dialStalled(t, tw.addr, "/"), "slow")
			m.mark(map[string]float64{handshakesOK: 1})
			queued := fillUntilDropped(t, tw, "slow")
			return map[string]float64{
				closesSlowConsumer: 1, droppedQueueFull: 1,
				deliveriesUser: float64(queued), natsMessagesUser: float64(queued + 1),
			}
		}},
		// The slow session stays in the index while its writer is blocked
		// on the full socket, so the next message meets it. If the writer
		// happened not to be writing when the queue overflowed (the
		// scheduler did not run it while the socket still had room), the
		// close goes out at once and the session is gone before the
		// message: "no responders". The setup is then run again.
		{"a message for a session that lost one", func(t *testing.T, m *meter) map[string]float64 {
			for attempt := 1; ; attempt++ {
				tw := m.start(stalledConfig(t))
				identify(t, dialStalled(t, tw.addr, "/"), "slow")
				queued := fillUntilDropped(t, tw, "slow")
				m.mark(map[string]float64{handshakesOK: 1, droppedQueueFull: 1, deliveriesUser: float64(queued)})
				msg, err := connectNATS(t, tw.natsURL).Request("notify.user.slow", []byte("after the loss"), waitTimeout)
				if errors.Is(err, nats.ErrNoResponders) && attempt < 5 {
					t.Logf("attempt %d: the slow session had already left", attempt)
					continue
				}
				if err != nil {
					t.Fatalf("request notify.user.slow: %v", err)
				}
				if !strings.Contains(string(msg.Data), `"delivered":0`) {
					t.Fatalf("reply %q, want nothing queued after the loss", msg.Data)
				}
				return map[string]float64{droppedAfterLoss: 1, natsMessagesUser: 1}
			}
		}},
		{"a client sends upstream", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			sub := subscribe(t, connectNATS(t, tw.natsURL), "notify.inbound.alice")
			c := client(t, tw, "alice")
			m.mark(map[string]float64{handshakesOK: 1})
			send(t, c, "up")
			next(t, sub)
			return map[string]float64{upstreamOK: 1}
		}},
		{"NATS refuses an upstream message", func(t *testing.T, m *meter) map[string]float64 {
			srv := startNATS(t, func(o *server.Options) { o.MaxPayload = 1024 })
			cfg := testConfig(t)
			cfg.NATSURLs = []string{srv.ClientURL()}
			tw := m.start(cfg)
			c := client(t, tw, "alice")
			m.mark(map[string]float64{handshakesOK: 1})
			send(t, c, strings.Repeat("x", 2048))
			expect(t, c, `{"type":"error","error":"message not forwarded: service unavailable"}`)
			return map[string]float64{upstreamFailed: 1}
		}},
		{"a plain GET on the WebSocket endpoint", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			m.mark(nil)
			if code := status(t, tw.url("/")); code != http.StatusUpgradeRequired {
				t.Fatalf("GET / = %d", code)
			}
			return map[string]float64{refusedNotWebSocket: 1}
		}},
		{"a page from another origin", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			m.mark(nil)
			if _, resp, _ := dialHeader(t, tw.addr, "/", http.Header{"Origin": {"https://evil.example"}}); resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("dial from another origin: %v, want 403", resp)
			}
			return map[string]float64{refusedOrigin: 1}
		}},
		{"an upgrade past NOTIFY_MAX_CONNECTIONS", func(t *testing.T, m *meter) map[string]float64 {
			cfg := testConfig(t)
			cfg.MaxConnections = 1
			tw := m.start(cfg)
			dial(t, tw.addr, "/")
			m.mark(nil)
			if _, resp, _ := dialHeader(t, tw.addr, "/", nil); resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("dial past the cap: %v, want 503", resp)
			}
			return map[string]float64{refusedConnectionLimit: 1}
		}},
		{"a message to a name with two sessions", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			a, b := client(t, tw, "alice"), client(t, tw, "alice")
			client(t, tw, "bob")
			m.mark(map[string]float64{handshakesOK: 3})
			publish(t, connectNATS(t, tw.natsURL), "notify.user.alice", "hi")
			expect(t, a, "hi")
			expect(t, b, "hi")
			return map[string]float64{deliveriesUser: 2, natsMessagesUser: 1}
		}},
		{"a broadcast to two identified sessions and an unidentified one", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			a, b := client(t, tw, "alice"), client(t, tw, "bob")
			dial(t, tw.addr, "/")
			m.mark(map[string]float64{handshakesOK: 2})
			publish(t, connectNATS(t, tw.natsURL), "notify.all", "hi all")
			expect(t, a, "hi all")
			expect(t, b, "hi all")
			return map[string]float64{deliveriesAll: 2, natsMessagesAll: 1}
		}},
		{"a v2 client resumes and misses nothing", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			c, w := resume(t, tw, "alice", nil)
			c.Close()
			m.mark(map[string]float64{handshakesOK: 1, resumesRecovered: 1})
			publishDurable(t, jetStream(t, tw), "notify.user.alice", `{"n":1}`)
			_, w = resume(t, tw, "alice", ptr(w.seq()))
			if !*w.Recovered || w.Replayed != 1 {
				t.Fatalf("welcome %+v", w)
			}
			return map[string]float64{handshakesOK: 1, resumesRecovered: 1}
		}},
		{"a v2 client resumes from ahead of the stream", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			m.mark(nil)
			resume(t, tw, "alice", ptr(1<<40))
			return map[string]float64{handshakesOK: 1, resumesNotRecovered: 1, notRecoveredReset: 1}
		}},
		{"a v2 client resumes past the per-subject limit", func(t *testing.T, m *meter) map[string]float64 {
			cfg := testConfig(t)
			cfg.StreamMaxMsgsPerSubject = 1
			tw := m.start(cfg)
			c, w := resume(t, tw, "alice", nil)
			c.Close()
			m.mark(map[string]float64{handshakesOK: 1, resumesRecovered: 1})
			publishDurable(t, jetStream(t, tw), "notify.user.alice", `{"n":1}`)
			resume(t, tw, "alice", ptr(w.seq()))
			return map[string]float64{handshakesOK: 1, resumesNotRecovered: 1, notRecoveredRetention: 1}
		}},
		{"a v2 client missed more than NOTIFY_REPLAY_MAX", func(t *testing.T, m *meter) map[string]float64 {
			cfg := testConfig(t)
			cfg.ReplayMax = 1
			tw := m.start(cfg)
			c, w := resume(t, tw, "alice", nil)
			c.Close()
			m.mark(map[string]float64{handshakesOK: 1, resumesRecovered: 1})
			js := jetStream(t, tw)
			publishDurable(t, js, "notify.user.alice", `{"n":1}`)
			publishDurable(t, js, "notify.user.alice", `{"n":2}`)
			resume(t, tw, "alice", ptr(w.seq()))
			return map[string]float64{handshakesOK: 1, resumesNotRecovered: 1, notRecoveredReplayMax: 1}
		}},
		{"a v2 client resumes with NOTIFY_STREAM=off", func(t *testing.T, m *meter) map[string]float64 {
			cfg := testConfig(t)
			cfg.Stream = streamOff
			tw := m.start(cfg)
			m.mark(nil)
			resume(t, tw, "alice", ptr(1))
			return map[string]float64{handshakesOK: 1, resumesNotRecovered: 1, notRecoveredUnavailable: 1}
		}},
		// A message of the stream that shows, in its Nats-Last-Sequence,
		// one before it this session was not sent: what a message lost on
		// its way to the worker looks like.
		{"a durable message after a gap", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			c, w := resume(t, tw, "alice", nil)
			m.mark(map[string]float64{handshakesOK: 1, resumesRecovered: 1})
			publishStreamCopy(t, connectNATS(t, tw.natsURL), "notify.user.alice", w.seq()+10, w.seq()+9)
			if _, code, _ := readClose(t, c); code != websocket.CloseServiceRestart {
				t.Fatalf("close %d, want 1012", code)
			}
			return map[string]float64{feedClosesGap: 1, droppedClosing: 1, natsMessagesUser: 1}
		}},
		{"a durable message whose sequence goes back: the stream was reset", func(t *testing.T, m *meter) map[string]float64 {
			tw := m.start(testConfig(t))
			js := jetStream(t, tw)
			c, _ := resume(t, tw, "alice", nil)
			bob := client(t, tw, "bob") // v1: a stream reset does not concern it
			s := publishDurable(t, js, "notify.user.alice", `{"n":1}`)
			readMsgV2(t, c)
			m.mark(map[string]float64{handshakesOK: 2, resumesRecovered: 1, deliveriesUser: 1, natsMessagesUser: 1})
			publishStreamCopy(t, connectNATS(t, tw.natsURL), "notify.user.bob", s-1, 0)
			if _, code, _ := readClose(t, c); code != websocket.CloseServiceRestart {
				t.Fatalf("close %d, want 1012", code)
			}
			expect(t, bob, `{"copy":true}`)
			return map[string]float64{feedLossesStreamReset: 1, feedClosesStreamReset: 1, deliveriesUser: 1, natsMessagesUser: 1}
		}},
		{"the worker's NATS connection drops under a v2 session", func(t *testing.T, m *meter) map[string]float64 {
			store := t.TempDir()
			jsOn := func(o *server.Options) { o.JetStream, o.StoreDir = true, store }
			srv := startNATS(t, jsOn)
			port := natsPort(srv)
			cfg := testConfig(t)
			cfg.NATSURLs = []string{srv.ClientURL()}
			cfg.NATSReconnectWait = 20 * time.Millisecond
			tw := m.start(cfg)
			eventually(t, "the stream", func() bool { return metric(t, tw.addr, "notify_stream_ready") == 1 })
			c, _ := resume(t, tw, "alice", nil)
			m.mark(map[string]float64{handshakesOK: 1, resumesRecovered: 1})
			stopNATS(srv)
			startNATS(t, func(o *server.Options) { jsOn(o); o.Port = port })
			if _, code, _ := readClose(t, c); code != websocket.CloseServiceRestart {
				t.Fatalf("close %d, want 1012", code)
			}
			eventually(t, "the reconnect", func() bool { return status(t, tw.url("/readyz")) == 200 })
			return map[string]float64{feedLossesDisconnect: 1, feedClosesDisconnect: 1}
		}},
	}

	moved := map[string]bool{}
	var series []string
	recorded := 0
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			m := &meter{t: t}
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

	// Every labelled series is moved by some row, or is listed, with why,
	// as beyond an end-to-end test.
	if recorded < len(rows) {
		t.Skipf("%d of %d rows ran; coverage of the labels not checked", recorded, len(rows))
	}
	for _, s := range series {
		if _, ok := notEndToEnd[s]; !moved[s] && !ok {
			t.Errorf("no row moves %s: add the situation it counts", s)
		}
	}
	for _, s := range slices.Sorted(maps.Keys(notEndToEnd)) {
		if !slices.Contains(series, s) {
			t.Errorf("notEndToEnd lists %s, which /metrics does not serve", s)
		}
	}
}

// publishStreamCopy publishes what the stream's republished copy of a
// stored message looks like, with seq and prev as its Nats-Sequence and
// Nats-Last-Sequence, straight to subject.
func publishStreamCopy(t *testing.T, nc *nats.Conn, subject string, seq, prev uint64) {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(`{"copy":true}`)
	m.Header.Set("Nats-Stream", "NOTIFY")
	m.Header.Set("Nats-Subject", subject)
	m.Header.Set("Nats-Sequence", strconv.FormatUint(seq, 10))
	m.Header.Set("Nats-Last-Sequence", strconv.FormatUint(prev, 10))
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
