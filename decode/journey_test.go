package decode_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// Two flannel nodes. Pod 10.244.0.5 on node-a talks to pod 10.244.1.7 on node-b; the
// nodes' underlay addresses are 192.168.1.10 and .11, VNI 1 on port 8472.

const (
	idxEth0    = 2
	idxFlannel = 3
	idxCni0    = 4
	idxVethA   = 7
	idxVethB   = 9
	vethA      = "veth3f8a2c1e"
	vethB      = "veth9b0d7e21"

	t0      = uint64(5_000_123_456_789) // about 83 minutes of uptime
	timeout = 500 * time.Millisecond

	nftDoChain = 0xffffffffc0a41000 // in testdata/kallsyms.txt
	netnsInit  = 4026531840
)

func nodeConfig(t testing.TB, node string) decode.Config {
	cfg := decode.Config{
		Node:    node,
		Timeout: timeout,
		Stall:   10 * time.Millisecond,
		Reasons: decode.NewDropReasons(btfReasons()),
		Symbols: loadSymbols(t),
		Ifaces: []decode.Iface{
			{Index: 1, Name: "lo", Kind: decode.KindUnknown},
			{Index: idxEth0, Name: "eth0", Kind: decode.KindUplink},
			{Index: idxFlannel, Name: "flannel.1", Kind: decode.KindOverlay},
			{Index: idxCni0, Name: "cni0", Kind: decode.KindBridge},
		},
	}
	switch node {
	case "node-a":
		cfg.Ifaces = append(cfg.Ifaces, decode.Iface{Index: idxVethA, Name: vethA, Kind: decode.KindPod})
		cfg.LocalAddrs = []netip.Addr{addr("192.168.1.10"), addr("10.244.0.0"), addr("10.244.0.1"), addr("127.0.0.1")}
	case "node-b":
		cfg.Ifaces = append(cfg.Ifaces, decode.Iface{Index: idxVethB, Name: vethB, Kind: decode.KindPod})
		cfg.LocalAddrs = []netip.Addr{addr("192.168.1.11"), addr("10.244.1.0"), addr("10.244.1.1"), addr("127.0.0.1")}
	}
	return cfg
}

// The SYN from pod A to pod B as an IP packet with the given TTL, optionally to another
// destination (a Service address before DNAT).
func podSyn(ttl uint8, dst string, dport uint16) []byte {
	return v4{src: "10.244.0.5", dst: dst, id: 0x1c46, ttl: ttl, frag: 0x4000}.packet(decode.ProtoTCP,
		tcpSeg{sport: 43512, dport: dport, seq: 0x9a3c1f00, flags: decode.TCPSyn, win: 64860,
			opts: synOpts(1410, 2_874_113_001)}.bytes())
}

func encap(frame []byte) []byte {
	return vxlan(v4{src: "192.168.1.10", dst: "192.168.1.11", id: 0x3a01}, 51234, 8472, 1, frame)
}

func hop(t testing.TB, tNs uint64, ifindex uint32, name string, dir decode.Dir, frame []byte) decode.Event {
	return wire(t, event(decode.KindHop, tNs, ifindex, name, dir, true, frame))
}

// drop is a kfree_skb event: the snapshot starts at the IP header.
func drop(t testing.TB, tNs uint64, reason uint32, loc uint64, dev string, ip []byte) decode.Event {
	ev := event(decode.KindDrop, tNs, 0, dev, decode.NoDir, false, ip)
	ev.Reason, ev.Location, ev.Netns, ev.Skb = reason, loc, netnsInit, 0xffff888004a1b200
	if dev == "cni0" {
		ev.Ifindex = idxCni0
	}
	return wire(t, ev)
}

// forwardA is node-a's view of the SYN: veth ingress, cni0 ingress, flannel.1 egress,
// eth0 egress (VXLAN), with the given times.
func forwardA(t testing.TB, ts [4]uint64) []decode.Event {
	pod := ether(etIPv4, podSyn(64, "10.244.1.7", 8080))
	routed := ether(etIPv4, podSyn(63, "10.244.1.7", 8080))
	return []decode.Event{
		hop(t, ts[0], idxVethA, vethA, decode.Ingress, pod),
		hop(t, ts[1], idxCni0, "cni0", decode.Ingress, pod),
		hop(t, ts[2], idxFlannel, "flannel.1", decode.Egress, routed),
		hop(t, ts[3], idxEth0, "eth0", decode.Egress, encap(routed)),
	}
}

var forwardTimes = [4]uint64{t0, t0 + 9_850, t0 + 31_200, t0 + 45_700}

func add(t testing.TB, a *decode.Assembler, evs ...decode.Event) {
	t.Helper()
	for i := range evs {
		if ev := a.Add(&evs[i]); ev != nil {
			t.Fatalf("Add evicted %d journeys", len(ev))
		}
	}
}

// closeAll expires everything after the last event and wants exactly n journeys.
func expireAll(t testing.TB, a *decode.Assembler, lastNs uint64, n int) []*decode.Journey {
	t.Helper()
	js := a.Expire(lastNs + uint64(timeout))
	if len(js) != n {
		t.Fatalf("Expire gave %d journeys, want %d: %s", len(js), n, describe(js))
	}
	if a.Open() != 0 {
		t.Errorf("%d journeys still open", a.Open())
	}
	return js
}

func describe(js []*decode.Journey) string {
	var b strings.Builder
	for _, j := range js {
		fmt.Fprintf(&b, "\n  %016x %v %v %q", j.ID, hopNames(j), j.Verdict, j.Summary())
	}
	return b.String()
}

func hopNames(j *decode.Journey) []string {
	var n []string
	for i := range j.Hops {
		n = append(n, j.Hops[i].Name())
	}
	return n
}

func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int(nil), p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

