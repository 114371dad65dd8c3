package decode_test

// A small packet builder for the tests: every layer is assembled byte by byte with the
// lengths (and checksums) a real stack would write, so that the parser meets what the
// kernel hands to the BPF programs.

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

// Ethernet types.
const (
	etIPv4 = 0x0800
	etIPv6 = 0x86dd
	etARP  = 0x0806
	etVLAN = 0x8100
)

var (
	macA = [6]byte{0x02, 0x42, 0x0a, 0xf4, 0x00, 0x05}
	macB = [6]byte{0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x01}
)

// ether prepends an Ethernet header.
func ether(etype uint16, payload []byte) []byte {
	b := make([]byte, 0, 14+len(payload))
	b = append(b, macB[:]...)
	b = append(b, macA[:]...)
	b = binary.BigEndian.AppendUint16(b, etype)
	return append(b, payload...)
}

// vlanEther prepends an Ethernet header with one 802.1Q tag.
func vlanEther(vid uint16, etype uint16, payload []byte) []byte {
	b := make([]byte, 0, 18+len(payload))
	b = append(b, macB[:]...)
	b = append(b, macA[:]...)
	b = binary.BigEndian.AppendUint16(b, etVLAN)
	b = binary.BigEndian.AppendUint16(b, vid&0x0fff)
	b = binary.BigEndian.AppendUint16(b, etype)
	return append(b, payload...)
}

// pad appends Ethernet padding up to the 60-byte minimum frame, with a non-zero filler
// so that a parser reading it would notice.
func pad(frame []byte) []byte {
	for len(frame) < 60 {
		frame = append(frame, 0xa5)
	}
	return frame
}

func csum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// l4Checksum fills the checksum of an L4 segment, with the pseudo header when the
// protocol has one.
func l4Checksum(proto uint8, src, dst netip.Addr, l4 []byte) {
	var at int
	switch proto {
	case decode.ProtoTCP:
		at = 16
	case decode.ProtoUDP:
		at = 6
	case decode.ProtoICMP, decode.ProtoICMPv6:
		at = 2
	default:
		return
	}
	if len(l4) < at+2 {
		return
	}
	l4[at], l4[at+1] = 0, 0
	var sum uint32
	if proto != decode.ProtoICMP {
		sum = csum(sum, src.AsSlice())
		sum = csum(sum, dst.AsSlice())
		sum += uint32(proto) + uint32(len(l4))
	}
	sum = csum(sum, l4)
	c := fold(sum)
	if c == 0 && proto == decode.ProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[at:], c)
}

// v4 is an IPv4 header; zero fields get defaults (TTL 64).
type v4 struct {
	src, dst string
	ttl      uint8
	id       uint16
	frag     uint16 // flags and fragment offset, as on the wire (0x4000 is DF)
	opts     []byte // options, a multiple of 4 bytes
	rawL4    bool   // the payload is not an L4 header: leave its checksum alone
}

// packet returns the IPv4 packet carrying l4 (which it copies and, unless this is a
// fragment, checksums).
func (h v4) packet(proto uint8, l4 []byte) []byte {
	src, dst := netip.MustParseAddr(h.src), netip.MustParseAddr(h.dst)
	ttl := h.ttl
	if ttl == 0 {
		ttl = 64
	}
	hl := 20 + len(h.opts)
	b := make([]byte, hl, hl+len(l4))
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(l4)))
	binary.BigEndian.PutUint16(b[4:], h.id)
	binary.BigEndian.PutUint16(b[6:], h.frag)
	b[8] = ttl
	b[9] = proto
	copy(b[12:16], src.AsSlice())
	copy(b[16:20], dst.AsSlice())
	copy(b[20:], h.opts)
	binary.BigEndian.PutUint16(b[10:], fold(csum(0, b[:hl])))
	b = append(b, l4...)
	if !h.rawL4 && h.frag&0x3fff == 0 {
		l4Checksum(proto, src, dst, b[hl:])
	}
	return b
}

// ext6 is an IPv6 extension header: its body follows the next-header and length bytes
// and must make the header a multiple of 8 bytes (6, 14, ...).
type ext6 struct {
	typ  uint8
	body []byte
}

