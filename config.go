package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/notify-worker/notify-worker/api"
	"github.com/notify-worker/notify-worker/auth"
	"github.com/notify-worker/notify-worker/hub"
	"github.com/notify-worker/notify-worker/subjects"
	"github.com/notify-worker/notify-worker/worker"
)

// envPrefix starts every variable Config reads.
const envPrefix = "NOTIFY"

// Config is the whole configuration, read from NOTIFY_* environment
// variables. README.md documents every field; the defaults live here only.
type Config struct {
	Addr             string   `envconfig:"ADDR" default:":8888" desc:"listen address for WebSocket and HTTP"`
	NATSURLs         []string `envconfig:"NATS_URL" desc:"comma-separated NATS URLs; empty starts an embedded NATS server"`
	EmbeddedNATSAddr string   `envconfig:"EMBEDDED_NATS_ADDR" default:"127.0.0.1:4222" desc:"where the embedded server listens for producers (port 0: any free port)"`
	SubjectPrefix    string   `envconfig:"SUBJECT_PREFIX" default:"notify" desc:"first token(s) of every subject"`
	WorkerID         string   `envconfig:"WORKER_ID" desc:"names this worker in request replies (empty: the host name)"`

	NATSName           string        `envconfig:"NATS_NAME" default:"notify-worker" desc:"connection name shown in NATS monitoring"`
	NATSUser           string        `envconfig:"NATS_USER" desc:"user/password authentication"`
	NATSPassword       string        `envconfig:"NATS_PASSWORD" desc:"user/password authentication"`
	NATSToken          string        `envconfig:"NATS_TOKEN" desc:"token authentication"`
	NATSCredsFile      string        `envconfig:"NATS_CREDS" desc:"path of a .creds file (JWT + nkey)"`
	NATSNKeySeedFile   string        `envconfig:"NATS_NKEY_SEED" desc:"path of a file holding an nkey seed"`
	NATSTLSCAFile      string        `envconfig:"NATS_TLS_CA" desc:"CA bundle to verify the NATS servers"`
	NATSTLSCertFile    string        `envconfig:"NATS_TLS_CERT" desc:"client certificate and key for TLS to NATS"`
	NATSTLSKeyFile     string        `envconfig:"NATS_TLS_KEY" desc:"client certificate and key for TLS to NATS"`
	NATSConnectTimeout time.Duration `envconfig:"NATS_CONNECT_TIMEOUT" default:"2s" desc:"timeout of one connection attempt"`
	NATSMaxReconnects  int           `envconfig:"NATS_MAX_RECONNECTS" default:"-1" desc:"reconnect attempts; -1 is forever"`
	NATSReconnectWait  time.Duration `envconfig:"NATS_RECONNECT_WAIT" default:"1s" desc:"pause between attempts to the same server (±25% jitter)"`
	NATSPingInterval   time.Duration `envconfig:"NATS_PING_INTERVAL" default:"2s" desc:"client pings to the server"`
	NATSMaxPingsOut    int           `envconfig:"NATS_MAX_PINGS_OUT" default:"2" desc:"unanswered pings before the server is declared dead (so about 4-6 s)"`

	Stream                  string        `envconfig:"STREAM" default:"NOTIFY" desc:"JetStream stream of durable notifications (created when missing); off disables durable support"`
	StreamMaxAge            time.Duration `envconfig:"STREAM_MAX_AGE" default:"24h" desc:"how long the stream keeps a message"`
	StreamMaxMsgsPerSubject int64         `envconfig:"STREAM_MAX_MSGS_PER_SUBJECT" default:"10000" desc:"messages kept per name (and for the broadcast subject)"`
	StreamMaxBytes          int64         `envconfig:"STREAM_MAX_BYTES" default:"1073741824" desc:"size limit of the stream, in bytes (1 GiB)"`
	StreamStorage           string        `envconfig:"STREAM_STORAGE" default:"file" desc:"file or memory"`
	StreamReplicas          int           `envconfig:"STREAM_REPLICAS" default:"1" desc:"copies of the stream in a NATS cluster (1 to 5; 3 in docker-compose.yml)"`
	StreamDuplicateWindow   time.Duration `envconfig:"STREAM_DUPLICATE_WINDOW" default:"2m" desc:"how long a Nats-Msg-Id makes a retried publish a no-op (at most the max age)"`
	JetStreamDir            string        `envconfig:"JETSTREAM_DIR" default:"data/jetstream" desc:"where the embedded server stores the stream (keep it to keep durable messages across restarts)"`
	ReplayMax               int           `envconfig:"REPLAY_MAX" default:"1000" desc:"most messages replayed to one resuming client (more: recovered:false, replay_max)"`
	ReplayConcurrency       int           `envconfig:"REPLAY_CONCURRENCY" default:"64" desc:"resumes reading JetStream at once; the others wait within the join timeout (then 1013)"`
	AppPing                 time.Duration `envconfig:"APP_PING" default:"25s" desc:"interval of the {\"type\":\"ping\"} frame to protocol v2 clients"`
	Events                  string        `envconfig:"EVENTS" default:"on" desc:"on publishes <prefix>.event.online.<name> and .offline.<name> (docs/protocol.md, section 9); off does not (acks are published either way)"`
	EventBuffer             int           `envconfig:"EVENT_BUFFER" default:"8192" desc:"events waiting to be published; past it an event is dropped and counted in notify_events_dropped_total"`

	DispatchLanes  int `envconfig:"DISPATCH_LANES" default:"0" desc:"goroutines delivering user messages (one name always uses the same lane); 0: the goroutine reading NATS delivers them itself"`
	DispatchBuffer int `envconfig:"DISPATCH_BUFFER" default:"8192" desc:"messages buffered per lane; every subscription feeds one inbox of this × (lanes + 1), and what overflows it is counted in notify_nats_dropped_total (v2 sessions then resume)"`

	Auth           string        `envconfig:"AUTH" default:"none" desc:"none trusts the client's name (development); jwt requires a token"`
	JWTSecret      string        `envconfig:"JWT_SECRET" desc:"HS256 secret, 32+ bytes (one key source for jwt)"`
	JWTPublicKey   string        `envconfig:"JWT_PUBLIC_KEY_FILE" desc:"PEM RSA (RS256) or EC P-256 (ES256) public key or certificate"`
	JWKSURL        string        `envconfig:"JWKS_URL" desc:"JWKS endpoint (RS256/ES256 keys by kid)"`
	JWKSRefresh    time.Duration `envconfig:"JWKS_REFRESH" default:"1h" desc:"JWKS refresh interval (also refreshed on an unknown kid, at most every 10 s)"`
	JWTAudience    string        `envconfig:"JWT_AUDIENCE" desc:"when set, aud must contain / iss must equal it"`
	JWTIssuer      string        `envconfig:"JWT_ISSUER" desc:"when set, aud must contain / iss must equal it"`
	JWTLeeway      time.Duration `envconfig:"JWT_LEEWAY" default:"30s" desc:"clock skew allowed on exp, nbf, iat"`
	AllowedOrigins []string      `envconfig:"ALLOWED_ORIGINS" desc:"browser origins allowed: *, https://app.example.com, https://*.example.com; empty is same-origin only; requests without Origin are always allowed"`
	TLSCertFile    string        `envconfig:"TLS_CERT" desc:"PEM certificate and key: serve wss:///https:// directly"`
	TLSKeyFile     string        `envconfig:"TLS_KEY" desc:"PEM certificate and key: serve wss:///https:// directly"`
	Demo           string        `envconfig:"DEMO" desc:"the demo page at /demo/: on, off, or empty (on exactly when NOTIFY_AUTH=none)"`

	APIKey          string        `envconfig:"API_KEY" desc:"bearer key of the HTTP API at /api/v1/ and password of the admin page at /admin/, 32+ bytes; empty turns both off"`
	APIRate         float64       `envconfig:"API_RATE" default:"100" desc:"requests per second to the HTTP API and the admin page's publish and presence calls, all callers together (past it: 429)"`
	APIBurst        int           `envconfig:"API_BURST" default:"200" desc:"requests per second to the HTTP API and the admin page's publish and presence calls, all callers together (past it: 429)"`
	APIMaxBodyBytes int64         `envconfig:"API_MAX_BODY_BYTES" default:"1048576" desc:"size limit of an HTTP API request body (larger: 413)"`
	APIMaxTimeout   time.Duration `envconfig:"API_MAX_TIMEOUT" default:"10s" desc:"longest timeout_ms a receipt or presence request may ask for"`
	APINATSUser     string        `envconfig:"API_NATS_USER" desc:"user/password of the HTTP API's own NATS connection (empty: the worker's credentials); it publishes as a producer"`
	APINATSPassword string        `envconfig:"API_NATS_PASSWORD" desc:"user/password of the HTTP API's own NATS connection (empty: the worker's credentials); it publishes as a producer"`
	APINATSCreds    string        `envconfig:"API_NATS_CREDS" desc:"path of a .creds file for the HTTP API's own NATS connection (empty: the worker's credentials)"`

	HandshakeTimeout   time.Duration `envconfig:"HANDSHAKE_TIMEOUT" default:"10s" desc:"limit on reading an HTTP request and answering the upgrade (slow-loris)"`
	MaxHeaderBytes     int           `envconfig:"MAX_HEADER_BYTES" default:"8192" desc:"request header limit (larger: 431)"`
	MaxConnections     int           `envconfig:"MAX_CONNECTIONS" default:"0" desc:"connection cap; 0 is the open-file limit less 256 (past the cap: 503)"`
	MaxSessionsPerName int           `envconfig:"MAX_SESSIONS_PER_NAME" default:"16" desc:"sessions of one name per worker (past it: 1008)"`
	UpstreamRate       float64       `envconfig:"UPSTREAM_RATE" default:"10" desc:"client messages per second after the welcome (past it: 1008)"`
	UpstreamBurst      int           `envconfig:"UPSTREAM_BURST" default:"20" desc:"client messages per second after the welcome (past it: 1008)"`
	IdentifyTimeout    time.Duration `envconfig:"IDENTIFY_TIMEOUT" default:"10s" desc:"time to send the first message (then: 1008)"`

	IdentifyMaxBytes int64         `envconfig:"IDENTIFY_MAX_BYTES" default:"8192" desc:"size limit of the first message (larger: close 1009)"`
	MaxMessageBytes  int64         `envconfig:"MAX_MESSAGE_BYTES" default:"65536" desc:"size limit of later client messages (larger: close 1009)"`
	JoinTimeout      time.Duration `envconfig:"JOIN_TIMEOUT" default:"5s" desc:"how long to wait for NATS to confirm a new name's interest"`
	SessionQueue     int           `envconfig:"SESSION_QUEUE" default:"32" desc:"messages queued per session (48 bytes a slot); on overflow the message is dropped (counted in notify_dropped_total) and the session closed with 4002"`
	WriteTimeout     time.Duration `envconfig:"WRITE_TIMEOUT" default:"10s" desc:"limit of one write to a client"`
	PingPeriod       time.Duration `envconfig:"PING_PERIOD" default:"20s" desc:"WebSocket pings to each client"`
	PongTimeout      time.Duration `envconfig:"PONG_TIMEOUT" default:"30s" desc:"a client silent this long (no pong, no message) is disconnected"`

	DrainDelay      time.Duration `envconfig:"DRAIN_DELAY" default:"5s" desc:"after SIGTERM, how long /readyz answers 503 while the worker still accepts and serves, so a balancer moves new clients away first (cover its check interval × fall count); SIGINT and a second signal skip it"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s" desc:"limit of the graceful shutdown"`
	LogLevel        string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat       string        `envconfig:"LOG_FORMAT" default:"text" desc:"text or json"`
	PprofAddr       string        `envconfig:"PPROF_ADDR" default:"127.0.0.1:6060" desc:"where a build with -tags pprof serves net/http/pprof (ignored by the default build)"`
	GCHeapFloor     int64         `envconfig:"GC_HEAP_FLOOR" default:"67108864" desc:"bytes the heap may grow by between two garbage collections at least (64 MiB), however small the live heap; 0 leaves it to GOGC alone"`
	MetricsAddr     string        `envconfig:"METRICS_ADDR" desc:"listen address of a second, private HTTP listener for /metrics (the public one then answers 404 there); empty serves /metrics on the public listener"`
}

