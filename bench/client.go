package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// childReady is the line a client process prints once its connections are
// all welcomed (or have failed).
type childReady struct {
	Ready  bool   `json:"ready"`
	Conns  int    `json:"conns"`
	Failed int    `json:"failed"`
	Err    string `json:"err,omitempty"`
}

// childCount is the line a client process prints for "count": how many
// notifications it has received so far.
type childCount struct {
	Received   int64 `json:"received"`
	Duplicates int64 `json:"duplicates"`
}

// childResult is the line a client process prints after "stop".
type childResult struct {
	Received    int64           `json:"received"`   // frames after the welcome
	Duplicates  int64           `json:"duplicates"` // sequence numbers seen before on that connection
	Reordered   int64           `json:"reordered"`  // sequence numbers that skipped ahead
	Malformed   int64           `json:"malformed"`
	Closed      int64           `json:"closed"`      // connections the worker closed before stop
	Durable     int64           `json:"durable"`     // v2: frames with a stream sequence
	StreamDups  int64           `json:"stream_dups"` // v2: stream sequences not above the last one on that connection
	Pings       int64           `json:"pings"`       // v2: app pings; centrifugo: server pings answered
	Frames      int64           `json:"frames"`      // WebSocket messages read after the welcome or connect reply
	Pushes      int64           `json:"pushes"`      // centrifugo: pushes (several may share a frame)
	Replies     int64           `json:"replies"`     // centrifugo: replies to commands after the connect
	Hist        map[int]int64   `json:"hist"`
	MaxUS       int64           `json:"max_us"`
	BcastMaxUS  map[int64]int64 `json:"bcast_max_us"`  // broadcast seq -> slowest receipt here
	SecondMaxUS map[int64]int64 `json:"second_max_us"` // Unix second of the intended send time -> slowest receipt
	CPU         time.Duration   `json:"cpu"`
	Wall        time.Duration   `json:"wall"`
}

// addCounts adds the counters of r, one more client process's, to res.
func (res *childResult) addCounts(r childResult) {
	res.Received += r.Received
	res.Duplicates += r.Duplicates
	res.Reordered += r.Reordered
	res.Malformed += r.Malformed
	res.Closed += r.Closed
	res.Durable += r.Durable
	res.StreamDups += r.StreamDups
	res.Pings += r.Pings
	res.Frames += r.Frames
	res.Pushes += r.Pushes
}

