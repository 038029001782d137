package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// runWithSignals runs the worker until it stops on a signal sent by the
// test, and returns where it listens and a channel with run's result.
func runWithSignals(t *testing.T, cfg Config) (listening, chan error) {
	t.Helper()
	started := make(chan listening, 1)
	done := make(chan error, 1)
	stopped := make(chan struct{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		defer close(stopped)
		done <- run(context.Background(), cfg, log, func(l listening) { started <- l })
	}()
	select {
	case l := <-started:
		t.Cleanup(func() {
			select {
			case <-stopped:
			default:
				_ = syscall.Kill(syscall.Getpid(), syscall.SIGINT)
				<-stopped
			}
		})
		return l, done
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("worker did not start")
	}
	return listening{}, nil
}

func sendSignal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(syscall.Getpid(), sig); err != nil {
		t.Fatal(err)
	}
}

func waitRun(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("run did not return")
	}
}

// After SIGTERM, /readyz answers 503 for NOTIFY_DRAIN_DELAY while the
// worker still accepts, identifies and delivers; then sessions get 1001.
func TestDrainDelay(t *testing.T) {
	cfg := testConfig(t)
	cfg.DrainDelay = 3 * time.Second
	l, done := runWithSignals(t, cfg)
	before := dial(t, l.HTTPAddr, "/")
	identify(t, before, "early")

	sendSignal(t, syscall.SIGTERM)
	eventually(t, "/readyz 503", func() bool {
		code, body := httpGet(t, "http://"+l.HTTPAddr+"/readyz")
		return code == http.StatusServiceUnavailable && body == "shutting down\n"
	})
	// Still serving: a new client is accepted, welcomed and delivered to.
	late := dial(t, l.HTTPAddr, "/")
	identify(t, late, "late")
	nc := connectNATS(t, l.NATSURL)
	publish(t, nc, "notify.user.late", `{"n":1}`)
	expect(t, late, `{"n":1}`)
	publish(t, nc, "notify.user.early", `{"n":2}`)
	expect(t, before, `{"n":2}`)

	for _, c := range []*websocket.Conn{before, late} {
		if _, code, _ := readClose(t, c); code != websocket.CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
	}
	waitRun(t, done)
}

// SIGINT (Ctrl-C) skips the drain delay, and so does a second signal.
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
			l, done := runWithSignals(t, cfg)
			c := dial(t, l.HTTPAddr, "/")
			identify(t, c, "kim")
			for _, sig := range tc.signals {
				sendSignal(t, sig)
				eventually(t, "/readyz not 200", func() bool {
					resp, err := http.Get("http://" + l.HTTPAddr + "/readyz")
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
			waitRun(t, done)
		})
	}
}

// Every message NATS has handed the worker when SIGTERM arrives reaches
// its session, in order, before the session's 1001.
func TestSIGTERMDeliversWhatNATSHanded(t *testing.T) {
	const burst = 5000
	cfg := testConfig(t)
	cfg.SessionQueue = burst + 16 // this test is about the worker, not a slow client
	l, done := runWithSignals(t, cfg)
	c := dial(t, l.HTTPAddr, "/")
	identify(t, c, "burst")
	nc := connectNATS(t, l.NATSURL)
	for i := range burst {
		if err := nc.Publish("notify.user.burst", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil { // the server has routed all of them to the worker
		t.Fatal(err)
	}
	sendSignal(t, syscall.SIGTERM)
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
	waitRun(t, done)
}