func TestJourneyForwarded(t *testing.T) {
	evs := forwardA(t, forwardTimes)
	wantID := parse(t, synFrame(), true).ID
	for _, order := range permutations(len(evs)) {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			a := decode.NewAssembler(nodeConfig(t, "node-a"))
			for _, i := range order {
				add(t, a, evs[i])
			}
			if a.Open() != 1 {
				t.Fatalf("%d journeys open, want 1", a.Open())
			}
			j := expireAll(t, a, forwardTimes[3], 1)[0]
			want := []string{vethA + " ingress", "cni0 ingress", "flannel.1 egress", "eth0 egress"}
			if got := hopNames(j); !reflect.DeepEqual(got, want) {
				t.Fatalf("hops %v, want %v", got, want)
			}
			for i, h := range j.Hops {
				if h.TimeNs != forwardTimes[i] {
					t.Errorf("hop %d at %d, want %d", i, h.TimeNs, forwardTimes[i])
				}
				if h.Node != "node-a" {
					t.Errorf("hop %d node %q", i, h.Node)
				}
			}
			if j.Verdict != decode.Forwarded || j.Where != "eth0" || j.Summary() != "forwarded via eth0" {
				t.Errorf("verdict %v where %q summary %q", j.Verdict, j.Where, j.Summary())
			}
			if j.ID != wantID {
				t.Errorf("ID %#x, want the packet's %#x", j.ID, wantID)
			}
			flow := decode.Flow{Proto: decode.ProtoTCP, Src: addrPort("10.244.0.5:43512"), Dst: addrPort("10.244.1.7:8080")}
			if j.Flow != flow || j.TCPFlags != decode.TCPSyn || j.IPLen != 60 || j.Node != "node-a" {
				t.Errorf("journey flow %v flags %#x len %d node %q", j.Flow, j.TCPFlags, j.IPLen, j.Node)
			}
			kinds := []decode.IfaceKind{decode.KindPod, decode.KindBridge, decode.KindOverlay, decode.KindUplink}
			ttls := []uint8{64, 64, 63, 63}
			for i, h := range j.Hops {
				if h.Kind != kinds[i] || h.TTL != ttls[i] || h.Flow != flow {
					t.Errorf("hop %d: kind %v ttl %d flow %v", i, h.Kind, h.TTL, h.Flow)
				}
				if (h.Outer != nil) != (i == 3) {
					t.Errorf("hop %d: outer %+v", i, h.Outer)
				}
			}
			if o := j.Hops[3].Outer; o == nil || *o != (decode.Outer{Kind: decode.TunnelVXLAN, Src: addr("192.168.1.10"), Dst: addr("192.168.1.11"), SrcPort: 51234, DstPort: 8472, VNI: 1}) {
				t.Errorf("eth0 hop outer %+v", o)
			}
			if j.Drop != nil || j.Stall != nil || j.FirstNs() != t0 {
				t.Errorf("drop %+v stall %+v first %d", j.Drop, j.Stall, j.FirstNs())
			}
			if s := a.Stats(); s != (decode.Stats{Events: 4, Journeys: 1}) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// A Service: pod A connects to 10.96.0.20:80, DNAT at cni0's PREROUTING makes it
// 10.244.1.7:8080. The packet keeps its ID; each hop has the flow it had there, and the
// journey the flow as the pod sent it, whatever order the events arrive in.
func TestJourneyForwardedThroughDNAT(t *testing.T) {
	pod := ether(etIPv4, podSyn(64, "10.96.0.20", 80))
	routed := ether(etIPv4, podSyn(63, "10.244.1.7", 8080))
	evs := []decode.Event{
		hop(t, forwardTimes[0], idxVethA, vethA, decode.Ingress, pod),
		hop(t, forwardTimes[1], idxCni0, "cni0", decode.Ingress, pod),
		hop(t, forwardTimes[2], idxFlannel, "flannel.1", decode.Egress, routed),
		hop(t, forwardTimes[3], idxEth0, "eth0", decode.Egress, encap(routed)),
	}
	service := decode.Flow{Proto: decode.ProtoTCP, Src: addrPort("10.244.0.5:43512"), Dst: addrPort("10.96.0.20:80")}
	backend := decode.Flow{Proto: decode.ProtoTCP, Src: addrPort("10.244.0.5:43512"), Dst: addrPort("10.244.1.7:8080")}
	for _, order := range [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {2, 0, 3, 1}, {3, 0, 1, 2}} {
		a := decode.NewAssembler(nodeConfig(t, "node-a"))
		for _, i := range order {
			add(t, a, evs[i])
		}
		j := expireAll(t, a, forwardTimes[3], 1)[0]
		if len(j.Hops) != 4 || j.Verdict != decode.Forwarded {
			t.Fatalf("order %v: %s", order, describe([]*decode.Journey{j}))
		}
		if j.Flow != service {
			t.Errorf("order %v: journey flow %v, want the pod's %v", order, j.Flow, service)
		}
		for i, want := range []decode.Flow{service, service, backend, backend} {
			if j.Hops[i].Flow != want {
				t.Errorf("order %v: hop %d flow %v, want %v", order, i, j.Hops[i].Flow, want)
			}
		}
	}
}

// node-b receives the SYN: eth0 ingress (VXLAN), flannel.1 ingress, cni0 egress, the
// pod's veth egress.
func TestJourneyDeliveredToPod(t *testing.T) {
	routed := ether(etIPv4, podSyn(63, "10.244.1.7", 8080))
	final := ether(etIPv4, podSyn(62, "10.244.1.7", 8080))
	tb := uint64(7_200_000_000_000) // node-b's own monotonic clock
	ts := []uint64{tb, tb + 38_400, tb + 52_100, tb + 55_900}
	evs := []decode.Event{
		hop(t, ts[0], idxEth0, "eth0", decode.Ingress, encap(routed)),
		hop(t, ts[1], idxFlannel, "flannel.1", decode.Ingress, routed),
		hop(t, ts[2], idxCni0, "cni0", decode.Egress, final),
		hop(t, ts[3], idxVethB, vethB, decode.Egress, final),
	}
	a := decode.NewAssembler(nodeConfig(t, "node-b"))
	add(t, a, evs[2], evs[0], evs[3], evs[1])
	j := expireAll(t, a, ts[3], 1)[0]
	want := []string{"eth0 ingress", "flannel.1 ingress", "cni0 egress", vethB + " egress"}
	if got := hopNames(j); !reflect.DeepEqual(got, want) {
		t.Fatalf("hops %v, want %v", got, want)
	}
	if j.Verdict != decode.Delivered || j.Where != vethB || j.Summary() != "delivered to pod via "+vethB {
		t.Errorf("verdict %v where %q summary %q", j.Verdict, j.Where, j.Summary())
	}
	if o := j.Hops[0].Outer; o == nil || o.VNI != 1 || o.Src != addr("192.168.1.10") {
		t.Errorf("eth0 ingress outer %+v", o)
	}
	if j.Node != "node-b" || j.Hops[3].Node != "node-b" || j.Hops[3].TTL != 62 {
		t.Errorf("node %q hop node %q ttl %d", j.Node, j.Hops[3].Node, j.Hops[3].TTL)
	}

	// node-a's forward journey of the same packet has the same ID: the join key.
	fa := decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, fa, forwardA(t, forwardTimes)...)
	if f := expireAll(t, fa, forwardTimes[3], 1)[0]; f.ID != j.ID {
		t.Errorf("forward journey ID %#x, receive journey ID %#x", f.ID, j.ID)
	}
}

func TestJourneyDeliveredToNode(t *testing.T) {
	// Pod A to node-exporter on the node's own address: veth ingress, cni0 ingress,
	// then the node's stack.
	ip := v4{src: "10.244.0.5", dst: "192.168.1.10", id: 0x0bad, frag: 0x4000}.packet(decode.ProtoTCP,
		tcpSeg{sport: 50000, dport: 9100, seq: 77, flags: decode.TCPSyn, opts: synOpts(1410, 5)}.bytes())
	frame := ether(etIPv4, ip)
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, a, hop(t, t0, idxVethA, vethA, decode.Ingress, frame), hop(t, t0+8_000, idxCni0, "cni0", decode.Ingress, frame))
	// Flush before the timeout: the fate is known, so not unfinished.
	js := a.Flush(t0 + 10_000)
	if len(js) != 1 {
		t.Fatalf("Flush gave %d journeys", len(js))
	}
	j := js[0]
	if j.Verdict != decode.Delivered || j.Where != "cni0" || j.Summary() != "delivered to the node's stack via cni0" {
		t.Errorf("verdict %v where %q summary %q", j.Verdict, j.Where, j.Summary())
	}

	// From outside to the node's address on eth0, with the node's address configured
	// IPv4-mapped.
	cfg := nodeConfig(t, "node-a")
	cfg.LocalAddrs = []netip.Addr{addr("::ffff:192.168.1.10")}
	a = decode.NewAssembler(cfg)
	ssh := ether(etIPv4, v4{src: "192.168.1.200", dst: "192.168.1.10", id: 1}.packet(decode.ProtoTCP,
		tcpSeg{sport: 61000, dport: 22, seq: 1, ack: 1, flags: decode.TCPAck, opts: tsOpt(1, 1)}.bytes()))
	add(t, a, hop(t, t0, idxEth0, "eth0", decode.Ingress, ssh))
	j = expireAll(t, a, t0, 1)[0]
	if j.Verdict != decode.Delivered || j.Summary() != "delivered to the node's stack via eth0" {
		t.Errorf("eth0 to the node: verdict %v summary %q", j.Verdict, j.Summary())
	}

	// VXLAN arriving on eth0 is addressed to the node on the outside but to a pod
	// inside: not delivered to the node's stack at eth0.
	a = decode.NewAssembler(nodeConfig(t, "node-b"))
	add(t, a, hop(t, t0, idxEth0, "eth0", decode.Ingress, encap(ether(etIPv4, podSyn(63, "10.244.1.7", 8080)))))
	j = expireAll(t, a, t0, 1)[0]
	if j.Verdict != decode.Lost || j.Where != "eth0 ingress" {
		t.Errorf("VXLAN on eth0 only: verdict %v where %q", j.Verdict, j.Where)
	}
}

