package pathview_test

import (
	"bytes"
	"fmt"
	"html"
	"slices"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/exporter/pathview"
)

// Every packet of follow's output is a section whose hops are elements in time order,
// with the node, interface, kind, direction and mark a user reads.
func TestHopsInOrder(t *testing.T) {
	p, page := fixturePage(t)
	if p.Packets() != 5 || p.LeftOut() != 0 || p.Unreadable() != 0 {
		t.Fatalf("packets %d, left out %d, unreadable %d", p.Packets(), p.LeftOut(), p.Unreadable())
	}
	hops, _ := parseDOM(t, page)
	for pk, want := range wantHops {
		if got := hopStrings(hops[pk]); !slices.Equal(got, want) {
			t.Errorf("packet %s hops:\n%s\nwant\n%s", pk, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	// Latency from the hop before, as follow's text shows it.
	var deltas []string
	for _, h := range hops["1"] {
		deltas = append(deltas, h.delta)
	}
	if want := []string{"start", "+9µs", "+21µs", "+15000µs"}; !slices.Equal(deltas, want) {
		t.Errorf("packet 1 deltas %q, want %q", deltas, want)
	}
	if d := hops["2"][3].delta; d != "+32µs" {
		t.Errorf("the drop's delta %q, want +32µs (after the FORWARD hop)", d)
	}
}

// The NAT marker sits on the hop where the addresses changed, and says from what to
// what; no other hop has one.
func TestNATMarker(t *testing.T) {
	_, page := fixturePage(t)
	hops, _ := parseDOM(t, page)
	for _, pk := range []string{"1", "2", "3", "4", "5"} {
		for _, h := range hops[pk] {
			want := ""
			if pk == "1" && h.ifname == "flannel.1" {
				want = "DNAT 10.96.0.20:80 → 10.244.1.7:8080"
			}
			if h.nat != want {
				t.Errorf("packet %s hop %s: nat %q, want %q", pk, h, h.nat, want)
			}
			if want != "" && !slices.Contains(h.text, want) {
				t.Errorf("packet %s hop %s: the marker's text is not drawn: %q", pk, h, h.text)
			}
		}
	}
}

// The drop is marked with the kernel's reason and the rule, and the diagnosis (cause
// and fix) is written under the picture.
func TestDropMark(t *testing.T) {
	p, page := fixturePage(t)
	hops, tags := parseDOM(t, page)
	drop := hops["2"][3]
	joined := strings.Join(drop.text, "\n")
	for _, want := range []string{"dropped", "NETFILTER_DROP", "NETFILTER_DROP at nft_do_chain+0x2c8",
		"dropped by inet/filter/forward rule handle 7: ip daddr 10.96.0.10 udp dport 53 counter drop"} {
		if !slices.Contains(drop.text, want) {
			t.Errorf("drop mark lacks %q:\n%s", want, joined)
		}
	}
	var details string
	for _, n := range tags["section"] {
		if attr(n, "data-packet") == "2" {
			details = strings.Join(texts(n), "\n")
		}
	}
	for _, want := range []string{"cause\npolicy [netfilter]: an nftables rule in inet filter forward dropped it",
		"fix\nnft delete rule inet filter forward handle 7", "drop\nnode-a: NETFILTER_DROP at nft_do_chain+0x2c8 (dev cni0)"} {
		if !strings.Contains(details, want) {
			t.Errorf("packet 2's text lacks %q:\n%s", want, details)
		}
	}
	if strings.Contains(string(page), "dropped: dropped") || !strings.Contains(details, "dropped: NETFILTER_DROP at nft_do_chain") {
		t.Errorf("packet 2's headline: the verdict twice, or not at all:\n%s", details)
	}
	l := p.Layout()[1]
	if l.Marked != 3 || l.Boxes[3].Mark != pathview.MarkDrop {
		t.Errorf("layout: marked %d, boxes %+v", l.Marked, l.Boxes)
	}
	// The stall is marked on the hop after the delay, with the delay.
	stall := hops["1"][3]
	if !slices.Contains(stall.text, "stalled 15ms after flannel.1 egress") {
		t.Errorf("stall mark %q", stall.text)
	}
}

// A path is drawn over one lane per node, the crossing between them a connector
// labelled with the outer header and the latency; a path lost on the underlay ends
// in a lost mark in the next node's lane.
func TestCrossing(t *testing.T) {
	p, page := fixturePage(t)
	_, tags := parseDOM(t, page)
	var lanes, cross []string
	for _, n := range tags["text"] {
		switch attr(n, "class") {
		case "lanename":
			lanes = append(lanes, strings.Join(texts(n), ""))
		case "crosstext":
			cross = append(cross, strings.Join(texts(n), ""))
		}
	}
	// Lanes: packets 1 and 2 on node-a, 3 and 4 on node-a and node-b, 5 on node-a.
	if want := []string{"node-a", "node-a", "node-a", "node-b", "node-a", "node-b", "node-a"}; !slices.Equal(lanes, want) {
		t.Errorf("lanes %q, want %q", lanes, want)
	}
	if want := []string{"vxlan vni 1 udp/8472", "10.0.0.11 → 10.0.0.12", "+60µs on the wire (same clock)",
		"underlay: nothing arrived"}; !slices.Equal(cross, want) {
		t.Errorf("crossing labels %q, want %q", cross, want)
	}
	l := p.Layout()
	a, b := l[2].Boxes[1], l[2].Boxes[2]
	if b.Rect.Y-a.Rect.Y != pathview.LaneH || b.Rect.X-a.Rect.X != pathview.ColW+pathview.CrossW {
		t.Errorf("node-b's eth0 at %+v, node-a's at %+v: want a lane down and a crossing column right", b.Rect, a.Rect)
	}
	if lost := l[3]; lost.Marked != 2 || lost.Boxes[2].Node != "node-b" || lost.Boxes[2].Rect.Y <= lost.Boxes[1].Rect.Y {
		t.Errorf("lost path layout %+v", lost)
	}
}

// Names come from the cluster: a pod named <script>... is text, in the title, in
// attributes and in labels, never markup; the page loads nothing.
func TestEscaping(t *testing.T) {
	_, page := fixturePage(t)
	if bytes.Contains(bytes.ToLower(page), []byte("<script")) {
		t.Fatal("the page has a <script")
	}
	if !bytes.Contains(page, []byte("pod default/&lt;script&gt;alert(1)&lt;/script&gt;")) {
		t.Error("the hostile pod name is not shown escaped")
	}
	hostile := `{"kind":"journey","id":"1","node":"n\"><img src=x onerror=alert(1)>","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:2"},` +
		`"hops":[{"node":"<b>x</b>","ifname":"eth0\" onmouseover=\"alert(1)","kind":"pod","dir":"ingress","t_ns":1}],"verdict":"delivered","summary":"</svg><script>x</script>"}` + "\n"
	p := pathview.New(`</title><script>alert("t")</script>`)
	p.Write([]byte(hostile))
	page = render(t, p)
	hops, tags := parseDOM(t, page)
	for _, tag := range []string{"script", "img", "b", "iframe", "link"} {
		if len(tags[tag]) > 0 {
			t.Errorf("the page has a <%s> element", tag)
		}
	}
	if h := hops["1"]; len(h) != 1 || h[0].ifname != `eth0" onmouseover="alert(1)` || h[0].node != "<b>x</b>" {
		t.Errorf("hostile attributes did not read back as text: %+v", h)
	}
	for _, n := range append(tags["g"], tags["svg"]...) {
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") {
				t.Errorf("attribute %s=%q", a.Key, a.Val)
			}
		}
	}
	if meta := tags["meta"]; len(meta) < 2 || attr(meta[1], "content") != "default-src 'none'; style-src 'unsafe-inline'; img-src data:" {
		t.Error("no Content-Security-Policy")
	}
	_, page = fixturePage(t)
	for _, bad := range []string{"https://", "src=", "href=", "url(", "@import"} {
		if bytes.Contains(page, []byte(bad)) {
			t.Errorf("the page has %q: it must load nothing", bad)
		}
	}
	if n := bytes.Count(page, []byte("http://")); n != bytes.Count(page, []byte(`xmlns="http://www.w3.org/2000/svg"`)) {
		t.Errorf("the page has a URL besides the SVG namespace")
	}
}

// The page keeps SetMax packets and counts the rest, skips lines that are too long or
// not JSON (and says how many), ignores other kinds of line, and draws MaxSteps boxes
// of a packet at most.
func TestBounds(t *testing.T) {
	p := pathview.New("bounds")
	p.SetMax(2)
	p.Write(fixture(t))
	p.Write([]byte(`{"kind":"agent","node":"x"}` + "\nnot json\n"))
	long := `{"kind":"journey","summary":"` + strings.Repeat("x", pathview.MaxLine) + `"}` + "\n"
	for i := 0; i < len(long); i += 4096 {
		p.Write([]byte(long[i:min(i+4096, len(long))]))
	}
	if p.Packets() != 2 || p.LeftOut() != 3 || p.Unreadable() != 2 {
		t.Errorf("packets %d left out %d unreadable %d, want 2 3 2", p.Packets(), p.LeftOut(), p.Unreadable())
	}
	page := render(t, p)
	for _, want := range []string{"3 more packets left out: the page keeps the first 2.",
		fmt.Sprintf("2 lines were not JSON or longer than %d bytes, left out.", pathview.MaxLine)} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("the page does not say %q", want)
		}
	}
	var hops []string
	for i := range pathview.MaxSteps + 7 {
		hops = append(hops, fmt.Sprintf(`{"node":"n","ifname":"if%d","kind":"pod","dir":"egress","t_ns":%d,"delta_ns":1000}`, i, i+1))
	}
	line := `{"kind":"journey","node":"n","flow":{"proto":"udp","src":"10.0.0.1:1","dst":"10.0.0.2:2"},"hops":[` + strings.Join(hops, ",") + `],"verdict":"forwarded"}` + "\n"
	p = pathview.New("steps")
	p.Write([]byte(line))
	page = render(t, p)
	dom, _ := parseDOM(t, page)
	if n := len(dom["1"]); n != pathview.MaxSteps {
		t.Errorf("%d steps drawn, want %d", n, pathview.MaxSteps)
	}
	if !bytes.Contains(page, []byte(fmt.Sprintf("7 more steps not drawn (at most %d per packet)", pathview.MaxSteps))) {
		t.Error("the page does not say how many steps it left out")
	}
	// A label is cut, not the page.
	p = pathview.New("long")
	p.Write([]byte(`{"kind":"oneway","node":"` + strings.Repeat("n", 10000) + `","flow":{"proto":"tcp"},"summary":"s"}` + "\n"))
	if page := render(t, p); len(page) > 20000 {
		t.Errorf("a 10 kB node name made a %d-byte page", len(page))
	}
}

