package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The files under test, relative to this directory.
const (
	repoRoot      = ".."
	composeFile   = "../docker-compose.yml"
	dockerfile    = "../Dockerfile"
	rootGoMod     = "../go.mod"
	haproxyConfig = "haproxy.cfg"
	natsConfig    = "nats.conf"
	rollingScript = "rolling-restart.sh"
)

// Stand-ins for the secrets an operator exports before docker compose up.
// The NATS passwords have the form docs/operations.md prescribes
// (openssl rand -hex 24).
var testSecrets = map[string]string{
	"NOTIFY_JWT_SECRET":      "deploy-test-secret-of-48-bytes-0123456789abcdef!", // 48 bytes
	"NATS_WORKER_PASSWORD":   "3e5a0c9d41f27b86e0d5c3a9f1b2e4d6c8a0b1f2e3d4c5b6",
	"NATS_PRODUCER_PASSWORD": "9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddccbbaa9988",
	"NATS_ROUTE_PASSWORD":    "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071",
}

// waitTimeout bounds every wait; it only turns a hang into a failure.
const waitTimeout = 30 * time.Second

var tmpDir string

func TestMain(m *testing.M) {
	var err error
	tmpDir, err = os.MkdirTemp("", "notify-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(tmpDir)
		os.Exit(code)
	}))
}

var (
	buildOnce sync.Once
	workerBin string
	buildErr  error
)

// workerBinary builds the worker from the service module (the repository
// root) once per test run and returns its path.
func workerBinary(t *testing.T) string {
	t.Helper()
	// go test caches a pass until a file a test opened changes; the go
	// command below reads the worker's sources out of its sight.
	if err := readSources(repoRoot); err != nil {
		t.Fatal(err)
	}
	buildOnce.Do(func() {
		workerBin = filepath.Join(tmpDir, "notify-worker")
		// go test puts its own go command first in PATH.
		cmd := exec.Command("go", "build", "-o", workerBin, ".")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build in %s: %v\n%s", repoRoot, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return workerBin
}

func readSources(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if name := d.Name(); !d.IsDir() && (strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum") {
			_, err = os.ReadFile(path)
		}
		return err
	})
}

// procLog collects a child process's output line by line; tests wait for
// the lines they expect.
type procLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced whenever a line arrives
}

func newProcLog() *procLog { return &procLog{changed: make(chan struct{})} }

// Write is called by os/exec's copying goroutine.
func (l *procLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *procLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// wait returns the first line that contains s, waiting for it.
func (l *procLog) wait(t *testing.T, s string) string {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, line := range l.lines {
			if strings.Contains(line, s) {
				l.mu.Unlock()
				return line
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no output line %q within %s; got:\n%s", s, waitTimeout, strings.Join(l.all(), "\n"))
		}
	}
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}
