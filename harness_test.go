package main

// The harness every test of this package shares: a whole worker run
// through run on random loopback ports, real NATS servers, real gorilla
// WebSocket clients, and readers for frames, close codes and /metrics.
// The tests themselves live in one file per section of docs/protocol.md,
// plus operations_test.go, metrics_test.go and config_test.go.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait in these tests; they wait on events, and
// this only turns a hang into a failure.
const waitTimeout = 10 * time.Second

// testConfig returns the defaults from Config's tags, with random loopback
// ports.
func testConfig(t *testing.T) Config {
	t.Helper()
	var cfg Config
	// No variable carries this prefix, so only the defaults apply.
	if err := envconfig.Process("NOTIFY_TEST_DEFAULTS_ONLY", &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Addr = "127.0.0.1:0"
	cfg.EmbeddedNATSAddr = "127.0.0.1:0"
	cfg.WorkerID = "test-worker"
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.DrainDelay = 0
	cfg.JetStreamDir = t.TempDir()
	return cfg
}

// limitsConfig is testConfig with every limit small and every timeout
// short, so that each one can be reached quickly.
func limitsConfig(t *testing.T) Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.IdentifyTimeout = 300 * time.Millisecond
	cfg.PingPeriod = 100 * time.Millisecond
	cfg.PongTimeout = 500 * time.Millisecond
	cfg.HandshakeTimeout = 300 * time.Millisecond
	cfg.MaxConnections = 12
	cfg.MaxSessionsPerName = 2
	cfg.UpstreamRate = 5
	cfg.UpstreamBurst = 5
	cfg.SessionQueue = 8
	cfg.MaxHeaderBytes = 4096
	return cfg
}

// testSecret signs the tokens of jwtConfig's workers.
const testSecret = "0123456789abcdef0123456789abcdef-test-secret"

// jwtConfig is limitsConfig with withJWT.
func jwtConfig(t *testing.T) Config {
	t.Helper()
	return withJWT(limitsConfig(t))
}

// withJWT returns cfg with NOTIFY_AUTH=jwt, testSecret, the audience and
// issuer token signs, and no leeway.
func withJWT(cfg Config) Config {
	cfg.Auth = "jwt"
	cfg.JWTSecret = testSecret
	cfg.JWTAudience = "notify"
	cfg.JWTIssuer = "https://auth.example"
	cfg.JWTLeeway = 0
	return cfg
}

// token signs, with testSecret, a token for sub that jwtConfig accepts;
// edit, if not nil, changes its claims first.
func token(t *testing.T, sub string, edit func(jwt.MapClaims)) string {
	t.Helper()
	claims := jwt.MapClaims{
		"sub": sub,
		"aud": "notify",
		"iss": "https://auth.example",
		"exp": time.Now().Add(time.Hour).Unix(),
	}
	if edit != nil {
		edit(claims)
	}
	return signed(t, jwt.SigningMethodHS256, claims, []byte(testSecret))
}

