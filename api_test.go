package main

// The HTTP API (docs/openapi.json) and the admin page through run: a
// real worker, real NATS (JetStream for durable publishes) and real
// WebSocket clients.

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/notify-worker/notify-worker/api"
)

const testAPIKey = "api-key-0123456789abcdef0123456789abcdef"

// apiConfig is testConfig with the API on.
func apiConfig(t *testing.T) Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.APIKey = testAPIKey
	return cfg
}

// apiAnswer is one answer of the API.
type apiAnswer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// apiCall sends method path with body and the bearer key (none when key
// is "") to tw.
func apiCall(t *testing.T, tw *testWorker, method, path, body, key string) apiAnswer {
	t.Helper()
	req, err := http.NewRequest(method, tw.url(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := apiAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("%s %s: %d %q is not a JSON object", method, path, resp.StatusCode, raw)
	}
	if resp.StatusCode >= 400 {
		if msg, _ := a.body["error"].(string); msg == "" {
			t.Fatalf("%s %s: %d without an error: %q", method, path, resp.StatusCode, raw)
		}
	}
	return a
}

func (a apiAnswer) want(t *testing.T, status int) apiAnswer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d (%s), want %d", a.status, a.raw, status)
	}
	return a
}

func TestAPIOffWithoutKey(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	for _, path := range []string{"/api/v1/publish", "/admin/", "/admin/api/stats"} {
		if code := status(t, tw.url(path)); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404 with the API off", path, code)
		}
	}
}

func TestAPIKeyTooShort(t *testing.T) {
	cfg := testConfig(t)
	cfg.APIKey = "short"
	cfg.APIRate = 0
	_, err := cfg.plan()
	if err == nil || !strings.Contains(err.Error(), "NOTIFY_API_KEY: is 5 bytes; at least 32") || !strings.Contains(err.Error(), "NOTIFY_API_RATE") {
		t.Fatalf("plan: %v", err)
	}
	if strings.Contains(err.Error(), "short") {
		t.Fatalf("the error shows the key: %v", err)
	}
}

// Every status the API answers, on a worker run as main runs it.
func TestAPIStatusCodes(t *testing.T) {
	cfg := apiConfig(t)
	cfg.APIMaxBodyBytes = 1024
	tw := startWorker(t, cfg)

	a := apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":1}`, "").want(t, http.StatusUnauthorized)
	if got := a.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Fatalf("WWW-Authenticate %q", got)
	}
	apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":1}`, testAPIKey+"x").want(t, http.StatusForbidden)
	apiCall(t, tw, "GET", "/api/v1/nothing", "", testAPIKey).want(t, http.StatusNotFound)
	apiCall(t, tw, "GET", "/api/v2/publish", "", testAPIKey).want(t, http.StatusNotFound)
	if a := apiCall(t, tw, "DELETE", "/api/v1/presence", "", testAPIKey).want(t, http.StatusMethodNotAllowed); a.header.Get("Allow") != "POST" {
		t.Fatalf("Allow %q", a.header.Get("Allow"))
	}
	for _, body := range []string{
		`{"name":"alice","all":true,"data":1}`, `{"data":1}`, `{"name":"a.b","data":1}`, `{"name":"alice","data":1,"x":1}`,
		`{"name":"alice","data":1,"data_b64":"AA=="}`, `{"name":"alice","data_b64":"%%"}`,
		`{"name":"alice","data":1,"durable":true,"receipt":true}`, `{"name":"alice","data":1,"receipt":true,"timeout_ms":-1}`,
	} {
		apiCall(t, tw, "POST", "/api/v1/publish", body, testAPIKey).want(t, http.StatusBadRequest)
	}
	apiCall(t, tw, "GET", "/api/v1/presence/a*", "", testAPIKey).want(t, http.StatusBadRequest)
	apiCall(t, tw, "POST", "/api/v1/presence", `["ok","not ok"]`, testAPIKey).want(t, http.StatusBadRequest)
	apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":"`+strings.Repeat("x", 2000)+`"}`, testAPIKey).want(t, http.StatusRequestEntityTooLarge)
	apiCall(t, tw, "POST", "/api/v1/presence", `[`+strings.Repeat(`"alice",`, 200)+`"bob"]`, testAPIKey).want(t, http.StatusRequestEntityTooLarge)
}

