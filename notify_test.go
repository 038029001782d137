package main

// Section 3 of docs/protocol.md: notifications. Who receives what is
// published to which subject, on every worker; how payloads become frames;
// order per name; the subject prefix.

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/gorilla/websocket"
)

// TestNotificationRouting runs the rows of protocol.md's section 3 table
// against two workers on one NATS server: each published message must reach
// exactly the sessions of its row and no other. After each row, markers
// end it: one to each name's subject and one broadcast, each behind the
// row's message on its own dispatch lane, so what a session got before both
// markers is all it will get of the row.
func TestNotificationRouting(t *testing.T) {
	srv := startNATS(t, nil)
	cfg1, cfg2 := testConfig(t), testConfig(t)
	cfg1.NATSURLs, cfg2.NATSURLs = []string{srv.ClientURL()}, []string{srv.ClientURL()}
	cfg1.WorkerID, cfg2.WorkerID = "worker-1", "worker-2"
	w1, w2 := startWorker(t, cfg1), startWorker(t, cfg2)
	nc := connectNATS(t, srv.ClientURL())

	sessions := map[string]*websocket.Conn{
		"alice on worker-1":         client(t, w1, "alice"),
		"alice on worker-1 via /ws": clientAt(t, w1, "/ws", "alice"),
		"alice on worker-2":         client(t, w2, "alice"),
		"bob on worker-1":           client(t, w1, "bob"),
		"carol on worker-2":         client(t, w2, "carol"),
	}
	anon1, anon2 := dial(t, w1.addr, "/"), dial(t, w2.addr, "/") // connected, never identified

	rows := []struct {
		subject string
		reaches []string
	}{
		{"notify.user.alice", []string{"alice on worker-1", "alice on worker-1 via /ws", "alice on worker-2"}},
		{"notify.user.bob", []string{"bob on worker-1"}},
		{"notify.user.carol", []string{"carol on worker-2"}},
		{"notify.user.nobody", nil},
		{"notify.all", []string{"alice on worker-1", "alice on worker-1 via /ws", "alice on worker-2", "bob on worker-1", "carol on worker-2"}},
	}
	for i, row := range rows {
		t.Run(row.subject, func(t *testing.T) {
			payload := fmt.Sprintf(`{"row":%d}`, i)
			publish(t, nc, row.subject, payload)
			userMark, allMark := fmt.Sprintf("user-mark-%d", i), fmt.Sprintf("all-mark-%d", i)
			for _, name := range []string{"alice", "bob", "carol"} {
				publish(t, nc, "notify.user."+name, userMark)
			}
			publish(t, nc, "notify.all", allMark)
			for who, c := range sessions {
				var got []string
				for seenUser, seenAll := false, false; !seenUser || !seenAll; {
					switch f := readText(t, c); f {
					case userMark:
						seenUser = true
					case allMark:
						seenAll = true
					default:
						got = append(got, f)
					}
				}
				var want []string
				if slices.Contains(row.reaches, who) {
					want = []string{payload}
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s got %q, want %q", who, got, want)
				}
			}
		})
	}

	// The unidentified connections got nothing: once identified, their
	// first frame is their welcome and then only what came after.
	for i, anon := range []*websocket.Conn{anon1, anon2} {
		name := "late" + strconv.Itoa(i)
		identify(t, anon, name)
		publish(t, nc, "notify.user."+name, "after")
		expect(t, anon, "after")
	}
}

// Each NATS message becomes one frame with the payload's bytes: text when
// they are valid UTF-8, binary otherwise; no byte order mark or envelope is
// added.
func TestPayloadFrames(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)
	c := client(t, tw, "frames")
	for _, row := range []struct {
		name    string
		payload []byte
		typ     int
	}{
		{"JSON", []byte(`{"title":"订单已发货","orderId":42}`), websocket.TextMessage},
		{"plain text", []byte("hello"), websocket.TextMessage},
		{"empty", []byte{}, websocket.TextMessage},
		{"not UTF-8", []byte{0xff, 0x00, 0xfe, 'x'}, websocket.BinaryMessage},
		{"truncated UTF-8", []byte("订")[:2], websocket.BinaryMessage},
	} {
		t.Run(row.name, func(t *testing.T) {
			if err := nc.Publish("notify.user.frames", row.payload); err != nil {
				t.Fatal(err)
			}
			typ, got := read(t, c)
			if typ != row.typ || !bytes.Equal(got, row.payload) {
				t.Fatalf("got type %d %x, want type %d %x", typ, got, row.typ, row.payload)
			}
		})
	}
}

// Per name, messages arrive in the order the worker received them.
func TestOrderPerName(t *testing.T) {
	const n = 500
	cfg := testConfig(t)
	cfg.SessionQueue = n // the whole burst fits: this test is about order, not the queue
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	c := client(t, tw, "ordered")
	for i := range n {
		if err := nc.Publish("notify.user.ordered", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		expect(t, c, strconv.Itoa(i))
	}
}

// NOTIFY_SUBJECT_PREFIX replaces "notify" in every subject: user,
// broadcast, inbound and requests.
func TestSubjectPrefix(t *testing.T) {
	cfg := testConfig(t)
	cfg.SubjectPrefix = "acme.push"
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	inbound := subscribe(t, nc, "acme.push.inbound.zoe")
	c := client(t, tw, "zoe")

	// A message on the default prefix would reach zoe before the next one:
	// both would be on zoe's dispatch lane.
	publish(t, nc, "notify.user.zoe", "default prefix")
	publish(t, nc, "acme.push.user.zoe", "user")
	expect(t, c, "user")
	publish(t, nc, "acme.push.all", "all")
	expect(t, c, "all")
	if r := request(t, nc, "acme.push.user.zoe", []byte("request")); r.Delivered != 1 {
		t.Fatalf("request reply %+v, want 1 delivered", r)
	}
	expect(t, c, "request")
	send(t, c, "up")
	if m := next(t, inbound); m.Subject != "acme.push.inbound.zoe" || string(m.Data) != "up" {
		t.Fatalf("upstream %s %q", m.Subject, m.Data)
	}
}
