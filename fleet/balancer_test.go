package fleet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Health checks of the balancer in front of the fleet: the same check as
// deploy/haproxy.cfg (read from it), on a short interval.
const (
	lbInter        = 100 * time.Millisecond
	lbFall         = 2
	lbCheckTimeout = 500 * time.Millisecond
	// lbDrainDelay covers lbInter x lbFall + lbCheckTimeout, with room
	// for a machine shared with other tests.
	lbDrainDelay = time.Second
	lbSpareSlots = 3 // server slots for replacements, in maintenance until used
)

// requireHAProxy returns the haproxy binary; without it the test fails
// under CI=true (CI installs it) and is skipped elsewhere.
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

// deployHealthCheck returns deploy/haproxy.cfg's health check lines of
// backend workers (option httpchk, http-check).
func deployHealthCheck(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "deploy", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var inWorkers bool
	for line := range strings.Lines(string(data)) {
		trimmed := strings.TrimSpace(line)
		if !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") && trimmed != "" {
			inWorkers = trimmed == "backend workers"
			continue
		}
		if inWorkers && (strings.HasPrefix(trimmed, "option httpchk") || strings.HasPrefix(trimmed, "http-check ")) {
			lines = append(lines, trimmed)
		}
	}
	if !slices.Contains(lines, "option httpchk GET /readyz") {
		t.Fatalf("deploy/haproxy.cfg's health check %q is not option httpchk GET /readyz", lines)
	}
	return lines
}

// balancer is a haproxy process in front of the fleet's workers. Its
// backend has a slot per worker; a replacement takes a spare slot through
// the admin socket. It has no retries, so a client it cannot place shows
// as a failed connection.
type balancer struct {
	addr   string // the WebSocket frontend
	socket string // admin socket
	proc   *process
	slots  map[*worker]string
	spare  []string
}

