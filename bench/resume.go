package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runResume is the "resume" subcommand: how many resumes per second one
// worker serves. It stores -stream-msgs durable messages spread round
// robin over -names names (every -bcast-every-th one a broadcast), reads
// the stream's last sequence L, and then has -procs "bench resumer"
// processes start -rate resumes per second between them for -duration,
// each as the next name in turn; each resume connects, reads the welcome
// and the replay it announces, and closes.
//
// Every resume stores a barrier message in the stream (protocol.md,
// section 8), so the stream grows by one message per resume during the
// run. With since = L - -behind fixed (the default), the cursors are those
// of a herd of clients that all went away at the same point, and the part
// of the stream after them grows with every resume; each replay is the
// same, which is checked name by name. With -track, each resume sends
// since = (the highest welcome seq its process has seen) - -behind, so
// that every resume looks -behind messages back from the stream's end as
// it is then; the replays soon hold only barriers' neighbours (nothing of
// the name's), and are not checked against the fill.
func runResume(args []string) error {
	o, err := parseOptions("resume", args)
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
	nc, js, stream, err := connectJetStream(ctx, o)
	if err != nil {
		return err
	}
	defer nc.Close()

	isBroadcast := func(i int) bool { return o.bcastEvery > 0 && i%o.bcastEvery == o.bcastEvery-1 }
	fillStart := time.Now()
	seqs, err := fillStream(ctx, js, o.streamMsgs, o.size, func(i int) string {
		if isBroadcast(i) {
			return o.prefix + ".all"
		}
		return o.prefix + ".user.u" + strconv.Itoa(i%o.names)
	})
	if err != nil {
		return fmt.Errorf("fill the stream: %w", err)
	}
	fillWall := time.Since(fillStart)
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	last := info.State.LastSeq
	since := int64(last) - int64(o.behind)
	// What each name's resume must replay: its messages and the broadcasts
	// in (since, last].
	expected := make([]int64, o.names)
	var bcasts int64
	for i, seq := range seqs {
		switch {
		case int64(seq) <= since:
		case isBroadcast(i):
			bcasts++
		default:
			expected[i%o.names]++
		}
	}
	for n := range expected {
		expected[n] += bcasts
	}
	rep.kv("stream filled", fmt.Sprintf("%d messages of %d B in %s (%.0f/s) over %d names, every %d-th a broadcast; stream: %d messages, %d bytes, last seq %d",
		len(seqs), o.size, fillWall.Round(time.Millisecond), float64(len(seqs))/fillWall.Seconds(), o.names, o.bcastEvery,
		info.State.Msgs, info.State.Bytes, last))
	if o.track {
		rep.kv("resume", fmt.Sprintf(`{"name":"u<n>","v":2,"since":S}, S = the highest welcome seq seen - %d, from %d on`, o.behind, since))
	} else {
		rep.kv("resume", fmt.Sprintf(`{"name":"u<n>","v":2,"since":%d}: each replays its own messages after since and %d broadcasts (%d ... %d messages a resume)`,
			since, bcasts, slices.Min(expected), slices.Max(expected)))
	}

	words := []string{"resume", "replay", "feed", "refused", "limit_closes", "handshakes", "dropped", "durable", "app_ping", "stream"}
	before := scrapeFamilies(httpc, o.metricsURL, words...)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	start := time.Now().Add(time.Second)
	perProc := float64(o.rate) / float64(o.procs)
	var children []*child
	defer func() {
		for _, c := range children {
			_ = c.stdin.Close()
			_ = c.cmd.Wait()
		}
	}()
	for p := range o.procs {
		cmd := exec.CommandContext(ctx, self, "resumer",
			"-url", o.wsURL, "-src-ips", strconv.Itoa(o.srcIPs), "-rate", strconv.FormatFloat(perProc, 'f', -1, 64),
			"-duration", o.duration.String(), "-start", strconv.FormatInt(start.UnixNano(), 10),
			"-since", strconv.FormatInt(since, 10), "-names", strconv.Itoa(o.names),
			"-track="+strconv.FormatBool(o.track), "-behind", strconv.Itoa(o.behind),
			"-proc", strconv.Itoa(p), "-procs", strconv.Itoa(o.procs), "-max-inflight", strconv.Itoa(o.maxInflight),
			"-max-run", o.maxRun.String())
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
			return fmt.Errorf("start resumer process: %w", err)
		}
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		children = append(children, &child{cmd: cmd, stdin: stdin, lines: sc, pid: strconv.Itoa(cmd.Process.Pid)})
	}
	sleepCtx(ctx, time.Until(start))
	w := newWindow(o.pid, o.serverPid, children)
	var res resumerResult
	var resumeH, welcomeH, totalH, dialH merged
	var done time.Duration
	var okBySecond, maxBySecond []int64
	replayedBy := make([]int64, o.names)
	resumesBy := make([]int64, o.names)
	for _, c := range children {
		var r resumerResult
		if err := c.readLine(&r); err != nil {
			return fmt.Errorf("resumer process %s: %w", c.pid, err)
		}
		res.Started += r.Started
		res.OK += r.OK
		res.Skipped += r.Skipped
		res.Replayed += r.Replayed
		res.MaxInflight = max(res.MaxInflight, r.MaxInflight)
		res.Failed = addCounts(res.Failed, r.Failed)
		if res.FirstErr == "" {
			res.FirstErr = r.FirstErr
		}
		resumeH.add(r.Resume, r.ResumeMaxUS)
		welcomeH.add(r.Welcome, r.WelcomeMaxUS)
		totalH.add(r.Total, r.TotalMaxUS)
		dialH.add(r.Dial, r.DialMaxUS)
		done = max(done, r.Done)
		for i := range r.OKBySecond {
			if i >= len(okBySecond) {
				okBySecond = append(okBySecond, 0)
				maxBySecond = append(maxBySecond, 0)
			}
			okBySecond[i] += r.OKBySecond[i]
			maxBySecond[i] = max(maxBySecond[i], r.MaxUSBySecond[i])
		}
		for n := range min(len(r.ReplayedBy), o.names) {
			replayedBy[n] += r.ReplayedBy[n]
			resumesBy[n] += r.ResumesBy[n]
		}
	}
	w.end()
	after := scrapeFamilies(httpc, o.metricsURL, words...)

	var wrong int64 // names whose resumes replayed other than expected
	for n := range o.names {
		if !o.track && replayedBy[n] != resumesBy[n]*expected[n] {
			wrong++
		}
	}
	wall := max(done, o.duration)
	achieved := float64(res.OK) / wall.Seconds()
	var failed int64
	for _, v := range res.Failed {
		failed += v
	}
	rep.kv("resumes", fmt.Sprintf("%d started, %d recovered and complete, %d failed (%s), %d not started (-max-inflight %d reached)",
		res.Started, res.OK, failed, failureList(res.Failed), res.Skipped, o.maxInflight))
	if res.FirstErr != "" {
		rep.kv("first failure", res.FirstErr)
	}
	rep.kv("achieved", fmt.Sprintf("%.0f resumes/s (offered %d/s for %s; the last one done %s after the start)", achieved, o.rate, o.duration, done.Round(time.Millisecond)))
	checked := fmt.Sprintf("names whose replays differ from the stream: %d of %d", wrong, o.names)
	if o.track {
		checked = "not checked against the fill (-track)"
	}
	rep.kv("replayed", fmt.Sprintf("%d frames (%.1f a resume); %s", res.Replayed, float64(res.Replayed)/float64(max(res.OK, 1)), checked))
	var tl []string
	for i := range okBySecond {
		tl = append(tl, fmt.Sprintf("%d/%.0f", okBySecond[i], float64(maxBySecond[i])/1e3))
	}
	rep.kv("per second: done / slowest ms", strings.Join(tl, " "))
	rep.kv("most resumes under way in one process", res.MaxInflight)
	rep.kv("first message -> last replayed frame", mergedLine(&resumeH))
	rep.kv("first message -> welcome", mergedLine(&welcomeH))
	rep.kv("connect + upgrade", mergedLine(&dialH))
	rep.kv("scheduled start -> last replayed frame", mergedLine(&totalH))
	rep.summary["achieved_per_s"] = achieved
	rep.summary["ok"] = float64(res.OK)
	rep.summary["failed"] = float64(failed)
	rep.summary["skipped"] = float64(res.Skipped)
	rep.summary["wrong_names"] = float64(wrong)
	rep.summariseMerged("resume", &resumeH)
	rep.summariseMerged("total", &totalH)
	rep.kv("worker metrics moved", metricDeltas(before, after))
	rep.kv("window", w.wall.Round(time.Millisecond))
	rep.kv("worker CPU in window", fmt.Sprintf("%s (%.0f%% of a core), %.0f µs per resume",
		w.workerCPU.Round(time.Millisecond), 100*float64(w.workerCPU)/float64(w.wall), float64(w.workerCPU.Microseconds())/float64(max(res.OK, 1))))
	rep.summary["worker_cpu_share"] = float64(w.workerCPU) / float64(w.wall)
	rep.summary["worker_us_per_resume"] = float64(w.workerCPU.Microseconds()) / float64(max(res.OK, 1))
	w.reportServer(rep)
	rep.kv("load generator CPU", fmt.Sprintf("coordinator %.0f%%, resumers %s of a core", 100*float64(w.selfCPU)/float64(w.wall), percents(w.childCPU, w.wall)))
	rep.kv("machine busy in window", fmt.Sprintf("%.0f%% of 2 CPUs", 100*w.busy))
	if w.busy > 0.95 {
		rep.kv("WARNING", "the machine was saturated; latency figures include waiting for a CPU")
	}
	rep.kv("load average after", loadAvg())
	rep.print(os.Stdout)
	return nil
}

