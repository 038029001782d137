package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

// testKeys are the keys one test signs and verifies with.
type testKeys struct {
	rsa, otherRSA *rsa.PrivateKey
	ec, otherEC   *ecdsa.PrivateKey
}

func newTestKeys(t testing.TB) testKeys {
	t.Helper()
	var k testKeys
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.otherRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if k.otherEC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	return k
}

// sign returns a token over claims; kid, when set, goes into the header.
func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// claims returns a valid claim set for "alice" expiring in an hour, with
// overrides applied; a nil override value deletes the claim.
func claims(now time.Time, overrides map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub": "alice",
		"exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(),
	}
	for k, v := range overrides {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// writePEM writes one PEM block to a file in a temporary directory.
func writePEM(t testing.TB, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pkixPEM(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, "PUBLIC KEY", der)
}

func certPEM(t testing.TB, priv crypto.Signer) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, "CERTIFICATE", der)
}

func newTestVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestVerify(t *testing.T) {
	k := newTestKeys(t)
	now := time.Now()
	rsaPubDER, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPubDER})

	verifiers := map[string]*Verifier{
		"hs":     newTestVerifier(t, Config{Secret: testSecret}),
		"rs":     newTestVerifier(t, Config{PublicKeyFile: pkixPEM(t, &k.rsa.PublicKey)}),
		"rsCert": newTestVerifier(t, Config{PublicKeyFile: certPEM(t, k.rsa)}),
		"rsPKCS1": newTestVerifier(t, Config{
			PublicKeyFile: writePEM(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)),
		}),
		"es":     newTestVerifier(t, Config{PublicKeyFile: pkixPEM(t, &k.ec.PublicKey)}),
		"esCert": newTestVerifier(t, Config{PublicKeyFile: certPEM(t, k.ec)}),
		"audIss": newTestVerifier(t, Config{Secret: testSecret, Audience: "notify", Issuer: "https://idp.test"}),
		"leeway": newTestVerifier(t, Config{Secret: testSecret, Leeway: 30 * time.Second}),
	}

	hs := func(over map[string]any) string {
		return sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims(now, over), "")
	}
	noneToken := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(now, nil), "")
	valid := hs(nil)
	parts := strings.Split(valid, ".")
	otherPayload := strings.Split(hs(map[string]any{"sub": "mallory"}), ".")[1]
	tampered := parts[0] + "." + otherPayload + "." + parts[2]

	tests := []struct {
		name     string
		verifier string
		token    string
		wantSub  string
		wantErr  string // exact message; empty means success
	}{
		{"valid HS256", "hs", valid, "alice", ""},
		{"valid RS256", "rs", sign(t, jwt.SigningMethodRS256, k.rsa, claims(now, nil), ""), "alice", ""},
		{"valid RS256, certificate PEM", "rsCert", sign(t, jwt.SigningMethodRS256, k.rsa, claims(now, nil), ""), "alice", ""},
		{"valid RS256, PKCS#1 PEM", "rsPKCS1", sign(t, jwt.SigningMethodRS256, k.rsa, claims(now, nil), ""), "alice", ""},
		{"valid ES256", "es", sign(t, jwt.SigningMethodES256, k.ec, claims(now, nil), ""), "alice", ""},
		{"valid ES256, certificate PEM", "esCert", sign(t, jwt.SigningMethodES256, k.ec, claims(now, nil), ""), "alice", ""},

		{"expired", "hs", hs(map[string]any{"exp": now.Add(-time.Minute).Unix()}), "", "token expired"},
		{"expired within leeway", "leeway", hs(map[string]any{"exp": now.Add(-10 * time.Second).Unix()}), "alice", ""},
		{"expired beyond leeway", "leeway", hs(map[string]any{"exp": now.Add(-time.Minute).Unix()}), "", "token expired"},
		{"no exp", "hs", hs(map[string]any{"exp": nil}), "", "invalid token: no exp"},
		{"nbf in the future", "hs", hs(map[string]any{"nbf": now.Add(time.Minute).Unix()}), "", "invalid token: not valid yet"},
		{"nbf within leeway", "leeway", hs(map[string]any{"nbf": now.Add(10 * time.Second).Unix()}), "alice", ""},
		{"iat in the future", "hs", hs(map[string]any{"iat": now.Add(time.Minute).Unix()}), "", "invalid token: issued in the future"},
		{"missing sub", "hs", hs(map[string]any{"sub": nil}), "", "invalid token: no sub"},
		{"empty sub", "hs", hs(map[string]any{"sub": ""}), "", "invalid token: no sub"},

		{"aud and iss correct", "audIss", hs(map[string]any{"aud": "notify", "iss": "https://idp.test"}), "alice", ""},
		{"aud list contains ours", "audIss", hs(map[string]any{"aud": []string{"other", "notify"}, "iss": "https://idp.test"}), "alice", ""},
		{"wrong audience", "audIss", hs(map[string]any{"aud": "other", "iss": "https://idp.test"}), "", "invalid token: wrong audience"},
		{"missing audience", "audIss", hs(map[string]any{"iss": "https://idp.test"}), "", "invalid token: wrong audience"},
		{"wrong issuer", "audIss", hs(map[string]any{"aud": "notify", "iss": "https://evil.test"}), "", "invalid token: wrong issuer"},
		{"missing issuer", "audIss", hs(map[string]any{"aud": "notify"}), "", "invalid token: wrong issuer"},
		{"wrong audience wins over expired", "audIss",
			hs(map[string]any{"aud": "other", "iss": "https://idp.test", "exp": now.Add(-time.Minute).Unix()}), "", "invalid token: wrong audience"},
		{"aud ignored when not configured", "hs", hs(map[string]any{"aud": "anything", "iss": "anyone"}), "alice", ""},

		{"bad signature HS256", "hs", sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), claims(now, nil), ""), "", "invalid token: bad signature"},
		{"bad signature RS256", "rs", sign(t, jwt.SigningMethodRS256, k.otherRSA, claims(now, nil), ""), "", "invalid token: bad signature"},
		{"bad signature ES256", "es", sign(t, jwt.SigningMethodES256, k.otherEC, claims(now, nil), ""), "", "invalid token: bad signature"},
		{"tampered payload", "hs", tampered, "", "invalid token: bad signature"},

		{"alg none on HS256", "hs", noneToken, "", "invalid token: algorithm not allowed"},
		{"alg none on RS256", "rs", noneToken, "", "invalid token: algorithm not allowed"},
		{"HS256 signed with the RSA public key PEM", "rs", sign(t, jwt.SigningMethodHS256, rsaPubPEM, claims(now, nil), ""), "", "invalid token: algorithm not allowed"},
		{"RS256 when configured for HS256", "hs", sign(t, jwt.SigningMethodRS256, k.rsa, claims(now, nil), ""), "", "invalid token: algorithm not allowed"},
		{"ES256 when configured for RSA", "rs", sign(t, jwt.SigningMethodES256, k.ec, claims(now, nil), ""), "", "invalid token: algorithm not allowed"},
		{"RS256 when configured for EC", "es", sign(t, jwt.SigningMethodRS256, k.rsa, claims(now, nil), ""), "", "invalid token: algorithm not allowed"},
		{"unknown alg", "hs", "eyJhbGciOiJYWDkiLCJ0eXAiOiJKV1QifQ." + parts[1] + "." + parts[2], "", "invalid token: algorithm not allowed"},
		{"HS512 when configured for HS256", "hs", sign(t, jwt.SigningMethodHS512, []byte(testSecret), claims(now, nil), ""), "", "invalid token: algorithm not allowed"},

		{"empty", "hs", "", "", "invalid token: malformed"},
		{"two segments", "hs", "a.b", "", "invalid token: malformed"},
		{"junk segments", "hs", "x.y.z", "", "invalid token: malformed"},
		{"10 KB of junk", "hs", strings.Repeat("junk.", 2048), "", "invalid token: malformed"},
		{"claims not JSON", "hs", parts[0] + ".bm90IGpzb24." + parts[2], "", "invalid token: malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := verifiers[tt.verifier]
			sub, exp, err := v.Verify(tt.token)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if sub != tt.wantSub {
					t.Errorf("subject = %q, want %q", sub, tt.wantSub)
				}
				if exp.IsZero() {
					t.Error("expiry is zero")
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify succeeded with subject %q, want error %q", sub, tt.wantErr)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("error = %q, want %q", err, tt.wantErr)
			}
			if len(err.Error()) >= 100 {
				t.Errorf("error message is %d bytes, want < 100", len(err.Error()))
			}
			if got, want := errors.Is(err, ErrExpired), tt.wantErr == ErrExpired.Error(); got != want {
				t.Errorf("errors.Is(err, ErrExpired) = %v, want %v", got, want)
			}
			if sub != "" || !exp.IsZero() {
				t.Errorf("got subject %q expiry %v alongside an error", sub, exp)
			}
		})
	}
}

