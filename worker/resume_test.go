package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/notify-worker/notify-worker/feed"
)

// Resume: the durable messages of a name and of everyone in (since,
// Through], and recovered false exactly when something may be missing.

func TestResumeWithoutSince(t *testing.T) {
	srv := startJetStream(t)
	w, reg := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	last := publishDurable(t, js, "notify.user.alice", "before")
	r := resumeNow(t, w, "alice", nil)
	if !r.Recovered || r.Reason != "" || len(r.Messages) != 0 || r.Through <= last {
		t.Fatalf("resume without a cursor: %+v (last published %d)", r, last)
	}
	if got := metricValue(t, reg, "notify_stream_last_sequence"); got != float64(r.Through) {
		t.Errorf("stream_last_sequence = %v, want the barrier's %d", got, r.Through)
	}
}

func TestResumeExactMessages(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	first := publishDurable(t, js, "notify.user.alice", "a1")
	var want []uint64
	want = append(want, publishDurable(t, js, "notify.all", "all1"))
	publishDurable(t, js, "notify.user.bob", "b1")
	want = append(want, publishDurable(t, js, "notify.user.alice", "a2"))
	publishDurable(t, js, "notify.user.alice_", "a lookalike name")
	want = append(want, publishDurable(t, js, "notify.all", "all2"))
	want = append(want, publishDurable(t, js, "notify.user.alice", "a3"))
	r := resumeNow(t, w, "alice", &first)
	if !r.Recovered || r.Reason != "" || r.Through <= want[len(want)-1] {
		t.Fatalf("resume: %+v", r)
	}
	if got := seqs(r.Messages); !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	payloads := make([]string, len(r.Messages))
	for i, m := range r.Messages {
		payloads[i] = string(m.Payload)
	}
	if got := strings.Join(payloads, ","); got != "all1,a2,all2,a3" {
		t.Fatalf("payloads %s", got)
	}
	// Resuming from Through: nothing more, still recovered.
	if again := resumeNow(t, w, "alice", &r.Through); !again.Recovered || len(again.Messages) != 0 {
		t.Fatalf("resume from Through: %+v", again)
	}
}

func TestResumeReset(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	publishDurable(t, jetStream(t, srv.ClientURL()), "notify.user.alice", "x")
	for _, since := range []uint64{1 << 40, 1<<63 - 1, 1<<64 - 1} {
		if r := resumeNow(t, w, "alice", &since); r.Recovered || r.Reason != feed.ReasonReset || len(r.Messages) != 0 || r.Through == 0 {
			t.Fatalf("since %d: %+v", since, r)
		}
	}
}

// The per-subject rule fires at the limit, not only above it, and the
// newest retained messages are still replayed.
func TestResumeRetentionPerSubject(t *testing.T) {
	for _, tc := range []struct {
		publish  int
		reason   string
		replayed int // the newest ones
	}{
		{2, "", 2},
		{3, feed.ReasonRetention, 3},
		{5, feed.ReasonRetention, 3},
	} {
		t.Run(strconv.Itoa(tc.publish), func(t *testing.T) {
			srv := startJetStream(t)
			w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), func(c *Config) { c.Stream.MaxMsgsPerSubject = 3 })
			js := jetStream(t, srv.ClientURL())
			start := resumeNow(t, w, "alice", nil)
			var published []uint64
			for i := range tc.publish {
				published = append(published, publishDurable(t, js, "notify.user.alice", strconv.Itoa(i)))
			}
			r := resumeNow(t, w, "alice", &start.Through)
			if r.Recovered != (tc.reason == "") || r.Reason != tc.reason {
				t.Fatalf("resume: %+v, want reason %q", r, tc.reason)
			}
			if got, want := seqs(r.Messages), published[len(published)-tc.replayed:]; !slices.Equal(got, want) {
				t.Fatalf("replayed %v, want %v", got, want)
			}
		})
	}
}

