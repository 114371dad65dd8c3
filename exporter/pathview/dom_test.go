package pathview_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/pathtrace/pathtrace/exporter/pathview"
)

// fixture is follow's JSON output for five packets (exporter's TestPathviewFixtures
// writes it from the real writers): a SYN through DNAT that stalls before eth0, a
// DNS query dropped by an nftables rule (with a pod named <script>...), a path over
// two nodes with its VXLAN crossing, a path lost on the underlay, a one-way SYN.
func fixture(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/follow.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func render(t testing.TB, p *pathview.Page) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := p.Render(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func fixturePage(t testing.TB) (*pathview.Page, []byte) {
	p := pathview.New("pathtrace follow 10.244.0.5")
	p.Write(fixture(t))
	return p, render(t, p)
}

// hopEl is one step as the DOM has it.
type hopEl struct {
	packet               string
	index, node, ifname  string
	kind, dir, mark, nat string
	delta                string
	text                 []string // the texts inside the step, in order
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func texts(n *html.Node) []string {
	var out []string
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode && strings.TrimSpace(n.Data) != "" {
			out = append(out, n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

// parseDOM reads a page (or chromium's dump of it) and returns its steps by packet
// number, in document order, and the elements by tag name.
func parseDOM(t testing.TB, page []byte) (map[string][]hopEl, map[string][]*html.Node) {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	hops := map[string][]hopEl{}
	tags := map[string][]*html.Node{}
	var walk func(n *html.Node, packet string)
	walk = func(n *html.Node, packet string) {
		if n.Type == html.ElementNode {
			tags[n.Data] = append(tags[n.Data], n)
			if n.Data == "section" {
				packet = attr(n, "data-packet")
			}
			if n.Data == "g" && strings.Contains(" "+attr(n, "class")+" ", " hop ") {
				hops[packet] = append(hops[packet], hopEl{packet: packet, index: attr(n, "data-hop"), node: attr(n, "data-node"),
					ifname: attr(n, "data-ifname"), kind: attr(n, "data-kind"), dir: attr(n, "data-dir"), mark: attr(n, "data-mark"),
					nat: attr(n, "data-nat"), delta: attr(n, "data-delta"), text: texts(n)})
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, packet)
		}
	}
	walk(doc, "")
	return hops, tags
}

// summary is a step as the tests compare it: node/ifname/kind/dir[/mark].
func (h hopEl) String() string {
	s := h.index + " " + h.node + "/" + h.ifname + "/" + h.kind + "/" + h.dir
	if h.mark != "" {
		s += "/" + h.mark
	}
	return s
}

func hopStrings(hs []hopEl) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.String())
	}
	return out
}

// wantHops is what the DOM must have for the fixture, packet by packet: one element
// per hop (and per drop, per missing arrival), in order, with its attributes.
var wantHops = map[string][]string{
	"1": {"0 node-a/veth3f8a2c1e/pod/ingress", "1 node-a/cni0/bridge/ingress", "2 node-a/flannel.1/overlay/egress",
		"3 node-a/eth0/uplink/egress/stall"},
	"2": {"0 node-a/veth3f8a2c1e/pod/ingress", "1 node-a/cni0/bridge/ingress", "2 node-a/cni0/netfilter/FORWARD",
		"3 node-a/cni0/drop/FORWARD/drop"},
	"3": {"0 node-a/veth1a23/pod/ingress", "1 node-a/eth0/uplink/egress", "2 node-b/eth0/uplink/ingress", "3 node-b/veth2b57/pod/egress"},
	"4": {"0 node-a/veth1a23/pod/ingress", "1 node-a/eth0/uplink/egress", "2 node-b//missing//lost"},
	"5": {"0 node-a/eth0/syn/", "1 node-a/eth0/missing//lost"},
}
