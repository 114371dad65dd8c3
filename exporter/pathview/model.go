package pathview

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pathtrace/pathtrace/decode"
)

// The parts of follow's JSON lines the page reads (exporter.JourneyJSON, PathJSON,
// OneWayJSON: field names there are an interface, added to and never renamed).
type lineIn struct {
	Kind      string            `json:"kind"`
	Node      string            `json:"node"`
	Flow      flowIn            `json:"flow"`
	TCPFlags  string            `json:"tcp_flags"`
	Len       int               `json:"len"`
	Hops      []hopIn           `json:"hops"`
	Verdict   string            `json:"verdict"`
	Where     string            `json:"where"`
	Summary   string            `json:"summary"`
	Drop      *dropIn           `json:"drop"`
	Stall     *stallIn          `json:"stall"`
	Cut       string            `json:"cut"`
	Diagnosis *decode.Diagnosis `json:"diagnosis"`
	SrcPod    string            `json:"src_pod"`
	DstPod    string            `json:"dst_pod"`
	SrcSvc    string            `json:"src_service"`
	DstSvc    string            `json:"dst_service"`
	SrcNode   string            `json:"src_node"`
	DstNode   string            `json:"dst_node"`
	// A path's.
	Nodes     []string     `json:"nodes"`
	Legs      []lineIn     `json:"legs"`
	Crossings []crossingIn `json:"crossings"`
	Missing   string       `json:"missing_node"`
	Next      string       `json:"next_node"`
	// A one-way report's.
	SYNs     int    `json:"syns"`
	LeftVia  string `json:"left_via"`
	Expected string `json:"expected"`
	WaitNs   int64  `json:"wait_ns"`
}

