package fleet

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Issue 9, "Lossless rolling deploys and faults": a protocol v2 client
// that reconnects and resumes with its cursor loses nothing published
// durably. Each test runs the fleet with JetStream on every node and an R3
// stream, several logical clients per name spread over the workers, and a
// producer publishing durably at a steady rate before, during and after
// one kind of fault; then every client must have got every message for its
// name and for everyone exactly once, in sequence order, across all its
// connections, and every welcome must have said recovered:true.

// Rolling restart: for each worker, a replacement starts and joins the
// pool, then the old worker gets SIGTERM; its v2 clients get 1012 and
// resume on the others.
func TestDurableRollingRestart(t *testing.T) {
	d := startDurable(t)
	d.produce(t)
	d.waitFlowing(t)
	start := time.Now()
	for _, old := range slices.Clone(d.f.workers) {
		repl := d.f.startWorker(t, old.id+"b")
		d.f.waitReady(t, repl)
		d.pool.add(repl)
		d.pool.remove(old)
		moved := d.clientsOn(old)
		t0 := time.Now()
		old.proc.signal(t, syscall.SIGTERM)
		resumed := d.resumed(t, t0, moved)
		seq, caught := d.caughtUp(t, t0)
		if err := old.proc.wait(t); err != nil {
			t.Fatalf("%s after SIGTERM: %v, want exit 0", old.id, err)
		}
		t.Logf("%s SIGTERM: its %d clients resumed elsewhere after %s; every client had seq %d (the first stored after the SIGTERM) after %s; exit 0 after %s; connections ended: %s",
			old.id, len(moved), since(t0, resumed), seq, since(t0, caught), since(t0, time.Now()), formatCounts(d.ends(t0)))
	}
	d.finish(t, start)
}

// kill -9 of a worker: its v2 clients see the connection cut (1006) and
// resume on the others.
func TestDurableWorkerKilled(t *testing.T) {
	d := startDurable(t)
	d.produce(t)
	d.waitFlowing(t)
	victim := d.f.workers[0]
	d.pool.remove(victim)
	moved := d.clientsOn(victim)
	t0 := time.Now()
	victim.proc.signal(t, syscall.SIGKILL)
	resumed := d.resumed(t, t0, moved)
	seq, caught := d.caughtUp(t, t0)
	if err := victim.proc.wait(t); err == nil {
		t.Fatal("the killed worker exited 0")
	}
	t.Logf("kill -9 of %s: its %d clients resumed elsewhere after %s; every client had seq %d (the first stored after the kill) after %s; connections ended: %s",
		victim.id, len(moved), since(t0, resumed), seq, since(t0, caught), formatCounts(d.ends(t0)))
	d.finish(t, t0)
}

// kill -9 of the NATS server leading the stream, which stays down while
// the clients catch up: the other two elect a new leader (seconds), the
// producer retries its message with the same id meanwhile, the workers
// close their v2 sessions with 1012 (the workers on the dead server
// because their connection dropped, every worker on the leader-elected
// advisory), and resumes that come during the election wait or get 1013.
// Two servers of three are a quorum, so the stream, and resuming, must
// work without the third. Then the server comes back on its store and
// catches up as a follower while the publish goes on.
func TestDurableStreamLeaderKilled(t *testing.T) { streamLeaderKilled(t, false) }

// The same, with the killed server restarted at once on its store, as a
// supervisor does: it may rejoin before the election is over.
func TestDurableStreamLeaderRestarted(t *testing.T) { streamLeaderKilled(t, true) }

