package hub

import (
	"bytes"
	"errors"
	"io"
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
	c := newSessionConn(rec, st, newCoalescePool(), time.Second)
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

// tcpPair is a loopback TCP connection: the server's end, wrapped in a
// sessionConn past the upgrade, and the client's, with small buffers so
// that a client that does not read soon fills them.
func tcpPair(t *testing.T) (*sessionConn, *sessionState, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	if err := client.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := server.(*net.TCPConn).SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	st := &sessionState{}
	c := newSessionConn(server, st, newCoalescePool(), time.Second)
	if c.raw == nil {
		t.Fatal("a TCP connection has no RawConn")
	}
	if _, err := c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, make([]byte, len("HTTP/1.1 101 Switching Protocols\r\n\r\n"))); err != nil {
		t.Fatal(err)
	}
	return c, st, client
}

// Frames sent with send(2), held back or not, arrive whole and in order.
func TestSessionConnSendsOverTCP(t *testing.T) {
	c, st, client := tcpPair(t)
	var want []byte
	got := make(chan []byte)
	const n = 200
	for i := range n {
		want = append(want, wsFrame(websocket.TextMessage, "frame "+strconv.Itoa(i))...)
	}
	go func() {
		b := make([]byte, len(want))
		_, _ = io.ReadFull(client, b)
		got <- b
	}()
	for i := range n {
		if i%3 == 0 {
			st.queued.Add(int64(min(3, n-i))) // bursts of three, held back and sent together
		}
		if err := c.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		pumpWrite(t, c, st, wsFrame(websocket.TextMessage, "frame "+strconv.Itoa(i)))
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatal("the client read other bytes than the frames written")
	}
	if st.sent.Load() != n {
		t.Fatalf("sent counts %d frames, want %d", st.sent.Load(), n)
	}
}

// A send that has to wait for room waits until the deadline asked for
// before it, and fails with a timeout.
func TestSessionConnWriteDeadline(t *testing.T) {
	c, st, _ := tcpPair(t)
	big := wsFrame(websocket.BinaryMessage, string(bytes.Repeat([]byte{'z'}, 60000)))
	start := time.Now()
	if err := c.SetWriteDeadline(start.Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var err error
	for i := 0; err == nil && i < 1000; i++ {
		st.queued.Add(1)
		_, err = c.Write(big) // the client never reads
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("write to a client that does not read: %v, want a timeout", err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("timed out after %s, before the deadline", waited)
	}
}
