package feed_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/notify-worker/notify-worker/feed"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDurable(t *testing.T) {
	if (feed.Message{Payload: []byte("x")}).Durable() {
		t.Error("a message without a sequence is durable")
	}
	if !(feed.Message{Seq: 7, Prev: 3}).Durable() {
		t.Error("a message with a sequence is not durable")
	}
}
