package decode

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// IfaceKind is the role an interface plays on a node's packet path.
type IfaceKind uint8

// Interface roles. They also name the hop classes of later metrics.
const (
	KindUnknown   IfaceKind = iota
	KindPod                 // host side of a pod's veth
	KindBridge              // the CNI bridge (cni0)
	KindOverlay             // a tunnel device (flannel.1, any VXLAN or Geneve)
	KindUplink              // the node's underlay NIC (eth0)
	KindNetfilter           // not an interface: a netfilter hook
)

func (k IfaceKind) String() string {
	switch k {
	case KindPod:
		return "pod"
	case KindBridge:
		return "bridge"
	case KindOverlay:
		return "overlay"
	case KindUplink:
		return "uplink"
	case KindNetfilter:
		return "netfilter"
	}
	return "unknown"
}

// HookNames are the netfilter hooks by number (NF_INET_*).
var HookNames = [...]string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// HookName names a hook number.
func HookName(h uint8) string {
	if int(h) < len(HookNames) {
		return HookNames[h]
	}
	return fmt.Sprintf("HOOK%d", h)
}

var nfPosNames = [...]string{NFFirst: "first", NFLast: "last", NFEntry: "entry"}

// CT is a packet's conntrack entry as a netfilter hook saw it.
type CT struct {
	State  string // new, established, related, untracked, invalid (no entry after conntrack ran)
	Reply  bool   // the packet goes in the reply direction of the connection
	Status uint32 // IPS_* bits
	Mark   uint32
	Orig   Flow // the connection's original tuple
	Answer Flow // its reply tuple (what NAT expects back)
}

// NAT is an address translation seen between two hops.
type NAT struct {
	Type string // dnat, snat, undnat (a reply given back its original source), unsnat, or snat+dnat
	From string
	To   string
}

var ctStates = [...]string{0: "established", 1: "related", 2: "new", 3: "established", 4: "related", 7: "untracked"}

func ctOf(ev *Event) *CT {
	if !ev.HasCT {
		return nil
	}
	if ev.CTInfo == CTNone {
		// Before conntrack ran (first priority of PREROUTING and OUTPUT) no entry is
		// expected; after it, none means conntrack found the packet invalid.
		if ev.NFPos != NFLast && (ev.Hook == 0 || ev.Hook == 3) || ev.Kind == KindDrop {
			return nil
		}
		return &CT{State: "invalid"}
	}
	c := &CT{Status: ev.CTStatus, Mark: ev.CTMark, Reply: ev.CTInfo == 3 || ev.CTInfo == 4}
	if int(ev.CTInfo) < len(ctStates) {
		c.State = ctStates[ev.CTInfo]
	}
	c.Orig, _ = ev.CTOrig.Flow()
	c.Answer, _ = ev.CTReply.Flow()
	return c
}

// Iface is a traced interface of the node.
type Iface struct {
	Index     int
	Name      string
	Kind      IfaceKind
	PeerNetns uint32 // a pod's veth: the inode of the pod's network namespace; 0 if unknown
	// Others names the programs of another datapath (a CNI's tc or tcx programs) that
	// run after pathtrace's on ingress [0] and egress [1]. They may redirect a packet
	// past every later hook (bpf_redirect_peer, bpf_redirect_neigh): a packet last seen
	// there is then Redirected, not Lost.
	Others [2]string
	// Before names those that run before pathtrace's on ingress: what they redirect
	// there never reaches pathtrace's hook.
	Before string
}

// Verdict is what became of a packet.
type Verdict uint8

// Verdicts.
const (
	Unfinished Verdict = iota // tracing stopped before the packet's fate was known
	Delivered                 // handed to a pod, or to the node's own stack
	Forwarded                 // left the node through the uplink or a tunnel
	Dropped                   // kfree_skb freed it
	Lost                      // seen, then nothing within the timeout and no drop
	// Incomplete: as Lost, but events were lost while the packet was in flight
	// (Assembler.EventsLost), so its fate may be among them.
	Incomplete
	// Redirected: last seen at a tc hook where another datapath's program runs after
	// pathtrace's, then no further hop and no drop: that program took it past the
	// hooks pathtrace sits on (Journey.HandedTo names it).
	Redirected
	// New verdicts go here, at the end: the numbers are not a format, but
	// exporter.FromJSON reads names back up to the last.
)

func (v Verdict) String() string {
	switch v {
	case Delivered:
		return "delivered"
	case Forwarded:
		return "forwarded"
	case Dropped:
		return "dropped"
	case Lost:
		return "lost"
	case Incomplete:
		return "incomplete"
	case Redirected:
		return "redirected"
	}
	return "unfinished"
}

// Hop is one sighting of a packet on an interface.
type Hop struct {
	Node    string
	Ifindex uint32
	Ifname  string
	Kind    IfaceKind
	Dir     Dir
	TimeNs  uint64 // CLOCK_MONOTONIC of the node
	Len     uint32 // skb->len at this hop
	Flow    Flow   // the (inner) flow as seen here; NAT may change it between hops
	Outer   *Outer // the (outermost) tunnel header when the packet is encapsulated here
	TTL     uint8
	// Netfilter hops (Kind KindNetfilter): the hook, the priority ("first", "last",
	// or "entry" for the kprobe fallback), the devices (Ifname is the input one) and
	// the conntrack entry.
	Hook      string
	Prio      string
	OutIfname string
	CT        *CT
	NAT       *NAT // the translation the packet got since the previous hop
	// L2 says what Data starts at: the Ethernet header, else the IP header.
	L2 bool
	// Data is the packet as captured at this hop (at most SnapFull bytes, SnapMax unless
	// the tracer sends whole packets; Len has its full length), with Config.KeepBytes
	// only, cut short or left out once the journey's hops kept Config.MaxBytes. It
	// lives in the journey's storage: copy it to keep it after Release.
	Data []byte
}

