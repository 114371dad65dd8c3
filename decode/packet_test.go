package decode_test

import (
	"errors"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

// A pod's SYN as Linux sends it, with the options a SYN carries.
func synFrame() []byte {
	return ether(etIPv4, v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x1c46, frag: 0x4000}.packet(decode.ProtoTCP,
		tcpSeg{sport: 43512, dport: 8080, seq: 0x9a3c1f00, flags: decode.TCPSyn, win: 64860,
			opts: synOpts(1410, 2_874_113_001)}.bytes()))
}

func TestParseTCPSyn(t *testing.T) {
	p := parse(t, synFrame(), true)
	if want := (decode.Flow{Proto: decode.ProtoTCP, Src: addrPort("10.244.0.5:43512"), Dst: addrPort("10.244.1.7:8080")}); p.Flow != want {
		t.Errorf("flow %v, want %v", p.Flow, want)
	}
	if p.TCPFlags != decode.TCPSyn || decode.TCPFlagString(p.TCPFlags) != "S" {
		t.Errorf("flags %#x (%q), want SYN", p.TCPFlags, decode.TCPFlagString(p.TCPFlags))
	}
	if p.Seq != 0x9a3c1f00 || p.Ack != 0 {
		t.Errorf("seq %#x ack %#x", p.Seq, p.Ack)
	}
	if !p.HasTS || p.TSVal != 2_874_113_001 || p.TSEcr != 0 {
		t.Errorf("timestamp: has %v val %d ecr %d", p.HasTS, p.TSVal, p.TSEcr)
	}
	// 20 bytes of IP, 20 of TCP, 20 of options (MSS 4, SACK_PERM 2, TS 10, NOP, WS 3).
	if p.IPLen != 60 || p.IPID != 0x1c46 || p.TTL != 64 {
		t.Errorf("ip len %d id %#x ttl %d, want 60 0x1c46 64", p.IPLen, p.IPID, p.TTL)
	}
	if p.Outer != nil || p.Fragment || p.ID == 0 {
		t.Errorf("outer %v fragment %v id %#x", p.Outer, p.Fragment, p.ID)
	}
}

func TestParseTCPAckTimestamp(t *testing.T) {
	// Data segment with NOP, NOP, TS: flags P., ack and TSecr read.
	frame := ether(etIPv4, v4{src: "10.244.1.7", dst: "10.244.0.5", id: 7}.packet(decode.ProtoTCP,
		tcpSeg{sport: 8080, dport: 43512, seq: 5000, ack: 0x9a3c1f01, flags: decode.TCPPsh | decode.TCPAck,
			opts: tsOpt(111, 2_874_113_001), payload: []byte("HTTP/1.1 200 OK\r\n")}.bytes()))
	p := parse(t, frame, true)
	if decode.TCPFlagString(p.TCPFlags) != "P." || p.Seq != 5000 || p.Ack != 0x9a3c1f01 {
		t.Errorf("flags %q seq %d ack %#x", decode.TCPFlagString(p.TCPFlags), p.Seq, p.Ack)
	}
	if !p.HasTS || p.TSVal != 111 || p.TSEcr != 2_874_113_001 {
		t.Errorf("timestamp: has %v val %d ecr %d", p.HasTS, p.TSVal, p.TSEcr)
	}
	if p.IPLen != 20+32+17 {
		t.Errorf("ip len %d, want 69", p.IPLen)
	}
	// Without the option, HasTS is false.
	frame = ether(etIPv4, v4{src: "10.244.1.7", dst: "10.244.0.5"}.packet(decode.ProtoTCP,
		tcpSeg{sport: 8080, dport: 43512, flags: decode.TCPRst}.bytes()))
	if p := parse(t, frame, true); p.HasTS || p.TCPFlags != decode.TCPRst || decode.TCPFlagString(p.TCPFlags) != "R" {
		t.Errorf("RST without options: has TS %v, flags %q", p.HasTS, decode.TCPFlagString(p.TCPFlags))
	}
}

