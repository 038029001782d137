package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/notify-worker/notify-worker/feed"
	"github.com/notify-worker/notify-worker/subjects"
)

// Snapshot tells, for the broadcast subject and each of names, the newest
// durable message at or below a sequence the stream had reached (see
// feed.Snapshot): the hub uses it to move a quiet session's cursor. It
// first stores a barrier, so that the barrier subject, asked for in every
// request, is never empty and every request has something to answer with;
// then it asks multi_last Direct Gets of at most 1000 subjects each. Each
// answer ends with Nats-UpTo-Sequence V, the responder's last sequence,
// read under the stream's lock with the answer: for each subject of that
// request, Last{Seq: newest seq ≤ V (0: none), Through: V}. Any replica
// may answer: a follower holds a prefix of the stream, so what it says of
// "at or below V" is true of the stream.
//
// Invalid and repeated names are left out. Errors (durable support off or
// not ready, a failed request) wrap ErrUnavailable, or ErrDraining once
// Drain has begun; Snapshot does not
// retry: the hub asks again at its next tick. It runs on the caller's
// goroutine.
func (w *Worker) Snapshot(ctx context.Context, names []string) (feed.Snapshot, error) {
	if w.cfg.Stream.Name == "" {
		return feed.Snapshot{}, fmt.Errorf("snapshot: %w: durable support is off", ErrUnavailable)
	}
	if w.isDraining() {
		return feed.Snapshot{}, fmt.Errorf("snapshot: %w", ErrDraining)
	}
	if st := w.StreamState(); st != StreamReady {
		return feed.Snapshot{}, fmt.Errorf("snapshot: %w: the stream is %s", ErrUnavailable, st)
	}
	if _, err := w.storeBarrier(ctx); err != nil {
		w.metrics.jsErrors[opBarrier].Inc()
		return feed.Snapshot{}, fmt.Errorf("snapshot: %w: %w", ErrUnavailable, err)
	}
	snap := feed.Snapshot{Users: make(map[string]feed.Last, len(names))}
	barrier, all := w.cfg.Scheme.Barrier(), w.cfg.Scheme.All()
	userOf := make(map[string]string, len(names)) // subject -> name
	chunk := []string{barrier, all}
	flush := func() error {
		last, upTo, err := w.multiLast(ctx, chunk)
		if err != nil {
			w.metrics.jsErrors[opSnapshot].Inc()
			return fmt.Errorf("snapshot: %w: %w", ErrUnavailable, err)
		}
		for _, subject := range chunk {
			l := feed.Last{Seq: last[subject], Through: upTo}
			if subject == all {
				snap.All = l
			} else if name, ok := userOf[subject]; ok {
				snap.Users[name] = l
			}
		}
		w.noteLastSeq(upTo)
		chunk = []string{barrier}
		return nil
	}
	for _, name := range names {
		if subjects.ValidName(name) != nil {
			continue
		}
		subject := w.cfg.Scheme.User(name)
		if _, seen := userOf[subject]; seen {
			continue
		}
		userOf[subject] = name
		chunk = append(chunk, subject)
		if len(chunk) == multiLastMax {
			if err := flush(); err != nil {
				return feed.Snapshot{}, err
			}
		}
	}
	if len(chunk) > 1 || snap.All.Through == 0 {
		if err := flush(); err != nil {
			return feed.Snapshot{}, err
		}
	}
	return snap, nil
}

// multiLast returns the newest sequence of each of subjects that has one,
// at or below upTo, the responder's last sequence. An answer cut short by
// its size is continued, for the subjects not answered yet, at the same
// upTo.
func (w *Worker) multiLast(ctx context.Context, subjects []string) (map[string]uint64, uint64, error) {
	last := make(map[string]uint64, len(subjects))
	req := dgRequest{MultiLast: subjects, MaxBytes: pageBytes}
	for {
		answers, err := w.directGetAll(ctx, []dgRequest{req})
		if err != nil {
			return nil, 0, err
		}
		a := answers[0]
		if !a.found {
			if req.UpToSeq == 0 {
				// The barrier subject had nothing: a replica that has not
				// got this stream's first barrier yet.
				return nil, 0, errors.New("multi_last: no results")
			}
			return last, req.UpToSeq, nil
		}
		if a.upTo == 0 {
			return nil, 0, errors.New("multi_last: the answer has no Nats-UpTo-Sequence")
		}
		for _, m := range a.msgs {
			last[m.subject] = m.seq
		}
		if a.eobPending == 0 {
			return last, a.upTo, nil
		}
		var rest []string
		for _, s := range req.MultiLast {
			if _, ok := last[s]; !ok {
				rest = append(rest, s)
			}
		}
		req = dgRequest{MultiLast: rest, MaxBytes: pageBytes, UpToSeq: a.upTo}
	}
}