// runClient is the "client" subcommand, started by a coordinator: it opens
// -count connections named u<first> ... and reads them until told "stop"
// on stdin or until -max-run passes.
func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	url := fs.String("url", "ws://127.0.0.1:18888/", "worker WebSocket URL")
	first := fs.Int("first", 0, "number of the first name (u<first>)")
	count := fs.Int("count", 1000, "connections to open")
	srcIPs := fs.Int("src-ips", 50, "spread source addresses over 127.0.0.10 ... 127.0.0.(10+n-1)")
	dialers := fs.Int("dialers", 32, "connections opened in parallel")
	broadcasts := fs.Int("broadcasts", 0, "broadcast sequence numbers to track (1 ... n)")
	maxRun := fs.Duration("max-run", 10*time.Minute, "exit after this long whatever happens")
	slowEvery := fs.Int("slow-every", 0, "make every n-th connection a slow reader (0: none)")
	pause := fs.Duration("pause", 6*time.Second, "slow readers stop reading this long after their welcome")
	v2 := fs.Bool("v2", false, `identify with protocol v2 ({"name":...,"v":2}) and read envelopes`)
	batch := fs.Bool("sched-batch", false, "run this process's threads under SCHED_BATCH, so that its wake-ups do not preempt the server (see yieldToServer)")
	proto := fs.String("proto", "notify", "server protocol: notify (first message {\"name\":...}) or centrifugo (JSON protocol, connect with a JWT)")
	secret := fs.String("secret", "", "centrifugo: HMAC secret of the connection JWTs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *batch {
		if err := yieldToServer(); err != nil {
			return err
		}
	}
	if *proto != "notify" && *proto != "centrifugo" {
		return fmt.Errorf("-proto %q: want notify or centrifugo", *proto)
	}
	if *proto == "centrifugo" && *secret == "" {
		return errors.New("-proto centrifugo needs -secret")
	}
	start := time.Now()
	// Connections are long-lived and reads allocate nothing once running;
	// collect rarely so the client's GC does not add to measured latency.
	debug.SetGCPercent(400)
	ctx, cancel := context.WithTimeout(context.Background(), *maxRun)
	defer cancel()

	out := json.NewEncoder(os.Stdout)
	st := &clientStats{bcast: make([]atomic.Int64, *broadcasts+1), v2: *v2, centrifugo: *proto == "centrifugo"}
	conns := make([]*websocket.Conn, *count)
	var failed atomic.Int64
	var firstErr atomic.Value
	next := make(chan int)
	var dialWG sync.WaitGroup
	for range *dialers {
		dialWG.Add(1)
		go func() {
			defer dialWG.Done()
			for i := range next {
				n := *first + i
				slow := *slowEvery > 0 && n%*slowEvery == 0
				var c *websocket.Conn
				var err error
				if st.centrifugo {
					c, err = dialCentrifugo(ctx, *url, n, *srcIPs, []byte(*secret))
				} else {
					c, err = dialOne(ctx, *url, n, *srcIPs, slow, *v2)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := range *count {
		next <- i
	}
	close(next)
	dialWG.Wait()
	ready := childReady{Ready: true, Conns: *count - int(failed.Load()), Failed: int(failed.Load())}
	if e, ok := firstErr.Load().(string); ok {
		ready.Err = e
	}
	if err := out.Encode(ready); err != nil {
		return err
	}

	var readWG sync.WaitGroup
	for i, c := range conns {
		if c == nil {
			continue
		}
		slow := *slowEvery > 0 && (*first+i)%*slowEvery == 0
		readWG.Add(1)
		go func() {
			defer readWG.Done()
			if slow {
				// A stalled reader: its socket buffers fill, then the
				// worker's queue for it, then the worker drops.
				select {
				case <-time.After(*pause):
				case <-ctx.Done():
				}
			}
			if st.centrifugo {
				st.readCentrifugo(c)
			} else {
				st.read(c)
			}
		}()
	}

	// stdin carries the coordinator's requests: "count" (answered with a
	// childCount line, for the drain) and "stop". Only this goroutine
	// writes to stdout until stop is closed.
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			switch sc.Text() {
			case "stop":
				return
			case "count":
				if err := out.Encode(childCount{Received: st.received.Load(), Duplicates: st.duplicates.Load()}); err != nil {
					return
				}
			}
		}
	}()
	select {
	case <-stop:
	case <-ctx.Done():
	}
	// Snapshot before closing, so the close does not count as a failure.
	res := st.result()
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
	readWG.Wait()
	res.CPU, _ = cpuTime("self")
	res.Wall = time.Since(start)
	return out.Encode(res)
}

func dialOne(ctx context.Context, url string, n, srcIPs int, slow, v2 bool) (*websocket.Conn, error) {
	c, err := dialWS(ctx, url, n, srcIPs, slow)
	if err != nil {
		return nil, err
	}
	name := "u" + strconv.Itoa(n)
	first := `{"name":"` + name + `"}`
	if v2 {
		first = `{"name":"` + name + `","v":2}`
	}
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(first)); err != nil {
		c.Close()
		return nil, fmt.Errorf("identify %s: %w", name, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("welcome %s: %w", name, err)
	}
	if !bytes.HasPrefix(msg, []byte(`{"type":"welcome"`)) {
		c.Close()
		return nil, fmt.Errorf("welcome %s: got %q", name, msg)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// dialWS opens a WebSocket from source address 127.0.0.(10 + n%srcIPs),
// so that many connections do not run out of ephemeral ports.
func dialWS(ctx context.Context, url string, n, srcIPs int, slow bool) (*websocket.Conn, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+n%srcIPs))}
	nd := &net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	if slow {
		// A small receive buffer, set before connecting so the window
		// stays small, makes the backlog reach the worker's queue soon.
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return errors.Join(err, serr)
		}
	}
	d := websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  256,
	}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, _, err := d.DialContext(dctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial from %s: %w", src.IP, err)
	}
	return c, nil
}

type clientStats struct {
	v2         bool // frames are protocol v2 envelopes
	centrifugo bool // frames are Centrifugo JSON protocol messages
	hist       histogram
	received   atomic.Int64
	duplicates atomic.Int64
	reordered  atomic.Int64
	malformed  atomic.Int64
	closed     atomic.Int64
	durable    atomic.Int64
	streamDups atomic.Int64
	pings      atomic.Int64
	frames     atomic.Int64
	pushes     atomic.Int64
	replies    atomic.Int64
	bcast      []atomic.Int64 // slowest receipt of broadcast i, µs
	// perSecond[t%len] holds the slowest receipt, µs, of the messages
	// meant to be sent in Unix second t; a timeline of the tail.
	perSecond [secondSlots]atomic.Int64
}

const secondSlots = 3600

func storeMax(v *atomic.Int64, x int64) {
	for {
		m := v.Load()
		if x <= m || v.CompareAndSwap(m, x) {
			return
		}
	}
}

// read counts the frames of one connection until it fails. Payloads carry
// the sequence number and the intended send time (see payload).
func (st *clientStats) read(c *websocket.Conn) {
	var last int64
	var lastStream uint64
	buf := make([]byte, 0, 256)
	for {
		msg, err := readFrame(c, buf[:0])
		now := time.Now()
		if err != nil {
			st.closed.Add(1)
			return
		}
		buf = msg
		st.frames.Add(1)
		if st.v2 {
			if bytes.HasPrefix(msg, []byte(`{"type":"ping"`)) {
				st.pings.Add(1)
				continue
			}
			data, streamSeq, ok := parseEnvelope(msg)
			if !ok {
				st.malformed.Add(1)
				continue
			}
			if streamSeq > 0 {
				st.durable.Add(1)
				if streamSeq <= lastStream {
					st.streamDups.Add(1)
				}
				lastStream = streamSeq
			}
			msg = data
		}
		st.account(msg, now, &last)
	}
}

