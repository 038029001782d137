package main

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestHostileClients runs one attack per row against one worker, asserts
// its exact outcome, and checks after each that a healthy client on the
// same worker still receives.
func TestHostileClients(t *testing.T) {
	cfg := limitsConfig(t)
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	control := newLiveClient(t, tw.addr, "control")

	rows := []struct {
		name   string
		attack func(t *testing.T)
	}{
		{"oversize first frame", func(t *testing.T) {
			c := dial(t, tw.addr, "/")
			send(t, c, `{"name":"`+strings.Repeat("a", int(cfg.IdentifyMaxBytes))+`"}`)
			if _, code, _ := readClose(t, c); code != websocket.CloseMessageTooBig {
				t.Fatalf("close %d, want 1009", code)
			}
		}},
		{"oversize frame after welcome", func(t *testing.T) {
			c := client(t, tw, "big")
			send(t, c, strings.Repeat("x", int(cfg.MaxMessageBytes)+1))
			if _, code, _ := readClose(t, c); code != websocket.CloseMessageTooBig {
				t.Fatalf("close %d, want 1009", code)
			}
		}},
		{"invalid UTF-8", func(t *testing.T) {
			c := dial(t, tw.addr, "/")
			send(t, c, "{\"name\":\"a\xc3\x28\"}")
			expectRejected(t, c, websocket.ClosePolicyViolation, "not valid UTF-8")
		}},
		{"non-JSON", func(t *testing.T) {
			c := dial(t, tw.addr, "/")
			send(t, c, "name=control")
			expectRejected(t, c, websocket.ClosePolicyViolation, "must be a JSON object")
		}},
		{"binary first frame", func(t *testing.T) {
			c := dial(t, tw.addr, "/")
			if err := c.WriteMessage(websocket.BinaryMessage, []byte(`{"name":"control"}`)); err != nil {
				t.Fatal(err)
			}
			expectRejected(t, c, websocket.ClosePolicyViolation, "must be a text frame")
		}},
		{"identify timeout", func(t *testing.T) {
			before := metric(t, tw.addr, `notify_limit_closes_total{reason="identify_timeout"}`)
			c := dial(t, tw.addr, "/")
			expectRejected(t, c, websocket.ClosePolicyViolation, "identify timeout")
			if got := metric(t, tw.addr, `notify_limit_closes_total{reason="identify_timeout"}`); got != before+1 {
				t.Fatalf("identify_timeout metric %v, want %v", got, before+1)
			}
		}},
		{"sessions-per-name cap", func(t *testing.T) {
			a := client(t, tw, "dup")
			b := client(t, tw, "dup")
			c := dial(t, tw.addr, "/")
			send(t, c, `{"name":"dup"}`)
			expectRejected(t, c, websocket.ClosePolicyViolation, "too many sessions for this name")
			publish(t, nc, "notify.user.dup", "still-two")
			expect(t, a, "still-two")
			expect(t, b, "still-two")
		}},
		{"upstream flood", func(t *testing.T) {
			sub, err := nc.SubscribeSync("notify.inbound.flooder")
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			c := client(t, tw, "flooder")
			for i := range 50 {
				if err := c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i))); err != nil {
					break // the server may already have closed
				}
			}
			expectRejected(t, c, websocket.ClosePolicyViolation, "upstream rate limit exceeded")
			// The worker's publishes reach the server on its own schedule.
			eventually(t, "the burst to be forwarded", func() bool {
				n, _, _ := sub.Pending()
				return n >= cfg.UpstreamBurst
			})
			forwarded, _, _ := sub.Pending()
			// The burst, plus what the rate refilled while they arrived.
			if forwarded < cfg.UpstreamBurst || forwarded > cfg.UpstreamBurst+3 {
				t.Fatalf("%d messages forwarded, want about the burst of %d", forwarded, cfg.UpstreamBurst)
			}
		}},
		{"peer that stops answering pings", func(t *testing.T) {
			before := metric(t, tw.addr, `notify_limit_closes_total{reason="pong_timeout"}`)
			c := client(t, tw, "vanished") // and then never reads again
			eventually(t, "the silent peer to be dropped", func() bool {
				return metric(t, tw.addr, `notify_limit_closes_total{reason="pong_timeout"}`) == before+1
			})
			c.SetReadDeadline(time.Now().Add(waitTimeout))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					var ce *websocket.CloseError
					if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
						t.Fatalf("got close %d, want the connection cut", ce.Code)
					}
					break
				}
			}
		}},
	}
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			row.attack(t)
			msg := "control-" + strconv.Itoa(i)
			publish(t, nc, "notify.user.control", msg)
			control.expect(t, msg)
		})
	}
}

// A client that stops reading is disconnected once its queue overflows;
// the loss is counted; the messages it did get have no gap; and a healthy
// client keeps receiving every message meanwhile.
func TestSlowReader(t *testing.T) {
	cfg := limitsConfig(t)
	cfg.PongTimeout = time.Minute // this test is about the queue, not pings
	cfg.PingPeriod = 30 * time.Second
	tw := startWorker(t, cfg)
	nc := connectNATS(t, tw.natsURL)
	control := newLiveClient(t, tw.addr, "control")
	slow := client(t, tw, "slow") // never reads until the end

	big := strings.Repeat("x", 60_000)
	const n = 400 // 24 MB: far more than socket buffers and the queue hold
	for i := range n {
		// Each control message is delivered while the slow client's
		// writer is stuck: the next one is published only once it arrived.
		if err := nc.Publish("notify.user.slow", []byte(strconv.Itoa(i)+" "+big)); err != nil {
			t.Fatal(err)
		}
		publish(t, nc, "notify.user.control", strconv.Itoa(i))
		control.expect(t, strconv.Itoa(i))
	}
	eventually(t, "the slow client to be disconnected", func() bool {
		return metric(t, tw.addr, `notify_limit_closes_total{reason="slow_consumer"}`) == 1
	})
	if dropped := metric(t, tw.addr, `notify_dropped_total{reason="queue_full"}`); dropped != 1 {
		t.Fatalf("notify_dropped_total{reason=queue_full} = %v, want the one message that overflowed", dropped)
	}
	// Each message for the slow client was queued to it, counted as
	// dropped, or published after its session ended (then, as for any
	// absent user, there was no one to deliver it to).
	queuedToSlow := metric(t, tw.addr, `notify_deliveries_total{kind="user"}`) - n // less control's
	var dropped float64
	for _, reason := range []string{"queue_full", "after_loss", "closing"} {
		dropped += metric(t, tw.addr, `notify_dropped_total{reason="`+reason+`"}`)
	}
	if queuedToSlow+dropped > n {
		t.Fatalf("slow client: %v queued + %v dropped > %d published", queuedToSlow, dropped, n)
	}
	t.Logf("slow client: %v queued, %v dropped and counted, %v published after it was gone", queuedToSlow, dropped, n-queuedToSlow-dropped)

	// What the slow client did receive is a prefix, in order.
	slow.SetReadDeadline(time.Now().Add(waitTimeout))
	for want := 0; ; want++ {
		_, msg, err := slow.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code != 4002 && ce.Code != websocket.CloseAbnormalClosure {
				t.Fatalf("slow client closed with %d, want 4002 or a cut connection", ce.Code)
			}
			if want >= n {
				t.Fatalf("slow client got all %d messages; it was never slow", n)
			}
			break
		}
		seq, _, _ := strings.Cut(string(msg), " ")
		if seq != strconv.Itoa(want) {
			t.Fatalf("slow client got message %s, want %d: a gap while open", seq, want)
		}
	}
}
