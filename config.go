package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/notify-worker/notify-worker/auth"
	"github.com/notify-worker/notify-worker/hub"
	"github.com/notify-worker/notify-worker/subjects"
	"github.com/notify-worker/notify-worker/worker"
)

// Config is the whole configuration, read from NOTIFY_* environment
// variables. README.md documents every field; the defaults live here only.
type Config struct {
	Addr             string   `envconfig:"ADDR" default:":8888"`
	NATSURLs         []string `envconfig:"NATS_URL"`
	EmbeddedNATSAddr string   `envconfig:"EMBEDDED_NATS_ADDR" default:"127.0.0.1:4222"`
	SubjectPrefix    string   `envconfig:"SUBJECT_PREFIX" default:"notify"`
	WorkerID         string   `envconfig:"WORKER_ID"`

	NATSName           string        `envconfig:"NATS_NAME" default:"notify-worker"`
	NATSUser           string        `envconfig:"NATS_USER"`
	NATSPassword       string        `envconfig:"NATS_PASSWORD"`
	NATSToken          string        `envconfig:"NATS_TOKEN"`
	NATSCredsFile      string        `envconfig:"NATS_CREDS"`
	NATSNKeySeedFile   string        `envconfig:"NATS_NKEY_SEED"`
	NATSTLSCAFile      string        `envconfig:"NATS_TLS_CA"`
	NATSTLSCertFile    string        `envconfig:"NATS_TLS_CERT"`
	NATSTLSKeyFile     string        `envconfig:"NATS_TLS_KEY"`
	NATSConnectTimeout time.Duration `envconfig:"NATS_CONNECT_TIMEOUT" default:"2s"`
	NATSMaxReconnects  int           `envconfig:"NATS_MAX_RECONNECTS" default:"-1"`
	NATSReconnectWait  time.Duration `envconfig:"NATS_RECONNECT_WAIT" default:"1s"`
	NATSPingInterval   time.Duration `envconfig:"NATS_PING_INTERVAL" default:"2s"`
	NATSMaxPingsOut    int           `envconfig:"NATS_MAX_PINGS_OUT" default:"2"`

	DispatchLanes  int `envconfig:"DISPATCH_LANES" default:"4"`
	DispatchBuffer int `envconfig:"DISPATCH_BUFFER" default:"8192"`

	Auth           string        `envconfig:"AUTH" default:"none"`
	JWTSecret      string        `envconfig:"JWT_SECRET"`
	JWTPublicKey   string        `envconfig:"JWT_PUBLIC_KEY_FILE"`
	JWKSURL        string        `envconfig:"JWKS_URL"`
	JWKSRefresh    time.Duration `envconfig:"JWKS_REFRESH" default:"1h"`
	JWTAudience    string        `envconfig:"JWT_AUDIENCE"`
	JWTIssuer      string        `envconfig:"JWT_ISSUER"`
	JWTLeeway      time.Duration `envconfig:"JWT_LEEWAY" default:"30s"`
	AllowedOrigins []string      `envconfig:"ALLOWED_ORIGINS"`
	TLSCertFile    string        `envconfig:"TLS_CERT"`
	TLSKeyFile     string        `envconfig:"TLS_KEY"`

	HandshakeTimeout   time.Duration `envconfig:"HANDSHAKE_TIMEOUT" default:"10s"`
	MaxHeaderBytes     int           `envconfig:"MAX_HEADER_BYTES" default:"8192"`
	MaxConnections     int           `envconfig:"MAX_CONNECTIONS" default:"0"`
	MaxSessionsPerName int           `envconfig:"MAX_SESSIONS_PER_NAME" default:"16"`
	UpstreamRate       float64       `envconfig:"UPSTREAM_RATE" default:"10"`
	UpstreamBurst      int           `envconfig:"UPSTREAM_BURST" default:"20"`
	IdentifyTimeout    time.Duration `envconfig:"IDENTIFY_TIMEOUT" default:"10s"`

	IdentifyMaxBytes int64         `envconfig:"IDENTIFY_MAX_BYTES" default:"8192"`
	MaxMessageBytes  int64         `envconfig:"MAX_MESSAGE_BYTES" default:"65536"`
	JoinTimeout      time.Duration `envconfig:"JOIN_TIMEOUT" default:"5s"`
	SessionQueue     int           `envconfig:"SESSION_QUEUE" default:"32"`
	WriteTimeout     time.Duration `envconfig:"WRITE_TIMEOUT" default:"10s"`
	PingPeriod       time.Duration `envconfig:"PING_PERIOD" default:"20s"`
	PongTimeout      time.Duration `envconfig:"PONG_TIMEOUT" default:"30s"`

	DrainDelay      time.Duration `envconfig:"DRAIN_DELAY" default:"5s"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s"`
	LogLevel        string        `envconfig:"LOG_LEVEL" default:"info"`
	LogFormat       string        `envconfig:"LOG_FORMAT" default:"text"`
}

