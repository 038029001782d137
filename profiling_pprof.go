//go:build pprof

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
)

// A build with -tags pprof serves the runtime profiles on
// NOTIFY_PPROF_ADDR (default 127.0.0.1:6060), apart from the worker's own
// listener, for profiling under load. The default build has none of this
// (profiling_off.go).
func startProfiling(addr string, log *slog.Logger) (stop func(context.Context) error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", envName("PprofAddr"), addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof server stopped", "err", err)
		}
	}()
	log.Info("serving runtime profiles", "addr", ln.Addr().String())
	return func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		<-done
		return err
	}, nil
}
