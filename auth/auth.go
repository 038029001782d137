// Package auth verifies the JSON Web Tokens that clients present, so the
// worker can trust the name (the token's "sub") a client claims.
//
// A Verifier holds exactly one key source: an HS256 shared secret, a PEM
// public key (RS256 or ES256, by key type) or a JWKS endpoint (RS256 and
// ES256 keys selected by "kid"). The accepted algorithm is always pinned
// to that source, never taken from the token.
//
// The errors Verify returns are short and safe to show a client: they go
// into a WebSocket close frame, whose reason holds at most 123 bytes.
package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Config selects exactly one key source.
type Config struct {
	Secret        string        // HS256 shared secret; at least 32 bytes
	PublicKeyFile string        // PEM file: RSA public key (=> RS256 only) or ECDSA P-256 public key (=> ES256 only); also accepts a PEM certificate
	JWKSURL       string        // JWKS endpoint (RS256 and ES256 keys, selected by kid); cached, refreshed periodically and on an unknown kid (rate limited)
	JWKSRefresh   time.Duration // refresh interval for the JWKS (0 => 1h default)
	Audience      string        // when set, the token's aud must contain it
	Issuer        string        // when set, the token's iss must equal it
	Leeway        time.Duration // clock skew allowed on exp/nbf/iat
}

// ErrExpired is returned (wrapped or as is) for an expired token, so callers
// can tell the client to come back with a fresh token.
var ErrExpired = errors.New("token expired")

// Client-safe reasons. Each is well under 100 bytes and never contains any
// part of the token.
var (
	errMalformed    = errors.New("invalid token: malformed")
	errBadSignature = errors.New("invalid token: bad signature")
	errAlgorithm    = errors.New("invalid token: algorithm not allowed")
	errAudience     = errors.New("invalid token: wrong audience")
	errIssuer       = errors.New("invalid token: wrong issuer")
	errNotValidYet  = errors.New("invalid token: not valid yet")
	errIssuedFuture = errors.New("invalid token: issued in the future")
	errNoExp        = errors.New("invalid token: no exp")
	errNoSub        = errors.New("invalid token: no sub")
	errUnknownKey   = errors.New("invalid token: unknown key")
	errInvalid      = errors.New("invalid token")
)

const (
	defaultJWKSRefresh = time.Hour
	// jwksMinRefetchGap bounds how often an unknown kid may trigger a fetch,
	// so a stream of tokens with made-up kids cannot hammer the JWKS endpoint.
	jwksMinRefetchGap = 10 * time.Second
	// maxTokenBytes rejects absurd inputs before any decoding work.
	maxTokenBytes = 8 << 10
)

// minSecretBytes is the shortest HS256 secret accepted: 256 bits, the
// size of the hash.
const minSecretBytes = 32

// ConfigError is a Config field whose value cannot be used. ConfigField
// names the field, so that the caller can point at the setting of its own
// that fills it.
type ConfigError struct {
	Field string // the Config field, e.g. "Secret"
	Err   error  // what is wrong with its value; never the secret itself
}

func (e *ConfigError) Error() string       { return e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error       { return e.Err }
func (e *ConfigError) ConfigField() string { return e.Field }

// Validate checks c as far as it can without the network, and reports the
// first field it cannot use as a *ConfigError, or nil: exactly one key
// source, the secret's length, the public key file (read and parsed), the
// JWKS URL's form, and no negative durations. A caller can so report its
// configuration errors before it starts anything; New checks the same,
// then fetches a JWKS.
func (c Config) Validate() error {
	_, err := c.validate()
	return err
}

// validate is Validate, returning the public key it loaded, if any.
func (c Config) validate() (crypto.PublicKey, error) {
	sources := []struct{ field, what, value string }{
		{"Secret", "the secret", c.Secret},
		{"PublicKeyFile", "the public key file", c.PublicKeyFile},
		{"JWKSURL", "the JWKS URL", c.JWKSURL},
	}
	var set []int
	for i, src := range sources {
		if src.value != "" {
			set = append(set, i)
		}
	}
	// Messages say "the secret", not "Secret": the caller names its own
	// setting in front. With no source at all, no field is wrong alone;
	// the first is named, for the caller to point at.
	switch {
	case len(set) == 0:
		return nil, &ConfigError{"Secret", errors.New("no key source: set a secret, a public key file or a JWKS URL")}
	case len(set) > 1:
		first, second := sources[set[0]], sources[set[1]]
		return nil, &ConfigError{second.field, fmt.Errorf("%s is set too: set only one key source", first.what)}
	}
	if c.Leeway < 0 {
		return nil, &ConfigError{"Leeway", fmt.Errorf("%s is negative", c.Leeway)}
	}
	if c.JWKSRefresh < 0 {
		return nil, &ConfigError{"JWKSRefresh", fmt.Errorf("%s is negative", c.JWKSRefresh)}
	}
	switch {
	case c.Secret != "":
		if len(c.Secret) < minSecretBytes {
			return nil, &ConfigError{"Secret", fmt.Errorf("%d bytes, need at least %d", len(c.Secret), minSecretBytes)}
		}
	case c.PublicKeyFile != "":
		key, err := loadPublicKey(c.PublicKeyFile)
		if err != nil {
			return nil, &ConfigError{"PublicKeyFile", err}
		}
		return key, nil
	case c.JWKSURL != "":
		u, err := url.Parse(c.JWKSURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, &ConfigError{"JWKSURL", fmt.Errorf("%q is not an http(s) URL", c.JWKSURL)}
		}
	}
	return nil, nil
}

// Verifier checks tokens against one configured key source. It is safe for
// concurrent use. A Verifier built from a JWKS URL runs one background
// goroutine that refreshes the key set; Close ends it.
type Verifier struct {
	parser  *jwt.Parser
	keyfunc jwt.Keyfunc
	allowed []string // algorithms accepted, pinned by the key source
	jwks    *jwksCache

	audience string        // expected aud, if any
	issuer   string        // expected iss, if any
	leeway   time.Duration // clock skew allowed on exp, nbf and iat
}

// jwksTuning holds the knobs tests need to turn; New uses the defaults.
type jwksTuning struct {
	minRefetchGap time.Duration
}

// New validates cfg (see Validate) and builds a Verifier. With a JWKS URL,
// New fetches the key set once before returning (ctx bounds that fetch
// only) and keeps it fresh in the background until Close; a failed fetch
// is a *ConfigError for JWKSURL too.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Verifier, error) {
	return newVerifier(ctx, cfg, log, jwksTuning{minRefetchGap: jwksMinRefetchGap})
}

