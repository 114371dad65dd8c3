package decode

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// manyNodes is a cluster of n nodes: node-NNN at 10.0.I.J with pods in 10.244.I.0/24
// (10.245.I-256.0/24 from the 257th),
// plus the irregular: two nodes sharing one address, a routed pod (/32) of one node
// inside another's /24, and a dual-stack node.
func manyNodes(n int) []NodeInfo {
	var out []NodeInfo
	for i := range n {
		out = append(out, NodeInfo{Name: fmt.Sprintf("node-%03d", i),
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)})},
			Pods:  []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(244 + i/256), byte(i % 256), 0}), 24)}})
	}
	if n >= 3 {
		out[1].Addrs = append(out[1].Addrs, out[2].Addrs[0])
		out[0].Pods = append(out[0].Pods, netip.MustParsePrefix("10.244.2.77/32"))
		out[2].Addrs = append(out[2].Addrs, netip.MustParseAddr("fd00::2"))
		out[2].Pods = append(out[2].Pods, netip.MustParsePrefix("fd10:244:2::/64"))
	}
	return out
}

// The index finds what a scan of the nodes in name order finds, for every kind of
// address: a node's own, a pod's, a shared one, one no node has, v4-mapped v6.
func TestJoinerIndexMatchesScan(t *testing.T) {
	nodes := manyNodes(100)
	j := NewJoiner(nodes, time.Second)
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b NodeInfo) int { return cmpString(a.Name, b.Name) })
	scan := func(a netip.Addr, own, host bool, except string) string {
		a = a.Unmap()
		for _, n := range sorted {
			if n.Name == except {
				continue
			}
			if own && slices.Contains(n.Addrs, a) {
				return n.Name
			}
			if host && slices.ContainsFunc(n.Pods, func(p netip.Prefix) bool { return p.Contains(a) }) {
				return n.Name
			}
		}
		return ""
	}
	r := rand.New(rand.NewPCG(1, 2))
	addrs := []netip.Addr{netip.MustParseAddr("10.244.2.77"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("fd00::2"),
		netip.MustParseAddr("fd10:244:2::9"), netip.MustParseAddr("::ffff:10.244.5.5"), netip.MustParseAddr("192.168.1.1")}
	for range 2000 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, byte([]int{0, 244}[r.IntN(2)]), byte(r.IntN(120)), byte(r.IntN(256))}))
	}
	for _, a := range addrs {
		for _, except := range []string{"", "node-000", "node-001", "node-002"} {
			for _, mode := range [][2]bool{{true, false}, {true, true}, {false, true}} {
				want := scan(a, mode[0], mode[1], except)
				got := ""
				if n := j.find(a, mode[0], mode[1], except); n != nil {
					got = n.Name
				}
				if got != want {
					t.Fatalf("find(%s, own=%v, host=%v, except %q) = %q, a scan finds %q", a, mode[0], mode[1], except, got, want)
				}
			}
		}
	}
	// A node added later is found.
	j.AddNode(NodeInfo{Name: "node-new", Addrs: []netip.Addr{netip.MustParseAddr("10.9.9.9")}})
	if n := j.find(netip.MustParseAddr("10.9.9.9"), true, false, ""); n == nil || n.Name != "node-new" {
		t.Errorf("a node added after the index was built: %v", n)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// BenchmarkJoin: paths joined per second by one Joiner as the cluster grows, each
// packet crossing from a pod on one node to a pod on another (two legs).
func BenchmarkJoin(b *testing.B) {
	for _, n := range []int{2, 10, 100, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := manyNodes(n)
			j := NewJoiner(nodes, time.Second)
			now := time.Unix(1, 0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				x, y := nodes[i%n], nodes[(i+1)%n]
				src := netip.AddrPortFrom(x.Pods[0].Addr().Next(), 40000)
				dst := netip.AddrPortFrom(y.Pods[0].Addr().Next(), 80)
				id := uint64(i)
				j.Add(legOut(id, x.Name, src, dst, x.Addrs[0], y.Addrs[0], uint64(i)*1000), now)
				if ps := j.Add(legIn(id, y.Name, src, dst, x.Addrs[0], y.Addrs[0], uint64(i)*1000+50000), now); len(ps) != 1 || len(ps[0].Legs) != 2 {
					b.Fatalf("packet %d: %d paths", i, len(ps))
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "paths/s")
		})
	}
}
