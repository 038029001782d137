// Package admin serves the admin page: live counts of this worker
// (connections, names, deliveries per second, drops), a fleet-wide
// presence lookup, a publish form and the fleet's recent events, all
// embedded in the binary.
//
// Everything is under [Path] and behind HTTP Basic authentication: any
// user name, the password the Config's Check accepts (the API key), so
// that a browser prompts for it; a request without it gets 401 with
// WWW-Authenticate: Basic realm="notify-worker admin", a wrong password
// 401 again. The page's data calls live under /admin/api/: stats and
// events are answered here, publish and presence by the HTTP API's
// handler (with its limits and JSON errors). Requests that change
// something must come from the page's own origin: a cross-origin POST
// (which a browser would send with the remembered password) is 403.
// Every response carries a strict Content-Security-Policy (the page's
// own files only, no inline script or style, no framing) and
// X-Content-Type-Options: nosniff.
package admin

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/notify-worker/notify-worker/internal/staticfiles"
)

// Path is where the page is served.
const Path = "/admin/"

// Realm is the realm of the Basic authentication challenge.
const Realm = "notify-worker admin"

// ContentSecurityPolicy is sent with every response.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Config is what the page reads and calls.
type Config struct {
	// Check reports whether a password is the API key, in constant time.
	Check func(password string) bool
	// Actions serves publish, presence and presence/{name} relative to
	// "/" without authentication (api.Server.Actions).
	Actions http.Handler
	// Metrics is the worker's registry, read for the live counts.
	Metrics prometheus.Gatherer
	// Events holds the recent events; nil shows none.
	Events *Events
	// Worker names this worker on the page.
	Worker string
	// SubjectPrefix is shown on the page.
	SubjectPrefix string
}

// Handler serves the page. Its zero value is not usable; see New.
type Handler struct {
	cfg   Config
	files map[string]staticfiles.File
	mux   *http.ServeMux
}

// New returns the page's handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Check == nil || cfg.Actions == nil || cfg.Metrics == nil {
		return nil, errors.New("admin: Check, Actions and Metrics are required")
	}
	files, err := staticfiles.Load(static, "static", contentTypes)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	h := &Handler{cfg: cfg, files: files}

	mux := http.NewServeMux()
	actions := http.StripPrefix(strings.TrimSuffix(Path, "/")+"/api", cfg.Actions)
	mux.Handle(Path+"api/publish", actions)
	mux.Handle(Path+"api/presence", actions)
	mux.Handle(Path+"api/presence/", actions)
	mux.HandleFunc("GET "+Path+"api/stats", h.stats)
	mux.HandleFunc("GET "+Path+"api/events", h.events)
	mux.HandleFunc(Path+"api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such route: " + r.URL.Path})
	})
	mux.HandleFunc(Path, h.file)
	h.mux = mux
	return h, nil
}

// crossOrigin refuses state-changing requests from other origins.
var crossOrigin = http.NewCrossOriginProtection()

// ServeHTTP checks the password, then serves the page or a data call.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cache-Control", "no-store")
	if _, pass, ok := r.BasicAuth(); !ok || !h.cfg.Check(pass) {
		hdr.Set("WWW-Authenticate", `Basic realm="`+Realm+`", charset="UTF-8"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "the admin page needs the API key as the password"})
		return
	}
	if err := crossOrigin.Check(r); err != nil {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross-origin request refused"})
		return
	}
	if r.URL.Path == strings.TrimSuffix(Path, "/") {
		http.Redirect(w, r, Path, http.StatusMovedPermanently)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) file(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	f, ok := h.files[strings.TrimPrefix(r.URL.Path, Path)]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	f.Serve(w, r)
}

// Stats is the answer of /admin/api/stats: this worker's counters, for
// the page to turn the totals into rates between two answers.
type Stats struct {
	Worker        string    `json:"worker"`
	SubjectPrefix string    `json:"subject_prefix"`
	At            time.Time `json:"at"`
	Connections   float64   `json:"connections"`
	Names         float64   `json:"names"`
	Deliveries    float64   `json:"deliveries_total"`
	Dropped       float64   `json:"dropped_total"`
	NATSDropped   float64   `json:"nats_dropped_total"`
	NATSConnected bool      `json:"nats_connected"`
}

func (h *Handler) stats(w http.ResponseWriter, _ *http.Request) {
	families, err := h.cfg.Metrics.Gather()
	if err != nil && len(families) == 0 {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "read metrics: " + err.Error()})
		return
	}
	sums := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			sums[f.GetName()] += value(m)
		}
	}
	writeJSON(w, http.StatusOK, Stats{
		Worker:        h.cfg.Worker,
		SubjectPrefix: h.cfg.SubjectPrefix,
		At:            time.Now().UTC(),
		Connections:   sums["notify_connections"],
		Names:         sums["notify_names"],
		Deliveries:    sums["notify_deliveries_total"],
		Dropped:       sums["notify_dropped_total"],
		NATSDropped:   sums["notify_nats_dropped_total"],
		NATSConnected: sums["notify_nats_connected"] > 0,
	})
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	events := []Event{}
	if h.cfg.Events != nil {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		events = h.cfg.Events.Recent(ctx)
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": events})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
