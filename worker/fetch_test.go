package worker

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reading a replay: the first messages of each subject are read without
// batch (no server count), the count after the barrier is taken when a
// message lies past it, and longer replays turn to batches.

// directGetWatch sees the Direct Get requests sent to the stream, as
// another subscriber of their subject.
type directGetWatch struct {
	nc  *nats.Conn
	sub *nats.Subscription
}

func watchDirectGets(t *testing.T, url string) *directGetWatch {
	t.Helper()
	nc := producer(t, url)
	sub, err := nc.SubscribeSync("$JS.API.DIRECT.GET.NOTIFY")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &directGetWatch{nc: nc, sub: sub}
}

// seen returns the requests sent so far and not yet returned: each was
// sent before its answer, so the server had passed it on to this
// connection before the PONG of the flush.
func (dw *directGetWatch) seen(t *testing.T) []dgRequest {
	t.Helper()
	if err := dw.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	n, _, err := dw.sub.Pending()
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]dgRequest, n)
	for i := range reqs {
		m, err := dw.sub.NextMsg(waitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m.Data, &reqs[i]); err != nil {
			t.Fatalf("direct get request %q: %v", m.Data, err)
		}
	}
	return reqs
}

func batches(reqs []dgRequest) int {
	n := 0
	for _, r := range reqs {
		if r.Batch > 0 {
			n++
		}
	}
	return n
}

// others stores n messages for another name, to space alice's out.
func others(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	publishAsync(t, js, n, func(int) string { return "durable.notify.user.bob" }, nil)
}

func TestFetchFewWithoutBatch(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	start := resumeNow(t, w, "alice", nil)
	var want []uint64
	for _, subject := range []string{"notify.user.alice", "notify.all", "notify.all"} {
		others(t, js, denseGap)
		want = append(want, publishDurable(t, js, subject, "x"))
	}
	dw := watchDirectGets(t, srv.ClientURL())
	r := resumeNow(t, w, "alice", &start.Through)
	if !r.Recovered || !slices.Equal(seqs(r.Messages), want) {
		t.Fatalf("resume: %+v, want %v", r, want)
	}
	reqs := dw.seen(t)
	// alice: a1, then nothing; all: all1, all2, then nothing.
	if len(reqs) != 5 || batches(reqs) != 0 {
		t.Fatalf("direct gets %+v, want 5 without batch", reqs)
	}
}

func TestFetchManyTurnsToBatches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spacing int // other messages before each of alice's
		singles int // alice's messages read one request each
	}{
		{"sparse", denseGap, singleReads},
		{"dense", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startJetStream(t)
			w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
			js := jetStream(t, srv.ClientURL())
			start := resumeNow(t, w, "alice", nil)
			const n = 3 * singleReads
			var want []uint64
			publishAsync(t, js, n*(tc.spacing+1), func(i int) string {
				if i%(tc.spacing+1) == tc.spacing {
					return "durable.notify.user.alice"
				}
				return "durable.notify.user.bob"
			}, func(i int, seq uint64) {
				if i%(tc.spacing+1) == tc.spacing {
					want = append(want, seq)
				}
			})
			dw := watchDirectGets(t, srv.ClientURL())
			r := resumeNow(t, w, "alice", &start.Through)
			if !r.Recovered || !slices.Equal(seqs(r.Messages), want) {
				t.Fatalf("resume: %v %+v, want %v", seqs(r.Messages), r, want)
			}
			// alice: her singles, then one batch; all: nothing.
			if reqs := dw.seen(t); len(reqs) != tc.singles+2 || batches(reqs) != 1 {
				t.Fatalf("%d direct gets, %d batches: %+v", len(reqs), batches(reqs), reqs)
			}
		})
	}
}

// fetchNow reads (since, through] of alice's replay.
func fetchNow(t *testing.T, w *Worker, since, through uint64) fetched {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	f, err := w.fetch(ctx, "alice", since, through)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The per-subject count covers the messages stored after the barrier: they
// may have pushed out one the read was looking for.
func TestFetchCountsPastThrough(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), func(c *Config) { c.Stream.MaxMsgsPerSubject = 4 })
	js := jetStream(t, srv.ClientURL())
	since := resumeNow(t, w, "alice", nil).Through
	var s []uint64
	// Spaced out, so that they are read one request each.
	for i := range 3 {
		others(t, js, denseGap)
		s = append(s, publishDurable(t, js, "notify.user.alice", strconv.Itoa(i)))
	}
	for _, tc := range []struct {
		through     uint64
		read        []uint64
		mostPending uint64
	}{
		{s[2], s, 3},     // all read, then nothing
		{s[1], s[:2], 3}, // s[2] past through: counted
		{since, nil, 3},  // nothing read, all three counted
	} {
		f := fetchNow(t, w, since, tc.through)
		if got := storedSeqs(f.msgs); !slices.Equal(got, tc.read) || f.mostPending != tc.mostPending || f.capped {
			t.Fatalf("through %d: read %v, most pending %d (capped %v), want %v and %d",
				tc.through, got, f.mostPending, f.capped, tc.read, tc.mostPending)
		}
	}
	// Two more: the subject reaches its limit of 4 after since (s[0] is
	// pushed out); the read up to s[1] finds only s[1].
	s = append(s, publishDurable(t, js, "notify.user.alice", "3"), publishDurable(t, js, "notify.user.alice", "4"))
	f := fetchNow(t, w, since, s[1])
	if got := storedSeqs(f.msgs); !slices.Equal(got, s[1:2]) || f.mostPending != 4 {
		t.Fatalf("read %v, most pending %d, want %v and 4", got, f.mostPending, s[1:2])
	}
	if r := resumeNow(t, w, "alice", &since); r.Reason != "retention" || !slices.Equal(seqs(r.Messages), s[1:]) {
		t.Fatalf("resume: %+v, want retention and %v", r, s[1:])
	}
}