func newVerifier(ctx context.Context, cfg Config, log *slog.Logger, tuning jwksTuning) (*Verifier, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("auth config: %w", err)
	}

	v := &Verifier{audience: cfg.Audience, issuer: cfg.Issuer, leeway: cfg.Leeway}
	switch {
	case cfg.Secret != "":
		secret := []byte(cfg.Secret)
		v.allowed = []string{jwt.SigningMethodHS256.Alg()}
		v.keyfunc = func(*jwt.Token) (any, error) { return secret, nil }

	case cfg.PublicKeyFile != "":
		switch key.(type) {
		case *rsa.PublicKey:
			v.allowed = []string{jwt.SigningMethodRS256.Alg()}
		case *ecdsa.PublicKey:
			v.allowed = []string{jwt.SigningMethodES256.Alg()}
		}
		v.keyfunc = func(*jwt.Token) (any, error) { return key, nil }

	case cfg.JWKSURL != "":
		refresh := cfg.JWKSRefresh
		if refresh == 0 {
			refresh = defaultJWKSRefresh
		}
		c := newJWKSCache(cfg.JWKSURL, refresh, tuning.minRefetchGap, log)
		if err := c.start(ctx); err != nil {
			return nil, fmt.Errorf("auth config: %w", &ConfigError{"JWKSURL", err})
		}
		v.jwks = c
		v.allowed = []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg()}
		v.keyfunc = c.keyfunc
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.allowed),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Verify checks token and returns its subject and the time it stops being
// accepted: its exp plus the configured leeway, when Verify would fail
// with ErrExpired. A session it opens should end then, not at exp, or a
// token that expired within the leeway would be accepted and its session
// ended at once. The error, if any, is short and safe to send to the
// client; errors.Is(err, ErrExpired) tells an expired token apart.
//
// Verify runs on the caller's goroutine. With a JWKS source, a kid not in
// the cache may make it fetch the key set (at most once per 10s across all
// callers, each fetch bounded by 10s); known kids never wait on the network.
func (v *Verifier) Verify(token string) (subject string, validUntil time.Time, err error) {
	if token == "" || len(token) > maxTokenBytes {
		return "", time.Time{}, errMalformed
	}
	var claims jwt.RegisteredClaims
	parsed, err := v.parser.ParseWithClaims(token, &claims, v.keyfunc)
	if err != nil {
		return "", time.Time{}, v.reason(parsed, &claims, err)
	}
	if claims.Subject == "" {
		return "", time.Time{}, errNoSub
	}
	if claims.ExpiresAt == nil { // WithExpirationRequired makes this unreachable; kept as a guard
		return "", time.Time{}, errNoExp
	}
	return claims.Subject, claims.ExpiresAt.Time.Add(v.leeway), nil
}

// reason maps a jwt/v5 error to a client-safe one. Faults a fresh token
// would not fix (audience, issuer, ...) come before expiry, so a client is
// never sent round to fetch a new token that will fail anyway.
func (v *Verifier) reason(parsed *jwt.Token, claims *jwt.RegisteredClaims, err error) error {
	missing := errors.Is(err, jwt.ErrTokenRequiredClaimMissing)
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errMalformed
	case parsed != nil && !v.algAllowed(parsed):
		return errAlgorithm
	case errors.Is(err, errUnknownKey):
		return errUnknownKey
	case errors.Is(err, errAlgorithm):
		return errAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errBadSignature
	case errors.Is(err, jwt.ErrTokenInvalidAudience),
		missing && v.audience != "" && len(claims.Audience) == 0:
		return errAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer),
		missing && v.issuer != "" && claims.Issuer == "":
		return errIssuer
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errNotValidYet
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errIssuedFuture
	case missing && claims.ExpiresAt == nil:
		return errNoExp
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	}
	return errInvalid
}

func (v *Verifier) algAllowed(t *jwt.Token) bool {
	alg, _ := t.Header["alg"].(string)
	for _, a := range v.allowed {
		if a == alg {
			return true
		}
	}
	return false
}

// Close stops the background JWKS refresh, if any, and waits for it to
// end. It is safe to call more than once.
func (v *Verifier) Close() {
	if v.jwks != nil {
		v.jwks.close()
	}
}
