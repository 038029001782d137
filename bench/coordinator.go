package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type options struct {
	mode       string
	pid        string
	wsURL      string
	metricsURL string
	natsURL    string
	prefix     string
	conns      int
	perProc    int
	srcIPs     int
	settle     time.Duration
	rate       int
	duration   time.Duration
	count      int
	interval   time.Duration
	size       int
	drain      time.Duration
	maxRun     time.Duration
	slowEvery  int
	pause      time.Duration
	serverPid  string // a NATS server in a process of its own, whose CPU is reported too

	// The durable modes (durable.go, replay.go, resume.go).
	stream      string
	publish     string // durable: core or durable
	missed      int    // replay
	others      int    // replay
	resumes     int    // replay
	gap         time.Duration
	streamMsgs  int // resume
	names       int // resume
	bcastEvery  int // resume
	behind      int // resume
	procs       int // resume
	maxInflight int // resume
	track       bool
}

func parseOptions(mode string, args []string) (options, error) {
	o := options{mode: mode}
	defaultRate := map[string]int{"resume": 1000, "durable": 5000}[mode]
	if defaultRate == 0 {
		defaultRate = 20000
	}
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	pid := fs.Int("pid", 0, "process id of the worker under test (required): its CPU and RSS come from /proc/<pid>")
	fs.StringVar(&o.wsURL, "url", "ws://127.0.0.1:18888/", "worker WebSocket URL (127.0.0.x only)")
	fs.StringVar(&o.metricsURL, "metrics", "", "worker metrics URL (default: http://<host of -url>/metrics)")
	fs.StringVar(&o.natsURL, "nats", "nats://127.0.0.1:14222", "NATS URL the worker listens to")
	fs.StringVar(&o.prefix, "prefix", "notify", "subject prefix of the worker")
	fs.IntVar(&o.conns, "conns", 1000, "client connections, one name each (u0, u1, ...)")
	fs.IntVar(&o.perProc, "per-proc", 9000, "most connections one client process holds (open-file limit)")
	fs.IntVar(&o.srcIPs, "src-ips", 50, "source addresses 127.0.0.10 ... to spread the connections over")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "wait after the last welcome; the worker's idle CPU is measured over it")
	fs.IntVar(&o.rate, "rate", defaultRate, "targeted, durable: messages offered per second, round robin over the names; resume: resumes started per second")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "targeted, durable: how long to publish; resume: how long to resume")
	fs.IntVar(&o.count, "count", 100, "broadcast: number of broadcasts")
	fs.DurationVar(&o.interval, "interval", 500*time.Millisecond, "broadcast: time between broadcasts")
	fs.IntVar(&o.size, "size", 100, "payload size in bytes")
	fs.DurationVar(&o.drain, "drain", 30*time.Second, "after the last publish, wait at most this long for the worker to queue every delivery")
	fs.DurationVar(&o.maxRun, "max-run", 10*time.Minute, "abort the run after this long")
	fs.IntVar(&o.slowEvery, "slow-every", 0, "make every n-th connection a slow reader that stops reading for -pause (0: none)")
	fs.DurationVar(&o.pause, "pause", 6*time.Second, "how long slow readers stop reading after their welcome")
	serverPid := fs.Int("server-pid", 0, "process id of a NATS server of its own (bench natsd), to report its CPU too (0: the worker's embedded one)")
	fs.StringVar(&o.stream, "stream", "NOTIFY", "durable modes: the worker's JetStream stream")
	fs.StringVar(&o.publish, "publish", "durable", "durable: publish with JetStream PublishAsync (durable) or plain NATS (core), to the same v2 clients")
	fs.IntVar(&o.missed, "missed", 1000, "replay: messages the resuming client missed")
	fs.IntVar(&o.others, "others", 0, "replay: messages to other names stored between two of the client's")
	fs.IntVar(&o.resumes, "resumes", 200, "replay: resumes, one after another")
	fs.DurationVar(&o.gap, "gap", 20*time.Millisecond, "replay: pause between two resumes")
	fs.IntVar(&o.streamMsgs, "stream-msgs", 100000, "resume: messages stored before resuming")
	fs.IntVar(&o.names, "names", 1000, "resume: names the stream and the resumes are spread over (u0, u1, ...)")
	fs.IntVar(&o.bcastEvery, "bcast-every", 100, "resume: every n-th stored message is a broadcast (0: none)")
	fs.IntVar(&o.behind, "behind", 1000, "resume: since = the stream's last sequence after filling - this")
	fs.IntVar(&o.procs, "procs", 2, "resume: client processes sharing the rate")
	fs.IntVar(&o.maxInflight, "max-inflight", 2000, "resume: most resumes under way per client process; a resume due beyond it is counted as skipped")
	fs.BoolVar(&o.track, "track", false, "resume: since follows the stream's end (the highest welcome seq seen - behind) instead of staying at L - behind")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *serverPid > 0 {
		o.serverPid = strconv.Itoa(*serverPid)
	}
	if *pid <= 0 {
		return o, errors.New("-pid of the worker is required")
	}
	o.pid = strconv.Itoa(*pid)
	u, err := url.Parse(o.wsURL)
	if err != nil {
		return o, fmt.Errorf("-url: %w", err)
	}
	if !strings.HasPrefix(u.Hostname(), "127.") {
		return o, errors.New("-url must point at 127.0.0.x: this tool only drives loopback")
	}
	if nu, err := url.Parse(o.natsURL); err != nil || !strings.HasPrefix(nu.Hostname(), "127.") {
		return o, errors.New("-nats must point at 127.0.0.x: this tool only drives loopback")
	}
	if mu, err := url.Parse(o.metricsURL); o.metricsURL != "" && (err != nil || !strings.HasPrefix(mu.Hostname(), "127.")) {
		return o, errors.New("-metrics must point at 127.0.0.x")
	}
	if o.metricsURL == "" {
		o.metricsURL = "http://" + u.Host + "/metrics"
	}
	if o.conns <= 0 || o.perProc <= 0 || o.srcIPs <= 0 || o.srcIPs > 240 {
		return o, errors.New("-conns and -per-proc must be positive, -src-ips in 1..240")
	}
	if o.rate <= 0 || o.count <= 0 || o.size < 64 {
		return o, errors.New("-rate and -count must be positive, -size at least 64")
	}
	if o.publish != "core" && o.publish != "durable" {
		return o, errors.New("-publish must be core or durable")
	}
	if o.missed <= 0 || o.others < 0 || o.resumes <= 0 || o.streamMsgs <= 0 || o.names <= 0 || o.bcastEvery < 0 ||
		o.behind < 0 || o.procs <= 0 || o.maxInflight <= 0 {
		return o, errors.New("-missed, -resumes, -stream-msgs, -names, -procs and -max-inflight must be positive; -others, -bcast-every and -behind not negative")
	}
	return o, nil
}

