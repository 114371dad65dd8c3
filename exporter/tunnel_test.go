package exporter_test

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

// tunnelled is pod A's SYN leaving node-a by tunl0 (IPIP, Calico) and then by eth0 in
// Geneve with 8 bytes of options.
func tunnelled() *decode.Journey {
	f := decode.Flow{Proto: decode.ProtoTCP, Src: ap("10.244.0.5:43512"), Dst: ap("10.244.1.7:8080")}
	a, b := netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("192.168.1.11")
	ip := make([]byte, 40)
	ip[0] = 0x45
	return &decode.Journey{
		ID: 0x77, Node: "node-a", Flow: f, TCPFlags: decode.TCPSyn, IPLen: 60,
		Hops: []decode.Hop{
			{Node: "node-a", Ifindex: 5, Ifname: "tunl0", Kind: decode.KindUplink, Dir: decode.Egress, TimeNs: t0, Len: 80, Flow: f, TTL: 63,
				Outer: &decode.Outer{Kind: decode.TunnelIPIP, Src: a, Dst: b}, Data: ip},
			{Node: "node-a", Ifindex: 2, Ifname: "eth0", Kind: decode.KindUplink, Dir: decode.Egress, TimeNs: t0 + 1000, Len: 130, Flow: f, TTL: 63,
				Outer: &decode.Outer{Kind: decode.TunnelGeneve, Src: a, Dst: b, SrcPort: 5000, DstPort: 6081, VNI: 7, Options: 8}, Data: ip},
		},
		Verdict: decode.Forwarded, Where: "eth0",
	}
}

// Every output names the tunnel's kind: the text and pcapng comments, and JSON's tunnel
// field, which the follow client reads back; vxlan stays on VXLAN hops only.
func TestTunnelKinds(t *testing.T) {
	j := tunnelled()
	out := string(text(t, j))
	for _, s := range []string{"ipip 192.168.1.10→192.168.1.11", "geneve vni=7 options=8 192.168.1.10→192.168.1.11"} {
		if !strings.Contains(out, s) {
			t.Errorf("text lacks %q:\n%s", s, out)
		}
	}

	m := decodeLine(t, jsonLines(t, j)[0])
	hops := m["hops"].([]any)
	for i, want := range []map[string]any{
		{"kind": "ipip", "src": "192.168.1.10", "dst": "192.168.1.11"},
		{"kind": "geneve", "src": "192.168.1.10", "dst": "192.168.1.11", "src_port": json.Number("5000"), "port": json.Number("6081"),
			"vni": json.Number("7"), "options": json.Number("8")},
	} {
		h := obj(t, hops[i])
		if got := obj(t, h["tunnel"]); !reflect.DeepEqual(got, want) {
			t.Errorf("hop %d: tunnel %v, want %v", i, got, want)
		}
		if _, has := h["vxlan"]; has {
			t.Errorf("hop %d: a vxlan field on a %s hop", i, want["kind"])
		}
	}
	x := exporter.ToJSON(j, clock)
	back, err := exporter.FromJSON(&x)
	if err != nil {
		t.Fatal(err)
	}
	for i := range j.Hops {
		if got, want := back.Hops[i].Outer, j.Hops[i].Outer; got == nil || *got != *want {
			t.Errorf("hop %d read back: outer %+v, want %+v", i, got, *want)
		}
	}

	// VXLAN hops have both fields; a line of an agent from before the tunnel field
	// (vxlan only) is read as VXLAN.
	h := obj(t, decodeLine(t, jsonLines(t, forwarded())[0])["hops"].([]any)[3])
	if tu, vx := obj(t, h["tunnel"]), obj(t, h["vxlan"]); tu["kind"] != "vxlan" || tu["vni"] != json.Number("1") || tu["port"] != json.Number("8472") ||
		vx["vni"] != json.Number("1") || vx["port"] != json.Number("8472") {
		t.Errorf("VXLAN hop: tunnel %v vxlan %v", tu, vx)
	}
	old := `{"kind":"journey","id":"1","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:2"},"verdict":"forwarded","where":"eth0",` +
		`"hops":[{"ifname":"eth0","kind":"uplink","dir":"egress","vxlan":{"vni":1,"src":"10.0.0.11","dst":"10.0.0.12","port":8472}}]}`
	var ox exporter.JourneyJSON
	if err := json.Unmarshal([]byte(old), &ox); err != nil {
		t.Fatal(err)
	}
	oj, err := exporter.FromJSON(&ox)
	if err != nil {
		t.Fatal(err)
	}
	if o := oj.Hops[0].Outer; o == nil || *o != (decode.Outer{Kind: decode.TunnelVXLAN, Src: netip.MustParseAddr("10.0.0.11"),
		Dst: netip.MustParseAddr("10.0.0.12"), DstPort: 8472, VNI: 1}) {
		t.Errorf("a vxlan-only hop read as %+v", o)
	}

	var pc bytes.Buffer
	p := exporter.NewPcap(&pc, exporter.PcapConfig{Clock: pcapClock})
	if err := p.Write(j); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ipip 192.168.1.10 -> 192.168.1.11", "geneve vni=7 options=8 192.168.1.10:5000 -> 192.168.1.11:6081"} {
		if !bytes.Contains(pc.Bytes(), []byte(s)) {
			t.Errorf("pcapng comments lack %q", s)
		}
	}
}
