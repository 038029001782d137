package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/notify-worker/notify-worker/feed"
)

// StreamState is what the worker knows of its stream.
type StreamState int

const (
	// StreamOff: Config.Stream.Name is empty; durable support is off.
	StreamOff StreamState = iota
	// StreamPending: not checked yet, or the check failed for a reason
	// that may pass (no answer, a leader election). Resumes wait.
	StreamPending
	// StreamReady: the stream exists with the subjects, transform and
	// republish the worker needs; durable messages carry their sequence.
	StreamReady
	// StreamUnavailable: JetStream is not enabled, or the stream exists
	// but is not one the worker can use (logged at Warn, saying what
	// differs). Resumes are answered recovered:false (unavailable).
	StreamUnavailable
)

func (s StreamState) String() string {
	switch s {
	case StreamOff:
		return "off"
	case StreamPending:
		return "pending"
	case StreamReady:
		return "ready"
	case StreamUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("StreamState(%d)", int(s))
}

// StreamState reports the stream's state: the lead shows it (say, on a
// status page); /readyz should not depend on it.
func (w *Worker) StreamState() StreamState {
	st, _, _ := w.stream.get()
	return st
}

// StreamReady reports whether durable messages are delivered with their
// sequence and resumes can be answered.
func (w *Worker) StreamReady() bool { return w.stream.ready.Load() }

// streamLimits is what the worker uses of the stream as the server has it.
type streamLimits struct {
	created           time.Time // tells this stream from one created again under the name
	maxMsgsPerSubject int64     // the server's; -1 or 0 for none
}

// streamStatus is the stream's state, set by the stream check and read by
// the router (durable) and by resumes (get, which also returns a channel
// closed at the next change).
type streamStatus struct {
	ready atomic.Bool
	// durable says the router takes the stream's republished copies for
	// durable messages: while the stream is ready, and while it is still
	// pending, since a resume waiting for it replays what it stored, and
	// a copy handed over as core meanwhile would reach the session twice
	// (without its sequence, out of order).
	durable atomic.Bool
	mu      sync.Mutex
	state   StreamState
	limits  streamLimits
	changed chan struct{}
}

func newStreamStatus(enabled bool) *streamStatus {
	s := &streamStatus{changed: make(chan struct{})}
	if enabled {
		s.state = StreamPending
		s.durable.Store(true)
	}
	return s
}

func (s *streamStatus) get() (StreamState, streamLimits, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.limits, s.changed
}

// set records a new state and returns the previous one.
func (s *streamStatus) set(state StreamState, limits streamLimits) (StreamState, streamLimits) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, prevLimits := s.state, s.limits
	s.state, s.limits = state, limits
	s.ready.Store(state == StreamReady)
	s.durable.Store(state == StreamReady || state == StreamPending)
	if prev != state || prevLimits != limits {
		close(s.changed)
		s.changed = make(chan struct{})
	}
	return prev, prevLimits
}

// Timings of the stream check.
const (
	// streamCheckTimeout bounds one check (a few JetStream API requests).
	streamCheckTimeout = 5 * time.Second
	// streamRecheckEvery is how often a stream that is ready, or that
	// cannot be used, is looked at again: a stream deleted, replaced or
	// given other limits is noticed within this time (sooner if a resume
	// runs into it, or the connection comes back).
	streamRecheckEvery = time.Minute
)

// askRecheck makes the stream check run again soon. It never blocks.
func (w *Worker) askRecheck() {
	select {
	case w.recheck <- struct{}{}:
	default:
	}
}