// dropAtCni0 is the SYN seen on veth and cni0 ingress and then dropped by nftables in
// the forward chain (after routing decremented the TTL).
func dropAtCni0(t testing.TB, reason uint32) []decode.Event {
	pod := ether(etIPv4, podSyn(64, "10.244.1.7", 8080))
	return []decode.Event{
		hop(t, t0, idxVethA, vethA, decode.Ingress, pod),
		hop(t, t0+9_850, idxCni0, "cni0", decode.Ingress, pod),
		drop(t, t0+38_000, reason, nftDoChain+0x2c8, "cni0", podSyn(63, "10.244.1.7", 8080)),
	}
}

func TestJourneyDropped(t *testing.T) {
	evs := dropAtCni0(t, 12)
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}} {
		a := decode.NewAssembler(nodeConfig(t, "node-a"))
		for _, i := range order {
			add(t, a, evs[i])
		}
		j := expireAll(t, a, t0+38_000, 1)[0]
		if got, want := hopNames(j), []string{vethA + " ingress", "cni0 ingress"}; !reflect.DeepEqual(got, want) {
			t.Errorf("order %v: hops %v, want %v", order, got, want)
		}
		if j.Verdict != decode.Dropped || j.Where != "cni0 ingress" {
			t.Errorf("order %v: verdict %v where %q", order, j.Verdict, j.Where)
		}
		want := decode.Drop{Reason: "NETFILTER_DROP", ReasonSource: decode.ReasonKernel, Code: 12, Location: "nft_do_chain+0x2c8", Addr: nftDoChain + 0x2c8,
			Ifname: "cni0", Netns: netnsInit, TimeNs: t0 + 38_000, Len: 60, Flow: j.Flow}
		if j.Drop == nil || !reflect.DeepEqual(*j.Drop, want) {
			t.Fatalf("order %v: drop %+v, want %+v", order, j.Drop, want)
		}
		if s := j.Summary(); s != "dropped: NETFILTER_DROP at nft_do_chain+0x2c8 (after cni0 ingress)" {
			t.Errorf("order %v: summary %q", order, s)
		}
		if j.Flow.Dst != addrPort("10.244.1.7:8080") || j.FirstNs() != t0 {
			t.Errorf("order %v: flow %v first %d", order, j.Flow, j.FirstNs())
		}
	}
}

