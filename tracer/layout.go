package tracer

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode"
)

// Layout is what the tracer recognised of the node's network when it found its
// interfaces: how pods attach, which tunnels carry them, which devices are uplinks.
// The roles come from link types, peer namespaces, addresses and routes; the CNI's
// name is only a guess from names, for people to read.
type Layout struct {
	CNI      string   `json:"cni"`                // "flannel", "calico", "cilium", ... or "unrecognised"
	Evidence string   `json:"evidence,omitempty"` // what the guess rests on
	Pods     string   `json:"pods"`               // "bridged", "routed", "bridged and routed" or "none"
	PodLinks []string `json:"pod_links,omitempty"`
	Bridges  []string `json:"bridges,omitempty"`
	Tunnels  []Tunnel `json:"tunnels,omitempty"`
	Uplinks  []string `json:"uplinks,omitempty"`
	// Listed is the --ifaces patterns when they chose the interfaces instead.
	Listed []string `json:"listed,omitempty"`
}

// Tunnel is a tunnel device of the node.
type Tunnel struct {
	Name string `json:"name"`
	Kind string `json:"kind"`           // vxlan, geneve, ipip, sit, ip6tnl, gre, wireguard, ...
	Port uint16 `json:"port,omitempty"` // UDP port of VXLAN, Geneve, WireGuard
}

func (t Tunnel) String() string {
	if t.Port != 0 {
		return fmt.Sprintf("%s (%s udp/%d)", t.Name, t.Kind, t.Port)
	}
	return fmt.Sprintf("%s (%s)", t.Name, t.Kind)
}

// String is the layout in one line: "calico: routed pods (3 veths), tunnel
// vxlan.calico (vxlan udp/4789), uplink eth0".
func (l Layout) String() string {
	var parts []string
	switch l.Pods {
	case "none":
		parts = append(parts, "no pod interfaces")
	default:
		s := fmt.Sprintf("%s pods (%d %s)", l.Pods, len(l.PodLinks), plural(len(l.PodLinks), "link", "links"))
		if len(l.Bridges) > 0 {
			s += " on " + strings.Join(l.Bridges, ", ")
		}
		parts = append(parts, s)
	}
	if len(l.Tunnels) > 0 {
		ts := make([]string, len(l.Tunnels))
		for i, t := range l.Tunnels {
			ts[i] = t.String()
		}
		parts = append(parts, plural(len(ts), "tunnel ", "tunnels ")+strings.Join(ts, ", "))
	} else {
		parts = append(parts, "no tunnel")
	}
	if len(l.Uplinks) > 0 {
		parts = append(parts, plural(len(l.Uplinks), "uplink ", "uplinks ")+strings.Join(l.Uplinks, ", "))
	}
	s := l.CNI
	if l.Evidence != "" {
		s += " (" + l.Evidence + ")"
	}
	s += ": " + strings.Join(parts, "; ")
	if len(l.Listed) > 0 {
		s += "; tracing what --ifaces " + strings.Join(l.Listed, ",") + " matches"
	}
	return s
}

func plural(n int, one, more string) string {
	if n == 1 {
		return one
	}
	return more
}

// podLinkTypes are the link types a CNI puts between the node and a pod.
var podLinkTypes = map[string]bool{"veth": true, "netkit": true}

// skipLinkTypes carry no pod traffic of their own: kube-ipvs0 and node-local DNS are
// dummies holding addresses, ifb mirrors another device.
var skipLinkTypes = map[string]bool{"dummy": true, "ifb": true, "nlmon": true, "vrf": true}

