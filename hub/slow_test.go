package hub

import (
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notify-worker/notify-worker/feed"
)

// blockingHandler is a slog.Handler standing in for a log sink that
// stalls: Handle blocks on every record whose message contains match until
// unblock, and discards every other record. entered is closed when the
// first such record arrives.
type blockingHandler struct {
	match       string
	enterOnce   sync.Once
	entered     chan struct{}
	releaseOnce sync.Once
	release     chan struct{}
}

func newBlockingHandler(match string) *blockingHandler {
	return &blockingHandler{match: match, entered: make(chan struct{}), release: make(chan struct{})}
}

func (b *blockingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (b *blockingHandler) WithAttrs([]slog.Attr) slog.Handler       { return b }
func (b *blockingHandler) WithGroup(string) slog.Handler            { return b }

func (b *blockingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, b.match) {
		b.enterOnce.Do(func() { close(b.entered) })
		<-b.release
	}
	return nil
}

// unblock lets every blocked and later Handle return; safe to call more
// than once.
func (b *blockingHandler) unblock() { b.releaseOnce.Do(func() { close(b.release) }) }

// waitEntered waits until a matching record is being handled.
func (b *blockingHandler) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-b.entered:
	case <-time.After(waitTimeout):
		t.Fatalf("nothing logged %q", b.match)
	}
}

// overflow delivers large messages to name, a stalled client, on a
// goroutine of its own until one does not fit its queue. The test ends
// only once that goroutine has.
func overflow(t *testing.T, h *Hub, name string) {
	big := make([]byte, 1<<20)
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		for i := 0; h.DeliverUser(name, feed.Message{Payload: big}) == 1; i++ {
			if i > 1000 {
				t.Error("the queue never overflowed")
				return
			}
		}
	}()
}

// sameShard returns a name other than name that the index keeps in name's
// shard, under its lock.
func sameShard(t *testing.T, ix *index, name string) string {
	t.Helper()
	for i := range 100 * shardCount {
		other := "other" + strconv.Itoa(i)
		if ix.shard(other) == ix.shard(name) {
			return other
		}
	}
	t.Fatalf("no name shares %s's shard", name)
	return ""
}

// A slow client is disconnected without holding up anyone else: while the
// log line about it is stuck in a stalled log sink, another name of the
// same index shard can still join, be delivered to and leave.
func TestSlowClientLogHoldsNoLock(t *testing.T) {
	r := newFakeRouter()
	logs := newBlockingHandler("slow client")
	h, url, _ := startHubWith(t, stalledConfig(), r, slog.New(logs))
	other := sameShard(t, h.index, "slow")
	joinStalled(t, url, "slow")
	overflow(t, h, "slow")
	// Cleanups run last registered first: the log sink recovers before
	// anything waits on it.
	t.Cleanup(logs.unblock)
	logs.waitEntered(t)

	c := join(t, url, other)
	if n := h.DeliverUser(other, core("still delivered")); n != 1 {
		t.Fatalf("DeliverUser(%s) = %d, want 1", other, n)
	}
	if got := readFrame(t, c); got != "still delivered" {
		t.Fatalf("got %q", got)
	}
	c.Close()
	r.waitLeft(t, other, 1)
}

// Close waits for the goroutines that close slow sessions: none outlives
// it. Here one is held in a stalled log sink, so Close must wait for the
// sink, past the end of every session.
//
// Not parallel: it looks for Close waiting by every goroutine's stack, and
// another hub closing at the same time would look the same.
func TestCloseWaitsForSlowClose(t *testing.T) {
	logs := newBlockingHandler("slow client")
	h, url, _ := startHubWith(t, stalledConfig(), newFakeRouter(), slog.New(logs))
	joinStalled(t, url, "slow")
	overflow(t, h, "slow")
	t.Cleanup(logs.unblock)
	logs.waitEntered(t)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- h.Close(ctx) }()
	// The session itself ends once the write stuck on its socket times
	// out; Close must then still wait, in shutdown, for closeSlow.
	deadline := time.Now().Add(waitTimeout)
	for !blockedIn("sync.(*WaitGroup).Wait", "hub.(*slowCloser).shutdown") {
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while a slow session's closing goroutine was still running", err)
		case <-time.After(10 * time.Millisecond): // polling interval
		}
		if time.Now().After(deadline) {
			t.Fatal("Close never waited for the slow session's closing goroutine")
		}
	}
	logs.unblock()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// blockedIn reports whether a goroutine's stack holds a call to fn made
// from within caller, that is whether caller is waiting in fn.
func blockedIn(fn, caller string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if i := strings.Index(g, fn); i >= 0 && strings.Contains(g[i:], caller) {
			return true
		}
	}
	return false
}
