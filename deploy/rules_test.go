package deploy_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The alert rules ship twice: chart/files/pathtrace-rules.yaml, a plain rules file (and
// the Helm chart's), and prometheusrule.yaml, the same groups as a PrometheusRule.

const (
	rulesFile     = "chart/files/pathtrace-rules.yaml"
	rulesUnitTest = "testdata/pathtrace-rules.test.yaml"
)

// ruleGroup and prometheusRule (strict: unknown fields are errors) are in
// manifests_test.go.

func readRulesFile(t *testing.T) []ruleGroup {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []ruleGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return f.Groups
}

// TestPrometheusRuleMatchesRulesFile: the PrometheusRule's groups are the rules file's,
// field for field, and it is in the pathtrace namespace with the agents' labels.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	m := load(t)
	if m.rule == nil {
		t.Fatal("no PrometheusRule in the manifests")
	}
	if m.fileOf["PrometheusRule"] != "prometheusrule.yaml" || m.rule.Namespace != "pathtrace" {
		t.Errorf("PrometheusRule in %s, namespace %q; want prometheusrule.yaml, pathtrace", m.fileOf["PrometheusRule"], m.rule.Namespace)
	}
	file := readRulesFile(t)
	if len(file) == 0 {
		t.Fatalf("%s: no group", rulesFile)
	}
	if !reflect.DeepEqual(m.rule.Spec.Groups, file) {
		a, _ := json.MarshalIndent(m.rule.Spec.Groups, "", " ")
		b, _ := json.MarshalIndent(file, "", " ")
		t.Errorf("prometheusrule.yaml's groups differ from %s:\n%s\n---\n%s", rulesFile, a, b)
	}
}

// TestAlertRulesContent: every alert has a severity, a summary, a description and a
// runbook naming the pathtrace or kubectl command to run; the alerts the issue asks for
// are there.
func TestAlertRulesContent(t *testing.T) {
	var names []string
	for _, g := range readRulesFile(t) {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			names = append(names, r.Alert)
			if !slices.Contains([]string{"info", "warning", "critical"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q", r.Alert, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			if rb := r.Annotations["runbook"]; !strings.Contains(rb, "pathtrace ") {
				t.Errorf("%s: runbook %q names no pathtrace command", r.Alert, rb)
			}
		}
	}
	for _, want := range []string{"PathtraceDropsRising", "PathtraceHopLatencyHigh", "PathtraceEventsLost",
		"PathtraceAgentDown", "PathtraceAgentsAbsent", "PathtraceConntrackFull"} {
		if !slices.Contains(names, want) {
			t.Errorf("no alert %s (have %v)", want, names)
		}
	}
}

// TestAlertRules runs promtool: check rules on the rules file, then the unit tests in
// testdata, where each alert fires on a fault's series and stays quiet on a normal one.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool not found: %v (apt-get install prometheus)", err)
		}
		t.Skipf("promtool not found: %v", err)
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesUnitTest}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
	// The unit tests cover every alert of the file.
	data, err := os.ReadFile(filepath.Clean(rulesUnitTest))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range readRulesFile(t) {
		for _, r := range g.Rules {
			if r.Alert != "" && !strings.Contains(string(data), "alertname: "+r.Alert+"\n") {
				t.Errorf("%s: no promtool unit test in %s", r.Alert, rulesUnitTest)
			}
		}
	}
}
