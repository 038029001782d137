package fleet

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

// waitTimeout bounds every wait; tests wait on events and conditions, and
// this only turns a hang into a failure. It is generous because CI shares
// two cores with other tests.
const waitTimeout = 30 * time.Second

// pollEvery is the interval of condition polling, not a synchronisation.
const pollEvery = 10 * time.Millisecond

var bin binaries

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "notify-fleet-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if !testing.Short() {
		start := time.Now()
		if bin, err = build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "fleet: built notify-worker (race=%v) and nats-server in %s\n", raceEnabled, time.Since(start).Round(time.Millisecond))
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// Worker settings for the fleet: a frozen NATS server is noticed after
// about PING_INTERVAL * (MAX_PINGS_OUT + 1), here 1.5s.
var workerEnv = []string{
	"NOTIFY_ADDR=127.0.0.1:0",
	"NOTIFY_LOG_FORMAT=json",
	"NOTIFY_NATS_PING_INTERVAL=500ms",
	"NOTIFY_NATS_MAX_PINGS_OUT=2",
	"NOTIFY_NATS_RECONNECT_WAIT=250ms",
	"NOTIFY_NATS_CONNECT_TIMEOUT=1s",
	"NOTIFY_SHUTDOWN_TIMEOUT=5s",
	// No balancer watches /readyz here, so SIGTERM shuts down at once;
	// TestRollingRestartBehindHAProxy gives its workers a drain delay.
	"NOTIFY_DRAIN_DELAY=0s",
}

// natsNode is one server of the cluster. Its ports are picked by the
// server at first start and kept across restarts.
type natsNode struct {
	name                   string
	client, monitor, route int
	id                     string // server ID, which changes at each start
	proc                   *process
	down                   bool // killed and not restarted
}

func (n *natsNode) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.client) }

// live reports whether the node runs and answers.
func (n *natsNode) live() bool { return !n.down && !n.proc.stopped }

type fleet struct {
	dir        string
	workerVars []string // NOTIFY_* settings over workerEnv
	jetStream  bool     // the nodes run JetStream, each storing under its own directory
	nodes      []*natsNode
	workers    []*worker
	http       *http.Client
}

// newFleet starts a cluster of nNodes NATS servers and nWorkers workers
// that each know every server; workerVars (NAME=value) override
// workerEnv.
func newFleet(t *testing.T, nNodes, nWorkers int, workerVars ...string) *fleet {
	t.Helper()
	return startFleet(t, false, nNodes, nWorkers, workerVars)
}

// startFleet is newFleet, with JetStream on every node when jetStream is
// set; the workers then start once the cluster has a JetStream meta leader.
func startFleet(t *testing.T, jetStream bool, nNodes, nWorkers int, workerVars []string) *fleet {
	t.Helper()
	if testing.Short() {
		t.Skip("the fleet runs real processes; skipped with -short")
	}
	f := &fleet{
		dir:        t.TempDir(),
		workerVars: workerVars,
		jetStream:  jetStream,
		http:       &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	for i := range nNodes {
		f.nodes = append(f.nodes, &natsNode{name: "nats-" + strconv.Itoa(i+1)})
	}
	if jetStream {
		// A clustered JetStream server refuses to start without routes, so
		// the first one must know the others' route ports before they run.
		for _, n := range f.nodes {
			n.route = freePort(t)
		}
	}
	for _, n := range f.nodes {
		f.startNode(t, n)
	}
	f.waitCluster(t)
	if jetStream {
		f.waitJetStream(t)
	}
	for i := range nWorkers {
		f.startWorker(t, "w"+strconv.Itoa(i+1))
	}
	for _, w := range f.workers {
		f.waitReady(t, w)
	}
	return f
}

// startNode starts n, on ports the server picks the first time and the
// same ports after that, with routes to every other node that has run.
// With JetStream, n stores under the same directory at every start, so a
// restarted node recovers its streams.
func (f *fleet) startNode(t *testing.T, n *natsNode) {
	t.Helper()
	port := func(p int) string {
		if p == 0 {
			return "-1"
		}
		return strconv.Itoa(p)
	}
	var routes []string
	for _, o := range f.nodes {
		if o != n && o.route != 0 {
			routes = append(routes, "nats://127.0.0.1:"+strconv.Itoa(o.route))
		}
	}
	dir := filepath.Join(f.dir, n.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--name", n.name,
		"--addr", "127.0.0.1",
		"--port", port(n.client),
		"--http_port", port(n.monitor),
		"--cluster_name", "fleet",
		"--cluster", "nats://127.0.0.1:" + port(n.route),
		"--ports_file_dir", dir,
	}
	if len(routes) > 0 {
		args = append(args, "--routes", strings.Join(routes, ","))
	}
	if f.jetStream {
		args = append(args, "--jetstream", "--store_dir", filepath.Join(dir, "jetstream"))
	}
	n.proc = startProcess(t, n.name, bin.nats, args, env())
	n.down = false

	portsFile := filepath.Join(dir, fmt.Sprintf("nats-server_%d.ports", n.proc.cmd.Process.Pid))
	var ports server.Ports
	eventually(t, n.name+" ports file", func() bool {
		data, err := os.ReadFile(portsFile)
		return err == nil && json.Unmarshal(data, &ports) == nil &&
			len(ports.Nats) == 1 && len(ports.Monitoring) == 1 && len(ports.Cluster) == 1
	})
	n.client = urlPort(t, ports.Nats[0])
	n.monitor = urlPort(t, ports.Monitoring[0])
	n.route = urlPort(t, ports.Cluster[0])
	var varz server.Varz
	eventually(t, n.name+" monitoring", func() bool { return f.monitor(n, "/varz", &varz) == nil })
	n.id = varz.ID
}

// freePort returns a loopback port that was free a moment ago, for a
// server that must be known before it starts.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func urlPort(t *testing.T, u string) int {
	t.Helper()
	i := strings.LastIndexByte(u, ':')
	p, err := strconv.Atoi(u[i+1:])
	if err != nil {
		t.Fatalf("port of %q: %v", u, err)
	}
	return p
}

