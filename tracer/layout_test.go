package tracer

import (
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode"
)

// Unprivileged: the layout's text, the guess, and where pathtrace's programs sit.

func TestLayoutString(t *testing.T) {
	l := Layout{CNI: "calico", Evidence: "vxlan.calico, cali* links", Pods: "routed", PodLinks: []string{"cali1", "cali2"},
		Tunnels: []Tunnel{{Name: "vxlan.calico", Kind: "vxlan", Port: 4789}}, Uplinks: []string{"ens5"}}
	want := "calico (vxlan.calico, cali* links): routed pods (2 links); tunnel vxlan.calico (vxlan udp/4789); uplink ens5"
	if got := l.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	l = Layout{CNI: "unrecognised CNI", Pods: "none", Uplinks: []string{"eth0", "eth1"}, Listed: []string{"eth*"}}
	want = "unrecognised CNI: no pod interfaces; no tunnel; uplinks eth0, eth1; tracing what --ifaces eth* matches"
	if got := l.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestGuessCNI(t *testing.T) {
	for _, tc := range []struct {
		lay           Layout
		cni, evidence string
	}{
		{Layout{PodLinks: []string{"veth1"}, Bridges: []string{"cni0"}, Tunnels: []Tunnel{{Name: "flannel.1", Kind: "vxlan"}, {Name: "flannel-v6.1", Kind: "vxlan"}}}, "flannel", "flannel.1, flannel-v6.1"},
		{Layout{PodLinks: []string{"cali0123456789a"}, Tunnels: []Tunnel{{Name: "vxlan.calico", Kind: "vxlan"}}}, "calico", "vxlan.calico, cali* links"},
		{Layout{PodLinks: []string{"cali0123456789a"}, Tunnels: []Tunnel{{Name: "tunl0", Kind: "ipip"}}}, "calico", "cali* links, tunl0"},
		{Layout{PodLinks: []string{"lxc12ab"}, Tunnels: []Tunnel{{Name: "cilium_geneve", Kind: "geneve"}}}, "cilium", "cilium_geneve, lxc* links"},
		{Layout{PodLinks: []string{"veth1"}, Bridges: []string{"cni0"}}, "bridge CNI", "cni0"},
		{Layout{PodLinks: []string{"p1"}, Tunnels: []Tunnel{{Name: "gnv0", Kind: "geneve"}}}, "unrecognised CNI", ""},
	} {
		cni, ev := guessCNI(tc.lay, nil)
		if cni != tc.cni || ev != tc.evidence {
			t.Errorf("guessCNI(%+v) = %q, %q; want %q, %q", tc.lay, cni, ev, tc.cni, tc.evidence)
		}
	}
}

func TestAroundOurs(t *testing.T) {
	ps := []tcProgram{{desc: "tcx a"}, {desc: "tcx pathtrace other", pathtrace: true}, {desc: "ours", ours: true}, {desc: "cls_bpf b prio 1"}, {desc: "u32 filter prio 2"}}
	before, after := aroundOurs(ps)
	if !slices.Equal(before, []string{"tcx a"}) || !slices.Equal(after, []string{"cls_bpf b prio 1", "u32 filter prio 2"}) {
		t.Errorf("before %q after %q", before, after)
	}
	// Not among them (doctor): everything is listed as there.
	if before, after := aroundOurs(ps[:1]); len(before) != 0 || len(after) != 1 {
		t.Errorf("without ours: before %q after %q", before, after)
	}
}

func TestJoinablePrio(t *testing.T) {
	bpfAt := func(prio uint16, handle uint32, proto uint16) netlink.Filter {
		return &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{Priority: prio, Handle: handle, Protocol: proto}}
	}
	u32At := func(prio uint16) netlink.Filter {
		return &netlink.U32{FilterAttrs: netlink.FilterAttrs{Priority: prio, Handle: 0x800, Protocol: unix.ETH_P_ALL}}
	}
	for _, tc := range []struct {
		fs   []netlink.Filter
		want prioSlot
	}{
		{nil, prioSlot{}},
		{[]netlink.Filter{bpfAt(1, 1, unix.ETH_P_ALL)}, prioSlot{1, 2}},
		{[]netlink.Filter{bpfAt(2, 7, unix.ETH_P_ALL), bpfAt(1, 1, unix.ETH_P_ALL), bpfAt(1, 3, unix.ETH_P_ALL)}, prioSlot{1, 4}},
		{[]netlink.Filter{bpfAt(1, 1, unix.ETH_P_IP)}, prioSlot{}}, // the kernel refuses another protocol there
		{[]netlink.Filter{u32At(1)}, prioSlot{}},
	} {
		if got := joinablePrio(tc.fs); got != tc.want {
			t.Errorf("joinablePrio(%d filters) = %+v, want %+v", len(tc.fs), got, tc.want)
		}
	}
}

// Privileged: discovery in namespaces built like a Calico node, and a Cilium-style
// filter at priority 1 that pathtrace's runs before.

