package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// Config is what a Diagnoser needs.
type Config struct {
	// Facts reads the node's state; nil gives diagnoses from the packets alone, each
	// saying that the node's state was not read.
	Facts Facts
	// Ifaces are the traced interfaces with their roles, for naming segments.
	Ifaces []decode.Iface
	// ICMPWindow is how far apart in time an ICMP "fragmentation needed" and the drop
	// it answers may be; 0 means 5 s.
	ICMPWindow time.Duration
}

// Diagnoser turns journeys and one-way reports whose verdict is not a success into
// diagnoses. Observe every journey first (it remembers the ICMP errors that answer
// oversized packets), then ask. It is safe for one goroutine; the Facts it reads may
// be shared (see Locked).
type Diagnoser struct {
	cfg   Config
	kinds map[string]decode.IfaceKind
	icmp  []icmpSeen // ring of recent ICMP frag-needed / packet-too-big messages
	next  int
}

type icmpSeen struct {
	to    netip.Addr // the sender it tells to send smaller packets
	mtu   uint32
	timeN uint64
	where string // the hop it was seen at
}

const icmpRing = 64

// New returns a Diagnoser.
func New(cfg Config) *Diagnoser {
	if cfg.ICMPWindow <= 0 {
		cfg.ICMPWindow = 5 * time.Second
	}
	d := &Diagnoser{cfg: cfg, kinds: map[string]decode.IfaceKind{}}
	d.SetIfaces(cfg.Ifaces)
	return d
}

// SetIfaces replaces the traced interfaces (the tracer found new ones).
func (d *Diagnoser) SetIfaces(ifs []decode.Iface) {
	clear(d.kinds)
	for _, i := range ifs {
		d.kinds[i.Name] = i.Kind
	}
}

// Observe takes every closed journey, diagnosed or not.
func (d *Diagnoser) Observe(j *decode.Journey) {
	if j.ICMPMTU == 0 || len(j.Hops) == 0 {
		return
	}
	h := &j.Hops[0]
	d.icmp[d.slot()] = icmpSeen{to: j.Flow.Dst.Addr(), mtu: j.ICMPMTU, timeN: h.TimeNs, where: h.Name()}
}

func (d *Diagnoser) slot() int {
	if len(d.icmp) < icmpRing {
		d.icmp = append(d.icmp, icmpSeen{})
		return len(d.icmp) - 1
	}
	i := d.next
	d.next = (d.next + 1) % icmpRing
	return i
}

// Success reports whether a journey's verdict is a success: it reached a pod or the
// node, or left it.
func Success(j *decode.Journey) bool {
	return j.Verdict == decode.Delivered || j.Verdict == decode.Forwarded
}

// Journey diagnoses a journey; nil when there is nothing to diagnose (a success
// without a stall or a hairpin, or tracing stopped before the packet's fate).
func (d *Diagnoser) Journey(j *decode.Journey) *decode.Diagnosis {
	if g := d.hairpin(j); g != nil {
		return g
	}
	switch j.Verdict {
	case decode.Dropped:
		return d.dropped(j)
	case decode.Lost, decode.Incomplete:
		return d.lost(j)
	case decode.Delivered, decode.Forwarded:
		if j.Stall != nil {
			return d.stall(j)
		}
	}
	return nil
}

// Diagnose fills the Diagnosis of each journey of a batch, observing them all first
// (an ICMP error may close in the same batch as the packet it answers).
func (d *Diagnoser) Diagnose(js []*decode.Journey) {
	for _, j := range js {
		d.Observe(j)
	}
	for _, j := range js {
		j.Diagnosis = d.Journey(j)
	}
}

// facts runs fn with the node's state, or records that there is none.
func (d *Diagnoser) facts(g *decode.Diagnosis) Facts {
	if d.cfg.Facts == nil {
		g.Lack("the node's state (links, routes, sysctls) was not read: no reader in this process")
	}
	return d.cfg.Facts
}

// lack records a read that failed.
func lack(g *decode.Diagnosis, what string, err error) {
	g.Lack(what + ": " + err.Error())
}

