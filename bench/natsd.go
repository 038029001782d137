package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// runNATSD is the "natsd" subcommand: a NATS server (with JetStream when
// -jetstream names a directory) in a process of its own, so that a worker
// run against it (NOTIFY_NATS_URL) is measured without the server's work
// in its CPU figures. It stops on SIGINT or
// SIGTERM, or after -max-run.
func runNATSD(args []string) error {
	fs := flag.NewFlagSet("natsd", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1", "listen host (loopback only)")
	port := fs.Int("port", 14300, "listen port")
	maxRun := fs.Duration("max-run", 30*time.Minute, "stop after this long")
	jsDir := fs.String("jetstream", "", "enable JetStream, storing under this directory (empty: no JetStream)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(*addr) < 4 || (*addr)[:4] != "127." {
		return errors.New("-addr must be a 127.0.0.x address")
	}
	opts := &server.Options{Host: *addr, Port: *port, NoSigs: true, MaxPayload: 1 << 20}
	if *jsDir != "" {
		opts.JetStream, opts.StoreDir = true, *jsDir
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	srv.Start()
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	if !srv.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats server not listening on %s:%d after 10s", *addr, *port)
	}
	fmt.Println(srv.ClientURL())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxRun)
	defer cancel()
	<-ctx.Done()
	return nil
}