// keepStream runs on a goroutine started by New and owned by the worker;
// it ends when Close closes quit (Close also closes the JetStream
// connection, which ends a request in flight). It checks the stream once
// the JetStream connection is up, creating it if it is missing, retries
// failures that may pass with a backoff, and checks again when asked to,
// when the connection comes back and every streamRecheckEvery.
func (w *Worker) keepStream() {
	defer w.wg.Done()
	bo := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	var warned string // the last unavailable reason logged
	failures := 0     // failed checks in a row
	for {
		if !w.jsConn.IsConnected() {
			if !w.waitRecheck(time.Second) {
				return
			}
			continue
		}
		state, limits, reason, err := w.checkStream()
		switch {
		case w.isQuitting():
			return
		case err != nil:
			failures++
			w.metrics.jsErrors[opSetup].Inc()
			if failures == 1 {
				w.log.Warn("jetstream stream check failed; retrying", "stream", w.cfg.Stream.Name, "err", err)
			} else {
				w.log.Debug("jetstream stream check failed; retrying", "stream", w.cfg.Stream.Name, "err", err,
					"failed_checks", failures)
			}
			if !w.waitRecheck(bo.next()) {
				return
			}
			continue
		}
		bo.reset()
		prev, prevLimits := w.stream.set(state, limits)
		if prev == StreamReady && (state != StreamReady || !prevLimits.created.Equal(limits.created)) {
			// Sequences handed over so far belong to a stream that is gone.
			w.lastSeq.Store(0)
			w.feedLost(feed.CauseStreamReset)
		}
		switch {
		case state == StreamUnavailable && reason != warned:
			w.log.Warn("durable notifications unavailable: resumes are answered recovered:false",
				"stream", w.cfg.Stream.Name, "reason", reason)
			warned = reason
		case state == StreamReady && (prev != StreamReady || prevLimits != limits):
			w.log.Info("durable notifications ready", "stream", w.cfg.Stream.Name, "detail", reason,
				"max_msgs_per_subject", limits.maxMsgsPerSubject, "failed_checks", failures)
			warned = ""
		}
		failures = 0
		if !w.waitRecheck(streamRecheckEvery) {
			return
		}
	}
}

// waitRecheck waits d or until a recheck is asked for, and returns false
// if Close came first.
func (w *Worker) waitRecheck(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-w.recheck:
	case <-w.quit:
		return false
	}
	return true
}

func (w *Worker) isQuitting() bool {
	select {
	case <-w.quit:
		return true
	default:
		return false
	}
}

// checkStream looks the stream up, creating it if it is missing, and
// returns its state and limits with a reason for the log; err is set only
// for a failure that may pass.
func (w *Worker) checkStream() (StreamState, streamLimits, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), streamCheckTimeout)
	defer cancel()
	// The account first: it tells "JetStream not enabled" (no responders
	// on a single server, or the account's error) from a stream that is
	// not there yet.
	if _, err := w.js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return StreamUnavailable, streamLimits{}, "JetStream is not enabled for this server or account", nil
		}
		return StreamPending, streamLimits{}, "", fmt.Errorf("jetstream account info: %w", err)
	}
	want := w.wantStream()
	detail := "existing stream"
	s, err := w.js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = w.js.CreateStream(ctx, want)
		switch {
		case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			// Another worker created it first: read it on the next check.
			w.askRecheck()
			return StreamPending, streamLimits{}, "", fmt.Errorf("create stream %s: %w", want.Name, err)
		case err != nil && permanentAPIError(err):
			return StreamUnavailable, streamLimits{}, fmt.Sprintf("cannot create the stream: %v", err), nil
		case err != nil:
			return StreamPending, streamLimits{}, "", fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		detail = "created the stream"
	} else if err != nil {
		return StreamPending, streamLimits{}, "", fmt.Errorf("stream info %s: %w", want.Name, err)
	}
	info := s.CachedInfo()
	if diff := streamDiff(info.Config, want); diff != "" {
		return StreamUnavailable, streamLimits{}, "stream " + want.Name + " is not one this worker can use: " + diff, nil
	}
	w.noteLastSeq(info.State.LastSeq)
	return StreamReady, limitsOf(info), detail, nil
}

func limitsOf(info *jetstream.StreamInfo) streamLimits {
	return streamLimits{created: info.Created, maxMsgsPerSubject: info.Config.MaxMsgsPerSubject}
}

