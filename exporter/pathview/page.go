package pathview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
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
	var kind struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(b, &kind); err != nil {
		p.unreadable++
		return
	}
	switch kind.Kind {
	case "journey", "path", "oneway":
	default:
		return
	}
	if len(p.packets) >= p.max {
		p.leftOut++
		return
	}
	var x lineIn
	if err := json.Unmarshal(b, &x); err != nil {
		p.unreadable++
		return
	}
	p.packets = append(p.packets, build(&x, len(p.packets)+1, MaxSteps))
}

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
	return pageTmpl.Execute(w, map[string]any{
		"Title": p.title, "Packets": p.packets, "Failed": failed, "Notes": notes,
		"LeftOut": p.leftOut, "Unreadable": p.unreadable,
	})
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"add": func(a, b int) int { return a + b },
	"mul": func(a, b int) int { return a * b },
	"ifeven": func(i int, a, b string) string {
		if i%2 == 0 {
			return a
		}
		return b
	},
}).Parse(pageHTML))
