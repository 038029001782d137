package main

// Section 6 of docs/protocol.md: requests. One reply per worker holding a
// session of the name (or per worker, for a broadcast), with the number of
// sessions reached; interest only while a session of the name is here.

import (
	"cmp"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestRequestReply(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)

	c1 := client(t, tw, "erin")
	c2 := client(t, tw, "erin")
	if r := request(t, nc, "notify.user.erin", []byte("ping")); r.Delivered != 2 || r.Worker != "test-worker" {
		t.Fatalf("reply = %+v, want 2 sessions from test-worker", r)
	}
	expect(t, c1, "ping")
	expect(t, c2, "ping")

	if _, err := nc.Request("notify.user.nobody", []byte("x"), waitTimeout); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request to an absent name: err = %v, want no responders", err)
	}

	// When the last session leaves, the interest goes with it.
	c1.Close()
	c2.Close()
	eventually(t, "no responders for erin", func() bool {
		// A request racing the unsubscribe can go unanswered; it
		// times out, and the next one is tried.
		_, err := nc.Request("notify.user.erin", []byte("x"), time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})
}

// Every worker holding a session of the name replies, and only those; a
// request to the broadcast subject gets one reply from every worker.
func TestRequestRepliesPerWorker(t *testing.T) {
	srv := startNATS(t, nil)
	var workers []*testWorker
	for _, id := range []string{"worker-1", "worker-2", "worker-3"} {
		cfg := testConfig(t)
		cfg.NATSURLs = []string{srv.ClientURL()}
		cfg.WorkerID = id
		workers = append(workers, startWorker(t, cfg))
	}
	client(t, workers[0], "gus")
	client(t, workers[0], "gus")
	client(t, workers[1], "gus")
	client(t, workers[2], "hal")
	dial(t, workers[2].addr, "/") // unidentified: not counted in the broadcast reply
	nc := connectNATS(t, srv.ClientURL())

	for _, row := range []struct {
		subject string
		want    []reply // by worker
	}{
		{"notify.user.gus", []reply{{2, "worker-1"}, {1, "worker-2"}}},
		{"notify.user.hal", []reply{{1, "worker-3"}}},
		{"notify.all", []reply{{2, "worker-1"}, {1, "worker-2"}, {1, "worker-3"}}},
	} {
		t.Run(row.subject, func(t *testing.T) {
			got := allReplies(t, nc, row.subject, len(row.want))
			if !slices.Equal(got, row.want) {
				t.Fatalf("replies %+v, want %+v", got, row.want)
			}
		})
	}
}

// allReplies publishes a request to subject and returns the first n
// replies, sorted by worker. That no worker without a session of the name
// replies follows from its holding no interest (TestPerNameInterest).
func allReplies(t *testing.T, nc *nats.Conn, subject string, n int) []reply {
	t.Helper()
	sub := subscribe(t, nc, nats.NewInbox())
	if err := nc.PublishRequest(subject, sub.Subject, []byte("who")); err != nil {
		t.Fatal(err)
	}
	var got []reply
	for range n {
		var r reply
		if m := next(t, sub); json.Unmarshal(m.Data, &r) != nil {
			t.Fatalf("reply %q", m.Data)
		}
		got = append(got, r)
	}
	slices.SortFunc(got, func(a, b reply) int { return cmp.Compare(a.Worker, b.Worker) })
	return got
}

// The worker subscribes per name, never to a wildcard over users.
func TestPerNameInterest(t *testing.T) {
	srv := startNATS(t, nil)
	cfg := testConfig(t)
	cfg.NATSURLs = []string{srv.ClientURL()}
	cfg.NATSName = "interest-test"
	tw := startWorker(t, cfg)
	client(t, tw, "frank")
	client(t, tw, "frank")
	client(t, tw, "grace")

	connz, err := srv.Connz(&server.ConnzOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	var subs []string
	for _, ci := range connz.Conns {
		if ci.Name == "interest-test" {
			subs = ci.Subs
		}
	}
	// Besides its names and the broadcast subject, the worker holds its
	// replies inbox (JetStream requests), the stream's leader advisory and
	// the bulk presence subject: nothing that matches a user subject.
	want := map[string]bool{"notify.all": true, "notify.user.frank": true, "notify.user.grace": true,
		"$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.NOTIFY": true, "notify.presence": true}
	var names int
	for _, s := range subs {
		switch {
		case want[s]:
			names++
		case strings.HasPrefix(s, "_INBOX.") && strings.Count(s, ".") == 2 && strings.HasSuffix(s, ".*"):
		default:
			t.Fatalf("unexpected subscription %q (all: %q)", s, subs)
		}
	}
	if names != len(want) || len(subs) != len(want)+1 {
		t.Fatalf("worker subscriptions = %q, want %v and one replies inbox", subs, want)
	}
}
