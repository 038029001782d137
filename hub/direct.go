package hub

import (
	"net"
	"time"
)

// Direct sends: a notification to a session with nothing in flight is
// written to its socket by the goroutine delivering it, rather than handed
// to melody's write pump.
//
// Handing a frame to the pump costs a channel send, a wake of the pump's
// goroutine (often on another thread, through the scheduler) and its
// select, on top of the system call itself; for a session that gets one
// notification now and then, which is most of them, that hand-off is most
// of the worker's own cost per delivery. A direct send is one non-blocking
// send(2) and never waits: whenever it cannot be done at once and whole,
// the frame takes the queue as before, so what melody manages (the queue,
// its limit and the slow-client close, pings, the close frame, the write
// deadline) is unchanged.
//
// A frame is sent directly only when all of these hold, checked under the
// connection's write lock:
//
//   - the lock is free (TryLock): the pump or another sender is not writing;
//   - every frame queued to the session has been written (queued == sent),
//     nothing is held back, and no fragmented message is half written, so
//     the frame cannot overtake one queued before it;
//   - no close has begun (closing, a close reason, a close frame written);
//   - the delivery allows it (a broadcast fanned out right after the
//     previous one does not; see broadcastDirectPause);
//   - the session's previous direct send is at least directGap old. A
//     burst to one session takes the queue after its first frame, and the
//     pump then writes the rest together (sessionConn's coalescing), one
//     system call for many frames instead of one each.
//
// If the socket takes part of the frame, the rest must go out before
// anything else: the delivering goroutine hands the write lock to a
// goroutine of the connection that waits for room, under the write
// timeout, and ends; the pump's next write waits for the lock meanwhile,
// as it would wait for room itself. If the rest cannot be written in
// time, the connection is closed (the client has stopped reading).

// A broadcast is sent directly only when the worker is keeping up: when
// at least broadcastDirectPause passed since the previous broadcast's
// fan-out ended. Broadcasts fanned out back to back (the previous one
// still ran when this one came, the machine is saturated) are queued to
// every session instead, so that the write pumps merge a session's frames
// into one system call. Measured at 10,000 sessions: 20 broadcasts at 2/s
// cost 12.5 µs of worker CPU per delivery sent directly against 18.6 µs
// queued; at 10/s on a saturated box, all sent directly, the last session
// had a broadcast after 0.76 s (p50) instead of 0.25 s.
const broadcastDirectPause = 5 * time.Millisecond

// directGap is how recent a session's last direct send may be for the
// next frame to go directly as well; see above.
const directGap = time.Millisecond

// directMax is the largest frame sent directly; a larger one is queued
// (gorilla then writes it in fragments through its write buffer).
const directMax = coalesceMax

// wsFrameHeader appends to b the header of an unmasked, final WebSocket
// frame of opcode op (1 text, 2 binary) carrying n bytes.
func wsFrameHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xffff:
		return append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		for shift := 56; shift >= 0; shift -= 8 {
			b = append(b, byte(n>>shift))
		}
		return b
	}
}

// sendNow writes payload as one frame of opcode op (1 text, 2 binary) if
// it can be sent directly, and reports whether it was; see above. A frame
// sent is counted in queued and in sent, so the two stay equal. Safe on
// any goroutine; it never blocks.
func (c *sessionConn) sendNow(op byte, payload []byte) bool {
	if c.raw == nil || len(payload)+10 > directMax || !c.mu.TryLock() {
		return false
	}
	handedOver := false
	defer func() {
		if !handedOver {
			c.mu.Unlock()
		}
	}()
	st := c.st
	if !c.upgraded || c.failed != nil || c.partial > 0 || c.midMessage || c.closeSent || c.held != nil ||
		st.closing.Load() || st.closed.Load() != nil || st.writeClosed.Load() || st.slow.Load() ||
		st.queued.Load() != st.sent.Load() {
		return false
	}
	now := time.Now()
	if now.Sub(c.lastDirect) < directGap {
		return false
	}
	buf := c.pool.Get().(*[]byte)
	frame := append(wsFrameHeader((*buf)[:0], op, len(payload)), payload...)
	*buf = frame
	c.out, c.outN, c.outErr = frame, 0, nil
	err := c.raw.Control(c.tryFn)
	if err == nil {
		err = c.outErr
	}
	if c.outN == 0 {
		// Nothing went out (no room, or an error the queued write will
		// meet again): the frame takes the queue.
		c.out, c.outErr = nil, nil
		c.release(buf)
		return false
	}
	st.queued.Add(1)
	st.sent.Add(1)
	c.lastDirect = now
	switch {
	case err != nil:
		// Cut off by an error after part of it: the connection is broken.
		c.out, c.outErr = nil, nil
		c.release(buf)
		c.fail(err, reasonLost)
	case c.outN < len(frame):
		handedOver = true
		go c.finish(buf)
	default:
		c.out = nil
		c.release(buf)
	}
	return true
}

// finish writes what is left of a frame sendNow began, waiting for room
// under the write timeout, then releases the write lock sendNow handed
// over. It runs on a goroutine of its own and ends with the write; a
// failure is reported as a write timeout, or as the connection lost.
func (c *sessionConn) finish(buf *[]byte) {
	defer c.mu.Unlock()
	defer c.release(buf)
	err := c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	if err == nil {
		err = c.raw.Write(c.waitFn)
	}
	if err == nil {
		err = c.outErr
	}
	c.out, c.outErr = nil, nil
	// The socket's deadline is left as gorilla last had it: unset, since
	// a send that waits (sessionConn.send) sets it again first.
	_ = c.Conn.SetWriteDeadline(time.Time{})
	c.armed = false
	if err != nil {
		reason := reasonLost
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			reason = reasonWriteTimeout
		}
		c.fail(err, reason)
	}
}

// fail ends the connection after a direct send could not complete: every
// later write reports err, and closing the socket ends the session's read
// loop, so melody closes the session. The offline event reports 1006 with
// reason. Called with the write lock held.
func (c *sessionConn) fail(err error, reason string) {
	c.failed = &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	c.st.noteClose(closeAbnormal, reason)
	_ = c.Conn.Close()
}

// release gives a frame buffer back to the pool.
func (c *sessionConn) release(buf *[]byte) {
	*buf = (*buf)[:0]
	if cap(*buf) <= coalesceMax {
		c.pool.Put(buf)
	}
}
