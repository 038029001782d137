package gcfloor

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPercent(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		base        int
		floor, live uint64
		want        int
	}{
		{100, 64 * mb, 16 * mb, 400},        // grows by 64 MB, not 16
		{100, 64 * mb, 64 * mb, 100},        // at the floor: GOGC alone
		{100, 64 * mb, 200 * mb, 100},       // above it: GOGC alone
		{300, 64 * mb, 32 * mb, 300},        // a larger GOGC stays
		{100, 64 * mb, 1 << 10, 1600},       // goal: the runtime's minimum, 4 MB × 16
		{100, 64 * mb, 0, 1600},             // before the first collection
		{100, 1 << 40, 64 * mb, maxPercent}, // bounded
	} {
		if got := percent(c.base, c.floor, c.live); got != c.want {
			t.Errorf("percent(%d, %d, %d) = %d, want %d", c.base, c.floor, c.live, got, c.want)
		}
	}
}

func TestParseGOGC(t *testing.T) {
	for in, want := range map[string]struct {
		p  int
		ok bool
	}{"": {100, true}, "200": {200, true}, " 50 ": {50, true}, "off": {-1, false}, "-1": {-1, false}, "x": {100, true}} {
		p, ok := parseGOGC(in)
		if p != want.p || ok != want.ok {
			t.Errorf("parseGOGC(%q) = %d, %v, want %d, %v", in, p, ok, want.p, want.ok)
		}
	}
}

// gogc is the runtime's GOGC now.
func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestStartFollowsTheLiveHeap raises GOGC for a small heap, lowers it
// again after collections once the live heap outgrows the floor, and
// restores it on stop.
func TestStartFollowsTheLiveHeap(t *testing.T) {
	if v := gogc(); v != 100 {
		t.Skipf("GOGC is %d in this process; the test needs the default", v)
	}
	const floor = 256 << 20
	f, stop := Start(floor, "")
	defer stop()
	if p := f.Percent(); p <= 100 || gogc() != uint64(p) {
		t.Fatalf("after Start: percent %d, runtime GOGC %d; want above 100 and equal", p, gogc())
	}

	// Grow the live heap past the floor: after a collection the floor
	// steps aside.
	big := make([][]byte, 0, 320)
	for range 320 {
		big = append(big, make([]byte, 1<<20))
	}
	waitFor(t, func() bool { runtime.GC(); return f.Percent() == 100 && gogc() == 100 })

	// Release it: after a collection GOGC rises again.
	runtime.KeepAlive(big)
	big = nil
	waitFor(t, func() bool { runtime.GC(); return f.Percent() > 100 && gogc() == uint64(f.Percent()) })

	stop()
	if gogc() != 100 {
		t.Errorf("after stop: runtime GOGC %d, want 100", gogc())
	}
	runtime.GC()
	if gogc() != 100 || f.Percent() != 100 {
		t.Errorf("a collection after stop changed GOGC to %d (percent %d)", gogc(), f.Percent())
	}
}

func TestStartOff(t *testing.T) {
	for _, c := range []struct {
		floor uint64
		gogc  string
	}{{0, ""}, {64 << 20, "off"}} {
		before := gogc()
		f, stop := Start(c.floor, c.gogc)
		runtime.GC()
		if gogc() != before {
			t.Errorf("Start(%d, %q) changed GOGC from %d to %d", c.floor, c.gogc, before, gogc())
		}
		stop()
		_ = f
	}
}

// waitFor polls cond until it holds, for at most 10 seconds. The cleanup
// that adjusts GOGC runs on the runtime's goroutine some time after a
// collection, so there is no event to wait on.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
