package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/notify-worker/notify-worker/feed"
	"github.com/notify-worker/notify-worker/subjects"
)

// Resume answers a v2 session of name resuming from its cursor since (nil:
// no cursor, live from now). It returns the durable messages of name and
// of the broadcast subject with a sequence in (*since, Through], oldest
// first, at most ReplayMax of them, and whether anything the session
// should have had may be missing (Recovered false, with a feed.Reason*).
// The session's subscription must be confirmed (Join) before the call:
// every message stored after Through then reaches the hub live.
//
// The steps, and why each exists: a barrier (barrier.go) fixes Through;
// batched Direct Gets per subject read (since, Through]; STREAM.INFO,
// answered by the stream's leader, then tells whether messages after the
// cursor may have been removed (its first sequence) and whether every
// replica that may have answered a Direct Get was current. Reasons, the
// first that holds: unavailable (durable support off, JetStream not
// enabled, the stream not one the worker can use), reset (since ahead of
// Through), retention (a message after the cursor may have been removed:
// the stream's first sequence is past since+1, or a subject holds, after
// since, as many messages as the stream's MaxMsgsPerSubject), replay_max
// (more than ReplayMax to replay). With retention or replay_max the
// newest messages that fit are returned. Replayed messages carry their
// Seq; Prev is 0.
//
// A condition that may pass (the stream not set up yet, no responders or
// a timeout in a leader election, a replica catching up) is retried with
// a backoff until ctx ends; Resume then returns an error wrapping
// ErrUnavailable, never Recovered false. At most ReplayConcurrency
// resumes run their JetStream requests at once; waiting for a turn
// counts against ctx. It runs on the caller's goroutine.
func (w *Worker) Resume(ctx context.Context, name string, since *uint64) (feed.Replay, error) {
	if err := subjects.ValidName(name); err != nil {
		return feed.Replay{}, fmt.Errorf("resume: %w", err)
	}
	if w.cfg.Stream.Name == "" {
		return feed.Replay{Reason: feed.ReasonUnavailable}, nil
	}
	bo := backoff{min: 20 * time.Millisecond, max: time.Second}
	var lastErr error
	for {
		if w.isDraining() {
			return feed.Replay{}, ErrDraining
		}
		state, limits, changed := w.stream.get()
		switch state {
		case StreamUnavailable:
			return feed.Replay{Reason: feed.ReasonUnavailable}, nil
		case StreamPending:
			lastErr = errors.New("the stream is not set up yet")
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return feed.Replay{}, unavailable(name, lastErr, ctx.Err())
			case <-w.quit:
				return feed.Replay{}, ErrDraining
			}
		}
		r, err := w.replayTurn(ctx, name, since, limits)
		if err == nil {
			return r, nil
		}
		lastErr = err
		if closedError(err) {
			return feed.Replay{}, unavailable(name, lastErr, nil)
		}
		if !sleep(ctx, w.quit, bo.next()) {
			return feed.Replay{}, unavailable(name, lastErr, ctx.Err())
		}
	}
}

// unavailable is Resume's error once it stops trying.
func unavailable(name string, last, ctxErr error) error {
	if ctxErr != nil {
		return fmt.Errorf("resume %s: %w: %w (last: %v)", name, ErrUnavailable, ctxErr, last)
	}
	return fmt.Errorf("resume %s: %w: %w", name, ErrUnavailable, last)
}

func (w *Worker) isDraining() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.draining
}

// replayTurn runs one attempt once a replay slot is free.
func (w *Worker) replayTurn(ctx context.Context, name string, since *uint64, limits streamLimits) (feed.Replay, error) {
	select {
	case w.replaySlots <- struct{}{}:
	case <-ctx.Done():
		return feed.Replay{}, fmt.Errorf("waiting for a replay slot: %w", ctx.Err())
	}
	defer func() { <-w.replaySlots }()
	return w.replay(ctx, name, since, limits)
}