// dropped: the kernel's reason and location decide which evidence to read.
func (d *Diagnoser) dropped(j *decode.Journey) *decode.Diagnosis {
	dr := j.Drop
	fn := decode.SiteFunc(dr.Location)
	inPod := d.inPod(j)
	switch {
	case socketTeardown(j, dr.Reason, fn):
		return nil // delivered, then freed as its socket closed: not a fault
	case dr.Reason == "NO_SOCKET":
		return d.closedPort(j, inPod)
	case strings.Contains(dr.Cause, "conntrack table full") || dr.Reason == "NF_CONNTRACK" && d.ctFull():
		return d.conntrackFull(j)
	case dr.Cause != "":
		return d.conntrackOther(j)
	case dr.ByNetfilter():
		return d.policy(j)
	case inPod:
		return d.inPodDrop(j)
	case dr.Reason == "IP_RPFILTER":
		return d.rpFilter(j)
	case isMTUDrop(dr.Reason, fn):
		return d.mtu(j)
	case isQdiscDrop(dr.Reason, fn):
		return d.qdisc(j, dr.Ifname, "")
	case isNeighDrop(dr.Reason, fn):
		return d.neighbour(j)
	case isRouteDrop(dr.Reason, fn):
		return d.noRoute(j)
	case strings.HasPrefix(fn, "kfree_skb_list") || fn == "__dev_xmit_skb":
		// 5.10 frees a qdisc's drops here without a reason: a qdisc on the device
		// that counts drops confirms it.
		if d.qdiscDrops(dr.Ifname) {
			return d.qdisc(j, dr.Ifname, "")
		}
	}
	return d.unknownDrop(j)
}

// qdiscDrops reports whether a qdisc on dev counts drops.
func (d *Diagnoser) qdiscDrops(dev string) bool {
	if d.cfg.Facts == nil || dev == "" {
		return false
	}
	qs, err := d.cfg.Facts.Qdiscs(dev)
	if err != nil {
		return false
	}
	for _, q := range qs {
		if q.Drops > 0 {
			return true
		}
	}
	return false
}

// socketTeardown: the packet reached its socket, and the socket's end freed it (its
// queues purged on close, a segment for a connection already closed). Healthy
// connections end this way.
func socketTeardown(j *decode.Journey, reason, fn string) bool {
	switch reason {
	case "QUEUE_PURGE", "SOCKET_CLOSE", "TCP_CLOSE", "TCP_OLD_DATA", "TCP_OLD_SEQUENCE", "TCP_OLD_ACK", "TCP_INVALID_SEQUENCE", "TCP_RESET":
		return true
	}
	switch fn {
	case "sk_stream_kill_queues", "skb_rbtree_purge", "skb_queue_purge", "skb_queue_purge_reason", "inet_csk_destroy_sock", "tcp_close", "__tcp_close", "tcp_done", "tcp_v4_destroy_sock", "tcp_v6_destroy_sock", "tcp_write_queue_purge":
		return true
	}
	// No socket for a TCP segment that is not a SYN: its connection is gone (a FIN
	// or an ACK that arrived after the close).
	return reason == "NO_SOCKET" && j.Flow.Proto == decode.ProtoTCP && j.TCPFlags&decode.TCPSyn == 0
}

func isMTUDrop(reason, fn string) bool {
	switch reason {
	case "PKT_TOO_BIG", "IP_FRAGFAILS", "FRAG_TOO_FAR", "FRAG_REASM_TIMEOUT":
		return true
	}
	switch fn {
	case "ip_fragment", "ip_do_fragment", "ip6_fragment", "ip_forward_too_big", "skb_tunnel_check_pmtu":
		return true
	}
	return false
}

func isQdiscDrop(reason, fn string) bool {
	if strings.HasPrefix(reason, "QDISC_") {
		return true
	}
	return strings.HasSuffix(fn, "_enqueue") || strings.Contains(fn, "qdisc_drop")
}

func isNeighDrop(reason, fn string) bool {
	if strings.HasPrefix(reason, "NEIGH_") || reason == "VXLAN_NO_REMOTE" || reason == "NO_TX_TARGET" {
		return true
	}
	return strings.HasPrefix(fn, "neigh_") || strings.HasPrefix(fn, "__neigh_") || strings.HasPrefix(fn, "vxlan_xmit")
}

