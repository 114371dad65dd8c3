package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The agent's exposition passes promtool's checks, and a real Prometheus scrapes two
// agents and sees each node's drops under its own instance.

// needTool fails (or skips, outside CI) when a program the test drives is missing.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if mustRun() {
			t.Fatalf("%s not found: %v (apt-get install prometheus)", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

// The whole exposition, after traffic that gives every family samples, is clean to
// promtool; the health endpoints answer; build info and latency buckets are there.
func TestPromtoolCheckMetrics(t *testing.T) {
	needLab(t)
	promtool := needTool(t, "promtool")
	a := startAgent(t, "node-b", "--sample", "1")
	for _, ep := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, "http://"+a.metrics+ep); code != http.StatusOK {
			t.Errorf("GET %s: %d %q", ep, code, body)
		}
	}
	labTraffic(t)
	// A flow a follower catches and that is dropped, for the flagged flows.
	f := agentFollow(t, []*agentProc{a}, "--proto", "udp", "10.244.2.57:9999")
	pod(t, "a-api", "udp", "10.244.2.57:9999", "--count", "1")
	f.stop(t)
	time.Sleep(200 * time.Millisecond)

	code, body := httpGet(t, "http://"+a.metrics+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, body)
	}

	ss := parseExposition(t, body)
	families := map[string]int{}
	for _, s := range ss {
		families[s.name]++
	}
	for _, name := range []string{"pathtrace_build_info", "pathtrace_counters_up", "pathtrace_packets_total",
		"pathtrace_drops_total", "pathtrace_drop_bytes_total", "pathtrace_hop_latency_seconds_bucket",
		"pathtrace_hop_latency_seconds_sum", "pathtrace_hop_latency_seconds_count", "pathtrace_events_lost_total",
		"pathtrace_flagged_flows_total"} {
		if families[name] == 0 {
			t.Errorf("no %s samples", name)
		}
	}
	if sum(ss, "pathtrace_flagged_flows_total", "trigger", "drop") == 0 {
		t.Errorf("no flow flagged for a drop")
	}
	// The follower's datagram to the closed port got its diagnosis from the agent, and
	// the agent counted it.
	if v := sum(ss, "pathtrace_diagnoses_total", "cause", "closed_port"); v != 1 {
		t.Errorf("pathtrace_diagnoses_total{cause=\"closed_port\"} %v, want 1", v)
	}
	if sum(ss, "pathtrace_drops_total", "reason", "NO_SOCKET", "hop", "pod") == 0 {
		t.Errorf("the datagram to a closed port in a pod of node-b is not counted as NO_SOCKET in a pod")
	}
	var bi []sample
	for _, s := range ss {
		if s.name == "pathtrace_build_info" {
			bi = append(bi, s)
		}
	}
	if len(bi) != 1 || bi[0].value != 1 || bi[0].labels["version"] == "" || bi[0].labels["kernel"] != kernelRelease() ||
		bi[0].labels["attach_mode"] != "tcx" || len(bi[0].labels) != 3 {
		t.Errorf("pathtrace_build_info: %+v, want version, kernel %s, attach_mode tcx and value 1", bi, kernelRelease())
	}
	if v := sum(ss, "pathtrace_counters_up"); v != 1 {
		t.Errorf("pathtrace_counters_up %v", v)
	}

	// Every interface's packets counted under its class, both ways (the cross-node
	// connection goes out and its answers come back): none unclassified.
	for _, hop := range []string{"pod", "bridge", "overlay", "uplink"} {
		for _, dir := range []string{"ingress", "egress"} {
			if sum(ss, "pathtrace_packets_total", "hop", hop, "direction", dir) == 0 {
				t.Errorf("no pathtrace_packets_total{hop=%q,direction=%q}", hop, dir)
			}
		}
	}
	if v := sum(ss, "pathtrace_packets_total", "hop", "unknown"); v != 0 {
		t.Errorf("%v packets counted at an unknown hop", v)
	}

	// Each latency histogram: cumulative buckets up to +Inf, which equals the count.
	type hist struct {
		les   []float64
		count map[float64]float64
	}
	hs := map[string]*hist{}
	for _, s := range ss {
		if s.name != "pathtrace_hop_latency_seconds_bucket" {
			continue
		}
		pair := s.labels["from_hop"] + ">" + s.labels["to_hop"]
		if hs[pair] == nil {
			hs[pair] = &hist{count: map[float64]float64{}}
		}
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if err != nil {
			t.Fatalf("%s: le %q", s.series, s.labels["le"])
		}
		hs[pair].les = append(hs[pair].les, le)
		hs[pair].count[le] = s.value
	}
	if len(hs) == 0 {
		t.Fatalf("no pathtrace_hop_latency_seconds buckets:\n%s", body)
	}
	for pair, h := range hs {
		sort.Float64s(h.les)
		if !math.IsInf(h.les[len(h.les)-1], 1) || len(h.les) < 10 {
			t.Errorf("%s: buckets %v, want a ladder up to +Inf", pair, h.les)
			continue
		}
		for i := 1; i < len(h.les); i++ {
			if h.count[h.les[i]] < h.count[h.les[i-1]] {
				t.Errorf("%s: bucket le=%v has %v < le=%v's %v", pair, h.les[i], h.count[h.les[i]], h.les[i-1], h.count[h.les[i-1]])
			}
		}
		from, to, _ := strings.Cut(pair, ">")
		if c := sum(ss, "pathtrace_hop_latency_seconds_count", "from_hop", from, "to_hop", to); c != h.count[math.Inf(1)] || c == 0 {
			t.Errorf("%s: _count %v, +Inf bucket %v", pair, c, h.count[math.Inf(1)])
		}
	}
	t.Logf("%d series in %d families; latency histograms for %d hop pairs; promtool: clean", len(ss), len(families), len(hs))

	// OpenMetrics, as Prometheus asks for it, ends as the format says.
	req, _ := http.NewRequest("GET", "http://"+a.metrics+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var om bytes.Buffer
	om.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/openmetrics-text") || !strings.HasSuffix(om.String(), "# EOF\n") {
		t.Errorf("OpenMetrics: Content-Type %q, body ends %q", resp.Header.Get("Content-Type"), tail(om.String(), 40))
	}
	a.terminate(t)
	assertNoLeak(t)
}

