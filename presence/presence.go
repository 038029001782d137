// Package presence asks a notify-worker fleet who is connected, from the
// producer's side, over NATS. There is no central store: every worker
// answers for the sessions it holds (docs/protocol.md, section 9), and this
// package gathers the answers until a deadline.
//
//   - Name sends a presence request to <prefix>.user.<name> with the header
//     Notify-Presence: 1. Each worker holding the name answers
//     {"worker":"<id>","sessions":N}; when no worker holds it, NATS answers
//     "no responders" at once, which means offline fleet-wide.
//   - Bulk sends a JSON array of up to 1,000 names to <prefix>.presence.
//     Every worker answers {"worker":"<id>","online":{"alice":2}} with the
//     names it holds (an empty object when none), or
//     {"worker":"<id>","error":"..."} for a request it refuses.
//   - RollCall is Bulk with no names: every worker answers, so the caller
//     learns the fleet, and how many answers to expect from Bulk.
//
// A worker that is slow, frozen or cut off does not answer in time. Bulk
// reports that as Partial when the caller said how many workers to expect;
// a name held only by that worker then looks offline, so a caller that
// acts on "offline" should act on a complete answer only, or ask again.
//
// The package imports only nats.go and subjects; it holds no state, and
// each call uses its own reply inbox.
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/notify-worker/notify-worker/subjects"
)

// DefaultWait is how long Name and Bulk gather answers when ctx has no
// deadline.
const DefaultWait = time.Second

// ErrTooManyNames is returned by Bulk for more than
// subjects.MaxPresenceNames names, before anything is sent.
var ErrTooManyNames = fmt.Errorf("more than %d names", subjects.MaxPresenceNames)

// Result is the fleet's answer for one name.
type Result struct {
	// Online says at least one worker holds a session of the name.
	Online bool
	// Sessions is the sum of the workers' session counts.
	Sessions int
	// Workers maps each worker that answered to its session count. Only
	// workers holding the name answer a single-name request.
	Workers map[string]int
	// Errors maps a worker that refused the request to its error.
	Errors map[string]string
}

// BulkResult is the fleet's answer for a list of names.
type BulkResult struct {
	// Online maps each name held by a worker that answered to the sum of
	// its session counts; a name missing here is offline as far as those
	// workers know.
	Online map[string]int
	// Workers maps each worker that answered to the names it holds (an
	// empty map for none).
	Workers map[string]map[string]int
	// Answered lists the workers that answered, sorted, errors included.
	Answered []string
	// Errors maps a worker that refused the request to its error.
	Errors map[string]string
	// Partial says fewer than the expected workers answered by the
	// deadline. It is false when the caller expected no particular number.
	Partial bool
}

// reply is a worker's answer, in either form.
type reply struct {
	Worker   string         `json:"worker"`
	Sessions *int           `json:"sessions"`
	Online   map[string]int `json:"online"`
	Error    string         `json:"error"`
}

// Name asks which workers hold sessions named name, and how many. It
// gathers answers until ctx ends (after DefaultWait when ctx has no
// deadline): only the workers holding the name answer, and which they are
// is not known beforehand. "No responders" ends it at once with Online
// false. It returns an error for an invalid name, or when the request
// could not be sent; a deadline is not an error.
func Name(ctx context.Context, nc *nats.Conn, scheme subjects.Scheme, name string) (Result, error) {
	if err := subjects.ValidName(name); err != nil {
		return Result{}, fmt.Errorf("presence of %q: %w", name, err)
	}
	msg := nats.NewMsg(scheme.User(name))
	msg.Header.Set(subjects.PresenceHeader, "1")
	res := Result{Workers: map[string]int{}, Errors: map[string]string{}}
	err := gather(ctx, nc, msg, func(r reply) bool {
		switch {
		case r.Error != "":
			res.Errors[r.Worker] = r.Error
		case r.Sessions != nil:
			res.Workers[r.Worker] = *r.Sessions
			res.Sessions += *r.Sessions
		}
		return false
	})
	if err != nil {
		return Result{}, fmt.Errorf("presence of %s: %w", name, err)
	}
	res.Online = res.Sessions > 0
	return res, nil
}

// Bulk asks every worker which of names it holds. It gathers answers
// until expectWorkers distinct workers have answered (when expectWorkers
// is positive) or ctx ends (after DefaultWait when ctx has no deadline),
// and sets Partial when fewer than expectWorkers answered. Learn
// expectWorkers from RollCall, or from the deployment. Names are checked
// before anything is sent: more than subjects.MaxPresenceNames is
// ErrTooManyNames, an invalid name is an error naming its position.
func Bulk(ctx context.Context, nc *nats.Conn, scheme subjects.Scheme, names []string, expectWorkers int) (BulkResult, error) {
	if len(names) > subjects.MaxPresenceNames {
		return BulkResult{}, ErrTooManyNames
	}
	for i, n := range names {
		if err := subjects.ValidName(n); err != nil {
			return BulkResult{}, fmt.Errorf("name %d: %w", i, err)
		}
	}
	if names == nil {
		names = []string{}
	}
	body, err := json.Marshal(names)
	if err != nil {
		return BulkResult{}, fmt.Errorf("encode names: %w", err)
	}
	msg := nats.NewMsg(scheme.Presence())
	msg.Data = body
	res := BulkResult{Online: map[string]int{}, Workers: map[string]map[string]int{}, Errors: map[string]string{}}
	seen := map[string]bool{}
	err = gather(ctx, nc, msg, func(r reply) bool {
		if seen[r.Worker] {
			return false
		}
		seen[r.Worker] = true
		res.Answered = append(res.Answered, r.Worker)
		if r.Error != "" {
			res.Errors[r.Worker] = r.Error
		} else {
			held := r.Online
			if held == nil {
				held = map[string]int{}
			}
			res.Workers[r.Worker] = held
			for n, c := range held {
				res.Online[n] += c
			}
		}
		return expectWorkers > 0 && len(seen) >= expectWorkers
	})
	if err != nil {
		return BulkResult{}, fmt.Errorf("bulk presence: %w", err)
	}
	sort.Strings(res.Answered)
	res.Partial = expectWorkers > 0 && len(res.Answered) < expectWorkers
	return res, nil
}

// RollCall returns the workers that answer an empty bulk request by the
// deadline (after DefaultWait when ctx has no deadline), sorted.
func RollCall(ctx context.Context, nc *nats.Conn, scheme subjects.Scheme) ([]string, error) {
	res, err := Bulk(ctx, nc, scheme, nil, 0)
	if err != nil {
		return nil, err
	}
	return res.Answered, nil
}

// gather publishes msg with a fresh reply inbox and passes each decoded
// answer to take until take returns true, ctx ends, or NATS says no one
// listens. Answers that do not decode, or name no worker, are skipped.
func gather(ctx context.Context, nc *nats.Conn, msg *nats.Msg, take func(reply) bool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultWait)
		defer cancel()
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("subscribe to replies: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	msg.Reply = inbox
	if err := nc.PublishMsg(msg); err != nil {
		return fmt.Errorf("publish %s: %w", msg.Subject, err)
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil // nobody holds it (or no worker runs): not an error
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // the deadline: what came is the answer
			}
			return fmt.Errorf("read replies: %w", err)
		}
		var r reply
		if json.Unmarshal(m.Data, &r) != nil || r.Worker == "" {
			continue
		}
		if take(r) {
			return nil
		}
	}
}
