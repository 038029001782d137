package main

// Configuration (README.md): every setting documented, and every rule on
// settings enforced with an error that names the variable where it can.

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// Every setting is documented in README.md's configuration table.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		name := "`NOTIFY_" + typ.Field(i).Tag.Get("envconfig") + "`"
		if !strings.Contains(string(readme), "| "+name) && !strings.Contains(string(readme), "/ "+name) {
			t.Errorf("README.md's configuration table lacks %s", name)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, row := range []struct {
		name  string
		edit  func(*Config)
		check func(Config) error
		want  string // in the error; empty: any error
	}{
		{"TLS cert without a key", func(c *Config) { c.TLSCertFile = "cert.pem" },
			func(c Config) error { _, _, err := c.tls(); return err }, "NOTIFY_TLS_CERT and NOTIFY_TLS_KEY"},
		{"negative connection cap", func(c *Config) { c.MaxConnections = -1 },
			func(c Config) error { _, _, err := c.maxConnections(); return err }, "NOTIFY_MAX_CONNECTIONS"},
		{"NOTIFY_AUTH neither none nor jwt", func(c *Config) { c.Auth = "maybe" },
			func(c Config) error { _, _, err := c.authenticator(t.Context(), nil); return err }, "NOTIFY_AUTH"},
		{"short JWT secret", func(c *Config) { c.Auth, c.JWTSecret = "jwt", "short" },
			func(c Config) error { _, _, err := c.authenticator(t.Context(), nil); return err }, "NOTIFY_JWT_SECRET"},
		{"wildcard subject prefix", func(c *Config) { c.SubjectPrefix = "bad.*" },
			func(c Config) error { _, err := c.scheme(); return err }, "NOTIFY_SUBJECT_PREFIX"},
		{"unknown log format", func(c *Config) { c.LogFormat = "xml" },
			func(c Config) error { _, err := newLogger(c, os.Stderr); return err }, "NOTIFY_LOG_FORMAT"},
		{"unknown log level", func(c *Config) { c.LogLevel = "loud" },
			func(c Config) error { _, err := newLogger(c, os.Stderr); return err }, "NOTIFY_LOG_LEVEL"},
	} {
		t.Run(row.name, func(t *testing.T) {
			cfg := testConfig(t)
			row.edit(&cfg)
			err := row.check(cfg)
			if err == nil || !strings.Contains(err.Error(), row.want) {
				t.Fatalf("err = %v, want an error naming %s", err, row.want)
			}
		})
	}
}

// A connection cap past the open-file limit is accepted with a warning.
func TestConnectionCapPastOpenFileLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnections = 1 << 30
	if _, warning, err := cfg.maxConnections(); err != nil || warning == "" {
		t.Fatalf("a cap past the open-file limit: warning %q, err %v; want a warning", warning, err)
	}
}
