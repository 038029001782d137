package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// cfSettings are the parts of a Centrifugo configuration the comparison
// chooses; everything else keeps Centrifugo's defaults.
type cfSettings struct {
	Port    int
	Secret  string // HMAC key of the connection JWTs
	APIKey  string // X-API-Key of the HTTP API
	NATSURL string // "": the memory broker; else the NATS broker in raw mode
}

// cfConfig is the configuration file of one Centrifugo run (v6 key names,
// as `centrifugo defaultconfig` writes them): loopback only, errors only
// in the log, HS256 connection tokens, the HTTP API behind a key, the
// health endpoint for readiness, no usage statistics sent out.
func cfConfig(s cfSettings) map[string]any {
	c := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": s.Port},
		"log":         map[string]any{"level": "error"},
		"client": map[string]any{
			"token": map[string]any{"hmac_secret_key": s.Secret},
		},
		"http_api":    map[string]any{"key": s.APIKey},
		"health":      map[string]any{"enabled": true},
		"usage_stats": map[string]any{"disabled": true},
	}
	if s.NATSURL != "" {
		// Raw mode: Centrifugo subscribes to the NATS subject
		// prefix+channel and sends what arrives there as the publication's
		// data, untouched, so plain payloads from any producer reach
		// clients.
		c["broker"] = map[string]any{
			"enabled": true,
			"type":    "nats",
			"nats": map[string]any{
				"url":      s.NATSURL,
				"raw_mode": map[string]any{"enabled": true, "prefix": cfRawNATSPrefix},
			},
		}
	}
	return c
}

// writeCFConfig writes s's configuration as config.json in dir and
// returns its path.
func writeCFConfig(dir string, s cfSettings) (string, error) {
	b, err := json.MarshalIndent(cfConfig(s), "", "  ")
	if err != nil {
		return "", fmt.Errorf("centrifugo config: %w", err)
	}
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("centrifugo config: %w", err)
	}
	return path, nil
}

// randomHex returns n random bytes, hex encoded: secrets of one run.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}
