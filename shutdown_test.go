package main

// Section 7 of docs/protocol.md: shutdown. After SIGTERM /readyz answers
// 503 for NOTIFY_DRAIN_DELAY while the worker still serves; then, as at
// once on SIGINT, every message NATS handed the worker is delivered, every
// session is closed with 1001 after what was already queued to it, and run
// returns nil (main exits 0) within NOTIFY_SHUTDOWN_TIMEOUT; past the
// timeout the remaining connections are cut and run returns an error (main
// exits 1).

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestShutdownOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cfg := testConfig(t)
			tw := startWorker(t, cfg)
			nc := connectNATS(t, tw.natsURL)
			named := client(t, tw, "kate")
			anon := dial(t, tw.addr, "/")
			// The reply comes once the message is queued to kate, who
			// has not read it yet.
			if r := request(t, nc, "notify.user.kate", []byte("queued before shutdown")); r.Delivered != 1 {
				t.Fatalf("reply %+v, want 1 delivered", r)
			}

			signalSelf(t, sig)
			begun := time.Now()
			for _, row := range []struct {
				conn   *websocket.Conn
				frames []string
			}{
				{named, []string{"queued before shutdown"}},
				{anon, nil},
			} {
				frames, code, _ := readClose(t, row.conn)
				if code != websocket.CloseGoingAway || !slices.Equal(frames, row.frames) {
					t.Fatalf("frames %q and close %d, want %q and 1001", frames, code, row.frames)
				}
			}
			if err := tw.wait(t); err != nil {
				t.Fatalf("run after %s: %v", sig, err)
			}
			if took := time.Since(begun); took > cfg.ShutdownTimeout {
				t.Fatalf("shutdown took %v, more than NOTIFY_SHUTDOWN_TIMEOUT %v", took, cfg.ShutdownTimeout)
			}
		})
	}
}

// A session whose client stopped reading cannot take its close frame; at
// NOTIFY_SHUTDOWN_TIMEOUT its connection is cut and run reports the
// timeout instead of waiting for the write to time out.
func TestShutdownTimeoutCutsConnections(t *testing.T) {
	cfg := testConfig(t)
	cfg.ShutdownTimeout = 500 * time.Millisecond
	cfg.WriteTimeout = time.Minute
	cfg.SessionQueue = 1024 // the queue holds what the socket does not: no slow-consumer close
	cfg.PingPeriod, cfg.PongTimeout = time.Minute, 2*time.Minute
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	stalled := dialStalled(t, tw.addr, "/")
	identify(t, stalled, "stuck")
	payload := make([]byte, 256<<10)
	for range 2*sendBufferMax(t)/len(payload) + 1 { // more than the socket holds
		if r := request(t, nc, "notify.user.stuck", payload); r.Delivered != 1 {
			t.Fatalf("reply %+v, want the message queued", r)
		}
	}

	begun := time.Now()
	err := tw.stop(t)
	took := time.Since(begun)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run = %v, want the shutdown timeout reported", err)
	}
	if took < cfg.ShutdownTimeout || took > cfg.ShutdownTimeout+5*time.Second {
		t.Fatalf("shutdown took %v, want about NOTIFY_SHUTDOWN_TIMEOUT %v", took, cfg.ShutdownTimeout)
	}
	if _, code, _ := readClose(t, stalled); code != websocket.CloseAbnormalClosure {
		t.Fatalf("close %d, want the connection cut without a close frame", code)
	}
}

// After SIGTERM, /readyz answers 503 for NOTIFY_DRAIN_DELAY while the
// worker still accepts, identifies and delivers; then sessions get 1001.
func TestDrainDelay(t *testing.T) {
	cfg := testConfig(t)
	cfg.DrainDelay = 3 * time.Second
	tw := startWorker(t, cfg)
	before := client(t, tw, "early")

	signalSelf(t, syscall.SIGTERM)
	eventually(t, "/readyz 503", func() bool {
		code, body := httpGet(t, tw.url("/readyz"))
		return code == http.StatusServiceUnavailable && body == "shutting down\n"
	})
	if v := metric(t, tw.addr, "notify_ready"); v != 0 {
		t.Errorf("notify_ready %v while draining, want 0", v)
	}
	// Still serving: a new client is accepted, welcomed and delivered to.
	late := client(t, tw, "late")
	nc := connectNATS(t, tw.natsURL)
	publish(t, nc, "notify.user.late", `{"n":1}`)
	expect(t, late, `{"n":1}`)
	publish(t, nc, "notify.user.early", `{"n":2}`)
	expect(t, before, `{"n":2}`)

	for _, c := range []*websocket.Conn{before, late} {
		if _, code, _ := readClose(t, c); code != websocket.CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
	}
	if err := tw.wait(t); err != nil {
		t.Fatal(err)
	}
}

// A second signal cuts the drain delay short, and SIGINT has none.
func TestDrainDelaySkipped(t *testing.T) {
	for _, tc := range []struct {
		name    string
		signals []syscall.Signal
	}{
		{"SIGINT", []syscall.Signal{syscall.SIGINT}},
		{"second SIGTERM", []syscall.Signal{syscall.SIGTERM, syscall.SIGTERM}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.DrainDelay = time.Hour
			tw := startWorker(t, cfg)
			c := client(t, tw, "kim")
			for _, sig := range tc.signals {
				signalSelf(t, sig)
				eventually(t, "/readyz not 200", func() bool {
					resp, err := http.Get(tw.url("/readyz"))
					if err != nil {
						return true // already stopped accepting
					}
					resp.Body.Close()
					return resp.StatusCode != http.StatusOK
				})
			}
			// readClose waits at most waitTimeout, far below the hour.
			if _, code, _ := readClose(t, c); code != websocket.CloseGoingAway {
				t.Fatalf("close code %d, want 1001", code)
			}
			if err := tw.wait(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Every message NATS has handed the worker when SIGTERM arrives reaches
// its session, in order, before the session's 1001.
func TestShutdownDeliversWhatNATSHanded(t *testing.T) {
	const burst = 5000
	cfg := testConfig(t)
	cfg.SessionQueue = burst + 16 // this test is about the worker, not a slow client
	tw := startWorker(t, cfg)
	c := client(t, tw, "burst")
	nc := connectNATS(t, tw.natsURL)
	for i := range burst {
		if err := nc.Publish("notify.user.burst", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil { // the server has routed every one to the worker
		t.Fatal(err)
	}
	signalSelf(t, syscall.SIGTERM)
	for i := range burst {
		_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", i, burst, err)
		}
		if string(msg) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, msg)
		}
	}
	if _, code, _ := readClose(t, c); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	if err := tw.wait(t); err != nil {
		t.Fatal(err)
	}
}
