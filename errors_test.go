package main

// Section 4 of docs/protocol.md: errors and close codes. One table holds
// every bad input once, with the error frame and close code it must get;
// the slow client, whose outcome depends on how far it fell behind, has a
// test of its own. The row "worker shutting down: 1001" is
// TestShutdownOnSignal.

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
)

// errorsTarget is a worker with an identified client, control, that must
// keep receiving whatever other clients do.
type errorsTarget struct {
	tw      *testWorker
	cfg     Config
	nc      *nats.Conn
	control *liveClient
}

// first returns a row's action that connects and sends msg as the first
// message.
func first(msg string) func(*testing.T, *errorsTarget) (*websocket.Conn, func(*testing.T)) {
	return func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
		c := dial(t, tg.tw.addr, "/")
		send(t, c, msg)
		return c, nil
	}
}

// TestErrorsAndCloseCodes runs every bad input against one worker (with
// NOTIFY_AUTH=none, or a second one with NOTIFY_AUTH=jwt), asserts exactly
// what the client gets (the error frame, if any, then the close code and
// its reason), and checks after each row that the worker's control client
// still receives, alone.
func TestErrorsAndCloseCodes(t *testing.T) {
	plain := &errorsTarget{cfg: limitsConfig(t)}
	plain.tw = startWorker(t, plain.cfg)
	plain.nc = connectNATS(t, plain.tw.natsURL)
	plain.control = newLiveClient(t, plain.tw.addr, "control")

	withJWT := &errorsTarget{cfg: jwtConfig(t)}
	withJWT.tw = startWorker(t, withJWT.cfg)
	withJWT.nc = connectNATS(t, withJWT.tw.natsURL)
	controlConn := dial(t, withJWT.tw.addr, "/?token="+url.QueryEscape(token(t, "control", nil)))
	expect(t, controlConn, welcome("control"))
	withJWT.control = live(t, controlConn)

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	valid := func(sub string) jwt.MapClaims {
		return jwt.MapClaims{"sub": sub, "aud": "notify", "iss": "https://auth.example", "exp": time.Now().Add(time.Hour).Unix()}
	}
	rs256 := signed(t, jwt.SigningMethodRS256, valid("x"), rsaKey)
	algNone := signed(t, jwt.SigningMethodNone, valid("x"), jwt.UnsafeAllowNoneSignatureType)
	forged := signed(t, jwt.SigningMethodHS256, valid("control"), []byte("another-secret-another-secret-another-secret"))
	withToken := func(tok string) string { return `{"token":"` + tok + `"}` }

	const nameRule = "name may contain only A-Z a-z 0-9 _ -"
	longName := `{"name":"` + strings.Repeat("a", 5000) + `"}`
	if len(longName) > int(plain.cfg.IdentifyMaxBytes) {
		t.Fatal("the long-name row must fit under the identify read limit to reach the name rule")
	}

	rows := []struct {
		name string
		jwt  bool // against the NOTIFY_AUTH=jwt worker
		// do connects and misbehaves; it returns the connection whose
		// outcome is read and, if not nil, what to check after it.
		do   func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T))
		code int
		// reason is in the error frame and in the close frame; empty: the
		// client gets no frame at all before the close.
		reason string
	}{
		// The first message: encoding and shape.
		{name: "invalid UTF-8 byte", do: first("{\"name\":\"vic\xfftim\"}"), code: 1008, reason: "first message is not valid UTF-8"},
		{name: "invalid UTF-8 sequence", do: first("{\"name\":\"a\xc3\x28\"}"), code: 1008, reason: "first message is not valid UTF-8"},
		{name: "not JSON", do: first("name=control"), code: 1008, reason: "first message must be a JSON object"},
		{name: "array", do: first(`["victim"]`), code: 1008, reason: "first message must be a JSON object"},
		{name: "string", do: first(`"victim"`), code: 1008, reason: "first message must be a JSON object"},
		{name: "trailing data", do: first(`{"name":"x"} {"name":"y"}`), code: 1008, reason: "first message must be a JSON object"},
		{name: "truncated", do: first(`{"name":"x"`), code: 1008, reason: "first message must be a JSON object"},
		{name: "empty", do: first(``), code: 1008, reason: "first message must be a JSON object"},
		{name: "binary frame", do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			c := dial(t, tg.tw.addr, "/")
			sendBinary(t, c, []byte(`{"name":"control"}`))
			return c, nil
		}, code: 1008, reason: "first message must be a text frame"},
		{name: "over NOTIFY_IDENTIFY_MAX_BYTES", do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			c := dial(t, tg.tw.addr, "/")
			send(t, c, `{"name":"`+strings.Repeat("a", int(tg.cfg.IdentifyMaxBytes))+`"}`)
			return c, nil
		}, code: 1009},

		// The first message: its keys.
		{name: "no name key", do: first(`{"nick":"victim"}`), code: 1008, reason: "first message has no name field"},
		{name: "capitalised key", do: first(`{"Name":"victim"}`), code: 1008, reason: "first message has no name field"},
		{name: "token without NOTIFY_AUTH=jwt", do: first(`{"token":"abc"}`), code: 1008, reason: "first message has no name field"},
		{name: "name twice", do: first(`{"name":"attacker","name":"victim"}`), code: 1008, reason: "first message has more than one name field"},
		{name: "token twice", do: first(`{"name":"a","token":"x","token":"y"}`), code: 1008, reason: "first message has more than one token field"},
		{name: "empty name", do: first(`{"name":""}`), code: 1008, reason: "name must be a non-empty string"},
		{name: "number", do: first(`{"name":42}`), code: 1008, reason: "name must be a non-empty string"},
		{name: "null", do: first(`{"name":null}`), code: 1008, reason: "name must be a non-empty string"},
		{name: "object", do: first(`{"name":{"x":1}}`), code: 1008, reason: "name must be a non-empty string"},
		{name: "token not a string", do: first(`{"name":"a","token":5}`), code: 1008, reason: "token must be a non-empty string"},

		// The name rule, plainly and as escapes.
		{name: "star", do: first(`{"name":"*"}`), code: 1008, reason: nameRule},
		{name: "gt", do: first(`{"name":">"}`), code: 1008, reason: nameRule},
		{name: "token wildcard", do: first(`{"name":"a.*"}`), code: 1008, reason: nameRule},
		{name: "tail wildcard", do: first(`{"name":"*.>"}`), code: 1008, reason: nameRule},
		{name: "gt then token", do: first(`{"name":">.x"}`), code: 1008, reason: nameRule},
		{name: "escaped star", do: first(`{"name":"\u002a"}`), code: 1008, reason: nameRule},
		{name: "escaped gt", do: first(`{"name":"\u003e"}`), code: 1008, reason: nameRule},
		{name: "dot", do: first(`{"name":"victim.x"}`), code: 1008, reason: nameRule},
		{name: "escaped dot", do: first(`{"name":"victim\u002ex"}`), code: 1008, reason: nameRule},
		{name: "space", do: first(`{"name":"a b"}`), code: 1008, reason: nameRule},
		{name: "escaped CR LF", do: first(`{"name":"a\r\nPUB notify.user.victim 1\r\nx"}`), code: 1008, reason: nameRule},
		{name: "escaped NUL", do: first(`{"name":"a\u0000b"}`), code: 1008, reason: nameRule},
		{name: "non-ASCII", do: first(`{"name":"名字"}`), code: 1008, reason: nameRule},
		{name: "escaped non-ASCII", do: first(`{"name":"\u540d"}`), code: 1008, reason: nameRule},
		{name: "129 bytes", do: first(`{"name":"` + strings.Repeat("a", 129) + `"}`), code: 1008, reason: "name is longer than 128 bytes"},
		{name: "5000 bytes", do: first(longName), code: 1008, reason: "name is longer than 128 bytes"},

		// After the rejection.
		{name: "frames sent after the rejection", do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			return sendTogether(t, tg.tw.addr, "/", `{"name":"*"}`, `{"name":"control"}`, "upstream?"), nil
		}, code: 1008, reason: nameRule},

		// Limits and time.
		{name: "later message over NOTIFY_MAX_MESSAGE_BYTES", do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			c := client(t, tg.tw, "big")
			send(t, c, strings.Repeat("x", int(tg.cfg.MaxMessageBytes)+1))
			return c, nil
		}, code: 1009},
		{name: "NATS unavailable when identifying", do: func(t *testing.T, _ *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			srv := startNATS(t, nil)
			cfg := testConfig(t)
			cfg.NATSURLs = []string{srv.ClientURL()}
			tw := startWorker(t, cfg)
			stopNATS(srv)
			eventually(t, "/readyz 503 without NATS", func() bool { return status(t, tw.url("/readyz")) == 503 })
			c := dial(t, tw.addr, "/")
			send(t, c, `{"name":"judy"}`)
			return c, nil
		}, code: 1013, reason: "service unavailable, try again later"},
		{name: "no first message within NOTIFY_IDENTIFY_TIMEOUT", do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			return dial(t, tg.tw.addr, "/"), nil
		}, code: 1008, reason: "identify timeout: send the first message sooner"},
		{name: "more than NOTIFY_MAX_SESSIONS_PER_NAME", do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			a, b := client(t, tg.tw, "dup"), client(t, tg.tw, "dup")
			c, _ := first(`{"name":"dup"}`)(t, tg)
			return c, func(t *testing.T) {
				// The two sessions already there keep receiving.
				publish(t, tg.nc, "notify.user.dup", "still-two")
				expect(t, a, "still-two")
				expect(t, b, "still-two")
			}
		}, code: 1008, reason: "too many sessions for this name (limit 2)"},
		{name: "upstream faster than NOTIFY_UPSTREAM_RATE", do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			sub := subscribe(t, tg.nc, "notify.inbound.flooder")
			c := client(t, tg.tw, "flooder")
			for i := range 50 {
				if err := c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i))); err != nil {
					break // the server may already have closed
				}
			}
			return c, func(t *testing.T) {
				// The worker's publishes reach the server on its own schedule.
				burst := tg.cfg.UpstreamBurst
				eventually(t, "the burst to be forwarded", func() bool {
					n, _, _ := sub.Pending()
					return n >= burst
				})
				// The burst, plus what the rate refilled while they arrived.
				if forwarded, _, _ := sub.Pending(); forwarded > burst+3 {
					t.Fatalf("%d messages forwarded, want about the burst of %d", forwarded, burst)
				}
			}
		}, code: 1008, reason: "upstream rate limit exceeded"},
		{name: "no pong within NOTIFY_PONG_TIMEOUT", do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			c := client(t, tg.tw, "vanished")
			c.SetPingHandler(func(string) error { return nil }) // reads, but never answers a ping
			return c, nil
		}, code: websocket.CloseAbnormalClosure},

		// Tokens (NOTIFY_AUTH=jwt).
		{name: "no token", jwt: true, do: first(`{"name":"control"}`), code: 1008, reason: "token required"},
		{name: "forged token", jwt: true, do: first(withToken(forged)), code: 1008, reason: "invalid token: bad signature"},
		{name: "forged token in the query", jwt: true, do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			return dial(t, tg.tw.addr, "/ws?token="+url.QueryEscape(forged)), nil
		}, code: 1008, reason: "invalid token: bad signature"},
		{name: "malformed token", jwt: true, do: first(withToken("not.a.jwt")), code: 1008, reason: "invalid token: malformed"},
		{name: "wrong algorithm", jwt: true, do: first(withToken(rs256)), code: 1008, reason: "invalid token: algorithm not allowed"},
		{name: "alg none", jwt: true, do: first(withToken(algNone)), code: 1008, reason: "invalid token: algorithm not allowed"},
		{name: "wrong audience", jwt: true, do: first(withToken(token(t, "erin", func(c jwt.MapClaims) { c["aud"] = "billing" }))), code: 1008, reason: "invalid token: wrong audience"},
		{name: "wrong issuer", jwt: true, do: first(withToken(token(t, "erin", func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }))), code: 1008, reason: "invalid token: wrong issuer"},
		{name: "no exp", jwt: true, do: first(withToken(token(t, "erin", func(c jwt.MapClaims) { delete(c, "exp") }))), code: 1008, reason: "invalid token: no exp"},
		{name: "not valid yet", jwt: true, do: first(withToken(token(t, "erin", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() }))), code: 1008, reason: "invalid token: not valid yet"},
		{name: "issued in the future", jwt: true, do: first(withToken(token(t, "erin", func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() }))), code: 1008, reason: "invalid token: issued in the future"},
		{name: "no sub", jwt: true, do: first(withToken(token(t, "", nil))), code: 1008, reason: "invalid token: no sub"},
		{name: "expired token", jwt: true, do: first(withToken(token(t, "erin", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }))), code: 4001, reason: "token expired"},
		{name: "token expires while connected", jwt: true, do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			c := dial(t, tg.tw.addr, "/")
			send(t, c, withToken(token(t, "gina", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(2 * time.Second).Unix() })))
			expect(t, c, welcome("gina"))
			return c, nil
		}, code: 4001, reason: "token expired"},
		{name: "sub breaks the name rule", jwt: true, do: first(withToken(token(t, "*", nil))), code: 1008, reason: "token subject: " + nameRule},
		{name: "sub with a dot", jwt: true, do: first(withToken(token(t, "control.x", nil))), code: 1008, reason: "token subject: " + nameRule},
		{name: "name differs from sub", jwt: true, do: first(`{"token":"` + token(t, "erin", nil) + `","name":"control"}`), code: 1008, reason: "name does not match the token subject"},
		{name: "query token, first frame over NOTIFY_IDENTIFY_MAX_BYTES", jwt: true, do: func(t *testing.T, tg *errorsTarget) (*websocket.Conn, func(*testing.T)) {
			c := dial(t, tg.tw.addr, "/?token="+url.QueryEscape(token(t, "ivy", nil)))
			expect(t, c, welcome("ivy"))
			send(t, c, strings.Repeat("y", int(tg.cfg.IdentifyMaxBytes)+1))
			return c, nil
		}, code: 1009},
	}
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			tg := plain
			if row.jwt {
				tg = withJWT
			}
			c, after := row.do(t, tg)
			frames, code, reason := readClose(t, c)
			if code != row.code {
				t.Fatalf("close code %d (%q), want %d (frames %q)", code, reason, row.code, frames)
			}
			if row.reason == "" {
				if len(frames) != 0 {
					t.Fatalf("frames %q, want none before the close", frames)
				}
			} else {
				if len(frames) != 1 || errorReason(t, frames[0]) != row.reason {
					t.Fatalf("frames %q, want one error frame with %q", frames, row.reason)
				}
				if reason != row.reason {
					t.Fatalf("close reason %q, want %q", reason, row.reason)
				}
			}
			if after != nil {
				after(t)
			}

			// The control client still receives, alone, and the worker's
			// NATS connection is up.
			msg := "control-" + strconv.Itoa(i)
			publish(t, tg.nc, "notify.user.control", msg)
			tg.control.expect(t, msg)
		})
	}

	for _, tg := range []*errorsTarget{plain, withJWT} {
		if code := status(t, tg.tw.url("/readyz")); code != 200 {
			t.Fatalf("/readyz = %d after the bad inputs", code)
		}
	}
}

