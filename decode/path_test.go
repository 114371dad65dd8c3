package decode

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	podA    = netip.MustParseAddrPort("10.244.1.23:40000")
	podB    = netip.MustParseAddrPort("10.244.2.57:8080")
	nodeA   = netip.MustParseAddr("10.0.0.11")
	nodeB   = netip.MustParseAddr("10.0.0.12")
	extHost = netip.MustParseAddrPort("10.0.0.100:80")
)

func labNodes(bootA, bootB string) []NodeInfo {
	return []NodeInfo{
		{Name: "node-a", BootID: bootA, Addrs: []netip.Addr{nodeA}, Pods: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
		{Name: "node-b", BootID: bootB, Addrs: []netip.Addr{nodeB}, Pods: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
	}
}

// legOut is a packet from a pod on from's node leaving by eth0 in VXLAN to the other
// node's address, first seen at t.
func legOut(id uint64, node string, src, dst netip.AddrPort, outerSrc, outerDst netip.Addr, t uint64) *Journey {
	f := Flow{Proto: ProtoTCP, Src: src, Dst: dst}
	o := &Outer{Kind: TunnelVXLAN, Src: outerSrc, Dst: outerDst, DstPort: 8472, VNI: 1}
	return &Journey{ID: id, Node: node, Flow: f, Verdict: Forwarded, Where: "eth0", Hops: []Hop{
		{Node: node, Ifname: "veth", Kind: KindPod, Dir: Ingress, TimeNs: t, Flow: f},
		{Node: node, Ifname: "cni0", Kind: KindBridge, Dir: Ingress, TimeNs: t + 5000, Flow: f},
		{Node: node, Kind: KindNetfilter, Hook: "FORWARD", Prio: "first", TimeNs: t + 8000, Flow: f},
		{Node: node, Ifname: "flannel.1", Kind: KindOverlay, Dir: Egress, TimeNs: t + 20000, Flow: f},
		{Node: node, Ifname: "eth0", Kind: KindUplink, Dir: Egress, TimeNs: t + 40000, Flow: f, Outer: o},
		{Node: node, Kind: KindNetfilter, Hook: "POSTROUTING", Prio: "last", TimeNs: t + 45000, Flow: f},
	}}
}

// legIn is the same packet arriving at node's eth0 at t and delivered to its pod.
func legIn(id uint64, node string, src, dst netip.AddrPort, outerSrc, outerDst netip.Addr, t uint64) *Journey {
	f := Flow{Proto: ProtoTCP, Src: src, Dst: dst}
	o := &Outer{Kind: TunnelVXLAN, Src: outerSrc, Dst: outerDst, DstPort: 8472, VNI: 1}
	return &Journey{ID: id, Node: node, Flow: f, Verdict: Delivered, Where: "veth", Hops: []Hop{
		{Node: node, Ifname: "eth0", Kind: KindUplink, Dir: Ingress, TimeNs: t, Flow: f, Outer: o},
		{Node: node, Ifname: "flannel.1", Kind: KindOverlay, Dir: Ingress, TimeNs: t + 10000, Flow: f},
		{Node: node, Ifname: "veth", Kind: KindPod, Dir: Egress, TimeNs: t + 30000, Flow: f},
	}}
}

func TestJoinAcrossNodes(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, order := range []string{"a first", "b first"} {
		j := NewJoiner(labNodes("boot1", "boot1"), time.Second)
		a := legOut(7, "node-a", podA, podB, nodeA, nodeB, 1_000_000)
		b := legIn(7, "node-b", podA, podB, nodeA, nodeB, 1_000_000+40000+60000)
		first, second := a, b
		if order == "b first" {
			first, second = b, a
		}
		if got := j.Add(first, now); got != nil {
			t.Fatalf("%s: a path after one of two legs: %+v", order, got)
		}
		got := j.Add(second, now)
		if len(got) != 1 {
			t.Fatalf("%s: %d paths after both legs, want 1", order, len(got))
		}
		p := got[0]
		if len(p.Legs) != 2 || p.Legs[0].Node != "node-a" || p.Legs[1].Node != "node-b" {
			t.Fatalf("%s: legs %v, want node-a then node-b", order, legNodes(p))
		}
		if len(p.Crossings) != 1 {
			t.Fatalf("%s: %d crossings, want 1", order, len(p.Crossings))
		}
		c := p.Crossings[0]
		if c.FromHop != "eth0 egress" || c.ToHop != "eth0 ingress" || c.RawNs != 60000 || c.LatencyNs != 60000 || c.Clock != "same" {
			t.Errorf("%s: crossing %+v, want eth0 egress → eth0 ingress, 60000 ns, same clock", order, c)
		}
		if p.Verdict != PathDone || p.Summary() != "delivered to pod via veth on node-b" {
			t.Errorf("%s: verdict %d %q", order, p.Verdict, p.Summary())
		}
		if j.Pending() != 0 {
			t.Errorf("%s: %d still pending", order, j.Pending())
		}
	}
}

func legNodes(p *Path) []string {
	var s []string
	for _, l := range p.Legs {
		s = append(s, l.Node)
	}
	return s
}

func TestJoinUnderlayLost(t *testing.T) {
	now := time.Unix(1000, 0)
	j := NewJoiner(labNodes("boot1", "boot1"), time.Second)
	if got := j.Add(legOut(9, "node-a", podA, podB, nodeA, nodeB, 1_000_000), now); got != nil {
		t.Fatalf("judged before node-b's wait was over: %s", got[0].Summary())
	}
	if got := j.Expire(now.Add(500 * time.Millisecond)); got != nil {
		t.Fatalf("expired before the wait: %s", got[0].Summary())
	}
	got := j.Expire(now.Add(time.Second))
	if len(got) != 1 {
		t.Fatalf("%d paths after the wait, want 1", len(got))
	}
	p := got[0]
	want := "lost on the underlay: left node-a eth0 egress, never reached node-b eth0 ingress"
	if p.Verdict != PathUnderlayLost || p.Summary() != want {
		t.Errorf("verdict %d %q, want %q", p.Verdict, p.Summary(), want)
	}
	if s := j.Stats(); s.UnderlayLost != 1 || s.Paths != 1 || s.Joined != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestJoinNodeMissing(t *testing.T) {
	now := time.Unix(1000, 0)
	j := NewJoiner(labNodes("boot1", "boot1"), time.Second)
	j.SetDown("node-b", "unix:/run/b.sock: connection refused")
	got := j.Add(legOut(9, "node-a", podA, podB, nodeA, nodeB, 1_000_000), now)
	if len(got) != 1 {
		t.Fatalf("%d paths, want 1 at once: nothing to wait for from a node that does not answer", len(got))
	}
	p := got[0]
	s := p.Summary()
	if p.Verdict != PathNodeMissing || p.Missing != "node-b" || !strings.Contains(s, "node-b") ||
		!strings.Contains(s, "did not answer") || strings.Contains(s, "lost on the underlay") {
		t.Errorf("verdict %d missing %q: %q", p.Verdict, p.Missing, s)
	}
	// The other way: a packet seen only on node-a that came from node-b's pod.
	in := legIn(10, "node-a", podB, podA, nodeB, nodeA, 2_000_000)
	got = j.Add(in, now)
	if len(got) != 1 || got[0].Verdict != PathNodeMissing || !strings.HasPrefix(got[0].Summary(), "came from node-b") {
		t.Fatalf("reply from node-b's pod: %+v", got)
	}
	// node-b answers again: the same packet now waits for it.
	j.SetDown("node-b", "")
	if got := j.Add(legOut(11, "node-a", podA, podB, nodeA, nodeB, 3_000_000), now); got != nil {
		t.Errorf("did not wait for node-b once it answers: %s", got[0].Summary())
	}
}

func TestJoinOutsideTheNodes(t *testing.T) {
	// To a host that is no traced node: one leg, judged at once by its node.
	j := NewJoiner(labNodes("boot1", "boot1"), time.Second)
	f := Flow{Proto: ProtoTCP, Src: podA, Dst: extHost}
	leg := &Journey{ID: 3, Node: "node-a", Flow: f, Verdict: Forwarded, Where: "eth0", Hops: []Hop{
		{Node: "node-a", Ifname: "veth", Kind: KindPod, Dir: Ingress, TimeNs: 1, Flow: f},
		{Node: "node-a", Ifname: "eth0", Kind: KindUplink, Dir: Egress, TimeNs: 2, Flow: f},
	}}
	got := j.Add(leg, time.Unix(1, 0))
	if len(got) != 1 || got[0].Verdict != PathDone || got[0].Summary() != "forwarded via eth0 on node-a" {
		t.Fatalf("%+v", got)
	}
}

func TestJoinDroppedOnSecondNode(t *testing.T) {
	now := time.Unix(1000, 0)
	j := NewJoiner(labNodes("boot1", "boot1"), time.Second)
	b := legIn(5, "node-b", podA, podB, nodeA, nodeB, 1_100_000)
	b.Hops = b.Hops[:2]
	b.Verdict, b.Where = Dropped, "flannel.1 ingress"
	b.Drop = &Drop{Reason: "NETFILTER_DROP", Location: "nf_hook_slow+0x9c", TimeNs: 1_120_000}
	j.Add(b, now)
	got := j.Add(legOut(5, "node-a", podA, podB, nodeA, nodeB, 1_000_000), now)
	if len(got) != 1 {
		t.Fatalf("%d paths", len(got))
	}
	want := "dropped: NETFILTER_DROP at nf_hook_slow+0x9c (after flannel.1 ingress) on node-b"
	if s := got[0].Summary(); got[0].Verdict != PathDone || s != want {
		t.Errorf("%q, want %q", s, want)
	}
}

// Nodes on two kernels: their wall clocks differ. node-b's runs 3 ms behind node-a's,
// the underlay takes 50 µs each way: node-a → node-b reads as 50 µs − 3 ms.
func TestJoinClockAlignment(t *testing.T) {
	now := time.Unix(1000, 0)
	j := NewJoiner(labNodes("boot-a", "boot-b"), time.Second)
	const skew, d = 3_000_000, 50_000
	aOut := legOut(1, "node-a", podA, podB, nodeA, nodeB, 10_000_000)
	aEth := aOut.Hops[4].TimeNs
	j.Add(aOut, now)
	got := j.Add(legIn(1, "node-b", podA, podB, nodeA, nodeB, aEth+d-skew), now)
	c := got[0].Crossings[0]
	if c.RawNs != d-skew || c.LatencyNs != 0 || c.Clock != "clamped" {
		t.Fatalf("one way seen: %+v, want raw %d shown as 0, clamped", c, d-skew)
	}
	// The reply, node-b → node-a, reads as 50 µs + 3 ms: now the offset is known.
	bOut := legOut(2, "node-b", podB, podA, nodeB, nodeA, 20_000_000)
	bEth := bOut.Hops[4].TimeNs
	j.Add(bOut, now)
	got = j.Add(legIn(2, "node-a", podB, podA, nodeB, nodeA, bEth+d+skew), now)
	if c := got[0].Crossings[0]; c.RawNs != d+skew || c.LatencyNs != d || c.Clock != "aligned" {
		t.Fatalf("both ways seen: %+v, want raw %d aligned to %d", c, d+skew, d)
	}
	// A later crossing a → b is aligned too.
	a3 := legOut(3, "node-a", podA, podB, nodeA, nodeB, 30_000_000)
	j.Add(a3, now)
	got = j.Add(legIn(3, "node-b", podA, podB, nodeA, nodeB, a3.Hops[4].TimeNs+d+20_000-skew), now)
	if c := got[0].Crossings[0]; c.LatencyNs != d+20_000 || c.Clock != "aligned" {
		t.Fatalf("third crossing: %+v, want %d aligned", c, d+20_000)
	}
}

func TestJoinExpireOrder(t *testing.T) {
	// A packet ID that completes early and comes again waits from its second arrival.
	j := NewJoiner(labNodes("b", "b"), time.Second)
	t0 := time.Unix(1000, 0)
	j.Add(legOut(1, "node-a", podA, podB, nodeA, nodeB, 1), t0)
	j.Add(legIn(1, "node-b", podA, podB, nodeA, nodeB, 100000), t0)
	j.Add(legOut(2, "node-a", podA, podB, nodeA, nodeB, 2), t0.Add(100*time.Millisecond))
	j.Add(legOut(1, "node-a", podA, podB, nodeA, nodeB, 3), t0.Add(500*time.Millisecond))
	got := j.Expire(t0.Add(1200 * time.Millisecond))
	if len(got) != 1 || got[0].ID != 2 {
		t.Fatalf("at 1.2 s: %d paths, want packet 2 only", len(got))
	}
	if got := j.Expire(t0.Add(1500 * time.Millisecond)); len(got) != 1 || got[0].ID != 1 {
		t.Fatalf("at 1.5 s: want packet 1's second coming")
	}
	if j.Pending() != 0 {
		t.Fatalf("%d pending", j.Pending())
	}
}

func TestJoinSilentAgentUnknownNode(t *testing.T) {
	// node-b's agent never answered, so its addresses are unknown: a packet node-a sent
	// to an address no answering node owns is not judged forwarded, nor lost.
	nodes := labNodes("b", "b")[:1]
	j := NewJoiner(nodes, time.Second)
	j.SetDown("unix:/run/b.sock", "connection refused")
	got := j.Add(legOut(1, "node-a", podA, podB, nodeA, nodeB, 1), time.Unix(1, 0))
	if len(got) != 1 {
		t.Fatalf("%d paths, want 1 at once", len(got))
	}
	s := got[0].Summary()
	if got[0].Verdict != PathNodeMissing || !strings.Contains(s, "unix:/run/b.sock") || !strings.Contains(s, "10.0.0.12") ||
		!strings.Contains(s, "connection refused") {
		t.Errorf("%d %q", got[0].Verdict, s)
	}
}

func TestJoinFlushUnfinished(t *testing.T) {
	j := NewJoiner(labNodes("b", "b"), time.Second)
	j.Add(legOut(1, "node-a", podA, podB, nodeA, nodeB, 1), time.Unix(1, 0))
	got := j.Flush()
	if len(got) != 1 || got[0].Verdict != PathUnfinished || !strings.Contains(got[0].Summary(), "waiting for node-b") {
		t.Fatalf("%+v", got)
	}
	if j.Stats().UnderlayLost != 0 {
		t.Errorf("counted as lost on the underlay: %+v", j.Stats())
	}
}