func TestAPIRateLimit(t *testing.T) {
	cfg := apiConfig(t)
	cfg.APIRate, cfg.APIBurst = 0.01, 2
	tw := startWorker(t, cfg)
	for range 2 {
		apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":1}`, testAPIKey).want(t, http.StatusOK)
	}
	a := apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":1}`, testAPIKey).want(t, http.StatusTooManyRequests)
	if ra := a.header.Get("Retry-After"); !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(ra) {
		t.Fatalf("Retry-After %q", ra)
	}
	// The admin page's calls share the limit.
	req, _ := http.NewRequest("GET", tw.url("/admin/api/presence/alice"), nil)
	req.SetBasicAuth("admin", testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("admin presence past the limit: %d", resp.StatusCode)
	}
}

func TestAPIWhileNATSIsDown(t *testing.T) {
	ns := startNATS(t, nil)
	cfg := apiConfig(t)
	cfg.NATSURLs = []string{ns.ClientURL()}
	cfg.Stream = streamOff
	tw := startWorker(t, cfg)
	eventually(t, "ready", func() bool { return status(t, tw.url("/readyz")) == http.StatusOK })
	a := apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":1,"durable":true}`, testAPIKey).want(t, http.StatusServiceUnavailable)
	if !strings.Contains(a.body["error"].(string), "durable") {
		t.Fatalf("durable with the stream off: %v", a.body)
	}
	stopNATS(ns)
	eventually(t, "not ready", func() bool { return status(t, tw.url("/readyz")) == http.StatusServiceUnavailable })
	apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":1}`, testAPIKey).want(t, http.StatusServiceUnavailable)
	apiCall(t, tw, "GET", "/api/v1/presence/alice", "", testAPIKey).want(t, http.StatusServiceUnavailable)
}

