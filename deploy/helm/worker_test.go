package helm

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// repoRoot is the worker's module.
const repoRoot = "../.."

// workerBinary builds the worker from repoRoot once per test run, into
// workDir.
var workerBinary = sync.OnceValues(func() (string, error) {
	// go test caches a pass until a file a test opened changes; the go
	// command reads the worker's sources out of its sight.
	if err := readGoSources(repoRoot); err != nil {
		return "", err
	}
	bin := filepath.Join(workDir, "notify-worker")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %v\n%s", repoRoot, err, out)
	}
	return bin, nil
})

// readGoSources reads the worker module's Go files and go.mod/go.sum,
// leaving out the other modules (deploy/) and testdata.
func readGoSources(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || name == "node_modules" || strings.HasPrefix(name, ".") || path == filepath.Join(root, "deploy")) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum" {
			_, err = os.ReadFile(path)
		}
		return err
	})
}

// standInSecret is the value of every variable read from a Secret: 48
// bytes, enough for NOTIFY_JWT_SECRET and NOTIFY_API_KEY.
const standInSecret = "stand-in-secret-of-forty-eight-bytes-0123456789ab"

// TestWorkerAcceptsRenderedEnv runs `notify-worker check` with exactly the
// environment the chart gives the container, for the defaults and the
// production values: the worker validates every setting (types, ranges,
// key sizes, files) and refuses a variable that is not a setting.
func TestWorkerAcceptsRenderedEnv(t *testing.T) {
	bin, err := workerBinary()
	if err != nil {
		t.Fatal(err)
	}
	// The production values read the NATS CA from a mounted Secret; a file
	// that exists stands in for it.
	caFile := filepath.Join(workDir, "nats-ca.crt")
	if err := os.WriteFile(caFile, []byte("stand-in"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"production", []string{"-f", productionValues, "--set", "env.NOTIFY_NATS_TLS_CA=" + caFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, tc.args...)
			d, err := r.deployment()
			if err != nil {
				t.Fatal(err)
			}
			env, err := containerEnv(d.Spec.Template.Spec.Containers[0])
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), helmTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "check")
			cmd.Env = env
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), "configuration ok") {
				t.Errorf("notify-worker check on the rendered environment: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
			}
		})
	}
}

// containerEnv turns a container's variables into KEY=value pairs as the
// kubelet would: a Secret's key becomes standInSecret, the pod's name a
// name of the Deployment's form.
func containerEnv(c corev1.Container) ([]string, error) {
	var env []string
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.SecretKeyRef != nil:
			v = standInSecret
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			v = fullname + "-7d9f8b6c4-x2x5q"
		default:
			return nil, fmt.Errorf("%s: a source the test does not resolve", e.Name)
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}
