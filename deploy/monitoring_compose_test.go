package deploy

import (
	"context"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

const monitoringProfile = "monitoring"

var (
	natsExporters      = []string{"nats-exporter-1", "nats-exporter-2", "nats-exporter-3"}
	monitoringServices = append([]string{"prometheus", "grafana"}, natsExporters...)
)

// loadComposeProfile loads docker-compose.yml as loadCompose does, with
// the given profiles enabled.
func loadComposeProfile(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for k, v := range testSecrets {
		env = append(env, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, filepath.Base(composeFile))},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(env),
		cli.WithName("notify"),
		cli.WithInterpolation(true),
		cli.WithConsistency(true),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load %s with profiles %q: %v", composeFile, profiles, err)
	}
	return p
}

// bindSource returns the repository path s mounts at target, read-only.
func bindSource(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target {
			if v.Type != types.VolumeTypeBind || !v.ReadOnly {
				t.Errorf("%s mounts %s as %s (read-only %v), want a read-only bind mount", s.Name, target, v.Type, v.ReadOnly)
			}
			return v.Source
		}
	}
	t.Fatalf("%s mounts nothing at %s (volumes %+v)", s.Name, target, s.Volumes)
	return ""
}

// The monitoring services exist only with the profile, so a plain
// `docker compose up` starts the fleet alone.
func TestComposeMonitoringIsOptional(t *testing.T) {
	p := mustLoadCompose(t, nil)
	for _, name := range monitoringServices {
		if _, err := p.GetService(name); err == nil {
			t.Errorf("%s runs without --profile %s", name, monitoringProfile)
		}
	}
	withProfile := loadComposeProfile(t, monitoringProfile)
	for _, s := range withProfile.Services {
		if slices.Contains(monitoringServices, s.Name) != slices.Contains(s.Profiles, monitoringProfile) {
			t.Errorf("service %s has profiles %q", s.Name, s.Profiles)
		}
	}
	if n := len(withProfile.Services); n != len(p.Services)+len(monitoringServices) {
		t.Errorf("--profile %s runs %d services, want the fleet's %d and %q", monitoringProfile, n, len(p.Services), monitoringServices)
	}
}