// loadConfig reads Config from the environment. A value of the wrong type
// (a number that is not one, a duration without a unit) is a configError.
func loadConfig() (Config, error) {
	var cfg Config
	if err := envconfig.Process(envPrefix, &cfg); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return Config{}, &configError{problems: []error{fmt.Errorf("%s: %q is not a valid %s", pe.KeyName, pe.Value, pe.TypeName)}}
		}
		return Config{}, &configError{problems: []error{err}}
	}
	return cfg, nil
}

// configError lists every problem of a configuration, each naming its
// variable. main exits 2 on it.
type configError struct{ problems []error }

func (e *configError) Error() string {
	msgs := make([]string, len(e.problems))
	for i, p := range e.problems {
		msgs[i] = p.Error()
	}
	return strings.Join(msgs, "; ")
}

// envName returns the variable that sets Config's field named field.
func envName(field string) string {
	f, ok := reflect.TypeFor[Config]().FieldByName(field)
	if !ok {
		panic("no Config field " + field)
	}
	return envPrefix + "_" + f.Tag.Get("envconfig")
}

// plan is a validated configuration and what follows from it: the parts
// are built from it, and nothing is built before it exists.
type plan struct {
	cfg      Config
	scheme   subjects.Scheme
	workerID string
	maxConns int
	// warnings are settings that work but are unwise; run logs them.
	warnings []string
	tlsCert  string
	tlsKey   string
	// auth is the token verification to build; nil for NOTIFY_AUTH=none.
	auth *auth.Config
	// demo says whether /demo/ serves the demo page.
	demo bool
	// api is the HTTP API's configuration, without its NATS side; nil
	// when NOTIFY_API_KEY is empty.
	api *api.Config
}

