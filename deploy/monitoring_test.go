package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// The monitoring files under test, relative to this directory.
const (
	dashboardFile    = "grafana/notify-worker.json"
	alertsFile       = "prometheus/alerts.yml"
	alertsTestFile   = "prometheus/alerts_test.yml"
	prometheusConfig = "prometheus/prometheus.yml"
	operationsDoc    = "../docs/operations.md"
	workerJob        = "notify-worker"
)

// Series Prometheus itself writes for every target or rule; the worker
// does not export them.
var prometheusGenerated = map[string]bool{
	"up":                                    true,
	"scrape_duration_seconds":               true,
	"scrape_samples_scraped":                true,
	"scrape_samples_post_metric_relabeling": true,
	"scrape_series_added":                   true,
	"ALERTS":                                true,
	"ALERTS_FOR_STATE":                      true,
}

// dashboard is the part of a Grafana dashboard these tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Panels     []panel        `json:"panels"` // a collapsed row's panels
	Targets    []struct {
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(mustReadFile(t, dashboardFile)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels returns the dashboard's panels, those inside rows included.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// alertRules is the part of a Prometheus rule file these tests read.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(mustReadFile(t, path)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// promQL is one expression of the dashboard or the alerts, with where it
// comes from.
type promQL struct{ where, expr string }

var (
	grafanaBuiltin = regexp.MustCompile(`\$__\w+|\$\{__\w+\}`)
	grafanaVar     = regexp.MustCompile(`\$\{\w+(:\w+)?\}|\$\w+`)
	labelValues    = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
)

// grafanaToPromQL replaces Grafana's variables with values PromQL parses:
// the interval variables with a duration, the others (used inside label
// matchers' strings) with a word.
func grafanaToPromQL(expr string) string {
	expr = grafanaBuiltin.ReplaceAllString(expr, "5m")
	return grafanaVar.ReplaceAllString(expr, "x")
}

// dashboardQueries returns every PromQL expression of the dashboard: the
// panels' targets and the selectors inside the query variables'
// label_values().
func dashboardQueries(t *testing.T, d dashboard) []promQL {
	t.Helper()
	var out []promQL
	for _, p := range d.allPanels() {
		for i, tg := range p.Targets {
			out = append(out, promQL{fmt.Sprintf("panel %q target %d", p.Title, i), grafanaToPromQL(tg.Expr)})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s query: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s query %q: want label_values(<selector>, <label>)", v.Name, q.Query)
		}
		out = append(out, promQL{"variable " + v.Name, grafanaToPromQL(m[1])})
	}
	return out
}

func alertQueries(t *testing.T) []promQL {
	t.Helper()
	var rules alertRules
	readYAML(t, alertsFile, &rules)
	var out []promQL
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, promQL{"alert " + r.Alert + r.Record, r.Expr})
		}
	}
	return out
}

// metricNames parses expr and returns the metric name of each of its
// selectors; a selector without a metric name is an error.
func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	var unnamed error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == "__name__" {
				name = m.Value
			}
		}
		if name == "" {
			unnamed = fmt.Errorf("selector %s names no metric", vs)
		}
		names = append(names, name)
		return nil
	})
	return names, unnamed
}

// unknownMetrics returns the metric names in expr that are neither in
// exported nor generated by Prometheus.
func unknownMetrics(expr string, exported map[string]bool) ([]string, error) {
	names, err := metricNames(expr)
	if err != nil {
		return nil, err
	}
	var unknown []string
	for _, n := range names {
		if !exported[n] && !prometheusGenerated[n] && !slices.Contains(unknown, n) {
			unknown = append(unknown, n)
		}
	}
	return unknown, nil
}

// exportedNames reads a text exposition and returns the names of the
// series it may hold: each family's name, and for a histogram its
// _bucket, _sum and _count, for a summary its _sum and _count.
func exportedNames(r io.Reader) (map[string]bool, error) {
	names := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		name := f[2]
		switch f[3] {
		case "histogram":
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case "summary":
			names[name], names[name+"_sum"], names[name+"_count"] = true, true, true
		default:
			names[name] = true
		}
	}
	return names, sc.Err()
}

