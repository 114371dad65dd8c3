package decode_test

// Fuzz targets for every parser of bytes or text from outside the process: packet
// bytes and ring-buffer records from the kernel, selectors from the command line,
// /proc/kallsyms and /proc/net/stat/nf_conntrack; and the naming of a drop's rule
// from snapshots of a ruleset. Each checks what its parser
// promises, beyond not panicking. make fuzz runs them all; testdata/fuzz/FuzzX holds
// seeds and the inputs of crashes found, which go test runs as regression tests.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

// packetSeeds are packets as the hooks see them: frames (l2) and IP packets (l3).
func packetSeeds() []variant {
	ip := v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x1c46}.packet(decode.ProtoTCP,
		tcpSeg{sport: 43512, dport: 8080, seq: 1, flags: decode.TCPSyn, opts: synOpts(1460, 7)}.bytes())
	udp6 := v6{src: "fd00::1", dst: "fd00::2", ext: []ext6{{typ: 0, body: []byte{5, 2, 0, 0, 1, 0}}}}.packet(decode.ProtoUDP,
		udpDgram(5000, 6000, []byte("hello, world")))
	frag6 := v6{src: "fd00::1", dst: "fd00::2", ext: []ext6{{typ: 44, body: []byte{0, 0x49, 0xab, 0xcd, 0xef, 0x01}}}}.packet(decode.ProtoUDP,
		udpDgram(5000, 6000, make([]byte, 16)))
	echo := v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0xbeef}.packet(decode.ProtoICMP, icmpEcho(8, 0x1f2e, 3, []byte("0123456789abcdef")))
	echo6 := v6{src: "fd00::2", dst: "fd00::1"}.packet(decode.ProtoICMPv6, icmpEcho(129, 9, 10, []byte("ping")))
	frag4 := v4{src: "10.0.0.1", dst: "10.0.0.2", id: 77, frag: 0x2010, rawL4: true}.packet(decode.ProtoUDP, make([]byte, 24))
	opts4 := v4{src: "10.0.0.1", dst: "10.0.0.2", opts: []byte{1, 1, 1, 0}}.packet(decode.ProtoUDP, udpDgram(1, 2, []byte("x")))
	gre := v4{src: "10.0.0.1", dst: "10.0.0.2", rawL4: true}.packet(47, []byte("an unknown protocol's payload"))
	inner := ether(etIPv4, podSyn(63, "10.244.1.7", 8080))
	return []variant{
		{"syn frame", synFrame(), true},
		{"syn packet", ip, false},
		{"vlan frame", vlanEther(42, etIPv4, ip), true},
		{"padded frame", pad(ether(etIPv4, v4{src: "10.0.0.1", dst: "10.0.0.2"}.packet(decode.ProtoUDP, udpDgram(1, 53, nil)))), true},
		{"vxlan 8472", encap(inner), true},
		{"vxlan 4789 in vlan", vlanEther(7, etIPv4, vxlan(v4{src: "172.16.0.1", dst: "172.16.0.2"}, 61000, 4789, 77, inner)[14:]), true},
		{"ipv6 udp with hop-by-hop", ether(etIPv6, udp6), true},
		{"ipv6 later fragment", frag6, false},
		{"icmp echo", echo, false},
		{"icmpv6 echo reply", ether(etIPv6, echo6), true},
		{"ipv4 later fragment", frag4, false},
		{"ipv4 options", opts4, false},
		{"gre", gre, false},
		{"arp", ether(etARP, make([]byte, 28)), true},
		{"truncated", synFrame()[:30], true},
		{"ipip", ipInIPv4(v4{src: "192.168.1.10", dst: "192.168.1.11"}, ip), true},
		{"sit", ipInIPv4(v4{src: "192.168.1.10", dst: "192.168.1.11"}, udp6)[14:], false},
		{"ip6ip6", ipInIPv6(v6{src: "fd00:1::10", dst: "fd00:1::11"}, echo6), true},
		{"ip4ip6", ipInIPv6(v6{src: "fd00:1::10", dst: "fd00:1::11"}, echo)[14:], false},
		{"geneve ethernet", geneve(v4{src: "192.168.1.10", dst: "192.168.1.11"}, 5000, 6081, 7, 0x6558, nil, inner), true},
		{"geneve options bare ipv4", geneve(v4{src: "192.168.1.10", dst: "192.168.1.11"}, 5000, 6081, 7, 0x0800,
			geneveOpt(0x0102, 0x80, []byte{1, 2, 3, 4}), ip), true},
		{"geneve options past the end", geneve(v4{src: "192.168.1.10", dst: "192.168.1.11"}, 5000, 6081, 7, 0x86dd,
			make([]byte, 200), udp6)[:120], true},
		{"ipip in geneve", geneve(v4{src: "192.168.1.10", dst: "192.168.1.11"}, 5000, 6081, 7, 0x6558, nil,
			ipInIPv4(v4{src: "10.0.0.1", dst: "10.0.0.2"}, ip)), true},
	}
}