func TestTCPFlagString(t *testing.T) {
	for flags, want := range map[uint8]string{
		0:                             "",
		decode.TCPSyn:                 "S",
		decode.TCPSyn | decode.TCPAck: "S.",
		decode.TCPAck:                 ".",
		decode.TCPPsh | decode.TCPAck: "P.",
		decode.TCPFin | decode.TCPAck: "F.",
		decode.TCPRst:                 "R",
		decode.TCPRst | decode.TCPAck: "R.",
		decode.TCPSyn | decode.TCPEce | decode.TCPCwr: "SEW",
		decode.TCPUrg | decode.TCPAck:                 "U.",
	} {
		if got := decode.TCPFlagString(flags); got != want {
			t.Errorf("TCPFlagString(%#x) = %q, want %q", flags, got, want)
		}
	}
}

func TestParseIPv6UDP(t *testing.T) {
	payload := []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x1c\x00\x01")
	frame := ether(etIPv6, v6{src: "fd00:10:244::5", dst: "fd00:10:96::a", hlim: 63}.packet(decode.ProtoUDP,
		udpDgram(40001, 53, payload)))
	p := parse(t, frame, true)
	if want := (decode.Flow{Proto: decode.ProtoUDP, Src: addrPort("[fd00:10:244::5]:40001"), Dst: addrPort("[fd00:10:96::a]:53")}); p.Flow != want {
		t.Errorf("flow %v, want %v", p.Flow, want)
	}
	if p.IPLen != uint16(40+8+len(payload)) || p.TTL != 63 || p.IPID != 0 {
		t.Errorf("ip len %d hop limit %d id %d", p.IPLen, p.TTL, p.IPID)
	}
	if got := p.Flow.Endpoint(p.Flow.Src); got != "[fd00:10:244::5]:40001" {
		t.Errorf("Endpoint = %q", got)
	}
	if decode.ProtoName(p.Flow.Proto) != "udp" {
		t.Errorf("ProtoName = %q", decode.ProtoName(p.Flow.Proto))
	}
}

