package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

func TestCentrifugoFrames(t *testing.T) {
	user := appendPayload(nil, 'u', 3, 1795820000123456789, 100)
	all := appendPayload(nil, 'a', 2, 1795820000123456789, 100)
	pub := func(ch string, data []byte) string {
		return `{"push":{"channel":"` + ch + `","pub":{"data":` + string(data) + `}}}`
	}
	type msg struct {
		kind cfKind
		data string
	}
	for _, tc := range []struct {
		name  string
		frame string
		want  []msg
	}{
		{"one publication", pub("user.u1", user), []msg{{cfPublication, string(user)}}},
		{"several in one frame", pub("user.u1", user) + "\n" + pub("all", all) + "\n{}",
			[]msg{{cfPublication, string(user)}, {cfPublication, string(all)}, {cfPing, ""}}},
		{"ping", "{}", []msg{{cfPing, ""}}},
		{"empty lines and a trailing newline", "{}\n\n" + pub("all", all) + "\n",
			[]msg{{cfPing, ""}, {cfPublication, string(all)}}},
		{"reply", `{"id":1,"connect":{"client":"c","version":"6.9.1","subs":{"user.u1":{}},"ping":25,"pong":true}}`, []msg{{cfReply, ""}}},
		{"error reply", `{"id":2,"error":{"code":103,"message":"permission denied"}}`, []msg{{cfReply, ""}}},
		{"publication with an offset and tags", `{"push":{"channel":"all","pub":{"data":{"a":"}\"{"},"offset":3,"tags":{"x":"y"}}}}`,
			[]msg{{cfPublication, `{"a":"}\"{"}`}}},
		{"other push", `{"push":{"channel":"all","unsubscribe":{"code":2500}}}`, []msg{{cfOtherPush, ""}}},
		{"malformed", "hello\n{\"push\":{\"channel\":\"all\",\"pub\":{\"data\":{\"k\":\"u\"}\n[1]",
			[]msg{{cfMalformed, ""}, {cfMalformed, ""}, {cfMalformed, ""}}},
		{"publication cut short", `{"push":{"channel":"all","pub":{"data":{"k":"u","s":1}`, []msg{{cfMalformed, ""}}},
		{"data not an object", `{"push":{"channel":"all","pub":{"data":"text"}}}`, []msg{{cfMalformed, ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []msg
			for m, rest := nextCFMessage([]byte(tc.frame)); m != nil; m, rest = nextCFMessage(rest) {
				kind, data := classifyCF(m)
				got = append(got, msg{kind, string(data)})
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("frame %q: got %v, want %v", tc.frame, got, tc.want)
			}
		})
	}
}

// The steady state of a Centrifugo reader allocates nothing: splitting
// a frame, classifying its messages and counting their payloads.
func TestCentrifugoReadAllocations(t *testing.T) {
	st := &clientStats{bcast: make([]atomic.Int64, 3), centrifugo: true}
	frame := []byte(`{"push":{"channel":"user.u1","pub":{"data":` + string(appendPayload(nil, 'u', 1, time.Now().UnixNano(), 100)) + `}}}` + "\n{}")
	var last int64
	now := time.Now()
	allocs := testing.AllocsPerRun(1000, func() {
		for m, rest := nextCFMessage(frame); m != nil; m, rest = nextCFMessage(rest) {
			if kind, data := classifyCF(m); kind == cfPublication {
				last = 0
				st.account(data, now, &last)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per frame, want 0", allocs)
	}
}

func TestCentrifugoConnectToken(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1795820000, 0)
	s, err := cfConnectToken(secret, "u42", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Channels []string `json:"channels"`
		jwt.RegisteredClaims
	}
	tok, err := jwt.ParseWithClaims(s, &claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil || !tok.Valid {
		t.Fatalf("parse %s: %v", s, err)
	}
	if claims.Subject != "u42" {
		t.Errorf("sub = %q, want u42", claims.Subject)
	}
	if want := []string{"user.u42", "all"}; !slices.Equal(claims.Channels, want) {
		t.Errorf("channels = %v, want %v", claims.Channels, want)
	}
	if claims.ExpiresAt == nil || !claims.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("exp = %v, want %v", claims.ExpiresAt, now.Add(time.Hour))
	}
	if _, err := jwt.Parse(s, func(*jwt.Token) (any, error) { return []byte("another secret"), nil }); err == nil {
		t.Error("a token verified with another secret")
	}
}

// The configuration uses the v6 key names the comparison depends on;
// with a Centrifugo binary at hand ($CENTRIFUGO), its strict checkconfig
// accepts the file too.
func TestCentrifugoConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    cfSettings
	}{
		{"memory broker", cfSettings{Port: 18000, Secret: "s", APIKey: "k"}},
		{"nats raw mode", cfSettings{Port: 18001, Secret: "s", APIKey: "k", NATSURL: "nats://127.0.0.1:14222"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, err := writeCFConfig(t.TempDir(), tc.s)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var c map[string]any
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatalf("config is not JSON: %v\n%s", err, b)
			}
			want := map[string]any{
				"http_server.address":          "127.0.0.1",
				"http_server.port":             float64(tc.s.Port),
				"log.level":                    "error",
				"client.token.hmac_secret_key": tc.s.Secret,
				"http_api.key":                 tc.s.APIKey,
				"health.enabled":               true,
				"usage_stats.disabled":         true,
				"broker.enabled":               nil,
				"broker.nats.raw_mode.prefix":  nil,
				"broker.nats.raw_mode.enabled": nil,
				"broker.nats.url":              nil,
				"broker.type":                  nil,
			}
			if tc.s.NATSURL != "" {
				want["broker.enabled"], want["broker.type"], want["broker.nats.url"] = true, "nats", tc.s.NATSURL
				want["broker.nats.raw_mode.enabled"], want["broker.nats.raw_mode.prefix"] = true, "notify."
			}
			for key, v := range want {
				if got := lookupPath(c, key); got != v {
					t.Errorf("%s = %v, want %v", key, got, v)
				}
			}
			bin := os.Getenv("CENTRIFUGO")
			if bin == "" {
				t.Log("CENTRIFUGO not set: checkconfig not run")
				return
			}
			out, err := exec.Command(bin, "checkconfig", "--strict", "-c", path).CombinedOutput()
			if err != nil {
				t.Errorf("centrifugo checkconfig --strict: %v\n%s", err, out)
			}
		})
	}
}