// packetView is what ParsePacket tells its caller, the underlay header by value.
type packetView struct {
	Flow               decode.Flow
	Outer              decode.Outer
	HasOuter           bool
	IPLen, IPID        uint16
	TTL, TCPFlags      uint8
	Seq, Ack           uint32
	Payload            uint16
	TSVal, TSEcr       uint32
	HasTS              bool
	ICMPType, ICMPCode uint8
	ICMPID, ICMPSeq    uint16
	Fragment           bool
	ID                 uint64
}

func viewOf(p *decode.Packet) packetView {
	v := packetView{Flow: p.Flow, HasOuter: p.Outer != nil, IPLen: p.IPLen, IPID: p.IPID, TTL: p.TTL,
		TCPFlags: p.TCPFlags, Seq: p.Seq, Ack: p.Ack, Payload: p.Payload, TSVal: p.TSVal, TSEcr: p.TSEcr,
		HasTS: p.HasTS, ICMPType: p.ICMPType, ICMPCode: p.ICMPCode, ICMPID: p.ICMPID, ICMPSeq: p.ICMPSeq,
		Fragment: p.Fragment, ID: p.ID}
	if p.Outer != nil {
		v.Outer = *p.Outer
	}
	return v
}

func FuzzParsePacket(f *testing.F) {
	for _, s := range packetSeeds() {
		f.Add(s.data, s.l2)
	}
	// A Packet that held another packet: ParsePacket must leave nothing of it.
	var stale decode.Packet
	if err := decode.ParsePacket(encap(synFrame()), true, decode.DefaultVXLANPorts, &stale); err != nil || stale.Outer == nil {
		f.Fatalf("stale packet: %v", err)
	}
	f.Fuzz(func(t *testing.T, data []byte, l2 bool) {
		in := bytes.Clone(data)
		var p decode.Packet
		err := decode.ParsePacket(data, l2, decode.DefaultVXLANPorts, &p)
		if !bytes.Equal(data, in) {
			t.Fatal("ParsePacket wrote into the packet bytes")
		}
		reused := stale
		if err2 := decode.ParsePacket(data, l2, decode.DefaultVXLANPorts, &reused); err2 != err || viewOf(&reused) != viewOf(&p) {
			t.Fatalf("parsed into a used Packet: %v %+v\nfresh: %v %+v", err2, viewOf(&reused), err, viewOf(&p))
		}
		if err != nil {
			if !errors.Is(err, decode.ErrNotIP) && !errors.Is(err, decode.ErrTruncated) {
				t.Fatalf("error %v is neither ErrNotIP nor ErrTruncated", err)
			}
			return
		}
		checkPacket(t, &p)

		// The same IP packet with or without an Ethernet header in front parses the
		// same: every offset is relative to where the IP header starts.
		if l2 {
			if len(data) >= 14 && (data[12] == 0x08 && data[13] == 0x00 || data[12] == 0x86 && data[13] == 0xdd) {
				var q decode.Packet
				if err := decode.ParsePacket(data[14:], false, decode.DefaultVXLANPorts, &q); err != nil || viewOf(&q) != viewOf(&p) {
					t.Fatalf("without its Ethernet header: %v %+v\nwith it: %+v", err, viewOf(&q), viewOf(&p))
				}
			}
		} else {
			et := uint16(etIPv4)
			if data[0]>>4 == 6 {
				et = etIPv6
			}
			var q decode.Packet
			if err := decode.ParsePacket(ether(et, data), true, decode.DefaultVXLANPorts, &q); err != nil || viewOf(&q) != viewOf(&p) {
				t.Fatalf("behind an Ethernet header: %v %+v\nwithout: %+v", err, viewOf(&q), viewOf(&p))
			}
		}

		// A tunnel's packet is its inner packet, for its flow and its identity: the
		// inner frame or IP packet, wherever it starts, parses to the same.
		if p.Outer != nil {
			found := false
			for k := 1; k < len(data) && !found; k++ {
				for _, l2 := range []bool{true, false} {
					var q decode.Packet
					if decode.ParsePacket(data[k:], l2, decode.DefaultVXLANPorts, &q) == nil && q.ID == p.ID && q.Flow == p.Flow {
						found = true
					}
				}
			}
			if !found {
				t.Fatalf("no inner packet parses to the %s packet's flow %v and ID %#x", p.Outer.Kind, p.Flow, p.ID)
			}
		}
	})
}

