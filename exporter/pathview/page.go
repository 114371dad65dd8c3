package pathview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"strings"
	"unicode/utf8"
)

// Bounds of a page; SetMax changes the first.
const (
	DefaultMaxPackets = 200     // packets kept; those after are counted, not drawn
	MaxLine           = 1 << 20 // bytes of one JSON line; a longer one is counted as unreadable
	MaxSteps          = 40      // boxes drawn per packet (hops, the drop); the rest are counted
)

// Page gathers follow's JSON lines and renders them as one HTML document. It is an
// io.Writer: lines may arrive cut across writes. It is not safe for concurrent use.
type Page struct {
	title      string
	max        int
	packets    []*packet
	leftOut    int // packets beyond max
	unreadable int // lines that were not JSON, or longer than MaxLine
	partial    []byte
	skip       bool // the rest of an overlong line is still coming
}

// New returns an empty page with this title.
func New(title string) *Page {
	return &Page{title: clip(title), max: DefaultMaxPackets}
}

// SetMax sets how many packets the page keeps (at least 1); those after are counted.
func (p *Page) SetMax(n int) { p.max = max(n, 1) }

// Packets is how many packets the page draws; LeftOut how many it counted without
// keeping; Unreadable the lines that were not JSON or too long.
func (p *Page) Packets() int    { return len(p.packets) }
func (p *Page) LeftOut() int    { return p.leftOut }
func (p *Page) Unreadable() int { return p.unreadable }

// Full reports whether the page keeps no more packets: a writer may then count a
// packet with LeaveOut instead of encoding it for Write.
func (p *Page) Full() bool { return len(p.packets) >= p.max }

// LeaveOut counts a packet the page does not keep, as Write does beyond the limit.
func (p *Page) LeaveOut() { p.leftOut++ }

// Write takes JSON lines; it never fails.
func (p *Page) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if !p.skip {
				if len(p.partial)+len(b) > MaxLine {
					p.partial, p.skip = p.partial[:0], true
					p.unreadable++
				} else {
					p.partial = append(p.partial, b...)
				}
			}
			break
		}
		l := b[:i]
		b = b[i+1:]
		if p.skip {
			p.skip = false
			continue
		}
		if len(p.partial) > 0 {
			if len(p.partial)+len(l) > MaxLine {
				p.partial = p.partial[:0]
				p.unreadable++
				continue
			}
			l = append(p.partial, l...)
			p.partial = p.partial[:0]
		}
		p.line(l)
	}
	return n, nil
}

func (p *Page) line(b []byte) {
	if len(bytes.TrimSpace(b)) == 0 {
		return
	}
	// One decoding for a packet the page keeps (this runs for every packet a capture
	// writes); the kind alone when the page is full, or when the line does not decode
	// as a packet (then it may be another kind of line, which is no error).
	if !p.Full() {
		var x lineIn
		if err := json.Unmarshal(b, &x); err == nil {
			if isPacket(x.Kind) {
				p.packets = append(p.packets, build(&x, len(p.packets)+1, MaxSteps))
			}
			return
		}
	}
	var kind struct {
		Kind string `json:"kind"`
	}
	switch err := json.Unmarshal(b, &kind); {
	case err != nil:
		p.unreadable++
	case !isPacket(kind.Kind):
	case p.Full():
		p.leftOut++
	default:
		p.unreadable++ // a packet's line that does not decode as one
	}
}

// isPacket: the kinds of line a page draws.
func isPacket(kind string) bool { return kind == "journey" || kind == "path" || kind == "oneway" }

// Geometry, in CSS pixels. None of it depends on text, so Layout can tell where each
// box is drawn.
const (
	HeaderH    = 76 // the page's header, fixed
	SectionGap = 16 // between packets
	PadX       = 16 // left of every section
	TitleH     = 70 // the packet's three title lines, at the top of its picture
	LaneLabelW = 130
	ColW       = 150 // a hop's column
	CrossW     = 200 // the column an underlay crossing takes
	BoxW       = 130
	BoxH       = 64
	TabH       = 10 // the coloured strip at the top of every box
	LaneH      = 156
	natBand    = 32 // above the box in a lane: the NAT marker
	DetailsH   = 168
	minWidth   = 640
	textRoom   = 300 // right of the last box, for the labels under it
)

// Colours of the boxes' strips (a marked box is filled with its mark's colour).
const (
	ColourHop   = "#4a78b5"
	ColourDrop  = "#d62728"
	ColourStall = "#f0a30a"
	ColourLost  = "#8c1c8c"
)

