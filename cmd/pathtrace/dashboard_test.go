package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// The Grafana dashboard and the alert rules of deploy/, run against a real Prometheus
// that scrapes the agents of both lab nodes after faults (policy drops and a flood on
// node-b, the slow tunnel on node-a): every panel's query returns the series it should,
// and the alerts name what the faults did (drops rising, p99 over 10 ms, an agent down).

const (
	dashboardPath = "../../deploy/chart/files/pathtrace-dashboard.json"
	rulesPath     = "../../deploy/chart/files/pathtrace-rules.yaml"
)

// promSample is one series of an instant query's answer.
type promSample struct {
	labels map[string]string
	value  float64
}

func (s promSample) String() string {
	keys := make([]string, 0, len(s.labels))
	for k := range s.labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q ", k, s.labels[k])
	}
	return fmt.Sprintf("{%s} %g", strings.TrimSpace(b.String()), s.value)
}

// promSeries runs an instant query and returns every series of its answer.
func promSeries(t *testing.T, base, q string) []promSample {
	t.Helper()
	code, body := httpGet(t, base+"/api/v1/query?query="+url.QueryEscape(q))
	var r promResult
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != http.StatusOK || r.Status != "success" {
		t.Fatalf("query %s: %d %v %s", q, code, err, body)
	}
	var out []promSample
	for _, s := range r.Data.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		out = append(out, promSample{labels: s.Metric, value: v})
	}
	return out
}

// has is the first sample whose labels include all of want (name, value pairs).
func has(ss []promSample, want ...string) (promSample, bool) {
next:
	for _, s := range ss {
		for i := 0; i+1 < len(want); i += 2 {
			if s.labels[want[i]] != want[i+1] {
				continue next
			}
		}
		return s, true
	}
	return promSample{}, false
}

// grafanaVars are what the test puts for the dashboard's variables: Grafana's
// intervals as concrete windows, $job any job, $node a regex of the lab's nodes.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__range", "5m",
	"$job", ".+",
	"$node", "node-a|node-b",
)