// checkPacket checks what a parsed packet must be, whatever its bytes.
func checkPacket(t *testing.T, p *decode.Packet) {
	t.Helper()
	f := p.Flow
	if !f.Src.Addr().IsValid() || !f.Dst.Addr().IsValid() || f.Src.Addr().Is4() != f.Dst.Addr().Is4() {
		t.Fatalf("flow %v: addresses of one family expected", f)
	}
	if (f.Proto != decode.ProtoTCP && f.Proto != decode.ProtoUDP || p.Fragment) && (f.Src.Port() != 0 || f.Dst.Port() != 0) {
		t.Fatalf("flow %v (fragment %v): ports on a packet without an L4 header that has them", f, p.Fragment)
	}
	if f.Proto != decode.ProtoTCP && (p.Seq != 0 || p.Ack != 0 || p.TCPFlags != 0 || p.Payload != 0 || p.HasTS) {
		t.Fatalf("proto %d with TCP fields: %+v", f.Proto, viewOf(p))
	}
	if !p.HasTS && (p.TSVal != 0 || p.TSEcr != 0) {
		t.Fatalf("timestamps %d/%d without the option", p.TSVal, p.TSEcr)
	}
	if f.Proto != decode.ProtoICMP && f.Proto != decode.ProtoICMPv6 && (p.ICMPType != 0 || p.ICMPCode != 0 || p.ICMPID != 0 || p.ICMPSeq != 0) {
		t.Fatalf("proto %d with ICMP fields: %+v", f.Proto, viewOf(p))
	}
	if f.Src.Addr().Is6() && p.IPID != 0 {
		t.Fatalf("IPv6 packet with an IPv4 identification %#x", p.IPID)
	}
	if p.Payload > p.IPLen {
		t.Fatalf("TCP payload %d beyond the IP length %d", p.Payload, p.IPLen)
	}
	if o := p.Outer; o != nil {
		if !o.Src.IsValid() || !o.Dst.IsValid() || o.Src.Is4() != o.Dst.Is4() || o.VNI > 0xffffff {
			t.Fatalf("outer header %+v", *o)
		}
		ok := false
		switch o.Kind {
		case decode.TunnelVXLAN:
			ok = slices.Contains(decode.DefaultVXLANPorts, o.DstPort) && o.Options == 0
		case decode.TunnelGeneve:
			ok = slices.Contains(decode.DefaultGenevePorts, o.DstPort) && o.Options%4 == 0 && o.Options <= 252
		case decode.TunnelIPIP, decode.TunnelSIT:
			ok = o.Src.Is4() && o.SrcPort == 0 && o.DstPort == 0 && o.VNI == 0 && o.Options == 0
		case decode.TunnelIP6IP6, decode.TunnelIP4IP6:
			ok = o.Src.Is6() && o.SrcPort == 0 && o.DstPort == 0 && o.VNI == 0 && o.Options == 0
		}
		if !ok {
			t.Fatalf("outer header %+v", *o)
		}
	}
}

