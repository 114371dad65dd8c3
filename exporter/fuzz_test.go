package exporter_test

// Fuzz targets for what comes from outside the process: the JSON lines of agents that a
// follow client reads back (FromJSON) and then summarises, writes and joins, and the
// pcapng files written from packet bytes the kernel captured. make fuzz runs them;
// testdata/fuzz/FuzzX holds the inputs of crashes found.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

// agentLines are journeys as agents write them, one JSON line each.
func agentLines(t testing.TB) [][]byte {
	var lines [][]byte
	add := func(x exporter.JourneyJSON) {
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, b)
	}
	add(exporter.ToJSON(forwarded(), clock))
	add(exporter.ToJSON(dropped(), clock))
	for _, j := range assemble(t, nodeA(t), append(synThroughDNAT(1_000_000), dnsDropped(50_000_000, 0x77)...)...) {
		add(exporter.ToJSON(j, clock))
	}
	for _, l := range crossNodePath(t, false).Legs {
		add(exporter.ToJSON(l, exporter.Clock{}))
	}
	// The README's policy drop: conntrack, a rule, netfilter hops.
	lines = append(lines, []byte(`{"kind":"journey","id":"8b8fc13247d26b97","node":"node-b","flow":{"proto":"tcp","src":"10.244.2.57:38318","dst":"10.244.1.42:6379"},"tcp_flags":"S","len":60,"hops":[`+
		`{"node":"node-b","ifname":"veth2b57","ifindex":5,"kind":"pod","dir":"ingress","t_ns":1795694776493522518,"delta_ns":0,"len":74},`+
		`{"node":"node-b","ifname":"cni0","ifindex":3,"kind":"netfilter","t_ns":1795694776493557139,"delta_ns":18870,"len":60,"hook":"PREROUTING","priority":"last","ct":{"state":"new","dir":"original","status":256,"orig":{"proto":"tcp","src":"10.244.2.57:38318","dst":"10.244.1.42:6379"},"reply":{"proto":"tcp","src":"10.244.1.42:6379","dst":"10.244.2.57:38318"}}},`+
		`{"node":"node-b","ifname":"cni0","ifindex":3,"kind":"netfilter","t_ns":1795694776493585705,"delta_ns":9796,"len":60,"hook":"FORWARD","priority":"first","out_ifname":"flannel.1","ct":{"state":"new","dir":"original","status":256}}],`+
		`"verdict":"dropped","where":"FORWARD first","summary":"dropped","drop":{"reason":"NETFILTER_DROP","code":12,"location":"nft_do_chain+0x3e8","ifname":"cni0","hook":"FORWARD","t_ns":1795694776493593559,`+
		`"rule_detail":{"rule":{"family":"ip","table":"filter","chain":"FORWARD","hook":"FORWARD","handle":3,"position":1,"verdict":"drop","has_counter":true,"packets":2,"bytes":120,"text":"-A FORWARD -j DROP","backend":"iptables-nft"},"candidates":1}},`+
		`"src_pod":"default/redis-client","dst_service":"default/redis"}`))
	lines = append(lines, []byte(`{"kind":"journey","id":"2","node":"node-a","flow":{"proto":"icmp","src":"10.0.0.1","dst":"10.0.0.2"},"len":84,"hops":[{"ifname":"veth1","kind":"pod","dir":"egress","t_ns":5}],`+
		`"verdict":"delivered","where":"veth1","copy_drop":{"reason":"NETFILTER_DROP","reason_source":"inferred","inferred_from":"nf_hook_slow","location":"nf_hook_slow+0x1","t_ns":7},"names":"unresolved"}`))
	lines = append(lines, []byte(`{"kind":"oneway","node":"node-a","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:2"},"syns":2}`))
	return lines
}

