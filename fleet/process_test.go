package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build stamps, checked in /metrics.
const (
	testVersion = "fleet-test"
	testCommit  = "f1ee7c0"
)

// binaries are built once, in TestMain.
type binaries struct {
	worker string
	nats   string
}

// build compiles the worker from this module and the NATS server from the
// module's own dependency into dir.
func build(dir string) (binaries, error) {
	b := binaries{worker: filepath.Join(dir, "notify-worker"), nats: filepath.Join(dir, "nats-server")}
	workerArgs := []string{"build", "-o", b.worker,
		"-ldflags", "-X main.version=" + testVersion + " -X main.commit=" + testCommit}
	if raceEnabled {
		workerArgs = append(workerArgs, "-race")
	}
	for _, args := range [][]string{
		append(workerArgs, "github.com/notify-worker/notify-worker"),
		{"build", "-o", b.nats, "github.com/nats-io/nats-server/v2"},
	} {
		// go test puts its own go command first in PATH.
		cmd := exec.Command("go", args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return b, nil
}

// TestSourcesTracked reads every file the worker binary is built from.
// go test caches a passing result until the test binary or a file a test
// opened changes, and TestMain builds the worker with a go command of its
// own, whose reads go test does not see (nor TestMain's): without this, a
// change to the worker could leave a stale "ok (cached)" for the fleet.
func TestSourcesTracked(t *testing.T) {
	if err := readSources(".."); err != nil {
		t.Fatal(err)
	}
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

// len returns the number of lines so far, a mark to wait from.
func (l *procLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

func (l *procLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}

func (l *procLog) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// wait returns the first line at index from or later that contains s.
func (l *procLog) wait(t *testing.T, from int, s string) string {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, line := range l.lines[min(from, len(l.lines)):] {
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
			t.Fatalf("no log line %q within %s", s, waitTimeout)
		}
	}
}

// logLine is one line of the worker's JSON log.
type logLine struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
	Addr string    `json:"addr"`
}

func parseLogLine(t *testing.T, line string) logLine {
	t.Helper()
	var l logLine
	if err := json.Unmarshal([]byte(line), &l); err != nil {
		t.Fatalf("worker log line %q: %v", line, err)
	}
	return l
}

// process is a child process that the test kills and reaps at cleanup.
type process struct {
	name    string
	cmd     *exec.Cmd
	log     *procLog
	stopped bool          // SIGSTOPped and not continued
	done    chan struct{} // closed once the process is reaped
	err     error         // what Wait returned; read after done
}

func startProcess(t *testing.T, name, path string, args, env []string) *process {
	t.Helper()
	return startProcessFiles(t, name, path, args, env)
}

// startProcessFiles starts a process that inherits files as descriptors
// 3, 4, ...
func startProcessFiles(t *testing.T, name, path string, args, env []string, files ...*os.File) *process {
	t.Helper()
	p := &process{name: name, log: newProcLog(), done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = env
	p.cmd.ExtraFiles = files
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("--- %s output (tail):\n%s", p.name, p.log.tail(40))
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s %s: %v", sig, p.name, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
		p.waitStopped(t)
	case syscall.SIGCONT:
		p.stopped = false
	}
}

// waitStopped returns once every thread of p is stopped: kill(2) returns
// before a thread running on another CPU has taken a SIGSTOP, and until
// it has, it may still read and answer.
func (p *process) waitStopped(t *testing.T) {
	t.Helper()
	tasks := fmt.Sprintf("/proc/%d/task", p.cmd.Process.Pid)
	eventually(t, p.name+" stopped by SIGSTOP", func() bool { return allStopped(tasks) })
}

// allStopped reports whether every thread listed under tasks
// (/proc/<pid>/task) is in state T (stopped).
func allStopped(tasks string) bool {
	entries, err := os.ReadDir(tasks)
	if err != nil || len(entries) == 0 {
		return false
	}
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join(tasks, e.Name(), "stat"))
		if err != nil {
			return false
		}
		// pid (comm) state ...: comm may hold spaces, so read after the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
			return false
		}
	}
	return true
}

// kill sends SIGKILL (after SIGCONT if stopped) and reaps the process.
func (p *process) kill(t *testing.T) {
	t.Helper()
	if p.exited() {
		return
	}
	if p.stopped {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		p.stopped = false
	}
	_ = p.cmd.Process.Kill()
	p.wait(t)
}

// wait reaps the process once it has exited on its own.
func (p *process) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not exit within %s", p.name, waitTimeout)
		return nil
	}
}

// env is the environment of a child process: only what it is given, and
// PATH/HOME/TMPDIR so that it can run, and GORACE for -race builds.
func env(vars ...string) []string {
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GORACE"} {
		if v, ok := os.LookupEnv(k); ok {
			vars = append(vars, k+"="+v)
		}
	}
	return vars
}
