//go:build !pprof

package main

import (
	"context"
	"log/slog"
)

// startProfiling does nothing in the default build; profiling_pprof.go serves the
// runtime profiles in a build with -tags pprof.
func startProfiling(string, *slog.Logger) (func(context.Context) error, error) {
	return func(context.Context) error { return nil }, nil
}
