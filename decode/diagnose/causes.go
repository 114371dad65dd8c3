package diagnose

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// ---- policy ---------------------------------------------------------------

var (
	// iptables: --comment "text" or --comment word; nft: comment "text".
	commentRE    = regexp.MustCompile(`--comment\s+(?:"([^"]*)"|(\S+))`)
	nftCommentRE = regexp.MustCompile(`(?:^|\s)comment\s+"([^"]*)"`)
	// kube-proxy's comments start with the Service: "default/api cluster IP",
	// "default/api:http has no endpoints".
	svcCommentRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)(:[-a-z0-9]+)?\b`)
	// kube-router's: "rule to ACCEPT traffic from ... selected by policy name NAME namespace NS".
	policyCommentRE = regexp.MustCompile(`policy name (\S+) namespace (\S+)`)
)

// KubeObject names the Kubernetes object behind a rule from its chain and comment, as
// kube-proxy and the policy controllers write them; "" when it names none.
func KubeObject(chain, text string) string {
	comment := ""
	if m := commentRE.FindStringSubmatch(text); m != nil {
		comment = m[1] + m[2]
	} else if m := nftCommentRE.FindStringSubmatch(text); m != nil {
		comment = m[1]
	}
	if m := policyCommentRE.FindStringSubmatch(comment); m != nil {
		return "NetworkPolicy " + m[2] + "/" + m[1]
	}
	switch {
	case strings.HasPrefix(chain, "KUBE-NWPLCY-"), strings.HasPrefix(chain, "KUBE-POD-FW-"):
		return "a NetworkPolicy (kube-router chain " + chain + ")"
	case strings.HasPrefix(chain, "cali-pi-"), strings.HasPrefix(chain, "cali-po-"):
		return "a Calico policy (chain " + chain + ")"
	}
	kubeChain := strings.HasPrefix(chain, "KUBE-")
	if m := svcCommentRE.FindStringSubmatch(comment); m != nil && (kubeChain || strings.Contains(comment, "endpoints") || strings.Contains(comment, "cluster IP")) {
		svc := "Service " + m[1] + "/" + m[3] + m[5]
		if strings.Contains(comment, "has no endpoints") {
			return svc + " (no endpoints)"
		}
		return svc
	}
	return ""
}

func (d *Diagnoser) policy(j *decode.Journey) *decode.Diagnosis {
	dr := j.Drop
	g := &decode.Diagnosis{Cause: decode.CausePolicy, Segment: decode.SegNetfilter}
	f := lastFlow(j)
	m := dr.Rule
	switch {
	case m != nil && m.Rule != nil:
		r := m.Rule
		g.Add("rule", m.String())
		if r.HasCounter {
			g.Add("counter", fmt.Sprintf("%d packets, %d bytes", r.Packets, r.Bytes))
		}
		if m.Candidates > 1 {
			g.Add("candidates", fmt.Sprintf("%d drop rules counted packets meanwhile: this one is the likeliest", m.Candidates))
		}
		obj := KubeObject(r.Chain, r.Text)
		if obj != "" {
			g.Add("kubernetes", obj)
		}
		where := fmt.Sprintf("%s rule %d", r.Location(), r.Position)
		g.Summary = "a netfilter rule dropped it: " + where
		if obj != "" {
			g.Summary += ", written for " + obj
		}
		g.Fix = ruleFix(r, obj, f)
	case m != nil && m.Policy != nil:
		c := m.Policy
		g.Add("chain policy", c.Location()+" policy "+c.Policy)
		if m.Why != "" {
			g.Add("rules", m.Why)
		}
		g.Summary = fmt.Sprintf("no rule of %s accepted it and the chain's policy is %s", c.Location(), c.Policy)
		if c.Backend == decode.BackendNftables {
			g.Fix = fmt.Sprintf("accept the flow before the policy applies: nft insert rule %s %s %s %s accept", c.Family, c.Table, c.Name, nftMatch(f))
		} else {
			g.Fix = fmt.Sprintf("accept the flow before the policy applies: %s -t %s -I %s %s -j ACCEPT", iptablesCmd(c.Family, f), c.Table, c.Name, iptMatch(f))
		}
	default:
		g.Summary = "netfilter dropped it in " + orNone(dr.Hook) + ", by a rule that could not be named"
		switch {
		case m != nil && m.Why != "":
			g.Lack("the rule: " + m.Why)
		default:
			g.Lack("the rule: the ruleset was not read (--no-rules, or it could not be)")
		}
		g.Fix = fmt.Sprintf("list the %s rules with their counters (iptables-save -c; nft list ruleset) and change the one whose counter rises with this flow (%s)", orNone(dr.Hook), flowText(f))
	}
	return g
}

func flowText(f decode.Flow) string {
	return decode.ProtoName(f.Proto) + " " + f.Endpoint(f.Src) + " → " + f.Endpoint(f.Dst)
}

func iptablesCmd(family string, f decode.Flow) string {
	if family == "ip6" || family == "inet" && f.Src.Addr().Is6() {
		return "ip6tables"
	}
	return "iptables"
}

func iptMatch(f decode.Flow) string {
	s := "-s " + f.Src.Addr().String() + " -d " + f.Dst.Addr().String() + " -p " + decode.ProtoName(f.Proto)
	if f.Proto == decode.ProtoTCP || f.Proto == decode.ProtoUDP {
		s += " --dport " + strconv.Itoa(int(f.Dst.Port()))
	}
	return s
}

func nftMatch(f decode.Flow) string {
	fam := "ip"
	if f.Src.Addr().Is6() {
		fam = "ip6"
	}
	s := fam + " saddr " + f.Src.Addr().String() + " " + fam + " daddr " + f.Dst.Addr().String()
	if f.Proto == decode.ProtoTCP || f.Proto == decode.ProtoUDP {
		s += " " + decode.ProtoName(f.Proto) + " dport " + strconv.Itoa(int(f.Dst.Port()))
	}
	return s
}

// ruleFix says how to change the rule: through the Kubernetes object that owns it,
// else by deleting it as it was written.
func ruleFix(r *decode.Rule, obj string, f decode.Flow) string {
	switch {
	case strings.HasSuffix(obj, "(no endpoints)"):
		svc := strings.TrimSuffix(strings.TrimPrefix(obj, "Service "), " (no endpoints)")
		ns, name, _ := strings.Cut(svc, "/")
		name, _, _ = strings.Cut(name, ":")
		return fmt.Sprintf("Service %s/%s has no ready endpoints: kubectl -n %s get endpointslices -l kubernetes.io/service-name=%s; fix its selector or its pods' readiness (kube-proxy owns the rule: do not delete it by hand)", ns, name, ns, name)
	case strings.HasPrefix(obj, "Service "):
		return "kube-proxy writes this rule for " + obj + ": change the Service (kubectl get service), not the rule"
	case strings.HasPrefix(obj, "NetworkPolicy "):
		ns, name, _ := strings.Cut(strings.TrimPrefix(obj, "NetworkPolicy "), "/")
		return fmt.Sprintf("allow %s in NetworkPolicy %s/%s or another policy that selects the pod (kubectl -n %s get networkpolicy %s -o yaml); the controller owns the rule", flowText(f), ns, name, ns, name)
	case obj != "":
		return "allow " + flowText(f) + " in " + obj + "; its controller owns the rule"
	}
	if r.Backend == decode.BackendNftables {
		return fmt.Sprintf("delete or narrow it: nft delete rule %s %s %s handle %d", r.Family, r.Table, r.Chain, r.Handle)
	}
	if rest, ok := strings.CutPrefix(r.Text, "-A "); ok {
		return fmt.Sprintf("delete or narrow it: %s -t %s -D %s", iptablesCmd(r.Family, f), r.Table, rest)
	}
	return fmt.Sprintf("delete or narrow it: %s -t %s -D %s %d", iptablesCmd(r.Family, f), r.Table, r.Chain, r.Position)
}

// ---- rp_filter ------------------------------------------------------------

func rpMode(v int) string {
	switch v {
	case 0:
		return "off"
	case 1:
		return "strict"
	}
	return "loose"
}

func (d *Diagnoser) sysctlInt(g *decode.Diagnosis, name string) (int, bool) {
	s, err := d.cfg.Facts.Sysctl(name)
	if err != nil {
		lack(g, name, err)
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		g.Lack(name + ": not a number: " + s)
		return 0, false
	}
	return v, true
}

// ingressDev is the device the packet came in on before it died: skb->dev at the
// drop, else the last ingress hop's.
func ingressDev(j *decode.Journey) string {
	if j.Drop != nil && j.Drop.Ifname != "" {
		return j.Drop.Ifname
	}
	for i := len(j.Hops) - 1; i >= 0; i-- {
		if h := &j.Hops[i]; h.Kind != decode.KindNetfilter && h.Dir == decode.Ingress {
			return h.Ifname
		}
	}
	return ""
}

func (d *Diagnoser) rpFilter(j *decode.Journey) *decode.Diagnosis {
	dr := j.Drop
	f := lastFlow(j)
	src := f.Src.Addr()
	dev := ingressDev(j)
	g := &decode.Diagnosis{Cause: decode.CauseRPFilter, Segment: decode.SegRouting}
	g.Add("drop", reasonOr(dr)+" at "+dr.Location+devText(dr.Ifname))
	g.Summary = fmt.Sprintf("the reverse-path filter on %s refused source %s", orDev(dev), src)
	facts := d.facts(g)
	if facts == nil || dev == "" {
		if dev == "" {
			g.Lack("the ingress device: no ingress hop or drop device")
		}
		g.Fix = "check net.ipv4.conf.{all,DEV}.rp_filter and the route back to " + src.String()
		return g
	}
	fam := "ipv4"
	if src.Is6() {
		fam = "ipv6" // IPv6 has no rp_filter sysctl; rpfilter is a netfilter match there
	}
	all, okA := d.sysctlInt(g, "net."+fam+".conf.all.rp_filter")
	devv, okD := d.sysctlInt(g, "net."+fam+".conf."+dev+".rp_filter")
	eff := max(all, devv)
	if okA && okD {
		g.Add("rp_filter", fmt.Sprintf("%d (%s) on %s: the larger of all=%d and %s=%d", eff, rpMode(eff), dev, all, dev, devv))
	}
	// The check looks the source up as a destination; the packet's own destination
	// (a pod, not the node's) cannot be the lookup's source, so the node asks as itself.
	rt, err := facts.RouteGet(src, netip.Addr{}, "")
	if err != nil {
		lack(g, "the route back to "+src.String(), err)
	} else {
		g.Add("route back", fmt.Sprintf("to %s: %s", src, routeText(rt)))
	}
	inferred := dr.ReasonSource == decode.ReasonInferred
	switch {
	case okA && okD && eff == 0:
		if inferred {
			// The site frees for other reasons too (martian source, no route): not
			// rp_filter when the filter is off.
			return d.routeOrUnknown(j)
		}
		g.Summary += "; rp_filter reads 0 now: it was turned off since the drop"
		g.Fix = "nothing to change now; if it comes back, keep rp_filter at 0 or 2 on " + dev
	case err == nil && rt.Type != "unicast" && rt.Type != "local":
		g.Summary = fmt.Sprintf("the reverse-path filter (%s) on %s refused source %s: there is no route back to it (%s)", rpMode(eff), dev, src, rt.Type)
		g.Fix = fmt.Sprintf("add a route back to %s via %s, or turn the filter off on %s: sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.%s.rp_filter=0 (the check uses the larger of the two)", src, dev, dev, dev)
	case err == nil && eff == 1 && rt.Dev != dev:
		g.Summary = fmt.Sprintf("strict reverse-path filter on %s: the route back to %s leaves via %s, not %s (asymmetric routing)", dev, src, rt.Dev, dev)
		g.Fix = fmt.Sprintf("route %s back through %s (correct or delete '%s'), or use loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.%s.rp_filter=2 (the check uses the larger of the two)", src, dev, rt.Text, dev)
	default:
		g.Fix = fmt.Sprintf("use loose mode or turn it off on %s: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.%s.rp_filter=2", dev, dev)
	}
	return g
}

func orDev(dev string) string {
	if dev == "" {
		return "its ingress device"
	}
	return dev
}

func routeText(r Route) string {
	if r.Text != "" {
		return r.Text
	}
	if r.Type == "none" {
		return "no route"
	}
	s := r.Type
	if r.Dst.IsValid() {
		s += " " + r.Dst.String()
	}
	if r.Gateway.IsValid() {
		s += " via " + r.Gateway.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// ---- no_route -------------------------------------------------------------

func (d *Diagnoser) noRoute(j *decode.Journey) *decode.Diagnosis {
	return d.route(j, true)
}

func (d *Diagnoser) routeOrUnknown(j *decode.Journey) *decode.Diagnosis {
	return d.route(j, false)
}

// route reads the route the packet's destination takes. sure: the kernel's reason
// says routing refused it, so a route that exists now is named as added since.
func (d *Diagnoser) route(j *decode.Journey, sure bool) *decode.Diagnosis {
	dr := j.Drop
	f := lastFlow(j)
	src, dst := f.Src.Addr(), f.Dst.Addr()
	g := &decode.Diagnosis{Cause: decode.CauseNoRoute, Segment: decode.SegRouting}
	g.Add("drop", reasonOr(dr)+" at "+dr.Location+devText(dr.Ifname))
	facts := d.facts(g)
	if facts == nil {
		g.Summary = "routing refused the packet to " + dst.String()
		g.Fix = "check the route to " + dst.String() + " (ip route get " + dst.String() + ")"
		return g
	}
	iif := ingressDev(j)
	if lk, err := facts.Link(iif); err == nil && lk.Master != "" {
		iif = lk.Master // a bridge port's packets are routed from the bridge
	}
	if v, ok := d.sysctlInt(g, "net.ipv4.ip_forward"); ok && v == 0 && dst.Is4() && iif != "" && !d.local(dst) {
		g.Add("ip_forward", "0")
		g.Summary = "the node does not forward IPv4 (net.ipv4.ip_forward=0)"
		g.Fix = "sysctl -w net.ipv4.ip_forward=1"
		return g
	}
	rt, err := facts.RouteGet(dst, src, iif)
	if err != nil {
		// An input lookup may fail for the source (rp_filter, martian): ask as the node.
		rt, err = facts.RouteGet(dst, netip.Addr{}, "")
	}
	if err != nil {
		lack(g, "the route to "+dst.String(), err)
		g.Cause = decode.CauseUnknown
		g.Summary = "dropped while routing to " + dst.String() + "; the route could not be read"
		g.Fix = "check the route to " + dst.String() + " (ip route get " + dst.String() + ")"
		return g
	}
	g.Add("route", fmt.Sprintf("to %s: %s", dst, routeText(rt)))
	if rs, err := facts.Routes(dst); err == nil {
		for i, r := range rs {
			if i == 4 {
				break
			}
			if r.Text != rt.Text {
				g.Add("also matches", r.Text+tableText(r.Table))
			}
		}
	}
	switch rt.Type {
	case "blackhole", "unreachable", "prohibit", "throw":
		g.Summary = fmt.Sprintf("the route to %s is '%s': the node drops what it matches", dst, routeText(rt))
		g.Fix = fmt.Sprintf("delete it if nothing should be dropped: ip route del %s%s", strings.TrimPrefix(routeText(rt), ""), tableArg(rt.Table))
	case "none":
		g.Summary = "no route to " + dst.String()
		g.Fix = "add a route to " + dst.String() + " (the CNI writes one per node's pod prefix; a missing one means it lost that node): ip route add PREFIX via GATEWAY dev DEV"
	default:
		if !sure {
			g.Cause = decode.CauseUnknown
			g.Summary = fmt.Sprintf("dropped at %s; the route to %s is a usable %s route now, and no other check of that site is known to pathtrace", dr.Location, dst, rt.Type)
			g.Fix = "look at the kernel's counters for this site (nstat -az; ip -s link)"
			return g
		}
		g.Summary = fmt.Sprintf("routing refused the packet to %s, but the route is usable now (%s): it changed since the drop", dst, routeText(rt))
		g.Fix = "nothing to change now; if it recurs, watch the routes (ip monitor route)"
	}
	return g
}

func tableText(t int) string {
	if t == 0 || t == 254 {
		return ""
	}
	return " (table " + strconv.Itoa(t) + ")"
}

func tableArg(t int) string {
	if t == 0 || t == 254 {
		return ""
	}
	return " table " + strconv.Itoa(t)
}

func (d *Diagnoser) local(a netip.Addr) bool {
	if d.cfg.Facts == nil {
		return false
	}
	n, err := d.cfg.Facts.Node()
	return err == nil && containsAddrList(n.Addrs, a)
}

func containsAddrList(as []netip.Addr, a netip.Addr) bool {
	a = a.Unmap()
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// ---- unknown --------------------------------------------------------------

func (d *Diagnoser) unknownDrop(j *decode.Journey) *decode.Diagnosis {
	dr := j.Drop
	g := &decode.Diagnosis{Cause: decode.CauseUnknown}
	if dev := dr.Ifname; dev != "" {
		g.Segment = d.segmentOf(dev)
	}
	g.Add("drop", reasonOr(dr)+" at "+dr.Location+devText(dr.Ifname))
	g.Summary = "dropped (" + reasonOr(dr) + "); pathtrace knows no node setting behind this reason and site"
	g.Lack("a cause for " + reasonOr(dr) + " at " + dr.Location + ": none of pathtrace's checks applies")
	g.Fix = "read the kernel's code at " + dr.Location + " for the condition that frees the packet"
	return g
}

func (d *Diagnoser) lost(j *decode.Journey) *decode.Diagnosis {
	g := &decode.Diagnosis{Cause: decode.CauseUnknown}
	h := lastIfaceHop(j, 0)
	last := "its first hop"
	if n := len(j.Hops); n > 0 {
		last = j.Hops[n-1].Name()
	}
	if h != nil {
		g.Segment = d.segmentOf(h.Ifname)
	}
	g.Add("last seen", last)
	if j.Verdict == decode.Incomplete {
		g.Add("events lost", strconv.FormatUint(j.EventsLost, 10))
		g.Summary = "seen last at " + last + " while events were lost: its fate may be among them"
		g.Lack("the events lost in flight (raise --ring-size or --queue)")
		g.Fix = "follow again with a larger --ring-size, or a narrower selector"
		return g
	}
	g.Summary = "seen last at " + last + ", then nothing: no drop event and no later hop"
	g.Lack("where it went: it left through an interface pathtrace does not trace (--ifaces), or died where no drop event is made (--drop-hook none)")
	g.Fix = "trace more interfaces (--ifaces '*') to see where it went"
	return g
}

// ---- stall and qdisc ---------------------------------------------------------

func (d *Diagnoser) stall(j *decode.Journey) *decode.Diagnosis {
	s := j.Stall
	dev, dir, ok := strings.Cut(s.From, " ")
	if !ok || dir != "egress" || d.cfg.Facts == nil {
		return nil // a stall between hooks or at ingress is not a queue pathtrace can read
	}
	return d.qdisc(j, dev, fmt.Sprintf("held %s between %s and %s", time.Duration(s.DeltaNs).Round(time.Microsecond), s.From, s.Hop))
}

var shapers = map[string]bool{"tbf": true, "htb": true, "netem": true, "cake": true, "hfsc": true, "cbq": true, "red": true, "choke": true}

// qdisc reads the queueing disciplines on dev. stalled is "" for a drop; for a stall
// it says how long, and the diagnosis is nil unless a queue explains it.
func (d *Diagnoser) qdisc(j *decode.Journey, dev, stalled string) *decode.Diagnosis {
	g := &decode.Diagnosis{Cause: decode.CauseQdisc, Segment: d.segmentOf(dev)}
	if stalled == "" {
		g.Add("drop", reasonOr(j.Drop)+" at "+j.Drop.Location+devText(dev))
	} else {
		g.Add("stall", stalled)
	}
	facts := d.facts(g)
	if facts == nil || dev == "" {
		if dev == "" {
			g.Lack("the device: the drop names none")
		}
		if stalled != "" {
			return nil
		}
		g.Summary = "a queueing discipline dropped it"
		g.Fix = "tc -s qdisc show dev DEV: raise the limit of the qdisc that drops, or remove a shaper"
		return g
	}
	qs, err := facts.Qdiscs(dev)
	if err != nil {
		if stalled != "" {
			return nil
		}
		lack(g, "the qdiscs of "+dev, err)
		g.Summary = "a queueing discipline on " + dev + " dropped it"
		g.Fix = "tc -s qdisc show dev " + dev + ": raise the limit of the qdisc that drops, or remove a shaper"
		return g
	}
	var culprit *Qdisc
	for i := range qs {
		q := &qs[i]
		g.Add("qdisc", qdiscText(dev, q))
		// A stall is a queue holding packets: a shaper, or one with a backlog now; a
		// drop, one that counts drops too.
		if culprit == nil && (shapers[q.Kind] || q.Backlog > 0 || stalled == "" && q.Drops > 0) {
			culprit = q
		}
	}
	if culprit == nil {
		if stalled != "" {
			return nil // no queue holds anything: the delay is elsewhere
		}
		g.Summary = "a queueing discipline on " + dev + " dropped it; none of its qdiscs counts drops now"
		g.Fix = "tc -s qdisc show dev " + dev + " while it happens; the device's own queue (ip -s link show " + dev + ") may be the one"
		return g
	}
	what := "dropped it"
	if stalled != "" {
		what = stalled
	}
	g.Summary = fmt.Sprintf("the %s qdisc on %s %s", culprit.Kind, dev, what)
	if culprit.Config != "" {
		g.Summary += " (" + culprit.Config + ")"
	}
	parent := "root"
	if culprit.Parent != "" && culprit.Parent != "root" {
		parent = "parent " + culprit.Parent
	}
	switch culprit.Kind {
	case "tbf":
		g.Fix = fmt.Sprintf("it shapes %s to its rate: raise the rate or the limit (tc qdisc change dev %s %s tbf rate RATE burst BURST limit LIMIT), or remove it (tc qdisc del dev %s %s)", dev, dev, parent, dev, parent)
	case "netem":
		g.Fix = fmt.Sprintf("it emulates a bad link: remove it (tc qdisc del dev %s %s)", dev, parent)
	default:
		if shapers[culprit.Kind] {
			g.Fix = fmt.Sprintf("it shapes %s: raise its rate or queue (tc qdisc change dev %s %s %s ...), or remove it (tc qdisc del dev %s %s)", dev, dev, parent, culprit.Kind, dev, parent)
		} else {
			g.Fix = fmt.Sprintf("its queue overflows: raise its limit (tc qdisc change dev %s %s %s limit N) or the device's txqueuelen, or find what fills it", dev, parent, culprit.Kind)
		}
	}
	return g
}

func qdiscText(dev string, q *Qdisc) string {
	s := q.Kind + " " + q.Handle + " " + orRoot(q.Parent) + " on " + dev
	if q.Config != "" {
		s += ": " + q.Config
	}
	return s + fmt.Sprintf("; backlog %db %dp, dropped %d, overlimits %d, sent %d packets", q.Backlog, q.QLen, q.Drops, q.Overlimits, q.Packets)
}

func orRoot(p string) string {
	if p == "" || p == "root" {
		return "root"
	}
	return "parent " + p
}
