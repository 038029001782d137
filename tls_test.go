package main

import (
	"crypto/tls"
	"testing"

	"github.com/gorilla/websocket"
)

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	cfg := testConfig(t)
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)

	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	c, resp, err := d.Dial("wss://"+tw.addr+"/", nil)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	identify(t, c, "secure")
	publish(t, nc, "notify.user.secure", "over tls")
	expect(t, c, "over tls")

	// Plain ws:// to the TLS port does not get a session.
	if _, _, err := websocket.DefaultDialer.Dial("ws://"+tw.addr+"/", nil); err == nil {
		t.Fatal("plain ws:// to the TLS port succeeded")
	}
}