func TestParseIPv6ExtensionHeaders(t *testing.T) {
	// Hop-by-hop with a router alert and PadN (8 bytes), then a destination options
	// header of 16 bytes, then UDP.
	hbh := ext6{typ: 0, body: []byte{5, 2, 0, 0, 1, 0}}
	dst := ext6{typ: 60, body: []byte{1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
	udp := udpDgram(5000, 6000, []byte("hello, world"))
	for _, tc := range []struct {
		name string
		ext  []ext6
	}{
		{"hop-by-hop", []ext6{hbh}},
		{"hop-by-hop+dstopts", []ext6{hbh, dst}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := v6{src: "fd00::1", dst: "fd00::2", ext: tc.ext}.packet(decode.ProtoUDP, udp)
			p := parse(t, ether(etIPv6, pkt), true)
			if want := (decode.Flow{Proto: decode.ProtoUDP, Src: addrPort("[fd00::1]:5000"), Dst: addrPort("[fd00::2]:6000")}); p.Flow != want {
				t.Errorf("flow %v, want %v", p.Flow, want)
			}
			if p.IPLen != uint16(len(pkt)) {
				t.Errorf("ip len %d, want %d", p.IPLen, len(pkt))
			}
			if p.Fragment || p.TTL != 64 {
				t.Errorf("fragment %v hop limit %d", p.Fragment, p.TTL)
			}
			// As an L3 snapshot, the same.
			if q := parse(t, pkt, false); q.Flow != p.Flow || q.ID != p.ID {
				t.Errorf("L3: flow %v id %#x, want %v %#x", q.Flow, q.ID, p.Flow, p.ID)
			}
		})
	}
}

func TestParseIPv6Fragment(t *testing.T) {
	frag := func(offset uint16, more bool, id uint32, body []byte) []byte {
		b := []byte{0, 0, byte(offset >> 5), byte(offset << 3)}
		if more {
			b[3] |= 1
		}
		b = append(b, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
		return v6{src: "fd00::1", dst: "fd00::2", ext: []ext6{{typ: 44, body: b[2:]}}}.packet(decode.ProtoUDP, body)
	}
	// The fragment header's first two bytes are next header and reserved; ext6 writes
	// next header and a length byte, which a fragment header has as reserved zero.
	body := udpDgram(5000, 6000, make([]byte, 64))
	first := parse(t, frag(0, true, 0xabcdef01, body), false)
	if first.Fragment || first.Flow.Proto != decode.ProtoUDP || first.Flow.Dst.Port() != 6000 {
		t.Errorf("first fragment: fragment %v proto %d dst %v", first.Fragment, first.Flow.Proto, first.Flow.Dst)
	}
	later := parse(t, frag(9, false, 0xabcdef01, body), false)
	if !later.Fragment || later.Flow.Proto != decode.ProtoUDP || later.Flow.Dst.Port() != 0 {
		t.Errorf("later fragment: fragment %v proto %d dst %v", later.Fragment, later.Flow.Proto, later.Flow.Dst)
	}
	// IPv6 has no identification in its header: the fragment header's tells the
	// later fragments of two datagrams apart, and the offset those of one datagram.
	other := parse(t, frag(9, false, 0x12345678, body), false)
	if other.ID == later.ID {
		t.Errorf("later fragments of datagrams 0xabcdef01 and 0x12345678 share ID %#x", later.ID)
	}
	middle := parse(t, frag(18, true, 0xabcdef01, body), false)
	if middle.ID == later.ID {
		t.Errorf("fragments at offsets 72 and 144 of one datagram share ID %#x", later.ID)
	}
	if again := parse(t, frag(9, false, 0xabcdef01, body), false); again.ID != later.ID {
		t.Errorf("the same fragment twice: IDs %#x and %#x", again.ID, later.ID)
	}
}

func TestParseICMPEcho(t *testing.T) {
	frame := ether(etIPv4, v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0xbeef, frag: 0x4000}.packet(decode.ProtoICMP,
		icmpEcho(8, 0x1f2e, 3, []byte("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij"))))
	p := parse(t, frame, true)
	if want := (decode.Flow{Proto: decode.ProtoICMP, Src: addrPort("10.244.0.5:0"), Dst: addrPort("10.244.1.7:0")}); p.Flow != want {
		t.Errorf("flow %v, want %v", p.Flow, want)
	}
	if p.ICMPType != 8 || p.ICMPCode != 0 || p.ICMPID != 0x1f2e || p.ICMPSeq != 3 {
		t.Errorf("icmp type %d code %d id %#x seq %d", p.ICMPType, p.ICMPCode, p.ICMPID, p.ICMPSeq)
	}
	if p.IPLen != 84 {
		t.Errorf("ip len %d, want 84", p.IPLen)
	}
	if got := p.Flow.Endpoint(p.Flow.Dst); got != "10.244.1.7" {
		t.Errorf("Endpoint = %q, want the bare address", got)
	}

	// ICMPv6 echo reply.
	frame = ether(etIPv6, v6{src: "fd00::2", dst: "fd00::1"}.packet(decode.ProtoICMPv6, icmpEcho(129, 9, 10, []byte("ping"))))
	p = parse(t, frame, true)
	if p.Flow.Proto != decode.ProtoICMPv6 || p.ICMPType != 129 || p.ICMPID != 9 || p.ICMPSeq != 10 || decode.ProtoName(p.Flow.Proto) != "icmpv6" {
		t.Errorf("icmpv6: proto %d type %d id %d seq %d", p.Flow.Proto, p.ICMPType, p.ICMPID, p.ICMPSeq)
	}
}

func TestParseVLAN(t *testing.T) {
	ip := v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x1c46}.packet(decode.ProtoTCP,
		tcpSeg{sport: 43512, dport: 8080, seq: 1, flags: decode.TCPSyn}.bytes())
	tagged := parse(t, vlanEther(100, etIPv4, ip), true)
	plain := parse(t, ether(etIPv4, ip), true)
	if tagged.Flow != plain.Flow || tagged.Flow.Dst != addrPort("10.244.1.7:8080") {
		t.Errorf("tagged flow %v, plain %v", tagged.Flow, plain.Flow)
	}
	if tagged.ID != plain.ID {
		t.Errorf("VLAN tag changed the ID: %#x vs %#x", tagged.ID, plain.ID)
	}
	// 802.1ad outer tag too.
	qinq := vlanEther(100, etIPv4, ip)
	qinq[12], qinq[13] = 0x88, 0xa8
	if p := parse(t, qinq, true); p.Flow != plain.Flow {
		t.Errorf("802.1ad flow %v", p.Flow)
	}
}

