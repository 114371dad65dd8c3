package tracer

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode"
)

// iface is a traced interface with what attaching needs.
type iface struct {
	decode.Iface
	l2    bool // has an Ethernet header
	ipTun bool // an IP-in-IP device (ipip, sit, ip6tnl): its ingress gets tc_ingress_tun
}

// isIPTun reports whether a link is an IP-in-IP device.
func isIPTun(l netlink.Link) bool {
	switch l.Type() {
	case "ipip", "sit", "ip6tnl":
		return true
	}
	return false
}

// findLinks lists the namespace's interfaces to trace, with their roles, and the
// layout they make. With no patterns it finds them (discover); else it takes those
// whose names match one of the glob patterns.
func findLinks(h *netlink.Handle, patterns []string) ([]iface, Layout, error) {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return nil, Layout{}, fmt.Errorf("interface pattern %q: %w", p, err)
		}
	}
	all, err := h.LinkList()
	if err != nil {
		return nil, Layout{}, fmt.Errorf("list interfaces: %w", err)
	}
	found, lay := discover(h, all)
	if len(patterns) == 0 {
		if len(found) == 0 {
			return nil, lay, errors.New("found no interface to trace: no pod veth, bridge, tunnel or uplink is up (see `ip link`; set --ifaces)")
		}
		return found, lay, nil
	}
	lay.Listed = patterns
	uplinks := uplinkIndexes(h, all)
	var out []iface
	for _, l := range all {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || !matchAny(patterns, a.Name) {
			continue
		}
		kind := classify(l, uplinks)
		// The role discovery gave it, where it found the link (a pod's veth is told
		// from a node's uplink veth by its addresses, not its name).
		for _, f := range found {
			if f.Index == a.Index {
				kind = f.Kind
			}
		}
		out = append(out, iface{
			Iface: decode.Iface{Index: a.Index, Name: a.Name, Kind: kind},
			l2:    len(a.HardwareAddr) == 6,
			ipTun: isIPTun(l),
		})
	}
	if len(out) == 0 {
		return nil, lay, fmt.Errorf("no interface matches %s (see `ip link`; set --ifaces)", strings.Join(patterns, ","))
	}
	return out, lay, nil
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// uplinkIndexes returns the interfaces that carry the node's traffic out: those under a
// tunnel device and those with a default route.
func uplinkIndexes(h *netlink.Handle, all []netlink.Link) map[int]bool {
	up := map[int]bool{}
	for _, l := range all {
		if v, ok := l.(*netlink.Vxlan); ok && v.VtepDevIndex > 0 {
			up[v.VtepDevIndex] = true
		}
		if p := l.Attrs().ParentIndex; p > 0 && isTunnel(l.Type()) {
			up[p] = true
		}
	}
	// The devices that lead to a tunnel's far end: its remote, or the gateway of a
	// route through it (Calico's "BLOCK via NODE dev tunl0 onlink"), each looked up once.
	tunnels := map[int]bool{}
	var remotes []net.IP
	for _, l := range all {
		if !isTunnel(l.Type()) {
			continue
		}
		tunnels[l.Attrs().Index] = true
		switch x := l.(type) {
		case *netlink.Iptun:
			remotes = append(remotes, x.Remote)
		case *netlink.Sittun:
			remotes = append(remotes, x.Remote)
		case *netlink.Ip6tnl:
			remotes = append(remotes, x.Remote)
		case *netlink.Geneve:
			remotes = append(remotes, x.Remote)
		case *netlink.Vxlan:
			remotes = append(remotes, x.Group)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteList(nil, fam)
		if err != nil {
			continue
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask) {
				up[r.LinkIndex] = true
			}
			if tunnels[r.LinkIndex] && r.Gw != nil {
				remotes = append(remotes, r.Gw)
			}
		}
	}
	asked := map[string]bool{}
	for _, ip := range remotes {
		if ip == nil || ip.IsUnspecified() || ip.IsMulticast() || asked[ip.String()] || len(asked) >= maxRemoteLookups {
			continue
		}
		asked[ip.String()] = true
		if rs, err := h.RouteGet(ip); err == nil && len(rs) > 0 && !tunnels[rs[0].LinkIndex] && rs[0].LinkIndex > 0 {
			up[rs[0].LinkIndex] = true
		}
	}
	return up
}

