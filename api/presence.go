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
// learns which workers a bulk answer should have from roll calls: Run
// calls the roll every RollCallInterval, and a bulk request expects every
// worker that answered one of the last rollCallMemory roll calls, or a
// bulk request since. It returns as soon as that many answered, and is
// partial when one of them is missing from the answer.
type NATSPresence struct {
	conn   *nats.Conn
	scheme subjects.Scheme
	every  time.Duration

	mu    sync.Mutex
	calls []map[string]bool // the workers of the latest roll calls, newest last
}

// RollCallInterval is how often NATSPresence calls the roll.
const RollCallInterval = 10 * time.Second

// rollCallMemory is how many roll calls a bulk request's expectation
// covers: a worker missing from one roll call (busy, restarting) still
// counts, and one that left stops counting after this many.
const rollCallMemory = 3

// NewNATSPresence returns presence over nc; call Run to keep the
// expected fleet current.
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
	call := map[string]bool{}
	for _, w := range workers {
		call[w] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, call)
	if len(p.calls) > rollCallMemory {
		p.calls = p.calls[1:]
	}
}

// fleet is every worker of the remembered roll calls.
func (p *NATSPresence) fleet() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := map[string]bool{}
	for _, c := range p.calls {
		for w := range c {
			all[w] = true
		}
	}
	return all
}

// saw adds workers that answered a bulk request to the newest roll call,
// so that a worker that joined since is expected from then on.
func (p *NATSPresence) saw(workers []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) == 0 {
		p.calls = append(p.calls, map[string]bool{})
	}
	for _, w := range workers {
		p.calls[len(p.calls)-1][w] = true
	}
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

// Bulk gathers every worker's subset of names until ctx ends or every
// expected worker answered.
func (p *NATSPresence) Bulk(ctx context.Context, names []string) (BulkPresence, error) {
	fleet := p.fleet()
	ans := BulkPresence{Online: map[string]int{}, Workers: []string{}, Expected: len(fleet)}
	res, err := presence.Bulk(ctx, p.conn, p.scheme, names, len(fleet))
	if err != nil && !errors.Is(err, nats.ErrNoResponders) {
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
	answered := map[string]bool{}
	for _, w := range ans.Workers {
		answered[w] = true
	}
	for w := range fleet {
		if !answered[w] {
			ans.Partial = true
		}
	}
	if len(res.Errors) > 0 {
		ans.Errors = res.Errors
	}
	p.saw(ans.Workers)
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
