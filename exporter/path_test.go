package exporter_test

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

// A journey written as JSON by an agent and read back by the follow client is the same
// journey, in wall-clock time, whatever it carries: NAT, VXLAN, conntrack, a drop.
func TestFromJSONRoundTrip(t *testing.T) {
	cfg := nodeA(t)
	clock := exporter.Clock{OffsetNs: 1_700_000_000_000_000_000}
	evs := append(synThroughDNAT(1_000_000), dnsDropped(50_000_000, 0x77)...)
	js := assemble(t, cfg, evs...)
	if len(js) != 2 {
		t.Fatalf("%d journeys, want 2", len(js))
	}
	for _, j := range js {
		x := exporter.ToJSON(j, clock)
		b, _ := json.Marshal(x)
		var back exporter.JourneyJSON
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		got, err := exporter.FromJSON(&back)
		if err != nil {
			t.Fatal(err)
		}
		// Written again it is the same JSON, with the times already on the wall clock.
		again := exporter.ToJSON(got, exporter.Clock{})
		if !reflect.DeepEqual(again, x) {
			a, _ := json.Marshal(again)
			t.Errorf("round trip differs:\n got %s\nwant %s", a, b)
		}
		if got.Summary() != j.Summary() || got.Verdict != j.Verdict || got.ID != j.ID {
			t.Errorf("summary %q, want %q", got.Summary(), j.Summary())
		}
	}
	if _, err := exporter.FromJSON(&exporter.JourneyJSON{Kind: "journey", ID: "zz"}); err == nil {
		t.Error("a bad id was accepted")
	}
}

// A line an agent could not have written is refused, not handed on to crash the
// client: a dropped journey without its drop, a delivered one without the hop that
// delivered it (Journey.Summary names both).
func TestFromJSONIncomplete(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{`{"kind":"journey","id":"0","flow":{"proto":"udp","src":"[::]:0","dst":"[::]:0"},"verdict":"dropped"}`,
			"journey 0: verdict dropped without a drop"},
		{`{"kind":"journey","id":"1","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:2"},"verdict":"delivered"}`,
			"journey 1: verdict delivered without a hop"},
	} {
		var x exporter.JourneyJSON
		if err := json.Unmarshal([]byte(tc.line), &x); err != nil {
			t.Fatal(err)
		}
		j, err := exporter.FromJSON(&x)
		if err == nil {
			t.Errorf("%s: accepted, summary %q", tc.line, j.Summary())
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%s: error %q, want %q", tc.line, err, tc.want)
		}
	}
	// The same journeys complete are read: the drop, the hop, or the drop of a copy.
	for _, line := range []string{
		`{"kind":"journey","id":"0","flow":{"proto":"udp","src":"[::]:0","dst":"[::]:0"},"verdict":"dropped","drop":{"location":"x","t_ns":1}}`,
		`{"kind":"journey","id":"1","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:2"},"verdict":"delivered","hops":[{"ifname":"veth1","kind":"pod","dir":"egress"}]}`,
		`{"kind":"journey","id":"2","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:2"},"verdict":"delivered","where":"veth1","copy_drop":{"location":"x","t_ns":1}}`,
	} {
		var x exporter.JourneyJSON
		if err := json.Unmarshal([]byte(line), &x); err != nil {
			t.Fatal(err)
		}
		j, err := exporter.FromJSON(&x)
		if err != nil {
			t.Errorf("%s: %v", line, err)
			continue
		}
		if s := j.Summary(); !strings.HasPrefix(s, x.Verdict) {
			t.Errorf("%s: summary %q", line, s)
		}
	}
}

// decode.Flow has no ports for protocols without them, and ToJSON writes none: a line
// with one is refused rather than read into a journey that writes differently each
// time it is read. (testdata/fuzz/FuzzFromJSON/icmp-ports.)
func TestFromJSONPortlessProtocols(t *testing.T) {
	line := `{"kind":"journey","id":"1","flow":{"proto":"icmp","src":"10.0.0.1:5","dst":"10.0.0.2"},"hops":[{"ifname":"a","kind":"pod","dir":"ingress","t_ns":1}],"verdict":"lost"}`
	var x exporter.JourneyJSON
	if err := json.Unmarshal([]byte(line), &x); err != nil {
		t.Fatal(err)
	}
	if _, err := exporter.FromJSON(&x); err == nil || err.Error() != `flow endpoint "10.0.0.1:5": icmp has no ports` {
		t.Errorf("error %v", err)
	}
	x.Flow.Src = "10.0.0.1"
	if j, err := exporter.FromJSON(&x); err != nil || j.Flow.Src.Port() != 0 {
		t.Errorf("without the port: %v, %v", j, err)
	}
}

