package worker

import (
	"hash/maphash"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/notify-worker/notify-worker/feed"
)

// The live path. nats.go's read loop puts every message of every
// subscription into the inbox in the order the connection received them.
// The router goroutine takes them one by one:
//
//   - a durable message (the stream is ready and the message carries its
//     Nats-Stream header) is handed to the hub by the router itself, so
//     that durable messages reach the hub in stream order across names and
//     the broadcast subject; before it, the router calls FeedLost if the
//     feed may have lost messages since the last durable one;
//   - a core message to a user is handed to the hub by the router too,
//     unless there are user lanes (Config.Lanes): then it goes to the one
//     picked by a hash of the name; a core broadcast goes to the lane of
//     its own, so that its fan-out does not hold the users' messages;
//   - a presence request (presence.go) is answered here and delivered
//     to no one;
//   - a barrier's reply goes to the resume waiting for it, and a stream
//     leader election makes the router call FeedLost.
//
// The router waits when a lane is full instead of dropping; the inbox
// then fills and nats.go drops (and reports a slow consumer), the one
// place a message can be lost, which the router notices (see beforeDurable).

// Headers the stream's republished copy carries. The server appends them
// after the producer's own headers, so the last value is the server's.
const (
	hdrStream   = "Nats-Stream"
	hdrSequence = "Nats-Sequence"
	hdrLastSeq  = "Nats-Last-Sequence"
)

// laneMsg is a core message on its way through a dispatch lane, with
// when the router took it from the inbox, as an offset from the worker's
// epoch (8 bytes rather than a time.Time's 24, in every lane slot).
type laneMsg struct {
	m       *nats.Msg
	arrived time.Duration
}

// router is the state only the router goroutine uses.
type router struct {
	seed       maphash.Seed
	reconnects uint64 // the feed connection's reconnect count last seen
	drops      int    // inboxDrops last seen
	suspect    bool   // the inbox may have overflowed since drops was read
	maxSeq     uint64 // the highest durable sequence handed over
	reply      []byte // reply buffer
}

func newRouter() router {
	return router{seed: maphash.MakeSeed(), reply: make([]byte, 0, 64)}
}

// route runs on the router goroutine, started by Start and owned by the
// worker; it ends when Close closes quit.
func (w *Worker) route(d Deliverer) {
	defer w.wg.Done()
	r := &w.routing
	for {
		var m *nats.Msg
		select {
		case m = <-w.inbox:
		case <-w.quit:
			return
		}
		// Only nats.go adds to the inbox between two reads here, so if it
		// was full at any moment since the last read, it is at least
		// nearly full now: that is when nats.go may have dropped.
		if len(w.inbox) >= cap(w.inbox)-1 {
			r.suspect = true
		}
		switch {
		case m.Subject == "":
			if !w.forwardMarker(m) {
				return
			}
		case m.Sub == w.barrierSub:
			w.other.Add(1)
			w.barriers.answer(m)
		case m.Sub == w.advisorySub:
			w.other.Add(1)
			w.feedLost(feed.CauseLeaderChange)
		case w.answerPresence(m):
			// A presence request (presence.go): answered, never delivered.
		default:
			// The one clock read of the live path: the delivery delay
			// the hub observes starts here.
			arrived := time.Since(w.epoch)
			fm, durable := w.durableMessage(m)
			if !durable {
				if len(w.lanes) == 0 && m.Subject != w.cfg.Scheme.All() {
					fm.Arrived = w.epoch.Add(arrived)
					r.reply = w.deliver(d, m, fm, r.reply)
					continue
				}
				if !w.toLane(laneMsg{m, arrived}) {
					return
				}
				continue
			}
			fm.Arrived = w.epoch.Add(arrived)
			w.beforeDurable(fm.Seq)
			r.reply = w.deliver(d, m, fm, r.reply)
		}
	}
}

// durableMessage returns m as the hub sees it, and whether it is durable:
// the stream is ready and m is its republished copy.
func (w *Worker) durableMessage(m *nats.Msg) (feed.Message, bool) {
	fm := feed.Message{Payload: m.Data}
	if len(m.Header) == 0 || !w.stream.durable.Load() || lastValue(m.Header, hdrStream) != w.cfg.Stream.Name {
		return fm, false
	}
	seq, err := strconv.ParseUint(lastValue(m.Header, hdrSequence), 10, 64)
	if err != nil || seq == 0 {
		return fm, false
	}
	prev, err := strconv.ParseUint(lastValue(m.Header, hdrLastSeq), 10, 64)
	if err != nil {
		prev = 0
	}
	fm.Seq, fm.Prev = seq, prev
	return fm, true
}

