package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// runPluginBin runs the binary as kubectl runs a plugin: kubectl-pathtrace on PATH.
func runPluginBin(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	link := filepath.Join(t.TempDir(), pluginName)
	if err := os.Symlink(filepath.Join(binDir, "pathtrace"), link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stdout.String(), stderr.String()
	} else if err != nil {
		t.Fatalf("run %s: %v", pluginName, err)
	}
	return 0, stdout.String(), stderr.String()
}

func TestIsPlugin(t *testing.T) {
	for argv0, want := range map[string]bool{"/usr/local/bin/kubectl-pathtrace": true, "kubectl-pathtrace": true,
		"pathtrace": false, "/usr/bin/pathtrace": false, "kubectl-pathtrace-old": false} {
		if isPlugin(argv0) != want {
			t.Errorf("isPlugin(%q) = %v", argv0, !want)
		}
	}
}

// As kubectl pathtrace: its own usage, --node and the filters among follow's flags,
// the agents of the cluster by default, and mistakes told as the plugin's.
func TestPluginUsage(t *testing.T) {
	code, _, stderr := runPluginBin(t)
	if code != 2 || !strings.Contains(stderr, "kubectl pathtrace follow") {
		t.Errorf("no command: exit %d\n%s", code, stderr)
	}
	code, stdout, _ := runPluginBin(t, "help", "follow")
	for _, want := range []string{"--verdict", "--node strings", "--namespace", "-o, --output string", `(default "compact")`, `(default [k8s])`} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("help follow: exit %d, no %q in\n%s", code, want, stdout)
		}
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"follow", "--verdict", "drop", "10.0.0.1"}, 2, `kubectl pathtrace: --verdict: verdict "drop": want one of`},
		{[]string{"follow", "-o", "yaml", "10.0.0.1"}, 2, `-o "yaml": want text, compact, json or html`},
		{[]string{"follow", "--pod", "a/b/c"}, 2, `--pod "a/b/c": want NAME or NAMESPACE/NAME`},
		{[]string{"follow"}, 2, "or --pod"},
		{[]string{"doctor", "-o", "yaml"}, 2, `-o "yaml": want text or json`},
		{[]string{"doctor", "--kubeconfig", "/nonexistent/kubeconfig"}, 1, "/nonexistent/kubeconfig"},
		{[]string{"follow", "--kubeconfig", "/nonexistent/kubeconfig", "10.0.0.1"}, 1, "/nonexistent/kubeconfig"},
		{[]string{"top"}, 2, `unknown command "top"`},
	} {
		code, _, stderr := runPluginBin(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("kubectl pathtrace %s: exit %d, want %d and %q:\n%s", strings.Join(tc.args, " "), code, tc.code, tc.want, stderr)
		}
	}
}

func TestOutputConfig(t *testing.T) {
	o := &followOpts{output: "text", pods: []string{"api-1", "kube-system/dns-0"}, namespaces: []string{"shop"}, verdicts: []string{"Dropped"}}
	args, err := o.outputConfig([]string{"10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.1", "pod/shop/api-1", "pod/kube-system/dns-0"}; !slices.Equal(args, want) {
		t.Errorf("args %q, want %q", args, want)
	}
	if o.output != "compact" || !slices.Equal(o.filter.Verdicts, []string{"dropped"}) || !slices.Equal(o.filter.Namespaces, []string{"shop"}) {
		t.Errorf("a filter with text output: output %q filter %+v, want compact", o.output, o.filter)
	}
	o = &followOpts{output: "compact", json: true}
	if _, err := o.outputConfig(nil); err != nil || o.output != "json" || o.lines() {
		t.Errorf("--json: output %q lines %v err %v, want json straight through", o.output, o.lines(), err)
	}
	o = &followOpts{output: "text", pods: []string{"api"}, namespaces: []string{"a", "b"}}
	if _, err := o.outputConfig(nil); err == nil || !strings.Contains(err.Error(), "write NAMESPACE/NAME") {
		t.Errorf("--pod NAME with two namespaces: %v", err)
	}
}