// Name is "ifname dir", as in "cni0 ingress", or "hook priority" for a netfilter hop,
// as in "FORWARD first".
func (h *Hop) Name() string {
	if h.Kind == KindNetfilter {
		return h.Hook + " " + h.Prio
	}
	return h.Ifname + " " + h.Dir.String()
}

// Drop is the kernel's account of a packet's death.
type Drop struct {
	Reason string // as the running kernel names it, e.g. NETFILTER_DROP; "" when unknown
	// ReasonSource says who named Reason: ReasonKernel, or ReasonInferred from the
	// drop site (kernels before 5.17, or NOT_SPECIFIED), then from InferredFrom.
	ReasonSource string
	InferredFrom string
	Code         uint32
	Location     string // symbol+0xoff
	Addr         uint64
	Ifname       string // skb->dev at the time, may be empty
	// Flow is the packet's flow as kfree_skb saw it: after any NAT it got on the way
	// (a DNAT by br_netfilter shows here before any later hop could).
	Flow   Flow
	Netns  uint32
	TimeNs uint64
	// Hook is the netfilter hook the packet was in or had just left when it died, from
	// the last netfilter hop before the drop; "" when none was seen.
	Hook string
	// Rule is the netfilter rule (or chain policy) that dropped it, when the drop was
	// netfilter's and the ruleset could be read; Cause is conntrack's own reason
	// (table full, insert failed) when its counters say so.
	Rule  *RuleMatch
	Cause string
	// The packet as kfree_skb saw it, with Config.KeepBytes only: Data starts at the
	// Ethernet header when L2 is set, else at the IP header; Len is skb->len. Data
	// lives in the journey's storage, as a Hop's.
	Len  uint32
	L2   bool
	Data []byte
}

// ByNetfilter reports whether netfilter dropped the packet: the kernel says so (or it
// was inferred from a netfilter drop site), or, with no reason and no symbol to tell
// the site by, the packet died inside a netfilter hook. A drop with no reason at a
// named site that is not netfilter's (ip_fragment after POSTROUTING) is not.
func (d *Drop) ByNetfilter() bool {
	if d.Reason == "NETFILTER_DROP" {
		return true
	}
	return d.Reason == "" && d.Hook != "" && (d.Location == "" || strings.HasPrefix(d.Location, "0x"))
}

// Stall is the largest hop-to-hop delay above the stall threshold.
type Stall struct {
	From    string // hop before the delay, "flannel.1 egress"
	Hop     string // hop after it, "eth0 egress"
	DeltaNs uint64
}

// Journey is one packet's path through a node.
type Journey struct {
	ID       uint64
	Node     string
	Flow     Flow // as first seen
	TCPFlags uint8
	IPLen    uint16
	// DF is the IPv4 don't-fragment bit as first seen (IPv6: always true, routers never
	// fragment it). ICMPType and ICMPCode are the ICMP header's, for ICMP packets.
	DF       bool
	ICMPType uint8
	ICMPCode uint8
	// ICMPMTU is the next-hop MTU an ICMP "fragmentation needed" (IPv4 type 3 code 4)
	// or "packet too big" (ICMPv6 type 2) message carries; 0 otherwise.
	ICMPMTU uint32
	// TCP only: the segment's sequence number and the sequence space it takes (payload
	// bytes, plus one for SYN and one for FIN), for telling retransmissions.
	Seq     uint32
	SegLen  uint32
	Hops    []Hop
	Drop    *Drop
	Verdict Verdict
	// Where says where the verdict happened: the interface that delivered or
	// forwarded the packet, or the last hop before it was lost or dropped.
	Where string
	// HandedTo names the other datapath's programs a Redirected packet was last handed
	// to (Iface.Others of its last hop).
	HandedTo string
	Stall    *Stall
	// CopyDrop is the death of another copy of the packet (the bridge flooded it to
	// several pods) while this one was delivered.
	CopyDrop *Drop
	// Names are the Kubernetes names of its ends, when a Namer gave them.
	Names *Names
	// Cut says why the assembler closed the journey while events of its packet ID still
	// came: CutHopCap (it reached Config.MaxHops) or CutCollision (an event started the
	// path over: another packet with the same ID); "" when it was not cut.
	Cut string
	// Diagnosis is why the packet did not make it (or stalled), and what to change:
	// set by a Diagnoser after the journey closed; nil on success or when none ran.
	Diagnosis *Diagnosis
	// EventsLost counts the events the assembler was told were lost while the journey
	// was in flight (Assembler.EventsLost): the node's or its follower's, not
	// necessarily its own.
	EventsLost uint64

	lastNs     uint64
	prev, next *Journey // the assembler's open journeys, by lastNs
	outers     []Outer  // storage for the hops' Outer, reused with the journey
	data       []byte   // storage for the packet bytes (Config.KeepBytes), reused too
	kept       int      // bytes its hops keep, against Config.MaxBytes
}

