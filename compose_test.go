package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/kelseyhightower/envconfig"
)

// No Docker engine runs in CI, so these tests keep docker-compose.yml,
// deploy/haproxy.cfg and the Dockerfile honest against the code: the
// Compose project's own loader must accept the file, every NOTIFY_*
// variable must be a Config field with a value Config accepts, and the
// ports and health checks must be the ones the worker serves.

const (
	composeFile   = "docker-compose.yml"
	haproxyConfig = "deploy/haproxy.cfg"
	natsServices  = 3
)

// configVars returns NOTIFY_<tag> for every field of Config.
func configVars(t *testing.T) map[string]reflect.StructField {
	t.Helper()
	vars := map[string]reflect.StructField{}
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("envconfig")
		if tag == "" {
			t.Fatalf("Config.%s has no envconfig tag", f.Name)
		}
		vars["NOTIFY_"+tag] = f
	}
	return vars
}

// composeTestSecret stands in for the secret an operator exports.
const composeTestSecret = "compose-test-secret-compose-test-secret"

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// No variables from the host: the file must load on its defaults
	// and the one secret it requires.
	opts, err := cli.NewProjectOptions([]string{filepath.Join(wd, composeFile)},
		cli.WithWorkingDirectory(wd),
		cli.WithEnv([]string{"NOTIFY_JWT_SECRET=" + composeTestSecret}),
		cli.WithName("notify"),
		cli.WithInterpolation(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
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

// flagValue returns the value of --name=value in a command, or "".
func flagValue(cmd []string, name string) string {
	for _, arg := range cmd {
		if v, ok := strings.CutPrefix(arg, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// workerConfig loads the worker service's environment through envconfig,
// as the worker itself would.
func workerConfig(t *testing.T, env types.MappingWithEquals) Config {
	t.Helper()
	vars := configVars(t)
	for k, v := range env {
		if _, ok := vars[k]; !ok {
			t.Errorf("worker sets %s, which is not a Config field", k)
			continue
		}
		if v == nil {
			t.Errorf("worker passes %s through from the host; give it a value", k)
			continue
		}
		t.Setenv(k, *v)
	}
	var cfg Config
	if err := envconfig.Process("NOTIFY", &cfg); err != nil {
		t.Fatalf("worker environment: %v", err)
	}
	if _, err := cfg.plan(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	if p.Name != "notify" {
		t.Errorf("project name = %q", p.Name)
	}

	// Only the worker reads NOTIFY_* variables.
	for _, s := range p.Services {
		for k := range s.Environment {
			if strings.HasPrefix(k, "NOTIFY_") != (s.Name == "worker") {
				t.Errorf("service %s sets %s; NOTIFY_* variables belong to the worker, and the worker takes nothing else", s.Name, k)
			}
		}
	}

	wk := service(t, p, "worker")
	cfg := workerConfig(t, wk.Environment)
	httpPort := addrPort(t, cfg.Addr)

	// The fleet is a production deployment: clients prove their names,
	// and the settings given build a working verifier.
	if cfg.Auth != "jwt" || cfg.JWTSecret != composeTestSecret {
		t.Errorf("worker auth = %q with secret %q; want jwt with the operator's NOTIFY_JWT_SECRET", cfg.Auth, cfg.JWTSecret)
	}
	p2, err := cfg.plan()
	if err != nil {
		t.Fatal(err)
	}
	authn, err := newAuthenticator(context.Background(), p2.auth, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil || authn.hub() == nil {
		t.Errorf("worker auth settings do not build a verifier: %v", err)
	} else {
		authn.close()
	}

	// Replicas are interchangeable and scalable: no fixed name, no host
	// port; the load balancer reaches them on NOTIFY_ADDR's port.
	if wk.ContainerName != "" || len(wk.Ports) != 0 {
		t.Errorf("worker has container_name %q / ports %v; --scale needs neither", wk.ContainerName, wk.Ports)
	}
	if wk.Deploy == nil || wk.Deploy.Replicas == nil || *wk.Deploy.Replicas != 3 {
		t.Errorf("worker replicas = %v, want 3", wk.Deploy)
	}
	if !slices.Equal([]string(wk.Expose), []string{strconv.Itoa(int(httpPort))}) {
		t.Errorf("worker exposes %v, NOTIFY_ADDR is %s", wk.Expose, cfg.Addr)
	}
	// The healthcheck mode probes /readyz on NOTIFY_ADDR's port
	// (TestHealthcheckProbesReadyz).
	if wk.HealthCheck == nil || !slices.Equal([]string(wk.HealthCheck.Test), []string{"CMD", "/notify-worker", "healthcheck"}) {
		t.Errorf("worker healthcheck = %+v, want CMD /notify-worker healthcheck", wk.HealthCheck)
	}
	if wk.StopGracePeriod == nil || int64(*wk.StopGracePeriod) <= int64(cfg.ShutdownTimeout) {
		t.Errorf("worker stop_grace_period %v must exceed NOTIFY_SHUTDOWN_TIMEOUT %s", wk.StopGracePeriod, cfg.ShutdownTimeout)
	}

	// Every worker knows every NATS node, on the port that node serves
	// clients on.
	var natsNames []string
	for i := 1; i <= natsServices; i++ {
		natsNames = append(natsNames, "nats-"+strconv.Itoa(i))
	}
	if len(cfg.NATSURLs) != natsServices {
		t.Errorf("NOTIFY_NATS_URL = %q, want one URL per NATS node", cfg.NATSURLs)
	}
	for i, raw := range cfg.NATSURLs {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("NOTIFY_NATS_URL %q: %v", raw, err)
		}
		if u.Scheme != "nats" || u.Hostname() != natsNames[i] {
			t.Errorf("NOTIFY_NATS_URL[%d] = %q, want nats://%s:<port>", i, raw, natsNames[i])
			continue
		}
		if want := flagValue(service(t, p, u.Hostname()).Command, "port"); u.Port() != want {
			t.Errorf("NOTIFY_NATS_URL[%d] uses port %s, %s serves clients on %s", i, u.Port(), u.Hostname(), want)
		}
	}

	// The NATS nodes form one cluster with JetStream, and producers reach
	// each of them on a published port.
	published := map[string]string{}
	for _, name := range natsNames {
		s := service(t, p, name)
		cmd := s.Command
		if !strings.HasPrefix(s.Image, "nats:") {
			t.Errorf("%s image = %q, want the official nats image", name, s.Image)
		}
		if flagValue(cmd, "name") != name || flagValue(cmd, "cluster_name") == "" || !slices.Contains(cmd, "--jetstream") {
			t.Errorf("%s command %q: want --name=%s, a --cluster_name and --jetstream", name, cmd, name)
		}
		cluster, err := url.Parse(flagValue(cmd, "cluster"))
		if err != nil || cluster.Port() == "" {
			t.Fatalf("%s --cluster %q: %v", name, flagValue(cmd, "cluster"), err)
		}
		var routes []string
		for r := range strings.SplitSeq(flagValue(cmd, "routes"), ",") {
			routes = append(routes, r)
		}
		for _, peer := range natsNames {
			if want := "nats://" + peer + ":" + cluster.Port(); !slices.Contains(routes, want) {
				t.Errorf("%s routes %q lack %s", name, routes, want)
			}
		}
		clientPort := flagValue(cmd, "port")
		var found bool
		for _, port := range s.Ports {
			if strconv.Itoa(int(port.Target)) != clientPort {
				continue
			}
			found = true
			if other, dup := published[port.Published]; dup {
				t.Errorf("%s and %s both publish host port %s", name, other, port.Published)
			}
			published[port.Published] = name
		}
		if !found {
			t.Errorf("%s does not publish its client port %s (ports %+v)", name, clientPort, s.Ports)
		}
		if s.HealthCheck == nil || !strings.Contains(strings.Join(s.HealthCheck.Test, " "),
			":"+flagValue(cmd, "http_port")+"/healthz") {
			t.Errorf("%s healthcheck %+v does not probe its monitoring port's /healthz", name, s.HealthCheck)
		}
	}

	// The load balancer publishes the port its config binds, and sends
	// clients to the workers' NOTIFY_ADDR port.
	lb := service(t, p, "lb")
	if !strings.HasPrefix(lb.Image, "haproxy:") {
		t.Errorf("lb image = %q, want the official haproxy image", lb.Image)
	}
	var mounted bool
	for _, v := range lb.Volumes {
		if strings.HasSuffix(v.Source, filepath.FromSlash(haproxyConfig)) && v.Target == "/usr/local/etc/haproxy/haproxy.cfg" {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("lb does not mount %s as its config (volumes %+v)", haproxyConfig, lb.Volumes)
	}
	hc := readHAProxy(t)
	bind := addrPort(t, hc.frontendBind)
	var lbPublishes bool
	for _, port := range lb.Ports {
		lbPublishes = lbPublishes || port.Target == bind
	}
	if !lbPublishes {
		t.Errorf("lb binds :%d but publishes %+v", bind, lb.Ports)
	}
	host, port, err := net.SplitHostPort(hc.serverAddr)
	if err != nil {
		t.Fatalf("haproxy server address %q: %v", hc.serverAddr, err)
	}
	if host != "worker" || port != strconv.Itoa(int(httpPort)) {
		t.Errorf("haproxy sends clients to %s, want worker:%d", hc.serverAddr, httpPort)
	}
	if hc.check != "GET /readyz" || hc.expect != "status 200" {
		t.Errorf("haproxy checks %q expecting %q, want GET /readyz expecting status 200", hc.check, hc.expect)
	}
}

// haproxyWorkers is what the tests need to know of deploy/haproxy.cfg.
type haproxyWorkers struct {
	frontendBind string // the websocket frontend's bind address
	serverAddr   string // where server-template sends clients
	check        string // option httpchk <method> <path>
	expect       string // http-check expect ...
}

func readHAProxy(t *testing.T) haproxyWorkers {
	t.Helper()
	f, err := os.Open(haproxyConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		hc      haproxyWorkers
		section string
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if !strings.HasPrefix(sc.Text(), " ") && !strings.HasPrefix(sc.Text(), "\t") {
			section = line
			continue
		}
		switch {
		case section == "frontend websocket" && fields[0] == "bind":
			hc.frontendBind = fields[1]
		case section == "backend workers" && fields[0] == "server-template" && len(fields) >= 4:
			hc.serverAddr = fields[3]
		case section == "backend workers" && len(fields) >= 2 && fields[0] == "option" && fields[1] == "httpchk":
			hc.check = strings.Join(fields[2:], " ")
		case section == "backend workers" && len(fields) >= 2 && fields[0] == "http-check" && fields[1] == "expect":
			hc.expect = strings.Join(fields[2:], " ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if hc.frontendBind == "" || hc.serverAddr == "" {
		t.Fatalf("%s: no websocket frontend bind or workers server-template", haproxyConfig)
	}
	return hc
}

// The image exposes the port the worker listens on by default and checks
// its health the way the compose file does.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	vars := configVars(t)
	addr, _ := reflect.TypeFor[Config]().FieldByName("Addr")
	wantPort := strconv.Itoa(int(addrPort(t, addr.Tag.Get("default"))))

	var expose, healthcheck, user string
	for line := range strings.Lines(strings.ReplaceAll(string(data), "\\\n", " ")) {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "EXPOSE":
			expose = fields[1]
		case "HEALTHCHECK":
			healthcheck = line
		case "USER":
			user = fields[1]
		case "ENV":
			k, v, _ := strings.Cut(fields[1], "=")
			if _, ok := vars[k]; !ok {
				t.Errorf("Dockerfile sets %s, which is not a Config field", k)
			}
			if k == "NOTIFY_ADDR" && strconv.Itoa(int(addrPort(t, strings.Trim(v, `"`)))) != wantPort {
				t.Errorf("Dockerfile NOTIFY_ADDR %s does not listen on %s", v, wantPort)
			}
		}
	}
	if expose != wantPort {
		t.Errorf("EXPOSE %q, the worker listens on %s", expose, wantPort)
	}
	if !strings.Contains(healthcheck, `CMD ["/notify-worker", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %q does not run the healthcheck mode", healthcheck)
	}
	if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
		t.Errorf("USER %q: the image must not run as root", user)
	}
}
