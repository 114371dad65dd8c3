package exporter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pathtrace/pathtrace/decode"
)

// A follow client that gathers several nodes' agents gets their journeys as JSON and
// joins them (decode.Joiner): FromJSON reads a journey back, WritePath writes the
// joined path.

// FromJSON reads back a journey written by ToJSON. Its times (hops, drop) are the
// wall-clock Unix ns the JSON carries, which is what decode.Joiner expects.
func FromJSON(x *JourneyJSON) (*decode.Journey, error) {
	if x.Kind != "journey" {
		return nil, fmt.Errorf("not a journey: kind %q", x.Kind)
	}
	id, err := strconv.ParseUint(x.ID, 16, 64)
	if err != nil {
		return nil, fmt.Errorf("journey id %q: %v", x.ID, err)
	}
	flow, err := flowFromJSON(&x.Flow)
	if err != nil {
		return nil, err
	}
	j := &decode.Journey{ID: id, Node: x.Node, Flow: flow, IPLen: x.Len, TCPFlags: tcpFlagsFrom(x.TCPFlags), Where: x.Where, HandedTo: x.HandedTo,
		EventsLost: x.EventsLost, Cut: x.Cut, Diagnosis: BoundDiagnosis(x.Diagnosis)}
	if j.Verdict, err = verdictFrom(x.Verdict); err != nil {
		return nil, fmt.Errorf("journey %s: %v", x.ID, err)
	}
	for i := range x.Hops {
		hj := &x.Hops[i]
		h := decode.Hop{Node: hj.Node, Ifname: hj.Ifname, Ifindex: hj.Ifindex, Kind: kindFrom(hj.Kind), TimeNs: uint64(hj.TNs),
			Len: hj.Len, Flow: flow, Hook: hj.Hook, Prio: hj.Priority, OutIfname: hj.OutIfname}
		switch hj.Dir {
		case "ingress":
			h.Dir = decode.Ingress
		case "egress":
			h.Dir = decode.Egress
		default:
			h.Dir = decode.NoDir
		}
		if hj.Flow != nil {
			if h.Flow, err = flowFromJSON(hj.Flow); err != nil {
				return nil, err
			}
		}
		switch {
		case hj.Tunnel != nil:
			v := hj.Tunnel
			if h.Outer, err = outerFromJSON(v.Kind, v.Src, v.Dst); err != nil {
				return nil, err
			}
			h.Outer.SrcPort, h.Outer.DstPort, h.Outer.VNI, h.Outer.Options = v.SrcPort, v.Port, v.VNI, v.Options
		case hj.VXLAN != nil: // an agent from before the tunnel field
			v := hj.VXLAN
			if h.Outer, err = outerFromJSON(decode.TunnelVXLAN, v.Src, v.Dst); err != nil {
				return nil, err
			}
			h.Outer.DstPort, h.Outer.VNI = v.Port, v.VNI
		}
		if c := hj.CT; c != nil {
			// A tuple that does not read (older agents wrote unknown ones as
			// "invalid IP") is unknown, as if left out.
			ctFlow := func(f *FlowJSON) decode.Flow {
				if f == nil {
					return decode.Flow{}
				}
				fl, err := flowFromJSON(f)
				if err != nil {
					return decode.Flow{}
				}
				return fl
			}
			h.CT = &decode.CT{State: c.State, Status: c.Status, Mark: c.Mark, Reply: c.Dir == "reply",
				Orig: ctFlow(c.Orig), Answer: ctFlow(c.Reply)}
		}
		if n := hj.NAT; n != nil {
			h.NAT = &decode.NAT{Type: n.Type, From: n.From, To: n.To}
		}
		j.Hops = append(j.Hops, h)
	}
	drop := func(d *DropJSON) *decode.Drop {
		if d == nil {
			return nil
		}
		return &decode.Drop{Reason: d.Reason, ReasonSource: d.ReasonSource, InferredFrom: d.InferredFrom, Code: d.Code, Location: d.Location, Ifname: d.Ifname, Hook: d.Hook,
			TimeNs: uint64(d.TNs), Rule: d.RuleDetail, Cause: d.Cause}
	}
	j.Drop, j.CopyDrop = drop(x.Drop), drop(x.CopyDrop)
	if s := x.Stall; s != nil {
		j.Stall = &decode.Stall{From: s.From, Hop: s.Hop, DeltaNs: s.DeltaNs}
	}
	get := func(pod, svc, node string) decode.EndpointName {
		switch {
		case pod != "":
			return decode.EndpointName{Kind: "pod", Name: pod}
		case svc != "":
			return decode.EndpointName{Kind: "service", Name: svc}
		case node != "":
			return decode.EndpointName{Kind: "node", Name: node}
		}
		return decode.EndpointName{}
	}
	if n := (decode.Names{Src: get(x.SrcPod, x.SrcService, x.SrcNode), Dst: get(x.DstPod, x.DstService, x.DstNode),
		Unresolved: x.Names == "unresolved"}); n != (decode.Names{}) {
		j.Names = &n
	}
	// What the Assembler guarantees and the writers rely on (Journey.Summary names the
	// drop of a dropped journey and the last hop of a delivered one): a line that
	// breaks it did not come from ToJSON.
	switch {
	case j.Verdict == decode.Dropped && j.Drop == nil:
		return nil, fmt.Errorf("journey %s: verdict dropped without a drop", x.ID)
	case j.Verdict == decode.Delivered && j.CopyDrop == nil && len(j.Hops) == 0:
		return nil, fmt.Errorf("journey %s: verdict delivered without a hop", x.ID)
	}
	return j, nil
}

