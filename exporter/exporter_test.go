package exporter_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

const (
	t0 = uint64(5_000_123_456_789) // CLOCK_MONOTONIC of the first hop
	ms = uint64(1_000_000)
)

// clock is what the runner measures at start: wall minus monotonic.
var clock = exporter.Clock{OffsetNs: 1_764_150_000_000_000_000 - int64(t0) + 123}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// forwarded is what the assembler makes of pod A's SYN to a Service on node-a: DNAT
// at cni0, out through flannel.1 and eth0 (VXLAN), with a 15 ms stall before eth0.
func forwarded() *decode.Journey {
	service := decode.Flow{Proto: decode.ProtoTCP, Src: ap("10.244.0.5:43512"), Dst: ap("10.96.0.20:80")}
	backend := decode.Flow{Proto: decode.ProtoTCP, Src: ap("10.244.0.5:43512"), Dst: ap("10.244.1.7:8080")}
	return &decode.Journey{
		ID: 0x8c3f5a0e12d4b7a1, Node: "node-a", Flow: service, TCPFlags: decode.TCPSyn, IPLen: 60,
		Hops: []decode.Hop{
			{Node: "node-a", Ifindex: 7, Ifname: "veth3f8a2c1e", Kind: decode.KindPod, Dir: decode.Ingress, TimeNs: t0, Len: 74, Flow: service, TTL: 64},
			{Node: "node-a", Ifindex: 4, Ifname: "cni0", Kind: decode.KindBridge, Dir: decode.Ingress, TimeNs: t0 + 9_850, Len: 74, Flow: service, TTL: 64},
			{Node: "node-a", Ifindex: 3, Ifname: "flannel.1", Kind: decode.KindOverlay, Dir: decode.Egress, TimeNs: t0 + 31_200, Len: 74, Flow: backend, TTL: 63,
				NAT: &decode.NAT{Type: "dnat", From: "10.96.0.20:80", To: "10.244.1.7:8080"}},
			{Node: "node-a", Ifindex: 2, Ifname: "eth0", Kind: decode.KindUplink, Dir: decode.Egress, TimeNs: t0 + 31_200 + 15*ms, Len: 124, Flow: backend, TTL: 63,
				Outer: &decode.Outer{Kind: decode.TunnelVXLAN, Src: netip.MustParseAddr("192.168.1.10"), Dst: netip.MustParseAddr("192.168.1.11"), SrcPort: 51234, DstPort: 8472, VNI: 1}},
		},
		Verdict: decode.Forwarded, Where: "eth0",
		Stall: &decode.Stall{From: "flannel.1 egress", Hop: "eth0 egress", DeltaNs: 15 * ms},
	}
}

