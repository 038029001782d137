package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The healthcheck mode probes /readyz on the port of NOTIFY_ADDR, whatever
// host that address names.
func TestHealthcheckProbesReadyz(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	_, port, err := net.SplitHostPort(tw.addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{":" + port, "0.0.0.0:" + port, "127.0.0.1:" + port} {
		if err := healthcheck(context.Background(), addr, waitTimeout); err != nil {
			t.Errorf("healthcheck(%q): %v", addr, err)
		}
	}

	// Anything but 200 from /readyz is unhealthy, and nothing else is asked.
	var paths []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		http.Error(w, "nats not connected", http.StatusServiceUnavailable)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(served) }()
	t.Cleanup(func() { srv.Close(); <-served })
	err = healthcheck(context.Background(), ln.Addr().String(), waitTimeout)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("healthcheck against a 503 = %v, want an error saying 503", err)
	}
	if len(paths) != 1 || paths[0] != "/readyz" {
		t.Fatalf("probed %q, want [/readyz]", paths)
	}

	if err := healthcheck(context.Background(), "no-port", time.Second); err == nil {
		t.Fatal("healthcheck accepted an address without a port")
	}
}

func TestBuildInfoMetric(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	_, body := httpGet(t, "http://"+tw.addr+"/metrics")
	b := readBuildInfo()
	want := `notify_build_info{commit="` + b.Commit + `",goversion="` + b.GoVersion + `",version="` + b.Version + `"} 1`
	if !strings.Contains(body, want) {
		t.Fatalf("/metrics lacks %s", want)
	}
}