// A client that stops reading is disconnected once its queue overflows;
// the loss is counted; the messages it did get have no gap; and a healthy
// client keeps receiving every message meanwhile.
func TestSlowReader(t *testing.T) {
	cfg := limitsConfig(t)
	cfg.PongTimeout = time.Minute // this test is about the queue, not pings
	cfg.PingPeriod = 30 * time.Second
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	control := newLiveClient(t, tw.addr, "control")
	slow := dialStalled(t, tw.addr, "/") // never reads until the end
	identify(t, slow, "slow")

	big := strings.Repeat("x", 60_000)
	const n = 400 // 24 MB: far more than socket buffers and the queue hold
	for i := range n {
		// Each control message is delivered while the slow client's
		// writer is stuck: the next one is published only once it arrived.
		if err := nc.Publish("notify.user.slow", []byte(strconv.Itoa(i)+" "+big)); err != nil {
			t.Fatal(err)
		}
		publish(t, nc, "notify.user.control", strconv.Itoa(i))
		control.expect(t, strconv.Itoa(i))
	}
	eventually(t, "the slow client to be disconnected", func() bool {
		return metric(t, tw.addr, `notify_limit_closes_total{reason="slow_consumer"}`) == 1
	})
	if dropped := metric(t, tw.addr, `notify_dropped_total{reason="queue_full"}`); dropped != 1 {
		t.Fatalf("notify_dropped_total{reason=queue_full} = %v, want the one message that overflowed", dropped)
	}
	// Each message for the slow client was queued to it, counted as
	// dropped, or published after its session ended (then, as for any
	// absent user, there was no one to deliver it to).
	queuedToSlow := metric(t, tw.addr, `notify_deliveries_total{kind="user"}`) - n // less control's
	var dropped float64
	for _, reason := range []string{"queue_full", "after_loss", "closing"} {
		dropped += metric(t, tw.addr, `notify_dropped_total{reason="`+reason+`"}`)
	}
	if queuedToSlow+dropped > n {
		t.Fatalf("slow client: %v queued + %v dropped > %d published", queuedToSlow, dropped, n)
	}
	t.Logf("slow client: %v queued, %v dropped and counted, %v published after it was gone", queuedToSlow, dropped, n-queuedToSlow-dropped)

	// What the slow client did receive is a prefix, in order, and then
	// 4002 or the connection cut.
	slow.SetReadDeadline(time.Now().Add(waitTimeout))
	for want := 0; ; want++ {
		_, msg, err := slow.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code != 4002 && ce.Code != websocket.CloseAbnormalClosure {
				t.Fatalf("slow client closed with %d, want 4002 or a cut connection", ce.Code)
			}
			if want >= n {
				t.Fatalf("slow client got all %d messages; it was never slow", n)
			}
			break
		}
		seq, _, _ := strings.Cut(string(msg), " ")
		if seq != strconv.Itoa(want) {
			t.Fatalf("slow client got message %s, want %d: a gap while open", seq, want)
		}
	}
}
