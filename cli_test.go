package main

import (
	"bytes"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// commandOutput runs the command line with args in the current
// environment.
func commandOutput(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = command(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCommandHelp(t *testing.T) {
	for _, arg := range []string{"help", "-h", "--help"} {
		code, out, _ := commandOutput(t, arg)
		if code != exitOK {
			t.Errorf("%s: exit %d, want 0", arg, code)
		}
		for _, v := range describeVariables() {
			if !strings.Contains(out, v.name) {
				t.Errorf("%s: usage lacks %s", arg, v.name)
			}
		}
		for _, want := range []string{`NOTIFY_SESSION_QUEUE +32 `, `NOTIFY_ADDR +:8888 `, `NOTIFY_DRAIN_DELAY +5s `, `NOTIFY_DEMO +\(empty\) +the demo page at /demo/: on, off`, `\n  check `, `\n  healthcheck `, `\n  version `} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("%s: usage lacks %q:\n%s", arg, want, out)
			}
		}
	}
}

func TestCommandVersion(t *testing.T) {
	code, out, _ := commandOutput(t, "version")
	if code != exitOK || !strings.HasPrefix(out, "notify-worker ") || !strings.Contains(out, "commit") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

// An unknown argument is refused; it does not start the worker.
func TestCommandUnknownArgument(t *testing.T) {
	for _, args := range [][]string{{"serve"}, {"--port=1"}, {"help", "me"}} {
		code, out, errOut := commandOutput(t, args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, "notify-worker help") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and a pointer to help", args, code, out, errOut)
		}
	}
}

// check reports every problem, each naming its variable, and exits 2; an
// unknown NOTIFY_* variable is one of them.
func TestCommandCheck(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		code, out, errOut := commandOutput(t, "check")
		if code != exitOK || out != "configuration ok\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("problems", func(t *testing.T) {
		t.Setenv("NOTIFY_SESSION_QUEUE", "0")
		t.Setenv("NOTIFY_AUTH", "JWT")
		t.Setenv("NOTIFY_MAX_CONNECTION", "5")
		t.Setenv("NOTIFY_DEMO", "yes")
		code, _, errOut := commandOutput(t, "check")
		if code != exitUsage {
			t.Errorf("exit %d, want 2", code)
		}
		for _, want := range []string{
			"notify-worker: config: NOTIFY_SESSION_QUEUE: ",
			"notify-worker: config: NOTIFY_AUTH: \"JWT\" is neither none nor jwt",
			"notify-worker: config: NOTIFY_DEMO: \"yes\" is neither on nor off (empty: on when NOTIFY_AUTH=none)",
			"notify-worker: config: NOTIFY_MAX_CONNECTION is not a notify-worker setting and is ignored; did you mean NOTIFY_MAX_CONNECTIONS?",
		} {
			if !strings.Contains(errOut, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errOut)
			}
		}
	})
	t.Run("wrong type", func(t *testing.T) {
		t.Setenv("NOTIFY_SHUTDOWN_TIMEOUT", "15")
		code, _, errOut := commandOutput(t, "check")
		if code != exitUsage || !strings.Contains(errOut, "NOTIFY_SHUTDOWN_TIMEOUT") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
}

// A configuration error stops the worker before anything starts (no
// embedded NATS, no listener), names its variable, and exits 2.
func TestConfigErrorBeforeStart(t *testing.T) {
	for _, tc := range []struct {
		name, key, value, want string
	}{
		{"short secret", "NOTIFY_JWT_SECRET", "short", "NOTIFY_JWT_SECRET"},
		{"queue 0", "NOTIFY_SESSION_QUEUE", "0", "NOTIFY_SESSION_QUEUE"},
		{"lanes -1", "NOTIFY_DISPATCH_LANES", "-1", "NOTIFY_DISPATCH_LANES"},
		{"bad origin", "NOTIFY_ALLOWED_ORIGINS", "https://app.example.com/path", "NOTIFY_ALLOWED_ORIGINS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NOTIFY_AUTH", "jwt")
			t.Setenv("NOTIFY_JWT_SECRET", strings.Repeat("s", 32))
			t.Setenv("NOTIFY_ADDR", "127.0.0.1:0")
			t.Setenv("NOTIFY_EMBEDDED_NATS_ADDR", "127.0.0.1:0")
			t.Setenv(tc.key, tc.value)
			var code int
			var out, stderr bytes.Buffer
			done := make(chan struct{})
			go func() {
				defer close(done)
				code = command(nil, &out, &stderr)
			}()
			select {
			case <-done:
			case <-time.After(waitTimeout):
				// It started: stop it (run handles SIGINT while it serves).
				_ = syscall.Kill(syscall.Getpid(), syscall.SIGINT)
				<-done
			}
			errOut := stderr.String()
			if code != exitUsage || !strings.Contains(errOut, "notify-worker: config: "+tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 naming %s", code, errOut, tc.want)
			}
			if strings.Contains(errOut, "NATS mode") || strings.Contains(errOut, "nats connected") {
				t.Errorf("something started before the configuration was checked:\n%s", errOut)
			}
		})
	}
}
