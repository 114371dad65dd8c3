package diagnose

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// fakeFacts is a node as a table: what each method answers.
type fakeFacts struct {
	links   map[string]Link
	sysctls map[string]string
	routes  map[string]Route // by "dst src iif"; "dst" alone for any
	neigh   map[string]Neigh // by "dev addr"
	fdb     map[string][]FDBEntry
	qdiscs  map[string][]Qdisc
	ct      *Conntrack
	nat     *decode.RuleSnapshot
	node    NodeAddrs
	calls   int
}

var errNoSuch = errors.New("no such device")

func (f *fakeFacts) Link(n string) (Link, error) {
	f.calls++
	if l, ok := f.links[n]; ok {
		return l, nil
	}
	return Link{}, fmt.Errorf("link %s: %w", n, errNoSuch)
}
func (f *fakeFacts) Links() ([]Link, error) {
	var out []Link
	for _, l := range f.links {
		out = append(out, l)
	}
	return out, nil
}
func (f *fakeFacts) Sysctl(n string) (string, error) {
	f.calls++
	if v, ok := f.sysctls[n]; ok {
		return v, nil
	}
	return "", fmt.Errorf("sysctl %s: no such file", n)
}
func (f *fakeFacts) RouteGet(dst, src netip.Addr, iif string) (Route, error) {
	f.calls++
	if r, ok := f.routes[fmt.Sprintf("%s %s %s", dst, src, iif)]; ok {
		return r, nil
	}
	if r, ok := f.routes[dst.String()]; ok {
		return r, nil
	}
	return Route{Type: "none"}, nil
}
func (f *fakeFacts) Routes(dst netip.Addr) ([]Route, error) {
	if r, ok := f.routes[dst.String()]; ok {
		return []Route{r}, nil
	}
	return nil, nil
}
func (f *fakeFacts) Neigh(dev string, a netip.Addr) (Neigh, bool, error) {
	n, ok := f.neigh[dev+" "+a.String()]
	return n, ok, nil
}
func (f *fakeFacts) FDB(dev string) ([]FDBEntry, error) { return f.fdb[dev], nil }
func (f *fakeFacts) Qdiscs(dev string) ([]Qdisc, error) {
	if _, ok := f.links[dev]; !ok {
		return nil, fmt.Errorf("qdiscs of %s: %w", dev, errNoSuch)
	}
	return f.qdiscs[dev], nil
}
func (f *fakeFacts) Conntrack() (Conntrack, error) {
	if f.ct == nil {
		return Conntrack{}, errors.New("conntrack not in use")
	}
	return *f.ct, nil
}
func (f *fakeFacts) NATRules() (decode.RuleSnapshot, error) {
	if f.nat == nil {
		return decode.RuleSnapshot{}, errors.New("no ruleset")
	}
	return *f.nat, nil
}
func (f *fakeFacts) Node() (NodeAddrs, error) { return f.node, nil }

var (
	podA   = netip.MustParseAddr("10.244.1.23")
	podB   = netip.MustParseAddr("10.244.2.57")
	nodeA  = netip.MustParseAddr("10.0.0.11")
	nodeB  = netip.MustParseAddr("10.0.0.12")
	vip    = netip.MustParseAddr("10.96.12.34")
	extIP  = netip.MustParseAddr("10.0.0.100")
	flanB  = netip.MustParseAddr("10.244.2.0")
	labIfs = []decode.Iface{
		{Name: "veth1a23", Kind: decode.KindPod}, {Name: "veth2b57", Kind: decode.KindPod},
		{Name: "cni0", Kind: decode.KindBridge}, {Name: "flannel.1", Kind: decode.KindOverlay}, {Name: "eth0", Kind: decode.KindUplink},
	}
)

