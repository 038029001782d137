package hub

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	connections   prometheus.Gauge
	identified    prometheus.Gauge
	names         prometheus.Gauge
	deliveredUser prometheus.Counter
	deliveredAll  prometheus.Counter
	dropped       prometheus.Counter
	handshakes    *prometheus.CounterVec
	upstream      *prometheus.CounterVec
	closes        *prometheus.CounterVec
	refused       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_deliveries_total",
		Help: "Messages queued to sessions, by kind (user: one name's sessions; all: every identified session).",
	}, []string{"kind"})
	m := &metrics{
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
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_dropped_total",
			Help: "Messages dropped because a session's outbound queue was full (the session is then disconnected).",
		}),
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
	for _, c := range []prometheus.Collector{m.connections, m.identified, m.names, deliveries, m.dropped, m.handshakes, m.upstream, m.closes, m.refused} {
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