// promResult is the part of a Prometheus API answer the test reads.
type promResult struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

// promQuery runs an instant query and returns value by the labels named.
func promQuery(t *testing.T, base, q string, by ...string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, base+"/api/v1/query?query="+url.QueryEscape(q))
	var r promResult
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != http.StatusOK || r.Status != "success" {
		t.Fatalf("query %s: %d %v %s", q, code, err, body)
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		var k []string
		for _, l := range by {
			k = append(k, s.Metric[l])
		}
		v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		out[strings.Join(k, ",")] = v
	}
	return out
}

// A real Prometheus scrapes the agents of both nodes: the policy drops on node-b are
// there, under node-b's instance, as many as the rule dropped; node-a reports none.
func TestAgentPrometheus(t *testing.T) {
	needLab(t)
	prom := needTool(t, "prometheus")
	fault(t, "policy")
	na, nb := startAgent(t, "node-a", "--sample", "1"), startAgent(t, "node-b", "--sample", "1")

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: pathtrace
    static_configs:
      - targets: ['%s', '%s']
`, na.metrics, nb.metrics)), 0o644); err != nil {
		t.Fatal(err)
	}
	base, stderr := startPrometheus(t, prom, dir, cfg)

	// Drops on node-b only: SYNs from node-b's pod to redis, dropped in node-b's FORWARD.
	inNode(t, "node-b", "iptables", "-w", "-Z", "FORWARD")
	for i := 0; i < 4; i++ {
		pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "300ms")
	}
	// Traffic across both nodes, for latency samples and their exemplars.
	labTraffic(t)
	time.Sleep(200 * time.Millisecond)
	want := float64(dropRuleCounters(t, "node-b")["tcp dpt:6379"])
	if want < 4 {
		t.Fatalf("the policy rule dropped %v SYNs, want at least 4", want)
	}

	q := `sum by (instance) (pathtrace_drops_total{reason="NETFILTER_DROP"})`
	var got map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	var up map[string]float64
	for {
		got = promQuery(t, base, q, "instance")
		up = promQuery(t, base, `up{job="pathtrace"}`, "instance")
		if got[nb.metrics] == want && up[na.metrics] == 1 && up[nb.metrics] == 1 {
			break
		}
		if time.Now().After(deadline) {
			_, targets := httpGet(t, base+"/api/v1/targets")
			t.Fatalf("Prometheus: %s = %v, want %v for node-b (%s); up %v, want 1 for %s and %s; targets:\n%s\n%s",
				q, got, want, nb.metrics, up, na.metrics, nb.metrics, targets, stderr.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if v, ok := got[na.metrics]; ok && v != 0 {
		t.Errorf("node-a's agent reports %v NETFILTER_DROP: node-b's drops are not node-a's", v)
	}
	if total := promQuery(t, base, `sum(pathtrace_drops_total{reason="NETFILTER_DROP"})`); total[""] != want {
		t.Errorf("sum over the cluster: %v, want %v", total, want)
	}
	pk := promQuery(t, base, `sum by (instance) (pathtrace_packets_total)`, "instance")
	if pk[na.metrics] == 0 || pk[nb.metrics] == 0 {
		t.Errorf("packets by instance: %v, want both nodes", pk)
	}
	bi := promQuery(t, base, `pathtrace_build_info`, "instance", "attach_mode")
	if bi[na.metrics+",tcx"] != 1 || bi[nb.metrics+",tcx"] != 1 {
		t.Errorf("build info by instance: %v", bi)
	}

	// The latency exemplars name a flow one can follow.
	now := time.Now()
	code, body := httpGet(t, base+"/api/v1/query_exemplars?query="+url.QueryEscape(`pathtrace_hop_latency_seconds_bucket`)+
		"&start="+strconv.FormatInt(now.Add(-time.Minute).Unix(), 10)+"&end="+strconv.FormatInt(now.Add(time.Minute).Unix(), 10))
	var ex struct {
		Status string `json:"status"`
		Data   []struct {
			Exemplars []struct {
				Labels map[string]string `json:"labels"`
			} `json:"exemplars"`
		} `json:"data"`
	}
	flows := 0
	if err := json.Unmarshal([]byte(body), &ex); err != nil || code != http.StatusOK || ex.Status != "success" {
		t.Errorf("query_exemplars: %d %v %s", code, err, body)
	}
	for _, d := range ex.Data {
		for _, e := range d.Exemplars {
			if f := e.Labels["flow"]; strings.Contains(f, ">") && (strings.HasPrefix(f, "tcp ") || strings.HasPrefix(f, "udp ")) {
				flows++
			}
		}
	}
	if flows == 0 {
		t.Errorf("no latency exemplar with a flow label: %s", body)
	}
	t.Logf("Prometheus: NETFILTER_DROP by instance %v (the rule on node-b: %v); up %v; %d exemplars with a flow", got, want, up, flows)
	if s := stderr.String(); strings.Contains(s, "level=error") || strings.Contains(s, "level=warn") {
		t.Logf("prometheus logged:\n%s", s)
	}
	na.terminate(t)
	nb.terminate(t)
	assertNoLeak(t)
}

// startPrometheus runs Prometheus with this configuration, its data in dir, until the
// test ends, and returns its URL once it is ready, and its log.
func startPrometheus(t *testing.T, prom, dir, cfg string) (string, *syncBuffer) {
	t.Helper()
	var p *exec.Cmd
	stderr := &syncBuffer{}
	var base string
	for try := 0; ; try++ {
		addr := freeAddr(t)
		base = "http://" + addr
		p = exec.Command(prom, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+addr, "--log.level=warn", "--enable-feature=exemplar-storage")
		p.Stderr = stderr
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		t.Cleanup(func() {
			p.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				p.Process.Kill()
				<-done
			}
		})
		ready := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			select {
			case <-done:
				deadline = time.Time{}
				continue
			default:
			}
			if resp, err := http.Get(base + "/-/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ready = true
					break
				}
			}
		}
		if ready {
			break
		}
		if try >= 2 || !strings.Contains(stderr.String(), "address already in use") {
			t.Fatalf("prometheus not ready:\n%s", stderr.String())
		}
	}
	return base, stderr
}
