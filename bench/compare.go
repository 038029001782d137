package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// compareGroups are the scenario groups, in the order they run; -only
// takes a comma-separated subset.
var compareGroups = []string{"idle", "targeted", "broadcast", "scaling", "floor", "nats"}

type compareFlags struct {
	worker     string
	centrifugo string
	only       string
	repeat     int
	quick      bool
	conns      int
	idleSettle time.Duration
	settle     time.Duration
	duration   time.Duration
	rates      string
	bcastCount int
	bcastRates string
	scaling    string
	scaleRate  int
	batch      int
	batchWait  time.Duration
	httpConns  int
	perProc    int
	srcIPs     int
	size       int
	drain      time.Duration
	maxRun     time.Duration
	servers    string
	schedBatch bool
}

// runCompare is the "compare" subcommand: the same scenarios, clients and
// payloads against notify-worker and Centrifugo, each run on a fresh
// server process, and one table of both.
func runCompare(args []string) error {
	var f compareFlags
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	fs.StringVar(&f.worker, "worker", "", "notify-worker binary (default: go build the module holding the current directory into a temp dir)")
	fs.StringVar(&f.centrifugo, "centrifugo", "", "Centrifugo v6 binary (required), e.g. from GOBIN=/tmp/cf go install github.com/centrifugal/centrifugo/v6@v6.9.1")
	fs.StringVar(&f.only, "only", "", "comma-separated scenario groups to run: "+strings.Join(compareGroups, ",")+" (default: all)")
	fs.StringVar(&f.servers, "servers", serverNotify+","+serverCentrifugo, "servers to measure")
	fs.IntVar(&f.repeat, "repeat", 1, "runs of each scenario per server; the table shows the median")
	fs.BoolVar(&f.quick, "quick", false, "a smoke run of a few minutes: 2,000 sessions, 5 s of publishing, 10 s idle settle, 10 broadcasts (flags given explicitly still win)")
	fs.IntVar(&f.conns, "conns", 10000, "sessions of the idle, targeted, broadcast and nats scenarios")
	fs.DurationVar(&f.idleSettle, "idle-settle", 130*time.Second, "idle: wait after the last connection before reading RSS (130s passes the runtime's 2-minute forced GC)")
	fs.DurationVar(&f.settle, "settle", 5*time.Second, "wait after the last connection before publishing")
	fs.DurationVar(&f.duration, "duration", 20*time.Second, "targeted: how long to publish")
	fs.StringVar(&f.rates, "rates", "5000,20000", "targeted: messages per second, one scenario each")
	fs.IntVar(&f.bcastCount, "count", 20, "broadcast: messages per scenario")
	fs.StringVar(&f.bcastRates, "broadcast-rates", "2,10", "broadcast: messages per second, one scenario each")
	fs.StringVar(&f.scaling, "scaling", "1000,5000,15000", "scaling: session counts, at -scale-rate")
	fs.IntVar(&f.scaleRate, "scale-rate", 5000, "scaling and nats: targeted messages per second")
	fs.IntVar(&f.batch, "batch", 50, "Centrifugo: publish commands per /api/batch request")
	fs.DurationVar(&f.batchWait, "batch-wait", 10*time.Millisecond, "Centrifugo: a batch leaves when full or when it has been open this long")
	fs.IntVar(&f.httpConns, "http-conns", 4, "Centrifugo: concurrent HTTP API connections; names are sharded over them so that each name's messages stay in order")
	fs.IntVar(&f.perProc, "per-proc", 9000, "most connections one client process holds (open-file limit)")
	fs.IntVar(&f.srcIPs, "src-ips", 50, "source addresses 127.0.0.10 ... to spread the connections over")
	fs.IntVar(&f.size, "size", 100, "payload size in bytes")
	fs.DurationVar(&f.drain, "drain", 30*time.Second, "after the last publish, wait at most this long for the clients to have everything")
	fs.DurationVar(&f.maxRun, "max-run", 8*time.Minute, "abort one run after this long")
	fs.BoolVar(&f.schedBatch, "clients-sched-batch", true, "run the client processes under SCHED_BATCH, so that their wake-ups do not preempt the server under test")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.quick {
		set := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
		quick := map[string]string{"conns": "2000", "idle-settle": "10s", "settle": "2s", "duration": "5s", "count": "10", "scaling": "500,1000,2000"}
		for name, v := range quick {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return err
				}
			}
		}
	}
	scs, groups, err := compareScenarios(f)
	if err != nil {
		return err
	}
	if f.centrifugo == "" && strings.Contains(f.servers, serverCentrifugo) {
		return errors.New("-centrifugo PATH is required (the tool does not build Centrifugo; see BENCHMARKS.md)")
	}
	servers := strings.Split(f.servers, ",")
	for _, s := range servers {
		if s != serverNotify && s != serverCentrifugo {
			return fmt.Errorf("-servers: unknown server %q", s)
		}
	}
	if f.repeat <= 0 || f.batch <= 0 || f.httpConns <= 0 || f.perProc <= 0 || f.srcIPs <= 0 || f.srcIPs > 240 || f.size < 64 {
		return errors.New("-repeat, -batch, -http-conns, -per-proc must be positive, -src-ips in 1..240, -size at least 64")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tmp, err := tempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	env := compareEnv{
		self: self, workerBin: f.worker, cfBin: f.centrifugo, tmp: tmp,
		perProc: f.perProc, srcIPs: f.srcIPs, size: f.size, settle: f.settle, idleSettle: f.idleSettle,
		drain: f.drain, batch: f.batch, batchWait: f.batchWait, httpConns: f.httpConns, maxRun: f.maxRun,
		schedBatch: f.schedBatch,
	}
	if env.workerBin == "" && strings.Contains(f.servers, serverNotify) {
		if env.workerBin, err = buildWorker(ctx, tmp); err != nil {
			return err
		}
	}
	m := describeMachine(ctx, env, strings.Join(os.Args, " "))

	var results []runResult
	for _, sc := range scs {
		for rep := 1; rep <= f.repeat; rep++ {
			for _, kind := range servers {
				fmt.Fprintf(os.Stderr, "compare: %s against %s (run %d, load %s)\n", sc.key, kind, rep, loadAvg())
				r, err := runOnce(ctx, env, sc, kind, rep)
				if err != nil {
					return fmt.Errorf("%s against %s: %w", sc.key, kind, err)
				}
				results = append(results, r)
			}
		}
	}
	var floorUS float64
	var floorRuns []float64
	if groups["floor"] {
		conns := min(f.conns, 10000)
		for range f.repeat {
			v, out, err := runFloorOnce(ctx, self, conns)
			if err != nil {
				return err
			}
			fmt.Fprint(os.Stderr, out)
			floorRuns = append(floorRuns, v)
		}
		floorUS = median(floorRuns)
		m.Floor = fmt.Sprintf("bench floor -conns %d: %v µs (median of %d)", conns, floorRuns, len(floorRuns))
	}
	writeCompareReport(os.Stdout, m, scs, results, floorUS)
	return nil
}

