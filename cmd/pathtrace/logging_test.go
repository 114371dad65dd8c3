package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	log, err := newLogger("json", "warn", &b)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("not shown")
	log.Warn("shown", "iface", "veth1")
	var rec map[string]any
	if err := json.Unmarshal(b.Bytes(), &rec); err != nil || rec["level"] != "WARN" || rec["msg"] != "shown" || rec["iface"] != "veth1" {
		t.Errorf("json at warn: %q (%v)", b.String(), err)
	}
	for _, tc := range [][2]string{{"yaml", "info"}, {"text", "loud"}} {
		if _, err := newLogger(tc[0], tc[1], &b); err == nil {
			t.Errorf("newLogger(%q, %q): no error", tc[0], tc[1])
		}
	}
	// Shared code's lines become records: warnings at warn level, the prefix gone.
	b.Reset()
	log, _ = newLogger("text", "info", &b)
	logWriter{log}.Write([]byte("pathtrace agent: names on (3 pods)\npathtrace agent: warning: API server unreachable\n"))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `level=INFO msg="names on (3 pods)"`) ||
		!strings.Contains(lines[1], `level=WARN msg="API server unreachable"`) {
		t.Errorf("logWriter:\n%s", b.String())
	}
}

// The agent with --log-format json: every line it writes is a JSON record, from the
// start (the modes, the layout) to the end (everything detached); a bad format is a
// usage error before anything is attached.
func TestAgentLogJSON(t *testing.T) {
	needLab(t)
	if code, stderr := runBin(t, nil, "agent", "--log-format", "yaml"); code != 2 || !strings.Contains(stderr, `--log-format "yaml": want text or json`) {
		t.Errorf("--log-format yaml: exit %d\n%s", code, stderr)
	}
	a := startAgent(t, "node-b", "--log-format", "json")
	a.terminate(t)
	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(a.stderr.String()), "\n") {
		var rec struct {
			Time, Level, Msg string
			Node             string `json:"node"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Time == "" || rec.Level == "" || rec.Msg == "" {
			t.Errorf("not a JSON record (%v): %q", err, line)
			continue
		}
		msgs = append(msgs, rec.Msg)
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"started: tc via", "layout: ", "stopped, everything detached"} {
		if !strings.Contains(all, want) {
			t.Errorf("no record %q among:\n%s", want, all)
		}
	}
}
