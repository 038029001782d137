package hub

import (
	"context"
	"slices"
	"time"

	"github.com/notify-worker/notify-worker/feed"
)

// App pings (docs/protocol.md, section 8, "Frames, in order"). Browsers and mini-programs cannot see
// WebSocket pings, so every AppPing each live v2 session gets
// {"type":"ping","seq":C}, C being the cursor of cursor.go, computed from
// one Resumer.Snapshot per tick for the names of the v2 sessions.

// pinger is the hub's app-ping goroutine: started with the first
// connection (with the slow closer, under the hub's lock), ended and
// waited for by Close.
type pinger struct {
	tick   func(context.Context)
	every  time.Duration
	cancel context.CancelFunc // set by start
	done   chan struct{}      // closed when run returns
}

func newPinger(tick func(context.Context), every time.Duration) *pinger {
	return &pinger{tick: tick, every: every, done: make(chan struct{})}
}

// start runs the goroutine. The hub calls it once, under its lock, which
// orders it before shutdown.
func (p *pinger) start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.run(ctx)
}

func (p *pinger) run(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.tick(ctx)
		}
	}
}

// shutdown ends run, cancelling a Snapshot in flight, and waits for it;
// started says whether start was called. Safe to call more than once.
func (p *pinger) shutdown(started bool) {
	if !started {
		return
	}
	p.cancel()
	<-p.done
}

// pingAll is one tick, on the app-ping goroutine: one Snapshot for the
// names of the v2 sessions, then a ping to each live one (or a close, for
// a stuck message). Nothing here holds an index lock.
func (h *Hub) pingAll(ctx context.Context) {
	sessions := slices.DeleteFunc(h.v2.list(), func(v *v2Session) bool { return !v.live() })
	if len(sessions) == 0 {
		return
	}
	snap, have := h.snapshot(ctx, sessions)
	if ctx.Err() != nil {
		return // Close: its close frames follow
	}
	pinged := 0
	for _, v := range sessions {
		ok, stuck := v.ping(snap, have)
		if ok {
			pinged++
		}
		if stuck {
			h.log.Warn("closed a v2 session: a durable message for it is not coming", "name", v.name)
		}
	}
	h.metrics.appPings.Add(float64(pinged))
}

// snapshot asks the Resumer for the subjects of sessions, bounded by
// snapshotTimeout; have is false when there is no Resumer or it failed.
func (h *Hub) snapshot(ctx context.Context, sessions []*v2Session) (snap feed.Snapshot, have bool) {
	if h.cfg.Resumer == nil {
		return feed.Snapshot{}, false
	}
	seen := make(map[string]struct{}, len(sessions))
	names := make([]string, 0, len(sessions))
	for _, v := range sessions {
		if _, dup := seen[v.name]; !dup {
			seen[v.name] = struct{}{}
			names = append(names, v.name)
		}
	}
	bounded, cancel := context.WithTimeout(ctx, snapshotTimeout(h.cfg))
	snap, err := h.cfg.Resumer.Snapshot(bounded, names)
	cancel()
	if err != nil {
		if ctx.Err() == nil { // not Close
			h.log.Warn("snapshot failed: app pings carry the cursors as they were", "names", len(names), "err", err)
		}
		return feed.Snapshot{}, false
	}
	return snap, true
}

// snapshotTimeout bounds one Snapshot: the join timeout (the bound of
// every call to the messaging side), and at most half a ping interval, so
// that pings keep their pace.
func snapshotTimeout(cfg Config) time.Duration { return min(cfg.JoinTimeout, cfg.AppPing/2) }
