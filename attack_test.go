package main

import (
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// Every bad first message gets an error frame and a 1008 close, and no name
// can read another user's messages or disturb the worker's NATS connection.
func TestBadFirstMessages(t *testing.T) {
	cfg := testConfig(t)
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	victim := client(t, tw, "victim")

	tests := []struct {
		name   string
		first  string
		reason string
	}{
		{"star", `{"name":"*"}`, "name may contain only"},
		{"gt", `{"name":">"}`, "name may contain only"},
		{"token wildcard", `{"name":"a.*"}`, "name may contain only"},
		{"tail wildcard", `{"name":"*.>"}`, "name may contain only"},
		{"gt then token", `{"name":">.x"}`, "name may contain only"},
		{"escaped star", `{"name":"\u002a"}`, "name may contain only"},
		{"escaped gt", `{"name":"\u003e"}`, "name may contain only"},
		{"dot", `{"name":"victim.x"}`, "name may contain only"},
		{"space", `{"name":"a b"}`, "name may contain only"},
		{"crlf", `{"name":"a\r\nPUB notify.user.victim 1\r\nx"}`, "name may contain only"},
		{"too long", `{"name":"` + strings.Repeat("a", 5000) + `"}`, "name is longer than"},
		{"empty name", `{"name":""}`, "name must be a non-empty string"},
		{"number", `{"name":42}`, "name must be a non-empty string"},
		{"null", `{"name":null}`, "name must be a non-empty string"},
		{"object", `{"name":{"x":1}}`, "name must be a non-empty string"},
		{"missing", `{"nick":"victim"}`, "has no name field"},
		{"capitalised key", `{"Name":"victim"}`, "has no name field"},
		{"duplicate key", `{"name":"attacker","name":"victim"}`, "more than one name field"},
		{"not json", `hello`, "must be a JSON object"},
		{"array", `["victim"]`, "must be a JSON object"},
		{"string", `"victim"`, "must be a JSON object"},
		{"trailing data", `{"name":"x"} {"name":"y"}`, "must be a JSON object"},
		{"truncated", `{"name":"x"`, "must be a JSON object"},
		{"empty", ``, "must be a JSON object"},
		{"invalid utf8", "{\"name\":\"vic\xfftim\"}", "not valid UTF-8"},
		{"non-ascii", `{"name":"名字"}`, "name may contain only"},
	}
	if len(`{"name":"`+strings.Repeat("a", 5000)+`"}`) > int(cfg.IdentifyMaxBytes) {
		t.Fatal("the long-name row must fit under the identify read limit to reach the name rule")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, tw.addr, "/")
			send(t, c, tt.first)
			frames, code, reason := readClose(t, c)
			if code != websocket.ClosePolicyViolation {
				t.Fatalf("close code %d, want 1008", code)
			}
			if len(frames) != 1 || !strings.Contains(errorReason(t, frames[0]), tt.reason) {
				t.Fatalf("frames %q, want one error frame containing %q", frames, tt.reason)
			}
			if !strings.Contains(reason, tt.reason) {
				t.Fatalf("close reason %q, want it to contain %q", reason, tt.reason)
			}

			// The victim still receives, alone, and the NATS connection is up.
			publish(t, nc, "notify.user.victim", "secret-"+tt.name)
			expect(t, victim, "secret-"+tt.name)
		})
	}

	t.Run("binary first frame", func(t *testing.T) {
		c := dial(t, tw.addr, "/")
		if err := c.WriteMessage(websocket.BinaryMessage, []byte(`{"name":"x"}`)); err != nil {
			t.Fatal(err)
		}
		frames, code, _ := readClose(t, c)
		if code != websocket.ClosePolicyViolation || len(frames) != 1 || !strings.Contains(frames[0], "text frame") {
			t.Fatalf("frames %q, close %d", frames, code)
		}
	})

	t.Run("oversize first frame", func(t *testing.T) {
		c := dial(t, tw.addr, "/")
		send(t, c, `{"name":"`+strings.Repeat("a", int(cfg.IdentifyMaxBytes))+`"}`)
		if _, code, _ := readClose(t, c); code != websocket.CloseMessageTooBig {
			t.Fatalf("close code %d, want 1009", code)
		}
	})

	t.Run("oversize frame after welcome", func(t *testing.T) {
		c := client(t, tw, "big")
		send(t, c, strings.Repeat("x", int(cfg.MaxMessageBytes)+1))
		if _, code, _ := readClose(t, c); code != websocket.CloseMessageTooBig {
			t.Fatalf("close code %d, want 1009", code)
		}
	})

	// Nobody else received the victim's messages: every client above was
	// closed after its error frame alone. A name-valid attacker that is
	// someone else hears nothing of the victim either.
	other := client(t, tw, "victim2")
	publish(t, nc, "notify.user.victim", "only-victim")
	publish(t, nc, "notify.user.victim2", "only-victim2")
	expect(t, victim, "only-victim")
	expect(t, other, "only-victim2")

	if code, _ := httpGet(t, "http://"+tw.addr+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d after the attacks", code)
	}
}