type flowIn struct {
	Proto string `json:"proto"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
}

type hopIn struct {
	Node      string    `json:"node"`
	Ifname    string    `json:"ifname"`
	Kind      string    `json:"kind"`
	Dir       string    `json:"dir"`
	TNs       int64     `json:"t_ns"`
	DeltaNs   uint64    `json:"delta_ns"`
	Flow      *flowIn   `json:"flow"`
	Tunnel    *tunnelIn `json:"tunnel"`
	VXLAN     *tunnelIn `json:"vxlan"`
	Hook      string    `json:"hook"`
	Priority  string    `json:"priority"`
	OutIfname string    `json:"out_ifname"`
	NAT       *natIn    `json:"nat"`
	CT        *ctIn     `json:"ct"`
}

type tunnelIn struct {
	Kind string `json:"kind"`
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Port uint16 `json:"port"`
	VNI  uint32 `json:"vni"`
}

type natIn struct {
	Type string `json:"type"`
	From string `json:"from"`
	To   string `json:"to"`
}

type ctIn struct {
	State string `json:"state"`
	Dir   string `json:"dir"`
}

type dropIn struct {
	Reason       string `json:"reason"`
	ReasonSource string `json:"reason_source"`
	Location     string `json:"location"`
	Ifname       string `json:"ifname"`
	Hook         string `json:"hook"`
	TNs          int64  `json:"t_ns"`
	Rule         string `json:"rule"`
	Cause        string `json:"cause"`
}

type stallIn struct {
	Hop     string `json:"hop"`
	From    string `json:"from"`
	DeltaNs uint64 `json:"delta_ns"`
}

type crossingIn struct {
	From      string `json:"from_node"`
	To        string `json:"to_node"`
	FromHop   string `json:"from_hop"`
	ToHop     string `json:"to_hop"`
	LatencyNs int64  `json:"latency_ns"`
	Clock     string `json:"clock"`
}

// Marks: what is wrong at a step.
const (
	MarkDrop  = "drop"  // the kernel dropped the packet here
	MarkStall = "stall" // the packet waited too long before this hop
	MarkLost  = "lost"  // the packet (or its answer) never arrived here
)

// step is one box of a packet's picture: a hop, the drop, or where a packet that
// never arrived was expected.
type step struct {
	Index                   int // data-hop: the order of the steps in the packet
	Lane                    int
	X, Y                    int // the box, in SVG pixels
	Node, Ifname, Kind, Dir string
	Label, Sub, Delta       string
	NAT                     string // the translation before this hop, "" if none
	Tunnel                  string // the outer header of an encapsulated hop
	Mark                    string
	MarkText                []string // under a marked box: the reason, the rule
	TNs                     int64
	crossIn                 bool // the first step of a leg after a crossing
}

// connector is an underlay crossing between two lanes, or a loss on the way.
type connector struct {
	D      string // SVG path
	TX, TY int    // where its label starts
	Lines  []string
	Lost   bool
}

// packet is one section of the page.
type packet struct {
	Num       int
	Kind      string
	Title     string
	Ends      string
	Verdict   string
	Summary   string
	Headline  string // the verdict and the summary, the verdict once
	Bad       bool   // the verdict is a failure
	Lanes     []string
	Steps     []*step
	Conns     []connector
	Note      string // what was not drawn
	Details   []detail
	marked    int // index of the marked step, -1 for none
	Width     int
	Height    int
	leftOut   int
	diagnosis bool
}

// detail is a line of the text under the picture.
type detail struct {
	Name, Text string
}

// maxLanes bounds the lanes of a picture; the nodes beyond share the last.
const maxLanes = 12

// maxDetails bounds the lines under a picture.
const maxDetails = 40

// maxText bounds every string drawn or written, in bytes.
const maxText = 240

// clip cuts s to maxText bytes at a rune boundary, with an ellipsis, and replaces
// control characters; html/template escapes the rest.
func clip(s string) string {
	if len(s) > maxText {
		cut := maxText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
}

// offset formats a latency as follow's text does: µs below 100 ms, then ms.
func offset(ns uint64) string {
	if time.Duration(ns) < 100*time.Millisecond {
		return fmt.Sprintf("+%dµs", ns/1000)
	}
	return fmt.Sprintf("+%.1fms", float64(ns)/1e6)
}

func flowText(f flowIn) string {
	return clip(fmt.Sprintf("%s %s → %s", strings.ToUpper(f.Proto), f.Src, f.Dst))
}

func tunnelText(t *tunnelIn) string {
	s := t.Kind
	if t.VNI != 0 || t.Kind == "vxlan" || t.Kind == "geneve" {
		s += fmt.Sprintf(" vni %d", t.VNI)
	}
	if t.Port != 0 {
		s += fmt.Sprintf(" udp/%d", t.Port)
	}
	return clip(s)
}

func failed(verdict string) bool {
	switch verdict {
	case "delivered", "forwarded", "redirected":
		return false
	}
	return true
}

func (x *lineIn) ends() string {
	side := func(pod, svc, node string) string {
		switch {
		case pod != "":
			return "pod " + pod
		case svc != "":
			return "service " + svc
		case node != "":
			return "node " + node
		}
		return "?"
	}
	src, dst := side(x.SrcPod, x.SrcSvc, x.SrcNode), side(x.DstPod, x.DstSvc, x.DstNode)
	if src == "?" && dst == "?" {
		return ""
	}
	return clip(src + " → " + dst)
}

// build turns a line into a packet: lanes, steps with their geometry, connectors.
func build(x *lineIn, num, maxSteps int) *packet {
	p := &packet{Num: num, Kind: x.Kind, Verdict: clip(x.Verdict), Summary: clip(x.Summary), marked: -1}
	p.Bad = failed(x.Verdict)
	title := flowText(x.Flow)
	if x.TCPFlags != "" {
		title += " [" + clip(x.TCPFlags) + "]"
	}
	p.Title = title
	p.Ends = x.ends()
	lane := func(node string) int {
		node = clip(node)
		for i, n := range p.Lanes {
			if n == node {
				return i
			}
		}
		if len(p.Lanes) == maxLanes {
			p.Lanes[maxLanes-1] = "(more nodes)"
			return maxLanes - 1
		}
		p.Lanes = append(p.Lanes, node)
		return len(p.Lanes) - 1
	}
	var conns []pendingConn
	switch x.Kind {
	case "journey":
		p.addLeg(x, lane, false)
	case "path":
		if len(x.Legs) > 0 {
			p.Ends = x.Legs[0].ends()
			if x.Legs[0].TCPFlags != "" {
				p.Title = flowText(x.Flow) + " [" + clip(x.Legs[0].TCPFlags) + "]"
			}
		}
		for _, n := range x.Nodes {
			lane(n)
		}
		for i := range x.Legs {
			l := &x.Legs[i]
			before := len(p.Steps)
			p.addLeg(l, lane, i > 0)
			if i > 0 && before > 0 && before < len(p.Steps) {
				// to: index+1 of the first step of the leg.
				conns = append(conns, pendingConn{from: before - 1, to: before + 1, text: crossingText(x, &x.Legs[i-1], l)})
				p.Steps[before].crossIn = true
			}
		}
		if (x.Verdict == "lost_underlay" || x.Verdict == "node_missing") && len(p.Steps) > 0 {
			next := x.Next
			if next == "" {
				next = x.Missing
			}
			if next == "" {
				next = "next node"
			}
			last := len(p.Steps) - 1
			s := &step{crossIn: true, Lane: lane(next), Node: clip(next), Kind: "missing", Label: "nothing arrived", Mark: MarkLost,
				Sub: clip(x.Verdict)}
			if x.Verdict == "node_missing" {
				s.Label = "no agent answered"
			}
			s.MarkText = []string{p.Summary}
			p.Steps = append(p.Steps, s)
			conns = append(conns, pendingConn{from: last, to: len(p.Steps), lost: true, text: []string{"underlay: nothing arrived"}})
		}
	case "oneway":
		l := lane(x.Node)
		via, _, _ := strings.Cut(x.LeftVia, " ")
		exp, _, _ := strings.Cut(x.Expected, " ")
		p.Steps = append(p.Steps, &step{Lane: l, Node: clip(x.Node), Ifname: clip(via), Kind: "syn", Label: clip(x.LeftVia),
			Sub: fmt.Sprintf("%d SYNs left", x.SYNs), Delta: "start"})
		p.Steps = append(p.Steps, &step{Lane: l, Node: clip(x.Node), Ifname: clip(exp), Kind: "missing", Label: clip(x.Expected),
			Sub: "no SYN-ACK came back", Delta: "waited " + time.Duration(x.WaitNs).Round(time.Millisecond).String(), Mark: MarkLost,
			MarkText: []string{p.Summary}})
		p.Verdict = "one-way"
	}
	if len(p.Lanes) == 0 {
		lane(x.Node)
	}
	if len(p.Steps) > maxSteps {
		p.leftOut = len(p.Steps) - maxSteps
		p.Steps = p.Steps[:maxSteps]
		p.Note = fmt.Sprintf("%d more steps not drawn (at most %d per packet)", p.leftOut, maxSteps)
	}
	for i, s := range p.Steps {
		s.Index = i
		s.MarkText = s.MarkText[:min(len(s.MarkText), 3)] // the lane has room for 3 lines
		if s.Mark != "" && p.marked < 0 {
			p.marked = i
		}
	}
	p.Headline = p.Verdict + ": " + p.Summary
	if strings.HasPrefix(p.Summary, p.Verdict) || p.Summary == "" {
		p.Headline = p.Verdict + strings.TrimPrefix(p.Summary, p.Verdict)
	}
	p.details(x)
	p.place(conns)
	return p
}

type pendingConn struct {
	from, to int // step indices; to is 1 + the index of the step it ends at (0: none)
	lost     bool
	text     []string
}

// crossingText labels the crossing from leg a to leg b: the outer header and the
// latency.
func crossingText(x *lineIn, a, b *lineIn) []string {
	var t *tunnelIn
	for i := len(a.Hops) - 1; i >= 0 && t == nil; i-- {
		t = a.Hops[i].tunnelOf()
	}
	for i := 0; i < len(b.Hops) && t == nil; i++ {
		t = b.Hops[i].tunnelOf()
	}
	lines := []string{"underlay"}
	if t != nil {
		lines = []string{tunnelText(t), clip(t.Src + " → " + t.Dst)}
	}
	for _, c := range x.Crossings {
		if c.From == a.Node && c.To == b.Node {
			lines = append(lines, clip(offset(uint64(max(c.LatencyNs, 0)))+" on the wire ("+c.Clock+" clock)"))
		}
	}
	return lines
}

func (h *hopIn) tunnelOf() *tunnelIn {
	if h.Tunnel != nil {
		return h.Tunnel
	}
	return h.VXLAN
}

// addLeg appends one node's journey: its hops, its drop in time order among them,
// its stall marked on the hop after the delay.
func (p *packet) addLeg(x *lineIn, lane func(string) int, afterCrossing bool) {
	flow := x.Flow
	var prevT int64
	dropShown := x.Drop == nil
	addDrop := func() {
		d := x.Drop
		node := x.Node
		if node == "" && len(x.Hops) > 0 {
			node = x.Hops[len(x.Hops)-1].Node
		}
		s := &step{Lane: lane(node), Node: clip(node), Ifname: clip(d.Ifname), Kind: "drop", Label: "dropped",
			Sub: clip(d.Reason), Mark: MarkDrop, TNs: d.TNs}
		if s.Sub == "" {
			s.Sub = "reason unknown"
		}
		if d.Hook != "" {
			s.Dir = clip(d.Hook)
		}
		if prevT != 0 && d.TNs >= prevT {
			s.Delta = offset(uint64(d.TNs - prevT))
		}
		s.MarkText = append(s.MarkText, clip(d.Reason+" at "+d.Location))
		if d.Rule != "" {
			s.MarkText = append(s.MarkText, clip(d.Rule))
		}
		if d.Cause != "" {
			s.MarkText = append(s.MarkText, clip(d.Cause))
		}
		p.Steps = append(p.Steps, s)
		dropShown = true
	}
	for i := range x.Hops {
		h := &x.Hops[i]
		if !dropShown && x.Drop.TNs < h.TNs {
			addDrop()
		}
		node := h.Node
		if node == "" {
			node = x.Node
		}
		s := &step{Lane: lane(node), Node: clip(node), Ifname: clip(h.Ifname), Kind: clip(h.Kind), Dir: clip(h.Dir), TNs: h.TNs}
		name := h.Ifname + " " + h.Dir
		if h.Kind == "netfilter" {
			s.Dir = clip(h.Hook)
			s.Label = clip(h.Hook)
			s.Sub = clip("netfilter " + h.Priority)
			if h.Ifname != "" {
				s.Sub = clip("netfilter " + h.Priority + " in=" + h.Ifname)
			}
			name = h.Hook + " " + h.Priority
		} else {
			s.Label = clip(h.Ifname)
			s.Sub = clip(h.Kind + " " + h.Dir)
		}
		switch {
		case i == 0 && afterCrossing:
			s.Delta = "after the crossing"
		case i == 0:
			s.Delta = "start"
		default:
			s.Delta = offset(h.DeltaNs)
		}
		f := flow
		if h.Flow != nil {
			f = *h.Flow
		}
		switch {
		case h.NAT != nil:
			s.NAT = clip(strings.ToUpper(h.NAT.Type) + " " + h.NAT.From + " → " + h.NAT.To)
		case f != flow && f != (flowIn{Proto: flow.Proto, Src: flow.Dst, Dst: flow.Src}):
			s.NAT = clip("addresses " + flow.Src + " → " + flow.Dst + " now " + f.Src + " → " + f.Dst)
		}
		flow = f
		if t := h.tunnelOf(); t != nil {
			s.Tunnel = clip(tunnelText(t) + " " + t.Src + "→" + t.Dst)
		}
		if st := x.Stall; st != nil && name == st.Hop && st.From != "" {
			s.Mark = MarkStall
			s.MarkText = []string{clip("stalled " + time.Duration(st.DeltaNs).Round(time.Microsecond).String() + " after " + st.From)}
		}
		p.Steps = append(p.Steps, s)
		prevT = h.TNs

	}
	if !dropShown {
		addDrop()
	}
}

// details are the lines under the picture: the drop, the stall, the diagnosis.
func (p *packet) details(x *lineIn) {
	add := func(name, text string) {
		if text != "" && len(p.Details) < maxDetails {
			p.Details = append(p.Details, detail{Name: name, Text: clip(text)})
		}
	}
	legs := []*lineIn{x}
	if x.Kind == "path" {
		legs = nil
		for i := range x.Legs {
			legs = append(legs, &x.Legs[i])
		}
	}
	for _, l := range legs {
		if d := l.Drop; d != nil {
			s := d.Reason
			if s == "" {
				s = "reason unknown"
			}
			s += " at " + d.Location
			if d.Ifname != "" {
				s += " (dev " + d.Ifname + ")"
			}
			if d.ReasonSource == "inferred" {
				s += ", reason inferred from the drop site"
			}
			add("drop", l.Node+": "+s)
			add("rule", d.Rule)
			add("conntrack", d.Cause)
		}
		if st := l.Stall; st != nil {
			add("stall", fmt.Sprintf("%s: %s between %s and %s", l.Node, time.Duration(st.DeltaNs).Round(time.Microsecond), st.From, st.Hop))
		}
		if l.Cut != "" {
			add("cut", "the journey was closed early: "+l.Cut)
		}
		p.diagnose(l.Diagnosis, add)
	}
	if x.Kind == "path" {
		p.diagnose(x.Diagnosis, add)
	}
	if x.Kind == "oneway" {
		add("one-way", x.Summary)
	}
}

func (p *packet) diagnose(d *decode.Diagnosis, add func(name, text string)) {
	if d == nil {
		return
	}
	p.diagnosis = true
	cause := d.Cause
	if d.Segment != "" {
		cause += " [" + d.Segment + "]"
	}
	add("cause", cause+": "+d.Summary)
	for i, e := range d.Evidence {
		if i == 16 {
			add("evidence", fmt.Sprintf("%d more not shown", len(d.Evidence)-i))
			break
		}
		add("evidence", e.Name+": "+e.Value)
	}
	add("fix", d.Fix)
	for i, m := range d.Missing {
		if i == 8 {
			break
		}
		add("not read", m)
	}
}