func TestParseL3Only(t *testing.T) {
	ip := v4{src: "10.244.0.5", dst: "10.244.1.7", id: 9}.packet(decode.ProtoUDP, udpDgram(1234, 53, []byte("query")))
	p := parse(t, ip, false)
	if want := (decode.Flow{Proto: decode.ProtoUDP, Src: addrPort("10.244.0.5:1234"), Dst: addrPort("10.244.1.7:53")}); p.Flow != want {
		t.Errorf("flow %v, want %v", p.Flow, want)
	}
	// The same bytes read as a frame are garbage: the "ethertype" is the first half of
	// the source address (10.244), not IP.
	var q decode.Packet
	if err := decode.ParsePacket(ip, true, nil, &q); !errors.Is(err, decode.ErrNotIP) {
		t.Errorf("IP bytes parsed as a frame: error %v, want ErrNotIP", err)
	}
}

func TestParseErrors(t *testing.T) {
	arp := ether(etARP, make([]byte, 28))
	ip := v4{src: "10.0.0.1", dst: "10.0.0.2"}.packet(decode.ProtoUDP, udpDgram(1, 2, nil))
	ip6 := v6{src: "fd00::1", dst: "fd00::2"}.packet(decode.ProtoUDP, udpDgram(1, 2, nil))
	badIHL := append([]byte(nil), ip...)
	badIHL[0] = 0x44
	for _, tc := range []struct {
		name string
		data []byte
		l2   bool
		want error
	}{
		{"arp", arp, true, decode.ErrNotIP},
		{"vlan arp", vlanEther(5, etARP, make([]byte, 28)), true, decode.ErrNotIP},
		{"ipv4 header cut at 10 bytes", ether(etIPv4, ip[:10]), true, decode.ErrTruncated},
		{"ethertype but no ip", ether(etIPv4, nil), true, decode.ErrTruncated},
		{"ipv6 header cut at 39 bytes", ether(etIPv6, ip6[:39]), true, decode.ErrTruncated},
		{"l3 ipv4 cut at 19 bytes", ip[:19], false, decode.ErrTruncated},
		{"l3 empty", nil, false, decode.ErrTruncated},
		{"l3 version 5", append([]byte{0x55}, ip[1:]...), false, decode.ErrNotIP},
		{"ihl below 5", badIHL, false, decode.ErrNotIP},
	} {
		var p decode.Packet
		if err := decode.ParsePacket(tc.data, tc.l2, nil, &p); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestParseTruncatedL4(t *testing.T) {
	// A snapshot that ends inside the TCP header keeps what it has and no error.
	frame := synFrame()
	p := parse(t, frame[:14+20+4], true)
	if p.Flow.Dst != addrPort("10.244.1.7:8080") || p.TCPFlags != 0 || p.Seq != 0 {
		t.Errorf("cut after ports: flow %v flags %#x seq %d", p.Flow, p.TCPFlags, p.Seq)
	}
	p = parse(t, frame[:14+20+2], true)
	if p.Flow.Proto != decode.ProtoTCP || p.Flow.Dst.Port() != 0 || p.IPLen != 60 {
		t.Errorf("cut in ports: flow %v ip len %d", p.Flow, p.IPLen)
	}
	// Cut inside the options: what is there is read, the timestamp is not.
	p = parse(t, frame[:14+20+20+6], true)
	if p.TCPFlags != decode.TCPSyn || p.HasTS {
		t.Errorf("cut in options: flags %#x has TS %v", p.TCPFlags, p.HasTS)
	}
}

func TestParseIPv4Fragments(t *testing.T) {
	// A 3000-byte UDP datagram in fragments of 1480 bytes of payload.
	body := udpDgram(5000, 6000, make([]byte, 3000-8))
	h := v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x4242}
	first := h
	first.frag = 0x2000 // MF, offset 0
	p := parse(t, ether(etIPv4, first.packet(decode.ProtoUDP, body[:1480])), true)
	if p.Fragment || p.Flow.Dst != addrPort("10.244.1.7:6000") || p.IPID != 0x4242 {
		t.Errorf("first fragment: fragment %v flow %v id %#x", p.Fragment, p.Flow, p.IPID)
	}

	second := h
	second.frag = 0x2000 | 1480/8
	second.rawL4 = true
	// Bytes that would read as ports 80 -> 443 if the parser took them for a header.
	data := append([]byte{0, 80, 1, 187}, body[1484:2960]...)
	q := parse(t, ether(etIPv4, second.packet(decode.ProtoUDP, data)), true)
	if !q.Fragment {
		t.Error("non-first fragment: Fragment false")
	}
	if want := (decode.Flow{Proto: decode.ProtoUDP, Src: addrPort("10.244.0.5:0"), Dst: addrPort("10.244.1.7:0")}); q.Flow != want {
		t.Errorf("non-first fragment: flow %v, want %v (no ports)", q.Flow, want)
	}
	if q.IPID != 0x4242 || q.IPLen != 1500 {
		t.Errorf("non-first fragment: id %#x len %d", q.IPID, q.IPLen)
	}
	if q.ID == p.ID {
		t.Error("first and second fragment share an ID")
	}

	// The last fragment: no MF, offset 2960/8.
	last := h
	last.frag = 2960 / 8
	last.rawL4 = true
	r := parse(t, ether(etIPv4, last.packet(decode.ProtoUDP, body[2960:])), true)
	if !r.Fragment || r.Flow.Dst.Port() != 0 {
		t.Errorf("last fragment: fragment %v flow %v", r.Fragment, r.Flow)
	}
}

// Two middle fragments of one datagram have the same length, protocol and IPv4 ID: the
// fragment offset tells them apart.
func TestFragmentsOfOneDatagramDiffer(t *testing.T) {
	h := v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x4242, rawL4: true}
	data := make([]byte, 1480)
	var ids []uint64
	for _, off := range []uint16{1480 / 8, 2960 / 8} {
		f := h
		f.frag = 0x2000 | off
		ids = append(ids, parse(t, ether(etIPv4, f.packet(decode.ProtoUDP, data)), true).ID)
	}
	if ids[0] == ids[1] {
		t.Errorf("fragments at offsets 1480 and 2960 share ID %#x: they would be one journey", ids[0])
	}
}

