// Package demo serves the demo page: a browser client of the worker built
// on the JavaScript SDK's browser build, with the page's own script and
// style sheet, all embedded in the binary. The page connects to /ws on
// the host it was loaded from, shows the connection's state, cursor and
// last welcome, each notification as a card, and the nats commands that
// reach it.
//
// Everything is served under [Path]: the page at /demo/, each file of
// static/ at /demo/<file>, and /demo/config.json, which tells the page the
// few settings it needs (see [Config]). Every response carries a strict
// Content-Security-Policy (scripts, styles and images from the page's own
// origin only, no inline script or style) and X-Content-Type-Options:
// nosniff.
package demo

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/notify-worker/notify-worker/internal/staticfiles"
)

// Path is where the page is served; the handler answers every path under it.
const Path = "/demo/"

// Auth modes the page knows: a name typed in, or a token pasted in.
const (
	AuthNone = "none"
	AuthJWT  = "jwt"
)

// ContentSecurityPolicy is sent with every response: nothing but the
// page's own files run or style it, it talks to its own origin (HTTP) and
// WebSocket servers only, and it cannot be framed.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

// contentTypes are the files the page is made of, by extension; a file of
// static/ with any other extension is not served.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// Config is what the page is told at /demo/config.json. It holds no
// secret: it is served to anyone who can load the page.
type Config struct {
	// SubjectPrefix is the worker's subject prefix, for the nats commands.
	SubjectPrefix string
	// Auth is AuthNone (the page asks for a name) or AuthJWT (for a token).
	Auth string
	// AppPing is the interval of the worker's app pings.
	AppPing time.Duration
	// Durable says whether durable notifications are on, so the page
	// offers the durable commands only when they can work.
	Durable bool
	// NATSURL is where producers reach the worker's embedded NATS server,
	// for the commands' --server flag. Leave it empty for external NATS
	// servers: their addresses and credentials are not the page's to show.
	NATSURL string
}

// pageConfig is config.json.
type pageConfig struct {
	SubjectPrefix string `json:"subject_prefix"`
	Auth          string `json:"auth"`
	AppPingMillis int64  `json:"app_ping_ms"`
	Durable       bool   `json:"durable"`
	NATSURL       string `json:"nats_url,omitempty"`
}

// Handler serves the page. Its zero value is not usable; see New.
type Handler struct {
	files  map[string]staticfiles.File // by name under Path; "" is the page itself
	config staticfiles.File
}

// New returns the handler of the page described by cfg. It is an error
// for cfg.Auth to be neither AuthNone nor AuthJWT, or for the subject
// prefix to be empty.
func New(cfg Config) (*Handler, error) {
	if cfg.Auth != AuthNone && cfg.Auth != AuthJWT {
		return nil, fmt.Errorf("demo: auth %q is neither %s nor %s", cfg.Auth, AuthNone, AuthJWT)
	}
	if cfg.SubjectPrefix == "" {
		return nil, errors.New("demo: empty subject prefix")
	}
	body, err := json.Marshal(pageConfig{
		SubjectPrefix: cfg.SubjectPrefix,
		Auth:          cfg.Auth,
		AppPingMillis: cfg.AppPing.Milliseconds(),
		Durable:       cfg.Durable,
		NATSURL:       cfg.NATSURL,
	})
	if err != nil {
		return nil, fmt.Errorf("demo: config.json: %w", err)
	}
	files, err := staticfiles.Load(static, "static", contentTypes)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	h := &Handler{files: files, config: staticfiles.New(append(body, '\n'), "application/json")}
	return h, nil
}

// ServeHTTP answers GET and HEAD under Path: the page at Path, a redirect
// to Path from Path without its slash, config.json, and the embedded
// files. Anything else under Path is 404 (an unknown file, a directory, a
// nested path) or 405 (another method).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == strings.TrimSuffix(Path, "/") {
		target := Path
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery // keeps ?name= prefilling the form
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if name == "config.json" {
		hdr.Set("Cache-Control", "no-store")
		h.config.Serve(w, r)
		return
	}
	f, ok := h.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Revalidate each time: a new binary may carry new files under the
	// same names, and the ETag makes the revalidation cheap.
	hdr.Set("Cache-Control", "no-cache")
	f.Serve(w, r)
}
