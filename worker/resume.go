package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
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
// Direct Gets per subject read (since, Through] (fetch.go: the first
// messages one request each, the rest in batches); a STREAM.INFO sent
// after the read, answered by the stream's leader, then tells whether
// messages after the cursor may have been removed (its first sequence)
// and whether every replica that may have answered a Direct Get was
// current. Replays that need a barrier, or a stream info, at the same
// time share one (rounds.go). Reasons, the
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
	if peer := staleReplica(info); peer != "" && !f.capped {
		// It may have answered a Direct Get with less than it should
		// (or it is a node that died, which the leader still lists as
		// online until it notices, minutes later): unless the leader
		// confirms that the read reached the newest message of each
		// subject, try again. A capped read is not recovered anyway.
		if err := w.confirmRead(ctx, f, *since, through); err != nil {
			w.metrics.jsErrors[opFetch].Inc()
			return feed.Replay{}, fmt.Errorf("replica %s of stream %s is not current, and %w", peer, w.cfg.Stream.Name, err)
		}
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

// leaderInfo is what a replay uses of the stream's STREAM.INFO, decoded
// from the answer without the rest of it.
type leaderInfo struct {
	Created time.Time `json:"created"`
	Config  struct {
		MaxMsgsPerSubject int64 `json:"max_msgs_per_subject"`
	} `json:"config"`
	State struct {
		FirstSeq uint64 `json:"first_seq"`
		LastSeq  uint64 `json:"last_seq"`
	} `json:"state"`
	Cluster *struct {
		Replicas []*struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
			Offline bool   `json:"offline"`
		} `json:"replicas"`
	} `json:"cluster"`
	Error *jetstream.APIError `json:"error"`
}

// streamInfo asks the stream's leader for the stream's state, in a round
// shared with the replays that finished their reads at the same time
// (rounds.go): the request is sent after the call, so what it says holds
// for a read that ended before the call. Every field a replay uses is
// read after its read ended: a first sequence past since+1 says a message
// after since may be gone, whenever it went; a replica reported current
// then was current after the read.
func (w *Worker) streamInfo(ctx context.Context) (*leaderInfo, error) {
	info, err := shared(ctx, w, &w.infoRounds, w.askStreamInfo)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	return info, nil
}

// errCodeStreamNotFound is JetStream's JSStreamNotFoundErr.
const errCodeStreamNotFound = 10059

// askStreamInfo is one STREAM.INFO request, on a round's goroutine.
func (w *Worker) askStreamInfo() (*leaderInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	msg, err := w.jsConn.RequestWithContext(ctx, "$JS.API.STREAM.INFO."+w.cfg.Stream.Name, nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, errNoStreamResponders
	}
	if err != nil {
		return nil, err
	}
	var info leaderInfo
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		return nil, fmt.Errorf("decode %q: %w", msg.Data, err)
	}
	if info.Error != nil {
		if info.Error.ErrorCode == errCodeStreamNotFound {
			w.askRecheck()
		}
		return nil, info.Error
	}
	return &info, nil
}

// staleReplica names a replica of the stream that is online but not
// current, "" if there is none. An offline replica is not counted: it
// answers no Direct Get, and waiting for it would refuse every resume
// while a node is down.
func staleReplica(info *leaderInfo) string {
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

// confirmRead checks a read of (since, through] that a replica behind the
// leader may have answered, against the leader: for each subject, the
// leader's newest message must be at or below since (nothing to read), or
// the newest message the read found. A follower applies the stream in
// order, so one that had that message had every one before it; and the
// leader's newest, read after the barrier, being at or below through,
// there is nothing on the subject between it and through. A newest above
// through (a message stored meanwhile) proves nothing: try again.
func (w *Worker) confirmRead(ctx context.Context, f fetched, since, through uint64) error {
	for i, subject := range f.subjects {
		last, err := w.leaderLast(ctx, subject)
		switch {
		case err != nil:
			return err
		case last <= since:
		case last > through:
			return fmt.Errorf("the leader's newest message of %s (%d) is past the barrier (%d)", subject, last, through)
		case f.newest[i] != last:
			return fmt.Errorf("the read of %s ended at %d, the leader's newest is %d", subject, f.newest[i], last)
		}
	}
	return nil
}

// leaderLast asks the stream's leader (STREAM.MSG.GET, not a Direct Get,
// which any replica answers) for the sequence of the newest message on
// subject; 0 when it has none.
func (w *Worker) leaderLast(ctx context.Context, subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	body, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return 0, err
	}
	msg, err := w.jsConn.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+w.cfg.Stream.Name, body)
	if err != nil {
		return 0, fmt.Errorf("the leader's newest message of %s: %w", subject, err)
	}
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("the leader's newest message of %s: %w", subject, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == errCodeNoMessage:
		return 0, nil
	case resp.Error != nil:
		return 0, fmt.Errorf("the leader's newest message of %s: %s", subject, resp.Error.Description)
	case resp.Message == nil:
		return 0, fmt.Errorf("the leader's newest message of %s: an empty answer", subject)
	}
	return resp.Message.Seq, nil
}

// errCodeNoMessage is JetStream's JSNoMessageFoundErr.
const errCodeNoMessage = 10037