func TestMetricNameCheck(t *testing.T) {
	exported, err := exportedNames(strings.NewReader(`# HELP a_total A.
# TYPE a_total counter
a_total 1
# TYPE h_seconds histogram
h_seconds_bucket{le="+Inf"} 0
# TYPE s_seconds summary
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		expr    string
		unknown []string
		err     bool
	}{
		{`rate(a_total[5m])`, nil, false},
		{`histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket[5m])))`, nil, false},
		{`rate(s_seconds_sum[5m]) / rate(s_seconds_count[5m])`, nil, false},
		{`s_seconds{quantile="1"}`, nil, false},
		{`up == 0 and on (instance) b_total > 0`, []string{"b_total"}, false},
		{`h_seconds > 1`, []string{"h_seconds"}, false},          // a histogram's name is no series
		{`rate(a_totl[5m]) + a_totl`, []string{"a_totl"}, false}, // misspelt, once
		{`{__name__="c"}`, []string{"c"}, false},
		{`{job="x"}`, nil, true},
		{`rate(a_total[5m]`, nil, true},
	} {
		got, err := unknownMetrics(tc.expr, exported)
		if (err != nil) != tc.err || !slices.Equal(got, tc.unknown) {
			t.Errorf("unknownMetrics(%q) = %q, %v; want %q, error %v", tc.expr, got, err, tc.unknown, tc.err)
		}
	}
	if got := grafanaToPromQL(`rate(x{job=~"$job", instance=~"${instance}"}[$__rate_interval])`); got != `rate(x{job=~"x", instance=~"x"}[5m])` {
		t.Errorf("grafanaToPromQL = %q", got)
	}
}

// scrapeWorker starts the worker binary on port 0 with its embedded NATS
// server, reads its /metrics once and stops it.
func scrapeWorker(t *testing.T) map[string]bool {
	t.Helper()
	log := newProcLog()
	cmd := execCommand(workerBinary(t))
	cmd.Env = []string{
		"NOTIFY_ADDR=127.0.0.1:0",
		"NOTIFY_EMBEDDED_NATS_ADDR=127.0.0.1:0",
		"NOTIFY_JETSTREAM_DIR=" + t.TempDir(),
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
	client := &http.Client{Timeout: waitTimeout}
	resp, err := client.Get("http://" + serving.Addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	names, err := exportedNames(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}

	// SIGINT: shut down at once (no drain delay).
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Fatalf("worker exit: %v\n%s", err, strings.Join(log.all(), "\n"))
		}
	case <-time.After(waitTimeout):
		t.Fatal("worker did not exit after SIGINT")
	}
	return names
}

// Every metric the dashboard and the alerts query is one the worker
// exports (read from a running worker), or one Prometheus writes itself:
// a renamed metric fails here, not on an operator's empty panel.
func TestMonitoringMetricsExist(t *testing.T) {
	exported := scrapeWorker(t)
	if len(exported) < 20 || !exported["notify_connections"] {
		t.Fatalf("the worker's /metrics has %d names, no notify_connections", len(exported))
	}
	queries := append(dashboardQueries(t, readDashboard(t)), alertQueries(t)...)
	if len(queries) < 20 {
		t.Fatalf("%d expressions in the dashboard and the alerts", len(queries))
	}
	allowed := map[string]bool{}
	for n := range exported {
		allowed[n] = true
	}
	used := map[string]bool{}
	for _, q := range queries {
		unknown, err := unknownMetrics(q.expr, allowed)
		if err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, err)
			continue
		}
		if len(unknown) > 0 {
			t.Errorf("%s: %q queries %q, which the worker does not export", q.where, q.expr, unknown)
		}
		names, _ := metricNames(q.expr)
		for _, n := range names {
			used[n] = true
		}
	}
	t.Logf("%d expressions, %d distinct metrics, all exported or generated by Prometheus", len(queries), len(used))
}

// The dashboard shows what an operator of the fleet asks for, from a
// Prometheus data source chosen by variable, per job and instance.
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q; provisioning needs both", d.UID, d.Title)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "datasource" {
			var q string
			if err := json.Unmarshal(v.Query, &q); err != nil || q != "prometheus" {
				t.Errorf("variable %s lists %s data sources, want prometheus", v.Name, v.Query)
			}
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s queries %+v, want ${datasource}", v.Name, v.Datasource)
		}
	}
	if vars["datasource"] != "datasource" || vars["job"] != "query" || vars["instance"] != "query" {
		t.Errorf("template variables %v; want datasource (a data source), job and instance (queries)", vars)
	}

	ids := map[int]string{}
	metrics := map[string]bool{}
	for _, p := range d.allPanels() {
		if other, ok := ids[p.ID]; ok {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q data source %+v, want prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target data source %+v, want ${datasource}", p.Title, tg.Datasource)
			}
			if strings.Contains(tg.Expr, "notify_") && (!strings.Contains(tg.Expr, `job=~"$job"`) || !strings.Contains(tg.Expr, `instance=~"$instance"`)) {
				t.Errorf("panel %q: %q does not filter by $job and $instance", p.Title, tg.Expr)
			}
			names, err := metricNames(grafanaToPromQL(tg.Expr))
			if err != nil {
				t.Errorf("panel %q: %q: %v", p.Title, tg.Expr, err)
			}
			for _, n := range names {
				metrics[n] = true
			}
		}
	}
	for _, want := range []string{
		"notify_connections", "notify_sessions_identified", "notify_names", "notify_handshakes_total",
		"notify_deliveries_total", "notify_dropped_total", "notify_limit_closes_total",
		"notify_nats_connected", "notify_nats_reconnects_total", "notify_nats_dropped_total",
		"notify_upstream_total", "notify_replayed_messages_total", "notify_resumes_not_recovered_total",
		"notify_events_total", "notify_presence_requests_total",
		"notify_handshake_duration_seconds_bucket", "notify_delivery_delay_seconds_bucket",
		"go_goroutines", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds",
		"process_cpu_seconds_total", "process_open_fds", "process_max_fds",
	} {
		if !metrics[want] {
			t.Errorf("no panel queries %s", want)
		}
	}
}

// alertsSection returns the paragraphs of the "Alerts" section of
// docs/operations.md by the GitHub anchor of their heading.
func alertsSection(t *testing.T) map[string]string {
	t.Helper()
	doc := mustReadFile(t, operationsDoc)
	_, section, ok := strings.Cut(doc, "\n## Alerts\n")
	if !ok {
		t.Fatalf("%s has no \"## Alerts\" section", operationsDoc)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	out := map[string]string{}
	parts := strings.Split(section, "\n### ")
	for _, p := range parts[1:] {
		heading, body, _ := strings.Cut(p, "\n")
		out[strings.ToLower(strings.TrimSpace(heading))] = strings.TrimSpace(body)
	}
	return out
}

// Every alert has a severity, a summary and a runbook_url to its own
// paragraph of docs/operations.md, and a unit test in alerts_test.yml
// that shows it firing and one that shows it not firing.
func TestAlerts(t *testing.T) {
	var rules alertRules
	readYAML(t, alertsFile, &rules)
	runbooks := alertsSection(t)
	var tests struct {
		RuleFiles          []string `yaml:"rule_files"`
		EvaluationInterval string   `yaml:"evaluation_interval"`
		Tests              []struct {
			Interval    string           `yaml:"interval"`
			InputSeries []map[string]any `yaml:"input_series"`
			AlertTests  []struct {
				EvalTime  string           `yaml:"eval_time"`
				AlertName string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, alertsTestFile, &tests)
	if !slices.Equal(tests.RuleFiles, []string{"alerts.yml"}) {
		t.Errorf("%s tests %q, want alerts.yml", alertsTestFile, tests.RuleFiles)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertTests {
			if len(a.ExpAlerts) > 0 {
				firing[a.AlertName] = true
			} else {
				quiet[a.AlertName] = true
			}
		}
	}

	const runbookBase = "https://github.com/notify-worker/notify-worker/blob/main/docs/operations.md#"
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s has no summary", r.Alert)
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookBase)
			if !ok {
				t.Errorf("%s runbook_url %q, want %s<anchor>", r.Alert, r.Annotations["runbook_url"], runbookBase)
			} else if anchor != strings.ToLower(r.Alert) {
				t.Errorf("%s runbook anchor %q, want %q", r.Alert, anchor, strings.ToLower(r.Alert))
			} else if body := runbooks[anchor]; len(body) < 200 {
				t.Errorf("%s: docs/operations.md Alerts has no runbook paragraph \"### %s\" (%d characters)", r.Alert, r.Alert, len(body))
			}
			if !firing[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: %s tests it firing %v, not firing %v; want both", r.Alert, alertsTestFile, firing[r.Alert], quiet[r.Alert])
			}
			if !strings.Contains(r.Expr, `job="`+workerJob+`"`) {
				t.Errorf("%s does not select job=%q: %s", r.Alert, workerJob, r.Expr)
			}
		}
	}
	for _, want := range []string{
		"NotifyWorkerDown", "NotifyWorkerNATSDisconnected", "NotifyWorkerDroppingMessages",
		"NotifyWorkerSlowClientCloses", "NotifyWorkerFileDescriptorsHigh", "NotifyWorkerHandshakeFailures",
		"NotifyWorkerNoneReady",
	} {
		if !slices.Contains(alerts, want) {
			t.Errorf("%s has no alert %s", alertsFile, want)
		}
	}
	for anchor := range runbooks {
		if !slices.ContainsFunc(alerts, func(a string) bool { return strings.ToLower(a) == anchor }) {
			t.Errorf("docs/operations.md has a runbook %q for no alert", anchor)
		}
	}
}

// CI runs deploy/check-monitoring.sh by its path.
func TestCheckMonitoringScriptExecutable(t *testing.T) {
	fi, err := os.Stat("check-monitoring.sh")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("check-monitoring.sh mode %v, want executable", fi.Mode())
	}
	if !strings.HasPrefix(mustReadFile(t, "check-monitoring.sh"), "#!/usr/bin/env bash\n") {
		t.Error("check-monitoring.sh does not start with #!/usr/bin/env bash")
	}
}
