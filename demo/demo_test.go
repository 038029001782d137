package demo

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs the page of cfg on a real loopback HTTP server until cleanup.
func serve(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, h)
	mux.Handle(strings.TrimSuffix(Path, "/"), h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

var embeddedConfig = Config{
	SubjectPrefix: "acme.notify",
	Auth:          AuthNone,
	AppPing:       25 * time.Second,
	Durable:       true,
	NATSURL:       "nats://127.0.0.1:4222",
}

// get requests path without following redirects and returns the response
// with its body read.
func get(t *testing.T, srv *httptest.Server, method, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// checkHardened fails unless resp carries the page's security headers.
func checkHardened(t *testing.T, path string, resp *http.Response) {
	t.Helper()
	if got := resp.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
		t.Errorf("%s: Content-Security-Policy %q, want %q", path, got, ContentSecurityPolicy)
	}
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q, want nosniff", path, got)
	}
}

// The policy allows nothing inline and nothing from another origin but
// WebSocket connections.
func TestContentSecurityPolicy(t *testing.T) {
	directives := map[string]string{}
	for _, d := range strings.Split(ContentSecurityPolicy, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	for name, want := range map[string]string{
		"default-src": "'none'", "script-src": "'self'", "style-src": "'self'", "img-src": "'self'",
		"connect-src": "'self' ws: wss:", "frame-ancestors": "'none'", "base-uri": "'none'",
	} {
		if got := directives[name]; got != want {
			t.Errorf("%s %q, want %q", name, got, want)
		}
	}
	if strings.Contains(ContentSecurityPolicy, "unsafe") || strings.Contains(ContentSecurityPolicy, "*") {
		t.Errorf("policy %q allows inline code or any origin", ContentSecurityPolicy)
	}
}

func TestServePage(t *testing.T) {
	srv := serve(t, embeddedConfig)
	for _, path := range []string{"/demo/", "/demo/index.html"} {
		resp, body := get(t, srv, http.MethodGet, path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", path, got)
		}
		checkHardened(t, path, resp)
		page := string(body)
		for _, want := range []string{`<script src="notify-worker-client.min.js" defer></script>`, `<script src="demo.js" defer></script>`, `href="demo.css"`} {
			if !strings.Contains(page, want) {
				t.Errorf("%s lacks %s", path, want)
			}
		}
	}
	resp, body := get(t, srv, http.MethodHead, "/demo/", nil)
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("HEAD /demo/: %d, %d bytes, %q", resp.StatusCode, len(body), resp.Header.Get("Content-Type"))
	}
}

// The page's own files have no inline script or style (the policy would
// block them) and load nothing from elsewhere: no CDN, no framework.
func TestPageIsSelfContained(t *testing.T) {
	page, err := static.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range regexp.MustCompile(`(?is)<script\b[^>]*>(.*?)</script>`).FindAllSubmatch(page, -1) {
		if !bytes.Contains(tag[0], []byte(` src="`)) || len(bytes.TrimSpace(tag[1])) != 0 {
			t.Errorf("inline script: %s", tag[0])
		}
	}
	for _, pattern := range []string{`(?i)<style\b`, `(?i)\sstyle=`, `(?i)\son[a-z]+=`, `(?i)javascript:`} {
		if loc := regexp.MustCompile(pattern).FindIndex(page); loc != nil {
			t.Errorf("index.html has inline code or style (%s): %q", pattern, page[loc[0]:min(loc[1]+40, len(page))])
		}
	}
	for _, name := range []string{"index.html", "demo.js", "demo.css"} {
		body, err := static.ReadFile("static/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if loc := regexp.MustCompile(`(?i)https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import`).FindIndex(body); loc != nil {
			t.Errorf("%s refers to another origin: %q", name, body[max(loc[0]-30, 0):min(loc[1]+30, len(body))])
		}
	}
	scripts := regexp.MustCompile(`<script src="([^"]+)"`).FindAllSubmatch(page, -1)
	if len(scripts) != 2 || string(scripts[0][1]) != "notify-worker-client.min.js" || string(scripts[1][1]) != "demo.js" {
		t.Errorf("scripts %q, want the SDK's browser build then demo.js", scripts)
	}
}

// Every element demo.js looks up by id is in the page.
func TestScriptFindsItsElements(t *testing.T) {
	page, _ := static.ReadFile("static/index.html")
	script, err := static.ReadFile("static/demo.js")
	if err != nil {
		t.Fatal(err)
	}
	ids := regexp.MustCompile(`\$\('([A-Za-z0-9-]+)'\)`).FindAllSubmatch(script, -1)
	if len(ids) < 10 {
		t.Fatalf("found %d ids in demo.js", len(ids))
	}
	for _, id := range ids {
		if !bytes.Contains(page, []byte(` id="`+string(id[1])+`"`)) {
			t.Errorf("demo.js uses #%s, which index.html lacks", id[1])
		}
	}
}