// signed signs claims with method and key.
func signed(t *testing.T, method jwt.SigningMethod, claims jwt.MapClaims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testWorker is a worker running through run, as main runs it.
type testWorker struct {
	addr string // HTTP and WebSocket, host:port
	// metricsAddr is NOTIFY_METRICS_ADDR's listener, "" when /metrics is
	// on addr.
	metricsAddr string
	natsURL     string // the NATS server the worker uses
	cancel      context.CancelFunc
	done        chan struct{} // closed when run has returned
	err         error         // what run returned; read after done
	waited      bool          // a test has taken run's result with wait
}

// startWorker runs the whole worker through run and stops it at cleanup,
// failing the test if run then returns an error that no test took with
// wait.
func startWorker(t *testing.T, cfg Config) *testWorker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan listening, 1)
	tw := &testWorker{cancel: cancel, done: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		tw.err = run(ctx, cfg, log, func(l listening) { started <- l })
		close(tw.done)
	}()
	select {
	case l := <-started:
		tw.addr, tw.natsURL, tw.metricsAddr = l.HTTPAddr, l.NATSURL, l.MetricsAddr
	case <-tw.done:
		cancel()
		t.Fatalf("run ended before serving: %v", tw.err)
	case <-time.After(waitTimeout):
		cancel()
		t.Fatal("worker did not start")
	}
	t.Cleanup(func() {
		if tw.waited {
			tw.cancel()
			return
		}
		if err := tw.stop(t); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return tw
}

// wait returns what run returned, once it has.
func (tw *testWorker) wait(t *testing.T) error {
	t.Helper()
	tw.waited = true
	select {
	case <-tw.done:
		return tw.err
	case <-time.After(waitTimeout):
		t.Fatal("run did not return")
		return nil
	}
}

// stop cancels run's context and returns what run returned.
func (tw *testWorker) stop(t *testing.T) error {
	t.Helper()
	tw.cancel()
	return tw.wait(t)
}

// url returns an http:// URL on the worker.
func (tw *testWorker) url(path string) string { return "http://" + tw.addr + path }

// startNATS runs a NATS server on a random loopback port, or on the port
// edit sets, until cleanup.
func startNATS(t *testing.T, edit func(*server.Options)) *server.Server {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = server.RANDOM_PORT
	if edit != nil {
		edit(&opts)
	}
	srv := natstest.RunServer(&opts)
	t.Cleanup(func() { stopNATS(srv) })
	return srv
}

// stopNATS shuts srv down and waits until it has.
func stopNATS(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}

// natsPort returns the client port srv listens on.
func natsPort(srv *server.Server) int { return srv.Addr().(*net.TCPAddr).Port }

func connectNATS(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// subscribe subscribes nc to subject and returns once the server has the
// interest.
func subscribe(t *testing.T, nc *nats.Conn, subject string) *nats.Subscription {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// next returns the next message of sub.
func next(t *testing.T, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(waitTimeout)
	if err != nil {
		t.Fatalf("%s: %v", sub.Subject, err)
	}
	return m
}

func publish(t *testing.T, nc *nats.Conn, subject, payload string) {
	t.Helper()
	if err := nc.Publish(subject, []byte(payload)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// reply is a worker's answer to a request.
type reply struct {
	Delivered int    `json:"delivered"`
	Worker    string `json:"worker"`
}

// request publishes payload to subject as a request and returns the first
// reply.
func request(t *testing.T, nc *nats.Conn, subject string, payload []byte) reply {
	t.Helper()
	msg, err := nc.Request(subject, payload, waitTimeout)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	var r reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		t.Fatalf("reply %q: %v", msg.Data, err)
	}
	return r
}

func dial(t *testing.T, addr, path string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+path, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	return c
}

// dialHeader attempts an upgrade with header and returns the response,
// whether or not the upgrade succeeded; a connection it makes is closed
// at cleanup.
func dialHeader(t *testing.T, addr, path string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+path, header)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	if resp != nil {
		t.Cleanup(func() { resp.Body.Close() })
	}
	return c, resp, err
}

// dialStalled connects with a receive buffer of a few kilobytes, so that a
// client that does not read stalls the worker's writes to it once the
// worker's send buffer is full, whatever the kernel's autotuning.
func dialStalled(t *testing.T, addr, path string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			}); err != nil {
				return err
			}
			return serr
		}}
		return nd.Dial(network, addr)
	}}
	c, resp, err := d.Dial("ws://"+addr+path, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	return c
}

// batchConn holds what is written to it while hold is set, so that
// several WebSocket frames leave in one write.
type batchConn struct {
	net.Conn
	hold bool
	held []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	if b.hold {
		b.held = append(b.held, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

// sendTogether sends msgs as text frames in one write to the socket, so
// that they all reach the worker before it has handled the first.
func sendTogether(t *testing.T, addr, path string, msgs ...string) *websocket.Conn {
	t.Helper()
	var bc *batchConn
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		conn, err := net.Dial(network, addr)
		bc = &batchConn{Conn: conn}
		return bc, err
	}}
	c, resp, err := d.Dial("ws://"+addr+path, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { c.Close() })
	bc.hold = true
	for _, msg := range msgs {
		send(t, c, msg)
	}
	bc.hold = false
	if _, err := bc.Write(bc.held); err != nil {
		t.Fatal(err)
	}
	return c
}

// sendBufferMax returns the largest send buffer the kernel's TCP
// autotuning gives a socket: what a worker can write to a stalled client
// before its writes block.
func sendBufferMax(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if err != nil {
		return 4 << 20 // Linux's default
	}
	fields := strings.Fields(string(b))
	n, err := strconv.Atoi(fields[len(fields)-1])
	if err != nil {
		t.Fatalf("tcp_wmem %q: %v", b, err)
	}
	return n
}

func send(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func sendBinary(t *testing.T, c *websocket.Conn, msg []byte) {
	t.Helper()
	if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// read returns the next data frame.
func read(t *testing.T, c *websocket.Conn) (int, []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	typ, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, msg
}

func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	typ, msg := read(t, c)
	if typ != websocket.TextMessage {
		t.Fatalf("got frame type %d (%q), want text", typ, msg)
	}
	return string(msg)
}

func expect(t *testing.T, c *websocket.Conn, want string) {
	t.Helper()
	if got := readText(t, c); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// readClose reads until the connection ends and returns the data frames
// before the end, and the close code and reason the server sent. A
// connection cut without a close frame reports 1006, as a browser does.
func readClose(t *testing.T, c *websocket.Conn) (frames []string, code int, reason string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return frames, ce.Code, ce.Text
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %v (frames %q)", waitTimeout, frames)
			}
			return frames, websocket.CloseAbnormalClosure, ""
		}
		frames = append(frames, string(msg))
	}
}

