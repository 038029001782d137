package hub

import (
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// coalesceMax bounds the bytes a session's connection holds back to write
// together: a few typical TCP segments, and at most one write's worth of
// a replay window of small frames.
const coalesceMax = 16 << 10

// newCoalescePool returns the pool of buffers a hub's connections hold
// frames back in. One is taken when a session has more than one frame
// queued and given back by the write that sends them, so only sessions in
// the middle of a burst hold one.
func newCoalescePool() *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}
}

// sessionConn is the net.Conn a detached session's gorilla connection
// writes to. It changes how frames are written, and nothing about reading:
//
//   - It counts the data frames written in sessionState.sent, which paces
//     a v2 replay (and wakes it), on the write pump that wrote them.
//   - Frames are coalesced. While the session has another frame queued
//     (sessionState.queued - sent says so), a frame is held back and
//     written with the next, so that a replay or a burst of notifications
//     to one session costs one system call per up to coalesceMax bytes
//     instead of one per frame. A close frame, and any frame written while
//     nothing else is queued, goes out at once with whatever was held.
//   - Write deadlines are coarse. gorilla sets the write deadline before
//     every frame, and re-arming the socket's deadline timer each time was
//     5 % of the worker's CPU in a broadcast. The deadline is re-armed only
//     when the one asked for is later than the armed one, and then to
//     slack past it, so a write times out between the deadline asked for
//     and slack after it.
//   - On a TCP connection, bytes go out with send(2) through the socket's
//     RawConn rather than write(2): the same socket call without the file
//     layer's, with the runtime's poller and deadline as for a Write.
//
// gorilla serialises its writes (one goroutine at a time holds its write
// lock), so Write and SetWriteDeadline never run concurrently; the frames
// are written in the order gorilla gave them.
type sessionConn struct {
	net.Conn
	st   *sessionState
	pool *sync.Pool // newCoalescePool's
	// raw is Conn's RawConn, nil when it has none; sendOut is c.sendOut,
	// bound once so that a write allocates nothing, and out, outN and
	// outErr are its argument and results.
	raw     syscall.RawConn
	sendFn  func(fd uintptr) bool
	out     []byte
	outN    int
	outErr  error
	slack   time.Duration // how much later than asked a write deadline may be armed
	armed   int64         // the write deadline set on Conn, Unix nanoseconds; 0: none
	held    *[]byte       // the bytes held back, nil when none
	partial int           // bytes still to come of the frame being written
	// partialData says that frame is a data frame, counted in sent once
	// complete.
	partialData bool
	// upgraded is set by the first Write, which is the upgrade's HTTP
	// response; every later one is a WebSocket frame or part of one.
	upgraded bool
}

func newSessionConn(c net.Conn, st *sessionState, pool *sync.Pool, writeTimeout time.Duration) *sessionConn {
	sc := &sessionConn{Conn: c, st: st, pool: pool, slack: writeTimeout / 4}
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			sc.raw = raw
			sc.sendFn = sc.sendOut
		}
	}
	return sc
}

// SetWriteDeadline arms t, or a deadline at most slack after it; see
// sessionConn.
func (c *sessionConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		c.armed = 0
		return c.Conn.SetWriteDeadline(t)
	}
	want := t.UnixNano()
	if c.armed != 0 && want <= c.armed && c.armed-want <= int64(c.slack) {
		return nil
	}
	c.armed = want + int64(c.slack)
	return c.Conn.SetWriteDeadline(time.Unix(0, c.armed))
}

// SetDeadline sets both deadlines, exactly, and remembers the write one.
func (c *sessionConn) SetDeadline(t time.Time) error {
	c.armed = 0
	if !t.IsZero() {
		c.armed = t.UnixNano()
	}
	return c.Conn.SetDeadline(t)
}

// Write writes b, or holds it back to write with the frames after it; see
// sessionConn. A frame held back is reported written: a failure to write
// it later is the connection's failure, which gorilla then meets on that
// later write, as it would meet a peer that never read what was sent.
func (c *sessionConn) Write(b []byte) (int, error) {
	if !c.upgraded {
		c.upgraded = true
		return c.send(b)
	}
	complete, data, closing := c.frameEnds(b)
	var n int
	var err error
	switch {
	case !closing && c.fits(len(b)) && (!complete || c.moreQueued()):
		c.hold(b)
		n = len(b)
	case c.held == nil:
		n, err = c.send(b)
	default:
		n, err = c.flush(b)
	}
	if complete && data && err == nil {
		c.st.sent.Add(1)
		if v := c.st.v2.Load(); v != nil {
			v.poke()
		}
	}
	return n, err
}

