package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

const waitTimeout = 10 * time.Second

// jwksServer is a real JWKS endpoint on a loopback port whose key set and
// status the test changes as it goes.
type jwksServer struct {
	srv      *httptest.Server
	requests chan struct{} // one value per request served, dropped when full

	mu     sync.Mutex
	body   []byte
	status int
}

func newJWKSServer(t *testing.T) *jwksServer {
	t.Helper()
	s := &jwksServer{requests: make(chan struct{}, 64), status: http.StatusOK, body: []byte(`{"keys":[]}`)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		body, status := s.body, s.status
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
		select {
		case s.requests <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// serve makes the server answer with the public keys given, by kid.
func (s *jwksServer) serve(t *testing.T, keys map[string]crypto.PublicKey) {
	t.Helper()
	var set jwkset.JWKSMarshal
	for kid, pub := range keys {
		j, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, j.Marshal())
	}
	body, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.body, s.status = body, http.StatusOK
	s.mu.Unlock()
}

func (s *jwksServer) fail() {
	s.mu.Lock()
	s.status = http.StatusInternalServerError
	s.mu.Unlock()
}

// waitRequests waits until n more requests have been served.
func (s *jwksServer) waitRequests(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for range n {
		select {
		case <-s.requests:
		case <-deadline:
			t.Fatalf("JWKS server: timed out waiting for %d requests", n)
		}
	}
}

func (s *jwksServer) drainRequests() int {
	n := 0
	for {
		select {
		case <-s.requests:
			n++
		default:
			return n
		}
	}
}

func newJWKSVerifier(t *testing.T, cfg Config, tuning jwksTuning) *Verifier {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	v, err := newVerifier(ctx, cfg, nil, tuning)
	if err != nil {
		t.Fatalf("newVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestJWKSRotation(t *testing.T) {
	k := newTestKeys(t)
	now := time.Now()
	s := newJWKSServer(t)
	s.serve(t, map[string]crypto.PublicKey{"k1": &k.rsa.PublicKey})
	// No gap between fetches on an unknown kid, so the rotation shows at once.
	v := newJWKSVerifier(t, Config{JWKSURL: s.srv.URL}, jwksTuning{minRefetchGap: 0})

	k1Token := sign(t, jwt.SigningMethodRS256, k.rsa, claims(now, nil), "k1")
	if sub, _, err := v.Verify(k1Token); err != nil || sub != "alice" {
		t.Fatalf("k1 token: Verify = %q, %v", sub, err)
	}

	// Rotate: the endpoint now serves only k2, an EC key.
	s.serve(t, map[string]crypto.PublicKey{"k2": &k.ec.PublicKey})
	k2Token := sign(t, jwt.SigningMethodES256, k.ec, claims(now, map[string]any{"sub": "bob"}), "k2")
	if sub, _, err := v.Verify(k2Token); err != nil || sub != "bob" {
		t.Fatalf("k2 token after rotation: Verify = %q, %v", sub, err)
	}

	tests := []struct {
		name    string
		token   string
		wantErr string
	}{
		{"k1 dropped by the endpoint", k1Token, "invalid token: unknown key"},
		{"unknown kid", sign(t, jwt.SigningMethodES256, k.ec, claims(now, nil), "nope"), "invalid token: unknown key"},
		{"no kid", sign(t, jwt.SigningMethodES256, k.ec, claims(now, nil), ""), "invalid token: unknown key"},
		{"RS256 naming the EC key", sign(t, jwt.SigningMethodRS256, k.rsa, claims(now, nil), "k2"), "invalid token: algorithm not allowed"},
		{"HS256 naming the EC key", sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(now, nil), "k2"), "invalid token: algorithm not allowed"},
		{"k2 signed by another key", sign(t, jwt.SigningMethodES256, k.otherEC, claims(now, nil), "k2"), "invalid token: bad signature"},
		{"expired", sign(t, jwt.SigningMethodES256, k.ec, claims(now, map[string]any{"exp": now.Add(-time.Minute).Unix()}), "k2"), "token expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := v.Verify(tt.token)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Verify error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestJWKSUnknownKidIsRateLimited(t *testing.T) {
	k := newTestKeys(t)
	s := newJWKSServer(t)
	s.serve(t, map[string]crypto.PublicKey{"k1": &k.rsa.PublicKey})
	v := newJWKSVerifier(t, Config{JWKSURL: s.srv.URL}, jwksTuning{minRefetchGap: time.Hour})
	s.waitRequests(t, 1) // the initial fetch

	s.serve(t, map[string]crypto.PublicKey{"k2": &k.ec.PublicKey})
	tok := sign(t, jwt.SigningMethodES256, k.ec, claims(time.Now(), nil), "k2")
	for range 5 {
		if _, _, err := v.Verify(tok); err == nil || err.Error() != "invalid token: unknown key" {
			t.Fatalf("Verify error = %v, want unknown key", err)
		}
	}
	if n := s.drainRequests(); n != 0 {
		t.Errorf("%d fetches within the gap, want 0", n)
	}
}

func TestJWKSBackgroundRefresh(t *testing.T) {
	k := newTestKeys(t)
	s := newJWKSServer(t)
	s.serve(t, map[string]crypto.PublicKey{"k1": &k.rsa.PublicKey})
	v := newJWKSVerifier(t, Config{JWKSURL: s.srv.URL, JWKSRefresh: 10 * time.Millisecond},
		jwksTuning{minRefetchGap: time.Hour}) // only the background refresh may fetch
	s.waitRequests(t, 1)

	// A failing endpoint leaves the keys held in place.
	s.fail()
	s.drainRequests()
	s.waitRequests(t, 2)
	k1Token := sign(t, jwt.SigningMethodRS256, k.rsa, claims(time.Now(), nil), "k1")
	if _, _, err := v.Verify(k1Token); err != nil {
		t.Fatalf("k1 after failed refreshes: %v", err)
	}

	// The refresh goroutine fetches one request at a time and stores the
	// result before the next, so two served requests after the switch mean
	// at least one complete refresh has seen k2.
	s.serve(t, map[string]crypto.PublicKey{"k2": &k.ec.PublicKey})
	s.drainRequests()
	s.waitRequests(t, 2)
	k2Token := sign(t, jwt.SigningMethodES256, k.ec, claims(time.Now(), nil), "k2")
	if _, _, err := v.Verify(k2Token); err != nil {
		t.Fatalf("k2 after background refresh: %v", err)
	}
}

func TestJWKSNewFails(t *testing.T) {
	// A port nothing listens on: bind, note it, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + l.Addr().String() + "/jwks"
	l.Close()

	failing := newJWKSServer(t)
	failing.fail()
	empty := newJWKSServer(t)
	notJSON := newJWKSServer(t)
	notJSON.mu.Lock()
	notJSON.body = []byte("<html>")
	notJSON.mu.Unlock()

	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers only when the client gives up
	}))
	t.Cleanup(hanging.Close)

	tests := []struct {
		name string
		url  string
		want string
	}{
		{"unreachable", deadURL, "connection refused"},
		{"status 500", failing.srv.URL, "status 500"},
		{"no usable keys", empty.srv.URL, "no usable RS256 or ES256 signing key"},
		{"not JSON", notJSON.srv.URL, "decode jwks"},
		{"no answer within ctx", hanging.URL, "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			v, err := New(ctx, Config{JWKSURL: tt.url}, nil)
			if err == nil {
				v.Close()
				t.Fatal("New succeeded")
			}
			var field interface{ ConfigField() string }
			if !errors.As(err, &field) || field.ConfigField() != "JWKSURL" || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want one naming the field JWKSURL and containing %q", err, tt.want)
			}
		})
	}
}

func TestJWKSCloseIsIdempotent(t *testing.T) {
	k := newTestKeys(t)
	s := newJWKSServer(t)
	s.serve(t, map[string]crypto.PublicKey{"k1": &k.rsa.PublicKey})
	v, err := New(context.Background(), Config{JWKSURL: s.srv.URL, JWKSRefresh: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	v.Close()
	// Keys already held still verify after Close; nothing fetches any more.
	tok := sign(t, jwt.SigningMethodRS256, k.rsa, claims(time.Now(), nil), "k1")
	if _, _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify after Close: %v", err)
	}
}
