package worker

import (
	"errors"
	"fmt"
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
			w, _ := durableWorker(t, emb.ClientURL(), rec, func(c *Config) { tc.conn(&c.Conn) })
			joinNow(t, w, "erin")
			if err := nc.Publish("notify.user.erin", []byte(tc.name)); err != nil {
				t.Fatal(err)
			}
			if got := rec.next(t); got != "erin:"+tc.name {
				t.Fatalf("got %q", got)
			}
			seq := publishDurable(t, jetStream(t, emb.ClientURL()), "notify.user.erin", tc.name)
			if got := nextEvent(t, rec.durable, "durable message"); !strings.HasPrefix(got, fmt.Sprintf("erin:%d:", seq)) {
				t.Fatalf("durable: got %q, want seq %d", got, seq)
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
	// JetStream needs a directory.
	_, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0"}, log)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.ConfigField() != "JetStreamDir" {
		t.Errorf("StartEmbedded without a JetStream directory = %v, want a *ConfigError for JetStreamDir", err)
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

// The embedded server keeps the stream in its JetStream directory: a
// restart with the same directory replays what was stored before.
func TestEmbeddedKeepsTheStream(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	emb, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", JetStreamDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := durableWorker(t, emb.ClientURL(), newRecorder(), nil)
	start := resumeNow(t, w, "erin", nil)
	stored := publishDurable(t, jetStream(t, emb.ClientURL()), "notify.user.erin", "kept")
	closeNow(t, w)
	emb.Shutdown()

	emb, err = StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", JetStreamDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	w, _ = durableWorker(t, emb.ClientURL(), newRecorder(), nil)
	r := resumeNow(t, w, "erin", &start.Through)
	if !r.Recovered || len(r.Messages) != 1 || r.Messages[0].Seq != stored || string(r.Messages[0].Payload) != "kept" {
		t.Fatalf("after a restart: %+v", r)
	}
}
