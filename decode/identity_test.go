package decode_test

import (
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

// variant is one sighting of a packet: the bytes a hook got, and whether they start at
// an Ethernet header.
type variant struct {
	name string
	data []byte
	l2   bool
}

// sameID checks that every variant parses with the first one's ID, and returns it.
func sameID(t *testing.T, vs []variant) uint64 {
	t.Helper()
	var want uint64
	for i, v := range vs {
		p := parse(t, v.data, v.l2)
		if i == 0 {
			want = p.ID
			continue
		}
		if p.ID != want {
			t.Errorf("%s: ID %#016x, want %#016x as %s", v.name, p.ID, want, vs[0].name)
		}
	}
	return want
}

// sightings returns the ways one packet is seen on its path: the IP packet built by
// mk(header, l4) with its L4 part built by l4(sport, dport). NAT variants rewrite
// addresses and ports (and so the checksums the builder computes).
func sightings(hdr v4, proto uint8, l4 func(sport, dport uint16) []byte, sport, dport uint16) []variant {
	ip := hdr.packet(proto, l4(sport, dport))
	routed := hdr
	routed.ttl = 63
	dnat := hdr
	dnat.dst = "10.244.1.3"
	snat := hdr
	snat.src = "192.168.1.10"
	return []variant{
		{"plain frame", ether(etIPv4, ip), true},
		{"L3 snapshot (kfree_skb)", ip, false},
		{"VLAN-tagged frame", vlanEther(42, etIPv4, ip), true},
		{"TTL 63 after routing", ether(etIPv4, routed.packet(proto, l4(sport, dport))), true},
		{"inside VXLAN on 8472", vxlan(v4{src: "192.168.1.10", dst: "192.168.1.11", id: 99}, 40000, 8472, 1,
			ether(etIPv4, routed.packet(proto, l4(sport, dport)))), true},
		{"inside VXLAN on 4789, other outer", vxlan(v4{src: "172.16.0.1", dst: "172.16.0.2", id: 12345, ttl: 3}, 61000, 4789, 77,
			ether(etIPv4, routed.packet(proto, l4(sport, dport)))), true},
		{"DNAT address and port", ether(etIPv4, dnat.packet(proto, l4(sport, 8053))), true},
		{"SNAT address and port", ether(etIPv4, snat.packet(proto, l4(61000, dport))), true},
		{"Ethernet padding", pad(ether(etIPv4, ip)), true},
		{"trailing link-layer bytes", append(ether(etIPv4, ip), 0xde, 0xad, 0xbe, 0xef), true},
	}
}

func TestIdentityTCP(t *testing.T) {
	hdr := v4{src: "10.244.0.5", dst: "10.96.0.20", id: 0x31f0, frag: 0x4000}
	seg := func(seq, ack uint32, tsval uint32) func(uint16, uint16) []byte {
		return func(sport, dport uint16) []byte {
			return tcpSeg{sport: sport, dport: dport, seq: seq, ack: ack, flags: decode.TCPPsh | decode.TCPAck,
				opts: tsOpt(tsval, 3_000_000), payload: []byte("GET / HTTP/1.1\r\nHost: web\r\n\r\n")}.bytes()
		}
	}
	id := sameID(t, sightings(hdr, decode.ProtoTCP, seg(1001, 2002, 4_000_000), 43512, 80))

	differ := func(name string, h v4, l4 []byte) {
		t.Helper()
		if p := parse(t, ether(etIPv4, h.packet(decode.ProtoTCP, l4)), true); p.ID == id {
			t.Errorf("%s: same ID %#016x as the original", name, id)
		}
	}
	// A retransmission: same seq, ack, flags and length, but the socket's IP ID moved on...
	retr := hdr
	retr.id = 0x31f7
	differ("retransmission with a new IPv4 ID", retr, seg(1001, 2002, 4_000_000)(43512, 80))
	// ... and the timestamp too; either alone suffices.
	differ("retransmission with a new TSval", hdr, seg(1001, 2002, 4_000_200)(43512, 80))
	differ("another sequence number", hdr, seg(1002, 2002, 4_000_000)(43512, 80))
	differ("another ack", hdr, seg(1001, 2003, 4_000_000)(43512, 80))
	fin := tcpSeg{sport: 43512, dport: 80, seq: 1001, ack: 2002, flags: decode.TCPFin | decode.TCPPsh | decode.TCPAck,
		opts: tsOpt(4_000_000, 3_000_000), payload: []byte("GET / HTTP/1.1\r\nHost: web\r\n\r\n")}.bytes()
	differ("other flags", hdr, fin)
	// The TCP payload is not hashed: only the length (through the IP length) is.
	same := tcpSeg{sport: 43512, dport: 80, seq: 1001, ack: 2002, flags: decode.TCPPsh | decode.TCPAck,
		opts: tsOpt(4_000_000, 3_000_000), payload: []byte("GET / HTTP/1.1\r\nHost: WEB\r\n\r\n")}.bytes()
	if p := parse(t, hdr.packet(decode.ProtoTCP, same), false); p.ID != id {
		t.Errorf("TCP payload bytes changed the ID")
	}
}

func TestIdentityUDP(t *testing.T) {
	hdr := v4{src: "10.244.0.5", dst: "10.96.0.10", id: 0x0e11}
	dns := []byte("\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01")
	dgram := func(payload []byte) func(uint16, uint16) []byte {
		return func(sport, dport uint16) []byte { return udpDgram(sport, dport, payload) }
	}
	id := sameID(t, sightings(hdr, decode.ProtoUDP, dgram(dns), 40001, 53))

	// Two queries differing only in their payload (the DNS transaction ID).
	other := append([]byte(nil), dns...)
	other[0] = 0xac
	if p := parse(t, hdr.packet(decode.ProtoUDP, udpDgram(40001, 53, other)), false); p.ID == id {
		t.Errorf("datagrams with different payloads share ID %#016x", id)
	}
	// A difference after the 16 hashed bytes does not count.
	late := append([]byte(nil), dns...)
	late[20] ^= 0xff
	if p := parse(t, hdr.packet(decode.ProtoUDP, udpDgram(40001, 53, late)), false); p.ID != id {
		t.Errorf("a payload difference at byte 20 changed the ID")
	}
}

// A small datagram is padded to the Ethernet minimum on some hops and not on others;
// the padding is not part of the packet.
func TestIdentityUDPPadding(t *testing.T) {
	hdr := v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x0101}
	dgram := func(sport, dport uint16) []byte { return udpDgram(sport, dport, []byte("ping")) }
	vs := sightings(hdr, decode.ProtoUDP, dgram, 9000, 9001)
	frame := ether(etIPv4, hdr.packet(decode.ProtoUDP, dgram(9000, 9001)))
	if len(frame) != 46 || len(pad(frame)) != 60 {
		t.Fatalf("fixture: frame %d bytes, padded %d", len(frame), len(pad(frame)))
	}
	vs = append(vs,
		variant{"padded with zeros", append(append([]byte(nil), frame...), make([]byte, 14)...), true},
		variant{"VXLAN of a padded frame", vxlan(v4{src: "192.168.1.10", dst: "192.168.1.11"}, 1, 8472, 1, pad(frame)), true},
	)
	sameID(t, vs)

	// With four bytes of payload and no padding the payload is whole: another four
	// bytes differ.
	other := hdr.packet(decode.ProtoUDP, udpDgram(9000, 9001, []byte("pong")))
	if parse(t, other, false).ID == parse(t, frame, true).ID {
		t.Error(`"ping" and "pong" share an ID`)
	}
}

