package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

const (
	// jwksFetchTimeout bounds one JWKS request, in the background and on an
	// unknown kid alike.
	jwksFetchTimeout = 10 * time.Second
	// maxJWKSBytes caps the body read from the JWKS endpoint.
	maxJWKSBytes = 1 << 20
)

// jwksKey is one usable signing key of the set.
type jwksKey struct {
	key crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey on P-256
	alg string           // the JWK's "alg", if it names one
}

// jwksCache holds the keys of one JWKS endpoint by kid. One goroutine,
// started by start and ended by close, refreshes them on an interval;
// Verify may also fetch on an unknown kid, at most once per minGap.
//
// jwkset parses the individual keys; the fetching, caching and the
// goroutine's lifetime are ours, so close can wait for the goroutine to end
// and close idle connections (nothing outlives the Verifier).
type jwksCache struct {
	url       string
	interval  time.Duration
	minGap    time.Duration
	log       *slog.Logger
	transport *http.Transport
	client    *http.Client

	mu   sync.RWMutex
	keys map[string]jwksKey // guarded by mu

	fetchMu   sync.Mutex // serialises fetches
	lastFetch time.Time  // start of the latest fetch attempt; guarded by fetchMu

	cancel    context.CancelFunc // ends the refresh goroutine
	done      chan struct{}      // closed when the refresh goroutine has returned
	closeOnce sync.Once
}

func newJWKSCache(url string, interval, minGap time.Duration, log *slog.Logger) *jwksCache {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	return &jwksCache{
		url:       url,
		interval:  interval,
		minGap:    minGap,
		log:       log,
		transport: transport,
		client:    &http.Client{Transport: transport, Timeout: jwksFetchTimeout},
		done:      make(chan struct{}),
	}
}

// start fetches the key set once, bounded by ctx, and then starts the
// refresh goroutine. On error nothing is left running.
func (c *jwksCache) start(ctx context.Context) error {
	c.fetchMu.Lock()
	err := c.refreshLocked(ctx)
	c.fetchMu.Unlock()
	if err != nil {
		c.transport.CloseIdleConnections()
		return err
	}
	bg, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.run(bg)
	return nil
}

// run refreshes the key set every interval until ctx is cancelled. A failed
// refresh keeps the keys already held and is logged.
func (c *jwksCache) run(ctx context.Context) {
	defer close(c.done)
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			c.fetchMu.Lock()
			err := c.refreshLocked(ctx)
			c.fetchMu.Unlock()
			if err != nil && ctx.Err() == nil {
				c.log.Warn("jwks refresh failed; keeping the keys held", "url", c.url, "error", err)
			}
		}
	}
}

// close ends the refresh goroutine, waits for it, and drops idle
// connections. Safe to call more than once.
func (c *jwksCache) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.done
		c.transport.CloseIdleConnections()
	})
}

func (c *jwksCache) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// keyfunc is the jwt.Keyfunc for a JWKS source: it selects the key by the
// token's kid and checks that the key's type fits the token's alg, so an
// RSA key is only ever used for RS256 and an EC key for ES256. It runs on
// the goroutine that called Verify.
func (c *jwksCache) keyfunc(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, errUnknownKey
	}
	k, ok := c.lookup(kid)
	if !ok {
		k, ok = c.refetchFor(kid)
		if !ok {
			return nil, errUnknownKey
		}
	}
	alg := t.Method.Alg()
	if k.alg != "" && k.alg != alg {
		return nil, errAlgorithm
	}
	switch k.key.(type) {
	case *rsa.PublicKey:
		if alg != jwt.SigningMethodRS256.Alg() {
			return nil, errAlgorithm
		}
	case *ecdsa.PublicKey:
		if alg != jwt.SigningMethodES256.Alg() {
			return nil, errAlgorithm
		}
	}
	return k.key, nil
}

func (c *jwksCache) lookup(kid string) (jwksKey, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	k, ok := c.keys[kid]
	return k, ok
}

// refetchFor fetches the key set again for an unknown kid, unless a fetch
// started less than minGap ago or the cache is closed. Callers that queue
// behind a fetch in progress see its result without fetching again.
func (c *jwksCache) refetchFor(kid string) (jwksKey, bool) {
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	if k, ok := c.lookup(kid); ok {
		return k, true
	}
	if c.closed() || time.Since(c.lastFetch) < c.minGap {
		return jwksKey{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
	defer cancel()
	if err := c.refreshLocked(ctx); err != nil {
		c.log.Warn("jwks fetch for an unknown kid failed; keeping the keys held", "url", c.url, "error", err)
		return jwksKey{}, false
	}
	return c.lookup(kid)
}

// refreshLocked fetches the key set and, if it holds at least one usable
// key, replaces the keys held (so a key dropped by the endpoint is revoked
// here too). The caller holds fetchMu.
func (c *jwksCache) refreshLocked(ctx context.Context) error {
	c.lastFetch = time.Now()
	keys, err := c.fetch(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.keys = keys
	c.mu.Unlock()
	c.log.Debug("jwks refreshed", "url", c.url, "keys", len(keys))
	return nil
}

func (c *jwksCache) fetch(ctx context.Context) (map[string]jwksKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks %s: status %s", c.url, resp.Status)
	}
	var set jwkset.JWKSMarshal
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&set); err != nil {
		return nil, fmt.Errorf("decode jwks from %s: %w", c.url, err)
	}
	keys := make(map[string]jwksKey, len(set.Keys))
	for _, m := range set.Keys {
		k, err := usableKey(m)
		if err != nil {
			c.log.Debug("jwks key skipped", "url", c.url, "kid", m.KID, "reason", err)
			continue
		}
		keys[m.KID] = k
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("jwks from %s holds no usable RS256 or ES256 signing key with a kid", c.url)
	}
	return keys, nil
}

// usableKey turns one JWK into a signing key for RS256 or ES256, or says
// why it is of no use here.
func usableKey(m jwkset.JWKMarshal) (jwksKey, error) {
	if m.KID == "" {
		return jwksKey{}, errors.New("no kid")
	}
	if m.USE != "" && m.USE != jwkset.UseSig {
		return jwksKey{}, fmt.Errorf("use %q is not sig", m.USE)
	}
	alg := m.ALG.String()
	if alg != "" && alg != jwt.SigningMethodRS256.Alg() && alg != jwt.SigningMethodES256.Alg() {
		return jwksKey{}, fmt.Errorf("alg %q is not RS256 or ES256", alg)
	}
	j, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
	if err != nil {
		return jwksKey{}, err
	}
	key := j.Key()
	if p, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		key = p.Public()
	}
	if err := checkPublicKey(key); err != nil {
		return jwksKey{}, err
	}
	return jwksKey{key: key, alg: alg}, nil
}