// Why a journey was cut (Journey.Cut).
const (
	CutHopCap    = "hop_cap"
	CutCollision = "collision"
)

// DefaultMaxHops is Config.MaxHops when it is 0. A packet's path through a node takes
// about 4 interface hops, up to 15 or so with the netfilter hooks (the lab's forwarded
// SYN: 4 interfaces, 10 hooks on the way to the tunnel and the uplink); two nodes'
// paths together stay under 40. What goes beyond is not one packet: identical
// datagrams that share an ID, a routing loop, a bridge flooding one packet to many
// pods.
const DefaultMaxHops = 64

// DefaultMaxBytes is Config.MaxBytes when it is 0: at the default snapshot (SnapMax)
// no journey reaches it, as MaxHops comes first; with whole packets it holds 28 hops
// of 9,000-byte jumbo frames (a node's path with its netfilter hooks is about 15), or
// DefaultMaxHops of 1,500-byte ones.
const DefaultMaxBytes = 256 << 10

// Config is what the assembler needs to know about the node.
type Config struct {
	Node       string
	Timeout    time.Duration // a journey with no event for this long is closed
	Stall      time.Duration // hop-to-hop delays above this are stalls; 0 disables
	VXLANPorts []uint16      // UDP ports of VXLAN; nil means DefaultVXLANPorts
	// GenevePorts are the UDP ports of Geneve; nil means DefaultGenevePorts.
	GenevePorts []uint16
	Ifaces      []Iface      // the traced interfaces, by index
	LocalAddrs  []netip.Addr // addresses of the node: packets to them end in its stack
	Reasons     DropReasons  // nil: the kernel reports no drop reasons
	Symbols     *Symbols     // nil: locations in hex
	MaxOpen     int          // bound on journeys in flight; 0 means 65536
	MaxHops     int          // bound on the hops of one journey; 0 means DefaultMaxHops
	// KeepBytes keeps each hop's captured bytes (Hop.Data, Drop.Data) for a packet
	// capture. Off, journeys carry no packet bytes and cost nothing more.
	KeepBytes bool
	// MaxBytes bounds the bytes one journey's hops keep with KeepBytes; 0 means
	// DefaultMaxBytes. The hop that reaches it keeps what is left, those after it
	// none (Stats.DataCut). The drop keeps its bytes whatever the hops took.
	MaxBytes int
}

// Stats counts what the assembler did, including what it could not use.
type Stats struct {
	Events     uint64 // events added
	Unparsable uint64 // events whose bytes were not an IP packet
	NotDrops   uint64 // kfree_skb events whose reason says consumed
	Evicted    uint64 // journeys closed early because MaxOpen was reached
	Journeys   uint64 // journeys closed
	// Journeys cut (and closed) because their packet ID kept coming: HopCapped at
	// MaxHops hops, Collisions when an event repeated the journey's first hop, which
	// the same packet cannot do (see the package documentation).
	HopCapped  uint64
	Collisions uint64
	DataCut    uint64 // hops whose bytes (KeepBytes) were cut short or left out at MaxBytes
	EventsLost uint64 // events it was told were lost (EventsLost)
	Incomplete uint64 // journeys judged Incomplete rather than Lost
}

// lossMark is a report of lost events: n of them, the last at ns.
type lossMark struct{ ns, n uint64 }

// Assembler groups events into journeys by packet identity. It is not safe for
// concurrent use; one goroutine feeds it.
type Assembler struct {
	cfg     Config
	tunnels Tunnels
	ifaces  map[uint32]Iface
	local   map[netip.Addr]bool
	open    map[uint64]*Journey
	oldest  *Journey // the open journeys as a list in lastNs order, oldest first
	newest  *Journey
	stats   Stats
	timeNs  uint64
	maxOpen int
	maxHops int
	maxData int
	pkt     Packet // Add's scratch: a Packet points into itself, so a local one escapes
	free    []*Journey
	// The latest reports of lost events, for the journeys that begin after a report
	// with events from before it; lossNs is the latest of their times.
	losses [8]lossMark
	nLoss  int
	lossNs uint64
}

// NewAssembler returns an assembler for one node.
func NewAssembler(cfg Config) *Assembler {
	if len(cfg.VXLANPorts) == 0 {
		cfg.VXLANPorts = DefaultVXLANPorts
	}
	if len(cfg.GenevePorts) == 0 {
		cfg.GenevePorts = DefaultGenevePorts
	}
	a := &Assembler{
		cfg:     cfg,
		tunnels: Tunnels{VXLANPorts: cfg.VXLANPorts, GenevePorts: cfg.GenevePorts},
		ifaces:  make(map[uint32]Iface, len(cfg.Ifaces)),
		local:   make(map[netip.Addr]bool, len(cfg.LocalAddrs)),
		open:    make(map[uint64]*Journey),
		maxOpen: cfg.MaxOpen,
	}
	if a.maxOpen <= 0 {
		a.maxOpen = 65536
	}
	if a.maxHops = cfg.MaxHops; a.maxHops <= 0 {
		a.maxHops = DefaultMaxHops
	}
	if a.maxData = cfg.MaxBytes; a.maxData <= 0 {
		a.maxData = DefaultMaxBytes
	}
	for _, i := range cfg.Ifaces {
		a.ifaces[uint32(i.Index)] = i
	}
	for _, ad := range cfg.LocalAddrs {
		a.local[ad.Unmap()] = true
	}
	return a
}

