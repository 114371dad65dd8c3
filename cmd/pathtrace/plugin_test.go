package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pluginLink is the binary as kubectl runs the plugin: kubectl-pathtrace on PATH.
func pluginLink(t *testing.T) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), pluginName)
	if err := os.Symlink(filepath.Join(binDir, "pathtrace"), link); err != nil {
		t.Fatal(err)
	}
	return link
}

// runPluginBin runs kubectl pathtrace with args.
func runPluginBin(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(pluginLink(t), args...)
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

// pluginThroughAgents is kubectl pathtrace against the agents TestKubeAgents started
// (node-a, node-b; ports by node), found through the API server: doctor asks each for
// its state as alice (kc); bob (bobKC), whom RBAC does not let follow, is refused by
// both; follow --verdict keeps the dropped flow only, as a compact line; --node asks
// one agent.
func pluginThroughAgents(t *testing.T, kc, bobKC string, agents []*agentProc, ports map[string]string) {
	t.Helper()
	code, stdout, stderr := runPluginBin(t, "doctor", "--kubeconfig", kc)
	if code != 0 {
		t.Fatalf("kubectl pathtrace doctor: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, a := range agents {
		head := "node " + a.node + " (agent 127.0.0.1:" + ports[a.node] + "):"
		i := strings.Index(stdout, head)
		if i < 0 {
			t.Errorf("doctor: no %q in\n%s", head, stdout)
			continue
		}
		for _, want := range []string{"  kernel: ", "  mode: tc via", "  layout: ", "  interfaces ("} {
			if !strings.Contains(stdout[i:], want) {
				t.Errorf("doctor: node %s has no %q:\n%s", a.node, want, stdout[i:])
			}
		}
		if !strings.Contains(a.stderr.String(), "user system:serviceaccount:oncall:alice (kube) asked for the agent's state") {
			t.Errorf("agent of %s did not log the doctor request:\n%s", a.node, a.stderr.String())
		}
	}
	code, stdout, _ = runPluginBin(t, "doctor", "--kubeconfig", kc, "--node", "node-b", "-o", "json")
	var d agentDoctor
	if code != 0 || strings.Count(stdout, "\n") != 1 || json.Unmarshal([]byte(stdout), &d) != nil || d.Node != "node-b" || len(d.State) < 4 {
		t.Errorf("doctor --node node-b -o json: exit %d\n%s", code, stdout)
	}
	code, stdout, stderr = runPluginBin(t, "doctor", "--kubeconfig", bobKC)
	if code != 1 || strings.Count(stdout, "system:serviceaccount:oncall:bob may not create follows.pathtrace.io") != 2 || !strings.Contains(stderr, "2 of 2 agents did not answer") {
		t.Errorf("doctor as bob: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if code, _, stderr = runPluginBin(t, "follow", "--kubeconfig", kc, "--node", "node-z", "10.244.2.57"); code != 1 ||
		!strings.Contains(stderr, "no agent on node node-z (agents run on: node-a, node-b)") {
		t.Errorf("follow --node node-z: exit %d\n%s", code, stderr)
	}

	// A delivered flow (a-api → api-b) and one the policy fault drops (b-api → redis on
	// node-a): --verdict dropped prints drops only, a line each.
	fault(t, "policy")
	f := followBin(t, "plugin", pluginLink(t), []string{"--kubeconfig", kc, "--verdict", "dropped", "--proto", "tcp", "10.244.2.57:8080", "10.244.1.42:6379"})
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	if out, err := pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "500ms"); err == nil {
		t.Fatalf("b-api got through the policy to redis: %s", out)
	}
	f.end(t)
	out := strings.TrimSpace(f.stdout.String())
	lines := strings.Split(out, "\n")
	if !strings.Contains(out, "TCP 10.244.2.57:") || !strings.Contains(out, "-> 10.244.1.42:6379 (default/redis) DROPPED") {
		t.Errorf("follow --verdict dropped: no line for the SYN the policy dropped:\n%s\n%s", out, f.stderr.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, " DROPPED") || strings.HasPrefix(l, "{") {
			t.Errorf("not a dropped flow's compact line: %q", l)
		}
	}
	if !strings.Contains(f.stderr.String(), fmt.Sprintf("pathtrace: %d of ", len(lines))) || !strings.Contains(f.stderr.String(), "flows matched the filters") {
		t.Errorf("follow did not say how many flows matched:\n%s", f.stderr.String())
	}

	// -o html through the agents: the page, with the drop marked, on standard output.
	f = followBin(t, "plugin", pluginLink(t), []string{"--kubeconfig", kc, "--verdict", "dropped", "-o", "html", "--proto", "tcp", "10.244.1.42:6379"})
	if out, err := pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "500ms"); err == nil {
		t.Fatalf("b-api got through the policy to redis: %s", out)
	}
	f.end(t)
	page := f.stdout.String()
	if !strings.HasPrefix(strings.TrimSpace(strings.ToLower(page)), "<!doctype html") || !strings.Contains(page, `data-mark="drop"`) ||
		!strings.Contains(page, "10.244.1.42") || strings.Contains(page, `{"kind"`) {
		t.Errorf("follow -o html through the agents: not a page with the drop marked:\n%.3000s\n%s", page, f.stderr.String())
	}
}