// lastValue is the last value of key in h: a header the server appended
// comes after any the producer set.
func lastValue(h nats.Header, key string) string {
	v := h[key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// beforeDurable runs on the router goroutine before it hands over the
// durable message seq, and calls FeedLost if the feed may have lost a
// message since the last one: the connection reconnected (nats.go counts
// the reconnect before it reads anything from the new connection), nats.go
// dropped messages of the inbox, or the sequence went backwards (the
// stream was created again).
func (w *Worker) beforeDurable(seq uint64) {
	r := &w.routing
	if cur := w.nc.Stats().Reconnects; cur > r.reconnects {
		r.reconnects = cur
		w.coverLoss(cur)
	}
	if r.suspect {
		r.suspect = false
		if n := w.inboxDrops(); n > r.drops {
			r.drops = n
			w.feedLost(feed.CauseSlowConsumer)
		}
	}
	if seq < r.maxSeq {
		w.feedLost(feed.CauseStreamReset)
		w.askRecheck()
	}
	r.maxSeq = seq
}

// toLane passes a core message to its dispatch lane, waiting while the
// lane is full. It returns false when Close stopped the goroutines; the
// message is then counted as discarded.
func (w *Worker) toLane(m laneMsg) bool {
	lane := w.allLane
	if m.m.Subject != w.cfg.Scheme.All() {
		// A subject that is not a user subject is logged by the lane.
		name, _ := w.cfg.Scheme.UserName(m.m.Subject)
		lane = w.lanes[maphash.String(w.routing.seed, name)%uint64(len(w.lanes))]
	}
	select {
	case lane <- m:
		return true
	default:
	}
	select {
	case lane <- m:
		return true
	case <-w.quit:
		w.discarded.Add(1)
		return false
	}
}

// dispatch runs on a lane's goroutine, started by Start and owned by the
// worker; it ends when Close closes quit.
func (w *Worker) dispatch(d Deliverer, lane <-chan laneMsg) {
	defer w.wg.Done()
	reply := make([]byte, 0, 64)
	for {
		var lm laneMsg
		select {
		case lm = <-lane:
		case <-w.quit:
			return
		}
		m := lm.m
		if m.Subject == "" {
			w.passMarker(m)
			continue
		}
		reply = w.deliver(d, m, feed.Message{Payload: m.Data, Arrived: w.epoch.Add(lm.arrived)}, reply)
	}
}

// deliver hands m to the hub as fm and answers a request with the number
// of sessions reached; reply is a buffer, returned for reuse.
func (w *Worker) deliver(d Deliverer, m *nats.Msg, fm feed.Message, reply []byte) []byte {
	var n int
	if m.Subject == w.cfg.Scheme.All() {
		n = d.DeliverAll(fm)
		w.metrics.handedAll.Inc()
	} else if name, ok := w.cfg.Scheme.UserName(m.Subject); ok {
		n = d.DeliverUser(name, fm)
		w.metrics.handedUser.Inc()
	} else {
		w.log.Warn("message on an unexpected subject", "subject", m.Subject)
		return reply
	}
	if fm.Durable() {
		w.metrics.durable.Inc()
	}
	w.handed.Add(1)
	if m.Reply != "" {
		reply = w.appendReply(reply[:0], n)
		if err := w.nc.Publish(m.Reply, reply); err != nil {
			w.log.Warn("reply failed", "subject", m.Subject, "err", err)
		} else {
			w.metrics.replies.Inc()
		}
	}
	return reply
}

// appendReply appends the answer to a request: how many sessions on this
// worker the message was queued to, and which worker says so.
func (w *Worker) appendReply(b []byte, delivered int) []byte {
	b = append(b, `{"delivered":`...)
	b = strconv.AppendInt(b, int64(delivered), 10)
	b = append(b, `,"worker":`...)
	b = append(b, w.idJSON...)
	return append(b, '}')
}