func isRouteDrop(reason, fn string) bool {
	switch reason {
	case "IP_NOROUTE", "IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS", "IPV6_BAD_EXTHDR", "IP_INVALID_DEST", "NOT_SPECIFIED", "":
		switch fn {
		case "ip_error", "ip6_pkt_discard", "ip6_pkt_prohibit", "dst_discard", "dst_discard_out", "ip_forward", "ip6_forward":
			return true
		}
		return reason != "NOT_SPECIFIED" && reason != ""
	}
	return false
}

// segmentOf names the part of the path a device is.
func (d *Diagnoser) segmentOf(dev string) string {
	switch d.kinds[dev] {
	case decode.KindPod:
		return decode.SegVeth
	case decode.KindBridge:
		return decode.SegBridge
	case decode.KindOverlay:
		return decode.SegTunnel
	case decode.KindUplink:
		return decode.SegUplink
	}
	return ""
}

// lastIfaceHop is the last hop on an interface (not a netfilter hook) before t, nil
// when none.
func lastIfaceHop(j *decode.Journey, beforeNs uint64) *decode.Hop {
	for i := len(j.Hops) - 1; i >= 0; i-- {
		h := &j.Hops[i]
		if h.Kind != decode.KindNetfilter && (beforeNs == 0 || h.TimeNs <= beforeNs) {
			return h
		}
	}
	return nil
}

// inPod: the packet was handed to a pod (egress on its veth) and died after that, in
// the pod's own stack.
func (d *Diagnoser) inPod(j *decode.Journey) bool {
	h := lastIfaceHop(j, j.Drop.TimeNs)
	return h != nil && h.Kind == decode.KindPod && h.Dir == decode.Egress
}

// lastFlow is the packet's flow at its last hop (after any NAT on the node).
func lastFlow(j *decode.Journey) decode.Flow {
	if n := len(j.Hops); n > 0 {
		return j.Hops[n-1].Flow
	}
	return j.Flow
}

func (d *Diagnoser) closedPort(j *decode.Journey, inPod bool) *decode.Diagnosis {
	f := lastFlow(j)
	g := &decode.Diagnosis{Cause: decode.CauseClosedPort, Segment: decode.SegApp}
	where := "the node"
	if inPod {
		h := lastIfaceHop(j, j.Drop.TimeNs)
		where = "the pod behind " + h.Ifname
	}
	dst := f.Endpoint(f.Dst)
	g.Summary = fmt.Sprintf("reached %s, where nothing listens on %s %s: not a network fault", where, decode.ProtoName(f.Proto), dst)
	g.Add("drop", j.Drop.ReasonText()+" at "+j.Drop.Location+devText(j.Drop.Ifname))
	g.Add("destination", decode.ProtoName(f.Proto)+" "+dst+namesText(j, false))
	if f.Proto == decode.ProtoTCP {
		g.Add("answer", "the kernel answers such a SYN with a RST (connection refused)")
	} else {
		g.Add("answer", "the kernel answers such a datagram with ICMP port unreachable")
	}
	g.Fix = fmt.Sprintf("start the server on %s %s in %s, or point the client (or the Service's targetPort) at the port it listens on", decode.ProtoName(f.Proto), dst, where)
	return g
}

func (d *Diagnoser) inPodDrop(j *decode.Journey) *decode.Diagnosis {
	h := lastIfaceHop(j, j.Drop.TimeNs)
	g := &decode.Diagnosis{Cause: decode.CauseInPod, Segment: decode.SegPod}
	g.Summary = fmt.Sprintf("handed to the pod through %s, then dropped by the pod's own network stack (%s)", h.Ifname, reasonOr(j.Drop))
	g.Add("drop", j.Drop.ReasonText()+" at "+j.Drop.Location+devText(j.Drop.Ifname))
	g.Add("handed over", h.Name())
	g.Lack("the pod's namespace is not the traced one: its sysctls, routes and rules were not read")
	g.Fix = "look inside the pod's network namespace (nsenter -n -t PID): its rp_filter, routes, firewall and sockets; the node delivered the packet"
	return g
}

