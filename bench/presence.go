package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/notify-worker/notify-worker/presence"
	"github.com/notify-worker/notify-worker/subjects"
)

// runPresence is the "presence" subcommand: what presence requests cost
// (docs/protocol.md, section 9). It opens -names idle sessions, names
// u0..u<names-1>, spread round robin over the workers at -ws (half v1,
// half v2), then times -single presence requests to one name each (the
// name's only worker answers: the latency is the first reply's) and -bulk
// bulk requests of -bulk-names names (the latency is until every worker
// answered), one at a time, and reads the workers' CPU (-pids) around each
// phase.
func runPresence(args []string) error {
	fs := flag.NewFlagSet("presence", flag.ContinueOnError)
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS server the workers use")
	wsList := fs.String("ws", "", "the workers' WebSocket URLs, comma-separated (ws://127.0.0.1:8080/,...)")
	pidList := fs.String("pids", "", "the workers' process ids, comma-separated, for their CPU time")
	names := fs.Int("names", 10000, "idle sessions, one name each")
	single := fs.Int("single", 5000, "single-name presence requests")
	bulk := fs.Int("bulk", 500, "bulk presence requests")
	bulkNames := fs.Int("bulk-names", subjects.MaxPresenceNames, "names per bulk request")
	prefix := fs.String("prefix", subjects.DefaultPrefix, "subject prefix")
	maxRun := fs.Duration("max-run", 10*time.Minute, "stop after this long whatever happens")
	if err := fs.Parse(args); err != nil {
		return err
	}
	urls := strings.Split(*wsList, ",")
	if *wsList == "" {
		return fmt.Errorf("-ws: give the workers' WebSocket URLs")
	}
	var pids []string
	if *pidList != "" {
		pids = strings.Split(*pidList, ",")
	}
	if *bulkNames < 1 || *bulkNames > subjects.MaxPresenceNames || *bulkNames > *names {
		return fmt.Errorf("-bulk-names: 1 to %d, and at most -names", subjects.MaxPresenceNames)
	}
	scheme, err := subjects.New(*prefix)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *maxRun)
	defer cancel()

	connectStart := time.Now()
	conns, err := openSessions(ctx, urls, *names)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	if err != nil {
		return err
	}
	fmt.Printf("sessions: %d idle (half v1, half v2) over %d workers, opened in %s\n", len(conns), len(urls), time.Since(connectStart).Round(time.Millisecond))

	nc, err := nats.Connect(*natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	rollCtx, rollCancel := context.WithTimeout(ctx, time.Second)
	fleet, err := presence.RollCall(rollCtx, nc, scheme)
	rollCancel()
	if err != nil {
		return err
	}
	if len(fleet) != len(urls) {
		return fmt.Errorf("roll call: %d workers answered (%v), want %d", len(fleet), fleet, len(urls))
	}
	fmt.Printf("roll call: %v\n", fleet)

	// Single-name requests, one at a time.
	cpu0 := workersCPU(pids)
	lat := make([]time.Duration, 0, *single)
	online := 0
	for i := range *single {
		m := nats.NewMsg(scheme.User("u" + strconv.Itoa(i*7919%*names)))
		m.Header.Set(subjects.PresenceHeader, "1")
		start := time.Now()
		reply, err := nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			return fmt.Errorf("single request %d: %w", i, err)
		}
		lat = append(lat, time.Since(start))
		var r struct {
			Sessions int `json:"sessions"`
		}
		if json.Unmarshal(reply.Data, &r) == nil && r.Sessions == 1 {
			online++
		}
	}
	cpu1 := workersCPU(pids)
	reportPresence("single", lat, cpu0, cpu1, len(pids) > 0)
	if online != *single {
		return fmt.Errorf("single: %d of %d answers said 1 session", online, *single)
	}

	// Bulk requests of bulkNames names, each until every worker answered.
	lat = lat[:0]
	list := make([]string, *bulkNames)
	for i := range *bulk {
		for j := range list {
			list[j] = "u" + strconv.Itoa((i**bulkNames+j)%*names)
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		res, err := presence.Bulk(rctx, nc, scheme, list, len(fleet))
		d := time.Since(start)
		rcancel()
		if err != nil {
			return fmt.Errorf("bulk request %d: %w", i, err)
		}
		if res.Partial || len(res.Online) != len(list) {
			return fmt.Errorf("bulk request %d: partial %v, %d of %d names online", i, res.Partial, len(res.Online), len(list))
		}
		lat = append(lat, d)
	}
	cpu2 := workersCPU(pids)
	reportPresence(fmt.Sprintf("bulk of %d", *bulkNames), lat, cpu1, cpu2, len(pids) > 0)
	return nil
}

// openSessions opens n sessions named u0..u<n-1>, round robin over urls,
// every other one v2, and waits for each welcome.
func openSessions(ctx context.Context, urls []string, n int) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: (&net.Dialer{}).DialContext}
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, resp, err := dialer.DialContext(ctx, urls[i%len(urls)], nil)
			if err != nil {
				errs <- fmt.Errorf("dial %s: %w", urls[i%len(urls)], err)
				return
			}
			resp.Body.Close()
			first := `{"name":"u` + strconv.Itoa(i) + `"}`
			if i%2 == 1 {
				first = `{"name":"u` + strconv.Itoa(i) + `","v":2}`
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := c.WriteMessage(websocket.TextMessage, []byte(first)); err != nil {
				errs <- err
				c.Close()
				return
			}
			if _, msg, err := c.ReadMessage(); err != nil || !strings.Contains(string(msg), `"welcome"`) {
				errs <- fmt.Errorf("welcome of u%d: %s %v", i, msg, err)
				c.Close()
				return
			}
			_ = c.SetReadDeadline(time.Time{})
			conns[i] = c
			// Idle: read (pings, app pings) until the connection closes.
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
		}()
	}
	wg.Wait()
	close(errs)
	open := slices.DeleteFunc(conns, func(c *websocket.Conn) bool { return c == nil })
	if err := <-errs; err != nil {
		return open, err
	}
	return open, nil
}

// workersCPU is the summed CPU time of pids (0 without any).
func workersCPU(pids []string) time.Duration {
	var total time.Duration
	for _, p := range pids {
		if d, err := cpuTime(p); err == nil {
			total += d
		}
	}
	return total
}

// reportPresence prints a phase's latencies and the workers' CPU per request.
func reportPresence(phase string, lat []time.Duration, cpu0, cpu1 time.Duration, haveCPU bool) {
	s := slices.Clone(lat)
	slices.Sort(s)
	pct := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	line := fmt.Sprintf("%s: %d requests, p50 %s, p99 %s, max %s", phase, len(s),
		pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
	if haveCPU {
		per := (cpu1 - cpu0) / time.Duration(len(s))
		line += fmt.Sprintf(", workers' CPU %s in all, %s a request", (cpu1 - cpu0).Round(time.Millisecond), per.Round(time.Microsecond))
	}
	fmt.Println(line)
}