// moreQueued reports whether a frame is queued after the one being
// written: the hub counts a frame in queued once melody has taken it, and
// Write counts it in sent once written (or held), so two or more unsent
// frames mean at least one after this one, which melody's write pump will
// write next. Both counts can lag, never lead, so a frame is held back
// only when another will follow.
func (c *sessionConn) moreQueued() bool {
	return c.st.queued.Load()-c.st.sent.Load() >= 2
}

// frameEnds tracks the frame b belongs to: it reports whether b ends a
// frame, whether that frame is a data frame (text, binary or
// continuation) and whether it is a close frame. b is either a whole
// frame, or the first part of one (its header says more is coming), or
// the rest of the frame whose first part came before.
func (c *sessionConn) frameEnds(b []byte) (complete, data, closing bool) {
	if c.partial > 0 {
		c.partial = max(0, c.partial-len(b))
		return c.partial == 0, c.partialData, false
	}
	if len(b) < 2 {
		return true, false, false
	}
	op := b[0] & 0x0f
	data, closing = op <= 0x2, op == 0x8
	size, header := int(b[1]&0x7f), 2
	switch size {
	case 126:
		if len(b) < 4 {
			return true, data, closing
		}
		size, header = int(b[2])<<8|int(b[3]), 4
	case 127:
		if len(b) < 10 {
			return true, data, closing
		}
		size, header = 0, 10
		for _, x := range b[2:10] {
			size = size<<8 | int(x)
		}
	}
	if size >= 0 && header+size > len(b) {
		c.partial, c.partialData = header+size-len(b), data
		return false, data, closing
	}
	return true, data, closing
}

func (c *sessionConn) fits(n int) bool {
	held := 0
	if c.held != nil {
		held = len(*c.held)
	}
	return held+n <= coalesceMax
}

func (c *sessionConn) hold(b []byte) {
	if c.held == nil {
		c.held = c.pool.Get().(*[]byte)
	}
	*c.held = append(*c.held, b...)
}

// flush writes what is held and then b, in one system call when they fit
// in the held buffer, and gives the buffer back.
func (c *sessionConn) flush(b []byte) (int, error) {
	held := c.held
	c.held = nil
	defer func() {
		*held = (*held)[:0]
		if cap(*held) <= coalesceMax {
			c.pool.Put(held)
		}
	}()
	if len(*held)+len(b) <= cap(*held) {
		*held = append(*held, b...)
		if _, err := c.send(*held); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	if _, err := c.send(*held); err != nil {
		return 0, err
	}
	return c.send(b)
}

// send writes all of b to the socket.
func (c *sessionConn) send(b []byte) (int, error) {
	if c.raw == nil {
		return c.Conn.Write(b)
	}
	c.out, c.outN, c.outErr = b, 0, nil
	err := c.raw.Write(c.sendFn)
	n := c.outN
	if err == nil {
		err = c.outErr
	}
	c.out, c.outErr = nil, nil
	if err != nil {
		return n, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	return n, nil
}

// sendOut is RawConn.Write's function: it sends what is left of out and
// reports false, to wait until the socket is writable, when its buffer is
// full. The socket is non-blocking, so send(2) returns within the time it
// takes to queue the bytes; as a raw system call it keeps the goroutine's
// P meanwhile. As an ordinary one, a send that the kernel preempted on its
// way out (to run the reader it woke) lost the P to the runtime's monitor
// and had to get one back: measured 17.1-17.5 against 18.0-19.1 µs of
// worker CPU per broadcast delivery at 10,000 sessions.
func (c *sessionConn) sendOut(fd uintptr) bool {
	for c.outN < len(c.out) {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(&c.out[c.outN])), uintptr(len(c.out)-c.outN),
			syscall.MSG_NOSIGNAL, 0, 0)
		switch errno {
		case 0:
			c.outN += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.outErr = errno
			return true
		}
	}
	return true
}
