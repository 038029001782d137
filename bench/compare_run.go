package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// scenario is one measurement of the comparison, run once per server (and
// per repeat), each time against a fresh server process.
type scenario struct {
	key      string // unique: "targeted-5000", "scaling-1000", ...
	group    string // what -only selects: idle, targeted, broadcast, scaling, nats
	title    string // the table's first column
	kind     string // idle, targeted or broadcast: what the run does
	conns    int
	rate     int           // targeted: messages per second, round robin over the names
	duration time.Duration // targeted
	count    int           // broadcast: messages
	interval time.Duration // broadcast: time between two
	viaNATS  bool          // both servers fed through a NATS server of their own (bench natsd)
}

// compareEnv is what every run shares.
type compareEnv struct {
	self       string // this binary, for "bench client" and "bench natsd"
	workerBin  string
	cfBin      string
	tmp        string
	perProc    int
	srcIPs     int
	size       int
	settle     time.Duration // before publishing
	idleSettle time.Duration // idle: before reading RSS
	drain      time.Duration
	batch      int
	batchWait  time.Duration
	httpConns  int
	maxRun     time.Duration
	schedBatch bool // clients under SCHED_BATCH (yieldToServer)
}

// runResult is what one run of one scenario against one server measured.
type runResult struct {
	Scenario   string `json:"scenario"`
	Server     string `json:"server"`
	Repeat     int    `json:"repeat"`
	Conns      int    `json:"conns"`
	Connected  int    `json:"connected"`
	Failed     int    `json:"failed"`
	FirstError string `json:"first_error,omitempty"`

	ConnectSeconds float64 `json:"connect_s"`
	ConnectRate    float64 `json:"connect_per_s"` // welcomed (notify) or connected and subscribed (Centrifugo) per second
	RSSKBPerConn   float64 `json:"rss_kb_per_conn,omitempty"`
	IdleCPUPct     float64 `json:"idle_cpu_pct"`

	Sent        int64   `json:"sent"`
	Expected    int64   `json:"expected"`
	Received    int64   `json:"received"`
	Lost        int64   `json:"lost"`
	Duplicates  int64   `json:"duplicates"`
	Malformed   int64   `json:"malformed"`
	Closed      int64   `json:"closed"` // connections the server closed before the end
	ServerPings int64   `json:"server_pings"`
	PubErrors   int64   `json:"publish_errors"`
	PubRequests int64   `json:"publish_requests,omitempty"`
	PubErr      string  `json:"publish_first_error,omitempty"`
	LagP50MS    float64 `json:"publisher_lag_p50_ms"`
	LagMaxMS    float64 `json:"publisher_lag_max_ms"`

	WindowS     float64 `json:"window_s"`
	ServerCPUUS float64 `json:"server_us_per_delivery"`
	NATSCPUUS   float64 `json:"nats_us_per_delivery,omitempty"` // the separate NATS server, viaNATS runs only
	ServerCPU   float64 `json:"server_cpu_pct"`
	P50MS       float64 `json:"p50_ms"`
	P99MS       float64 `json:"p99_ms"`
	MaxMS       float64 `json:"max_ms"`
	LastP50MS   float64 `json:"last_session_p50_ms,omitempty"` // broadcast: until the last session had it
	LastP99MS   float64 `json:"last_session_p99_ms,omitempty"`

	LoadBefore   string  `json:"load_before"`
	LoadAfter    string  `json:"load_after"`
	Busy         float64 `json:"machine_busy"` // share of all CPUs busy in the window, 0..1
	ClientCPUMax float64 `json:"client_cpu_max_pct"`
	Frames       int64   `json:"frames"`
	Pushes       int64   `json:"pushes,omitempty"`
}

