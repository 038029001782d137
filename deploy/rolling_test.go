package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeDocker is a docker command for rolling-restart.sh: it records every
// call in calls, lists the containers in workers (and lb, if lb exists),
// and simulates a restart: a restarted container reports "starting" for
// two inspects, then "healthy" (or "unhealthy" forever if it is listed in
// never); HAProxy reports it UP from the second stats read after it is
// healthy.
const fakeDocker = `#!/usr/bin/env bash
set -eu
d=$FAKE_DOCKER_DIR
echo "$*" >> "$d/calls"
count() { local f="$d/state/$1.$2"; local n=$(( $(cat "$f" 2>/dev/null || echo 0) + 1 )); echo $n > "$f"; echo $n; }
case $1 in
ps)
  case "$*" in
    *com.docker.compose.project=notify*com.docker.compose.service=worker*) cat "$d/workers" ;;
    *com.docker.compose.project=notify*com.docker.compose.service=lb*) [ -f "$d/lb" ] && echo lb0 || true ;;
  esac ;;
restart)
  echo "$2" >> "$d/restarted"; rm -f "$d/state/$2".*; echo "$2" ;;
inspect)
  id=${@: -1}
  if grep -qx "$id" "$d/never" 2>/dev/null; then echo unhealthy; exit 0; fi
  if ! grep -qx "$id" "$d/restarted" 2>/dev/null; then echo healthy; exit 0; fi
  n=$(count "$id" inspect)
  if [ "$n" -le 2 ]; then echo starting; else echo healthy; touch "$d/state/$id.healthy"; fi ;;
exec)
  echo "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight"
  i=0
  while read -r id; do
    i=$((i + 1)); status=UP
    if grep -qx "$id" "$d/restarted" 2>/dev/null; then
      if [ -f "$d/state/$id.healthy" ] && [ "$(count "$id" exec)" -ge 2 ]; then status=UP; else status=DOWN; fi
    fi
    echo "workers,worker$i,0,0,0,0,,0,0,0,,0,,0,0,0,0,$status,1"
  done < "$d/workers"
  echo "workers,worker9,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT (resolution),1"
  echo "workers,BACKEND,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,3" ;;
*) echo "fake docker: unexpected $*" >&2; exit 64 ;;
esac
`

type fakeDockerRun struct {
	calls           []string
	stdout, stderr  string
	err             error
	restartedInTurn []string
}

// runRollingRestart runs the script against a fake docker with the given
// worker containers; never lists those that never become healthy.
func runRollingRestart(t *testing.T, workers []string, withLB bool, never []string, extraEnv ...string) fakeDockerRun {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	for _, d := range []string{bin, filepath.Join(dir, "state")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, content string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("bin/docker", fakeDocker, 0o755)
	list := strings.Join(workers, "\n")
	if list != "" {
		list += "\n"
	}
	write("workers", list, 0o644)
	write("never", strings.Join(never, "\n")+"\n", 0o644)
	if withLB {
		write("lb", "", 0o644)
	}
	script, err := filepath.Abs(rollingScript)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append([]string{
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"FAKE_DOCKER_DIR=" + dir,
		"POLL_INTERVAL=0.01",
	}, extraEnv...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	r := fakeDockerRun{err: cmd.Run(), stdout: out.String(), stderr: errOut.String()}
	if ctx.Err() != nil {
		t.Fatalf("%s still running after %s:\n%s%s", rollingScript, waitTimeout, r.stdout, r.stderr)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	r.calls = strings.Split(strings.TrimSpace(string(calls)), "\n")
	for _, c := range r.calls {
		if id, ok := strings.CutPrefix(c, "restart "); ok {
			r.restartedInTurn = append(r.restartedInTurn, id)
		}
	}
	return r
}

// One container at a time: each is restarted only after the one before it
// is healthy and back in HAProxy.
func TestRollingRestartScript(t *testing.T) {
	workers := []string{"c1", "c2", "c3"}
	r := runRollingRestart(t, workers, true, nil)
	if r.err != nil {
		t.Fatalf("rolling restart: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
	if !slices.Equal(r.restartedInTurn, workers) {
		t.Fatalf("restarted %q, want each of %q once, in turn", r.restartedInTurn, workers)
	}
	// Between two restarts: the first's health reached healthy, then
	// HAProxy's count of UP workers.
	var phase []string
	for _, c := range r.calls {
		switch {
		case strings.HasPrefix(c, "restart "):
			phase = append(phase, "restart")
		case strings.HasPrefix(c, "inspect "):
			if len(phase) == 0 || phase[len(phase)-1] != "inspect" {
				phase = append(phase, "inspect")
			}
		case strings.HasPrefix(c, "exec lb0 wget "):
			if phase[len(phase)-1] != "lb" {
				phase = append(phase, "lb")
			}
		}
	}
	want := []string{"restart", "inspect", "lb", "restart", "inspect", "lb", "restart", "inspect", "lb"}
	if !slices.Equal(phase, want) {
		t.Fatalf("calls in the order %q, want %q; calls:\n%s", phase, want, strings.Join(r.calls, "\n"))
	}
	for _, c := range r.calls {
		if strings.HasPrefix(c, "restart ") && strings.Contains(c, "-t") {
			t.Errorf("%q overrides the container's stop_grace_period", c)
		}
	}
	if !strings.Contains(r.stdout, "done: 3 container(s) restarted") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}

// A replica that does not come back stops the procedure with a clear error,
// and no later replica is touched.
func TestRollingRestartScriptTimesOut(t *testing.T) {
	t0 := time.Now()
	// The script's deadline counts whole seconds (date +%s), so a timeout
	// of N gives between N-1 and N seconds: 3 leaves c1 at least 2 to come
	// back on a busy machine.
	r := runRollingRestart(t, []string{"c1", "c2", "c3"}, true, []string{"c2"}, "HEALTH_TIMEOUT=3")
	if r.err == nil {
		t.Fatalf("rolling restart succeeded with c2 never healthy:\n%s", r.stdout)
	}
	if !slices.Equal(r.restartedInTurn, []string{"c1", "c2"}) {
		t.Errorf("restarted %q, want c1 and c2 and then a stop", r.restartedInTurn)
	}
	if want := "c2 not healthy 3s after restart (health: unhealthy); stopping here, later containers not restarted"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	t.Logf("gave up after %s", time.Since(t0).Round(time.Millisecond))
}

// Without a running lb it waits for Docker's health only; with no worker
// running it says so.
func TestRollingRestartScriptEdges(t *testing.T) {
	r := runRollingRestart(t, []string{"c1", "c2"}, false, nil)
	if r.err != nil || !slices.Equal(r.restartedInTurn, []string{"c1", "c2"}) || !strings.Contains(r.stdout, "no running lb container") {
		t.Errorf("without lb: %v, restarted %q\n%s%s", r.err, r.restartedInTurn, r.stdout, r.stderr)
	}
	for _, c := range r.calls {
		if strings.HasPrefix(c, "exec ") {
			t.Errorf("without lb it ran %q", c)
		}
	}
	r = runRollingRestart(t, nil, true, nil)
	if r.err == nil || !strings.Contains(r.stderr, "no running worker container in project notify") || len(r.restartedInTurn) != 0 {
		t.Errorf("with no worker: %v, restarted %q, stderr %q", r.err, r.restartedInTurn, r.stderr)
	}
}