// plan validates every setting and returns the plan, or a configError
// listing every problem found, each naming its variable.
func (c Config) plan() (*plan, error) {
	p := &plan{cfg: c, workerID: c.workerID()}
	var problems []error
	bad := func(field, format string, args ...any) {
		problems = append(problems, fmt.Errorf("%s: %s", envName(field), fmt.Sprintf(format, args...)))
	}

	scheme, err := subjects.New(c.SubjectPrefix)
	if err != nil {
		bad("SubjectPrefix", "%v", err)
	}
	p.scheme = scheme
	if err := checkHostPort(c.Addr); err != nil {
		bad("Addr", "%v", err)
	}
	if len(c.NATSURLs) == 0 {
		if err := checkHostPort(c.EmbeddedNATSAddr); err != nil {
			bad("EmbeddedNATSAddr", "%v", err)
		}
	}
	for _, f := range []string{"NATSCredsFile", "NATSNKeySeedFile", "NATSTLSCAFile", "NATSTLSCertFile", "NATSTLSKeyFile"} {
		if path := reflect.ValueOf(c).FieldByName(f).String(); path != "" {
			if _, err := os.Stat(path); err != nil {
				bad(f, "%v", err)
			}
		}
	}

	switch c.Auth {
	case "none":
		p.warnings = append(p.warnings, envName("Auth")+"=none: ANY CLIENT CAN CLAIM ANY NAME and read its notifications; "+
			"use "+envName("Auth")+"=jwt anywhere but development and trusted networks")
	case "jwt":
		p.auth = &auth.Config{
			Secret:        c.JWTSecret,
			PublicKeyFile: c.JWTPublicKey,
			JWKSURL:       c.JWKSURL,
			JWKSRefresh:   c.JWKSRefresh,
			Audience:      c.JWTAudience,
			Issuer:        c.JWTIssuer,
			Leeway:        c.JWTLeeway,
		}
	default:
		bad("Auth", "%q is neither none nor jwt", c.Auth)
	}

	switch c.Demo {
	case "":
		p.demo = c.Auth == "none"
	case demoOn, demoOff:
		p.demo = c.Demo == demoOn
	default:
		bad("Demo", "%q is neither %s nor %s (empty: %s when %s=none)", c.Demo, demoOn, demoOff, demoOn, envName("Auth"))
	}

	switch c.Events {
	case eventsOn, eventsOff:
	default:
		bad("Events", "%q is neither %s nor %s", c.Events, eventsOn, eventsOff)
	}
	if c.EventBuffer <= 0 {
		bad("EventBuffer", "%d is not positive", c.EventBuffer)
	}
	if c.APINATSCreds != "" && (c.APINATSUser != "" || c.APINATSPassword != "") {
		bad("APINATSCreds", "and %s are two ways to authenticate; give one", envName("APINATSUser"))
	}
	if c.APIKey != "" {
		p.api = &api.Config{
			Key:          c.APIKey,
			Rate:         c.APIRate,
			Burst:        c.APIBurst,
			MaxBodyBytes: c.APIMaxBodyBytes,
			MaxTimeout:   c.APIMaxTimeout,
		}
		if c.APIRate == 0 {
			bad("APIRate", "must be positive")
		}
		if c.APIBurst == 0 {
			bad("APIBurst", "must be positive")
		}
		if c.APIMaxBodyBytes == 0 {
			bad("APIMaxBodyBytes", "must be positive")
		}
		if c.APIMaxTimeout == 0 {
			bad("APIMaxTimeout", "must be positive")
		}
		// Validate reports a negative value and a bad key.
		if err := p.api.Validate(); err != nil {
			problems = append(problems, inTermsOfVariables(err, apiFields))
		}
	}

	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("TLSCertFile", "goes together with %s", envName("TLSKeyFile"))
	} else if c.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			bad("TLSCertFile", "with %s: %v", envName("TLSKeyFile"), err)
		}
		p.tlsCert, p.tlsKey = c.TLSCertFile, c.TLSKeyFile
	}
	if c.Stream == "" {
		bad("Stream", "is empty: name the stream, or say %s to turn durable support off", streamOff)
	}
	if c.HandshakeTimeout <= 0 {
		bad("HandshakeTimeout", "must be positive")
	}
	if c.MaxHeaderBytes <= 0 {
		bad("MaxHeaderBytes", "must be positive")
	}
	maxConns, warning, err := c.maxConnections()
	if err != nil {
		problems = append(problems, err)
	} else if warning != "" {
		p.warnings = append(p.warnings, warning)
	}
	p.maxConns = maxConns
	if c.DrainDelay < 0 {
		bad("DrainDelay", "must not be negative")
	}
	if c.ShutdownTimeout <= 0 {
		bad("ShutdownTimeout", "must be positive")
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		bad("LogLevel", "%v", err)
	}
	if _, err := logFormat(c.LogFormat); err != nil {
		bad("LogFormat", "%v", err)
	}
	if c.GCHeapFloor < 0 {
		bad("GCHeapFloor", "must be 0 (off) or a number of bytes")
	}
	if err := checkHostPort(c.PprofAddr); err != nil {
		bad("PprofAddr", "%v", err)
	}
	if c.MetricsAddr != "" {
		if err := checkHostPort(c.MetricsAddr); err != nil {
			bad("MetricsAddr", "%v", err)
		} else if c.MetricsAddr == c.Addr && !strings.HasSuffix(c.Addr, ":0") {
			bad("MetricsAddr", "%q is %s too; give the metrics listener an address of its own, or leave it empty", c.MetricsAddr, envName("Addr"))
		}
	}
	problems = append(problems, p.libraryProblems()...)
	if len(problems) > 0 {
		return nil, &configError{problems: problems}
	}
	return p, nil
}

