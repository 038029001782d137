package hub

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/feed"
)

// metrics are the hub's Prometheus series. Every labelled series is bound
// once, here, so each label value is spelled in one place, every series is
// exported (at 0) from the start, and a call site names a field instead of
// a string.
type metrics struct {
	connections prometheus.Gauge
	identified  prometheus.Gauge
	names       prometheus.Gauge

	delivered struct {
		user, all deliveryKind
	}
	dropped struct {
		queueFull, afterLoss, closing prometheus.Counter
	}
	handshakes struct {
		ok, rejected, unavailable handshakeResult
	}
	upstream struct {
		ok, failed prometheus.Counter
	}
	acks struct {
		accepted, invalid, refused prometheus.Counter
	}
	closes struct {
		identifyTimeout, tokenExpired, slowConsumer, upstreamRate, sessionLimit, pongTimeout, writeTimeout prometheus.Counter
	}
	refused struct {
		notWebSocket, origin, connectionLimit, closing prometheus.Counter
	}

	// v2 sessions.
	resumes struct {
		recovered, notRecovered, unavailable prometheus.Counter
	}
	notRecovered   map[string]prometheus.Counter // by feed.Reason*, and "other"
	replayed       prometheus.Counter
	replayDuration prometheus.Histogram
	feedCloses     struct {
		gap, stuck prometheus.Counter
		byCause    map[string]prometheus.Counter // FeedLost's causes, and "other"
	}
	appPings   prometheus.Counter
	duplicates prometheus.Counter
}

// deliveryKind is one kind of live delivery: its series of
// notify_deliveries_total and of notify_delivery_delay_seconds.
type deliveryKind struct {
	count prometheus.Counter
	delay prometheus.Observer
}

// handshakeResult is one handshake result: its series of
// notify_handshakes_total and of notify_handshake_duration_seconds.
type handshakeResult struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// handshakeEnd is a handshake result for one session that took took:
// counting it (Inc, as closeFor counts) also observes its duration.
type handshakeEnd struct {
	r    *handshakeResult
	took time.Duration
}

// Inc observes before it counts, so that a scrape that sees the count
// sees the observation.
func (e handshakeEnd) Inc() {
	e.r.duration.Observe(e.took.Seconds())
	e.r.count.Inc()
}

// Buckets of the latency histograms, sub-millisecond to seconds: a
// delivery is queued in microseconds when the worker keeps up; a
// handshake takes a NATS round trip (the join), a JWT check, and for a
// resume JetStream reads, bounded by the join timeout (5 s by default).
var (
	deliveryDelayBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	handshakeBuckets     = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
)

