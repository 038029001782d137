package hub

import (
	"strconv"
	"sync"
	"testing"

	"github.com/notify-worker/notify-worker/feed"
)

// TestFanoutReachesEverySessionOnce broadcasts over helper goroutines, from
// several goroutines at once (the ones that find the helpers busy walk the
// shards themselves), and then after stop: every session gets every
// broadcast once and the tallies add up.
func TestFanoutReachesEverySessionOnce(t *testing.T) {
	const sessions, callers, broadcasts = 1000, 4, 25
	ix, all := fillIndex(sessions)
	for _, size := range []int{0, 1, 3} {
		t.Run("helpers="+strconv.Itoa(size), func(t *testing.T) {
			for _, s := range all {
				s.writes.Store(0)
			}
			f := &fanout{size: size}
			var wg sync.WaitGroup
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range broadcasts {
						d := delivery{msg: feed.Message{Payload: []byte("all")}, on: onAll, text: true}
						if got := f.deliverAll(ix, &d); got.queued != sessions {
							t.Errorf("queued to %d sessions, want %d", got.queued, sessions)
						}
					}
				}()
			}
			wg.Wait()
			f.stop()
			f.stop()
			d := delivery{msg: feed.Message{Payload: []byte("after stop")}, on: onAll, text: true}
			if got := f.deliverAll(ix, &d); got.queued != sessions {
				t.Errorf("after stop: queued to %d sessions, want %d", got.queued, sessions)
			}
			for i, s := range all {
				if n := s.writes.Load(); n != callers*broadcasts+1 {
					t.Fatalf("session %d got %d frames, want %d", i, n, callers*broadcasts+1)
				}
			}
		})
	}
}
