package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// newLogger builds the process's one logger from NOTIFY_LOG_LEVEL and
// NOTIFY_LOG_FORMAT. Durations are written as text ("15s") in both
// formats; slog's JSON handler would write nanoseconds.
func newLogger(c Config, out io.Writer) (*slog.Logger, error) {
	level, err := parseLogLevel(c.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envName("LogLevel"), err)
	}
	format, err := logFormat(c.LogFormat)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envName("LogFormat"), err)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(out, opts)), nil
	}
	return slog.New(slog.NewTextHandler(out, opts)), nil
}

func parseLogLevel(s string) (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return level, nil
}

func logFormat(s string) (string, error) {
	switch f := strings.ToLower(s); f {
	case "text", "json":
		return f, nil
	}
	return "", fmt.Errorf("%q is neither text nor json", s)
}

func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
