package main

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
)

func TestHealthAndMetrics(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	client(t, tw, "henry")
	if code, _ := httpGet(t, "http://"+tw.addr+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	if code, _ := httpGet(t, "http://"+tw.addr+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d", code)
	}
	code, body := httpGet(t, "http://"+tw.addr+"/metrics")
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

func TestReadyzFollowsNATS(t *testing.T) {
	opts := natstest.DefaultTestOptions
	opts.Port = server.RANDOM_PORT
	srv := natstest.RunServer(&opts)
	port := srv.Addr().(*net.TCPAddr).Port
	url := srv.ClientURL()
	cfg := testConfig(t)
	cfg.NATSURLs = []string{url}
	cfg.NATSReconnectWait = 50 * time.Millisecond
	tw := startWorker(t, cfg)
	ready := func() int {
		code, _ := httpGet(t, "http://"+tw.addr+"/readyz")
		return code
	}
	c := client(t, tw, "ivan")
	if got := ready(); got != http.StatusOK {
		t.Fatalf("/readyz = %d before the outage", got)
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	eventually(t, "/readyz 503 while NATS is down", func() bool { return ready() == http.StatusServiceUnavailable })

	opts.Port = port
	srv2 := natstest.RunServer(&opts)
	t.Cleanup(srv2.Shutdown)
	eventually(t, "/readyz 200 after NATS returns", func() bool { return ready() == http.StatusOK })

	// The subscription was restored: ivan still receives.
	nc := connectNATS(t, srv2.ClientURL())
	publish(t, nc, "notify.user.ivan", "back")
	expect(t, c, "back")
}