// child is one client process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
	pid   string
}

func runCoordinator(mode string, args []string) error {
	o, err := parseOptions(mode, args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.maxRun)
	defer cancel()
	rep := newReport(o)
	httpc := &http.Client{Timeout: 5 * time.Second}

	if err := checkTarget(o, httpc); err != nil {
		return err
	}
	rssBefore, err := statusKB(o.pid, "VmRSS")
	if err != nil {
		return fmt.Errorf("worker pid %s: %w", o.pid, err)
	}
	slabBefore, _ := meminfoKB("Slab")
	sockBefore, _ := sockstatTCPMemKB()
	rep.kv("worker RSS before", kb(rssBefore))

	self, err := os.Executable()
	if err != nil {
		return err
	}
	var children []*child
	defer func() {
		for _, c := range children {
			_ = c.stdin.Close()
			_ = c.cmd.Wait()
		}
	}()
	connectStart := time.Now()
	for first := 0; first < o.conns; first += o.perProc {
		n := min(o.perProc, o.conns-first)
		cmd := exec.CommandContext(ctx, self, "client",
			"-url", o.wsURL, "-first", strconv.Itoa(first), "-count", strconv.Itoa(n),
			"-src-ips", strconv.Itoa(o.srcIPs), "-broadcasts", strconv.Itoa(o.count),
			"-max-run", o.maxRun.String(), "-slow-every", strconv.Itoa(o.slowEvery), "-pause", o.pause.String())
		if mode == "durable" {
			cmd.Args = append(cmd.Args, "-v2")
		}
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start client process: %w", err)
		}
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		children = append(children, &child{cmd: cmd, stdin: stdin, lines: sc, pid: strconv.Itoa(cmd.Process.Pid)})
	}
	connected, failed := 0, 0
	for _, c := range children {
		var r childReady
		if err := c.readLine(&r); err != nil {
			return fmt.Errorf("client process %s: %w", c.pid, err)
		}
		connected += r.Conns
		failed += r.Failed
		if r.Err != "" {
			rep.kv("first connect error", r.Err)
		}
	}
	rep.kv("client processes", len(children))
	rep.kv("connections", fmt.Sprintf("%d welcomed, %d failed, in %s", connected, failed, time.Since(connectStart).Round(time.Millisecond)))

	// Settle, and measure what the worker costs while idle.
	idleCPU0, _ := cpuTime(o.pid)
	idleStart := time.Now()
	sleepCtx(ctx, o.settle)
	idleCPU1, _ := cpuTime(o.pid)
	idleRate := float64(idleCPU1-idleCPU0) / float64(time.Since(idleStart))
	rep.kv("worker idle CPU", fmt.Sprintf("%.1f%% of a core", 100*idleRate))

	switch mode {
	case "idle":
		rss, _ := statusKB(o.pid, "VmRSS")
		slab, _ := meminfoKB("Slab")
		sock, _ := sockstatTCPMemKB()
		per := func(d int64) string {
			if connected == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f KB", float64(d)/float64(connected))
		}
		if rss < rssBefore {
			return fmt.Errorf("worker RSS fell from %s to %s while connections were added: "+
				"something else freed memory in the worker during the run; measure again on a fresh worker", kb(rssBefore), kb(rss))
		}
		rep.kv("worker RSS after", kb(rss))
		rep.kv("worker RSS per connection", per(rss-rssBefore))
		rep.kv("kernel Slab per connection (both ends)", per(slab-slabBefore))
		rep.kv("TCP socket memory per connection", per(sock-sockBefore))
		for _, m := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes"} {
			if v := scrapeCounter(httpc, o.metricsURL, m); v >= 0 && connected > 0 {
				rep.kv(m+" per connection", fmt.Sprintf("%.2f", v/float64(connected)))
			}
		}
		rep.summary["rss_kb_per_conn"] = float64(rss-rssBefore) / float64(max(connected, 1))
		rep.summary["slab_kb_per_conn"] = float64(slab-slabBefore) / float64(max(connected, 1))
		return finish(rep, children, nil, o, nil)
	case "targeted", "broadcast", "durable":
		return measureDelivery(ctx, o, rep, children, httpc, connected, idleRate)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func measureDelivery(ctx context.Context, o options, rep *report, children []*child, httpc *http.Client, connected int, idleRate float64) error {
	nc, err := nats.Connect(o.natsURL, nats.Name("bench-producer"))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	droppedBefore := scrapeCounter(httpc, o.metricsURL, "notify_dropped_total")
	natsDroppedBefore := scrapeCounter(httpc, o.metricsURL, "notify_nats_dropped_total")
	deliveriesBefore := scrapeCounter(httpc, o.metricsURL, "notify_deliveries_total")
	allocBefore := scrapeCounter(httpc, o.metricsURL, "go_memstats_alloc_bytes_total")
	gcBefore := scrapeCounter(httpc, o.metricsURL, "go_gc_duration_seconds_count")

	publish := nc.Publish
	var js jetstream.JetStream
	var ackErrors atomic.Int64
	if o.mode == "durable" && o.publish == "durable" {
		js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192),
			jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { ackErrors.Add(1) }))
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		if _, err := waitForStream(ctx, js, o.stream); err != nil {
			return err
		}
		publish = func(subject string, payload []byte) error {
			// PublishAsync keeps the message for a retry: it must not
			// share the loop's buffer.
			_, err := js.PublishAsync(durableSubject(subject), bytes.Clone(payload))
			return err
		}
	}

	durableWords := []string{"durable", "feed", "app_ping", "stream"}
	durableBefore := scrapeFamilies(httpc, o.metricsURL, durableWords...)
	w := newWindow(o.pid, o.serverPid, children)
	var sent, expected int64
	var maxLag time.Duration
	lagBySecond := map[int64]time.Duration{} // Unix second -> worst publisher lag
	buf := make([]byte, 0, o.size+64)
	if o.mode == "targeted" || o.mode == "durable" {
		subs := make([]string, o.conns)
		for i := range subs {
			subs[i] = o.prefix + ".user.u" + strconv.Itoa(i)
		}
		total := int64(float64(o.rate) * o.duration.Seconds())
		period := float64(time.Second) / float64(o.rate)
		t0 := time.Now().Add(10 * time.Millisecond)
		for sent < total && ctx.Err() == nil {
			due := min(int64(float64(time.Since(t0))/period)+1, total)
			for ; sent < due; sent++ {
				intended := t0.Add(time.Duration(float64(sent) * period))
				buf = appendPayload(buf[:0], 'u', sent/int64(o.conns)+1, intended.UnixNano(), o.size)
				if err := publish(subs[sent%int64(o.conns)], buf); err != nil {
					return fmt.Errorf("publish: %w", err)
				}
				lag := time.Since(intended)
				maxLag = max(maxLag, lag)
				sec := intended.Unix()
				lagBySecond[sec] = max(lagBySecond[sec], lag)
			}
			if sent < total {
				next := t0.Add(time.Duration(float64(sent) * period))
				time.Sleep(time.Until(next))
			}
		}
		expected = sent
	} else {
		for k := 1; k <= o.count && ctx.Err() == nil; k++ {
			intended := time.Now()
			buf = appendPayload(buf[:0], 'a', int64(k), intended.UnixNano(), o.size)
			if err := nc.Publish(o.prefix+".all", buf); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			if err := nc.Flush(); err != nil {
				return fmt.Errorf("flush: %w", err)
			}
			maxLag = max(maxLag, time.Since(intended))
			sent++
			sleepCtx(ctx, time.Until(intended.Add(o.interval)))
		}
		expected = sent * int64(connected)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if js != nil {
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(o.drain):
		}
	}
	publishWall := time.Since(w.start)
	drainUntilDelivered(ctx, httpc, o, deliveriesBefore+float64(expected))
	w.end()

	rep.kv("published", fmt.Sprintf("%d messages in %s (%.0f/s), publisher behind schedule by at most %s",
		sent, publishWall.Round(time.Millisecond), float64(sent)/publishWall.Seconds(), maxLag.Round(time.Microsecond)))
	if o.mode == "durable" {
		rep.kv("publish", o.publish)
	}
	if o.mode == "durable" {
		rep.kv("worker metrics moved", metricDeltas(durableBefore, scrapeFamilies(httpc, o.metricsURL, durableWords...)))
	}
	if js != nil {
		rep.kv("PubAcks", fmt.Sprintf("%d errors, %d still pending after the drain", ackErrors.Load(), js.PublishAsyncPending()))
		rep.summary["ack_errors"] = float64(ackErrors.Load())
	}
	rep.kv("deliveries expected", expected)
	rep.summary["expected"] = float64(expected)
	for _, m := range []struct {
		name   string
		before float64
	}{{"notify_deliveries_total", deliveriesBefore}, {"notify_dropped_total", droppedBefore}, {"notify_nats_dropped_total", natsDroppedBefore}} {
		after := scrapeCounter(httpc, o.metricsURL, m.name)
		rep.kv(m.name+" delta", after-m.before)
		rep.summary[m.name] = after - m.before
	}
	if expected > 0 {
		alloc := scrapeCounter(httpc, o.metricsURL, "go_memstats_alloc_bytes_total") - allocBefore
		gcs := scrapeCounter(httpc, o.metricsURL, "go_gc_duration_seconds_count") - gcBefore
		rep.kv("worker heap allocation per delivery", fmt.Sprintf("%.0f B (%.0f GC cycles in window)", alloc/float64(expected), gcs))
		rep.summary["alloc_bytes_per_delivery"] = alloc / float64(expected)
	}
	workerCPU := w.workerCPU
	if expected > 0 && workerCPU <= 0 {
		return fmt.Errorf("worker pid %s used no CPU while %d deliveries were made: -pid is not the worker", o.pid, expected)
	}
	rep.kv("window", w.wall.Round(time.Millisecond))
	rep.kv("worker CPU in window", fmt.Sprintf("%s (%.0f%% of a core)", workerCPU.Round(time.Millisecond), 100*float64(workerCPU)/float64(w.wall)))
	if expected > 0 {
		perDelivery := float64(workerCPU.Microseconds()) / float64(expected)
		net := (float64(workerCPU) - idleRate*float64(w.wall)) / float64(time.Microsecond) / float64(expected)
		rep.kv("worker CPU per delivery", fmt.Sprintf("%.2f µs (%.2f µs without the idle baseline)", perDelivery, net))
		rep.summary["worker_us_per_delivery"] = perDelivery
		rep.summary["worker_us_per_delivery_net"] = net
	}
	return finish(rep, children, w, o, lagBySecond)
}