func (c Config) scheme() (subjects.Scheme, error) {
	s, err := subjects.New(c.SubjectPrefix)
	if err != nil {
		return subjects.Scheme{}, fmt.Errorf("NOTIFY_SUBJECT_PREFIX: %w", err)
	}
	return s, nil
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

func (c Config) hub(maxConns int, authn hub.Authenticator) hub.Config {
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
		MaxConnections:     maxConns,
		MaxSessionsPerName: c.MaxSessionsPerName,
		UpstreamRate:       c.UpstreamRate,
		UpstreamBurst:      c.UpstreamBurst,
		AllowedOrigins:     c.AllowedOrigins,
		Auth:               authn,
	}
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
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, "", fmt.Errorf("read open-file limit: %w", err)
	}
	safe := int(lim.Cur) - fdReserve
	switch {
	case c.MaxConnections < 0:
		return 0, "", errors.New("NOTIFY_MAX_CONNECTIONS: must be 0 (automatic) or positive")
	case c.MaxConnections == 0:
		if safe < 1 {
			return 0, "", fmt.Errorf("open-file limit %d leaves no room for connections; raise it (ulimit -n)", lim.Cur)
		}
		return safe, "", nil
	case c.MaxConnections > safe:
		return c.MaxConnections, fmt.Sprintf("NOTIFY_MAX_CONNECTIONS=%d exceeds the open-file limit %d less %d reserved; "+
			"past that, accepting fails for everyone: raise ulimit -n or lower the cap", c.MaxConnections, lim.Cur, fdReserve), nil
	}
	return c.MaxConnections, "", nil
}

func (c Config) tls() (cert, key string, err error) {
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return "", "", errors.New("NOTIFY_TLS_CERT and NOTIFY_TLS_KEY go together")
	}
	return c.TLSCertFile, c.TLSKeyFile, nil
}

func (c Config) conn() worker.ConnConfig {
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

// newLogger builds the process's one logger from NOTIFY_LOG_LEVEL and
// NOTIFY_LOG_FORMAT.
func newLogger(c Config, out io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("NOTIFY_LOG_LEVEL: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.LogFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(out, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(out, opts)), nil
	default:
		return nil, fmt.Errorf("NOTIFY_LOG_FORMAT: %q is neither text nor json", c.LogFormat)
	}
}

// authenticator returns the hub's Authenticator for NOTIFY_AUTH (nil for
// "none") and a function that releases it. ctx bounds the first fetch of
// a JWKS.
func (c Config) authenticator(ctx context.Context, log *slog.Logger) (hub.Authenticator, func(), error) {
	switch c.Auth {
	case "none":
		log.Warn("NOTIFY_AUTH=none: ANY CLIENT CAN CLAIM ANY NAME and read its notifications; " +
			"use NOTIFY_AUTH=jwt anywhere but development and trusted networks")
		return nil, func() {}, nil
	case "jwt":
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		v, err := auth.New(ctx, auth.Config{
			Secret:        c.JWTSecret,
			PublicKeyFile: c.JWTPublicKey,
			JWKSURL:       c.JWKSURL,
			JWKSRefresh:   c.JWKSRefresh,
			Audience:      c.JWTAudience,
			Issuer:        c.JWTIssuer,
			Leeway:        c.JWTLeeway,
		}, log)
		if err != nil {
			return nil, nil, err
		}
		return jwtAuth{v}, v.Close, nil
	default:
		return nil, nil, fmt.Errorf("NOTIFY_AUTH: %q is neither none nor jwt", c.Auth)
	}
}

// jwtAuth lets the hub verify tokens with an auth.Verifier.
type jwtAuth struct{ v *auth.Verifier }

func (a jwtAuth) Authenticate(token string) (string, time.Time, error) {
	sub, exp, err := a.v.Verify(token)
	if errors.Is(err, auth.ErrExpired) {
		return "", time.Time{}, hub.ErrTokenExpired
	}
	return sub, exp, err
}
