package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// newLogger is the agent's logger: a record per line on w, as key=value text or JSON,
// from level up.
func newLogger(format, level string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "info":
		lv = slog.LevelInfo
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// loggedError is an error the logger has told already: run exits 1 without printing it.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// logWriter hands what shared code prints for a person (names' status, the rule
// reader's warnings: "pathtrace agent: warning: ...") to the logger, a record per line,
// at warn level for warnings, else info.
type logWriter struct{ log *slog.Logger }

func (l logWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg := strings.TrimPrefix(string(line), "pathtrace agent: ")
		if msg == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(msg, "warning: "); ok {
			l.log.Warn(rest)
		} else {
			l.log.Info(msg)
		}
	}
	return len(p), nil
}