func reasonOr(dr *decode.Drop) string {
	if r := dr.ReasonText(); r != "" {
		return r
	}
	return "no reason given, at " + dr.Location
}

func devText(dev string) string {
	if dev == "" {
		return ""
	}
	return " (dev " + dev + ")"
}

func namesText(j *decode.Journey, src bool) string {
	if j.Names == nil {
		return ""
	}
	n := j.Names.Dst
	if src {
		n = j.Names.Src
	}
	if n.Name == "" {
		return ""
	}
	return " (" + n.Kind + " " + n.Name + ")"
}

func (d *Diagnoser) ctFull() bool {
	if d.cfg.Facts == nil {
		return false
	}
	c, err := d.cfg.Facts.Conntrack()
	return err == nil && c.Max > 0 && c.Count >= c.Max
}

func (d *Diagnoser) conntrackFull(j *decode.Journey) *decode.Diagnosis {
	g := &decode.Diagnosis{Cause: decode.CauseConntrackFull, Segment: decode.SegNetfilter}
	g.Summary = "conntrack's table is full: new connections are dropped where conntrack creates their entry"
	if j.Drop.Cause != "" {
		g.Add("drop", j.Drop.Cause+" in "+orNone(j.Drop.Hook))
	} else {
		g.Add("drop", reasonOr(j.Drop)+" in "+orNone(j.Drop.Hook))
	}
	f := d.facts(g)
	if f == nil {
		g.Fix = "raise net.netfilter.nf_conntrack_max (sysctl -w) on the node"
		return g
	}
	c, err := f.Conntrack()
	if err != nil {
		lack(g, "conntrack counters", err)
		g.Fix = "raise net.netfilter.nf_conntrack_max (sysctl -w) on the node"
		return g
	}
	g.Add("nf_conntrack_count", strconv.FormatUint(c.Count, 10))
	g.Add("nf_conntrack_max", strconv.FormatUint(c.Max, 10))
	g.Add("insert_failed", strconv.FormatUint(c.InsertFailed, 10))
	g.Add("early_drop", strconv.FormatUint(c.EarlyDrop, 10))
	g.Add("drop", strconv.FormatUint(c.Drop, 10))
	if c.Buckets > 0 {
		g.Add("nf_conntrack_buckets", strconv.FormatUint(c.Buckets, 10))
	}
	want := max(2*c.Max, c.Count*2, 1024)
	fix := fmt.Sprintf("sysctl -w net.netfilter.nf_conntrack_max=%d", want)
	if c.EntryBytes > 0 {
		extra := (want - c.Max) * uint64(c.EntryBytes)
		fix += fmt.Sprintf(" (each entry takes %d bytes of kernel memory: %s more when full)", c.EntryBytes, bytesText(extra))
	}
	if !c.MaxWritable {
		fix += "; it is read-only in this network namespace: set it in the node's initial namespace (kube-proxy's --conntrack-max-per-core does)"
	}
	fix += "; or find what opens so many connections (conntrack -L | sort by source)"
	g.Fix = fix
	return g
}

func bytesText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return strconv.FormatUint(n, 10) + " B"
}

func orNone(s string) string {
	if s == "" {
		return "(no hook seen)"
	}
	return s
}

func (d *Diagnoser) conntrackOther(j *decode.Journey) *decode.Diagnosis {
	g := &decode.Diagnosis{Cause: decode.CauseConntrack, Segment: decode.SegNetfilter}
	g.Summary = "conntrack refused the packet: " + j.Drop.Cause
	g.Add("drop", j.Drop.Cause+" in "+orNone(j.Drop.Hook))
	if f := d.facts(g); f != nil {
		if c, err := f.Conntrack(); err == nil {
			g.Add("insert_failed", strconv.FormatUint(c.InsertFailed, 10))
			g.Add("nf_conntrack_count", fmt.Sprintf("%d of %d", c.Count, c.Max))
		} else {
			lack(g, "conntrack counters", err)
		}
	}
	g.Fix = "an insert that fails is a clash of two packets of one new flow (UDP DNS over two paths, NAT port reuse): use the kernel's clash resolution (5.x+), or serialize the flow's first packets (single-request-reopen for DNS)"
	return g
}

// containsAddr reports whether a is in one of ps.
func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}
