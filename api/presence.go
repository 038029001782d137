package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/notify-worker/notify-worker/presence"
	"github.com/notify-worker/notify-worker/subjects"
)

// Presence answers who is online, fleet-wide. Both methods gather the
// workers' answers until ctx's deadline and return what arrived.
type Presence interface {
	Name(ctx context.Context, name string) (NamePresence, error)
	Bulk(ctx context.Context, names []string) (BulkPresence, error)
}

// NamePresence is the answer of GET /api/v1/presence/{name}.
type NamePresence struct {
	Name     string          `json:"name"`
	Online   bool            `json:"online"`
	Sessions int             `json:"sessions"`
	Workers  []WorkerSession `json:"workers"`
}

// WorkerSession is one worker's answer about a name.
type WorkerSession struct {
	Worker   string `json:"worker"`
	Sessions int    `json:"sessions"`
}

// BulkPresence is the answer of POST /api/v1/presence.
type BulkPresence struct {
	// Online holds every name with a session on a worker that answered,
	// with its sessions summed over the workers.
	Online map[string]int `json:"online"`
	// Workers lists the workers that answered, sorted.
	Workers []string `json:"workers"`
	// Expected is how many workers the latest roll calls found, 0 when
	// unknown; Partial says fewer answered in time, so a name missing
	// from Online may be held by a worker that did not answer.
	Expected int  `json:"expected"`
	Partial  bool `json:"partial"`
	// Errors holds the workers that refused the request, with why.
	Errors map[string]string `json:"errors,omitempty"`
}

// NATSPresence asks the workers over NATS with the presence package. It
// learns how many workers a bulk answer should have from roll calls: Run
// calls the roll every RollCallInterval, and a bulk request expects the
// most workers seen in the last rollCallMemory calls, returning as soon
// as that many answered.
type NATSPresence struct {
	conn   *nats.Conn
	scheme subjects.Scheme
	every  time.Duration

	mu    sync.Mutex
	fleet [][]string // the workers of the latest roll calls, newest last
}

// RollCallInterval is how often NATSPresence calls the roll.
const RollCallInterval = 10 * time.Second

// rollCallMemory is how many roll calls a bulk request's expectation
// covers: a worker missing from one roll call still counts.
const rollCallMemory = 3

// NewNATSPresence returns presence over nc; call Run to keep the
// expected fleet size current.
func NewNATSPresence(nc *nats.Conn, scheme subjects.Scheme) *NATSPresence {
	return &NATSPresence{conn: nc, scheme: scheme, every: RollCallInterval}
}

// Run calls the roll now and every RollCallInterval until ctx ends, on
// the calling goroutine.
func (p *NATSPresence) Run(ctx context.Context) {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		p.RollCall(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RollCall asks every worker to answer and remembers who did.
func (p *NATSPresence) RollCall(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, presence.DefaultWait)
	defer cancel()
	workers, err := presence.RollCall(ctx, p.conn, p.scheme)
	if err != nil && !errors.Is(err, nats.ErrNoResponders) {
		return // NATS down: keep what the earlier calls found
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fleet = append(p.fleet, workers)
	if len(p.fleet) > rollCallMemory {
		p.fleet = p.fleet[1:]
	}
}

// expected is the most workers one of the remembered roll calls found.
func (p *NATSPresence) expected() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, f := range p.fleet {
		n = max(n, len(f))
	}
	return n
}

// Name gathers the workers holding name until ctx ends.
func (p *NATSPresence) Name(ctx context.Context, name string) (NamePresence, error) {
	ans := NamePresence{Name: name, Workers: []WorkerSession{}}
	res, err := presence.Name(ctx, p.conn, p.scheme, name)
	if errors.Is(err, nats.ErrNoResponders) {
		return ans, nil
	}
	if err != nil {
		return ans, err
	}
	for w, n := range res.Workers {
		if n > 0 {
			ans.Workers = append(ans.Workers, WorkerSession{Worker: w, Sessions: n})
		}
	}
	slices.SortFunc(ans.Workers, func(a, b WorkerSession) int { return strings.Compare(a.Worker, b.Worker) })
	ans.Sessions, ans.Online = res.Sessions, res.Online
	return ans, nil
}

// Bulk gathers every worker's subset of names until ctx ends or the
// expected workers answered.
func (p *NATSPresence) Bulk(ctx context.Context, names []string) (BulkPresence, error) {
	expect := p.expected()
	ans := BulkPresence{Online: map[string]int{}, Workers: []string{}, Expected: expect}
	res, err := presence.Bulk(ctx, p.conn, p.scheme, names, expect)
	if errors.Is(err, nats.ErrNoResponders) {
		ans.Partial = expect > 0
		return ans, nil
	}
	if err != nil {
		return ans, err
	}
	for n, c := range res.Online {
		if c > 0 {
			ans.Online[n] = c
		}
	}
	if res.Answered != nil {
		ans.Workers = res.Answered
	}
	ans.Partial = res.Partial
	if len(res.Errors) > 0 {
		ans.Errors = res.Errors
	}
	return ans, nil
}

func (s *Server) namePresence(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := subjects.ValidName(name); err != nil {
		writeError(w, http.StatusBadRequest, "name: "+err.Error())
		return
	}
	timeout, err := s.queryTimeout(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	extendWriteDeadline(w, timeout)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	ans, err := s.presence.Name(ctx, name)
	if err != nil {
		s.natsError(w, "presence", err)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

func (s *Server) bulkPresence(w http.ResponseWriter, r *http.Request) {
	timeout, err := s.queryTimeout(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var names []string
	if err := decodeBody(r, &names); err != nil {
		s.bodyError(w, err)
		return
	}
	if err := checkNames(names); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	slices.Sort(names)
	names = slices.Compact(names)
	extendWriteDeadline(w, timeout)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	ans, err := s.presence.Bulk(ctx, names)
	if err != nil {
		s.natsError(w, "presence", err)
		return
	}
	writeJSON(w, http.StatusOK, ans)
}

// checkNames accepts 1 to subjects.MaxPresenceNames valid names.
func checkNames(names []string) error {
	switch {
	case names == nil:
		return errors.New("body must be a JSON array of names")
	case len(names) == 0:
		return errors.New("no names")
	case len(names) > subjects.MaxPresenceNames:
		return fmt.Errorf("%d names; at most %d", len(names), subjects.MaxPresenceNames)
	}
	for i, n := range names {
		if err := subjects.ValidName(n); err != nil {
			return fmt.Errorf("names[%d]: %w", i, err)
		}
	}
	return nil
}
