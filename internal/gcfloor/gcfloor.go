// Package gcfloor keeps the garbage collector from running often while the
// live heap is small.
//
// With GOGC=100 the runtime collects whenever the heap has grown by as much
// as is live. A worker with 1,000 sessions has a small live heap (15-25
// MB) and, when it stores and republishes 5,000 durable messages a second
// in its embedded NATS server, allocates about 19 MB a second: it
// collected about once a second, and each cycle's marking delayed the deliveries under way. A
// floor lets the heap grow by at least that many bytes between two
// collections, so a small heap is collected every few seconds instead;
// once the live heap is larger than the floor, GOGC alone decides, as
// without it.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
)

// maxPercent bounds the GOGC the floor sets, for a nearly empty heap.
const maxPercent = 10000

// Floor adjusts GOGC after every garbage collection so that the heap may
// grow by at least its floor before the next one.
type Floor struct {
	floor   uint64
	base    int // GOGC without the floor
	mu      sync.Mutex
	stopped bool
	current int
	sample  []metrics.Sample
}

// sentinel is allocated for one cycle: its cleanup runs once a collection
// has found it unreachable. It holds a pointer so that the runtime never
// packs it with other small objects.
type sentinel struct{ _ *byte }

// Start raises GOGC whenever the live heap is below floor bytes, so that
// the heap may grow by floor before the next collection, and restores it
// when stop is called. gogc is the value of the GOGC environment variable
// the process started with ("" means 100); with GOGC=off, or floor 0,
// Start does nothing. The adjustment runs after each collection, on the
// runtime's cleanup goroutine, until stop. GOGC is one setting per
// process: with two Floors running (tests that start several workers),
// one's stop restores the base until the other's next adjustment.
func Start(floor uint64, gogc string) (f *Floor, stop func()) {
	base, ok := parseGOGC(gogc)
	f = &Floor{floor: floor, base: base, current: base,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	if !ok || floor == 0 {
		f.stopped = true
		return f, func() {}
	}
	f.adjust()
	f.arm()
	return f, f.stop
}

// Percent is the GOGC the floor last set.
func (f *Floor) Percent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current
}

func (f *Floor) arm() {
	runtime.AddCleanup(&sentinel{}, (*Floor).cycle, f)
}

// cycle runs after a collection: it sets GOGC for the next one and waits
// for the one after.
func (f *Floor) cycle() {
	if f.adjust() {
		f.arm()
	}
}

// adjust sets GOGC from the live heap; false once stopped.
func (f *Floor) adjust() bool {
	metrics.Read(f.sample)
	var live uint64
	if f.sample[0].Value.Kind() == metrics.KindUint64 {
		live = f.sample[0].Value.Uint64()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	if p := percent(f.base, f.floor, live); p != f.current {
		f.current = p
		debug.SetGCPercent(p)
	}
	return true
}

func (f *Floor) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	f.stopped = true
	if f.current != f.base {
		f.current = f.base
		debug.SetGCPercent(f.base)
	}
}

// minHeap is the runtime's smallest heap goal at GOGC=100: its goal is
// never below minHeap × GOGC / 100, which is the goal before the first
// collection (the live heap then reads 0).
const minHeap = 4 << 20

// percent is the GOGC that lets a heap of live bytes grow by at least
// floor bytes, and never less than base. A live heap under minHeap counts
// as minHeap: a larger GOGC would raise the runtime's minimum goal above
// floor.
func percent(base int, floor, live uint64) int {
	p := floor * 100 / max(live, minHeap)
	if p <= uint64(base) {
		return base
	}
	return int(min(p, maxPercent))
}

// parseGOGC reads GOGC as the runtime does: "" is 100, "off" turns the
// collector off (the floor then does nothing), a number is the percent.
func parseGOGC(s string) (int, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 100, true
	}
	if s == "off" {
		return -1, false
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		// The runtime treats what it cannot parse as 100.
		return 100, true
	}
	if n < 0 {
		return -1, false
	}
	return n, true
}