// resumerResult is the line a resumer process prints when it is done.
type resumerResult struct {
	Started      int64            `json:"started"`
	OK           int64            `json:"ok"`      // recovered, replay complete and in order
	Skipped      int64            `json:"skipped"` // due while -max-inflight were under way
	Failed       map[string]int64 `json:"failed"`  // by resumeResult.failure
	FirstErr     string           `json:"first_err,omitempty"`
	Replayed     int64            `json:"replayed"`
	MaxInflight  int64            `json:"max_inflight"`
	ReplayedBy   []int64          `json:"replayed_by"` // by name number, over OK resumes
	ResumesBy    []int64          `json:"resumes_by"`
	Resume       map[int]int64    `json:"resume"` // first message -> last replayed frame
	ResumeMaxUS  int64            `json:"resume_max_us"`
	Welcome      map[int]int64    `json:"welcome"` // first message -> welcome
	WelcomeMaxUS int64            `json:"welcome_max_us"`
	Total        map[int]int64    `json:"total"` // scheduled start -> last replayed frame
	TotalMaxUS   int64            `json:"total_max_us"`
	Dial         map[int]int64    `json:"dial"`
	DialMaxUS    int64            `json:"dial_max_us"`
	Done         time.Duration    `json:"done"` // scheduled start of the first -> end of the last
	// By second of the scheduled start, from the first: resumes that
	// ended well, and the slowest of them (first message -> last frame).
	OKBySecond    []int64 `json:"ok_by_second"`
	MaxUSBySecond []int64 `json:"max_us_by_second"`
}