func streamLeaderKilled(t *testing.T, restartAtOnce bool) {
	d := startDurable(t)
	leader := d.f.streamLeader(t, d.admin)
	var followers []*natsNode
	for _, n := range d.f.nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	// The producer is on a follower's server, so what it measures is the
	// election, not its own reconnection.
	d.produce(t, followers...)
	d.waitFlowing(t)
	t0 := time.Now()
	leader.proc.signal(t, syscall.SIGKILL)
	leader.proc.wait(t)
	leader.down = true
	if restartAtOnce {
		d.f.startNode(t, leader)
		t.Logf("%s restarted %s after the kill", leader.name, since(t0, time.Now()))
	}
	newLeader, elected := d.f.waitNewLeader(t, d.admin, t0)
	if info, err := streamInfo(d.admin); err == nil {
		t.Logf("after the election: %s", replicas(info))
	}
	seq, caught := d.caughtUp(t, t0)
	stall, attempts := d.producer.stall(t0)
	t.Logf("kill -9 of %s, the stream leader: %s elected leader after %s (STREAM.INFO leader_since); the producer's longest publish took %s (%d attempts); every client had seq %d (the first stored after the kill) after %s; connections ended: %s",
		leader.name, newLeader.name, since(t0, elected), stall.Round(time.Millisecond), attempts, seq, since(t0, caught), formatCounts(d.ends(t0)))

	if !restartAtOnce {
		back := time.Now()
		d.f.startNode(t, leader)
		d.f.waitCluster(t)
		d.f.waitStream(t, d.admin, 3)
		t.Logf("%s restarted on its store: a current replica again after %s", leader.name, since(back, time.Now()))
	}
	d.finish(t, t0)
}

// A full restart of the R3 cluster: every server killed, then started on
// the same ports and store directories. The workers lose NATS and close
// their v2 sessions; resumes get 1013 until the stream is back, the
// producer retries with the same id, and once the stream has a leader
// again every client resumes and catches up.
func TestDurableClusterRestart(t *testing.T) {
	d := startDurable(t)
	d.produce(t)
	d.waitFlowing(t)
	t0 := time.Now()
	for _, n := range d.f.nodes {
		n.proc.signal(t, syscall.SIGKILL)
	}
	for _, n := range d.f.nodes {
		n.proc.wait(t)
		n.down = true
	}
	for _, w := range d.f.workers {
		eventually(t, w.id+" /readyz 503", func() bool { return d.f.readyz(w) == http.StatusServiceUnavailable })
	}
	restart := time.Now()
	for _, n := range d.f.nodes {
		d.f.startNode(t, n)
	}
	d.f.waitCluster(t)
	clustered := time.Now()
	d.f.waitJetStream(t)
	meta := time.Now()
	d.f.waitStream(t, d.admin, 3)
	streamBack := time.Now()
	seq, caught := d.caughtUp(t, t0)
	stall, attempts := d.producer.stall(t0)
	t.Logf("cluster restart (times from the restart, %s after the kill): routes after %s, JetStream meta leader after %s, stream with 3 current replicas after %s, every client had seq %d (the first stored after the kill) after %s; the producer's longest publish took %s (%d attempts); connections ended: %s",
		since(t0, restart), since(restart, clustered), since(restart, meta), since(restart, streamBack), seq, since(restart, caught), stall.Round(time.Millisecond), attempts, formatCounts(d.ends(t0)))
	d.finish(t, t0)
}

// Worker settings of the durable fleet, over workerEnv.
var durableEnv = []string{
	"NOTIFY_STREAM_REPLICAS=3",
	"NOTIFY_APP_PING=" + appPing.String(),
	"NOTIFY_JOIN_TIMEOUT=" + joinTimeout.String(),
}

const (
	appPing      = 200 * time.Millisecond
	joinTimeout  = 5 * time.Second
	publishEvery = 20 * time.Millisecond // 50 durable messages a second
	// afterFault is how long the producer keeps publishing once every
	// client has caught up after a fault.
	afterFault = 2 * time.Second
)

// durableNames are the clients' names; each has a logical client on every
// worker.
var durableNames = []string{"ann", "ben", "cyd"}

// durableRun is one scenario: the fleet, its clients and the producer.
type durableRun struct {
	f        *fleet
	admin    jetstream.JetStream // the test's own client, for STREAM.INFO
	pool     *workerPool
	clients  []*v2Client
	producer *durableProducer
	stop     context.CancelFunc
	running  sync.WaitGroup // the clients' goroutines
	checked  bool           // check ran, and reported on every failing client
}

// startDurable starts the durable fleet (three nodes, three workers),
// waits for the R3 stream the workers create, and connects the logical
// clients, each welcomed before anything is published.
func startDurable(t *testing.T) *durableRun {
	t.Helper()
	t0 := time.Now()
	f := startFleet(t, true, 3, 3, durableEnv)
	d := &durableRun{f: f, admin: f.jsClient(t, "admin")}
	info := f.waitStream(t, d.admin, 3)
	if cfg := info.Config; !slices.Equal(cfg.Subjects, []string{"durable.notify.>"}) || cfg.RePublish == nil || !cfg.AllowDirect {
		t.Fatalf("the stream the workers created: subjects %q, republish %+v, allow_direct %v", cfg.Subjects, cfg.RePublish, cfg.AllowDirect)
	}
	d.startClients(t, f.workers)
	t.Logf("fleet with JetStream, R3 stream and %d v2 clients (%d names × %d workers) ready in %s",
		len(d.clients), len(durableNames), len(f.workers), since(t0, time.Now()))
	return d
}