// compareScenarios turns the flags into the scenarios to run, and the
// groups selected.
func compareScenarios(f compareFlags) ([]scenario, map[string]bool, error) {
	groups := map[string]bool{}
	if f.only == "" {
		for _, g := range compareGroups {
			groups[g] = true
		}
	} else {
		for g := range strings.SplitSeq(f.only, ",") {
			if !strings.Contains(","+strings.Join(compareGroups, ",")+",", ","+g+",") {
				return nil, nil, fmt.Errorf("-only: unknown scenario group %q (have %s)", g, strings.Join(compareGroups, ","))
			}
			groups[g] = true
		}
	}
	ints := func(name, s string) ([]int, error) {
		var out []int
		for v := range strings.SplitSeq(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("-%s: %q is not a positive number", name, v)
			}
			out = append(out, n)
		}
		return out, nil
	}
	rates, err := ints("rates", f.rates)
	if err != nil {
		return nil, nil, err
	}
	bRates, err := ints("broadcast-rates", f.bcastRates)
	if err != nil {
		return nil, nil, err
	}
	sizes, err := ints("scaling", f.scaling)
	if err != nil {
		return nil, nil, err
	}
	if f.conns <= 0 || f.bcastCount <= 0 || f.scaleRate <= 0 || f.duration <= 0 {
		return nil, nil, errors.New("-conns, -count, -scale-rate and -duration must be positive")
	}
	k := func(n int) string { return strconv.Itoa(n) }
	var scs []scenario
	if groups["idle"] {
		scs = append(scs, scenario{key: "idle", group: "idle", title: "idle, " + k(f.conns) + " sessions", kind: "idle", conns: f.conns})
	}
	if groups["targeted"] {
		for _, r := range rates {
			scs = append(scs, scenario{key: "targeted-" + k(r), group: "targeted", kind: "targeted",
				title: fmt.Sprintf("targeted %d/s, %d names, %s", r, f.conns, f.duration), conns: f.conns, rate: r, duration: f.duration})
		}
	}
	if groups["broadcast"] {
		for _, r := range bRates {
			scs = append(scs, scenario{key: "broadcast-" + k(r), group: "broadcast", kind: "broadcast",
				title: fmt.Sprintf("broadcast %d × %d sessions at %d/s", f.bcastCount, f.conns, r),
				conns: f.conns, count: f.bcastCount, interval: time.Second / time.Duration(r)})
		}
	}
	if groups["scaling"] {
		for _, n := range sizes {
			scs = append(scs, scenario{key: "scaling-" + k(n), group: "scaling", kind: "targeted",
				title: fmt.Sprintf("scaling: %d sessions, %d/s", n, f.scaleRate), conns: n, rate: f.scaleRate, duration: f.duration})
		}
	}
	if groups["nats"] {
		scs = append(scs, scenario{key: "nats-targeted-" + k(f.scaleRate), group: "nats", kind: "targeted", viaNATS: true,
			title: fmt.Sprintf("via bench natsd: targeted %d/s, %d names", f.scaleRate, f.conns), conns: f.conns, rate: f.scaleRate, duration: f.duration})
	}
	return scs, groups, nil
}

