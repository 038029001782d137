package hub

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
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
		user, all prometheus.Counter
	}
	dropped struct {
		queueFull, afterLoss, closing prometheus.Counter
	}
	handshakes struct {
		ok, rejected, unavailable prometheus.Counter
	}
	upstream struct {
		ok, failed prometheus.Counter
	}
	closes struct {
		identifyTimeout, tokenExpired, slowConsumer, upstreamRate, sessionLimit, pongTimeout, writeTimeout prometheus.Counter
	}
	refused struct {
		notWebSocket, origin, connectionLimit, closing prometheus.Counter
	}
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_deliveries_total",
		Help: "Messages queued to sessions, by kind (user: one name's sessions; all: every identified session).",
	}, []string{"kind"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_dropped_total",
		Help: "Messages not queued to a session they were for, by reason: queue_full (the session is then disconnected), " +
			"after_loss (the session lost one before and is being disconnected), closing (the session was closing).",
	}, []string{"reason"})
	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_handshakes_total",
		Help: "Handshakes (a first message, or a token in the query), by result: ok (welcomed), rejected (bad first message, " +
			"token or name, or the per-name session limit), unavailable (the join failed). A close after the welcome is not one.",
	}, []string{"result"})
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
	}
	m.delivered.user = deliveries.WithLabelValues("user")
	m.delivered.all = deliveries.WithLabelValues("all")
	m.dropped.queueFull = dropped.WithLabelValues("queue_full")
	m.dropped.afterLoss = dropped.WithLabelValues("after_loss")
	m.dropped.closing = dropped.WithLabelValues("closing")
	m.handshakes.ok = handshakes.WithLabelValues("ok")
	m.handshakes.rejected = handshakes.WithLabelValues("rejected")
	m.handshakes.unavailable = handshakes.WithLabelValues("unavailable")
	m.upstream.ok = upstream.WithLabelValues("ok")
	m.upstream.failed = upstream.WithLabelValues("failed")
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

	for _, c := range []prometheus.Collector{m.connections, m.identified, m.names, deliveries, dropped, handshakes, upstream, closes, refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register hub metrics: %w", err)
		}
	}
	return m, nil
}

// record counts the outcome of one delivery.
func (m *metrics) record(delivered prometheus.Counter, t tally) {
	delivered.Add(float64(t.queued))
	if t.queueFull > 0 {
		m.dropped.queueFull.Add(float64(t.queueFull))
	}
	if t.afterLoss > 0 {
		m.dropped.afterLoss.Add(float64(t.afterLoss))
	}
	if t.closing > 0 {
		m.dropped.closing.Add(float64(t.closing))
	}
}
