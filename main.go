// Command notify-worker pushes notifications from NATS to WebSocket
// clients. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/notify-worker/notify-worker/hub"
	"github.com/notify-worker/notify-worker/worker"
)

func main() {
	var cfg Config
	if err := envconfig.Process("NOTIFY", &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "notify-worker: config:", err)
		os.Exit(2)
	}
	if len(os.Args) == 2 && os.Args[1] == "healthcheck" {
		if err := healthcheck(context.Background(), cfg.Addr, 3*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "notify-worker: healthcheck:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	log, err := newLogger(cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "notify-worker: config:", err)
		os.Exit(2)
	}
	if err := run(context.Background(), cfg, log, nil); err != nil {
		log.Error("notify-worker stopped", "err", err)
		os.Exit(1)
	}
}

// listening tells a caller of run where the worker can be reached once it
// serves: the HTTP/WebSocket address and the NATS URL it uses.
type listening struct {
	HTTPAddr string
	NATSURL  string
}

// run serves until ctx ends or the process gets SIGINT or SIGTERM, then
// shuts down in order: stop accepting, close every session with 1001,
// drain NATS, stop the embedded NATS server. It returns nil after a clean
// shutdown within cfg.ShutdownTimeout. started, if not nil, is called once
// the worker serves.
func run(ctx context.Context, cfg Config, log *slog.Logger, started func(listening)) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	scheme, err := cfg.scheme()
	if err != nil {
		return err
	}
	build := readBuildInfo()
	log.Info("notify-worker starting", "version", build.Version, "commit", build.Commit, "go", build.GoVersion)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), build.collector())

	conn := cfg.conn()
	natsURL := ""
	var embedded *server.Server
	if len(cfg.NATSURLs) == 0 {
		embedded, err = worker.StartEmbedded(cfg.EmbeddedNATSAddr, log)
		if err != nil {
			return err
		}
		defer func() {
			embedded.Shutdown()
			embedded.WaitForShutdown()
		}()
		natsURL = embedded.ClientURL()
		conn.InProcess = embedded
		conn.URLs = []string{natsURL}
		log.Info("NATS mode: embedded server (set NOTIFY_NATS_URL to use an external one)", "listen", natsURL)
	} else {
		natsURL = cfg.NATSURLs[0]
		log.Info("NATS mode: external servers", "urls", cfg.NATSURLs)
	}

	wk, err := worker.New(worker.Config{
		Conn:       conn,
		Scheme:     scheme,
		ID:         cfg.workerID(),
		Lanes:      cfg.DispatchLanes,
		LaneBuffer: cfg.DispatchBuffer,
	}, log, reg)
	if err != nil {
		return err
	}
	maxConns, warning, err := cfg.maxConnections()
	if err != nil {
		_ = wk.Close(context.Background())
		return err
	}
	if warning != "" {
		log.Warn(warning)
	}
	tlsCert, tlsKey, err := cfg.tls()
	if err != nil {
		_ = wk.Close(context.Background())
		return err
	}
	authn, closeAuth, err := cfg.authenticator(ctx, log)
	if err != nil {
		_ = wk.Close(context.Background())
		return err
	}
	defer closeAuth()
	hb, err := hub.New(cfg.hub(maxConns, authn), wk, log, reg)
	if err != nil {
		_ = wk.Close(context.Background())
		return err
	}
	if err := wk.Start(hb); err != nil {
		_ = wk.Close(context.Background())
		return err
	}

	var draining atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", hb)
	mux.Handle("GET /ws", hb)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case draining.Load():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !wk.Ready():
			http.Error(w, "nats not connected", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = wk.Close(context.Background())
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler: mux,
		// Bound what a client that never finishes its request can hold
		// (slow-loris). A WebSocket connection is hijacked before these
		// matter to it; its own limits live in the hub.
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		ReadTimeout:       cfg.HandshakeTimeout,
		WriteTimeout:      cfg.HandshakeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	serveErr := make(chan error, 1)
	go func() {
		if tlsCert != "" {
			serveErr <- srv.ServeTLS(ln, tlsCert, tlsKey)
			return
		}
		serveErr <- srv.Serve(ln)
	}()
	log.Info("notify-worker serving", "addr", ln.Addr().String(), "tls", tlsCert != "",
		"auth", cfg.Auth, "max_connections", maxConns, "subject_prefix", scheme.Prefix())
	if started != nil {
		started(listening{HTTPAddr: ln.Addr().String(), NATSURL: natsURL})
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	case err := <-serveErr:
		runErr = fmt.Errorf("serve http: %w", err)
	}
	stop()

	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	draining.Store(true)
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("stop http: %w", err))
	}
	if err := hb.Close(sctx); err != nil {
		errs = append(errs, err)
	}
	if err := wk.Close(sctx); err != nil {
		errs = append(errs, err)
	}
	if runErr == nil && len(errs) == 0 {
		log.Info("shutdown complete")
	}
	return errors.Join(append([]error{runErr}, errs...)...)
}
