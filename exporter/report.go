package exporter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// Report gathers a follow's JSON lines (journeys, one-way reports, paths; as JSON and
// Join write them) and sums up the failing flows: one entry per flow and cause, with
// the failing segment, the diagnosis, and how often it happened. It is the output of
// pathtrace diagnose. Write takes the lines; WriteText or WriteJSON prints the result.
type Report struct {
	buf     lineBuf
	entries map[reportKey]*ReportEntry
	order   []reportKey
	// Seen counts the journeys, one-way reports and paths read; Failing those that
	// were not a success and got a diagnosis; Undiagnosed those that were not a success
	// without one (a connection's end: its socket freed what was queued; tracing
	// stopped); Unparsed the lines that did not parse; Dropped the failing ones left
	// out once MaxReportEntries flows were held.
	Seen, Failing, Undiagnosed, Unparsed, Dropped int
}

// MaxReportEntries bounds the flows a Report holds; maxReportLine one line.
const (
	MaxReportEntries = 1000
	maxReportLine    = 16 << 20
)

type reportKey struct {
	proto, src, dst, node, cause string
}

// ReportEntry is one failing flow: its client address (any source port), its
// destination, the node and verdict where it failed, and the diagnosis.
type ReportEntry struct {
	Kind      string            `json:"kind"` // "diagnosis"
	Proto     string            `json:"proto"`
	Src       string            `json:"src"` // the client's address, all its source ports
	Dst       string            `json:"dst"`
	Node      string            `json:"node"`
	Verdict   string            `json:"verdict"`
	Where     string            `json:"where,omitempty"`
	Summary   string            `json:"summary"`
	Count     int               `json:"count"`
	FirstTNs  int64             `json:"first_t_ns"`
	LastTNs   int64             `json:"last_t_ns"`
	Diagnosis *decode.Diagnosis `json:"diagnosis,omitempty"`
}

// NewReport returns an empty report.
func NewReport() *Report { return &Report{entries: map[reportKey]*ReportEntry{}} }

// Write takes JSON lines; a line cut across calls is joined. A line longer than
// maxReportLine is skipped and counted unparsed.
func (r *Report) Write(p []byte) (int, error) {
	r.buf.max = maxReportLine
	r.buf.write(p, r.line)
	r.Unparsed += r.buf.over
	r.buf.over = 0
	return len(p), nil
}

func (r *Report) line(b []byte) {
	if len(bytes.TrimSpace(b)) == 0 {
		return
	}
	var head struct {
		Kind string `json:"kind"`
	}
	if json.Unmarshal(b, &head) != nil {
		r.Unparsed++
		return
	}
	switch head.Kind {
	case "journey":
		var x JourneyJSON
		if json.Unmarshal(b, &x) != nil {
			r.Unparsed++
			return
		}
		r.Seen++
		if x.Diagnosis == nil {
			if x.Verdict != "delivered" && x.Verdict != "forwarded" {
				r.Undiagnosed++
			}
			return
		}
		first := int64(0)
		if len(x.Hops) > 0 {
			first = x.Hops[0].TNs
		}
		r.add(x.Flow, x.Node, x.Verdict, x.Where, x.Summary, first, BoundDiagnosis(x.Diagnosis))
	case "oneway":
		var x OneWayJSON
		if json.Unmarshal(b, &x) != nil {
			r.Unparsed++
			return
		}
		r.Seen++
		r.add(x.Flow, x.Node, "one-way", x.LeftVia, x.Summary, x.FirstTNs, BoundDiagnosis(x.Diagnosis))
	case "path":
		var x PathJSON
		if json.Unmarshal(b, &x) != nil || len(x.Legs) == 0 {
			r.Unparsed++
			return
		}
		r.Seen++
		last := x.Legs[len(x.Legs)-1]
		if x.Diagnosis == nil {
			if x.Verdict != "delivered" && x.Verdict != "forwarded" {
				r.Undiagnosed++
			}
			return
		}
		first := int64(0)
		if len(x.Legs[0].Hops) > 0 {
			first = x.Legs[0].Hops[0].TNs
		}
		r.add(x.Flow, last.Node, x.Verdict, last.Where, x.Summary, first, BoundDiagnosis(x.Diagnosis))
	}
}