// replay is one attempt: barrier, fetch, info, rules.
func (w *Worker) replay(ctx context.Context, name string, since *uint64, limits streamLimits) (feed.Replay, error) {
	through, err := w.storeBarrier(ctx)
	if err != nil {
		w.metrics.jsErrors[opBarrier].Inc()
		return feed.Replay{}, err
	}
	if since == nil {
		return feed.Replay{Through: through, Recovered: true}, nil
	}
	if *since > through {
		return feed.Replay{Through: through, Reason: feed.ReasonReset}, nil
	}
	f, err := w.fetch(ctx, name, *since, through)
	if err != nil {
		w.metrics.jsErrors[opFetch].Inc()
		return feed.Replay{}, err
	}
	info, err := w.streamInfo(ctx)
	if err != nil {
		w.metrics.jsErrors[opInfo].Inc()
		return feed.Replay{}, err
	}
	if !info.Created.Equal(limits.created) {
		w.askRecheck()
		w.metrics.jsErrors[opInfo].Inc()
		return feed.Replay{}, fmt.Errorf("stream %s was created again during the replay", w.cfg.Stream.Name)
	}
	if peer := staleReplica(info); peer != "" {
		// It may have answered a Direct Get with less than it should.
		w.metrics.jsErrors[opFetch].Inc()
		return feed.Replay{}, fmt.Errorf("replica %s of stream %s is not current", peer, w.cfg.Stream.Name)
	}
	w.noteLastSeq(info.State.LastSeq)

	r := feed.Replay{Through: through, Recovered: true}
	perSubject := info.Config.MaxMsgsPerSubject
	switch {
	case *since+1 < info.State.FirstSeq, perSubject > 0 && f.mostPending >= uint64(perSubject):
		r.Reason = feed.ReasonRetention
	case f.capped:
		r.Reason = feed.ReasonReplayMax
	}
	r.Recovered = r.Reason == ""
	r.Messages = make([]feed.Message, len(f.msgs))
	for i, m := range f.msgs {
		r.Messages[i] = feed.Message{Payload: m.data, Seq: m.seq}
	}
	return r, nil
}

// streamInfo asks the stream's leader for the stream's state.
func (w *Worker) streamInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	s, err := w.js.Stream(ctx, w.cfg.Stream.Name)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			w.askRecheck()
		}
		return nil, fmt.Errorf("stream info: %w", err)
	}
	return s.CachedInfo(), nil
}

// staleReplica names a replica of the stream that is online but not
// current, "" if there is none. An offline replica is not counted: it
// answers no Direct Get, and waiting for it would refuse every resume
// while a node is down.
func staleReplica(info *jetstream.StreamInfo) string {
	if info.Cluster == nil {
		return ""
	}
	for _, p := range info.Cluster.Replicas {
		if p != nil && !p.Current && !p.Offline {
			return p.Name
		}
	}
	return ""
}

// fetched is what a replay read of (since, through].
type fetched struct {
	msgs   []storedMsg // oldest first, at most ReplayMax
	capped bool        // there were more than ReplayMax
	// mostPending is the most messages either subject held from since+1
	// on, counted by the server when it served the first page.
	mostPending uint64
}

// run is one subject's part of a replay.
type run struct {
	subject string
	next    uint64      // where the next page starts
	msgs    []storedMsg // read so far, oldest first, all ≤ through
	asked   bool        // the first page was read (pending is set)
	pending uint64      // messages on the subject from the first page's start to the end of the stream
	done    bool
	// truncated: the run stopped at its limit with more ≤ through
	// possibly left.
	truncated bool
}

// fetch reads the messages of name and of the broadcast subject in
// (since, through]. Each subject's first page asks for ReplayMax+1
// messages: when neither fills it, that is all of them. When one does,
// there are more than ReplayMax and only the newest are wanted: newest
// finds where they start without reading the rest.
func (w *Worker) fetch(ctx context.Context, name string, since, through uint64) (fetched, error) {
	capMsgs := w.cfg.ReplayMax
	runs := []*run{
		{subject: w.cfg.Scheme.User(name), next: since + 1},
		{subject: w.cfg.Scheme.All(), next: since + 1},
	}
	if err := w.readRuns(ctx, runs, through, capMsgs+1); err != nil {
		return fetched{}, err
	}
	var f fetched
	for _, r := range runs {
		f.mostPending = max(f.mostPending, r.pending)
	}
	if !runs[0].truncated && !runs[1].truncated {
		f.msgs = mergeRuns(runs, 0)
	} else {
		msgs, err := w.newest(ctx, runs, since, through, capMsgs)
		if err != nil {
			return fetched{}, err
		}
		f.msgs = msgs
	}
	if len(f.msgs) > capMsgs {
		f.msgs = f.msgs[len(f.msgs)-capMsgs:]
		f.capped = true
	}
	f.capped = f.capped || runs[0].truncated || runs[1].truncated
	return f, nil
}

// readRuns pages through runs until each has every message up to through
// or limit of them; the runs' pages are asked for together.
func (w *Worker) readRuns(ctx context.Context, runs []*run, through uint64, limit int) error {
	for {
		var active []*run
		var reqs []dgRequest
		for _, r := range runs {
			if r.done {
				continue
			}
			active = append(active, r)
			reqs = append(reqs, dgRequest{Seq: r.next, NextFor: r.subject, Batch: limit - len(r.msgs), MaxBytes: pageBytes})
		}
		if len(active) == 0 {
			return nil
		}
		answers, err := w.directGetAll(ctx, reqs)
		if err != nil {
			return err
		}
		for i, r := range active {
			r.take(answers[i], through, limit)
		}
	}
}