// The profile's services: pinned images, files mounted from the
// repository that exist, ports on loopback, and a start order that
// follows what each one reads.
func TestComposeMonitoring(t *testing.T) {
	p := loadComposeProfile(t, monitoringProfile)
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]string{
		"prometheus": "prom/prometheus:",
		"grafana":    "grafana/grafana:",
	}
	for _, name := range natsExporters {
		images[name] = "natsio/prometheus-nats-exporter:"
	}
	ports := map[string]map[uint32]string{
		"prometheus": {9090: "9090"},
		"grafana":    {3000: "3000"},
	}
	for _, name := range monitoringServices {
		s := service(t, p, name)
		tag, ok := strings.CutPrefix(s.Image, images[name])
		if !ok || tag == "" || tag == "latest" || strings.ContainsAny(tag, "${") {
			t.Errorf("%s image %q, want %s<pinned tag>", name, s.Image, images[name])
		}
		if env := environment(t, s); len(env) > 0 {
			t.Errorf("%s sets environment %v", name, env)
		}
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			rel, err := filepath.Rel(root, v.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s mounts %s from outside the repository", name, v.Source)
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which is not in the repository: %v", name, rel, err)
			}
			if !v.ReadOnly {
				t.Errorf("%s mounts %s writable", name, rel)
			}
		}
		got := map[uint32]string{}
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %d on %q; monitoring has no password, keep it on 127.0.0.1", name, port.Target, port.HostIP)
			}
			got[port.Target] = port.Published
		}
		if !mapsEqual(got, ports[name]) {
			t.Errorf("%s publishes %v, want %v", name, got, ports[name])
		}
	}

	dependsOn := func(name string, want ...string) {
		t.Helper()
		s := service(t, p, name)
		for _, w := range want {
			if _, ok := s.DependsOn[w]; !ok {
				t.Errorf("%s does not depend on %s (depends_on %v)", name, w, slices.Sorted(maps.Keys(s.DependsOn)))
			}
		}
	}
	dependsOn("grafana", "prometheus")
	dependsOn("prometheus", append([]string{"worker"}, natsExporters...)...)

	// Each exporter polls its own node's monitoring port.
	for i, name := range natsExporters {
		s := service(t, p, name)
		dependsOn(name, natsServices[i])
		var target *url.URL
		for _, arg := range s.Command {
			if strings.HasPrefix(arg, "http://") {
				if target, err = url.Parse(arg); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
		}
		if target == nil {
			t.Errorf("%s command %q names no NATS monitoring URL", name, s.Command)
			continue
		}
		if want := strconv.Itoa(natsNodeOptions(t, service(t, p, natsServices[i])).HTTPPort); target.Hostname() != natsServices[i] || target.Port() != want {
			t.Errorf("%s polls %s, want http://%s:%s (its node's monitoring port)", name, target, natsServices[i], want)
		}
		if !slices.Contains([]string(s.Command), "-varz") || !slices.ContainsFunc([]string(s.Command), func(a string) bool { return strings.HasPrefix(a, "-jsz") }) {
			t.Errorf("%s command %q; want at least -varz and -jsz", name, s.Command)
		}
		if !slices.Equal([]string(s.Expose), []string{"7777"}) {
			t.Errorf("%s exposes %v, want 7777 (the exporter's port)", name, s.Expose)
		}
	}

	// Prometheus reads the config and the rules from the repository.
	prom := service(t, p, "prometheus")
	if src := bindSource(t, prom, "/etc/prometheus/prometheus.yml"); !sameFile(t, src, prometheusConfig) {
		t.Errorf("prometheus mounts %s as its config, want deploy/%s", src, prometheusConfig)
	}
	if !slices.Contains([]string(prom.Command), "--config.file=/etc/prometheus/prometheus.yml") {
		t.Errorf("prometheus command %q does not load /etc/prometheus/prometheus.yml", prom.Command)
	}

	// Grafana loads the data source and the dashboard from the repository.
	graf := service(t, p, "grafana")
	bindSource(t, graf, "/etc/grafana/provisioning/datasources")
	bindSource(t, graf, "/etc/grafana/provisioning/dashboards")
	var providers struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name            string `yaml:"name"`
			Type            string `yaml:"type"`
			DisableDeletion bool   `yaml:"disableDeletion"`
			AllowUIUpdates  bool   `yaml:"allowUiUpdates"`
			Options         struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "grafana/provisioning/dashboards/notify-worker.yml", &providers)
	if len(providers.Providers) != 1 || providers.Providers[0].Type != "file" {
		t.Fatalf("dashboard providers %+v, want one of type file", providers.Providers)
	}
	dashDir := providers.Providers[0].Options.Path
	if src := bindSource(t, graf, dashDir+"/"+filepath.Base(dashboardFile)); !sameFile(t, src, dashboardFile) {
		t.Errorf("grafana mounts %s in %s, want deploy/%s", src, dashDir, dashboardFile)
	}
	var datasources struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string `yaml:"name"`
			Type      string `yaml:"type"`
			UID       string `yaml:"uid"`
			Access    string `yaml:"access"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
			Editable  bool   `yaml:"editable"`
		} `yaml:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/prometheus.yml", &datasources)
	if len(datasources.Datasources) != 1 {
		t.Fatalf("data sources %+v, want one", datasources.Datasources)
	}
	ds := datasources.Datasources[0]
	u, err := url.Parse(ds.URL)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Type != "prometheus" || !ds.IsDefault || u.Hostname() != "prometheus" || u.Port() != "9090" {
		t.Errorf("data source %+v, want the default, of type prometheus, at the prometheus service's port 9090", ds)
	}
}

// sameFile reports whether the absolute path src is deploy/<rel>.
func sameFile(t *testing.T, src, rel string) bool {
	t.Helper()
	abs, err := filepath.Abs(rel)
	if err != nil {
		t.Fatal(err)
	}
	return src == abs
}