// A node laid out as Calico does: pods behind cali* veths with /32 routes and no
// bridge, vxlan.calico on the uplink, a veth uplink to the "switch" holding the
// node's address, and what is not a pod's: a dummy holding service addresses
// (kube-ipvs0), a veth pair with both ends on the node (cilium_host/cilium_net), a
// tunnel that is down.
func TestDiscoverRouted(t *testing.T) {
	nfrNeedRoot(t)
	node, peer, pod := nfrNetns(t), nfrNetns(t), nfrNetns(t)
	run := func(ns, cmd string) { nfrIn(t, ns, "", strings.Fields(cmd)...) }
	for _, c := range []string{
		"ip link add up0 type veth peer name sw0 netns " + peer,
		"ip addr add 172.18.0.11/24 dev up0",
		"ip link set up0 up",
		"ip link add cali0123456789a type veth peer name eth0 netns " + pod,
		"ip link set cali0123456789a up",
		"ip route add 192.168.10.65/32 dev cali0123456789a scope link",
		"ip link add vxlan.calico type vxlan id 4096 dstport 4789 local 172.18.0.11 dev up0 nolearning",
		"ip addr add 192.168.10.64/32 dev vxlan.calico",
		"ip link set vxlan.calico up",
		"ip link add vxdown type vxlan id 9 dstport 4789 remote 172.18.0.99",
		"ip link add hostgw type veth peer name hostnet",
		"ip addr add 192.168.10.66/32 dev hostgw",
		"ip link set hostgw up", "ip link set hostnet up",
	} {
		run(node, c)
	}
	// Where the kernel has dummy devices (not every test kernel builds them in).
	if exec.Command("ip", "-n", node, "link", "add", "kube-ipvs0", "type", "dummy").Run() == nil {
		run(node, "ip addr add 10.96.0.10/32 dev kube-ipvs0")
		run(node, "ip link set kube-ipvs0 up")
	} else {
		t.Log("no dummy devices here: kube-ipvs0 not made")
	}
	nw := Discover(Config{Netns: node})
	if nw.Error != "" {
		t.Fatal(nw.Error)
	}
	want := []string{"up0(uplink)", "cali0123456789a(pod)", "vxlan.calico(overlay)"}
	if !slices.Equal(nw.Interfaces, want) {
		t.Errorf("interfaces %v, want %v", nw.Interfaces, want)
	}
	l := nw.Layout
	if l.CNI != "calico" || l.Pods != "routed" || !slices.Equal(l.Uplinks, []string{"up0"}) ||
		len(l.Tunnels) != 1 || l.Tunnels[0] != (Tunnel{Name: "vxlan.calico", Kind: "vxlan", Port: 4789}) {
		t.Errorf("layout %s", l)
	}
	// The routed pod's block: the blackhole route that holds its /32 (as Calico's
	// IPAM writes it), else the /32 itself.
	h := nsHandle(t, node)
	if pods, err := podPrefixes(h); err != nil || !slices.Equal(pods, []netip.Prefix{netip.MustParsePrefix("192.168.10.65/32")}) {
		t.Errorf("pod prefixes %v, %v; want the pod's /32", pods, err)
	}
	run(node, "ip route add blackhole 192.168.10.64/26")
	if pods, err := podPrefixes(h); err != nil || !slices.Equal(pods, []netip.Prefix{netip.MustParsePrefix("192.168.10.64/26")}) {
		t.Errorf("pod prefixes %v, %v; want the block 192.168.10.64/26", pods, err)
	}
	// Listed patterns take what matches, with discovery's roles where it has one.
	nw = Discover(Config{Netns: node, Ifaces: []string{"cali*", "up0", "hostnet"}})
	if want := []string{"up0(uplink)", "cali0123456789a(pod)", "hostnet(pod)"}; !slices.Equal(nw.Interfaces, want) {
		t.Errorf("listed: interfaces %v, want %v", nw.Interfaces, want)
	}
	if nw := Discover(Config{Netns: peer}); nw.Error == "" || !strings.Contains(nw.Error, "found no interface") {
		// sw0 is down: nothing to trace.
		t.Errorf("an empty namespace: %+v", nw)
	}
}

// An uplink found only through the route to a tunnel's far end, not by an address or
// a parent device: the device carrying it, which is not a pod's veth although its
// peer is elsewhere. (Calico IPIP's tunl0 is found by its routes' gateways the same
// way; a point-to-point VXLAN stands in for it here, the only tunnel every test
// kernel has built in.)
func TestDiscoverUplinkByRemote(t *testing.T) {
	nfrNeedRoot(t)
	node, peer := nfrNetns(t), nfrNetns(t)
	run := func(ns, cmd string) { nfrIn(t, ns, "", strings.Fields(cmd)...) }
	for _, c := range []string{
		"ip link add up0 type veth peer name sw0 netns " + peer,
		"ip link set up0 up",
		"ip route add 172.19.0.0/24 dev up0",
		"ip link add vx0 type vxlan id 5 dstport 4789 remote 172.19.0.12",
		"ip link set vx0 up",
		"ip route add 10.9.0.0/16 via 172.19.0.13 dev vx0 onlink",
	} {
		run(node, c)
	}
	nw := Discover(Config{Netns: node})
	if want := []string{"up0(uplink)", "vx0(overlay)"}; !slices.Equal(nw.Interfaces, want) {
		t.Errorf("interfaces %v, want %v (%s)", nw.Interfaces, want, nw.Error)
	}
}

