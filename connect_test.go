package main

// Section 1 of docs/protocol.md: connect. Refusals before the upgrade,
// origins, TLS, no compression, a token in the query, and nothing sent
// before the welcome.

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestConnectRefusals runs one request per row against one worker, asserts
// the HTTP answer the row of protocol.md's section 1 table promises, and
// checks after each that an identified client on the same worker still
// receives. The row "worker shutting down: 503" is proved in package hub
// (TestCloseSendsGoingAway): end to end, the worker stops accepting before
// its hub closes, so no request reaches the hub while it closes.
func TestConnectRefusals(t *testing.T) {
	cfg := limitsConfig(t)
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	control := newLiveClient(t, tw.addr, "control")

	rows := []struct {
		name    string
		request func(t *testing.T)
	}{
		{"plain GET on /: 426", func(t *testing.T) {
			resp, err := http.Get(tw.url("/"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != "websocket" {
				t.Fatalf("plain GET / = %d (Upgrade %q), want 426 naming websocket", resp.StatusCode, resp.Header.Get("Upgrade"))
			}
		}},
		{"plain GET on /ws: 426", func(t *testing.T) {
			if code := status(t, tw.url("/ws")); code != http.StatusUpgradeRequired {
				t.Fatalf("plain GET /ws = %d, want 426", code)
			}
		}},
		{"browser from another origin: 403", func(t *testing.T) {
			_, resp, err := dialHeader(t, tw.addr, "/", http.Header{"Origin": {"https://evil.example"}})
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("dial from another origin: %v %v, want 403", err, resp)
			}
		}},
		{"browser from the same origin: allowed", func(t *testing.T) {
			if _, _, err := dialHeader(t, tw.addr, "/", http.Header{"Origin": {"http://" + tw.addr}}); err != nil {
				t.Fatalf("same-origin dial: %v", err)
			}
		}},
		{"no Origin header: allowed", func(t *testing.T) {
			clientAt(t, tw, "/ws", "no-origin")
		}},
		{"headers over NOTIFY_MAX_HEADER_BYTES: 431", func(t *testing.T) {
			conn, err := net.Dial("tcp", tw.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Junk: %s\r\n\r\n", strings.Repeat("j", 2*cfg.MaxHeaderBytes))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %d, want 431", resp.StatusCode)
			}
		}},
		{"request never finished (slow-loris): closed", func(t *testing.T) {
			conn, err := net.Dial("tcp", tw.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n") // and never finish
			conn.SetReadDeadline(time.Now().Add(waitTimeout))
			if _, err := io.ReadAll(conn); err != nil {
				t.Fatalf("want the server to close the connection, got %v", err)
			}
		}},
		{"NOTIFY_MAX_CONNECTIONS reached: 503 with Retry-After: 5", func(t *testing.T) {
			// Let the server finish closing the earlier rows' connections.
			eventually(t, "only the control connection open", func() bool {
				return metric(t, tw.addr, "notify_connections") == 1
			})
			for range cfg.MaxConnections - 1 {
				dial(t, tw.addr, "/")
			}
			_, resp, err := dialHeader(t, tw.addr, "/", nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("dial past the cap: %v %v, want 503", err, resp)
			}
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), "connection limit reached") || resp.Header.Get("Retry-After") != "5" {
				t.Fatalf("refusal %q (Retry-After %q), want it to say the connection limit was reached, with Retry-After: 5", body, resp.Header.Get("Retry-After"))
			}
		}},
	}
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			row.request(t)
			msg := "control-" + strconv.Itoa(i)
			publish(t, nc, "notify.user.control", msg)
			control.expect(t, msg)
		})
	}
}

// NOTIFY_ALLOWED_ORIGINS reaches the hub: listed origins and wildcard
// subdomains are allowed, others refused. (The origin rule itself is
// tested in package hub.)
func TestAllowedOrigins(t *testing.T) {
	cfg := testConfig(t)
	cfg.AllowedOrigins = []string{"https://app.example.com", "https://*.example.org"}
	tw := startWorker(t, cfg)
	for _, row := range []struct {
		origin string
		want   int
	}{
		{"https://app.example.com", http.StatusSwitchingProtocols},
		{"https://eu.example.org", http.StatusSwitchingProtocols},
		{"https://evil.example", http.StatusForbidden},
		{"http://" + tw.addr, http.StatusForbidden}, // same-origin is not implied once origins are listed
	} {
		t.Run(row.origin, func(t *testing.T) {
			_, resp, _ := dialHeader(t, tw.addr, "/", http.Header{"Origin": {row.origin}})
			if resp == nil || resp.StatusCode != row.want {
				t.Fatalf("origin %s: %v, want %d", row.origin, resp, row.want)
			}
		})
	}
}

// permessage-deflate is not negotiated, even when the client offers it.
func TestNoCompression(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	d := websocket.Dialer{EnableCompression: true}
	c, resp, err := d.Dial("ws://"+tw.addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	resp.Body.Close()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("server negotiated %q, want no extension", ext)
	}
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	cfg := testConfig(t)
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)

	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	c, resp, err := d.Dial("wss://"+tw.addr+"/", nil)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	identify(t, c, "secure")
	publish(t, nc, "notify.user.secure", "over tls")
	expect(t, c, "over tls")

	// Plain ws:// to the TLS port does not get a session.
	if c, _, err := websocket.DefaultDialer.Dial("ws://"+tw.addr+"/", nil); err == nil {
		c.Close()
		t.Fatal("plain ws:// to the TLS port succeeded")
	}
}

// With a token in the query, the client is identified on connect: the
// welcome comes without a first message, and every message it sends is
// upstream, the first one included; from the second message on, the full
// message limit applies. (A first frame over NOTIFY_IDENTIFY_MAX_BYTES is
// a row of TestErrorsAndCloseCodes.)
func TestQueryToken(t *testing.T) {
	cfg := jwtConfig(t)
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	sub := subscribe(t, nc, "notify.inbound.hana")
	c := dial(t, tw.addr, "/?token="+url.QueryEscape(token(t, "hana", nil)))
	expect(t, c, welcome("hana"))
	send(t, c, `{"name":"hana"}`)
	if m := next(t, sub); string(m.Data) != `{"name":"hana"}` {
		t.Fatalf("upstream got %q", m.Data)
	}
	large := strings.Repeat("y", 3*int(cfg.IdentifyMaxBytes))
	send(t, c, large)
	if m := next(t, sub); string(m.Data) != large {
		t.Fatalf("large upstream message arrived as %d bytes, want %d", len(m.Data), len(large))
	}
}

// An unidentified connection receives nothing, not even a broadcast; once
// identified, its first frame is its welcome.
func TestNothingBeforeWelcome(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)
	control := client(t, tw, "control")
	early := dial(t, tw.addr, "/")

	publish(t, nc, "notify.all", "before")
	expect(t, control, "before") // the broadcast has been dispatched

	send(t, early, `{"name":"late"}`)
	expect(t, early, welcome("late"))
	publish(t, nc, "notify.all", "after")
	expect(t, early, "after")
}