// v6 is an IPv6 header; zero fields get defaults (hop limit 64).
type v6 struct {
	src, dst string
	hlim     uint8
	ext      []ext6
}

func (h v6) packet(proto uint8, l4 []byte) []byte {
	src, dst := netip.MustParseAddr(h.src), netip.MustParseAddr(h.dst)
	hlim := h.hlim
	if hlim == 0 {
		hlim = 64
	}
	var exts []byte
	for i, e := range h.ext {
		nh := proto
		if i+1 < len(h.ext) {
			nh = h.ext[i+1].typ
		}
		if (2+len(e.body))%8 != 0 {
			panic("ext6 body must make the header a multiple of 8 bytes")
		}
		exts = append(exts, nh, byte((2+len(e.body))/8-1))
		exts = append(exts, e.body...)
	}
	first := proto
	if len(h.ext) > 0 {
		first = h.ext[0].typ
	}
	b := make([]byte, 40, 40+len(exts)+len(l4))
	b[0] = 0x60
	b[1] = 0x0a // a traffic class/flow label that means nothing to the parser
	binary.BigEndian.PutUint16(b[4:], uint16(len(exts)+len(l4)))
	b[6] = first
	b[7] = hlim
	copy(b[8:24], src.AsSlice())
	copy(b[24:40], dst.AsSlice())
	b = append(b, exts...)
	b = append(b, l4...)
	l4Checksum(proto, src, dst, b[40+len(exts):])
	return b
}

// tcpSeg is a TCP segment; its checksum is filled by the IP layer.
type tcpSeg struct {
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	win          uint16
	opts         []byte // padded with zero (end of options) bytes to a multiple of 4
	payload      []byte
}

func (s tcpSeg) bytes() []byte {
	opts := append([]byte(nil), s.opts...)
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	hl := 20 + len(opts)
	b := make([]byte, hl, hl+len(s.payload))
	binary.BigEndian.PutUint16(b[0:], s.sport)
	binary.BigEndian.PutUint16(b[2:], s.dport)
	binary.BigEndian.PutUint32(b[4:], s.seq)
	binary.BigEndian.PutUint32(b[8:], s.ack)
	b[12] = byte(hl/4) << 4
	b[13] = s.flags
	win := s.win
	if win == 0 {
		win = 64240
	}
	binary.BigEndian.PutUint16(b[14:], win)
	copy(b[20:], opts)
	return append(b, s.payload...)
}

// tsOpt is NOP, NOP, timestamp: how Linux sends the option after the handshake.
func tsOpt(val, ecr uint32) []byte {
	b := []byte{1, 1, 8, 10}
	b = binary.BigEndian.AppendUint32(b, val)
	return binary.BigEndian.AppendUint32(b, ecr)
}

// synOpts are a Linux SYN's options: MSS, SACK permitted, timestamp, NOP, window scale.
func synOpts(mss uint16, tsval uint32) []byte {
	b := []byte{2, 4}
	b = binary.BigEndian.AppendUint16(b, mss)
	b = append(b, 4, 2, 8, 10)
	b = binary.BigEndian.AppendUint32(b, tsval)
	b = binary.BigEndian.AppendUint32(b, 0)
	return append(b, 1, 3, 3, 7)
}

