package main

import (
	"fmt"
	"log/slog"

	"github.com/notify-worker/notify-worker/worker"
)

// natsSide is how this worker reaches NATS: the servers of NOTIFY_NATS_URL,
// or an embedded server started for it.
type natsSide struct {
	conn worker.ConnConfig
	url  string // the URL producers use, for the startup log and tests
	stop func()
}

func openNATS(p *plan, log *slog.Logger) (natsSide, error) {
	conn := p.conn()
	if len(p.cfg.NATSURLs) > 0 {
		log.Info("NATS mode: external servers", "urls", p.cfg.NATSURLs)
		return natsSide{conn: conn, url: p.cfg.NATSURLs[0], stop: func() {}}, nil
	}
	emb, err := worker.StartEmbedded(worker.EmbeddedConfig{Addr: p.cfg.EmbeddedNATSAddr, JetStreamDir: p.cfg.JetStreamDir}, log)
	if err != nil {
		return natsSide{}, fmt.Errorf("%s=%s: %w (or set %s to use external servers)",
			envName("EmbeddedNATSAddr"), p.cfg.EmbeddedNATSAddr, err, envName("NATSURLs"))
	}
	url := emb.ClientURL()
	conn.InProcess = emb
	conn.URLs = []string{url}
	log.Info("NATS mode: embedded server (set "+envName("NATSURLs")+" to use an external one)", "listen", url,
		"jetstream_dir", p.cfg.JetStreamDir)
	return natsSide{conn: conn, url: url, stop: emb.Shutdown}, nil
}