// SetIfaces replaces the traced interfaces (pods came and went), for the events to come.
func (a *Assembler) SetIfaces(ifaces []Iface) {
	clear(a.ifaces)
	for _, i := range ifaces {
		a.ifaces[uint32(i.Index)] = i
	}
}

// Stats returns the counters so far.
func (a *Assembler) Stats() Stats { return a.stats }

// Open returns the number of journeys in flight.
func (a *Assembler) Open() int { return len(a.open) }

// Add files one event into its journey. Journeys it closed are returned: those evicted
// to stay within MaxOpen, and one cut because this event could not be part of it
// (Journey.Cut).
func (a *Assembler) Add(ev *Event) []*Journey {
	a.stats.Events++
	p := &a.pkt
	if err := a.tunnels.Parse(ev.Packet(), ev.L2, p); err != nil {
		a.stats.Unparsable++
		return nil
	}
	if ev.Kind == KindDrop && a.cfg.Reasons != nil && a.cfg.Reasons.NotADrop(ev.Reason) {
		a.stats.NotDrops++
		return nil
	}
	var evicted []*Journey
	j := a.open[p.ID]
	if j != nil && ev.Kind != KindDrop {
		if cut := a.cutFor(j, ev, p); cut != "" {
			evicted = a.cut(j, cut, ev.TimeNs)
			j = nil
		}
	}
	if j == nil {
		if len(a.open) >= a.maxOpen {
			evicted = append(evicted, a.evictOldest(max(a.timeNs, ev.TimeNs))...)
		}
		j = a.newJourney()
		j.ID, j.Node, j.Flow, j.TCPFlags, j.IPLen, j.lastNs = p.ID, a.cfg.Node, p.Flow, p.TCPFlags, p.IPLen, ev.TimeNs
		j.DF = p.DF || p.Flow.Src.Addr().Is6()
		j.ICMPType, j.ICMPCode, j.ICMPMTU = 0, 0, 0
		if p.Flow.Proto == ProtoICMP || p.Flow.Proto == ProtoICMPv6 {
			j.ICMPType, j.ICMPCode = p.ICMPType, p.ICMPCode
			switch {
			case p.Flow.Proto == ProtoICMP && p.ICMPType == 3 && p.ICMPCode == 4:
				j.ICMPMTU = uint32(p.ICMPSeq) // bytes 6-7: the next-hop MTU
			case p.Flow.Proto == ProtoICMPv6 && p.ICMPType == 2:
				j.ICMPMTU = uint32(p.ICMPID)<<16 | uint32(p.ICMPSeq) // bytes 4-7
			}
		}
		if p.Flow.Proto == ProtoTCP {
			j.Seq, j.SegLen = p.Seq, uint32(p.Payload)+uint32(p.TCPFlags&TCPSyn)>>1+uint32(p.TCPFlags&TCPFin)
		}
		if a.nLoss > 0 && ev.TimeNs <= a.lossNs {
			j.EventsLost = a.lostSince(ev.TimeNs)
		}
		a.open[p.ID] = j
		a.link(j)
	} else if ev.TimeNs > j.lastNs {
		j.lastNs = ev.TimeNs
		a.unlink(j)
		a.link(j)
	}
	switch ev.Kind {
	case KindHop:
		h := Hop{Node: a.cfg.Node, Ifindex: ev.Ifindex, Dir: ev.Dir, TimeNs: ev.TimeNs,
			Len: ev.Len, Flow: p.Flow, TTL: p.TTL, L2: ev.L2}
		if a.cfg.KeepBytes {
			h.Data = a.keepData(j, ev.Packet(), false)
		}
		if p.Outer != nil {
			h.Outer = j.keepOuter(*p.Outer)
		}
		if i, ok := a.ifaces[ev.Ifindex]; ok {
			h.Ifname, h.Kind = i.Name, i.Kind
		} else {
			h.Ifname = ev.IfnameString()
			if h.Ifname == "" {
				h.Ifname = fmt.Sprintf("if%d", ev.Ifindex)
			}
		}
		j.Hops = append(j.Hops, h)
	case KindNF:
		h := Hop{Node: a.cfg.Node, Kind: KindNetfilter, Ifindex: ev.Ifindex, Dir: NoDir, TimeNs: ev.TimeNs,
			Len: ev.Len, Flow: p.Flow, TTL: p.TTL, Hook: HookName(ev.Hook),
			Ifname: ev.IfnameString(), OutIfname: ev.OutIfnameString(), CT: ctOf(ev), L2: ev.L2}
		if a.cfg.KeepBytes {
			h.Data = a.keepData(j, ev.Packet(), false)
		}
		if int(ev.NFPos) < len(nfPosNames) {
			h.Prio = nfPosNames[ev.NFPos]
		}
		j.Hops = append(j.Hops, h)
	case KindDrop:
		d := &Drop{Code: ev.Reason, Addr: ev.Location, Ifname: ev.IfnameString(),
			Netns: ev.Netns, TimeNs: ev.TimeNs, Location: a.cfg.Symbols.Symbolize(ev.Location), Flow: p.Flow}
		if a.cfg.Reasons != nil {
			d.Reason, d.ReasonSource = a.cfg.Reasons.Name(ev.Reason), ReasonKernel
		}
		if d.Reason == "" || d.Reason == "NOT_SPECIFIED" {
			if r, fn, ok := InferReason(d.Location); ok {
				d.Reason, d.ReasonSource, d.InferredFrom = r, ReasonInferred, fn
			}
		}
		if j.Drop == nil {
			d.Len, d.L2 = ev.Len, ev.L2
			if a.cfg.KeepBytes {
				d.Data = a.keepData(j, ev.Packet(), true)
			}
			j.Drop = d
		}
	}
	if ev.TimeNs > a.timeNs {
		a.timeNs = ev.TimeNs
	}
	return evicted
}