// noteLastSeq raises notify_stream_last_sequence to seq.
func (w *Worker) noteLastSeq(seq uint64) {
	for {
		cur := w.lastSeq.Load()
		if seq <= cur || w.lastSeq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// wantStream is the stream the worker creates when it is missing:
// producers publish to durable.<prefix>.…, the stream stores the messages
// as <prefix>.… and republishes each stored message there, where the
// workers' core subscriptions receive it with its sequence. Core
// publishes to <prefix>.… are not captured, so requests keep their
// receipts and "no responders".
func (w *Worker) wantStream() jetstream.StreamConfig {
	captured, stored := w.cfg.Scheme.StreamSubjects()
	c := w.cfg.Stream
	storage := jetstream.FileStorage
	if c.Storage == StorageMemory {
		storage = jetstream.MemoryStorage
	}
	return jetstream.StreamConfig{
		Name:              c.Name,
		Subjects:          []string{captured},
		SubjectTransform:  &jetstream.SubjectTransformConfig{Source: captured, Destination: stored},
		RePublish:         &jetstream.RePublish{Source: ">", Destination: ">"},
		AllowDirect:       true,
		AllowRollup:       true,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            c.MaxAge,
		MaxMsgs:           -1,
		MaxMsgsPerSubject: noLimit(c.MaxMsgsPerSubject),
		MaxBytes:          noLimit(c.MaxBytes),
		Storage:           storage,
		Replicas:          c.Replicas,
		Duplicates:        c.duplicates(),
	}
}

// noLimit spells "no limit" (0 in Config) as JetStream does.
func noLimit(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// streamDiff says how an existing stream's configuration differs, in what
// the worker relies on, from the one it would create; "" when it does
// not. Limits are not compared: the worker uses the stream's own. The
// republish is compared as the server normalises it.
func streamDiff(have, want jetstream.StreamConfig) string {
	var diffs []string
	differ := func(what string, have, want any) {
		diffs = append(diffs, fmt.Sprintf("%s is %v, want %v", what, have, want))
	}
	if !slices.Equal(have.Subjects, want.Subjects) {
		differ("subjects", have.Subjects, want.Subjects)
	}
	if h, w := transformString(have.SubjectTransform), transformString(want.SubjectTransform); h != w {
		differ("subject_transform", h, w)
	}
	if h, w := republishString(have), republishString(want); h != w {
		differ("republish", h, w)
	}
	if have.AllowDirect != want.AllowDirect {
		differ("allow_direct", have.AllowDirect, want.AllowDirect)
	}
	if have.Retention != want.Retention {
		differ("retention", have.Retention, want.Retention)
	}
	if have.NoAck {
		differ("no_ack", have.NoAck, false)
	}
	if have.Sealed {
		differ("sealed", have.Sealed, false)
	}
	return strings.Join(diffs, "; ")
}

func transformString(t *jetstream.SubjectTransformConfig) string {
	if t == nil {
		return "none"
	}
	return t.Source + " -> " + t.Destination
}

// republishString is cfg's republish as the server stores it: an empty
// source means ">", and ">" -> ">" on a stream whose one subject is its
// transform's source means the transform's destination to itself
// (nats-server's stream config check, server/stream.go around line 2478
// in v2.15.2).
func republishString(cfg jetstream.StreamConfig) string {
	rp := cfg.RePublish
	if rp == nil {
		return "none"
	}
	src, dst := rp.Source, rp.Destination
	if src == "" {
		src = ">"
	}
	if src == ">" && dst == ">" && cfg.SubjectTransform != nil && len(cfg.Subjects) == 1 &&
		cfg.SubjectTransform.Source == cfg.Subjects[0] {
		src, dst = cfg.SubjectTransform.Destination, cfg.SubjectTransform.Destination
	}
	s := src + " -> " + dst
	if rp.HeadersOnly {
		s += " (headers only)"
	}
	return s
}