// account counts one payload received at now on a connection whose last
// sequence number so far is *last.
func (st *clientStats) account(msg []byte, now time.Time, last *int64) {
	kind, seq, sent, ok := parsePayload(msg)
	if !ok {
		st.malformed.Add(1)
		return
	}
	st.received.Add(1)
	switch {
	case seq <= *last:
		st.duplicates.Add(1)
		return
	case seq > *last+1:
		st.reordered.Add(1)
	}
	*last = seq
	lat := now.Sub(time.Unix(0, sent))
	st.hist.record(lat)
	us := lat.Microseconds()
	storeMax(&st.perSecond[(sent/1e9)%secondSlots], max(us, 1))
	if kind == 'a' && seq < int64(len(st.bcast)) {
		storeMax(&st.bcast[seq], us)
	}
}

// readCentrifugo is read for Centrifugo's JSON protocol: each frame holds
// one or more messages; publications are counted like notify-worker's
// frames, and the server's pings are answered (Centrifugo closes a
// connection that does not answer within its pong timeout). Personal and
// broadcast publications carry their own sequences (kind 'u' and 'a'), so
// each has its own last.
func (st *clientStats) readCentrifugo(c *websocket.Conn) {
	var lastUser, lastAll int64
	buf := make([]byte, 0, 512)
	for {
		frame, err := readFrame(c, buf[:0])
		now := time.Now()
		if err != nil {
			st.closed.Add(1)
			return
		}
		buf = frame
		st.frames.Add(1)
		for msg, rest := nextCFMessage(frame); msg != nil; msg, rest = nextCFMessage(rest) {
			kind, data := classifyCF(msg)
			switch kind {
			case cfPing:
				st.pings.Add(1)
				_ = c.SetWriteDeadline(now.Add(5 * time.Second))
				if err := c.WriteMessage(websocket.TextMessage, cfPingMsg); err != nil {
					st.closed.Add(1)
					return
				}
			case cfReply:
				st.replies.Add(1)
			case cfOtherPush:
				st.pushes.Add(1)
			case cfPublication:
				st.pushes.Add(1)
				if len(data) > 6 && data[6] == 'a' {
					st.account(data, now, &lastAll)
				} else {
					st.account(data, now, &lastUser)
				}
			default:
				st.malformed.Add(1)
			}
		}
	}
}

// readFrame reads the next message into buf, growing it if needed, so
// that a client's steady state allocates nothing and its GC stays out of
// the latency figures.
func readFrame(c *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := c.NextReader()
	if err != nil {
		return buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (st *clientStats) result() childResult {
	r := childResult{
		Received:   st.received.Load(),
		Duplicates: st.duplicates.Load(),
		Reordered:  st.reordered.Load(),
		Malformed:  st.malformed.Load(),
		Closed:     st.closed.Load(),
		Durable:    st.durable.Load(),
		StreamDups: st.streamDups.Load(),
		Pings:      st.pings.Load(),
		Frames:     st.frames.Load(),
		Pushes:     st.pushes.Load(),
		Replies:    st.replies.Load(),
		Hist:       st.hist.sparse(),
		MaxUS:      st.hist.max.Load(),
		BcastMaxUS: make(map[int64]int64),
	}
	r.SecondMaxUS = make(map[int64]int64)
	now := time.Now().Unix()
	for t := now - secondSlots + 1; t <= now; t++ {
		if v := st.perSecond[t%secondSlots].Load(); v > 0 {
			r.SecondMaxUS[t] = v
		}
	}
	for i := range st.bcast {
		if v := st.bcast[i].Load(); v > 0 {
			r.BcastMaxUS[int64(i)] = v
		}
	}
	return r
}

// appendPayload builds a notification: {"k":"u","s":seq,"t":ns,"p":"..."},
// kind 'u' for targeted and 'a' for broadcast, ns the intended send time in
// Unix nanoseconds, padded with 'x' to at least size bytes.
func appendPayload(b []byte, kind byte, seq, intended int64, size int) []byte {
	b = append(b, `{"k":"`...)
	b = append(b, kind)
	b = append(b, `","s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, intended, 10)
	b = append(b, `,"p":"`...)
	for pad := size - len(b) - 2; pad > 0; pad-- {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// parsePayload reads what appendPayload wrote.
func parsePayload(msg []byte) (kind byte, seq, intended int64, ok bool) {
	if len(msg) < 8 || !bytes.HasPrefix(msg, []byte(`{"k":"`)) {
		return 0, 0, 0, false
	}
	kind = msg[6]
	seq, rest, ok1 := intAfter(msg, `"s":`)
	intended, _, ok2 := intAfter(rest, `"t":`)
	return kind, seq, intended, ok1 && ok2
}

func intAfter(b []byte, key string) (int64, []byte, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, b, false
	}
	b = b[i+len(key):]
	var v int64
	j := 0
	for ; j < len(b) && '0' <= b[j] && b[j] <= '9'; j++ {
		v = v*10 + int64(b[j]-'0')
	}
	return v, b[j:], j > 0
}
