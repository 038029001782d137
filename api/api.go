// Package api is the worker's HTTP API for backends without a NATS
// client: publish a notification (core, with per-worker receipts, or
// durable through JetStream) and ask who is online, fleet-wide.
// docs/openapi.json in the repository describes every route, body and
// status.
//
// Every route lives under [Prefix] and needs "Authorization: Bearer <key>"
// (compared in constant time): no header is 401 with WWW-Authenticate:
// Bearer, another key 403. Every answer is JSON, errors included:
// {"error":"..."}. After authentication come, in this order: 404 for an
// unknown route, 405 for a wrong method (with Allow), 429 past the rate
// limit (with Retry-After), 503 while NATS is down, 413 for a body over
// the size limit, 400 for bad input.
//
// [Server.Actions] serves the same routes without the bearer check, for
// a caller that authenticates in its own way (the admin page).
package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/notify-worker/notify-worker/subjects"
)

// Prefix is where the API's routes live.
const Prefix = "/api/v1/"

// MinKeyLen is the shortest API key New accepts, in bytes: 32 random bytes
// (or 43 base64 characters) cannot be guessed.
const MinKeyLen = 32

// Defaults of the Config fields left zero.
const (
	DefaultRate           = 100
	DefaultBurst          = 200
	DefaultMaxBodyBytes   = 1 << 20
	DefaultTimeout        = time.Second
	DefaultMaxTimeout     = 10 * time.Second
	writeDeadlineHeadroom = 5 * time.Second
)

// Config says what the API reaches and how it is limited.
type Config struct {
	// Key is the bearer key, at least MinKeyLen bytes.
	Key string
	// Conn publishes and requests; it should be the API's own
	// connection, so that its traffic does not share the feed's.
	Conn *nats.Conn
	// JetStream publishes durable notifications; nil turns them off (a
	// durable publish is then 503).
	JetStream jetstream.JetStream
	// Scheme builds the subjects.
	Scheme subjects.Scheme
	// Ready says whether NATS is reachable; while it is false every
	// route answers 503. Nil means Conn.IsConnected.
	Ready func() bool
	// Presence answers presence questions; nil asks the workers over
	// Conn with a NATSPresence nobody runs roll calls for, so that a bulk
	// answer expects only the workers of earlier bulk answers.
	Presence Presence
	// Rate and Burst limit the requests of the whole API (there is one
	// key), per second; 0 means DefaultRate and DefaultBurst.
	Rate  float64
	Burst int
	// MaxBodyBytes limits a request body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxTimeout bounds the timeout_ms a caller may ask for; 0 means
	// DefaultMaxTimeout.
	MaxTimeout time.Duration
	// Log receives the failures a caller sees as 5xx.
	Log *slog.Logger
}

// ConfigError is a problem with one field of Config.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string       { return "api: " + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error       { return e.Err }
func (e *ConfigError) ConfigField() string { return e.Field }

// Validate reports the first problem of c, as a *ConfigError.
func (c Config) Validate() error {
	switch {
	case len(c.Key) < MinKeyLen:
		return &ConfigError{"Key", fmt.Errorf("is %d bytes; at least %d are needed", len(c.Key), MinKeyLen)}
	case strings.TrimSpace(c.Key) != c.Key || strings.ContainsAny(c.Key, "\r\n"):
		return &ConfigError{"Key", errors.New("must not start or end with white space")}
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return &ConfigError{"Rate", errors.New("must be positive")}
	case c.Burst < 0:
		return &ConfigError{"Burst", errors.New("must be positive")}
	case c.MaxBodyBytes < 0:
		return &ConfigError{"MaxBodyBytes", errors.New("must be positive")}
	case c.MaxTimeout < 0:
		return &ConfigError{"MaxTimeout", errors.New("must be positive")}
	}
	return nil
}

// Server serves the API. Its zero value is not usable; see New.
type Server struct {
	cfg      Config
	key      []byte
	limiter  *rate.Limiter
	presence Presence
	log      *slog.Logger
	actions  http.Handler
}

// New checks cfg and returns the API's handler.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Conn == nil {
		return nil, &ConfigError{"Conn", errors.New("is nil")}
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxTimeout == 0 {
		cfg.MaxTimeout = DefaultMaxTimeout
	}
	if cfg.Ready == nil {
		cfg.Ready = cfg.Conn.IsConnected
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:      cfg,
		key:      []byte(cfg.Key),
		limiter:  rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
		presence: cfg.Presence,
		log:      cfg.Log,
	}
	if s.presence == nil {
		s.presence = NewNATSPresence(cfg.Conn, cfg.Scheme)
	}
	s.actions = s.routes()
	return s, nil
}

// route is one path of the API, relative to Prefix, and its methods.
type route struct {
	pattern string // as http.ServeMux reads it, without the method
	methods map[string]http.HandlerFunc
	// body says the route reads a request body, and so can answer 413.
	body bool
}

func (s *Server) table() []route {
	return []route{
		{"publish", map[string]http.HandlerFunc{http.MethodPost: s.publish}, true},
		{"presence", map[string]http.HandlerFunc{http.MethodPost: s.bulkPresence}, true},
		{"presence/{name}", map[string]http.HandlerFunc{http.MethodGet: s.namePresence}, false},
	}
}