// udpDgram is a UDP datagram; its checksum is filled by the IP layer.
func udpDgram(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// icmpEcho is an ICMP (or ICMPv6) echo message: type 8/0 (128/129 for v6).
func icmpEcho(typ uint8, id, seq uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	return append(b, payload...)
}

// vxlan wraps an inner Ethernet frame as the uplink sends it: Ethernet, outer IPv4, UDP
// from sport to dport, the VXLAN header with the I flag and vni, then the frame.
func vxlan(outer v4, sport, dport uint16, vni uint32, inner []byte) []byte {
	hdr := make([]byte, 8, 8+len(inner))
	hdr[0] = 0x08
	binary.BigEndian.PutUint32(hdr[4:], vni<<8)
	hdr = append(hdr, inner...)
	outer.frag |= 0x4000 // DF, as the kernel sets on VXLAN
	return ether(etIPv4, outer.packet(decode.ProtoUDP, udpDgram(sport, dport, hdr)))
}

// parse parses data and fails the test on error.
func parse(t testing.TB, data []byte, l2 bool) decode.Packet {
	t.Helper()
	var p decode.Packet
	if err := decode.ParsePacket(data, l2, decode.DefaultVXLANPorts, &p); err != nil {
		t.Fatalf("ParsePacket: %v", err)
	}
	return p
}

func addrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// ifname is the kernel's char[16] form of an interface name.
func ifname(s string) [16]byte {
	var b [16]byte
	copy(b[:15], s)
	return b
}

// wire encodes ev as the kernel's ring buffer record and decodes it back, so that every
// fixture event goes through the record format.
func wire(t testing.TB, ev decode.Event) decode.Event {
	t.Helper()
	rec := decode.AppendEvent(nil, &ev)
	var out decode.Event
	if err := decode.ParseEvent(rec, &out); err != nil {
		t.Fatalf("ParseEvent: %v", err)
	}
	return out
}

// event makes an event carrying data (at most SnapMax bytes of it).
func event(kind decode.Kind, tNs uint64, ifindex uint32, name string, dir decode.Dir, l2 bool, data []byte) decode.Event {
	ev := decode.Event{TimeNs: tNs, Ifindex: ifindex, Kind: kind, Dir: dir, L2: l2,
		Ifname: ifname(name), Len: uint32(len(data))}
	// skb->protocol as the kernel stores it: network byte order.
	switch {
	case l2 && len(data) >= 14:
		ev.Protocol = binary.NativeEndian.Uint16(data[12:14])
	case !l2 && len(data) > 0 && data[0]>>4 == 6:
		ev.Protocol = binary.NativeEndian.Uint16([]byte{0x86, 0xdd})
	case !l2:
		ev.Protocol = binary.NativeEndian.Uint16([]byte{0x08, 0x00})
	}
	ev.SnapLen = uint16(copy(ev.Data[:], data))
	return ev
}

// ipInIPv4 wraps an IP packet in an outer IPv4 header, as a tunl0 (IPIP, protocol 4)
// or sit (IPv6, protocol 41) device sends it on the uplink: Ethernet, outer IPv4, the
// packet.
func ipInIPv4(outer v4, inner []byte) []byte {
	proto := uint8(4)
	if inner[0]>>4 == 6 {
		proto = 41
	}
	outer.rawL4 = true
	return ether(etIPv4, outer.packet(proto, inner))
}

// ipInIPv6 wraps an IP packet in an outer IPv6 header, as ip6tnl sends it: next header
// 41 for IPv6 (ip6ip6), 4 for IPv4 (ip4ip6).
func ipInIPv6(outer v6, inner []byte) []byte {
	proto := uint8(4)
	if inner[0]>>4 == 6 {
		proto = 41
	}
	return ether(etIPv6, outer.packet(proto, inner))
}

// geneve wraps a packet as a Geneve device sends it: Ethernet, outer IPv4, UDP from
// sport to dport, the Geneve header (version 0, len(opts)/4 words of options, protocol
// type ptype: 0x6558 when inner is an Ethernet frame, 0x0800 or 0x86dd for bare IP,
// vni), the options, then inner.
func geneve(outer v4, sport, dport uint16, vni uint32, ptype uint16, opts, inner []byte) []byte {
	if len(opts)%4 != 0 || len(opts) > 63*4 {
		panic("geneve options: a multiple of 4 bytes, at most 252")
	}
	hdr := make([]byte, 8, 8+len(opts)+len(inner))
	hdr[0] = byte(len(opts) / 4)
	binary.BigEndian.PutUint16(hdr[2:], ptype)
	binary.BigEndian.PutUint32(hdr[4:], vni<<8)
	hdr = append(hdr, opts...)
	hdr = append(hdr, inner...)
	outer.frag |= 0x4000
	return ether(etIPv4, outer.packet(decode.ProtoUDP, udpDgram(sport, dport, hdr)))
}

// geneveOpt is one Geneve option TLV: class, type, and data of a multiple of 4 bytes.
func geneveOpt(class uint16, typ uint8, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, class)
	b = append(b, typ, byte(len(data)/4))
	return append(b, data...)
}
