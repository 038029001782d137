// Command notify-worker pushes notifications from NATS to WebSocket
// clients. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/notify-worker/notify-worker/hub"
	"github.com/notify-worker/notify-worker/worker"
)

func main() {
	os.Exit(command(os.Args[1:], os.Stdout, os.Stderr))
}

// listening tells a caller of run where the worker can be reached once it
// serves: the HTTP/WebSocket address and the NATS URL it uses.
type listening struct {
	HTTPAddr string
	NATSURL  string
}

// run validates cfg, builds the worker, and serves until ctx ends or the
// process gets SIGINT or SIGTERM. It then shuts down in order: /readyz
// answers 503 for cfg.DrainDelay while the worker still serves (skipped on
// SIGINT or a second signal), HTTP stops accepting, the NATS side
// delivers what it was handed and stops receiving, every session is closed
// with 1001 after what is queued to it, NATS drains, and the embedded NATS
// server stops. Each part is released by the one defer that follows its
// construction. started, if not nil, is called once the worker serves.
func run(ctx context.Context, cfg Config, log *slog.Logger, started func(listening)) (err error) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	plan, err := cfg.plan()
	if err != nil {
		return err
	}
	for _, w := range plan.warnings {
		log.Warn(w)
	}
	var errs []error
	defer func() {
		if err = errors.Join(append([]error{err}, errs...)...); err == nil {
			log.Info("shutdown complete")
		}
	}()
	deadline := &shutdownDeadline{timeout: cfg.ShutdownTimeout}
	defer deadline.release()
	step := func(what string, f func(context.Context) error) {
		if err := f(deadline.context()); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}

	build := readBuildInfo()
	log.Info("notify-worker starting", "version", build.Version, "commit", build.Commit, "go", build.GoVersion)
	reg := newRegistry(build)
	authn, err := newAuthenticator(ctx, plan.auth, log)
	if err != nil {
		return err
	}
	defer authn.close()
	nats, err := startNATS(plan, log)
	if err != nil {
		return err
	}
	defer nats.stop()
	wk, err := worker.New(plan.worker(nats.conn), log, reg)
	if err != nil {
		return err
	}
	defer step("close nats", wk.Close)
	hb, err := hub.New(plan.hub(authn.hub()), wk, log, reg)
	if err != nil {
		return err
	}
	defer step("close sessions", hb.Close)
	if err := wk.Start(hb); err != nil {
		return err
	}
	var draining atomic.Bool
	srv, err := serveHTTP(plan, routes(hb, wk, reg, &draining), log)
	if err != nil {
		return err
	}
	defer step("stop http", srv.shutdown)
	stopProfiling, err := startProfiling(cfg.PprofAddr, log)
	if err != nil {
		return err
	}
	defer step("stop pprof", stopProfiling)
	log.Info("notify-worker serving", "addr", srv.addr, "tls", plan.tlsCert != "",
		"auth", cfg.Auth, "max_connections", plan.maxConns, "subject_prefix", plan.scheme.Prefix())
	if started != nil {
		started(listening{HTTPAddr: srv.addr, NATSURL: nats.url})
	}

	var sig os.Signal
	select {
	case <-ctx.Done():
	case sig = <-sigs:
	case err := <-srv.failed:
		return fmt.Errorf("serve http: %w", err)
	}
	draining.Store(true)
	if delay := cfg.DrainDelay; delay > 0 && sig != syscall.SIGINT {
		log.Info("draining: /readyz answers 503 while still serving", "signal", sig, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case sig := <-sigs:
			log.Info("second signal: skipping the rest of the drain delay", "signal", sig)
			t.Stop()
		}
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	return nil
}

// shutdownDeadline bounds the whole shutdown: its clock starts when the
// first step asks for it, so the time spent serving does not count.
type shutdownDeadline struct {
	timeout time.Duration
	ctx     context.Context
	cancel  context.CancelFunc
}

func (d *shutdownDeadline) context() context.Context {
	if d.ctx == nil {
		d.ctx, d.cancel = context.WithTimeout(context.Background(), d.timeout)
	}
	return d.ctx
}

func (d *shutdownDeadline) release() {
	if d.cancel != nil {
		d.cancel()
	}
}
