// Command notify-worker pushes notifications from NATS to WebSocket
// clients. See README.md.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"

	"github.com/notify-worker/notify-worker/admin"
	"github.com/notify-worker/notify-worker/api"
	"github.com/notify-worker/notify-worker/demo"
	"github.com/notify-worker/notify-worker/hub"
	"github.com/notify-worker/notify-worker/internal/gcfloor"
	"github.com/notify-worker/notify-worker/worker"
)

func main() {
	os.Exit(command(os.Args[1:], os.Stdout, os.Stderr))
}

// listening tells a caller of run where the worker can be reached once it
// serves: the HTTP/WebSocket address and the NATS URL it uses.
type listening struct {
	HTTPAddr    string
	NATSURL     string
	MetricsAddr string // "" when /metrics is on the public listener
}

// run validates cfg, builds the worker, and serves until ctx ends or the
// process gets SIGINT or SIGTERM. It then shuts down in order: /readyz
// answers 503 for cfg.DrainDelay while the worker still serves (after
// SIGTERM only, cut short by a second signal), HTTP stops accepting, the HTTP API's
// roll calls, recent events and NATS connection end, the NATS side
// delivers what it was handed and stops receiving, every session is closed
// after what is queued to it (1001; 1012, resume elsewhere, for protocol
// v2), NATS drains, the embedded NATS server stops, and last the metrics
// listener of cfg.MetricsAddr, if any, which was started first. Each part
// is released by the one defer that follows its construction. started, if
// not nil, is called once the worker serves.
func run(ctx context.Context, cfg Config, log *slog.Logger, started func(listening)) (err error) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, stopSignals...)
	defer signal.Stop(sigs)
	plan, err := cfg.plan()
	if err != nil {
		return err
	}
	for _, w := range plan.warnings {
		log.Warn(w)
	}
	down := &shutdown{timeout: cfg.ShutdownTimeout}
	defer func() { err = down.result(err, log) }()

	_, stopGCFloor := gcfloor.Start(uint64(cfg.GCHeapFloor), os.Getenv("GOGC"))
	defer stopGCFloor()

	build := readBuildInfo()
	log.Info("notify-worker starting", "version", build.Version, "commit", build.Commit, "go", build.GoVersion)
	reg := newRegistry(build)
	// First up, last down: Prometheus sees the whole shutdown's counts.
	metrics, err := serveMetrics(cfg.MetricsAddr, reg, log)
	if err != nil {
		return err
	}
	defer down.step("stop metrics", metrics.shutdown)
	authn, err := newAuthenticator(ctx, plan.auth, log)
	if err != nil {
		return err
	}
	defer authn.close()
	nats, err := openNATS(plan, log)
	if err != nil {
		return err
	}
	defer nats.stop()
	wk, err := worker.New(plan.worker(nats.conn), log, reg)
	if err != nil {
		return err
	}
	defer down.step("close nats", wk.Close)
	hb, err := hub.New(plan.hub(authn.hub(), wk, wk), wk, log, reg)
	if err != nil {
		return err
	}
	defer down.step("close sessions", hb.Close)
	defer down.step("drain nats", wk.Drain)
	if err := wk.Start(hb); err != nil {
		return err
	}
	page, err := demoPage(plan, nats.url)
	if err != nil {
		return err
	}
	ops, err := openAPI(plan, nats, wk, reg, log)
	if err != nil {
		return err
	}
	defer down.step("close api", ops.close)
	publicMetrics := reg
	if metrics != nil {
		publicMetrics = nil
	}
	var draining atomic.Bool
	reg.MustRegister(readyGauge(wk, &draining))
	srv, err := serveHTTP(plan, routes(hb, wk, publicMetrics, &draining, page, ops), log)
	if err != nil {
		return err
	}
	defer down.step("stop http", srv.shutdown)
	stopProfiling, err := startProfiling(cfg.PprofAddr, log)
	if err != nil {
		return err
	}
	defer down.step("stop pprof", stopProfiling)
	log.Info("notify-worker serving", "addr", srv.addr, "tls", plan.tlsCert != "",
		"auth", cfg.Auth, "max_connections", plan.maxConns, "subject_prefix", plan.scheme.Prefix())
	if page != nil {
		log.Info("demo page on", "url", demoURL(srv.addr, plan.tlsCert != ""))
	} else {
		log.Info("demo page off (" + envName("Demo") + "=on serves it at " + demo.Path + ")")
	}
	if ops != nil {
		log.Info("http api and admin page on", "api", api.Prefix, "admin", admin.Path)
	} else {
		log.Info("http api and admin page off (" + envName("APIKey") + " turns them on)")
	}
	if metrics != nil {
		log.Info("metrics on a listener of their own", "addr", metrics.addr, "path", "/metrics")
	} else {
		log.Info("metrics on the public listener at /metrics (" + envName("MetricsAddr") + " moves them to a private one)")
	}
	l := listening{HTTPAddr: srv.addr, NATSURL: nats.url}
	if metrics != nil {
		l.MetricsAddr = metrics.addr
	}
	if started != nil {
		started(l)
	}
	return awaitStop(ctx, sigs, srv.failed, cfg.DrainDelay, &draining, log)
}
