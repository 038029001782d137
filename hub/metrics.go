package hub

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	connections      prometheus.Gauge
	identified       prometheus.Gauge
	names            prometheus.Gauge
	deliveredUser    prometheus.Counter
	deliveredAll     prometheus.Counter
	droppedFull      prometheus.Counter
	droppedAfterLoss prometheus.Counter
	droppedClosing   prometheus.Counter
	handshakes       *prometheus.CounterVec
	upstream         *prometheus.CounterVec
	closes           *prometheus.CounterVec
	refused          *prometheus.CounterVec
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
	m := &metrics{
		droppedFull:      dropped.WithLabelValues("queue_full"),
		droppedAfterLoss: dropped.WithLabelValues("after_loss"),
		droppedClosing:   dropped.WithLabelValues("closing"),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_connections",
			Help: "Open WebSocket connections, identified or not.",
		}),
		identified: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_sessions_identified",
			Help: "Sessions that have received their welcome.",
		}),
		names: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "notify_names",
			Help: "Distinct names with at least one session on this worker.",
		}),
		deliveredUser: deliveries.WithLabelValues("user"),
		deliveredAll:  deliveries.WithLabelValues("all"),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_handshakes_total",
			Help: "First messages handled, by result (ok, rejected, unavailable).",
		}, []string{"result"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_upstream_total",
			Help: "Client messages after the welcome, by result (ok, failed).",
		}, []string{"result"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_limit_closes_total",
			Help: "Sessions closed by a limit, by reason (identify_timeout, token_expired, slow_consumer, upstream_rate, session_limit, pong_timeout).",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notify_refused_total",
			Help: "Upgrade requests refused before the upgrade, by reason (not_websocket, origin, connection_limit, closing).",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.connections, m.identified, m.names, deliveries, dropped, m.handshakes, m.upstream, m.closes, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register hub metrics: %w", err)
		}
	}
	for _, r := range []string{"ok", "rejected", "unavailable"} {
		m.handshakes.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "failed"} {
		m.upstream.WithLabelValues(r)
	}
	for _, r := range []string{"identify_timeout", "token_expired", "slow_consumer", "upstream_rate", "session_limit", "pong_timeout"} {
		m.closes.WithLabelValues(r)
	}
	for _, r := range []string{"not_websocket", "origin", "connection_limit", "closing"} {
		m.refused.WithLabelValues(r)
	}
	return m, nil
}

// record counts the outcome of one delivery.
func (m *metrics) record(delivered prometheus.Counter, t tally) {
	delivered.Add(float64(t.queued))
	if t.queueFull > 0 {
		m.droppedFull.Add(float64(t.queueFull))
	}
	if t.afterLoss > 0 {
		m.droppedAfterLoss.Add(float64(t.afterLoss))
	}
	if t.closing > 0 {
		m.droppedClosing.Add(float64(t.closing))
	}
}
