package hub

import (
	"runtime"
	"sync"
)

// fanout spreads a broadcast over the CPUs: the calling goroutine walks
// one part of the index's shards and each helper goroutine another, so
// that the write pumps woken by a broadcast start on every CPU at once
// and the last session's frame is queued sooner.
//
// The helpers are the hub's: started by the first broadcast, ended by
// Close (stop). A broadcast that finds them busy with another one, or
// stopped, walks every shard itself.
type fanout struct {
	size int // helpers to start: GOMAXPROCS - 1

	// busy is held by the broadcast using the helpers; stop takes it too.
	busy    sync.Mutex
	started bool
	stopped bool
	helpers []fanHelper
	done    sync.WaitGroup // the helpers' goroutines
}

type fanHelper struct {
	jobs    chan fanJob // capacity 1; closed by stop
	results chan tally  // capacity 1
}

// fanJob is one helper's part of a broadcast: shards [from, to) of ix.
type fanJob struct {
	ix       *index
	from, to int
	d        delivery
}

func newFanout() *fanout {
	return &fanout{size: runtime.GOMAXPROCS(0) - 1}
}

// deliverAll hands d to every session of ix, on the helpers and the
// calling goroutine, and returns once every session has been handed it.
// Each shard, and so each session, is walked by one goroutine only, so a
// session still gets broadcasts one after another in the order of the
// calls. The parts share d's v2 envelope if it is built already, and
// otherwise each builds its own, if it needs one.
func (f *fanout) deliverAll(ix *index, d *delivery) tally {
	if f.size <= 0 || !f.busy.TryLock() {
		return ix.deliverShards(0, shardCount, d)
	}
	defer f.busy.Unlock()
	if f.stopped {
		return ix.deliverShards(0, shardCount, d)
	}
	if !f.started {
		f.start()
	}
	parts := len(f.helpers) + 1
	per := (shardCount + parts - 1) / parts
	for i := range f.helpers {
		from := min((i+1)*per, shardCount)
		f.helpers[i].jobs <- fanJob{ix: ix, from: from, to: min(from+per, shardCount), d: delivery{msg: d.msg, on: d.on, text: d.text, frame: d.frame}}
	}
	t := ix.deliverShards(0, min(per, shardCount), d)
	for i := range f.helpers {
		t.add(<-f.helpers[i].results)
	}
	return t
}

// start runs the helpers; called with busy held.
func (f *fanout) start() {
	f.started = true
	f.helpers = make([]fanHelper, f.size)
	for i := range f.helpers {
		h := fanHelper{jobs: make(chan fanJob, 1), results: make(chan tally, 1)}
		f.helpers[i] = h
		f.done.Add(1)
		go func() {
			defer f.done.Done()
			for j := range h.jobs {
				h.results <- j.ix.deliverShards(j.from, j.to, &j.d)
			}
		}()
	}
}

// stop ends the helpers, after the broadcast in progress, if any; later
// broadcasts walk the shards on their caller. Safe to call more than once.
func (f *fanout) stop() {
	f.busy.Lock()
	defer f.busy.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	for _, h := range f.helpers {
		close(h.jobs)
	}
	f.done.Wait()
}
