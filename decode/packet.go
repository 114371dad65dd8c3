package decode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// IP protocol numbers.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// DefaultVXLANPorts are flannel's port and the IANA one.
var DefaultVXLANPorts = []uint16{8472, 4789}

// Flow is a packet's 5-tuple. Ports are zero for protocols without them.
type Flow struct {
	Proto uint8
	Src   netip.AddrPort
	Dst   netip.AddrPort
}

// ProtoName returns the protocol in lower case ("tcp", "udp", "icmp", "icmpv6", or
// the number).
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return fmt.Sprintf("proto-%d", p)
}

// Endpoint formats one side of a flow: "10.0.0.1:80", "[fd00::1]:80", or the bare
// address when the protocol has no ports.
func (f Flow) Endpoint(ap netip.AddrPort) string {
	if f.Proto == ProtoTCP || f.Proto == ProtoUDP {
		return ap.String()
	}
	return ap.Addr().String()
}

// Reverse returns the flow of the other direction.
func (f Flow) Reverse() Flow { return Flow{Proto: f.Proto, Src: f.Dst, Dst: f.Src} }

// Outer is the underlay header of a VXLAN packet.
type Outer struct {
	Src, Dst netip.Addr
	SrcPort  uint16
	DstPort  uint16
	VNI      uint32
}

// TCP flag bits.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
	TCPEce = 0x40
	TCPCwr = 0x80
)

// TCPFlagString renders flags as tcpdump does: "S", "S.", "P.", "F.", "R".
func TCPFlagString(f uint8) string {
	var b strings.Builder
	for _, x := range []struct {
		bit uint8
		c   byte
	}{{TCPSyn, 'S'}, {TCPFin, 'F'}, {TCPRst, 'R'}, {TCPPsh, 'P'}, {TCPUrg, 'U'}, {TCPEce, 'E'}, {TCPCwr, 'W'}} {
		if f&x.bit != 0 {
			b.WriteByte(x.c)
		}
	}
	if f&TCPAck != 0 {
		b.WriteByte('.')
	}
	return b.String()
}

// Packet is what decode reads from an event's bytes: the (inner) flow, the underlay
// header when the packet is VXLAN, and the fields its identity is made of.
type Packet struct {
	Flow     Flow
	Outer    *Outer // nil unless VXLAN; points into the Packet's own storage
	outer    Outer
	IPLen    uint16 // total length of the (inner) IP packet, as its header says
	IPID     uint16 // IPv4 only
	TTL      uint8
	TCPFlags uint8
	Seq, Ack uint32
	Payload  uint16 // TCP payload bytes, from the IP length and the header lengths
	TSVal    uint32
	TSEcr    uint32
	HasTS    bool
	ICMPType uint8
	ICMPCode uint8
	ICMPID   uint16
	ICMPSeq  uint16
	Fragment bool   // not the first fragment: no L4 header
	DF       bool   // IPv4: the don't-fragment bit; IPv6 packets are never fragmented on the way
	fragOff  uint16 // fragment offset (8-byte units): tells a datagram's fragments apart
	fragID   uint32 // IPv6 fragment header's identification (IPv4's is IPID)
	l3       int    // offset of the (inner) IP header in the snapshot
	// ID identifies the packet at every hop, across NAT, encapsulation and nodes;
	// see the package documentation.
	ID uint64
}

// Errors of ParsePacket.
var (
	ErrNotIP     = errors.New("not an IPv4 or IPv6 packet")
	ErrTruncated = errors.New("packet truncated")
)

type cursor struct {
	b   []byte
	off int
}

func (c *cursor) need(n int) bool { return c.off+n <= len(c.b) }

