package exporter

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pathtrace/pathtrace/decode"
)

// Writer writes journeys, and reports of one-way connections, somewhere.
type Writer interface {
	Write(j *decode.Journey) error
	WriteOneWay(o *decode.OneWay) error
}

// Clock converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
type Clock struct {
	OffsetNs int64 // wall-clock ns minus monotonic ns, measured once at start
}

// Wall returns the wall-clock time, in Unix ns, of a monotonic timestamp.
func (c Clock) Wall(monoNs uint64) int64 { return int64(monoNs) + c.OffsetNs }

// Text writes one block per journey, as a person reads it.
type Text struct {
	w     *bufio.Writer
	namer decode.Namer
}

// SetNamer has the writer name the ends of journeys that carry no names yet.
func (t *Text) SetNamer(n decode.Namer) { t.namer = n }

// NewText returns a text writer; every journey is flushed as soon as it is written.
func NewText(w io.Writer) *Text { return &Text{w: bufio.NewWriter(w)} }

// Header is the first line of a journey: the flow, the protocol, TCP flags and length.
func Header(j *decode.Journey) string {
	var b strings.Builder
	f := j.Flow
	fmt.Fprintf(&b, "%s → %s %s", f.Endpoint(f.Src), f.Endpoint(f.Dst), strings.ToUpper(decode.ProtoName(f.Proto)))
	if f.Proto == decode.ProtoTCP {
		fmt.Fprintf(&b, " [%s]", decode.TCPFlagString(j.TCPFlags))
	}
	fmt.Fprintf(&b, " len=%d", j.IPLen)
	if n := j.Names; n != nil {
		side := func(e decode.EndpointName) string {
			switch {
			case e.Name == "" && n.Unresolved:
				return "unresolved"
			case e.Name == "":
				return "?"
			}
			return e.Kind + " " + e.Name
		}
		fmt.Fprintf(&b, "  (%s → %s)", side(n.Src), side(n.Dst))
	}
	return b.String()
}

// Offset formats a duration as the hop lines show it: µs below 100 ms, then ms.
func Offset(ns uint64) string {
	d := time.Duration(ns)
	if d < 100*time.Millisecond {
		return fmt.Sprintf("+%dµs", ns/1000)
	}
	return fmt.Sprintf("+%.1fms", float64(ns)/1e6)
}

func (t *Text) Write(j *decode.Journey) error {
	w := t.w
	if j.Names == nil {
		j.Names = decode.NameFlow(t.namer, j.Flow)
	}
	fmt.Fprintln(w, Header(j))
	start := j.FirstNs()
	writeHops(w, j, nameWidth(j), func(ns uint64) string { return Offset(ns - start) })
	fmt.Fprintf(w, "  %s\n", j.Summary())
	WriteDiagnosis(w, j.Diagnosis, "  ")
	fmt.Fprintln(w)
	return w.Flush()
}

// WriteDiagnosis writes a diagnosis under a verdict: a cause line, one evidence line
// per fact, the fix, and what could not be read; nothing for nil.
func WriteDiagnosis(w io.Writer, d *decode.Diagnosis, indent string) {
	if d == nil {
		return
	}
	seg := ""
	if d.Segment != "" {
		seg = " [" + d.Segment + "]"
	}
	fmt.Fprintf(w, "%scause: %s%s: %s\n", indent, d.Cause, seg, d.Summary)
	for _, e := range d.Evidence {
		fmt.Fprintf(w, "%sevidence: %s: %s\n", indent, e.Name, e.Value)
	}
	if d.Fix != "" {
		fmt.Fprintf(w, "%sfix: %s\n", indent, d.Fix)
	}
	for _, m := range d.Missing {
		fmt.Fprintf(w, "%snot read: %s\n", indent, m)
	}
}

// nameWidth is the width of the hop-name column for a journey's lines, in characters
// (fmt pads to a width in characters, not bytes).
func nameWidth(j *decode.Journey) int {
	name := 0
	for _, h := range j.Hops {
		if h.Kind == decode.KindNetfilter {
			name = max(name, utf8.RuneCountInString(h.Hook))
		} else {
			name = max(name, utf8.RuneCountInString(h.Ifname))
		}
	}
	if j.Drop != nil {
		name = max(name, len("dropped"))
	}
	return name
}

