package decode

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
)

// SnapMax is the largest number of packet bytes an event carries (SNAP_MAX in
// bpf/pathtrace.h).
const SnapMax = 256

// SnapFull is the most packet bytes an event carries in full-packet mode (a snap
// length above SnapMax; SNAP_FULL in bpf/pathtrace.h): such events are as long as
// their packet, the bytes beyond SnapMax in Event.Full.
const SnapFull = 9216

// EventSize is the size of struct event in bpf/pathtrace.h.
const EventSize = dataOff + SnapMax

// Offsets in struct event (bpf/pathtrace.h).
const (
	nfOff   = 64  // hook, nf_pos, pf, ct_info, ct_status, ct_mark, out_ifindex, out_ifname
	origOff = 96  // struct ct_tuple ct_orig
	replOff = 136 // struct ct_tuple ct_reply
	dataOff = 176
)

// Kind says which hook produced an event.
type Kind uint8

// Event kinds, as in bpf/pathtrace.h.
const (
	KindHop  Kind = 1 // a tc program saw the packet on an interface
	KindDrop Kind = 2 // kfree_skb freed the packet
	KindNF   Kind = 3 // a netfilter hook saw the packet
	// KindRetrans: the agent's tcp_retransmit_skb program: a TCP socket sent a segment
	// again. No packet bytes; CTOrig holds the connection, local end as source.
	KindRetrans Kind = 4
)

// Netfilter positions (event.nf_pos).
const (
	NFFirst = 0 // the first priority of the hook: before the ruleset
	NFLast  = 1 // the last priority: after it (and after NAT)
	NFEntry = 2 // entry to nf_hook_slow (kprobe fallback)
)

// FilterUnfollowed is Event.Filter of an event no selector asked for: the agent's
// drops within its budget, and its retransmissions.
const FilterUnfollowed = 0xff

// CTNone is ct_info when the packet carries no conntrack entry.
const CTNone = 0xff

// CTTuple is a struct ct_tuple as the kernel wrote it.
type CTTuple [40]byte

// Flow decodes the tuple; ok is false when it is empty.
func (c *CTTuple) Flow() (f Flow, ok bool) {
	fam := c[37]
	var s, d netip.Addr
	switch fam {
	case 4:
		s, d = netip.AddrFrom4([4]byte(c[0:4])), netip.AddrFrom4([4]byte(c[16:20]))
	case 6:
		s, d = netip.AddrFrom16([16]byte(c[0:16])), netip.AddrFrom16([16]byte(c[16:32]))
	default:
		return Flow{}, false
	}
	ne := binary.NativeEndian
	return Flow{Proto: c[36], Src: netip.AddrPortFrom(s, ne.Uint16(c[32:])), Dst: netip.AddrPortFrom(d, ne.Uint16(c[34:]))}, true
}

// Dir is the direction of a hop.
type Dir uint8

// Directions, as in bpf/pathtrace.h.
const (
	Ingress Dir = 0
	Egress  Dir = 1
	NoDir   Dir = 2
)

func (d Dir) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return "-"
}

// Event is one record of the kernel's ring buffer. It is a value with the packet bytes
// inline, so that passing it through a queue allocates nothing.
type Event struct {
	TimeNs   uint64 // CLOCK_MONOTONIC
	Skb      uint64 // kernel address of the sk_buff (drop events only)
	Location uint64 // drop events: the address that called kfree_skb
	Netns    uint32 // drop events: network namespace inode
	Ifindex  uint32
	Len      uint32 // skb->len
	Reason   uint32 // drop events: enum skb_drop_reason value
	Protocol uint16 // skb->protocol, network byte order as read
	Kind     Kind
	Dir      Dir
	L2       bool // Data starts at an Ethernet header, else at the IP header
	Filter   uint8
	Ifname   [16]byte
	// Netfilter (KindNF) and conntrack (KindNF, KindDrop) fields.
	Hook       uint8 // NF_INET_*: 0 PREROUTING .. 4 POSTROUTING
	NFPos      uint8 // NFFirst, NFLast, NFEntry
	PF         uint8 // NFPROTO_IPV4 (2) or NFPROTO_IPV6 (10)
	HasCT      bool  // the conntrack fields were read
	CTInfo     uint8 // enum ip_conntrack_info, or CTNone
	CTStatus   uint32
	CTMark     uint32
	OutIfindex uint32
	OutIfname  [16]byte
	CTOrig     CTTuple
	CTReply    CTTuple
	SnapLen    uint16
	Data       [SnapMax]byte
	// Full holds all the captured bytes when there are more than SnapMax (full-packet
	// mode); nil otherwise.
	Full []byte
}

// OutIfnameString returns the output device of a netfilter event.
func (e *Event) OutIfnameString() string { return cstr(e.OutIfname[:]) }

// IfnameString returns the interface name the kernel reported.
func (e *Event) IfnameString() string { return cstr(e.Ifname[:]) }

