package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/exporter"
)

// The agent's end-to-end tests: `pathtrace agent` runs on a lab node (--netns), its
// metrics listener on 127.0.0.1 of the root namespace, its API socket in the test's
// temporary directory; traffic only ever flows between the lab's namespaces.

// syncBuffer is a buffer a process writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type agentProc struct {
	node    string
	metrics string // host:port of /metrics
	api     string // socket path
	ready   string // ready file
	cmd     *exec.Cmd
	stderr  syncBuffer
	done    chan struct{}
	err     error // of Wait, once done is closed
}

// freeAddr returns a 127.0.0.1 address with a port nobody listens on (for now).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startAgent runs `pathtrace agent` on a lab node and waits until it is ready. The
// metrics port is picked free; should someone take it meanwhile, another is tried.
func startAgent(t *testing.T, node string, extra ...string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	for try := 0; ; try++ {
		a := launchAgent(t, node, freeAddr(t), filepath.Join(dir, node+".sock"), extra...)
		if err := a.waitReady(t, readyWait); err != nil {
			if try < 3 && strings.Contains(a.stderr.String(), "address already in use") {
				continue
			}
			t.Fatalf("agent on %s: %v\n%s", node, err, a.stderr.String())
		}
		return a
	}
}

// launchAgent starts an agent with exactly these addresses and does not wait.
func launchAgent(t *testing.T, node, metrics, api string, extra ...string) *agentProc {
	t.Helper()
	a := &agentProc{node: node, metrics: metrics, api: api, ready: api + ".ready", done: make(chan struct{})}
	args := append([]string{"agent", "--netns", labPrefix + "-" + node, "--node", node,
		"--metrics-addr", metrics, "--api", "unix:" + api, "--ready-file", a.ready}, extra...)
	a.cmd = exec.Command(filepath.Join(binDir, "pathtrace"), args...)
	a.cmd.Stderr = &a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.err = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		if !a.exited() {
			a.cmd.Process.Signal(syscall.SIGCONT)
			a.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-a.done:
			case <-time.After(15 * time.Second):
				t.Errorf("agent on %s did not exit after SIGTERM; killing it\n%s", node, a.stderr.String())
				a.cmd.Process.Kill()
				<-a.done
			}
		}
	})
	return a
}

func (a *agentProc) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

func (a *agentProc) waitReady(t *testing.T, limit time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(a.ready); err == nil {
			return nil
		}
		select {
		case <-a.done:
			return fmt.Errorf("exited before it was ready: %v", a.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", limit)
		}
	}
}

// exitCode waits for the agent to exit and returns its status.
func (a *agentProc) exitCode(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-a.done:
	case <-time.After(limit):
		t.Fatalf("agent on %s still running after %v\n%s", a.node, limit, a.stderr.String())
	}
	var ee *exec.ExitError
	switch {
	case a.err == nil:
		return 0
	case errors.As(a.err, &ee) && ee.Exited():
		return ee.ExitCode()
	}
	return -1 // killed by a signal
}

// terminate sends SIGTERM and wants a clean exit.
func (a *agentProc) terminate(t *testing.T) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.exitCode(t, 15*time.Second); code != 0 {
		t.Errorf("agent on %s: exit %d after SIGTERM\n%s", a.node, code, a.stderr.String())
	}
}