// Lines cut anywhere across writes make the same page.
func TestWriteSplit(t *testing.T) {
	in := fixture(t)
	_, whole := fixturePage(t)
	for _, size := range []int{1, 7, 100, 1000} {
		p := pathview.New("pathtrace follow 10.244.0.5")
		for i := 0; i < len(in); i += size {
			p.Write(in[i:min(i+size, len(in))])
		}
		if got := render(t, p); !bytes.Equal(got, whole) {
			t.Errorf("written %d bytes at a time, the page differs", size)
		}
	}
}

// The geometry is fixed: boxes left to right in time order, every section below the
// last, whatever the text.
func TestLayout(t *testing.T) {
	p, _ := fixturePage(t)
	ls := p.Layout()
	if len(ls) != 5 || ls[0].SVG.Y != pathview.HeaderH || ls[0].SVG.X != pathview.PadX {
		t.Fatalf("layout %+v", ls)
	}
	for i, l := range ls {
		for k := 1; k < len(l.Boxes); k++ {
			if l.Boxes[k].Rect.X <= l.Boxes[k-1].Rect.X {
				t.Errorf("packet %d box %d left of the one before", i+1, k)
			}
		}
		if i > 0 && l.SVG.Y < ls[i-1].SVG.Y+ls[i-1].SVG.H {
			t.Errorf("packet %d overlaps the one before", i+1)
		}
	}
	// Packet 2 (the drop) comes after packet 1's picture and its text.
	if want := pathview.HeaderH + ls[0].SVG.H + pathview.DetailsH + pathview.SectionGap; ls[1].SVG.Y != want {
		t.Errorf("packet 2 at y=%d, want %d", ls[1].SVG.Y, want)
	}
}

