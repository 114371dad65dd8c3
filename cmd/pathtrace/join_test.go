package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/exporter"
)

// stopPaths stops a follower of several agents and returns the paths it printed.
func (f *follower) stopPaths(t *testing.T) []exporter.PathJSON {
	t.Helper()
	time.Sleep(1500 * time.Millisecond) // the journeys' timeout, then the join's wait
	f.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-f.done:
		if err != nil {
			t.Fatalf("pathtrace follow: %v\n%s", err, f.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("pathtrace follow did not exit after SIGINT\n%s", f.stderr.String())
	}
	var out []exporter.PathJSON
	sc := bufio.NewScanner(bytes.NewReader(f.stdout.Bytes()))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var p exporter.PathJSON
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("bad JSON line %q: %v", sc.Text(), err)
		}
		if p.Kind == "path" {
			out = append(out, p)
		}
	}
	return out
}

func findPaths(ps []exporter.PathJSON, flags, src, dst string) []exporter.PathJSON {
	var out []exporter.PathJSON
	for _, p := range ps {
		if len(p.Legs) > 0 && p.Legs[0].TCPFlags == flags && strings.HasPrefix(p.Flow.Src, src) && strings.HasPrefix(p.Flow.Dst, dst) {
			out = append(out, p)
		}
	}
	return out
}

func dumpPaths(ps []exporter.PathJSON) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.Flow.Src + " → " + p.Flow.Dst + " " + strings.Join(p.Nodes, ",") + ": " + p.Summary + "\n")
	}
	return b.String()
}

// One follower, both nodes' agents: a packet from a pod on node-a to one on node-b is
// one path, node-a's hops, the underlay, node-b's hops; when the lab's switch (outside
// both nodes) drops VXLAN, the path says it was lost on the underlay and neither node
// is blamed; when node-b's agent stops, the paths through node-b say so.
func TestCrossNodeJoin(t *testing.T) {
	needLab(t)
	na, nb := startAgent(t, "node-a"), startAgent(t, "node-b")
	f := agentFollow(t, []*agentProc{na, nb}, "--proto", "tcp", "10.244.2.57:8080")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	fault(t, "underlay")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080", "--timeout", "300ms"); err == nil {
		t.Fatalf("a-api → api-b went through the underlay fault: %s", out)
	}
	if _, err := lab("fault", "underlay", "off"); err != nil {
		t.Fatal(err)
	}
	paths := f.stopPaths(t)
	// Which veth the followed pod is behind, found by node-b's agent itself.
	if !strings.Contains(f.stderr.String(), "node node-b: 10.244.2.57 is the pod behind veth2b57") {
		t.Errorf("the follower was not told api-b's veth:\n%s", f.stderr.String())
	}

	syns := findPaths(paths, "S", "10.244.1.23:", "10.244.2.57:8080")
	var joined, lost []exporter.PathJSON
	for _, p := range syns {
		switch p.Verdict {
		case "delivered":
			joined = append(joined, p)
		case "lost_underlay":
			lost = append(lost, p)
		}
	}
	if len(joined) != 1 || len(lost) != 1 {
		t.Fatalf("want one SYN delivered across both nodes and one lost on the underlay, got:\n%s", dumpPaths(paths))
	}
	p := joined[0]
	if !slices.Equal(p.Nodes, []string{"node-a", "node-b"}) || len(p.Legs) != 2 {
		t.Fatalf("SYN path nodes %v, want node-a then node-b", p.Nodes)
	}
	if a, b := p.Legs[0], p.Legs[1]; a.ID != p.ID || b.ID != p.ID {
		t.Errorf("legs' IDs %s %s, path %s", a.ID, b.ID, p.ID)
	}
	if got, want := hopNames(p.Legs[0]), []string{"veth1a23 ingress", "cni0 ingress", "flannel.1 egress", "eth0 egress"}; !slices.Equal(got, want) {
		t.Errorf("node-a hops %v, want %v", got, want)
	}
	if got, want := hopNames(p.Legs[1]), []string{"eth0 ingress", "flannel.1 ingress", "cni0 egress", "veth2b57 egress"}; !slices.Equal(got, want) {
		t.Errorf("node-b hops %v, want %v", got, want)
	}
	if len(p.Crossings) != 1 {
		t.Fatalf("SYN path: %d crossings, want 1", len(p.Crossings))
	}
	c := p.Crossings[0]
	aOut, bIn := hop(p.Legs[0], "eth0 egress"), hop(p.Legs[1], "eth0 ingress")
	if c.From != "node-a" || c.To != "node-b" || c.FromHop != "eth0 egress" || c.ToHop != "eth0 ingress" || c.Clock != "same" ||
		c.LatencyNs < 0 || c.LatencyNs != bIn.TNs-aOut.TNs {
		t.Errorf("crossing %+v; eth0 egress at %d, eth0 ingress at %d", c, aOut.TNs, bIn.TNs)
	}
	if p.Summary != "delivered to pod via veth2b57 on node-b" {
		t.Errorf("SYN path summary %q", p.Summary)
	}
	if p.Diagnosis != nil {
		t.Errorf("the delivered SYN's path has a diagnosis: %+v", p.Diagnosis)
	}
	// The SYN-ACK goes the other way.
	if sa := findPaths(paths, "S.", "10.244.2.57:8080", "10.244.1.23:"); len(sa) != 1 || !slices.Equal(sa[0].Nodes, []string{"node-b", "node-a"}) || sa[0].Verdict != "delivered" {
		t.Errorf("SYN-ACK: want one path node-b → node-a, got:\n%s", dumpPaths(sa))
	}

	l := lost[0]
	want := "lost on the underlay: left node-a eth0 egress, never reached node-b eth0 ingress"
	if l.Summary != want || !slices.Equal(l.Nodes, []string{"node-a"}) || l.Next != "node-b" {
		t.Errorf("lost SYN: %q nodes %v next %q; want %q", l.Summary, l.Nodes, l.Next, want)
	}
	for _, leg := range l.Legs {
		if leg.Drop != nil || leg.Verdict != "forwarded" {
			t.Errorf("lost SYN: node %s says %s (drop %+v); no node dropped it", leg.Node, leg.Verdict, leg.Drop)
		}
	}
	// The underlay named with what the two nodes show: the direction, the tunnel's
	// port and addresses, and that the other direction worked (the SYN-ACK before).
	wantDiagnosis(t, "lost on the underlay", l.Diagnosis, "underlay", "direction=node-a → node-b",
		"tunnel=udp/8472 from 10.0.0.11 to 10.0.0.12", "other direction=node-b → node-a works")
	t.Logf("%d paths; SYN crossing %d ns (%s)", len(paths), c.LatencyNs, c.Clock)

	// node-b's agent stops while the follower runs: a SYN to node-b's pod is not
	// "lost on the underlay", it went to a node nobody could see.
	na2, nb2 := startAgent(t, "node-a"), startAgent(t, "node-b")
	f2 := agentFollow(t, []*agentProc{na2, nb2}, "--proto", "tcp", "10.244.2.57:8080")
	nb2.terminate(t)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(f2.stderr.String(), "agent of node node-b") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	fault(t, "underlay") // so that no SYN-ACK answers and the client sends one SYN in 300 ms
	pod(t, "a-api", "tcp", "10.244.2.57:8080", "--timeout", "300ms")
	paths = f2.stopPaths(t)
	missing := findPaths(paths, "S", "10.244.1.23:", "10.244.2.57:8080")
	if len(missing) != 1 || missing[0].Verdict != "node_missing" || missing[0].Missing != "node-b" ||
		!strings.Contains(missing[0].Summary, "node-b") || !strings.Contains(missing[0].Summary, "did not answer") {
		t.Errorf("SYN with node-b's agent gone: want node_missing naming node-b, got:\n%s\nstderr:\n%s", dumpPaths(paths), f2.stderr.String())
	}
	if !strings.Contains(f2.stderr.String(), "warning: agent of node node-b") {
		t.Errorf("no warning that node-b's agent stopped:\n%s", f2.stderr.String())
	}
}