func cstr(b []byte) string {
	n := bytes.IndexByte(b, 0)
	if n < 0 {
		n = len(b)
	}
	return string(b[:n])
}

// Packet returns the captured bytes.
func (e *Event) Packet() []byte {
	if e.Full != nil {
		return e.Full
	}
	return e.Data[:e.SnapLen]
}

// ParseEvent decodes one ring buffer record (struct event, native byte order) into ev.
func ParseEvent(b []byte, ev *Event) error {
	// Full-packet mode sends events as long as their packet, shorter or longer than
	// struct event.
	if len(b) < dataOff {
		return fmt.Errorf("event record of %d bytes, want at least %d", len(b), dataOff)
	}
	ne := binary.NativeEndian
	ev.TimeNs = ne.Uint64(b[0:])
	ev.Skb = ne.Uint64(b[8:])
	ev.Location = ne.Uint64(b[16:])
	ev.Netns = ne.Uint32(b[24:])
	ev.Ifindex = ne.Uint32(b[28:])
	ev.Len = ne.Uint32(b[32:])
	ev.Reason = ne.Uint32(b[36:])
	snap := ne.Uint16(b[40:])
	ev.Protocol = ne.Uint16(b[42:])
	ev.Kind = Kind(b[44])
	ev.Dir = Dir(b[45])
	ev.L2 = b[46]&1 != 0
	ev.HasCT = b[46]&2 != 0
	ev.Filter = b[47]
	copy(ev.Ifname[:], b[48:64])
	ev.Hook, ev.NFPos, ev.PF, ev.CTInfo = b[nfOff], b[nfOff+1], b[nfOff+2], b[nfOff+3]
	ev.CTStatus = ne.Uint32(b[nfOff+4:])
	ev.CTMark = ne.Uint32(b[nfOff+8:])
	ev.OutIfindex = ne.Uint32(b[nfOff+12:])
	copy(ev.OutIfname[:], b[nfOff+16:origOff])
	copy(ev.CTOrig[:], b[origOff:replOff])
	copy(ev.CTReply[:], b[replOff:dataOff])
	if snap > SnapFull {
		return fmt.Errorf("event snap_len %d exceeds %d", snap, SnapFull)
	}
	if len(b) < dataOff+int(snap) {
		return fmt.Errorf("event record of %d bytes, want %d for its snap_len %d", len(b), dataOff+int(snap), snap)
	}
	ev.SnapLen = snap
	ev.Full = nil
	if snap > SnapMax {
		ev.Full = append([]byte(nil), b[dataOff:dataOff+int(snap)]...)
		copy(ev.Data[:], ev.Full)
	} else {
		copy(ev.Data[:snap], b[dataOff:dataOff+int(snap)])
	}
	if ev.Kind < KindHop || ev.Kind > KindRetrans {
		return fmt.Errorf("event of unknown kind %d", ev.Kind)
	}
	return nil
}

// AppendEvent encodes ev as the kernel would; tests and benchmarks build fixtures with it.
func AppendEvent(b []byte, ev *Event) []byte {
	var r [EventSize]byte
	ne := binary.NativeEndian
	ne.PutUint64(r[0:], ev.TimeNs)
	ne.PutUint64(r[8:], ev.Skb)
	ne.PutUint64(r[16:], ev.Location)
	ne.PutUint32(r[24:], ev.Netns)
	ne.PutUint32(r[28:], ev.Ifindex)
	ne.PutUint32(r[32:], ev.Len)
	ne.PutUint32(r[36:], ev.Reason)
	ne.PutUint16(r[40:], ev.SnapLen)
	ne.PutUint16(r[42:], ev.Protocol)
	r[44] = byte(ev.Kind)
	r[45] = byte(ev.Dir)
	if ev.L2 {
		r[46] |= 1
	}
	if ev.HasCT {
		r[46] |= 2
	}
	r[47] = ev.Filter
	copy(r[48:64], ev.Ifname[:])
	r[nfOff], r[nfOff+1], r[nfOff+2], r[nfOff+3] = ev.Hook, ev.NFPos, ev.PF, ev.CTInfo
	ne.PutUint32(r[nfOff+4:], ev.CTStatus)
	ne.PutUint32(r[nfOff+8:], ev.CTMark)
	ne.PutUint32(r[nfOff+12:], ev.OutIfindex)
	copy(r[nfOff+16:origOff], ev.OutIfname[:])
	copy(r[origOff:replOff], ev.CTOrig[:])
	copy(r[replOff:dataOff], ev.CTReply[:])
	if ev.SnapLen > SnapMax {
		b = append(b, r[:dataOff]...)
		return append(b, ev.Full[:ev.SnapLen]...)
	}
	copy(r[dataOff:], ev.Data[:ev.SnapLen])
	return append(b, r[:]...)
}