// A Cilium-style cls_bpf filter at priority 1: in clsact mode pathtrace's filter joins
// that priority and runs first; the tracer names the other program as the one after
// its own (a packet last seen there is redirected, not lost), and leaves it as it was.
func TestClsactBeforeOthers(t *testing.T) {
	nfrNeedRoot(t)
	node := nfrNetns(t)
	nfrIn(t, node, "", "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	nfrIn(t, node, "", "ip", "link", "set", "d0", "up")
	nfrIn(t, node, "", "ip", "addr", "add", "10.77.0.1/24", "dev", "d0")
	nfrIn(t, node, "", "tc", "qdisc", "add", "dev", "d0", "clsact")
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "other_dp", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, // TC_ACT_OK
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ns, err := openNetns(node)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.close()
	h, err := netlink.NewHandleAt(ns.handle, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("d0")
	if err != nil {
		t.Fatal(err)
	}
	theirs := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
		Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL}, Fd: other.FD(), Name: "cil_from_netdev", DirectAction: true}
	if err := h.FilterAdd(theirs); err != nil {
		t.Fatal(err)
	}
	tr, err := New(Config{Netns: node, Ifaces: []string{"d0"}, AttachMode: AttachClsact, DropHook: DropNone, NFHook: NFNone,
		Selectors: []decode.Selector{{}}})
	if err != nil {
		t.Fatal(err)
	}
	ifs := tr.Ifaces()
	if len(ifs) != 1 || !strings.HasPrefix(ifs[0].Others[0], "cls_bpf cil_from_netdev prio 1") || ifs[0].Others[1] != "" {
		t.Errorf("others on d0: %q", ifs[0].Others)
	}
	if att := tr.Attachments(); !slices.Contains(att, "clsact d0 ingress prio 1 handle 0x2") {
		t.Errorf("attachments %v: want ours at prio 1, handle 2 (before theirs)", att)
	}
	ps, err := hookPrograms(ns, h, iface{Iface: decode.Iface{Index: l.Attrs().Index, Name: "d0"}}, true, tr.own, false)
	if err != nil || len(ps) != 2 || !ps[0].ours || ps[1].ours {
		t.Errorf("ingress programs in kernel order: %+v, %v; want pathtrace's first", ps, err)
	}
	for _, n := range tr.Mode().Notes {
		if strings.Contains(n, "before pathtrace's") {
			t.Errorf("note %q: nothing runs before pathtrace's", n)
		}
	}
	// Another program comes later, on egress: read again, it is there.
	if tr.RecheckOthers() {
		t.Error("RecheckOthers: a change where there was none")
	}
	late := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_EGRESS,
		Handle: 1, Priority: 7, Protocol: unix.ETH_P_ALL}, Fd: other.FD(), Name: "cil_to_netdev", DirectAction: true}
	if err := h.FilterAdd(late); err != nil {
		t.Fatal(err)
	}
	if !tr.RecheckOthers() || !strings.HasPrefix(tr.Ifaces()[0].Others[1], "cls_bpf cil_to_netdev prio 7") {
		t.Errorf("after a late filter: others %q", tr.Ifaces()[0].Others)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.FilterDel(late); err != nil {
		t.Fatal(err)
	}
	fs, err := h.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil || len(fs) != 1 || fs[0].(*netlink.BpfFilter).Name != "cil_from_netdev" || fs[0].Attrs().Handle != 1 {
		t.Errorf("after close: filters %+v, %v; want theirs alone, as it was", fs, err)
	}
}

// nsHandle is a netlink handle in a test's namespace.
func nsHandle(t *testing.T, name string) *netlink.Handle {
	t.Helper()
	ns, err := openNetns(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.close)
	h, err := netlink.NewHandleAt(ns.handle, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// A VXLAN device on a port of the operator's: the tracer reads that port as VXLAN
// too, unless the ports were given.
func TestPortsFromDevices(t *testing.T) {
	nfrNeedRoot(t)
	node := nfrNetns(t)
	nfrIn(t, node, "", "ip", "link", "add", "vx9", "type", "vxlan", "id", "9", "dstport", "9999", "remote", "10.1.2.3")
	nfrIn(t, node, "", "ip", "link", "set", "vx9", "up")
	for _, tc := range []struct {
		given, want []uint16
	}{
		{nil, []uint16{8472, 4789, 9999}},
		{[]uint16{4789}, []uint16{4789}},
	} {
		tr, err := New(Config{Netns: node, VXLANPorts: tc.given, DropHook: DropNone, NFHook: NFNone, Selectors: []decode.Selector{{}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := tr.Tunnels().VXLANPorts; !slices.Equal(got, tc.want) {
			t.Errorf("given %v: VXLAN ports %v, want %v", tc.given, got, tc.want)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
