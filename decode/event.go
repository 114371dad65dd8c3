package decode

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// SnapMax is the largest number of packet bytes an event carries (SNAP_MAX in
// bpf/pathtrace.h).
const SnapMax = 256

// EventSize is the size of struct event in bpf/pathtrace.h.
const EventSize = 64 + SnapMax

// Kind says which hook produced an event.
type Kind uint8

// Event kinds, as in bpf/pathtrace.h.
const (
	KindHop  Kind = 1 // a tc program saw the packet on an interface
	KindDrop Kind = 2 // kfree_skb freed the packet
)

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
	SnapLen  uint16
	Data     [SnapMax]byte
}

// IfnameString returns the interface name the kernel reported.
func (e *Event) IfnameString() string {
	n := bytes.IndexByte(e.Ifname[:], 0)
	if n < 0 {
		n = len(e.Ifname)
	}
	return string(e.Ifname[:n])
}

// Packet returns the captured bytes.
func (e *Event) Packet() []byte { return e.Data[:e.SnapLen] }

// ParseEvent decodes one ring buffer record (struct event, native byte order) into ev.
func ParseEvent(b []byte, ev *Event) error {
	if len(b) < EventSize {
		return fmt.Errorf("event record of %d bytes, want %d", len(b), EventSize)
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
	ev.Filter = b[47]
	copy(ev.Ifname[:], b[48:64])
	if snap > SnapMax {
		return fmt.Errorf("event snap_len %d exceeds %d", snap, SnapMax)
	}
	ev.SnapLen = snap
	copy(ev.Data[:snap], b[64:64+int(snap)])
	if ev.Kind != KindHop && ev.Kind != KindDrop {
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
		r[46] = 1
	}
	r[47] = ev.Filter
	copy(r[48:64], ev.Ifname[:])
	copy(r[64:], ev.Data[:ev.SnapLen])
	return append(b, r[:]...)
}