// Verify returns when the token stops being accepted: its exp plus the
// leeway, so that a session can end exactly then, and not while a token
// that expired within the leeway is still accepted.
func TestVerifyReturnsExpiry(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	tests := []struct {
		name   string
		leeway time.Duration
		exp    time.Time
	}{
		{"no leeway", 0, now.Add(42 * time.Minute)},
		{"leeway", 30 * time.Second, now.Add(42 * time.Minute)},
		{"expired within the leeway", 30 * time.Second, now.Add(-5 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, Config{Secret: testSecret, Leeway: tt.leeway})
			tok := sign(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "bob", "exp": tt.exp.Unix()}, "")
			sub, got, err := v.Verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.exp.Add(tt.leeway); sub != "bob" || !got.Equal(want) {
				t.Errorf("Verify = %q, %v; want bob, %v (exp + leeway)", sub, got, want)
			}
		})
	}
}

func TestNewConfigErrors(t *testing.T) {
	k := newTestKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("this is not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	ecPriv, err := x509.MarshalECPrivateKey(k.ec)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		cfg   Config
		field string // the field the error names
		want  string // substring of the error
	}{
		{"no key source", Config{}, "Secret", "no key source: set a secret, a public key file or a JWKS URL"},
		{"secret and key file", Config{Secret: testSecret, PublicKeyFile: "/x.pem"}, "PublicKeyFile", "the secret is set too: set only one key source"},
		{"secret and JWKS", Config{Secret: testSecret, JWKSURL: "https://idp.test/jwks"}, "JWKSURL", "the secret is set too"},
		{"key file and JWKS", Config{PublicKeyFile: "/x.pem", JWKSURL: "https://idp.test/jwks"}, "JWKSURL", "the public key file is set too"},
		{"short secret", Config{Secret: "short-secret"}, "Secret", "12 bytes, need at least 32"},
		{"unreadable key file", Config{PublicKeyFile: filepath.Join(t.TempDir(), "missing.pem")}, "PublicKeyFile", "read public key"},
		{"garbage key file", Config{PublicKeyFile: garbage}, "PublicKeyFile", "holds no PEM block"},
		{"garbage PEM body", Config{PublicKeyFile: writePEM(t, "PUBLIC KEY", []byte("nope"))}, "PublicKeyFile", "parse"},
		{"private key PEM", Config{PublicKeyFile: writePEM(t, "EC PRIVATE KEY", ecPriv)}, "PublicKeyFile", "is not a public key or certificate"},
		{"RSA key too small", Config{PublicKeyFile: pkixPEM(t, &small.PublicKey)}, "PublicKeyFile", "RSA key is 1024 bits"},
		{"EC key not P-256", Config{PublicKeyFile: pkixPEM(t, &p384.PublicKey)}, "PublicKeyFile", "need P-256"},
		{"Ed25519 key", Config{PublicKeyFile: pkixPEM(t, edPub)}, "PublicKeyFile", "unsupported key type"},
		{"JWKS URL not http", Config{JWKSURL: "file:///etc/jwks.json"}, "JWKSURL", "is not an http(s) URL"},
		{"negative leeway", Config{Secret: testSecret, Leeway: -time.Second}, "Leeway", "negative"},
		{"negative JWKS refresh", Config{JWKSURL: "https://idp.test/jwks", JWKSRefresh: -time.Second}, "JWKSRefresh", "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Validate finds every one of these without a network request
			// (the JWKS URLs here lead nowhere), and New the same.
			validateErr := tt.cfg.Validate()
			v, err := New(context.Background(), tt.cfg, nil)
			if err == nil {
				v.Close()
				t.Fatalf("New succeeded, want error containing %q", tt.want)
			}
			for _, err := range []error{validateErr, err} {
				var field interface{ ConfigField() string }
				if !errors.As(err, &field) || field.ConfigField() != tt.field {
					t.Errorf("error = %v, want one naming the field %s", err, tt.field)
				}
				if err == nil {
					continue
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error = %q, want it to contain %q", err, tt.want)
				}
				if strings.Contains(err.Error(), "NOTIFY_") {
					t.Errorf("error = %q names a setting: only main knows those", err)
				}
				if tt.cfg.Secret != "" && strings.Contains(err.Error(), tt.cfg.Secret) {
					t.Errorf("error %q echoes the secret", err)
				}
			}
		})
	}
}

// Validate accepts every configuration New can use, without fetching.
func TestValidateAcceptsGoodConfigs(t *testing.T) {
	k := newTestKeys(t)
	for _, cfg := range []Config{
		{Secret: testSecret, Leeway: 30 * time.Second},
		{PublicKeyFile: pkixPEM(t, &k.rsa.PublicKey)},
		{PublicKeyFile: certPEM(t, k.ec)},
		{JWKSURL: "https://idp.test/.well-known/jwks.json", JWKSRefresh: time.Hour},
	} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", cfg, err)
		}
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	v, err := New(context.Background(), Config{Secret: testSecret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	v.Close()
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := newTestVerifier(b, Config{Secret: testSecret, Audience: "notify", Issuer: "https://idp.test"})
	tok := sign(b, jwt.SigningMethodHS256, []byte(testSecret),
		claims(time.Now(), map[string]any{"aud": "notify", "iss": "https://idp.test"}), "")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