// discover finds the interfaces a packet of a pod crosses on this node and gives each
// its role: the node side of every pod's veth (any name: a veth or netkit whose peer
// lives in another namespace and that carries no node address), every bridge, every
// tunnel device that is up, and the uplinks (under a tunnel, holding a default route,
// leading to a tunnel's remote, or holding a node address). Loopback, dummies and
// devices that are down are left out.
func discover(h *netlink.Handle, all []netlink.Link) ([]iface, Layout) {
	addrs := globalAddrLinks(h)
	uplinks := uplinkIndexes(h, all)
	byIndex := map[int]netlink.Link{}
	for _, l := range all {
		byIndex[l.Attrs().Index] = l
	}
	var out []iface
	var lay Layout
	bridgedPods, routedPods := 0, 0
	for _, l := range all {
		a := l.Attrs()
		typ := l.Type()
		if a.Flags&net.FlagLoopback != 0 || a.Flags&net.FlagUp == 0 || skipLinkTypes[typ] {
			continue
		}
		kind := classify(l, uplinks)
		switch {
		case isTunnel(typ):
			lay.Tunnels = append(lay.Tunnels, tunnelOf(l))
		case typ == "bridge":
			lay.Bridges = append(lay.Bridges, a.Name)
		case podLinkTypes[typ]:
			if a.NetNsID < 0 {
				continue // both ends here (cilium_host/cilium_net): not a pod's
			}
			if uplinks[a.Index] || addrs[a.Index] && a.MasterIndex == 0 {
				kind = decode.KindUplink
				lay.Uplinks = append(lay.Uplinks, a.Name)
				break
			}
			kind = decode.KindPod
			lay.PodLinks = append(lay.PodLinks, a.Name)
			if m, ok := byIndex[a.MasterIndex]; ok && m.Type() == "bridge" {
				bridgedPods++
			} else {
				routedPods++
			}
		default:
			if a.MasterIndex > 0 {
				if m, ok := byIndex[a.MasterIndex]; !ok || m.Type() != "bridge" {
					continue // a bond's or team's port: the bond is traced
				}
			}
			if !uplinks[a.Index] && !addrs[a.Index] {
				continue
			}
			kind = decode.KindUplink
			lay.Uplinks = append(lay.Uplinks, a.Name)
		}
		out = append(out, iface{
			Iface: decode.Iface{Index: a.Index, Name: a.Name, Kind: kind},
			l2:    len(a.HardwareAddr) == 6,
			ipTun: isIPTun(l),
		})
	}
	switch {
	case bridgedPods > 0 && routedPods > 0:
		lay.Pods = "bridged and routed"
	case bridgedPods > 0:
		lay.Pods = "bridged"
	case routedPods > 0:
		lay.Pods = "routed"
	default:
		lay.Pods = "none"
	}
	lay.CNI, lay.Evidence = guessCNI(lay, all)
	return out, lay
}

// globalAddrLinks lists the interfaces holding an address that is neither loopback
// nor link-local: the node's own, not a pod veth's.
func globalAddrLinks(h *netlink.Handle) map[int]bool {
	out := map[int]bool{}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return out
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		out[a.LinkIndex] = true
	}
	return out
}

func tunnelOf(l netlink.Link) Tunnel {
	t := Tunnel{Name: l.Attrs().Name, Kind: l.Type()}
	switch x := l.(type) {
	case *netlink.Vxlan:
		t.Port = uint16(x.Port)
	case *netlink.Geneve:
		t.Port = x.Dport
		if t.Port == 0 {
			t.Port = 6081
		}
	case *netlink.Wireguard:
		// its listening port is not a link attribute
	}
	return t
}

// cniHint is a name pattern some CNI gives its devices.
type cniHint struct {
	cni    string
	prefix string
	tunnel bool // the prefix names a tunnel, else a pod link
}

var cniHints = []cniHint{
	{"flannel", "flannel", true},
	{"calico", "vxlan.calico", true},
	{"calico", "vxlan-v6.calico", true},
	{"cilium", "cilium_", true},
	{"weave", "weave", true},
	{"antrea", "antrea-", true},
	{"ovn-kubernetes", "genev_sys_", true},
	{"calico", "cali", false},
	{"cilium", "lxc", false},
	{"azure-cni", "azv", false},
	{"aws-vpc-cni", "eni", false},
	{"gke", "gke", false},
	{"kube-ovn", "ovn", false},
}