// errorReason returns the reason in an error frame.
func errorReason(t *testing.T, frame string) string {
	t.Helper()
	var f struct{ Type, Error string }
	if err := json.Unmarshal([]byte(frame), &f); err != nil || f.Type != "error" || f.Error == "" {
		t.Fatalf("not an error frame: %q (%v)", frame, err)
	}
	return f.Error
}

// expectRejected reads what a client turned away gets: one error frame
// whose reason contains reason, then a close frame with code and the same
// reason.
func expectRejected(t *testing.T, c *websocket.Conn, code int, reason string) {
	t.Helper()
	frames, gotCode, gotReason := readClose(t, c)
	if gotCode != code {
		t.Fatalf("close code %d, want %d (frames %q)", gotCode, code, frames)
	}
	if len(frames) != 1 || !strings.Contains(errorReason(t, frames[0]), reason) {
		t.Fatalf("frames %q, want one error frame containing %q", frames, reason)
	}
	if !strings.Contains(gotReason, reason) {
		t.Fatalf("close reason %q, want it to contain %q", gotReason, reason)
	}
}

// identify sends the seed client's first message and waits for the welcome.
func identify(t *testing.T, c *websocket.Conn, name string) {
	t.Helper()
	send(t, c, `{"name":"`+name+`"}`)
	expect(t, c, welcome(name))
}

// welcome is the frame a client identified as name receives first.
func welcome(name string) string { return `{"type":"welcome","name":"` + name + `"}` }

// client connects to tw's / and identifies as name.
func client(t *testing.T, tw *testWorker, name string) *websocket.Conn {
	t.Helper()
	return clientAt(t, tw, "/", name)
}

// clientAt connects to path on tw and identifies as name.
func clientAt(t *testing.T, tw *testWorker, path, name string) *websocket.Conn {
	t.Helper()
	c := dial(t, tw.addr, path)
	identify(t, c, name)
	return c
}

// liveClient reads its connection on a goroutine of its own, as a real
// client does, so that it answers pings while the test waits.
type liveClient struct {
	conn    *websocket.Conn
	frames  chan string // closed when the connection ends
	readErr error       // why it ended; read after frames is closed
}

// newLiveClient connects to addr, identifies as name and keeps reading.
func newLiveClient(t *testing.T, addr, name string) *liveClient {
	t.Helper()
	c := dial(t, addr, "/")
	identify(t, c, name)
	return live(t, c)
}

// live starts reading an identified connection in the background.
func live(t *testing.T, c *websocket.Conn) *liveClient {
	lc := &liveClient{conn: c, frames: make(chan string, 1024)}
	go func() {
		defer close(lc.frames)
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				lc.readErr = err
				return
			}
			lc.frames <- string(msg)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		for range lc.frames {
		}
	})
	return lc
}

