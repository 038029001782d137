package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// v2Frame is any frame a protocol v2 client receives (docs/protocol.md
// section 8); the fields a frame type does not have stay zero.
type v2Frame struct {
	Type      string          `json:"type"`
	Name      string          `json:"name"`
	V         int             `json:"v"`
	Seq       *uint64         `json:"seq"`
	Recovered *bool           `json:"recovered"`
	Replayed  int             `json:"replayed"`
	Ping      int64           `json:"ping"`
	Reason    string          `json:"reason"`
	Data      json.RawMessage `json:"data"`
	DataB64   string          `json:"data_b64"`
	Error     string          `json:"error"`
}

// workerPool is the set of workers a client may be sent to, as a load
// balancer offers them: the test adds a replacement before it takes a
// worker out, and takes a worker out when it stops or kills it.
type workerPool struct {
	mu      sync.Mutex
	workers []*worker
	next    int
}

func newWorkerPool(ws []*worker) *workerPool { return &workerPool{workers: slices.Clone(ws)} }

func (p *workerPool) add(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.workers = append(p.workers, w)
}

func (p *workerPool) remove(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.workers = slices.DeleteFunc(p.workers, func(o *worker) bool { return o == w })
}

// pick returns the workers in turn, skipping avoid (the one a client just
// lost) when there is another; nil when the pool is empty.
func (p *workerPool) pick(avoid *worker) *worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range len(p.workers) {
		w := p.workers[p.next%len(p.workers)]
		p.next++
		if w != avoid || len(p.workers) == 1 {
			return w
		}
	}
	return nil
}

// How a v2 client reconnects: at once after 1012, otherwise after a
// full-jitter backoff that doubles from backoffBase up to backoffMax with
// each connection that ended without a welcome; after maxFailures such
// connections in a row it gives up (the test then fails).
const (
	backoffBase = 50 * time.Millisecond
	backoffMax  = time.Second
	maxFailures = 80
)

// v2Client is one logical protocol v2 client of a name: a run of
// WebSocket connections, each resuming from the cursor the previous ones
// left, exactly as protocol.md section 8 tells a client to keep it. It
// records every durable message it is sent, across connections, for the
// test's accounting, and every way a connection ended.
type v2Client struct {
	name        string
	pool        *workerPool
	welcomeWait time.Duration // the worker's join timeout, and a margin
	deadAfter   time.Duration // no frame for this long: the connection is dead

	mu           sync.Mutex
	on           *worker // the current connection's worker; nil between connections
	welcomed     bool    // had its first welcome: from then on it resumes with since
	first        uint64  // the first welcome's seq
	cursor       uint64
	got          []delivery // every durable message, in the order received
	welcomes     []time.Time
	ends         []connEnd
	notRecovered []string // welcomes that said recovered:false
	replayed     int      // messages replayed, over all welcomes
	problems     []string // frames that break the protocol
	events       []string // one line per connection, for a failure report
	gaveUp       error
}

// delivery is one durable message as a client got it.
type delivery struct {
	seq uint64
	msg payload
}

// connEnd is how and when one connection ended: a close code
// ("1012"), "1006" for a connection cut without a close frame, "dial" for
// a worker that could not be reached, "http 503" for a refused upgrade,
// "silent" for no frame within deadAfter.
type connEnd struct {
	at  time.Time
	how string
}

// maxNotes bounds each of a client's lists of text.
const maxNotes = 60

func (c *v2Client) note(list *[]string, format string, args ...any) {
	line := time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...)
	if len(*list) == maxNotes {
		*list = slices.Delete(*list, 0, 1)
	}
	*list = append(*list, line)
}

