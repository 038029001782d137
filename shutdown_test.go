package main

// Section 7 of docs/protocol.md: shutdown. On SIGTERM or SIGINT every
// session is closed with 1001 after what was already queued to it, and run
// returns nil (main exits 0) within NOTIFY_SHUTDOWN_TIMEOUT; past the
// timeout the remaining connections are cut and run returns an error (main
// exits 1).

import (
	"context"
	"errors"
	"slices"
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