// EventsLost tells the assembler that n events meant for it were lost (the kernel's
// ring buffer or a queue on the way was full), the last of them at nowNs
// (CLOCK_MONOTONIC; the time of the report when the loss's own is not known). Any
// journey in flight then may have lost its next hop or its drop among them: those open
// that began by nowNs, and those that begin later with an event from before nowNs
// (still queued when the loss was reported). Each adds n to its Journey.EventsLost,
// and one that would be judged Lost is judged Incomplete instead. Report the losses
// since the previous report before each Expire and Flush, so that no journey they
// touched is judged first; each report walks the open journeys, so report once a
// tick, not once an event.
func (a *Assembler) EventsLost(n, nowNs uint64) {
	if n == 0 {
		return
	}
	a.stats.EventsLost += n
	for j := a.newest; j != nil; j = j.prev {
		if j.firstNs() <= nowNs {
			j.EventsLost += n
		}
	}
	// Kept for the journeys still to open; reports within a timeout of each other
	// make one, so that a few cover what a queue can hold back.
	if k := a.nLoss - 1; k >= 0 && nowNs >= a.losses[k%len(a.losses)].ns &&
		nowNs-a.losses[k%len(a.losses)].ns <= uint64(a.cfg.Timeout) {
		m := &a.losses[k%len(a.losses)]
		m.ns, m.n = nowNs, m.n+n
	} else {
		a.losses[a.nLoss%len(a.losses)] = lossMark{ns: nowNs, n: n}
		a.nLoss++
	}
	a.lossNs = max(a.lossNs, nowNs)
}

// lostSince sums the reported losses at or after firstNs, as far as they are kept.
func (a *Assembler) lostSince(firstNs uint64) uint64 {
	var n uint64
	for i := max(a.nLoss-len(a.losses), 0); i < a.nLoss; i++ {
		if m := a.losses[i%len(a.losses)]; m.ns >= firstNs {
			n += m.n
		}
	}
	return n
}

// cutFor says whether the hop ev must not join j, its packet ID's open journey: j has
// MaxHops hops already, or ev repeats j's first hop, which a packet revisits only by a
// route that takes a TTL from it (a routing loop). Another packet with the same ID
// (identical datagrams, a TCP retransmission without new identification or timestamp)
// starts its path over instead.
func (a *Assembler) cutFor(j *Journey, ev *Event, p *Packet) string {
	if len(j.Hops) >= a.maxHops {
		return CutHopCap
	}
	if len(j.Hops) == 0 {
		return ""
	}
	f := &j.Hops[0] // the first in arrival order: the hops are sorted when the journey closes
	if ev.TimeNs <= f.TimeNs || p.TTL < f.TTL || ev.Ifindex != f.Ifindex || (p.Outer != nil) != (f.Outer != nil) {
		return ""
	}
	switch ev.Kind {
	case KindHop:
		if f.Kind != KindNetfilter && ev.Dir == f.Dir {
			return CutCollision
		}
	case KindNF:
		if f.Kind == KindNetfilter && HookName(ev.Hook) == f.Hook && int(ev.NFPos) < len(nfPosNames) &&
			nfPosNames[ev.NFPos] == f.Prio && ev.OutIfnameString() == f.OutIfname {
			return CutCollision
		}
	}
	return ""
}

// cut closes j before an event that cannot join it. Had its timeout run out by then,
// that is an expiry Expire had not come to yet, not a cut.
func (a *Assembler) cut(j *Journey, why string, nowNs uint64) []*Journey {
	if nowNs >= j.lastNs && nowNs-j.lastNs >= uint64(a.cfg.Timeout) {
		a.close(j, true)
		return []*Journey{j}
	}
	if why == CutHopCap {
		a.stats.HopCapped++
	} else {
		a.stats.Collisions++
	}
	j.Cut = why
	a.close(j, false)
	return []*Journey{j}
}

// link inserts j into the list of open journeys by its lastNs, after those with the
// same. Events come nearly in time order, so the walk from the newest end is short.
func (a *Assembler) link(j *Journey) {
	after := a.newest
	for after != nil && after.lastNs > j.lastNs {
		after = after.prev
	}
	j.prev = after
	if after == nil {
		j.next = a.oldest
		a.oldest = j
	} else {
		j.next = after.next
		after.next = j
	}
	if j.next == nil {
		a.newest = j
	} else {
		j.next.prev = j
	}
}

func (a *Assembler) unlink(j *Journey) {
	if j.prev == nil {
		a.oldest = j.next
	} else {
		j.prev.next = j.next
	}
	if j.next == nil {
		a.newest = j.prev
	} else {
		j.next.prev = j.prev
	}
	j.prev, j.next = nil, nil
}

