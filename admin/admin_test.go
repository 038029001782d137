package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const password = "0123456789abcdef0123456789abcdef-admin"

func newPage(t *testing.T, events *Events) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	conns := prometheus.NewGauge(prometheus.GaugeOpts{Name: "notify_connections"})
	conns.Set(3)
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "notify_deliveries_total"}, []string{"kind"})
	deliveries.WithLabelValues("user").Add(5)
	deliveries.WithLabelValues("all").Add(2)
	reg.MustRegister(conns, deliveries)
	actions := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	})
	h, err := New(Config{Check: func(p string) bool { return p == password }, Actions: actions, Metrics: reg, Events: events, Worker: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func request(t *testing.T, method, url, pass string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pass != "" {
		req.SetBasicAuth("anyone", pass)
	}
	return req
}

func TestServeAdminAuth(t *testing.T) {
	srv := newPage(t, nil)
	for _, pass := range []string{"", "wrong"} {
		resp, _ := get(t, request(t, "GET", srv.URL+"/admin/", pass))
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `Basic realm="notify-worker admin"`) {
			t.Fatalf("password %q: %d %v", pass, resp.StatusCode, resp.Header)
		}
	}
	resp, body := get(t, request(t, "GET", srv.URL+"/admin/", password))
	if resp.StatusCode != 200 || !strings.Contains(body, "notify-worker admin") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp != ContentSecurityPolicy || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("headers %v", resp.Header)
	}
	for path, want := range map[string]int{"/admin/admin.js": 200, "/admin/admin.css": 200, "/admin/nope.js": 404, "/admin/api/nope": 404, "/admin": 301} {
		req := request(t, "GET", srv.URL+path, password)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if resp, _ := get(t, request(t, "POST", srv.URL+"/admin/", password)); resp.StatusCode != 405 {
		t.Fatalf("POST page: %d", resp.StatusCode)
	}
}

func TestServeAdminActions(t *testing.T) {
	srv := newPage(t, nil)
	resp, body := get(t, request(t, "POST", srv.URL+"/admin/api/publish", password))
	if resp.StatusCode != 200 || body != `{"path":"/publish"}` {
		t.Fatalf("publish: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, request(t, "GET", srv.URL+"/admin/api/presence/alice", password))
	if resp.StatusCode != 200 || body != `{"path":"/presence/alice"}` {
		t.Fatalf("presence: %d %s", resp.StatusCode, body)
	}
	req := request(t, "POST", srv.URL+"/admin/api/publish", password)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, _ := get(t, req); resp.StatusCode != 403 {
		t.Fatalf("cross-site POST: %d", resp.StatusCode)
	}
	req = request(t, "POST", srv.URL+"/admin/api/publish", password)
	req.Header.Set("Origin", "https://evil.example")
	if resp, _ := get(t, req); resp.StatusCode != 403 {
		t.Fatalf("cross-origin POST: %d", resp.StatusCode)
	}
	resp, body = get(t, request(t, "GET", srv.URL+"/admin/api/stats", password))
	var st Stats
	if err := json.Unmarshal([]byte(body), &st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("stats: %d %s %v", resp.StatusCode, body, err)
	}
	if st.Connections != 3 || st.Deliveries != 7 || st.Worker != "w1" {
		t.Fatalf("stats %+v", st)
	}
}

func TestEvents(t *testing.T) {
	opts := natstest.DefaultTestOptions
	opts.Port = server.RANDOM_PORT
	ns := natstest.RunServer(&opts)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ev, err := SubscribeEvents(nc, "notify.event.")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { ev.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range RecentEvents + 5 {
		_ = nc.Publish(fmt.Sprintf("notify.event.online.u%d", i), []byte(`{"name":"u","sessions":1}`))
	}
	_ = nc.Publish("notify.event.ack.bob", []byte(`not json`))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	srv := newPage(t, ev)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, request(t, "GET", srv.URL+"/admin/api/events", password))
		var out struct{ Events []Event }
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatal(err)
		}
		if len(out.Events) == RecentEvents && out.Events[0].Name == "bob" {
			if out.Events[0].Kind != "ack" || string(out.Events[0].Data) != "null" || out.Events[1].Name != fmt.Sprintf("u%d", RecentEvents+4) || out.Events[1].Kind != "online" {
				t.Fatalf("events %+v", out.Events[:2])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events: %d, first %+v", len(out.Events), out.Events[:min(1, len(out.Events))])
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
	cancel()
	<-ran
	if got := ev.Recent(context.Background()); len(got) != 0 {
		t.Fatalf("after Run: %d events", len(got))
	}
}