func (lc *liveClient) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got, ok := <-lc.frames:
		if !ok {
			t.Fatalf("live connection ended: %v", lc.readErr)
		}
		if got != want {
			t.Fatalf("live client got %q, want %q", got, want)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("live client did not receive %q", want)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// status returns the HTTP status of GET url.
func status(t *testing.T, url string) int {
	t.Helper()
	code, _ := httpGet(t, url)
	return code
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// sampleLine is one sample of the Prometheus text format: the series as
// printed (name and labels) and its value.
var sampleLine = regexp.MustCompile(`(?m)^(notify_[a-z_]+(?:\{[^}]*\})?) (\S+)$`)

// scrape reads the worker's notify_* samples from /metrics, keyed by the
// series as printed, e.g. `notify_limit_closes_total{reason="slow_consumer"}`,
// and the name of every notify_* metric family of type counter.
func scrape(t *testing.T, addr string) (samples map[string]float64, counters map[string]bool) {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	samples = map[string]float64{}
	for _, m := range sampleLine.FindAllStringSubmatch(body, -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("%s: %v", m[1], err)
		}
		samples[m[1]] = v
	}
	counters = map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (notify_[a-z_]+) counter$`).FindAllStringSubmatch(body, -1) {
		counters[m[1]] = true
	}
	return samples, counters
}

// metric reads one sample from /metrics; series is the name with labels as
// printed, e.g. `notify_limit_closes_total{reason="slow_consumer"}`.
func metric(t *testing.T, addr, series string) float64 {
	t.Helper()
	samples, _ := scrape(t, addr)
	v, ok := samples[series]
	if !ok {
		t.Fatalf("no %s in /metrics", series)
	}
	return v
}

// signalSelf sends sig to this process; a worker running through run
// catches it.
func signalSelf(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(syscall.Getpid(), sig); err != nil {
		t.Fatal(err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "notify-worker test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// Protocol v2 (docs/protocol.md section 8).

// v2Frame is any frame a v2 client receives; the fields a frame type does
// not have stay zero.
type v2Frame struct {
	Type      string          `json:"type"`
	Name      string          `json:"name"`
	V         int             `json:"v"`
	Seq       *uint64         `json:"seq"`
	Recovered *bool           `json:"recovered"`
	Replayed  int             `json:"replayed"`
	Ping      int64           `json:"ping"`
	UpRate    float64         `json:"upstream_rate"`
	UpBurst   int             `json:"upstream_burst"`
	Reason    string          `json:"reason"`
	Data      json.RawMessage `json:"data"`
	DataB64   string          `json:"data_b64"`
	Error     string          `json:"error"`
}

// seq returns the frame's sequence, 0 if it has none.
func (f v2Frame) seq() uint64 {
	if f.Seq == nil {
		return 0
	}
	return *f.Seq
}

// readV2 reads the next frame as a v2 frame; every v2 frame is a JSON text
// frame.
func readV2(t *testing.T, c *websocket.Conn) v2Frame {
	t.Helper()
	typ, data := read(t, c)
	if typ != websocket.TextMessage {
		t.Fatalf("v2 frame is not text: %q", data)
	}
	var f v2Frame
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("v2 frame %q: %v", data, err)
	}
	return f
}

// readMsgV2 reads frames until a "msg" one, skipping pings.
func readMsgV2(t *testing.T, c *websocket.Conn) v2Frame {
	t.Helper()
	for {
		if f := readV2(t, c); f.Type != "ping" {
			if f.Type != "msg" {
				t.Fatalf("want a msg frame, got %+v", f)
			}
			return f
		}
	}
}

// firstV2 is the first message of a v2 client named name, with since if
// not nil.
func firstV2(name string, since *uint64) string {
	if since == nil {
		return `{"name":"` + name + `","v":2}`
	}
	return `{"name":"` + name + `","v":2,"since":` + strconv.FormatUint(*since, 10) + `}`
}

// resume connects to tw as a v2 client named name, resuming from since if
// not nil, and returns the connection and its welcome.
func resume(t *testing.T, tw *testWorker, name string, since *uint64) (*websocket.Conn, v2Frame) {
	t.Helper()
	c := dial(t, tw.addr, "/")
	send(t, c, firstV2(name, since))
	w := readV2(t, c)
	if w.Type != "welcome" || w.Name != name || w.V != 2 || w.Seq == nil || w.Recovered == nil {
		t.Fatalf("welcome of %s: %+v", name, w)
	}
	return c, w
}

// waitStream waits until tw has set up its stream: the worker creates it
// in the background once NATS answers, so a durable publish sooner finds
// no stream ("no responders").
func waitStream(t *testing.T, tw *testWorker) {
	t.Helper()
	eventually(t, "the stream", func() bool { return metric(t, tw.addr, "notify_stream_ready") == 1 })
}

// jetStream waits for tw's stream and returns a JetStream context on tw's
// NATS server.
func jetStream(t *testing.T, tw *testWorker) jetstream.JetStream {
	t.Helper()
	waitStream(t, tw)
	js, err := jetstream.New(connectNATS(t, tw.natsURL))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publishDurable stores payload under subject's durable form and returns
// its stream sequence.
func publishDurable(t *testing.T, js jetstream.JetStream, subject, payload string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ack, err := js.Publish(ctx, "durable."+subject, []byte(payload))
	if err != nil {
		t.Fatalf("durable publish to %s: %v", subject, err)
	}
	return ack.Sequence
}
