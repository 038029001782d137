package worker

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connectJetStream opens the connection durable support reads the stream
// with: the stream check, Direct Gets and stream infos. It is a second
// connection, with the feed's options, so that replays (many messages, in
// a herd of resumes) do not queue behind or ahead of the live feed in one
// read loop, and so that the feed connection's received-message count
// stays a count of the feed (notify_nats_dropped_total balances it). Its
// handlers run on its own callback goroutine.
func (w *Worker) connectJetStream(url string, opts []nats.Option) error {
	w.jsClosed = make(chan struct{})
	log := w.log.With("conn", "jetstream")
	opts = append(opts[:len(opts):len(opts)],
		nats.Name(w.cfg.Conn.Name+" jetstream"),
		nats.ConnectHandler(func(*nats.Conn) { w.askRecheck() }),
		nats.ReconnectHandler(func(*nats.Conn) {
			log.Info("nats reconnected")
			w.askRecheck()
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if !w.events.closing.Load() {
				log.Info("nats disconnected", "err", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(w.jsClosed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("nats error", "subject", subject, "err", err)
		}),
	)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("connect to nats for jetstream: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	mux, err := newDGMux(nc)
	if err != nil {
		nc.Close()
		return err
	}
	w.jsConn, w.js, w.dgMux = nc, js, mux
	return nil
}
