package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/notify-worker/notify-worker/subjects"
)

// FuzzPublishRequest feeds hostile bodies and Idempotency-Key values to
// the publish body's decoding and checks: nothing panics, and what is
// accepted names one literal subject of the scheme and an ID the stream
// can take.
func FuzzPublishRequest(f *testing.F) {
	for _, seed := range []string{
		`{"name":"alice","data":{"title":"hi"}}`,
		`{"all":true,"data_b64":"AP8=","durable":true,"id":"x-1"}`,
		`{"name":"alice","data":1,"receipt":true,"timeout_ms":500}`,
		`{"name":"a.*","data":1}`, `{"name":"\u002a","data":1}`, `{"name":null,"data":1}`,
		`{"name":"alice","data":1}{}`, `[]`, `null`, ``, `{"name":"alice","data":1,"id":"a\nb","durable":true}`,
	} {
		f.Add([]byte(seed), "")
	}
	f.Add([]byte(`{"name":"alice","data":1,"durable":true}`), "order-1")
	scheme, _ := subjects.New("notify")
	s := &Server{cfg: Config{Scheme: scheme, MaxTimeout: DefaultMaxTimeout, MaxBodyBytes: DefaultMaxBodyBytes}}
	f.Fuzz(func(t *testing.T, body []byte, idemKey string) {
		r := httptest.NewRequest(http.MethodPost, "/publish", bytes.NewReader(body))
		var req PublishRequest
		if err := decodeBody(r, &req); err != nil {
			return
		}
		p, err := s.check(&req, idemKey)
		if err != nil {
			return
		}
		if p.subject != scheme.All() {
			name, ok := scheme.UserName(p.subject)
			if !ok || subjects.ValidName(name) != nil {
				t.Fatalf("accepted subject %q", p.subject)
			}
		}
		if strings.ContainsAny(p.id, " \r\n\t\x00") || len(p.id) > maxIDLen {
			t.Fatalf("accepted id %q", p.id)
		}
	})
}