// Messages after the cursor removed from the head of the stream (purged,
// or pushed out by its size limit) make the resume not recovered.
func TestResumeRetentionFirstSequence(t *testing.T) {
	t.Run("purged", func(t *testing.T) {
		srv := startJetStream(t)
		w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
		js := jetStream(t, srv.ClientURL())
		start := resumeNow(t, w, "alice", nil)
		publishDurable(t, js, "notify.user.alice", "gone")
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s, err := js.Stream(ctx, "NOTIFY")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		kept := publishDurable(t, js, "notify.user.alice", "kept")
		r := resumeNow(t, w, "alice", &start.Through)
		if r.Recovered || r.Reason != feed.ReasonRetention || !slices.Equal(seqs(r.Messages), []uint64{kept}) {
			t.Fatalf("resume: %+v", r)
		}
	})
	t.Run("size limit", func(t *testing.T) {
		srv := startJetStream(t)
		w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), func(c *Config) { c.Stream.MaxBytes = 8 << 10 })
		js := jetStream(t, srv.ClientURL())
		start := resumeNow(t, w, "alice", nil)
		publishDurable(t, js, "notify.user.alice", `{"gone":true}`)
		big := strings.Repeat("x", 1000)
		var last uint64
		for range 20 {
			last = publishDurable(t, js, "notify.user.bob", big)
		}
		if r := resumeNow(t, w, "alice", &start.Through); r.Recovered || r.Reason != feed.ReasonRetention || len(r.Messages) != 0 {
			t.Fatalf("resume: %+v", r)
		}
		// A cursor past what was removed is recovered.
		if r := resumeNow(t, w, "alice", &last); !r.Recovered {
			t.Fatalf("resume from %d: %+v", last, r)
		}
	})
}

// Barriers are kept, so a cursor that nothing real was stored after stays
// recoverable however many resumes happened since (a rollup of the
// barrier subject would move the stream's first sequence past it).
func TestResumeQuietStreamStaysRecovered(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	first := resumeNow(t, w, "alice", nil)
	for range 5 {
		resumeNow(t, w, "bob", nil)
	}
	if r := resumeNow(t, w, "alice", &first.Through); !r.Recovered {
		t.Fatalf("resume of a quiet stream: %+v", r)
	}
}

// More than ReplayMax: the newest ReplayMax, in order, without reading
// all of them.
func TestResumeReplayMax(t *testing.T) {
	t.Run("both subjects", func(t *testing.T) {
		srv := startJetStream(t)
		w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), func(c *Config) { c.ReplayMax = 3 })
		js := jetStream(t, srv.ClientURL())
		start := resumeNow(t, w, "alice", nil)
		var s []uint64
		for _, p := range []struct{ subject, payload string }{
			{"notify.user.alice", "0"}, {"notify.all", "1"}, {"notify.user.alice", "2"},
			{"notify.user.bob", "bob"}, {"notify.all", "3"}, {"notify.user.alice", "4"},
		} {
			s = append(s, publishDurable(t, js, p.subject, p.payload))
		}
		r := resumeNow(t, w, "alice", &start.Through)
		if r.Recovered || r.Reason != feed.ReasonReplayMax || !slices.Equal(seqs(r.Messages), []uint64{s[2], s[4], s[5]}) {
			t.Fatalf("resume: %+v, want %v", r, []uint64{s[2], s[4], s[5]})
		}
	})
	t.Run("far behind", func(t *testing.T) {
		srv := startJetStream(t)
		w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), func(c *Config) { c.ReplayMax = 10 })
		js := jetStream(t, srv.ClientURL())
		start := resumeNow(t, w, "alice", nil)
		var mine []uint64
		publishAsync(t, js, 1200, func(i int) string {
			switch i % 4 {
			case 0:
				return "durable.notify.all"
			case 1:
				return "durable.notify.user.bob"
			}
			return "durable.notify.user.alice"
		}, func(i int, seq uint64) {
			if i%4 != 1 {
				mine = append(mine, seq)
			}
		})
		before := readStats(w).InMsgs
		r := resumeNow(t, w, "alice", &start.Through)
		read := readStats(w).InMsgs - before
		if r.Recovered || r.Reason != feed.ReasonReplayMax || !slices.Equal(seqs(r.Messages), mine[len(mine)-10:]) {
			t.Fatalf("resume: %v %+v, want %v", seqs(r.Messages), r, mine[len(mine)-10:])
		}
		// Two first pages of 11, the probes of a binary search over 1200
		// sequences (a message and an EOB each), and the last pages.
		if read > 150 {
			t.Errorf("read %d messages to replay 10 of %d", read, len(mine))
		}
		t.Logf("%d messages read to replay the newest 10 of %d", read, len(mine))
	})
}

// publishAsync publishes n durable messages to subject(i) and calls acked
// with each one's sequence, in publish order.
func publishAsync(t testing.TB, js jetstream.JetStream, n int, subject func(int) string, acked func(int, uint64)) {
	t.Helper()
	futures := make([]jetstream.PubAckFuture, n)
	for i := range n {
		f, err := js.PublishAsync(subject(i), []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		futures[i] = f
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if acked != nil {
				acked(i, ack.Sequence)
			}
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(waitTimeout):
			t.Fatal("publish not acknowledged")
		}
	}
}

