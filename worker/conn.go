package worker

import (
	"fmt"
	"log/slog"
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
}

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

// connEvents receives the connection's state changes. nats.go calls these
// on its own callback goroutine, one at a time.
type connEvents struct {
	log     *slog.Logger
	metrics *metrics
	closed  chan struct{}
}

func (e *connEvents) options() []nats.Option {
	return []nats.Option{
		nats.ConnectHandler(func(nc *nats.Conn) {
			e.log.Info("nats connected", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			e.metrics.disconnects.Inc()
			if err == nil {
				e.log.Info("nats disconnected")
				return
			}
			e.log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			e.metrics.reconnects.Inc()
			e.log.Info("nats reconnected; subscriptions restored", "url", nc.ConnectedUrlRedacted(),
				"server", nc.ConnectedServerName(), "subscriptions", nc.NumSubscriptions())
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			e.log.Debug("nats reconnect attempt failed", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			e.log.Info("nats connection closed")
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