// ParsePacket decodes data, which starts at an Ethernet header when l2 is set and at the
// IP header otherwise. VXLAN packets on one of vxlanPorts yield the inner flow with the
// outer header in p.Outer. Fields the snapshot cut off are left zero; the error is
// ErrTruncated only when not even the IP header is there.
func ParsePacket(data []byte, l2 bool, vxlanPorts []uint16, p *Packet) error {
	*p = Packet{}
	c := cursor{b: data}
	if l2 {
		if !skipEthernet(&c) {
			return ErrNotIP
		}
	}
	l4, err := parseIP(&c, p)
	if err != nil {
		return err
	}
	parseL4(&c, l4, p)
	// VXLAN: the UDP header, 8 bytes of VXLAN (flags, VNI), then the inner frame. A
	// frame in VXLAN in VXLAN (a pod's own overlay, carried by the node's) is read to
	// the innermost packet, as the hop that takes one layer off reads it, so that both
	// hops give it one ID; Outer stays the outermost header. Each layer starts further
	// into the snapshot, so the loop ends.
	for p.Flow.Proto == ProtoUDP && !p.Fragment && isVXLAN(p.Flow.Dst.Port(), vxlanPorts) && l4+16 <= len(c.b) {
		vx := c.b[l4+8:]
		if vx[0]&0x08 == 0 {
			break
		}
		inner := cursor{b: c.b, off: l4 + 16}
		var ip Packet
		if !skipEthernet(&inner) {
			break
		}
		il4, err := parseIP(&inner, &ip)
		if err != nil {
			break
		}
		parseL4(&inner, il4, &ip)
		ip.outer = p.outer
		if p.Outer == nil {
			ip.outer = Outer{Src: p.Flow.Src.Addr(), Dst: p.Flow.Dst.Addr(),
				SrcPort: p.Flow.Src.Port(), DstPort: p.Flow.Dst.Port(),
				VNI: binary.BigEndian.Uint32(vx[4:]) >> 8}
		}
		*p = ip
		p.Outer = &p.outer
		c, l4 = inner, il4
	}
	p.ID = identity(&c, l4, p)
	return nil
}

func isVXLAN(port uint16, ports []uint16) bool {
	for _, x := range ports {
		if x == port {
			return true
		}
	}
	return false
}

func skipEthernet(c *cursor) bool {
	if !c.need(14) {
		return false
	}
	et := binary.BigEndian.Uint16(c.b[c.off+12:])
	c.off += 14
	if et == 0x8100 || et == 0x88a8 {
		if !c.need(4) {
			return false
		}
		et = binary.BigEndian.Uint16(c.b[c.off+2:])
		c.off += 4
	}
	return et == 0x0800 || et == 0x86dd
}

// parseIP reads the IP header at c.off and returns the offset of the L4 header.
func parseIP(c *cursor, p *Packet) (int, error) {
	if !c.need(1) {
		return 0, ErrTruncated
	}
	p.l3 = c.off
	switch c.b[c.off] >> 4 {
	case 4:
		if !c.need(20) {
			return 0, ErrTruncated
		}
		h := c.b[c.off:]
		ihl := int(h[0]&0x0f) * 4
		if ihl < 20 {
			return 0, ErrNotIP
		}
		p.IPLen = binary.BigEndian.Uint16(h[2:])
		p.IPID = binary.BigEndian.Uint16(h[4:])
		p.fragOff = binary.BigEndian.Uint16(h[6:]) & 0x1fff
		p.Fragment = p.fragOff != 0
		p.DF = h[6]&0x40 != 0
		p.TTL = h[8]
		p.Flow.Proto = h[9]
		src := netip.AddrFrom4([4]byte(h[12:16]))
		dst := netip.AddrFrom4([4]byte(h[16:20]))
		p.Flow.Src = netip.AddrPortFrom(src, 0)
		p.Flow.Dst = netip.AddrPortFrom(dst, 0)
		return c.off + ihl, nil
	case 6:
		if !c.need(40) {
			return 0, ErrTruncated
		}
		h := c.b[c.off:]
		p.IPLen = binary.BigEndian.Uint16(h[4:]) + 40
		p.TTL = h[7]
		src := netip.AddrFrom16([16]byte(h[8:24]))
		dst := netip.AddrFrom16([16]byte(h[24:40]))
		p.Flow.Src = netip.AddrPortFrom(src, 0)
		p.Flow.Dst = netip.AddrPortFrom(dst, 0)
		nh := h[6]
		off := c.off + 40
		for i := 0; i < 4; i++ {
			if nh != 0 && nh != 43 && nh != 60 && nh != 44 {
				break
			}
			if off+8 > len(c.b) {
				p.Flow.Proto = nh
				return off, nil
			}
			e := c.b[off:]
			if nh == 44 {
				p.fragOff = binary.BigEndian.Uint16(e[2:]) >> 3
				p.fragID = binary.BigEndian.Uint32(e[4:])
				if p.fragOff != 0 {
					p.Fragment = true
				}
				off += 8
			} else {
				off += (int(e[1]) + 1) * 8
			}
			nh = e[0]
		}
		p.Flow.Proto = nh
		return off, nil
	}
	return 0, ErrNotIP
}