func lookupPath(m map[string]any, path string) any {
	var v any = m
	for key := range strings.SplitSeq(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[key]
	}
	return v
}

func TestPublishCommands(t *testing.T) {
	payload := appendPayload(nil, 'u', 1, 2, 80)
	b := append([]byte(`{"commands":[`), appendPublishCommand(nil, "user.u1", payload)...)
	b = append(append(b, ','), appendPublishCommand(nil, "user.u2", payload)...)
	b = append(b, "]}"...)
	var req struct {
		Commands []struct {
			Publish struct {
				Channel string          `json:"channel"`
				Data    json.RawMessage `json:"data"`
			} `json:"publish"`
		} `json:"commands"`
	}
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatalf("batch %s: %v", b, err)
	}
	if len(req.Commands) != 2 || req.Commands[1].Publish.Channel != "user.u2" || !bytes.Equal(req.Commands[0].Publish.Data, payload) {
		t.Errorf("batch decoded as %+v", req)
	}
	for _, tc := range []struct {
		answer string
		want   int
	}{
		{`{"replies":[{"publish":{}},{"publish":{}}]}`, 0},
		{`{"replies":[{"publish":{}},{"error":{"code":102,"message":"unknown channel"}}]}`, 1},
		{`{"error":{"code":107,"message":"bad request"}}`, 1},
	} {
		if got := apiErrors([]byte(tc.answer)); got != tc.want {
			t.Errorf("apiErrors(%s) = %d, want %d", tc.answer, got, tc.want)
		}
	}
}

