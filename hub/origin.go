package hub

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// originPolicy decides which browser origins may open a session.
//
// A request without an Origin header is not from a browser page (a
// mini-program, a server, a CLI) and is always allowed: Origin checks exist
// to stop other web pages from using a visitor's browser, and such clients
// cannot be told apart by a header they choose themselves.
//
// With no patterns, only same-origin pages may connect (the Origin's host
// equals the request's Host). Patterns are "*" (any origin), an exact origin
// such as "https://app.example.com" or "app.example.com:8443" (without a
// scheme, any scheme matches), or a wildcard host such as
// "https://*.example.com", which matches subdomains of example.com but not
// example.com itself.
type originPolicy struct {
	any      bool
	patterns []originPattern
}

type originPattern struct {
	scheme string // empty: any
	host   string // lower case, with port if given; "*.x" matches subdomains of x
}

func newOriginPolicy(patterns []string) (originPolicy, error) {
	var p originPolicy
	for _, raw := range patterns {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if raw == "*" {
			p.any = true
			continue
		}
		var pat originPattern
		host := raw
		if scheme, rest, ok := strings.Cut(raw, "://"); ok {
			pat.scheme, host = strings.ToLower(scheme), rest
		}
		host = strings.ToLower(strings.TrimSuffix(host, "/"))
		if host == "" || strings.ContainsAny(host, "/?#@ ") || strings.Contains(strings.TrimPrefix(host, "*."), "*") {
			return originPolicy{}, fmt.Errorf("%q is not *, an origin like https://app.example.com, or a pattern like https://*.example.com", raw)
		}
		pat.host = host
		p.patterns = append(p.patterns, pat)
	}
	return p, nil
}

// allow reports whether r may be upgraded.
func (p originPolicy) allow(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || p.any {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // includes the opaque origin "null"
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if len(p.patterns) == 0 {
		return host == strings.ToLower(r.Host)
	}
	for _, pat := range p.patterns {
		if pat.scheme != "" && pat.scheme != scheme {
			continue
		}
		if suffix, ok := strings.CutPrefix(pat.host, "*"); ok {
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
			continue
		}
		if host == pat.host {
			return true
		}
	}
	return false
}
