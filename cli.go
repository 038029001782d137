package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"
)

// Exit codes of the notify-worker command.
const (
	exitOK     = 0
	exitFailed = 1 // the worker stopped on an error, or a health check failed
	exitUsage  = 2 // a bad argument or a bad configuration
)

const usageHead = `Usage: notify-worker [command]

With no command, runs the worker, configured by the NOTIFY_* environment
variables below (README.md explains each).

Commands:
  help          print this help
  version       print the version and exit
  check         validate the configuration in the environment and exit:
                0 when it is valid, 2 with every problem otherwise (an unknown
                NOTIFY_* variable is a problem here); starts nothing
  healthcheck   ask the worker on NOTIFY_ADDR whether it is ready (/readyz);
                exit 0 if so, 1 otherwise (the container health check)

Environment:
`

// command runs the notify-worker command line and returns its exit code.
func command(args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 {
		fmt.Fprintf(stderr, "notify-worker: one command at most, got %q; see notify-worker help\n", args)
		return exitUsage
	}
	cmd := ""
	if len(args) == 1 {
		cmd = args[0]
	}
	switch cmd {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	case "version", "-version", "--version":
		b := readBuildInfo()
		fmt.Fprintf(stdout, "notify-worker %s (commit %s, %s)\n", b.Version, b.Commit, b.GoVersion)
		return exitOK
	case "", "check", "healthcheck":
	default:
		fmt.Fprintf(stderr, "notify-worker: unknown command %q; see notify-worker help\n", cmd)
		return exitUsage
	}

	cfg, err := loadConfig()
	if err != nil {
		return configFailed(stderr, err)
	}
	unknown := unknownVariables(os.Environ())
	switch cmd {
	case "healthcheck":
		if err := healthcheck(context.Background(), cfg.Addr, 3*time.Second); err != nil {
			fmt.Fprintln(stderr, "notify-worker: healthcheck:", err)
			return exitFailed
		}
		return exitOK
	case "check":
		_, err := cfg.plan()
		var problems []error
		if ce := (*configError)(nil); errors.As(err, &ce) {
			problems = ce.problems
		}
		for _, u := range unknown {
			problems = append(problems, errors.New(u))
		}
		if len(problems) > 0 {
			return configFailed(stderr, &configError{problems: problems})
		}
		fmt.Fprintln(stdout, "configuration ok")
		return exitOK
	}

	log, err := newLogger(cfg, stderr)
	if err != nil {
		return configFailed(stderr, err)
	}
	for _, u := range unknown {
		log.Warn(u)
	}
	if err := run(context.Background(), cfg, log, nil); err != nil {
		if ce := (*configError)(nil); errors.As(err, &ce) {
			return configFailed(stderr, err)
		}
		log.Error("notify-worker stopped", "err", err)
		return exitFailed
	}
	return exitOK
}

// configFailed prints each configuration problem on a line of its own.
func configFailed(stderr io.Writer, err error) int {
	problems := []error{err}
	if ce := (*configError)(nil); errors.As(err, &ce) {
		problems = ce.problems
	}
	for _, p := range problems {
		fmt.Fprintln(stderr, "notify-worker: config:", p)
	}
	return exitUsage
}

// usage lists every variable with its default, from Config's tags.
func usage(w io.Writer) {
	io.WriteString(w, usageHead)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, v := range describeVariables() {
		def := v.def
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", v.name, def, v.desc)
	}
	tw.Flush()
}
