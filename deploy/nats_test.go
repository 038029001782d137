package deploy

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// natsConfigInContainer is where compose mounts nats.conf.
const natsConfigInContainer = "/etc/nats/nats-server.conf"

// natsNodeOptions returns the options a NATS node of compose runs with:
// its command line, with nats.conf read from this directory, and the
// passwords exported.
func natsNodeOptions(t *testing.T, s types.ServiceConfig) *server.Options {
	t.Helper()
	if !mounts(s, natsConfig, natsConfigInContainer) {
		t.Fatalf("%s does not mount deploy/%s at %s (volumes %+v)", s.Name, natsConfig, natsConfigInContainer, s.Volumes)
	}
	conf, err := filepath.Abs(natsConfig)
	if err != nil {
		t.Fatal(err)
	}
	args := slices.Clone([]string(s.Command))
	i := slices.Index(args, "--config="+natsConfigInContainer)
	if i < 0 {
		t.Fatalf("%s command %q does not load --config=%s", s.Name, args, natsConfigInContainer)
	}
	args[i] = "--config=" + conf
	for k, v := range environment(t, s) {
		t.Setenv(k, v)
	}
	fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	opts, err := server.ConfigureOptions(fs, args,
		func() { t.Fatal("nats-server would print its version and exit") },
		func() { t.Fatal("nats-server would print its usage and exit") },
		func() { t.Fatal("nats-server would print its TLS help and exit") })
	if err != nil {
		t.Fatalf("%s: nats-server %q: %v", s.Name, args, err)
	}
	return opts
}

// Each node loads nats.conf with its command line: one cluster, every
// node routed to every other with the route password, JetStream on its
// volume, monitoring where the health check looks, no anonymous clients.
func TestNATSNodes(t *testing.T) {
	p := mustLoadCompose(t, nil)
	for _, name := range natsServices {
		s := service(t, p, name)
		opts := natsNodeOptions(t, s)
		if !strings.HasPrefix(s.Image, "nats:") {
			t.Errorf("%s image = %q, want the official nats image", name, s.Image)
		}
		if opts.ServerName != name || opts.Cluster.Name != "notify" || !opts.JetStream {
			t.Errorf("%s: server name %q, cluster %q, JetStream %v; want %s, notify, on", name, opts.ServerName, opts.Cluster.Name, opts.JetStream, name)
		}
		var dataVolume bool
		for _, v := range s.Volumes {
			dataVolume = dataVolume || (v.Type == types.VolumeTypeVolume && v.Source == name && v.Target == opts.StoreDir)
		}
		if !dataVolume {
			t.Errorf("%s keeps JetStream in %s, which is not its named volume (volumes %+v)", name, opts.StoreDir, s.Volumes)
		}
		if opts.Cluster.Username != "route" || opts.Cluster.Password != testSecrets["NATS_ROUTE_PASSWORD"] {
			t.Errorf("%s: routes authenticate as %q / %q, want route with NATS_ROUTE_PASSWORD", name, opts.Cluster.Username, opts.Cluster.Password)
		}
		var routes []string
		for _, r := range opts.Routes {
			pw, _ := r.User.Password()
			if r.User.Username() != "route" || pw != testSecrets["NATS_ROUTE_PASSWORD"] {
				t.Errorf("%s: route %s does not carry the route password", name, r.Redacted())
			}
			routes = append(routes, r.Host)
		}
		for _, peer := range natsServices {
			if want := peer + ":" + strconv.Itoa(opts.Cluster.Port); !slices.Contains(routes, want) {
				t.Errorf("%s routes %q lack %s", name, routes, want)
			}
		}
		if s.HealthCheck == nil || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), "127.0.0.1:"+strconv.Itoa(opts.HTTPPort)+"/healthz") {
			t.Errorf("%s healthcheck %+v does not probe its monitoring port's /healthz", name, s.HealthCheck)
		}
		var clientPublished bool
		for _, port := range s.Ports {
			clientPublished = clientPublished || int(port.Target) == opts.Port
			if int(port.Target) == opts.Cluster.Port {
				t.Errorf("%s publishes its route port %d", name, opts.Cluster.Port)
			}
		}
		if !clientPublished {
			t.Errorf("%s does not publish its client port %d (ports %+v)", name, opts.Port, s.Ports)
		}
		var users []string
		for _, u := range opts.Users {
			users = append(users, u.Username)
		}
		slices.Sort(users)
		if !slices.Equal(users, []string{"producer", "worker"}) || opts.NoAuthUser != "" {
			t.Errorf("%s users %q (no-auth user %q), want producer and worker and no anonymous access", name, users, opts.NoAuthUser)
		}
	}
}