// A VXLAN frame as flannel sends it: pod A's SYN inside, from node 192.168.1.10 to
// 192.168.1.11, VNI 1.
func vxlanSyn(port uint16) []byte {
	inner := ether(etIPv4, v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x1c46, ttl: 63, frag: 0x4000}.packet(decode.ProtoTCP,
		tcpSeg{sport: 43512, dport: 8080, seq: 0x9a3c1f00, flags: decode.TCPSyn, win: 64860,
			opts: synOpts(1410, 2_874_113_001)}.bytes()))
	return vxlan(v4{src: "192.168.1.10", dst: "192.168.1.11", id: 0x77}, 51234, port, 1, inner)
}

func TestParseVXLAN(t *testing.T) {
	plain := parse(t, synFrame(), true)
	for _, port := range []uint16{8472, 4789} {
		p := parse(t, vxlanSyn(port), true)
		if p.Flow != plain.Flow {
			t.Errorf("port %d: flow %v, want the inner %v", port, p.Flow, plain.Flow)
		}
		if p.Outer == nil {
			t.Fatalf("port %d: no Outer", port)
		}
		want := decode.Outer{Kind: decode.TunnelVXLAN, Src: addr("192.168.1.10"), Dst: addr("192.168.1.11"), SrcPort: 51234, DstPort: port, VNI: 1}
		if *p.Outer != want {
			t.Errorf("port %d: outer %+v, want %+v", port, *p.Outer, want)
		}
		if p.TTL != 63 || p.IPID != 0x1c46 || p.IPLen != 60 || p.TCPFlags != decode.TCPSyn || p.TSVal != 2_874_113_001 {
			t.Errorf("port %d: inner ttl %d id %#x len %d flags %#x tsval %d", port, p.TTL, p.IPID, p.IPLen, p.TCPFlags, p.TSVal)
		}
		if p.ID != plain.ID {
			t.Errorf("port %d: ID %#x, want the inner packet's %#x", port, p.ID, plain.ID)
		}
	}

	// A large VNI is read whole (24 bits).
	inner := synFrame()
	p := parse(t, vxlan(v4{src: "192.168.1.10", dst: "192.168.1.11"}, 1, 4789, 0xabcdef, inner), true)
	if p.Outer == nil || p.Outer.VNI != 0xabcdef {
		t.Errorf("VNI 0xabcdef: outer %+v", p.Outer)
	}

	// Copying a Packet keeps Outer valid for the copy's own lifetime.
	q := parse(t, vxlanSyn(8472), true)
	r := q
	q = decode.Packet{}
	if r.Outer == nil || r.Outer.VNI != 1 {
		t.Errorf("copied packet: outer %+v", r.Outer)
	}
}