// run connects to first, then reconnects as protocol.md says, until ctx
// ends or it gives up.
func (c *v2Client) run(ctx context.Context, first *worker) {
	w := first
	failures := 0
	for {
		how, welcomed := c.connection(ctx, w)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.ends = append(c.ends, connEnd{time.Now(), how})
		c.mu.Unlock()
		if welcomed {
			failures = 0
		} else {
			failures++
		}
		if failures > maxFailures {
			c.mu.Lock()
			c.gaveUp = fmt.Errorf("%d connections in a row without a welcome, the last to %s: %s", failures, w.id, how)
			c.mu.Unlock()
			return
		}
		var wait time.Duration
		if how != "1012" || !welcomed {
			wait = rand.N(min(backoffMax, backoffBase<<min(failures, 8)))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait): // the client's backoff
		}
		for {
			if w = c.pool.pick(w); w != nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoffBase): // no worker to go to
			}
		}
	}
}

// connection runs one connection to w; it reports how the connection
// ended and whether it got a welcome.
func (c *v2Client) connection(ctx context.Context, w *worker) (how string, welcomed bool) {
	c.mu.Lock()
	c.on = w
	var since *uint64
	if c.welcomed {
		since = new(c.cursor)
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.on = nil
		if ctx.Err() != nil {
			how = "stopped by the test"
		}
		c.note(&c.events, "  ended: %s (cursor %d)", how, c.cursor)
		c.mu.Unlock()
	}()

	dialer := websocket.Dialer{HandshakeTimeout: 2 * time.Second}
	ws, resp, err := dialer.DialContext(ctx, "ws://"+w.addr+"/", nil)
	if resp != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return "http " + strconv.Itoa(resp.StatusCode), false
		}
		return "dial", false
	}
	defer ws.Close()
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()

	first := `{"name":"` + c.name + `","v":2}`
	if since != nil {
		first = `{"name":"` + c.name + `","v":2,"since":` + strconv.FormatUint(*since, 10) + `}`
	}
	ws.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(first)); err != nil {
		return endOf(err), false
	}

	// Before the welcome only an error frame, then the close, may come.
	ws.SetReadDeadline(time.Now().Add(c.welcomeWait))
	var welcome v2Frame
	for welcome.Type == "" {
		f, err := c.read(ws)
		if err != nil {
			return endOf(err), false
		}
		switch f.Type {
		case "welcome":
			welcome = f
		case "error":
			c.mu.Lock()
			c.note(&c.events, "%s: error frame %q before the welcome", w.id, f.Error)
			c.mu.Unlock()
		default:
			c.problem("%s: frame %+v before the welcome", w.id, f)
			return "protocol", false
		}
	}
	if !c.welcome(w, since, welcome) {
		return "protocol", true
	}
	replay := welcome.Replayed
	for {
		ws.SetReadDeadline(time.Now().Add(c.deadAfter))
		f, err := c.read(ws)
		if err != nil {
			return endOf(err), true
		}
		if !c.frame(w, since, welcome, &replay, f) {
			return "protocol", true
		}
	}
}

// read reads one frame, which protocol v2 says is JSON text.
func (c *v2Client) read(ws *websocket.Conn) (v2Frame, error) {
	var f v2Frame
	typ, data, err := ws.ReadMessage()
	if err != nil {
		return f, err
	}
	if typ != websocket.TextMessage {
		c.problem("binary frame %q", data)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		c.problem("frame %q: %v", data, err)
	}
	return f, nil
}

// welcome takes in the welcome of a connection that sent since.
func (c *v2Client) welcome(w *worker, since *uint64, f v2Frame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	sinceText := "none"
	if since != nil {
		sinceText = strconv.FormatUint(*since, 10)
	}
	if f.Name != c.name || f.V != 2 || f.Seq == nil || f.Recovered == nil || f.Ping <= 0 || f.Replayed < 0 {
		c.problemLocked("%s: welcome %+v", w.id, f)
		return false
	}
	u := *f.Seq
	c.note(&c.events, "%s since=%s: welcome seq=%d replayed=%d recovered=%v %s", w.id, sinceText, u, f.Replayed, *f.Recovered, f.Reason)
	c.welcomes = append(c.welcomes, time.Now())
	if !*f.Recovered {
		c.note(&c.notRecovered, "%s since=%s: recovered:false reason %q (welcome seq %d)", w.id, sinceText, f.Reason, u)
	}
	if since == nil && f.Replayed != 0 {
		c.problemLocked("%s: %d replayed without since", w.id, f.Replayed)
	}
	if since != nil && u < *since && *f.Recovered {
		c.problemLocked("%s: welcome seq %d below since %d, and recovered", w.id, u, *since)
	}
	if !c.welcomed {
		c.welcomed, c.first, c.cursor = true, u, u
	}
	c.replayed += f.Replayed
	if f.Replayed == 0 {
		c.cursor = max(c.cursor, u)
	}
	return true
}

