package main

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Names of the two servers under comparison, as the table shows them.
const (
	serverNotify     = "notify-worker"
	serverCentrifugo = "centrifugo"
)

// serverProc is one fresh server process of one run, and what clients and
// producers need to reach it.
type serverProc struct {
	kind    string // serverNotify or serverCentrifugo
	cmd     *exec.Cmd
	pid     string
	wsURL   string
	natsURL string // where the producer publishes; "" for Centrifugo's memory broker
	apiURL  string // Centrifugo: the HTTP API's base, http://127.0.0.1:port/api
	apiKey  string
	secret  string // Centrifugo: HMAC key of the connection JWTs
	// exited receives Wait's result: the goroutine started by start is
	// the only caller of Wait.
	exited <-chan error
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startNotify starts notify-worker: with its embedded NATS server on a free
// port when natsURL is "", else against natsURL.
func startNotify(ctx context.Context, bin, natsURL string) (*serverProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), "NOTIFY_ADDR=127.0.0.1:"+strconv.Itoa(port), "NOTIFY_LOG_LEVEL=warn")
	if natsURL == "" {
		np, err := freePort()
		if err != nil {
			return nil, err
		}
		env = append(env, "NOTIFY_EMBEDDED_NATS_ADDR=127.0.0.1:"+strconv.Itoa(np))
		natsURL = "nats://127.0.0.1:" + strconv.Itoa(np)
	} else {
		env = append(env, "NOTIFY_NATS_URL="+natsURL)
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = env
	s := &serverProc{kind: serverNotify, cmd: cmd, wsURL: fmt.Sprintf("ws://127.0.0.1:%d/", port), natsURL: natsURL}
	ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	if err := s.start(ready); err != nil {
		return nil, err
	}
	return s, nil
}

// startCentrifugo writes a configuration into dir and starts Centrifugo
// with it: the memory broker when natsURL is "", else its NATS broker in
// raw mode against natsURL.
func startCentrifugo(ctx context.Context, bin, dir, natsURL string) (*serverProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	secret, err := randomHex(32)
	if err != nil {
		return nil, err
	}
	key, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	path, err := writeCFConfig(dir, cfSettings{Port: port, Secret: secret, APIKey: key, NATSURL: natsURL})
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "--config", path)
	cmd.Dir = dir
	base := fmt.Sprintf("127.0.0.1:%d", port)
	s := &serverProc{
		kind: serverCentrifugo, cmd: cmd, wsURL: "ws://" + base + "/connection/websocket",
		natsURL: natsURL, apiURL: "http://" + base + "/api", apiKey: key, secret: secret,
	}
	if err := s.start("http://" + base + "/health"); err != nil {
		return nil, err
	}
	return s, nil
}

// start runs the process and waits until readyURL answers 200.
func (s *serverProc) start(readyURL string) error {
	s.cmd.Stdout = os.Stderr
	s.cmd.Stderr = os.Stderr
	s.cmd.WaitDelay = 5 * time.Second
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.kind, err)
	}
	s.pid = strconv.Itoa(s.cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	if err := waitReady(readyURL, exited, 30*time.Second); err != nil {
		_ = s.cmd.Process.Kill()
		return fmt.Errorf("%s: %w", s.kind, err)
	}
	s.exited = exited
	return nil
}

// waitReady polls url until it answers 200, the process exits, or timeout
// passes.
func waitReady(url string, exited <-chan error, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before it was ready: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s", url, timeout)
		}
	}
}

// stop asks the process to end (SIGTERM), and kills it after 10 s.
func (s *serverProc) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// natsProc is a "bench natsd" process of this binary: a NATS server of its
// own, so that its CPU is measured apart from the server it feeds.
type natsProc struct {
	cmd *exec.Cmd
	pid string
	url string
}

func startNATSD(ctx context.Context, self string) (*natsProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "natsd", "-port", strconv.Itoa(port), "-max-run", "20m")
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start natsd: %w", err)
	}
	// natsd prints its client URL once it accepts connections.
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, errors.New("natsd exited before it was ready")
	}
	url := strings.TrimSpace(sc.Text())
	return &natsProc{cmd: cmd, pid: strconv.Itoa(cmd.Process.Pid), url: url}, nil
}

func (n *natsProc) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	_ = n.cmd.Wait()
}

// buildWorker builds notify-worker from the module that holds the current
// directory into dir and returns the binary's path.
func buildWorker(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the notify-worker module: run from it or pass -worker")
	}
	bin := filepath.Join(dir, "notify-worker")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Dir(mod)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build the worker in %s: %w", cmd.Dir, err)
	}
	return bin, nil
}

// moduleVersion is the main module's path and version the Go toolchain
// recorded in bin: "go install ...@v6.9.1" records v6.9.1 even where the
// binary's own version command, whose version the linker did not stamp,
// says v0.0.0.
func moduleVersion(bin string) string {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	s := info.Main.Path + " " + info.Main.Version + ", " + info.GoVersion
	for _, kv := range info.Settings {
		if kv.Key == "vcs.revision" {
			s += ", commit " + kv.Value
		}
	}
	return s
}

// versionOf runs "bin args..." and returns its first output line.
func versionOf(ctx context.Context, bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
