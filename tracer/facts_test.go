package tracer

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/decode/diagnose"
)

// Unprivileged: the texts and parsers.

func TestFactsRouteText(t *testing.T) {
	names := map[int]string{2: "eth0", 3: "cni0", 4: "flannel.1"}
	name := func(i int) string { return names[i] }
	cidr := func(s string) *net.IPNet {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, tc := range []struct {
		r    netlink.Route
		want string
	}{
		{netlink.Route{Type: unix.RTN_UNICAST, Dst: cidr("10.244.2.0/24"), Gw: net.ParseIP("10.244.2.0"), LinkIndex: 4, Flags: unix.RTNH_F_ONLINK, Table: 254, Protocol: unix.RTPROT_BOOT},
			"10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"},
		{netlink.Route{Type: unix.RTN_BLACKHOLE, Dst: cidr("10.244.2.57/32"), Table: 254, Protocol: unix.RTPROT_BOOT},
			"blackhole 10.244.2.57"},
		{netlink.Route{Type: unix.RTN_UNICAST, Dst: cidr("0.0.0.0/0"), Gw: net.ParseIP("10.0.0.1"), LinkIndex: 2, Table: 254, Protocol: unix.RTPROT_BOOT},
			"default via 10.0.0.1 dev eth0"},
		{netlink.Route{Type: unix.RTN_UNICAST, Gw: net.ParseIP("10.0.0.1"), LinkIndex: 2, Table: 254, Protocol: unix.RTPROT_DHCP, Priority: 100},
			"default via 10.0.0.1 dev eth0 proto dhcp metric 100"},
		{netlink.Route{Type: unix.RTN_UNREACHABLE, Dst: cidr("10.1.2.0/24"), Table: 254, Protocol: unix.RTPROT_BOOT},
			"unreachable 10.1.2.0/24"},
		{netlink.Route{Type: unix.RTN_LOCAL, Dst: cidr("10.244.1.1/32"), LinkIndex: 3, Table: 255, Protocol: unix.RTPROT_KERNEL, Scope: netlink.SCOPE_HOST, Src: net.ParseIP("10.244.1.1")},
			"local 10.244.1.1 dev cni0 table local proto kernel scope host src 10.244.1.1"},
		{netlink.Route{Type: unix.RTN_UNICAST, Dst: cidr("10.50.0.0/16"), Gw: net.ParseIP("10.0.0.1"), LinkIndex: 2, Table: 100, Protocol: unix.RTPROT_BOOT, MTU: 1400, MTULock: true},
			"10.50.0.0/16 via 10.0.0.1 dev eth0 table 100 mtu lock 1400"},
		{netlink.Route{Type: unix.RTN_UNICAST, Family: netlink.FAMILY_V6, Dst: cidr("fd00::/64"), LinkIndex: 3, Table: 254, Protocol: unix.RTPROT_KERNEL},
			"fd00::/64 dev cni0 proto kernel metric 0"},
		{netlink.Route{Type: unix.RTN_UNICAST, Dst: cidr("10.9.0.0/16"), Table: 254, Protocol: unix.RTPROT_STATIC, MultiPath: []*netlink.NexthopInfo{
			{LinkIndex: 2, Gw: net.ParseIP("10.0.0.1")}, {LinkIndex: 4, Gw: net.ParseIP("10.244.3.0"), Hops: 1, Flags: unix.RTNH_F_ONLINK}}},
			"10.9.0.0/16 proto static nexthop via 10.0.0.1 dev eth0 weight 1 nexthop via 10.244.3.0 dev flannel.1 weight 2 onlink"},
	} {
		if got := routeText(tc.r, name); got != tc.want {
			t.Errorf("routeText = %q, want %q", got, tc.want)
		}
	}
}

func TestFactsTcText(t *testing.T) {
	for in, want := range map[uint64]string{125000: "1Mbit", 187500: "1500Kbit", 100: "800bit", 1250000000: "10Gbit", 12345: "98760bit"} {
		if got := tcRate(in); got != want {
			t.Errorf("tcRate(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[uint32]string{1600: "1600b", 30000: "30000b", 1024: "1Kb", 32 << 20: "32Mb", 1514: "1514b", 15140: "15140b", 3 << 10: "3Kb"} {
		if got := tcSize(in); got != want {
			t.Errorf("tcSize(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[uint32]string{5000: "5ms", 100000: "100ms", 227300: "227ms", 2000000: "2s", 999: "999us", 1500: "1.5ms"} {
		if got := tcTime(in); got != want {
			t.Errorf("tcTime(%d) = %q, want %q", in, got, want)
		}
	}
	if got := tcPercent(42949673); got != "1%" {
		t.Errorf("tcPercent(1%%) = %q", got)
	}
}

// qdiscMsg builds an RTM_NEWQDISC message as the kernel sends it.
func qdiscMsg(ifindex int32, handle, parent uint32, kind string, opts []byte, stats2 ...[]byte) []byte {
	tcm := (&nl.TcMsg{Ifindex: ifindex, Handle: handle, Parent: parent}).Serialize()
	m := append([]byte{}, tcm...)
	m = append(m, nl.NewRtAttr(unix.TCA_KIND, nl.ZeroTerminated(kind)).Serialize()...)
	if opts != nil {
		m = append(m, nl.NewRtAttr(unix.TCA_OPTIONS, opts).Serialize()...)
	}
	if len(stats2) > 0 {
		var s []byte
		for _, b := range stats2 {
			s = append(s, b...)
		}
		m = append(m, nl.NewRtAttr(unix.TCA_STATS2, s).Serialize()...)
	}
	return m
}

func attrs(as ...*nl.RtAttr) []byte {
	var b []byte
	for _, a := range as {
		b = append(b, a.Serialize()...)
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func TestFactsParseQdisc(t *testing.T) {
	// tbf rate 1mbit burst 1600 limit 30000, as tc sends it.
	parms := make([]byte, 36)
	binary.NativeEndian.PutUint32(parms[8:], 125000)
	binary.NativeEndian.PutUint32(parms[24:], 30000)
	binary.NativeEndian.PutUint32(parms[28:], netlink.Xmittime(125000, 1600))
	basic := make([]byte, 16)
	binary.NativeEndian.PutUint64(basic, 1<<40)
	binary.NativeEndian.PutUint32(basic[8:], 7)
	queue := make([]byte, 20)
	for i, v := range []uint32{3, 4500, 71, 2, 90} {
		binary.NativeEndian.PutUint32(queue[4*i:], v)
	}
	m := qdiscMsg(5, 0x100000, tcHRoot, "tbf", attrs(nl.NewRtAttr(nl.TCA_TBF_PARMS, parms)),
		nl.NewRtAttr(nl.TCA_STATS_BASIC, basic).Serialize(), nl.NewRtAttr(nl.TCA_STATS_QUEUE, queue).Serialize(),
		nl.NewRtAttr(nl.TCA_STATS_PKT64, binary.NativeEndian.AppendUint64(nil, 1<<33)).Serialize())
	q, err := parseQdisc(m)
	if err != nil {
		t.Fatal(err)
	}
	want := diagnose.Qdisc{Kind: "tbf", Handle: "10:", Parent: "root", Config: "rate 1Mbit burst 1600b limit 30000b",
		QLen: 3, Backlog: 4500, Drops: 71, Requeues: 2, Overlimits: 90, Packets: 1 << 33, Bytes: 1 << 40}
	if q != want {
		t.Errorf("tbf:\n got %+v\nwant %+v", q, want)
	}

	fqc := attrs(nl.NewRtAttr(nl.TCA_FQ_CODEL_TARGET, u32(5000)), nl.NewRtAttr(nl.TCA_FQ_CODEL_LIMIT, u32(10240)),
		nl.NewRtAttr(nl.TCA_FQ_CODEL_INTERVAL, u32(100000)), nl.NewRtAttr(nl.TCA_FQ_CODEL_ECN, u32(1)),
		nl.NewRtAttr(nl.TCA_FQ_CODEL_FLOWS, u32(1024)), nl.NewRtAttr(nl.TCA_FQ_CODEL_QUANTUM, u32(1514)),
		nl.NewRtAttr(nl.TCA_FQ_CODEL_DROP_BATCH_SIZE, u32(64)), nl.NewRtAttr(nl.TCA_FQ_CODEL_MEMORY_LIMIT, u32(32<<20)))
	if q, err := parseQdisc(qdiscMsg(5, 0, 0x10001, "fq_codel", fqc)); err != nil ||
		q.Config != "limit 10240p flows 1024 quantum 1514 target 5ms interval 100ms memory_limit 32Mb ecn drop_batch 64" || q.Parent != "1:1" || q.Handle != "0:" {
		t.Errorf("fq_codel: %+v, %v", q, err)
	}

	netem := make([]byte, nl.SizeofTcNetemQopt)
	binary.NativeEndian.PutUint32(netem[4:], 500)      // limit
	binary.NativeEndian.PutUint32(netem[8:], 42949673) // loss 1%
	netem = append(netem, attrs(nl.NewRtAttr(tcaNetemLatency64, binary.NativeEndian.AppendUint64(nil, 10e6)),
		nl.NewRtAttr(tcaNetemJitter64, binary.NativeEndian.AppendUint64(nil, 2e6)))...)
	if q, err := parseQdisc(qdiscMsg(5, 0x80010000, tcHRoot, "netem", netem)); err != nil || q.Config != "limit 500 delay 10ms 2ms loss 1%" {
		t.Errorf("netem: %+v, %v", q, err)
	}

	prio := append(binary.NativeEndian.AppendUint32(nil, 3), 1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
	if q, err := parseQdisc(qdiscMsg(5, 0, 0x1, "pfifo_fast", prio)); err != nil ||
		q.Config != "bands 3 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1" || q.Parent != ":1" {
		t.Errorf("pfifo_fast: %+v, %v", q, err)
	}
	if q, err := parseQdisc(qdiscMsg(5, 0xffff0000, 0xfffffff1, "clsact", nil)); err != nil || q.Config != "" || q.Parent != "ffff:fff1" || q.Handle != "ffff:" {
		t.Errorf("clsact: %+v, %v", q, err)
	}
	// Short options leave the parameters out instead of failing.
	if q, err := parseQdisc(qdiscMsg(5, 0, tcHRoot, "tbf", attrs(nl.NewRtAttr(nl.TCA_TBF_PARMS, parms[:20])))); err != nil || q.Config != "" {
		t.Errorf("short tbf: %+v, %v", q, err)
	}
	if _, err := parseQdisc(m[:10]); err == nil {
		t.Error("a message shorter than tcmsg was accepted")
	}
}

func FuzzFactsParseQdisc(f *testing.F) {
	f.Add(qdiscMsg(1, 0x10000, tcHRoot, "tbf", attrs(nl.NewRtAttr(nl.TCA_TBF_PARMS, make([]byte, 36)))))
	f.Add(qdiscMsg(1, 0, tcHRoot, "netem", make([]byte, 30)))
	f.Add(qdiscMsg(1, 0, tcHRoot, "fq_codel", attrs(nl.NewRtAttr(nl.TCA_FQ_CODEL_LIMIT, []byte{1}))))
	f.Add(qdiscMsg(1, 0, tcHRoot, "htb", attrs(nl.NewRtAttr(nl.TCA_HTB_INIT, make([]byte, 20)))))
	f.Fuzz(func(t *testing.T, m []byte) {
		_, _ = parseQdisc(m)
		_ = qdiscConfig("tbf", m)
		_ = qdiscConfig("netem", m)
		_ = qdiscConfig("fq", m)
		_ = qdiscConfig("htb", m)
		_ = parseLinkExtra(m)
	})
}

func TestFactsSysctlPath(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"net/ipv4/conf/flannel.1/rp_filter", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/eth0/rp_filter", "net/ipv4/conf/eth0.100/rp_filter"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for in, want := range map[string]string{
		"net.ipv4.conf.all.rp_filter":           "net/ipv4/conf/all/rp_filter",
		"net.ipv4.conf.flannel.1.rp_filter":     "net/ipv4/conf/flannel.1/rp_filter",
		"net.ipv4.conf.eth0.100.rp_filter":      "net/ipv4/conf/eth0.100/rp_filter",
		"net.ipv4.conf.eth0.rp_filter":          "net/ipv4/conf/eth0/rp_filter",
		"net/ipv4/conf/flannel.1/rp_filter":     "net/ipv4/conf/flannel.1/rp_filter",
		" net/ipv4/conf/all/rp_filter ":         "net/ipv4/conf/all/rp_filter",
		"/proc/sys/net/ipv4/conf/all/rp_filter": "net/ipv4/conf/all/rp_filter",
	} {
		got, err := sysctlPath(root, in)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("sysctlPath(%q) = %q, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"net.ipv4.conf.cni0.rp_filter", "net/../../etc/passwd", "net..ipv4", ""} {
		if got, err := sysctlPath(root, bad); err == nil {
			t.Errorf("sysctlPath(%q) = %q, want an error", bad, got)
		}
	}
}

func TestFactsNATPostrouting(t *testing.T) {
	in := decode.RuleSnapshot{
		Note: "iptables-legacy tables exist",
		Chains: []decode.Chain{
			{Family: "ip", Table: "nat", Name: "POSTROUTING", Hook: "POSTROUTING", Policy: "accept"},
			{Family: "ip", Table: "nat", Name: "KUBE-POSTROUTING"},
			{Family: "ip", Table: "nat", Name: "KUBE-MARK"},
			{Family: "ip", Table: "nat", Name: "PREROUTING", Hook: "PREROUTING", Policy: "accept"},
			{Family: "ip", Table: "nat", Name: "KUBE-SERVICES"},
			{Family: "ip", Table: "filter", Name: "FORWARD", Hook: "FORWARD", Policy: "drop"},
			{Family: "ip6", Table: "nat", Name: "POSTROUTING", Hook: "POSTROUTING", Policy: "accept"},
		},
		Rules: []decode.Rule{
			{Family: "ip", Table: "nat", Chain: "POSTROUTING", Hook: "POSTROUTING", Handle: 1, Verdict: "jump KUBE-POSTROUTING"},
			{Family: "ip", Table: "nat", Chain: "KUBE-POSTROUTING", Handle: 2, Verdict: "goto KUBE-MARK"},
			{Family: "ip", Table: "nat", Chain: "KUBE-MARK", Handle: 3},
			{Family: "ip", Table: "nat", Chain: "PREROUTING", Hook: "PREROUTING", Handle: 4, Verdict: "jump KUBE-SERVICES"},
			{Family: "ip", Table: "nat", Chain: "KUBE-SERVICES", Handle: 5, Verdict: "jump KUBE-MARK"},
			{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "FORWARD", Handle: 6, Verdict: "drop"},
			{Family: "ip6", Table: "nat", Chain: "POSTROUTING", Hook: "POSTROUTING", Handle: 7},
		},
	}
	out := natPostrouting(in)
	var chains []string
	for _, c := range out.Chains {
		chains = append(chains, c.Family+"/"+c.Name)
	}
	var rules []uint64
	for _, r := range out.Rules {
		rules = append(rules, r.Handle)
	}
	if want := []string{"ip/POSTROUTING", "ip/KUBE-POSTROUTING", "ip/KUBE-MARK", "ip6/POSTROUTING"}; !slices.Equal(chains, want) {
		t.Errorf("chains %v, want %v", chains, want)
	}
	if want := []uint64{1, 2, 3, 7}; !slices.Equal(rules, want) {
		t.Errorf("rules %v, want %v", rules, want)
	}
	if out.Note != in.Note {
		t.Errorf("note %q lost", out.Note)
	}
}

// Privileged: a node of its own, in namespaces made for the test.

// factsLab is a flannel-like node in a namespace of its own, its uplink's far end in
// another: vn0 (192.168.50.1/24, tbf) to vp0 (192.168.50.2); bridge cni0
// (10.244.1.1/24) with ports vethA (hairpin on) and vethB (hairpin off, forwarding
// off); VXLAN flannel.1 (VNI 1, port 8472, local 192.168.50.1 on vn0, df set) with the
// route, neighbour and FDB entry of a remote node's pods 10.244.2.0/24; and routes
// of every kind.
type factsLab struct {
	node, peer string
	f          *NodeFacts
}

func newFactsLab(t *testing.T) *factsLab {
	nfrNeedRoot(t, "tc", "bridge")
	lab := &factsLab{node: nfrNetns(t), peer: nfrNetns(t)}
	run := func(ns, cmd string) { nfrIn(t, ns, "", strings.Fields(cmd)...) }
	set := func(key, val string) {
		nfrIn(t, lab.node, "", "sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", val, key))
	}
	set("net/ipv6/conf/all/disable_ipv6", "1")
	set("net/ipv6/conf/default/disable_ipv6", "1")
	for _, c := range []string{
		"ip link add vn0 type veth peer name vp0",
		"ip link set vp0 netns " + lab.peer,
		"ip addr add 192.168.50.1/24 dev vn0",
		"ip link set vn0 up",
		"ip link add cni0 type bridge",
		"ip link add vethA mtu 1450 type veth peer name podA mtu 1450",
		"ip link add vethB mtu 1450 type veth peer name podB mtu 1450",
		"ip link set vethA master cni0",
		"ip link set vethB master cni0",
		"ip link set cni0 mtu 1450",
		"ip addr add 10.244.1.1/24 dev cni0",
		"ip link set cni0 up", "ip link set vethA up", "ip link set vethB up", "ip link set podA up", "ip link set podB up",
		"bridge link set dev vethA hairpin on",
		"bridge link set dev vethB hairpin off",
		"bridge fdb add aa:bb:cc:00:00:0a dev vethA master static",
		"ip link add flannel.1 type vxlan id 1 dstport 8472 local 192.168.50.1 dev vn0 nolearning df set",
		"ip addr add 10.244.1.0/32 dev flannel.1",
		"ip link set flannel.1 up",
		"ip neigh add 10.244.2.0 lladdr aa:bb:cc:00:00:02 dev flannel.1 nud permanent",
		"bridge fdb add aa:bb:cc:00:00:02 dev flannel.1 dst 192.168.50.2 self permanent",
		"ip route add 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
		"ip route add blackhole 10.244.2.57",
		"ip route add unreachable 10.1.2.0/24",
		"ip route add prohibit 10.9.0.0/16",
		"ip route add 10.50.0.0/16 via 192.168.50.2 dev vn0 mtu 1400",
		"ip route add default via 192.168.50.2 dev vn0 table 100",
		"tc qdisc add dev vn0 root handle 10: tbf rate 1mbit burst 1600 limit 30000",
	} {
		run(lab.node, c)
	}
	run(lab.peer, "ip addr add 192.168.50.2/24 dev vp0")
	run(lab.peer, "ip link set vp0 up")
	set("net/ipv4/conf/all/forwarding", "1")
	set("net/ipv4/conf/vethB/forwarding", "0")
	set("net/ipv4/conf/all/rp_filter", "0")
	set("net/ipv4/conf/cni0/rp_filter", "1")
	set("net/ipv4/conf/vn0/rp_filter", "1")
	set("net/ipv4/conf/flannel.1/rp_filter", "2")
	// default is copied into devices made after it: a value the root namespace's does
	// not have tells the namespace apart.
	root, err := os.ReadFile("/proc/sys/net/ipv4/conf/default/rp_filter")
	if err != nil {
		t.Fatal(err)
	}
	set("net/ipv4/conf/default/rp_filter", map[string]string{"0": "2", "1": "2", "2": "1"}[strings.TrimSpace(string(root))])

	lab.f, err = OpenFacts(lab.node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.f.Close(); err != nil {
			t.Error(err)
		}
	})
	return lab
}

func TestFactsLab(t *testing.T) {
	lab := newFactsLab(t)
	f := lab.f
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr

	t.Run("Link", func(t *testing.T) {
		idx := func(name string) int {
			var out []struct {
				Ifindex int `json:"ifindex"`
			}
			if err := json.Unmarshal([]byte(nfrIn(t, lab.node, "", "ip", "-j", "link", "show", name)), &out); err != nil || len(out) != 1 {
				t.Fatalf("ip -j link show %s: %v", name, err)
			}
			return out[0].Ifindex
		}
		yes, no := true, false
		want := map[string]diagnose.Link{
			"vn0":   {Name: "vn0", Type: "veth", MTU: 1500, Up: true, Addrs: []netip.Prefix{pfx("192.168.50.1/24")}},
			"cni0":  {Name: "cni0", Type: "bridge", MTU: 1450, Up: true, Addrs: []netip.Prefix{pfx("10.244.1.1/24")}},
			"vethA": {Name: "vethA", Type: "veth", MTU: 1450, Up: true, Master: "cni0", Hairpin: &yes},
			"vethB": {Name: "vethB", Type: "veth", MTU: 1450, Up: true, Master: "cni0", Hairpin: &no},
			"flannel.1": {Name: "flannel.1", Type: "vxlan", MTU: 1450, Up: true, TunnelPort: 8472, TunnelLocal: addr("192.168.50.1"),
				TunnelDev: "vn0", TunnelDF: "set", VNI: 1, Addrs: []netip.Prefix{pfx("10.244.1.0/32")}},
			"lo": {Name: "lo", Type: "device", MTU: 65536, Up: true, Addrs: []netip.Prefix{pfx("127.0.0.1/8")}},
		}
		for name, w := range want {
			w.Index = idx(name)
			got, err := f.Link(name)
			if err != nil {
				t.Errorf("Link(%s): %v", name, err)
				continue
			}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("Link(%s):\n got %s\nwant %s", name, linkString(got), linkString(w))
			}
			want[name] = w
		}
		all, err := f.Links()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range all {
			names = append(names, l.Name)
			if w, ok := want[l.Name]; ok && !reflect.DeepEqual(l, w) {
				t.Errorf("Links has %s, Link gave %s", linkString(l), linkString(w))
			}
		}
		slices.Sort(names)
		if w := []string{"cni0", "flannel.1", "lo", "podA", "podB", "vethA", "vethB", "vn0"}; !slices.Equal(names, w) {
			t.Errorf("Links: %v, want %v", names, w)
		}
		if _, err := f.Link("nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("Link(nosuch0): %v, want an error naming it", err)
		}
	})

	t.Run("Sysctl", func(t *testing.T) {
		root, _ := os.ReadFile("/proc/sys/net/ipv4/conf/default/rp_filter")
		def := map[string]string{"0": "2", "1": "2", "2": "1"}[strings.TrimSpace(string(root))]
		for name, want := range map[string]string{
			"net.ipv4.conf.all.rp_filter":       "0",
			"net.ipv4.conf.cni0.rp_filter":      "1",
			"net.ipv4.conf.vn0.rp_filter":       "1",
			"net.ipv4.conf.flannel.1.rp_filter": "2",
			"net/ipv4/conf/flannel.1/rp_filter": "2",
			"net.ipv4.conf.default.rp_filter":   def,
			"net.ipv4.conf.vethB.forwarding":    "0",
			"net.ipv4.conf.vethA.forwarding":    "1",
		} {
			if got, err := f.Sysctl(name); err != nil || got != want {
				t.Errorf("Sysctl(%s) = %q, %v; want %q", name, got, err, want)
			}
		}
		if _, err := f.Sysctl("net.ipv4.conf.nosuch0.rp_filter"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("Sysctl of a missing device: %v, want an error naming it", err)
		}
	})

	t.Run("RouteGet", func(t *testing.T) {
		overlay := diagnose.Route{Type: "unicast", Dst: pfx("10.244.2.0/24"), Gateway: addr("10.244.2.0"), Dev: "flannel.1", Src: addr("10.244.1.0"),
			Table: 254, OnLink: true, Text: "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"}
		blackhole := diagnose.Route{Type: "blackhole", Dst: pfx("10.244.2.57/32"), Table: 254, Text: "blackhole 10.244.2.57"}
		forwarded := overlay
		forwarded.Src = netip.Addr{} // an input lookup has no preferred source
		for _, tc := range []struct {
			dst, src, iif string
			want          diagnose.Route
		}{
			{"10.244.2.5", "", "", overlay},
			{"10.244.2.57", "", "", blackhole},
			{"10.1.2.3", "", "", diagnose.Route{Type: "unreachable", Dst: pfx("10.1.2.0/24"), Table: 254, Text: "unreachable 10.1.2.0/24"}},
			{"10.9.1.1", "", "", diagnose.Route{Type: "prohibit", Dst: pfx("10.9.0.0/16"), Table: 254, Text: "prohibit 10.9.0.0/16"}},
			{"8.8.8.8", "", "", diagnose.Route{Type: "none"}},
			{"10.50.1.1", "", "", diagnose.Route{Type: "unicast", Dst: pfx("10.50.0.0/16"), Gateway: addr("192.168.50.2"), Dev: "vn0", Src: addr("192.168.50.1"),
				Table: 254, MTU: 1400, Text: "10.50.0.0/16 via 192.168.50.2 dev vn0 mtu 1400"}},
			{"10.244.2.5", "10.244.1.5", "cni0", forwarded},
			{"10.244.2.57", "10.244.1.5", "cni0", blackhole},
			{"8.8.8.8", "10.244.1.5", "cni0", diagnose.Route{Type: "none"}},
			{"8.8.8.8", "192.168.50.1", "", diagnose.Route{Type: "none"}},
			{"10.244.2.57", "192.168.50.1", "", blackhole},
		} {
			var src netip.Addr
			if tc.src != "" {
				src = addr(tc.src)
			}
			got, err := f.RouteGet(addr(tc.dst), src, tc.iif)
			if err != nil || got != tc.want {
				t.Errorf("RouteGet(%s, %s, %q) = %+v, %v\nwant %+v", tc.dst, tc.src, tc.iif, got, err, tc.want)
			}
		}
		for _, tc := range []struct{ dst, src, iif, want string }{
			{"10.244.2.5", "10.244.2.9", "cni0", "net.ipv4.conf.cni0.rp_filter = 1, net.ipv4.conf.all.rp_filter = 0, and the route back to 10.244.2.9 leaves by flannel.1"},
			{"10.244.2.5", "10.244.1.7", "vethB", "forwarding is off on vethB"}, // net.ipv4.conf.vethB.forwarding = 0
			{"10.244.2.5", "10.244.1.7", "nosuch0", "nosuch0"},
			{"10.244.2.5", "", "cni0", "source address"},
			{"10.244.2.5", "10.244.1.5", "", "10.244.1.5 is not an address of the namespace"}, // a pod's: only an input lookup takes it
			{"10.244.2.57", "10.244.1.5", "", "10.244.1.5 is not an address of the namespace"},
		} {
			var src netip.Addr
			if tc.src != "" {
				src = addr(tc.src)
			}
			if got, err := f.RouteGet(addr(tc.dst), src, tc.iif); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("RouteGet(%s, %s, %q) = %+v, %v; want an error saying %q", tc.dst, tc.src, tc.iif, got, err, tc.want)
			}
		}
	})

	t.Run("Routes", func(t *testing.T) {
		shown := map[string]bool{}
		for _, l := range strings.Split(nfrIn(t, lab.node, "", "ip", "route", "show", "table", "all"), "\n") {
			shown[strings.TrimSpace(l)] = true
		}
		for dst, want := range map[string][]string{
			"10.244.2.57": {"blackhole 10.244.2.57", "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink", "default via 192.168.50.2 dev vn0 table 100"},
			"10.244.1.1": {"local 10.244.1.1 dev cni0 table local proto kernel scope host src 10.244.1.1",
				"10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1", "default via 192.168.50.2 dev vn0 table 100"},
			"10.50.3.4": {"10.50.0.0/16 via 192.168.50.2 dev vn0 mtu 1400", "default via 192.168.50.2 dev vn0 table 100"},
		} {
			rs, err := f.Routes(addr(dst))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rs {
				got = append(got, r.Text)
				if !shown[r.Text] {
					t.Errorf("Routes(%s): %q is not a line of ip route show table all", dst, r.Text)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("Routes(%s) =\n%s\nwant\n%s", dst, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
		rs, _ := f.Routes(addr("10.244.2.57"))
		if w := (diagnose.Route{Type: "unicast", Gateway: addr("192.168.50.2"), Dev: "vn0", Table: 100, Text: "default via 192.168.50.2 dev vn0 table 100"}); len(rs) != 3 || rs[2] != w {
			t.Errorf("the default route of table 100: %+v, want %+v", rs, w)
		}
	})

	t.Run("Neigh", func(t *testing.T) {
		n, ok, err := f.Neigh("flannel.1", addr("10.244.2.0"))
		if w := (diagnose.Neigh{Addr: addr("10.244.2.0"), Dev: "flannel.1", MAC: "aa:bb:cc:00:00:02", State: "permanent"}); err != nil || !ok || n != w {
			t.Errorf("Neigh = %+v, %v, %v; want %+v", n, ok, err, w)
		}
		if n, ok, err := f.Neigh("flannel.1", addr("10.244.2.99")); err != nil || ok {
			t.Errorf("Neigh of an unknown address = %+v, %v, %v; want none", n, ok, err)
		}
		if _, _, err := f.Neigh("nosuch0", addr("10.244.2.0")); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("Neigh on a missing device: %v", err)
		}
	})

	t.Run("FDB", func(t *testing.T) {
		fdb, err := f.FDB("flannel.1")
		w := []diagnose.FDBEntry{{MAC: "aa:bb:cc:00:00:02", Dev: "flannel.1", Dst: addr("192.168.50.2"), VNI: 1, State: "permanent"}}
		if err != nil || !slices.Equal(fdb, w) {
			t.Errorf("FDB(flannel.1) = %+v, %v; want %+v", fdb, err, w)
		}
		l, err := f.Link("vethA")
		if err != nil {
			t.Fatal(err)
		}
		var shown []struct {
			Address string `json:"address"`
		}
		if err := json.Unmarshal([]byte(nfrIn(t, lab.node, "", "ip", "-j", "link", "show", "vethA")), &shown); err != nil || len(shown) != 1 {
			t.Fatalf("ip -j link show vethA: %v", err)
		}
		mac := shown[0].Address
		fdb, err = f.FDB("cni0")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range []diagnose.FDBEntry{{MAC: "aa:bb:cc:00:00:0a", Dev: "vethA", State: "static"}, {MAC: mac, Dev: l.Name, State: "permanent"}} {
			if !slices.Contains(fdb, e) {
				t.Errorf("FDB(cni0) lacks %+v: %+v", e, fdb)
			}
		}
		for _, e := range fdb {
			if e.Dev != "cni0" && e.Dev != "vethA" && e.Dev != "vethB" {
				t.Errorf("FDB(cni0) has an entry of another device: %+v", e)
			}
		}
		if _, err := f.FDB("nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("FDB of a missing device: %v", err)
		}
	})

	t.Run("Qdiscs", func(t *testing.T) {
		// More than the queue holds: 100 datagrams of 1,000 bytes into 30,000 bytes.
		ref, err := openNetns(lab.node)
		if err != nil {
			t.Fatal(err)
		}
		err = ref.do(func() error {
			c, err := net.Dial("udp4", "192.168.50.2:9")
			if err != nil {
				return err
			}
			defer c.Close()
			for range 100 {
				_, _ = c.Write(make([]byte, 1000))
			}
			return nil
		})
		ref.close()
		if err != nil {
			t.Fatal(err)
		}
		type tcStats struct {
			Kind    string `json:"kind"`
			Handle  string `json:"handle"`
			Bytes   uint64 `json:"bytes"`
			Packets uint64 `json:"packets"`
			Drops   uint32 `json:"drops"`
			Over    uint32 `json:"overlimits"`
			Requeue uint32 `json:"requeues"`
			Backlog uint32 `json:"backlog"`
			QLen    uint32 `json:"qlen"`
		}
		tc := func() []tcStats {
			var s []tcStats
			if err := json.Unmarshal([]byte(nfrIn(t, lab.node, "", "tc", "-s", "-j", "qdisc", "show", "dev", "vn0")), &s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		// Wait for the queue to drain: 30,000 bytes at 1 Mbit/s take 0.24 s.
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if s := tc(); len(s) > 0 && s[0].Backlog == 0 {
				break
			}
		}
		var qs []diagnose.Qdisc
		var before, after []tcStats
		for range 5 {
			before = tc()
			qs, err = f.Qdiscs("vn0")
			after = tc()
			if err != nil || reflect.DeepEqual(before, after) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(qs) != len(after) || len(qs) == 0 {
			t.Fatalf("Qdiscs(vn0) = %+v; tc shows %+v", qs, after)
		}
		s := after[0]
		want := diagnose.Qdisc{Kind: "tbf", Handle: "10:", Parent: "root", Config: "rate 1Mbit burst 1600b limit 30000b",
			Backlog: s.Backlog, QLen: s.QLen, Drops: s.Drops, Overlimits: s.Over, Requeues: s.Requeue, Packets: s.Packets, Bytes: s.Bytes}
		if qs[0] != want {
			t.Errorf("Qdiscs(vn0)[0] =\n %+v\nwant (tc -s) %+v", qs[0], want)
		}
		t.Logf("tbf on vn0 after 100 datagrams: %+v", qs[0])
		if qs[0].Drops < 20 {
			t.Errorf("tbf dropped %d of 100 datagrams, want most beyond its 30,000 bytes", qs[0].Drops)
		}
		if _, err := f.Qdiscs("nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
			t.Errorf("Qdiscs of a missing device: %v", err)
		}
	})

	t.Run("Conntrack", func(t *testing.T) {
		// A rule that matches on ct state makes the namespace track connections.
		nfrIn(t, lab.node, "table ip pt_ct {\n\tchain out { type filter hook output priority 0; policy accept; ct state new counter; }\n}\n", "nft", "-f", "-")
		nfrSendUDP(t, lab.node, "192.168.50.2:7")
		nfrSendUDP(t, lab.node, "192.168.50.2:8")
		c, err := f.Conntrack()
		if err != nil {
			t.Fatal(err)
		}
		global := func(name string) uint64 { return readUint("/proc/sys/net/netfilter/" + name) }
		w := diagnose.Conntrack{Count: 2, Max: global("nf_conntrack_max"), Buckets: global("nf_conntrack_buckets"), EntryBytes: c.EntryBytes}
		if c != w {
			t.Errorf("Conntrack = %+v, want %+v", c, w)
		}
		if w.Max == 0 || w.Buckets == 0 {
			t.Errorf("the initial namespace shows nf_conntrack_max %d, buckets %d", w.Max, w.Buckets)
		}
		if c.EntryBytes < 128 || c.EntryBytes > 1024 {
			t.Errorf("EntryBytes = %d, not the size of a struct nf_conn", c.EntryBytes)
		}
	})

	t.Run("NATRules", func(t *testing.T) {
		nfrIn(t, lab.node, `table ip nat {
	chain POSTROUTING { type nat hook postrouting priority srcnat; policy accept; counter jump KUBE-POSTROUTING; ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 counter masquerade; }
	chain KUBE-POSTROUTING { meta mark & 0x4000 == 0 return; counter masquerade; }
	chain PREROUTING { type nat hook prerouting priority dstnat; policy accept; counter; }
	chain UNUSED { counter; }
}
table ip filter {
	chain FORWARD { type filter hook forward priority 0; policy accept; counter; }
}
`, "nft", "-f", "-")
		s, err := f.NATRules()
		if err != nil {
			t.Fatal(err)
		}
		var chains, texts []string
		for _, c := range s.Chains {
			chains = append(chains, c.Name+"@"+c.Hook)
		}
		for _, r := range s.Rules {
			texts = append(texts, r.Chain+": "+r.Text)
		}
		if len(s.Rules) != 4 || s.Rules[0].Verdict != "jump KUBE-POSTROUTING" || s.Rules[2].Verdict != "return" || !s.Rules[0].HasCounter || s.Note != "" {
			t.Errorf("rules %+v, note %q", s.Rules, s.Note)
		}
		slices.Sort(chains)
		if w := []string{"KUBE-POSTROUTING@", "POSTROUTING@POSTROUTING"}; !slices.Equal(chains, w) {
			t.Errorf("chains %v, want %v", chains, w)
		}
		want := []string{
			"POSTROUTING: counter jump KUBE-POSTROUTING",
			"POSTROUTING: ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 counter masquerade",
			"KUBE-POSTROUTING: meta mark & 0x00004000 == 0x00000000 return",
			"KUBE-POSTROUTING: counter masquerade",
		}
		if !slices.Equal(texts, want) {
			t.Errorf("rules:\n%s\nwant\n%s", strings.Join(texts, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("Node", func(t *testing.T) {
		n, err := f.Node()
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(n.Addrs, netip.Addr.Compare)
		w := diagnose.NodeAddrs{
			Addrs:   []netip.Addr{addr("10.244.1.0"), addr("10.244.1.1"), addr("192.168.50.1")},
			Pods:    []netip.Prefix{pfx("10.244.1.0/24")},
			Cluster: []netip.Prefix{pfx("10.244.2.0/24")},
		}
		if !reflect.DeepEqual(n, w) {
			t.Errorf("Node = %+v, want %+v", n, w)
		}
	})
}

func linkString(l diagnose.Link) string {
	hp := "nil"
	if l.Hairpin != nil {
		hp = fmt.Sprint(*l.Hairpin)
	}
	l.Hairpin = nil
	return fmt.Sprintf("%+v hairpin=%s", l, hp)
}

// The namespace is opened by path as well as by name, and a missing one is refused.
func TestFactsOpen(t *testing.T) {
	nfrNeedRoot(t)
	ns := nfrNetns(t)
	f, err := OpenFacts("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if l, err := f.Link("lo"); err != nil || l.Type != "device" {
		t.Errorf("Link(lo) = %+v, %v", l, err)
	}
	// In a namespace nothing has asked for conntrack, there may be nothing to read;
	// if there is, nf_conntrack_max is read-only outside the initial namespace.
	if c, err := f.Conntrack(); err == nil && c.MaxWritable {
		t.Errorf("nf_conntrack_max writable in %s", ns)
	}
	if _, err := OpenFacts("pt-nfr-no-such-namespace"); err == nil || !strings.Contains(err.Error(), "pt-nfr-no-such-namespace") {
		t.Errorf("OpenFacts of a missing namespace: %v", err)
	}
}

// A namespace with 100,000 routes: Routes keeps the 64 most specific of those that
// contain the address and reports what one call costs.
func TestFactsRoutesBounded(t *testing.T) {
	nfrNeedRoot(t)
	ns := nfrNetns(t)
	var b strings.Builder
	b.WriteString("link add r0 type veth peer name r1\nlink set r0 up\nlink set r1 up\n")
	for i := range 100000 {
		fmt.Fprintf(&b, "route add 10.%d.%d.%d/32 dev r0\n", 100+i>>16, i>>8&0xff, i&0xff)
	}
	for tbl := 1; tbl <= 100; tbl++ {
		fmt.Fprintf(&b, "route add 10.0.0.0/8 dev r0 table %d\n", tbl)
	}
	nfrIn(t, ns, b.String(), "ip", "-batch", "-")
	f, err := OpenFacts(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start := time.Now()
	rs, err := f.Routes(netip.MustParseAddr("10.0.0.1"))
	took := time.Since(start)
	runtime.ReadMemStats(&m1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != factsMaxRoutes {
		t.Errorf("Routes kept %d routes, want %d of the 100 matching", len(rs), factsMaxRoutes)
	}
	for i, r := range rs {
		if r.Dst != netip.MustParsePrefix("10.0.0.0/8") || r.Table != i+1 {
			t.Errorf("route %d: %+v, want 10.0.0.0/8 of table %d", i, r, i+1)
			break
		}
	}
	if got, err := f.Routes(netip.MustParseAddr("10.100.1.2")); err != nil || len(got) != factsMaxRoutes || got[0].Text != "10.100.1.2 dev r0 scope link" {
		t.Errorf("Routes(10.100.1.2): %d routes, first %+v, %v", len(got), got[0], err)
	}
	t.Logf("Routes over 100,200 routes: %v, %d MB allocated, %d MB live after", took, (m1.TotalAlloc-m0.TotalAlloc)>>20, m1.HeapAlloc>>20)
}