// runOnce starts a fresh server of kind (and a NATS server when the
// scenario wants one), connects the clients, and measures sc.
func runOnce(ctx context.Context, env compareEnv, sc scenario, kind string, repeat int) (r runResult, err error) {
	r = runResult{Scenario: sc.key, Server: kind, Repeat: repeat, Conns: sc.conns, LoadBefore: loadAvg()}
	ctx, cancel := context.WithTimeout(ctx, env.maxRun)
	defer cancel()

	var nd *natsProc
	natsURL := ""
	if sc.viaNATS {
		if nd, err = startNATSD(ctx, env.self); err != nil {
			return r, err
		}
		defer nd.stop()
		natsURL = nd.url
	}
	dir, err := os.MkdirTemp(env.tmp, kind+"-")
	if err != nil {
		return r, fmt.Errorf("run directory: %w", err)
	}
	var srv *serverProc
	if kind == serverNotify {
		srv, err = startNotify(ctx, env.workerBin, natsURL)
	} else {
		srv, err = startCentrifugo(ctx, env.cfBin, dir, natsURL)
	}
	if err != nil {
		return r, err
	}
	defer srv.stop()
	rssBefore, err := statusKB(srv.pid, "VmRSS")
	if err != nil {
		return r, fmt.Errorf("%s pid %s: %w", kind, srv.pid, err)
	}

	children, err := startClients(ctx, env, sc, srv)
	defer stopClients(children)
	if err != nil {
		return r, err
	}
	connectStart := time.Now()
	for _, c := range children {
		var rd childReady
		if err := c.readLine(&rd); err != nil {
			return r, fmt.Errorf("client process %s: %w", c.pid, err)
		}
		r.Connected += rd.Conns
		r.Failed += rd.Failed
		if rd.Err != "" && r.FirstError == "" {
			r.FirstError = rd.Err
		}
	}
	connectWall := time.Since(connectStart)
	r.ConnectSeconds = connectWall.Seconds()
	r.ConnectRate = float64(r.Connected) / connectWall.Seconds()
	if r.Connected == 0 {
		return r, fmt.Errorf("no connection to %s succeeded: %s", kind, r.FirstError)
	}

	settle := env.settle
	if sc.kind == "idle" {
		settle = env.idleSettle
	}
	idle0, _ := cpuTime(srv.pid)
	idleStart := time.Now()
	sleepCtx(ctx, settle)
	idle1, _ := cpuTime(srv.pid)
	r.IdleCPUPct = 100 * float64(idle1-idle0) / float64(time.Since(idleStart))

	if sc.kind == "idle" {
		rss, err := statusKB(srv.pid, "VmRSS")
		if err != nil {
			return r, fmt.Errorf("%s pid %s: %w", kind, srv.pid, err)
		}
		r.RSSKBPerConn = float64(rss-rssBefore) / float64(r.Connected)
		res, _, _, err := collectClients(children)
		if err != nil {
			return r, err
		}
		fillCounts(&r, res)
		r.LoadAfter = loadAvg()
		return r, nil
	}

	prod, err := newProducer(ctx, env, sc, srv)
	if err != nil {
		return r, err
	}
	natsPid := ""
	if nd != nil {
		natsPid = nd.pid
	}
	w := newWindow(srv.pid, natsPid, children)
	sent, err := publish(ctx, sc, prod, env.size)
	ps := prod.finish()
	if err != nil {
		return r, err
	}
	r.Sent = sent
	r.Expected = sent
	if sc.kind == "broadcast" {
		r.Expected = sent * int64(r.Connected)
	}
	if err := drainClients(ctx, children, r.Expected, env.drain); err != nil {
		return r, err
	}
	w.end()

	res, hist, last, err := collectClients(children)
	if err != nil {
		return r, err
	}
	fillCounts(&r, res)
	r.Lost = r.Expected - (res.Received - res.Duplicates)
	r.PubErrors, r.PubRequests, r.PubErr = ps.errors, ps.requests, ps.firstErr
	var lag merged
	lag.add(ps.lag.sparse(), ps.lag.max.Load())
	r.LagP50MS = ms(lag.quantile(0.5))
	r.LagMaxMS = float64(lag.maxUS) / 1e3
	r.WindowS = w.wall.Seconds()
	r.ServerCPU = 100 * float64(w.workerCPU) / float64(w.wall)
	if r.Expected > 0 {
		r.ServerCPUUS = float64(w.workerCPU.Nanoseconds()) / 1e3 / float64(r.Expected)
		if nd != nil {
			r.NATSCPUUS = float64(w.serverCPU.Nanoseconds()) / 1e3 / float64(r.Expected)
		}
	}
	r.P50MS, r.P99MS, r.MaxMS = ms(hist.quantile(0.5)), ms(hist.quantile(0.99)), float64(hist.maxUS)/1e3
	if sc.kind == "broadcast" {
		r.LastP50MS, r.LastP99MS = lastSessionQuantiles(last, sc.count)
	}
	r.Busy = w.busy
	for _, c := range w.childCPU {
		r.ClientCPUMax = max(r.ClientCPUMax, 100*float64(c)/float64(w.wall))
	}
	r.LoadAfter = loadAvg()
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func fillCounts(r *runResult, res childResult) {
	r.Received, r.Duplicates, r.Malformed, r.Closed = res.Received, res.Duplicates, res.Malformed, res.Closed
	r.ServerPings, r.Frames, r.Pushes = res.Pings, res.Frames, res.Pushes
}

// startClients spawns the client processes of sc against srv, at most
// env.perProc connections each.
func startClients(ctx context.Context, env compareEnv, sc scenario, srv *serverProc) ([]*child, error) {
	proto := "notify"
	if srv.kind == serverCentrifugo {
		proto = "centrifugo"
	}
	var children []*child
	for first := 0; first < sc.conns; first += env.perProc {
		n := min(env.perProc, sc.conns-first)
		cmd := exec.CommandContext(ctx, env.self, "client",
			"-url", srv.wsURL, "-first", strconv.Itoa(first), "-count", strconv.Itoa(n),
			"-src-ips", strconv.Itoa(env.srcIPs), "-broadcasts", strconv.Itoa(sc.count),
			"-max-run", env.maxRun.String(), "-proto", proto)
		if srv.secret != "" {
			cmd.Args = append(cmd.Args, "-secret", srv.secret)
		}
		if env.schedBatch {
			cmd.Args = append(cmd.Args, "-sched-batch")
		}
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return children, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return children, err
		}
		if err := cmd.Start(); err != nil {
			return children, fmt.Errorf("start client process: %w", err)
		}
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		children = append(children, &child{cmd: cmd, stdin: stdin, lines: sc, pid: strconv.Itoa(cmd.Process.Pid)})
	}
	return children, nil
}

