package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/notify-worker/notify-worker/subjects"
)

// What the durable modes (replay, resume, durable) share: the producer's
// JetStream side, filling the stream, one protocol v2 resume as a client
// sees it (docs/protocol.md, section 8), and parsing its frames.

// connectJetStream connects the producer and waits until the worker has
// created its stream (it does so in the background once it is connected).
func connectJetStream(ctx context.Context, o options) (*nats.Conn, jetstream.JetStream, jetstream.Stream, error) {
	nc, err := nats.Connect(o.natsURL, nats.Name("bench-producer"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect to nats: %w", err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	s, err := waitForStream(ctx, js, o.stream)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	return nc, js, s, nil
}

// waitForStream waits at most 30s for the stream to exist.
func waitForStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		s, err := js.Stream(wctx, name)
		if err == nil {
			return s, nil
		}
		if wctx.Err() != nil {
			return nil, fmt.Errorf("stream %s not there after 30s (is the worker's JetStream on?): %w", name, err)
		}
		sleepCtx(wctx, 100*time.Millisecond)
	}
}

// fillStream stores n durable messages, the i-th on subjectOf(i) (a stored
// subject such as notify.user.u1: durableSubject is applied here), with
// PublishAsync in batches, and returns the stream sequence of each.
func fillStream(ctx context.Context, js jetstream.JetStream, n, size int, subjectOf func(i int) string) ([]uint64, error) {
	const batch = 1000
	seqs := make([]uint64, 0, n)
	futures := make([]jetstream.PubAckFuture, 0, batch)
	for first := 0; first < n; first += batch {
		futures = futures[:0]
		for i := first; i < min(first+batch, n); i++ {
			payload := appendPayload(nil, 'f', int64(i+1), time.Now().UnixNano(), size)
			f, err := js.PublishAsync(durableSubject(subjectOf(i)), payload)
			if err != nil {
				return seqs, fmt.Errorf("publish %d: %w", i, err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				seqs = append(seqs, ack.Sequence)
			case err := <-f.Err():
				return seqs, fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
			case <-ctx.Done():
				return seqs, ctx.Err()
			}
		}
	}
	return seqs, nil
}

// durableSubject is where a producer publishes durably what the stream
// stores as subject (notify.user.u1 -> durable.notify.user.u1).
func durableSubject(subject string) string { return subjects.DurablePrefix + "." + subject }

// welcomeFrame is the v2 welcome.
type welcomeFrame struct {
	Type      string `json:"type"`
	Name      string `json:"name"`
	V         int    `json:"v"`
	Seq       uint64 `json:"seq"`
	Recovered *bool  `json:"recovered"`
	Reason    string `json:"reason"`
	Replayed  int    `json:"replayed"`
	Ping      int64  `json:"ping"`
}

// resumeResult is one resume as the client saw it.
type resumeResult struct {
	dial      time.Duration // TCP connect and WebSocket upgrade
	welcome   time.Duration // first message sent -> welcome read
	last      time.Duration // first message sent -> last replayed frame read (the welcome when nothing is replayed)
	w         welcomeFrame
	firstSeq  uint64 // of the replayed frames
	lastSeq   uint64
	replayed  int   // frames read
	closeCode int   // the worker closed the connection with this code (0: it did not)
	err       error // anything else that went wrong, including a replay that broke the contract
}

// replayTime is welcome -> last replayed frame.
func (r resumeResult) replayTime() time.Duration { return r.last - r.welcome }

// resumeOnce connects as name, resumes from since (negative: no since),
// reads the welcome and the replay that it announces, checks the replay
// against the contract (every seq in (since, U], increasing), and closes.
func resumeOnce(ctx context.Context, url string, n, srcIPs int, name string, since int64) resumeResult {
	var r resumeResult
	t0 := time.Now()
	c, err := dialWS(ctx, url, n, srcIPs, false)
	r.dial = time.Since(t0)
	if err != nil {
		r.err = err
		return r
	}
	defer func() {
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.Close()
	}()
	first := `{"name":"` + name + `","v":2}`
	if since >= 0 {
		first = `{"name":"` + name + `","v":2,"since":` + strconv.FormatInt(since, 10) + `}`
	}
	deadline := time.Now().Add(30 * time.Second)
	_ = c.SetWriteDeadline(deadline)
	_ = c.SetReadDeadline(deadline)
	t1 := time.Now()
	if err := c.WriteMessage(websocket.TextMessage, []byte(first)); err != nil {
		r.err = fmt.Errorf("first message: %w", err)
		return r
	}
	_, msg, err := c.ReadMessage()
	if err != nil {
		r.closeCode, r.err = closeCodeOf(err)
		return r
	}
	if bytes.HasPrefix(msg, []byte(`{"type":"error"`)) {
		// A refused resume: the error frame, then the close (1013).
		_, _, err := c.ReadMessage()
		r.closeCode, _ = closeCodeOf(err)
		r.err = fmt.Errorf("refused: %s", msg)
		return r
	}
	r.welcome = time.Since(t1)
	r.last = r.welcome
	if err := json.Unmarshal(msg, &r.w); err != nil || r.w.Type != "welcome" || r.w.Recovered == nil {
		r.err = fmt.Errorf("welcome: got %.200q", msg)
		return r
	}
	if since >= 0 && r.w.Seq < uint64(since) && *r.w.Recovered {
		r.err = fmt.Errorf("welcome seq %d below since %d, recovered", r.w.Seq, since)
		return r
	}
	prev := uint64(max(since, 0))
	buf := make([]byte, 0, 512)
	for r.replayed < r.w.Replayed {
		b, err := readFrame(c, buf[:0])
		if err != nil {
			r.closeCode, r.err = closeCodeOf(err)
			r.err = fmt.Errorf("after %d of %d replayed frames: %w", r.replayed, r.w.Replayed, r.err)
			return r
		}
		buf = b
		if bytes.HasPrefix(b, []byte(`{"type":"ping"`)) {
			continue
		}
		_, seq, ok := parseEnvelope(b)
		switch {
		case !ok:
			r.err = fmt.Errorf("replayed frame %d: %.200q", r.replayed+1, b)
			return r
		case seq <= prev || seq > r.w.Seq:
			r.err = fmt.Errorf("replayed frame %d: seq %d after %d, welcome seq %d", r.replayed+1, seq, prev, r.w.Seq)
			return r
		}
		if r.replayed == 0 {
			r.firstSeq = seq
		}
		prev, r.lastSeq = seq, seq
		r.replayed++
	}
	r.last = time.Since(t1)
	return r
}

// closeCodeOf splits a read error into the close code the worker sent, if
// any, and an error.
func closeCodeOf(err error) (int, error) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, fmt.Errorf("closed by the worker: %d %s", ce.Code, ce.Text)
	}
	return 0, err
}

