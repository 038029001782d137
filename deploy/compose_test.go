package deploy

import (
	"context"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// No Docker engine runs in CI, so these tests keep docker-compose.yml
// honest against the code: the Compose project's own loader must accept
// the file, the worker binary must accept the worker's environment, and
// the ports, health checks, credentials and timings must agree with what
// the worker, nats.conf and haproxy.cfg serve.

var natsServices = []string{"nats-1", "nats-2", "nats-3"}

// loadCompose loads docker-compose.yml with no variables from the host:
// only testSecrets, with extra added (or, for an empty value, removed).
func loadCompose(t *testing.T, extra map[string]string) (*types.Project, error) {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for k, v := range testSecrets {
		vars[k] = v
	}
	for k, v := range extra {
		if v == "" {
			delete(vars, k)
		} else {
			vars[k] = v
		}
	}
	var env []string
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, filepath.Base(composeFile))},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(env),
		cli.WithName("notify"),
		cli.WithInterpolation(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

func mustLoadCompose(t *testing.T, extra map[string]string) *types.Project {
	t.Helper()
	p, err := loadCompose(t, extra)
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return s
}

// environment returns a service's environment, failing on a variable
// passed through from the host without a value.
func environment(t *testing.T, s types.ServiceConfig) map[string]string {
	t.Helper()
	env := map[string]string{}
	for k, v := range s.Environment {
		if v == nil {
			t.Errorf("%s passes %s through from the host; give it a value", s.Name, k)
			continue
		}
		env[k] = *v
	}
	return env
}

// setting returns a worker setting that compose must set explicitly.
func setting(t *testing.T, env map[string]string, name string) string {
	t.Helper()
	v, ok := env[name]
	if !ok {
		t.Fatalf("the worker service does not set %s; set it explicitly", name)
	}
	return v
}

func durationSetting(t *testing.T, env map[string]string, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(setting(t, env, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// addrPort returns the port of a listen address such as ":8888".
func addrPort(t *testing.T, addr string) uint32 {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return uint32(n)
}

// Every secret the fleet needs must be exported: the file does not load
// without it (rather than starting with an empty password).
func TestComposeRequiresSecrets(t *testing.T) {
	for name := range testSecrets {
		t.Run(name, func(t *testing.T) {
			_, err := loadCompose(t, map[string]string{name: ""})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("loading without %s: %v, want an error naming it", name, err)
			}
		})
	}
}

func TestComposeFile(t *testing.T) {
	p := mustLoadCompose(t, nil)
	if p.Name != "notify" {
		t.Errorf("project name = %q", p.Name)
	}

	// Only the worker reads NOTIFY_* variables; the NATS nodes read the
	// passwords that nats.conf expands, and nothing else.
	natsEnv := []string{"NATS_PRODUCER_PASSWORD", "NATS_ROUTE_PASSWORD", "NATS_WORKER_PASSWORD"}
	for _, s := range p.Services {
		env := environment(t, s)
		var keys []string
		for k := range env {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		switch {
		case s.Name == "worker":
			for _, k := range keys {
				if !strings.HasPrefix(k, "NOTIFY_") {
					t.Errorf("worker sets %s; it reads only NOTIFY_* variables", k)
				}
			}
		case slices.Contains(natsServices, s.Name):
			if !slices.Equal(keys, natsEnv) {
				t.Errorf("%s environment %q, want %q", s.Name, keys, natsEnv)
			}
			for _, k := range keys {
				if env[k] != testSecrets[k] {
					t.Errorf("%s gets %s = %q, want the exported value", s.Name, k, env[k])
				}
			}
		case len(keys) > 0:
			t.Errorf("service %s sets %q; it reads no environment", s.Name, keys)
		}
	}

	wk := service(t, p, "worker")
	env := environment(t, wk)
	httpPort := addrPort(t, setting(t, env, "NOTIFY_ADDR"))

	// The fleet is a production deployment: clients prove their names
	// with the operator's secret (TestWorkerEnvironmentPassesCheck shows
	// the worker accepts it).
	if env["NOTIFY_AUTH"] != "jwt" || env["NOTIFY_JWT_SECRET"] != testSecrets["NOTIFY_JWT_SECRET"] {
		t.Errorf("worker auth = %q with secret %q; want jwt with the operator's NOTIFY_JWT_SECRET", env["NOTIFY_AUTH"], env["NOTIFY_JWT_SECRET"])
	}

	// Replicas are interchangeable and scalable: no fixed name, no host
	// port; the load balancer reaches them on NOTIFY_ADDR's port.
	if wk.ContainerName != "" || len(wk.Ports) != 0 {
		t.Errorf("worker has container_name %q / ports %v; --scale needs neither", wk.ContainerName, wk.Ports)
	}
	if wk.Deploy == nil || wk.Deploy.Replicas == nil || *wk.Deploy.Replicas != 3 {
		t.Errorf("worker replicas = %v, want 3", wk.Deploy)
	}
	// Metrics are private: a listener of their own, exposed on the
	// compose network for Prometheus (one scrape per replica), and
	// published nowhere.
	metricsPort := addrPort(t, setting(t, env, "NOTIFY_METRICS_ADDR"))
	if metricsPort == httpPort {
		t.Errorf("NOTIFY_METRICS_ADDR %s shares NOTIFY_ADDR's port", env["NOTIFY_METRICS_ADDR"])
	}
	if !slices.Equal([]string(wk.Expose), []string{strconv.Itoa(int(httpPort)), strconv.Itoa(int(metricsPort))}) {
		t.Errorf("worker exposes %v, NOTIFY_ADDR is %s and NOTIFY_METRICS_ADDR %s", wk.Expose, env["NOTIFY_ADDR"], env["NOTIFY_METRICS_ADDR"])
	}
	// The healthcheck mode probes /readyz on NOTIFY_ADDR's port.
	if wk.HealthCheck == nil || !slices.Equal([]string(wk.HealthCheck.Test), []string{"CMD", "/notify-worker", "healthcheck"}) {
		t.Errorf("worker healthcheck = %+v, want CMD /notify-worker healthcheck", wk.HealthCheck)
	}

	// Every worker knows every NATS node, on the port that node serves
	// clients on (TestNATSNodes reads the nodes' settings).
	urls := strings.Split(setting(t, env, "NOTIFY_NATS_URL"), ",")
	if len(urls) != len(natsServices) {
		t.Errorf("NOTIFY_NATS_URL = %q, want one URL per NATS node", urls)
	}
	for i, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("NOTIFY_NATS_URL %q: %v", raw, err)
		}
		if u.Scheme != "nats" || u.Hostname() != natsServices[i] || u.User != nil {
			t.Errorf("NOTIFY_NATS_URL[%d] = %q, want nats://%s:<port> without credentials", i, raw, natsServices[i])
			continue
		}
		if want := strconv.Itoa(natsNodeOptions(t, service(t, p, u.Hostname())).Port); u.Port() != want {
			t.Errorf("NOTIFY_NATS_URL[%d] uses port %s, %s serves clients on %s", i, u.Port(), u.Hostname(), want)
		}
	}
	// The worker logs in as the worker user of nats.conf.
	if env["NOTIFY_NATS_USER"] != "worker" || env["NOTIFY_NATS_PASSWORD"] != testSecrets["NATS_WORKER_PASSWORD"] {
		t.Errorf("worker NATS user %q password %q; want worker with NATS_WORKER_PASSWORD", env["NOTIFY_NATS_USER"], env["NOTIFY_NATS_PASSWORD"])
	}

	// The load balancer publishes the port its config binds, and sends
	// clients to the workers' NOTIFY_ADDR port.
	lb := service(t, p, "lb")
	if !strings.HasPrefix(lb.Image, "haproxy:") {
		t.Errorf("lb image = %q, want the official haproxy image", lb.Image)
	}
	if !mounts(lb, haproxyConfig, "/usr/local/etc/haproxy/haproxy.cfg") {
		t.Errorf("lb does not mount deploy/%s as its config (volumes %+v)", haproxyConfig, lb.Volumes)
	}
	hc := readHAProxy(t, haproxyConfig)
	bind := addrPort(t, hc.section(t, "frontend websocket").arg(t, "bind"))
	var lbPublishes bool
	for _, port := range lb.Ports {
		lbPublishes = lbPublishes || port.Target == bind
	}
	if !lbPublishes {
		t.Errorf("lb binds :%d but publishes %+v", bind, lb.Ports)
	}
	workers := hc.section(t, "backend workers")
	serverAddr := workers.find(t, "server-template")[2] // <prefix> <range> <address>
	if host, port, err := net.SplitHostPort(serverAddr); err != nil || host != "worker" || port != strconv.Itoa(int(httpPort)) {
		t.Errorf("haproxy sends clients to %s, want worker:%d", serverAddr, httpPort)
	}
	if check, expect := strings.Join(workers.find(t, "option", "httpchk"), " "), strings.Join(workers.find(t, "http-check", "expect"), " "); check != "GET /readyz" || expect != "status 200" {
		t.Errorf("haproxy checks %q expecting %q, want GET /readyz expecting status 200", check, expect)
	}
}

// mounts reports whether s mounts deploy/<file> at target, read-only.
func mounts(s types.ServiceConfig, file, target string) bool {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && strings.HasSuffix(v.Source, string(filepath.Separator)+filepath.Join("deploy", file)) &&
			v.Target == target && v.ReadOnly {
			return true
		}
	}
	return false
}

// Published ports listen on loopback unless the operator names an address
// for clients or producers; monitoring and stats have no password and stay
// on loopback whatever is set. Routes and workers publish nothing.
func TestComposePublishesOnLoopback(t *testing.T) {
	type published struct{ hostIP, port string }
	ports := func(p *types.Project, name string) map[uint32]published {
		got := map[uint32]published{}
		for _, port := range service(t, p, name).Ports {
			got[port.Target] = published{port.HostIP, port.Published}
		}
		return got
	}
	for _, tc := range []struct {
		name             string
		vars             map[string]string
		clients, produce string
	}{
		{"default", nil, "127.0.0.1", "127.0.0.1"},
		{"opened", map[string]string{"CLIENT_HOST_IP": "0.0.0.0", "PRODUCER_HOST_IP": "192.0.2.7"}, "0.0.0.0", "192.0.2.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustLoadCompose(t, tc.vars)
			want := map[string]map[uint32]published{
				"nats-1": {4222: {tc.produce, "4222"}, 8222: {"127.0.0.1", "8222"}},
				"nats-2": {4222: {tc.produce, "4223"}},
				"nats-3": {4222: {tc.produce, "4224"}},
				"lb":     {8888: {tc.clients, "8888"}, 8404: {"127.0.0.1", "8404"}},
				"worker": {},
			}
			for _, s := range p.Services {
				w, ok := want[s.Name]
				if !ok {
					t.Errorf("service %s: no expectation for its ports", s.Name)
					continue
				}
				if got := ports(p, s.Name); !mapsEqual(got, w) {
					t.Errorf("%s publishes %+v, want %+v", s.Name, got, w)
				}
			}
		})
	}
}

