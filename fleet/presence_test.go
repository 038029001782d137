package fleet

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notify-worker/notify-worker/presence"
	"github.com/notify-worker/notify-worker/subjects"
)

// A bulk presence request with one worker frozen (SIGSTOP) comes back on
// time, partial, with the answers of the others; once the worker runs
// again (SIGCONT), the answer is complete.
func TestBulkPresenceWithFrozenWorker(t *testing.T) {
	f := newFleet(t, 1, 3)
	connect(t, f.workers[0], "alice")
	connect(t, f.workers[1], "alice")
	connect(t, f.workers[1], "bob")
	connect(t, f.workers[2], "carol")
	nc := f.producer(t, f.nodes[0])
	scheme, err := subjects.New(subjects.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"alice", "bob", "carol", "dave"}
	bulk := func(wait time.Duration) (presence.BulkResult, time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		start := time.Now()
		res, err := presence.Bulk(ctx, nc, scheme, names, 3)
		if err != nil {
			t.Fatal(err)
		}
		return res, time.Since(start)
	}

	fleetIDs, err := presence.RollCall(func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		t.Cleanup(cancel)
		return ctx
	}(), nc, scheme)
	if err != nil || strings.Join(fleetIDs, ",") != "w1,w2,w3" {
		t.Fatalf("roll call: %v, %v", fleetIDs, err)
	}
	if res, _ := bulk(waitTimeout); res.Partial || res.Online["alice"] != 2 || res.Online["bob"] != 1 || res.Online["carol"] != 1 {
		t.Fatalf("before the freeze: %+v", res)
	}

	f.workers[1].proc.signal(t, syscall.SIGSTOP)
	const deadline = 500 * time.Millisecond
	res, took := bulk(deadline)
	f.workers[1].proc.signal(t, syscall.SIGCONT)
	if !res.Partial || strings.Join(res.Answered, ",") != "w1,w3" {
		t.Fatalf("with w2 frozen: %+v, want a partial answer from w1 and w3", res)
	}
	if res.Online["alice"] != 1 || res.Online["carol"] != 1 || res.Online["bob"] != 0 {
		t.Errorf("with w2 frozen: online %v", res.Online)
	}
	if took < deadline || took > deadline+time.Second {
		t.Errorf("the partial answer took %s, want the deadline (%s)", took, deadline)
	}
	t.Logf("partial answer after %s", took)

	eventually(t, "a complete answer after SIGCONT", func() bool {
		res, _ := bulk(time.Second)
		return !res.Partial && res.Online["bob"] == 1
	})
}
