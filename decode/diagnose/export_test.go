package diagnose

import (
	"net/netip"

	"github.com/pathtrace/pathtrace/decode"
)

// For fixtures_test.go (package diagnose_test, which reads the fixtures through the
// exporter, a package that cannot be imported here).

// LabIfaces are the lab node's traced interfaces.
var LabIfaces = labIfs

// Dump shows a diagnosis.
var Dump = dump

// SocketTeardown is socketTeardown.
var SocketTeardown = socketTeardown

// FaultFacts is faultFacts.
func FaultFacts(fault, node string) Facts { return faultFacts(fault, node) }

// faultFacts is the node the case ran on, with the fault in place.
func faultFacts(fault, node string) *fakeFacts {
	f := labNode()
	if node == "node-b" {
		// node-b mirrors node-a: its own pods on cni0, node-a's over flannel.1.
		f.routes["10.244.1.23"] = Route{Type: "unicast", Dst: netip.MustParsePrefix("10.244.1.0/24"), Gateway: netip.MustParseAddr("10.244.1.0"), Dev: "flannel.1", OnLink: true, Text: "10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink"}
		f.routes["10.244.2.57"] = Route{Type: "unicast", Dst: netip.MustParsePrefix("10.244.2.0/24"), Dev: "cni0", Text: "10.244.2.0/24 dev cni0 proto kernel scope link src 10.244.2.1"}
		f.node = NodeAddrs{Addrs: []netip.Addr{nodeB, netip.MustParseAddr("10.244.2.1"), netip.MustParseAddr("10.244.2.0")},
			Pods: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Cluster: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}
	}
	switch fault {
	case "rpfilter":
		f.sysctls["net.ipv4.conf.all.rp_filter"] = "1"
		f.sysctls["net.ipv4.conf.flannel.1.rp_filter"] = "1"
		if node == "node-b" {
			f.routes["10.244.1.23"] = Route{Type: "unicast", Dst: netip.MustParsePrefix("10.244.1.23/32"), Gateway: nodeA, Dev: "eth0", Text: "10.244.1.23 via 10.0.0.11 dev eth0"}
		}
	case "blackhole":
		f.routes["10.244.2.57"] = Route{Type: "blackhole", Dst: netip.MustParsePrefix("10.244.2.57/32"), Text: "blackhole 10.244.2.57"}
	case "slow":
		f.qdiscs["flannel.1"] = []Qdisc{{Kind: "tbf", Handle: "8001:", Parent: "root", Config: "rate 1Mbit burst 1600b limit 30000b", Backlog: 28000, QLen: 27, Drops: 20}}
	case "nomasq":
		f.nat.Rules = f.nat.Rules[:1]
	case "mtu":
		for _, n := range []string{"eth0"} {
			l := f.links[n]
			l.MTU = 1400
			f.links[n] = l
		}
	case "hairpin", "hairpin-masq":
		if fault == "hairpin" {
			l := f.links["veth2b57"]
			l.Hairpin = new(bool)
			f.links["veth2b57"] = l
		}
	case "neighbour":
		delete(f.fdb, "flannel.1")
	case "neighbour-arp":
		delete(f.neigh, "flannel.1 10.244.2.0")
	case "conntrack":
		f.ct = &Conntrack{Count: 3, Max: 1, EntryBytes: 256}
	}
	return f
}

// want is the cause each case's failing packets must get; "" for none at all.
var WantCause = map[string]string{
	"healthy":   "",
	"policy":    decode.CausePolicy,
	"rpfilter":  decode.CauseRPFilter,
	"blackhole": decode.CauseNoRoute,
	"slow":      decode.CauseQdisc,
	"nomasq":    decode.CauseNoSNAT,
	"underlay":  decode.CauseUnknown, // one node alone cannot tell the underlay from the other node
	"mtu":       decode.CauseMTU,
	"hairpin":   decode.CauseHairpin, "hairpin-masq": decode.CauseHairpin,
	"hairpin-viponly": decode.CauseUnknown, "hairpin-masq-viponly": decode.CauseHairpin,
	"neighbour": decode.CauseNeighbour, "neighbour-arp": decode.CauseNeighbour,
	"conntrack": decode.CauseConntrackFull,
}
