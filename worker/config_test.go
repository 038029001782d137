package worker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notify-worker/notify-worker/subjects"
)

func validConfig(t *testing.T) Config {
	t.Helper()
	scheme, err := subjects.New(subjects.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Conn: ConnConfig{
			URLs: []string{"nats://127.0.0.1:4222"}, ConnectTimeout: time.Second,
			ReconnectWait: time.Second, PingInterval: time.Second, MaxPingsOut: 2,
		},
		Scheme: scheme, ID: "w1", Lanes: 1, LaneBuffer: 1,
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		field  string
		change func(*Config)
	}{
		{"Lanes", func(c *Config) { c.Lanes = -1 }},
		{"LaneBuffer", func(c *Config) { c.LaneBuffer = 0 }},
		{"ID", func(c *Config) { c.ID = "" }},
		{"Scheme", func(c *Config) { c.Scheme = subjects.Scheme{} }},
		{"Conn.URLs", func(c *Config) { c.Conn.URLs = nil }},
		{"Conn.URLs", func(c *Config) { c.Conn.URLs = []string{""} }},
		{"Conn.ConnectTimeout", func(c *Config) { c.Conn.ConnectTimeout = 0 }},
		{"Conn.ReconnectWait", func(c *Config) { c.Conn.ReconnectWait = -time.Second }},
		{"Conn.PingInterval", func(c *Config) { c.Conn.PingInterval = -time.Second }},
		{"Conn.MaxPingsOut", func(c *Config) { c.Conn.MaxPingsOut = -1 }},
		{"Conn.FailureLogInterval", func(c *Config) { c.Conn.FailureLogInterval = -time.Second }},
		{"Conn.TLSKeyFile", func(c *Config) { c.Conn.TLSCertFile = "cert.pem" }},
		{"Conn.TLSCertFile", func(c *Config) { c.Conn.TLSKeyFile = "key.pem" }},
		{"Stream.Name", durable(func(c *Config) { c.Stream.Name = "NO.TIFY" })},
		{"Stream.Name", durable(func(c *Config) { c.Stream.Name = "a b" })},
		{"Stream.MaxAge", durable(func(c *Config) { c.Stream.MaxAge = -time.Second })},
		{"Stream.MaxAge", durable(func(c *Config) { c.Stream.MaxAge = time.Millisecond })},
		{"Stream.MaxMsgsPerSubject", durable(func(c *Config) { c.Stream.MaxMsgsPerSubject = -1 })},
		{"Stream.MaxBytes", durable(func(c *Config) { c.Stream.MaxBytes = -1 })},
		{"Stream.Storage", durable(func(c *Config) { c.Stream.Storage = "disk" })},
		{"Stream.Replicas", durable(func(c *Config) { c.Stream.Replicas = 0 })},
		{"Stream.Replicas", durable(func(c *Config) { c.Stream.Replicas = 6 })},
		{"Stream.DuplicateWindow", durable(func(c *Config) { c.Stream.DuplicateWindow = -time.Second })},
		{"Stream.DuplicateWindow", durable(func(c *Config) { c.Stream.DuplicateWindow = time.Millisecond })},
		{"ReplayMax", durable(func(c *Config) { c.ReplayMax = 0 })},
		{"ReplayConcurrency", durable(func(c *Config) { c.ReplayConcurrency = 0 })},
	} {
		cfg := validConfig(t)
		tc.change(&cfg)
		err := cfg.Validate()
		var fe interface{ ConfigField() string }
		if !errors.As(err, &fe) {
			t.Errorf("%s: Validate() = %v, want an error with ConfigField", tc.field, err)
			continue
		}
		if fe.ConfigField() != tc.field {
			t.Errorf("Validate() blames %q (%v), want %q", fe.ConfigField(), err, tc.field)
		}
	}
	if err := validConfig(t).Validate(); err != nil {
		t.Fatalf("a valid config: %v", err)
	}
	// Durable support off: the stream's fields are not looked at.
	cfg0 := validConfig(t)
	cfg0.Stream = StreamConfig{Storage: "disk"}
	if err := cfg0.Validate(); err != nil {
		t.Fatalf("durable support off: %v", err)
	}
	for _, change := range []func(*Config){
		nil,
		func(c *Config) {
			c.Stream.MaxAge, c.Stream.MaxMsgsPerSubject, c.Stream.MaxBytes, c.Stream.DuplicateWindow = 0, 0, 0, 0
		},
		func(c *Config) { c.Stream.MaxAge = 150 * time.Millisecond }, // the 2m duplicate window is clamped to it
	} {
		cfg := validConfig(t)
		durable(change)(&cfg)
		if err := cfg.Validate(); err != nil {
			t.Errorf("a valid durable config: %v", err)
		}
	}
	// An in-process server needs no URL.
	cfg := validConfig(t)
	cfg.Conn.URLs, cfg.Conn.InProcess = nil, noServer{}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("in-process config: %v", err)
	}
}

// noServer stands for an in-process server in config checks.
type noServer struct{}

func (noServer) InProcessConn() (net.Conn, error) { return nil, errors.New("no server") }

// New refuses what Validate refuses, before it registers anything.
func TestNewValidates(t *testing.T) {
	cfg := validConfig(t)
	cfg.LaneBuffer = 0
	reg := prometheus.NewRegistry()
	_, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "LaneBuffer" {
		t.Fatalf("New = %v, want a *ConfigError for LaneBuffer", err)
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("New registered %d metric families before failing", len(mfs))
	}
}

// The duplicate window is clamped to the maximum age, which JetStream
// requires.
func TestDuplicateWindowClamped(t *testing.T) {
	for _, tc := range []struct{ age, window, want time.Duration }{
		{time.Hour, 2 * time.Minute, 2 * time.Minute},
		{time.Minute, 2 * time.Minute, time.Minute},
		{0, 2 * time.Minute, 2 * time.Minute},
		{time.Minute, 0, 0},
	} {
		c := StreamConfig{MaxAge: tc.age, DuplicateWindow: tc.window}
		if got := c.duplicates(); got != tc.want {
			t.Errorf("max age %v, window %v: %v, want %v", tc.age, tc.window, got, tc.want)
		}
	}
}
