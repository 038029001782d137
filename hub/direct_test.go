package hub

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestWSFrameHeader(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		payload := strings.Repeat("p", n)
		for _, op := range []byte{websocket.TextMessage, websocket.BinaryMessage} {
			got := append(wsFrameHeader(nil, op, n), payload...)
			if want := wsFrame(op, payload); !bytes.Equal(got, want) {
				t.Errorf("frame of %d bytes, opcode %d: header % x, want % x", n, op, got[:min(len(got), 10)], want[:min(len(want), 10)])
			}
		}
	}
}

// readStream reads n bytes from the client side of a tcpPair.
func readStream(t *testing.T, client io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(client, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// A frame is sent directly only when nothing is queued before it, nothing
// is held back, no fragmented message is half written, no close has begun,
// and the session's last direct send is not too recent; otherwise the
// caller queues it. What was sent arrives in the order it was written.
func TestDirectSendOnlyWhenNothingIsAhead(t *testing.T) {
	c, st, client := tcpPair(t)
	var want []byte
	direct := func(payload string, wantSent bool) {
		t.Helper()
		c.lastDirect = time.Time{}
		if got := c.sendNow(websocket.TextMessage, []byte(payload)); got != wantSent {
			t.Fatalf("sendNow(%q) = %v, want %v", payload, got, wantSent)
		}
		if wantSent {
			want = append(want, wsFrame(websocket.TextMessage, payload)...)
		}
	}
	pump := func(frame []byte) {
		t.Helper()
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		want = append(want, frame...)
	}

	direct("first", true)
	if st.queued.Load() != 1 || st.sent.Load() != 1 {
		t.Fatalf("queued %d, sent %d after a direct send, want 1 and 1", st.queued.Load(), st.sent.Load())
	}
	// The last direct send as recent as can be, whatever time this test
	// loses to the scheduler: a second one is too soon.
	c.lastDirect = time.Now().Add(time.Hour)
	if c.sendNow(websocket.TextMessage, []byte("too soon")) {
		t.Fatal("a second direct send within directGap went out")
	}

	// A frame queued and not yet written is ahead.
	st.queued.Add(1)
	direct("behind a queued frame", false)
	pump(wsFrame(websocket.TextMessage, "queued"))
	direct("after it was written", true)

	// Two queued: the first is held back, and held bytes are ahead.
	st.queued.Add(2)
	pump(wsFrame(websocket.TextMessage, "held"))
	direct("behind held bytes", false)
	pump(wsFrame(websocket.TextMessage, "with the held one"))
	direct("after the flush", true)

	// A fragmented message half written is ahead.
	st.queued.Add(1)
	pump(append([]byte{websocket.TextMessage, 4}, "frag"...)) // FIN clear
	direct("inside a fragmented message", false)
	pump(append([]byte{0x80, 4}, "ment"...)) // final continuation
	direct("after the message", true)

	// A close has begun.
	st.closing.Store(true)
	direct("while closing", false)
	st.closing.Store(false)
	pump([]byte{0x88, 0}) // close frame
	direct("after the close frame", false)

	if got := readStream(t, client, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("the client read\n%q\nwant\n%q", got, want)
	}
	if st.queued.Load() != st.sent.Load() {
		t.Fatalf("queued %d, sent %d: direct sends must keep them equal", st.queued.Load(), st.sent.Load())
	}
}

// fillUntilPartial sends frames of payload directly to a client that does
// not read, one system call taking at most 1,000 bytes, until the socket
// takes only part of one (the connection then holds its write lock to
// finish it), and returns how many frames went out.
func fillUntilPartial(t *testing.T, c *sessionConn, payload []byte) int {
	t.Helper()
	c.sendCap = 1000
	for n := 1; n <= 100; n++ {
		c.lastDirect = time.Time{}
		if !c.sendNow(websocket.BinaryMessage, payload) {
			t.Fatalf("direct send %d did not go out", n)
		}
		if !c.mu.TryLock() {
			return n
		}
		c.mu.Unlock()
	}
	t.Fatal("100 frames went out whole to a client that does not read")
	return 0
}

// A frame the socket takes only part of is finished by the connection
// before anything else is written: the write lock stays taken until then,
// so a later frame (the pump's) waits, and the client reads both whole and
// in order.
func TestDirectSendPartialIsFinishedFirst(t *testing.T) {
	c, st, client := tcpPair(t)
	big := bytes.Repeat([]byte{'b'}, directMax-100)
	sent := fillUntilPartial(t, c, big)
	if c.sendNow(websocket.TextMessage, []byte("x")) {
		t.Fatal("a direct send went out while the rest of another was still being written")
	}
	after := wsFrame(websocket.TextMessage, "after")
	wrote := make(chan error, 1)
	st.queued.Add(1)
	go func() {
		_, err := c.Write(after)
		wrote <- err
	}()
	want := append(bytes.Repeat(wsFrame(websocket.BinaryMessage, string(big)), sent), after...)
	if got := readStream(t, client, len(want)); !bytes.Equal(got, want) {
		t.Fatal("the client read other bytes than the direct frame, then the pump's")
	}
	if err := <-wrote; err != nil {
		t.Fatalf("the pump's write after the partial send: %v", err)
	}
}

// The rest of a partly sent frame that the client does not read within the
// write timeout ends the connection: later writes fail, and the session is
// reported closed for a write timeout.
func TestDirectSendPartialTimesOut(t *testing.T) {
	c, st, _ := tcpPair(t)
	c.writeTimeout = 200 * time.Millisecond
	// A partly sent frame is finished while the client's receive buffer
	// still has room; once both buffers are full, one is not.
	var failed error
	for range 50 {
		fillUntilPartial(t, c, bytes.Repeat([]byte{'b'}, directMax-100))
		deadline := time.Now().Add(10 * time.Second)
		for !c.mu.TryLock() {
			if time.Now().After(deadline) {
				t.Fatal("the rest of the frame was still being written after 10 s")
			}
			time.Sleep(5 * time.Millisecond) // polling the lock, with a deadline
		}
		failed = c.failed
		c.mu.Unlock()
		if failed != nil {
			break
		}
	}
	if failed == nil {
		t.Fatal("50 partly sent frames were all finished for a client that does not read")
	}
	var ne interface{ Timeout() bool }
	if !errors.As(failed, &ne) || !ne.Timeout() {
		t.Fatalf("failed = %v, want a timeout", failed)
	}
	if _, err := c.Write(wsFrame(websocket.TextMessage, "later")); err == nil {
		t.Fatal("a write after the failed direct send succeeded")
	}
	if code, reason := st.closedWith(); code != closeAbnormal || reason != reasonWriteTimeout {
		t.Fatalf("closed with %d %q, want %d %q", code, reason, closeAbnormal, reasonWriteTimeout)
	}
}

// Through a real session, notifications sent directly and queued ones mix
// (bursts take the queue after their first frame; a pause lets the next
// go directly), and broadcasts interleave with them from another
// goroutine: every frame arrives once, and each source's in order.
func TestDirectAndQueuedKeepOrder(t *testing.T) {
	cfg := testConfig()
	cfg.QueueSize = 256
	h, url, _ := startHubWith(t, cfg, newFakeRouter(), discardLogger())
	c := join(t, url, "alice")
	const users, alls, burst = 400, 100, 20
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range alls {
			h.DeliverAll(core("all " + strconv.Itoa(i)))
		}
	}()
	next := map[string]int{"user": 0, "all": 0}
	read := func() {
		t.Helper()
		kind, n, ok := strings.Cut(readFrame(t, c), " ")
		i, err := strconv.Atoi(n)
		if !ok || err != nil || i != next[kind] {
			t.Fatalf("read %s %s, want %s %d next", kind, n, kind, next[kind])
		}
		next[kind]++
	}
	for i := range users {
		if n := h.DeliverUser("alice", core("user "+strconv.Itoa(i))); n != 1 {
			t.Fatalf("DeliverUser = %d", n)
		}
		if i%burst == burst-1 {
			// Read up to this burst's end: the queue drains, and the
			// next burst's first frame can go directly.
			for next["user"] <= i {
				read()
			}
		}
	}
	<-done
	for next["user"] < users || next["all"] < alls {
		read()
	}
	sh := h.index.shard("alice")
	sh.mu.RLock()
	conn := sh.names["alice"][0].st.conn
	sh.mu.RUnlock()
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if conn.lastDirect.IsZero() {
		t.Fatal("no frame was sent directly")
	}
}