func TestServeAssets(t *testing.T) {
	srv := serve(t, embeddedConfig)
	for _, tc := range []struct{ path, contentType string }{
		{"/demo/demo.js", "text/javascript; charset=utf-8"},
		{"/demo/demo.css", "text/css; charset=utf-8"},
		{"/demo/favicon.svg", "image/svg+xml"},
		{"/demo/notify-worker-client.min.js", "text/javascript; charset=utf-8"},
	} {
		resp, body := get(t, srv, http.MethodGet, tc.path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", tc.path, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tc.contentType {
			t.Errorf("%s: Content-Type %q, want %q", tc.path, got, tc.contentType)
		}
		checkHardened(t, tc.path, resp)
		want, err := static.ReadFile("static/" + strings.TrimPrefix(tc.path, Path))
		if err != nil || !bytes.Equal(body, want) {
			t.Errorf("%s: body differs from the embedded file (%v)", tc.path, err)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: ETag %q, Cache-Control %q", tc.path, etag, resp.Header.Get("Cache-Control"))
			continue
		}
		again, _ := get(t, srv, http.MethodGet, tc.path, http.Header{"If-None-Match": {etag}})
		if again.StatusCode != http.StatusNotModified {
			t.Errorf("%s with If-None-Match: %d, want 304", tc.path, again.StatusCode)
		}
	}
}

// The embedded SDK is the SDK's build, byte for byte.
func TestEmbeddedSDKIsTheBuild(t *testing.T) {
	built, err := os.ReadFile("../clients/js/dist/notify-worker-client.min.js")
	if err != nil {
		t.Fatalf("the SDK's browser build: %v (npm run build in clients/js)", err)
	}
	embedded, err := static.ReadFile("static/notify-worker-client.min.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(embedded, built) {
		t.Errorf("demo/static/notify-worker-client.min.js (%d bytes) differs from clients/js/dist/notify-worker-client.min.js (%d bytes): rebuild the SDK",
			len(embedded), len(built))
	}
}

func TestServeRedirect(t *testing.T) {
	srv := serve(t, embeddedConfig)
	for _, path := range []string{"/demo", "/demo?name=alice"} {
		resp, _ := get(t, srv, http.MethodGet, path, nil)
		if resp.StatusCode != http.StatusMovedPermanently {
			t.Errorf("%s: %d, want 301", path, resp.StatusCode)
		}
		want := "/demo/"
		if _, q, ok := strings.Cut(path, "?"); ok {
			want += "?" + q
		}
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("%s: Location %q, want %q", path, got, want)
		}
	}
}

// Only the page's files are served; anything else under /demo/ is 404,
// with the same headers, and other methods are 405.
func TestServeUnknown(t *testing.T) {
	srv := serve(t, embeddedConfig)
	for _, path := range []string{
		"/demo/nope.js", "/demo/static/demo.js", "/demo/sub/", "/demo/demo.js/", "/demo/Demo.js",
		"/demo/.hidden", "/demo/index.html%00", "/demo/config.json/x",
	} {
		resp, _ := get(t, srv, http.MethodGet, path, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
		checkHardened(t, path, resp)
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		resp, _ := get(t, srv, method, "/demo/", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /demo/: %d, Allow %q; want 405, GET, HEAD", method, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

func TestServeConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want map[string]any
	}{
		{"embedded", embeddedConfig, map[string]any{
			"subject_prefix": "acme.notify", "auth": "none", "app_ping_ms": 25000.0, "durable": true, "nats_url": "nats://127.0.0.1:4222",
		}},
		{"external, jwt, no stream", Config{SubjectPrefix: "notify", Auth: AuthJWT, AppPing: 1500 * time.Millisecond}, map[string]any{
			"subject_prefix": "notify", "auth": "jwt", "app_ping_ms": 1500.0, "durable": false,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serve(t, tc.cfg)
			resp, body := get(t, srv, http.MethodGet, "/demo/config.json", nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%d", resp.StatusCode)
			}
			checkHardened(t, "config.json", resp)
			if got := resp.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", got)
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			if len(got) != len(tc.want) {
				t.Errorf("config.json %v, want exactly %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{SubjectPrefix: "notify", Auth: ""},
		{SubjectPrefix: "notify", Auth: "JWT"},
		{SubjectPrefix: "", Auth: AuthNone},
	} {
		if h, err := New(cfg); err == nil || h != nil {
			t.Errorf("New(%+v) = %v, %v; want an error", cfg, h, err)
		}
	}
}