func TestJourneyDroppedWithoutReasons(t *testing.T) {
	// An older kernel: no reason names, reason 0 in every event, and no kallsyms.
	cfg := nodeConfig(t, "node-a")
	cfg.Reasons, cfg.Symbols = nil, nil
	a := decode.NewAssembler(cfg)
	add(t, a, dropAtCni0(t, 0)...)
	j := expireAll(t, a, t0+38_000, 1)[0]
	if j.Verdict != decode.Dropped || j.Drop == nil || j.Drop.Reason != "" || j.Drop.Location != "0xffffffffc0a412c8" {
		t.Fatalf("verdict %v drop %+v", j.Verdict, j.Drop)
	}
	if s := j.Summary(); s != "dropped at 0xffffffffc0a412c8 (after cni0 ingress)" {
		t.Errorf("summary %q", s)
	}
	if a.Stats().NotDrops != 0 {
		t.Errorf("NotDrops %d", a.Stats().NotDrops)
	}
}

func TestJourneyDropOnly(t *testing.T) {
	// Dropped before any traced hop: no Where, and the summary says so.
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, a, drop(t, t0, 3, 0xffffffff81ed0000+0x3e5, "", podSyn(63, "192.168.1.10", 9999)))
	j := expireAll(t, a, t0, 1)[0]
	if j.Verdict != decode.Dropped || j.Where != "" || len(j.Hops) != 0 || j.FirstNs() != t0 {
		t.Errorf("verdict %v where %q hops %d first %d", j.Verdict, j.Where, len(j.Hops), j.FirstNs())
	}
	if s := j.Summary(); s != "dropped: NO_SOCKET at ip_rcv_core+0x3e5" {
		t.Errorf("summary %q", s)
	}
}

func TestJourneyConsumedIsNotADrop(t *testing.T) {
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	evs := forwardA(t, forwardTimes)
	// The kernel frees the VXLAN skb after transmission with reason CONSUMED, and the
	// inner packet with NOT_DROPPED_YET: neither is a drop.
	consumed := drop(t, t0+60_000, 1, 0xffffffff81c7e2a0+0x61, "eth0", podSyn(63, "10.244.1.7", 8080))
	notYet := drop(t, t0+61_000, 0, 0xffffffff81c7e2a0+0x61, "eth0", podSyn(63, "10.244.1.7", 8080))
	add(t, a, evs[0], evs[1], consumed, evs[2], evs[3], notYet)
	j := expireAll(t, a, t0+61_000, 1)[0]
	if j.Verdict != decode.Forwarded || j.Drop != nil || len(j.Hops) != 4 {
		t.Errorf("verdict %v drop %+v hops %d", j.Verdict, j.Drop, len(j.Hops))
	}
	if s := a.Stats(); s.NotDrops != 2 || s.Events != 6 || s.Journeys != 1 {
		t.Errorf("stats %+v", s)
	}
	// Alone, a consumed packet opens no journey.
	a = decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, a, consumed)
	if a.Open() != 0 || len(a.Flush(t0+uint64(time.Second))) != 0 {
		t.Errorf("a lone CONSUMED event opened a journey")
	}
}

// lostAtCni0 is the SYN seen on veth and cni0 ingress, then nothing.
func lostAtCni0(t testing.TB) ([]decode.Event, uint64) {
	pod := ether(etIPv4, podSyn(64, "10.244.1.7", 8080))
	last := t0 + 9_850
	return []decode.Event{
		hop(t, t0, idxVethA, vethA, decode.Ingress, pod),
		hop(t, last, idxCni0, "cni0", decode.Ingress, pod),
	}, last
}

// Another datapath's program runs after pathtrace's on cni0's ingress (as Cilium's
// redirects to a pod's namespace): the packet last seen there is redirected, not
// lost, and the program is named. On egress nothing else runs: still lost there.
func TestJourneyRedirected(t *testing.T) {
	evs, last := lostAtCni0(t)
	cfg := nodeConfig(t, "node-a")
	for i := range cfg.Ifaces {
		if cfg.Ifaces[i].Name == "cni0" {
			cfg.Ifaces[i].Others = [2]string{"tcx cil_from_overlay (id 42)", ""}
		}
	}
	a := decode.NewAssembler(cfg)
	add(t, a, evs...)
	js := a.Expire(last + uint64(timeout))
	if len(js) != 1 || js[0].Verdict != decode.Redirected || js[0].HandedTo != "tcx cil_from_overlay (id 42)" || js[0].Where != "cni0 ingress" {
		t.Fatalf("want one journey redirected at cni0 ingress by cil_from_overlay, got %s", describe(js))
	}
	want := "redirected at cni0 ingress: another datapath's program runs there after pathtrace's (tcx cil_from_overlay (id 42)) and took the packet past the hooks pathtrace sits on; no drop was seen"
	if s := js[0].Summary(); s != want {
		t.Errorf("summary %q, want %q", s, want)
	}
	// Tracing stopped before the timeout: unfinished, as any other.
	a = decode.NewAssembler(cfg)
	add(t, a, evs...)
	if js := a.Flush(last + 1); len(js) != 1 || js[0].Verdict != decode.Unfinished {
		t.Errorf("flushed before the timeout: %s", describe(js))
	}
	// The program on the other direction does not count.
	for i := range cfg.Ifaces {
		if cfg.Ifaces[i].Name == "cni0" {
			cfg.Ifaces[i].Others = [2]string{"", "tcx other (id 43)"}
		}
	}
	a = decode.NewAssembler(cfg)
	add(t, a, evs...)
	if js := a.Expire(last + uint64(timeout)); len(js) != 1 || js[0].Verdict != decode.Lost {
		t.Errorf("a program on egress only: %s", describe(js))
	}
}

