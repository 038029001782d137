package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig says how to run the NATS server inside this process.
type EmbeddedConfig struct {
	// Addr is host:port to listen on for producers and the nats CLI; port
	// 0 picks a free one.
	Addr string
	// JetStreamDir is where the server's JetStream stores streams (under
	// a "jetstream" subdirectory). Keep it across restarts to keep the
	// durable notifications. Required.
	JetStreamDir string
}

// Embedded is a NATS server, with JetStream, running inside this process.
// It is also an in-process connection provider, so ConnConfig.InProcess = e
// connects the worker to it without a socket.
type Embedded struct {
	srv *server.Server
}

// embeddedReadyTimeout bounds the wait for the server to accept clients.
const embeddedReadyTimeout = 10 * time.Second

// StartEmbedded starts a NATS server inside this process and returns once
// it accepts clients. A taken port fails at once, with the reason. The
// caller stops it with Shutdown after the worker has closed.
func StartEmbedded(cfg EmbeddedConfig, log *slog.Logger) (*Embedded, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", &ConfigError{Field: "Addr", Err: err})
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded nats: %w",
			&ConfigError{Field: "Addr", Err: fmt.Errorf("%q: port must be a number from 0 to 65535", cfg.Addr)})
	}
	if cfg.JetStreamDir == "" {
		return nil, fmt.Errorf("embedded nats: %w",
			&ConfigError{Field: "JetStreamDir", Err: errors.New("must name the directory JetStream stores under")})
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// nats-server only logs a failed listen; find out now, with the
		// reason, rather than after the readiness timeout.
		ln, err := net.Listen("tcp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats cannot listen on %s: %w", cfg.Addr, err)
		}
		ln.Close()
	}
	opts := &server.Options{
		ServerName: "notify-worker-embedded",
		Host:       host,
		Port:       port,
		NoSigs:     true, // the worker handles signals
		JetStream:  true,
		StoreDir:   cfg.JetStreamDir,
		// The worker subscribes once per name, so a producer's messages
		// go to thousands of distinct subjects, more than the subject
		// cache holds (1,024): it missed on nearly every message and paid
		// for inserting and sweeping entries besides the match. Without
		// it, targeted delivery cost 2-4 % less worker CPU (10,000 names,
		// 20,000 messages/s).
		NoSublistCache: true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log.With("component", "nats-server")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(embeddedReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats: not listening on %s after %s", cfg.Addr, embeddedReadyTimeout)
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the URL producers connect to, nats://host:port.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// InProcessConn implements nats.InProcessConnProvider: a connection to the
// server that needs no socket.
func (e *Embedded) InProcessConn() (net.Conn, error) { return e.srv.InProcessConn() }

// Shutdown stops the server and returns once it has stopped.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// natsLogger passes nats-server's log lines to slog.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
