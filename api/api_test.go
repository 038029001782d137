package api

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/notify-worker/notify-worker/subjects"
)

// TestMain also checks, when every test ran, that the tests saw each
// route answer every status Routes declares for it, and nothing else.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && flag.Lookup("test.run").Value.String() == "" {
		if missing := seen.missing(); len(missing) > 0 {
			fmt.Fprintf(os.Stderr, "statuses declared but never answered in a test: %v\n", missing)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// statusLog records which status each route answered in the tests.
type statusLog struct {
	mu   sync.Mutex
	seen map[string]map[int]bool // "METHOD path" -> statuses
}

var seen = &statusLog{seen: map[string]map[int]bool{}}

// routeOf names the route a request to path is for, as Routes does.
func routeOf(method, path string) string {
	if strings.HasPrefix(path, Prefix+"presence/") {
		path = Prefix + "presence/{name}"
	}
	return method + " " + path
}

func (l *statusLog) add(route string, status int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[route] == nil {
		l.seen[route] = map[int]bool{}
	}
	l.seen[route][status] = true
}

// missing lists the declared statuses never seen.
func (l *statusLog) missing() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range (&Server{}).Routes() {
		for _, st := range r.Statuses {
			if !l.seen[r.Method+" "+r.Path][st] {
				out = append(out, fmt.Sprintf("%s %s: %d", r.Method, r.Path, st))
			}
		}
	}
	return out
}

// declared reports whether Routes lists status for route; 404 and 405
// belong to no route.
func declared(route string, status int) bool {
	for _, r := range (&Server{}).Routes() {
		if r.Method+" "+r.Path == route {
			return slices.Contains(r.Statuses, status)
		}
	}
	return status == http.StatusNotFound || status == http.StatusMethodNotAllowed
}

const testKey = "0123456789abcdef0123456789abcdef-api"

// fixture is an API on a real NATS server with JetStream and a stream
// capturing durable.notify.>.
type fixture struct {
	srv   *httptest.Server
	nc    *nats.Conn
	ready atomic.Bool
}

func newFixture(t testing.TB, edit func(*Config)) *fixture {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = server.RANDOM_PORT
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	ns := natstest.RunServer(&opts)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NOTIFY", Subjects: []string{"durable.notify.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	scheme, _ := subjects.New("notify")
	f := &fixture{nc: nc}
	f.ready.Store(true)
	cfg := Config{Key: testKey, Conn: nc, JetStream: js, Scheme: scheme, Ready: f.ready.Load, MaxBodyBytes: 4096}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, s)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// do sends a request with the key and returns the status, the decoded
// JSON answer and the response.
func (f *fixture) do(t *testing.T, method, path, body string, hdr map[string]string) (int, map[string]any, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: answer %q is not a JSON object: %v", method, path, raw, err)
	}
	route := routeOf(method, req.URL.Path)
	if !declared(route, resp.StatusCode) {
		t.Fatalf("%s answered %d, which Routes does not declare", route, resp.StatusCode)
	}
	seen.add(route, resp.StatusCode)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	return resp.StatusCode, out, resp
}