// The tunnel's program runs before pathtrace's (clsact beside tcx): the packet is seen
// arriving inside the tunnel and delivered to the node to be taken apart (INPUT), and
// its inner packet never reaches the tunnel's hook. Redirected, not delivered; with
// nothing before pathtrace's on the tunnel, delivered as before.
func TestJourneyRedirectedBeforeTunnel(t *testing.T) {
	outer := encap(ether(etIPv4, podSyn(63, "10.244.1.7", 8080)))
	ip := outer[14:]
	evs := []decode.Event{
		hop(t, t0, idxEth0, "eth0", decode.Ingress, outer),
		nfEvent(t, t0+20_000, 1, decode.NFLast, "eth0", idxEth0, "", ip),
	}
	last := t0 + 20_000
	for _, before := range []string{"tcx cil_from_overlay (id 7)", ""} {
		cfg := nodeConfig(t, "node-b")
		for i := range cfg.Ifaces {
			if cfg.Ifaces[i].Name == "flannel.1" {
				cfg.Ifaces[i].Before = before
			}
		}
		a := decode.NewAssembler(cfg)
		add(t, a, evs...)
		js := a.Expire(last + uint64(timeout))
		if len(js) != 1 {
			t.Fatalf("want one journey, got %s (open %d, %+v)", describe(js), a.Open(), a.Stats())
		}
		want, handed := decode.Redirected, before
		if before == "" {
			want = decode.Delivered
		}
		if js[0].Verdict != want || js[0].HandedTo != handed {
			t.Errorf("before=%q: verdict %v handed to %q, want %v %q (%s)", before, js[0].Verdict, js[0].HandedTo, want, handed, js[0].Summary())
		}
	}
}

func TestJourneyLost(t *testing.T) {
	evs, last := lostAtCni0(t)
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, a, evs...)
	if js := a.Expire(last + uint64(timeout) - 1); len(js) != 0 {
		t.Fatalf("Expire 1ns before the timeout closed %s", describe(js))
	}
	if js := a.Expire(last - 1_000); len(js) != 0 {
		t.Fatalf("Expire at a time before the last event closed %s", describe(js))
	}
	if a.Open() != 1 {
		t.Fatalf("%d open", a.Open())
	}
	js := a.Expire(last + uint64(timeout))
	if len(js) != 1 {
		t.Fatalf("Expire at the timeout gave %d journeys", len(js))
	}
	j := js[0]
	if j.Verdict != decode.Lost || j.Where != "cni0 ingress" {
		t.Errorf("verdict %v where %q", j.Verdict, j.Where)
	}
	if s := j.Summary(); s != "lost after cni0 ingress: no further hop and no drop within the timeout" {
		t.Errorf("summary %q", s)
	}
	if a.Open() != 0 || a.Stats().Journeys != 1 {
		t.Errorf("open %d, stats %+v", a.Open(), a.Stats())
	}
}

func TestJourneyUnfinished(t *testing.T) {
	evs, last := lostAtCni0(t)
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, a, evs...)
	js := a.Flush(last + 100_000_000)
	if len(js) != 1 {
		t.Fatalf("Flush gave %d journeys", len(js))
	}
	if j := js[0]; j.Verdict != decode.Unfinished || j.Summary() != "unfinished: tracing stopped before the packet's fate was known" {
		t.Errorf("verdict %v summary %q", j.Verdict, j.Summary())
	}
	// Flushed after the timeout ran out, it is lost.
	a = decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, a, evs...)
	if js := a.Flush(last + uint64(timeout)); len(js) != 1 || js[0].Verdict != decode.Lost {
		t.Errorf("Flush after the timeout: %s", describe(js))
	}
}

func TestJourneyStall(t *testing.T) {
	ms := uint64(time.Millisecond)
	for _, tc := range []struct {
		name  string
		stall time.Duration
		ts    [4]uint64
		want  *decode.Stall
	}{
		{"15ms before eth0", 10 * time.Millisecond,
			[4]uint64{t0, t0 + 9_850, t0 + 31_200, t0 + 31_200 + 15*ms},
			&decode.Stall{From: "flannel.1 egress", Hop: "eth0 egress", DeltaNs: 15 * ms}},
		{"5ms", 10 * time.Millisecond,
			[4]uint64{t0, t0 + 9_850, t0 + 31_200, t0 + 31_200 + 5*ms}, nil},
		{"exactly the threshold", 10 * time.Millisecond,
			[4]uint64{t0, t0 + 9_850, t0 + 31_200, t0 + 31_200 + 10*ms}, nil},
		{"the largest of two", 10 * time.Millisecond,
			[4]uint64{t0, t0 + 12*ms, t0 + 12*ms + 20_000, t0 + 27*ms + 20_000},
			&decode.Stall{From: "flannel.1 egress", Hop: "eth0 egress", DeltaNs: 15 * ms}},
		{"the first of two", 10 * time.Millisecond,
			[4]uint64{t0, t0 + 17*ms, t0 + 17*ms + 20_000, t0 + 28*ms + 20_000},
			&decode.Stall{From: vethA + " ingress", Hop: "cni0 ingress", DeltaNs: 17 * ms}},
		{"disabled", 0,
			[4]uint64{t0, t0 + 9_850, t0 + 31_200, t0 + 31_200 + 15*ms}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := nodeConfig(t, "node-a")
			cfg.Stall = tc.stall
			a := decode.NewAssembler(cfg)
			evs := forwardA(t, tc.ts)
			add(t, a, evs[3], evs[1], evs[0], evs[2])
			j := expireAll(t, a, tc.ts[3], 1)[0]
			if !reflect.DeepEqual(j.Stall, tc.want) {
				t.Errorf("stall %+v, want %+v", j.Stall, tc.want)
			}
			if j.Verdict != decode.Forwarded {
				t.Errorf("verdict %v", j.Verdict)
			}
		})
	}
}