// Route is one operation the API serves.
type Route struct {
	Method string
	// Path is under Prefix, with {name} for a path parameter.
	Path string
	// Statuses are every status the operation can answer, besides the
	// 404 and 405 of a path or method that is not served.
	Statuses []int
}

// Routes lists what the API serves, so that a test can hold the OpenAPI
// document to it.
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.table() {
		statuses := []int{http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
			http.StatusTooManyRequests, http.StatusServiceUnavailable}
		if r.body {
			statuses = append(statuses, http.StatusRequestEntityTooLarge)
		}
		for m := range r.methods {
			out = append(out, Route{Method: m, Path: Prefix + r.pattern, Statuses: statuses})
		}
	}
	return out
}

// routes serves the table relative to "/": 404 for an unknown path, 405
// for a known path with another method, then the limits shared by every
// route.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.table() {
		allow := make([]string, 0, len(r.methods))
		for m := range r.methods {
			allow = append(allow, m)
		}
		methods := r.methods
		mux.HandleFunc("/"+r.pattern, func(w http.ResponseWriter, req *http.Request) {
			h, ok := methods[req.Method]
			if !ok {
				w.Header().Set("Allow", strings.Join(allow, ", "))
				writeError(w, http.StatusMethodNotAllowed, "method "+req.Method+" not allowed; use "+strings.Join(allow, " or "))
				return
			}
			s.limited(h).ServeHTTP(w, req)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusNotFound, "no such route: "+req.URL.Path)
	})
	return mux
}

// limited applies the rate limit, readiness and the body limit.
func (s *Server) limited(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if res := s.limiter.Reserve(); res.Delay() > 0 {
			wait := res.Delay()
			res.Cancel()
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			writeError(w, http.StatusTooManyRequests, "rate limit exceeded, retry after "+wait.Round(time.Millisecond).String())
			return
		}
		if !s.cfg.Ready() {
			writeError(w, http.StatusServiceUnavailable, "nats not connected")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		h(w, r)
	}
}

// ServeHTTP serves the routes under Prefix to a caller with the key; any
// other path it is given is 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch ok, present := s.bearer(r); {
	case !present:
		w.Header().Set("WWW-Authenticate", `Bearer realm="notify-worker api"`)
		writeError(w, http.StatusUnauthorized, "missing Authorization: Bearer <key>")
		return
	case !ok:
		writeError(w, http.StatusForbidden, "wrong API key")
		return
	}
	if !strings.HasPrefix(r.URL.Path, Prefix) {
		writeError(w, http.StatusNotFound, "no such route: "+r.URL.Path)
		return
	}
	http.StripPrefix(strings.TrimSuffix(Prefix, "/"), s.actions).ServeHTTP(w, r)
}

// bearer reports whether r carries the key, and whether it carries a
// bearer credential at all.
func (s *Server) bearer(r *http.Request) (ok, present bool) {
	h := r.Header.Get("Authorization")
	scheme, cred, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return false, false
	}
	return s.KeyMatches(strings.TrimSpace(cred)), true
}

// KeyMatches compares key with the API key in constant time.
func (s *Server) KeyMatches(key string) bool {
	return subtle.ConstantTimeCompare([]byte(key), s.key) == 1
}

// Actions serves the routes relative to "/" (publish, presence,
// presence/{name}) with every limit but without the bearer check: the
// caller has authenticated the request.
func (s *Server) Actions() http.Handler { return s.actions }

// errorBody is every error's answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"encode answer"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// extendWriteDeadline lets an answer that waits up to timeout be written
// even when the server's write timeout is shorter.
func extendWriteDeadline(w http.ResponseWriter, timeout time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + writeDeadlineHeadroom))
}

// timeout reads the timeout_ms of a request: def when absent, else 1 to
// the configured maximum.
func (s *Server) timeout(ms *int64, def time.Duration) (time.Duration, error) {
	if ms == nil {
		return min(def, s.cfg.MaxTimeout), nil
	}
	if *ms < 1 || time.Duration(*ms)*time.Millisecond > s.cfg.MaxTimeout {
		return 0, fmt.Errorf("timeout_ms must be 1 to %d", s.cfg.MaxTimeout.Milliseconds())
	}
	return time.Duration(*ms) * time.Millisecond, nil
}

// queryTimeout reads timeout_ms from the query string.
func (s *Server) queryTimeout(r *http.Request) (time.Duration, error) {
	v := r.URL.Query()["timeout_ms"]
	if len(v) == 0 {
		return s.timeout(nil, DefaultTimeout)
	}
	ms, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || len(v) > 1 {
		return 0, fmt.Errorf("timeout_ms %q is not one whole number of milliseconds", strings.Join(v, ","))
	}
	return s.timeout(&ms, DefaultTimeout)
}

// bodyError answers a body that could not be decoded: 413 over the size
// limit, 400 otherwise.
func (s *Server) bodyError(w http.ResponseWriter, err error) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", tooBig.Limit))
		return
	}
	writeError(w, http.StatusBadRequest, "body: "+err.Error())
}

// decodeBody reads r's body as exactly one JSON value into v, refusing
// unknown fields.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty; a JSON body is required")
		}
		return err
	}
	// Read to the end, so that anything after the value, or a body over
	// the limit, is seen.
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return errors.New("data after the JSON value")
	}
	return nil
}
