package exporter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Filter picks, Hubble-style, the lines of a follow's JSON output (journeys, cross-node
// paths, one-way reports) that a user asked for. An empty field matches everything;
// within a field any value matches; all the fields given must match.
type Filter struct {
	// Verdicts: a journey's or path's verdict (delivered, forwarded, dropped, lost,
	// incomplete, redirected, unfinished; a path's lost_underlay, node_missing), or
	// "stall" (a hop-to-hop delay was reported), "oneway" (a one-way TCP report) or
	// "failed" (anything but delivered and forwarded, stalls and one-way reports included).
	Verdicts []string
	// Pods: namespace/name of the flow's source or destination pod.
	Pods []string
	// Namespaces: the namespace of the flow's source or destination pod.
	Namespaces []string
	// Nodes: the node a journey or one-way report was seen on; a path: any of its nodes.
	Nodes []string
}

// verdictNames are the values Filter.Verdicts accepts.
var verdictNames = []string{"delivered", "forwarded", "dropped", "lost", "incomplete", "redirected", "unfinished",
	"lost_underlay", "node_missing", "stall", "oneway", "failed"}

// ParseVerdicts checks --verdict's values and returns them lower-cased.
func ParseVerdicts(vs []string) ([]string, error) {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		v = strings.ToLower(strings.TrimSpace(v))
		if !slices.Contains(verdictNames, v) {
			return nil, fmt.Errorf("verdict %q: want one of %s", v, strings.Join(verdictNames, ", "))
		}
		out = append(out, v)
	}
	return out, nil
}

// Empty reports whether the filter matches everything.
func (f *Filter) Empty() bool {
	return len(f.Verdicts) == 0 && len(f.Pods) == 0 && len(f.Namespaces) == 0 && len(f.Nodes) == 0
}

// filterLine is what the filter and the compact form read of a line.
type filterLine struct {
	Kind    string      `json:"kind"`
	Node    string      `json:"node"`
	Nodes   []string    `json:"nodes"`
	Flow    FlowJSON    `json:"flow"`
	Verdict string      `json:"verdict"`
	Where   string      `json:"where"`
	Summary string      `json:"summary"`
	Stall   *StallJSON  `json:"stall"`
	Legs    []filterLeg `json:"legs"`
	Hops    []hopTime   `json:"hops"`
	SrcPod  string      `json:"src_pod"`
	DstPod  string      `json:"dst_pod"`
	TNs     int64       `json:"first_t_ns"` // a one-way report's
}

type hopTime struct {
	TNs int64 `json:"t_ns"`
}

type filterLeg struct {
	Node   string     `json:"node"`
	Stall  *StallJSON `json:"stall"`
	SrcPod string     `json:"src_pod"`
	DstPod string     `json:"dst_pod"`
	Hops   []hopTime  `json:"hops"`
}

func (x *filterLine) pods() []string {
	ps := []string{x.SrcPod, x.DstPod}
	for _, l := range x.Legs {
		ps = append(ps, l.SrcPod, l.DstPod)
	}
	return ps
}

func (x *filterLine) nodes() []string {
	if x.Kind == "path" {
		ns := slices.Clone(x.Nodes)
		for _, l := range x.Legs {
			ns = append(ns, l.Node)
		}
		return ns
	}
	return []string{x.Node}
}

func (x *filterLine) stalled() bool {
	if x.Stall != nil {
		return true
	}
	for _, l := range x.Legs {
		if l.Stall != nil {
			return true
		}
	}
	return false
}

func (f *Filter) match(x *filterLine) bool {
	if len(f.Verdicts) > 0 {
		ok := false
		for _, v := range f.Verdicts {
			switch v {
			case "stall":
				ok = x.stalled()
			case "oneway":
				ok = x.Kind == "oneway"
			case "failed":
				ok = x.Kind == "oneway" || x.stalled() || (x.Verdict != "delivered" && x.Verdict != "forwarded")
			default:
				ok = x.Kind != "oneway" && x.Verdict == v
			}
			if ok {
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.Nodes) > 0 && !anyIn(x.nodes(), f.Nodes) {
		return false
	}
	if len(f.Pods) > 0 && !anyIn(x.pods(), f.Pods) {
		return false
	}
	if len(f.Namespaces) > 0 {
		var nss []string
		for _, p := range x.pods() {
			if ns, _, ok := strings.Cut(p, "/"); ok {
				nss = append(nss, ns)
			}
		}
		if !anyIn(nss, f.Namespaces) {
			return false
		}
	}
	return true
}

func anyIn(have, want []string) bool {
	for _, h := range have {
		if h != "" && slices.Contains(want, h) {
			return true
		}
	}
	return false
}

// lineBuf splits what is written into lines, joining a line cut across writes; a line
// longer than max is skipped (over counts them).
type lineBuf struct {
	partial []byte
	max     int
	over    int
	skip    bool // the rest of an overlong line is still coming
}

func (lb *lineBuf) write(p []byte, line func([]byte)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if lb.skip {
				return
			}
			if len(lb.partial)+len(p) > lb.max {
				lb.partial, lb.skip = lb.partial[:0], true
				lb.over++
				return
			}
			lb.partial = append(lb.partial, p...)
			return
		}
		l := p[:i]
		p = p[i+1:]
		if lb.skip {
			lb.skip = false
			continue
		}
		if len(lb.partial) > 0 {
			if len(lb.partial)+len(l) > lb.max {
				lb.partial = lb.partial[:0]
				lb.over++
				continue
			}
			l = append(lb.partial, l...)
			lb.partial = lb.partial[:0]
		}
		line(l)
	}
}