// runNode starts a node of compose in this process on loopback: its
// settings, with random ports, no monitoring and JetStream in a temporary
// directory. withCluster keeps the cluster listener (and its password);
// routes replace compose's route hosts.
func runNode(t *testing.T, s types.ServiceConfig, withCluster bool, routes ...string) *server.Server {
	t.Helper()
	opts := natsNodeOptions(t, s)
	opts.Host = "127.0.0.1"
	opts.Port = server.RANDOM_PORT
	opts.HTTPPort = 0
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	if withCluster {
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = server.RANDOM_PORT
		opts.JetStream = false // the route tests need no JetStream meta group
	} else {
		opts.Cluster = server.ClusterOpts{}
	}
	opts.Routes = nil
	for _, r := range routes {
		u, err := url.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		opts.Routes = append(opts.Routes, u)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	go ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(waitTimeout) {
		t.Fatalf("%s not ready", s.Name)
	}
	return ns
}

// natsClient is a connection as one of nats.conf's users, with the
// asynchronous errors the server sends it (permission violations).
type natsClient struct {
	*nats.Conn
	user string
	errs chan error
}

func connectAs(t *testing.T, ns *server.Server, user, password string) (*natsClient, error) {
	t.Helper()
	c := &natsClient{user: user, errs: make(chan error, 64)}
	nc, err := nats.Connect(ns.ClientURL(),
		nats.UserInfo(user, password),
		nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.errs <- err
		}))
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	return c, nil
}

func mustConnectAs(t *testing.T, ns *server.Server, user string) *natsClient {
	t.Helper()
	c, err := connectAs(t, ns, user, testSecrets["NATS_"+strings.ToUpper(user)+"_PASSWORD"])
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	return c
}

// refused waits for the server to refuse what c just did: op ("publish"
// or "subscription") on subject.
func (c *natsClient) refused(t *testing.T, op, subject string) {
	t.Helper()
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("for %s to %q", op, subject)
	select {
	case err := <-c.errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(strings.ToLower(err.Error()), "for "+op+" to ") || !strings.Contains(err.Error(), fmt.Sprintf("%q", subject)) {
			t.Fatalf("%s: %s %s: got error %v, want %q", c.user, op, subject, err, want)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("%s may %s %s: no permissions violation within %s", c.user, op, subject, waitTimeout)
	}
}

// noErrors checks that the server has refused c nothing so far.
func (c *natsClient) noErrors(t *testing.T) {
	t.Helper()
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.errs:
		t.Fatalf("%s: %v", c.user, err)
	default:
	}
}

