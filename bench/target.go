package main

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// checkTarget refuses a run whose numbers would mean nothing: a -pid that
// is not the process listening on -url's port (its CPU and memory would be
// someone else's, and a process that does nothing reports 0 µs per
// delivery), or a worker that has already served sessions (its heap grew
// and shrank before the run, so memory per connection can come out
// negative).
func checkTarget(o options, client *http.Client) error {
	u, err := url.Parse(o.wsURL)
	if err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	if err := listensOn(o.pid, port); err != nil {
		return fmt.Errorf("-pid %s: %w", o.pid, err)
	}
	if served := scrapeCounter(client, o.metricsURL, "notify_connections"); served < 0 {
		return fmt.Errorf("no notify_connections at %s: is -url a notify-worker?", o.metricsURL)
	} else if served > 0 {
		return fmt.Errorf("the worker has %.0f connections open: measure a fresh worker with no other clients", served)
	}
	if served := scrapeCounter(client, o.metricsURL, "notify_handshakes_total"); served > 0 {
		return fmt.Errorf("the worker has handled %.0f first messages already: "+
			"start a fresh worker for each run (memory and CPU per connection are measured from its start)", served)
	}
	return nil
}

// listensOn checks that process pid holds the socket listening on port,
// by matching the socket's inode in /proc/net/tcp{,6} against pid's
// descriptors.
func listensOn(pid, port string) error {
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: %w", port, err)
	}
	inodes, err := listeningInodes(uint16(p))
	if err != nil {
		return err
	}
	if len(inodes) == 0 {
		return fmt.Errorf("nothing listens on port %s", port)
	}
	fds, err := os.ReadDir(filepath.Join("/proc", pid, "fd"))
	if err != nil {
		return fmt.Errorf("read its descriptors: %w", err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc", pid, "fd", fd.Name()))
		if err != nil {
			continue
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
			return nil
		}
	}
	return fmt.Errorf("is not the process listening on port %s: pass the worker's pid", port)
}

// listeningInodes returns the inodes of the TCP sockets listening on port.
func listeningInodes(port uint16) (map[string]bool, error) {
	const listen = "0A" // TCP_LISTEN in /proc/net/tcp's st column
	want := fmt.Sprintf(":%04X", port)
	inodes := map[string]bool{}
	found := false
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		found = true
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != listen || !strings.HasSuffix(fields[1], want) {
				continue
			}
			inodes[fields[9]] = true
		}
		f.Close()
	}
	if !found {
		return nil, errors.New("cannot read /proc/net/tcp")
	}
	return inodes, nil
}
