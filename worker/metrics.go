package worker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	receivedUser prometheus.Counter
	receivedAll  prometheus.Counter
	replies      prometheus.Counter
	reconnects   prometheus.Counter
	disconnects  prometheus.Counter
	asyncErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, w *Worker) (*metrics, error) {
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_nats_messages_total",
		Help: "Messages received from NATS, by kind (user, all).",
	}, []string{"kind"})
	m := &metrics{
		receivedUser: received.WithLabelValues("user"),
		receivedAll:  received.WithLabelValues("all"),
		replies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_nats_replies_total",
			Help: "Replies sent to requests (one per request this worker received).",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_nats_reconnects_total",
			Help: "Times the NATS connection was re-established.",
		}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_nats_disconnects_total",
			Help: "Times the NATS connection was lost.",
		}),
		asyncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_nats_errors_total",
			Help: "Asynchronous NATS errors (slow consumer, permission violations, ...).",
		}),
	}
	collectors := []prometheus.Collector{
		received, m.replies, m.reconnects, m.disconnects, m.asyncErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "notify_nats_connected",
			Help: "1 while the NATS connection is up, 0 otherwise.",
		}, func() float64 {
			if w.Ready() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "notify_nats_subscriptions",
			Help: "Names this worker holds interest in (one subscription each).",
		}, func() float64 { return float64(w.subscriptionCount()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "notify_nats_dropped_total",
			Help: "Messages nats.go dropped because a dispatch lane was full (slow consumer).",
		}, func() float64 { return float64(w.droppedTotal()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "notify_nats_discarded_total",
			Help: "Messages still queued in a dispatch lane when Close stopped the lanes (the drain ran out of time); never handed to the hub.",
		}, func() float64 { return float64(w.discarded.Load()) }),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register worker metrics: %w", err)
		}
	}
	return m, nil
}
