package main

// Section 5 of docs/protocol.md: upstream. What a client sends after its
// welcome is published verbatim to <prefix>.inbound.<name>; when the worker
// cannot publish, the client is told and stays connected. The rate limit
// and the size limit are rows of TestErrorsAndCloseCodes.

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func TestUpstream(t *testing.T) {
	cfg := testConfig(t)
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	sub := subscribe(t, nc, "notify.inbound.>")
	c := client(t, tw, "dave")

	largest := bytes.Repeat([]byte("z"), int(cfg.MaxMessageBytes))
	send(t, c, `{"reply":"收到"}`)
	sendBinary(t, c, []byte{1, 2, 3})
	sendBinary(t, c, largest)
	for _, want := range []string{`{"reply":"收到"}`, "\x01\x02\x03", string(largest)} {
		m := next(t, sub)
		if m.Subject != "notify.inbound.dave" || string(m.Data) != want {
			t.Fatalf("got %s (%d bytes), want notify.inbound.dave with %d bytes", m.Subject, len(m.Data), len(want))
		}
	}
}

// When the worker's NATS connection is gone, an upstream message is not
// forwarded: the client gets an error frame saying so and stays connected.
func TestUpstreamWhenNATSUnavailable(t *testing.T) {
	srv := startNATS(t, nil)
	cfg := testConfig(t)
	cfg.NATSURLs = []string{srv.ClientURL()}
	cfg.NATSMaxReconnects = 0 // once the server is gone, the connection closes instead of buffering
	tw := startWorker(t, cfg)
	c := client(t, tw, "erin")
	lc := live(t, c)

	stopNATS(srv)
	eventually(t, "/readyz 503 without NATS", func() bool { return status(t, tw.url("/readyz")) == 503 })
	// Until nats.go has closed the connection, a publish is buffered for
	// a reconnect and counted ok; each probe waits until it was handled.
	deadline := time.Now().Add(waitTimeout)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream messages forwarded with NATS gone; none failed", i)
		}
		send(t, c, "probe-"+strconv.Itoa(i))
		eventually(t, "the probe to be handled", func() bool {
			return metric(t, tw.addr, `notify_upstream_total{result="ok"}`)+
				metric(t, tw.addr, `notify_upstream_total{result="failed"}`) == float64(i+1)
		})
		if metric(t, tw.addr, `notify_upstream_total{result="failed"}`) == 1 {
			break
		}
	}
	lc.expect(t, `{"type":"error","error":"message not forwarded: service unavailable"}`)

	// Still connected: the next message gets the same answer.
	send(t, c, "still here")
	lc.expect(t, `{"type":"error","error":"message not forwarded: service unavailable"}`)
	if n := metric(t, tw.addr, "notify_connections"); n != 1 {
		t.Fatalf("notify_connections = %v, want the client still connected", n)
	}
}

// A message the NATS server refuses (here: over the server's max_payload,
// though under NOTIFY_MAX_MESSAGE_BYTES) is not forwarded either, and the
// session stays.
func TestUpstreamRefusedByNATS(t *testing.T) {
	srv := startNATS(t, func(o *server.Options) { o.MaxPayload = 1024 })
	cfg := testConfig(t)
	cfg.NATSURLs = []string{srv.ClientURL()}
	tw := startWorker(t, cfg)
	nc := connectNATS(t, srv.ClientURL())
	sub := subscribe(t, nc, "notify.inbound.fay")
	c := client(t, tw, "fay")

	send(t, c, strings.Repeat("x", 2048))
	expect(t, c, `{"type":"error","error":"message not forwarded: service unavailable"}`)
	send(t, c, "small")
	if m := next(t, sub); string(m.Data) != "small" {
		t.Fatalf("upstream got %q, want only the small message", m.Data)
	}
	publish(t, nc, "notify.user.fay", "still receiving")
	expect(t, c, "still receiving")
}