// place gives every step its box and draws the connectors.
func (p *packet) place(pending []pendingConn) {
	x := LaneLabelW + 10
	for i, s := range p.Steps {
		if i > 0 {
			x += ColW
			if s.crossIn {
				x += CrossW
			}
		}
		s.X = x
		s.Y = TitleH + s.Lane*LaneH + natBand
	}
	p.Width = max(minWidth, x+BoxW+textRoom)
	p.Height = TitleH + max(len(p.Lanes), 1)*LaneH
	crossed := map[int]bool{}
	defer p.fitText()
	for _, c := range pending {
		if c.to <= 0 || c.to > len(p.Steps) || c.from >= len(p.Steps) {
			continue
		}
		a, b := p.Steps[c.from], p.Steps[c.to-1]
		crossed[c.to-1] = true
		ay, by := a.Y+BoxH/2, b.Y+BoxH/2
		mid := a.X + ColW + 16
		conn := connector{D: fmt.Sprintf("M%d %d H%d V%d H%d", a.X+BoxW, ay, mid, by, b.X), TX: mid + 8, Lost: c.lost, Lines: c.text}
		conn.TY = (ay+by)/2 - 7*len(c.text) + 10
		if ay == by {
			conn.TY = ay + 18
		}
		p.Conns = append(p.Conns, conn)
	}
	for i := 1; i < len(p.Steps); i++ {
		if crossed[i] {
			continue
		}
		a, b := p.Steps[i-1], p.Steps[i]
		p.Conns = append(p.Conns, connector{D: fmt.Sprintf("M%d %d L%d %d", a.X+BoxW, a.Y+BoxH/2, b.X, b.Y+BoxH/2)})
	}
}

// textW is a generous width of a line of the 11px text under the boxes and along the
// crossings (sans-serif averages some 6 px a character), so that the picture is wide
// enough for it rather than cutting it at its edge.
func textW(s string) int { return utf8.RuneCountInString(s)*7 + 8 }

// fitText widens the picture to the longest line of text drawn under a box or along a
// crossing. Only the width depends on text: the boxes stay where they are.
func (p *packet) fitText() {
	for _, s := range p.Steps {
		for _, t := range append([]string{s.Tunnel}, s.MarkText...) {
			p.Width = max(p.Width, s.X+textW(t))
		}
	}
	for _, c := range p.Conns {
		for _, t := range c.Lines {
			p.Width = max(p.Width, c.TX+textW(t))
		}
	}
}

// Rect is a box in page pixels (CSS pixels from the document's top left corner).
type Rect struct{ X, Y, W, H int }

// Box is where one step of a packet is drawn.
type Box struct {
	Index        int
	Node, Ifname string
	Kind, Mark   string
	Rect         Rect
	// Probe is a pixel of the box's coloured strip, which no text covers: the mark's
	// colour for a marked box, ColourHop for the others.
	ProbeX, ProbeY int
}

// PacketLayout is where a packet's picture is on the page.
type PacketLayout struct {
	SVG    Rect
	Boxes  []Box
	Marked int // index in Boxes of the first marked step, -1 for none
}

// Layout says where every packet's picture and boxes are on the rendered page.
func (p *Page) Layout() []PacketLayout {
	out := make([]PacketLayout, 0, len(p.packets))
	top := HeaderH
	for _, pk := range p.packets {
		l := PacketLayout{SVG: Rect{X: PadX, Y: top, W: pk.Width, H: pk.Height}, Marked: pk.marked}
		for _, s := range pk.Steps {
			r := Rect{X: PadX + s.X, Y: top + s.Y, W: BoxW, H: BoxH}
			l.Boxes = append(l.Boxes, Box{Index: s.Index, Node: s.Node, Ifname: s.Ifname, Kind: s.Kind, Mark: s.Mark, Rect: r,
				ProbeX: r.X + BoxW/2, ProbeY: r.Y + TabH/2})
		}
		out = append(out, l)
		top += pk.Height + pk.detailsH() + SectionGap
	}
	return out
}

func (pk *packet) detailsH() int {
	if len(pk.Details) == 0 {
		return 0
	}
	return DetailsH
}

// Render writes the page: one HTML document that loads nothing.
func (p *Page) Render(w io.Writer) error {
	var notes []string
	if p.leftOut > 0 {
		notes = append(notes, fmt.Sprintf("%d more packets left out: the page keeps the first %d.", p.leftOut, p.max))
	}
	if p.unreadable > 0 {
		notes = append(notes, fmt.Sprintf("%d lines were not JSON or longer than %d bytes, left out.", p.unreadable, MaxLine))
	}
	failed := 0
	for _, pk := range p.packets {
		if pk.Bad {
			failed++
		}
	}
	b := &strings.Builder{}
	b.WriteString(strings.Replace(pageHead, "%TITLE%", esc(p.title), 1))
	writeBody(b, p.title, p.packets, failed, notes)
	_, err := io.WriteString(w, b.String())
	return err
}

// esc escapes text for an element's content or a double-quoted attribute.
func esc(s string) string { return html.EscapeString(s) }