func TestAPIPublish(t *testing.T) {
	tw := startWorker(t, apiConfig(t))
	waitStream(t, tw)
	alice1, alice2 := client(t, tw, "alice"), client(t, tw, "alice")
	bob := client(t, tw, "bob")

	apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"bob","data":{"title":"core"}}`, testAPIKey).want(t, http.StatusOK)
	expect(t, bob, `{"title":"core"}`)
	apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"bob","data_b64":"AP8="}`, testAPIKey).want(t, http.StatusOK)
	if typ, msg := read(t, bob); typ != 2 || string(msg) != "\x00\xff" {
		t.Fatalf("bytes: type %d %q", typ, msg)
	}

	a := apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":{"n":1},"receipt":true,"timeout_ms":300}`, testAPIKey).want(t, http.StatusOK)
	if a.body["online"] != true || a.body["delivered"] != 2.0 {
		t.Fatalf("receipts: %s", a.raw)
	}
	if rs := a.body["receipts"].([]any); len(rs) != 1 || rs[0].(map[string]any)["worker"] != "test-worker" {
		t.Fatalf("receipts: %s", a.raw)
	}
	expect(t, alice1, `{"n":1}`)
	expect(t, alice2, `{"n":1}`)
	start := time.Now()
	a = apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"nobody","data":1,"receipt":true,"timeout_ms":5000}`, testAPIKey).want(t, http.StatusOK)
	if a.raw != "{\"online\":false,\"delivered\":0}\n" || time.Since(start) > 2*time.Second {
		t.Fatalf("nobody: %q after %v", a.raw, time.Since(start))
	}

	a = apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":{"n":2},"durable":true,"id":"n-2"}`, testAPIKey).want(t, http.StatusOK)
	seq := a.body["seq"].(float64)
	if seq < 1 || a.body["stream"] != "NOTIFY" || a.body["duplicate"] != false {
		t.Fatalf("durable: %s", a.raw)
	}
	expect(t, alice1, `{"n":2}`)
	expect(t, alice2, `{"n":2}`)
	req, _ := http.NewRequest("POST", tw.url("/api/v1/publish"), strings.NewReader(`{"name":"alice","data":{"n":2},"durable":true}`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Idempotency-Key", "n-2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var dup api.DurableAnswer
	if err := json.NewDecoder(resp.Body).Decode(&dup); err != nil || resp.StatusCode != 200 {
		t.Fatalf("retry: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	if !dup.Duplicate || float64(dup.Seq) != seq {
		t.Fatalf("retry: %+v, want a duplicate of %v", dup, seq)
	}

	// A v2 client resuming from before it gets the stored message once.
	since := uint64(seq) - 1
	c, w := resume(t, tw, "alice", &since)
	if !*w.Recovered || w.Replayed != 1 {
		t.Fatalf("welcome %+v", w)
	}
	if m := readMsgV2(t, c); m.seq() != uint64(seq) || string(m.Data) != `{"n":2}` {
		t.Fatalf("replayed %+v", m)
	}
	apiCall(t, tw, "POST", "/api/v1/publish", `{"all":true,"data":"everyone","durable":true}`, testAPIKey).want(t, http.StatusOK)
	expect(t, bob, `"everyone"`)
}

// docs/openapi.json documents exactly the routes the API serves, each
// answers on a running worker, and each lists the statuses its handler
// returns.
func TestOpenAPIDocument(t *testing.T) {
	raw, err := os.ReadFile("docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Responses map[string]json.RawMessage `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	tw := startWorker(t, apiConfig(t))
	s, err := api.New(api.Config{Key: testAPIKey, Conn: connectNATS(t, tw.natsURL)})
	if err != nil {
		t.Fatal(err)
	}
	served := map[string][]int{}
	for _, r := range s.Routes() {
		served[r.Method+" "+r.Path] = r.Statuses
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			route := strings.ToUpper(method) + " " + path
			statuses, ok := served[route]
			if !ok {
				t.Errorf("%s is documented, not served", route)
				continue
			}
			delete(served, route)
			concrete := strings.ReplaceAll(path, "{name}", "alice")
			body := `{}`
			if strings.HasSuffix(path, "/presence") {
				body = `["alice"]`
			}
			if a := apiCall(t, tw, strings.ToUpper(method), concrete+"?timeout_ms=50", body, testAPIKey); a.status == 404 || a.status == 405 {
				t.Errorf("%s: %d %s", route, a.status, a.raw)
			}
			for _, code := range statuses {
				if _, ok := op.Responses[strconv.Itoa(code)]; !ok {
					t.Errorf("%s does not document %d", route, code)
				}
			}
		}
	}
	for route := range served {
		t.Errorf("%s is served, not documented", route)
	}
}

// Presence through the API, answered by real workers: names on several
// workers and on none, one by one and in bulk, and the admin page's
// lookup.
func TestAPIPresence(t *testing.T) {
	srv := startNATS(t, nil)
	var workers []*testWorker
	for _, id := range []string{"worker-1", "worker-2", "worker-3"} {
		cfg := apiConfig(t)
		cfg.NATSURLs = []string{srv.ClientURL()}
		cfg.WorkerID = id
		cfg.Stream = streamOff
		workers = append(workers, startWorker(t, cfg))
	}
	client(t, workers[0], "gus")
	client(t, workers[0], "gus")
	client(t, workers[1], "gus")
	client(t, workers[2], "hal")
	// The last worker's API called its first roll call once all three
	// were serving.
	tw := workers[2]

	a := apiCall(t, tw, "GET", "/api/v1/presence/gus?timeout_ms=300", "", testAPIKey).want(t, http.StatusOK)
	want := `{"name":"gus","online":true,"sessions":3,"workers":[{"worker":"worker-1","sessions":2},{"worker":"worker-2","sessions":1}]}` + "\n"
	if a.raw != want {
		t.Fatalf("gus: %s, want %s", a.raw, want)
	}
	start := time.Now()
	a = apiCall(t, tw, "GET", "/api/v1/presence/nobody?timeout_ms=5000", "", testAPIKey).want(t, http.StatusOK)
	if a.raw != `{"name":"nobody","online":false,"sessions":0,"workers":[]}`+"\n" || time.Since(start) > 2*time.Second {
		t.Fatalf("nobody: %s after %v", a.raw, time.Since(start))
	}

	eventually(t, "a bulk answer expecting the three workers", func() bool {
		a = apiCall(t, tw, "POST", "/api/v1/presence?timeout_ms=2000", `["gus","hal","nobody"]`, testAPIKey).want(t, http.StatusOK)
		return a.body["expected"] == 3.0
	})
	want = `{"online":{"gus":3,"hal":1},"workers":["worker-1","worker-2","worker-3"],"expected":3,"partial":false}` + "\n"
	if a.raw != want {
		t.Fatalf("bulk: %s, want %s", a.raw, want)
	}
	// Every expected worker answered, so the answer did not wait for the
	// deadline.
	start = time.Now()
	apiCall(t, tw, "POST", "/api/v1/presence?timeout_ms=5000", `["gus"]`, testAPIKey).want(t, http.StatusOK)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a complete bulk answer took %v", d)
	}

	req, _ := http.NewRequest("GET", tw.url("/admin/api/presence/hal?timeout_ms=300"), nil)
	req.SetBasicAuth("ops", testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"name":"hal","online":true,"sessions":1,"workers":[{"worker":"worker-3","sessions":1}]}`+"\n" {
		t.Fatalf("admin presence: %d %s", resp.StatusCode, body)
	}
}

// The admin page through run: the Basic challenge, its own origin only
// for publishing, and counts read from the worker's registry.
func TestAdminPage(t *testing.T) {
	tw := startWorker(t, apiConfig(t))
	adminReq := func(method, path, pass string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, tw.url(path), strings.NewReader(`{"name":"alice","data":1}`))
		if pass != "" {
			req.SetBasicAuth("anyone", pass)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, pass := range []string{"", "wrong", "Bearer " + testAPIKey} {
		resp, _ := adminReq("GET", "/admin/", pass, nil)
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Basic realm="notify-worker admin"`) {
			t.Fatalf("password %q: %d %v", pass, resp.StatusCode, resp.Header)
		}
	}
	resp, body := adminReq("GET", "/admin/", testAPIKey, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `<script src="admin.js"`) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("page: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := adminReq("GET", "/admin", testAPIKey, nil); resp.StatusCode != http.StatusMovedPermanently {
		t.Fatalf("/admin: %d", resp.StatusCode)
	}
	if resp, body := adminReq("POST", "/admin/api/publish", testAPIKey, map[string]string{"Origin": "https://elsewhere.example"}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin publish: %d %s", resp.StatusCode, body)
	}
	if resp, body := adminReq("POST", "/admin/api/publish", testAPIKey, map[string]string{"Sec-Fetch-Site": "same-origin"}); resp.StatusCode != 200 || body != "{\"published\":true}\n" {
		t.Fatalf("publish: %d %s", resp.StatusCode, body)
	}
	client(t, tw, "alice")
	eventually(t, "the connection counted", func() bool {
		_, body := adminReq("GET", "/admin/api/stats", testAPIKey, nil)
		var st struct {
			Connections, Names float64
			NATSConnected      bool `json:"nats_connected"`
		}
		return json.Unmarshal([]byte(body), &st) == nil && st.Connections == 1 && st.Names == 1 && st.NATSConnected
	})
}