// A diagnosis from another agent is kept to what this one writes: at most
// maxEvidence facts and maxMissing gaps, each text cut to maxDiagText bytes.
const (
	maxEvidence = 32
	maxMissing  = 16
	maxDiagText = 2048
)

// BoundDiagnosis copies a diagnosis read from another process within those bounds.
func BoundDiagnosis(d *decode.Diagnosis) *decode.Diagnosis {
	if d == nil {
		return nil
	}
	cut := func(s string) string {
		if len(s) > maxDiagText {
			return s[:maxDiagText]
		}
		return s
	}
	out := &decode.Diagnosis{Cause: cut(d.Cause), Summary: cut(d.Summary), Segment: cut(d.Segment), Fix: cut(d.Fix)}
	for i, e := range d.Evidence {
		if i == maxEvidence {
			break
		}
		out.Evidence = append(out.Evidence, decode.Evidence{Name: cut(e.Name), Value: cut(e.Value)})
	}
	for i, m := range d.Missing {
		if i == maxMissing {
			break
		}
		out.Missing = append(out.Missing, cut(m))
	}
	return out
}

func flowFromJSON(f *FlowJSON) (decode.Flow, error) {
	var out decode.Flow
	p, ok := protoFrom(f.Proto)
	if !ok {
		return out, fmt.Errorf("flow proto %q", f.Proto)
	}
	out.Proto = p
	ep := func(s string) (netip.AddrPort, error) {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			// As decode.Flow has them: ports are zero for protocols without them
			// (ToJSON writes such endpoints without a port).
			if ap.Port() != 0 && p != decode.ProtoTCP && p != decode.ProtoUDP {
				return netip.AddrPort{}, fmt.Errorf("flow endpoint %q: %s has no ports", s, f.Proto)
			}
			return ap, nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("flow endpoint %q", s)
		}
		return netip.AddrPortFrom(a, 0), nil
	}
	var err error
	if out.Src, err = ep(f.Src); err != nil {
		return out, err
	}
	out.Dst, err = ep(f.Dst)
	return out, err
}

// The names below are read back by the functions that write them, so that JSON written
// by one version reads back as long as those names stay.

