package pathview_test

import (
	"bytes"
	"testing"

	"github.com/pathtrace/pathtrace/exporter/pathview"
)

// FuzzPage feeds arbitrary bytes as follow's lines: the page renders, has no markup
// but its own (no <script>, whatever the lines hold), and draws one element per box
// that Layout reports. Inputs are cut to 16 kB, so an iteration stays cheap.
func FuzzPage(f *testing.F) {
	for _, l := range bytes.SplitAfter(fixture(f), []byte("\n")) {
		f.Add(l, uint8(0))
	}
	f.Add(fixture(f), uint8(2))
	f.Add([]byte(`{"kind":"path","legs":[{"hops":[{"node":"a"}]},{"hops":[{"node":"<script>"}]}],"crossings":[{"from_node":"","to_node":""}],"verdict":"node_missing"}`+"\n"), uint8(1))
	// A path whose first leg has no hop (a crash found by this target).
	f.Add([]byte(`{"kind":"path","legs":[{},{"hops":[{"node":"b"}]},{"hops":[{"node":"c"}]}]}`+"\n"), uint8(1))
	f.Add([]byte(`{"kind":"journey","drop":{"t_ns":-1},"stall":{"hop":" ","from":"x"},"hops":[{},{}]}`+"\n"), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, keep uint8) {
		if len(in) > 16<<10 {
			in = in[:16<<10]
		}
		p := pathview.New("fuzz")
		p.SetMax(int(keep))
		p.Write(in)
		var buf bytes.Buffer
		if err := p.Render(&buf); err != nil {
			t.Fatal(err)
		}
		page := buf.Bytes()
		if bytes.Contains(bytes.ToLower(page), []byte("<script")) {
			t.Fatalf("the page has a <script:\n%s", page)
		}
		hops, tags := parseDOM(t, page)
		if len(tags["script"]) > 0 || len(tags["img"]) > 0 {
			t.Fatal("markup from the input")
		}
		boxes, drawn := 0, 0
		for _, l := range p.Layout() {
			boxes += len(l.Boxes)
		}
		for _, h := range hops {
			drawn += len(h)
		}
		if boxes != drawn || p.Packets() > max(int(keep), 1) {
			t.Fatalf("%d boxes in the layout, %d drawn; %d packets kept of max %d", boxes, drawn, p.Packets(), keep)
		}
	})
}