func TestCompareTable(t *testing.T) {
	for _, tc := range []struct {
		a, b float64
		want string
	}{
		{10, 4, "2.50"}, {1, 3, "0.33"}, {1, 0, "-"}, {math.NaN(), 1, "-"}, {inf, 1, "-"}, {0, 5, "0.00"},
	} {
		if got := ratioCell(tc.a, tc.b); got != tc.want {
			t.Errorf("ratioCell(%v, %v) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
	if got := formatNum(inf, 2); got != "∞" {
		t.Errorf("formatNum(inf) = %q", got)
	}
	if got := median([]float64{5, 1, 3, 2}); got != 2 {
		t.Errorf("median = %v, want 2 (the lower middle)", got)
	}
	if got := nearestRank([]float64{4, 1, 3, 2}, 0.99); got != 4 {
		t.Errorf("nearestRank p99 = %v, want 4", got)
	}
	if p50, p99 := lastSessionQuantiles(map[int64]int64{1: 1000, 2: 3000}, 3); p50 != 3 || !math.IsInf(p99, 1) {
		t.Errorf("lastSessionQuantiles with a broadcast missing = %v %v, want 3 and +Inf", p50, p99)
	}
	v, err := parseFloorLine("floor: 200000 writes of 100 B over 10000 loopback connections: 3.41 µs CPU and 3.90 µs wall per write (load average 0.5 0.4 0.3)\n")
	if err != nil || v != 3.41 {
		t.Errorf("parseFloorLine = %v %v, want 3.41", v, err)
	}
	if _, err := parseFloorLine("nothing"); err == nil {
		t.Error("parseFloorLine accepted a line without a figure")
	}

	sc := scenario{key: "targeted-5000", group: "targeted", title: "targeted 5000/s"}
	results := []runResult{
		{Scenario: sc.key, Server: serverNotify, ServerCPUUS: 30, P50MS: 1, P99MS: 4, LagP50MS: 0.1, LagMaxMS: 2},
		{Scenario: sc.key, Server: serverNotify, ServerCPUUS: 36, P50MS: 1, P99MS: 6, LagP50MS: 0.1, LagMaxMS: 2},
		{Scenario: sc.key, Server: serverNotify, ServerCPUUS: 90, P50MS: 1, P99MS: 9, LagP50MS: 0.1, LagMaxMS: 2},
		{Scenario: sc.key, Server: serverCentrifugo, ServerCPUUS: 20, P50MS: 2, P99MS: 8, LagP50MS: 4, LagMaxMS: 10},
		{Scenario: "other", Server: serverCentrifugo, ServerCPUUS: 1000},
	}
	var out bytes.Buffer
	writeTable(&out, buildRows([]scenario{sc}, results), 3, "Centrifugo")
	for _, want := range []string{
		"| floor | CPU per loopback write (µs) | 3.00 | 3.00 | - | 1 | 1 |",
		"| targeted 5000/s | server CPU per delivery (µs) | 36.00 | 20.00 | 1.80 | 12.00 | 6.67 |",
		"| targeted 5000/s | latency p99 (ms) | 6.000 | 8.000 | 0.75 | - | - |",
		"| targeted 5000/s | lost | 0 | 0 | - | - | - |",
		"| targeted 5000/s | publisher lag p50 / max (ms) | 0.100 / 2.000 | 4.000 / 10.000 | - | - | - |",
	} {
		if !strings.Contains(out.String(), want+"\n") {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// A Centrifugo client connects with its token, reads publications that
// share a frame, and answers the server's ping.
func TestCentrifugoClient(t *testing.T) {
	secret := []byte("test-secret")
	pong := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_, cmd, err := c.ReadMessage()
		if err != nil || !bytes.HasPrefix(cmd, []byte(`{"id":1,"connect":{"token":"`)) {
			t.Errorf("connect command %q: %v", cmd, err)
			return
		}
		now := time.Now().UnixNano()
		frames := []string{
			`{"id":1,"connect":{"client":"c1","subs":{"user.u7":{},"all":{}},"ping":25,"pong":true}}`,
			`{"push":{"channel":"user.u7","pub":{"data":` + string(appendPayload(nil, 'u', 1, now, 100)) + `}}}` + "\n" +
				`{"push":{"channel":"all","pub":{"data":` + string(appendPayload(nil, 'a', 1, now, 100)) + `}}}` + "\n" +
				`{"push":{"channel":"user.u7","pub":{"data":` + string(appendPayload(nil, 'u', 2, now, 100)) + `}}}`,
			`{}`,
		}
		for _, f := range frames {
			if err := c.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
				t.Errorf("write: %v", err)
				return
			}
		}
		_, answer, err := c.ReadMessage()
		if err != nil {
			t.Errorf("read pong: %v", err)
			return
		}
		pong <- string(answer)
		_, _, _ = c.ReadMessage() // until the client closes
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialCentrifugo(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), 7, 1, secret)
	if err != nil {
		t.Fatal(err)
	}
	st := &clientStats{bcast: make([]atomic.Int64, 2), centrifugo: true}
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.readCentrifugo(c)
	}()
	select {
	case got := <-pong:
		if got != "{}" {
			t.Errorf("answer to the ping = %q, want {}", got)
		}
	case <-ctx.Done():
		t.Fatal("no answer to the ping")
	}
	c.Close()
	<-done
	r := st.result()
	if r.Received != 3 || r.Duplicates != 0 || r.Reordered != 0 || r.Malformed != 0 || r.Pings != 1 || r.Frames != 2 || r.Pushes != 3 {
		t.Errorf("stats %+v: want 3 received in 2 frames, 3 pushes, 1 ping", r)
	}
	if len(r.BcastMaxUS) != 1 {
		t.Errorf("broadcast receipts %v, want broadcast 1", r.BcastMaxUS)
	}
}

func TestCompareScenarios(t *testing.T) {
	f := compareFlags{conns: 2000, duration: 5 * time.Second, rates: "5000,20000", bcastRates: "2,10", bcastCount: 10,
		scaling: "500,1000", scaleRate: 5000, only: "targeted,broadcast,scaling"}
	scs, groups, err := compareScenarios(f)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, sc := range scs {
		keys = append(keys, sc.key)
	}
	want := []string{"targeted-5000", "targeted-20000", "broadcast-2", "broadcast-10", "scaling-500", "scaling-1000"}
	if !slices.Equal(keys, want) || groups["idle"] || !groups["scaling"] {
		t.Errorf("scenarios %v (groups %v), want %v", keys, groups, want)
	}
	if scs[3].interval != 100*time.Millisecond {
		t.Errorf("broadcast at 10/s: interval %v", scs[3].interval)
	}
	f.only = "targeted,bogus"
	if _, _, err := compareScenarios(f); err == nil {
		t.Error("-only accepted an unknown group")
	}
}