// writeHops writes a journey's hop lines, its drop in time order among them, and its
// stall; off formats a time as the offset the line shows.
func writeHops(w io.Writer, j *decode.Journey, name int, off func(ns uint64) string) {
	dropShown := j.Drop == nil
	showDrop := func() {
		d := j.Drop
		fmt.Fprintf(w, "  %-9s %s  %-*s  ", off(d.TimeNs), j.Node, name, "dropped")
		if r := d.ReasonText(); r != "" {
			fmt.Fprintf(w, "%s ", r)
		}
		fmt.Fprintf(w, "at %s", d.Location)
		if d.Ifname != "" {
			fmt.Fprintf(w, " (dev %s)", d.Ifname)
		}
		fmt.Fprintln(w)
		if d.Cause != "" {
			fmt.Fprintf(w, "  %-9s %s  %s\n", "", j.Node, d.Cause)
		}
		if d.Rule != nil {
			fmt.Fprintf(w, "  %-9s %s  %s\n", "", j.Node, d.Rule)
		}
		dropShown = true
	}
	for i := range j.Hops {
		h := &j.Hops[i]
		if !dropShown && j.Drop.TimeNs < h.TimeNs {
			showDrop()
		}
		where, dir := h.Ifname, h.Dir.String()
		if h.Kind == decode.KindNetfilter {
			where, dir = h.Hook, h.Prio
		}
		line := fmt.Sprintf("  %-9s %s  %-*s  %-7s", off(h.TimeNs), h.Node, name, where, dir)
		if h.Kind == decode.KindNetfilter {
			if h.Ifname != "" {
				line += " in=" + h.Ifname
			}
			if h.OutIfname != "" {
				line += " out=" + h.OutIfname
			}
			if c := h.CT; c != nil {
				line += "  ct=" + c.State
				if c.Reply {
					line += ",reply"
				}
			}
		}
		if n := h.NAT; n != nil {
			line += fmt.Sprintf("  %s %s→%s", n.Type, n.From, n.To)
		}
		if o := h.Outer; o != nil {
			line += "  " + outerText(o)
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	if !dropShown {
		showDrop()
	}
	if s := j.Stall; s != nil {
		fmt.Fprintf(w, "  stall: %s between %s and %s\n", time.Duration(s.DeltaNs).Round(time.Microsecond), s.From, s.Hop)
	}
}

// WriteOneWay writes a one-way connection as a block of its own.
func (t *Text) WriteOneWay(o *decode.OneWay) error {
	f := o.Flow
	fmt.Fprintf(t.w, "%s → %s TCP one-way\n", f.Endpoint(f.Src), f.Endpoint(f.Dst))
	fmt.Fprintf(t.w, "  %s  %s\n", o.Node, o.Summary())
	WriteDiagnosis(t.w, o.Diagnosis, "  ")
	fmt.Fprintln(t.w)
	return t.w.Flush()
}

// JSON writes one object per journey, per line.
type JSON struct {
	w     *bufio.Writer
	enc   *json.Encoder
	clock Clock
	namer decode.Namer
}

// SetNamer has the writer name the ends of journeys that carry no names yet.
func (x *JSON) SetNamer(n decode.Namer) { x.namer = n }

// NewJSON returns a JSON Lines writer; t_ns fields are wall-clock Unix ns.
func NewJSON(w io.Writer, clock Clock) *JSON {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	return &JSON{w: bw, enc: enc, clock: clock}
}

// JourneyJSON is the JSON form of a journey. Field names are an interface: add, never
// rename.
type JourneyJSON struct {
	Kind     string    `json:"kind"` // "journey"
	ID       string    `json:"id"`
	Node     string    `json:"node"`
	Flow     FlowJSON  `json:"flow"`
	TCPFlags string    `json:"tcp_flags,omitempty"`
	Len      uint16    `json:"len"`
	Hops     []HopJSON `json:"hops"`
	Verdict  string    `json:"verdict"` // delivered, forwarded, dropped, lost, incomplete, redirected, unfinished
	Where    string    `json:"where,omitempty"`
	// HandedTo: a "redirected" packet's last hop ran another datapath's programs after
	// pathtrace's; they are named here.
	HandedTo string     `json:"handed_to,omitempty"`
	Summary  string     `json:"summary"`
	Drop     *DropJSON  `json:"drop,omitempty"`
	CopyDrop *DropJSON  `json:"copy_drop,omitempty"` // another copy of a delivered packet died
	Stall    *StallJSON `json:"stall,omitempty"`
	// EventsLost: events the tracer lost while the packet was in flight (the verdict
	// is then "incomplete" rather than "lost"); Cut: why the journey was closed while
	// its packet ID still came, "hop_cap" or "collision" (decode.Journey.Cut).
	EventsLost uint64 `json:"events_lost,omitempty"`
	Cut        string `json:"cut,omitempty"`
	// Diagnosis: why a journey that is not a success failed (or stalled), with the
	// evidence read from the node and the fix; see package decode/diagnose.
	Diagnosis *decode.Diagnosis `json:"diagnosis,omitempty"`
	// Kubernetes names of the flow's ends (as first seen), when names are on; Names is
	// "unresolved" when they are on but the API server has not answered.
	SrcPod     string `json:"src_pod,omitempty"`
	DstPod     string `json:"dst_pod,omitempty"`
	SrcService string `json:"src_service,omitempty"`
	DstService string `json:"dst_service,omitempty"`
	SrcNode    string `json:"src_node,omitempty"`
	DstNode    string `json:"dst_node,omitempty"`
	Names      string `json:"names,omitempty"`
}

// FlowJSON is a 5-tuple.
type FlowJSON struct {
	Proto string `json:"proto"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
}

// HopJSON is one hop.
type HopJSON struct {
	Node    string    `json:"node"`
	Ifname  string    `json:"ifname"`
	Ifindex uint32    `json:"ifindex"`
	Kind    string    `json:"kind"`
	Dir     string    `json:"dir,omitempty"` // ingress or egress; netfilter hops have a hook instead
	TNs     int64     `json:"t_ns"`
	DeltaNs uint64    `json:"delta_ns"`
	Len     uint32    `json:"len"`
	Flow    *FlowJSON `json:"flow,omitempty"` // only where NAT changed it
	// Tunnel is the outer header of an encapsulated hop, of any kind; VXLAN hops have
	// it again as VXLAN, for the readers that know only that.
	Tunnel *TunnelJSON `json:"tunnel,omitempty"`
	VXLAN  *VXLANJSON  `json:"vxlan,omitempty"`
	// Netfilter hops.
	Hook      string   `json:"hook,omitempty"`
	Priority  string   `json:"priority,omitempty"`
	OutIfname string   `json:"out_ifname,omitempty"`
	CT        *CTJSON  `json:"ct,omitempty"`
	NAT       *NATJSON `json:"nat,omitempty"`
}

// CTJSON is a packet's conntrack entry.
type CTJSON struct {
	State  string    `json:"state"`
	Dir    string    `json:"dir,omitempty"` // original or reply
	Status uint32    `json:"status,omitempty"`
	Mark   uint32    `json:"mark,omitempty"`
	Orig   *FlowJSON `json:"orig,omitempty"`
	Reply  *FlowJSON `json:"reply,omitempty"`
}

// NATJSON is the translation a packet got since the previous hop.
type NATJSON struct {
	Type string `json:"type"`
	From string `json:"from"`
	To   string `json:"to"`
}

// TunnelJSON is the underlay header of an encapsulated hop: the outermost one when
// tunnels nest.
type TunnelJSON struct {
	Kind    string `json:"kind"` // vxlan, geneve, ipip, sit (IPv6 in IPv4), ip6ip6, ip4ip6
	Src     string `json:"src"`
	Dst     string `json:"dst"`
	SrcPort uint16 `json:"src_port,omitempty"` // UDP tunnels (VXLAN, Geneve)
	Port    uint16 `json:"port,omitempty"`     // the outer UDP destination port (8472, 4789, 6081)
	VNI     uint32 `json:"vni,omitempty"`
	Options uint16 `json:"options,omitempty"` // Geneve: bytes of options
}

// VXLANJSON is the underlay header of a VXLAN hop (TunnelJSON has every kind's).
type VXLANJSON struct {
	VNI  uint32 `json:"vni"`
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Port uint16 `json:"port,omitempty"` // the outer UDP destination port (8472, 4789)
}

// DropJSON is the kernel's account of a drop.
type DropJSON struct {
	Reason string `json:"reason,omitempty"`
	// ReasonSource is "kernel" when the kernel named the reason, "inferred" when
	// pathtrace took it from the drop site (InferredFrom, the function).
	ReasonSource string `json:"reason_source,omitempty"`
	InferredFrom string `json:"inferred_from,omitempty"`
	Code         uint32 `json:"code"`
	Location     string `json:"location"`
	Ifname       string `json:"ifname,omitempty"`
	Hook         string `json:"hook,omitempty"`
	TNs          int64  `json:"t_ns"`
	// Rule names the netfilter rule or chain policy that dropped the packet, in words;
	// RuleDetail has the parts. Cause is conntrack's own reason when it dropped it.
	Rule       string            `json:"rule,omitempty"`
	RuleDetail *decode.RuleMatch `json:"rule_detail,omitempty"`
	Cause      string            `json:"cause,omitempty"`
}

// StallJSON is the largest hop-to-hop delay above the threshold.
type StallJSON struct {
	Hop     string `json:"hop"`
	From    string `json:"from"`
	DeltaNs uint64 `json:"delta_ns"`
}

func flowJSON(f decode.Flow) FlowJSON {
	return FlowJSON{Proto: decode.ProtoName(f.Proto), Src: f.Endpoint(f.Src), Dst: f.Endpoint(f.Dst)}
}

// ToJSON converts a journey.
func ToJSON(j *decode.Journey, clock Clock) JourneyJSON {
	out := JourneyJSON{
		Kind: "journey", ID: fmt.Sprintf("%016x", j.ID), Node: j.Node, Flow: flowJSON(j.Flow), Len: j.IPLen,
		Verdict: j.Verdict.String(), Where: j.Where, HandedTo: j.HandedTo, Summary: j.Summary(), Hops: []HopJSON{},
		EventsLost: j.EventsLost, Cut: j.Cut, Diagnosis: j.Diagnosis,
	}
	if j.Flow.Proto == decode.ProtoTCP {
		out.TCPFlags = decode.TCPFlagString(j.TCPFlags)
	}
	for i := range j.Hops {
		h := &j.Hops[i]
		hj := HopJSON{Node: h.Node, Ifname: h.Ifname, Ifindex: h.Ifindex, Kind: h.Kind.String(),
			Dir: h.Dir.String(), TNs: clock.Wall(h.TimeNs), Len: h.Len}
		if i > 0 {
			hj.DeltaNs = h.TimeNs - j.Hops[i-1].TimeNs
		}
		if h.Flow != j.Flow && h.Flow != j.Flow.Reverse() {
			f := flowJSON(h.Flow)
			hj.Flow = &f
		}
		if o := h.Outer; o != nil {
			hj.Tunnel = &TunnelJSON{Kind: o.Kind, Src: o.Src.String(), Dst: o.Dst.String(), SrcPort: o.SrcPort,
				Port: o.DstPort, VNI: o.VNI, Options: o.Options}
			if o.Kind == decode.TunnelVXLAN {
				hj.VXLAN = &VXLANJSON{VNI: o.VNI, Src: o.Src.String(), Dst: o.Dst.String(), Port: o.DstPort}
			}
		}
		if h.Kind == decode.KindNetfilter {
			hj.Hook, hj.Priority, hj.OutIfname = h.Hook, h.Prio, h.OutIfname
			hj.Dir = ""
			if c := h.CT; c != nil {
				cj := &CTJSON{State: c.State, Status: c.Status, Mark: c.Mark}
				if c.State != "invalid" && c.State != "untracked" {
					cj.Dir = "original"
					if c.Reply {
						cj.Dir = "reply"
					}
					// A tuple the kernel's entry did not give (no address family) is
					// left out rather than written as "invalid IP".
					if c.Orig.Src.IsValid() {
						o := flowJSON(c.Orig)
						cj.Orig = &o
					}
					if c.Answer.Src.IsValid() {
						r := flowJSON(c.Answer)
						cj.Reply = &r
					}
				}
				hj.CT = cj
			}
		}
		if n := h.NAT; n != nil {
			hj.NAT = &NATJSON{Type: n.Type, From: n.From, To: n.To}
			hj.Flow = nil
			f := flowJSON(h.Flow)
			hj.Flow = &f
		}
		out.Hops = append(out.Hops, hj)
	}
	if d := j.CopyDrop; d != nil {
		out.CopyDrop = &DropJSON{Reason: d.Reason, ReasonSource: d.ReasonSource, InferredFrom: d.InferredFrom, Code: d.Code, Location: d.Location, Ifname: d.Ifname, TNs: clock.Wall(d.TimeNs)}
	}
	if d := j.Drop; d != nil {
		out.Drop = &DropJSON{Reason: d.Reason, ReasonSource: d.ReasonSource, InferredFrom: d.InferredFrom, Code: d.Code, Location: d.Location, Ifname: d.Ifname, Hook: d.Hook,
			TNs: clock.Wall(d.TimeNs), RuleDetail: d.Rule, Cause: d.Cause}
		if d.Rule != nil {
			out.Drop.Rule = d.Rule.String()
		}
	}
	if s := j.Stall; s != nil {
		out.Stall = &StallJSON{Hop: s.Hop, From: s.From, DeltaNs: s.DeltaNs}
	}
	if n := j.Names; n != nil {
		set := func(e decode.EndpointName, pod, svc, node *string) {
			switch e.Kind {
			case "pod":
				*pod = e.Name
			case "service":
				*svc = e.Name
			case "node":
				*node = e.Name
			}
		}
		set(n.Src, &out.SrcPod, &out.SrcService, &out.SrcNode)
		set(n.Dst, &out.DstPod, &out.DstService, &out.DstNode)
		if n.Unresolved {
			out.Names = "unresolved"
		}
	}
	return out
}

func (x *JSON) Write(j *decode.Journey) error {
	if j.Names == nil {
		j.Names = decode.NameFlow(x.namer, j.Flow)
	}
	if err := x.enc.Encode(ToJSON(j, x.clock)); err != nil {
		return err
	}
	return x.w.Flush()
}

// OneWayJSON is a TCP connection whose SYNs got no answer. Kind tells it from a journey.
type OneWayJSON struct {
	Kind     string   `json:"kind"` // "oneway"
	Node     string   `json:"node"`
	Flow     FlowJSON `json:"flow"`
	SYNs     int      `json:"syns"`
	LeftVia  string   `json:"left_via"`
	Expected string   `json:"expected"`
	FirstTNs int64    `json:"first_t_ns"`
	LastTNs  int64    `json:"last_t_ns"`
	WaitNs   int64    `json:"wait_ns"`
	Summary  string   `json:"summary"`
	// Diagnosis as a journey's.
	Diagnosis *decode.Diagnosis `json:"diagnosis,omitempty"`
}

// WriteOneWay writes a one-way connection as one line.
func (x *JSON) WriteOneWay(o *decode.OneWay) error {
	err := x.enc.Encode(OneWayJSON{Kind: "oneway", Node: o.Node, Flow: flowJSON(o.Flow), SYNs: o.SYNs,
		LeftVia: o.LeftVia, Expected: o.Expect, FirstTNs: x.clock.Wall(o.FirstNs), LastTNs: x.clock.Wall(o.LastNs),
		WaitNs: int64(o.Wait), Summary: o.Summary(), Diagnosis: o.Diagnosis})
	if err != nil {
		return err
	}
	return x.w.Flush()
}

// outerText is a hop's tunnel header in the text output: "vxlan vni=1
// 10.0.0.11→10.0.0.12", "geneve vni=7 options=8 ...", "ipip 10.0.0.11→10.0.0.12".
func outerText(o *decode.Outer) string {
	return outerHead(o) + o.Src.String() + "→" + o.Dst.String()
}

// outerHead is the kind, and a UDP tunnel's VNI and options, followed by a space.
func outerHead(o *decode.Outer) string {
	if !o.UDP() {
		return o.Kind + " "
	}
	s := fmt.Sprintf("%s vni=%d ", o.Kind, o.VNI)
	if o.Options != 0 {
		s += fmt.Sprintf("options=%d ", o.Options)
	}
	return s
}