func (a *agentProc) rssKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", a.cmd.Process.Pid)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// httpGet fetches a URL and returns the status and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// sample is one line of the Prometheus text exposition.
type sample struct {
	series string // name{labels} as exposed
	name   string
	labels map[string]string
	value  float64
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$`)
var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func parseExposition(t *testing.T, body string) []sample {
	t.Helper()
	var out []sample
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("exposition line %q does not parse", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("exposition line %q: value: %v", line, err)
		}
		s := sample{series: m[1] + m[2], name: m[1], labels: map[string]string{}, value: v}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		out = append(out, s)
	}
	return out
}

func (a *agentProc) scrape(t *testing.T) []sample {
	t.Helper()
	code, body := httpGet(t, "http://"+a.metrics+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics of the agent on %s: %d\n%s", a.node, code, body)
	}
	return parseExposition(t, body)
}

// sum adds the samples of a metric whose labels include these.
func sum(ss []sample, name string, labels ...string) float64 {
	var n float64
next:
	for _, s := range ss {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		n += s.value
	}
	return n
}

// dropRuleCounters reads the packet counters of the DROP rules in a node's FORWARD
// chain, by the rule's match text ("tcp dpt:6379").
func dropRuleCounters(t *testing.T, node string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, line := range strings.Split(inNode(t, node, "iptables", "-w", "-L", "FORWARD", "-v", "-x", "-n"), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[2] != "DROP" {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			t.Fatalf("iptables line %q: %v", line, err)
		}
		out[strings.Join(f[9:], " ")] += n
	}
	return out
}

func total(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

const nfDrop = "NETFILTER_DROP"

// Every packet the policy rule drops is counted once, exactly, by the agent of the node
// where it was dropped: a few SYNs, then a flood of 120,000 datagrams far beyond the
// drop-event budget, then a flood while the agent cannot read its ring buffer at all.
func TestAgentMetricsExact(t *testing.T) {
	needLab(t)
	fault(t, "policy")
	inNode(t, "node-b", "iptables", "-w", "-I", "FORWARD", "1", "-d", "10.244.1.42/32", "-p", "udp", "--dport", "9999", "-j", "DROP")
	t.Cleanup(func() {
		exec.Command("ip", "netns", "exec", labPrefix+"-node-b", "iptables", "-w", "-D", "FORWARD", "-d", "10.244.1.42/32", "-p", "udp", "--dport", "9999", "-j", "DROP").Run()
	})
	a := startAgent(t, "node-b")

	// SYNs to redis, each dropped in FORWARD (300 ms: no retransmission).
	inNode(t, "node-b", "iptables", "-w", "-Z", "FORWARD")
	before := sum(a.scrape(t), "pathtrace_drops_total", "reason", nfDrop)
	for i := 0; i < 5; i++ {
		if out, err := pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "300ms"); err == nil {
			t.Fatalf("SYN got through the policy: %s", out)
		}
	}
	time.Sleep(200 * time.Millisecond)
	rules := dropRuleCounters(t, "node-b")
	after := a.scrape(t)
	got := sum(after, "pathtrace_drops_total", "reason", nfDrop) - before
	if rules["tcp dpt:6379"] < 5 || got != float64(total(rules)) {
		t.Errorf("SYNs: the agent counted %v NETFILTER_DROP, the DROP rules %v", got, rules)
	}
	if v := sum(after, "pathtrace_drops_total", "reason", nfDrop, "hop", "netfilter", "direction", "ingress"); v == 0 {
		t.Errorf("no pathtrace_drops_total{reason=NETFILTER_DROP,hop=netfilter,direction=ingress}")
	}
	t.Logf("SYNs: the rule counted %d, the agent %v", rules["tcp dpt:6379"], got)

	// A flood: all but the budget's worth of drop events are shed (ratelimit), none is
	// lost in the ring buffer, every drop is counted.
	flood := func(label string, stopped bool) (counted float64, dropped uint64, lost map[string]float64) {
		t.Helper()
		inNode(t, "node-b", "iptables", "-w", "-Z", "FORWARD")
		ss := a.scrape(t)
		before := sum(ss, "pathtrace_drops_total", "reason", nfDrop)
		lostBefore := map[string]float64{}
		for _, st := range []string{"ringbuf", "ratelimit", "map", "queue"} {
			lostBefore[st] = sum(ss, "pathtrace_events_lost_total", "stage", st)
		}
		if stopped {
			a.cmd.Process.Signal(syscall.SIGSTOP)
		}
		start := time.Now()
		out, err := pod(t, "b-api", "udp", "10.244.1.42:9999", "--count", "120000", "--size", "16", "--interval", "0")
		took := time.Since(start)
		if stopped {
			a.cmd.Process.Signal(syscall.SIGCONT)
		}
		if err != nil {
			t.Fatalf("flood: %v\n%s", err, out)
		}
		time.Sleep(300 * time.Millisecond)
		rules := dropRuleCounters(t, "node-b")
		ss = a.scrape(t)
		counted = sum(ss, "pathtrace_drops_total", "reason", nfDrop) - before
		lost = map[string]float64{}
		for st, v := range lostBefore {
			lost[st] = sum(ss, "pathtrace_events_lost_total", "stage", st) - v
		}
		// No bound on the time: under emulation (the kernel matrix's VMs) the flood is
		// slower; the budget's check below needs only that it outran the budget.
		if rules["udp dpt:9999"] < 100000 {
			t.Errorf("%s flood: the rule dropped %d datagrams in %v, want at least 100000", label, rules["udp dpt:9999"], took)
		}
		if counted != float64(total(rules)) {
			t.Errorf("%s flood: the agent counted %v NETFILTER_DROP, the DROP rules %v (%d)", label, counted, rules, total(rules))
		}
		t.Logf("%s flood: 120000 datagrams sent in %v; the rule dropped %d, the agent counted %v; events lost by stage %v",
			label, took.Round(time.Millisecond), rules["udp dpt:9999"], counted, lost)
		return counted, rules["udp dpt:9999"], lost
	}
	_, dropped, lost := flood("budget", false)
	if lost["ringbuf"] != 0 || lost["map"] != 0 {
		t.Errorf("drop events beyond the budget must be shed, not lost in the ring buffer: %v", lost)
	}
	// 1000 events per second per CPU get through; the rest are shed and counted.
	if lost["ratelimit"] < float64(dropped)/2 {
		t.Errorf("only %v drop events shed over the budget for %d drops", lost["ratelimit"], dropped)
	}
	a.terminate(t)

	// An agent whose every drop is an event (no budget to speak of), stopped while the
	// flood fills its ring buffer: the events are lost, the counts still exact.
	a = startAgent(t, "node-b", "--drop-rate", "100000000")
	_, _, lost = flood("stopped", true)
	if lost["ringbuf"] == 0 {
		t.Errorf("a stopped agent lost no drop event in the ring buffer: %v", lost)
	}
	a.terminate(t)
	assertNoLeak(t)
}

// A connection whose SYN the policy drops is retried by the client's socket: the agent
// of the client's node counts the flow as flagged by a retransmission (once, though the
// SYN is sent twice more), the other node's agent does not.
func TestAgentRetransmit(t *testing.T) {
	needLab(t)
	fault(t, "policy")
	b := startAgent(t, "node-b")
	a := startAgent(t, "node-a")
	if !strings.Contains(b.stderr.String(), "TCP retransmissions via raw_tp") {
		t.Fatalf("the agent does not say it counts retransmissions:\n%s", b.stderr.String())
	}
	flagged := func(ag *agentProc, trigger string) float64 {
		return sum(ag.scrape(t), "pathtrace_flagged_flows_total", "trigger", trigger)
	}
	beforeB, beforeA := flagged(b, "retransmit"), flagged(a, "retransmit")
	// The SYN is retried after 1 s and 3 s.
	if out, err := pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "3500ms"); err == nil {
		t.Fatalf("SYN got through the policy: %s", out)
	}
	var gotB float64
	for start := time.Now(); time.Since(start) < 2*time.Second; time.Sleep(100 * time.Millisecond) {
		if gotB = flagged(b, "retransmit") - beforeB; gotB > 0 {
			break
		}
	}
	if gotB != 1 {
		t.Errorf("node-b's agent: %v flows flagged by retransmission, want 1", gotB)
	}
	if got := flagged(a, "retransmit") - beforeA; got != 0 {
		t.Errorf("node-a's agent: %v flows flagged by retransmission, want 0 (the socket is on node-b)", got)
	}
	if got := flagged(b, "drop"); got < 1 {
		t.Errorf("node-b's agent: the dropped SYN's flow not flagged by drop (%v)", got)
	}
	a.terminate(t)
	b.terminate(t)
	assertNoLeak(t)
}

// vethNames lists the names of a range of interfaces the test made.
func vethNames(n int) []string {
	var s []string
	for i := 1; i <= n; i++ {
		s = append(s, fmt.Sprintf("vethx%d", i))
	}
	return s
}

// logged returns which of names the agent's stderr lines containing what mention.
func logged(stderr, what string, names []string) []string {
	seen := map[string]bool{}
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.Contains(line, what) {
			continue
		}
		for _, w := range strings.Fields(line) {
			seen[strings.Trim(w, `"`)] = true // the log's msg="attached to a b"
		}
	}
	var out []string
	for _, n := range names {
		if seen[n] {
			out = append(out, n)
		}
	}
	return out
}

