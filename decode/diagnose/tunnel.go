package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pathtrace/pathtrace/decode"
)

// ---- mtu ----------------------------------------------------------------------

// overhead is what a tunnel of this type adds to each packet, over an IPv4 or IPv6
// underlay (the family of its local address; sit and ipip are always over IPv4,
// ip6tnl and ip6gre over IPv6), with Geneve's options as the packet carried them
// (geneveOpts bytes); 0 for a device that is no tunnel.
func overhead(typ string, v6 bool, geneveOpts int) (int, string) {
	switch typ {
	case "ipip", "sit", "gre":
		v6 = false
	case "ip6tnl", "ip6gre":
		v6 = true
	}
	ip := 20
	if v6 {
		ip = 40
	}
	switch typ {
	case "vxlan":
		return ip + 8 + 8 + 14, fmt.Sprintf("VXLAN: outer IP %d + UDP 8 + VXLAN 8 + inner Ethernet 14", ip)
	case "geneve":
		if geneveOpts > 0 {
			return ip + 8 + 8 + geneveOpts + 14, fmt.Sprintf("Geneve: outer IP %d + UDP 8 + Geneve 8 + options %d + inner Ethernet 14", ip, geneveOpts)
		}
		return ip + 8 + 8 + 14, fmt.Sprintf("Geneve without options: outer IP %d + UDP 8 + Geneve 8 + inner Ethernet 14", ip)
	case "ipip":
		return ip, "IPIP: outer IPv4 20"
	case "sit":
		return ip, "SIT (IPv6 in IPv4): outer IPv4 20"
	case "ip6tnl":
		return ip, "ip6tnl (IP in IPv6): outer IPv6 40"
	case "gre", "ip6gre":
		return ip + 4, fmt.Sprintf("GRE: outer IP %d + GRE 4", ip)
	case "wireguard":
		return ip + 8 + 32, fmt.Sprintf("WireGuard: outer IP %d + UDP 8 + WireGuard 32", ip)
	}
	return 0, ""
}

// geneveOptions is the most option bytes the journey's Geneve headers carried.
func geneveOptions(j *decode.Journey) int {
	n := 0
	for i := range j.Hops {
		if o := j.Hops[i].Outer; o != nil && o.Kind == decode.TunnelGeneve {
			n = max(n, int(o.Options))
		}
	}
	return n
}

type mtuStep struct {
	dev   string
	mtu   int
	limit int    // the largest inner packet this device passes
	note  string // "(vxlan, +50)", "(under flannel.1)"
}

