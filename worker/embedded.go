package worker

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartEmbedded starts a NATS server inside this process, listening on
// addr (host:port; port 0 picks a free one) so that producers and the nats
// CLI can publish to it. The caller stops it with Shutdown and
// WaitForShutdown after the worker has drained.
func StartEmbedded(addr string, log *slog.Logger) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded nats address %q: bad port", addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// nats-server only logs a failed listen; find out now, with the
		// reason, rather than after the readiness timeout.
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats cannot listen (set NOTIFY_EMBEDDED_NATS_ADDR or NOTIFY_NATS_URL): %w", err)
		}
		ln.Close()
	}
	opts := &server.Options{
		ServerName: "notify-worker-embedded",
		Host:       host,
		Port:       port,
		NoSigs:     true, // the worker handles signals
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log.With("component", "nats-server")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats: not listening on %s after 10s", addr)
	}
	return srv, nil
}

// natsLogger passes nats-server's log lines to slog.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