// labelOther stands for a cause or a reason this hub does not know (say,
// from a newer worker), so that a label's values stay the ones bound here.
const labelOther = "other"

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_deliveries_total",
		Help: "Messages queued to sessions by a live delivery, by kind (user: one name's sessions; all: every identified session); " +
			"for a v2 session still replaying, when it leaves the buffer. Replays are counted in notify_replayed_messages_total.",
	}, []string{"kind"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_dropped_total",
		Help: "Messages not queued to a session they were for, by reason: queue_full (the session's queue, or a v2 session's replay buffer, " +
			"was full; the session is then disconnected), after_loss (the session lost one before and is being disconnected), " +
			"closing (the session was closing, or a v2 session was closed with 1012 before it: the message that showed the gap, " +
			"and those it had buffered during its replay).",
	}, []string{"reason"})
	deliveryDelay := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "notify_delivery_delay_seconds",
		Help: "Time from the worker taking a NATS message from its subscriptions' inbox to the message being queued to a " +
			"session, observed once per message queued (so its count moves with notify_deliveries_total), by the same kind " +
			"(user, all). For a v2 session still replaying, up to when the message leaves the replay buffer.",
		Buckets: deliveryDelayBuckets,
	}, []string{"kind"})
	handshakeDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "notify_handshake_duration_seconds",
		Help: "Time from the upgrade request to the handshake's end (the welcome queued, or the close that refused it), " +
			"observed once per handshake counted in notify_handshakes_total, by the same result (ok, rejected, unavailable).",
		Buckets: handshakeBuckets,
	}, []string{"result"})
	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_handshakes_total",
		Help: "Handshakes (a first message, or a token in the query), by result: ok (welcomed), rejected (bad first message, " +
			"token or name, or the per-name session limit), unavailable (the join, or a v2 session's resume, failed). " +
			"A close after the welcome is not one.",
	}, []string{"result"})
	resumes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_resumes_total",
		Help: "Resumes of v2 sessions, by outcome: recovered (welcomed with recovered true), not_recovered (welcomed with " +
			"recovered false), unavailable (closed with 1013: the resume failed). A session that ended before its welcome is not counted.",
	}, []string{"outcome"})
	notRecovered := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_resumes_not_recovered_total",
		Help: "v2 sessions welcomed with recovered false, by the welcome's reason: reset, retention, replay_max, unavailable, " +
			"other (a reason this worker does not know).",
	}, []string{"reason"})
	feedCloses := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_feed_closes_total",
		Help: "v2 sessions closed with 1012 because they may have missed a durable message, by cause: gap (a message's previous " +
			"sequence was not sent to it), stuck (a message two snapshots showed was never sent), and the causes of a feed loss " +
			"reported by the messaging side: disconnect, slow_consumer, leader_change, stream_reset, other.",
	}, []string{"cause"})
	upstream := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_upstream_total",
		Help: "Client messages after the welcome handed to the router, by result: ok, failed (not forwarded; the client got an error frame). " +
			"A message past the rate limit is not: it closes the session.",
	}, []string{"result"})
	closes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_limit_closes_total",
		Help: "Sessions closed by a limit, each once, by the limit that closed it: identify_timeout, token_expired (while connected), " +
			"slow_consumer, upstream_rate, session_limit, pong_timeout (no pong in time), write_timeout (one write took too long).",
	}, []string{"reason"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_refused_total",
		Help: "Upgrade requests refused before the upgrade, by reason (not_websocket, origin, connection_limit, closing).",
	}, []string{"reason"})

	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_connections",
			Help: "Open WebSocket connections, identified or not.",
		}),
		identified: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_sessions_identified",
			Help: "Open sessions that have been welcomed (identified).",
		}),
		names: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_names",
			Help: "Distinct names with at least one session on this worker.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_replayed_messages_total",
			Help: "Messages queued to v2 sessions as their replay (after the welcome, counted in its replayed), including live " +
				"ones merged into it. Live deliveries are counted in notify_deliveries_total.",
		}),
		replayDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "notify_replay_duration_seconds",
			Help: "Time from a v2 session's resume starting (before its Resume call) to the last frame of its replay queued " +
				"(the welcome when nothing is replayed). Replays cut short by a close are not observed.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		appPings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_app_pings_total",
			Help: "App ping frames queued to v2 sessions.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_duplicates_total",
			Help: "Durable messages not sent to a v2 session because it was sent that sequence already (in its replay or live), " +
				"or, resuming without since, asked only for what comes after its welcome's seq. Not a loss.",
		}),
	}
	for _, k := range []struct {
		kind  *deliveryKind
		label string
	}{{&m.delivered.user, "user"}, {&m.delivered.all, "all"}} {
		*k.kind = deliveryKind{count: deliveries.WithLabelValues(k.label), delay: deliveryDelay.WithLabelValues(k.label)}
	}
	m.dropped.queueFull = dropped.WithLabelValues("queue_full")
	m.dropped.afterLoss = dropped.WithLabelValues("after_loss")
	m.dropped.closing = dropped.WithLabelValues("closing")
	for _, r := range []struct {
		result *handshakeResult
		label  string
	}{{&m.handshakes.ok, "ok"}, {&m.handshakes.rejected, "rejected"}, {&m.handshakes.unavailable, "unavailable"}} {
		*r.result = handshakeResult{count: handshakes.WithLabelValues(r.label), duration: handshakeDuration.WithLabelValues(r.label)}
	}
	m.upstream.ok = upstream.WithLabelValues("ok")
	m.upstream.failed = upstream.WithLabelValues("failed")
	acks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_acks_total",
		Help: "Ack frames from v2 sessions, by result: accepted (handed to the worker to publish), invalid (a malformed seq: " +
			"answered with an error frame, the session stays), refused (no event publisher: answered with an error frame). " +
			"Acks count against the upstream rate limit but not in notify_upstream_total.",
	}, []string{"result"})
	m.acks.accepted = acks.WithLabelValues("accepted")
	m.acks.invalid = acks.WithLabelValues("invalid")
	m.acks.refused = acks.WithLabelValues("refused")
	m.closes.identifyTimeout = closes.WithLabelValues("identify_timeout")
	m.closes.tokenExpired = closes.WithLabelValues("token_expired")
	m.closes.slowConsumer = closes.WithLabelValues("slow_consumer")
	m.closes.upstreamRate = closes.WithLabelValues("upstream_rate")
	m.closes.sessionLimit = closes.WithLabelValues("session_limit")
	m.closes.pongTimeout = closes.WithLabelValues("pong_timeout")
	m.closes.writeTimeout = closes.WithLabelValues("write_timeout")
	m.refused.notWebSocket = refused.WithLabelValues("not_websocket")
	m.refused.origin = refused.WithLabelValues("origin")
	m.refused.connectionLimit = refused.WithLabelValues("connection_limit")
	m.refused.closing = refused.WithLabelValues("closing")
	m.resumes.recovered = resumes.WithLabelValues("recovered")
	m.resumes.notRecovered = resumes.WithLabelValues("not_recovered")
	m.resumes.unavailable = resumes.WithLabelValues("unavailable")
	m.notRecovered = make(map[string]prometheus.Counter)
	for _, reason := range []string{feed.ReasonReset, feed.ReasonRetention, feed.ReasonReplayMax, feed.ReasonUnavailable, labelOther} {
		m.notRecovered[reason] = notRecovered.WithLabelValues(reason)
	}
	m.feedCloses.gap = feedCloses.WithLabelValues("gap")
	m.feedCloses.stuck = feedCloses.WithLabelValues("stuck")
	m.feedCloses.byCause = make(map[string]prometheus.Counter)
	// FeedLost's causes, as the worker names them.
	for _, cause := range []string{feed.CauseDisconnect, feed.CauseSlowConsumer, feed.CauseLeaderChange, feed.CauseStreamReset, labelOther} {
		m.feedCloses.byCause[cause] = feedCloses.WithLabelValues(cause)
	}

	for _, c := range []prometheus.Collector{m.connections, m.identified, m.names, deliveries, deliveryDelay, dropped, handshakes, handshakeDuration, upstream, acks, closes, refused,
		resumes, notRecovered, m.replayed, m.replayDuration, feedCloses, m.appPings, m.duplicates} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register hub metrics: %w", err)
		}
	}
	return m, nil
}