// eventSeeds are records as the programs write them: hops, drops, netfilter hooks with
// conntrack, a retransmission, and a whole packet longer than SnapMax.
func eventSeeds() [][]byte {
	var recs [][]byte
	d := fullEvent()
	recs = append(recs, decode.AppendEvent(nil, &d))
	h := event(decode.KindHop, t0, idxVethA, vethA, decode.Ingress, true, synFrame())
	recs = append(recs, decode.AppendEvent(nil, &h))
	nf := event(decode.KindNF, t0+100, idxCni0, "cni0", decode.NoDir, false, podSyn(64, "10.244.1.7", 8080))
	nf.Hook, nf.NFPos, nf.PF, nf.HasCT, nf.CTInfo, nf.CTStatus = 2, decode.NFLast, 2, true, 2, 0x188
	nf.OutIfname = ifname("flannel.1")
	for i, tup := range []*decode.CTTuple{&nf.CTOrig, &nf.CTReply} {
		copy(tup[0:], addr("10.244.0.5").AsSlice())
		copy(tup[16:], addr("10.244.1.7").AsSlice())
		binary.NativeEndian.PutUint16(tup[32:], uint16(43512+i))
		binary.NativeEndian.PutUint16(tup[34:], 8080)
		tup[36], tup[37] = decode.ProtoTCP, 4
	}
	recs = append(recs, decode.AppendEvent(nil, &nf))
	r := decode.Event{TimeNs: t0 + 200, Kind: decode.KindRetrans, Filter: decode.FilterUnfollowed}
	recs = append(recs, decode.AppendEvent(nil, &r))
	big := ether(etIPv4, v4{src: "10.0.0.1", dst: "10.0.0.2"}.packet(decode.ProtoUDP, udpDgram(1, 2, make([]byte, 1400))))
	w := event(decode.KindHop, t0+300, idxEth0, "eth0", decode.Egress, true, big)
	w.SnapLen, w.Full = uint16(len(big)), big
	recs = append(recs, decode.AppendEvent(nil, &w))
	recs = append(recs, decode.AppendEvent(nil, &h)[:200]) // cut short
	return recs
}

