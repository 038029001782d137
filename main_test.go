package main

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
)

func TestUpstream(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)
	sub, err := nc.SubscribeSync("notify.inbound.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := client(t, tw, "dave")
	send(t, c, `{"reply":"收到"}`)
	if err := c.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`{"reply":"收到"}`, "\x01\x02\x03"} {
		m, err := sub.NextMsg(waitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != "notify.inbound.dave" || string(m.Data) != want {
			t.Fatalf("got %s %q, want notify.inbound.dave %q", m.Subject, m.Data, want)
		}
	}
}

func TestRequestReply(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)

	c1 := client(t, tw, "erin")
	c2 := client(t, tw, "erin")
	msg, err := nc.Request("notify.user.erin", []byte("ping"), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var reply struct {
		Delivered int    `json:"delivered"`
		Worker    string `json:"worker"`
	}
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		t.Fatalf("reply %q: %v", msg.Data, err)
	}
	if reply.Delivered != 2 || reply.Worker != "test-worker" {
		t.Fatalf("reply = %+v, want 2 sessions from test-worker", reply)
	}
	expect(t, c1, "ping")
	expect(t, c2, "ping")

	if _, err := nc.Request("notify.user.nobody", []byte("x"), waitTimeout); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request to an absent name: err = %v, want no responders", err)
	}

	// When the last session leaves, the interest goes with it.
	c1.Close()
	c2.Close()
	eventually(t, "no responders for erin", func() bool {
		// A request racing the unsubscribe can go unanswered; it
		// times out, and the next one is tried.
		_, err := nc.Request("notify.user.erin", []byte("x"), time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})
}

// The worker subscribes per name, never to a wildcard over users.
func TestPerNameInterest(t *testing.T) {
	srv := natstest.RunRandClientPortServer()
	t.Cleanup(srv.Shutdown)
	cfg := testConfig(t)
	cfg.NATSURLs = []string{srv.ClientURL()}
	cfg.NATSName = "interest-test"
	tw := startWorker(t, cfg)
	client(t, tw, "frank")
	client(t, tw, "frank")
	client(t, tw, "grace")

	connz, err := srv.Connz(&server.ConnzOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	var subs []string
	for _, ci := range connz.Conns {
		if ci.Name == "interest-test" {
			subs = ci.Subs
		}
	}
	want := map[string]bool{"notify.all": true, "notify.user.frank": true, "notify.user.grace": true}
	if len(subs) != len(want) {
		t.Fatalf("worker subscriptions = %q, want %v", subs, want)
	}
	for _, s := range subs {
		if !want[s] {
			t.Fatalf("unexpected subscription %q (all: %q)", s, subs)
		}
	}
}

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
