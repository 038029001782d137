package hub

import (
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// recordingConn is a net.Conn that records what is written to it and the
// write deadlines set on it.
type recordingConn struct {
	net.Conn // nil: only the methods below are used
	writes   [][]byte
	deadline []time.Time
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(b))
	return len(b), nil
}

func (c *recordingConn) SetWriteDeadline(t time.Time) error {
	c.deadline = append(c.deadline, t)
	return nil
}

func (c *recordingConn) SetDeadline(t time.Time) error { return c.SetWriteDeadline(t) }

// wsFrame is a server-to-client WebSocket frame of opcode op.
func wsFrame(op byte, payload string) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n < 1<<16:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, payload...)
}

// upgradedConn is a sessionConn over a recordingConn, past the upgrade
// response, with nothing queued.
func upgradedConn() (*sessionConn, *recordingConn, *sessionState) {
	rec := &recordingConn{}
	st := &sessionState{}
	c := newSessionConn(rec, st, newCoalescePool(), 8*time.Second)
	_, _ = c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"))
	rec.writes = nil
	return c, rec, st
}

// pumpWrite writes f as melody's write pump does.
func pumpWrite(t *testing.T, c *sessionConn, _ *sessionState, f []byte) {
	t.Helper()
	if n, err := c.Write(f); err != nil || n != len(f) {
		t.Fatalf("Write = %d, %v", n, err)
	}
}

func TestSessionConnCoalescesQueuedFrames(t *testing.T) {
	c, rec, st := upgradedConn()
	frames := make([][]byte, 5)
	var want []byte
	for i := range frames {
		frames[i] = wsFrame(websocket.TextMessage, "message "+strconv.Itoa(i))
		want = append(want, frames[i]...)
	}
	st.queued.Add(int64(len(frames)))
	for _, f := range frames {
		pumpWrite(t, c, st, f)
	}
	if len(rec.writes) != 1 || !bytes.Equal(rec.writes[0], want) {
		t.Fatalf("writes %q, want the 5 frames in one write", rec.writes)
	}
	if c.held != nil {
		t.Fatal("a buffer is still held after the flush")
	}
}

func TestSessionConnWritesALoneFrameAtOnce(t *testing.T) {
	c, rec, st := upgradedConn()
	for i := range 3 {
		st.queued.Add(1)
		pumpWrite(t, c, st, wsFrame(websocket.TextMessage, "one"))
		if len(rec.writes) != i+1 {
			t.Fatalf("after %d frames, one at a time: %d writes", i+1, len(rec.writes))
		}
	}
}

func TestSessionConnNeverHoldsACloseFrame(t *testing.T) {
	c, rec, st := upgradedConn()
	// Frames queued after the close frame are never written: the close
	// frame and what was held before it must go out.
	st.queued.Add(4)
	pumpWrite(t, c, st, wsFrame(websocket.TextMessage, "a"))
	closeMsg := append([]byte{0x80 | websocket.CloseMessage, 2}, 0x03, 0xe9)
	if _, err := c.Write(closeMsg); err != nil {
		t.Fatal(err)
	}
	want := append(wsFrame(websocket.TextMessage, "a"), closeMsg...)
	if len(rec.writes) != 1 || !bytes.Equal(rec.writes[0], want) {
		t.Fatalf("writes %q, want the held frame and the close frame together", rec.writes)
	}
}

func TestSessionConnJoinsAFrameWrittenInTwoParts(t *testing.T) {
	for _, size := range []int{600, 70000} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			c, rec, st := upgradedConn()
			f := wsFrame(websocket.TextMessage, string(bytes.Repeat([]byte{'x'}, size)))
			// gorilla's write buffer holds the header and the start of the
			// payload; the rest follows in a second Write.
			st.queued.Add(1)
			if _, err := c.Write(f[:300]); err != nil {
				t.Fatal(err)
			}
			if len(rec.writes) != 0 {
				t.Fatal("the first part of a frame was written alone")
			}
			pumpWrite(t, c, st, f[300:])
			// A frame that fits the held buffer goes out in one write; a
			// larger one as one writev(2) on a TCP connection, which this
			// recording connection sees as two writes.
			if got := bytes.Join(rec.writes, nil); !bytes.Equal(got, f) || len(rec.writes) > 2 || size < coalesceMax && len(rec.writes) != 1 {
				t.Fatalf("%d writes of %d bytes, want the frame of %d in one", len(rec.writes), len(got), len(f))
			}
		})
	}
}

func TestSessionConnBoundsWhatItHolds(t *testing.T) {
	c, rec, st := upgradedConn()
	f := wsFrame(websocket.BinaryMessage, string(bytes.Repeat([]byte{'y'}, 1000)))
	const n = 40 // 40 KB, more than coalesceMax
	st.queued.Add(n)
	for range n {
		pumpWrite(t, c, st, f)
	}
	total := 0
	for _, w := range rec.writes {
		if len(w) > coalesceMax {
			t.Fatalf("a write of %d bytes, more than %d", len(w), coalesceMax)
		}
		total += len(w)
	}
	// 16 frames a write; a flush that does not fit the buffer is one
	// writev(2) of two parts, which this connection sees as two writes.
	if total != n*len(f) || len(rec.writes) > 6 {
		t.Fatalf("%d bytes in %d writes, want %d in at most 6", total, len(rec.writes), n*len(f))
	}
}

func TestSessionConnWriteDeadlineIsCoarse(t *testing.T) {
	c, rec, _ := upgradedConn()
	now := time.Now()
	for i := range 100 {
		// A frame every 10 ms, each with a deadline 8 s out.
		if err := c.SetWriteDeadline(now.Add(time.Duration(i)*10*time.Millisecond + 8*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	// 1 s of frames, slack 2 s: armed once.
	if len(rec.deadline) != 1 {
		t.Fatalf("deadline armed %d times, want 1", len(rec.deadline))
	}
	armed := rec.deadline[0]
	if want := now.Add(8 * time.Second); armed.Before(now.Add(990*time.Millisecond+8*time.Second)) || armed.After(want.Add(c.slack)) {
		t.Fatalf("armed %v after now, want between the last deadline asked and slack after the first", armed.Sub(now))
	}
	// An earlier deadline than the armed one by more than the slack is
	// armed, and clearing passes through.
	if err := c.SetWriteDeadline(now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if len(rec.deadline) != 3 || !rec.deadline[1].Before(armed) || !rec.deadline[2].IsZero() {
		t.Fatalf("deadlines %v", rec.deadline)
	}
}