func addCounts(into, from map[string]int64) map[string]int64 {
	if into == nil {
		into = map[string]int64{}
	}
	for k, v := range from {
		into[k] += v
	}
	return into
}

// runResumer is the "resumer" subcommand, started by "resume": from -start
// on, it starts -rate resumes per second for -duration, open loop (a slow
// worker shows as latency and as skipped resumes, not as a lower offered
// rate), and prints a resumerResult once they have all ended.
func runResumer(args []string) error {
	fs := flag.NewFlagSet("resumer", flag.ExitOnError)
	url := fs.String("url", "ws://127.0.0.1:18888/", "worker WebSocket URL")
	srcIPs := fs.Int("src-ips", 50, "spread source addresses over 127.0.0.10 ...")
	rate := fs.Float64("rate", 500, "resumes started per second")
	duration := fs.Duration("duration", 20*time.Second, "how long to start resumes")
	startNS := fs.Int64("start", 0, "when to start, Unix nanoseconds (0: now)")
	since := fs.Int64("since", 0, "the cursor every resume sends (with -track: the first)")
	track := fs.Bool("track", false, "send since = the highest welcome seq seen - behind")
	behind := fs.Int64("behind", 1000, "with -track: how far behind the stream's end since is")
	names := fs.Int("names", 1000, "names u0 ... u<names-1>, taken in turn")
	proc := fs.Int("proc", 0, "this process's number among -procs: it takes resumes proc, proc+procs, ...")
	procs := fs.Int("procs", 1, "resumer processes")
	maxInflight := fs.Int64("max-inflight", 2000, "most resumes under way")
	maxRun := fs.Duration("max-run", 10*time.Minute, "exit after this long whatever happens")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate <= 0 || *names <= 0 || *procs <= 0 || *proc < 0 || *proc >= *procs {
		return errors.New("-rate, -names and -procs must be positive, -proc in 0..procs-1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *maxRun)
	defer cancel()
	start := time.Now()
	if *startNS > 0 {
		start = time.Unix(0, *startNS)
	}

	var (
		mu      sync.Mutex
		seconds = int(duration.Seconds()) + 1
		res     = resumerResult{Failed: map[string]int64{}, ReplayedBy: make([]int64, *names), ResumesBy: make([]int64, *names),
			OKBySecond: make([]int64, seconds), MaxUSBySecond: make([]int64, seconds)}
		resumeH, welcomeH, totalH, dlH histogram
		inflight                       atomic.Int64
		lastEnd                        time.Time
		wg                             sync.WaitGroup
		latest                         atomic.Int64 // highest welcome seq seen
	)
	latest.Store(*since + *behind)
	period := float64(time.Second) / *rate
	total := int64(*rate * duration.Seconds())
	sleepCtx(ctx, time.Until(start))
	for k := int64(0); k < total && ctx.Err() == nil; {
		due := min(int64(float64(time.Since(start))/period)+1, total)
		for ; k < due; k++ {
			if n := inflight.Load(); n >= *maxInflight {
				res.Skipped++
				continue
			}
			res.MaxInflight = max(res.MaxInflight, inflight.Add(1))
			res.Started++
			intended := start.Add(time.Duration(float64(k) * period))
			g := int(k)*(*procs) + *proc // this resume's number over all processes
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer inflight.Add(-1)
				n := g % *names
				cursor := *since
				if *track {
					cursor = max(latest.Load()-*behind, 0)
				}
				r := resumeOnce(ctx, *url, g, *srcIPs, "u"+strconv.Itoa(n), cursor)
				end := time.Now()
				storeMax(&latest, int64(r.w.Seq))
				mu.Lock()
				defer mu.Unlock()
				lastEnd = maxTime(lastEnd, end)
				if why := r.failure(); why != "" {
					res.Failed[why]++
					if res.FirstErr == "" {
						res.FirstErr = fmt.Sprintf("%s: %v", why, r.err)
					}
					return
				}
				res.OK++
				res.Replayed += int64(r.replayed)
				res.ReplayedBy[n] += int64(r.replayed)
				res.ResumesBy[n]++
				resumeH.record(r.last)
				welcomeH.record(r.welcome)
				dlH.record(r.dial)
				totalH.record(end.Sub(intended))
				if sec := int(intended.Sub(start) / time.Second); sec < seconds {
					res.OKBySecond[sec]++
					res.MaxUSBySecond[sec] = max(res.MaxUSBySecond[sec], r.last.Microseconds())
				}
			}()
		}
		if k < total {
			sleepCtx(ctx, time.Until(start.Add(time.Duration(float64(k)*period))))
		}
	}
	wg.Wait()
	res.Resume, res.ResumeMaxUS = resumeH.sparse(), resumeH.max.Load()
	for len(res.OKBySecond) > 0 && res.OKBySecond[len(res.OKBySecond)-1] == 0 {
		res.OKBySecond = res.OKBySecond[:len(res.OKBySecond)-1]
	}
	res.MaxUSBySecond = res.MaxUSBySecond[:len(res.OKBySecond)]
	res.Welcome, res.WelcomeMaxUS = welcomeH.sparse(), welcomeH.max.Load()
	res.Total, res.TotalMaxUS = totalH.sparse(), totalH.max.Load()
	res.Dial, res.DialMaxUS = dlH.sparse(), dlH.max.Load()
	if !lastEnd.IsZero() {
		res.Done = lastEnd.Sub(start)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// failureList formats failure counts in a stable order.
func failureList(m map[string]int64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(out, ", ")
}