// close removes j from the open journeys and judges it.
func (a *Assembler) close(j *Journey, timedOut bool) {
	delete(a.open, j.ID)
	a.unlink(j)
	a.finish(j, timedOut)
}

// newJourney takes a released journey, or makes one.
func (a *Assembler) newJourney() *Journey {
	if n := len(a.free); n > 0 {
		j := a.free[n-1]
		a.free = a.free[:n-1]
		return j
	}
	j := &Journey{Hops: make([]Hop, 0, 8), outers: make([]Outer, 0, 2)}
	if a.cfg.KeepBytes {
		j.data = make([]byte, 0, 4*SnapMax)
	}
	return j
}

// keepData copies b, at most SnapFull bytes of it, into j's own storage, within
// MaxBytes for a hop's. When the storage is full a new array takes over, as large as
// what is kept so far and no larger than what is left; the hops keep pointing into the
// old one, which stays valid. The newest is what Release keeps.
func (a *Assembler) keepData(j *Journey, b []byte, drop bool) []byte {
	room := SnapFull
	if !drop {
		room = max(a.maxData-j.kept, 0)
		if len(b) > room {
			a.stats.DataCut++
		}
	}
	if b = b[:min(len(b), room, SnapFull)]; len(b) == 0 {
		return nil
	}
	if !drop {
		j.kept += len(b)
	}
	if len(j.data)+len(b) > cap(j.data) {
		j.data = make([]byte, 0, max(len(b), min(max(2*cap(j.data), 4*SnapMax), room)))
	}
	n := len(j.data)
	j.data = append(j.data, b...)
	return j.data[n:len(j.data):len(j.data)]
}

// keepOuter stores o in the journey's own storage. When that grows, the hops that
// point into it are pointed at the new copy.
func (j *Journey) keepOuter(o Outer) *Outer {
	if len(j.outers) == cap(j.outers) {
		old := j.outers
		j.outers = append(make([]Outer, 0, 2*cap(old)+2), old...)
		for i := range j.Hops {
			for k := range old {
				if j.Hops[i].Outer == &old[k] {
					j.Hops[i].Outer = &j.outers[k]
				}
			}
		}
	}
	j.outers = append(j.outers, o)
	return &j.outers[len(j.outers)-1]
}

// maxFree bounds the journeys kept for reuse, and the others their storage kept with
// them: a journey that grew beyond them (a long path, whole packets) leaves its arrays
// to the garbage collector, so that the free list holds at most about 4096 × 20 KiB.
const (
	maxFree       = 4096
	maxFreeHops   = 32
	maxFreeOuters = 8
	maxFreeData   = 16 * SnapMax
)

// Release hands a closed journey back once its consumer is done with it (written out,
// nothing keeps a pointer into it): its storage serves the next journeys, so a steady
// stream allocates next to nothing. Not releasing is fine; it only costs allocations.
func (a *Assembler) Release(j *Journey) {
	if len(a.free) >= maxFree {
		return
	}
	hops, outers, data := j.Hops[:0], j.outers[:0], j.data[:0]
	clear(j.Hops[:cap(j.Hops)])
	if cap(hops) > maxFreeHops {
		hops = make([]Hop, 0, 8)
	}
	if cap(outers) > maxFreeOuters {
		outers = make([]Outer, 0, 2)
	}
	if cap(data) > maxFreeData {
		data = nil
	}
	*j = Journey{Hops: hops, outers: outers, data: data}
	a.free = append(a.free, j)
}

// evictOldest closes the journey with the oldest last event. As in Flush, it is Lost
// only if its timeout had run out by nowNs; else, with no end seen, Unfinished.
func (a *Assembler) evictOldest(nowNs uint64) []*Journey {
	oldest := a.oldest
	if oldest == nil {
		return nil
	}
	a.stats.Evicted++
	a.close(oldest, nowNs >= oldest.lastNs && nowNs-oldest.lastNs >= uint64(a.cfg.Timeout))
	return []*Journey{oldest}
}

// Expire closes the journeys that had no event for the timeout, as of nowNs
// (CLOCK_MONOTONIC), and returns them oldest first.
func (a *Assembler) Expire(nowNs uint64) []*Journey {
	timeout := uint64(a.cfg.Timeout)
	var done []*Journey
	// The list is in lastNs order: the expired journeys are at its start.
	for j := a.oldest; j != nil && nowNs >= j.lastNs && nowNs-j.lastNs >= timeout; j = a.oldest {
		a.close(j, true)
		done = append(done, j)
	}
	sortJourneys(done)
	return done
}

// Flush closes every open journey. Those whose timeout had not run out as of nowNs and
// whose fate is unknown are Unfinished rather than Lost.
func (a *Assembler) Flush(nowNs uint64) []*Journey {
	timeout := uint64(a.cfg.Timeout)
	var done []*Journey
	for j := a.oldest; j != nil; j = a.oldest {
		a.close(j, nowNs >= j.lastNs && nowNs-j.lastNs >= timeout)
		done = append(done, j)
	}
	sortJourneys(done)
	return done
}

func sortJourneys(js []*Journey) {
	slices.SortFunc(js, func(x, y *Journey) int { return cmp.Compare(x.firstNs(), y.firstNs()) })
}

func (j *Journey) firstNs() uint64 {
	if len(j.Hops) > 0 {
		return j.Hops[0].TimeNs
	}
	if j.Drop != nil {
		return j.Drop.TimeNs
	}
	return j.lastNs
}