// respond answers every request on subject with the replies, until
// cleanup.
func respond(t *testing.T, nc *nats.Conn, subject string, answer func(*nats.Msg) []byte) {
	t.Helper()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if b := answer(m); b != nil {
			_ = m.Respond(b)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, nil)
	for _, tc := range []struct {
		name, body, want string
	}{
		{"unknown field", `{"name":"alice","data":1,"extra":1}`, "unknown field"},
		{"bad name", `{"name":"a.b","data":1}`, "name"},
		{"empty name", `{"name":"","data":1}`, "name"},
		{"name and all", `{"name":"alice","all":true,"data":1}`, "not both"},
		{"neither", `{"data":1}`, `give "name"`},
		{"data and data_b64", `{"name":"alice","data":1,"data_b64":"aGk="}`, "not both"},
		{"no data", `{"name":"alice"}`, "data"},
		{"bad base64", `{"name":"alice","data_b64":"!!"}`, "base64"},
		{"receipt with durable", `{"name":"alice","data":1,"durable":true,"receipt":true}`, "receipt"},
		{"timeout zero", `{"name":"alice","data":1,"receipt":true,"timeout_ms":0}`, "timeout_ms"},
		{"timeout too long", `{"name":"alice","data":1,"receipt":true,"timeout_ms":10001}`, "timeout_ms"},
		{"timeout without receipt", `{"name":"alice","data":1,"timeout_ms":5}`, "timeout_ms"},
		{"id without durable", `{"name":"alice","data":1,"id":"x"}`, "durable"},
		{"bad id", `{"name":"alice","data":1,"durable":true,"id":"a b"}`, "id"},
		{"not JSON", `hello`, "body"},
		{"empty body", ``, "empty"},
		{"two values", `{"name":"alice","data":1} {}`, "after"},
		{"trailing brace", `{"name":"alice","data":1}}`, "after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, _ := f.do(t, "POST", "/api/v1/publish", tc.body, nil)
			if code != http.StatusBadRequest || !strings.Contains(out["error"].(string), tc.want) {
				t.Fatalf("%d %v, want 400 containing %q", code, out, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, method, path, body string }{
		{"bulk not an array", "POST", "/api/v1/presence", `{"alice":1}`},
		{"bulk empty", "POST", "/api/v1/presence", `[]`},
		{"bulk null", "POST", "/api/v1/presence", `null`},
		{"bulk bad name", "POST", "/api/v1/presence", `["alice","*"]`},
		{"bulk too many", "POST", "/api/v1/presence", `[` + strings.Repeat(`"a",`, 1000) + `"a"]`},
		{"bad path name", "GET", "/api/v1/presence/a*b", ``},
		{"bad query timeout", "GET", "/api/v1/presence/alice?timeout_ms=x", ``},
		{"query timeout too long", "GET", "/api/v1/presence/alice?timeout_ms=20000", ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, _ := f.do(t, tc.method, tc.path, tc.body, nil)
			if code != http.StatusBadRequest || out["error"] == "" {
				t.Fatalf("%d %v, want 400", code, out)
			}
		})
	}
}

func TestAuthAndLimits(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Rate, c.Burst = 0.001, 3 })
	code, out, resp := f.do(t, "GET", "/api/v1/presence/alice", "", map[string]string{"Authorization": ""})
	if code != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("no key: %d %v %v", code, out, resp.Header)
	}
	if code, out, _ := f.do(t, "GET", "/api/v1/presence/alice", "", map[string]string{"Authorization": "Bearer " + testKey + "x"}); code != http.StatusForbidden {
		t.Fatalf("wrong key: %d %v", code, out)
	}
	if code, out, _ := f.do(t, "GET", "/api/v1/nothing", "", nil); code != http.StatusNotFound {
		t.Fatalf("unknown route: %d %v", code, out)
	}
	if code, _, resp := f.do(t, "GET", "/api/v1/publish", "", nil); code != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("wrong method: %d %v", code, resp.Header)
	}
	// The burst of 3: two more are served, the next is refused.
	f.ready.Store(false)
	if code, out, _ := f.do(t, "GET", "/api/v1/presence/alice", "", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("nats down: %d %v", code, out)
	}
	f.ready.Store(true)
	if code, out, _ := f.do(t, "POST", "/api/v1/publish", `{"name":"alice","data":"`+strings.Repeat("x", 5000)+`"}`, nil); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("large body: %d %v", code, out)
	}
	if code, out, _ := f.do(t, "GET", "/api/v1/presence/alice?timeout_ms=50", "", nil); code != http.StatusOK || out["online"] != false {
		t.Fatalf("third: %d %v", code, out)
	}
	code, out, resp = f.do(t, "GET", "/api/v1/presence/alice", "", nil)
	if code != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("past the limit: %d %v %v", code, out, resp.Header)
	}
}