func storedSeqs(msgs []storedMsg) []uint64 {
	var out []uint64
	for _, m := range msgs {
		out = append(out, m.seq)
	}
	return out
}

// readStats sums the statistics of the read pool's connections.
func readStats(w *Worker) nats.Statistics {
	var sum nats.Statistics
	for _, x := range w.reads.conns {
		s := x.nc.Stats()
		sum.InMsgs += s.InMsgs
		sum.OutMsgs += s.OutMsgs
		sum.InBytes += s.InBytes
		sum.OutBytes += s.OutBytes
	}
	return sum
}

// resumeAlice resumes alice from since and checks that she gets want.
func resumeAlice(t *testing.T, w *Worker, since uint64, want []uint64) {
	t.Helper()
	if r := resumeNow(t, w, "alice", &since); !r.Recovered || !slices.Equal(seqs(r.Messages), want) {
		t.Fatalf("resume: %+v, want %v", r, want)
	}
}

// hold makes n requests look under way on x, until release.
func hold(x *dgMux, n int) (release func()) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var tokens []string
	for i := range n {
		token := "held" + strconv.Itoa(i)
		x.waiting[token] = &directGet{mux: x, token: token, ch: make(chan *nats.Msg, 1), lost: make(chan struct{})}
		tokens = append(tokens, token)
	}
	return func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		for _, token := range tokens {
			delete(x.waiting, token)
		}
	}
}

// sentBy returns how many messages each read connection has sent.
func sentBy(w *Worker) []uint64 {
	out := make([]uint64, len(w.reads.conns))
	for i, x := range w.reads.conns {
		out[i] = x.nc.Stats().OutMsgs
	}
	return out
}

// Direct Gets go over the JetStream connection until spreadAt of them are
// under way on it; then over the read pool's other connections, to the
// one with the fewest under way.
func TestReadPoolSpreadsWhenBusy(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	since := resumeNow(t, w, "alice", nil).Through
	want := []uint64{publishDurable(t, js, "notify.user.alice", "a"), publishDurable(t, js, "notify.all", "all")}
	if len(w.reads.conns) != readPoolSize {
		t.Fatalf("%d read connections, want %d", len(w.reads.conns), readPoolSize)
	}
	// Each resume sends four Direct Gets (alice's message and her end,
	// the broadcast's and its end) and the first may send a stream info.
	resumes := func() []uint64 {
		before := sentBy(w)
		for range 5 {
			resumeAlice(t, w, since, want)
		}
		after := sentBy(w)
		for i := range after {
			after[i] -= before[i]
		}
		return after
	}
	if sent := resumes(); sent[0] == 0 || sent[1] != 0 || sent[2] != 0 {
		t.Fatalf("idle: sent %v, want all on the first", sent)
	}
	release0 := hold(w.reads.conns[0], spreadAt)
	// (The first still carries the stream infos, one a resume at most.)
	if sent := resumes(); sent[0] > 5 || sent[1] < 5*4 || sent[2] != 0 {
		t.Fatalf("the first busy: sent %v, want the Direct Gets on the second", sent)
	}
	release1 := hold(w.reads.conns[1], spreadAt+1)
	release2 := hold(w.reads.conns[2], spreadAt+2)
	if sent := resumes(); sent[0] == 0 || sent[1] != 0 || sent[2] != 0 {
		t.Fatalf("all busy: sent %v, want all on the least busy, the first", sent)
	}
	release0()
	release1()
	release2()
}

// A read connection that drops is skipped until it is back; what was
// under way on it fails at once and the replay tries again.
func TestReadPoolConnectionFails(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	since := resumeNow(t, w, "alice", nil).Through
	want := []uint64{publishDurable(t, js, "notify.user.alice", "a"), publishDurable(t, js, "notify.all", "all")}
	reader := w.reads.conns[1]
	defer hold(w.reads.conns[0], spreadAt)() // reads go to the readers

	// A request under way when the connection drops is told at once.
	g, err := w.startDirectGetOn(reader, dgRequest{Seq: since + 1, NextFor: "notify.user.nobody", Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	reader.abandon()
	if _, err := g.collect(context.Background()); err == nil {
		t.Fatal("an abandoned direct get answered")
	}

	id, err := reader.nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	reconnects := reader.nc.Stats().Reconnects
	if err := srv.DisconnectClientByID(id); err != nil {
		t.Fatal(err)
	}
	// Down or back, every resume is exact.
	for range 10 {
		resumeAlice(t, w, since, want)
	}
	eventually(t, "reader reconnected", func() bool {
		return reader.nc.IsConnected() && reader.nc.Stats().Reconnects > reconnects
	})
	sent := reader.nc.Stats().OutMsgs
	for range 10 {
		resumeAlice(t, w, since, want)
	}
	if reader.nc.Stats().OutMsgs == sent {
		t.Fatal("the reconnected reader is not used again")
	}

	// Closed for good, it is skipped, and the worker still closes cleanly.
	reader.nc.Close()
	for range 10 {
		resumeAlice(t, w, since, want)
	}
}
