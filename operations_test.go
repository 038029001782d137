package main

// Operations (README.md): /healthz, /readyz, /metrics, the healthcheck
// mode, the build info and the demo page. What each labelled counter counts is
// metrics_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/notify-worker/notify-worker/demo"
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
		`notify_dropped_total{reason="queue_full"} 0`, "notify_nats_connected 1", "notify_ready 1", "notify_nats_reconnects_total 0",
		"notify_nats_subscriptions 1",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// With NOTIFY_METRICS_ADDR, /metrics is served on that listener only:
// the public one answers 404 for it and serves everything else as before.
func TestMetricsListener(t *testing.T) {
	cfg := testConfig(t)
	cfg.MetricsAddr = "127.0.0.1:0"
	tw := startWorker(t, cfg)
	if tw.metricsAddr == "" || tw.metricsAddr == tw.addr {
		t.Fatalf("metrics listener at %q, public at %q", tw.metricsAddr, tw.addr)
	}
	client(t, tw, "henry")
	if code := status(t, tw.url("/metrics")); code != http.StatusNotFound {
		t.Errorf("public /metrics = %d, want 404", code)
	}
	if code := status(t, tw.url("/healthz")); code != http.StatusOK {
		t.Errorf("public /healthz = %d", code)
	}
	code, body := httpGet(t, "http://"+tw.metricsAddr+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "notify_sessions_identified 1") {
		t.Errorf("private /metrics = %d, lacking notify_sessions_identified 1:\n%.300s", code, body)
	}
	for _, path := range []string{"/", "/ws", "/healthz", "/debug/pprof/"} {
		if code := status(t, "http://"+tw.metricsAddr+path); code != http.StatusNotFound {
			t.Errorf("private %s = %d, want 404", path, code)
		}
	}
}