// stopClients closes the clients' stdin (which stops them if "stop" was
// not sent) and waits for them.
func stopClients(children []*child) {
	for _, c := range children {
		_ = c.stdin.Close()
		_ = c.cmd.Wait()
	}
}

// newProducer picks how sc's messages reach srv: through NATS for
// notify-worker and for Centrifugo's NATS broker, through the HTTP API for
// Centrifugo's memory broker.
func newProducer(ctx context.Context, env compareEnv, sc scenario, srv *serverProc) (producer, error) {
	if srv.kind == serverCentrifugo && srv.natsURL == "" {
		return newAPIProducer(ctx, srv.apiURL, srv.apiKey, env.batch, env.httpConns, env.batchWait), nil
	}
	prefix := "notify"
	if srv.kind == serverCentrifugo {
		prefix = cfRawNATSPrefix[:len(cfRawNATSPrefix)-1]
	}
	return newNATSProducer(srv.natsURL, prefix, sc.conns)
}

// publish runs sc's schedule through p and returns how many messages it
// sent. Targeted messages go round robin over the names at sc.rate, each
// carrying its per-name sequence number and its intended send time, so a
// publisher that falls behind shows as latency rather than hiding it.
func publish(ctx context.Context, sc scenario, p producer, size int) (int64, error) {
	buf := make([]byte, 0, size+64)
	var sent int64
	if sc.kind == "broadcast" {
		for k := 1; k <= sc.count && ctx.Err() == nil; k++ {
			intended := time.Now()
			buf = appendPayload(buf[:0], 'a', int64(k), intended.UnixNano(), size)
			if err := p.broadcast(buf, intended); err != nil {
				return sent, fmt.Errorf("broadcast %d: %w", k, err)
			}
			sent++
			if k < sc.count {
				sleepCtx(ctx, time.Until(intended.Add(sc.interval)))
			}
		}
		return sent, ctx.Err()
	}
	total := int64(float64(sc.rate) * sc.duration.Seconds())
	period := float64(time.Second) / float64(sc.rate)
	conns := int64(sc.conns)
	t0 := time.Now().Add(10 * time.Millisecond)
	for sent < total && ctx.Err() == nil {
		due := min(int64(float64(time.Since(t0))/period)+1, total)
		for ; sent < due; sent++ {
			intended := t0.Add(time.Duration(float64(sent) * period))
			buf = appendPayload(buf[:0], 'u', sent/conns+1, intended.UnixNano(), size)
			if err := p.targeted(int(sent%conns), buf, intended); err != nil {
				return sent, err
			}
		}
		if sent < total {
			time.Sleep(time.Until(t0.Add(time.Duration(float64(sent) * period))))
		}
	}
	return sent, ctx.Err()
}