// checkHostPort accepts host:port with a port from 0 to 65535.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func (c Config) workerID() string {
	if c.WorkerID != "" {
		return c.WorkerID
	}
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return "notify-worker"
}

// fdReserve is the part of the open-file limit kept for what is not a
// client: listeners, NATS connections, log and config files.
const fdReserve = 256

// maxConnections returns the connection cap: NOTIFY_MAX_CONNECTIONS, or,
// when that is 0, the open-file limit less fdReserve, since every
// connection holds a file descriptor and running out of them breaks
// accept() for everyone. The warning, if not empty, says why a configured
// cap is unsafe.
func (c Config) maxConnections() (n int, warning string, err error) {
	name := envName("MaxConnections")
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, "", fmt.Errorf("%s: read the open-file limit: %w", name, err)
	}
	safe := int(lim.Cur) - fdReserve
	switch {
	case c.MaxConnections < 0:
		return 0, "", fmt.Errorf("%s: must be 0 (automatic) or positive", name)
	case c.MaxConnections == 0:
		if safe < 1 {
			return 0, "", fmt.Errorf("%s: the open-file limit %d leaves no room for connections; raise it (ulimit -n)", name, lim.Cur)
		}
		return safe, "", nil
	case c.MaxConnections > safe:
		return c.MaxConnections, fmt.Sprintf("%s=%d exceeds the open-file limit %d less %d reserved; "+
			"past that, accepting fails for everyone: raise ulimit -n or lower the cap", name, c.MaxConnections, lim.Cur, fdReserve), nil
	}
	return c.MaxConnections, "", nil
}