// record counts the outcome of one delivery of a message that arrived at
// arrived (zero: its delay is not observed), once its frames are queued.
// The delays are observed before the count moves, so that a scrape that
// sees the count sees them.
func (m *metrics) record(kind deliveryKind, t tally, arrived time.Time) {
	if t.queued > 0 && !arrived.IsZero() {
		// One clock read per delivery, one observation per frame queued.
		delay := time.Since(arrived).Seconds()
		for range t.queued {
			kind.delay.Observe(delay)
		}
	}
	kind.count.Add(float64(t.queued))
	if t.queueFull > 0 {
		m.dropped.queueFull.Add(float64(t.queueFull))
	}
	if t.afterLoss > 0 {
		m.dropped.afterLoss.Add(float64(t.afterLoss))
	}
	if t.closing > 0 {
		m.dropped.closing.Add(float64(t.closing))
	}
	if t.duplicate > 0 {
		m.duplicates.Add(float64(t.duplicate))
	}
}

// countResume counts a resume the Resumer answered.
func (m *metrics) countResume(r feed.Replay) {
	if r.Recovered {
		m.resumes.recovered.Inc()
		return
	}
	m.resumes.notRecovered.Inc()
	c, ok := m.notRecovered[r.Reason]
	if !ok {
		c = m.notRecovered[labelOther]
	}
	c.Inc()
}

// feedCause is the series of notify_feed_closes_total for a FeedLost cause.
func (m *metrics) feedCause(cause string) prometheus.Counter {
	if c, ok := m.feedCloses.byCause[cause]; ok {
		return c
	}
	return m.feedCloses.byCause[labelOther]
}