func (d *Diagnoser) mtu(j *decode.Journey) *decode.Diagnosis {
	dr := j.Drop
	g := &decode.Diagnosis{Cause: decode.CauseMTU}
	size := int(j.IPLen)
	g.Add("drop", reasonOr(dr)+" at "+dr.Location+devText(dr.Ifname))
	df := "DF set"
	if !j.DF {
		df = "DF not set"
	}
	g.Add("packet", fmt.Sprintf("%d bytes (IP), %s", size, df))
	facts := d.facts(g)
	if facts == nil {
		g.Summary = fmt.Sprintf("a %d-byte packet was too big for a device on its way", size)
		g.Fix = "make the pods' MTU fit the smallest MTU on the path minus the tunnel's overhead"
		return g
	}
	// The devices in path order, each once, then the drop's.
	var devs []string
	for i := range j.Hops {
		if h := &j.Hops[i]; h.Kind != decode.KindNetfilter && !slices.Contains(devs, h.Ifname) {
			devs = append(devs, h.Ifname)
		}
	}
	if dr.Ifname != "" && !slices.Contains(devs, dr.Ifname) {
		// A packet seen only as it died on a tunnel's underlay (a segment of a GSO
		// packet) went through the tunnel first.
		if d.kinds[dr.Ifname] == decode.KindUplink {
			for name, k := range d.kinds {
				if k != decode.KindOverlay || slices.Contains(devs, name) {
					continue
				}
				if lk, err := facts.Link(name); err == nil && lk.TunnelDev == dr.Ifname {
					devs = append(devs, name)
					break
				}
			}
		}
		devs = append(devs, dr.Ifname)
	}
	var steps []mtuStep
	seen := map[string]bool{}
	for _, dev := range devs {
		if seen[dev] {
			continue
		}
		seen[dev] = true
		lk, err := facts.Link(dev)
		if err != nil {
			lack(g, "the MTU of "+dev, err)
			continue
		}
		steps = append(steps, mtuStep{dev: dev, mtu: lk.MTU, limit: lk.MTU})
		ov, what := overhead(lk.Type, lk.TunnelLocal.Is6(), geneveOptions(j))
		if ov == 0 {
			continue
		}
		steps[len(steps)-1].note = fmt.Sprintf("(%s, +%d)", lk.Type, ov)
		g.Add("overhead", fmt.Sprintf("%s adds %d bytes (%s)", dev, ov, what))
		under := d.underlayOf(j, lk)
		if under == "" || seen[under] {
			continue
		}
		seen[under] = true
		ul, err := facts.Link(under)
		if err != nil {
			lack(g, "the MTU of "+under, err)
			continue
		}
		steps = append(steps, mtuStep{dev: under, mtu: ul.MTU, limit: ul.MTU - ov, note: "(carries " + dev + ")"})
	}
	var chain []string
	var tight *mtuStep
	for i := range steps {
		s := &steps[i]
		c := s.dev + " " + strconv.Itoa(s.mtu)
		if s.note != "" {
			c += " " + s.note
		}
		chain = append(chain, c)
		if tight == nil || s.limit < tight.limit {
			tight = s
		}
	}
	if len(chain) > 0 {
		g.Add("mtu_chain", strings.Join(chain, " → "))
	}
	g.Add("icmp", d.icmpText(j))
	if tight == nil {
		g.Summary = fmt.Sprintf("a %d-byte packet was too big for a device on its way; no MTU could be read", size)
		g.Fix = "make the pods' MTU fit the smallest MTU on the path minus the tunnel's overhead"
		return g
	}
	g.Segment = d.segmentOf(tight.dev)
	// The devices in front of the tight one that let bigger packets in.
	var bigger []string
	need := size // what the tight device would have to pass
	for _, s := range steps {
		if s.dev == tight.dev {
			break
		}
		if s.limit > tight.limit {
			bigger = append(bigger, s.dev)
			need = max(need, s.limit)
		}
	}
	switch {
	case size <= tight.limit && len(bigger) == 0:
		g.Summary = fmt.Sprintf("dropped as too big (%s), but the %d-byte packet fits every MTU read now (the tightest: %s passes %d)", reasonOr(dr), size, tight.dev, tight.limit)
		if dr.ReasonSource == decode.ReasonInferred {
			g.Cause = decode.CauseUnknown
		}
		g.Fix = "compare the MTUs along the path while it happens (ip link; ip route get DST shows a route's own mtu)"
		return g
	case size <= tight.limit:
		// A small packet that died all the same: a segment of a larger send (GSO)
		// that did not fit as a whole, on a path whose devices let in more than it
		// carries.
		g.Summary = fmt.Sprintf("a %d-byte packet, part of a larger send, died as too big: %s let in larger packets than %s carries (%d bytes after %s)",
			size, strings.Join(bigger, ", "), tight.dev, tight.limit, tunnelOf(tight))
	case tight.limit != tight.mtu:
		g.Summary = fmt.Sprintf("a %d-byte packet with %s does not fit: %s carries %d bytes, %d of them for the packet after %s",
			size, df, tight.dev, tight.mtu, tight.limit, tunnelOf(tight))
	default:
		g.Summary = fmt.Sprintf("a %d-byte packet with %s does not fit through %s (MTU %d)", size, df, tight.dev, tight.mtu)
	}
	set := "the MTU of " + strings.Join(bigger, ", ")
	if len(bigger) == 0 {
		set = "the pods' MTU"
	}
	g.Fix = fmt.Sprintf("set %s to %d (what %s passes) — for flannel the MTU in net-conf.json or its detection from the uplink, passed by the CNI to the pods — or raise %s's MTU to %d if the network under it carries that", set, tight.limit, tight.dev, tight.dev, tight.mtu+need-tight.limit)
	if j.Flow.Proto == decode.ProtoTCP {
		mss := tight.limit - 40
		if j.Flow.Src.Addr().Is6() {
			mss = tight.limit - 60
		}
		g.Fix += fmt.Sprintf("; meanwhile clamp TCP's MSS: iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss %d", mss)
	}
	return g
}

