package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

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

	IdentifyMaxBytes int64         `envconfig:"IDENTIFY_MAX_BYTES" default:"8192"`
	MaxMessageBytes  int64         `envconfig:"MAX_MESSAGE_BYTES" default:"65536"`
	JoinTimeout      time.Duration `envconfig:"JOIN_TIMEOUT" default:"5s"`
	SessionQueue     int           `envconfig:"SESSION_QUEUE" default:"64"`
	WriteTimeout     time.Duration `envconfig:"WRITE_TIMEOUT" default:"10s"`
	PingPeriod       time.Duration `envconfig:"PING_PERIOD" default:"20s"`
	PongTimeout      time.Duration `envconfig:"PONG_TIMEOUT" default:"30s"`

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

func (c Config) hub() hub.Config {
	return hub.Config{
		IdentifyMaxBytes: c.IdentifyMaxBytes,
		MessageMaxBytes:  c.MaxMessageBytes,
		JoinTimeout:      c.JoinTimeout,
		QueueSize:        c.SessionQueue,
		WriteTimeout:     c.WriteTimeout,
		PingPeriod:       c.PingPeriod,
		PongTimeout:      c.PongTimeout,
	}
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
