package diagnose

import (
	"net/netip"

	"github.com/pathtrace/pathtrace/decode"
)

// Facts reads the node's state at the moment it is asked: the traced network
// namespace's links, sysctls, routes, neighbours, FDB, qdiscs, conntrack and NAT rules.
// tracer.NodeFacts reads the real node; tests give a fake. Every method fails with an
// error that says what could not be read and why (no permission, no such device,
// another namespace): the diagnosis then names what it lacks instead of guessing.
type Facts interface {
	// Link is the interface named name.
	Link(name string) (Link, error)
	// Links are all the namespace's interfaces.
	Links() ([]Link, error)
	// Sysctl reads a sysctl under /proc/sys of the namespace, as a path with dots or
	// slashes ("net.ipv4.conf.all.rp_filter"), trimmed.
	Sysctl(name string) (string, error)
	// RouteGet asks the kernel which route a packet to dst takes: from src arriving
	// on iif when iif is set (a forwarded packet, as the kernel's input lookup), else
	// sent by the node itself (src may be invalid). A route that refuses the packet
	// is returned as such (Type "blackhole", "unreachable", "prohibit"), and no
	// route at all as Type "none", both without an error.
	RouteGet(dst, src netip.Addr, iif string) (Route, error)
	// Routes are the routes of every table whose prefix contains dst, most specific
	// first: what a person would look at with ip route show table all.
	Routes(dst netip.Addr) ([]Route, error)
	// Neigh is the neighbour entry of addr on dev; ok false when there is none.
	Neigh(dev string, addr netip.Addr) (n Neigh, ok bool, err error)
	// FDB are the forwarding-database entries of dev (a VXLAN device or a bridge).
	FDB(dev string) ([]FDBEntry, error)
	// Qdiscs are the queueing disciplines on dev, root first, with their counters.
	Qdiscs(dev string) ([]Qdisc, error)
	// Conntrack is the namespace's conntrack table fill and counters.
	Conntrack() (Conntrack, error)
	// NATRules are the rules of the nat table's POSTROUTING chains (and the chains
	// they jump to), with texts and counters, IPv4 and IPv6; Note says what could not
	// be seen (iptables-legacy).
	NATRules() (decode.RuleSnapshot, error)
	// Node is what the node is: its own addresses and the prefixes of its pods.
	Node() (NodeAddrs, error)
}

// Link is one interface.
type Link struct {
	Name  string
	Index int
	// Type is the link type as ip -d link names it: veth, bridge, vxlan, geneve, ipip,
	// wireguard, device (a physical NIC), ...
	Type   string
	MTU    int
	Up     bool
	Master string // the bridge it is a port of, "" if none
	// Hairpin is the bridge port's hairpin mode, nil when the link is no bridge port.
	Hairpin *bool
	// Tunnels (vxlan, geneve): the UDP port, the local address, the underlay device
	// ("" when the kernel picks it by route), the DF setting ("set", "unset",
	// "inherit"), the VNI.
	TunnelPort  uint16
	TunnelLocal netip.Addr
	TunnelDev   string
	TunnelDF    string
	VNI         uint32
	Addrs       []netip.Prefix // the link's addresses
}

// Route is one route, or the kernel's answer to a route lookup.
type Route struct {
	// Type is "unicast", "local", "broadcast", "blackhole", "unreachable", "prohibit",
	// "throw", or "none" (no route matched).
	Type    string
	Dst     netip.Prefix // invalid for the default route's 0/0 as ip prints "default"
	Gateway netip.Addr
	Dev     string
	Src     netip.Addr // the preferred source
	Table   int
	MTU     int // the route's own mtu metric, 0 when unset
	OnLink  bool
	// Text is the route as ip route prints it: "10.244.2.0/24 via 10.244.2.0 dev
	// flannel.1 onlink", "blackhole 10.244.2.57".
	Text string
}

// Neigh is one neighbour (ARP/NDP) entry.
type Neigh struct {
	Addr  netip.Addr
	Dev   string
	MAC   string // "" when none is known
	State string // "permanent", "reachable", "stale", "delay", "probe", "failed", "incomplete", "noarp", "none"
}

// FDBEntry is one forwarding-database entry.
type FDBEntry struct {
	MAC string
	Dev string
	Dst netip.Addr // a VXLAN entry's remote VTEP; invalid for a bridge's
	VNI uint32
	// State: "permanent", "static", "reachable" (learned), ...
	State string
}

// Qdisc is one queueing discipline with its counters.
type Qdisc struct {
	Kind   string // tbf, fq_codel, pfifo_fast, noqueue, ...
	Handle string // "8001:"
	Parent string // "root" or "1:1"
	// Config is the qdisc's parameters as tc qdisc show prints them ("rate 1Mbit
	// burst 1600b limit 30000b"); "" when not decoded.
	Config     string
	Backlog    uint32 // bytes queued now
	QLen       uint32 // packets queued now
	Drops      uint32
	Overlimits uint32
	Requeues   uint32
	Packets    uint64 // sent
	Bytes      uint64
}

// Conntrack is the conntrack table's fill and counters.
type Conntrack struct {
	Count, Max   uint64
	Buckets      uint64 // nf_conntrack_buckets
	InsertFailed uint64
	EarlyDrop    uint64
	Drop         uint64
	// EntryBytes is the kernel's size of one entry (struct nf_conn, from BTF), 0 when
	// unknown: what one more slot of nf_conntrack_max costs.
	EntryBytes int
	// MaxWritable says whether nf_conntrack_max can be written in this namespace
	// (only the initial one can, on kernels since 5.x).
	MaxWritable bool
}

// NodeAddrs are the node's own addresses and its pods' prefixes.
type NodeAddrs struct {
	Addrs []netip.Addr
	Pods  []netip.Prefix // the prefixes of the bridges the pods hang on (cni0's)
	// Cluster are the pod prefixes reachable through the overlay (routes over tunnel
	// devices): the other nodes' pods.
	Cluster []netip.Prefix
}
