package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnConfig says how to reach NATS.
type ConnConfig struct {
	// URLs of the NATS servers; ignored when InProcess is set.
	URLs []string
	// InProcess, when set, is an embedded server to connect to without a
	// socket.
	InProcess nats.InProcessConnProvider
	// Name identifies this connection in the server's monitoring data.
	Name string

	User, Password string
	Token          string
	CredsFile      string // a .creds file (JWT and nkey seed)
	NKeySeedFile   string // a file holding an nkey seed

	TLSCAFile   string // CA bundle to verify the servers with
	TLSCertFile string // client certificate, with TLSKeyFile
	TLSKeyFile  string

	ConnectTimeout time.Duration
	// MaxReconnects is the number of reconnect attempts; negative means
	// forever.
	MaxReconnects int
	ReconnectWait time.Duration
	// PingInterval and MaxPingsOut bound how long a dead server goes
	// unnoticed: about PingInterval * (MaxPingsOut + 1).
	PingInterval time.Duration
	MaxPingsOut  int
	// FailureLogInterval bounds the Warn lines of a server that cannot be
	// reached: the first failed attempt is logged at once, then at most
	// one line per interval, with the attempts that failed meanwhile and
	// the latest cause. 0 means defaultFailureLogInterval.
	FailureLogInterval time.Duration
}

const defaultFailureLogInterval = 10 * time.Second

// options turns a validated ConnConfig into nats.go options.
func (c ConnConfig) options() ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.MaxReconnects(c.MaxReconnects),
		nats.ReconnectWait(c.ReconnectWait),
		nats.ReconnectJitter(c.ReconnectWait/4, c.ReconnectWait/4),
		nats.PingInterval(c.PingInterval),
		nats.MaxPingsOutstanding(c.MaxPingsOut),
		nats.Timeout(c.ConnectTimeout),
		// Start even when no server is up yet: /readyz says 503 until the
		// connection is made.
		nats.RetryOnFailedConnect(true),
	}
	if c.InProcess != nil {
		opts = append(opts, nats.InProcessServer(c.InProcess))
	}
	if c.User != "" || c.Password != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NKeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: %w", c.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	}
	if c.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	return opts, nil
}

// connEvents receives the connection's state changes. nats.go calls its
// handlers on its own callback goroutine, one at a time, so the failure
// state below needs no lock.
type connEvents struct {
	log          *slog.Logger
	metrics      *metrics
	closed       chan struct{}
	failLogEvery time.Duration
	now          func() time.Time
	closing      atomic.Bool // set by Worker.Close before it closes the connection
	// lost and reconnected, if set, are called after the connection was
	// lost (not closed) and after it is back, on the callback goroutine.
	lost, reconnected func(*nats.Conn)

	// The current run of failed connection attempts.
	failed          int       // attempts since the connection was last up
	failedSinceLine int       // attempts not yet reported at Warn
	lastLine        time.Time // when the last Warn line went out; zero: none yet
}

func newConnEvents(log *slog.Logger, m *metrics, failLogEvery time.Duration) *connEvents {
	if failLogEvery == 0 {
		failLogEvery = defaultFailureLogInterval
	}
	return &connEvents{log: log, metrics: m, closed: make(chan struct{}), failLogEvery: failLogEvery, now: time.Now}
}

func (e *connEvents) options() []nats.Option {
	return []nats.Option{
		// With RetryOnFailedConnect, nats.go calls ConnectHandler (not
		// ReconnectHandler) when the first connection is made late.
		nats.ConnectHandler(func(nc *nats.Conn) {
			e.log.Info("nats connected", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName(),
				"failed_attempts", e.connected())
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if e.closing.Load() {
				e.log.Info("nats disconnected")
				return
			}
			if err == nil {
				// nats.go closes for some server errors without passing
				// them here (processErr); the connection keeps the last.
				err = nc.LastError()
			}
			e.metrics.disconnects.Inc()
			e.log.Warn("nats disconnected", "err", err)
			if e.lost != nil {
				e.lost(nc)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			e.metrics.reconnects.Inc()
			e.log.Info("nats reconnected; subscriptions restored", "url", nc.ConnectedUrlRedacted(),
				"server", nc.ConnectedServerName(), "subscriptions", nc.NumSubscriptions(), "failed_attempts", e.connected())
			if e.reconnected != nil {
				e.reconnected(nc)
			}
		}),
		// Called for every failed attempt, the initial ones included when
		// RetryOnFailedConnect is set (nats.go v1.55.0 doReconnect: line
		// 3388 for the initial connect, 3570 for each attempt after).
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			e.attemptFailed(err)
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			if e.failed > 0 {
				e.log.Info("nats connection closed", "failed_attempts", e.failed)
			} else {
				e.log.Info("nats connection closed")
			}
			close(e.closed)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			e.metrics.asyncErrors.Inc()
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			e.log.Error("nats error", "subject", subject, "err", err)
		}),
	}
}

// attemptFailed logs a failed connection attempt: every one at Debug; at
// Warn the first of a run at once, then one line per failLogEvery.
func (e *connEvents) attemptFailed(err error) {
	e.failed++
	e.failedSinceLine++
	e.log.Debug("nats connection attempt failed", "err", err)
	if e.lastLine.IsZero() && errors.Is(err, nats.ErrNoServers) {
		// The first initial attempt reports a refused connection as "no
		// servers available" (nats.go connect, lines 3031-3040); the next
		// attempt carries the cause, so the first line waits for it.
		return
	}
	now := e.now()
	if !e.lastLine.IsZero() && now.Sub(e.lastLine) < e.failLogEvery {
		return
	}
	e.log.Warn("nats connection attempt failed", "err", err, "failed_attempts", e.failedSinceLine)
	e.failedSinceLine = 0
	e.lastLine = now
}

// connected ends a run of failed attempts and returns its length.
func (e *connEvents) connected() int {
	n := e.failed
	e.failed, e.failedSinceLine, e.lastLine = 0, 0, time.Time{}
	return n
}