// guessCNI names the CNI whose device names the node shows, with the names it saw.
func guessCNI(lay Layout, all []netlink.Link) (string, string) {
	var seen []string
	cni := ""
	for _, h := range cniHints {
		names := lay.PodLinks
		if h.tunnel {
			names = nil
			for _, t := range lay.Tunnels {
				names = append(names, t.Name)
			}
		}
		for _, n := range names {
			if strings.HasPrefix(n, h.prefix) {
				if cni == "" {
					cni = h.cni
				}
				if cni == h.cni {
					what := n
					if !h.tunnel {
						what = h.prefix + "* links"
					}
					if !slices.Contains(seen, what) {
						seen = append(seen, what)
					}
				}
				if !h.tunnel {
					break // one pod link names the pattern
				}
			}
		}
	}
	// Calico in IPIP mode: tunl0 is the kernel's own name for the IPIP device.
	if cni == "" || cni == "calico" {
		for _, t := range lay.Tunnels {
			if t.Name == "tunl0" && t.Kind == "ipip" {
				if cni == "" {
					cni = "calico"
				}
				seen = append(seen, "tunl0")
			}
		}
	}
	if cni == "" {
		for _, b := range lay.Bridges {
			if b == "cni0" {
				return "bridge CNI", "cni0"
			}
		}
		return "unrecognised CNI", ""
	}
	return cni, strings.Join(seen, ", ")
}

// Network is what doctor shows of a namespace's network: the layout, the interfaces
// pathtrace would trace with their roles, and the tc programs of other datapaths on
// them.
type Network struct {
	Netns      string   `json:"netns"`
	Layout     Layout   `json:"layout"`
	Interfaces []string `json:"interfaces"`       // "eth0(uplink)"
	Programs   []string `json:"others,omitempty"` // "flannel.1 ingress: tcx cil_from_overlay (id 42)"
	Error      string   `json:"error,omitempty"`
}

// Discover finds the interfaces a tracer of cfg (its Netns and Ifaces) would trace,
// without attaching anything.
func Discover(cfg Config) Network {
	n := Network{Netns: cfg.Netns}
	if n.Netns == "" {
		n.Netns = "the caller's"
	}
	ns, err := openNetns(cfg.Netns)
	if err != nil {
		n.Error = err.Error()
		return n
	}
	defer ns.close()
	var h *netlink.Handle
	if cfg.Netns == "" {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandleAt(ns.handle, unix.NETLINK_ROUTE)
	}
	if err != nil {
		n.Error = fmt.Sprintf("netlink in %s: %v", ns, err)
		return n
	}
	defer h.Close()
	ifs, lay, err := findLinks(h, cfg.Ifaces)
	n.Layout = lay
	if err != nil {
		n.Error = err.Error()
		return n
	}
	for _, l := range ifs {
		n.Interfaces = append(n.Interfaces, l.Name+"("+l.Kind.String()+")")
		for d, ingress := range []bool{true, false} {
			ps, err := hookPrograms(ns, h, l, ingress, ownPrograms{}, false)
			if err != nil {
				continue
			}
			for _, p := range ps {
				n.Programs = append(n.Programs, fmt.Sprintf("%s %s: %s", l.Name, [2]string{"ingress", "egress"}[d], p.desc))
			}
		}
	}
	return n
}

// Text is the network part of doctor's report.
func (n Network) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "network          namespace %s\n", n.Netns)
	if n.Layout.CNI != "" {
		fmt.Fprintf(&b, "  layout         %s\n", n.Layout)
	}
	if len(n.Interfaces) > 0 {
		fmt.Fprintf(&b, "  interfaces     %s\n", strings.Join(n.Interfaces, " "))
	}
	for _, p := range n.Programs {
		fmt.Fprintf(&b, "  other program  %s\n", p)
	}
	if n.Error != "" {
		fmt.Fprintf(&b, "  error          %s\n", n.Error)
	}
	return b.String()
}