// dropped is a DNS query that nftables drops in the forward chain after cni0.
func dropped() *decode.Journey {
	f := decode.Flow{Proto: decode.ProtoUDP, Src: ap("10.244.0.5:40001"), Dst: ap("10.96.0.10:53")}
	return &decode.Journey{
		ID: 0x00a1b2c3d4e5f607, Node: "node-a", Flow: f, IPLen: 75,
		Hops: []decode.Hop{
			{Node: "node-a", Ifindex: 7, Ifname: "veth3f8a2c1e", Kind: decode.KindPod, Dir: decode.Ingress, TimeNs: t0, Len: 89, Flow: f, TTL: 64},
			{Node: "node-a", Ifindex: 4, Ifname: "cni0", Kind: decode.KindBridge, Dir: decode.Ingress, TimeNs: t0 + 14_000, Len: 89, Flow: f, TTL: 64},
		},
		Drop: &decode.Drop{Reason: "NETFILTER_DROP", Code: 12, Location: "nft_do_chain+0x2c8", Addr: 0xffffffffc0a412c8,
			Ifname: "cni0", Netns: 4026531840, TimeNs: t0 + 52_400},
		Verdict: decode.Dropped, Where: "cni0 ingress",
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func text(t *testing.T, js ...*decode.Journey) []byte {
	t.Helper()
	var b bytes.Buffer
	w := exporter.NewText(&b)
	for _, j := range js {
		n := b.Len()
		if err := w.Write(j); err != nil {
			t.Fatal(err)
		}
		if b.Len() == n {
			t.Fatal("Write left the journey in its buffer")
		}
	}
	return b.Bytes()
}

func TestTextForwarded(t *testing.T) {
	out := text(t, forwarded())
	golden(t, "forwarded", out)
	// What a reader looks for, whatever the golden file says.
	for _, s := range []string{
		"10.244.0.5:43512 → 10.96.0.20:80 TCP [S] len=60\n",
		"+0µs", "+9µs", "+31µs", "+15031µs",
		"vxlan vni=1 192.168.1.10→192.168.1.11",
		"dnat 10.96.0.20:80→10.244.1.7:8080",
		"stall: 15ms between flannel.1 egress and eth0 egress\n",
		"  forwarded via eth0\n\n",
	} {
		if !strings.Contains(string(out), s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	lines := strings.Split(string(out), "\n")
	var hops []string
	for _, l := range lines {
		if strings.Contains(l, "node-a") {
			hops = append(hops, strings.Fields(l)[2]+" "+strings.Fields(l)[3])
		}
	}
	if want := []string{"veth3f8a2c1e ingress", "cni0 ingress", "flannel.1 egress", "eth0 egress"}; !reflect.DeepEqual(hops, want) {
		t.Errorf("hop lines %v, want %v", hops, want)
	}
	// The NAT note only on the hop where the translation happened.
	if n := strings.Count(string(out), "dnat "); n != 1 {
		t.Errorf("%d NAT notes, want 1", n)
	}
}

func TestTextDropped(t *testing.T) {
	out := text(t, dropped())
	golden(t, "dropped", out)
	for _, s := range []string{
		"10.244.0.5:40001 → 10.96.0.10:53 UDP len=75\n",
		"dropped       NETFILTER_DROP at nft_do_chain+0x2c8 (dev cni0)\n",
		"  dropped: NETFILTER_DROP at nft_do_chain+0x2c8 (after cni0 ingress)\n\n",
	} {
		if !strings.Contains(string(out), s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(string(out), "stall") || strings.Contains(string(out), "[") {
		t.Errorf("a UDP journey without stall shows flags or a stall:\n%s", out)
	}
}

func TestTextColumnsAlign(t *testing.T) {
	// Every hop line and the drop line start their interface (or "dropped") column at
	// the same rune offset, whatever the offsets' widths.
	for _, j := range []*decode.Journey{forwarded(), dropped()} {
		var cols []int
		for _, l := range strings.Split(string(text(t, j)), "\n") {
			if i := strings.Index(l, "node-a  "); i >= 0 {
				cols = append(cols, len([]rune(l[:i])))
			}
		}
		if len(cols) < 3 || slices.Min(cols) != slices.Max(cols) {
			t.Errorf("journey %016x: node column at rune offsets %v", j.ID, cols)
		}
	}
	// The column is as wide as its longest name in characters: a name of two-byte
	// characters once padded every line to its width in bytes (FuzzFromJSON's bound on
	// the text's size found it, with a name of U+FFFD, three bytes each).
	wide := dropped()
	wide.Hops[1].Ifname = "brücke-über-straße"
	if s := string(text(t, wide)); !strings.Contains(s, "brücke-über-straße  ingress") || !strings.Contains(s, "veth3f8a2c1e        ingress") {
		t.Errorf("name column of a name with 18 characters in 21 bytes:\n%s", s)
	}
}

func TestTextDropBetweenHops(t *testing.T) {
	// A drop reported before a later hop (a clone dies while the packet goes on) is
	// shown in time order; a drop without reason or device shows neither.
	j := dropped()
	j.Drop.TimeNs = t0 + 5_000
	j.Drop.Reason, j.Drop.Ifname = "", ""
	out := string(text(t, j))
	iVeth, iDrop, iCni := strings.Index(out, "veth3f8a2c1e"), strings.Index(out, "  dropped  "), strings.Index(out, "cni0")
	if !(iVeth < iDrop && iDrop < iCni) {
		t.Errorf("order veth %d, drop %d, cni0 %d:\n%s", iVeth, iDrop, iCni, out)
	}
	if !strings.Contains(out, "+5µs      node-a  dropped       at nft_do_chain+0x2c8\n") {
		t.Errorf("drop line:\n%s", out)
	}
}

func TestHeader(t *testing.T) {
	for _, tc := range []struct {
		j    decode.Journey
		want string
	}{
		{*forwarded(), "10.244.0.5:43512 → 10.96.0.20:80 TCP [S] len=60"},
		{decode.Journey{Flow: decode.Flow{Proto: decode.ProtoTCP, Src: ap("[fd00::5]:443"), Dst: ap("[fd00::7]:50000")},
			TCPFlags: decode.TCPPsh | decode.TCPAck, IPLen: 1500}, "[fd00::5]:443 → [fd00::7]:50000 TCP [P.] len=1500"},
		{decode.Journey{Flow: decode.Flow{Proto: decode.ProtoICMP, Src: ap("10.244.0.5:0"), Dst: ap("10.244.1.7:0")}, IPLen: 84},
			"10.244.0.5 → 10.244.1.7 ICMP len=84"},
		{decode.Journey{Flow: decode.Flow{Proto: 132, Src: ap("10.0.0.1:0"), Dst: ap("10.0.0.2:0")}, IPLen: 48},
			"10.0.0.1 → 10.0.0.2 PROTO-132 len=48"},
	} {
		if got := exporter.Header(&tc.j); got != tc.want {
			t.Errorf("Header = %q, want %q", got, tc.want)
		}
	}
}

func TestOffset(t *testing.T) {
	for ns, want := range map[uint64]string{
		0:             "+0µs",
		999:           "+0µs",
		14_000:        "+14µs",
		14_999:        "+14µs",
		99_999_999:    "+99999µs",
		100 * ms:      "+100.0ms",
		150 * ms:      "+150.0ms",
		150_250_000:   "+150.2ms",
		1_234_567_890: "+1234.6ms",
	} {
		if got := exporter.Offset(ns); got != want {
			t.Errorf("Offset(%d) = %q, want %q", ns, got, want)
		}
	}
}

// decodeLine parses one JSON line generically, keeping numbers exact.
func decodeLine(t *testing.T, line []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%v in %s", err, line)
	}
	return m
}

func jsonLines(t *testing.T, js ...*decode.Journey) [][]byte {
	t.Helper()
	var b bytes.Buffer
	w := exporter.NewJSON(&b, clock)
	for _, j := range js {
		n := b.Len()
		if err := w.Write(j); err != nil {
			t.Fatal(err)
		}
		if b.Len() == n {
			t.Fatal("Write left the journey in its buffer")
		}
	}
	out := b.Bytes()
	if !bytes.HasSuffix(out, []byte("\n")) {
		t.Fatalf("output does not end in a newline: %q", out)
	}
	lines := bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n"))
	if len(lines) != len(js) {
		t.Fatalf("%d lines for %d journeys:\n%s", len(lines), len(js), out)
	}
	return lines
}

func keys(m map[string]any) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	slices.Sort(k)
	return k
}

func num(t *testing.T, v any) int64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%v (%T) is not a number", v, v)
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func obj(t *testing.T, v any) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%v (%T) is not an object", v, v)
	}
	return m
}

func TestJSONForwarded(t *testing.T) {
	j := forwarded()
	m := decodeLine(t, jsonLines(t, j)[0])
	if got, want := keys(m), []string{"flow", "hops", "id", "kind", "len", "node", "stall", "summary", "tcp_flags", "verdict", "where"}; !reflect.DeepEqual(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	if m["id"] != "8c3f5a0e12d4b7a1" || m["node"] != "node-a" || num(t, m["len"]) != 60 || m["tcp_flags"] != "S" {
		t.Errorf("id %v node %v len %v tcp_flags %v", m["id"], m["node"], m["len"], m["tcp_flags"])
	}
	if f := obj(t, m["flow"]); !reflect.DeepEqual(f, map[string]any{"proto": "tcp", "src": "10.244.0.5:43512", "dst": "10.96.0.20:80"}) {
		t.Errorf("flow %v", f)
	}
	if m["verdict"] != "forwarded" || m["where"] != "eth0" || m["summary"] != "forwarded via eth0" {
		t.Errorf("verdict %v where %v summary %v", m["verdict"], m["where"], m["summary"])
	}
	hops, ok := m["hops"].([]any)
	if !ok || len(hops) != 4 {
		t.Fatalf("hops %v", m["hops"])
	}
	want := []struct {
		ifname, dir, kind string
		ifindex           int64
		delta             int64
		nat, vxlan        bool
	}{
		{"veth3f8a2c1e", "ingress", "pod", 7, 0, false, false},
		{"cni0", "ingress", "bridge", 4, 9_850, false, false},
		{"flannel.1", "egress", "overlay", 3, 21_350, true, false},
		{"eth0", "egress", "uplink", 2, 15_000_000, true, true},
	}
	for i, w := range want {
		h := obj(t, hops[i])
		if h["node"] != "node-a" || h["ifname"] != w.ifname || h["dir"] != w.dir || h["kind"] != w.kind || num(t, h["ifindex"]) != w.ifindex {
			t.Errorf("hop %d: %v", i, h)
		}
		if got, want := num(t, h["t_ns"]), int64(j.Hops[i].TimeNs)+clock.OffsetNs; got != want {
			t.Errorf("hop %d: t_ns %d, want monotonic %d + offset %d = %d", i, got, j.Hops[i].TimeNs, clock.OffsetNs, want)
		}
		if got := num(t, h["delta_ns"]); got != w.delta {
			t.Errorf("hop %d: delta_ns %d, want %d", i, got, w.delta)
		}
		if num(t, h["len"]) != int64(j.Hops[i].Len) {
			t.Errorf("hop %d: len %v", i, h["len"])
		}
		if _, has := h["flow"]; has != w.nat {
			t.Errorf("hop %d: flow present %v, want %v (only where NAT changed it)", i, has, w.nat)
		} else if has {
			if f := obj(t, h["flow"]); f["dst"] != "10.244.1.7:8080" || f["src"] != "10.244.0.5:43512" || f["proto"] != "tcp" {
				t.Errorf("hop %d: flow %v", i, f)
			}
		}
		if _, has := h["vxlan"]; has != w.vxlan {
			t.Errorf("hop %d: vxlan present %v", i, has)
		} else if has {
			v := obj(t, h["vxlan"])
			if num(t, v["vni"]) != 1 || v["src"] != "192.168.1.10" || v["dst"] != "192.168.1.11" {
				t.Errorf("hop %d: vxlan %v", i, v)
			}
		}
	}
	// The first hop's wall time, for a person: 2025-11-26.
	if got := num(t, obj(t, hops[0])["t_ns"]); got != 1_764_150_000_000_000_123 {
		t.Errorf("first hop t_ns %d", got)
	}
	s := obj(t, m["stall"])
	if s["hop"] != "eth0 egress" || s["from"] != "flannel.1 egress" || num(t, s["delta_ns"]) != 15_000_000 || len(s) != 3 {
		t.Errorf("stall %v", s)
	}
}

func TestJSONDropped(t *testing.T) {
	j := dropped()
	m := decodeLine(t, jsonLines(t, j)[0])
	if got, want := keys(m), []string{"drop", "flow", "hops", "id", "kind", "len", "node", "summary", "verdict", "where"}; !reflect.DeepEqual(got, want) {
		t.Errorf("keys %v, want %v (no tcp_flags for UDP, no stall)", got, want)
	}
	if m["id"] != "00a1b2c3d4e5f607" {
		t.Errorf("id %v: want 16 hex digits", m["id"])
	}
	if f := obj(t, m["flow"]); f["proto"] != "udp" || f["src"] != "10.244.0.5:40001" || f["dst"] != "10.96.0.10:53" {
		t.Errorf("flow %v", f)
	}
	if m["verdict"] != "dropped" || m["where"] != "cni0 ingress" || m["summary"] != "dropped: NETFILTER_DROP at nft_do_chain+0x2c8 (after cni0 ingress)" {
		t.Errorf("verdict %v where %v summary %v", m["verdict"], m["where"], m["summary"])
	}
	d := obj(t, m["drop"])
	if d["reason"] != "NETFILTER_DROP" || num(t, d["code"]) != 12 || d["location"] != "nft_do_chain+0x2c8" || d["ifname"] != "cni0" {
		t.Errorf("drop %v", d)
	}
	if num(t, d["t_ns"]) != int64(t0+52_400)+clock.OffsetNs {
		t.Errorf("drop t_ns %v", d["t_ns"])
	}
	hops := m["hops"].([]any)
	if len(hops) != 2 || num(t, obj(t, hops[1])["delta_ns"]) != 14_000 {
		t.Errorf("hops %v", hops)
	}
	for i, h := range hops {
		if _, has := obj(t, h)["flow"]; has {
			t.Errorf("hop %d has a flow without NAT", i)
		}
	}

	// A kernel without reasons: no reason key, the code still there.
	j.Drop.Reason, j.Drop.Code, j.Drop.Ifname = "", 0, ""
	d = obj(t, decodeLine(t, jsonLines(t, j)[0])["drop"])
	if got, want := keys(d), []string{"code", "location", "t_ns"}; !reflect.DeepEqual(got, want) {
		t.Errorf("drop keys %v, want %v", got, want)
	}
}

func TestJSONEdgeCases(t *testing.T) {
	// A drop before any hop: hops is an empty list, never null; the reply direction of
	// the journey's flow is no NAT.
	f := decode.Flow{Proto: decode.ProtoICMP, Src: ap("10.244.0.5:0"), Dst: ap("10.244.1.7:0")}
	j := &decode.Journey{ID: 1, Node: "node-b", Flow: f, IPLen: 84, Verdict: decode.Dropped,
		Drop: &decode.Drop{Reason: "NO_SOCKET", Code: 3, Location: "0xffffffff81ed03e5", TimeNs: t0}}
	r := &decode.Journey{ID: 2, Node: "node-b", Flow: f, IPLen: 84, Verdict: decode.Lost, Where: "cni0 ingress",
		Hops: []decode.Hop{{Node: "node-b", Ifname: "cni0", Dir: decode.Ingress, TimeNs: t0, Flow: f.Reverse()}}}
	lines := jsonLines(t, j, r)
	if !bytes.Contains(lines[0], []byte(`"hops":[]`)) {
		t.Errorf("no hops: %s", lines[0])
	}
	m := decodeLine(t, lines[0])
	if fl := obj(t, m["flow"]); fl["src"] != "10.244.0.5" || fl["dst"] != "10.244.1.7" || fl["proto"] != "icmp" {
		t.Errorf("ICMP flow %v", fl)
	}
	if _, has := m["where"]; has {
		t.Errorf("empty where present: %s", lines[0])
	}
	if _, has := m["tcp_flags"]; has {
		t.Errorf("tcp_flags on ICMP: %s", lines[0])
	}
	if m["id"] != "0000000000000001" || m["summary"] != "dropped: NO_SOCKET at 0xffffffff81ed03e5" {
		t.Errorf("id %v summary %v", m["id"], m["summary"])
	}
	h := obj(t, decodeLine(t, lines[1])["hops"].([]any)[0])
	if _, has := h["flow"]; has || h["kind"] != "unknown" {
		t.Errorf("reverse-direction hop: %v", h)
	}
	// Text and JSON do not escape what they print.
	if bytes.Contains(lines[0], []byte(`\u`)) {
		t.Errorf("escaped output: %s", lines[0])
	}
}

// A conntrack entry whose tuples the kernel did not give (no address family) has no
// orig and reply in JSON, rather than "invalid IP"; read back, such tuples, and the
// "invalid IP" of older agents, are unknown. (FuzzPcap:
// testdata/fuzz/FuzzPcap/ifname-not-utf8-ct-unknown.)
func TestJSONConntrackUnknownTuple(t *testing.T) {
	f := decode.Flow{Proto: decode.ProtoTCP, Src: ap("10.244.0.5:1"), Dst: ap("10.244.1.7:2")}
	j := &decode.Journey{ID: 1, Node: "node-a", Flow: f, Verdict: decode.Lost, Where: "FORWARD first",
		Hops: []decode.Hop{{Node: "node-a", Kind: decode.KindNetfilter, Hook: "FORWARD", Prio: "first", TimeNs: t0, Flow: f,
			CT: &decode.CT{State: "new", Answer: f.Reverse()}}}}
	line := jsonLines(t, j)[0]
	if bytes.Contains(line, []byte("invalid")) || bytes.Contains(line, []byte(`"orig"`)) || !bytes.Contains(line, []byte(`"reply":{"proto":"tcp"`)) {
		t.Errorf("unknown orig tuple: %s", line)
	}
	old := bytes.Replace(line, []byte(`"reply":`), []byte(`"orig":{"proto":"proto-0","src":"invalid IP","dst":"invalid IP"},"reply":`), 1)
	var x exporter.JourneyJSON
	if err := json.Unmarshal(old, &x); err != nil {
		t.Fatal(err)
	}
	back, err := exporter.FromJSON(&x)
	if err != nil {
		t.Fatal(err)
	}
	if c := back.Hops[0].CT; c.Orig != (decode.Flow{}) || c.Answer != f.Reverse() {
		t.Errorf("read back: orig %v, reply %v", c.Orig, c.Answer)
	}
}

func TestClock(t *testing.T) {
	c := exporter.Clock{OffsetNs: -5}
	if got := c.Wall(100); got != 95 {
		t.Errorf("Wall = %d", got)
	}
	if got := clock.Wall(t0); got != 1_764_150_000_000_000_123 {
		t.Errorf("Wall(t0) = %d", got)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestWriteErrors(t *testing.T) {
	epipe := errors.New("write |1: broken pipe")
	for name, w := range map[string]exporter.Writer{
		"text": exporter.NewText(failWriter{epipe}),
		"json": exporter.NewJSON(failWriter{epipe}, clock),
	} {
		if err := w.Write(forwarded()); !errors.Is(err, epipe) {
			t.Errorf("%s: Write error %v, want the writer's", name, err)
		}
		if err := w.Write(dropped()); err == nil {
			t.Errorf("%s: second Write after a failure: no error", name)
		}
	}
}