// startClients starts a logical client of every name on each of workers
// and waits for their first welcomes.
func (d *durableRun) startClients(t *testing.T, workers []*worker) {
	t.Helper()
	d.pool = newWorkerPool(workers)
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	t.Cleanup(func() {
		d.stopClients()
		if t.Failed() && !d.checked {
			d.report(t)
		}
	})
	for i, name := range durableNames {
		for j := range workers {
			c := &v2Client{name: name, pool: d.pool, welcomeWait: joinTimeout + 3*time.Second, deadAfter: max(2*appPing, 2*time.Second)}
			d.clients = append(d.clients, c)
			d.running.Add(1)
			go func() {
				defer d.running.Done()
				c.run(ctx, workers[(i+j)%len(workers)])
			}()
		}
	}
	eventually(t, "every client's first welcome", func() bool {
		for _, c := range d.clients {
			if !c.isWelcomed() {
				return false
			}
		}
		return true
	})
}

func (d *durableRun) stopClients() {
	d.stop()
	d.running.Wait()
}

// produce starts the steady durable publish, through the nodes in prefer
// first.
func (d *durableRun) produce(t *testing.T, prefer ...*natsNode) {
	t.Helper()
	d.producer = newDurableProducer(d.f.jsClient(t, "producer", prefer...), durableNames, publishEvery)
	d.producer.start(t)
}

// waitFlowing waits until the producer has stored a few dozen messages
// and every client has them: the steady state a fault interrupts.
func (d *durableRun) waitFlowing(t *testing.T) {
	t.Helper()
	eventually(t, "25 messages stored", func() bool { return d.producer.count() >= 25 })
	d.waitCursors(t, d.producer.last())
}

// waitCursors waits until every client's cursor is at least seq, and
// returns when that was first seen.
func (d *durableRun) waitCursors(t *testing.T, seq uint64) time.Time {
	t.Helper()
	eventually(t, fmt.Sprintf("every client's cursor at %d", seq), func() bool {
		for _, c := range d.clients {
			if c.cursorNow() < seq {
				return false
			}
		}
		return true
	})
	return time.Now()
}

// caughtUp waits until every client has everything up to the first
// message stored after t0 (so, after the fault), and returns that
// message's sequence and when every cursor had reached it.
func (d *durableRun) caughtUp(t *testing.T, t0 time.Time) (uint64, time.Time) {
	t.Helper()
	var m sentMsg
	eventually(t, "a message stored after the fault", func() bool {
		var ok bool
		m, ok = d.producer.firstAckedAfter(t0)
		return ok
	})
	return m.seq, d.waitCursors(t, m.seq)
}

// clientsOn returns the clients connected to w now.
func (d *durableRun) clientsOn(w *worker) []*v2Client {
	var on []*v2Client
	for _, c := range d.clients {
		if c.worker() == w {
			on = append(on, c)
		}
	}
	return on
}

// resumed waits until each of clients has been welcomed again after t0 and
// returns the last of those welcomes.
func (d *durableRun) resumed(t *testing.T, t0 time.Time, clients []*v2Client) time.Time {
	t.Helper()
	var last time.Time
	eventually(t, fmt.Sprintf("%d clients welcomed again", len(clients)), func() bool {
		last = t0
		for _, c := range clients {
			at, ok := c.welcomedAfter(t0)
			if !ok {
				return false
			}
			last = maxTime(last, at)
		}
		return true
	})
	return last
}

// ends counts how the clients' connections ended at or after t0.
func (d *durableRun) ends(t0 time.Time) map[string]int {
	counts := map[string]int{}
	for _, c := range d.clients {
		c.endsAfter(t0, counts)
	}
	return counts
}

