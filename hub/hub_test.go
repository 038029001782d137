package hub

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/notify-worker/notify-worker/feed"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

// fakeRouter records the hub's calls. A narrow fake: the real Router is
// tested against a real NATS server in package worker and end to end.
type fakeRouter struct {
	mu       sync.Mutex
	joins    map[string]int // joins less leaves, by name
	left     map[string]int // leaves, by name
	changed  chan struct{}  // closed and replaced at every Leave
	joinErr  error
	upErr    error
	upstream []string
}

func newFakeRouter() *fakeRouter {
	return &fakeRouter{joins: map[string]int{}, left: map[string]int{}, changed: make(chan struct{})}
}

func (r *fakeRouter) Join(_ context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.joinErr != nil {
		return r.joinErr
	}
	r.joins[name]++
	return nil
}

func (r *fakeRouter) Leave(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.joins[name]--
	r.left[name]++
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitLeft waits until name has left n times in all, that is until n
// identified sessions of name have ended.
func (r *fakeRouter) waitLeft(t *testing.T, name string, n int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		r.mu.Lock()
		left, changed := r.left[name], r.changed
		r.mu.Unlock()
		if left >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s left %d times, want %d", name, left, n)
		}
	}
}

func (r *fakeRouter) Upstream(name string, msg []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.upErr != nil {
		return r.upErr
	}
	r.upstream = append(r.upstream, name+":"+string(msg))
	return nil
}

func testConfig() Config {
	return Config{
		IdentifyMaxBytes:   1024,
		MessageMaxBytes:    4096,
		JoinTimeout:        time.Second,
		QueueSize:          16,
		WriteTimeout:       time.Second,
		PingPeriod:         time.Second,
		PongTimeout:        2 * time.Second,
		IdentifyTimeout:    5 * time.Second,
		HandshakeTimeout:   5 * time.Second,
		MaxConnections:     100,
		MaxSessionsPerName: 4,
		UpstreamRate:       100,
		UpstreamBurst:      100,
		AppPing:            time.Minute,
	}
}

// startHub serves a Hub with testConfig on a loopback port and returns it
// with its ws:// URL. It is closed when the test ends.
func startHub(t *testing.T, r Router) (*Hub, string) {
	t.Helper()
	h, url, _ := startHubWith(t, testConfig(), r, discardLogger())
	return h, url
}

// startHubWith is startHub with a given config and logger; it also returns
// the registry the hub's metrics are in.
func startHubWith(t *testing.T, cfg Config, r Router, log *slog.Logger) (*Hub, string, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := New(cfg, r, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("close hub: %v", err)
		}
		srv.Close()
	})
	return h, "ws" + strings.TrimPrefix(srv.URL, "http"), reg
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// core is a core (ephemeral) message with payload.
func core(payload string) feed.Message { return feed.Message{Payload: []byte(payload)} }

// durable is a durable message: seq, after prev on its subject.
func durable(payload string, seq, prev uint64) feed.Message {
	return feed.Message{Payload: []byte(payload), Seq: seq, Prev: prev}
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	return c
}

func readFrame(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(msg)
}

// closeCode reads past every frame to the close frame and returns its code.
func closeCode(t *testing.T, c *websocket.Conn) int {
	t.Helper()
	return closeFrame(t, c).Code
}

// closeFrame reads past every frame to the close frame.
func closeFrame(t *testing.T, c *websocket.Conn) *websocket.CloseError {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("no close frame: %v", err)
			}
			return ce
		}
	}
}

func join(t *testing.T, url, name string) *websocket.Conn {
	t.Helper()
	c := dial(t, url)
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"name":"`+name+`"}`)); err != nil {
		t.Fatal(err)
	}
	if got := readFrame(t, c); got != `{"type":"welcome","name":"`+name+`"}` {
		t.Fatalf("welcome = %s", got)
	}
	return c
}

// stalledConfig is testConfig for a test with a client that stops
// reading (joinStalled): pings cannot end its session, and its write
// timeout leaves ample time to fill its queue on a busy machine.
func stalledConfig() Config {
	cfg := testConfig()
	cfg.QueueSize = 32
	cfg.WriteTimeout = 2 * time.Second
	cfg.PingPeriod, cfg.PongTimeout = 30*time.Second, time.Minute
	return cfg
}

// joinStalled joins name from a client that reads nothing past its welcome
// and whose socket receive buffer is small and fixed, so that the hub's
// writes to it soon block: a client that has stopped reading.
func joinStalled(t *testing.T, url, name string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: smallReceiveBuffer}).DialContext}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"name":"`+name+`"}`)); err != nil {
		t.Fatal(err)
	}
	if got := readFrame(t, c); got != `{"type":"welcome","name":"`+name+`"}` {
		t.Fatalf("welcome = %s", got)
	}
	return c
}