func TestParseVXLANOtherPort(t *testing.T) {
	frame := vxlanSyn(9999)
	p := parse(t, frame, true)
	want := decode.Flow{Proto: decode.ProtoUDP, Src: addrPort("192.168.1.10:51234"), Dst: addrPort("192.168.1.11:9999")}
	if p.Flow != want || p.Outer != nil {
		t.Errorf("port 9999 with the default list: flow %v outer %v, want plain UDP %v", p.Flow, p.Outer, want)
	}

	// A custom list: 9999 is VXLAN, 8472 no longer is.
	var q decode.Packet
	if err := decode.ParsePacket(frame, true, []uint16{9999}, &q); err != nil {
		t.Fatal(err)
	}
	if q.Outer == nil || q.Outer.DstPort != 9999 || q.Flow.Dst != addrPort("10.244.1.7:8080") {
		t.Errorf("custom port 9999: flow %v outer %+v", q.Flow, q.Outer)
	}
	if err := decode.ParsePacket(vxlanSyn(8472), true, []uint16{9999}, &q); err != nil {
		t.Fatal(err)
	}
	if q.Outer != nil || q.Flow.Dst != addrPort("192.168.1.11:8472") {
		t.Errorf("8472 with custom list [9999]: flow %v outer %+v", q.Flow, q.Outer)
	}
	// No list at all: nothing is VXLAN.
	if err := decode.ParsePacket(vxlanSyn(8472), true, nil, &q); err != nil || q.Outer != nil {
		t.Errorf("nil port list: err %v outer %+v", err, q.Outer)
	}

	// The I flag clear: not VXLAN, even on 8472.
	noI := vxlanSyn(8472)
	noI[14+20+8] = 0
	if p := parse(t, noI, true); p.Outer != nil || p.Flow.Proto != decode.ProtoUDP {
		t.Errorf("I flag clear: flow %v outer %+v", p.Flow, p.Outer)
	}
	// A VXLAN header whose inner frame is cut off: the outer datagram.
	cut := vxlanSyn(8472)[:14+20+8+8+14+10]
	if p := parse(t, cut, true); p.Outer != nil || p.Flow.Dst != addrPort("192.168.1.11:8472") {
		t.Errorf("inner cut: flow %v outer %+v", p.Flow, p.Outer)
	}
}

func TestFlowHelpers(t *testing.T) {
	f := decode.Flow{Proto: decode.ProtoTCP, Src: addrPort("10.0.0.1:1000"), Dst: addrPort("[fd00::1]:80")}
	r := f.Reverse()
	if r.Src != f.Dst || r.Dst != f.Src || r.Proto != f.Proto || r.Reverse() != f {
		t.Errorf("Reverse: %v", r)
	}
	if got := f.Endpoint(f.Dst); got != "[fd00::1]:80" {
		t.Errorf("Endpoint = %q", got)
	}
	if got := decode.ProtoName(47); got != "proto-47" {
		t.Errorf("ProtoName(47) = %q", got)
	}
	if got := decode.ProtoName(decode.ProtoICMP); got != "icmp" {
		t.Errorf("ProtoName(1) = %q", got)
	}
}

// syn6Frame is a pod's SYN over IPv6.
func syn6Frame() []byte {
	return ether(etIPv6, v6{src: "fd00:10:244::5", dst: "fd00:10:244:1::7", hlim: 63}.packet(decode.ProtoTCP,
		tcpSeg{sport: 43512, dport: 8080, seq: 0x5eed, flags: decode.TCPSyn, opts: synOpts(1390, 77)}.bytes()))
}

