package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify feeds hostile strings to Verify: it must never panic, and it
// returns either a subject or one of the fixed, short, client-safe reasons
// (which therefore never echo the token).
func FuzzVerify(f *testing.F) {
	v := newTestVerifier(f, Config{Secret: testSecret, Audience: "notify", Leeway: time.Second})
	now := time.Now()
	hs := func(over map[string]any) string {
		return sign(f, jwt.SigningMethodHS256, []byte(testSecret), claims(now, over), "")
	}
	valid := hs(map[string]any{"aud": "notify"})
	for _, seed := range []string{
		valid,
		hs(map[string]any{"aud": "notify", "exp": now.Add(-time.Hour).Unix()}),
		hs(map[string]any{"aud": "notify", "sub": nil}),
		hs(map[string]any{"aud": []string{"a", "notify"}, "nbf": now.Add(time.Hour).Unix()}),
		hs(nil),
		sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(now, nil), "kid"),
		valid[:len(valid)/2],
		valid + "x",
		strings.Replace(valid, ".", "..", 1),
		"", ".", "..", "a.b", "x.y.z", "e30.e30.", "eyJhbGciOiJIUzI1NiJ9.e30.",
	} {
		f.Add(seed)
	}

	reasons := map[string]bool{}
	for _, e := range []error{ErrExpired, errMalformed, errBadSignature, errAlgorithm, errAudience, errIssuer,
		errNotValidYet, errIssuedFuture, errNoExp, errNoSub, errUnknownKey, errInvalid} {
		if len(e.Error()) >= 100 {
			f.Fatalf("reason %q is %d bytes, want < 100", e, len(e.Error()))
		}
		reasons[e.Error()] = true
	}

	f.Fuzz(func(t *testing.T, token string) {
		sub, _, err := v.Verify(token)
		if err == nil {
			if sub == "" {
				t.Fatal("Verify succeeded with an empty subject")
			}
			return
		}
		if !reasons[err.Error()] {
			t.Fatalf("Verify error %q is not one of the fixed reasons", err)
		}
	})
}