// maxRemoteLookups bounds the route lookups for tunnel remotes: a node with a route
// per peer node through one tunnel reaches them all through the same few uplinks.
const maxRemoteLookups = 16

func isZeroMask(m []byte) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}

func isTunnel(t string) bool {
	switch t {
	case "vxlan", "geneve", "ipip", "gre", "gretap", "ip6tnl", "ip6gre", "ip6gretap", "sit", "wireguard", "vti", "vti6":
		return true
	}
	return false
}

// classify gives an interface its role: tunnels are overlay, bridges bridge, the
// devices a tunnel or the default route uses are uplinks, other veths face pods.
func classify(l netlink.Link, uplinks map[int]bool) decode.IfaceKind {
	switch {
	case isTunnel(l.Type()):
		return decode.KindOverlay
	case l.Type() == "bridge":
		return decode.KindBridge
	case uplinks[l.Attrs().Index]:
		return decode.KindUplink
	case l.Type() == "veth":
		return decode.KindPod
	}
	return decode.KindUplink
}

// localAddrs lists the namespace's own addresses.
func localAddrs(h *netlink.Handle) ([]netip.Addr, error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// podPrefixes lists where the namespace's pods live: the subnets of its bridges
// (flannel's cni0), and for pods routed through their own veths (Calico, Cilium) the
// block that holds their routes (Calico's "blackhole BLOCK/26"), else each pod's own
// route (/32, /128).
func podPrefixes(h *netlink.Handle) ([]netip.Prefix, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []netip.Prefix
	for _, l := range links {
		if l.Type() != "bridge" {
			continue
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || a.IPNet == nil || ip.Unmap().IsLinkLocalUnicast() {
				continue
			}
			ones, _ := a.Mask.Size()
			out = append(out, netip.PrefixFrom(ip.Unmap(), ones).Masked())
		}
	}
	found, _ := discover(h, links)
	podLink := map[int]bool{}
	for _, f := range found {
		if f.Kind == decode.KindPod {
			podLink[f.Index] = true
		}
	}
	if len(podLink) == 0 {
		return out, nil
	}
	var routed, blocks []netip.Prefix
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteList(nil, fam)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			p, ok := prefixOf(r.Dst)
			if !ok {
				continue
			}
			switch {
			case podLink[r.LinkIndex]:
				routed = append(routed, p)
			case r.Type == unix.RTN_BLACKHOLE || r.Type == unix.RTN_UNREACHABLE:
				blocks = append(blocks, p)
			}
		}
	}
	for _, p := range routed {
		if slices.ContainsFunc(out, func(q netip.Prefix) bool { return q.Overlaps(p) && q.Bits() <= p.Bits() }) {
			continue // already inside a bridge's subnet or a block taken
		}
		block := p
		for _, b := range blocks {
			if b.Bits() <= p.Bits() && b.Contains(p.Addr()) && b.Bits() > 0 {
				block = b
			}
		}
		out = append(out, block)
	}
	return out, nil
}

