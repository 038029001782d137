package deploy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// haproxyCfg is haproxy.cfg as sections of lines.
type haproxyCfg struct {
	path     string
	sections []*haproxySection
}

type haproxySection struct {
	name  string // the header line, e.g. "backend workers"
	lines []haproxyLine
}

type haproxyLine struct {
	raw    string
	fields []string
}

func readHAProxy(t *testing.T, path string) *haproxyCfg {
	t.Helper()
	c := &haproxyCfg{path: path}
	var cur *haproxySection
	sc := bufio.NewScanner(strings.NewReader(mustReadFile(t, path)))
	for sc.Scan() {
		raw := sc.Text()
		trimmed := strings.TrimSpace(raw)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if !strings.HasPrefix(raw, " ") && !strings.HasPrefix(raw, "\t") {
			cur = &haproxySection{name: trimmed}
			c.sections = append(c.sections, cur)
			continue
		}
		if cur == nil {
			t.Fatalf("%s: %q outside any section", path, raw)
		}
		cur.lines = append(cur.lines, haproxyLine{raw: raw, fields: strings.Fields(trimmed)})
	}
	return c
}

func (c *haproxyCfg) section(t *testing.T, name string) *haproxySection {
	t.Helper()
	for _, s := range c.sections {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("%s has no section %q", c.path, name)
	return nil
}

// lookup returns the fields after the first line that starts with keyword.
func (s *haproxySection) lookup(keyword ...string) ([]string, bool) {
	for _, l := range s.lines {
		if len(l.fields) >= len(keyword) && slices.Equal(l.fields[:len(keyword)], keyword) {
			return l.fields[len(keyword):], true
		}
	}
	return nil, false
}

func (s *haproxySection) find(t *testing.T, keyword ...string) []string {
	t.Helper()
	f, ok := s.lookup(keyword...)
	if !ok {
		t.Fatalf("section %q has no %q line", s.name, strings.Join(keyword, " "))
	}
	return f
}

// arg returns the first argument of a keyword's line.
func (s *haproxySection) arg(t *testing.T, keyword string) string {
	t.Helper()
	f := s.find(t, keyword)
	if len(f) == 0 {
		t.Fatalf("section %q: %s without argument", s.name, keyword)
	}
	return f[0]
}

// timeout returns "timeout <name>" as the named section sees it: its own,
// or the defaults section's.
func (c *haproxyCfg) timeout(t *testing.T, section, name string) string {
	t.Helper()
	for _, s := range []string{section, "defaults"} {
		if f, ok := c.section(t, s).lookup("timeout", name); ok && len(f) > 0 {
			return f[0]
		}
	}
	t.Fatalf("%s sets no timeout %s for %s", c.path, name, section)
	return ""
}

// keywordArg returns the value after key in a server line's fields.
func keywordArg(t *testing.T, fields []string, key string) string {
	t.Helper()
	i := slices.Index(fields, key)
	if i < 0 || i+1 >= len(fields) {
		t.Fatalf("%q has no %s <value>", fields, key)
	}
	return fields[i+1]
}

// hcDuration parses an HAProxy time: a number with an optional unit,
// milliseconds by default.
func hcDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	if strings.HasSuffix(s, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err != nil {
			t.Fatalf("HAProxy time %q: %v", s, err)
		}
		return time.Duration(n) * 24 * time.Hour
	}
	if _, err := strconv.Atoi(s); err == nil {
		s += "ms"
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("HAProxy time %q: %v", s, err)
	}
	return d
}

func TestHAProxyUnitParsers(t *testing.T) {
	for in, want := range map[string]time.Duration{"100": 100 * time.Millisecond, "500ms": 500 * time.Millisecond, "2s": 2 * time.Second, "1m": time.Minute, "1h": time.Hour, "1d": 24 * time.Hour} {
		if got := hcDuration(t, in); got != want {
			t.Errorf("hcDuration(%q) = %s, want %s", in, got, want)
		}
	}
}

// requireHAProxy returns the haproxy binary, skipping the test without it
// (failing under CI=true, where it must be installed).
func requireHAProxy(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("haproxy is not installed (apt-get install -y haproxy); CI must run this test")
		}
		t.Skip("haproxy is not installed (apt-get install -y haproxy)")
	}
	return path
}

