package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/notify-worker/notify-worker/auth"
	"github.com/notify-worker/notify-worker/hub"
)

// jwksFetchTimeout bounds the first fetch of a JWKS at startup.
const jwksFetchTimeout = 15 * time.Second

// authenticator is the token verification run builds from the plan:
// nothing for NOTIFY_AUTH=none, an auth.Verifier for jwt.
type authenticator struct{ v *auth.Verifier }

// newAuthenticator builds what cfg asks for; a JWKS URL is fetched once
// here, bounded by ctx and jwksFetchTimeout.
func newAuthenticator(ctx context.Context, cfg *auth.Config, log *slog.Logger) (authenticator, error) {
	if cfg == nil {
		return authenticator{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	v, err := auth.New(ctx, *cfg, log)
	if err != nil {
		return authenticator{}, err
	}
	return authenticator{v}, nil
}

// hub returns what the hub verifies tokens with; nil trusts the name.
func (a authenticator) hub() hub.Authenticator {
	if a.v == nil {
		return nil
	}
	return jwtAuth{a.v}
}

func (a authenticator) close() {
	if a.v != nil {
		a.v.Close()
	}
}

// jwtAuth lets the hub verify tokens with an auth.Verifier.
type jwtAuth struct{ v *auth.Verifier }

func (a jwtAuth) Authenticate(token string) (string, time.Time, error) {
	sub, until, err := a.v.Verify(token)
	if errors.Is(err, auth.ErrExpired) {
		return "", time.Time{}, hub.ErrTokenExpired
	}
	return sub, until, err
}