// FirstNs is the time of the journey's first event.
func (j *Journey) FirstNs() uint64 { return j.firstNs() }

// finish orders the hops, finds the largest stall and decides the verdict. timedOut
// says whether the timeout ran out (else a journey without an end is Unfinished).
func (a *Assembler) finish(j *Journey, timedOut bool) {
	a.stats.Journeys++
	// Insertion sort, stable: the hops come nearly in order, and it allocates nothing.
	for i := 1; i < len(j.Hops); i++ {
		for k := i; k > 0 && j.Hops[k].TimeNs < j.Hops[k-1].TimeNs; k-- {
			j.Hops[k], j.Hops[k-1] = j.Hops[k-1], j.Hops[k]
		}
	}
	if len(j.Hops) > 0 {
		j.Flow = j.Hops[0].Flow // as first seen, whatever order the events came in
	}
	markNAT(j)
	if a.cfg.Stall > 0 {
		for i := 1; i < len(j.Hops); i++ {
			d := j.Hops[i].TimeNs - j.Hops[i-1].TimeNs
			if d > uint64(a.cfg.Stall) && (j.Stall == nil || d > j.Stall.DeltaNs) {
				j.Stall = &Stall{From: j.Hops[i-1].Name(), Hop: j.Hops[i].Name(), DeltaNs: d}
			}
		}
	}
	if j.Drop != nil && a.copyDelivered(j) {
		return
	}
	if j.Drop != nil {
		j.Verdict = Dropped
		if n := len(j.Hops); n > 0 {
			j.Where = j.Hops[n-1].Name()
			if j.Hops[n-1].Kind == KindNetfilter {
				j.Drop.Hook = j.Hops[n-1].Hook
			}
		}
		return
	}
	if len(j.Hops) == 0 {
		j.Verdict = Unfinished
		return
	}
	last := &j.Hops[len(j.Hops)-1]
	j.Where = last.Ifname
	switch {
	case last.Dir == Egress && last.Kind == KindPod:
		j.Verdict = Delivered
	case last.Dir == Egress && (last.Kind == KindUplink || last.Kind == KindOverlay):
		j.Verdict = Forwarded
	case last.Dir == Ingress && a.toLocal(last):
		j.Verdict = Delivered
	case last.Kind == KindNetfilter && last.Hook == "INPUT" && arrivedEncapsulated(j) && timedOut && a.overlayBefore() != "":
		// The tunnel's packet went to the node's own socket to be taken apart, and the
		// packet inside never reached pathtrace's hook on the tunnel device: a program
		// of another datapath that runs before it there took it.
		j.Verdict = Redirected
		j.Where = last.Name()
		j.HandedTo = a.overlayBefore()
	case last.Kind == KindNetfilter && last.Hook == "INPUT":
		j.Verdict = Delivered
		j.Where = last.Name()
	default:
		j.Where = last.Name()
		switch {
		case timedOut && j.EventsLost > 0:
			j.Verdict = Incomplete
			a.stats.Incomplete++
		case timedOut && a.handedOn(last) != "":
			j.Verdict = Redirected
			j.HandedTo = a.handedOn(last)
		case timedOut:
			j.Verdict = Lost
		default:
			j.Verdict = Unfinished
		}
	}
}

// copyDelivered handles a packet the bridge sent to several pods (flooding, hairpin):
// when the drop happened inside one pod's namespace and another pod's veth also handed
// the packet on, that other copy was delivered. The drop stays on the journey as
// CopyDrop.
func (a *Assembler) copyDelivered(j *Journey) bool {
	d := j.Drop
	if d.Netns == 0 {
		return false
	}
	droppedHere, other := false, -1
	for i := range j.Hops {
		h := &j.Hops[i]
		if h.Kind != KindPod || h.Dir != Egress {
			continue
		}
		switch peer := a.ifaces[h.Ifindex].PeerNetns; {
		case peer == d.Netns:
			droppedHere = true
		case peer != 0:
			other = i
		}
	}
	if !droppedHere || other < 0 {
		return false
	}
	j.Verdict, j.Where = Delivered, j.Hops[other].Ifname
	j.CopyDrop, j.Drop = d, nil
	return true
}

// markNAT notes, on each hop whose flow differs from the previous hop's, the
// translation in between. Whether a changed source is SNAT or the reverse of a DNAT
// depends on the packet's direction in its connection, which the netfilter hops know.
func markNAT(j *Journey) {
	reply := false
	for i := range j.Hops {
		if c := j.Hops[i].CT; c != nil && c.Reply {
			reply = true
		}
	}
	// A journey that starts after the translation (the first packet of a connection
	// followed by its backend address is only recognised once DNAT made it so): its
	// conntrack entry still tells what it was before.
	if len(j.Hops) > 0 {
		if h := &j.Hops[0]; h.CT != nil && h.CT.Orig.Proto != 0 && !h.CT.Reply && h.CT.Orig != h.Flow {
			o := h.CT.Orig
			switch {
			case o.Src == h.Flow.Src && o.Dst != h.Flow.Dst:
				h.NAT = &NAT{Type: "dnat", From: o.Endpoint(o.Dst), To: h.Flow.Endpoint(h.Flow.Dst)}
			case o.Dst == h.Flow.Dst && o.Src != h.Flow.Src:
				h.NAT = &NAT{Type: "snat", From: o.Endpoint(o.Src), To: h.Flow.Endpoint(h.Flow.Src)}
			}
		}
	}
	for i := 1; i < len(j.Hops); i++ {
		a, b := j.Hops[i-1].Flow, j.Hops[i].Flow
		if a == b || a.Proto != b.Proto {
			continue
		}
		srcChanged, dstChanged := a.Src != b.Src, a.Dst != b.Dst
		n := &NAT{}
		switch {
		case srcChanged && dstChanged:
			n.Type = "snat+dnat"
			n.From = a.Endpoint(a.Src) + " → " + a.Endpoint(a.Dst)
			n.To = b.Endpoint(b.Src) + " → " + b.Endpoint(b.Dst)
		case dstChanged:
			n.Type, n.From, n.To = "dnat", a.Endpoint(a.Dst), b.Endpoint(b.Dst)
			if reply {
				n.Type = "unsnat"
			}
		default:
			n.Type, n.From, n.To = "snat", a.Endpoint(a.Src), b.Endpoint(b.Src)
			if reply {
				n.Type = "undnat"
			}
		}
		j.Hops[i].NAT = n
	}
}