// The metrics listener serves through the drain delay, while /readyz
// says 503, and is closed once run has returned.
func TestMetricsListenerThroughShutdown(t *testing.T) {
	cfg := testConfig(t)
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.DrainDelay = time.Hour // cut short by the second SIGTERM
	tw := startWorker(t, cfg)
	c := client(t, tw, "kim")
	signalSelf(t, syscall.SIGTERM)
	eventually(t, "/readyz 503", func() bool { return status(t, tw.url("/readyz")) == http.StatusServiceUnavailable })
	if code, body := httpGet(t, "http://"+tw.metricsAddr+"/metrics"); code != http.StatusOK || !strings.Contains(body, "notify_sessions_identified 1") {
		t.Errorf("private /metrics while draining = %d, lacking notify_sessions_identified 1", code)
	}
	signalSelf(t, syscall.SIGTERM)
	if _, code, _ := readClose(t, c); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
	if err := tw.wait(t); err != nil {
		t.Fatal(err)
	}
	if conn, err := net.Dial("tcp", tw.metricsAddr); err == nil {
		conn.Close()
		t.Errorf("the metrics listener %s still accepts after run returned", tw.metricsAddr)
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

// The demo page (README "Demo page"): served by a running worker when
// NOTIFY_DEMO is on (by default with NOTIFY_AUTH=none), 404 when it is
// off; its config.json names the embedded NATS server and never an
// external one.
func TestDemoPage(t *testing.T) {
	get := func(t *testing.T, url string) (*http.Response, string) {
		t.Helper()
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	pageConfig := func(t *testing.T, tw *testWorker) map[string]any {
		t.Helper()
		resp, body := get(t, tw.url("/demo/config.json"))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/demo/config.json = %d", resp.StatusCode)
		}
		var cfg map[string]any
		if err := json.Unmarshal([]byte(body), &cfg); err != nil {
			t.Fatalf("config.json %q: %v", body, err)
		}
		return cfg
	}
	paths := []string{"/demo/", "/demo/demo.js", "/demo/config.json", "/demo"}

	t.Run("on by default with auth none", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.SubjectPrefix = "acme.notify"
		tw := startWorker(t, cfg)
		resp, body := get(t, tw.url("/demo/"))
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<script src="demo.js" defer></script>`) {
			t.Fatalf("/demo/ = %d, %.80q", resp.StatusCode, body)
		}
		if resp.Header.Get("Content-Security-Policy") != demo.ContentSecurityPolicy || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("/demo/ headers %v", resp.Header)
		}
		if resp, _ := get(t, tw.url("/demo")); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/demo/" {
			t.Errorf("/demo = %d to %q, want 301 to /demo/", resp.StatusCode, resp.Header.Get("Location"))
		}
		got := pageConfig(t, tw)
		want := map[string]any{"subject_prefix": "acme.notify", "auth": "none", "app_ping_ms": 25000.0, "durable": true, "nats_url": tw.natsURL}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("config.json %v, want %v", got, want)
		}
		// The page's WebSocket, same origin as the page, is accepted.
		c, _, err := dialHeader(t, tw.addr, "/ws", http.Header{"Origin": {"http://" + tw.addr}})
		if err != nil {
			t.Fatalf("dial /ws with the page's origin: %v", err)
		}
		identify(t, c, "demo-user")
	})

	t.Run("off", func(t *testing.T) {
		for name, edit := range map[string]func(*Config){
			"NOTIFY_DEMO=off":                  func(c *Config) { c.Demo = "off" },
			"NOTIFY_AUTH=jwt":                  func(c *Config) { *c = withJWT(*c) },
			"NOTIFY_AUTH=jwt, NOTIFY_DEMO=off": func(c *Config) { *c = withJWT(*c); c.Demo = "off" },
		} {
			t.Run(name, func(t *testing.T) {
				cfg := testConfig(t)
				edit(&cfg)
				tw := startWorker(t, cfg)
				for _, path := range paths {
					if resp, _ := get(t, tw.url(path)); resp.StatusCode != http.StatusNotFound {
						t.Errorf("%s = %d, want 404", path, resp.StatusCode)
					}
				}
			})
		}
	})

	t.Run("on with jwt and external NATS", func(t *testing.T) {
		srv := startNATS(t, func(o *server.Options) { o.Username, o.Password = "worker", "s3cret-nats-password" })
		cfg := withJWT(testConfig(t))
		cfg.Demo = "on"
		cfg.Stream = "off"
		cfg.NATSURLs = []string{"nats://worker:s3cret-nats-password@" + srv.Addr().String()}
		tw := startWorker(t, cfg)
		for _, path := range paths[:2] {
			if resp, _ := get(t, tw.url(path)); resp.StatusCode != http.StatusOK {
				t.Errorf("%s = %d, want 200", path, resp.StatusCode)
			}
		}
		_, body := get(t, tw.url("/demo/config.json"))
		for _, secret := range []string{"s3cret", srv.Addr().String(), "nats://", testSecret} {
			if strings.Contains(body, secret) {
				t.Errorf("config.json %s shows %q", body, secret)
			}
		}
		got := pageConfig(t, tw)
		want := map[string]any{"subject_prefix": "notify", "auth": "jwt", "app_ping_ms": 25000.0, "durable": false}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("config.json %v, want %v", got, want)
		}
	})
}

// The start log says whether the demo page is on, and where.
func TestDemoPageLogged(t *testing.T) {
	for _, tc := range []struct {
		demo string
		want *regexp.Regexp
	}{
		{"", regexp.MustCompile(`msg="demo page on" url=http://127\.0\.0\.1:\d+/demo/`)},
		{"off", regexp.MustCompile(`msg="demo page off \(NOTIFY_DEMO=on serves it at /demo/\)"`)},
	} {
		cfg := testConfig(t)
		cfg.Demo = tc.demo
		var out syncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, cfg, slog.New(slog.NewTextHandler(&out, nil)), func(listening) { cancel() })
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run: %v", err)
			}
		case <-time.After(waitTimeout):
			cancel()
			t.Fatal("run did not return")
		}
		if !tc.want.MatchString(out.String()) {
			t.Errorf("NOTIFY_DEMO=%q: log lacks %s:\n%s", tc.demo, tc.want, out.String())
		}
	}
}

func TestDemoURL(t *testing.T) {
	for _, tc := range []struct {
		addr string
		tls  bool
		want string
	}{
		{"127.0.0.1:8888", false, "http://127.0.0.1:8888/demo/"},
		{"[::]:8888", false, "http://localhost:8888/demo/"},
		{"0.0.0.0:443", true, "https://localhost:443/demo/"},
		{":8888", false, "http://localhost:8888/demo/"},
		{"[::1]:8888", false, "http://[::1]:8888/demo/"},
		{"push.example.com:8443", true, "https://push.example.com:8443/demo/"},
	} {
		if got := demoURL(tc.addr, tc.tls); got != tc.want {
			t.Errorf("demoURL(%q, %v) = %q, want %q", tc.addr, tc.tls, got, tc.want)
		}
	}
}

// syncBuffer is a bytes.Buffer that the worker's goroutines may log to
// while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