// fieldError is how the hub, worker and auth packages say which field of
// their Config a problem is in.
type fieldError interface {
	error
	ConfigField() string
}

// Which Config field (and so which variable) fills each library field.
var (
	hubFields = map[string]string{
		"IdentifyMaxBytes": "IdentifyMaxBytes", "MessageMaxBytes": "MaxMessageBytes",
		"IdentifyTimeout": "IdentifyTimeout", "JoinTimeout": "JoinTimeout", "QueueSize": "SessionQueue",
		"WriteTimeout": "WriteTimeout", "PingPeriod": "PingPeriod", "PongTimeout": "PongTimeout",
		"HandshakeTimeout": "HandshakeTimeout", "MaxConnections": "MaxConnections",
		"MaxSessionsPerName": "MaxSessionsPerName", "UpstreamRate": "UpstreamRate",
		"UpstreamBurst": "UpstreamBurst", "AllowedOrigins": "AllowedOrigins", "AppPing": "AppPing",
	}
	workerFields = map[string]string{
		"Lanes": "DispatchLanes", "LaneBuffer": "DispatchBuffer", "ID": "WorkerID", "Scheme": "SubjectPrefix",
		"Conn.URLs": "NATSURLs", "Conn.ConnectTimeout": "NATSConnectTimeout", "Conn.ReconnectWait": "NATSReconnectWait",
		"Conn.PingInterval": "NATSPingInterval", "Conn.MaxPingsOut": "NATSMaxPingsOut",
		"Conn.TLSCertFile": "NATSTLSCertFile", "Conn.TLSKeyFile": "NATSTLSKeyFile",
		"Stream.Name": "Stream", "Stream.MaxAge": "StreamMaxAge", "Stream.MaxMsgsPerSubject": "StreamMaxMsgsPerSubject",
		"Stream.MaxBytes": "StreamMaxBytes", "Stream.Storage": "StreamStorage", "Stream.Replicas": "StreamReplicas",
		"Stream.DuplicateWindow": "StreamDuplicateWindow", "ReplayMax": "ReplayMax", "ReplayConcurrency": "ReplayConcurrency",
		"EventBuffer": "EventBuffer",
	}
	apiFields = map[string]string{
		"Key": "APIKey", "Rate": "APIRate", "Burst": "APIBurst", "MaxBodyBytes": "APIMaxBodyBytes", "MaxTimeout": "APIMaxTimeout",
	}
	authFields = map[string]string{
		"Secret": "JWTSecret", "PublicKeyFile": "JWTPublicKey", "JWKSURL": "JWKSURL",
		"JWKSRefresh": "JWKSRefresh", "Audience": "JWTAudience", "Issuer": "JWTIssuer", "Leeway": "JWTLeeway",
	}
)