// A pod's veth is found without help: by route and the bridge's tables when the node
// has talked to the pod, else by the address in the namespace behind each veth. Pods
// of other nodes and addresses that are no pod's are not given one.
func TestPodVeth(t *testing.T) {
	needLab(t)
	for _, tc := range []struct{ sel, want, not string }{
		{"10.244.1.42", "node node-a: 10.244.1.42 is the pod behind veth1a42", ""},
		{"10.244.1.23:8080", "node node-a: 10.244.1.23 is the pod behind veth1a23", ""},
		{"10.244.2.57", "", "10.244.2.57 is"},
		{"10.96.12.34:80", "", "10.96.12.34 is"},
	} {
		// Forget the neighbour entry, so that both ways are tried.
		inNode(t, "node-a", "ip", "neigh", "flush", "dev", "cni0")
		f := startFollow(t, "node-a", tc.sel)
		f.stop(t)
		if tc.want != "" && !strings.Contains(f.stderr.String(), tc.want) || tc.not != "" && strings.Contains(f.stderr.String(), tc.not) {
			t.Errorf("follow %s: stderr\n%s\nwant %q, not %q", tc.sel, f.stderr.String(), tc.want, tc.not)
		}
	}
	// With a neighbour entry: route, neighbour, forwarding table.
	if out, err := pod(t, "a-api", "tcp", "10.244.1.42:6379"); err != nil {
		t.Fatalf("a-api → redis: %v %s", err, out)
	}
	inNode(t, "node-a", "ping", "-c", "1", "-W", "1", "10.244.1.42")
	f := startFollow(t, "node-a", "10.244.1.42")
	f.stop(t)
	if !strings.Contains(f.stderr.String(), "10.244.1.42 is the pod behind veth1a42") {
		t.Errorf("with a neighbour entry: %s", f.stderr.String())
	}
}