func kindFrom(s string) decode.IfaceKind {
	for k := decode.KindUnknown; k <= decode.KindNetfilter; k++ {
		if k.String() == s {
			return k
		}
	}
	return decode.KindUnknown
}

func verdictFrom(s string) (decode.Verdict, error) {
	for v := decode.Unfinished; v <= decode.Redirected; v++ { // the last verdict
		if v.String() == s {
			return v, nil
		}
	}
	return 0, fmt.Errorf("verdict %q", s)
}

func protoFrom(s string) (uint8, bool) {
	for p := range 256 {
		if decode.ProtoName(uint8(p)) == s {
			return uint8(p), true
		}
	}
	return 0, false
}

// tcpFlagsFrom reads decode.TCPFlagString's letters back, a flag bit each.
func tcpFlagsFrom(s string) uint8 {
	var f uint8
	for b := range 8 {
		if c := decode.TCPFlagString(1 << b); c != "" && strings.Contains(s, c) {
			f |= 1 << b
		}
	}
	return f
}

// legOffsets returns, for each leg of a path, the offset from the path's start of the
// leg's first event: along the crossings, with their aligned latency, so that nodes
// with different clocks still read in order.
func legOffsets(p *decode.Path) []int64 {
	offs := make([]int64, len(p.Legs))
	start := p.Legs[0].FirstNs()
	for i := 1; i < len(p.Legs); i++ {
		a, b := p.Legs[i-1], p.Legs[i]
		offs[i] = int64(b.FirstNs()) - int64(start) // one clock assumed, when no crossing joins them
		for _, c := range p.Crossings {
			if c.From == a.Node && c.To == b.Node {
				// b's first hop is the crossing's end: a's last interface hop plus the latency.
				offs[i] = offs[i-1] + int64(lastIfaceNs(a)) - int64(a.FirstNs()) + c.LatencyNs
			}
		}
	}
	return offs
}

func lastIfaceNs(j *decode.Journey) uint64 {
	for k := len(j.Hops) - 1; k >= 0; k-- {
		if j.Hops[k].Kind != decode.KindNetfilter {
			return j.Hops[k].TimeNs
		}
	}
	return j.FirstNs()
}

func signedOffset(ns int64) string {
	if ns < 0 {
		return "-" + Offset(uint64(-ns))[1:]
	}
	return Offset(uint64(ns))
}

// WritePath writes a path of several nodes as one block: each node's hops, the
// underlay crossings between them with their latency, and the verdict of the whole.
// A path of one node is written as that node's journey, with the path's verdict when
// it says more (lost on the underlay, a node that did not answer).
func (t *Text) WritePath(p *decode.Path) error {
	w := t.w
	nameLegs(p, t.namer)
	fmt.Fprintln(w, Header(p.Legs[0]))
	name := 0
	for _, l := range p.Legs {
		name = max(name, nameWidth(l))
	}
	offs := legOffsets(p)
	for i, l := range p.Legs {
		legStart := l.FirstNs()
		writeHops(w, l, name, func(ns uint64) string { return signedOffset(offs[i] + int64(ns) - int64(legStart)) })
		if i+1 < len(p.Legs) {
			for _, c := range p.Crossings {
				if c.From == l.Node && c.To == p.Legs[i+1].Node {
					fmt.Fprintf(w, "  %-9s %s  underlay: %s %s → %s %s, %s (%s)\n", "", strings.Repeat("·", utf8.RuneCountInString(l.Node)),
						c.From, c.FromHop, c.To, c.ToHop, time.Duration(c.LatencyNs).Round(time.Microsecond), clockWords(c))
				}
			}
		}
	}
	if p.Verdict == decode.PathUnderlayLost || p.Verdict == decode.PathNodeMissing && p.Next != "" {
		fmt.Fprintf(w, "  %-9s %s  underlay: %s %s → %s (%s): nothing arrived\n", "", strings.Repeat("·", utf8.RuneCountInString(p.LeftNode)),
			p.LeftNode, p.LeftHop, p.Next, p.NextAddr)
	}
	fmt.Fprintf(w, "  %s\n", p.Summary())
	WriteDiagnosis(w, p.Diagnosis, "  ")
	fmt.Fprintln(w)
	return w.Flush()
}