// drainClients asks the client processes how many notifications they
// have, until the sum reaches want, stops moving for 3 s, or drain
// passes. It depends on no server's metrics.
func drainClients(ctx context.Context, children []*child, want int64, drain time.Duration) error {
	deadline := time.Now().Add(drain)
	last, lastMove := int64(-1), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		got, err := countClients(children)
		if err != nil {
			return err
		}
		if got >= want {
			return nil
		}
		if got != last {
			last, lastMove = got, time.Now()
		} else if time.Since(lastMove) > 3*time.Second {
			return nil
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	return nil
}

// countClients returns the unique notifications all clients have now.
func countClients(children []*child) (int64, error) {
	for _, c := range children {
		if _, err := io.WriteString(c.stdin, "count\n"); err != nil {
			return 0, fmt.Errorf("client process %s: %w", c.pid, err)
		}
	}
	var sum int64
	for _, c := range children {
		var n childCount
		if err := c.readLine(&n); err != nil {
			return 0, fmt.Errorf("client process %s: %w", c.pid, err)
		}
		sum += n.Received - n.Duplicates
	}
	return sum, nil
}

// collectClients stops the clients and merges what they saw: the counts,
// the latency histogram, and per broadcast the slowest receipt.
func collectClients(children []*child) (childResult, *merged, map[int64]int64, error) {
	var res childResult
	hist := &merged{}
	last := map[int64]int64{}
	for _, c := range children {
		if _, err := io.WriteString(c.stdin, "stop\n"); err != nil {
			return res, hist, last, fmt.Errorf("client process %s: %w", c.pid, err)
		}
	}
	for _, c := range children {
		var r childResult
		if err := c.readLine(&r); err != nil {
			return res, hist, last, fmt.Errorf("client process %s: %w", c.pid, err)
		}
		res.addCounts(r)
		hist.add(r.Hist, r.MaxUS)
		for k, v := range r.BcastMaxUS {
			last[k] = max(last[k], v)
		}
	}
	return res, hist, last, nil
}

// lastSessionQuantiles returns p50 and p99, in ms, over the broadcasts of
// the time until the last session had each. A broadcast no session got
// counts as infinitely late.
func lastSessionQuantiles(last map[int64]int64, count int) (p50, p99 float64) {
	if count <= 0 {
		return 0, 0
	}
	full := make([]float64, 0, count)
	for k := int64(1); k <= int64(count); k++ {
		if v, ok := last[k]; ok {
			full = append(full, float64(v)/1e3)
		} else {
			full = append(full, inf)
		}
	}
	return nearestRank(full, 0.5), nearestRank(full, 0.99)
}

// runFloorOnce runs "bench floor" and returns its CPU per write in µs.
func runFloorOnce(ctx context.Context, self string, conns int) (float64, string, error) {
	out, err := exec.CommandContext(ctx, self, "floor", "-conns", strconv.Itoa(conns)).Output()
	if err != nil {
		return 0, "", fmt.Errorf("bench floor: %w", err)
	}
	v, err := parseFloorLine(string(out))
	return v, string(out), err
}

var errNoFloor = errors.New("no µs CPU figure in bench floor's output")

func tempDir() (string, error) {
	d, err := os.MkdirTemp("", "bench-compare-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	return filepath.Clean(d), nil
}