// Format is how Lines prints the lines it keeps.
type Format int

const (
	FormatJSON    Format = iota // the line as it came
	FormatCompact               // one short line per flow: time, node, flow, verdict, where, summary
	// FormatText: the text blocks follow prints without JSON (Text), read back from the
	// lines (FromJSON, PathFromJSON, OneWayFromJSON); a line that does not read back
	// is printed compact.
	FormatText
)

// Lines is an io.Writer for a follow's JSON lines: it keeps those its Filter matches and
// prints them to Out as JSON or compact, and hands each kept line to Also (an HTML page,
// say) when set. Lines that are not JSON (or too long) are counted, not printed.
type Lines struct {
	Filter Filter
	Format Format
	Out    io.Writer
	Also   io.Writer
	// Seen, Kept: flow lines read and kept; Unparsed: lines that were not JSON or were
	// longer than the bound.
	Seen, Kept, Unparsed int
	buf                  lineBuf
	err                  error
	text                 *Text
}

// maxFilterLine bounds one line (as a Report does).
const maxFilterLine = maxReportLine

// Write takes JSON lines; the first error of Out is returned from then on.
func (l *Lines) Write(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	l.buf.max = maxFilterLine
	l.buf.write(p, l.line)
	l.Unparsed += l.buf.over
	l.buf.over = 0
	if l.err != nil {
		return 0, l.err
	}
	return len(p), nil
}

func (l *Lines) line(b []byte) {
	if l.err != nil || len(bytes.TrimSpace(b)) == 0 {
		return
	}
	var x filterLine
	if err := json.Unmarshal(b, &x); err != nil {
		l.Unparsed++
		return
	}
	if x.Kind == "journey" || x.Kind == "path" || x.Kind == "oneway" {
		l.Seen++
		if !l.Filter.match(&x) {
			return
		}
		l.Kept++
	}
	if l.Also != nil {
		if _, err := l.Also.Write(append(b, '\n')); err != nil {
			l.err = err
			return
		}
	}
	switch l.Format {
	case FormatText:
		if l.text == nil {
			l.text = NewText(l.Out)
		}
		if ok, err := l.textLine(b, x.Kind); ok {
			l.err = err
			return
		}
		_, l.err = io.WriteString(l.Out, compactLine(&x)+"\n")
	case FormatCompact:
		_, l.err = io.WriteString(l.Out, compactLine(&x)+"\n")
	default:
		if _, l.err = l.Out.Write(b); l.err == nil {
			_, l.err = l.Out.Write([]byte{'\n'})
		}
	}
}

// textLine writes a line as follow's text blocks; false when it does not read back.
func (l *Lines) textLine(b []byte, kind string) (bool, error) {
	switch kind {
	case "journey":
		var x JourneyJSON
		if json.Unmarshal(b, &x) != nil {
			return false, nil
		}
		j, err := FromJSON(&x)
		if err != nil {
			return false, nil
		}
		return true, l.text.Write(j)
	case "path":
		var x PathJSON
		if json.Unmarshal(b, &x) != nil {
			return false, nil
		}
		p, err := PathFromJSON(&x)
		if err != nil {
			return false, nil
		}
		return true, l.text.WritePath(p)
	case "oneway":
		var x OneWayJSON
		if json.Unmarshal(b, &x) != nil {
			return false, nil
		}
		o, err := OneWayFromJSON(&x)
		if err != nil {
			return false, nil
		}
		return true, l.text.WriteOneWay(o)
	}
	return false, nil
}

// compactLine is one flow in a line, as Hubble's compact output: time, node, the flow
// with its pods, the verdict and where, and the summary.
func compactLine(x *filterLine) string {
	var t int64
	switch {
	case x.TNs != 0:
		t = x.TNs
	case len(x.Hops) > 0:
		t = x.Hops[0].TNs
	case len(x.Legs) > 0 && len(x.Legs[0].Hops) > 0:
		t = x.Legs[0].Hops[0].TNs
	}
	ts := "--:--:--.---"
	if t != 0 {
		ts = time.Unix(0, t).UTC().Format("15:04:05.000")
	}
	node := x.Node
	if x.Kind == "path" {
		node = strings.Join(x.Nodes, "→")
	}
	end := func(addr, pod string) string {
		if pod != "" {
			return addr + " (" + pod + ")"
		}
		return addr
	}
	src, dst := x.SrcPod, x.DstPod
	if x.Kind == "path" && len(x.Legs) > 0 {
		src, dst = x.Legs[0].SrcPod, x.Legs[0].DstPod
	}
	verdict := strings.ToUpper(x.Verdict)
	if x.Kind == "oneway" {
		verdict = "ONE-WAY"
	} else if x.stalled() && (x.Verdict == "delivered" || x.Verdict == "forwarded") {
		verdict += "+STALL"
	}
	s := fmt.Sprintf("%s %s %s %s -> %s %s", ts, node, strings.ToUpper(x.Flow.Proto), end(x.Flow.Src, src), end(x.Flow.Dst, dst), verdict)
	if x.Where != "" {
		s += " at " + x.Where
	}
	if x.Summary != "" {
		s += ": " + x.Summary
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