// synN is the n-th SYN of pod A (another source port, sequence number and IP ID):
// another packet, another ID.
func synN(n int) []byte {
	return ether(etIPv4, v4{src: "10.244.0.5", dst: "10.244.1.7", id: uint16(n), frag: 0x4000}.packet(decode.ProtoTCP,
		tcpSeg{sport: uint16(40000 + n), dport: 8080, seq: uint32(n) * 7919, flags: decode.TCPSyn,
			opts: synOpts(1410, uint32(n))}.bytes()))
}

func TestAssemblerMaxOpen(t *testing.T) {
	cfg := nodeConfig(t, "node-a")
	cfg.MaxOpen = 2
	a := decode.NewAssembler(cfg)
	ids := make([]uint64, 3)
	for i := range ids {
		ids[i] = parse(t, synN(i+1), true).ID
	}
	add(t, a, hop(t, t0+1_000, idxVethA, vethA, decode.Ingress, synN(1)))
	add(t, a, hop(t, t0+2_000, idxVethA, vethA, decode.Ingress, synN(2)))
	// A second hop of the first packet: its journey is now the newest.
	add(t, a, hop(t, t0+2_500, idxCni0, "cni0", decode.Ingress, synN(1)))
	ev := hop(t, t0+3_000, idxVethA, vethA, decode.Ingress, synN(3))
	evicted := a.Add(&ev)
	if len(evicted) != 1 || evicted[0].ID != ids[1] {
		t.Fatalf("evicted %s, want the journey of packet 2 (%016x)", describe(evicted), ids[1])
	}
	// Evicted 1 µs after its only event: its fate is unknown, not lost.
	if j := evicted[0]; j.Verdict != decode.Unfinished || len(j.Hops) != 1 {
		t.Errorf("evicted journey: verdict %v hops %d", j.Verdict, len(j.Hops))
	}
	if s := a.Stats(); s.Evicted != 1 || s.Journeys != 1 || s.Events != 4 || a.Open() != 2 {
		t.Errorf("stats %+v open %d", s, a.Open())
	}
	rest := a.Flush(t0 + 4_000)
	if len(rest) != 2 || rest[0].ID != ids[0] || rest[1].ID != ids[2] || len(rest[0].Hops) != 2 {
		t.Errorf("left open: %s", describe(rest))
	}

	// An eviction of a journey whose timeout did run out judges it lost.
	a = decode.NewAssembler(cfg)
	add(t, a, hop(t, t0, idxVethA, vethA, decode.Ingress, synN(1)))
	add(t, a, hop(t, t0+1_000, idxVethA, vethA, decode.Ingress, synN(2)))
	ev = hop(t, t0+uint64(timeout)+1_000, idxVethA, vethA, decode.Ingress, synN(3))
	if evicted := a.Add(&ev); len(evicted) != 1 || evicted[0].ID != ids[0] || evicted[0].Verdict != decode.Lost {
		t.Errorf("evicted after the timeout: %s", describe(evicted))
	}

	// The default bound is large.
	a = decode.NewAssembler(nodeConfig(t, "node-a"))
	for i := 0; i < 1000; i++ {
		add(t, a, hop(t, t0+uint64(i), idxVethA, vethA, decode.Ingress, synN(i)))
	}
	if a.Open() != 1000 || a.Stats().Evicted != 0 {
		t.Errorf("default MaxOpen: open %d evicted %d", a.Open(), a.Stats().Evicted)
	}
}

func TestExpireOrder(t *testing.T) {
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	// Added newest first; Expire returns them oldest first.
	for _, n := range []int{5, 3, 9, 1} {
		add(t, a, hop(t, t0+uint64(n)*1_000, idxVethA, vethA, decode.Ingress, synN(n)))
	}
	js := a.Expire(t0 + 9_000 + uint64(timeout))
	if len(js) != 4 {
		t.Fatalf("%d journeys", len(js))
	}
	for i, n := range []int{1, 3, 5, 9} {
		if js[i].FirstNs() != t0+uint64(n)*1_000 {
			t.Errorf("journey %d starts at +%d, want +%d", i, js[i].FirstNs()-t0, n*1_000)
		}
	}
	// Only those past the timeout are closed.
	for _, n := range []int{1, 2} {
		add(t, a, hop(t, t0+uint64(n)*uint64(timeout), idxVethA, vethA, decode.Ingress, synN(n)))
	}
	if js := a.Expire(t0 + 2*uint64(timeout)); len(js) != 1 || js[0].FirstNs() != t0+uint64(timeout) || a.Open() != 1 {
		t.Errorf("partial expiry: %s, open %d", describe(js), a.Open())
	}
}

func TestAssemblerUnparsable(t *testing.T) {
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	arp := wire(t, event(decode.KindHop, t0, idxCni0, "cni0", decode.Ingress, true, ether(etARP, make([]byte, 28))))
	garbage := wire(t, event(decode.KindDrop, t0+1, 0, "", decode.NoDir, false, []byte{0x45, 0, 0}))
	empty := wire(t, event(decode.KindHop, t0+2, idxCni0, "cni0", decode.Egress, true, nil))
	for _, ev := range []decode.Event{arp, garbage, empty} {
		if js := a.Add(&ev); js != nil {
			t.Errorf("Add returned %s", describe(js))
		}
	}
	if s := a.Stats(); s != (decode.Stats{Events: 3, Unparsable: 3}) || a.Open() != 0 {
		t.Errorf("stats %+v open %d", s, a.Open())
	}
}

