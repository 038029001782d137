package worker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/feed"
)

// Label values of notify_nats_messages_total, spelled here only.
const (
	kindUser = "user" // one name's subject
	kindAll  = "all"  // the broadcast subject
)

// Label values of notify_jetstream_errors_total, spelled here only.
const (
	opBarrier  = "barrier"
	opFetch    = "fetch"
	opInfo     = "info"
	opSnapshot = "snapshot"
	opSetup    = "setup"
)

type metrics struct {
	handedUser  prometheus.Counter
	handedAll   prometheus.Counter
	replies     prometheus.Counter
	reconnects  prometheus.Counter
	disconnects prometheus.Counter
	asyncErrors prometheus.Counter
	durable     prometheus.Counter
	feedLosses  map[string]prometheus.Counter // by cause, every one of feedLossCauses
	jsErrors    map[string]prometheus.Counter // by op
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
	m.durable = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "notify_durable_received_total",
		Help: "Durable messages (the stream's republished copies, with their stream sequence) handed to the hub; " +
			"they are also counted in notify_nats_messages_total. Copies received while the stream is unavailable or off count as core, not here.",
	})
	losses := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_feed_losses_total",
		Help: "Times the worker told the hub that durable messages may have been lost on their way here, so that its v2 sessions " +
			"resume, by cause (" + feed.CauseDisconnect + ": the NATS connection was lost, counted once per outage; " +
			feed.CauseSlowConsumer + ": nats.go dropped messages of the full inbox; " +
			feed.CauseLeaderChange + ": the stream has a new leader, which may not have republished what the old one stored; " +
			feed.CauseStreamReset + ": the stream was deleted, replaced or created again).",
	}, []string{"cause"})
	m.feedLosses = make(map[string]prometheus.Counter, len(feedLossCauses))
	for _, c := range feedLossCauses {
		m.feedLosses[c] = losses.WithLabelValues(c)
	}
	jsErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notify_jetstream_errors_total",
		Help: "JetStream requests that failed in a way that may pass (no answer in time, no responders, a leader election, " +
			"a replica not current) and were retried or reported as unavailable, by operation (" +
			opBarrier + ": storing a resume's or snapshot's barrier; " + opFetch + ": the Direct Gets of a replay, " +
			"or a replay read while a replica was not current; " + opInfo + ": the stream info after a replay; " +
			opSnapshot + ": the Direct Gets of a snapshot; " + opSetup + ": checking or creating the stream).",
	}, []string{"op"})
	m.jsErrors = make(map[string]prometheus.Counter)
	for _, op := range []string{opBarrier, opFetch, opInfo, opSnapshot, opSetup} {
		m.jsErrors[op] = jsErrors.WithLabelValues(op)
	}
	collectors := []prometheus.Collector{
		handed, m.replies, m.reconnects, m.disconnects, m.asyncErrors, m.durable, losses, jsErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "notify_stream_ready",
			Help: "1 while the durable stream is ready (durable messages carry their sequence and resumes are answered), 0 otherwise.",
		}, func() float64 {
			if w.StreamReady() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "notify_stream_last_sequence",
			Help: "The highest stream sequence this worker has seen in a barrier's PubAck, a stream info or a snapshot " +
				"(0 until then, and after the stream was created again).",
		}, func() float64 { return float64(w.lastSeq.Load()) }),
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
			Help: "Notifications NATS sent this worker that never reached the hub, other than those discarded at close: " +
				"the inbox was full (slow consumer), or the message arrived as its subscription ended. " +
				"Inbox-full drops count as nats.go reports them; the rest are added at Close, when " +
				"received = handed + discarded + dropped + the worker's own replies and advisories (not notifications).",
		}, func() float64 { return float64(w.droppedTotal()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "notify_nats_discarded_total",
			Help: "Messages still queued in the inbox or a dispatch lane when Close stopped them (the drain ran out of time); never handed to the hub.",
		}, func() float64 { return float64(w.discarded.Load()) }),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register worker metrics: %w", err)
		}
	}
	return m, nil
}