// HAProxy itself accepts the deployment's config.
func TestHAProxyConfigValid(t *testing.T) {
	bin := requireHAProxy(t)
	if out, err := exec.Command(bin, "-c", "-f", haproxyConfig).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c -f %s: %v\n%s", haproxyConfig, err, out)
	}
}

// variant describes a loopback copy of haproxy.cfg: every frontend binds
// a listener the test opened on 127.0.0.1, the workers backend has the
// given servers instead of Docker's DNS, and the rest is unchanged.
type variant struct {
	servers      map[string]string // worker server name -> loopback address
	keepMaxconn  bool              // else global maxconn fits this machine's open-file limit
	extraGlobal  []string
	extraBackend []string
}

// lb is a haproxy process running a variant.
type lb struct {
	frontends map[string]string // frontend name -> its loopback address
	log       *procLog          // stdout (the log) and stderr
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

// writeVariant writes the variant's config and returns its path, the
// listeners to hand haproxy (fd 3 onwards) and their addresses.
func writeVariant(t *testing.T, v variant) (string, []*os.File, map[string]string) {
	t.Helper()
	src := readHAProxy(t, haproxyConfig)
	var b strings.Builder
	var files []*os.File
	frontends := map[string]string{}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range v.servers {
			if !yield(k) {
				return
			}
		}
	})
	for _, s := range src.sections {
		if strings.HasPrefix(s.name, "resolvers ") {
			continue
		}
		fmt.Fprintln(&b, s.name)
		for _, l := range s.lines {
			switch {
			case s.name == "global" && l.fields[0] == "maxconn" && !v.keepMaxconn:
				fmt.Fprintln(&b, "    maxconn 2000")
			case strings.HasPrefix(s.name, "frontend ") && l.fields[0] == "bind":
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				f, err := ln.(*net.TCPListener).File()
				if err != nil {
					t.Fatal(err)
				}
				ln.Close() // f keeps the socket listening
				t.Cleanup(func() { f.Close() })
				frontends[strings.TrimPrefix(s.name, "frontend ")] = ln.Addr().String()
				fmt.Fprintf(&b, "    bind fd@%d\n", 3+len(files))
				files = append(files, f)
			case s.name == "backend workers" && l.fields[0] == "server-template":
				for _, name := range names {
					fmt.Fprintf(&b, "    server %s %s\n", name, v.servers[name])
				}
			case s.name == "backend workers" && l.fields[0] == "default-server":
				fmt.Fprintln(&b, "    "+strings.Join(dropKeywords(l.fields, "resolvers", "init-addr"), " "))
			default:
				fmt.Fprintln(&b, l.raw)
			}
		}
		if s.name == "global" {
			for _, l := range v.extraGlobal {
				fmt.Fprintln(&b, "    "+l)
			}
		}
		if s.name == "backend workers" {
			for _, l := range v.extraBackend {
				fmt.Fprintln(&b, "    "+l)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, files, frontends
}

// dropKeywords removes "key value" pairs from a server line's fields.
func dropKeywords(fields []string, keys ...string) []string {
	var out []string
	for i := 0; i < len(fields); i++ {
		if slices.Contains(keys, fields[i]) {
			i++
			continue
		}
		out = append(out, fields[i])
	}
	return out
}

// startLB runs haproxy in the foreground on a variant, under prefix
// (e.g. prlimit) if given. The listeners already accept connections, so
// the balancer is reachable as soon as this returns.
func startLB(t *testing.T, v variant, prefix ...string) *lb {
	t.Helper()
	bin := requireHAProxy(t)
	path, files, frontends := writeVariant(t, v)
	args := append(slices.Clone(prefix), bin, "-db", "-f", path)
	l := &lb{frontends: frontends, log: newProcLog(), done: make(chan struct{})}
	l.cmd = exec.Command(args[0], args[1:]...)
	l.cmd.ExtraFiles = files
	l.cmd.Stdout, l.cmd.Stderr = l.log, l.log
	if err := l.cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	for _, f := range files {
		f.Close()
	}
	go func() {
		l.err = l.cmd.Wait()
		close(l.done)
	}()
	t.Cleanup(func() {
		_ = l.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.done:
		case <-time.After(waitTimeout):
			_ = l.cmd.Process.Kill()
			<-l.done
		}
		if t.Failed() {
			t.Logf("--- haproxy output:\n%s", strings.Join(l.log.all(), "\n"))
		}
	})
	return l
}

// backend is a loopback stand-in for a worker: /readyz answers 200, and
// every other request is upgraded to a WebSocket that sends "hello".
func backend(t *testing.T) *httptest.Server {
	t.Helper()
	var up websocket.Upgrader
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" || !websocket.IsWebSocketUpgrade(r) {
			fmt.Fprintln(w, "ready")
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteMessage(websocket.TextMessage, []byte("hello"))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

var noKeepAlive = &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DisableKeepAlives: true}}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := noKeepAlive.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// /metrics and /debug/ are refused from outside with 403, however the
// path is spelled for the worker's mux; everything else reaches the
// workers, WebSocket upgrades included.
func TestHAProxyRefusesMetrics(t *testing.T) {
	w := backend(t)
	l := startLB(t, variant{servers: map[string]string{"w1": w.Listener.Addr().String()}})
	front := "http://" + l.frontends["websocket"]
	for path, want := range map[string]int{
		"/metrics":                   http.StatusForbidden,
		"/metrics?format=text":       http.StatusForbidden,
		"/%6detrics":                 http.StatusForbidden,
		"/%6D%65trics":               http.StatusForbidden,
		"/debug/pprof/":              http.StatusForbidden,
		"/debug/pprof/heap":          http.StatusForbidden,
		"/%64ebug/pprof/":            http.StatusForbidden,
		"/readyz":                    http.StatusOK,
		"/healthz":                   http.StatusOK,
		"/metricsfoo":                http.StatusOK,
		"/demo/":                     http.StatusOK,
		"/api/v1/publish?x=/metrics": http.StatusOK,
	} {
		if code, body := get(t, front+path); code != want {
			t.Errorf("GET %s through the balancer = %d (%q), want %d", path, code, body, want)
		}
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+l.frontends["websocket"]+"/", nil)
	if err != nil {
		t.Fatalf("websocket through the balancer: %v", err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "hello" {
		t.Fatalf("websocket through the balancer read %q, %v", msg, err)
	}
}

// Clients send their JWT as ?token=...; the balancer's log has the path
// and never the query, for WebSocket upgrades and plain requests alike.
func TestHAProxyLogOmitsQuery(t *testing.T) {
	const secret = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl"
	w := backend(t)
	l := startLB(t, variant{servers: map[string]string{"w1": w.Listener.Addr().String()}})
	front := l.frontends["websocket"]

	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+front+"/?token="+secret, nil)
	if err != nil {
		t.Fatalf("dial through haproxy: %v", err)
	}
	resp.Body.Close()
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "hello" {
		t.Fatalf("through haproxy: %q, %v", msg, err)
	}
	ws.Close() // the tunnel's log line is written when it ends
	if code, _ := get(t, "http://"+front+"/readyz?token="+secret+"&x=1"); code != http.StatusOK {
		t.Fatalf("GET /readyz through haproxy: %d", code)
	}

	upgrade := l.log.wait(t, " 101 ")
	plain := l.log.wait(t, " GET /readyz HTTP/1.1")
	for _, line := range []string{upgrade, plain} {
		if !strings.Contains(line, " websocket workers/w1 ") {
			t.Errorf("log line %q does not name the frontend and server", line)
		}
	}
	if !strings.HasSuffix(upgrade, " GET / HTTP/1.1") {
		t.Errorf("upgrade logged as %q, want it to end with the method, path and version", upgrade)
	}
	for _, line := range l.log.all() {
		if strings.Contains(line, "token") || strings.Contains(line, secret[:20]) {
			t.Errorf("haproxy logged the query: %q", line)
		}
	}
	t.Logf("logged: %s", upgrade)
}

// blackhole is a loopback address that accepts no connection and refuses
// none, as a killed container's address does: its listen queue is full,
// so the kernel drops every SYN.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// With a backlog of 0, one connection fills the queue.
	filler, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("%s still completes connections; it is no black hole", addr)
	}
	return addr
}