func FuzzParseEvent(f *testing.F) {
	for _, r := range eventSeeds() {
		f.Add(r)
	}
	cfg := nodeConfig(f, "node-a")
	f.Fuzz(func(t *testing.T, rec []byte) {
		b := bytes.Clone(rec) // cleared below; the fuzzer's input must stay as it is
		var ev decode.Event
		if err := decode.ParseEvent(b, &ev); err != nil {
			return
		}
		const dataOff = decode.EventSize - decode.SnapMax
		snap := int(ev.SnapLen)
		if ev.Kind < decode.KindHop || ev.Kind > decode.KindRetrans || snap > decode.SnapFull || len(b) < dataOff+snap {
			t.Fatalf("accepted kind %d snap_len %d in a record of %d bytes", ev.Kind, snap, len(b))
		}
		if !bytes.Equal(ev.Packet(), b[dataOff:dataOff+snap]) {
			t.Fatal("Packet() is not the record's packet bytes")
		}
		if (ev.Full != nil) != (snap > decode.SnapMax) {
			t.Fatalf("snap_len %d with Full of %d bytes", snap, len(ev.Full))
		}
		// The ring buffer's sample is reused for the next record: the event keeps no
		// reference into it.
		pkt := bytes.Clone(ev.Packet())
		clear(b)
		if !bytes.Equal(ev.Packet(), pkt) {
			t.Fatal("the event's packet bytes change with the record it was read from")
		}

		// Written as the kernel writes it, it reads back the same.
		var back decode.Event
		if err := decode.ParseEvent(decode.AppendEvent(nil, &ev), &back); err != nil {
			t.Fatalf("AppendEvent's record does not parse: %v", err)
		}
		if !reflect.DeepEqual(back, ev) {
			t.Fatalf("round trip differs:\n got %+v\nwant %+v", back, ev)
		}

		// What the pipeline does with it next: the assembler, then the verdict.
		a := decode.NewAssembler(cfg)
		a.Add(&ev)
		for _, j := range a.Flush(ev.TimeNs + uint64(timeout)) {
			_ = j.Summary()
			for i := range j.Hops {
				_ = j.Hops[i].Name()
			}
		}
	})
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"10.244.1.7", "10.244.1.7:8080", ":53", "fd00:10:244::5", "::1", "[fd00::5]:443",
		"[fd00::5]", "::ffff:10.0.0.1", "[::ffff:10.0.0.1]:80", "", ":", "10.0.0.1:", "[fe80::1%eth0]:80",
		":0", ":65536", "[::1]x", "pod/default/api"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := decode.ParseSelector(s)
		if err != nil {
			if sel != (decode.Selector{}) {
				t.Fatalf("error %v with selector %+v", err, sel)
			}
			return
		}
		if !sel.Addr.IsValid() && sel.Port == 0 || sel.Proto != 0 {
			t.Fatalf("%q: selector %+v selects everything or a protocol", s, sel)
		}
		if sel.Addr.IsValid() && (sel.Addr.Zone() != "" || sel.Addr.Is4In6()) {
			t.Fatalf("%q: address %v with a zone or IPv4-mapped", s, sel.Addr)
		}
		// What String prints reads back as the same selector.
		back, err := decode.ParseSelector(sel.String())
		if err != nil || back != sel {
			t.Fatalf("%q: String %q reads back as %+v, %v", s, sel.String(), back, err)
		}
		// It matches a flow with its address and port, in both directions.
		ap := netip.AddrPortFrom(sel.Addr, sel.Port)
		other := netip.MustParseAddrPort("192.0.2.1:1")
		if !sel.Addr.IsValid() {
			ap = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), sel.Port)
		}
		f := decode.Flow{Proto: decode.ProtoTCP, Src: ap, Dst: other}
		if !sel.Matches(f) || !sel.Matches(f.Reverse()) {
			t.Fatalf("%q: does not match %v", s, f)
		}
	})
}

func FuzzParseKubeSelector(f *testing.F) {
	for _, s := range []string{"pod/default/api-a", "pod/default/api-a:8080", "svc/kube-system/kube-dns:dns",
		"svc/default/api:443", "pod/ns/a.b.c", "pod/", "svc//x", "pod/ns/", "pod/ns/x/y", "pod/NS/x",
		"pod/ns/x:0", "pod/ns/x:http", "svc/ns/x:", "10.0.0.1:80", "deploy/ns/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, ok, err := decode.ParseKubeSelector(s)
		kube := strings.HasPrefix(s, "pod/") || strings.HasPrefix(s, "svc/")
		if ok != kube {
			t.Fatalf("%q: ok %v", s, ok)
		}
		if !ok || err != nil {
			if err != nil && !ok || sel != (decode.KubeSelector{}) {
				t.Fatalf("%q: %+v, ok %v, %v", s, sel, ok, err)
			}
			return
		}
		if sel.String() != s {
			t.Fatalf("%q: String %q", s, sel.String())
		}
		if !dnsName(sel.Namespace, 63, false) || !dnsName(sel.Name, 63, false) && (sel.Kind != "pod" || !dnsName(sel.Name, 253, true)) {
			t.Fatalf("%q: namespace %q or name %q is no DNS name", s, sel.Namespace, sel.Name)
		}
		if sel.Port != "" {
			if n, err := strconv.ParseUint(sel.Port, 10, 16); (err != nil || n == 0) && (sel.Kind != "svc" || !dnsName(sel.Port, 63, false)) {
				t.Fatalf("%q: port %q", s, sel.Port)
			}
		}
	})
}

