package main

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
	cfg := testConfig(t)
	cfg.TLSCertFile = "cert.pem"
	if _, _, err := cfg.tls(); err == nil {
		t.Error("a TLS cert without a key was accepted")
	}
	cfg = testConfig(t)
	cfg.MaxConnections = -1
	if _, _, err := cfg.maxConnections(); err == nil {
		t.Error("a negative connection cap was accepted")
	}
	cfg.MaxConnections = 1 << 30
	if _, warning, err := cfg.maxConnections(); err != nil || warning == "" {
		t.Errorf("a cap past the open-file limit: warning %q, err %v; want a warning", warning, err)
	}
	cfg = testConfig(t)
	cfg.Auth = "maybe"
	if _, _, err := cfg.authenticator(t.Context(), nil); err == nil {
		t.Error("NOTIFY_AUTH=maybe was accepted")
	}
	cfg.Auth = "jwt"
	cfg.JWTSecret = "short"
	if _, _, err := cfg.authenticator(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "NOTIFY_JWT_SECRET") {
		t.Errorf("a short secret: %v, want an error naming NOTIFY_JWT_SECRET", err)
	}
	cfg = testConfig(t)
	cfg.SubjectPrefix = "bad.*"
	if _, err := cfg.scheme(); err == nil {
		t.Error("a wildcard prefix was accepted")
	}
	cfg = testConfig(t)
	cfg.LogFormat = "xml"
	if _, err := newLogger(cfg, os.Stderr); err == nil {
		t.Error("NOTIFY_LOG_FORMAT=xml was accepted")
	}
}