// waitCluster waits until every live node has a route to every other live
// node.
func (f *fleet) waitCluster(t *testing.T) {
	t.Helper()
	eventually(t, "cluster routes", func() bool {
		for _, n := range f.nodes {
			if !n.live() {
				continue
			}
			var rz server.Routez
			if f.monitor(n, "/routez", &rz) != nil {
				return false
			}
			peers := map[string]bool{}
			for _, r := range rz.Routes {
				peers[r.RemoteID] = true
			}
			for _, o := range f.nodes {
				if o != n && o.live() && !peers[o.id] {
					return false
				}
			}
		}
		return true
	})
}

func (f *fleet) natsURLs() string {
	var urls []string
	for _, n := range f.nodes {
		urls = append(urls, n.url())
	}
	return strings.Join(urls, ",")
}

// monitor reads one of n's monitoring endpoints into v.
func (f *fleet) monitor(n *natsNode, path string, v any) error {
	resp, err := f.http.Get("http://127.0.0.1:" + strconv.Itoa(n.monitor) + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s%s: %s", n.name, path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// worker is a notify-worker process. Its NATS connection carries its id as
// name, so the servers' monitoring data tells its connection apart.
type worker struct {
	id   string
	addr string
	proc *process
}

func (f *fleet) startWorker(t *testing.T, id string) *worker {
	t.Helper()
	w := &worker{id: id}
	vars := append(append(slices.Clone(workerEnv), f.workerVars...),
		"NOTIFY_WORKER_ID="+id,
		"NOTIFY_NATS_NAME="+id,
		"NOTIFY_NATS_URL="+f.natsURLs(),
	)
	w.proc = startProcess(t, id, bin.worker, nil, env(vars...))
	w.addr = parseLogLine(t, w.proc.log.wait(t, 0, `"msg":"notify-worker serving"`)).Addr
	f.workers = append(f.workers, w)
	t.Cleanup(func() {
		if w.proc.log.contains("DATA RACE") {
			t.Errorf("%s reported a data race", id)
		}
	})
	return w
}

// readyz returns the worker's /readyz status, or 0 if it does not answer.
func (f *fleet) readyz(w *worker) int {
	resp, err := f.http.Get("http://" + w.addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (f *fleet) waitReady(t *testing.T, w *worker) {
	t.Helper()
	eventually(t, w.id+" /readyz 200", func() bool { return f.readyz(w) == http.StatusOK })
}

func (f *fleet) metrics(t *testing.T, w *worker) string {
	t.Helper()
	resp, err := f.http.Get("http://" + w.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// conn finds w's NATS connection as the servers see it: the live node it
// is on and the server's record of it.
func (f *fleet) conn(w *worker) (*natsNode, *server.ConnInfo) {
	for _, n := range f.nodes {
		if !n.live() {
			continue
		}
		var cz server.Connz
		if f.monitor(n, "/connz?subs=1", &cz) != nil {
			continue
		}
		for _, ci := range cz.Conns {
			if ci.Name == w.id {
				return n, ci
			}
		}
	}
	return nil, nil
}

// interest reports whether a message published on node at to subject
// would reach w, by the servers' own data: w's connection subscribes to
// subject, and at is w's node or has learnt the interest over its route
// from w's node.
func (f *fleet) interest(at *natsNode, w *worker, subject string) bool {
	home, ci := f.conn(w)
	if ci == nil || !slices.Contains(ci.Subs, subject) {
		return false
	}
	if home == at {
		return true
	}
	var rz server.Routez
	if f.monitor(at, "/routez?subs=1", &rz) != nil {
		return false
	}
	for _, r := range rz.Routes {
		if r.RemoteID == home.id && slices.Contains(r.Subs, subject) {
			return true
		}
	}
	return false
}

// producer connects a publisher to one node.
func (f *fleet) producer(t *testing.T, n *natsNode) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.url(), nats.Name("producer"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// client is a WebSocket client of one worker.
type client struct {
	name string
	w    *worker
	ws   *websocket.Conn
}

// connect dials w, identifies as name and waits for the welcome.
func connect(t *testing.T, w *worker, name string) *client {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+w.addr+"/", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", w.id, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	c := &client{name: name, w: w, ws: ws}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"name":"`+name+`"}`)); err != nil {
		t.Fatalf("identify on %s: %v", w.id, err)
	}
	if got, want := c.read(t), `{"type":"welcome","name":"`+name+`"}`; got != want {
		t.Fatalf("first frame from %s = %s, want %s", w.id, got, want)
	}
	return c
}

func (c *client) read(t *testing.T) string {
	t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(waitTimeout))
	_, msg, err := c.ws.ReadMessage()
	if err != nil {
		t.Fatalf("%s on %s: read: %v", c.name, c.w.id, err)
	}
	return string(msg)
}

// readUntil reads frames until it has seen every fence, and returns the
// other frames in the order they came.
func (c *client) readUntil(t *testing.T, fences ...string) []string {
	t.Helper()
	pending := map[string]bool{}
	for _, f := range fences {
		pending[f] = true
	}
	var got []string
	for len(pending) > 0 {
		msg := c.read(t)
		if pending[msg] {
			delete(pending, msg)
			continue
		}
		if slices.Contains(fences, msg) {
			t.Fatalf("%s on %s: fence %q twice", c.name, c.w.id, msg)
		}
		got = append(got, msg)
	}
	return got
}

// readError reads until the connection fails and returns the error.
func (c *client) readError(t *testing.T) error {
	t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s on %s: connection still open after %s", c.name, c.w.id, waitTimeout)
			}
			return err
		}
	}
}

// round publishes perName messages to each client's name and perAll
// broadcasts through node at, once at knows the interest of every worker
// involved, and checks that every client received exactly its share, in
// order, nothing twice. It returns when the last client has everything.
func (f *fleet) round(t *testing.T, nc *nats.Conn, at *natsNode, clients []*client, tag string, perName, perAll int) {
	t.Helper()
	names := map[string]bool{}
	for _, c := range clients {
		names[c.name] = true
		for _, subject := range []string{"notify.user." + c.name, "notify.all"} {
			eventually(t, fmt.Sprintf("%s's interest in %s at %s", c.w.id, subject, at.name), func() bool {
				return f.interest(at, c.w, subject)
			})
		}
	}
	for name := range names {
		for i := range perName {
			mustPublish(t, nc, "notify.user."+name, fmt.Sprintf("%s:%s:%d", tag, name, i))
		}
		mustPublish(t, nc, "notify.user."+name, tag+":"+name+":end")
	}
	for i := range perAll {
		mustPublish(t, nc, "notify.all", fmt.Sprintf("%s:all:%d", tag, i))
	}
	mustPublish(t, nc, "notify.all", tag+":all:end")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		got := c.readUntil(t, tag+":"+c.name+":end", tag+":all:end")
		// The two subjects have separate dispatch lanes, so only the order
		// within each is kept.
		var user, all []string
		for _, m := range got {
			if strings.HasPrefix(m, tag+":all:") {
				all = append(all, m)
			} else {
				user = append(user, m)
			}
		}
		var wantUser, wantAll []string
		for i := range perName {
			wantUser = append(wantUser, fmt.Sprintf("%s:%s:%d", tag, c.name, i))
		}
		for i := range perAll {
			wantAll = append(wantAll, fmt.Sprintf("%s:all:%d", tag, i))
		}
		if !slices.Equal(user, wantUser) || !slices.Equal(all, wantAll) {
			t.Fatalf("%s on %s got user %q and all %q; want %q and %q", c.name, c.w.id, user, all, wantUser, wantAll)
		}
	}
}

func mustPublish(t *testing.T, nc *nats.Conn, subject, payload string) {
	t.Helper()
	if err := nc.Publish(subject, []byte(payload)); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(pollEvery) // polling interval, not synchronisation
	}
}

// readyWatch records a worker's /readyz answers over time, to measure an
// outage as a load balancer's health check sees it.
type readyWatch struct {
	mu    sync.Mutex
	seen  []readySample // one per change of status
	stop  chan struct{}
	ended chan struct{}
}

type readySample struct {
	at   time.Time
	code int
}

// watchReady polls w's /readyz every 5ms until the test ends.
func (f *fleet) watchReady(t *testing.T, w *worker) *readyWatch {
	rw := &readyWatch{stop: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(rw.ended)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			code := f.readyz(w)
			rw.mu.Lock()
			if len(rw.seen) == 0 || rw.seen[len(rw.seen)-1].code != code {
				rw.seen = append(rw.seen, readySample{at: time.Now(), code: code})
			}
			rw.mu.Unlock()
			select {
			case <-tick.C:
			case <-rw.stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(rw.stop); <-rw.ended })
	return rw
}

// first returns when /readyz first answered code after since.
func (rw *readyWatch) first(code int, since time.Time) (time.Time, bool) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	for _, s := range rw.seen {
		if s.code == code && !s.at.Before(since) {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// since formats the time from t0 to t for the logs.
func since(t0, t time.Time) string { return t.Sub(t0).Round(time.Millisecond).String() }
