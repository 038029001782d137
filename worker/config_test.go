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
		{"Lanes", func(c *Config) { c.Lanes = 0 }},
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