// dnsName says whether s is an RFC 1123 label (dots false) or subdomain, of at most max
// bytes.
func dnsName(s string, max int, dots bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' || !dots && l != s {
			return false
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func FuzzParseProto(f *testing.F) {
	for _, s := range []string{"", "any", "all", "tcp", "UDP", "icmp", "icmpv6", "icmp6", "sctp", "6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := decode.ParseProto(s)
		if err != nil {
			if p != 0 || !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("%q: %d, error %v", s, p, err)
			}
			return
		}
		switch p {
		case 0:
			if l := strings.ToLower(s); l != "" && l != "any" && l != "all" {
				t.Fatalf("%q: any protocol", s)
			}
		case decode.ProtoTCP, decode.ProtoUDP, decode.ProtoICMP, decode.ProtoICMPv6:
			if back, err := decode.ParseProto(decode.ProtoName(p)); err != nil || back != p {
				t.Fatalf("%q: %d, whose name %q reads back as %d, %v", s, p, decode.ProtoName(p), back, err)
			}
		default:
			t.Fatalf("%q: protocol %d", s, p)
		}
	})
}

func FuzzParseKallsyms(f *testing.F) {
	for _, s := range []string{
		"ffffffffc0a41000 t nft_do_chain\t[nf_tables]\nffffffffc0a42000 t nft_other\t[nf_tables]\n",
		"0000000000000000 T _text\n0000000000000000 t kfree_skb\n",
		"ffffffff81000000 T _text\nffffffff81000000 T startup_64\nffffffff81a3c000 D data\nffffffff81a3c500 W weak\n",
		"zz t x\n",
		"ffffffff81000000 T\n",
	} {
		f.Add([]byte(s))
	}
	for _, name := range []string{"testdata/kallsyms.txt", "testdata/kallsyms_restricted.txt"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		s, err := decode.ParseKallsyms(bytes.NewReader(text))
		if err != nil {
			if s != nil {
				t.Fatalf("error %v with a table", err)
			}
			return
		}
		// Every code symbol's address is named after a symbol at that address.
		for _, line := range strings.Split(string(text), "\n") {
			fl := strings.Fields(line)
			if len(fl) < 3 || !strings.Contains("tTwW", fl[1]) || len(fl[1]) != 1 {
				continue
			}
			a, err := strconv.ParseUint(fl[0], 16, 64)
			if err != nil {
				t.Fatalf("line %q accepted with a bad address", line)
			}
			if got := s.Symbolize(a); !strings.HasSuffix(got, "+0x0") {
				t.Fatalf("address %#x of %q named %q", a, line, got)
			}
		}
		for _, a := range []uint64{0, 1 << 63, ^uint64(0)} {
			if got := s.Symbolize(a); got != fmt.Sprintf("0x%x", a) && !strings.Contains(got, "+0x") {
				t.Fatalf("address %#x named %q", a, got)
			}
		}
	})
}

func FuzzParseCTStats(f *testing.F) {
	for _, s := range []string{ctStats, "entries drop\n", "a b\n1\n", "a\nzz\n", "", "entries entries\n1 2\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		m, err := decode.ParseCTStats(bytes.NewReader(text))
		if err != nil {
			return
		}
		// The sums of each column over the CPUs' lines, entries (a global count) from
		// the last line, counted without overflow.
		lines := strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
		cols := strings.Fields(lines[0])
		want := map[string]*big.Int{}
		for _, c := range cols {
			if want[c] != nil {
				return // a column twice: no kernel writes that
			}
			want[c] = new(big.Int)
		}
		for _, l := range lines[1:] {
			for i, v := range strings.Fields(l) {
				n, ok := new(big.Int).SetString(v, 16)
				if !ok || n.Sign() < 0 {
					t.Fatalf("value %q accepted", v)
				}
				if cols[i] == "entries" {
					want[cols[i]] = n
				} else {
					want[cols[i]].Add(want[cols[i]], n)
				}
			}
		}
		for c := range m {
			if want[c] == nil {
				t.Fatalf("column %q is not in the header %q", c, lines[0])
			}
		}
		for c, w := range want {
			if got := m[c]; !w.IsUint64() || w.Uint64() != got {
				t.Fatalf("column %q: %d, want %v", c, got, w)
			}
		}
	})
}