func waitLogged(t *testing.T, a *agentProc, what string, names []string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := logged(a.stderr.String(), what, names)
		if len(got) == len(names) {
			return time.Since(start)
		}
		if time.Since(start) > limit || a.exited() {
			t.Fatalf("after %v the agent logged %q for %d of %d interfaces\n%s", limit, what, len(got), len(names), tail(a.stderr.String(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// labTraffic is the same little mix every time: a cross-node TCP connection, a
// same-node one, a few datagrams and one that dies in a pod for want of a socket.
func labTraffic(t *testing.T) {
	t.Helper()
	for _, args := range [][]string{
		{"a-api", "tcp", "10.244.2.57:8080"},
		{"a-redis", "tcp", "10.244.1.23:8080"},
		{"a-api", "udp", "10.244.2.57:8080", "--count", "20", "--wait", "200ms"},
		{"b-api", "udp", "10.244.1.23:9999", "--count", "1"},
	} {
		if out, err := pod(t, args[0], args[1:]...); err != nil {
			t.Fatalf("labpod %v: %v\n%s", args, err, out)
		}
	}
}

// The number of series does not grow with the number of interfaces: 200 pod veths
// come and go, the agent attaches to them and lets them go, its memory stays bounded
// and, once it exits, nothing of it is left.
func TestMetricsSeriesBounded(t *testing.T) {
	needLab(t)
	const n = 200
	peerNS := labPrefix + "-vx"
	exec.Command("ip", "netns", "del", peerNS).Run()
	if out, err := exec.Command("ip", "netns", "add", peerNS).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", peerNS, err, out)
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", peerNS).Run()
		// Deleting the namespace takes the veths with it, asynchronously.
		for i := 0; i < 100; i++ {
			if out, _ := exec.Command("ip", "-n", labPrefix+"-node-a", "-o", "link", "show").Output(); !strings.Contains(string(out), "vethx") {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("veths of %s still in node-a", peerNS)
	})

	// Every packet sampled: the latency histograms present depend on the traffic
	// alone, not on which packets the sampling happened to pick.
	a := startAgent(t, "node-a", "--sample", "1")
	labTraffic(t)
	labTraffic(t)
	time.Sleep(200 * time.Millisecond)
	base := a.scrape(t)
	rss0 := a.rssKiB(t)

	// The pods' host sides in node-a, their other ends in a namespace of their own.
	var batch strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&batch, "link add vethx%d type veth peer name pdx%d netns %s\nlink set vethx%d up\n", i, i, peerNS, i)
	}
	f := filepath.Join(t.TempDir(), "veths.batch")
	if err := os.WriteFile(f, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", labPrefix+"-node-a", "-batch", f).CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v\n%s", err, out)
	}
	names := vethNames(n)
	took := waitLogged(t, a, "attached to", names, 20*time.Second)
	labTraffic(t)
	time.Sleep(200 * time.Millisecond)
	with := a.scrape(t)
	rss1 := a.rssKiB(t)

	// Remove them all at once: the namespace goes, and their peers with it.
	if out, err := exec.Command("ip", "netns", "del", peerNS).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v\n%s", peerNS, err, out)
	}
	tookGone := waitLogged(t, a, "gone", names, 20*time.Second)
	labTraffic(t)
	time.Sleep(200 * time.Millisecond)
	without := a.scrape(t)
	// The agent hands the churn's garbage back 2 s after the interfaces settle.
	time.Sleep(2500 * time.Millisecond)
	rss2 := a.rssKiB(t)
	t.Logf("series: %d before, %d with %d more interfaces, %d after they went; attached to them in %v, let them go in %v; RSS %d → %d → %d KiB",
		len(base), len(with), n, len(without), took.Round(time.Millisecond), tookGone.Round(time.Millisecond), rss0, rss1, rss2)

	// (a) Every label takes its values from a fixed set: none names an interface (or an
	// address); the series may differ by what the traffic sampled (a latency histogram
	// is 26 series), not by the interfaces.
	hop := `^(unknown|pod|bridge|overlay|uplink|netfilter|stack)$`
	vocabulary := map[string]*regexp.Regexp{
		"hop": regexp.MustCompile(hop), "from_hop": regexp.MustCompile(hop), "to_hop": regexp.MustCompile(hop),
		"direction": regexp.MustCompile(`^(ingress|egress)$`), "reason": regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`),
		"stage": regexp.MustCompile(`^(ringbuf|ratelimit|map|queue)$`), "trigger": regexp.MustCompile(`^(drop|stall|lost|retransmit)$`),
		"limit": regexp.MustCompile(`^(max-open-files|max-files|max-dir-bytes|max-file-bytes|max-dir-bytes-page)$`),
		"le":    regexp.MustCompile(`^([0-9.e+-]+|\+Inf)$`),
	}
	for _, ss := range [][]sample{base, with, without} {
		for _, s := range ss {
			for k, v := range s.labels {
				if s.name == "pathtrace_build_info" {
					continue
				}
				re := vocabulary[k]
				if s.name == "pathtrace_follows_refused_total" && k == "reason" {
					re = regexp.MustCompile(`^(auth|request|busy|client|rate|slots|source)$`)
				}
				if re == nil || !re.MatchString(v) || strings.Contains(v, "veth") {
					t.Errorf("series %s: label %s=%q is not of a bounded set", s.series, k, v)
				}
			}
		}
	}
	if len(with) > len(base)+2*26 || len(without) > len(with)+2*26 {
		t.Errorf("series grew with the interfaces: %d, %d with %d more, %d after", len(base), len(with), n, len(without))
	}
	if sum(with, "pathtrace_packets_total", "hop", "pod") <= sum(base, "pathtrace_packets_total", "hop", "pod") {
		t.Errorf("no pod packets counted with the extra interfaces present")
	}
	// (b) Memory stays bounded.
	if rss2 > 64<<10 {
		t.Errorf("agent RSS %d KiB after %d interfaces came and went, want < 64 MiB", rss2, n)
	}
	// (c) Nothing is left once it exits.
	a.terminate(t)
	assertNoLeak(t)
	for _, dev := range []string{"veth1a23", "veth1a42"} {
		if q := inNode(t, "node-a", "tc", "qdisc", "show", "dev", dev); strings.Contains(q, "clsact") {
			t.Errorf("%s still has a clsact qdisc: %s", dev, q)
		}
	}
}

// agentFollow runs `pathtrace follow --agents` and waits until every agent accepted it.
func agentFollow(t *testing.T, agents []*agentProc, args ...string) *follower {
	t.Helper()
	var socks []string
	for _, a := range agents {
		socks = append(socks, "unix:"+a.api)
	}
	return runFollow(t, "agents", append([]string{"--agents", strings.Join(socks, ",")}, args...))
}

// Followers share an agent, each with its own selector and its own journeys; one
// follower sees through the agents of both nodes at once.
func TestAgentFollowers(t *testing.T) {
	needLab(t)
	na, nb := startAgent(t, "node-a"), startAgent(t, "node-b")

	// Two at once through node-a's agent; and two more whose selectors are the first's,
	// and one that takes in the first's.
	f1 := agentFollow(t, []*agentProc{na}, "--proto", "tcp", "10.244.2.57:8080")
	f2 := agentFollow(t, []*agentProc{na}, "10.244.1.42:6379")
	same := agentFollow(t, []*agentProc{na}, "--proto", "tcp", "10.244.2.57:8080")
	wider := agentFollow(t, []*agentProc{na}, "10.244.2.57")
	for i := 0; i < 2; i++ {
		if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil || !strings.Contains(out, "ok api-b") {
			t.Fatalf("a-api → api-b: %v %s", err, out)
		}
		if out, err := pod(t, "a-api", "tcp", "10.244.1.42:6379"); err != nil {
			t.Fatalf("a-api → redis: %v %s", err, out)
		}
	}
	j1, j2, js, jw := f1.stop(t), f2.stop(t), same.stop(t), wider.stop(t)
	check := func(name string, js []exporter.JourneyJSON, want string) {
		t.Helper()
		if len(find(js, "S", "10.244.1.23:", want)) != 2 {
			t.Errorf("%s: want 2 SYNs to %s, got:\n%s", name, want, dump(js))
		}
		for _, j := range js {
			if j.Node != "node-a" || !strings.HasPrefix(j.Flow.Src, want) && !strings.HasPrefix(j.Flow.Dst, want) {
				t.Errorf("%s (following %s) got a journey not its own: node %s %s → %s", name, want, j.Node, j.Flow.Src, j.Flow.Dst)
			}
		}
	}
	check("follower 1", j1, "10.244.2.57:8080")
	check("follower 2", j2, "10.244.1.42:6379")
	check("follower 1's twin", js, "10.244.2.57:8080")
	check("wider follower", jw, "10.244.2.57:")
	if len(js) != len(j1) || len(jw) < len(j1) {
		t.Errorf("follower 1 got %d journeys, its twin %d, the wider one %d", len(j1), len(js), len(jw))
	}
	if syn := find(j1, "S", "10.244.1.23:", "10.244.2.57:8080"); len(syn) > 0 {
		if want := []string{"veth1a23 ingress", "cni0 ingress", "flannel.1 egress", "eth0 egress"}; !slices.Equal(hopNames(syn[0]), want) || syn[0].Verdict != "forwarded" {
			t.Errorf("follower 1: SYN hops %v %s, want %v forwarded", hopNames(syn[0]), syn[0].Verdict, want)
		}
	}
	t.Logf("follower 1: %d journeys, follower 2: %d, follower 1's twin %d, the wider one %d", len(j1), len(j2), len(js), len(jw))

	// One follower, two agents: the same SYN on both nodes, with one identity.
	f3 := agentFollow(t, []*agentProc{na, nb}, "--proto", "tcp", "10.244.2.57:8080")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	j3 := f3.stop(t)
	nodes := map[string][]exporter.JourneyJSON{}
	for _, j := range find(j3, "S", "10.244.1.23:", "10.244.2.57:8080") {
		nodes[j.Node] = append(nodes[j.Node], j)
	}
	if len(nodes["node-a"]) != 1 || len(nodes["node-b"]) != 1 {
		t.Fatalf("follower of both agents: want the SYN once from each node, got:\n%s", dump(j3))
	}
	if a, b := nodes["node-a"][0], nodes["node-b"][0]; a.ID != b.ID || a.Verdict != "forwarded" || b.Verdict != "delivered" {
		t.Errorf("SYN: node-a %s %s, node-b %s %s; want one identity, forwarded then delivered", a.ID, a.Verdict, b.ID, b.Verdict)
	}
	if !strings.Contains(f3.stderr.String(), "through 2 agent(s)") {
		t.Errorf("follower of both agents: stderr %q", f3.stderr.String())
	}

	// Mistakes: a bad selector or --agents value is a usage error, before any agent is
	// asked; what an agent refuses is a runtime error that says why.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--agents", "unix:" + na.api, "1.2.3"}, 2, `selector "1.2.3": not an IP address`},
		{[]string{"--agents", "unix:" + na.api, "--proto", "sctp", "10.244.2.57"}, 2, `protocol "sctp"`},
		{[]string{"--agents", na.api, "10.244.2.57"}, 2, "want unix:PATH"},
		{[]string{"--agents", "tls:127.0.0.1:1", "10.244.2.57"}, 2, "needs --tls-ca, --tls-cert and --tls-key"},
		{[]string{"--agents", "unix:" + na.api, "1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5", "1.1.1.6", "1.1.1.7", "1.1.1.8", "1.1.1.9"}, 2, "at most 8"},
		{[]string{"--agents", "unix:" + filepath.Join(t.TempDir(), "none.sock"), "10.244.2.57"}, 1, "is `pathtrace agent --api unix:"},
	} {
		code, stderr := runBin(t, nil, append([]string{"follow", "--duration", "1s"}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("follow %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	// The agents served all of that and are still well.
	for _, a := range []*agentProc{na, nb} {
		if code, _ := httpGet(t, "http://"+a.metrics+"/readyz"); code != http.StatusOK || a.exited() {
			t.Errorf("agent on %s: /readyz %d after the followers", a.node, code)
		}
		a.terminate(t)
	}
	assertNoLeak(t)
}

// Wrong settings fail before anything is attached, and say what is wrong; SIGTERM
// leaves nothing; what a SIGKILL leaves, the next agent takes away.
func TestAgentBadInput(t *testing.T) {
	needLab(t)
	dir := t.TempDir()

	// Usage errors: exit 2.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent", "--api", "udp:127.0.0.1:1"}, `--api "udp:127.0.0.1:1": want unix:PATH, tls:HOST:PORT or tcp:127.0.0.1:PORT`},
		{[]string{"agent", "--api", "tcp:9436"}, `--api "tcp:9436": want tcp:HOST:PORT`},
		// Packets are never served in plaintext beyond the node, nor over TLS without a
		// client CA.
		{[]string{"agent", "--api", "tcp:0.0.0.0:9436"}, `--api tcp:0.0.0.0:9436: a plaintext listener on a non-loopback address would hand packets to anyone`},
		{[]string{"agent", "--api", "tcp:10.0.0.1:9436"}, `use tls:10.0.0.1:9436 with --tls-cert, --tls-key and --tls-client-ca`},
		{[]string{"agent", "--api", "tls:127.0.0.1:9436", "--tls-cert", "a.crt", "--tls-key", "a.key"}, `needs --tls-cert, --tls-key and --tls-client-ca`},
		{[]string{"agent", "--api", "tls:127.0.0.1:9436", "--tls-cert", "/nonexistent/a.crt", "--tls-key", "/nonexistent/a.key", "--tls-client-ca", "/nonexistent/ca.crt"}, `/nonexistent/a.crt`},
		{[]string{"agent", "extra"}, "agent takes no arguments"},
		{[]string{"agent", "--bogus"}, "unknown flag: --bogus"},
	} {
		code, stderr := runBin(t, nil, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("pathtrace %v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}

	// The metrics address is taken: exit 1, naming it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().String()
	a := launchAgent(t, "node-a", taken, filepath.Join(dir, "x.sock"))
	if code := a.exitCode(t, 10*time.Second); code != 1 || !strings.Contains(a.stderr.String(), "--metrics-addr "+taken) ||
		!strings.Contains(a.stderr.String(), "address already in use") {
		t.Errorf("metrics address in use: exit %d, stderr %q", code, a.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "x.sock")); err == nil {
		t.Errorf("the agent that could not start left its socket")
	}
	assertNoLeak(t)

	// The API socket is served by another agent: exit 1, saying so; the other agent's
	// socket stays and still answers.
	first := startAgent(t, "node-a")
	b := launchAgent(t, "node-b", freeAddr(t), first.api)
	if code := b.exitCode(t, 10*time.Second); code != 1 || !strings.Contains(b.stderr.String(), "unix:"+first.api+": another agent is serving there") {
		t.Errorf("API socket in use: exit %d, stderr %q", code, b.stderr.String())
	}
	if c, err := net.Dial("unix", first.api); err != nil {
		t.Errorf("the first agent's socket no longer answers: %v", err)
	} else {
		c.Close()
	}

	// SIGTERM: exit 0, the socket and the ready file gone, nothing attached.
	first.terminate(t)
	if !strings.Contains(first.stderr.String(), "stopped, everything detached") {
		t.Errorf("no goodbye after SIGTERM: %q", first.stderr.String())
	}
	for _, f := range []string{first.api, first.ready} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left after SIGTERM", f)
		}
	}
	assertNoLeak(t)

	// SIGKILL in clsact mode leaves cls_bpf filters behind, named after the agent.
	killed := startAgent(t, "node-b", "--attach-mode", "clsact")
	killed.cmd.Process.Kill()
	killed.exitCode(t, 10*time.Second)
	stale := fmt.Sprintf("pathtrace-%d", killed.cmd.Process.Pid)
	if f := inNode(t, "node-b", "tc", "filter", "show", "dev", "cni0", "ingress"); !strings.Contains(f, stale) {
		t.Fatalf("after SIGKILL, want the filter %s left on cni0:\n%s", stale, f)
	}
	// The next agent, on the same socket, takes them away and works. (Its supervisor
	// removes the ready file the killed one left, not to take it for the new one's.)
	for _, f := range []string{killed.api, killed.ready} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("after SIGKILL, want %s left behind: %v", f, err)
		}
	}
	os.Remove(killed.ready)
	next := launchAgent(t, "node-b", freeAddr(t), killed.api, "--attach-mode", "clsact")
	if err := next.waitReady(t, readyWait); err != nil {
		t.Fatalf("agent after a killed one: %v\n%s", err, next.stderr.String())
	}
	if !strings.Contains(next.stderr.String(), "removed tc filters left by pathtrace processes that are gone: "+stale) {
		t.Errorf("the next agent did not say it removed %s:\n%s", stale, next.stderr.String())
	}
	mine := fmt.Sprintf("pathtrace-%d", next.cmd.Process.Pid)
	for _, dev := range []string{"eth0", "cni0", "flannel.1", "veth2b57"} {
		for _, dir := range []string{"ingress", "egress"} {
			f := inNode(t, "node-b", "tc", "filter", "show", "dev", dev, dir)
			if strings.Contains(f, stale) || strings.Count(f, mine) != 1 {
				t.Errorf("%s %s: want only %s's filter, got:\n%s", dev, dir, mine, f)
			}
		}
	}
	before := sum(next.scrape(t), "pathtrace_packets_total", "hop", "pod")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	f := agentFollow(t, []*agentProc{next}, "--proto", "tcp", "10.244.2.57:8080")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	if js := f.stop(t); len(find(js, "S", "10.244.1.23:", "10.244.2.57:8080")) != 1 {
		t.Errorf("the agent after a killed one: want the SYN followed, got:\n%s", dump(js))
	}
	if after := sum(next.scrape(t), "pathtrace_packets_total", "hop", "pod"); after <= before {
		t.Errorf("the agent after a killed one counts no pod packets: %v → %v", before, after)
	}
	next.terminate(t)
	assertNoLeak(t)
}

// heldPrograms maps the IDs of BPF programs that a running process holds, by a program
// or a link descriptor, to the processes.
func heldPrograms() map[uint32][]int {
	held := map[uint32][]int{}
	fdinfos, _ := filepath.Glob("/proc/[0-9]*/fdinfo/*")
	for _, f := range fdinfos {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("prog_id:")) {
			continue
		}
		m := regexp.MustCompile(`(?m)^prog_id:\s+(\d+)$`).FindSubmatch(b)
		if m == nil {
			continue
		}
		id, _ := strconv.ParseUint(string(m[1]), 10, 32)
		pid, _ := strconv.Atoi(strings.Split(f, "/")[2])
		if !slices.Contains(held[uint32(id)], pid) {
			held[uint32(id)] = append(held[uint32(id)], pid)
		}
	}
	return held
}

// assertNoLeak is assertNothingLeft for a machine where other pathtrace processes may
// run (another lab, a benchmark): once the test's agents have exited, no pathtrace
// program may stay loaded that no running process holds (a tc filter, or a link nobody
// closed), and the lab's nodes carry no pathtrace filter and no clsact qdisc. Without
// other pathtrace processes, this is assertNothingLeft itself.
func assertNoLeak(t *testing.T) {
	t.Helper()
	var leaked, foreign []string
	for try := 0; try < 50; try++ {
		leaked, foreign = nil, nil
		held := heldPrograms()
		for _, p := range loadedPrograms(t) {
			var id uint32
			fmt.Sscanf(p[strings.LastIndex(p, "(id ")+4:], "%d", &id)
			if pids := held[id]; len(pids) > 0 {
				foreign = append(foreign, fmt.Sprintf("%s held by pid %v", p, pids))
			} else {
				leaked = append(leaked, p)
			}
		}
		if len(leaked) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(foreign) == 0 {
		assertNothingLeft(t)
		return
	}
	t.Logf("other processes hold pathtrace programs (not this test's): %d, e.g. %s", len(foreign), foreign[0])
	if len(leaked) > 0 {
		t.Errorf("programs still loaded that no process holds: %v", leaked)
	}
	assertNoClsact(t)
}

// Through the agent, as standalone, a netfilter drop names its rule.
func TestAgentFollowNamesRule(t *testing.T) {
	needLab(t)
	fault(t, "policy")
	b := startAgent(t, "node-b")
	f := agentFollow(t, []*agentProc{b}, "10.244.1.42:6379")
	if out, err := pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "300ms"); err == nil {
		t.Fatalf("SYN got through the policy: %s", out)
	}
	js := f.stop(t)
	want := "dropped by filter/FORWARD rule 1: -A FORWARD -d 10.244.1.42/32 -p tcp -m tcp --dport 6379 -j DROP"
	named := 0
	for _, j := range js {
		if j.Drop != nil && j.Drop.Reason == nfDrop {
			if j.Drop.Rule != want {
				t.Errorf("drop rule %q, want %q", j.Drop.Rule, want)
			}
			named++
		}
	}
	if named == 0 {
		t.Errorf("no NETFILTER_DROP journey through the agent:\n%s", dump(js))
	}
}

// Notes the tracer makes after the start are printed too: an interface that appears
// carrying the clsact filters of a killed pathtrace gets them removed, and the agent
// says so.
func TestAgentLaterNotes(t *testing.T) {
	needLab(t)
	inNode(t, "node-b", "ip", "link", "add", "vethn1", "type", "veth", "peer", "name", "vethn1p")
	t.Cleanup(func() { exec.Command("ip", "-n", labPrefix+"-node-b", "link", "del", "vethn1").Run() })
	inNode(t, "node-b", "ip", "link", "set", "vethn1", "up")
	killed := startAgent(t, "node-b", "--attach-mode", "clsact", "--ifaces", "vethn*")
	killed.cmd.Process.Kill()
	killed.exitCode(t, 10*time.Second)
	stale := fmt.Sprintf("pathtrace-%d", killed.cmd.Process.Pid)
	if f := inNode(t, "node-b", "tc", "filter", "show", "dev", "vethn1", "ingress"); !strings.Contains(f, stale) {
		t.Fatalf("after SIGKILL, want the filter %s left on vethn1:\n%s", stale, f)
	}
	a := startAgent(t, "node-b", "--attach-mode", "clsact", "--ifaces", "vethq*,eth0")
	inNode(t, "node-b", "ip", "link", "set", "vethn1", "down")
	inNode(t, "node-b", "ip", "link", "set", "vethn1", "name", "vethq1")
	inNode(t, "node-b", "ip", "link", "set", "vethq1", "up")
	t.Cleanup(func() { exec.Command("ip", "-n", labPrefix+"-node-b", "link", "del", "vethq1").Run() })
	want := "note: removed tc filters left by pathtrace processes that are gone: " + stale
	for start := time.Now(); !strings.Contains(a.stderr.String(), want); time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the agent did not say it removed %s from the new interface:\n%s", stale, a.stderr.String())
		}
	}
	if f := inNode(t, "node-b", "tc", "filter", "show", "dev", "vethq1", "ingress"); strings.Contains(f, stale) {
		t.Errorf("%s still on vethq1:\n%s", stale, f)
	}
	a.terminate(t)
}