// machine is the report's header: where and what was measured.
type machine struct {
	Date       string `json:"date"`
	Nproc      int    `json:"nproc"`
	Model      string `json:"model"`
	Kernel     string `json:"kernel"`
	GoVersion  string `json:"go"`
	Notify     string `json:"notify_worker"`
	Centrifugo string `json:"centrifugo"`
	Command    string `json:"command"`
	LoadBefore string `json:"load_before"`
	Floor      string `json:"floor,omitempty"`
}

func describeMachine(ctx context.Context, env compareEnv, command string) machine {
	m := machine{
		Date: time.Now().UTC().Format(time.RFC3339), Nproc: runtime.NumCPU(), GoVersion: runtime.Version(),
		Command: command, LoadBefore: loadAvg(), Model: "?", Kernel: "?",
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if name, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if env.workerBin != "" {
		m.Notify = versionOf(ctx, env.workerBin, "version") + " (" + moduleVersion(env.workerBin) + ")"
	}
	if env.cfBin != "" {
		m.Centrifugo = versionOf(ctx, env.cfBin, "version") + " (" + moduleVersion(env.cfBin) + ")"
	}
	return m
}

// writeCompareReport prints the header, the table, the runs' load and one
// JSON summary line.
func writeCompareReport(w io.Writer, m machine, scs []scenario, results []runResult, floorUS float64) {
	fmt.Fprintf(w, "date %s; %d CPUs, %s; Linux %s; %s\n", m.Date, m.Nproc, m.Model, m.Kernel, m.GoVersion)
	fmt.Fprintf(w, "notify-worker: %s\ncentrifugo: %s\ncommand: %s\nload average before: %s\n", m.Notify, m.Centrifugo, m.Command, m.LoadBefore)
	if m.Floor != "" {
		fmt.Fprintf(w, "floor: %s\n", m.Floor)
	}
	fmt.Fprintln(w)
	writeTable(w, buildRows(scs, results), floorUS, "Centrifugo")
	fmt.Fprintln(w)
	writeRuns(w, results)
	b, _ := json.Marshal(struct {
		Machine machine     `json:"machine"`
		FloorUS float64     `json:"floor_us,omitempty"`
		Runs    []runResult `json:"runs"`
	}{m, floorUS, results})
	fmt.Fprintf(w, "\nsummary %s\n", b)
}