// toLocal reports whether the packet at an ingress hop is addressed to the node. For a
// tunnelled packet that is the inner destination: an outer one addressed to the node must
// still reach the tunnel device.
// arrivedEncapsulated reports whether the packet came in inside a tunnel: a hop on
// ingress saw its outer header.
func arrivedEncapsulated(j *Journey) bool {
	for i := range j.Hops {
		if h := &j.Hops[i]; h.Dir == Ingress && h.Outer != nil && h.Kind != KindNetfilter {
			return true
		}
	}
	return false
}

// overlayBefore names the other datapath's programs that run before pathtrace's on
// a tunnel device's ingress (clsact mode beside tcx programs, or a priority pathtrace
// could not go before), "" when there are none.
func (a *Assembler) overlayBefore() string {
	for _, i := range a.ifaces {
		if i.Kind == KindOverlay && i.Before != "" {
			return i.Before
		}
	}
	return ""
}

// handedOn names the other datapath's programs that run after pathtrace's at a tc
// hop, "" when there are none (or the hop is a netfilter hook).
func (a *Assembler) handedOn(h *Hop) string {
	if h.Kind == KindNetfilter {
		return ""
	}
	i, ok := a.ifaces[h.Ifindex]
	if !ok {
		return ""
	}
	if h.Dir == Egress {
		return i.Others[1]
	}
	return i.Others[0]
}

func (a *Assembler) toLocal(h *Hop) bool {
	return a.local[h.Flow.Dst.Addr().Unmap()]
}

// Summary is the verdict in words, as the human output prints it.
func (j *Journey) Summary() string {
	switch j.Verdict {
	case Delivered:
		if c := j.CopyDrop; c != nil {
			s := "delivered to pod via " + j.Where + "; a copy sent to another pod was dropped"
			if r := c.ReasonText(); r != "" {
				s += ": " + r
			}
			return s + " at " + c.Location
		}
		last := j.Hops[len(j.Hops)-1]
		if last.Dir == Egress {
			return "delivered to pod via " + last.Ifname
		}
		if last.Kind == KindNetfilter {
			return "delivered to the node's stack (passed INPUT)"
		}
		return "delivered to the node's stack via " + last.Ifname
	case Forwarded:
		return "forwarded via " + j.Where
	case Dropped:
		s := "dropped"
		if r := j.Drop.ReasonText(); r != "" {
			s += ": " + r
		}
		s += " at " + j.Drop.Location
		if j.Where != "" {
			s += " (after " + j.Where + ")"
		}
		switch r := j.Drop.Rule; {
		case j.Drop.Cause != "":
			s += ": " + j.Drop.Cause
		case r != nil && r.Rule != nil:
			s += ": by " + r.Rule.Location() + " rule "
			if r.Rule.Backend == BackendIptablesNft {
				s += strconv.Itoa(r.Rule.Position)
			} else {
				s += "handle " + strconv.FormatUint(r.Rule.Handle, 10)
			}
		case r != nil && r.Policy != nil:
			s += ": by the policy of " + r.Policy.Location()
		}
		return s
	case Lost:
		return "lost after " + j.Where + ": no further hop and no drop within the timeout"
	case Redirected:
		s := "redirected at " + j.Where + ": another datapath's program runs there after pathtrace's"
		if j.HandedTo != "" {
			s += " (" + j.HandedTo + ")"
		}
		return s + " and took the packet past the hooks pathtrace sits on; no drop was seen"
	case Incomplete:
		n := strconv.FormatUint(j.EventsLost, 10) + " events"
		if j.EventsLost == 1 {
			n = "1 event"
		}
		return "incomplete: " + n + " lost while it was in flight; last seen at " + j.Where + ", no further hop or drop within the timeout"
	}
	switch j.Cut {
	case CutHopCap:
		return "unfinished: cut at " + strconv.Itoa(len(j.Hops)) + " hops, the most a journey holds, as its packet ID kept coming (a routing loop, or identical packets)"
	case CutCollision:
		at := "its first hop" // a journey read back from JSON may have none
		if len(j.Hops) > 0 {
			at = j.Hops[0].Name()
		}
		return "unfinished: another packet with the same ID started over at " + at + " before this one's fate was known"
	}
	return "unfinished: tracing stopped before the packet's fate was known"
}
