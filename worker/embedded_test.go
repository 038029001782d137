package worker

import (
	"errors"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"testing"
)

func TestEmbedded(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	emb, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", JetStreamDir: t.TempDir()}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc := producer(t, emb.ClientURL())
	for _, tc := range []struct {
		name string
		conn func(*ConnConfig)
	}{
		{"url", func(c *ConnConfig) {}},
		{"in-process", func(c *ConnConfig) { c.URLs, c.InProcess = nil, emb }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			w, _ := testWorkerConfig(t, emb.ClientURL(), rec, func(c *Config) { tc.conn(&c.Conn) })
			joinNow(t, w, "erin")
			if err := nc.Publish("notify.user.erin", []byte(tc.name)); err != nil {
				t.Fatal(err)
			}
			if got := rec.next(t); got != "erin:"+tc.name {
				t.Fatalf("got %q", got)
			}
		})
	}
}

func TestEmbeddedBadAddr(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, addr := range []string{"127.0.0.1:notaport", "127.0.0.1:70000", "no-port"} {
		_, err := StartEmbedded(EmbeddedConfig{Addr: addr, JetStreamDir: t.TempDir()}, log)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.ConfigField() != "Addr" {
			t.Errorf("StartEmbedded(%q) = %v, want a *ConfigError for Addr", addr, err)
		}
	}
	// A port in use fails at once, saying so in the package's own terms.
	emb, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", JetStreamDir: t.TempDir()}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	u, err := url.Parse(emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	_, err = StartEmbedded(EmbeddedConfig{Addr: u.Host, JetStreamDir: t.TempDir()}, log)
	if err == nil || !strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "NOTIFY_") {
		t.Fatalf("StartEmbedded on a busy port: %v", err)
	}
}