func TestIdentityICMPEcho(t *testing.T) {
	hdr := v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x5a5a, frag: 0x4000}
	payload := []byte("\x9e\x4b\x0f\x66\x00\x00\x00\x00\x4c\x1d\x0e\x00\x00\x00\x00\x00\x10\x11\x12\x13")
	echo := func(ident uint16) func(uint16, uint16) []byte {
		return func(uint16, uint16) []byte { return icmpEcho(8, ident, 7, payload) }
	}
	vs := sightings(hdr, decode.ProtoICMP, echo(0x1f2e), 0, 0)
	// NAT rewrites the echo identifier (and the checksum with it).
	snat := hdr
	snat.src = "192.168.1.10"
	vs = append(vs, variant{"SNAT with a new identifier", ether(etIPv4, snat.packet(decode.ProtoICMP, echo(0x8001)(0, 0))), true})
	id := sameID(t, vs)

	if p := parse(t, hdr.packet(decode.ProtoICMP, icmpEcho(8, 0x1f2e, 8, payload)), false); p.ID == id {
		t.Error("echo sequence 7 and 8 share an ID")
	}
	if p := parse(t, hdr.packet(decode.ProtoICMP, icmpEcho(0, 0x1f2e, 7, payload)), false); p.ID == id {
		t.Error("echo request and reply share an ID")
	}
	if p := parse(t, hdr.packet(decode.ProtoICMP, icmpEcho(8, 0x1f2e, 7, append([]byte{0}, payload[1:]...))), false); p.ID == id {
		t.Error("echo payloads differing in byte 0 share an ID")
	}
}