func clockWords(c decode.Crossing) string {
	switch c.Clock {
	case "same":
		return "one clock"
	case "aligned":
		return fmt.Sprintf("clocks aligned; raw %s", time.Duration(c.RawNs).Round(time.Microsecond))
	case "clamped":
		return fmt.Sprintf("clocks differ, raw %s shown as 0 until crossings both ways align them", time.Duration(c.RawNs).Round(time.Microsecond))
	}
	return "clocks not aligned yet: crossings seen one way only"
}

// PathJSON is the JSON form of a joined path. Field names are an interface: add,
// never rename.
type PathJSON struct {
	Kind      string         `json:"kind"` // "path"
	ID        string         `json:"id"`
	Flow      FlowJSON       `json:"flow"`
	Nodes     []string       `json:"nodes"`
	Legs      []JourneyJSON  `json:"legs"`
	Crossings []CrossingJSON `json:"crossings"`
	Verdict   string         `json:"verdict"` // the last leg's verdict, or "lost_underlay", "node_missing", "unfinished"
	Summary   string         `json:"summary"`
	Missing   string         `json:"missing_node,omitempty"`
	Next      string         `json:"next_node,omitempty"`
	// A path lost on the underlay or headed to a silent node: the node and hop it
	// left from, the address it was headed to, and why the missing agent is missing.
	LeftNode   string `json:"left_node,omitempty"`
	LeftHop    string `json:"left_hop,omitempty"`
	NextAddr   string `json:"next_addr,omitempty"`
	MissingWhy string `json:"missing_why,omitempty"`
	// Diagnosis as a journey's: the underlay's for a path lost between nodes.
	Diagnosis *decode.Diagnosis `json:"diagnosis,omitempty"`
}

// CrossingJSON is an underlay crossing between two nodes.
type CrossingJSON struct {
	From      string `json:"from_node"`
	To        string `json:"to_node"`
	FromHop   string `json:"from_hop"`
	ToHop     string `json:"to_hop"`
	LatencyNs int64  `json:"latency_ns"`
	RawNs     int64  `json:"raw_ns"`
	Clock     string `json:"clock"` // same, aligned, unaligned, clamped
}

// PathToJSON converts a path; its legs' times are wall-clock already.
func PathToJSON(p *decode.Path) PathJSON {
	out := PathJSON{Kind: "path", ID: fmt.Sprintf("%016x", p.ID), Flow: flowJSON(p.Legs[0].Flow), Summary: p.Summary(),
		Missing: p.Missing, Next: p.Next, Crossings: []CrossingJSON{}, Diagnosis: p.Diagnosis,
		LeftNode: p.LeftNode, LeftHop: p.LeftHop, MissingWhy: p.MissingWhy}
	if p.NextAddr.IsValid() {
		out.NextAddr = p.NextAddr.String()
	}
	for _, l := range p.Legs {
		out.Nodes = append(out.Nodes, l.Node)
		out.Legs = append(out.Legs, ToJSON(l, Clock{}))
	}
	for _, c := range p.Crossings {
		out.Crossings = append(out.Crossings, CrossingJSON{From: c.From, To: c.To, FromHop: c.FromHop, ToHop: c.ToHop,
			LatencyNs: c.LatencyNs, RawNs: c.RawNs, Clock: c.Clock})
	}
	switch p.Verdict {
	case decode.PathUnderlayLost:
		out.Verdict = "lost_underlay"
	case decode.PathNodeMissing:
		out.Verdict = "node_missing"
	case decode.PathUnfinished:
		out.Verdict = "unfinished"
	default:
		out.Verdict = p.Legs[len(p.Legs)-1].Verdict.String()
	}
	return out
}