// Every kind of tunnel yields the inner flow, the outer header with its kind, and the ID
// of the same inner packet parsed bare (at tunl0, which hands it to tc without L2), so
// that a packet keeps one journey through encapsulation.
func TestParseTunnels(t *testing.T) {
	syn4, syn6 := synFrame()[14:], syn6Frame()[14:]
	node := v4{src: "192.168.1.10", dst: "192.168.1.11", id: 0x99}
	node6 := v6{src: "fd00:1::10", dst: "fd00:1::11"}
	n4a, n4b, n6a, n6b := addr("192.168.1.10"), addr("192.168.1.11"), addr("fd00:1::10"), addr("fd00:1::11")
	opts := append(geneveOpt(0x0102, 0x80, []byte{1, 2, 3, 4, 5, 6, 7, 8}), geneveOpt(0xffff, 1, []byte{9, 9, 9, 9})...)
	cases := []struct {
		name  string
		data  []byte
		l2    bool
		inner []byte // the bare inner IP packet
		want  decode.Outer
	}{
		{"IPv4 TCP in IPIP at eth0", ipInIPv4(node, syn4), true, syn4,
			decode.Outer{Kind: decode.TunnelIPIP, Src: n4a, Dst: n4b}},
		{"IPIP from the network header (kfree_skb)", ipInIPv4(node, syn4)[14:], false, syn4,
			decode.Outer{Kind: decode.TunnelIPIP, Src: n4a, Dst: n4b}},
		{"IPv6 in SIT", ipInIPv4(node, syn6), true, syn6,
			decode.Outer{Kind: decode.TunnelSIT, Src: n4a, Dst: n4b}},
		{"IPv6 in IPv6", ipInIPv6(node6, syn6), true, syn6,
			decode.Outer{Kind: decode.TunnelIP6IP6, Src: n6a, Dst: n6b}},
		{"IPv4 in IPv6", ipInIPv6(node6, syn4), true, syn4,
			decode.Outer{Kind: decode.TunnelIP4IP6, Src: n6a, Dst: n6b}},
		{"Geneve, Ethernet, no options", geneve(node, 5000, 6081, 7, 0x6558, nil, synFrame()), true, syn4,
			decode.Outer{Kind: decode.TunnelGeneve, Src: n4a, Dst: n4b, SrcPort: 5000, DstPort: 6081, VNI: 7}},
		{"Geneve, Ethernet, 20 bytes of options", geneve(node, 5000, 6081, 0xabcdef, 0x6558, opts, synFrame()), true, syn4,
			decode.Outer{Kind: decode.TunnelGeneve, Src: n4a, Dst: n4b, SrcPort: 5000, DstPort: 6081, VNI: 0xabcdef, Options: 20}},
		{"Geneve, bare IPv4", geneve(node, 5000, 6081, 7, 0x0800, nil, syn4), true, syn4,
			decode.Outer{Kind: decode.TunnelGeneve, Src: n4a, Dst: n4b, SrcPort: 5000, DstPort: 6081, VNI: 7}},
		{"Geneve, bare IPv6 after options", geneve(node, 5000, 6081, 7, 0x86dd, opts, syn6), true, syn6,
			decode.Outer{Kind: decode.TunnelGeneve, Src: n4a, Dst: n4b, SrcPort: 5000, DstPort: 6081, VNI: 7, Options: 20}},
		// Nested, in any mix: the innermost packet, the outermost header.
		{"IPIP in Geneve", geneve(node, 5000, 6081, 7, 0x6558, opts, ipInIPv4(v4{src: "10.0.0.1", dst: "10.0.0.2"}, syn4)), true, syn4,
			decode.Outer{Kind: decode.TunnelGeneve, Src: n4a, Dst: n4b, SrcPort: 5000, DstPort: 6081, VNI: 7, Options: 20}},
		{"VXLAN in IPv4 in IPv6", ipInIPv6(node6, vxlanSyn(8472)[14:]), true, vxlanSyn(8472)[14+20+16+14:],
			decode.Outer{Kind: decode.TunnelIP4IP6, Src: n6a, Dst: n6b}},
		{"SIT in IPIP", ipInIPv4(node, ipInIPv4(v4{src: "10.0.0.1", dst: "10.0.0.2"}, syn6)[14:]), true, syn6,
			decode.Outer{Kind: decode.TunnelIPIP, Src: n4a, Dst: n4b}},
	}
	for _, c := range cases {
		bare := parse(t, c.inner, false)
		p := parse(t, c.data, c.l2)
		if p.Flow != bare.Flow {
			t.Errorf("%s: flow %v, want the inner %v", c.name, p.Flow, bare.Flow)
		}
		if p.Outer == nil {
			t.Errorf("%s: no outer header", c.name)
			continue
		}
		if *p.Outer != c.want {
			t.Errorf("%s: outer %+v, want %+v", c.name, *p.Outer, c.want)
		}
		if p.ID != bare.ID || p.IPLen != bare.IPLen || p.TTL != bare.TTL || p.Seq != bare.Seq {
			t.Errorf("%s: ID %#x len %d ttl %d seq %#x, want the bare packet's %#x %d %d %#x", c.name, p.ID, p.IPLen, p.TTL, p.Seq,
				bare.ID, bare.IPLen, bare.TTL, bare.Seq)
		}
	}
}