func crossNodePath(t testing.TB, lostOnB bool) *decode.Path {
	t.Helper()
	podA, podB := netip.MustParseAddrPort("10.244.1.23:40000"), netip.MustParseAddrPort("10.244.2.57:8080")
	a, b := netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")
	f := decode.Flow{Proto: decode.ProtoTCP, Src: podA, Dst: podB}
	o := &decode.Outer{Kind: decode.TunnelVXLAN, Src: a, Dst: b, VNI: 1, DstPort: 8472}
	legA := &decode.Journey{ID: 0xabc, Node: "node-a", Flow: f, TCPFlags: decode.TCPSyn, IPLen: 60, Verdict: decode.Forwarded, Where: "eth0",
		Hops: []decode.Hop{
			{Node: "node-a", Ifname: "veth1a23", Kind: decode.KindPod, Dir: decode.Ingress, TimeNs: 1_000_000, Flow: f},
			{Node: "node-a", Ifname: "eth0", Kind: decode.KindUplink, Dir: decode.Egress, TimeNs: 1_040_000, Flow: f, Outer: o},
		}}
	legB := &decode.Journey{ID: 0xabc, Node: "node-b", Flow: f, TCPFlags: decode.TCPSyn, IPLen: 60, Verdict: decode.Delivered, Where: "veth2b57",
		Hops: []decode.Hop{
			{Node: "node-b", Ifname: "eth0", Kind: decode.KindUplink, Dir: decode.Ingress, TimeNs: 1_100_000, Flow: f, Outer: o},
			{Node: "node-b", Ifname: "veth2b57", Kind: decode.KindPod, Dir: decode.Egress, TimeNs: 1_130_000, Flow: f},
		}}
	nodes := []decode.NodeInfo{
		{Name: "node-a", BootID: "x", Addrs: []netip.Addr{a}, Pods: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
		{Name: "node-b", BootID: "x", Addrs: []netip.Addr{b}, Pods: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
	}
	j := decode.NewJoiner(nodes, time.Second)
	now := time.Unix(1, 0)
	if lostOnB {
		j.Add(legA, now)
		return j.Expire(now.Add(time.Second))[0]
	}
	j.Add(legA, now)
	return j.Add(legB, now)[0]
}

func TestTextPath(t *testing.T) {
	var buf bytes.Buffer
	tx := exporter.NewText(&buf)
	if err := tx.WritePath(crossNodePath(t, false)); err != nil {
		t.Fatal(err)
	}
	want := `10.244.1.23:40000 → 10.244.2.57:8080 TCP [S] len=60
  +0µs      node-a  veth1a23  ingress
  +40µs     node-a  eth0      egress   vxlan vni=1 10.0.0.11→10.0.0.12
            ······  underlay: node-a eth0 egress → node-b eth0 ingress, 60µs (one clock)
  +100µs    node-b  eth0      ingress  vxlan vni=1 10.0.0.11→10.0.0.12
  +130µs    node-b  veth2b57  egress
  delivered to pod via veth2b57 on node-b

`
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
	buf.Reset()
	if err := tx.WritePath(crossNodePath(t, true)); err != nil {
		t.Fatal(err)
	}
	if s := buf.String(); !strings.Contains(s, "underlay: node-a eth0 egress → node-b (10.0.0.12): nothing arrived") ||
		!strings.Contains(s, "lost on the underlay: left node-a eth0 egress, never reached node-b eth0 ingress") {
		t.Errorf("lost path:\n%s", s)
	}
}

func TestJSONPath(t *testing.T) {
	var buf bytes.Buffer
	if err := exporter.NewJSON(&buf, exporter.Clock{}).WritePath(crossNodePath(t, false)); err != nil {
		t.Fatal(err)
	}
	var p exporter.PathJSON
	if err := json.Unmarshal(buf.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Kind != "path" || p.ID != "0000000000000abc" || strings.Join(p.Nodes, ",") != "node-a,node-b" || len(p.Legs) != 2 ||
		len(p.Crossings) != 1 || p.Crossings[0].LatencyNs != 60000 || p.Crossings[0].Clock != "same" || p.Verdict != "delivered" {
		t.Errorf("%s", buf.String())
	}
	buf.Reset()
	exporter.NewJSON(&buf, exporter.Clock{}).WritePath(crossNodePath(t, true))
	if !strings.Contains(buf.String(), `"verdict":"lost_underlay"`) || !strings.Contains(buf.String(), `"next_node":"node-b"`) {
		t.Errorf("%s", buf.String())
	}
}

// Names travel with a journey: in the text header, in the JSON fields, and back from
// JSON; a writer with a Namer names the journeys that come without.
func TestJourneyNames(t *testing.T) {
	p := crossNodePath(t, false)
	j := p.Legs[0]
	j.Names = nil
	var buf bytes.Buffer
	tx := exporter.NewText(&buf)
	tx.SetNamer(fakeNamer{})
	if err := tx.Write(j); err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(buf.String(), "\n"); !strings.HasSuffix(first, "(pod default/api-a → service default/api)") {
		t.Errorf("text header %q", first)
	}
	x := exporter.ToJSON(j, exporter.Clock{})
	if x.SrcPod != "default/api-a" || x.DstService != "default/api" || x.DstPod != "" || x.Names != "" {
		t.Errorf("JSON names: %+v", x)
	}
	back, err := exporter.FromJSON(&x)
	if err != nil || back.Names == nil || *back.Names != *j.Names {
		t.Errorf("names back from JSON: %+v, want %+v (%v)", back.Names, j.Names, err)
	}
	// Names on but not known yet.
	j.Names = &decode.Names{Src: decode.EndpointName{Kind: "pod", Name: "default/api-a"}, Unresolved: true}
	buf.Reset()
	tx.Write(j)
	if x := exporter.ToJSON(j, exporter.Clock{}); x.Names != "unresolved" || !strings.Contains(buf.String(), "(pod default/api-a → unresolved)") {
		t.Errorf("unresolved: %q %+v", buf.String(), x)
	}
}

// fakeNamer names the lab's api-a pod and the VIP 10.244.2.57 as a Service, to tell
// the kinds apart.
type fakeNamer struct{}

func (fakeNamer) NameOf(a netip.Addr) (string, string, bool) {
	switch a.String() {
	case "10.244.1.23":
		return "pod", "default/api-a", false
	case "10.244.2.57":
		return "service", "default/api", false
	}
	return "", "", false
}