func parseL4(c *cursor, off int, p *Packet) {
	if p.Fragment {
		return
	}
	b := c.b
	switch p.Flow.Proto {
	case ProtoTCP, ProtoUDP:
		if off+4 > len(b) {
			return
		}
		p.Flow.Src = netip.AddrPortFrom(p.Flow.Src.Addr(), binary.BigEndian.Uint16(b[off:]))
		p.Flow.Dst = netip.AddrPortFrom(p.Flow.Dst.Addr(), binary.BigEndian.Uint16(b[off+2:]))
		if p.Flow.Proto != ProtoTCP || off+20 > len(b) {
			return
		}
		p.Seq = binary.BigEndian.Uint32(b[off+4:])
		p.Ack = binary.BigEndian.Uint32(b[off+8:])
		p.TCPFlags = b[off+13]
		doff := int(b[off+12]>>4) * 4
		if hdrs := off - p.l3 + doff; int(p.IPLen) > hdrs {
			p.Payload = p.IPLen - uint16(hdrs)
		}
		parseTCPOptions(b, off+20, off+doff, p)
	case ProtoICMP, ProtoICMPv6:
		if off+8 > len(b) {
			return
		}
		p.ICMPType, p.ICMPCode = b[off], b[off+1]
		p.ICMPID = binary.BigEndian.Uint16(b[off+4:])
		p.ICMPSeq = binary.BigEndian.Uint16(b[off+6:])
	}
}

func parseTCPOptions(b []byte, off, end int, p *Packet) {
	if end > len(b) {
		end = len(b)
	}
	for off < end {
		kind := b[off]
		switch kind {
		case 0:
			return
		case 1:
			off++
			continue
		}
		if off+1 >= end {
			return
		}
		l := int(b[off+1])
		if l < 2 || off+l > end {
			return
		}
		if kind == 8 && l == 10 {
			p.TSVal = binary.BigEndian.Uint32(b[off+2:])
			p.TSEcr = binary.BigEndian.Uint32(b[off+6:])
			p.HasTS = true
		}
		off += l
	}
}

// FNV-1a, 64 bit.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

type hasher uint64

func (h *hasher) byte(b byte)  { *h = (*h ^ hasher(b)) * fnvPrime }
func (h *hasher) u16(v uint16) { h.byte(byte(v >> 8)); h.byte(byte(v)) }
func (h *hasher) u32(v uint32) { h.u16(uint16(v >> 16)); h.u16(uint16(v)) }

// identity hashes the fields of a packet that no hop changes: not the addresses or ports
// (NAT rewrites them), not the TTL (routing), not checksums, not the ICMP echo
// identifier (NAT rewrites it). See the package documentation.
func identity(c *cursor, l4 int, p *Packet) uint64 {
	h := hasher(fnvOffset)
	v := byte(6)
	if p.Flow.Src.Addr().Is4() {
		v = 4
	}
	h.byte(v)
	h.byte(p.Flow.Proto)
	h.u16(p.IPLen)
	h.u16(p.IPID)
	if p.Fragment {
		// Only the header: the offset (and IPv6's identification) tell fragments apart.
		h.byte(1)
		h.u16(p.fragOff)
		h.u32(p.fragID)
		return uint64(h)
	}
	switch p.Flow.Proto {
	case ProtoTCP:
		h.u32(p.Seq)
		h.u32(p.Ack)
		h.byte(p.TCPFlags)
		h.u32(p.TSVal)
		h.u32(p.TSEcr)
	case ProtoUDP:
		payload(&h, c.b, l4+8, p.l3+int(p.IPLen))
	case ProtoICMP, ProtoICMPv6:
		h.byte(p.ICMPType)
		h.byte(p.ICMPCode)
		h.u16(p.ICMPSeq)
		payload(&h, c.b, l4+8, p.l3+int(p.IPLen))
	default:
		payload(&h, c.b, l4, p.l3+int(p.IPLen))
	}
	return uint64(h)
}

// payload hashes up to 16 bytes of L4 payload: never past the end the IP header gives
// (link-layer padding differs between hops), and only as much as the snapshot holds.
func payload(h *hasher, b []byte, off, ipEnd int) {
	end := min(off+16, ipEnd, len(b))
	if off >= end {
		return
	}
	for _, x := range b[off:end] {
		h.byte(x)
	}
}
