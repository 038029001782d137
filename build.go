package main

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version and commit are stamped by the linker, for example
//
//	go build -ldflags "-X main.version=v1.4.0 -X main.commit=3f2c1ab" .
//
// (the Dockerfile does this from its VERSION and COMMIT build args). Nothing
// assigns them at run time; when left empty, buildInfo falls back to what
// the Go toolchain recorded.
var (
	version string
	commit  string
)

// buildInfo says which build of the worker is running.
type buildInfo struct {
	Version   string
	Commit    string
	GoVersion string
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && info.Main.Version != "" {
			b.Version = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && b.Commit == "" {
				b.Commit = s.Value
			}
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// collector exports the build as notify_build_info{version,commit,goversion} 1,
// so dashboards can tell which build each replica of a fleet runs.
func (b buildInfo) collector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "notify_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}