var logServer = regexp.MustCompile(` websocket workers/(\S+) .* \d+/\d+/\d+/\d+/\+?(\d+) `)

// A worker that was killed stops answering without refusing: a client
// sent there waits at most one connect timeout and is redispatched to
// another worker, and after error-limit failures in a row the balancer
// takes the dead worker out before its health checks would.
func TestHAProxyLeavesDeadWorker(t *testing.T) {
	hc := readHAProxy(t, haproxyConfig)
	connectTimeout := hcDuration(t, hc.timeout(t, "backend workers", "connect"))
	live := backend(t)
	l := startLB(t, variant{servers: map[string]string{
		"w1": live.Listener.Addr().String(),
		"w2": blackhole(t),
	}})
	url := "http://" + l.frontends["websocket"] + "/ws"

	// A burst, as after a worker loss: leastconn sends about half to w2.
	const burst = 10
	var wg sync.WaitGroup
	took := make([]time.Duration, burst)
	codes := make([]int, burst)
	for i := range burst {
		wg.Go(func() {
			t0 := time.Now()
			resp, err := noKeepAlive.Get(url)
			took[i] = time.Since(t0)
			if err != nil {
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, code := range codes {
		if code != http.StatusOK {
			t.Errorf("request %d of the burst: status %d after %s", i, code, took[i])
		}
	}
	slowest := slices.Max(took)
	if limit := connectTimeout + time.Second; slowest > limit {
		t.Errorf("slowest request of the burst took %s; one connect timeout (%s) is the most it should wait", slowest, connectTimeout)
	}
	down := l.log.wait(t, "workers/w2 is DOWN")
	if !strings.Contains(down, "Health analyze") {
		t.Errorf("w2 was taken out by %q, want the live-traffic analysis (observe layer4)", down)
	}

	// Once it is down, no client waits for it. (haproxy may log a request
	// after its response: wait for the burst's lines first.)
	eventually(t, "log lines of the burst", func() bool { return len(logLines(l.log.all())) >= burst })
	mark := len(l.log.all())
	t0 := time.Now()
	for range burst {
		if code, _ := get(t, url); code != http.StatusOK {
			t.Fatalf("after w2 is down: status %d", code)
		}
	}
	after := time.Since(t0)
	eventually(t, "log lines of the second round", func() bool { return len(logLines(l.log.all()[mark:])) >= burst })
	for _, m := range logLines(l.log.all()[mark:]) {
		if m[1] != "w1" || m[2] != "0" {
			t.Errorf("after w2 is down, a request went to %s with %s retries", m[1], m[2])
		}
	}
	var retried int
	for _, m := range logLines(l.log.all()[:mark]) {
		if m[2] != "0" {
			retried++
		}
	}
	t.Logf("burst of %d with a dead worker: all 200, %d retried elsewhere, slowest %s (timeout connect %s); then %d requests in %s, none retried",
		burst, retried, slowest.Round(time.Millisecond), connectTimeout, burst, after.Round(time.Millisecond))
}

// logLines returns the server name and retry count of each request line.
func logLines(lines []string) [][]string {
	var out [][]string
	for _, line := range lines {
		if m := logServer.FindStringSubmatch(line); m != nil {
			out = append(out, m)
		}
	}
	return out
}

// HAProxy exits at start unless it can open two descriptors per
// connection of maxconn and a few more: it says how many it needs when it
// cannot. Compose gives lb at least that.
func TestHAProxyFDLimit(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Fatal("prlimit (util-linux) is needed to run haproxy under a given open-file limit")
	}
	w := backend(t)
	servers := map[string]string{"w1": w.Listener.Addr().String()}
	l := startLB(t, variant{servers: servers, keepMaxconn: true}, "prlimit", "--nofile=1024:1024")
	<-l.done
	line := l.log.wait(t, "Cannot raise FD limit to ")
	m := regexp.MustCompile(`Cannot raise FD limit to (\d+)`).FindStringSubmatch(line)
	need, _ := strconv.Atoi(m[1])
	if l.err == nil {
		t.Errorf("haproxy kept running after %q", line)
	}

	lbSvc := service(t, mustLoadCompose(t, nil), "lb")
	nofile := lbSvc.Ulimits["nofile"]
	if nofile == nil {
		t.Fatalf("lb has no ulimits: nofile; haproxy needs %d descriptors", need)
	}
	soft, hard := nofile.Soft, nofile.Hard
	if nofile.Single != 0 {
		soft, hard = nofile.Single, nofile.Single
	}
	// HAProxy 3.2 counts a few more than 2.6 (40039 against 2.6's figure).
	const headroom = 1024
	if soft < need+headroom || hard < soft {
		t.Errorf("lb nofile soft %d hard %d; haproxy needs %d, want soft >= %d and hard >= soft", soft, hard, need, need+headroom)
	}
	t.Logf("haproxy %s needs %d descriptors for haproxy.cfg; compose gives lb %d", haproxyVersion(t), need, soft)

	// Under compose's limit it starts and answers its health check, where
	// this machine lets the limit be raised that far.
	limit := fmt.Sprintf("--nofile=%d:%d", soft, hard)
	if err := exec.Command("prlimit", limit, "true").Run(); err != nil {
		t.Logf("cannot run haproxy under %s on this machine (%v); the limit check above stands", limit, err)
		return
	}
	l = startLB(t, variant{servers: servers, keepMaxconn: true}, "prlimit", limit)
	if code, body := get(t, "http://"+l.frontends["stats"]+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("haproxy under %s: /healthz %d %q", limit, code, body)
	}
}

func haproxyVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(requireHAProxy(t), "-v").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return strings.TrimSpace(string(out))
	}
	return f[2]
}

// The lb container's health check asks HAProxy's stats frontend for
// /healthz, which HAProxy answers itself.
func TestLBHealthcheck(t *testing.T) {
	lbSvc := service(t, mustLoadCompose(t, nil), "lb")
	hc := readHAProxy(t, haproxyConfig)
	port := addrPort(t, hc.section(t, "frontend stats").arg(t, "bind"))
	want := []string{"CMD", "wget", "-q", "-O", "/dev/null", fmt.Sprintf("http://127.0.0.1:%d/healthz", port)}
	if lbSvc.HealthCheck == nil || !slices.Equal([]string(lbSvc.HealthCheck.Test), want) {
		t.Fatalf("lb healthcheck %+v, want %q", lbSvc.HealthCheck, want)
	}
	w := backend(t)
	l := startLB(t, variant{servers: map[string]string{"w1": w.Listener.Addr().String()}})
	if code, body := get(t, "http://"+l.frontends["stats"]+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("stats /healthz: %d %q", code, body)
	}
}

// rolling-restart.sh counts the workers HAProxy has UP from its stats CSV:
// the rows of backend workers whose 18th column, status, is UP.
func TestHAProxyStatsCSV(t *testing.T) {
	w := backend(t)
	l := startLB(t, variant{servers: map[string]string{"w1": w.Listener.Addr().String(), "w2": "127.0.0.1:1"}})
	var rows [][]string
	eventually(t, "w1 UP and w2 DOWN in the stats CSV", func() bool {
		_, body := get(t, "http://"+l.frontends["stats"]+"/stats;csv")
		rows = nil
		for line := range strings.Lines(body) {
			rows = append(rows, strings.Split(strings.TrimSpace(line), ","))
		}
		status := map[string]string{}
		for _, r := range rows[1:] {
			if len(r) > 17 && r[0] == "workers" {
				status[r[1]] = r[17]
			}
		}
		return status["w1"] == "UP" && strings.HasPrefix(status["w2"], "DOWN")
	})
	if len(rows[0]) < 18 || rows[0][0] != "# pxname" || rows[0][1] != "svname" || rows[0][17] != "status" {
		t.Fatalf("stats CSV header %q: want pxname, svname and status in columns 1, 2 and 18", rows[0])
	}
}
