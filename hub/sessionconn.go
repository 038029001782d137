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
//   - On a TCP connection, bytes go out with a non-blocking send(2) on the
//     socket (RawConn.Control keeps its descriptor open meanwhile), rather
//     than write(2) through the runtime's poller: the same socket call
//     without the file layer's, and without the poller's write lock and
//     readiness reset. Only when the socket's buffer is full does a send
//     wait, through RawConn.Write, on the poller.
//   - Write deadlines are armed only then. gorilla sets the write deadline
//     before every frame, and re-arming the socket's deadline timer each
//     time was 5 % of the worker's CPU in a broadcast. The deadline asked
//     for is recorded, and set on the socket when a send has to wait for
//     room: a send that does not wait cannot time out.
//   - A notification may also be sent directly by the goroutine that
//     delivers it (direct.go), under the same write lock as Write.
//
// gorilla serialises its writes (one goroutine at a time holds its write
// lock), so gorilla's Write and SetWriteDeadline never run concurrently;
// mu serialises them with direct sends. The frames are written in the
// order gorilla gave them.
type sessionConn struct {
	net.Conn
	st   *sessionState
	pool *sync.Pool // newCoalescePool's
	// writeTimeout bounds the wait to finish a frame sent directly.
	writeTimeout time.Duration
	// mu is held by whoever writes to the socket: Write, a direct send
	// (sendNow, with TryLock) or the goroutine finishing one (finish). It
	// guards the fields below, except deadline, which only gorilla's
	// writer touches.
	mu sync.Mutex
	// lastDirect is when the last direct send went out.
	lastDirect time.Time
	// midMessage says the last data frame written was not final: a
	// fragmented message is half written. closeSent says a close frame
	// was written. failed is the error that ended a direct send; every
	// later write reports it.
	midMessage bool
	closeSent  bool
	failed     error
	// sendCap, when not 0, is the most one send(2) may take. Tests set it
	// to have the kernel stop in the middle of a frame, which on loopback
	// it otherwise rarely does.
	sendCap int
	// raw is Conn's RawConn, nil when it has none; tryFn and waitFn are
	// c.trySend and c.sendOut, bound once so that a write allocates
	// nothing, and out, outN and outErr are their argument and results.
	raw    syscall.RawConn
	tryFn  func(fd uintptr)
	waitFn func(fd uintptr) bool
	out    []byte
	outN   int
	outErr error
	// deadline is the write deadline gorilla asked for, set on Conn when
	// a send waits; armed says it is set there.
	deadline time.Time
	armed    bool
	held     *[]byte // the bytes held back, nil when none
	partial  int     // bytes still to come of the frame being written
	// partialData says that frame is a data frame, counted in sent once
	// complete.
	partialData bool
	// upgraded is set by the first Write, which is the upgrade's HTTP
	// response; every later one is a WebSocket frame or part of one.
	upgraded bool
}

func newSessionConn(c net.Conn, st *sessionState, pool *sync.Pool, writeTimeout time.Duration) *sessionConn {
	sc := &sessionConn{Conn: c, st: st, pool: pool, writeTimeout: writeTimeout}
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			sc.raw = raw
			sc.tryFn = sc.trySend
			sc.waitFn = sc.sendOut
		}
	}
	return sc
}

// SetWriteDeadline records t for the writes that follow; see sessionConn.
func (c *sessionConn) SetWriteDeadline(t time.Time) error {
	if c.raw == nil {
		return c.Conn.SetWriteDeadline(t)
	}
	c.deadline = t
	return nil
}

// SetDeadline sets both deadlines.
func (c *sessionConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline, c.armed = t, true
	return c.Conn.SetDeadline(t)
}

// Write writes b, or holds it back to write with the frames after it; see
// sessionConn. A frame held back is reported written: a failure to write
// it later is the connection's failure, which gorilla then meets on that
// later write, as it would meet a peer that never read what was sent.
func (c *sessionConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil {
		return 0, c.failed
	}
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
	if complete && data && !c.midMessage && err == nil {
		c.st.sent.Add(1)
		if v := c.st.v2.Load(); v != nil {
			v.poke()
		}
	}
	return n, err
}

// moreQueued reports whether a frame is queued after the one being
// written: the hub counts a frame in queued just before melody takes it
// (sessionState.queue), and Write counts it in sent once written (or
// held), so two or more unsent frames mean at least one after this one,
// which melody's write pump will write next. queued leads only by frames
// being handed to melody right now, and melody refuses one only to a
// session that is closing, so a frame is held back only when another will
// follow, or the session is ending anyway.
func (c *sessionConn) moreQueued() bool {
	return c.st.queued.Load()-c.st.sent.Load() >= 2
}

// frameEnds tracks the frame b belongs to: it reports whether b ends a
// frame, whether that frame is a data frame (text, binary or
// continuation) and whether it is a close frame; midMessage then says
// whether a data frame left its message unfinished (its FIN bit clear),
// so that sent counts messages, not fragments. b is either a whole
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
	if data {
		c.midMessage = b[0]&0x80 == 0
	}
	if closing {
		c.closeSent = true
	}
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
	defer c.release(held)
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

// send writes all of b to the socket: at once if its buffer has room,
// else waiting for room until the write deadline.
func (c *sessionConn) send(b []byte) (int, error) {
	if c.raw == nil {
		return c.Conn.Write(b)
	}
	c.out, c.outN, c.outErr = b, 0, nil
	defer func() { c.out, c.outErr = nil, nil }()
	err := c.raw.Control(c.tryFn)
	if err == nil && c.outErr == nil && c.outN < len(b) {
		// The buffer is full: wait for room, under the deadline.
		if c.armed || !c.deadline.IsZero() {
			err = c.Conn.SetWriteDeadline(c.deadline)
			c.armed = !c.deadline.IsZero()
		}
		if err == nil {
			err = c.raw.Write(c.waitFn)
		}
	}
	if err == nil {
		err = c.outErr
	}
	if err != nil {
		return c.outN, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	return c.outN, nil
}

// trySend is RawConn.Control's function: it sends what it can of out
// without waiting.
func (c *sessionConn) trySend(fd uintptr) { c.sendOut(fd) }

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
		size := len(c.out) - c.outN
		if c.sendCap > 0 {
			size = min(size, c.sendCap)
		}
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(&c.out[c.outN])), uintptr(size),
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
