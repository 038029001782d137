package worker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of notify_nats_messages_total, spelled here only.
const (
	kindUser = "user" // one name's subject
	kindAll  = "all"  // the broadcast subject
)

type metrics struct {
	handedUser  prometheus.Counter
	handedAll   prometheus.Counter
	replies     prometheus.Counter
	reconnects  prometheus.Counter
	disconnects prometheus.Counter
	asyncErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, w *Worker) (*metrics, error) {
	handed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_nats_messages_total",
		Help: "Messages from NATS handed to the hub, by subject kind (" + kindUser + ": one name's subject; " +
			kindAll + ": the broadcast subject).",
	}, []string{"kind"})
	m := &metrics{
		handedUser: handed.WithLabelValues(kindUser),
		handedAll:  handed.WithLabelValues(kindAll),
		replies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_nats_replies_total",
			Help: "Replies published to requests, one per request handed to the hub; a reply nats.go refuses is logged instead.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_nats_reconnects_total",
			Help: "Times the NATS connection was re-established after a loss (a late first connection is not one).",
		}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_nats_disconnects_total",
			Help: "Times the NATS connection was lost (closing it at shutdown is not a loss).",
		}),
		asyncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "notify_nats_errors_total",
			Help: "Asynchronous errors nats.go reported (permission violations, slow consumer: once per episode, " +
				"not per message; see notify_nats_dropped_total).",
		}),
	}
	collectors := []prometheus.Collector{
		handed, m.replies, m.reconnects, m.disconnects, m.asyncErrors,
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
			Help: "Names this worker holds interest in (one subscription each); 0 once draining.",
		}, func() float64 { return float64(w.subscriptionCount()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "notify_nats_dropped_total",
			Help: "Messages NATS sent this worker that never reached the hub, other than those discarded at close: " +
				"a dispatch lane was full (slow consumer), or the message arrived as its subscription ended. " +
				"Lane-full drops count as nats.go reports them; the rest are added at Close, when " +
				"received = handed + discarded + dropped.",
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
