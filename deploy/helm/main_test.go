package helm

import (
	"bytes"
	"context"
	"errors"
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

// workDir holds what the tests build and write.
var workDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "notify-helm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// The files under test, relative to this directory.
const (
	chartDir         = "notify-worker"
	valuesFile       = "notify-worker/values.yaml"
	productionValues = "notify-worker/ci/production-values.yaml"
	configGo         = "../../config.go"
)

// The release every rendering uses.
const (
	releaseName = "notify"
	namespace   = "notify"
	fullname    = "notify-notify-worker"
)

// kubeVersion is the Kubernetes version helm renders for; a helm built with
// go install does not know the one it was released with.
const kubeVersion = "1.31.0"

// helmTimeout bounds one helm command; it only turns a hang into a failure.
const helmTimeout = time.Minute

// helmBinary is $HELM, or helm on PATH; check.sh installs one.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h, err := exec.LookPath("helm")
	if err != nil {
		t.Fatalf("no helm binary: set HELM or put helm on PATH (deploy/helm/check.sh installs it): %v", err)
	}
	return h
}

// runHelm runs helm with args and returns its stdout, or an error holding
// its stderr.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), helmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("helm %s: still running after %s", strings.Join(args, " "), helmTimeout)
	}
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
		}
		return stdout.String(), fmt.Errorf("helm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// readInputs reads the chart's files and config.go once, so that go test's
// cache, which only sees the files a test opens, retests after a change to
// any of them (helm reads the chart out of its sight).
var readInputs = sync.OnceValue(func() error {
	if _, err := os.ReadFile(configGo); err != nil {
		return err
	}
	return filepath.WalkDir(chartDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		_, err = os.ReadFile(path)
		return err
	})
})

// template renders the chart as release "notify" with the extra
// arguments (-f file, --set key=value).
func template(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if err := readInputs(); err != nil {
		t.Fatal(err)
	}
	return runHelm(t, append([]string{"template", releaseName, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, args...)...)
}

// mustRender renders the chart and decodes every manifest strictly.
func mustRender(t *testing.T, args ...string) *release {
	t.Helper()
	out, err := template(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeRelease(out)
	if err != nil {
		t.Fatalf("helm template %s: %v", strings.Join(args, " "), err)
	}
	return r
}