// Until the stream is set up (the worker starts before NATS answers) a
// resume waits, and returns ErrUnavailable if its time runs out first;
// never recovered false.
func TestResumeWaitsForTheStream(t *testing.T) {
	port := closedPort(t)
	w, _ := testWorkerConfig(t, fmt.Sprintf("nats://127.0.0.1:%d", port), newRecorder(), durable(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r, err := w.Resume(ctx, "alice", ptr(5))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Resume with no server = %+v, %v; want ErrUnavailable", r, err)
	}
	if w.StreamState() != StreamPending {
		t.Fatalf("state %v", w.StreamState())
	}

	type result struct {
		r   feed.Replay
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		r, err := w.Resume(ctx, "alice", nil)
		done <- result{r, err}
	}()
	runJetStream(t, port, t.TempDir())
	select {
	case res := <-done:
		if res.err != nil || !res.r.Recovered || res.r.Through == 0 {
			t.Fatalf("Resume once the server is up = %+v, %v", res.r, res.err)
		}
	case <-time.After(2 * waitTimeout):
		t.Fatal("Resume did not return")
	}
}

// At most ReplayConcurrency resumes use JetStream at once; the others wait
// their turn, and all are answered.
func TestResumeConcurrency(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), func(c *Config) { c.ReplayConcurrency = 2 })
	js := jetStream(t, srv.ClientURL())
	start := resumeNow(t, w, "alice", nil)
	publishAsync(t, js, 100, func(int) string { return "durable.notify.user.alice" }, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			r, err := w.Resume(ctx, "alice", &start.Through)
			if err == nil && (len(r.Messages) != 100 || !r.Recovered) {
				err = fmt.Errorf("%d messages, recovered %v", len(r.Messages), r.Recovered)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if len(w.replaySlots) != 0 {
		t.Errorf("%d replay slots still taken", len(w.replaySlots))
	}
}

func TestResumeAfterDrain(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	drainNow(t, w)
	if _, err := w.Resume(context.Background(), "alice", nil); !errors.Is(err, ErrDraining) {
		t.Fatalf("Resume after Drain: %v", err)
	}
}

func TestResumeBadName(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	if _, err := w.Resume(context.Background(), "a.b", nil); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Resume of an invalid name: %v", err)
	}
}

// confirmRead, which stands in for a replica that is not current, accepts
// a read that reached the leader's newest message of each subject and
// refuses one that stopped short of it.
func TestConfirmRead(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	a1 := publishDurable(t, js, "notify.user.alice", "a1")
	a2 := publishDurable(t, js, "notify.user.alice", "a2")
	all := publishDurable(t, js, "notify.all", "all")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if last, err := w.leaderLast(ctx, "notify.user.nobody"); err != nil || last != 0 {
		t.Fatalf("leaderLast of a subject without messages: %d, %v", last, err)
	}
	if last, err := w.leaderLast(ctx, "notify.user.alice"); err != nil || last != a2 {
		t.Fatalf("leaderLast = %d, %v; want %d", last, err, a2)
	}
	read := func(user, broadcast uint64) fetched {
		return fetched{subjects: [2]string{"notify.user.alice", "notify.all"}, newest: [2]uint64{user, broadcast}}
	}
	tests := []struct {
		name           string
		f              fetched
		since, through uint64
		ok             bool
	}{
		{"the read reached both newest", read(a2, all), 0, all, true},
		{"the read stopped before alice's newest", read(a1, all), 0, all, false},
		{"the read missed the broadcast", read(a2, 0), 0, all, false},
		{"nothing after since on either", read(0, 0), all, all, true},
		{"the newest is past the barrier", read(a1, 0), 0, a1, false},
	}
	for _, tt := range tests {
		err := w.confirmRead(ctx, tt.f, tt.since, tt.through)
		if (err == nil) != tt.ok {
			t.Errorf("%s: confirmRead = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// Resumes that start together share barriers: every one gets a barrier
// stored after it called, and the stream grows by a few messages, not one
// per resume.
func TestBarriersShared(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	before := publishDurable(t, js, "notify.user.alice", "before")
	const n = 64
	seqs := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			seqs[i], errs[i] = w.storeBarrier(ctx)
		}()
	}
	wg.Wait()
	distinct := map[uint64]bool{}
	for i := range n {
		if errs[i] != nil || seqs[i] <= before {
			t.Fatalf("barrier %d: seq %d, %v (stream was at %d)", i, seqs[i], errs[i], before)
		}
		distinct[seqs[i]] = true
	}
	if len(distinct) >= n/2 {
		t.Fatalf("%d resumes stored %d barriers, want them shared", n, len(distinct))
	}
	t.Logf("%d resumes shared %d barriers", n, len(distinct))
	if info := streamInfo(t, js, "NOTIFY"); info.State.LastSeq != before+uint64(len(distinct)) {
		t.Fatalf("stream at %d, want %d + %d barriers", info.State.LastSeq, before, len(distinct))
	}
}