// prometheusScrapeConfig is the part of prometheus.yml these tests read.
type prometheusScrapeConfig struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName      string `yaml:"job_name"`
		DNSSDConfigs []struct {
			Names           []string `yaml:"names"`
			Type            string   `yaml:"type"`
			Port            int      `yaml:"port"`
			RefreshInterval string   `yaml:"refresh_interval"`
		} `yaml:"dns_sd_configs"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// Prometheus's scrape targets are services of the profile, on the ports
// they serve metrics on: every worker replica by DNS on its metrics port,
// every NATS node through its exporter. The rule files it loads are
// mounted next to its config.
func TestPrometheusScrapesTheFleet(t *testing.T) {
	p := loadComposeProfile(t, monitoringProfile)
	var cfg prometheusScrapeConfig
	readYAML(t, prometheusConfig, &cfg)

	prom := service(t, p, "prometheus")
	for _, f := range cfg.RuleFiles {
		if src := bindSource(t, prom, "/etc/prometheus/"+f); !sameFile(t, src, filepath.Join(filepath.Dir(prometheusConfig), f)) {
			t.Errorf("rule file %s is mounted from %s", f, src)
		}
	}
	if !slices.Contains(cfg.RuleFiles, filepath.Base(alertsFile)) {
		t.Errorf("prometheus.yml loads rules %q, not %s", cfg.RuleFiles, filepath.Base(alertsFile))
	}

	// The port every worker replica serves /metrics on: its metrics
	// listener when it has one.
	workerEnv := containerEnv(t)
	metricsPort := uint32(0)
	if addr, ok := workerEnv["NOTIFY_METRICS_ADDR"]; ok {
		metricsPort = addrPort(t, addr)
	} else {
		t.Logf("the worker service sets no NOTIFY_METRICS_ADDR; the scrape port is checked once it does")
	}

	jobs := map[string]bool{}
	scraped := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
		for _, dns := range sc.DNSSDConfigs {
			if dns.Type != "A" {
				t.Errorf("job %s: dns_sd type %q, want A (Docker's DNS answers one A record per replica)", sc.JobName, dns.Type)
			}
			for _, name := range dns.Names {
				if _, err := p.GetService(name); err != nil {
					t.Errorf("job %s looks up %q, which is no service", sc.JobName, name)
				}
				scraped[name] = true
				if name == "worker" && metricsPort != 0 && uint32(dns.Port) != metricsPort {
					t.Errorf("job %s scrapes the workers on %d, they serve metrics on %d (NOTIFY_METRICS_ADDR)", sc.JobName, dns.Port, metricsPort)
				}
			}
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port, err := net.SplitHostPort(target)
				if err != nil {
					t.Errorf("job %s target %q: %v", sc.JobName, target, err)
					continue
				}
				if host == "localhost" && sc.JobName == "prometheus" && port == "9090" {
					continue // Prometheus's own metrics
				}
				s, err := p.GetService(host)
				if err != nil {
					t.Errorf("job %s scrapes %q, which is no service", sc.JobName, host)
					continue
				}
				if !slices.Contains([]string(s.Expose), port) {
					t.Errorf("job %s scrapes %s, which exposes %v", sc.JobName, target, s.Expose)
				}
				scraped[host] = true
			}
		}
	}
	if !jobs[workerJob] {
		t.Errorf("no scrape job %q; the alerts select it", workerJob)
	}
	var want []string
	want = append(want, "worker")
	want = append(want, natsExporters...)
	for _, w := range want {
		if !scraped[w] {
			t.Errorf("prometheus does not scrape %s", w)
		}
	}
	var workerDNS bool
	for _, sc := range cfg.ScrapeConfigs {
		workerDNS = workerDNS || (sc.JobName == workerJob && len(sc.DNSSDConfigs) == 1 && slices.Equal(sc.DNSSDConfigs[0].Names, []string{"worker"}))
	}
	if !workerDNS {
		t.Errorf("job %s does not find the replicas through DNS name worker", workerJob)
	}
}