// labNode is node-a of the lab: healthy.
func labNode() *fakeFacts {
	no := false
	return &fakeFacts{
		links: map[string]Link{
			"veth1a23":  {Name: "veth1a23", Type: "veth", MTU: 1450, Master: "cni0", Hairpin: &no},
			"veth2b57":  {Name: "veth2b57", Type: "veth", MTU: 1450, Master: "cni0", Hairpin: &no},
			"cni0":      {Name: "cni0", Type: "bridge", MTU: 1450},
			"flannel.1": {Name: "flannel.1", Type: "vxlan", MTU: 1450, TunnelPort: 8472, TunnelLocal: nodeA, TunnelDev: "eth0", VNI: 1},
			"eth0":      {Name: "eth0", Type: "veth", MTU: 1500},
		},
		sysctls: map[string]string{
			"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.flannel.1.rp_filter": "0", "net.ipv4.conf.eth0.rp_filter": "0",
			"net.ipv4.ip_forward": "1",
		},
		routes: map[string]Route{
			"10.244.2.57": {Type: "unicast", Dst: netip.MustParsePrefix("10.244.2.0/24"), Gateway: flanB, Dev: "flannel.1", OnLink: true, Text: "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"},
			"10.244.1.23": {Type: "unicast", Dst: netip.MustParsePrefix("10.244.1.0/24"), Dev: "cni0", Text: "10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1"},
			"10.0.0.12":   {Type: "unicast", Dst: netip.MustParsePrefix("10.0.0.0/24"), Dev: "eth0", Text: "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.11"},
		},
		qdiscs: map[string][]Qdisc{},
		neigh:  map[string]Neigh{"flannel.1 10.244.2.0": {Addr: flanB, Dev: "flannel.1", MAC: "0a:f1:00:00:00:02", State: "permanent"}},
		fdb:    map[string][]FDBEntry{"flannel.1": {{MAC: "0a:f1:00:00:00:02", Dev: "flannel.1", Dst: nodeB, State: "permanent"}}},
		node: NodeAddrs{Addrs: []netip.Addr{nodeA, netip.MustParseAddr("10.244.1.1"), netip.MustParseAddr("10.244.1.0")},
			Pods: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Cluster: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
		nat: &decode.RuleSnapshot{Rules: []decode.Rule{
			{Family: "ip", Table: "nat", Chain: "POSTROUTING", Hook: "POSTROUTING", Position: 1, Verdict: "jump KUBE-POSTROUTING", Text: `-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`, Backend: decode.BackendIptablesNft, HasCounter: true, Packets: 40},
			{Family: "ip", Table: "nat", Chain: "KUBE-POSTROUTING", Position: 3, Text: "-A KUBE-POSTROUTING -j MASQUERADE", Backend: decode.BackendIptablesNft, HasCounter: true, Packets: 0},
		}},
	}
}

func tcp(src, dst netip.Addr, sport, dport uint16) decode.Flow {
	return decode.Flow{Proto: decode.ProtoTCP, Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(dst, dport)}
}

func hop(name string, kind decode.IfaceKind, dir decode.Dir, t uint64, f decode.Flow) decode.Hop {
	return decode.Hop{Node: "node-a", Ifname: name, Kind: kind, Dir: dir, TimeNs: t, Flow: f}
}

func nfHop(hook, prio, in string, t uint64, f decode.Flow) decode.Hop {
	return decode.Hop{Node: "node-a", Ifname: in, Kind: decode.KindNetfilter, Hook: hook, Prio: prio, TimeNs: t, Flow: f}
}

// forwardedSYN is the lab's pod-to-pod SYN leaving node-a; drop turns it into a drop.
func forwardedSYN() *decode.Journey {
	f := tcp(podA, podB, 41000, 8080)
	return &decode.Journey{Node: "node-a", Flow: f, TCPFlags: decode.TCPSyn, IPLen: 60, DF: true, Verdict: decode.Forwarded,
		Hops: []decode.Hop{
			hop("veth1a23", decode.KindPod, decode.Ingress, 1000, f),
			hop("cni0", decode.KindBridge, decode.Ingress, 2000, f),
			hop("flannel.1", decode.KindOverlay, decode.Egress, 3000, f),
			hop("eth0", decode.KindUplink, decode.Egress, 4000, f),
		}}
}

func dropAfter(j *decode.Journey, n int, d decode.Drop) *decode.Journey {
	j.Hops = j.Hops[:n]
	d.TimeNs = j.Hops[n-1].TimeNs + 10
	j.Drop, j.Verdict = &d, decode.Dropped
	return j
}

func mustCause(t *testing.T, g *decode.Diagnosis, cause string, evidence ...string) {
	t.Helper()
	if g == nil {
		t.Fatalf("no diagnosis, want %s", cause)
	}
	if g.Cause != cause {
		t.Fatalf("cause %q, want %q:\n%s", g.Cause, cause, dump(g))
	}
	for _, e := range evidence {
		if g.Value(e) == "" {
			t.Errorf("no evidence %q:\n%s", e, dump(g))
		}
	}
	if g.Summary == "" || g.Fix == "" {
		t.Errorf("summary or fix empty:\n%s", dump(g))
	}
}

func dump(g *decode.Diagnosis) string {
	if g == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cause: %s [%s]: %s\n", g.Cause, g.Segment, g.Summary)
	for _, e := range g.Evidence {
		fmt.Fprintf(&b, "evidence: %s: %s\n", e.Name, e.Value)
	}
	fmt.Fprintf(&b, "fix: %s\n", g.Fix)
	for _, m := range g.Missing {
		fmt.Fprintf(&b, "missing: %s\n", m)
	}
	return b.String()
}

func TestHealthyNoDiagnosis(t *testing.T) {
	d := New(Config{Facts: labNode(), Ifaces: labIfs})
	j := forwardedSYN()
	if g := d.Journey(j); g != nil {
		t.Fatalf("a forwarded SYN got a diagnosis:\n%s", dump(g))
	}
	// A stall with no queue holding anything on the device is not blamed on a qdisc.
	j.Stall = &decode.Stall{From: "flannel.1 egress", Hop: "eth0 egress", DeltaNs: 20e6}
	if g := d.Journey(j); g != nil {
		t.Fatalf("a stall with idle qdiscs got a diagnosis:\n%s", dump(g))
	}
	// Tracing stopped before the packet's fate: nothing to diagnose.
	j.Stall, j.Verdict = nil, decode.Unfinished
	if g := d.Journey(j); g != nil {
		t.Fatalf("an unfinished journey got a diagnosis:\n%s", dump(g))
	}
}

func TestPolicy(t *testing.T) {
	d := New(Config{Facts: labNode(), Ifaces: labIfs})
	f := tcp(podA, netip.MustParseAddr("10.244.1.42"), 41000, 6379)
	rule := &decode.Rule{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "FORWARD", Handle: 3, Position: 1, Verdict: "drop",
		HasCounter: true, Packets: 2, Bytes: 120, Text: "-A FORWARD -d 10.244.1.42/32 -p tcp -m tcp --dport 6379 -j DROP", Backend: decode.BackendIptablesNft}
	j := &decode.Journey{Flow: f, Verdict: decode.Dropped, Hops: []decode.Hop{hop("veth1a23", decode.KindPod, decode.Ingress, 1, f), nfHop("FORWARD", "first", "cni0", 2, f)},
		Drop: &decode.Drop{Reason: "NETFILTER_DROP", ReasonSource: decode.ReasonKernel, Location: "nft_do_chain+0x3e8", Ifname: "cni0", Hook: "FORWARD", TimeNs: 3,
			Rule: &decode.RuleMatch{Rule: rule, Candidates: 1}}}
	g := d.Journey(j)
	mustCause(t, g, decode.CausePolicy, "rule", "counter")
	if !strings.Contains(g.Fix, "iptables -t filter -D FORWARD -d 10.244.1.42/32 -p tcp -m tcp --dport 6379 -j DROP") {
		t.Errorf("fix does not delete the rule as written: %s", g.Fix)
	}
	// The same drop by a kube-proxy rule names the Service and sends the user there.
	rule.Chain, rule.Text = "KUBE-SERVICES", `-A KUBE-SERVICES -d 10.96.12.34/32 -p tcp -m comment --comment "default/api:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable`
	g = d.Journey(j)
	mustCause(t, g, decode.CausePolicy, "kubernetes")
	if g.Value("kubernetes") != "Service default/api:http (no endpoints)" || !strings.Contains(g.Fix, "endpointslices -l kubernetes.io/service-name=api") {
		t.Errorf("kube-proxy rule: %s", dump(g))
	}
	// Nothing named: still policy, saying why the rule is unknown.
	j.Drop.Rule = &decode.RuleMatch{Why: decode.NoRuleCounted}
	g = d.Journey(j)
	mustCause(t, g, decode.CausePolicy)
	if len(g.Missing) == 0 {
		t.Errorf("an unnamed rule should say what is missing: %s", dump(g))
	}
}

func TestKubeObject(t *testing.T) {
	for _, c := range []struct{ chain, text, want string }{
		{"KUBE-SEP-XYZ", `-A KUBE-SEP-XYZ -s 10.244.1.23/32 -m comment --comment "default/api" -j KUBE-MARK-MASQ`, "Service default/api"},
		{"KUBE-EXTERNAL-SERVICES", `-A KUBE-EXTERNAL-SERVICES -m comment --comment "shop/web:https has no endpoints" -j DROP`, "Service shop/web:https (no endpoints)"},
		{"KUBE-NWPLCY-ABC", `-A KUBE-NWPLCY-ABC -m comment --comment "rule to ACCEPT traffic from source pods to dest pods selected by policy name deny-redis namespace prod" -j ACCEPT`, "NetworkPolicy prod/deny-redis"},
		{"cali-pi-_abc", `-A cali-pi-_abc -j DROP`, "a Calico policy (chain cali-pi-_abc)"},
		{"FORWARD", `-A FORWARD -d 10.0.0.1/32 -j DROP`, ""},
		{"svc", `ip daddr 10.96.0.10 tcp dport 53 comment "kube-system/kube-dns:dns-tcp has no endpoints" reject`, "Service kube-system/kube-dns:dns-tcp (no endpoints)"},
		{"FORWARD", `-A FORWARD -m comment --comment "a/b my note" -j DROP`, ""},
	} {
		if got := KubeObject(c.chain, c.text); got != c.want {
			t.Errorf("KubeObject(%s, %s) = %q, want %q", c.chain, c.text, got, c.want)
		}
	}
}

// rpfilterJourney is the lab's rpfilter fault as node-b sees it: in on eth0
// encapsulated, out of flannel.1, dropped there.
func rpfilterJourney(source string) *decode.Journey {
	f := tcp(podA, podB, 41000, 8080)
	return &decode.Journey{Node: "node-b", Flow: f, Verdict: decode.Dropped, Hops: []decode.Hop{
		hop("eth0", decode.KindUplink, decode.Ingress, 1, f), hop("flannel.1", decode.KindOverlay, decode.Ingress, 2, f)},
		Drop: &decode.Drop{Reason: "IP_RPFILTER", ReasonSource: source, Location: "ip_rcv_finish_core+0x25b", Ifname: "flannel.1", TimeNs: 3}}
}

func TestRPFilter(t *testing.T) {
	facts := labNode()
	facts.sysctls["net.ipv4.conf.all.rp_filter"] = "1"
	facts.sysctls["net.ipv4.conf.flannel.1.rp_filter"] = "0"
	facts.routes["10.244.1.23"] = Route{Type: "unicast", Dst: netip.MustParsePrefix("10.244.1.23/32"), Gateway: nodeA, Dev: "eth0", Text: "10.244.1.23 via 10.0.0.11 dev eth0"}
	d := New(Config{Facts: facts, Ifaces: labIfs})
	g := d.Journey(rpfilterJourney(decode.ReasonKernel))
	mustCause(t, g, decode.CauseRPFilter, "rp_filter", "route back")
	if v := g.Value("rp_filter"); !strings.HasPrefix(v, "1 (strict) on flannel.1") || !strings.Contains(v, "all=1") {
		t.Errorf("rp_filter evidence %q: want the effective value, max(all, dev)", v)
	}
	if !strings.Contains(g.Value("route back"), "dev eth0") || !strings.Contains(g.Fix, "rp_filter=2") || !strings.Contains(g.Fix, "10.244.1.23 via 10.0.0.11 dev eth0") {
		t.Errorf("rp_filter: %s", dump(g))
	}
	// Inferred from the drop site (5.10) with rp_filter off: the site frees for other
	// reasons too; not named rp_filter.
	facts.sysctls["net.ipv4.conf.all.rp_filter"] = "0"
	g = d.Journey(rpfilterJourney(decode.ReasonInferred))
	if g == nil || g.Cause == decode.CauseRPFilter {
		t.Fatalf("rp_filter off, inferred reason: want another cause, got:\n%s", dump(g))
	}
}

func TestNoRoute(t *testing.T) {
	facts := labNode()
	facts.routes["10.244.2.57"] = Route{Type: "blackhole", Dst: netip.MustParsePrefix("10.244.2.57/32"), Text: "blackhole 10.244.2.57"}
	d := New(Config{Facts: facts, Ifaces: labIfs})
	j := dropAfter(forwardedSYN(), 2, decode.Drop{Reason: "NOT_SPECIFIED", ReasonSource: decode.ReasonKernel, Location: "dst_discard+0x10", Ifname: "cni0"})
	g := d.Journey(j)
	mustCause(t, g, decode.CauseNoRoute, "route")
	if !strings.Contains(g.Value("route"), "blackhole 10.244.2.57") || !strings.Contains(g.Fix, "ip route del blackhole 10.244.2.57") {
		t.Errorf("blackhole: %s", dump(g))
	}
	// Forwarding off says so.
	facts.sysctls["net.ipv4.ip_forward"] = "0"
	j = dropAfter(forwardedSYN(), 2, decode.Drop{Reason: "IP_NOROUTE", ReasonSource: decode.ReasonInferred, InferredFrom: "ip_forward", Location: "ip_forward+0x1", Ifname: "cni0"})
	g = d.Journey(j)
	mustCause(t, g, decode.CauseNoRoute, "ip_forward")
}

func TestMTU(t *testing.T) {
	facts := labNode()
	eth := facts.links["eth0"]
	eth.MTU = 1400
	facts.links["eth0"] = eth
	d := New(Config{Facts: facts, Ifaces: labIfs})
	j := forwardedSYN()
	j.IPLen, j.TCPFlags = 1450, decode.TCPAck
	j = dropAfter(j, 3, decode.Drop{Reason: "NOT_SPECIFIED", ReasonSource: decode.ReasonKernel, Location: "ip_fragment.constprop.0+0x84", Ifname: "eth0"})
	g := d.Journey(j)
	mustCause(t, g, decode.CauseMTU, "mtu_chain", "overhead", "packet", "icmp")
	if want := "veth1a23 1450 → cni0 1450 → flannel.1 1450 (vxlan, +50) → eth0 1400 (carries flannel.1)"; g.Value("mtu_chain") != want {
		t.Errorf("mtu_chain %q, want %q", g.Value("mtu_chain"), want)
	}
	if !strings.Contains(g.Fix, "to 1350") || !strings.Contains(g.Fix, "--set-mss 1310") || !strings.Contains(g.Fix, "raise eth0's MTU to 1500") || g.Segment != decode.SegUplink {
		t.Errorf("mtu: %s", dump(g))
	}
	if !strings.Contains(g.Value("icmp"), "black hole") {
		t.Errorf("no ICMP seen should say so: %s", g.Value("icmp"))
	}
	// An ICMP fragmentation needed to the sender, in the same batch, is evidence.
	icmp := &decode.Journey{Flow: decode.Flow{Proto: decode.ProtoICMP, Src: netip.AddrPortFrom(netip.MustParseAddr("10.244.1.1"), 0), Dst: netip.AddrPortFrom(podA, 0)},
		ICMPType: 3, ICMPCode: 4, ICMPMTU: 1350, Verdict: decode.Delivered, Hops: []decode.Hop{hop("veth1a23", decode.KindPod, decode.Egress, 3500, decode.Flow{})}}
	d.Diagnose([]*decode.Journey{j, icmp})
	if v := j.Diagnosis.Value("icmp"); !strings.Contains(v, "MTU 1350") {
		t.Errorf("icmp evidence %q: want the frag-needed seen", v)
	}
	if icmp.Diagnosis != nil {
		t.Errorf("the delivered ICMP got a diagnosis: %s", dump(icmp.Diagnosis))
	}
	// A packet that fits every MTU of a healthy path, dropped at a site only
	// inferred: not blamed on the MTU.
	d = New(Config{Facts: labNode(), Ifaces: labIfs})
	j2 := forwardedSYN()
	j2 = dropAfter(j2, 3, decode.Drop{Reason: "IP_FRAGFAILS", ReasonSource: decode.ReasonInferred, Location: "ip_fragment+0x84", Ifname: "eth0"})
	if g := d.Journey(j2); g == nil || g.Cause == decode.CauseMTU {
		t.Errorf("a 60-byte packet named an MTU fault:\n%s", dump(g))
	}
}

func TestQdisc(t *testing.T) {
	facts := labNode()
	facts.qdiscs["flannel.1"] = []Qdisc{{Kind: "tbf", Handle: "8001:", Parent: "root", Config: "rate 1Mbit burst 1600b limit 30000b", Backlog: 29000, QLen: 28, Drops: 31, Overlimits: 400, Packets: 100}}
	d := New(Config{Facts: facts, Ifaces: labIfs})
	j := dropAfter(forwardedSYN(), 3, decode.Drop{Reason: "QDISC_DROP", ReasonSource: decode.ReasonKernel, Location: "__dev_queue_xmit+0x1", Ifname: "flannel.1"})
	g := d.Journey(j)
	mustCause(t, g, decode.CauseQdisc, "qdisc")
	if !strings.Contains(g.Value("qdisc"), "tbf 8001: root on flannel.1: rate 1Mbit") || !strings.Contains(g.Value("qdisc"), "dropped 31") ||
		!strings.Contains(g.Fix, "tc qdisc del dev flannel.1 root") || g.Segment != decode.SegTunnel {
		t.Errorf("qdisc: %s", dump(g))
	}
	// The stall of a packet that made it, in the same queue.
	j = forwardedSYN()
	j.Stall = &decode.Stall{From: "flannel.1 egress", Hop: "eth0 egress", DeltaNs: 12e6}
	g = d.Journey(j)
	mustCause(t, g, decode.CauseQdisc, "stall", "qdisc")
}

func TestConntrackFull(t *testing.T) {
	facts := labNode()
	facts.ct = &Conntrack{Count: 300, Max: 300, InsertFailed: 0, EarlyDrop: 12, Drop: 5, EntryBytes: 320}
	d := New(Config{Facts: facts, Ifaces: labIfs})
	j := forwardedSYN()
	j.Hops = j.Hops[:1]
	j.Drop = &decode.Drop{Reason: "NETFILTER_DROP", Location: "nf_hook_slow+0x1", Hook: "OUTPUT", TimeNs: 2000,
		Cause: "conntrack table full (nf_conntrack_count 300 of nf_conntrack_max 300)"}
	j.Verdict = decode.Dropped
	g := d.Journey(j)
	mustCause(t, g, decode.CauseConntrackFull, "nf_conntrack_count", "nf_conntrack_max", "insert_failed", "early_drop")
	if !strings.Contains(g.Fix, "nf_conntrack_max=1024") || !strings.Contains(g.Fix, "320 bytes") || !strings.Contains(g.Fix, "read-only") {
		t.Errorf("conntrack fix: %s", g.Fix)
	}
}

func TestNeighbour(t *testing.T) {
	facts := labNode()
	delete(facts.fdb, "flannel.1")
	d := New(Config{Facts: facts, Ifaces: labIfs})
	j := dropAfter(forwardedSYN(), 3, decode.Drop{Reason: "VXLAN_NO_REMOTE", ReasonSource: decode.ReasonKernel, Location: "vxlan_xmit+0x5", Ifname: "flannel.1"})
	g := d.Journey(j)
	mustCause(t, g, decode.CauseNeighbour, "route", "neighbour", "fdb")
	if !strings.Contains(g.Value("fdb"), "no entry for 0a:f1:00:00:00:02") || !strings.Contains(g.Fix, "bridge fdb append 0a:f1:00:00:00:02 dev flannel.1") {
		t.Errorf("fdb: %s", dump(g))
	}
	// The neighbour itself missing.
	facts = labNode()
	delete(facts.neigh, "flannel.1 10.244.2.0")
	d = New(Config{Facts: facts, Ifaces: labIfs})
	g = d.Journey(j)
	mustCause(t, g, decode.CauseNeighbour, "neighbour")
	if !strings.Contains(g.Value("neighbour"), "none") || !strings.Contains(g.Fix, "ip neigh replace 10.244.2.0") {
		t.Errorf("neighbour: %s", dump(g))
	}
	// Both present and the reason only inferred: not named a neighbour fault.
	d = New(Config{Facts: labNode(), Ifaces: labIfs})
	j.Drop.Reason, j.Drop.ReasonSource = "NEIGH_FAILED", decode.ReasonInferred
	if g := d.Journey(j); g == nil || g.Cause == decode.CauseNeighbour {
		t.Errorf("healthy neighbour named as the cause:\n%s", dump(g))
	}
}

func TestHairpin(t *testing.T) {
	d := New(Config{Facts: labNode(), Ifaces: labIfs})
	f := tcp(podB, vip, 41000, 80)
	dn := tcp(podB, podB, 41000, 8080)
	j := &decode.Journey{Flow: f, Verdict: decode.Delivered, Hops: []decode.Hop{
		hop("veth2b57", decode.KindPod, decode.Ingress, 1, f),
		nfHop("PREROUTING", "last", "cni0", 2, dn),
		nfHop("POSTROUTING", "last", "cni0", 3, dn),
		hop("veth2b57", decode.KindPod, decode.Egress, 4, dn)}}
	g := d.Journey(j)
	mustCause(t, g, decode.CauseHairpin, "flow", "snat", "hairpin_mode", "masquerade rules")
	if !strings.Contains(g.Value("hairpin_mode"), "off on veth2b57") || !strings.Contains(g.Fix, "KUBE-MARK-MASQ") {
		t.Errorf("hairpin: %s", dump(g))
	}
	// Dead at the bridge before any later hop showed the DNAT (the kprobe fallback):
	// the dropped packet shows it.
	j2 := &decode.Journey{Flow: f, Verdict: decode.Dropped, Hops: []decode.Hop{
		hop("veth2b57", decode.KindPod, decode.Ingress, 1, f), nfHop("PREROUTING", "entry", "cni0", 2, f)},
		Drop: &decode.Drop{Reason: "BRIDGE", ReasonSource: decode.ReasonInferred, Location: "br_handle_frame_finish+0x22e", Ifname: "veth2b57", TimeNs: 3, Flow: dn}}
	mustCause(t, d.Journey(j2), decode.CauseHairpin, "flow", "snat")
	// With the hairpin masquerade the source is the bridge's: no diagnosis.
	sn := tcp(netip.MustParseAddr("10.244.2.1"), podB, 41000, 8080)
	j.Hops[2].Flow, j.Hops[3].Flow = sn, sn
	if g := d.Journey(j); g != nil {
		t.Errorf("masqueraded hairpin got a diagnosis:\n%s", dump(g))
	}
}

func TestClosedPortInPod(t *testing.T) {
	d := New(Config{Facts: labNode(), Ifaces: labIfs})
	f := decode.Flow{Proto: decode.ProtoUDP, Src: netip.AddrPortFrom(podA, 5000), Dst: netip.AddrPortFrom(podB, 9999)}
	j := &decode.Journey{Flow: f, Verdict: decode.Dropped, Hops: []decode.Hop{hop("flannel.1", decode.KindOverlay, decode.Ingress, 1, f), hop("veth2b57", decode.KindPod, decode.Egress, 2, f)},
		Drop: &decode.Drop{Reason: "NO_SOCKET", ReasonSource: decode.ReasonKernel, Location: "__udp4_lib_rcv+0x1", Ifname: "eth0", TimeNs: 3}}
	g := d.Journey(j)
	mustCause(t, g, decode.CauseClosedPort, "destination")
	if g.Segment != decode.SegApp || !strings.Contains(g.Summary, "not a network fault") || !strings.Contains(g.Summary, "veth2b57") {
		t.Errorf("closed port: %s", dump(g))
	}
}

func TestOneWay(t *testing.T) {
	facts := labNode()
	d := New(Config{Facts: facts, Ifaces: labIfs})
	left := tcp(podA, extIP, 47034, 80)
	o := &decode.OneWay{Node: "node-a", Flow: left, SYNs: 2, LeftVia: "eth0 egress", Expect: "eth0 ingress", LeftFlow: left, Wait: 2 * time.Second}
	g := d.OneWay(o)
	mustCause(t, g, decode.CauseNoSNAT, "source", "postrouting")
	if !strings.Contains(g.Fix, "-s 10.244.0.0/22 ! -d 10.244.0.0/22 -j MASQUERADE") || !strings.Contains(g.Value("postrouting"), "KUBE-POSTROUTING -j MASQUERADE [0 packets]") {
		t.Errorf("no_snat: %s", dump(g))
	}
	// Translated to the node's address: the far end did not answer, not a missing SNAT.
	o.LeftFlow = tcp(nodeA, extIP, 47034, 80)
	if g := d.OneWay(o); g.Cause != decode.CauseUnknown || g.Segment != decode.SegOtherNode {
		t.Errorf("SNATed one-way: %s", dump(g))
	}
	// Encapsulated toward the other node: the node cannot tell underlay from the
	// other node, and says so.
	o.LeftFlow = tcp(podA, podB, 47034, 8080)
	o.LeftOuter = &decode.Outer{Kind: decode.TunnelVXLAN, Src: nodeA, Dst: nodeB, DstPort: 8472, VNI: 1}
	g = d.OneWay(o)
	if g.Cause != decode.CauseUnknown || g.Segment != decode.SegUnderlay || !strings.Contains(g.Value("tunnel"), "udp/8472 from 10.0.0.11 to 10.0.0.12") {
		t.Errorf("encapsulated one-way: %s", dump(g))
	}
}

func TestUnderlayPath(t *testing.T) {
	f := tcp(podA, podB, 41000, 8080)
	j := forwardedSYN()
	j.Hops[3].Outer = &decode.Outer{Kind: decode.TunnelVXLAN, Src: nodeA, Dst: nodeB, DstPort: 8472, VNI: 1}
	p := &decode.Path{Legs: []*decode.Journey{j}, Verdict: decode.PathUnderlayLost, LeftNode: "node-a", LeftHop: "eth0 egress", Next: "node-b", NextAddr: nodeB}
	jn := decode.NewJoiner(nil, time.Second)
	Path(p, jn)
	g := p.Diagnosis
	mustCause(t, g, decode.CauseUnderlay, "direction", "tunnel", "other direction")
	if g.Value("direction") != "node-a → node-b" || !strings.Contains(g.Value("other direction"), "no crossing seen") || !strings.Contains(g.Fix, "udp/8472") {
		t.Errorf("underlay: %s", dump(g))
	}
	_ = f
}

func TestNoFacts(t *testing.T) {
	d := New(Config{Ifaces: labIfs})
	j := rpfilterJourney(decode.ReasonKernel)
	g := d.Journey(j)
	mustCause(t, g, decode.CauseRPFilter)
	if len(g.Missing) == 0 {
		t.Errorf("without a reader the diagnosis must say what it did not read: %s", dump(g))
	}
}

func TestCached(t *testing.T) {
	facts := labNode()
	c := Cached(facts, time.Second).(*cached)
	now := time.Unix(100, 0)
	c.now = func() time.Time { return now }
	for range 5 {
		if _, err := c.Link("eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if facts.calls != 1 {
		t.Errorf("5 reads within the ttl made %d calls, want 1", facts.calls)
	}
	now = now.Add(2 * time.Second)
	if l, _ := c.Link("eth0"); l.MTU != 1500 || facts.calls != 2 {
		t.Errorf("after the ttl: %+v, %d calls", l, facts.calls)
	}
	if _, err := c.Link("nope"); !errors.Is(err, errNoSuch) {
		t.Errorf("errors pass through: %v", err)
	}
	for i := range maxCached + 10 {
		c.Sysctl(fmt.Sprint(i))
	}
	if len(c.m) > maxCached || len(c.order) > maxCached {
		t.Errorf("cache holds %d answers, bound %d", len(c.m), maxCached)
	}
}
