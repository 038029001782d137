package hub

import (
	"net/http"
	"testing"
)

func TestOriginPolicy(t *testing.T) {
	tests := []struct {
		patterns []string
		host     string
		origin   string
		want     bool
	}{
		{nil, "ws.example.com", "", true},
		{nil, "ws.example.com", "https://ws.example.com", true},
		{nil, "ws.example.com", "https://WS.example.com", true},
		{nil, "ws.example.com", "https://evil.example", false},
		{nil, "ws.example.com", "null", false},
		{[]string{"*"}, "ws.example.com", "https://anything.example", true},
		{[]string{"https://app.example.com"}, "ws", "https://app.example.com", true},
		{[]string{"https://app.example.com"}, "ws", "http://app.example.com", false},
		{[]string{"https://app.example.com"}, "ws", "https://app.example.com:8443", false},
		{[]string{"app.example.com"}, "ws", "http://app.example.com", true},
		{[]string{"https://*.example.com"}, "ws", "https://a.b.example.com", true},
		{[]string{"https://*.example.com"}, "ws", "https://example.com", false},
		{[]string{"https://*.example.com"}, "ws", "https://evilexample.com", false},
		{[]string{"https://*.example.com"}, "ws", "https://example.com.evil.example", false},
		{[]string{"*.example.com"}, "ws", "http://x.example.com", true},
		{[]string{"https://app.example.com"}, "ws", "", true},
		{[]string{"https://app.example.com"}, "ws", "null", false},
		{[]string{"https://app.example.com", " https://other.example "}, "ws", "https://other.example", true},
	}
	for _, tt := range tests {
		p, err := newOriginPolicy(tt.patterns)
		if err != nil {
			t.Fatalf("%v: %v", tt.patterns, err)
		}
		r := &http.Request{Host: tt.host, Header: http.Header{}}
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		if got := p.allow(r); got != tt.want {
			t.Errorf("patterns %q, host %q, origin %q: allow = %v, want %v", tt.patterns, tt.host, tt.origin, got, tt.want)
		}
	}
	for _, bad := range []string{"https://", "https://a/b", "https://a.*.com", "a b"} {
		if _, err := newOriginPolicy([]string{bad}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}
