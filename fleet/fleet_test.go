package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// A user's message reaches each of the user's sessions once, on whichever
// workers they are; "all" reaches everyone; a request is answered once by
// each worker that holds the name. The servers' own counters show that
// each worker received exactly its names' traffic and nothing else.
func TestDelivery(t *testing.T) {
	f := newFleet(t, 3, 3)
	w1, w2, w3 := f.workers[0], f.workers[1], f.workers[2]
	clients := []*client{
		connect(t, w1, "alice"), connect(t, w1, "alice"), connect(t, w2, "alice"),
		connect(t, w2, "bob"), connect(t, w3, "carol"), connect(t, w3, "dave"),
	}
	held := map[*worker][]string{w1: {"alice"}, w2: {"alice", "bob"}, w3: {"carol", "dave"}}

	// Each worker subscribes to exactly notify.all and its own names, and
	// besides to its JetStream replies, the stream's leader advisory and
	// bulk presence requests, which match no notification. Its online
	// events (one per name) are out before the counts below start.
	for w, names := range held {
		online := fmt.Sprintf(`notify_events_total{kind="online"} %d`, len(names))
		eventually(t, w.id+"'s online events", func() bool { return strings.Contains(f.metrics(t, w), online) })
		_, ci := f.conn(w)
		want := []string{"notify.all", "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.NOTIFY", "notify.presence"}
		for _, n := range names {
			want = append(want, "notify.user."+n)
		}
		got := slices.DeleteFunc(slices.Clone(ci.Subs), func(s string) bool {
			return strings.HasPrefix(s, "_INBOX.") && strings.HasSuffix(s, ".*")
		})
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Fatalf("%s subscribes to %q, want %q", w.id, got, want)
		}
	}
	before := map[*worker]*server.ConnInfo{}
	for _, w := range f.workers {
		_, before[w] = f.conn(w)
	}

	at := f.nodes[2]
	nc := f.producer(t, at)
	// Traffic for names nobody holds goes to no worker.
	for i := range 10 {
		mustPublish(t, nc, "notify.user.ghost", fmt.Sprint(i))
	}
	const perName, perAll = 20, 5
	f.round(t, nc, at, clients, "d", perName, perAll)

	// A request to alice is answered by w1 (two sessions) and w2 (one).
	inbox := nats.NewInbox()
	replies, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("notify.user.alice", inbox, []byte("req")); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for range 2 {
		m, err := replies.NextMsg(waitTimeout)
		if err != nil {
			t.Fatalf("reply: %v (so far %v)", err, got)
		}
		var r struct {
			Delivered int    `json:"delivered"`
			Worker    string `json:"worker"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("reply %q: %v", m.Data, err)
		}
		got[r.Worker] += r.Delivered
	}
	if want := map[string]int{w1.id: 2, w2.id: 1}; !maps(got, want) {
		t.Fatalf("replies %v, want %v", got, want)
	}
	for _, c := range clients[:3] {
		if msg := c.read(t); msg != "req" {
			t.Fatalf("alice on %s got %q, want the request", c.w.id, msg)
		}
	}

	// Count from the servers: messages each worker's connection received
	// (out_msgs) and sent (in_msgs, the replies).
	wantOut := map[*worker]int64{}
	for w, names := range held {
		wantOut[w] = int64(len(names)*(perName+1) + perAll + 1)
		if slices.Contains(names, "alice") {
			wantOut[w]++ // the request
		}
	}
	wantIn := map[*worker]int64{w1: 1, w2: 1, w3: 0}
	for _, w := range f.workers {
		var out, in int64
		eventually(t, w.id+"'s message counts at its server", func() bool {
			_, ci := f.conn(w)
			out, in = ci.OutMsgs-before[w].OutMsgs, ci.InMsgs-before[w].InMsgs
			return out >= wantOut[w] && in >= wantIn[w]
		})
		if out != wantOut[w] || in != wantIn[w] {
			t.Fatalf("%s: the server sent it %d messages and got %d from it; want %d and %d", w.id, out, in, wantOut[w], wantIn[w])
		}
		t.Logf("%s: received %d messages from NATS for %v + broadcasts, sent %d replies", w.id, out, held[w], in)
	}

	if body := f.metrics(t, w1); !strings.Contains(body, `notify_build_info{commit="`+testCommit+`",`) ||
		!strings.Contains(body, `version="`+testVersion+`"} 1`) {
		t.Fatalf("/metrics lacks the stamped build info")
	}
}

func maps(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// The welcome promises delivery of what is published after it through the
// worker's own NATS server; the other servers learn the interest over the
// routes a moment later. This measures that moment.
func TestWelcomeInCluster(t *testing.T) {
	f := newFleet(t, 3, 1)
	w := f.workers[0]
	home, _ := f.conn(w)
	var other *natsNode
	for _, n := range f.nodes {
		if n != home {
			other = n
		}
	}
	local := f.producer(t, home)
	var worst time.Duration
	for i := range 20 {
		name := fmt.Sprintf("promise%d", i)
		c := connect(t, w, name)
		welcomed := time.Now()
		// No wait: the welcome alone makes this delivery certain.
		mustPublish(t, local, "notify.user."+name, "now")
		if err := local.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := c.read(t); got != "now" {
			t.Fatalf("%s got %q", name, got)
		}
		eventually(t, "interest at "+other.name, func() bool { return f.interest(other, w, "notify.user."+name) })
		worst = max(worst, time.Since(welcomed))
	}
	t.Logf("interest seen at another server's monitoring within %s of the welcome (worst of 20, includes polling)", worst.Round(time.Millisecond))
}

// nodeFault runs a NATS server fault against the server that worker w1
// uses, and checks that w1 fails over, that its subscriptions come back,
// and that every client then gets everything published.
func nodeFault(t *testing.T, fault syscall.Signal) {
	f := newFleet(t, 3, 3)
	w := f.workers[0]
	victim, _ := f.conn(w)
	var at *natsNode
	for _, n := range f.nodes {
		if n != victim {
			at = n
		}
	}
	var clients []*client
	for _, wk := range f.workers {
		clients = append(clients, connect(t, wk, "own-"+wk.id), connect(t, wk, "shared"))
	}
	_, ci := f.conn(w)
	subsBefore := slices.Clone(ci.Subs)
	sort.Strings(subsBefore)
	nc := f.producer(t, at)
	f.round(t, nc, at, clients, "before", 5, 2)

	watch := f.watchReady(t, w)
	mark := w.proc.log.len()
	t0 := time.Now()
	victim.proc.signal(t, fault)
	if fault == syscall.SIGKILL {
		victim.proc.wait(t)
		victim.down = true
	}

	lost := parseLogLine(t, w.proc.log.wait(t, mark, `"msg":"nats disconnected"`)).Time
	back := parseLogLine(t, w.proc.log.wait(t, mark, `"msg":"nats reconnected; subscriptions restored"`)).Time
	f.waitReady(t, w)
	var home *natsNode
	eventually(t, w.id+"'s subscriptions on another server", func() bool {
		var ci *server.ConnInfo
		home, ci = f.conn(w)
		if ci == nil || home == victim {
			return false
		}
		subs := slices.Clone(ci.Subs)
		sort.Strings(subs)
		return slices.Equal(subs, subsBefore)
	})
	notReady, saw503 := watch.first(http.StatusServiceUnavailable, t0)
	readyAgain := "/readyz never sampled 503"
	if saw503 {
		ready, _ := watch.first(http.StatusOK, notReady)
		readyAgain = fmt.Sprintf("/readyz 503 at %s and 200 again at %s", since(t0, notReady), since(t0, ready))
	} else if outage := back.Sub(lost); outage > time.Second {
		// /readyz is sampled every 5ms; even on a loaded machine, an
		// outage this long must show.
		t.Errorf("/readyz never said 503 during a %s outage", outage)
	}
	f.round(t, nc, at, clients, "after", 5, 2)
	delivered := time.Now()

	if back.Sub(t0) > 15*time.Second {
		t.Errorf("failover took %s", since(t0, back))
	}
	t.Logf("%s of %s: worker noticed after %s, reconnected to %s after %s (outage %s); %s; every client had everything after %s",
		faultName[fault], victim.name, since(t0, lost), home.name, since(t0, back), since(lost, back), readyAgain, since(t0, delivered))

	metrics := f.metrics(t, w)
	for _, want := range []string{"notify_nats_connected 1", "notify_nats_reconnects_total 1", "notify_nats_disconnects_total 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("%s /metrics lacks %q", w.id, want)
		}
	}
}

var faultName = map[syscall.Signal]string{syscall.SIGKILL: "kill -9", syscall.SIGSTOP: "SIGSTOP"}

func TestNATSServerKilled(t *testing.T) { nodeFault(t, syscall.SIGKILL) }

// A frozen server keeps its TCP connections open and answers nothing; only
// the client's pings notice it.
func TestNATSServerFrozen(t *testing.T) { nodeFault(t, syscall.SIGSTOP) }

// The worker's clients see their connection drop, reconnect to another
// worker, and get everything published after their new welcome.
func TestWorkerKilled(t *testing.T) {
	f := newFleet(t, 3, 3)
	w1, w2, w3 := f.workers[0], f.workers[1], f.workers[2]
	victims := []*client{connect(t, w1, "erin"), connect(t, w1, "frank"), connect(t, w1, "shared")}
	others := []*client{connect(t, w2, "shared"), connect(t, w3, "grace")}
	at := f.nodes[0]
	nc := f.producer(t, at)
	f.round(t, nc, at, append(slices.Clone(victims), others...), "before", 5, 2)

	t0 := time.Now()
	w1.proc.signal(t, syscall.SIGKILL)
	var dropped time.Time
	var reconnected []*client
	for i, c := range victims {
		err := c.readError(t)
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
			t.Fatalf("%s: a killed worker sent close %d", c.name, ce.Code)
		}
		dropped = time.Now()
		reconnected = append(reconnected, connect(t, []*worker{w2, w3}[i%2], c.name))
	}
	welcomed := time.Now()
	if err := w1.proc.wait(t); err == nil {
		t.Fatal("the killed worker exited 0")
	}
	f.round(t, nc, at, append(reconnected, others...), "after", 5, 2)
	t.Logf("worker killed: last client saw the drop after %s, all welcomed elsewhere after %s, all had everything after %s",
		since(t0, dropped), since(t0, welcomed), since(t0, time.Now()))
}

// Rolling restart: a replacement starts, the old worker gets SIGTERM, its
// clients get 1001 and move, and it exits 0.
func TestRollingRestart(t *testing.T) {
	f := newFleet(t, 3, 3)
	var clients []*client
	for _, w := range f.workers {
		clients = append(clients, connect(t, w, "r-"+w.id), connect(t, w, "everyone"))
	}
	at := f.nodes[1]
	nc := f.producer(t, at)
	for _, old := range slices.Clone(f.workers[:3]) {
		repl := f.startWorker(t, old.id+"b")
		f.waitReady(t, repl)
		t0 := time.Now()
		old.proc.signal(t, syscall.SIGTERM)
		for i, c := range clients {
			if c.w != old {
				continue
			}
			c.ws.SetReadDeadline(time.Now().Add(waitTimeout))
			_, _, err := c.ws.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
				t.Fatalf("%s on %s after SIGTERM: %v, want close 1001", c.name, old.id, err)
			}
			clients[i] = connect(t, repl, c.name)
		}
		if err := old.proc.wait(t); err != nil {
			t.Fatalf("%s after SIGTERM: %v, want exit 0", old.id, err)
		}
		t.Logf("%s: SIGTERM to exit 0 in %s", old.id, since(t0, time.Now()))
		f.round(t, nc, at, clients, "after-"+old.id, 5, 2)
	}
}

// The whole NATS cluster goes away and comes back on the same addresses;
// the workers reconnect on their own and their clients, still connected,
// get everything published once the workers are ready.
func TestNATSClusterRestart(t *testing.T) {
	f := newFleet(t, 3, 3)
	var clients []*client
	var watches []*readyWatch
	for _, w := range f.workers {
		clients = append(clients, connect(t, w, "c-"+w.id), connect(t, w, "everyone"))
		watches = append(watches, f.watchReady(t, w))
	}
	nc0 := f.producer(t, f.nodes[0])
	f.round(t, nc0, f.nodes[0], clients, "before", 5, 2)
	nc0.Close()

	t0 := time.Now()
	for _, n := range f.nodes {
		n.proc.signal(t, syscall.SIGKILL)
	}
	for _, n := range f.nodes {
		n.proc.wait(t)
		n.down = true
	}
	for _, w := range f.workers {
		eventually(t, w.id+" /readyz 503", func() bool { return f.readyz(w) == http.StatusServiceUnavailable })
	}
	down := time.Now()
	restart := time.Now()
	for _, n := range f.nodes {
		f.startNode(t, n)
	}
	f.waitCluster(t)
	clustered := time.Now()
	var lastReady time.Time
	for i, w := range f.workers {
		f.waitReady(t, w)
		r, _ := watches[i].first(http.StatusOK, restart)
		if r.After(lastReady) {
			lastReady = r
		}
	}
	nc := f.producer(t, f.nodes[1])
	f.round(t, nc, f.nodes[1], clients, "after", 5, 2)
	t.Logf("cluster restart: all workers /readyz 503 %s after the kill; servers restarted, cluster formed after %s, last worker /readyz 200 after %s, every client had everything after %s (times from restart)",
		since(t0, down), since(restart, clustered), since(restart, lastReady), since(restart, time.Now()))
}
