package presence_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/notify-worker/notify-worker/presence"
	"github.com/notify-worker/notify-worker/subjects"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// connect runs a NATS server on a random port and returns a connection.
func connect(t *testing.T) *nats.Conn {
	t.Helper()
	srv := natstest.RunRandClientPortServer()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// answer subscribes subject with a responder that replies body.
func answer(t *testing.T, nc *nats.Conn, subject string, body any) {
	t.Helper()
	b, _ := json.Marshal(body)
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(b) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Answers that do not decode or name no worker are skipped; an error
// answer is reported per worker.
func TestGather(t *testing.T) {
	nc := connect(t)
	scheme, _ := subjects.New("notify")
	answer(t, nc, scheme.User("alice"), map[string]any{"worker": "w1", "sessions": 2})
	answer(t, nc, scheme.User("alice"), map[string]any{"worker": "w2", "error": "Notify-Presence must be 1"})
	answer(t, nc, scheme.User("alice"), "not an object")
	answer(t, nc, scheme.User("alice"), map[string]any{"sessions": 9})
	res, err := presence.Name(within(t, 300*time.Millisecond), nc, scheme, "alice")
	if err != nil || !res.Online || res.Sessions != 2 || len(res.Workers) != 1 || res.Errors["w2"] == "" {
		t.Fatalf("%+v, %v", res, err)
	}

	answer(t, nc, scheme.Presence(), map[string]any{"worker": "a", "online": map[string]int{"alice": 1}})
	answer(t, nc, scheme.Presence(), map[string]any{"worker": "b", "error": "bad"})
	got, err := presence.Bulk(within(t, 10*time.Second), nc, scheme, []string{"alice"}, 2)
	if err != nil || got.Partial || got.Online["alice"] != 1 || len(got.Answered) != 2 || got.Errors["b"] != "bad" {
		t.Fatalf("%+v, %v", got, err)
	}
}

// With nobody subscribed, Name and Bulk return at once with nothing.
func TestNoResponders(t *testing.T) {
	nc := connect(t)
	scheme, _ := subjects.New("notify")
	start := time.Now()
	res, err := presence.Name(within(t, 10*time.Second), nc, scheme, "alice")
	if err != nil || res.Online {
		t.Fatalf("%+v, %v", res, err)
	}
	got, err := presence.Bulk(within(t, 10*time.Second), nc, scheme, nil, 3)
	if err != nil || !got.Partial || len(got.Answered) != 0 {
		t.Fatalf("%+v, %v", got, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s", took)
	}
}
