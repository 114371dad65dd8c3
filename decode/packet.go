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

// DefaultGenevePorts is the IANA port of Geneve (OVN, Cilium, Antrea).
var DefaultGenevePorts = []uint16{6081}

// IP protocols that carry a packet in a packet.
const (
	protoIPIP = 4  // IPv4 follows
	protoIPv6 = 41 // IPv6 follows
)

// Tunnels says which UDP ports carry which tunnel; IP in IP (protocols 4 and 41) needs
// no port. A nil list: no packet is of that kind.
type Tunnels struct {
	VXLANPorts  []uint16
	GenevePorts []uint16
}

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

// Tunnel kinds (Outer.Kind), named by what carries what as ip link names the devices.
const (
	TunnelVXLAN  = "vxlan"
	TunnelGeneve = "geneve"
	TunnelIPIP   = "ipip"   // IPv4 in IPv4, IP protocol 4 (Calico's tunl0)
	TunnelSIT    = "sit"    // IPv6 in IPv4, IP protocol 41
	TunnelIP6IP6 = "ip6ip6" // IPv6 in IPv6, next header 41 (ip6tnl)
	TunnelIP4IP6 = "ip4ip6" // IPv4 in IPv6, next header 4 (ip6tnl)
)

// Outer is the underlay header of an encapsulated packet: the outermost one when
// tunnels nest.
type Outer struct {
	Kind     string // TunnelVXLAN, TunnelGeneve, TunnelIPIP, ...
	Src, Dst netip.Addr
	SrcPort  uint16 // UDP tunnels (VXLAN, Geneve); 0 for IP in IP
	DstPort  uint16
	VNI      uint32 // VXLAN and Geneve; 0 for IP in IP
	Options  uint16 // Geneve: bytes of options between its header and the packet
}

// UDP reports whether the tunnel is carried in UDP (VXLAN, Geneve).
func (o *Outer) UDP() bool { return o.Kind == TunnelVXLAN || o.Kind == TunnelGeneve }

// Proto is the IP protocol that carries the tunnel on the underlay: UDP, 4 (IPv4
// follows) or 41 (IPv6 follows).
func (o *Outer) Proto() uint8 {
	switch o.Kind {
	case TunnelIPIP, TunnelIP4IP6:
		return protoIPIP
	case TunnelSIT, TunnelIP6IP6:
		return protoIPv6
	}
	return ProtoUDP
}

// Transport names what the underlay carries the tunnel as, the way a firewall rule
// would match it: "udp/8472" for a UDP tunnel, else the kind ("ipip", "sit").
func (o *Outer) Transport() string {
	if o.UDP() {
		return fmt.Sprintf("udp/%d", o.DstPort)
	}
	return o.Kind
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
// header when the packet is encapsulated, and the fields its identity is made of.
type Packet struct {
	Flow     Flow
	Outer    *Outer // nil unless encapsulated; points into the Packet's own storage
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
// IP header otherwise. VXLAN packets on one of vxlanPorts, Geneve packets on
// DefaultGenevePorts and IP in IP yield the inner flow with the outer header in
// p.Outer (Tunnels.Parse takes the Geneve ports too). Fields the snapshot cut off are
// left zero; the error is ErrTruncated only when not even the IP header is there.
func ParsePacket(data []byte, l2 bool, vxlanPorts []uint16, p *Packet) error {
	t := Tunnels{VXLANPorts: vxlanPorts, GenevePorts: DefaultGenevePorts}
	return t.Parse(data, l2, p)
}

// Parse decodes data as ParsePacket does, with t's ports for VXLAN and Geneve.
func (t *Tunnels) Parse(data []byte, l2 bool, p *Packet) error {
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
	// A tunnel's packet is read to the innermost packet: a frame in VXLAN in VXLAN (a
	// pod's own overlay, carried by the node's), IP in IP in Geneve, as the hop that
	// takes one layer off reads it, so that both hops give it one ID; Outer stays the
	// outermost header. Each layer starts further into the snapshot, so the loop ends.
	for !p.Fragment {
		o, in, il2 := t.tunnel(c.b, l4, p)
		if o.Kind == "" {
			break
		}
		inner := cursor{b: c.b, off: in}
		var ip Packet
		if il2 && !skipEthernet(&inner) {
			break
		}
		il4, err := parseIP(&inner, &ip)
		if err != nil {
			break
		}
		parseL4(&inner, il4, &ip)
		ip.outer = p.outer
		if p.Outer == nil {
			ip.outer = o
			if !o.UDP() {
				ip.outer.Kind = ipKind(p.Flow.Src.Addr().Is4(), ip.Flow.Src.Addr().Is4())
			}
		}
		*p = ip
		p.Outer = &p.outer
		c, l4 = inner, il4
	}
	p.ID = identity(&c, l4, p)
	return nil
}

// tunnel reads the tunnel header of p, whose L4 header is at l4 in b, when p is the
// outer packet of a tunnel: the outer header (its Kind empty when p is no tunnel's),
// where the packet it carries begins, and whether that starts at an Ethernet header.
// The caller names IP in IP by the families (ipKind).
func (t *Tunnels) tunnel(b []byte, l4 int, p *Packet) (o Outer, in int, l2 bool) {
	switch p.Flow.Proto {
	case protoIPIP, protoIPv6:
		o.Kind = TunnelIPIP
		o.Src, o.Dst = p.Flow.Src.Addr(), p.Flow.Dst.Addr()
		return o, l4, false
	case ProtoUDP:
		if l4+16 > len(b) {
			return o, 0, false
		}
		port, h := p.Flow.Dst.Port(), b[l4+8:]
		o = Outer{Src: p.Flow.Src.Addr(), Dst: p.Flow.Dst.Addr(), SrcPort: p.Flow.Src.Port(), DstPort: port,
			VNI: binary.BigEndian.Uint32(h[4:]) >> 8}
		switch {
		case isPort(port, t.VXLANPorts):
			// 8 bytes: flags (I: a VNI follows), the VNI; then an Ethernet frame.
			if h[0]&0x08 != 0 {
				o.Kind = TunnelVXLAN
				return o, l4 + 16, true
			}
		case isPort(port, t.GenevePorts):
			// 8 bytes: version (2 bits, 0) and options length (6 bits, in 4-byte
			// words), flags, protocol type, VNI; then the options and the packet.
			o.Options = uint16(h[0]&0x3f) * 4
			switch binary.BigEndian.Uint16(h[2:]) {
			case 0x6558: // Ethernet
				l2 = true
			case 0x0800, 0x86dd:
			default:
				return Outer{}, 0, false
			}
			if h[0]>>6 == 0 {
				o.Kind = TunnelGeneve
				return o, l4 + 16 + int(o.Options), l2
			}
		}
	}
	return Outer{}, 0, false
}

// ipKind names IP in IP by the families of the outer and the inner packet.
func ipKind(outer4, inner4 bool) string {
	switch {
	case outer4 && inner4:
		return TunnelIPIP
	case outer4:
		return TunnelSIT
	case inner4:
		return TunnelIP4IP6
	}
	return TunnelIP6IP6
}

func isPort(port uint16, ports []uint16) bool {
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