// podNetns finds the network namespaces at the far end of the node's veths, so that
// drops inside a pod count as this node's. The kernel names a peer namespace only by
// an ID local to the node's namespace; candidates from /run/netns and /proc/*/ns/net
// are asked for their ID until every peer is found.
//
// A veth that is the node's uplink (a node in a namespace, as in the lab, or a VM
// whose NIC is a veth) leads to the underlay, not to a pod: its far side is left out,
// or drops on the underlay would count as the node's.
func podNetns(h *netlink.Handle, links []netlink.Link) map[int]uint32 {
	want := map[int]bool{}
	found, _ := discover(h, links)
	pod := map[int]bool{}
	for _, f := range found {
		pod[f.Index] = f.Kind == decode.KindPod
	}
	for _, l := range links {
		if pod[l.Attrs().Index] && l.Attrs().NetNsID >= 0 {
			want[l.Attrs().NetNsID] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	out := map[int]uint32{} // peer namespace ID → inode
	eachNetns(h, func(id int, ino uint32, _ *os.File) bool {
		if want[id] {
			delete(want, id)
			out[id] = ino
		}
		return len(want) > 0
	})
	return out
}

// eachNetns opens each network namespace the host shows (named ones, then every
// process's), each once, and calls fn with the ID h's namespace knows it by, its inode
// and the open file, until fn returns false.
func eachNetns(h *netlink.Handle, fn func(id int, ino uint32, f *os.File) bool) {
	seen := map[uint32]bool{}
	for _, c := range netnsCandidates() {
		ino, err := inodeOf(c)
		if err != nil || seen[ino] {
			continue
		}
		seen[ino] = true
		f, err := os.Open(c)
		if err != nil {
			continue
		}
		id, err := h.GetNetNsIdByFd(int(f.Fd()))
		more := err != nil || fn(id, ino, f)
		f.Close()
		if !more {
			return
		}
	}
}

// netnsCandidates lists the places a network namespace can be opened from: the named
// ones (ip netns) and every process's.
func netnsCandidates() []string {
	var cands []string
	for _, dir := range []string{"/run/netns", "/var/run/netns"} {
		if m, err := filepath.Glob(filepath.Join(dir, "*")); err == nil {
			cands = append(cands, m...)
		}
	}
	if m, err := filepath.Glob("/proc/[0-9]*/ns/net"); err == nil {
		cands = append(cands, m...)
	}
	return cands
}

// PodVeth finds the host side of the veth behind which a pod address lives, as the
// kernel would send to it: the route to the address names the device; a routed CNI
// (Calico, Cilium) routes each pod through its own veth, a bridged one (flannel's
// cni0) through the bridge, where the neighbour table gives the pod's MAC and the
// bridge's forwarding table the port that MAC is behind.
func (t *Tracer) PodVeth(a netip.Addr) (string, error) {
	routes, err := t.nl.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return "", fmt.Errorf("no route to %s on this node: %v", a, err)
	}
	dev, err := t.nl.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", fmt.Errorf("route to %s: device %d: %w", a, routes[0].LinkIndex, err)
	}
	switch dev.Type() {
	case "veth", "netkit":
		return dev.Attrs().Name, nil
	case "bridge":
	default:
		return "", fmt.Errorf("%s is routed via %s (%s), not a pod's veth: not a pod of this node", a, dev.Attrs().Name, dev.Type())
	}
	family := netlink.FAMILY_V4
	if a.Is6() && !a.Is4In6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := t.nl.NeighList(dev.Attrs().Index, family)
	if err != nil {
		return "", fmt.Errorf("neighbours on %s: %w", dev.Attrs().Name, err)
	}
	var mac net.HardwareAddr
	for _, n := range neighs {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.Unmap() && len(n.HardwareAddr) == 6 {
			mac = n.HardwareAddr
			break
		}
	}
	if mac == nil {
		// No neighbour entry (the node has not talked to it lately): ask the
		// namespaces behind the veths for their addresses.
		if name, ok := t.vethByPeerAddr(a); ok {
			return name, nil
		}
		return "", fmt.Errorf("%s is behind bridge %s, but neither a neighbour entry nor a pod namespace behind a veth has it", a, dev.Attrs().Name)
	}
	fdb, err := t.nl.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return "", fmt.Errorf("bridge forwarding table: %w", err)
	}
	for _, n := range fdb {
		if n.MasterIndex != dev.Attrs().Index || !bytes.Equal(n.HardwareAddr, mac) {
			continue
		}
		if port, err := t.nl.LinkByIndex(n.LinkIndex); err == nil && port.Type() == "veth" {
			return port.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("%s (%s) is behind bridge %s, but its forwarding table has no port for it", a, mac, dev.Attrs().Name)
}

// vethByPeerAddr looks for the veth whose far side, in a pod's namespace, holds a.
func (t *Tracer) vethByPeerAddr(a netip.Addr) (string, bool) {
	byID := map[int]string{}
	for _, l := range t.linkList() {
		if l.Type() == "veth" && l.Attrs().NetNsID >= 0 {
			byID[l.Attrs().NetNsID] = l.Attrs().Name
		}
	}
	found := ""
	eachNetns(t.nl, func(id int, _ uint32, f *os.File) bool {
		name, isPeer := byID[id]
		if !isPeer {
			return true
		}
		h, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()), unix.NETLINK_ROUTE)
		if err != nil {
			return true
		}
		addrs, err := localAddrs(h)
		h.Close()
		if err == nil && slices.Contains(addrs, a.Unmap()) {
			found = name
			return false
		}
		return true
	})
	return found, found != ""
}