func TestIdentityIPv6(t *testing.T) {
	hdr := v6{src: "fd00:10:244::5", dst: "fd00:10:244:1::7"}
	routed := v6{src: "fd00:10:244::5", dst: "fd00:10:244:1::7", hlim: 63}
	dnat := v6{src: "fd00:10:244::5", dst: "fd00:10:244:1::99"}
	seg := func(dport uint16) []byte {
		return tcpSeg{sport: 43512, dport: dport, seq: 1, ack: 2, flags: decode.TCPAck, opts: tsOpt(10, 20)}.bytes()
	}
	ip := hdr.packet(decode.ProtoTCP, seg(80))
	id := sameID(t, []variant{
		{"plain frame", ether(etIPv6, ip), true},
		{"L3 snapshot", ip, false},
		{"hop limit 63", ether(etIPv6, routed.packet(decode.ProtoTCP, seg(80))), true},
		{"DNAT", ether(etIPv6, dnat.packet(decode.ProtoTCP, seg(8080))), true},
		{"IPv6 inside IPv4 VXLAN", vxlan(v4{src: "192.168.1.10", dst: "192.168.1.11"}, 1, 4789, 9, ether(etIPv6, routed.packet(decode.ProtoTCP, seg(80)))), true},
	})
	// The same TCP fields over IPv4 are another packet.
	v4pkt := v4{src: "10.0.0.1", dst: "10.0.0.2"}.packet(decode.ProtoTCP, seg(80))
	if parse(t, v4pkt, false).ID == id {
		t.Error("IPv4 and IPv6 packets with the same TCP header share an ID")
	}
	// IPv6 with timestamps off: a retransmission keeps its ID (documented limitation).
	noTS := func() []byte { return tcpSeg{sport: 1, dport: 2, seq: 5, flags: decode.TCPAck}.bytes() }
	a := parse(t, hdr.packet(decode.ProtoTCP, noTS()), false)
	b := parse(t, hdr.packet(decode.ProtoTCP, noTS()), false)
	if a.ID != b.ID {
		t.Error("identical IPv6 segments differ")
	}
}

// The forward journey on one node and the receive journey on the other compute the same
// ID from the same packet: what joins them later.
func TestIdentityAcrossNodes(t *testing.T) {
	sender := parse(t, vxlanSyn(8472), true) // node A's eth0 egress
	receiver := parse(t, synFrame(), true)   // node B's pod veth egress (TTL differs)
	if sender.ID != receiver.ID || sender.ID != parse(t, synFrame()[14:], false).ID {
		t.Errorf("IDs differ across nodes: %#x vs %#x", sender.ID, receiver.ID)
	}
}

// A pod's own VXLAN (a nested overlay) carried in the node's: flannel.1 egress sees the
// pod's VXLAN packet and takes its header off, eth0 egress sees it inside the node's
// VXLAN. Both read it to the innermost packet, so the packet keeps one ID and one
// journey; the underlay header is the outermost one each hop sees. (Found by
// FuzzParsePacket: testdata/fuzz/FuzzParsePacket/vxlan-in-vxlan.)
func TestIdentityVXLANInVXLAN(t *testing.T) {
	inner := ether(etIPv4, podSyn(63, "10.244.1.7", 8080))
	podVXLAN := vxlan(v4{src: "10.244.0.5", dst: "10.244.1.7", id: 5}, 40000, 4789, 42, inner)
	atFlannel := parse(t, podVXLAN, true)
	atEth0 := parse(t, encap(podVXLAN), true)
	plain := parse(t, inner, true)
	if atFlannel.ID != plain.ID || atEth0.ID != plain.ID || atEth0.Flow != plain.Flow {
		t.Errorf("IDs: flannel.1 %#x, eth0 %#x (flow %v), the inner packet %#x (flow %v)",
			atFlannel.ID, atEth0.ID, atEth0.Flow, plain.ID, plain.Flow)
	}
	if o := atEth0.Outer; o == nil || o.Src != addr("192.168.1.10") || o.VNI != 1 || o.DstPort != 8472 {
		t.Errorf("eth0's underlay header %+v, want the node's (192.168.1.10, VNI 1, port 8472)", o)
	}
	if o := atFlannel.Outer; o == nil || o.Src != addr("10.244.0.5") || o.VNI != 42 {
		t.Errorf("flannel.1's underlay header %+v, want the pod's (10.244.0.5, VNI 42)", o)
	}
}
