package main

import (
	"crypto/rand"
	"crypto/rsa"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// TestTokens covers every way a token can be wrong, each with its exact
// outcome, while a healthy authenticated client keeps receiving.
func TestTokens(t *testing.T) {
	tw := startWorker(t, jwtConfig(t))
	nc := connectNATS(t, tw.natsURL)

	controlConn := dial(t, tw.addr, "/?token="+url.QueryEscape(token(t, "control", nil)))
	expect(t, controlConn, `{"type":"welcome","name":"control"}`)
	control := live(t, controlConn)

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs256, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"sub": "x", "aud": "notify", "iss": "https://auth.example", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{
		"sub": "x", "aud": "notify", "iss": "https://auth.example", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "control", "aud": "notify", "iss": "https://auth.example", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte("another-secret-another-secret-another-secret"))
	if err != nil {
		t.Fatal(err)
	}

	rows := []struct {
		name   string
		first  string
		code   int
		reason string
	}{
		{"no token", `{"name":"control"}`, websocket.ClosePolicyViolation, "token required"},
		{"forged", `{"token":"` + forged + `"}`, websocket.ClosePolicyViolation, "invalid token: bad signature"},
		{"expired", `{"token":"` + token(t, "erin", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }) + `"}`, 4001, "token expired"},
		{"no exp", `{"token":"` + token(t, "erin", func(c jwt.MapClaims) { delete(c, "exp") }) + `"}`, websocket.ClosePolicyViolation, "invalid token: no exp"},
		{"wrong audience", `{"token":"` + token(t, "erin", func(c jwt.MapClaims) { c["aud"] = "billing" }) + `"}`, websocket.ClosePolicyViolation, "invalid token: wrong audience"},
		{"wrong issuer", `{"token":"` + token(t, "erin", func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }) + `"}`, websocket.ClosePolicyViolation, "invalid token: wrong issuer"},
		{"wrong algorithm", `{"token":"` + rs256 + `"}`, websocket.ClosePolicyViolation, "invalid token: algorithm not allowed"},
		{"alg none", `{"token":"` + none + `"}`, websocket.ClosePolicyViolation, "invalid token: algorithm not allowed"},
		{"malformed", `{"token":"not.a.jwt"}`, websocket.ClosePolicyViolation, "invalid token: malformed"},
		{"no sub", `{"token":"` + token(t, "", nil) + `"}`, websocket.ClosePolicyViolation, "invalid token: no sub"},
		{"sub breaks the name rule", `{"token":"` + token(t, "*", nil) + `"}`, websocket.ClosePolicyViolation, "token subject: name may contain only"},
		{"sub with a dot", `{"token":"` + token(t, "control.x", nil) + `"}`, websocket.ClosePolicyViolation, "token subject: name may contain only"},
		{"name differs from sub", `{"token":"` + token(t, "erin", nil) + `","name":"control"}`, websocket.ClosePolicyViolation, "name does not match the token subject"},
	}
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			c := dial(t, tw.addr, "/")
			send(t, c, row.first)
			expectRejected(t, c, row.code, row.reason)
			msg := "control-" + strconv.Itoa(i)
			publish(t, nc, "notify.user.control", msg)
			control.expect(t, msg)
		})
	}

	t.Run("bad token in the query", func(t *testing.T) {
		c := dial(t, tw.addr, "/ws?token="+url.QueryEscape(forged))
		expectRejected(t, c, websocket.ClosePolicyViolation, "invalid token: bad signature")
	})
	t.Run("valid token in the first message, with its name", func(t *testing.T) {
		c := dial(t, tw.addr, "/")
		send(t, c, `{"token":"`+token(t, "frank", nil)+`","name":"frank"}`)
		expect(t, c, `{"type":"welcome","name":"frank"}`)
		publish(t, nc, "notify.user.frank", "hi frank")
		expect(t, c, "hi frank")
	})
	t.Run("token expires during the session", func(t *testing.T) {
		c := dial(t, tw.addr, "/")
		send(t, c, `{"token":"`+token(t, "gina", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(2 * time.Second).Unix() })+`"}`)
		expect(t, c, `{"type":"welcome","name":"gina"}`)
		expectRejected(t, c, 4001, "token expired")
	})
}