// frame takes in one frame after the welcome; replay counts the replayed
// messages still to come.
func (c *v2Client) frame(w *worker, since *uint64, welcome v2Frame, replay *int, f v2Frame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := *welcome.Seq
	switch f.Type {
	case "ping":
		if f.Seq == nil {
			c.problemLocked("%s: ping without seq", w.id)
			return false
		}
		c.cursor = max(c.cursor, *f.Seq)
	case "msg":
		if f.Seq == nil {
			c.problemLocked("%s: a core message %s; the test publishes only durably", w.id, f.Data)
			return true
		}
		seq := *f.Seq
		var p payload
		if f.DataB64 != "" || json.Unmarshal(f.Data, &p) != nil || (p.To != c.name && p.To != "all") {
			c.problemLocked("%s: seq %d is %s%s, not a message for %s", w.id, seq, f.Data, f.DataB64, c.name)
		}
		if n := len(c.got); n > 0 && seq <= c.got[n-1].seq {
			c.problemLocked("%s: seq %d after seq %d (duplicate or out of order)", w.id, seq, c.got[n-1].seq)
		}
		if since != nil && seq <= *since {
			c.problemLocked("%s: seq %d at or below since %d", w.id, seq, *since)
		}
		if *replay > 0 && seq > u {
			c.problemLocked("%s: replayed seq %d above the welcome's seq %d", w.id, seq, u)
		}
		if *replay == 0 && seq <= u {
			c.problemLocked("%s: live seq %d at or below the welcome's seq %d", w.id, seq, u)
		}
		c.got = append(c.got, delivery{seq, p})
		c.cursor = max(c.cursor, seq)
		if *replay > 0 {
			if *replay--; *replay == 0 {
				// The replay has arrived: the welcome's seq is the cursor.
				c.cursor = max(c.cursor, u)
			}
		}
	default:
		c.problemLocked("%s: unexpected frame %+v", w.id, f)
		return false
	}
	return true
}

func (c *v2Client) problem(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.problemLocked(format, args...)
}

func (c *v2Client) problemLocked(format string, args ...any) {
	c.note(&c.problems, format, args...)
	c.note(&c.events, "PROBLEM: "+format, args...)
}

// endOf names how a connection ended from the error that ended it.
func endOf(err error) string {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return strconv.Itoa(ce.Code)
	case errors.As(err, &ne) && ne.Timeout():
		return "silent"
	default:
		return strconv.Itoa(websocket.CloseAbnormalClosure)
	}
}

// The test reads a client's state while it runs with these.

func (c *v2Client) cursorNow() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursor
}

func (c *v2Client) isWelcomed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcomed
}

func (c *v2Client) worker() *worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on
}

// welcomedAfter returns the first welcome at or after t0.
func (c *v2Client) welcomedAfter(t0 time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, at := range c.welcomes {
		if !at.Before(t0) {
			return at, true
		}
	}
	return time.Time{}, false
}

// endsAfter counts the connections that ended at or after t0, by how.
func (c *v2Client) endsAfter(t0 time.Time, counts map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.ends {
		if !e.at.Before(t0) {
			counts[e.how]++
		}
	}
}

// formatCounts writes counts as "1012×3 1013×1", most frequent first.
func formatCounts(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, counts[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}