func mapsEqual[K, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// checkTimeout bounds `notify-worker check`, which starts nothing and
// returns at once; a binary without the mode would serve instead.
const checkTimeout = 15 * time.Second

// check runs `notify-worker check` with exactly env as its environment.
func check(t *testing.T, env map[string]string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, workerBinary(t), "check")
	cmd.Env = []string{}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("notify-worker check still running after %s (does the binary have the check mode?); stderr:\n%s", checkTimeout, errOut.String())
	}
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("notify-worker check: %v", err)
	}
	return out.String(), errOut.String(), code
}

// containerEnv is the worker container's environment: the image's ENV
// with the compose service's environment over it.
func containerEnv(t *testing.T) map[string]string {
	t.Helper()
	env := dockerfileEnv(t)
	for k, v := range environment(t, service(t, mustLoadCompose(t, nil), "worker")) {
		env[k] = v
	}
	return env
}

// The worker accepts the environment compose gives it, by its own rules
// (every setting validated, the JWT verifier built, an unknown NOTIFY_*
// variable refused), and a mistake in it would be caught.
func TestWorkerEnvironmentPassesCheck(t *testing.T) {
	if n := len(testSecrets["NOTIFY_JWT_SECRET"]); n != 48 {
		t.Fatalf("test secret has %d bytes, want 48", n)
	}
	env := containerEnv(t)
	stdout, stderr, code := check(t, env)
	if code != 0 || strings.TrimSpace(stdout) != "configuration ok" {
		t.Fatalf("notify-worker check on the worker service's environment: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	for _, tc := range []struct{ name, variable, value string }{
		{"misspelt variable", "NOTIFY_DRAIN_DELAYS", "5s"},
		{"bad value", "NOTIFY_DRAIN_DELAY", "soon"},
	} {
		bad := maps.Clone(env)
		bad[tc.variable] = tc.value
		_, stderr, code = check(t, bad)
		if code != 2 || !strings.Contains(stderr, "notify-worker: config: "+tc.variable) {
			t.Errorf("check with a %s: exit %d, stderr %q; want exit 2 naming %s", tc.name, code, stderr, tc.variable)
		}
	}
}

// graceMargin is the time a worker is given past its own shutdown limit to
// exit before the runtime kills it.
const graceMargin = 5 * time.Second

// docker stop sends SIGTERM and kills after stop_grace_period. The worker
// needs NOTIFY_DRAIN_DELAY, then at most NOTIFY_SHUTDOWN_TIMEOUT, to
// finish; both must be explicit in compose for this to be a promise.
func TestStopGracePeriodCoversShutdown(t *testing.T) {
	env := containerEnv(t)
	wk := service(t, mustLoadCompose(t, nil), "worker")
	drain, shutdown := durationSetting(t, env, "NOTIFY_DRAIN_DELAY"), durationSetting(t, env, "NOTIFY_SHUTDOWN_TIMEOUT")
	need := drain + shutdown + graceMargin
	if wk.StopGracePeriod == nil || time.Duration(*wk.StopGracePeriod) < need {
		t.Errorf("worker stop_grace_period %v, want at least NOTIFY_DRAIN_DELAY %s + NOTIFY_SHUTDOWN_TIMEOUT %s + %s = %s",
			wk.StopGracePeriod, drain, shutdown, graceMargin, need)
	}
	if wk.StopSignal != "SIGTERM" {
		t.Errorf("worker stop_signal %q, want SIGTERM (SIGINT skips the drain delay)", wk.StopSignal)
	}
}

// While a worker drains, HAProxy must notice its 503 before it stops
// accepting: the worst case is inter x fall after SIGTERM, plus the time
// the last check may take. Compose's NOTIFY_DRAIN_DELAY and the worker's
// default both cover it.
func TestDrainDelayCoversHAProxyCheck(t *testing.T) {
	hc := readHAProxy(t, haproxyConfig)
	workers := hc.section(t, "backend workers")
	ds := workers.find(t, "default-server")
	inter, fall := hcDuration(t, keywordArg(t, ds, "inter")), keywordArg(t, ds, "fall")
	n, err := strconv.Atoi(fall)
	if err != nil {
		t.Fatalf("fall %q: %v", fall, err)
	}
	checkTimeout := hcDuration(t, hc.timeout(t, "backend workers", "check"))
	need := inter*time.Duration(n) + checkTimeout

	if got := durationSetting(t, containerEnv(t), "NOTIFY_DRAIN_DELAY"); got < need {
		t.Errorf("compose NOTIFY_DRAIN_DELAY %s < inter %s x fall %d + timeout check %s = %s", got, inter, n, checkTimeout, need)
	}
	def, err := time.ParseDuration(configDefault(t, "DRAIN_DELAY"))
	if err != nil {
		t.Fatal(err)
	}
	if def < need {
		t.Errorf("NOTIFY_DRAIN_DELAY default %s < inter %s x fall %d + timeout check %s = %s", def, inter, n, checkTimeout, need)
	}
	t.Logf("HAProxy needs up to %s to take a draining worker out; NOTIFY_DRAIN_DELAY default %s", need, def)
}

// execCommand is exec.Command with an empty environment, so that nothing
// from the test's environment reaches the child unless given.
func execCommand(path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Env = []string{}
	return cmd
}

func mustReadFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