func subscribe(t *testing.T, c *natsClient, subject string) *nats.Subscription {
	t.Helper()
	sub, err := c.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func next(t *testing.T, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(waitTimeout)
	if err != nil {
		t.Fatalf("%s: %v", sub.Subject, err)
	}
	return m
}

// msgData is a message's payload, or nothing for no message.
func msgData(m *nats.Msg) []byte {
	if m == nil {
		return nil
	}
	return m.Data
}

func publish(t *testing.T, c *natsClient, subject, data string) {
	t.Helper()
	if err := c.Publish(subject, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

// The users of nats.conf can do what their role needs and nothing else.
// A refused publish also never arrives: the fence published after it is
// the first message a subscriber sees.
func TestNATSPermissions(t *testing.T) {
	ns := runNode(t, service(t, mustLoadCompose(t, nil), "nats-1"), false)

	for _, tc := range []struct{ user, password string }{
		{"", ""}, {"worker", "wrong"}, {"producer", testSecrets["NATS_WORKER_PASSWORD"]}, {"route", testSecrets["NATS_ROUTE_PASSWORD"]},
	} {
		if _, err := connectAs(t, ns, tc.user, tc.password); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("connect as %q with %q: %v, want an authorization violation", tc.user, tc.password, err)
		}
	}

	worker, other, producer := mustConnectAs(t, ns, "worker"), mustConnectAs(t, ns, "worker"), mustConnectAs(t, ns, "producer")

	// The worker receives its users' messages and broadcasts, sends
	// client messages upstream and answers requests.
	alice, all := subscribe(t, worker, "notify.user.alice"), subscribe(t, worker, "notify.all")
	inbound := subscribe(t, producer, "notify.inbound.*")
	worker.noErrors(t)
	producer.noErrors(t)
	publish(t, producer, "notify.user.alice", "to alice")
	publish(t, producer, "notify.all", "to all")
	publish(t, producer, "durable.notify.user.alice", "durable")
	if m := next(t, alice); string(m.Data) != "to alice" {
		t.Fatalf("worker got %q", m.Data)
	}
	if m := next(t, all); string(m.Data) != "to all" {
		t.Fatalf("worker got %q", m.Data)
	}
	publish(t, worker, "notify.inbound.alice", "from alice")
	if m := next(t, inbound); string(m.Data) != "from alice" || m.Subject != "notify.inbound.alice" {
		t.Fatalf("producer got %q on %s", m.Data, m.Subject)
	}
	go func() {
		if m, err := alice.NextMsg(waitTimeout); err == nil {
			_ = m.Respond([]byte(`{"delivered":1}`))
		}
	}()
	reply, err := producer.Request("notify.user.alice", []byte("did you get it?"), waitTimeout)
	if err != nil || string(reply.Data) != `{"delivered":1}` {
		t.Fatalf("producer request: %v %q", err, msgData(reply))
	}
	// JetStream's API, for durable replay; the barrier message it stores
	// in the stream; the advisory of a new stream leader.
	info, err := worker.Request("$JS.API.INFO", nil, waitTimeout)
	if err != nil || !strings.Contains(string(info.Data), "account_info_response") {
		t.Fatalf("worker $JS.API.INFO: %v %q", err, msgData(info))
	}
	publish(t, worker, "durable.notify.barrier", "")
	subscribe(t, worker, "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.NOTIFY")
	// Presence and events: the worker answers bulk presence requests and
	// publishes events, which producers hear.
	bulk := subscribe(t, worker, "notify.presence")
	events := subscribe(t, producer, "notify.event.>")
	for _, c := range []*natsClient{worker, producer} {
		if err := c.Flush(); err != nil { // the subscriptions are registered
			t.Fatal(err)
		}
	}
	publish(t, worker, "notify.event.online.alice", `{"name":"alice"}`)
	if m := next(t, events); m.Subject != "notify.event.online.alice" {
		t.Fatalf("producer got an event on %s", m.Subject)
	}
	go func() {
		if m, err := bulk.NextMsg(waitTimeout); err == nil {
			_ = m.Respond([]byte(`{"worker":"w","online":{}}`))
		}
	}()
	if reply, err := producer.Request("notify.presence", []byte("[]"), waitTimeout); err != nil || string(reply.Data) != `{"worker":"w","online":{}}` {
		t.Fatalf("producer bulk presence: %v %q", err, msgData(reply))
	}
	worker.noErrors(t)
	producer.noErrors(t)

	// The worker cannot notify users, read client messages or publish
	// anywhere else; a reply needs a request.
	otherAlice := subscribe(t, other, "notify.user.alice")
	other.noErrors(t)
	for _, subject := range []string{"notify.user.alice", "notify.all", "durable.notify.user.alice", "_INBOX.spoof", "notify.inbound"} {
		publish(t, worker, subject, "forged")
		worker.refused(t, "publish", subject)
	}
	publish(t, producer, "notify.user.alice", "fence")
	if m := next(t, otherAlice); string(m.Data) != "fence" {
		t.Fatalf("a refused publish arrived: %q", m.Data)
	}
	for _, subject := range []string{"notify.inbound.*", "notify.>", ">", "durable.notify.>"} {
		if _, err := worker.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		worker.refused(t, "subscription", subject)
	}

	// The producer cannot read anyone's notifications, pose as a client
	// upstream or use the JetStream API.
	for _, subject := range []string{"notify.user.*", "notify.user.alice", "notify.all", ">"} {
		if _, err := producer.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		producer.refused(t, "subscription", subject)
	}
	// Nor, through the stream that republishes what it stores without
	// "durable.", pose as a client or store the worker's barrier.
	for _, subject := range []string{"notify.inbound.alice", "$JS.API.INFO", "notify.user.alice.x",
		"durable.notify.inbound.alice", "durable.notify.barrier", "durable.notify.user.alice.x", "notify.event.offline.alice"} {
		publish(t, producer, subject, "forged")
		producer.refused(t, "publish", subject)
	}
	publish(t, worker, "notify.inbound.alice", "fence")
	if m := next(t, inbound); string(m.Data) != "fence" {
		t.Fatalf("a refused publish arrived upstream: %q", m.Data)
	}
}

// natsLog records a server's log lines.
type natsLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *natsLog) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}
func (l *natsLog) Noticef(format string, v ...any) { l.add(format, v...) }
func (l *natsLog) Warnf(format string, v ...any)   { l.add(format, v...) }
func (l *natsLog) Fatalf(format string, v ...any)  { l.add(format, v...) }
func (l *natsLog) Errorf(format string, v ...any)  { l.add(format, v...) }
func (l *natsLog) Debugf(format string, v ...any)  {}
func (l *natsLog) Tracef(format string, v ...any)  {}