// drainUntilDelivered waits until the worker's delivery counter reaches
// want, or stops moving for 3s, or o.drain passes; then a little longer for
// the last frames to cross the sockets. A backlog (NATS holds back a
// publisher whose subscriber lags) is then counted as late, not as lost.
func drainUntilDelivered(ctx context.Context, httpc *http.Client, o options, want float64) {
	deadline := time.Now().Add(o.drain)
	last, lastMove := -1.0, time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		got := scrapeCounter(httpc, o.metricsURL, "notify_deliveries_total")
		if got < 0 || got >= want {
			break
		}
		if got != last {
			last, lastMove = got, time.Now()
		} else if time.Since(lastMove) > 3*time.Second {
			break
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	sleepCtx(ctx, 500*time.Millisecond)
}

// window is the measured stretch of a run: CPU of the worker, of this
// process and of each client process, and of the whole machine.
type window struct {
	pid       string
	serverPid string // "" when the NATS server is the worker's embedded one
	children  []*child
	start     time.Time
	wall      time.Duration
	worker0   time.Duration
	self0     time.Duration
	child0    []time.Duration
	machine0  [2]int64
	workerCPU time.Duration
	server0   time.Duration
	serverCPU time.Duration
	selfCPU   time.Duration
	childCPU  []time.Duration
	busy      float64 // share of all CPUs busy, 0..1
}

func newWindow(pid, serverPid string, children []*child) *window {
	w := &window{pid: pid, serverPid: serverPid, children: children, start: time.Now()}
	w.worker0, _ = cpuTime(pid)
	if serverPid != "" {
		w.server0, _ = cpuTime(serverPid)
	}
	w.self0, _ = cpuTime("self")
	for _, c := range children {
		t, _ := cpuTime(c.pid)
		w.child0 = append(w.child0, t)
	}
	w.machine0 = machineTicks()
	return w
}

func (w *window) end() {
	w.wall = time.Since(w.start)
	t, _ := cpuTime(w.pid)
	w.workerCPU = t - w.worker0
	if w.serverPid != "" {
		t, _ = cpuTime(w.serverPid)
		w.serverCPU = t - w.server0
	}
	t, _ = cpuTime("self")
	w.selfCPU = t - w.self0
	for i, c := range w.children {
		t, _ := cpuTime(c.pid)
		w.childCPU = append(w.childCPU, t-w.child0[i])
	}
	m := machineTicks()
	if total := m[0] - w.machine0[0]; total > 0 {
		w.busy = float64(m[1]-w.machine0[1]) / float64(total)
	}
}

// machineTicks returns all and busy ticks from the first line of /proc/stat.
func machineTicks() [2]int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]int64{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var total, idle int64
	for i, s := range f[1:] {
		v, _ := strconv.ParseInt(s, 10, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return [2]int64{total, total - idle}
}

// finish stops the clients, merges what they saw and prints the report.
func finish(rep *report, children []*child, w *window, o options, lagBySecond map[int64]time.Duration) error {
	var hist merged
	bySecond := map[int64]int64{}
	var res childResult
	bcast := make(map[int64]int64)
	for _, c := range children {
		if _, err := io.WriteString(c.stdin, "stop\n"); err != nil {
			return fmt.Errorf("client process %s: %w", c.pid, err)
		}
	}
	for _, c := range children {
		var r childResult
		if err := c.readLine(&r); err != nil {
			return fmt.Errorf("client process %s: %w", c.pid, err)
		}
		res.addCounts(r)
		hist.add(r.Hist, r.MaxUS)
		for k, v := range r.SecondMaxUS {
			bySecond[k] = max(bySecond[k], v)
		}
		for k, v := range r.BcastMaxUS {
			bcast[k] = max(bcast[k], v)
		}
	}
	if o.mode != "idle" {
		unique := res.Received - res.Duplicates
		lost := int64(rep.summary["expected"]) - unique
		rep.kv("received", fmt.Sprintf("%d (duplicates %d, out of order %d, malformed %d, connections closed by the worker %d)",
			res.Received, res.Duplicates, res.Reordered, res.Malformed, res.Closed))
		if o.mode == "durable" {
			rep.kv("v2 frames", fmt.Sprintf("%d with a stream seq (%d not above the connection's last), %d app pings", res.Durable, res.StreamDups, res.Pings))
			rep.summary["durable_frames"] = float64(res.Durable)
		}
		rep.kv("lost", lost)
		rep.summary["lost"] = float64(lost)
		rep.summary["duplicates"] = float64(res.Duplicates)
		ms := func(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }
		rep.kv("latency publish->receipt", fmt.Sprintf("p50 %s  p99 %s  p99.9 %s  max %s  (n=%d)",
			ms(hist.quantile(0.50)), ms(hist.quantile(0.99)), ms(hist.quantile(0.999)),
			ms(time.Duration(hist.maxUS)*time.Microsecond), hist.total))
		rep.summary["p50_ms"] = float64(hist.quantile(0.50)) / 1e6
		rep.summary["p99_ms"] = float64(hist.quantile(0.99)) / 1e6
		rep.summary["p999_ms"] = float64(hist.quantile(0.999)) / 1e6
		rep.summary["max_ms"] = float64(hist.maxUS) / 1e3
	}
	if (o.mode == "targeted" || o.mode == "durable") && len(bySecond) > 0 {
		secs := slices.Sorted(maps.Keys(bySecond))
		var tl []string
		for _, t := range secs {
			tl = append(tl, fmt.Sprintf("%.1f/%.1f", float64(bySecond[t])/1e3, float64(lagBySecond[t])/1e6))
		}
		rep.kv("slowest receipt / publisher lag per second, ms", strings.Join(tl, " "))
	}
	if o.mode == "broadcast" && len(bcast) > 0 {
		full := make([]int64, 0, len(bcast))
		for _, v := range bcast {
			full = append(full, v)
		}
		slices.Sort(full)
		q := func(p float64) string {
			i := min(int(p*float64(len(full))+0.5), len(full)) - 1
			return fmt.Sprintf("%.3f ms", float64(full[max(i, 0)])/1e3)
		}
		rep.kv("broadcast fully delivered after", fmt.Sprintf("p50 %s  p99 %s  max %s  (n=%d broadcasts)", q(0.5), q(0.99), q(1), len(full)))
		rep.summary["bcast_full_p99_ms"] = float64(full[max(min(int(0.99*float64(len(full))+0.5), len(full))-1, 0)]) / 1e3
	}
	if w != nil {
		w.reportServer(rep)
		rep.kv("load generator CPU", fmt.Sprintf("coordinator %.0f%%, clients %s of a core", 100*float64(w.selfCPU)/float64(w.wall), percents(w.childCPU, w.wall)))
		rep.kv("machine busy in window", fmt.Sprintf("%.0f%% of %d CPUs", 100*w.busy, runtime.NumCPU()))
		for i, c := range w.childCPU {
			if float64(c) > 0.9*float64(w.wall) {
				rep.kv("WARNING", fmt.Sprintf("client process %d used %.0f%% of a core: the load generator may be the bottleneck", i, 100*float64(c)/float64(w.wall)))
			}
		}
		if w.busy > 0.95 {
			rep.kv("WARNING", "the machine was saturated; latency figures include waiting for a CPU")
		}
	}
	rep.kv("load average after", loadAvg())
	rep.print(os.Stdout)
	return nil
}

// reportServer adds the CPU of a NATS server of its own, when there is one.
func (w *window) reportServer(rep *report) {
	if w.serverPid != "" {
		rep.kv("NATS server CPU in window", fmt.Sprintf("%s (%.0f%% of a core)", w.serverCPU.Round(time.Millisecond), 100*float64(w.serverCPU)/float64(w.wall)))
	}
}

func percents(ds []time.Duration, wall time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprintf("%.0f%%", 100*float64(d)/float64(wall))
	}
	return strings.Join(s, " + ")
}

func (c *child) readLine(v any) error {
	if !c.lines.Scan() {
		if err := c.lines.Err(); err != nil {
			return err
		}
		return errors.New("exited early")
	}
	return json.Unmarshal(c.lines.Bytes(), v)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func kb(v int64) string { return fmt.Sprintf("%d kB", v) }

// report collects the lines of a run's report and a JSON summary.
type report struct {
	lines   [][2]string
	summary map[string]float64
}

func newReport(o options) *report {
	r := &report{summary: map[string]float64{}}
	r.kv("mode", o.mode)
	r.kv("date", time.Now().UTC().Format(time.RFC3339))
	r.kv("command", strings.Join(os.Args, " "))
	r.kv("load average before", loadAvg())
	return r
}

func (r *report) kv(k string, v any) { r.lines = append(r.lines, [2]string{k, fmt.Sprint(v)}) }

func (r *report) print(w io.Writer) {
	width := 0
	for _, l := range r.lines {
		width = max(width, len(l[0]))
	}
	for _, l := range r.lines {
		fmt.Fprintf(w, "%-*s  %s\n", width, l[0], l[1])
	}
	b, _ := json.Marshal(r.summary)
	fmt.Fprintf(w, "summary %s\n", b)
}
