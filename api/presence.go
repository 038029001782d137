package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/nats-io/nats.go"

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
	// Online holds every name with a session somewhere, with its
	// sessions summed over the workers.
	Online map[string]int `json:"online"`
	// Workers lists the workers that answered.
	Workers []string `json:"workers"`
	// Expected is how many workers were expected to answer, 0 when
	// unknown; Partial says fewer answered in time.
	Expected int  `json:"expected,omitempty"`
	Partial  bool `json:"partial"`
}

// NATSPresence asks the workers directly: a request to the name's subject
// with the Notify-Presence: 1 header, or a request to <prefix>.presence
// with the names. It does not know how many workers there are, so a bulk
// answer never says it is partial.
type NATSPresence struct {
	Conn   *nats.Conn
	Scheme subjects.Scheme
}

// Name gathers the workers holding name until ctx ends.
func (p NATSPresence) Name(ctx context.Context, name string) (NamePresence, error) {
	ans := NamePresence{Name: name, Workers: []WorkerSession{}}
	msg := &nats.Msg{Subject: p.Scheme.User(name), Header: nats.Header{"Notify-Presence": []string{"1"}}}
	replies, err := gather(ctx, p.Conn, msg, 0)
	if errors.Is(err, errNoResponders) {
		return ans, nil
	}
	if err != nil {
		return ans, err
	}
	for _, m := range replies {
		var ws WorkerSession
		if err := json.Unmarshal(m.Data, &ws); err != nil || ws.Sessions <= 0 {
			continue
		}
		ans.Workers = append(ans.Workers, ws)
		ans.Sessions += ws.Sessions
	}
	ans.Online = ans.Sessions > 0
	return ans, nil
}

// Bulk gathers every worker's subset of names until ctx ends.
func (p NATSPresence) Bulk(ctx context.Context, names []string) (BulkPresence, error) {
	ans := BulkPresence{Online: map[string]int{}, Workers: []string{}}
	body, err := json.Marshal(names)
	if err != nil {
		return ans, err
	}
	replies, err := gather(ctx, p.Conn, &nats.Msg{Subject: p.Scheme.Prefix() + ".presence", Data: body}, 0)
	if errors.Is(err, errNoResponders) {
		return ans, nil
	}
	if err != nil {
		return ans, err
	}
	for _, m := range replies {
		var wr struct {
			Worker string         `json:"worker"`
			Online map[string]int `json:"online"`
		}
		if err := json.Unmarshal(m.Data, &wr); err != nil {
			continue
		}
		ans.Workers = append(ans.Workers, wr.Worker)
		for n, c := range wr.Online {
			if c > 0 {
				ans.Online[n] += c
			}
		}
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

// checkNames accepts 1 to DefaultMaxBulkNames valid names.
func checkNames(names []string) error {
	switch {
	case names == nil:
		return errors.New("body must be a JSON array of names")
	case len(names) == 0:
		return errors.New("no names")
	case len(names) > DefaultMaxBulkNames:
		return fmt.Errorf("%d names; at most %d", len(names), DefaultMaxBulkNames)
	}
	for i, n := range names {
		if err := subjects.ValidName(n); err != nil {
			return fmt.Errorf("names[%d]: %w", i, err)
		}
	}
	return nil
}
