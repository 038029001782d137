//go:build pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// A build with -tags pprof serves the runtime profiles on
// NOTIFY_PPROF_ADDR (default 127.0.0.1:6060), apart from the worker's own
// listener, for profiling under load. The default build has none of this.
func init() {
	addr := os.Getenv("NOTIFY_PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go func() { _ = http.ListenAndServe(addr, nil) }()
}
