package worker

import (
	"context"
	"slices"
	"sort"
)

// Reading a replay: the messages of one name and of the broadcast subject
// in (since, through], with batched Direct Gets per subject, and, when
// there are more than ReplayMax, only the newest ReplayMax of them.

// fetched is what a replay read of (since, through].
type fetched struct {
	msgs   []storedMsg // oldest first, at most ReplayMax
	capped bool        // there were more than ReplayMax
	// mostPending is the most messages either subject held from since+1
	// on, counted by the server when it served the first page.
	mostPending uint64
	// subjects are the user's subject and the broadcast subject, and
	// newest the newest sequence at or below through read on each (0:
	// none); set when every message in (since, through] was read (the
	// read was not capped), for confirmRead.
	subjects [2]string
	newest   [2]uint64
}

// singleReads is how many messages of each subject a replay reads one
// request at a time before it asks for the rest in batches. A batch makes
// the server count the subject's messages from the batch's start to the
// end of the stream (directget.go), which costs a walk over every message
// stored since, barriers included, however few of them are the subject's;
// a request without batch only walks to the subject's next message. Most
// resumes have a few messages to replay, and read them without any count.
const singleReads = 16

// denseGap ends a run's single reads early: a message at most this far
// past the subject's one before says the subject is dense, and then the
// round trips of single reads cost more than the count's walk.
const denseGap = 16

// run is one subject's part of a replay.
type run struct {
	subject string
	next    uint64      // where the next page starts
	msgs    []storedMsg // read so far, oldest first, all ≤ through
	// single is how many more messages are read one request at a time
	// before the run turns to batches.
	single int
	// counted: pending is known. pending is the number of messages on the
	// subject from since+1 to the end of the stream: what was read plus
	// the server's count from where its first batch started, or, for a
	// run read without batches, plus what a probe counts after through.
	counted bool
	pending uint64
	// beyond: a request without batch found the subject's next message
	// past through, so the messages after through are still to be
	// counted.
	beyond bool
	done   bool
	// truncated: the run stopped at its limit with more ≤ through
	// possibly left.
	truncated bool
}

// fetch reads the messages of name and of the broadcast subject in
// (since, through]. Each subject's first singleReads messages are read one
// request at a time, the rest in batches up to ReplayMax+1 messages in
// all: when neither subject reaches that, that is all of them. When one
// does, there are more than ReplayMax and only the newest are wanted:
// newest finds where they start without reading the rest.
func (w *Worker) fetch(ctx context.Context, name string, since, through uint64) (fetched, error) {
	capMsgs := w.cfg.ReplayMax
	single := min(singleReads, capMsgs) // fewer than the limit, capMsgs+1
	runs := []*run{
		{subject: w.cfg.Scheme.User(name), next: since + 1, single: single},
		{subject: w.cfg.Scheme.All(), next: since + 1, single: single},
	}
	if err := w.readRuns(ctx, runs, through, capMsgs+1); err != nil {
		return fetched{}, err
	}
	if err := w.countBeyond(ctx, runs, through); err != nil {
		return fetched{}, err
	}
	var f fetched
	for i, r := range runs {
		f.mostPending = max(f.mostPending, r.pending)
		f.subjects[i] = r.subject
		if n := len(r.msgs); n > 0 {
			f.newest[i] = r.msgs[n-1].seq
		}
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

// countBeyond completes pending for the runs that were read without a
// batch and found a message past through: a probe at through+1 (a batch
// of one, whose count walks only what was stored after the barrier)
// counts the subject's messages from there to the end of the stream.
// Messages read earlier may have been removed meanwhile, so the sum can
// only count too many, and only once the subject has reached its limit
// after since (removing one of them took that); the retention rule is
// then right to fire.
func (w *Worker) countBeyond(ctx context.Context, runs []*run, through uint64) error {
	var beyond []*run
	for _, r := range runs {
		if r.beyond && !r.counted {
			beyond = append(beyond, r)
		}
	}
	if len(beyond) == 0 {
		return nil
	}
	counts, err := w.probe(ctx, beyond, through+1)
	if err != nil {
		return err
	}
	for i, r := range beyond {
		r.pending = uint64(len(r.msgs)) + counts[i]
		r.counted = true
	}
	return nil
}

// readRuns pages through runs until each has every message up to through
// or limit of them; the runs' requests are sent together.
func (w *Worker) readRuns(ctx context.Context, runs []*run, through uint64, limit int) error {
	for {
		var active []*run
		var reqs []dgRequest
		for _, r := range runs {
			if r.done {
				continue
			}
			active = append(active, r)
			req := dgRequest{Seq: r.next, NextFor: r.subject}
			if r.single == 0 {
				req.Batch, req.MaxBytes = limit-len(r.msgs), pageBytes
			}
			reqs = append(reqs, req)
		}
		if len(active) == 0 {
			return nil
		}
		answers, err := w.directGetAll(ctx, reqs)
		if err != nil {
			return err
		}
		for i, r := range active {
			if reqs[i].Batch == 0 {
				r.takeOne(answers[i], through)
			} else {
				r.take(answers[i], through, limit)
			}
		}
	}
}

// takeOne adds the answer to a request without batch: the subject's next
// message from r.next on, or none (404). The responder holds a prefix of
// the stream, so when it has that message, the subject has none between
// r.next and it.
func (r *run) takeOne(a dgAnswer, through uint64) {
	if !a.found || len(a.msgs) == 0 {
		// Nothing on the subject after what was read, to the end of
		// the stream.
		r.done, r.counted, r.pending = true, true, uint64(len(r.msgs))
		return
	}
	m := a.msgs[0]
	if m.seq > through {
		r.done, r.beyond = true, true
		return
	}
	if n := len(r.msgs); n > 0 && m.seq-r.msgs[n-1].seq <= denseGap {
		r.single = 0
	} else {
		r.single--
	}
	r.msgs = append(r.msgs, m)
	r.next = m.seq + 1
}

// take adds a page of a batch to the run.
func (r *run) take(a dgAnswer, through uint64, limit int) {
	if !r.counted {
		r.counted = true
		r.pending = uint64(len(r.msgs))
		if a.found {
			r.pending += a.firstPending + 1
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