func TestPublishEphemeralAndReceipts(t *testing.T) {
	f := newFixture(t, nil)
	sub, err := f.nc.SubscribeSync("notify.user.bob")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := f.do(t, "POST", "/api/v1/publish", `{"name":"bob","data":{"title":"hi"}}`, nil); code != 200 || out["published"] != true {
		t.Fatalf("%d %v", code, out)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != `{"title":"hi"}` {
		t.Fatalf("got %v %v", m, err)
	}
	if code, _, _ := f.do(t, "POST", "/api/v1/publish", `{"name":"bob","data_b64":"AP8="}`, nil); code != 200 {
		t.Fatal(code)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "\x00\xff" {
		t.Fatalf("bytes: %v %v", m, err)
	}

	code, out, _ := f.do(t, "POST", "/api/v1/publish", `{"name":"carol","data":1,"receipt":true}`, nil)
	if code != 200 || out["online"] != false {
		t.Fatalf("nobody: %d %v", code, out)
	}
	respond(t, f.nc, "notify.user.dave", func(*nats.Msg) []byte { return []byte(`{"delivered":2,"worker":"w1"}`) })
	respond(t, f.nc, "notify.user.dave", func(*nats.Msg) []byte { return []byte(`{"delivered":1,"worker":"w2"}`) })
	start := time.Now()
	code, out, _ = f.do(t, "POST", "/api/v1/publish", `{"name":"dave","data":1,"receipt":true,"timeout_ms":200}`, nil)
	if code != 200 || out["online"] != true || out["delivered"] != 3.0 || len(out["receipts"].([]any)) != 2 {
		t.Fatalf("receipts: %d %v", code, out)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Fatalf("answered after %v, want the 200 ms timeout", d)
	}
}

func TestPublishDurable(t *testing.T) {
	f := newFixture(t, nil)
	code, out, _ := f.do(t, "POST", "/api/v1/publish", `{"name":"alice","data":1,"durable":true,"id":"order-1"}`, nil)
	if code != 200 || out["seq"] != 1.0 || out["stream"] != "NOTIFY" || out["duplicate"] != false {
		t.Fatalf("%d %v", code, out)
	}
	code, out, _ = f.do(t, "POST", "/api/v1/publish", `{"name":"alice","data":1,"durable":true}`, map[string]string{"Idempotency-Key": "order-1"})
	if code != 200 || out["seq"] != 1.0 || out["duplicate"] != true {
		t.Fatalf("retry: %d %v", code, out)
	}
	code, out, _ = f.do(t, "POST", "/api/v1/publish", `{"all":true,"data":2,"durable":true}`, nil)
	if code != 200 || out["seq"] != 2.0 {
		t.Fatalf("all: %d %v", code, out)
	}
	if code, out, _ := f.do(t, "POST", "/api/v1/publish", `{"name":"alice","data":1,"durable":true,"id":"b"}`, map[string]string{"Idempotency-Key": "c"}); code != 400 {
		t.Fatalf("ids differ: %d %v", code, out)
	}
	off := newFixture(t, func(c *Config) { c.JetStream = nil })
	if code, out, _ := off.do(t, "POST", "/api/v1/publish", `{"name":"alice","data":1,"durable":true}`, nil); code != 503 || !strings.Contains(out["error"].(string), "durable") {
		t.Fatalf("off: %d %v", code, out)
	}
}

func TestDurableWithoutStream(t *testing.T) {
	f := newFixture(t, nil)
	js, _ := jetstream.New(f.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "NOTIFY"); err != nil {
		t.Fatal(err)
	}
	code, out, _ := f.do(t, "POST", "/api/v1/publish", `{"name":"alice","data":1,"durable":true}`, nil)
	if code != 503 || !strings.Contains(out["error"].(string), "jetstream") {
		t.Fatalf("%d %v", code, out)
	}
}

func TestPresence(t *testing.T) {
	f := newFixture(t, nil)
	presence := func(worker string, n int) func(*nats.Msg) []byte {
		return func(m *nats.Msg) []byte {
			if m.Header.Get("Notify-Presence") != "1" {
				return nil
			}
			b, _ := json.Marshal(map[string]any{"worker": worker, "sessions": n})
			return b
		}
	}
	respond(t, f.nc, "notify.user.alice", presence("w1", 2))
	respond(t, f.nc, "notify.user.alice", presence("w2", 1))
	code, out, _ := f.do(t, "GET", "/api/v1/presence/alice?timeout_ms=200", "", nil)
	if code != 200 || out["online"] != true || out["sessions"] != 3.0 || len(out["workers"].([]any)) != 2 {
		t.Fatalf("%d %v", code, out)
	}
	code, out, _ = f.do(t, "GET", "/api/v1/presence/nobody", "", nil)
	if code != 200 || out["online"] != false || out["sessions"] != 0.0 {
		t.Fatalf("nobody: %d %v", code, out)
	}
	respond(t, f.nc, "notify.presence", bulk("w1", map[string]int{"alice": 2, "bob": 1}))
	respond(t, f.nc, "notify.presence", bulk("w2", map[string]int{"alice": 1}))
	code, out, _ = f.do(t, "POST", "/api/v1/presence?timeout_ms=200", `["alice","bob","carol","alice"]`, nil)
	online, _ := out["online"].(map[string]any)
	if code != 200 || online["alice"] != 3.0 || online["bob"] != 1.0 || online["carol"] != nil || len(out["workers"].([]any)) != 2 {
		t.Fatalf("bulk: %d %v", code, out)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Key: "short"},
		{Key: " " + testKey},
		{Key: testKey, Rate: -1},
		{Key: testKey, Burst: -1},
		{Key: testKey, MaxBodyBytes: -1},
		{Key: testKey, MaxTimeout: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := (Config{Key: testKey}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// bulk answers a bulk presence request as a worker holding held does.
func bulk(worker string, held map[string]int) func(*nats.Msg) []byte {
	return func(m *nats.Msg) []byte {
		var names []string
		_ = json.Unmarshal(m.Data, &names)
		online := map[string]int{}
		for _, n := range names {
			if c, ok := held[n]; ok {
				online[n] = c
			}
		}
		b, _ := json.Marshal(map[string]any{"worker": worker, "online": online})
		return b
	}
}

// A bulk answer expects the workers of the roll calls: it returns as soon
// as they all answered, and says partial, on time, when one is frozen.
func TestBulkPresencePartial(t *testing.T) {
	var p *NATSPresence
	f := newFixture(t, func(c *Config) {
		p = NewNATSPresence(c.Conn, c.Scheme)
		c.Presence = p
	})
	respond(t, f.nc, "notify.presence", bulk("w1", map[string]int{"alice": 1}))
	frozenConn, err := nats.Connect(f.nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(frozenConn.Close)
	frozen := make(chan struct{})
	var freeze atomic.Bool
	respond(t, frozenConn, "notify.presence", func(m *nats.Msg) []byte {
		if freeze.Load() {
			<-frozen
			return nil
		}
		return bulk("w2", map[string]int{"bob": 1})(m)
	})
	t.Cleanup(func() { close(frozen) })
	p.RollCall(context.Background())
	if n := len(p.fleet()); n != 2 {
		t.Fatalf("roll call found %d workers", n)
	}
	start := time.Now()
	code, out, _ := f.do(t, "POST", "/api/v1/presence?timeout_ms=5000", `["alice","bob"]`, nil)
	if code != 200 || out["partial"] != false || out["expected"] != 2.0 || len(out["online"].(map[string]any)) != 2 {
		t.Fatalf("whole fleet: %d %v", code, out)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the whole fleet answered, yet the answer took %v", d)
	}
	freeze.Store(true)
	start = time.Now()
	code, out, _ = f.do(t, "POST", "/api/v1/presence?timeout_ms=300", `["alice","bob"]`, nil)
	if code != 200 || out["partial"] != true || out["expected"] != 2.0 || len(out["workers"].([]any)) != 1 {
		t.Fatalf("one frozen: %d %v", code, out)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("partial answer after %v, want the 300 ms deadline", d)
	}
}

// Every route refuses in the same ways: no key, a wrong key, NATS down,
// a body over the limit, past the rate limit.
func TestEveryRouteRefuses(t *testing.T) {
	for _, r := range (&Server{}).Routes() {
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.Rate, c.Burst = 0.001, 2 })
			path := strings.ReplaceAll(r.Path, "{name}", "alice")
			big := `["` + strings.Repeat("a", 5000) + `"]`
			if code, _, _ := f.do(t, r.Method, path, "", map[string]string{"Authorization": ""}); code != http.StatusUnauthorized {
				t.Fatalf("no key: %d", code)
			}
			if code, _, _ := f.do(t, r.Method, path, "", map[string]string{"Authorization": "Bearer nope"}); code != http.StatusForbidden {
				t.Fatalf("wrong key: %d", code)
			}
			f.ready.Store(false)
			if code, _, _ := f.do(t, r.Method, path, "", nil); code != http.StatusServiceUnavailable {
				t.Fatalf("nats down: %d", code)
			}
			f.ready.Store(true)
			if slices.Contains(r.Statuses, http.StatusRequestEntityTooLarge) {
				if code, _, _ := f.do(t, r.Method, path, big, nil); code != http.StatusRequestEntityTooLarge {
					t.Fatalf("large body: %d", code)
				}
			} else {
				f.do(t, r.Method, path+"?timeout_ms=1", "", nil)
			}
			code, _, resp := f.do(t, r.Method, path, "", nil)
			if code != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("past the limit: %d", code)
			}
		})
	}
}
