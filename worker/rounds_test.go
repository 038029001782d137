package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
)

// Shared requests: a caller gets the answer of a request sent after it
// joined, never one that was on its way already.

func TestSharedNeverAnEarlierRound(t *testing.T) {
	w := &Worker{quit: make(chan struct{})}
	var rs sharedRounds[int64]
	var clock atomic.Int64 // ticks at every join and every request sent
	release := make(chan struct{})
	sent := make(chan struct{}, 8)
	do := func() (int64, error) {
		at := clock.Add(1)
		sent <- struct{}{}
		<-release
		return at, nil
	}
	type result struct{ joined, sentAt int64 }
	results := make(chan result, 16)
	call := func() {
		joined := clock.Add(1)
		at, err := shared(context.Background(), w, &rs, do)
		if err != nil {
			t.Error(err)
		}
		results <- result{joined, at}
	}
	go call()
	<-sent // the first round is on its way and held
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); call() }()
	}
	// The five join the next round while the first is held: let both go.
	eventually(t, "the five waiting", func() bool {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		return rs.next != nil && clock.Load() == 7
	})
	close(release)
	wg.Wait()
	rounds := map[int64]int{}
	for range 6 {
		r := <-results
		if r.sentAt <= r.joined {
			t.Fatalf("a caller that joined at %d got the request sent at %d", r.joined, r.sentAt)
		}
		rounds[r.sentAt]++
	}
	// (A caller may tick the clock and join only once the first round
	// is answered, and so start a third.)
	if len(rounds) < 2 || len(rounds) > 3 || rounds[2] != 1 {
		t.Fatalf("6 callers in rounds %v, want the first alone, the others in one or two more", rounds)
	}
	w.wg.Wait()
}

func TestSharedEndsAtClose(t *testing.T) {
	w := &Worker{quit: make(chan struct{})}
	var rs sharedRounds[int]
	release := make(chan struct{})
	sent := make(chan struct{}, 1)
	do := func() (int, error) {
		sent <- struct{}{}
		<-release
		return 1, nil
	}
	errs := make(chan error, 2)
	go func() { _, err := shared(context.Background(), w, &rs, do); errs <- err }()
	<-sent
	go func() { _, err := shared(context.Background(), w, &rs, do); errs <- err }()
	eventually(t, "the second waiting", func() bool {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		return rs.next != nil
	})
	close(w.quit)
	for range 2 {
		if err := <-errs; !errors.Is(err, nats.ErrConnectionClosed) {
			t.Fatalf("at close: %v", err)
		}
	}
	close(release) // the request in flight ends (Close ends its connection)
	w.wg.Wait()
}

// Concurrent replays on a real stream share their stream infos, and each
// still gets exactly its messages.
func TestResumesShareStreamInfo(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), func(c *Config) { c.ReplayConcurrency = 64 })
	js := jetStream(t, srv.ClientURL())
	since := resumeNow(t, w, "alice", nil).Through
	mine := publishDurable(t, js, "notify.user.alice", "a")
	all := publishDurable(t, js, "notify.all", "all")
	nc := producer(t, srv.ClientURL())
	infos, err := nc.SubscribeSync("$JS.API.STREAM.INFO.NOTIFY")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := resumeNow(t, w, "alice", &since)
			if got := seqs(r.Messages); !r.Recovered || len(got) != 2 || got[0] != mine || got[1] != all {
				t.Errorf("resume: %+v, want %d and %d", r, mine, all)
			}
		}()
	}
	wg.Wait()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	asked, _, err := infos.Pending()
	if err != nil {
		t.Fatal(err)
	}
	if asked >= n/2 {
		t.Fatalf("%d resumes asked STREAM.INFO %d times, want it shared", n, asked)
	}
	t.Logf("%d resumes asked STREAM.INFO %d times", n, asked)
}