func TestAssemblerUnknownInterface(t *testing.T) {
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	frame := ether(etIPv4, podSyn(64, "10.244.1.7", 8080))
	// An interface missing from the configuration: the kernel's name, else the index.
	add(t, a, hop(t, t0, 12, "lxc9f00", decode.Egress, frame), hop(t, t0+1_000, 13, "", decode.Egress, frame))
	j := expireAll(t, a, t0+1_000, 1)[0]
	if got, want := hopNames(j), []string{"lxc9f00 egress", "if13 egress"}; !reflect.DeepEqual(got, want) {
		t.Errorf("hops %v, want %v", got, want)
	}
	if j.Hops[0].Kind != decode.KindUnknown || j.Verdict != decode.Lost || j.Where != "if13 egress" {
		t.Errorf("kind %v verdict %v where %q", j.Hops[0].Kind, j.Verdict, j.Where)
	}
}

func TestNamesOfEnums(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{decode.Ingress.String(), "ingress"},
		{decode.Egress.String(), "egress"},
		{decode.NoDir.String(), "-"},
		{decode.KindPod.String(), "pod"},
		{decode.KindBridge.String(), "bridge"},
		{decode.KindOverlay.String(), "overlay"},
		{decode.KindUplink.String(), "uplink"},
		{decode.KindUnknown.String(), "unknown"},
		{decode.Unfinished.String(), "unfinished"},
		{decode.Delivered.String(), "delivered"},
		{decode.Forwarded.String(), "forwarded"},
		{decode.Dropped.String(), "dropped"},
		{decode.Lost.String(), "lost"},
		{decode.Incomplete.String(), "incomplete"},
		{decode.Redirected.String(), "redirected"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestAssemblerModel drives the assembler with a random stream (packets recurring at
// five interfaces, events slightly out of order, Expire at random moments, a small
// MaxOpen and MaxHops) and checks every closed journey against a plain model: Expire
// closes exactly the journeys whose last event is a timeout old, oldest first;
// eviction takes the one with the oldest last event; a journey is cut at MaxHops
// hops, or when its first hop comes again later; nothing is lost or duplicated.
func TestAssemblerModel(t *testing.T) {
	const (
		packets = 60
		maxOpen = 25
		maxHops = 4
		steps   = 20000
		tmo     = 200_000 // ns
	)
	cfg := nodeConfig(t, "node-a")
	cfg.Timeout = tmo
	cfg.MaxOpen = maxOpen
	cfg.MaxHops = maxHops
	ifaces := []uint32{idxVethA, idxVethB, idxCni0, idxFlannel, idxEth0}
	a := decode.NewAssembler(cfg)
	frames := make([][]byte, packets)
	ids := make(map[uint64]int)
	for k := range frames {
		frames[k] = synN(k + 1)
		ids[parse(t, frames[k], true).ID] = k
	}
	type model struct {
		first, last uint64
		hops        int
		firstIf     uint32 // the first hop in arrival order, and its time
		firstIfNs   uint64
		cut         string
	}
	open := map[int]*model{}
	rnd := uint64(0x9e3779b97f4a7c15)
	next := func(n uint64) uint64 { // xorshift: a fixed sequence
		rnd ^= rnd << 13
		rnd ^= rnd >> 7
		rnd ^= rnd << 17
		return rnd % n
	}
	check := func(what string, js []*decode.Journey, want []int) {
		t.Helper()
		if len(js) != len(want) {
			t.Fatalf("%s: %d journeys, want %d", what, len(js), len(want))
		}
		got := map[int]bool{}
		for i, j := range js {
			k, ok := ids[j.ID]
			if !ok || got[k] {
				t.Fatalf("%s: unknown or repeated journey %016x", what, j.ID)
			}
			got[k] = true
			m := open[k]
			if m == nil || len(j.Hops) != m.hops || j.FirstNs() != m.first || j.Cut != m.cut {
				t.Fatalf("%s: packet %d: %d hops from %d cut %q, model %+v", what, k, len(j.Hops), j.FirstNs(), j.Cut, m)
			}
			if i > 0 && js[i-1].FirstNs() > j.FirstNs() {
				t.Fatalf("%s: not oldest first", what)
			}
		}
		for _, k := range want {
			if !got[k] {
				t.Fatalf("%s: packet %d not closed", what, k)
			}
			delete(open, k)
		}
	}
	clock := t0
	expired, evicted, capped, collided := 0, 0, 0, 0
	for step := 0; step < steps; step++ {
		clock += next(20_000)
		if next(10) == 0 {
			now := clock
			var want []int
			for k, m := range open {
				if now >= m.last && now-m.last >= tmo {
					want = append(want, k)
				}
			}
			check(fmt.Sprintf("step %d: Expire", step), a.Expire(now), want)
			expired += len(want)
			continue
		}
		k := int(next(packets))
		ts := clock - next(5_000) // up to 5 µs out of order
		ifindex := ifaces[next(uint64(len(ifaces)))]
		var want []int
		if m := open[k]; m != nil {
			timedOut := ts >= m.last && ts-m.last >= tmo
			switch {
			case m.hops >= maxHops:
				want = []int{k}
				if !timedOut {
					m.cut = decode.CutHopCap
					capped++
				}
			case ifindex == m.firstIf && ts > m.firstIfNs:
				want = []int{k}
				if !timedOut {
					m.cut = decode.CutCollision
					collided++
				}
			}
		} else if len(open) >= maxOpen {
			oldest := -1
			for i, m := range open {
				if oldest < 0 || m.last < open[oldest].last || m.last == open[oldest].last && i < oldest {
					oldest = i
				}
			}
			for i, m := range open { // ties: the model cannot tell which goes
				if i != oldest && m.last == open[oldest].last {
					oldest = -2
				}
			}
			if oldest == -2 {
				continue
			}
			want = []int{oldest}
		}
		ev := hop(t, ts, ifindex, "", decode.Ingress, frames[k])
		gotEv := a.Add(&ev)
		if open[k] != nil && len(want) == 1 && want[0] == k {
			check(fmt.Sprintf("step %d: cut", step), gotEv, want)
		} else {
			check(fmt.Sprintf("step %d: eviction", step), gotEv, want)
			evicted += len(want)
		}
		m := open[k]
		if m == nil {
			m = &model{first: ts, last: ts, firstIf: ifindex, firstIfNs: ts}
			open[k] = m
		}
		m.first, m.last = min(m.first, ts), max(m.last, ts)
		m.hops++
		if a.Open() != len(open) {
			t.Fatalf("step %d: %d open, model %d", step, a.Open(), len(open))
		}
	}
	var rest []int
	for k := range open {
		rest = append(rest, k)
	}
	check("Flush", a.Flush(clock), rest)
	if expired < 100 || evicted < 100 || capped < 20 || collided < 100 {
		t.Errorf("the stream exercised too little: %d expired, %d evicted, %d capped, %d collided", expired, evicted, capped, collided)
	}
	if s := a.Stats(); s.Evicted != uint64(evicted) || s.HopCapped != uint64(capped) || s.Collisions != uint64(collided) {
		t.Errorf("stats %+v, model evicted %d, capped %d, collided %d", s, evicted, capped, collided)
	}
}

// The bridge floods a packet to two pods; one pod's stack drops its copy, the other
// pod gets its own: delivered, with the dropped copy noted.
func TestCopyDroppedInOtherPod(t *testing.T) {
	cfg := decode.Config{Node: "node-a", Timeout: 100 * time.Millisecond, Ifaces: []decode.Iface{
		{Index: 3, Name: "cni0", Kind: decode.KindBridge},
		{Index: 7, Name: "vethredis", Kind: decode.KindPod, PeerNetns: 4026532001},
		{Index: 8, Name: "vethapi", Kind: decode.KindPod, PeerNetns: 4026532002},
	}, Reasons: decode.DropReasons{2: "NOT_SPECIFIED", 34: "OTHERHOST"}}
	a := decode.NewAssembler(cfg)
	pkt := copyFixturePacket()
	for _, ev := range []decode.Event{
		{Kind: decode.KindHop, Ifindex: 7, Dir: decode.Ingress, TimeNs: 1000},
		{Kind: decode.KindHop, Ifindex: 7, Dir: decode.Egress, TimeNs: 2000},
		{Kind: decode.KindHop, Ifindex: 8, Dir: decode.Egress, TimeNs: 3000},
		{Kind: decode.KindDrop, Reason: 34, Netns: 4026532001, TimeNs: 4000},
	} {
		ev := ev
		ev.L2 = ev.Kind != decode.KindDrop
		data := pkt
		if !ev.L2 {
			data = pkt[14:]
		}
		ev.SnapLen = uint16(copy(ev.Data[:], data))
		a.Add(&ev)
	}
	js := a.Flush(1 << 40)
	if len(js) != 1 {
		t.Fatalf("%d journeys", len(js))
	}
	j := js[0]
	if j.Verdict != decode.Delivered || j.Where != "vethapi" || j.CopyDrop == nil || j.Drop != nil {
		t.Fatalf("verdict %v where %q copy %+v drop %+v", j.Verdict, j.Where, j.CopyDrop, j.Drop)
	}
	if want := "delivered to pod via vethapi; a copy sent to another pod was dropped: OTHERHOST at 0x0"; j.Summary() != want {
		t.Errorf("summary %q, want %q", j.Summary(), want)
	}
	// Dropped in the pod the only copy went to: dropped.
	b := decode.NewAssembler(cfg)
	for _, ev := range []decode.Event{
		{Kind: decode.KindHop, Ifindex: 8, Dir: decode.Egress, TimeNs: 3000, L2: true},
		{Kind: decode.KindDrop, Reason: 34, Netns: 4026532002, TimeNs: 4000},
	} {
		ev := ev
		data := pkt
		if !ev.L2 {
			data = pkt[14:]
		}
		ev.SnapLen = uint16(copy(ev.Data[:], data))
		b.Add(&ev)
	}
	if j := b.Flush(1 << 40)[0]; j.Verdict != decode.Dropped {
		t.Errorf("single copy dropped in its pod: verdict %v", j.Verdict)
	}
}

// copyFixturePacket is an Ethernet frame with a TCP SYN.
func copyFixturePacket() []byte {
	b := make([]byte, 14+20+20)
	b[12], b[13] = 0x08, 0x00
	ip := b[14:]
	ip[0], ip[3], ip[8], ip[9] = 0x45, 40, 64, 6
	copy(ip[12:16], []byte{10, 244, 1, 42})
	copy(ip[16:20], []byte{10, 244, 1, 23})
	tcp := ip[20:]
	tcp[0], tcp[1], tcp[2], tcp[3] = 0x9c, 0x40, 0x1f, 0x90
	tcp[12], tcp[13] = 0x50, 0x02
	return b
}

// A released journey's storage serves the next one and carries nothing over.
func TestReleaseReuses(t *testing.T) {
	cfg := decode.Config{Node: "n", Timeout: time.Millisecond, Reasons: decode.DropReasons{12: "NETFILTER_DROP"}}
	a := decode.NewAssembler(cfg)
	pkt := copyFixturePacket()
	add := func(ev decode.Event) {
		data := pkt
		if !ev.L2 {
			data = pkt[14:]
		}
		ev.SnapLen = uint16(copy(ev.Data[:], data))
		a.Add(&ev)
	}
	add(decode.Event{Kind: decode.KindHop, Ifindex: 1, L2: true, TimeNs: 10})
	add(decode.Event{Kind: decode.KindDrop, Reason: 12, TimeNs: 20})
	first := a.Flush(1 << 40)[0]
	if first.Drop == nil {
		t.Fatal("first journey not dropped")
	}
	a.Release(first)
	pkt[14+4] = 0x77 // another IP ID: another packet
	add(decode.Event{Kind: decode.KindHop, Ifindex: 2, Dir: decode.Egress, L2: true, TimeNs: 30})
	second := a.Flush(1 << 40)[0]
	if second != first {
		t.Error("the released journey was not reused")
	}
	if second.Drop != nil || len(second.Hops) != 1 || second.Hops[0].Ifindex != 2 || second.Verdict == decode.Dropped {
		t.Errorf("reused journey carries old state: drop %+v hops %+v verdict %v", second.Drop, second.Hops, second.Verdict)
	}
}