func (l *natsLog) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.lines, func(line string) bool { return strings.Contains(line, s) })
}

// A node joins the cluster with the route URL compose gives it; a server
// that knows no route password does not.
func TestNATSRoutesAuthenticated(t *testing.T) {
	p := mustLoadCompose(t, nil)
	seed := runNode(t, service(t, p, "nats-1"), true)
	log := &natsLog{}
	seed.SetLogger(log, false, false)
	seedRoute := "127.0.0.1:" + strconv.Itoa(seed.ClusterAddr().Port)

	// nats-2's own route URL for nats-1, pointed at the seed.
	var withPassword string
	for _, r := range natsNodeOptions(t, service(t, p, "nats-2")).Routes {
		if r.Hostname() == "nats-1" {
			r.Host = seedRoute
			withPassword = r.String()
		}
	}
	if withPassword == "" {
		t.Fatal("nats-2 has no route to nats-1")
	}
	member := runNode(t, service(t, p, "nats-2"), true, withPassword)
	eventually(t, "nats-2 routed to nats-1", func() bool { return seed.NumRoutes() > 0 && member.NumRoutes() > 0 })
	routes := seed.NumRoutes()

	intruder := runNode(t, service(t, p, "nats-3"), true, "nats://"+seedRoute)
	eventually(t, "nats-1 to refuse a route without the password", func() bool {
		return log.contains("Router connection closed: Authentication Failure")
	})
	if seed.NumRoutes() != routes || intruder.NumRoutes() != 0 {
		t.Fatalf("routes: nats-1 %d (was %d), intruder %d; want the intruder refused", seed.NumRoutes(), routes, intruder.NumRoutes())
	}
}

// The worker binary, given the worker user as compose gives it, serves a
// client end to end through a node of nats.conf: the permissions cover
// everything the worker does, and the server refuses it nothing.
func TestWorkerAsNATSUser(t *testing.T) {
	p := mustLoadCompose(t, nil)
	ns := runNode(t, service(t, p, "nats-1"), false)
	env := environment(t, service(t, p, "worker"))
	producer := mustConnectAs(t, ns, "producer")
	inbound := subscribe(t, producer, "notify.inbound.*")
	producer.noErrors(t)

	log := newProcLog()
	cmd := execCommand(workerBinary(t))
	cmd.Env = []string{
		"NOTIFY_ADDR=127.0.0.1:0",
		"NOTIFY_NATS_URL=" + ns.ClientURL(),
		"NOTIFY_NATS_USER=" + env["NOTIFY_NATS_USER"],
		"NOTIFY_NATS_PASSWORD=" + env["NOTIFY_NATS_PASSWORD"],
		"NOTIFY_WORKER_ID=w1",
		"NOTIFY_LOG_FORMAT=json",
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	var serving struct{ Addr string }
	if err := json.Unmarshal([]byte(log.wait(t, `"msg":"notify-worker serving"`)), &serving); err != nil {
		t.Fatal(err)
	}

	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+serving.Addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer ws.Close()
	read := func() string {
		t.Helper()
		ws.SetReadDeadline(time.Now().Add(waitTimeout))
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		return string(msg)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"name":"alice"}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != `{"type":"welcome","name":"alice"}` {
		t.Fatalf("first frame %s", got)
	}
	publish(t, producer, "notify.user.alice", `{"title":"hello"}`)
	if got := read(); got != `{"title":"hello"}` {
		t.Fatalf("alice got %s", got)
	}
	publish(t, producer, "notify.all", `{"title":"everyone"}`)
	if got := read(); got != `{"title":"everyone"}` {
		t.Fatalf("alice got %s", got)
	}
	reply, err := producer.Request("notify.user.alice", []byte(`{"title":"asked"}`), waitTimeout)
	if err != nil || !strings.Contains(string(reply.Data), `"delivered":1`) {
		t.Fatalf("request: %v %q", err, msgData(reply))
	}
	if got := read(); got != `{"title":"asked"}` {
		t.Fatalf("alice got %s", got)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"ack":1}`)); err != nil {
		t.Fatal(err)
	}
	if m := next(t, inbound); m.Subject != "notify.inbound.alice" || string(m.Data) != `{"ack":1}` {
		t.Fatalf("upstream: %q on %s", m.Data, m.Subject)
	}
	producer.noErrors(t)

	// SIGINT: shut down at once, draining NATS as the worker user.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Fatalf("worker exit: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("worker did not exit after SIGINT")
	}
	for _, line := range log.all() {
		if strings.Contains(strings.ToLower(line), "permission") || strings.Contains(strings.ToLower(line), "authorization") {
			t.Errorf("worker log: %s", line)
		}
	}
}