// inTermsOfVariables rewrites a library's configuration error to name the
// variable behind the field at fault.
func inTermsOfVariables(err error, fields map[string]string) error {
	var fe fieldError
	if errors.As(err, &fe) {
		if f, ok := fields[fe.ConfigField()]; ok {
			if inner := errors.Unwrap(fe); inner != nil {
				return fmt.Errorf("%s: %w", envName(f), inner)
			}
		}
	}
	return err
}

// libraryProblems asks the hub, the worker and auth to check the
// configurations built from the plan, each naming its variable.
func (p *plan) libraryProblems() []error {
	var problems []error
	if err := p.hub(nil, nil, nil).Validate(); err != nil {
		problems = append(problems, inTermsOfVariables(err, hubFields))
	}
	conn := p.conn()
	if len(conn.URLs) == 0 {
		conn.URLs = []string{"nats://" + p.cfg.EmbeddedNATSAddr} // the embedded server, started later
	}
	if err := p.worker(conn).Validate(); err != nil && p.scheme.Prefix() != "" {
		problems = append(problems, inTermsOfVariables(err, workerFields))
	}
	if p.auth != nil {
		if err := p.auth.Validate(); err != nil {
			problems = append(problems, inTermsOfVariables(err, authFields))
		}
	}
	return problems
}

