package diagnose

import (
	"strings"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// The MTU chain counts each kind of tunnel's own overhead: IPIP and SIT an outer IPv4
// header, ip6tnl an IPv6 one whatever its local address, Geneve its options as the
// packet carried them at a hop that saw it encapsulated (the drop's own bytes are not
// kept as a hop).
func TestMTUTunnelKinds(t *testing.T) {
	for _, c := range []struct {
		typ   string
		outer *decode.Outer
		chain string
		fix   string
	}{
		{"ipip", &decode.Outer{Kind: decode.TunnelIPIP, Src: nodeA, Dst: nodeB}, "flannel.1 1450 (ipip, +20) → eth0 1400 (carries flannel.1)", "to 1380"},
		{"sit", &decode.Outer{Kind: decode.TunnelSIT, Src: nodeA, Dst: nodeB}, "flannel.1 1450 (sit, +20) → eth0 1400 (carries flannel.1)", "to 1380"},
		{"ip6tnl", nil, "flannel.1 1450 (ip6tnl, +40) → eth0 1400 (carries flannel.1)", "to 1360"},
		{"geneve", &decode.Outer{Kind: decode.TunnelGeneve, Src: nodeA, Dst: nodeB, DstPort: 6081, VNI: 7, Options: 8},
			"flannel.1 1450 (geneve, +58) → eth0 1400 (carries flannel.1)", "to 1342"},
		{"geneve", &decode.Outer{Kind: decode.TunnelGeneve, Src: nodeA, Dst: nodeB, DstPort: 6081, VNI: 7},
			"flannel.1 1450 (geneve, +50) → eth0 1400 (carries flannel.1)", "to 1350"},
	} {
		facts := labNode()
		eth := facts.links["eth0"]
		eth.MTU = 1400
		facts.links["eth0"] = eth
		tun := facts.links["flannel.1"]
		tun.Type = c.typ
		facts.links["flannel.1"] = tun
		d := New(Config{Facts: facts, Ifaces: labIfs})
		j := forwardedSYN()
		j.IPLen, j.TCPFlags = 1450, decode.TCPAck
		j.Hops[3].Outer = c.outer
		j = dropAfter(j, 4, decode.Drop{Reason: "NOT_SPECIFIED", ReasonSource: decode.ReasonKernel, Location: "ip_fragment.constprop.0+0x84", Ifname: "eth0"})
		g := d.Journey(j)
		mustCause(t, g, decode.CauseMTU, "mtu_chain", "overhead")
		if !strings.HasSuffix(g.Value("mtu_chain"), c.chain) || !strings.Contains(g.Fix, c.fix) {
			t.Errorf("%s: mtu_chain %q fix %q, want %q and %q", c.typ, g.Value("mtu_chain"), g.Fix, c.chain, c.fix)
		}
	}
}

// The underlay's diagnosis names the tunnel as a firewall would match it.
func TestUnderlayTunnelKinds(t *testing.T) {
	d := New(Config{Facts: labNode(), Ifaces: labIfs})
	for _, c := range []struct {
		outer       *decode.Outer
		tunnel, fix string
	}{
		{&decode.Outer{Kind: decode.TunnelIPIP, Src: nodeA, Dst: nodeB}, "ipip from 10.0.0.11 to 10.0.0.12", "ipip (IP protocol 4)"},
		{&decode.Outer{Kind: decode.TunnelSIT, Src: nodeA, Dst: nodeB}, "sit from 10.0.0.11 to 10.0.0.12", "sit (IP protocol 41)"},
		{&decode.Outer{Kind: decode.TunnelGeneve, Src: nodeA, Dst: nodeB, DstPort: 6081, VNI: 7}, "udp/6081 from 10.0.0.11 to 10.0.0.12", "udp/6081"},
	} {
		j := forwardedSYN()
		j.Hops[3].Outer = c.outer
		p := &decode.Path{Legs: []*decode.Journey{j}, Verdict: decode.PathUnderlayLost, LeftNode: "node-a", LeftHop: "eth0 egress", Next: "node-b", NextAddr: nodeB}
		Path(p, decode.NewJoiner(nil, time.Second))
		g := p.Diagnosis
		mustCause(t, g, decode.CauseUnderlay, "tunnel")
		if g.Value("tunnel") != c.tunnel || !strings.Contains(g.Fix, "10.0.0.12 for "+c.fix+":") {
			t.Errorf("%s path: tunnel %q fix %q", c.outer.Kind, g.Value("tunnel"), g.Fix)
		}

		left := tcp(podA, podB, 47034, 8080)
		o := &decode.OneWay{Node: "node-a", Flow: left, SYNs: 2, LeftVia: "eth0 egress", Expect: "eth0 ingress", LeftFlow: left, Wait: 2 * time.Second,
			LeftOuter: c.outer}
		g = d.OneWay(o)
		if g.Segment != decode.SegUnderlay || !strings.Contains(g.Value("tunnel"), c.tunnel[strings.Index(c.tunnel, " from"):]) ||
			!strings.Contains(g.Fix, "check "+c.fix+" between") {
			t.Errorf("%s one-way: %s", c.outer.Kind, dump(g))
		}
	}
}
