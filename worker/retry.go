package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// backoff is a capped exponential delay with full jitter, so that the
// resumes of a dead worker's clients, arriving together, do not retry
// together.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

// next returns the delay before the next attempt.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d, or until ctx ends or quit is closed; it reports whether
// the full delay passed.
func sleep(ctx context.Context, quit <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-quit:
		return false
	}
}

// attemptTimeout bounds one JetStream request of a resume or snapshot, so
// that a request lost in a leader election is retried within the caller's
// deadline rather than waited for until it ends.
const attemptTimeout = 2 * time.Second

// errNoStreamResponders is a JetStream request nobody answered: the stream
// (or JetStream) is not there, or is between leaders.
var errNoStreamResponders = errors.New("no responders (the stream is missing or between leaders)")

// permanentAPIError reports whether err is a JetStream API error that
// asking again will not change (a bad request, a configuration the server
// refuses), as opposed to a timeout or a cluster that is not ready.
func permanentAPIError(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch {
	case apiErr.ErrorCode == jsErrReplicasNotSupported, apiErr.ErrorCode == jsErrStorageResources:
		return true
	case apiErr.Code == 408:
		return false
	default:
		return apiErr.Code >= 400 && apiErr.Code < 500
	}
}

// API errors answered with code 500 that no retry will help.
const (
	// jsErrReplicasNotSupported: replicas > 1 asked of a server that is
	// not in a cluster.
	jsErrReplicasNotSupported jetstream.ErrorCode = 10074
	// jsErrStorageResources: MaxBytes beyond what the server or account
	// may store.
	jsErrStorageResources jetstream.ErrorCode = 10047
)

// closedError reports whether err means the connection is closed for good.
func closedError(err error) bool {
	return errors.Is(err, nats.ErrConnectionClosed)
}
