package main

// Operations (README.md): /healthz, /readyz, /metrics, the healthcheck
// mode and the build info. What each labelled counter counts is
// metrics_test.go.

import (
	"context"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func TestHealthAndMetrics(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	client(t, tw, "henry")
	if code := status(t, tw.url("/healthz")); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	if code := status(t, tw.url("/readyz")); code != http.StatusOK {
		t.Fatalf("/readyz = %d", code)
	}
	code, body := httpGet(t, tw.url("/metrics"))
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		"notify_connections 1", "notify_sessions_identified 1", "notify_names 1",
		`notify_deliveries_total{kind="user"}`, `notify_deliveries_total{kind="all"}`,
		`notify_dropped_total{reason="queue_full"} 0`, "notify_nats_connected 1", "notify_nats_reconnects_total 0",
		"notify_nats_subscriptions 1",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// README.md's Operations list names every notify_* metric /metrics
// serves, and serves every one it names.
func TestREADMEListsEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	ops, _, _ := strings.Cut(string(readme)[strings.Index(string(readme), "## Operations"):], "\n## Configuration")
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`(notify_[a-z_]+)").FindAllStringSubmatch(ops, -1) {
		listed[m[1]] = true
	}
	tw := startWorker(t, testConfig(t))
	_, body := httpGet(t, tw.url("/metrics"))
	served := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (notify_[a-z_]+) `).FindAllStringSubmatch(body, -1) {
		served[m[1]] = true
	}
	for name := range served {
		if !listed[name] {
			t.Errorf("/metrics serves %s, which README.md's Operations list lacks", name)
		}
	}
	for name := range listed {
		if !served[name] {
			t.Errorf("README.md's Operations list names %s, which /metrics does not serve", name)
		}
	}
}

// /readyz is 503 while the NATS connection is down and 200 again once it
// is back; the sessions' subscriptions come back with it.
func TestReadyzFollowsNATS(t *testing.T) {
	srv := startNATS(t, nil)
	port := natsPort(srv)
	cfg := testConfig(t)
	cfg.NATSURLs = []string{srv.ClientURL()}
	cfg.NATSReconnectWait = 50 * time.Millisecond
	tw := startWorker(t, cfg)
	ready := func() int { return status(t, tw.url("/readyz")) }
	c := client(t, tw, "ivan")
	if got := ready(); got != http.StatusOK {
		t.Fatalf("/readyz = %d before the outage", got)
	}

	stopNATS(srv)
	eventually(t, "/readyz 503 while NATS is down", func() bool { return ready() == http.StatusServiceUnavailable })
	if code := status(t, tw.url("/healthz")); code != http.StatusOK {
		t.Fatalf("/healthz = %d while NATS is down, want 200: the process runs", code)
	}

	srv2 := startNATS(t, func(o *server.Options) { o.Port = port })
	eventually(t, "/readyz 200 after NATS returns", func() bool { return ready() == http.StatusOK })

	// The subscription was restored: ivan still receives.
	nc := connectNATS(t, srv2.ClientURL())
	publish(t, nc, "notify.user.ivan", "back")
	expect(t, c, "back")
}

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
	_, body := httpGet(t, tw.url("/metrics"))
	b := readBuildInfo()
	want := `notify_build_info{commit="` + b.Commit + `",goversion="` + b.GoVersion + `",version="` + b.Version + `"} 1`
	if !strings.Contains(body, want) {
		t.Fatalf("/metrics lacks %s", want)
	}
}