// Geneve headers that do not lead to a packet leave the outer datagram as it is.
func TestParseGeneveNot(t *testing.T) {
	node := v4{src: "192.168.1.10", dst: "192.168.1.11"}
	outer := decode.Flow{Proto: decode.ProtoUDP, Src: addrPort("192.168.1.10:5000"), Dst: addrPort("192.168.1.11:6081")}
	long := make([]byte, 63*4) // the most options there can be
	full := geneve(node, 5000, 6081, 7, 0x6558, long, synFrame())
	cases := []struct {
		name string
		data []byte
	}{
		// A snapshot of 256 bytes ends inside 252 bytes of options.
		{"options past the snapshot", full[:256]},
		{"options past the end of the header", full[:14+20+8+8+40]},
		{"Geneve header cut", full[:14+20+8+6]},
		{"version 1", func() []byte { b := geneve(node, 5000, 6081, 7, 0x6558, nil, synFrame()); b[14+20+8] |= 0x40; return b }()},
		{"protocol type LLDP", geneve(node, 5000, 6081, 7, 0x88cc, nil, synFrame())},
		{"Ethernet type ARP inside", geneve(node, 5000, 6081, 7, 0x6558, nil, ether(etARP, make([]byte, 28)))},
	}
	for _, c := range cases {
		var p decode.Packet
		if err := decode.ParsePacket(c.data, true, decode.DefaultVXLANPorts, &p); err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if p.Outer != nil || p.Flow != outer {
			t.Errorf("%s: flow %v outer %+v, want the outer datagram %v", c.name, p.Flow, p.Outer, outer)
		}
	}

	// The ports are the caller's: none, or another one.
	frame := geneve(node, 5000, 6081, 7, 0x6558, nil, synFrame())
	var p decode.Packet
	none := decode.Tunnels{VXLANPorts: decode.DefaultVXLANPorts}
	if err := none.Parse(frame, true, &p); err != nil || p.Outer != nil || p.Flow != outer {
		t.Errorf("no Geneve ports: err %v flow %v outer %+v", err, p.Flow, p.Outer)
	}
	other := decode.Tunnels{GenevePorts: []uint16{7000}}
	if err := other.Parse(geneve(node, 5000, 7000, 7, 0x6558, nil, synFrame()), true, &p); err != nil ||
		p.Outer == nil || p.Outer.Kind != decode.TunnelGeneve || p.Outer.DstPort != 7000 || p.Flow.Dst != addrPort("10.244.1.7:8080") {
		t.Errorf("Geneve on 7000: err %v flow %v outer %+v", err, p.Flow, p.Outer)
	}

	// IPIP whose inner packet is cut before its IP header: the outer packet.
	cut := ipInIPv4(node, synFrame()[14:])[:14+20+10]
	if err := decode.ParsePacket(cut, true, nil, &p); err != nil || p.Outer != nil || p.Flow.Proto != 4 {
		t.Errorf("IPIP cut: err %v flow %v outer %+v", err, p.Flow, p.Outer)
	}
}

func TestOuterText(t *testing.T) {
	for _, c := range []struct {
		o     decode.Outer
		proto uint8
		wire  string
	}{
		{decode.Outer{Kind: decode.TunnelVXLAN, DstPort: 8472}, decode.ProtoUDP, "udp/8472"},
		{decode.Outer{Kind: decode.TunnelGeneve, DstPort: 6081}, decode.ProtoUDP, "udp/6081"},
		{decode.Outer{Kind: decode.TunnelIPIP}, 4, "ipip"},
		{decode.Outer{Kind: decode.TunnelSIT}, 41, "sit"},
		{decode.Outer{Kind: decode.TunnelIP6IP6}, 41, "ip6ip6"},
		{decode.Outer{Kind: decode.TunnelIP4IP6}, 4, "ip4ip6"},
	} {
		if p, w := c.o.Proto(), c.o.Transport(); p != c.proto || w != c.wire {
			t.Errorf("%s: Proto %d Transport %q, want %d %q", c.o.Kind, p, w, c.proto, c.wire)
		}
	}
}