// With NATS permissions like deploy/nats.conf's, where the worker may not
// publish to users' subjects, the API connects with credentials of its
// own (NOTIFY_API_NATS_USER) and publishes as a producer.
func TestAPIOwnNATSCredentials(t *testing.T) {
	srv := startNATS(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "worker", Password: "worker-pw", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"notify.inbound.*", "notify.event.>", "_INBOX.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{">"}},
				Response:  &server.ResponsePermission{MaxMsgs: 1},
			}},
			{Username: "producer", Password: "producer-pw", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"notify.user.*", "notify.all", "notify.presence"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"notify.event.>", "_INBOX.>"}},
			}},
		}
	})
	cfg := apiConfig(t)
	cfg.Stream = streamOff
	cfg.NATSURLs = []string{srv.ClientURL()}
	cfg.NATSUser, cfg.NATSPassword = "worker", "worker-pw"
	cfg.APINATSUser, cfg.APINATSPassword = "producer", "producer-pw"
	tw := startWorker(t, cfg)
	alice := client(t, tw, "alice")

	a := apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":{"n":1},"receipt":true,"timeout_ms":2000}`, testAPIKey).want(t, http.StatusOK)
	if a.body["online"] != true || a.body["delivered"] != 1.0 {
		t.Fatalf("receipts: %s", a.raw)
	}
	expect(t, alice, `{"n":1}`)
	apiCall(t, tw, "POST", "/api/v1/publish", `{"name":"alice","data":{"n":2}}`, testAPIKey).want(t, http.StatusOK)
	expect(t, alice, `{"n":2}`)
}