// FuzzMatchDrop names the rule behind a drop from two snapshots of a ruleset, given as
// JSON (as testdata/rules_lab.json holds them, and as agents send rule_detail). The
// ruleset of a traced namespace is its owner's: chain names, jumps (cycles included)
// and counters are outside input. The rule named is a drop rule of the second
// snapshot whose counter rose, one of Candidates such rules; a chain policy named
// drops; and the answer prints.
func FuzzMatchDrop(f *testing.F) {
	lab, err := os.ReadFile("testdata/rules_lab.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(lab)
	f.Add([]byte(`{"before":{"rules":[{"family":"ip","table":"filter","chain":"A","handle":1,"verdict":"drop","has_counter":true,"packets":5}]},` +
		`"after":{"rules":[{"family":"ip","table":"filter","chain":"A","handle":1,"verdict":"drop","has_counter":true,"packets":2},` +
		`{"family":"ip","table":"filter","chain":"A","handle":2,"verdict":"jump B","has_counter":true,"packets":1},` +
		`{"family":"ip","table":"filter","chain":"B","handle":3,"verdict":"jump A"},` +
		`{"family":"ip","table":"filter","chain":"B","handle":4,"verdict":"reject","has_counter":true,"packets":3}],` +
		`"chains":[{"family":"ip","table":"filter","name":"FORWARD","hook":"FORWARD","policy":"drop","backend":"iptables-nft"}],"note":"x"},"hook":"forward","dropped":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fx struct {
			Before, After decode.RuleSnapshot
			Hook          string
			Dropped       int
		}
		if json.Unmarshal(b, &fx) != nil {
			return
		}
		m := decode.MatchDrop(fx.Before, fx.After, fx.Hook, fx.Dropped)
		_ = m.String()
		prev := map[string]uint64{}
		for _, r := range fx.Before.Rules {
			if r.HasCounter {
				prev[fmt.Sprint(r.Family, "\x00", r.Table, "\x00", r.Chain, "\x00", r.Handle)] = r.Packets
			}
		}
		rose := 0
		for _, r := range fx.After.Rules {
			p, ok := prev[fmt.Sprint(r.Family, "\x00", r.Table, "\x00", r.Chain, "\x00", r.Handle)]
			if decode.IsDropVerdict(r.Verdict) && r.HasCounter && (!ok || p > r.Packets || r.Packets > p) && r.Packets > 0 {
				rose++
			}
		}
		if m.Candidates != rose {
			t.Fatalf("%d candidates, %d drop rules whose counters rose", m.Candidates, rose)
		}
		switch {
		case m.Rule != nil:
			if !slices.Contains(fx.After.Rules, *m.Rule) || !decode.IsDropVerdict(m.Rule.Verdict) || !m.Rule.HasCounter || m.Policy != nil {
				t.Fatalf("named %+v (policy %+v)", *m.Rule, m.Policy)
			}
		case m.Policy != nil:
			if !slices.Contains(fx.After.Chains, *m.Policy) || m.Policy.Policy != "drop" || m.Policy.Hook == "" || rose != 0 {
				t.Fatalf("named the policy of %+v with %d candidates", *m.Policy, rose)
			}
		default:
			if rose != 0 || m.Why == "" {
				t.Fatalf("nothing named, %d candidates, why %q", rose, m.Why)
			}
		}
	})
}
