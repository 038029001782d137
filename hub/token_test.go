package hub

import (
	"testing"
	"time"
)

// fakeAuth proves name with any token, until expires.
type fakeAuth struct {
	name    string
	expires time.Time
}

func (a fakeAuth) Authenticate(string) (string, time.Time, error) { return a.name, a.expires, nil }

// A session ends with 4001 when its token stops being accepted, the time
// the Authenticator returned: not before, and not at once.
func TestTokenExpiryClosesSession(t *testing.T) {
	cfg := testConfig()
	expires := time.Now().Add(300 * time.Millisecond)
	cfg.Auth = fakeAuth{name: "a", expires: expires}
	_, url, _ := startHubWith(t, cfg, newFakeRouter(), discardLogger())
	c := dial(t, url)
	send(t, c, `{"token":"t"}`)
	if got := readFrame(t, c); got != `{"type":"welcome","name":"a"}` {
		t.Fatalf("got %s, want the welcome", got)
	}
	ce := closeFrame(t, c)
	if now := time.Now(); now.Before(expires) {
		t.Errorf("closed %v before the token stopped being accepted", expires.Sub(now))
	}
	if ce.Code != closeTokenExpired || ce.Text != reasonTokenExpired {
		t.Errorf("close %d %q, want %d %q", ce.Code, ce.Text, closeTokenExpired, reasonTokenExpired)
	}
}