// tunnelOf names the tunnel a step carries, from its note "(carries flannel.1)".
func tunnelOf(s *mtuStep) string {
	return strings.TrimPrefix(strings.TrimSuffix(s.note, ")"), "(carries ")
}

// underlayOf is the device that carries a tunnel's packets: the one the tunnel is
// bound to, else the one the route to the remote end of the journey's encapsulated
// hop takes.
func (d *Diagnoser) underlayOf(j *decode.Journey, lk Link) string {
	if lk.TunnelDev != "" {
		return lk.TunnelDev
	}
	for i := range j.Hops {
		if o := j.Hops[i].Outer; o != nil {
			if rt, err := d.cfg.Facts.RouteGet(o.Dst, netip.Addr{}, ""); err == nil && rt.Dev != "" {
				return rt.Dev
			}
		}
	}
	for name, k := range d.kinds {
		if k == decode.KindUplink {
			return name
		}
	}
	return ""
}

// icmpText says whether an ICMP "fragmentation needed" told the sender to send
// smaller packets, around the time of the drop.
func (d *Diagnoser) icmpText(j *decode.Journey) string {
	src := j.Flow.Src.Addr()
	t := j.Drop.TimeNs
	w := uint64(d.cfg.ICMPWindow)
	var other *icmpSeen
	for i := range d.icmp {
		s := &d.icmp[i]
		if s.timeN+w < t || t+w < s.timeN {
			continue
		}
		if s.to == src {
			return fmt.Sprintf("fragmentation needed (MTU %d) sent to %s, seen at %s", s.mtu, src, s.where)
		}
		if other == nil {
			other = s
		}
	}
	if other != nil {
		// The outer packet's: the node told its own tunnel address, never the pod.
		return fmt.Sprintf("fragmentation needed (MTU %d) sent to %s (seen at %s), not to the sender %s: the sender never learns to send smaller packets (a path-MTU black hole)", other.mtu, other.to, other.where, src)
	}
	return fmt.Sprintf("no ICMP fragmentation needed reached %s on the traced interfaces: it cannot learn to send smaller packets (a path-MTU black hole)", src)
}

// ---- neighbour ----------------------------------------------------------------

