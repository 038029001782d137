package main

// Configuration (README.md): every setting documented, and every rule on
// settings enforced before anything starts, with an error that names the
// variable.

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
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
		if typ.Field(i).Tag.Get("desc") == "" {
			t.Errorf("Config.%s has no desc tag for the usage text", typ.Field(i).Name)
		}
	}
}

// Every bad setting is reported before anything starts, each naming its
// variable, all at once.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string // each must appear in the error
	}{
		{"cert without key", func(c *Config) { c.TLSCertFile = "cert.pem" }, []string{"NOTIFY_TLS_CERT", "NOTIFY_TLS_KEY"}},
		{"missing cert files", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "/nonexistent/c.pem", "/nonexistent/k.pem" }, []string{"NOTIFY_TLS_CERT"}},
		{"negative connection cap", func(c *Config) { c.MaxConnections = -1 }, []string{"NOTIFY_MAX_CONNECTIONS"}},
		{"auth maybe", func(c *Config) { c.Auth = "maybe" }, []string{"NOTIFY_AUTH", `"maybe"`}},
		{"auth upper case", func(c *Config) { c.Auth = "JWT" }, []string{"NOTIFY_AUTH", `"JWT"`}},
		{"wildcard prefix", func(c *Config) { c.SubjectPrefix = "bad.*" }, []string{"NOTIFY_SUBJECT_PREFIX"}},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, []string{"NOTIFY_LOG_FORMAT"}},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, []string{"NOTIFY_LOG_LEVEL"}},
		{"bad listen address", func(c *Config) { c.Addr = "8888" }, []string{"NOTIFY_ADDR"}},
		{"bad embedded address", func(c *Config) { c.EmbeddedNATSAddr = "127.0.0.1:99999" }, []string{"NOTIFY_EMBEDDED_NATS_ADDR"}},
		{"negative drain delay", func(c *Config) { c.DrainDelay = -time.Second }, []string{"NOTIFY_DRAIN_DELAY"}},
		{"zero shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, []string{"NOTIFY_SHUTDOWN_TIMEOUT"}},
		{"creds file missing", func(c *Config) { c.NATSCredsFile = "/nonexistent.creds" }, []string{"NOTIFY_NATS_CREDS"}},
		{"two at once", func(c *Config) { c.LogFormat, c.LogLevel = "xml", "loud" }, []string{"NOTIFY_LOG_FORMAT", "NOTIFY_LOG_LEVEL"}},
		{"demo yes", func(c *Config) { c.Demo = "yes" }, []string{"NOTIFY_DEMO", `"yes"`, "neither on nor off"}},
		{"demo upper case", func(c *Config) { c.Demo = "ON" }, []string{"NOTIFY_DEMO", `"ON"`}},
		{"demo true", func(c *Config) { c.Demo = "true" }, []string{"NOTIFY_DEMO", `"true"`}},
		{"bad metrics address", func(c *Config) { c.MetricsAddr = "9090" }, []string{"NOTIFY_METRICS_ADDR"}},
		{"metrics on the public address", func(c *Config) { c.Addr, c.MetricsAddr = ":8888", ":8888" }, []string{"NOTIFY_METRICS_ADDR", "NOTIFY_ADDR"}},
		{"api nats user and creds", func(c *Config) { c.APINATSUser, c.APINATSCreds = "producer", "api.creds" }, []string{"NOTIFY_API_NATS_CREDS", "NOTIFY_API_NATS_USER"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.edit(&cfg)
			_, err := cfg.plan()
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("plan: %v, want a configError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
	cfg := testConfig(t)
	cfg.MaxConnections = 1 << 30
	p, err := cfg.plan()
	if err != nil || len(p.warnings) == 0 || !strings.Contains(strings.Join(p.warnings, " "), "NOTIFY_MAX_CONNECTIONS") {
		t.Errorf("a cap past the open-file limit: %v, %v; want a warning naming NOTIFY_MAX_CONNECTIONS", p, err)
	}
}

// NOTIFY_DEMO: on and off say it; empty (the default) is on exactly with
// NOTIFY_AUTH=none, the development setting.
func TestDemoSetting(t *testing.T) {
	for _, tc := range []struct {
		auth, demo string
		want       bool
	}{
		{"none", "", true},
		{"jwt", "", false},
		{"none", "on", true},
		{"none", "off", false},
		{"jwt", "on", true},
		{"jwt", "off", false},
	} {
		cfg := testConfig(t)
		if tc.auth == "jwt" {
			cfg = withJWT(cfg)
		}
		cfg.Demo = tc.demo
		p, err := cfg.plan()
		if err != nil {
			t.Fatalf("NOTIFY_AUTH=%s NOTIFY_DEMO=%q: %v", tc.auth, tc.demo, err)
		}
		if p.demo != tc.want {
			t.Errorf("NOTIFY_AUTH=%s NOTIFY_DEMO=%q: demo %v, want %v", tc.auth, tc.demo, p.demo, tc.want)
		}
	}
}

func TestUnknownVariables(t *testing.T) {
	got := unknownVariables([]string{
		"NOTIFY_MAX_CONNECTION=5", "NOTIFY_ADDR=:1", "HOME=/root", "NOTIFY_SESION_QUEUE=3", "NOTIFY_ZZZZZZZZZZZZZZZZZZZ=1",
	})
	want := []string{
		"NOTIFY_MAX_CONNECTION is not a notify-worker setting and is ignored; did you mean NOTIFY_MAX_CONNECTIONS?",
		"NOTIFY_SESION_QUEUE is not a notify-worker setting and is ignored; did you mean NOTIFY_SESSION_QUEUE?",
		"NOTIFY_ZZZZZZZZZZZZZZZZZZZ is not a notify-worker setting and is ignored",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unknownVariables:\n got %q\nwant %q", got, want)
	}
}

// JSON logs write durations as text, like the text format does.
func TestLogDurationsAsText(t *testing.T) {
	cfg := testConfig(t)
	cfg.LogFormat = "json"
	var buf bytes.Buffer
	log, err := newLogger(cfg, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("x", "timeout", 15*time.Second)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["timeout"] != "15s" {
		t.Errorf("timeout logged as %v, want \"15s\"", line["timeout"])
	}
}