// The text under a marked box (a whole rule, as iptables prints it) and along a
// crossing fits in its picture: the picture is widened for it, at some 6 px a
// character of the 11px font, rather than cutting it at its right edge.
func TestLongTextFits(t *testing.T) {
	long := "dropped by filter/FORWARD rule 1: -A FORWARD -d 10.96.0.10/32 -p udp -m udp --dport 53 -m comment --comment \\\"kube-system/kube-dns:dns has no endpoints\\\" -j REJECT --reject-with icmp-port-unreachable"
	in := strings.ReplaceAll(string(fixture(t)), "dropped by inet/filter/forward rule handle 7: ip daddr 10.96.0.10 udp dport 53 counter drop", long)
	if in == string(fixture(t)) {
		t.Fatal("the fixture has no rule to make long")
	}
	p := pathview.New("long")
	p.Write([]byte(in))
	page := string(render(t, p))
	checked := 0
	for _, sec := range strings.Split(page, "<svg ")[1:] {
		var w int
		if _, err := fmt.Sscanf(sec[strings.Index(sec, `width="`):], `width="%d"`, &w); err != nil {
			t.Fatal(err)
		}
		for _, class := range []string{"marktext", "crosstext", "tunnel"} {
			for _, el := range strings.Split(sec, `<text class="`+class+`" x="`)[1:] {
				var x int
				fmt.Sscanf(el, "%d", &x)
				text := el[strings.Index(el, ">")+1 : strings.Index(el, "</text>")]
				text = html.UnescapeString(text)
				if need := x + 6*len([]rune(text)); need > w {
					t.Errorf("%s %q at x %d needs %d px, the picture is %d wide", class, text, x, need, w)
				}
				checked++
			}
		}
	}
	if checked == 0 || !strings.Contains(page, "kube-dns:dns has no endpoints") {
		t.Fatalf("no text checked (%d), or the long rule is not on the page", checked)
	}
}

// BenchmarkPageWrite: a capture hands its page every journey it writes, as a JSON line.
func BenchmarkPageWrite(b *testing.B) {
	lines := bytes.SplitAfter(fixture(b), []byte("\n"))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		p := pathview.New("bench")
		for _, l := range lines {
			p.Write(l)
			n++
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/line")
}