func TestDashboardQueries(t *testing.T) {
	needLab(t)
	prom := needTool(t, "prometheus")
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if data, err = os.ReadFile(rulesPath); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	rulesAbs, err := filepath.Abs(rulesPath)
	if err != nil {
		t.Fatal(err)
	}

	// The faults: the policy drops on node-b (and a rule for a flood of datagrams), a
	// slow tunnel on node-a.
	fault(t, "policy")
	fault(t, "slow")
	floodRule := []string{"FORWARD", "-d", "10.244.1.42/32", "-p", "udp", "--dport", "9999", "-j", "DROP"}
	inNode(t, "node-b", append([]string{"iptables", "-w", "-I", "FORWARD", "1"}, floodRule[1:]...)...)
	t.Cleanup(func() {
		exec.Command("ip", append([]string{"netns", "exec", labPrefix + "-node-b", "iptables", "-w", "-D"}, floodRule...)...).Run()
	})
	api := labCluster(t)
	kc := api.Kubeconfig(t, api.Admin)
	na := startAgent(t, "node-a", "--sample", "1")
	// node-b: pods named in its drops; a drop-event budget of 1/s, so that a burst of
	// drops sheds events (events lost at stage ratelimit).
	nb := startAgent(t, "node-b", "--sample", "1", "--drop-rate", "1", "--kubeconfig", kc, "--metrics-pod-names", "10")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(nb.stderr.String(), "names on") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}

	// The targets get the labels the PodMonitor gives: job namespace/name, the node's
	// name (its relabeling), the pod and namespace of the agent (so the agent's own pod
	// and namespace labels become exported_pod and exported_namespace).
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	target := func(a *agentProc) string {
		return fmt.Sprintf("      - targets: ['%s']\n        labels: {node: %s, namespace: pathtrace, pod: pathtrace-agent-%s}\n", a.metrics, a.node, a.node)
	}
	if err := os.WriteFile(cfg, []byte(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ['`+rulesAbs+`']
scrape_configs:
  - job_name: pathtrace/pathtrace-agent
    static_configs:
`+target(na)+target(nb)), 0o644); err != nil {
		t.Fatal(err)
	}
	base, stderr := startPrometheus(t, prom, dir, cfg)

	// Twice, so that every counter has grown between two scrapes (a series' first
	// sample is no increase to rate()).
	for round := 0; round < 2; round++ {
		labTraffic(t)
		for i := 0; i < 2; i++ {
			pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "300ms")
		}
		if out, err := pod(t, "b-api", "udp", "10.244.1.42:9999", "--count", "5000", "--size", "16", "--interval", "0"); err != nil {
			t.Fatalf("flood: %v\n%s", err, out)
		}
		// A follower on node-b sees a datagram die in a pod (flagged: drop); one on
		// node-a sees the slow tunnel's queue (flagged: stall).
		fb := agentFollow(t, []*agentProc{nb}, "--proto", "udp", "10.244.2.57:9999")
		pod(t, "a-api", "udp", "10.244.2.57:9999", "--count", "1")
		fa := agentFollow(t, []*agentProc{na}, "--proto", "udp", "10.244.2.57:8080")
		pod(t, "a-api", "udp", "10.244.2.57:8080", "--count", "60", "--size", "1000")
		time.Sleep(time.Second) // the queue drains
		fa.stop(t)
		fb.stop(t)
		time.Sleep(3 * time.Second) // three scrapes
	}

	// Every panel's queries, the variables substituted, return series; the ones the
	// faults make are there with their labels.
	results := map[string][][]promSample{}
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			expr := grafanaVars.Replace(q.Expr)
			if strings.Contains(expr, "$") && !strings.Contains(p.Title, "pod") {
				t.Errorf("panel %q %s: a variable left in %s", p.Title, q.RefID, expr)
			}
			ss := promSeries(t, base, expr)
			if len(ss) == 0 {
				t.Errorf("panel %q %s: no series for %s", p.Title, q.RefID, expr)
			}
			results[p.Title] = append(results[p.Title], ss)
			t.Logf("panel %q %s: %d series, e.g. %v", p.Title, q.RefID, len(ss), first(ss))
		}
		if p.Type != "text" && len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
	}
	want := func(title string, i int, check func(ss []promSample) bool, what string) {
		t.Helper()
		rs, ok := results[title]
		if !ok || len(rs) <= i {
			t.Errorf("no panel %q with a query %d", title, i+1)
			return
		}
		if !check(rs[i]) {
			t.Errorf("panel %q query %d: want %s, got %v", title, i+1, what, rs[i])
		}
	}
	positive := func(want ...string) func([]promSample) bool {
		return func(ss []promSample) bool { s, ok := has(ss, want...); return ok && s.value > 0 }
	}
	for _, node := range []string{"node-a", "node-b"} {
		want("Agents up", 0, func(ss []promSample) bool { s, ok := has(ss, "node", node); return ok && s.value == 1 }, node+" up")
		want("Agents up", 1, func(ss []promSample) bool { s, ok := has(ss, "node", node); return ok && s.value == 1 }, node+" counters up")
	}
	want("Drops by reason", 0, positive("reason", "NETFILTER_DROP"), "NETFILTER_DROP > 0")
	want("Drops by reason", 0, positive("reason", "NO_SOCKET"), "NO_SOCKET > 0")
	want("Drops by hop class", 0, positive("hop", "netfilter", "direction", "ingress"), "netfilter ingress > 0")
	want("Drops by node, reason and hop", 0, positive("node", "node-b", "reason", "NETFILTER_DROP", "hop", "netfilter"), "node-b NETFILTER_DROP at netfilter")
	want("Drops by node, reason and hop", 0, func(ss []promSample) bool {
		_, ok := has(ss, "node", "node-a", "reason", "NETFILTER_DROP")
		return !ok
	}, "no NETFILTER_DROP on node-a")
	want("Drops by pod", 0, positive("node", "node-b", "exported_namespace", "default", "exported_pod", "api-b", "end", "src", "reason", "NETFILTER_DROP",
		"follow", "pathtrace follow --agents k8s $(kubectl -n default get pod api-b -o jsonpath={.status.podIP})"), "api-b's drops with its follow command")
	want("Hop latency", 0, func(ss []promSample) bool {
		n := 0.0
		for _, s := range ss {
			n += s.value
		}
		_, inf := has(ss, "le", "+Inf")
		return n > 0 && inf
	}, "buckets up to +Inf with samples")
	want("Hop latency p50 and p99", 1, func(ss []promSample) bool {
		for _, s := range ss {
			if s.value > 0.01 {
				return true
			}
		}
		return false
	}, "a hop pair with p99 over 10 ms (the slow tunnel)")
	want("Flagged flows by trigger", 0, positive("trigger", "drop"), "drop > 0")
	want("Flagged flows by trigger", 0, positive("trigger", "stall"), "stall > 0")
	want("Events lost by stage", 0, positive("stage", "ratelimit"), "ratelimit > 0 (--drop-rate 1)")

	// The latency panels' exemplars name flows, and the command the dashboard gives for
	// one ("pathtrace follow --agents k8s --proto PROTO SRC") is accepted and runs.
	var heatmap string
	for _, p := range dash.Panels {
		if p.Type == "heatmap" && len(p.Targets) > 0 {
			heatmap = grafanaVars.Replace(p.Targets[0].Expr)
		}
	}
	now := time.Now()
	code, body := httpGet(t, base+"/api/v1/query_exemplars?query="+url.QueryEscape(heatmap)+
		"&start="+strconv.FormatInt(now.Add(-5*time.Minute).Unix(), 10)+"&end="+strconv.FormatInt(now.Add(time.Minute).Unix(), 10))
	var ex struct {
		Status string `json:"status"`
		Data   []struct {
			Exemplars []struct {
				Labels map[string]string `json:"labels"`
			} `json:"exemplars"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &ex); err != nil || code != http.StatusOK || ex.Status != "success" {
		t.Fatalf("query_exemplars %s: %d %v %s", heatmap, code, err, body)
	}
	var flow string
	for _, d := range ex.Data {
		for _, e := range d.Exemplars {
			if f := e.Labels["flow"]; f != "" {
				flow = f
			}
		}
	}
	proto, rest, ok := strings.Cut(flow, " ")
	src, _, ok2 := strings.Cut(rest, ">")
	if !ok || !ok2 {
		t.Errorf("the heatmap's exemplars: no flow label \"PROTO SRC>DST\": %s", body)
	} else {
		args := []string{"follow", "--agents", "unix:" + nb.api + ",unix:" + na.api, "--duration", "300ms", "--proto", proto, src}
		if code, stderr := runBin(t, nil, args...); code != 0 {
			t.Errorf("exemplar flow %q: pathtrace %s: exit %d\n%s", flow, strings.Join(args, " "), code, stderr)
		} else {
			t.Logf("exemplar flow %q: pathtrace %s: exit 0", flow, strings.Join(args, " "))
		}
	}

	// Every alert's expression runs; the drop alert names node-b's NETFILTER_DROP and
	// nothing of node-a; the agents are there.
	alerts := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = r.Expr
			ss := promSeries(t, base, r.Expr)
			t.Logf("alert %s: %d series %v", r.Alert, len(ss), ss)
			switch r.Alert {
			case "PathtraceDropsRising":
				if _, ok := has(ss, "node", "node-b", "reason", "NETFILTER_DROP"); !ok {
					t.Errorf("%s: want node-b's NETFILTER_DROP, got %v", r.Alert, ss)
				}
				if _, ok := has(ss, "node", "node-a"); ok {
					t.Errorf("%s: node-a has no rising drops, got %v", r.Alert, ss)
				}
			case "PathtraceHopLatencyHigh":
				// The tbf queue holds node-a's packets between its overlay and uplink hops.
				if s, ok := has(ss, "node", "node-a", "from_hop", "overlay", "to_hop", "uplink"); !ok || s.value <= 0.01 {
					t.Errorf("%s: want node-a's overlay → uplink over 10 ms, got %v", r.Alert, ss)
				}
			case "PathtraceAgentsAbsent", "PathtraceCountersUnreadable", "PathtraceAgentDown", "PathtraceConntrackFull":
				if len(ss) != 0 {
					t.Errorf("%s fires with both agents up: %v", r.Alert, ss)
				}
			}
		}
	}
	// Prometheus evaluates the rules file itself without an error.
	code, body = httpGet(t, base+"/api/v1/rules")
	var rr struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &rr); err != nil || code != http.StatusOK {
		t.Fatalf("rules: %d %v %s", code, err, body)
	}
	loaded := 0
	for _, g := range rr.Data.Groups {
		for _, r := range g.Rules {
			loaded++
			if r.Health != "ok" {
				t.Errorf("Prometheus: rule %s health %q: %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if loaded != len(alerts) {
		t.Errorf("Prometheus loaded %d rules, the file has %d", loaded, len(alerts))
	}

	// node-a's agent stops: the agent-down alert names it, and only it.
	na.terminate(t)
	var down []promSample
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if down = promSeries(t, base, alerts["PathtraceAgentDown"]); len(down) > 0 {
			break
		}
	}
	if len(down) != 1 || down[0].labels["node"] != "node-a" {
		t.Errorf("PathtraceAgentDown after node-a's agent stopped: %v, want node-a only", down)
	}
	if s := stderr.String(); strings.Contains(s, "level=error") {
		t.Logf("prometheus logged:\n%s", s)
	}
	nb.terminate(t)
	assertNoLeak(t)
}

func first(ss []promSample) string {
	if len(ss) == 0 {
		return "none"
	}
	return ss[0].String()
}