// The agent's TLS API: a follower with a certificate of the client CA follows; a
// plaintext client, one without a certificate and one of another CA get no byte of the
// protocol, and each refusal is counted in pathtrace_follows_refused_total{reason="auth"}.
func TestAgentTLS(t *testing.T) {
	needLab(t)
	dir := t.TempDir()
	for _, sub := range []string{"good", "other"} {
		if code, stderr := runBin(t, nil, "certs", "--out", filepath.Join(dir, sub)); code != 0 {
			t.Fatalf("pathtrace certs: exit %d\n%s", code, stderr)
		}
	}
	good, other := filepath.Join(dir, "good"), filepath.Join(dir, "other")
	addr := freeAddr(t)
	a := startAgent(t, "node-a", "--api", "tls:"+addr, "--tls-cert", good+"/agent.crt", "--tls-key", good+"/agent.key", "--tls-client-ca", good+"/ca.crt")
	refusedBefore := sum(a.scrape(t), "pathtrace_follows_refused_total", "reason", "auth")

	// Not followed: plaintext, no certificate, another CA's follower.
	plain, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(plain, `{"version":1,"selectors":["10.244.2.57"]}`+"\n")
	plain.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(plain)
	plain.Close()
	if bytes.Contains(got, []byte(`"ok"`)) || bytes.Contains(got, []byte("node-a")) {
		t.Errorf("a plaintext client was answered: %q", got)
	}
	for _, tc := range []struct{ name, cert, key string }{
		{"no certificate", "", ""},
		{"another CA's", other + "/follower.crt", other + "/follower.key"},
	} {
		args := []string{"follow", "--duration", "1s", "--agents", "tls:" + addr, "--tls-ca", good + "/ca.crt", "--tls-cert", tc.cert, "--tls-key", tc.key, "10.244.2.57"}
		if tc.cert == "" {
			// The CLI wants all three files: a client without one is a raw handshake.
			cfg := &tls.Config{ServerName: "agent.pathtrace", RootCAs: x509.NewCertPool(), InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
			c, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				fmt.Fprintf(c, `{"version":1,"selectors":["10.244.2.57"]}`+"\n")
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				b, _ := io.ReadAll(c)
				c.Close()
				if len(b) > 0 {
					t.Errorf("%s: answered %q", tc.name, b)
				}
			}
			continue
		}
		code, stderr := runBin(t, nil, args...)
		if code != 1 || !strings.Contains(stderr, "agent tls:"+addr) {
			t.Errorf("%s: exit %d\n%s", tc.name, code, stderr)
		}
	}
	// The follower of the right CA follows.
	f := runFollow(t, "tls", []string{"--agents", "tls:" + addr, "--tls-ca", good + "/ca.crt", "--tls-cert", good + "/follower.crt",
		"--tls-key", good + "/follower.key", "--proto", "tcp", "10.244.2.57:8080"})
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	if js := f.stop(t); len(find(js, "S", "10.244.1.23:", "10.244.2.57:8080")) != 1 {
		t.Errorf("the follower with a certificate: want the SYN, got:\n%s", dump(js))
	}
	ss := a.scrape(t)
	if n := sum(ss, "pathtrace_follows_refused_total", "reason", "auth") - refusedBefore; n != 3 {
		t.Errorf("pathtrace_follows_refused_total{reason=auth} rose by %v, want 3 (plaintext, no certificate, another CA)", n)
	}
	if n := sum(ss, "pathtrace_follows_total"); n != 1 {
		t.Errorf("pathtrace_follows_total %v, want 1", n)
	}
	if !strings.Contains(a.stderr.String(), "CN=oncall (tls) follows") {
		t.Errorf("the agent did not log who follows:\n%s", a.stderr.String())
	}
	a.terminate(t)
	assertNoLeak(t)
}