// smallReceiveBuffer fixes a socket's receive buffer at a few KiB, which
// also turns off the kernel's growing it.
func smallReceiveBuffer(_, _ string, c syscall.RawConn) error {
	var setErr error
	err := c.Control(func(fd uintptr) {
		setErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	return errors.Join(err, setErr)
}

func TestDeliverAndLeave(t *testing.T) {
	r := newFakeRouter()
	h, url := startHub(t, r)
	a1 := join(t, url, "a")
	a2 := join(t, url, "a")
	b := join(t, url, "b")

	if n := h.DeliverUser("a", core("to-a")); n != 2 {
		t.Fatalf("DeliverUser(a) = %d, want 2", n)
	}
	if n := h.DeliverUser("nobody", core("x")); n != 0 {
		t.Fatalf("DeliverUser(nobody) = %d, want 0", n)
	}
	if n := h.DeliverAll(core("to-all")); n != 3 {
		t.Fatalf("DeliverAll = %d, want 3", n)
	}
	for _, c := range []*websocket.Conn{a1, a2} {
		if got := readFrame(t, c); got != "to-a" {
			t.Fatalf("got %q", got)
		}
	}
	for _, c := range []*websocket.Conn{a1, a2, b} {
		if got := readFrame(t, c); got != "to-all" {
			t.Fatalf("got %q", got)
		}
	}

	// Every Join is matched by one Leave when the session ends.
	a1.Close()
	r.waitLeft(t, "a", 1)
	if n := h.DeliverUser("a", core("x")); n != 1 {
		t.Fatalf("after one leave DeliverUser(a) = %d, want 1", n)
	}
	a2.Close()
	b.Close()
	r.waitLeft(t, "a", 2)
	r.waitLeft(t, "b", 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, n := range r.joins {
		if n != 0 {
			t.Errorf("%s: %d joins without a leave", name, n)
		}
	}
}

func TestJoinFailure(t *testing.T) {
	r := newFakeRouter()
	r.joinErr = errors.New("nats down")
	_, url := startHub(t, r)
	c := dial(t, url)
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"name":"a"}`)); err != nil {
		t.Fatal(err)
	}
	if got := readFrame(t, c); !strings.Contains(got, `"type":"error"`) {
		t.Fatalf("got %s, want an error frame", got)
	}
	if code := closeCode(t, c); code != closeTryAgainLater {
		t.Fatalf("close %d, want %d", code, closeTryAgainLater)
	}
}

func TestUpstreamFailureKeepsSession(t *testing.T) {
	r := newFakeRouter()
	h, url := startHub(t, r)
	c := join(t, url, "a")
	if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		r.mu.Lock()
		if len(r.upstream) == 1 {
			r.upErr = errors.New("nats down")
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("first message never forwarded")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("lost")); err != nil {
		t.Fatal(err)
	}
	if got := readFrame(t, c); !strings.Contains(got, "not forwarded") {
		t.Fatalf("got %s, want an error frame", got)
	}
	// Still open and still receiving.
	h.DeliverUser("a", core("still here"))
	if got := readFrame(t, c); got != "still here" {
		t.Fatalf("got %q", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.upstream) != 1 || r.upstream[0] != "a:hello" {
		t.Fatalf("upstream = %q", r.upstream)
	}
}

func TestCloseSendsGoingAway(t *testing.T) {
	r := newFakeRouter()
	h, url := startHub(t, r)
	named := join(t, url, "a")
	anon := dial(t, url)
	h.DeliverUser("a", core("queued before close"))

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The message queued before Close is delivered before the close frame.
	if got := readFrame(t, named); got != "queued before close" {
		t.Fatalf("got %q", got)
	}
	for _, c := range []*websocket.Conn{named, anon} {
		if code := closeCode(t, c); code != closeGoingAway {
			t.Fatalf("close %d, want 1001", code)
		}
	}
	// New connections are turned away.
	_, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after close: %v, %v; want 503", err, resp)
	}
	resp.Body.Close()
}

func TestNotAnUpgrade(t *testing.T) {
	_, url := startHub(t, newFakeRouter())
	resp, err := http.Get("http" + strings.TrimPrefix(url, "ws"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("status %d, want 426", resp.StatusCode)
	}
}

// Validate names the field it cannot use, so that main can name its own
// setting; New refuses the same configurations.
func TestConfigValidation(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("testConfig: %v", err)
	}
	tests := []struct {
		field string
		bad   func(*Config)
	}{
		{"IdentifyMaxBytes", func(c *Config) { c.IdentifyMaxBytes = 0 }},
		{"MessageMaxBytes", func(c *Config) { c.MessageMaxBytes = -1 }},
		{"IdentifyTimeout", func(c *Config) { c.IdentifyTimeout = 0 }},
		{"JoinTimeout", func(c *Config) { c.JoinTimeout = 0 }},
		{"QueueSize", func(c *Config) { c.QueueSize = 0 }},
		{"WriteTimeout", func(c *Config) { c.WriteTimeout = 0 }},
		{"PingPeriod", func(c *Config) { c.PingPeriod = 0 }},
		{"PingPeriod", func(c *Config) { c.PingPeriod = c.PongTimeout }},
		{"PongTimeout", func(c *Config) { c.PongTimeout = 0 }},
		{"HandshakeTimeout", func(c *Config) { c.HandshakeTimeout = 0 }},
		{"MaxConnections", func(c *Config) { c.MaxConnections = 0 }},
		{"MaxSessionsPerName", func(c *Config) { c.MaxSessionsPerName = 0 }},
		{"UpstreamRate", func(c *Config) { c.UpstreamRate = 0 }},
		{"UpstreamBurst", func(c *Config) { c.UpstreamBurst = 0 }},
		{"AppPing", func(c *Config) { c.AppPing = 0 }},
		{"AppPing", func(c *Config) { c.AppPing = -time.Second }},
		{"AllowedOrigins", func(c *Config) { c.AllowedOrigins = []string{"https://a/b"} }},
	}
	for _, tt := range tests {
		cfg := testConfig()
		tt.bad(&cfg)
		err := cfg.Validate()
		var field interface{ ConfigField() string }
		if !errors.As(err, &field) || field.ConfigField() != tt.field {
			t.Errorf("Validate() = %v, want an error naming %s", err, tt.field)
			continue
		}
		if strings.Contains(err.Error(), "NOTIFY_") {
			t.Errorf("Validate() = %v names a setting", err)
		}
		_, err = New(cfg, newFakeRouter(), discardLogger(), prometheus.NewRegistry())
		if !errors.As(err, &field) || field.ConfigField() != tt.field {
			t.Errorf("New: %v, want an error naming %s", err, tt.field)
		}
	}
}

// Refusals before the upgrade say what is wrong in the hub's own terms:
// naming a setting is main's business.
func TestRefusalBodies(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 1
	cfg.AllowedOrigins = []string{"https://app.example"}
	_, url, _ := startHubWith(t, cfg, newFakeRouter(), discardLogger())

	refusal := func(origin string) (*http.Response, string) {
		t.Helper()
		header := http.Header{}
		if origin != "" {
			header.Set("Origin", origin)
		}
		c, resp, err := websocket.DefaultDialer.Dial(url, header)
		if err == nil {
			c.Close()
			t.Fatal("dial succeeded, want a refusal")
		}
		if resp == nil {
			t.Fatalf("dial: %v, want an HTTP refusal", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "NOTIFY_") {
			t.Errorf("refusal %q names a setting", body)
		}
		return resp, strings.TrimSpace(string(body))
	}

	if resp, body := refusal("https://evil.example"); resp.StatusCode != http.StatusForbidden || body != "origin not allowed" {
		t.Errorf("cross-origin: %d %q, want 403 %q", resp.StatusCode, body, "origin not allowed")
	}
	dial(t, url) // the one connection allowed
	resp, body := refusal("")
	if want := "connection limit reached (1 connections); try another worker"; resp.StatusCode != http.StatusServiceUnavailable || body != want {
		t.Errorf("past the cap: %d %q, want 503 %q", resp.StatusCode, body, want)
	}
	if got := resp.Header.Get("Retry-After"); got != "5" {
		t.Errorf("past the cap: Retry-After %q, want 5", got)
	}
}

// fakeResumer answers resumes and snapshots with functions a test sets,
// and records the calls. A narrow fake: the real Resumer is tested against
// JetStream in package worker and end to end.
type fakeResumer struct {
	mu       sync.Mutex
	resume   func(ctx context.Context, name string, since *uint64) (feed.Replay, error)
	snapshot func(names []string) (feed.Snapshot, error)
	resumes  []resumeCall
	snaps    int
	asked    [][]string    // the names of each snapshot
	changed  chan struct{} // closed and replaced at every call
}

type resumeCall struct {
	name  string
	since *uint64
}

// newFakeResumer answers every resume with replay.
func newFakeResumer(replay feed.Replay) *fakeResumer {
	return &fakeResumer{
		resume: func(context.Context, string, *uint64) (feed.Replay, error) { return replay, nil },
		snapshot: func([]string) (feed.Snapshot, error) {
			return feed.Snapshot{}, errors.New("no snapshot in this test")
		},
		changed: make(chan struct{}),
	}
}

func (r *fakeResumer) Resume(ctx context.Context, name string, since *uint64) (feed.Replay, error) {
	r.mu.Lock()
	r.resumes = append(r.resumes, resumeCall{name, since})
	resume := r.resume
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	return resume(ctx, name, since)
}

func (r *fakeResumer) Snapshot(_ context.Context, names []string) (feed.Snapshot, error) {
	r.mu.Lock()
	r.snaps++
	r.asked = append(r.asked, slices.Clone(names))
	snapshot := r.snapshot
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	return snapshot(names)
}

func (r *fakeResumer) setSnapshot(f func([]string) (feed.Snapshot, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snapshot = f
}

// waitCalls waits until the fake has had n resumes and snaps snapshots.
func (r *fakeResumer) waitCalls(t *testing.T, resumes, snaps int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		r.mu.Lock()
		gotR, gotS, changed := len(r.resumes), r.snaps, r.changed
		r.mu.Unlock()
		if gotR >= resumes && gotS >= snaps {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%d resumes and %d snapshots, want %d and %d", gotR, gotS, resumes, snaps)
		}
	}
}

// gatedResume returns a resume function that answers replay once gate is
// closed, or fails when its context ends first.
func gatedResume(gate <-chan struct{}, replay feed.Replay) func(context.Context, string, *uint64) (feed.Replay, error) {
	return func(ctx context.Context, _ string, _ *uint64) (feed.Replay, error) {
		select {
		case <-gate:
			return replay, nil
		case <-ctx.Done():
			return feed.Replay{}, ctx.Err()
		}
	}
}

// v2Config is testConfig with r as the Resumer.
func v2Config(r Resumer) Config {
	cfg := testConfig()
	cfg.Resumer = r
	return cfg
}

// frame is any frame the hub sends, decoded strictly: a key the protocol
// does not have fails the test.
type frame struct {
	Type      string          `json:"type"`
	Name      string          `json:"name"`
	V         int             `json:"v"`
	Seq       *uint64         `json:"seq"`
	Recovered *bool           `json:"recovered"`
	Replayed  *int            `json:"replayed"`
	Ping      *int64          `json:"ping"`
	UpRate    *float64        `json:"upstream_rate"`
	UpBurst   *int            `json:"upstream_burst"`
	Reason    *string         `json:"reason"`
	Data      json.RawMessage `json:"data"`
	DataB64   *string         `json:"data_b64"`
	Error     string          `json:"error"`
}

func decodeFrame(t *testing.T, b []byte) frame {
	t.Helper()
	var f frame
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil || dec.More() {
		t.Fatalf("frame %s: not valid JSON of the protocol: %v", b, err)
	}
	return f
}

// readV2 reads and decodes the next frame.
func readV2(t *testing.T, c *websocket.Conn) frame {
	t.Helper()
	return decodeFrame(t, []byte(readFrame(t, c)))
}

// readMsg reads the next frame, which must be an envelope, and returns
// its seq (0 for a core message) and payload.
func readMsg(t *testing.T, c *websocket.Conn) (uint64, string) {
	t.Helper()
	f := readV2(t, c)
	if f.Type != "msg" {
		t.Fatalf("got a %q frame, want a msg", f.Type)
	}
	var seq uint64
	if f.Seq != nil {
		seq = *f.Seq
	}
	if f.DataB64 != nil {
		b, err := base64.StdEncoding.DecodeString(*f.DataB64)
		if err != nil {
			t.Fatalf("data_b64: %v", err)
		}
		return seq, string(b)
	}
	return seq, string(f.Data)
}

// joinV2 connects, sends first and returns the connection with its
// welcome, which must be a v2 welcome.
func joinV2(t *testing.T, url, first string) (*websocket.Conn, frame) {
	t.Helper()
	c := dial(t, url)
	send(t, c, first)
	w := readV2(t, c)
	if w.Type != "welcome" || w.V != 2 || w.Seq == nil || w.Recovered == nil || w.Replayed == nil || w.Ping == nil {
		t.Fatalf("welcome = %+v, want a v2 welcome", w)
	}
	return c, w
}

// v2Of returns the v2 state of name's only session, or nil while it has
// none (not registered yet, or not v2).
func v2Of(h *Hub, name string) *v2Session {
	sh := h.index.shard(name)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	list := sh.names[name]
	if len(list) != 1 {
		return nil
	}
	return list[0].st.v2.Load()
}

// waitFor polls cond until it holds, failing t after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval
	}
}
