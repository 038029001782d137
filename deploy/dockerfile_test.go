package deploy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/version"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// dockerfileLines returns the Dockerfile's instructions, continuation
// lines joined, comments dropped.
func dockerfileLines(t *testing.T) [][]string {
	t.Helper()
	var lines [][]string
	for line := range strings.Lines(strings.ReplaceAll(mustReadFile(t, dockerfile), "\\\n", " ")) {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		lines = append(lines, fields)
	}
	return lines
}

// dockerfileEnv returns the image's ENV settings.
func dockerfileEnv(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, f := range dockerfileLines(t) {
		if f[0] != "ENV" {
			continue
		}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("Dockerfile ENV %q: use the KEY=value form", kv)
			}
			env[k] = strings.Trim(v, `"`)
		}
	}
	return env
}

// The image's own settings are valid ones, it exposes the port it listens
// on, checks its health the way compose does, and does not run as root.
func TestDockerfile(t *testing.T) {
	env := dockerfileEnv(t)
	if stdout, stderr, code := check(t, env); code != 0 || strings.TrimSpace(stdout) != "configuration ok" {
		t.Errorf("notify-worker check on the image's ENV %v: exit %d, %s%s", env, code, stdout, stderr)
	}
	wantPort := strconv.Itoa(int(addrPort(t, setting(t, env, "NOTIFY_ADDR"))))

	var expose, healthcheck, user, stopSignal string
	for _, f := range dockerfileLines(t) {
		switch f[0] {
		case "EXPOSE":
			expose = f[1]
		case "HEALTHCHECK":
			healthcheck = strings.Join(f, " ")
		case "USER":
			user = f[1]
		case "STOPSIGNAL":
			stopSignal = f[1]
		}
	}
	if expose != wantPort {
		t.Errorf("EXPOSE %q, the image's NOTIFY_ADDR listens on %s", expose, wantPort)
	}
	if !strings.Contains(healthcheck, `CMD ["/notify-worker", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %q does not run the healthcheck mode", healthcheck)
	}
	if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
		t.Errorf("USER %q: the image must not run as root", user)
	}
	if stopSignal != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q, want SIGTERM (it starts the drain)", stopSignal)
	}
}

// The golang image that builds the worker has a Go that go.mod's go line
// allows: a floating tag (golang:1.26) satisfies go 1.26.x at its newest
// patch, a pinned one (golang:1.26.1) must be at least the go line.
func TestDockerfileGoVersion(t *testing.T) {
	var tag string
	for _, f := range dockerfileLines(t) {
		if f[0] == "FROM" {
			if image, tg, ok := strings.Cut(f[1], ":"); ok && (image == "golang" || strings.HasSuffix(image, "/golang")) {
				tag = tg
			}
		}
	}
	if tag == "" {
		t.Fatal("Dockerfile has no FROM golang:<version> build stage")
	}
	goLine := goModGo(t, rootGoMod)
	if ok, why := goTagSatisfies(tag, goLine); !ok {
		t.Errorf("FROM golang:%s, go.mod says go %s: %s", tag, goLine, why)
	}
}

func TestGoTagSatisfies(t *testing.T) {
	for _, tc := range []struct {
		tag, goLine string
		ok          bool
	}{
		{"1.26", "1.26.0", true},
		{"1.26", "1.26.3", true}, // the tag follows the newest 1.26.x
		{"1.26-bookworm", "1.26.0", true},
		{"1.26.1-alpine", "1.26.0", true},
		{"1.26.0", "1.26.0", true},
		{"1.27", "1.26.0", true},
		{"1.25", "1.26.0", false},
		{"1.26.0", "1.26.2", false},
		{"1.25.7", "1.26.0", false},
		{"latest", "1.26.0", false},
		{"1", "1.26.0", false},
	} {
		if ok, why := goTagSatisfies(tc.tag, tc.goLine); ok != tc.ok {
			t.Errorf("golang:%s for go %s = %v (%s), want %v", tc.tag, tc.goLine, ok, why, tc.ok)
		}
	}
}

// goTagSatisfies reports whether the golang image tag has a Go release
// that go.mod's go line allows, and if not, why.
func goTagSatisfies(tag, goLine string) (bool, string) {
	v, _, _ := strings.Cut(tag, "-") // 1.26-bookworm, 1.26.1-alpine
	gv := "go" + v
	if !version.IsValid(gv) || strings.Count(v, ".") < 1 {
		return false, "the tag names no Go release (use golang:<major>.<minor>[.<patch>])"
	}
	need := "go" + goLine
	if strings.Count(v, ".") == 1 {
		// A floating tag: compare language versions.
		if version.Compare(gv, version.Lang(need)) < 0 {
			return false, "its Go is older than the go line"
		}
		return true, ""
	}
	if version.Compare(gv, need) < 0 {
		return false, "its Go is older than the go line"
	}
	return true, ""
}

// goModGo returns a go.mod's go line.
func goModGo(t *testing.T, path string) string {
	t.Helper()
	for line := range strings.Lines(mustReadFile(t, path)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s has no go line", path)
	return ""
}

// configDefault returns the default of the worker setting NOTIFY_<name>,
// read from the struct tag in the service module's sources.
func configDefault(t *testing.T, name string) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		var def string
		var found bool
		ast.Inspect(f, func(n ast.Node) bool {
			field, ok := n.(*ast.Field)
			if !ok || field.Tag == nil {
				return true
			}
			tag, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				return true
			}
			if st := reflect.StructTag(tag); st.Get("envconfig") == name {
				def, found = st.Get("default"), true
			}
			return true
		})
		if found {
			return def
		}
	}
	t.Fatalf("no Config field with envconfig:%q in %s", name, repoRoot)
	return ""
}
