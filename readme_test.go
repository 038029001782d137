package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeBlock returns the first fenced block of lang after heading in
// README.md.
func readmeBlock(t *testing.T, heading, lang string) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q", heading)
	}
	_, block, ok := strings.Cut(section, "```"+lang+"\n")
	if !ok {
		t.Fatalf("README.md's %q has no %s block", heading, lang)
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// The Go producer in README.md builds as pasted, in a module of its own
// that points at this repository with the replace line README.md gives.
func TestREADMEGoProducerCompiles(t *testing.T) {
	buildREADMEProgram(t, readmeBlock(t, "## Publishing from Go", "go"))
}

// So does the durable producer, with the same go.mod.
func TestREADMEDurableProducerCompiles(t *testing.T) {
	buildREADMEProgram(t, readmeBlock(t, "## Publishing durably", "go"))
}

// buildREADMEProgram builds src in a module of its own, with the go.mod
// lines of "Publishing from Go".
func buildREADMEProgram(t *testing.T, src string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a program")
	}
	mod := readmeBlock(t, "## Publishing from Go", "text")
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mod = strings.ReplaceAll(mod, "../notify-worker", root)
	gomod := "module example.com/producer\n\ngo 1.26.0\n\n" + mod
	sum, err := os.ReadFile("go.sum")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"main.go": src, "go.mod": gomod, "go.sum": string(sum)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"mod", "tidy"}, {"vet", "."}, {"build", "-o", os.DevNull, "."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s\nmain.go:\n%s\ngo.mod:\n%s", strings.Join(args, " "), err, out, src, gomod)
		}
	}
}