func startBalancer(t *testing.T, f *fleet) *balancer {
	t.Helper()
	bin := requireHAProxy(t)
	dir := t.TempDir()
	b := &balancer{socket: filepath.Join(dir, "admin.sock"), slots: map[*worker]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	ln.Close() // lnFile keeps it listening, for haproxy

	var servers []string
	for i, w := range f.workers {
		slot := "s" + strconv.Itoa(i+1)
		b.slots[w] = slot
		servers = append(servers, fmt.Sprintf("    server %s %s", slot, w.addr))
	}
	for i := range lbSpareSlots {
		slot := "s" + strconv.Itoa(len(f.workers)+i+1)
		b.spare = append(b.spare, slot)
		servers = append(servers, fmt.Sprintf("    server %s 127.0.0.1:1 disabled", slot))
	}
	cfg := strings.Join([]string{
		"global",
		"    log stdout format raw local0",
		"    maxconn 2000",
		"    stats socket " + b.socket + " level admin",
		"defaults",
		"    mode http",
		"    log global",
		"    log-format \"%ci:%cp %b/%s %Tw/%Tc/%Tr %ST %rc\"",
		"    timeout connect 1s",
		"    timeout client 30s",
		"    timeout server 30s",
		"    timeout tunnel 1h",
		"    timeout check " + strconv.Itoa(int(lbCheckTimeout.Milliseconds())) + "ms",
		"    retries 0",
		"frontend websocket",
		"    bind fd@3",
		"    default_backend workers",
		"backend workers",
		"    balance leastconn",
		"    " + strings.Join(deployHealthCheck(t), "\n    "),
		fmt.Sprintf("    default-server check inter %dms fall %d rise 2", lbInter.Milliseconds(), lbFall),
		strings.Join(servers, "\n"),
		"",
	}, "\n")
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	b.proc = startProcessFiles(t, "haproxy", bin, []string{"-db", "-f", path}, env(), lnFile)
	lnFile.Close()
	eventually(t, "haproxy admin socket", func() bool {
		_, err := b.command("show info")
		return err == nil
	})
	return b
}

// command sends one command to haproxy's admin socket.
func (b *balancer) command(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", b.socket, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	out, err := io.ReadAll(c)
	return strings.TrimSpace(string(out)), err
}

// add puts w in a spare slot and takes the slot out of maintenance; the
// health checks then bring it up.
func (b *balancer) add(t *testing.T, w *worker) string {
	t.Helper()
	if len(b.spare) == 0 {
		t.Fatal("no spare balancer slot")
	}
	slot := b.spare[0]
	b.spare = b.spare[1:]
	b.slots[w] = slot
	host, port, err := net.SplitHostPort(w.addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{
		fmt.Sprintf("set server workers/%s addr %s port %s", slot, host, port),
		fmt.Sprintf("set server workers/%s state ready", slot),
	} {
		out, err := b.command(cmd)
		if err != nil || (out != "" && !strings.Contains(out, "changed")) {
			t.Fatalf("haproxy %q: %v %q", cmd, err, out)
		}
	}
	return slot
}

// lbClient is one WebSocket client connecting through the balancer.
type lbClient struct {
	name   string
	ws     *websocket.Conn
	gotEnd chan struct{} // closed when the final broadcast arrives
	ended  chan struct{}
}

// lbLoad keeps clients connecting through the balancer at a steady rate
// and records every attempt. A client whose worker closes it with 1001
// (going away) reconnects, as a real client does.
type lbLoad struct {
	url      string
	every    time.Duration
	limit    int // connection attempts at most
	stop     chan struct{}
	halted   sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	attempts int
	failures []string // attempts that did not end in a welcome, and why
	moved    int      // welcomed clients closed with 1001 and reconnected
	broken   []string // welcomed clients that ended any other way
	clients  []*lbClient
}

func newLoad(url string, every time.Duration, limit int) *lbLoad {
	return &lbLoad{url: url, every: every, limit: limit, stop: make(chan struct{})}
}

func (l *lbLoad) run() {
	l.wg.Go(func() {
		tick := time.NewTicker(l.every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			if !l.connect(fmt.Sprintf("lb%d", i)) {
				return
			}
		}
	})
}

// connect starts one connection attempt; false once the limit is reached.
func (l *lbLoad) connect(name string) bool {
	l.mu.Lock()
	if l.attempts >= l.limit {
		l.mu.Unlock()
		return false
	}
	l.attempts++
	l.mu.Unlock()
	l.wg.Go(func() {
		c, err := l.dial(name)
		if err != nil {
			l.mu.Lock()
			l.failures = append(l.failures, fmt.Sprintf("%s: %v", name, err))
			l.mu.Unlock()
			return
		}
		l.mu.Lock()
		l.clients = append(l.clients, c)
		l.mu.Unlock()
		l.wg.Go(func() { l.read(c) })
	})
	return true
}

func (l *lbLoad) dial(name string) (*lbClient, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(l.url, nil)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	resp.Body.Close()
	c := &lbClient{name: name, ws: ws, gotEnd: make(chan struct{}), ended: make(chan struct{})}
	ws.SetReadDeadline(time.Now().Add(waitTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"name":"`+name+`"}`)); err != nil {
		ws.Close()
		return nil, fmt.Errorf("identify: %w", err)
	}
	_, msg, err := ws.ReadMessage()
	if want := `{"type":"welcome","name":"` + name + `"}`; err != nil || string(msg) != want {
		ws.Close()
		return nil, fmt.Errorf("welcome: %q, %v", msg, err)
	}
	ws.SetReadDeadline(time.Time{})
	return c, nil
}

// read runs until the client's connection ends. 1001 before the final
// broadcast means its worker is shutting down: reconnect.
func (l *lbLoad) read(c *lbClient) {
	defer close(c.ended)
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			select {
			case <-c.gotEnd:
				return // closed by the test after the end
			default:
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.CloseGoingAway {
				l.mu.Lock()
				l.moved++
				l.mu.Unlock()
				l.connect(c.name)
				return
			}
			l.mu.Lock()
			l.broken = append(l.broken, fmt.Sprintf("%s: %v", c.name, err))
			l.mu.Unlock()
			return
		}
		if string(msg) == "end" {
			close(c.gotEnd)
		}
	}
}

// halt stops new attempts, reconnects included.
func (l *lbLoad) halt() {
	l.halted.Do(func() {
		close(l.stop)
		l.mu.Lock()
		l.limit = l.attempts
		l.mu.Unlock()
	})
}

// closeAll halts, closes every client and waits for every goroutine.
func (l *lbLoad) closeAll() {
	l.halt()
	l.mu.Lock()
	for _, c := range l.clients {
		c.ws.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// Rolling restart behind a real HAProxy: one worker at a time, a
// replacement starts and is ready, the old one gets SIGTERM, drains for
// NOTIFY_DRAIN_DELAY (its /readyz 503 takes it out of the balancer), then
// closes its sessions with 1001 and exits. Clients connect through the
// balancer at a steady rate the whole time; none is refused, every
// welcomed client is either moved with 1001 or gets the final broadcast.
func TestRollingRestartBehindHAProxy(t *testing.T) {
	requireHAProxy(t)
	if lbDrainDelay < lbInter*lbFall+lbCheckTimeout {
		t.Fatalf("drain delay %s does not cover inter x fall + timeout check", lbDrainDelay)
	}
	f := newFleet(t, 3, 3, "NOTIFY_DRAIN_DELAY="+lbDrainDelay.String())
	lb := startBalancer(t, f)

	const rate = 20 * time.Millisecond // 50 new connections a second
	load := newLoad("ws://"+lb.addr+"/", rate, 2000)
	defer load.closeAll()
	load.run()
	// Clients spread over the old workers before the first one goes.
	eventually(t, "clients on every worker", func() bool {
		for _, w := range f.workers {
			if !hasSessions(f.metrics(t, w)) {
				return false
			}
		}
		return true
	})

	t0 := time.Now()
	var perWorker []string
	for _, old := range slices.Clone(f.workers[:3]) {
		start := time.Now()
		repl := f.startWorker(t, old.id+"b")
		f.waitReady(t, repl)
		mark := lb.proc.log.len()
		slot := lb.add(t, repl)
		lb.proc.log.wait(t, mark, "workers/"+slot+" is UP")
		ready := time.Now()

		mark = lb.proc.log.len()
		term := time.Now()
		old.proc.signal(t, syscall.SIGTERM)
		lb.proc.log.wait(t, mark, "workers/"+lb.slots[old]+" is DOWN")
		out := time.Now()
		if err := old.proc.wait(t); err != nil {
			t.Fatalf("%s after SIGTERM: %v, want exit 0", old.id, err)
		}
		exited := time.Now()
		perWorker = append(perWorker, fmt.Sprintf("%s: replacement up in HAProxy %s after start; out of HAProxy %s after SIGTERM; exit 0 %s after SIGTERM; %s in all",
			old.id, since(start, ready), since(term, out), since(term, exited), since(start, exited)))
		if out.Sub(term) > lbDrainDelay {
			t.Errorf("%s: HAProxy took it out %s after SIGTERM, after the drain delay %s", old.id, since(term, out), lbDrainDelay)
		}
	}
	restart := time.Since(t0)
	load.halt()

	// Every client still connected gets a broadcast through a node that
	// knows every replacement's interest.
	at := f.nodes[0]
	for _, w := range f.workers[3:] {
		eventually(t, w.id+"'s interest in notify.all at "+at.name, func() bool { return f.interest(at, w, "notify.all") })
	}
	// Attempts under way finish (welcome or failure) before the end.
	eventually(t, "connection attempts to finish", func() bool {
		load.mu.Lock()
		defer load.mu.Unlock()
		return load.attempts == len(load.clients)+len(load.failures)
	})
	nc := f.producer(t, at)
	mustPublish(t, nc, "notify.all", "end")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	load.mu.Lock()
	clients := slices.Clone(load.clients)
	load.mu.Unlock()
	var live int
	for _, c := range clients {
		select {
		case <-c.gotEnd:
			live++
		case <-c.ended:
			// moved (1001) or broken: counted by read
		case <-time.After(waitTimeout):
			t.Fatalf("%s neither got the final broadcast nor was closed", c.name)
		}
	}

	load.mu.Lock()
	attempts, failures, moved, broken := load.attempts, slices.Clone(load.failures), load.moved, slices.Clone(load.broken)
	load.mu.Unlock()
	for _, line := range perWorker {
		t.Log(line)
	}
	t.Logf("rolling restart of 3 workers in %s behind HAProxy (check every %s, fall %d, drain delay %s): %d connections attempted at one per %s, %d refused or failed, %d moved with 1001 and reconnected, %d broken, %d connected at the end got the broadcast",
		restart.Round(time.Millisecond), lbInter, lbFall, lbDrainDelay, attempts, rate, len(failures), moved, len(broken), live)
	if len(failures) > 0 {
		t.Errorf("%d of %d connection attempts failed: %q", len(failures), attempts, failures[:min(len(failures), 10)])
	}
	if len(broken) > 0 {
		t.Errorf("%d welcomed clients ended other than with 1001: %q", len(broken), broken[:min(len(broken), 10)])
	}
	if live+moved != len(clients) {
		t.Errorf("%d clients welcomed, %d got the broadcast and %d were moved", len(clients), live, moved)
	}
	if lb.proc.log.contains("no server available") {
		t.Errorf("HAProxy had no worker up at some point")
	}
}

// hasSessions reports whether a worker's /metrics shows identified sessions.
func hasSessions(metrics string) bool {
	sc := bufio.NewScanner(strings.NewReader(metrics))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "notify_sessions_identified "); ok {
			n, err := strconv.ParseFloat(v, 64)
			return err == nil && n > 0
		}
	}
	return false
}