// writeBody writes the page's header and one section per packet (see pageHead for
// the sizes the CSS assumes). Every string from the lines goes through esc.
func writeBody(b *strings.Builder, title string, packets []*packet, failed int, notes []string) {
	f := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	f("<header>\n<h1>%s</h1>\n<p>%d packets drawn, %d of them failed.</p>\n", esc(title), len(packets), failed)
	for _, n := range notes {
		f(`<p class="note">%s</p>`, esc(n))
	}
	b.WriteString("\n</header>\n<main>\n")
	for _, pk := range packets {
		f(`<section class="packet" id="packet-%d" data-packet="%d" data-kind="%s" data-verdict="%s">`+"\n", pk.Num, pk.Num, esc(pk.Kind), esc(pk.Verdict))
		f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="packet %d: %s: %s">`+"\n",
			pk.Width, pk.Height, pk.Width, pk.Height, pk.Num, esc(pk.Title), esc(pk.Summary))
		f(`<text class="t1" x="8" y="20">#%d %s</text>`+"\n", pk.Num, esc(pk.Title))
		bad := ""
		if pk.Bad {
			bad = " bad"
		}
		f(`<text class="t2%s" x="8" y="40">%s</text>`+"\n", bad, esc(pk.Headline))
		sep := ""
		if pk.Ends != "" && pk.Note != "" {
			sep = " · "
		}
		f(`<text class="t3" x="8" y="60">%s%s%s</text>`+"\n", esc(pk.Ends), sep, esc(pk.Note))
		for i, l := range pk.Lanes {
			f(`<rect class="lane%d" x="0" y="%d" width="%d" height="%d"/>`+"\n", i%2, TitleH+i*LaneH, pk.Width, LaneH)
			f(`<text class="lanename" x="8" y="%d" data-lane="%d">%s</text>`+"\n", TitleH+i*LaneH+82, i, esc(l))
		}
		for _, c := range pk.Conns {
			class := "link"
			if len(c.Lines) > 0 {
				class = "cross"
				if c.Lost {
					class += " lost"
				}
			}
			f(`<path class="%s" d="%s"/>`+"\n", class, esc(c.D))
			for k, t := range c.Lines {
				f(`<text class="crosstext" x="%d" y="%d">%s</text>`+"\n", c.TX, c.TY+k*14, esc(t))
			}
		}
		for _, st := range pk.Steps {
			class := "hop"
			if st.Mark != "" {
				class += " " + esc(st.Mark)
			}
			f(`<g class="%s" data-hop="%d" data-node="%s" data-ifname="%s" data-kind="%s" data-dir="%s"`, class, st.Index, esc(st.Node), esc(st.Ifname), esc(st.Kind), esc(st.Dir))
			if st.Mark != "" {
				f(` data-mark="%s"`, esc(st.Mark))
			}
			if st.NAT != "" {
				f(` data-nat="%s"`, esc(st.NAT))
			}
			f(` data-delta="%s">`+"\n", esc(st.Delta))
			if st.NAT != "" {
				f(`<path class="natmark" d="M%d %d l6 6 l-6 6 l-6 -6 z"/><text class="nat" x="%d" y="%d">%s</text>`+"\n", st.X+6, st.Y-20, st.X+16, st.Y-10, esc(st.NAT))
			}
			f(`<rect class="box" x="%d" y="%d" width="%d" height="%d"/>`+"\n", st.X, st.Y, BoxW, BoxH)
			f(`<rect class="tab" x="%d" y="%d" width="%d" height="%d"/>`+"\n", st.X, st.Y, BoxW, TabH)
			f(`<text class="label" x="%d" y="%d">%s</text>`+"\n", st.X+6, st.Y+26, esc(st.Label))
			f(`<text class="sub" x="%d" y="%d">%s</text>`+"\n", st.X+6, st.Y+42, esc(st.Sub))
			f(`<text class="delta" x="%d" y="%d">%s</text>`+"\n", st.X+6, st.Y+57, esc(st.Delta))
			if st.Tunnel != "" {
				f(`<text class="tunnel" x="%d" y="%d">%s</text>`+"\n", st.X, st.Y+78, esc(st.Tunnel))
			}
			for k, t := range st.MarkText {
				f(`<text class="marktext" x="%d" y="%d">%s</text>`+"\n", st.X, st.Y+92+k*14, esc(t))
			}
			b.WriteString("</g>\n")
		}
		b.WriteString("</svg>\n")
		if len(pk.Details) > 0 {
			b.WriteString(`<div class="details"><dl>` + "\n")
			for _, d := range pk.Details {
				f("<dt>%s</dt><dd>%s</dd>\n", esc(d.Name), esc(d.Text))
			}
			b.WriteString("</dl></div>\n")
		}
		b.WriteString("</section>\n")
	}
	b.WriteString("</main>\n</body>\n</html>\n")
}
