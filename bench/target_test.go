package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestListensOn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	if err := listensOn(strconv.Itoa(os.Getpid()), port); err != nil {
		t.Errorf("this process listens on %s: %v", port, err)
	}
	if err := listensOn("1", port); err == nil || !strings.Contains(err.Error(), "not the process listening") {
		t.Errorf("pid 1 accepted for port %s: %v", port, err)
	}
	ln.Close()
	if err := listensOn(strconv.Itoa(os.Getpid()), port); err == nil {
		t.Errorf("a closed port was accepted")
	}
}

// A wrong -pid and a worker that served sessions before are refused.
func TestCheckTarget(t *testing.T) {
	metrics := "notify_connections 0\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, metrics)
	}))
	t.Cleanup(srv.Close)
	o := options{wsURL: "ws://" + srv.Listener.Addr().String() + "/", metricsURL: srv.URL + "/metrics", pid: strconv.Itoa(os.Getpid())}
	if err := checkTarget(o, srv.Client()); err != nil {
		t.Errorf("fresh worker refused: %v", err)
	}
	for _, tc := range []struct {
		metrics, pid, want string
	}{
		{"notify_connections 0\n", "1", "-pid 1"},
		{"notify_connections 0\nnotify_handshakes_total{result=\"ok\"} 5\n", o.pid, "fresh worker"},
		{"notify_connections 3\n", o.pid, "3 connections open"},
		{"go_goroutines 3\n", o.pid, "is -url a notify-worker"},
	} {
		metrics = tc.metrics
		o := o
		o.pid = tc.pid
		if err := checkTarget(o, srv.Client()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("metrics %q, pid %s: %v; want an error with %q", tc.metrics, tc.pid, err, tc.want)
		}
	}
}
