package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// stopSignals are the signals that stop the worker. SIGTERM (a container
// runtime, a deploy) gets the drain delay; SIGINT (Ctrl-C) does not.
var stopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM}

// awaitStop returns when the worker should shut down: ctx ends, a stop
// signal arrives, or the HTTP server fails (its error is returned). Then
// draining is set, so /readyz answers 503, and after SIGTERM it keeps
// serving for delay so that a balancer's health check moves new clients
// away; a second signal cuts the delay short. SIGINT (Ctrl-C) and the end
// of ctx (a program embedding run) stop at once.
func awaitStop(ctx context.Context, sigs <-chan os.Signal, failed <-chan error, delay time.Duration, draining *atomic.Bool, log *slog.Logger) error {
	var sig os.Signal
	select {
	case <-ctx.Done():
	case sig = <-sigs:
	case err := <-failed:
		return fmt.Errorf("serve http: %w", err)
	}
	draining.Store(true)
	if delay > 0 && sig == syscall.SIGTERM {
		log.Info("draining: /readyz answers 503 while the worker still serves", "signal", sig, "delay", delay)
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case sig := <-sigs:
			log.Info("second signal: skipping the rest of the drain delay", "signal", sig)
		}
	}
	log.Info("shutting down")
	return nil
}

// shutdown runs the steps that release the worker's parts, each deferred
// right after its part is built, within one deadline whose clock starts
// at the first step, and collects their errors.
type shutdown struct {
	timeout time.Duration
	ctx     context.Context
	cancel  context.CancelFunc
	errs    []error
}

// step runs f within the deadline and keeps its error, prefixed by what.
func (s *shutdown) step(what string, f func(context.Context) error) {
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithTimeout(context.Background(), s.timeout)
	}
	if err := f(s.ctx); err != nil {
		s.errs = append(s.errs, fmt.Errorf("%s: %w", what, err))
	}
}

// result joins err (what run returned) with every step's error, and logs
// a clean shutdown.
func (s *shutdown) result(err error, log *slog.Logger) error {
	if s.cancel != nil {
		s.cancel()
	}
	if err = errors.Join(append([]error{err}, s.errs...)...); err == nil {
		log.Info("shutdown complete")
	}
	return err
}