// hub returns the hub's configuration, verifying tokens with authn and
// resuming v2 sessions through resumer.
func (p *plan) hub(authn hub.Authenticator, resumer hub.Resumer, events hub.Events) hub.Config {
	c := p.cfg
	return hub.Config{
		IdentifyMaxBytes:   c.IdentifyMaxBytes,
		MessageMaxBytes:    c.MaxMessageBytes,
		IdentifyTimeout:    c.IdentifyTimeout,
		JoinTimeout:        c.JoinTimeout,
		QueueSize:          c.SessionQueue,
		WriteTimeout:       c.WriteTimeout,
		PingPeriod:         c.PingPeriod,
		PongTimeout:        c.PongTimeout,
		HandshakeTimeout:   c.HandshakeTimeout,
		MaxConnections:     p.maxConns,
		MaxSessionsPerName: c.MaxSessionsPerName,
		UpstreamRate:       c.UpstreamRate,
		UpstreamBurst:      c.UpstreamBurst,
		AllowedOrigins:     c.AllowedOrigins,
		AppPing:            c.AppPing,
		Auth:               authn,
		Resumer:            resumer,
		Events:             events,
	}
}

func (p *plan) worker(conn worker.ConnConfig) worker.Config {
	c := p.cfg
	return worker.Config{
		Conn:       conn,
		Scheme:     p.scheme,
		ID:         p.workerID,
		Lanes:      c.DispatchLanes,
		LaneBuffer: c.DispatchBuffer,
		Stream: worker.StreamConfig{
			Name:              p.streamName(),
			MaxAge:            c.StreamMaxAge,
			MaxMsgsPerSubject: c.StreamMaxMsgsPerSubject,
			MaxBytes:          c.StreamMaxBytes,
			Storage:           c.StreamStorage,
			Replicas:          c.StreamReplicas,
			DuplicateWindow:   c.StreamDuplicateWindow,
		},
		ReplayMax:         c.ReplayMax,
		ReplayConcurrency: c.ReplayConcurrency,
		Events:            c.Events == eventsOn,
		EventBuffer:       max(c.EventBuffer, 0),
	}
}

// The NOTIFY_EVENTS values.
const (
	eventsOn  = "on"
	eventsOff = "off"
)

// The NOTIFY_DEMO values; empty means on exactly when NOTIFY_AUTH=none.
const (
	demoOn  = "on"
	demoOff = "off"
)

// streamOff is the NOTIFY_STREAM value that turns durable support off.
const streamOff = "off"

// streamName is the stream the worker uses, "" when durable support is off.
func (p *plan) streamName() string {
	if p.cfg.Stream == streamOff {
		return ""
	}
	return p.cfg.Stream
}

func (p *plan) conn() worker.ConnConfig {
	c := p.cfg
	return worker.ConnConfig{
		URLs:           c.NATSURLs,
		Name:           c.NATSName,
		User:           c.NATSUser,
		Password:       c.NATSPassword,
		Token:          c.NATSToken,
		CredsFile:      c.NATSCredsFile,
		NKeySeedFile:   c.NATSNKeySeedFile,
		TLSCAFile:      c.NATSTLSCAFile,
		TLSCertFile:    c.NATSTLSCertFile,
		TLSKeyFile:     c.NATSTLSKeyFile,
		ConnectTimeout: c.NATSConnectTimeout,
		MaxReconnects:  c.NATSMaxReconnects,
		ReconnectWait:  c.NATSReconnectWait,
		PingInterval:   c.NATSPingInterval,
		MaxPingsOut:    c.NATSMaxPingsOut,
	}
}