// PathFromJSON reads back a path written by PathToJSON (for a follow that prints
// text from JSON lines, as with --html).
func PathFromJSON(x *PathJSON) (*decode.Path, error) {
	if x.Kind != "path" {
		return nil, fmt.Errorf("not a path: kind %q", x.Kind)
	}
	if len(x.Legs) == 0 {
		return nil, fmt.Errorf("path %s: no legs", x.ID)
	}
	id, err := strconv.ParseUint(x.ID, 16, 64)
	if err != nil {
		return nil, fmt.Errorf("path id %q: %v", x.ID, err)
	}
	p := &decode.Path{ID: id, Next: x.Next, Missing: x.Missing, MissingWhy: x.MissingWhy, LeftNode: x.LeftNode, LeftHop: x.LeftHop,
		Diagnosis: BoundDiagnosis(x.Diagnosis)}
	for i := range x.Legs {
		l, err := FromJSON(&x.Legs[i])
		if err != nil {
			return nil, fmt.Errorf("path %s: %w", x.ID, err)
		}
		p.Legs = append(p.Legs, l)
	}
	for _, c := range x.Crossings {
		p.Crossings = append(p.Crossings, decode.Crossing{From: c.From, To: c.To, FromHop: c.FromHop, ToHop: c.ToHop,
			LatencyNs: c.LatencyNs, RawNs: c.RawNs, Clock: c.Clock})
	}
	if x.NextAddr != "" {
		if p.NextAddr, err = netip.ParseAddr(x.NextAddr); err != nil {
			return nil, fmt.Errorf("path %s: next_addr: %v", x.ID, err)
		}
	}
	switch x.Verdict {
	case "lost_underlay":
		p.Verdict = decode.PathUnderlayLost
	case "node_missing":
		p.Verdict = decode.PathNodeMissing
	case "unfinished":
		p.Verdict = decode.PathUnfinished
	default:
		p.Verdict = decode.PathDone
	}
	return p, nil
}

// OneWayFromJSON reads back a one-way report written by the JSON writer.
func OneWayFromJSON(x *OneWayJSON) (*decode.OneWay, error) {
	if x.Kind != "oneway" {
		return nil, fmt.Errorf("not a one-way report: kind %q", x.Kind)
	}
	f, err := flowFromJSON(&x.Flow)
	if err != nil {
		return nil, err
	}
	return &decode.OneWay{Node: x.Node, Flow: f, SYNs: x.SYNs, LeftVia: x.LeftVia, Expect: x.Expected,
		FirstNs: uint64(x.FirstTNs), LastNs: uint64(x.LastTNs), Wait: time.Duration(x.WaitNs), Diagnosis: BoundDiagnosis(x.Diagnosis)}, nil
}

// WritePath writes a path as one JSON line.
func (x *JSON) WritePath(p *decode.Path) error {
	nameLegs(p, x.namer)
	if err := x.enc.Encode(PathToJSON(p)); err != nil {
		return err
	}
	return x.w.Flush()
}

// nameLegs names the legs an agent sent without names, when this side has a namer.
func nameLegs(p *decode.Path, n decode.Namer) {
	for _, l := range p.Legs {
		if l.Names == nil || l.Names.Unresolved {
			if names := decode.NameFlow(n, l.Flow); names != nil {
				l.Names = names
			}
		}
	}
}

// outerFromJSON is a hop's tunnel header of kind from its addresses.
func outerFromJSON(kind, src, dst string) (*decode.Outer, error) {
	o := &decode.Outer{Kind: kind}
	var err error
	if o.Src, err = netip.ParseAddr(src); err != nil {
		return nil, fmt.Errorf("hop tunnel src: %v", err)
	}
	if o.Dst, err = netip.ParseAddr(dst); err != nil {
		return nil, fmt.Errorf("hop tunnel dst: %v", err)
	}
	return o, nil
}