// finish lets the producer publish for afterFault more, stops it, waits
// until every client's cursor has reached its last message, stops the
// clients and checks the accounting.
func (d *durableRun) finish(t *testing.T, t0 time.Time) {
	t.Helper()
	until := time.Now().Add(afterFault)
	eventually(t, "the publish after the fault", func() bool {
		_, ok := d.producer.firstAckedAfter(until)
		return ok
	})
	d.producer.finish(t)
	last := d.producer.last()
	stopped := time.Now()
	drained := d.waitCursors(t, last)
	d.stopClients()
	d.check(t)
	var replayed int
	var notRecovered int
	for _, c := range d.clients {
		replayed += c.replayed
		notRecovered += len(c.notRecovered)
	}
	t.Logf("accounting: %s; every client had seq %d %s after the producer stopped; %d connections ended after the fault (%s); %d messages replayed; recovered:false %d",
		d.producer.summary(), last, since(stopped, drained), sum(d.ends(t0)), formatCounts(d.ends(t0)), replayed, notRecovered)
}

// report logs every client's connections, for a test that failed before
// its accounting.
func (d *durableRun) report(t *testing.T) {
	t.Helper()
	t.Logf("the clients' connections ended: %s", formatCounts(d.ends(time.Time{})))
	for i, c := range d.clients {
		c.mu.Lock()
		t.Logf("client %d (%s), cursor %d, %d messages, connections:\n%s", i, c.name, c.cursor, len(c.got), strings.Join(c.events, "\n"))
		c.mu.Unlock()
	}
}

// check compares what each client got with what the producer stored: for
// its name and for everyone, every message once, in sequence order, with
// the payload published.
func (d *durableRun) check(t *testing.T) {
	t.Helper()
	d.checked = true
	d.producer.check(t)
	deliveries := 0
	for i, c := range d.clients {
		c.mu.Lock()
		want := d.producer.want(c.name)
		got := make([]uint64, len(c.got))
		for k, dl := range c.got {
			got[k] = dl.seq
			if m, ok := d.producer.message(dl.seq); ok && (dl.msg.I != m.i || (m.name != "" && dl.msg.To != m.name) || (m.name == "" && dl.msg.To != "all")) {
				t.Errorf("client %d (%s): seq %d carries %+v, but the producer stored message %d to %q there", i, c.name, dl.seq, dl.msg, m.i, m.name)
			}
		}
		deliveries += len(got)
		failed := false
		if len(want) > 0 && c.first >= want[0] {
			t.Errorf("client %d (%s): first welcome at seq %d, after the first message (%d)", i, c.name, c.first, want[0])
			failed = true
		}
		if !slices.Equal(got, want) {
			missing, extra := difference(want, got), difference(got, want)
			t.Errorf("client %d (%s): got %d messages, want %d; missing %s; not wanted or twice %s; duplicates %s",
				i, c.name, len(got), len(want), head(missing), head(extra), head(duplicates(got)))
			failed = true
		}
		for _, p := range c.problems {
			t.Errorf("client %d (%s): %s", i, c.name, p)
			failed = true
		}
		for _, n := range c.notRecovered {
			t.Errorf("client %d (%s): %s", i, c.name, n)
			failed = true
		}
		if c.gaveUp != nil {
			t.Errorf("client %d (%s) gave up: %v", i, c.name, c.gaveUp)
			failed = true
		}
		if failed {
			t.Logf("client %d (%s) connections:\n%s", i, c.name, strings.Join(c.events, "\n"))
		}
		c.mu.Unlock()
	}
	if !t.Failed() {
		t.Logf("accounting: %d clients got %d durable messages between them, each exactly what the producer stored for it, once and in order", len(d.clients), deliveries)
	}
}

// difference returns the elements of a (ascending) that b lacks.
func difference(a, b []uint64) []uint64 {
	in := make(map[uint64]bool, len(b))
	for _, s := range b {
		in[s] = true
	}
	var out []uint64
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}

func duplicates(a []uint64) []uint64 {
	seen := map[uint64]bool{}
	var out []uint64
	for _, s := range a {
		if seen[s] {
			out = append(out, s)
		}
		seen[s] = true
	}
	return out
}

// head formats the first few of seqs.
func head(seqs []uint64) string {
	const n = 12
	if len(seqs) == 0 {
		return "none"
	}
	s := fmt.Sprint(seqs[:min(n, len(seqs))])
	if len(seqs) > n {
		s += fmt.Sprintf(" and %d more", len(seqs)-n)
	}
	return s
}

func sum(counts map[string]int) int {
	n := 0
	for _, v := range counts {
		n += v
	}
	return n
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