// take adds a page to the run.
func (r *run) take(a dgAnswer, through uint64, limit int) {
	if !r.asked {
		r.asked = true
		if a.found {
			r.pending = a.firstPending + 1
		}
	}
	if !a.found || len(a.msgs) == 0 {
		r.done = true
		return
	}
	for _, m := range a.msgs {
		if m.seq > through {
			r.done = true
			return
		}
		r.msgs = append(r.msgs, m)
		if len(r.msgs) >= limit {
			r.done = true
			r.truncated = m.seq < through
			return
		}
	}
	if a.eobPending == 0 {
		r.done = true
		return
	}
	r.next = a.msgs[len(a.msgs)-1].seq + 1
}

// mergeRuns merges the runs' messages with a sequence of at least from,
// oldest first; each run is in order already.
func mergeRuns(runs []*run, from uint64) []storedMsg {
	var out []storedMsg
	for _, r := range runs {
		i := sort.Search(len(r.msgs), func(i int) bool { return r.msgs[i].seq >= from })
		out = mergeSorted(out, r.msgs[i:])
	}
	return out
}

// mergeSorted merges two runs of messages in sequence order.
func mergeSorted(a, b []storedMsg) []storedMsg {
	if len(a) == 0 {
		return slices.Clone(b)
	}
	out := make([]storedMsg, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].seq < b[0].seq {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// newestRounds bounds newest's rounds: a round falls short of capMsgs
// only when messages were stored on these subjects while it ran.
const newestRounds = 3

// newest returns the newest capMsgs messages of the runs in (since,
// through], when a truncated run holds only its oldest ones. For a
// truncated run, probes (batch 1, whose Nats-Num-Pending counts the
// subject's messages from a sequence to the end) count the messages in
// [x, upper) as P(x) - P(upper); complete runs count theirs locally. A
// binary search finds the lowest x at which the count still fits, and
// only [x, upper) of the truncated runs is read. Messages stored
// meanwhile on the same subjects make the count high, so a round may
// fall short; the next one looks below it.
func (w *Worker) newest(ctx context.Context, runs []*run, since, through uint64, capMsgs int) ([]storedMsg, error) {
	var truncated, complete []*run
	for _, r := range runs {
		if r.truncated {
			// Keep nothing of it: its messages are read again from x.
			truncated = append(truncated, &run{subject: r.subject})
		} else {
			complete = append(complete, r)
		}
	}
	upper := through + 1 // [upper, through] is read exactly
	var have []*run      // the truncated runs' pages read, each [x, upper)
	count := func(from uint64) int {
		n := 0
		for _, r := range append(complete, have...) {
			n += len(r.msgs) - sort.Search(len(r.msgs), func(i int) bool { return r.msgs[i].seq >= from })
		}
		return n
	}
	for round := 0; round < newestRounds && upper > since+1; round++ {
		need := capMsgs - count(upper)
		if need <= 0 {
			break
		}
		base, err := w.probe(ctx, truncated, upper)
		if err != nil {
			return nil, err
		}
		// est is the count in [x, upper) over every run.
		est := func(x uint64) (int, error) {
			p, err := w.probe(ctx, truncated, x)
			if err != nil {
				return 0, err
			}
			n := count(x) - count(upper)
			for i := range p {
				n += int(max(p[i], base[i]) - base[i])
			}
			return n, nil
		}
		// Find the lowest x in [since+1, upper) with est(x) <= need.
		lo, hi := since, upper-1 // est(lo) is taken as > need; est(hi) fits
		if n, err := est(since + 1); err != nil {
			return nil, err
		} else if n <= need {
			hi = since + 1
		}
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			n, err := est(mid)
			if err != nil {
				return nil, err
			}
			if n <= need {
				hi = mid
			} else {
				lo = mid
			}
		}
		pages := make([]*run, len(truncated))
		for i, r := range truncated {
			pages[i] = &run{subject: r.subject, next: hi}
		}
		if err := w.readRuns(ctx, pages, upper-1, capMsgs+1); err != nil {
			return nil, err
		}
		have = append(have, pages...)
		upper = hi
	}
	return mergeRuns(append(complete, have...), upper), nil
}

// probe returns, for each run, how many messages its subject holds from
// seq to the end of the stream; the probes are sent together.
func (w *Worker) probe(ctx context.Context, runs []*run, seq uint64) ([]uint64, error) {
	reqs := make([]dgRequest, len(runs))
	for i, r := range runs {
		reqs[i] = dgRequest{Seq: seq, NextFor: r.subject, Batch: 1}
	}
	answers, err := w.directGetAll(ctx, reqs)
	if err != nil {
		return nil, err
	}
	counts := make([]uint64, len(runs))
	for i, a := range answers {
		if a.found {
			counts[i] = a.firstPending + 1
		}
	}
	return counts, nil
}