func (r *Report) add(f FlowJSON, node, verdict, where, summary string, t int64, d *decode.Diagnosis) {
	r.Failing++
	src := f.Src
	if ap, err := netip.ParseAddrPort(src); err == nil {
		src = ap.Addr().String()
	}
	cause := ""
	if d != nil {
		cause = d.Cause
	}
	k := reportKey{proto: f.Proto, src: src, dst: f.Dst, node: node, cause: cause}
	e := r.entries[k]
	if e == nil {
		if len(r.entries) >= MaxReportEntries {
			r.Dropped++
			return
		}
		e = &ReportEntry{Kind: "diagnosis", Proto: f.Proto, Src: src, Dst: f.Dst, Node: node, FirstTNs: t}
		r.entries[k] = e
		r.order = append(r.order, k)
	}
	e.Count++
	e.Verdict, e.Where, e.Summary, e.Diagnosis = verdict, where, summary, d // the latest
	e.FirstTNs = min(e.FirstTNs, t)
	e.LastTNs = max(e.LastTNs, t)
}

// Entries are the failing flows, most frequent first.
func (r *Report) Entries() []*ReportEntry {
	out := make([]*ReportEntry, 0, len(r.order))
	for _, k := range r.order {
		out = append(out, r.entries[k])
	}
	sort.SliceStable(out, func(i, k int) bool { return out[i].Count > out[k].Count })
	return out
}

// Segments are the parts of a packet's path in the order a packet from a pod to a
// pod on another node crosses them, as the report's segment line shows them.
var Segments = []string{decode.SegPod, decode.SegVeth, decode.SegBridge, decode.SegNetfilter, decode.SegRouting,
	decode.SegTunnel, decode.SegUplink, decode.SegUnderlay, decode.SegOtherNode}

// SegmentLine is the path's segments with the failing one in brackets: "pod → veth →
// [bridge] → ..."; the application is its own segment after the path.
func SegmentLine(seg string) string {
	parts := make([]string, 0, len(Segments)+1)
	for _, s := range Segments {
		if s == seg {
			s = "[" + s + "]"
		}
		parts = append(parts, s)
	}
	if seg == decode.SegApp {
		parts = append(parts, "["+seg+"]")
	}
	return strings.Join(parts, " → ")
}

// WriteText prints the report: a line of totals, then one block per failing flow.
func (r *Report) WriteText(w io.Writer, took time.Duration) error {
	es := r.Entries()
	fmt.Fprintf(w, "pathtrace diagnose: %d failing flow(s) in %s; %d journeys and reports read, %d diagnosed, %d not a success without a fault (a connection's end, tracing stopped)\n",
		len(es), took.Round(time.Millisecond), r.Seen, r.Failing, r.Undiagnosed)
	if r.Dropped > 0 {
		fmt.Fprintf(w, "pathtrace diagnose: %d failing packets of flows beyond the first %d were not summed up\n", r.Dropped, MaxReportEntries)
	}
	if r.Unparsed > 0 {
		fmt.Fprintf(w, "pathtrace diagnose: %d lines did not parse\n", r.Unparsed)
	}
	for _, e := range es {
		fmt.Fprintln(w)
		times := "once"
		if e.Count > 1 {
			times = fmt.Sprintf("%d times", e.Count)
		}
		fmt.Fprintf(w, "%s %s → %s on %s: %s, %s\n", e.Proto, e.Src, e.Dst, e.Node, e.Verdict, times)
		seg := ""
		if e.Diagnosis != nil {
			seg = e.Diagnosis.Segment
		}
		if seg != "" {
			fmt.Fprintf(w, "  segment: %s\n", SegmentLine(seg))
		}
		fmt.Fprintf(w, "  verdict: %s\n", e.Summary)
		WriteDiagnosis(w, e.Diagnosis, "  ")
	}
	if len(es) == 0 {
		fmt.Fprintln(w, "no failing flow: every packet followed was delivered or forwarded, or ended with its connection")
	}
	return nil
}

// WriteJSON prints one line per failing flow.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, e := range r.Entries() {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}
