package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// runFloor is the "floor" subcommand: the CPU this process spends on one
// small write(2) to each of -conns loopback TCP connections read by another
// process. No WebSocket worker can deliver one message to one session for
// less, so it is the yardstick for the worker's CPU per delivery.
func runFloor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ExitOnError)
	conns := fs.Int("conns", 10000, "connections (at most 9000 per reader process is safe: open-file limit)")
	rounds := fs.Int("rounds", 20, "writes to each connection")
	size := fs.Int("size", 100, "bytes per write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *conns <= 0 || *conns > 19000 || *rounds <= 0 {
		return errors.New("-conns must be in 1..19000, -rounds positive")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "floor-reader", ln.Addr().String(), strconv.Itoa(*conns))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	// Give up if the reader does not connect in time (it may have failed).
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return err
	}
	cs := make([]net.Conn, *conns)
	for i := range cs {
		if cs[i], err = ln.Accept(); err != nil {
			return err
		}
		defer cs[i].Close()
	}
	msg := make([]byte, *size)
	c0, _ := cpuTime("self")
	t0 := time.Now()
	for range *rounds {
		for _, c := range cs {
			if _, err := c.Write(msg); err != nil {
				return err
			}
		}
	}
	wall := time.Since(t0)
	c1, _ := cpuTime("self")
	n := float64(*conns * *rounds)
	fmt.Printf("floor: %d writes of %d B over %d loopback connections: %.2f µs CPU and %.2f µs wall per write (load average %s)\n",
		*conns**rounds, *size, *conns, float64((c1-c0).Nanoseconds())/n/1e3, float64(wall.Nanoseconds())/n/1e3, loadAvg())
	return nil
}

// runFloorReader is the reading side of "floor": it connects and discards
// everything until its stdin closes.
func runFloorReader(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: floor-reader ADDR CONNS")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	for i := range n {
		// Spread source addresses like the clients do, so that ports left
		// in TIME_WAIT by earlier runs cannot run out.
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i%50))}
		c, err := (&net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}).Dial("tcp", args[0])
		if err != nil {
			return fmt.Errorf("dial: %w", err)
		}
		go func() { _, _ = io.Copy(io.Discard, c) }()
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}