// parseEnvelope reads a v2 message frame,
// {"type":"msg","seq":N,"data":<payload>}, and returns the payload and the
// stream sequence (0 for a core message, which has none). A frame with
// data_b64 is not one of ours (bench payloads are JSON), so it is refused.
func parseEnvelope(msg []byte) (data []byte, seq uint64, ok bool) {
	const head = `{"type":"msg"`
	if !bytes.HasPrefix(msg, []byte(head)) || msg[len(msg)-1] != '}' {
		return nil, 0, false
	}
	i := bytes.Index(msg, []byte(`"data":`))
	if i < 0 {
		return nil, 0, false
	}
	if s, _, found := intAfter(msg[:i], `"seq":`); found {
		if s <= 0 {
			return nil, 0, false
		}
		seq = uint64(s)
	}
	return msg[i+len(`"data":`) : len(msg)-1], seq, true
}

// scrapeFamilies sums every metric family of the worker whose name
// contains one of the words, by family, so that a mode can report the
// counters of a part it does not know the exact names of (resumes,
// replays, feed losses).
func scrapeFamilies(client *http.Client, url string, words ...string) map[string]float64 {
	out := map[string]float64{}
	resp, err := client.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return out
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		// name{labels} value, or name value; label values may hold spaces.
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.LastIndexByte(line, '}'); strings.Contains(name, "{") && i > 0 {
			name, rest = line[:i+1], line[i+1:]
		}
		family, labels, _ := strings.Cut(name, "{")
		if strings.HasSuffix(family, "_bucket") || strings.HasSuffix(family, "_sum") || !containsAny(family, words) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		key := family
		if labels != "" {
			key += "{" + labels
		}
		out[key] += v
	}
	return out
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// metricDeltas formats after - before for every key that moved.
func metricDeltas(before, after map[string]float64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if d := after[k] - before[k]; d != 0 {
			out = append(out, fmt.Sprintf("%s %+g", k, d))
		}
	}
	if len(out) == 0 {
		return "none moved"
	}
	return strings.Join(out, ", ")
}
