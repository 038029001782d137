package worker

import (
	"context"
	"strconv"
	"testing"

	"github.com/notify-worker/notify-worker/feed"
)

// Snapshot: for the broadcast subject and each name, the newest durable
// message at or below a sequence the stream had reached.

func TestSnapshot(t *testing.T) {
	srv := startJetStream(t)
	w, reg := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	publishDurable(t, js, "notify.user.alice", "old")
	alice := publishDurable(t, js, "notify.user.alice", "a")
	all := publishDurable(t, js, "notify.all", "everyone")
	bob := publishDurable(t, js, "notify.user.bob", "b")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	snap, err := w.Snapshot(ctx, []string{"alice", "bob", "carol", "alice", "not valid!"})
	if err != nil {
		t.Fatal(err)
	}
	through := snap.All.Through
	if through <= bob {
		t.Fatalf("Through %d, below the last publish %d", through, bob)
	}
	if snap.All != (feed.Last{Seq: all, Through: through}) {
		t.Errorf("all: %+v, want seq %d", snap.All, all)
	}
	want := map[string]feed.Last{
		"alice": {Seq: alice, Through: through},
		"bob":   {Seq: bob, Through: through},
		"carol": {Seq: 0, Through: through},
	}
	if len(snap.Users) != len(want) {
		t.Errorf("users %v, want %v", snap.Users, want)
	}
	for name, l := range want {
		if snap.Users[name] != l {
			t.Errorf("%s: %+v, want %+v", name, snap.Users[name], l)
		}
	}
	if got := metricValue(t, reg, "notify_stream_last_sequence"); got < float64(through) {
		t.Errorf("stream_last_sequence = %v, below %d", got, through)
	}
}

// Names past the first 1000 subjects are asked in further requests, each
// with the barrier subject, so that each answers with its sequence.
func TestSnapshotManyNames(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	names := make([]string, 2500)
	for i := range names {
		names[i] = "u" + strconv.Itoa(i)
	}
	want := map[string]uint64{
		"u0":    publishDurable(t, js, "notify.user.u0", "x"),
		"u1500": publishDurable(t, js, "notify.user.u1500", "x"),
		"u2499": publishDurable(t, js, "notify.user.u2499", "x"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	snap, err := w.Snapshot(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Users) != len(names) {
		t.Fatalf("%d users, want %d", len(snap.Users), len(names))
	}
	for _, name := range names {
		l := snap.Users[name]
		if l.Seq != want[name] || l.Through < want["u2499"] {
			t.Fatalf("%s: %+v, want seq %d", name, l, want[name])
		}
	}
}

// An answer cut short by its size is continued at the same sequence.
func TestSnapshotLargePayloads(t *testing.T) {
	srv := startJetStream(t)
	w, _ := durableWorker(t, srv.ClientURL(), newRecorder(), nil)
	js := jetStream(t, srv.ClientURL())
	big := string(make([]byte, 900<<10)) // pageBytes is 4 MiB: a few per answer
	want := map[string]uint64{}
	var names []string
	for i := range 8 {
		name := "big" + strconv.Itoa(i)
		names = append(names, name)
		want[name] = publishDurable(t, js, "notify.user."+name, big)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	requests := readStats(w).OutMsgs
	snap, err := w.Snapshot(ctx, names)
	if err != nil {
		t.Fatal(err)
	}
	if requests = readStats(w).OutMsgs - requests; requests < 2 {
		t.Errorf("%d request for 7 MiB of answers", requests)
	}
	for _, name := range names {
		if l := snap.Users[name]; l.Seq != want[name] || l.Through != snap.All.Through {
			t.Errorf("%s: %+v, want seq %d through %d", name, l, want[name], snap.All.Through)
		}
	}
}
