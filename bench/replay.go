package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

// runReplay is the "replay" subcommand: how long one client's replay of
// -missed durable messages takes. It stores -missed messages for the name
// r0 (with -others messages to other names between two of r0's, so that
// the worker has to pick r0's out of a busier stream), then resumes as r0
// from just before the first of them, -resumes times one after another,
// and reports welcome -> last replayed frame, first message -> welcome, and
// the worker's CPU per resume. Every resume must be recovered and replay
// exactly r0's messages in order; one that is not is reported, not timed.
func runReplay(args []string) error {
	o, err := parseOptions("replay", args)
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
	nc, js, _, err := connectJetStream(ctx, o)
	if err != nil {
		return err
	}
	defer nc.Close()

	const name = "r0"
	step := o.others + 1
	fillStart := time.Now()
	seqs, err := fillStream(ctx, js, o.missed*step, o.size, func(i int) string {
		if i%step == 0 {
			return o.prefix + ".user." + name
		}
		return o.prefix + ".user.u" + strconv.Itoa(i%1000)
	})
	if err != nil {
		return fmt.Errorf("fill the stream: %w", err)
	}
	first, last := seqs[0], seqs[len(seqs)-step]
	since := int64(first) - 1
	rep.kv("stream filled", fmt.Sprintf("%d messages of %d B in %s: %d for %s (seq %d ... %d), %d to 1,000 other names between them",
		len(seqs), o.size, time.Since(fillStart).Round(time.Millisecond), o.missed, name, first, last, len(seqs)-o.missed))
	rep.kv("resume", fmt.Sprintf(`{"name":%q,"v":2,"since":%d}, %d times, %s apart`, name, since, o.resumes, o.gap))

	words := []string{"resume", "replay", "feed", "refused", "limit_closes", "handshakes", "dropped", "durable", "app_ping"}
	before := scrapeFamilies(httpc, o.metricsURL, words...)
	var welcomeH, replayH, totalH histogram
	failures := map[string]int{}
	firstFailure := ""
	ok := 0
	w := newWindow(o.pid, o.serverPid, nil)
	for k := 0; k < o.resumes && ctx.Err() == nil; k++ {
		r := resumeOnce(ctx, o.wsURL, k, o.srcIPs, name, since)
		if why := r.failure(); why != "" {
			failures[why]++
			if firstFailure == "" {
				firstFailure = fmt.Sprintf("%s: %v (welcome %+v)", why, r.err, r.w)
			}
		} else if r.replayed != o.missed || r.firstSeq != first || r.lastSeq != last {
			failures["wrong replay"]++
			if firstFailure == "" {
				firstFailure = fmt.Sprintf("replayed %d, seq %d ... %d; want %d, %d ... %d", r.replayed, r.firstSeq, r.lastSeq, o.missed, first, last)
			}
		} else {
			ok++
			welcomeH.record(r.welcome)
			replayH.record(r.replayTime())
			totalH.record(r.last)
		}
		sleepCtx(ctx, o.gap)
	}
	w.end()
	after := scrapeFamilies(httpc, o.metricsURL, words...)

	rep.kv("resumes", fmt.Sprintf("%d timed, %d failed %v", ok, o.resumes-ok, failures))
	if firstFailure != "" {
		rep.kv("first failure", firstFailure)
	}
	rep.summary["ok"] = float64(ok)
	rep.summary["failed"] = float64(o.resumes - ok)
	rep.kv("welcome -> last replayed frame", latencyLine(&replayH))
	rep.kv("first message -> welcome", latencyLine(&welcomeH))
	rep.kv("first message -> last replayed frame", latencyLine(&totalH))
	rep.summarise("replay", &replayH)
	rep.summarise("welcome", &welcomeH)
	rep.kv("worker metrics moved", metricDeltas(before, after))
	rep.kv("window", w.wall.Round(time.Millisecond))
	rep.kv("worker CPU in window", fmt.Sprintf("%s (%.0f%% of a core), %.0f µs per resume",
		w.workerCPU.Round(time.Millisecond), 100*float64(w.workerCPU)/float64(w.wall), float64(w.workerCPU.Microseconds())/float64(max(ok, 1))))
	w.reportServer(rep)
	rep.kv("load generator CPU", fmt.Sprintf("%.0f%% of a core", 100*float64(w.selfCPU)/float64(w.wall)))
	rep.kv("machine busy in window", fmt.Sprintf("%.0f%%", 100*w.busy))
	rep.kv("load average after", loadAvg())
	rep.print(os.Stdout)
	return nil
}

// failure names what went wrong with a resume, or "" when it was answered
// recovered and its replay kept the contract.
func (r resumeResult) failure() string {
	switch {
	case r.closeCode != 0:
		return "close " + strconv.Itoa(r.closeCode)
	case r.err != nil && r.w.Type == "":
		return "no welcome"
	case r.err != nil:
		return "bad replay"
	case !*r.w.Recovered:
		return "recovered:false " + r.w.Reason
	}
	return ""
}

// latencyLine formats the quantiles of one histogram.
func latencyLine(h *histogram) string {
	var m merged
	m.add(h.sparse(), h.max.Load())
	return mergedLine(&m)
}

func mergedLine(m *merged) string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }
	return fmt.Sprintf("p50 %s  p99 %s  p99.9 %s  max %s  (n=%d)", ms(m.quantile(0.5)), ms(m.quantile(0.99)),
		ms(m.quantile(0.999)), ms(time.Duration(m.maxUS)*time.Microsecond), m.total)
}

// summarise puts p50, p99 and max of h in the JSON summary as <key>_p50_ms ...
func (r *report) summarise(key string, h *histogram) {
	var m merged
	m.add(h.sparse(), h.max.Load())
	r.summariseMerged(key, &m)
}

func (r *report) summariseMerged(key string, m *merged) {
	r.summary[key+"_p50_ms"] = float64(m.quantile(0.5)) / 1e6
	r.summary[key+"_p99_ms"] = float64(m.quantile(0.99)) / 1e6
	r.summary[key+"_max_ms"] = float64(m.maxUS) / 1e3
}
