package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamName is the stream of durable notifications the workers create
// (NOTIFY_STREAM's default).
const streamName = "NOTIFY"

// waitJetStream waits until every live node runs JetStream and they agree
// on a meta leader: only then can a stream be created or found.
func (f *fleet) waitJetStream(t *testing.T) {
	t.Helper()
	eventually(t, "a JetStream meta leader on every node", func() bool {
		leader := ""
		for _, n := range f.nodes {
			if !n.live() {
				continue
			}
			var jz server.JSInfo
			if f.monitor(n, "/jsz", &jz) != nil || jz.Disabled || jz.Meta == nil || jz.Meta.Leader == "" {
				return false
			}
			if leader == "" {
				leader = jz.Meta.Leader
			} else if jz.Meta.Leader != leader {
				return false
			}
		}
		return leader != ""
	})
}

// jsClient connects a client of the test to the cluster, first to the
// nodes listed in prefer (in that order) and then to the others, and
// returns its JetStream context. The connection reconnects forever, so it
// lives through any fault the test stages, and closes at cleanup.
func (f *fleet) jsClient(t *testing.T, name string, prefer ...*natsNode) jetstream.JetStream {
	t.Helper()
	var urls []string
	for _, n := range prefer {
		urls = append(urls, n.url())
	}
	for _, n := range f.nodes {
		if !slices.Contains(prefer, n) {
			urls = append(urls, n.url())
		}
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Name(name), nats.DontRandomize(),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectJitter(50*time.Millisecond, 50*time.Millisecond),
		nats.Timeout(time.Second), nats.PingInterval(500*time.Millisecond), nats.MaxPingsOutstanding(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// streamInfo asks the stream's leader for its state. The timeout is short
// because the test polls it through leader elections, where a request may
// find no leader to answer.
func streamInfo(js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	s, err := js.Stream(ctx, streamName)
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// healthy reports whether info shows a stream with a leader and every one
// of its replicas current, so that any of them may answer a read.
func healthy(info *jetstream.StreamInfo, replicas int) bool {
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != replicas-1 {
		return false
	}
	for _, p := range info.Cluster.Replicas {
		if !p.Current || p.Offline {
			return false
		}
	}
	return true
}

// waitStream waits until the stream exists with replicas copies, all of
// them current, and returns its state.
func (f *fleet) waitStream(t *testing.T, js jetstream.JetStream, replicas int) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	var err error
	eventually(t, fmt.Sprintf("stream %s with %d current replicas", streamName, replicas), func() bool {
		info, err = streamInfo(js)
		return err == nil && info.Config.Replicas == replicas && healthy(info, replicas)
	})
	return info
}

// node returns the node whose server name is name.
func (f *fleet) node(t *testing.T, name string) *natsNode {
	t.Helper()
	for _, n := range f.nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("no node %q", name)
	return nil
}

// streamLeader returns the node that leads the stream, by the stream's
// own STREAM.INFO (cluster.leader).
func (f *fleet) streamLeader(t *testing.T, js jetstream.JetStream) *natsNode {
	t.Helper()
	var leader string
	eventually(t, "the stream's leader", func() bool {
		info, err := streamInfo(js)
		if err == nil && info.Cluster != nil {
			leader = info.Cluster.Leader
		}
		return leader != ""
	})
	return f.node(t, leader)
}

// waitNewLeader waits until the stream has a leader elected after t0
// (the old leader itself, restarted, may win again) and returns it with
// the moment of its election as the server reports it.
func (f *fleet) waitNewLeader(t *testing.T, js jetstream.JetStream, t0 time.Time) (*natsNode, time.Time) {
	t.Helper()
	var ci *jetstream.ClusterInfo
	eventually(t, "a leader of the stream elected after the fault", func() bool {
		info, err := streamInfo(js)
		if err != nil || info.Cluster == nil {
			return false
		}
		ci = info.Cluster
		return ci.Leader != "" && ci.LeaderSince != nil && ci.LeaderSince.After(t0)
	})
	return f.node(t, ci.Leader), *ci.LeaderSince
}

// replicas describes the stream's replicas as STREAM.INFO reports them,
// for the logs.
func replicas(info *jetstream.StreamInfo) string {
	if info.Cluster == nil {
		return "no cluster info"
	}
	parts := []string{"leader " + info.Cluster.Leader}
	for _, p := range info.Cluster.Replicas {
		parts = append(parts, fmt.Sprintf("%s current=%v offline=%v active=%s lag=%d", p.Name, p.Current, p.Offline, p.Active.Round(time.Millisecond), p.Lag))
	}
	return strings.Join(parts, "; ")
}
