package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
)

// logLines is an io.Writer for a slog.TextHandler that passes each record
// (one Write per record) to a channel.
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	l <- string(p)
	return len(p), nil
}

// waitLine returns the next line containing every one of parts, and the
// number of lines containing other that came before it.
func (l logLines) waitLine(t *testing.T, other string, parts ...string) (string, int) {
	t.Helper()
	seen := 0
	timeout := time.After(waitTimeout)
	for {
		select {
		case line := <-l:
			match := true
			for _, p := range parts {
				match = match && strings.Contains(line, p)
			}
			if match {
				return line, seen
			}
			if other != "" && strings.Contains(line, other) {
				seen++
			}
		case <-timeout:
			t.Fatalf("no log line with %q", parts)
			return "", 0
		}
	}
}

func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// A server that cannot be reached says why at Warn, once per run of
// failures and window, not once per attempt.
func TestConnectFailureLogged(t *testing.T) {
	port := closedPort(t)
	lines := make(logLines, 10000)
	log := slog.New(slog.NewTextHandler(lines, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, reg := testWorkerLog(t, fmt.Sprintf("nats://127.0.0.1:%d", port), newRecorder(), log, func(c *Config) {
		c.Conn.ReconnectWait = 20 * time.Millisecond
		c.Conn.FailureLogInterval = time.Hour // longer than the test
	})
	const attempt = "nats connection attempt failed"
	lines.waitLine(t, "", "level=WARN", attempt, "connection refused")
	for range 5 {
		_, warned := lines.waitLine(t, "level=WARN "+`msg="`+attempt, "level=DEBUG", attempt)
		if warned != 0 {
			t.Fatal("a second Warn line within the window")
		}
	}

	// Once connected, the next failure is reported at once again.
	opts := natstest.DefaultTestOptions
	opts.Port = port
	srv := natstest.RunServer(&opts)
	t.Cleanup(srv.Shutdown)
	line, _ := lines.waitLine(t, "", "nats connected")
	if !strings.Contains(line, "failed_attempts=") {
		t.Errorf("connected line without the failed attempts: %s", line)
	}
	// A late first connection is neither a reconnect nor a lost one.
	if got := metricValue(t, reg, "notify_nats_reconnects_total"); got != 0 {
		t.Errorf("reconnects = %v after a late first connection, want 0", got)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	lines.waitLine(t, "", "level=WARN", attempt, "connection refused", "failed_attempts=1")
	if got := metricValue(t, reg, "notify_nats_disconnects_total"); got != 1 {
		t.Errorf("disconnects = %v after the server stopped, want 1", got)
	}
}

// recordHandler keeps the records logged through it.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}

// warnings returns the Warn records logged since the last call, each as
// "err|failed_attempts".
func (h *recordHandler) warnings() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level != slog.LevelWarn {
			continue
		}
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs["err"]+"|"+attrs["failed_attempts"])
	}
	h.records = nil
	return out
}

func TestFailureLogRateLimit(t *testing.T) {
	h := &recordHandler{}
	now := time.Unix(1000, 0)
	e := newConnEvents(slog.New(h), nil, 10*time.Second)
	e.now = func() time.Time { return now }
	refused := errors.New("connection refused")
	check := func(when string, want ...string) {
		t.Helper()
		got := h.warnings()
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: warnings %q, want %q", when, got, want)
		}
	}

	e.attemptFailed(nats.ErrNoServers)
	check("initial attempt without a cause")
	e.attemptFailed(refused)
	check("first attempt with a cause", "connection refused|2")
	for range 5 {
		now = now.Add(time.Second)
		e.attemptFailed(refused)
	}
	check("within the window")
	now = now.Add(5 * time.Second)
	e.attemptFailed(errors.New("no such host"))
	check("after the window", "no such host|6")
	now = now.Add(time.Second)
	e.attemptFailed(refused)
	check("within the next window")
	if n := e.connected(); n != 9 {
		t.Errorf("connected() = %d failed attempts, want 9", n)
	}
	e.attemptFailed(refused)
	check("after a connection", "connection refused|1")
}