// The nodes of crossNodePath, as a follow client learns them from their agents
// (readAgentStream adds node-c, whose agent does not answer).
var fuzzNodes = []decode.NodeInfo{
	{Name: "node-a", BootID: "a", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.11")}, Pods: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
	{Name: "node-b", BootID: "b", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.12")}, Pods: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
}

// FuzzFromJSON is a follow client's reading of an agent's stream: each line through
// json.Unmarshal and FromJSON, then everything the client does with a journey (its
// summary, the text and JSON writers) and with the paths the Joiner makes of them.
func FuzzFromJSON(f *testing.F) {
	lines := agentLines(f)
	for _, l := range lines {
		f.Add(l)
	}
	f.Add(bytes.Join(lines, []byte("\n")))
	f.Fuzz(readAgentStream)
}

// FuzzFromJSONFields is FuzzFromJSON with the fields of a journey fuzzed one by one,
// which mutating JSON text reaches only by luck: flows, verdict, hop kinds and
// directions, a hop's own flow and conntrack tuple, a tunnel header (VXLAN as older
// agents wrote it, or any kind), times, a drop.
func FuzzFromJSONFields(f *testing.F) {
	type fields struct {
		proto, src, dst, verdict, kind, dir string
		hopProto, hopSrc, hopDst, ct        string
		vxlanDst, tunnelKind                string
		t1, t2                              int64
		nat, drop                           bool
	}
	for _, s := range []fields{
		{"tcp", "10.244.1.23:40000", "10.244.2.57:8080", "forwarded", "uplink", "egress", "tcp", "10.244.1.23:40000", "10.244.1.7:8080", "new", "10.0.0.12", "", 1_000_000, 1_040_000, true, false},
		{"tcp", "10.244.1.23:40000", "10.244.2.57:8080", "delivered", "pod", "egress", "", "", "", "", "", "geneve", 1_100_000, 1_130_000, false, false},
		{"udp", "[fd00::1]:53", "[fd00::2]:5353", "dropped", "netfilter", "", "udp", "[fd00::1]:53", "[fd00::3]:53", "established", "", "sit", 5, 7, true, true},
		{"icmp", "10.0.0.1", "10.0.0.2", "lost", "bridge", "ingress", "icmp", "10.0.0.1", "10.0.0.9", "invalid", "", "", -1, 1 << 62, false, false},
		{"icmp", "10.0.0.1", "10.0.0.2", "lost", "bridge", "ingress", "icmp", "10.0.0.1", "10.0.0.2", "", "", "ipip", 0, 0, false, false},
	} {
		f.Add(s.proto, s.src, s.dst, s.verdict, s.kind, s.dir, s.hopProto, s.hopSrc, s.hopDst, s.ct, s.vxlanDst, s.tunnelKind, s.t1, s.t2, s.nat, s.drop)
	}
	f.Fuzz(func(t *testing.T, proto, src, dst, verdict, kind, dir, hopProto, hopSrc, hopDst, ct, vxlanDst, tunnelKind string, t1, t2 int64, nat, drop bool) {
		x := exporter.JourneyJSON{Kind: "journey", ID: "abc", Node: "node-a", Flow: exporter.FlowJSON{Proto: proto, Src: src, Dst: dst},
			TCPFlags: "S", Len: 60, Verdict: verdict, Where: "eth0",
			Hops: []exporter.HopJSON{
				{Node: "node-a", Ifname: "veth1a23", Kind: "pod", Dir: "ingress", TNs: t1},
				{Node: "node-a", Ifname: "eth0", Kind: kind, Dir: dir, TNs: t2, Hook: "FORWARD", Priority: "first"},
			}}
		h := &x.Hops[1]
		if hopSrc != "" {
			h.Flow = &exporter.FlowJSON{Proto: hopProto, Src: hopSrc, Dst: hopDst}
		}
		if nat {
			h.NAT = &exporter.NATJSON{Type: "dnat", From: dst, To: hopDst}
		}
		if ct != "" {
			h.CT = &exporter.CTJSON{State: ct, Dir: "original", Orig: &exporter.FlowJSON{Proto: hopProto, Src: hopSrc, Dst: hopDst}}
		}
		if vxlanDst != "" {
			h.VXLAN = &exporter.VXLANJSON{VNI: 1, Src: "10.0.0.11", Dst: vxlanDst}
		}
		if tunnelKind != "" {
			h.Tunnel = &exporter.TunnelJSON{Kind: tunnelKind, Src: "10.0.0.11", Dst: "10.0.0.12", Port: 6081, VNI: 7, Options: 8}
		}
		if drop {
			x.Drop = &exporter.DropJSON{Reason: "NETFILTER_DROP", Location: "nft_do_chain+0x3e8", TNs: (t1 + t2) / 2, Hook: "FORWARD"}
		}
		line, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		readAgentStream(t, line)
	})
}

// readAgentStream reads an agent's stream as a follow client does (cmd/pathtrace's
// joinAgents) and checks each journey and path on the way.
func readAgentStream(t *testing.T, stream []byte) {
	jn := decode.NewJoiner(fuzzNodes, time.Second)
	jn.SetDown("node-c", "its agent stopped answering: EOF")
	now := time.Unix(1_795_694_776, 0)
	var text bytes.Buffer
	tw := exporter.NewText(&text)
	tw.SetNamer(fakeNamer{})
	paths := func(ps []*decode.Path) {
		for _, p := range ps {
			if err := tw.WritePath(p); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := exporter.NewJSON(&b, exporter.Clock{}).WritePath(p); err != nil {
				t.Fatal(err)
			}
			// A path's legs are journeys again, which a client reads back.
			var pj exporter.PathJSON
			if err := json.Unmarshal(b.Bytes(), &pj); err != nil {
				t.Fatalf("path JSON does not parse: %v\n%s", err, b.Bytes())
			}
			for i := range pj.Legs {
				if _, err := exporter.FromJSON(&pj.Legs[i]); err != nil {
					t.Fatalf("leg %d of a path written does not read back: %v\n%s", i, err, b.Bytes())
				}
			}
		}
	}
	for line := range bytes.SplitSeq(stream, []byte("\n")) {
		var x exporter.JourneyJSON
		if json.Unmarshal(line, &x) != nil {
			continue
		}
		j, err := exporter.FromJSON(&x)
		if err != nil {
			continue
		}
		checkJourney(t, line, j)
		paths(jn.Add(j, now))
		now = now.Add(100 * time.Millisecond)
	}
	paths(jn.Expire(now.Add(time.Second)))
	paths(jn.Flush())
}

// checkJourney writes a journey read from line as the client would, and checks that
// its JSON reads back to itself.
func checkJourney(t *testing.T, line []byte, j *decode.Journey) {
	t.Helper()
	sum := j.Summary()
	var text bytes.Buffer
	if err := exporter.NewText(&text).Write(j); err != nil {
		t.Fatal(err)
	}
	// Each line the text has is a hop, the drop and what names it, the header, the
	// stall or the summary, none longer than the input and some padding: a bounded
	// input gives a bounded output.
	if limit := (len(j.Hops) + 8) * (len(line) + 256); text.Len() > limit {
		t.Fatalf("%d bytes of text for %d hops from a line of %d bytes", text.Len(), len(j.Hops), len(line))
	}
	x := exporter.ToJSON(j, exporter.Clock{})
	if x.Summary != sum {
		t.Fatalf("JSON summary %q, Summary %q", x.Summary, sum)
	}
	b, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	var y exporter.JourneyJSON
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	back, err := exporter.FromJSON(&y)
	if err != nil {
		t.Fatalf("the JSON of a journey read does not read back: %v\nread: %s\nwritten: %s", err, line, b)
	}
	// Written again it is what was read the first time (as read: a name that is no
	// UTF-8 reaches the reader with U+FFFD in place of its bad bytes).
	if again := exporter.ToJSON(back, exporter.Clock{}); !reflect.DeepEqual(again, y) {
		a, _ := json.Marshal(again)
		t.Fatalf("written again, the journey differs:\nread:  %s\nfirst: %s\nagain: %s", line, b, a)
	}
	// Every flow written is one: addresses that parse, not "invalid IP".
	flows := []*exporter.FlowJSON{&x.Flow}
	for i := range x.Hops {
		h := &x.Hops[i]
		flows = append(flows, h.Flow)
		if h.CT != nil {
			flows = append(flows, h.CT.Orig, h.CT.Reply)
		}
	}
	for _, f := range flows {
		if f == nil {
			continue
		}
		for _, ep := range []string{f.Src, f.Dst} {
			if _, err := netip.ParseAddr(ep); err != nil {
				if _, err := netip.ParseAddrPort(ep); err != nil {
					t.Fatalf("flow endpoint %q written:\nread: %s\nwritten: %s", ep, line, b)
				}
			}
		}
	}
}

// fuzzEvents makes events of node-a from b: for each, a header of 6 bytes, then its
// packet bytes.
//
//	b[0]    bits 0-1 kind (hop, drop, netfilter, hop), 2-3 direction, 4 L2, 5-7 hook
//	b[1]    bits 0-2 interface (none, eth0, flannel.1, cni0, veth, unknown), 3-4
//	        netfilter position, 5 conntrack (info from bits 6-7)
//	b[2:4]  time since the previous event: µs, or ms with the top bit set
//	b[4:6]  length of the packet bytes that follow (at most decode.SnapFull)
//
// The first bytes of the packet are the event's interface name too.
func fuzzEvents(b []byte) []decode.Event {
	var evs []decode.Event
	t := pcapT0
	ifaces := []uint32{0, ixEth0, ixFlannel, ixCni0, ixVeth, 99, 99, 99}
	for len(b) >= 6 {
		h := b[:6]
		n := min(int(binary.BigEndian.Uint16(h[4:])), decode.SnapFull, len(b)-6)
		data := b[6 : 6+n]
		b = b[6+n:]
		step := uint64(binary.BigEndian.Uint16(h[2:]))
		if step&0x8000 != 0 {
			t += (step & 0x7fff) * 1_000_000
		} else {
			t += step * 1000
		}
		kind := []decode.Kind{decode.KindHop, decode.KindDrop, decode.KindNF, decode.KindHop}[h[0]&3]
		e := decode.Event{TimeNs: t, Kind: kind, Dir: decode.Dir(h[0] >> 2 & 3), L2: h[0]&0x10 != 0,
			Ifindex: ifaces[h[1]&7], Len: uint32(n), Hook: h[0] >> 5, NFPos: h[1] >> 3 & 3,
			HasCT: h[1]&0x20 != 0, CTInfo: []uint8{2, 3, decode.CTNone, 7}[h[1]>>6],
			Reason: 12, Location: 0xffffffffc0a412c8, Netns: 4026531840}
		copy(e.Ifname[:15], data)
		copy(e.OutIfname[:15], data[min(n, 15):])
		e.SnapLen = uint16(n)
		if n > decode.SnapMax {
			e.Full = data
		}
		copy(e.Data[:], data)
		evs = append(evs, e)
	}
	return evs
}

// fuzzRecord is fuzzEvents' encoding of one event.
func fuzzRecord(h0, h1 byte, stepUs uint16, data []byte) []byte {
	b := []byte{h0, h1}
	b = binary.BigEndian.AppendUint16(b, stepUs)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// FuzzPcap writes pcapng from journeys the assembler made of events with fuzzed packet
// bytes (cfg picks the snap length, the size limit and the text of the rule that
// dropped the dropped ones, as the ruleset's tools give it): the file is always
// well-formed pcapng, within its limit, every journey in one write of whole blocks,
// readable by pcapgo; and each journey's JSON reads back for a follow client.
func FuzzPcap(f *testing.F) {
	syn := synThroughDNAT(0)
	dns := dnsDropped(0, 7)
	var seed []byte
	for i, e := range append(syn, dns...) {
		h0 := map[decode.Kind]byte{decode.KindHop: 0, decode.KindDrop: 1, decode.KindNF: 2}[e.Kind] | byte(e.Dir)<<2 | e.Hook<<5
		if e.L2 {
			h0 |= 0x10
		}
		h1 := map[uint32]byte{0: 0, ixEth0: 1, ixFlannel: 2, ixCni0: 3, ixVeth: 4}[e.Ifindex] | e.NFPos<<3
		seed = append(seed, fuzzRecord(h0, h1, uint16(i*10), e.Data[:e.SnapLen])...)
	}
	big := eth(ipv4("10.244.0.5", "10.244.1.7", 9, 64, decode.ProtoUDP, udp(1000, 2000, make([]byte, 3000))))
	for cfg := range byte(64) {
		f.Add(cfg, seed)
	}
	f.Add(byte(3), append(bytes.Clone(seed), fuzzRecord(0x10, 4, 0x8000|600, big)...))
	f.Add(byte(0), fuzzRecord(0x11, 0x21, 0, []byte("not a packet")))

	nodeCfg := nodeA(f)
	nodeCfg.MaxOpen = 4
	f.Fuzz(func(t *testing.T, cfg byte, b []byte) {
		pc := exporter.PcapConfig{Clock: pcapClock, Comment: "fuzz",
			SnapLen:  []int{0, 64, decode.SnapMax, decode.SnapFull}[cfg&3],
			MaxBytes: []int64{0, 600, 4096, 1 << 20}[cfg>>2&3]}
		// A rule with a set of thousands of addresses is one line of iptables-save.
		rule := []string{"", "-A FORWARD -d 10.244.1.42/32 -p tcp -m tcp --dport 6379 -j DROP",
			"ip saddr { " + strings.Repeat("198.51.100.1, ", 5000) + "} counter drop", string(b[:min(len(b), 300)])}[cfg>>4&3]
		var w recordWrites
		p := exporter.NewPcap(&w, pc)
		a := decode.NewAssembler(nodeCfg)
		var pcapErr error
		write := func(js []*decode.Journey) {
			for _, j := range js {
				if j.Drop != nil && rule != "" {
					j.Drop.Rule = &decode.RuleMatch{Candidates: 1, Rule: &decode.Rule{Family: "inet", Table: "t", Chain: "c",
						Hook: "FORWARD", Handle: 7, Verdict: "drop", HasCounter: true, Packets: 1, Text: rule, Backend: decode.BackendNftables}}
				}
				err := p.Write(j)
				switch {
				case err == nil:
				case errors.Is(err, exporter.ErrPcapFull) && pc.MaxBytes > 0:
					if pcapErr != nil && pcapErr != err {
						t.Fatalf("Write: %v after %v", err, pcapErr)
					}
					pcapErr = err
				default:
					t.Fatalf("Write: %v", err)
				}
				checkJourney(t, []byte(rule+string(b)), j)
				a.Release(j)
			}
		}
		var last uint64
		for _, e := range fuzzEvents(b) {
			write(a.Add(&e))
			write(a.Expire(e.TimeNs))
			last = e.TimeNs
		}
		write(a.Flush(last + uint64(nodeCfg.Timeout)))

		out := bytes.Join(w.chunks, nil)
		snap := pc.SnapLen
		if snap == 0 {
			snap = decode.SnapMax
		}
		if int64(len(out)) != p.Size() || pc.MaxBytes > 0 && p.Size() > pc.MaxBytes {
			t.Fatalf("%d bytes written, Size %d, limit %d", len(out), p.Size(), pc.MaxBytes)
		}
		if limit := 1024 + p.Packets()*(snap+1024+len(rule)); len(out) > limit {
			t.Fatalf("%d bytes for %d packets of at most %d bytes, with a rule of %d", len(out), p.Packets(), snap, len(rule))
		}
		ends, n := checkPcapng(t, out, snap)
		if n != p.Packets() {
			t.Fatalf("%d packets in the file, Packets %d", n, p.Packets())
		}
		// Every write ends at the end of a block: a file cut after any write is whole.
		at := 0
		for _, c := range w.chunks {
			at += len(c)
			if !ends[at] {
				t.Fatalf("a write ends at byte %d, inside a block", at)
			}
		}
		if len(out) == 0 {
			if p.Packets() != 0 {
				t.Fatalf("no bytes for %d packets", p.Packets())
			}
			return
		}
		r, err := pcapgo.NewNgReader(bytes.NewReader(out), pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			t.Fatalf("pcapgo: %v", err)
		}
		n = 0
		for ; ; n++ {
			if _, _, err := r.ReadPacketData(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("pcapgo, packet %d: %v", n+1, err)
			}
		}
		if n != p.Packets() {
			t.Fatalf("pcapgo read %d packets, Packets %d", n, p.Packets())
		}
	})
}

// checkPcapng walks a pcapng file by its blocks' lengths and checks each block's
// fields and options; it returns where blocks end and the number of packets.
func checkPcapng(t *testing.T, b []byte, snap int) (ends map[int]bool, packets int) {
	t.Helper()
	const shb, idb, epb = 0x0a0d0d0a, 1, 6
	le := binary.LittleEndian
	ifaces := 0
	ends = map[int]bool{}
	for off := 0; off < len(b); {
		if len(b)-off < 12 {
			t.Fatalf("offset %d: %d bytes left, too few for a block", off, len(b)-off)
		}
		typ, n := le.Uint32(b[off:]), int(le.Uint32(b[off+4:]))
		if n < 12 || n%4 != 0 || n > len(b)-off || int(le.Uint32(b[off+n-4:])) != n {
			t.Fatalf("offset %d: block type %#x of %d bytes, %d left", off, typ, n, len(b)-off)
		}
		body := b[off+8 : off+n-4]
		if off == 0 && typ != shb {
			t.Fatalf("the file starts with block type %#x, not a section header", typ)
		}
		var opts []byte
		switch typ {
		case shb:
			if off != 0 || len(body) < 16 || le.Uint32(body) != 0x1a2b3c4d {
				t.Fatalf("offset %d: section header %x", off, body)
			}
			opts = body[16:]
		case idb:
			if len(body) < 8 || int(le.Uint32(body[4:])) != snap {
				t.Fatalf("offset %d: interface %x, want snap length %d", off, body, snap)
			}
			ifaces++
			opts = body[8:]
		case epb:
			if len(body) < 20 {
				t.Fatalf("offset %d: packet block of %d bytes", off, n)
			}
			id, capLen, origLen := int(le.Uint32(body)), int(le.Uint32(body[12:])), int(le.Uint32(body[16:]))
			padded := (capLen + 3) &^ 3
			if id >= ifaces || capLen > snap || capLen > origLen || 20+padded > len(body) {
				t.Fatalf("offset %d: packet on interface %d of %d, %d bytes captured of %d, snap length %d, block %d",
					off, id, ifaces, capLen, origLen, snap, n)
			}
			packets++
			opts = body[20+padded:]
		default:
			t.Fatalf("offset %d: block type %#x", off, typ)
		}
		for len(opts) > 0 {
			if len(opts) < 4 {
				t.Fatalf("offset %d: %d bytes of options left", off, len(opts))
			}
			code, l := le.Uint16(opts), int(le.Uint16(opts[2:]))
			if code == 0 {
				if l != 0 || len(opts) != 4 {
					t.Fatalf("offset %d: end of options with %d bytes after it", off, len(opts)-4)
				}
				break
			}
			if 4+(l+3)&^3 > len(opts) {
				t.Fatalf("offset %d: option %d of %d bytes in %d", off, code, l, len(opts))
			}
			// Comments, names and descriptions are UTF-8 strings (pcapng's opt_comment,
			// if_name, if_description, shb_* all are).
			if v := opts[4 : 4+l]; code == 1 || typ == shb || typ == idb && (code == 2 || code == 3) {
				if !utf8.Valid(v) {
					t.Fatalf("offset %d: option %d is no UTF-8 string: %q", off, code, v)
				}
			}
			opts = opts[4+(l+3)&^3:]
		}
		off += n
		ends[off] = true
	}
	return ends, packets
}

// FuzzReport: pathtrace diagnose's report reads the JSON lines a follow wrote (an
// agent's, relayed): any bytes, cut anywhere, neither crash it nor let it hold more
// than its bounds, and what it prints parses back.
func FuzzReport(f *testing.F) {
	f.Add([]byte(`{"kind":"journey","id":"01","node":"n","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:80"},"len":60,"hops":[],"verdict":"dropped","summary":"s","diagnosis":{"cause":"policy","summary":"x","evidence":[{"name":"rule","value":"r"}],"fix":"f"}}`+"\n"), 7)
	f.Add([]byte(`{"kind":"oneway","node":"n","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:80"},"diagnosis":{"cause":"no_snat"}}`+"\n"+`{"kind":"path","legs":[]}`+"\n"), 3)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		r := exporter.NewReport()
		if cut < 0 || cut > len(b) {
			cut = len(b) / 2
		}
		r.Write(b[:cut])
		r.Write(b[cut:])
		r.Write([]byte("\n"))
		es := r.Entries()
		if len(es) > exporter.MaxReportEntries {
			t.Fatalf("%d entries, bound %d", len(es), exporter.MaxReportEntries)
		}
		n := 0
		for _, e := range es {
			n += e.Count
			if d := e.Diagnosis; d != nil && (len(d.Evidence) > 32 || len(d.Missing) > 16 || len(d.Summary) > 2048) {
				t.Fatalf("diagnosis beyond the bounds: %d evidence, %d missing, %d bytes of summary", len(d.Evidence), len(d.Missing), len(d.Summary))
			}
		}
		if n != r.Failing-r.Dropped {
			t.Fatalf("entries count %d packets, the report %d failing (%d left out)", n, r.Failing, r.Dropped)
		}
		var out bytes.Buffer
		if err := r.WriteJSON(&out); err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			var e exporter.ReportEntry
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatalf("report line does not parse: %v: %s", err, line)
			}
		}
		r.WriteText(io.Discard, time.Second)
	})
}