func (d *Diagnoser) neighbour(j *decode.Journey) *decode.Diagnosis {
	dr := j.Drop
	f := lastFlow(j)
	dst := f.Dst.Addr()
	g := &decode.Diagnosis{Cause: decode.CauseNeighbour, Segment: d.segmentOf(dr.Ifname)}
	g.Add("drop", reasonOr(dr)+" at "+dr.Location+devText(dr.Ifname))
	facts := d.facts(g)
	if facts == nil {
		g.Summary = "no neighbour entry for the next hop toward " + dst.String()
		g.Fix = "ip neigh show; bridge fdb show: the CNI writes the entries for each node"
		return g
	}
	rt, err := facts.RouteGet(dst, netip.Addr{}, "")
	if err != nil {
		lack(g, "the route to "+dst.String(), err)
		g.Summary = "no neighbour entry for the next hop toward " + dst.String()
		g.Fix = "ip neigh show; bridge fdb show: the CNI writes the entries for each node"
		return g
	}
	g.Add("route", fmt.Sprintf("to %s: %s", dst, routeText(rt)))
	nh := rt.Gateway
	if !nh.IsValid() {
		nh = dst
	}
	dev := rt.Dev
	if g.Segment == "" {
		g.Segment = d.segmentOf(dev)
	}
	n, ok, err := facts.Neigh(dev, nh)
	switch {
	case err != nil:
		lack(g, "the neighbour "+nh.String()+" on "+dev, err)
	case !ok:
		g.Add("neighbour", nh.String()+" on "+dev+": none")
	default:
		g.Add("neighbour", fmt.Sprintf("%s on %s: lladdr %s, %s", nh, dev, orDash(n.MAC), n.State))
	}
	neighBad := err == nil && (!ok || n.MAC == "" || n.State == "failed" || n.State == "incomplete")
	lk, lerr := facts.Link(dev)
	tunnel := lerr == nil && (lk.Type == "vxlan" || lk.Type == "geneve")
	prefix := "the destination's prefix"
	if rt.Dst.IsValid() {
		prefix = rt.Dst.String()
	}
	if neighBad {
		g.Summary = fmt.Sprintf("no usable neighbour entry for the next hop %s on %s", nh, dev)
		if tunnel {
			g.Summary += ": the overlay lost its peer for " + prefix
			g.Fix = fmt.Sprintf("the CNI writes it (flannel: from the node annotation flannel.alpha.coreos.com/backend-data's VtepMAC of the node owning %s): ip neigh replace %s lladdr VTEP-MAC dev %s nud permanent; restarting the CNI agent on this node rewrites it", prefix, nh, dev)
		} else {
			g.Fix = fmt.Sprintf("%s does not answer ARP/ND on %s: check it is up and on the same segment (arping -I %s %s)", nh, dev, dev, nh)
		}
		return g
	}
	if tunnel && ok {
		fdb, err := facts.FDB(dev)
		if err != nil {
			lack(g, "the FDB of "+dev, err)
		} else {
			var match, all []string
			for _, e := range fdb {
				s := e.MAC + " dst " + addrOr(e.Dst)
				all = append(all, s)
				if strings.EqualFold(e.MAC, n.MAC) {
					match = append(match, s)
				}
			}
			if len(match) == 0 {
				others := "none"
				if len(all) > 0 {
					others = strings.Join(all[:min(len(all), 4)], ", ")
				}
				g.Add("fdb", fmt.Sprintf("no entry for %s on %s (its entries: %s)", n.MAC, dev, others))
				g.Summary = fmt.Sprintf("%s has no FDB entry for %s (the next hop %s): it does not know which node to send %s's packets to", dev, n.MAC, nh, prefix)
				g.Fix = fmt.Sprintf("the CNI writes it (flannel: from the public-ip annotation of the node owning %s): bridge fdb append %s dev %s dst NODE-IP; restarting the CNI agent on this node rewrites it", prefix, n.MAC, dev)
				return g
			}
			g.Add("fdb", strings.Join(match, ", "))
		}
	}
	if dr.ReasonSource == decode.ReasonInferred || dr.Reason == "" {
		g.Cause = decode.CauseUnknown
		g.Summary = fmt.Sprintf("dropped at %s; the next hop %s on %s has its neighbour entry now", dr.Location, nh, dev)
		g.Fix = "watch the neighbour table while it happens (ip monitor neigh)"
		return g
	}
	g.Summary = fmt.Sprintf("the next hop %s on %s had no usable neighbour entry; it has one now (restored since the drop?)", nh, dev)
	g.Fix = "watch the neighbour and FDB tables while it happens (ip monitor neigh; bridge monitor fdb)"
	return g
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func addrOr(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

// ---- hairpin ------------------------------------------------------------------

// hairpin: a pod reached itself through a Service without SNAT. After DNAT the packet
// goes back to its own source address; where it leaves the node's NAT its source is
// still the pod's, so the pod answers itself inside its namespace and the reply never
// crosses the node's conntrack to be given the Service's address back.
func (d *Diagnoser) hairpin(j *decode.Journey) *decode.Diagnosis {
	src := j.Flow.Src.Addr()
	if j.Flow.Dst.Addr() == src || len(j.Hops) == 0 {
		return nil
	}
	var at *decode.Hop
	for i := len(j.Hops) - 1; i >= 0; i-- {
		if h := &j.Hops[i]; h.Flow.Dst.Addr() == src {
			at = h
			break
		}
	}
	if at == nil && j.Drop != nil && j.Drop.Flow.Dst.Addr() == src {
		// Died before any later hop could show the DNAT (5.10, 6.1: the kprobe sees
		// a translation at the next hook): the dropped packet shows it.
		at = &decode.Hop{Node: j.Node, Kind: decode.KindNetfilter, Hook: "drop", Prio: "site", Flow: j.Drop.Flow}
	}
	if at == nil || at.Flow.Src.Addr() != src {
		return nil
	}
	// Only once the packet is past the node's NAT (handed to the pod, or at the last
	// priority of POSTROUTING), or where it died after the DNAT back to its source (the
	// bridge refuses to send a frame back out of the port it came in on).
	past := at.Kind == decode.KindPod && at.Dir == decode.Egress ||
		at.Kind == decode.KindNetfilter && at.Hook == "POSTROUTING" && at.Prio != "first" ||
		j.Verdict == decode.Dropped
	if !past {
		return nil
	}
	g := &decode.Diagnosis{Cause: decode.CauseHairpin, Segment: decode.SegNetfilter}
	vip := j.Flow.Endpoint(j.Flow.Dst)
	g.Add("flow", fmt.Sprintf("%s → %s, DNAT to %s: the client itself%s", j.Flow.Endpoint(j.Flow.Src), vip, at.Flow.Endpoint(at.Flow.Dst), namesText(j, false)))
	g.Add("snat", fmt.Sprintf("none: the source is still %s at %s", src, at.Name()))
	g.Summary = fmt.Sprintf("%s reached itself through %s without SNAT: its reply stays inside its own namespace and never crosses the node to be un-DNATed, so the connection cannot complete", src, vip)
	veth := ""
	if h := &j.Hops[0]; h.Kind == decode.KindPod {
		veth = h.Ifname
	}
	if facts := d.facts(g); facts != nil {
		if veth != "" {
			if lk, err := facts.Link(veth); err != nil {
				lack(g, "the hairpin mode of "+veth, err)
			} else if lk.Hairpin != nil {
				g.Add("hairpin_mode", onOff(*lk.Hairpin)+" on "+veth+" (port of "+orDash(lk.Master)+")")
			}
		}
		if rs, err := facts.NATRules(); err != nil {
			lack(g, "the nat POSTROUTING rules", err)
		} else {
			g.Add("masquerade rules", masqText(rs))
		}
	}
	fix := fmt.Sprintf("masquerade hairpin traffic: kube-proxy marks it in the Service's endpoint chain (-A KUBE-SEP-... -s %s/32 -j KUBE-MARK-MASQ) and masquerades marked packets in KUBE-POSTROUTING: restore those rules (restart kube-proxy), or add iptables -t nat -I POSTROUTING -s %s -d %s -j MASQUERADE", src, src, src)
	if veth != "" {
		fix += fmt.Sprintf("; and keep hairpin mode on the pod's bridge port (kubelet --hairpin-mode=hairpin-veth, the bridge CNI's hairpinMode): ip link set %s type bridge_slave hairpin on", veth)
	}
	g.Fix = fix
	return g
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// masqText lists the rules of nat POSTROUTING that translate sources, with their
// counters.
func masqText(s decode.RuleSnapshot) string {
	var out []string
	n := 0
	for _, r := range s.Rules {
		t := strings.ToUpper(r.Text)
		if !strings.Contains(t, "MASQUERADE") && !strings.Contains(t, "SNAT") && r.Verdict != "masquerade" {
			continue
		}
		n++
		if len(out) < 6 {
			c := ""
			if r.HasCounter {
				c = fmt.Sprintf(" [%d packets]", r.Packets)
			}
			out = append(out, r.Location()+": "+orDash(r.Text)+c)
		}
	}
	if n == 0 {
		return "no MASQUERADE or SNAT rule in nat POSTROUTING or the chains it jumps to"
	}
	if n > len(out) {
		out = append(out, fmt.Sprintf("and %d more", n-len(out)))
	}
	return strings.Join(out, " | ")
}

// ---- one-way --------------------------------------------------------------------

// OneWay diagnoses a TCP connection whose SYNs got no answer.
func (d *Diagnoser) OneWay(o *decode.OneWay) *decode.Diagnosis {
	g := &decode.Diagnosis{Cause: decode.CauseUnknown}
	lf := o.LeftFlow
	if !lf.Src.IsValid() {
		lf = o.Flow
	}
	dev, dir, _ := strings.Cut(o.LeftVia, " ")
	g.Add("left", fmt.Sprintf("%s at %s", flowText(lf), o.LeftVia))
	if ou := o.LeftOuter; ou != nil {
		g.Segment = decode.SegUnderlay
		g.Add("tunnel", tunnelText(ou))
		g.Summary = fmt.Sprintf("its SYNs left encapsulated for the node at %s and no SYN-ACK came back: lost on the underlay or on that node; follow through both nodes' agents (--agents) to tell which", ou.Dst)
		g.Lack("what happened on " + ou.Dst.String() + ": its journey (follow through its agent)")
		g.Fix = fmt.Sprintf("follow on both nodes; if %s never sees the SYNs, check %s between %s and %s (firewalls, security groups)", ou.Dst, firewallText(ou), ou.Src, ou.Dst)
		return g
	}
	facts := d.facts(g)
	var node NodeAddrs
	nodeOK := false
	if facts != nil {
		var err error
		if node, err = facts.Node(); err != nil {
			lack(g, "the node's addresses", err)
		} else {
			nodeOK = true
		}
	}
	src, dst := lf.Src.Addr(), lf.Dst.Addr()
	kind := d.kinds[dev]
	podNet := append(slices.Clone(node.Pods), node.Cluster...)
	switch {
	case dir == "egress" && kind == decode.KindPod:
		g.Segment = decode.SegPod
		g.Summary = fmt.Sprintf("its SYNs were handed to the pod through %s and no SYN-ACK came out: the pod dropped them where pathtrace cannot see, or its listen queue is full", dev)
		g.Lack("the pod's namespace is not the traced one")
		g.Fix = "look inside the pod: ss -ltn (the listener and its backlog), its firewall and routes"
	case nodeOK && dir == "egress" && kind == decode.KindUplink && !containsAddrList(node.Addrs, src) && containsAddr(podNet, src) && !containsAddr(podNet, dst):
		g.Cause = decode.CauseNoSNAT
		g.Segment = decode.SegNetfilter
		g.Add("source", fmt.Sprintf("%s left %s untranslated: not one of the node's addresses (%s)", src, dev, addrsText(node.Addrs)))
		if rs, err := facts.NATRules(); err != nil {
			lack(g, "the nat POSTROUTING rules", err)
		} else {
			g.Add("postrouting", masqText(rs))
			if rs.Note != "" {
				g.Add("rules note", rs.Note)
			}
		}
		cidr := coverPrefix(podNet)
		g.Summary = fmt.Sprintf("it left the cluster with the pod's address %s: %s cannot route the answer back to a pod address", src, dst)
		g.Fix = fmt.Sprintf("masquerade pod traffic that leaves the pod network: iptables -t nat -A POSTROUTING -s %s ! -d %s -j MASQUERADE (flannel's --ip-masq, Calico's natOutgoing)", cidr, cidr)
	case dir == "egress" && kind == decode.KindUplink:
		g.Segment = decode.SegOtherNode
		g.Summary = fmt.Sprintf("its SYNs left %s as %s and %s never answered: a firewall beyond the node or the peer itself", dev, src, dst)
		g.Lack("what happened beyond " + dev)
		g.Fix = fmt.Sprintf("check that %s listens on %d and that nothing between filters it (a capture on %s shows whether SYN-ACKs come back to it)", dst, lf.Dst.Port(), dev)
	default:
		g.Summary = "its SYNs left via " + o.LeftVia + " and no SYN-ACK came back"
		g.Lack("what happened after " + o.LeftVia)
		g.Fix = "follow where it goes next (the other node's agent, or more interfaces)"
	}
	return g
}

func addrsText(as []netip.Addr) string {
	var s []string
	for i, a := range as {
		if i == 6 {
			s = append(s, "...")
			break
		}
		s = append(s, a.String())
	}
	return strings.Join(s, ", ")
}

// coverPrefix is the smallest prefix that holds every prefix of ps (of the first's
// family): the pod network from the nodes' pod prefixes.
func coverPrefix(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "POD-CIDR"
	}
	c := ps[0].Masked()
	for _, p := range ps[1:] {
		if p.Addr().Is4() != c.Addr().Is4() {
			continue
		}
		for bits := min(c.Bits(), p.Bits()); bits >= 0; bits-- {
			a, _ := c.Addr().Prefix(bits)
			if a.Contains(p.Addr()) {
				c = a
				break
			}
		}
	}
	return c.String()
}

// ---- paths across nodes ----------------------------------------------------------

// Path gives a path its diagnosis: on the underlay from the path itself (with
// whether the other direction works, from the joiner's crossings), else its last
// leg's.
func Path(p *decode.Path, j *decode.Joiner) {
	switch p.Verdict {
	case decode.PathUnderlayLost:
		g := &decode.Diagnosis{Cause: decode.CauseUnderlay, Segment: decode.SegUnderlay}
		var left *decode.Journey
		for _, l := range p.Legs {
			if l.Node == p.LeftNode {
				left = l
			}
		}
		g.Add("direction", p.LeftNode+" → "+p.Next)
		var outer *decode.Outer
		if left != nil {
			for i := len(left.Hops) - 1; i >= 0; i-- {
				if o := left.Hops[i].Outer; o != nil {
					outer = o
					break
				}
			}
		}
		to := p.NextAddr.String()
		if outer != nil {
			to = outer.Dst.String()
			g.Add("tunnel", fmt.Sprintf("%s from %s to %s", outer.Transport(), outer.Src, to))
		} else {
			g.Add("addresses", "to "+to)
		}
		if t, ok := j.LastCrossing(p.Next, p.LeftNode); ok {
			g.Add("other direction", fmt.Sprintf("%s → %s works: last crossing at %s", p.Next, p.LeftNode, t.Format("15:04:05.000")))
		} else {
			g.Add("other direction", fmt.Sprintf("%s → %s: no crossing seen since following began", p.Next, p.LeftNode))
		}
		g.Summary = fmt.Sprintf("left %s %s and never reached %s, whose agent answers: lost between the nodes", p.LeftNode, p.LeftHop, p.Next)
		if outer != nil {
			g.Fix = fmt.Sprintf("check what lies between %s and %s for %s: firewalls, security groups, the switch (a capture on %s's uplink shows whether it arrives)", outer.Src, to, firewallText(outer), p.Next)
		} else {
			g.Fix = fmt.Sprintf("check what lies between %s and %s (firewalls, security groups, the switch)", p.LeftNode, p.Next)
		}
		p.Diagnosis = g
	case decode.PathNodeMissing:
		g := &decode.Diagnosis{Cause: decode.CauseUnknown, Segment: decode.SegOtherNode, Summary: p.Summary()}
		g.Lack("the journey on " + p.Missing + p.Next + ": its agent did not answer")
		g.Fix = "run the agent on every node (deploy/daemonset.yaml)"
		p.Diagnosis = g
	case decode.PathDone:
		p.Diagnosis = p.Legs[len(p.Legs)-1].Diagnosis
	}
}

// tunnelText is a tunnel header in a diagnosis's evidence: "VXLAN udp/8472 from A to B
// (vni 1)", "Geneve udp/6081 ... (vni 7)", "ipip from A to B".
func tunnelText(o *decode.Outer) string {
	switch o.Kind {
	case decode.TunnelVXLAN:
		return fmt.Sprintf("VXLAN udp/%d from %s to %s (vni %d)", o.DstPort, o.Src, o.Dst, o.VNI)
	case decode.TunnelGeneve:
		return fmt.Sprintf("Geneve udp/%d from %s to %s (vni %d)", o.DstPort, o.Src, o.Dst, o.VNI)
	}
	return fmt.Sprintf("%s from %s to %s", o.Transport(), o.Src, o.Dst)
}

// firewallText is what a firewall between the nodes must let through for the tunnel:
// "udp/8472", "ipip (IP protocol 4)".
func firewallText(o *decode.Outer) string {
	if o.UDP() {
		return o.Transport()
	}
	return fmt.Sprintf("%s (IP protocol %d)", o.Transport(), o.Proto())
}
