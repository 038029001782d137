package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/notify-worker/notify-worker/subjects"
)

var benchBody = []byte(`{"name":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o","data":{"title":"order shipped","order":1234,"items":["a","b","c"]}}`)

// BenchmarkPublishCheck is the work of a publish before NATS: decoding
// the body and checking it.
func BenchmarkPublishCheck(b *testing.B) {
	scheme, _ := subjects.New("notify")
	s := &Server{cfg: Config{Scheme: scheme, MaxTimeout: DefaultMaxTimeout}}
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/publish", bytes.NewReader(benchBody))
		var req PublishRequest
		if err := decodeBody(r, &req); err != nil {
			b.Fatal(err)
		}
		if _, err := s.check(&req, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServePublish is a whole core publish through the handler: the
// key, the limits, the body, a publish and a flush to a real NATS server.
func BenchmarkServePublish(b *testing.B) {
	f := newFixture(b, func(c *Config) { c.Rate, c.Burst = 1e9, 1<<30 })
	h := f.srv.Config.Handler
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, Prefix+"publish", bytes.NewReader(benchBody))
		r.Header.Set("Authorization", "Bearer "+testKey)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
}
