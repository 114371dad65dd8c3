package decode_test

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/pathtrace/pathtrace/bpf"
	"github.com/pathtrace/pathtrace/decode"
)

func fullEvent() decode.Event {
	frame := ether(etIPv4, v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x1c46}.packet(decode.ProtoTCP,
		tcpSeg{sport: 43512, dport: 8080, seq: 1000, flags: decode.TCPSyn, opts: synOpts(1460, 77)}.bytes()))
	ev := decode.Event{
		TimeNs:   1_234_567_890_123,
		Skb:      0xffff8880_12345600,
		Location: 0xffffffff_81a3c598,
		Netns:    4026531840,
		Ifindex:  7,
		Len:      uint32(len(frame)),
		Reason:   12,
		Protocol: binary.NativeEndian.Uint16([]byte{0x08, 0x00}),
		Kind:     decode.KindDrop,
		Dir:      decode.NoDir,
		L2:       true,
		Filter:   3,
		Ifname:   ifname("veth1a2b3c4d"),
	}
	ev.SnapLen = uint16(copy(ev.Data[:], frame))
	return ev
}

func TestEventRoundTrip(t *testing.T) {
	in := fullEvent()
	prefix := []byte("prefix")
	rec := decode.AppendEvent(append([]byte(nil), prefix...), &in)
	if !bytes.HasPrefix(rec, prefix) {
		t.Fatalf("AppendEvent did not append: % x", rec[:8])
	}
	rec = rec[len(prefix):]
	if len(rec) != decode.EventSize {
		t.Fatalf("record of %d bytes, want %d", len(rec), decode.EventSize)
	}
	var out decode.Event
	// Fill out with garbage first: ParseEvent must set every field.
	for i := range out.Ifname {
		out.Ifname[i] = 'x'
	}
	out.L2, out.Dir, out.Skb = false, decode.Egress, 99
	if err := decode.ParseEvent(rec, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
	if got := out.IfnameString(); got != "veth1a2b3c4d" {
		t.Errorf("IfnameString = %q", got)
	}
	if !bytes.Equal(out.Packet(), in.Data[:in.SnapLen]) || len(out.Packet()) != 74 {
		t.Errorf("Packet() = %d bytes, want the 74-byte frame", len(out.Packet()))
	}

	// A record longer than the struct (ring buffer records are 8-byte aligned) is fine.
	long := append(append([]byte(nil), rec...), 0, 0, 0, 0, 0, 0, 0, 0)
	if err := decode.ParseEvent(long, &out); err != nil || !reflect.DeepEqual(out, in) {
		t.Errorf("longer record: err %v, equal %v", err, reflect.DeepEqual(out, in))
	}

	// Full-packet mode: a record as long as its 1500-byte packet, and one shorter than
	// the struct for a 60-byte packet.
	full := in
	full.SnapLen = 1500
	full.Full = make([]byte, 1500)
	for i := range full.Full {
		full.Full[i] = byte(i * 7)
	}
	copy(full.Data[:], full.Full)
	frec := decode.AppendEvent(nil, &full)
	if err := decode.ParseEvent(frec, &out); err != nil || !bytes.Equal(out.Packet(), full.Full) || !reflect.DeepEqual(out, full) {
		t.Errorf("1500-byte packet: err %v, %d bytes back", err, len(out.Packet()))
	}
	if err := decode.ParseEvent(frec[:len(frec)-1], &out); err == nil {
		t.Error("full record one byte short: no error")
	}
	small := in
	small.SnapLen = 60
	srec := decode.AppendEvent(nil, &small)[:176+60]
	if err := decode.ParseEvent(srec, &out); err != nil || out.Full != nil || !bytes.Equal(out.Packet(), in.Data[:60]) {
		t.Errorf("record of a 60-byte packet, shorter than the struct: err %v", err)
	}

	// Flags other than EVF_L2 do not make L2 true, and a clear bit makes it false.
	rec[46] = 0xfe
	if err := decode.ParseEvent(rec, &out); err != nil || out.L2 {
		t.Errorf("flags 0xfe: err %v, L2 %v; want L2 false", err, out.L2)
	}
}

func TestEventIfnameFull(t *testing.T) {
	// A 16-byte name without a NUL (the kernel never sends one, but the bytes are
	// untrusted) is returned whole.
	ev := decode.Event{}
	copy(ev.Ifname[:], "0123456789abcdef")
	if got := ev.IfnameString(); got != "0123456789abcdef" {
		t.Errorf("IfnameString = %q", got)
	}
	if got := (&decode.Event{}).IfnameString(); got != "" {
		t.Errorf("empty IfnameString = %q", got)
	}
}

func TestParseEventErrors(t *testing.T) {
	good := fullEvent()
	rec := decode.AppendEvent(nil, &good)
	var ev decode.Event

	// A record ends after its snap_len bytes of packet (full-packet mode sends no more).
	short := 176 + int(good.SnapLen) - 1
	if err := decode.ParseEvent(rec[:short], &ev); err == nil {
		t.Error("short record: no error")
	} else if !strings.Contains(err.Error(), strconv.Itoa(short)) || !strings.Contains(err.Error(), strconv.Itoa(short+1)) {
		t.Errorf("short record: error %q does not give both sizes", err)
	}
	if err := decode.ParseEvent(rec[:175], &ev); err == nil || !strings.Contains(err.Error(), "175") {
		t.Errorf("record shorter than the header: error %v", err)
	}
	if err := decode.ParseEvent(nil, &ev); err == nil {
		t.Error("empty record: no error")
	}

	bad := append([]byte(nil), rec...)
	binary.NativeEndian.PutUint16(bad[40:], decode.SnapMax+1)
	if err := decode.ParseEvent(bad, &ev); err == nil || !strings.Contains(err.Error(), "257") {
		t.Errorf("snap_len 257 in a 432-byte record: error %v", err)
	}
	binary.NativeEndian.PutUint16(bad[40:], decode.SnapFull+1)
	if err := decode.ParseEvent(append(bad, make([]byte, decode.SnapFull)...), &ev); err == nil || !strings.Contains(err.Error(), "9217") {
		t.Errorf("snap_len 9217: error %v", err)
	}
	binary.NativeEndian.PutUint16(bad[40:], 0xffff)
	if err := decode.ParseEvent(bad, &ev); err == nil {
		t.Error("snap_len 65535: no error")
	}
	binary.NativeEndian.PutUint16(bad[40:], decode.SnapMax)
	if err := decode.ParseEvent(bad, &ev); err != nil || ev.SnapLen != decode.SnapMax {
		t.Errorf("snap_len 256: err %v, SnapLen %d", err, ev.SnapLen)
	}

	for _, kind := range []byte{0, 5, 255} {
		bad := append([]byte(nil), rec...)
		bad[44] = kind
		if err := decode.ParseEvent(bad, &ev); err == nil || !strings.Contains(err.Error(), "unknown kind") {
			t.Errorf("kind %d: error %v", kind, err)
		}
	}
	for _, kind := range []decode.Kind{decode.KindHop, decode.KindDrop, decode.KindNF, decode.KindRetrans} {
		ok := append([]byte(nil), rec...)
		ok[44] = byte(kind)
		if err := decode.ParseEvent(ok, &ev); err != nil || ev.Kind != kind {
			t.Errorf("kind %d: err %v, Kind %d", kind, err, ev.Kind)
		}
	}
}

// TestEventLayout checks decode's reading of struct event against the Go type bpf2go
// generated from bpf/pathtrace.h: if the C struct changes, this fails until
// ParseEvent follows.
func TestEventLayout(t *testing.T) {
	var k bpf.PathTraceEvent
	if got := unsafe.Sizeof(k); got != decode.EventSize || decode.EventSize != 432 {
		t.Fatalf("sizeof(struct event) = %d, decode.EventSize = %d, want 320", got, decode.EventSize)
	}
	if got := len(k.Data); got != decode.SnapMax {
		t.Errorf("len(data) = %d, decode.SnapMax = %d", got, decode.SnapMax)
	}
	for _, f := range []struct {
		name      string
		got, want uintptr
	}{
		{"TsNs", unsafe.Offsetof(k.TsNs), 0},
		{"Skb", unsafe.Offsetof(k.Skb), 8},
		{"Location", unsafe.Offsetof(k.Location), 16},
		{"Netns", unsafe.Offsetof(k.Netns), 24},
		{"Ifindex", unsafe.Offsetof(k.Ifindex), 28},
		{"Len", unsafe.Offsetof(k.Len), 32},
		{"Reason", unsafe.Offsetof(k.Reason), 36},
		{"SnapLen", unsafe.Offsetof(k.SnapLen), 40},
		{"Protocol", unsafe.Offsetof(k.Protocol), 42},
		{"Kind", unsafe.Offsetof(k.Kind), 44},
		{"Dir", unsafe.Offsetof(k.Dir), 45},
		{"Flags", unsafe.Offsetof(k.Flags), 46},
		{"Filter", unsafe.Offsetof(k.Filter), 47},
		{"Ifname", unsafe.Offsetof(k.Ifname), 48},
		{"Hook", unsafe.Offsetof(k.Hook), 64},
		{"NfPos", unsafe.Offsetof(k.NfPos), 65},
		{"Pf", unsafe.Offsetof(k.Pf), 66},
		{"CtInfo", unsafe.Offsetof(k.CtInfo), 67},
		{"CtStatus", unsafe.Offsetof(k.CtStatus), 68},
		{"CtMark", unsafe.Offsetof(k.CtMark), 72},
		{"OutIfindex", unsafe.Offsetof(k.OutIfindex), 76},
		{"OutIfname", unsafe.Offsetof(k.OutIfname), 80},
		{"CtOrig", unsafe.Offsetof(k.CtOrig), 96},
		{"CtReply", unsafe.Offsetof(k.CtReply), 136},
		{"Data", unsafe.Offsetof(k.Data), 176},
	} {
		if f.got != f.want {
			t.Errorf("offsetof(%s) = %d, ParseEvent reads it at %d", f.name, f.got, f.want)
		}
	}

	// The same check by value: the bytes of a filled-in kernel struct parse into the
	// same values.
	k = bpf.PathTraceEvent{TsNs: 1e12 + 7, Skb: 0xffff888001020300, Location: 0xffffffff81234567,
		Netns: 4026532000, Ifindex: 42, Len: 1514, Reason: 0x30005, SnapLen: 3, Protocol: 0xdd86,
		Kind: 2, Dir: 1, Flags: 1, Filter: 5}
	for i, c := range "flannel.1" {
		k.Ifname[i] = int8(c)
	}
	k.Data[0], k.Data[1], k.Data[2], k.Data[3] = 0x60, 0x01, 0x02, 0xff
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&k)), unsafe.Sizeof(k))
	var ev decode.Event
	if err := decode.ParseEvent(raw, &ev); err != nil {
		t.Fatal(err)
	}
	want := decode.Event{TimeNs: 1e12 + 7, Skb: 0xffff888001020300, Location: 0xffffffff81234567,
		Netns: 4026532000, Ifindex: 42, Len: 1514, Reason: 0x30005, SnapLen: 3, Protocol: 0xdd86,
		Kind: decode.KindDrop, Dir: decode.Egress, L2: true, Filter: 5, Ifname: ifname("flannel.1")}
	want.Data[0], want.Data[1], want.Data[2] = 0x60, 0x01, 0x02 // data past snap_len is not copied
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("kernel struct parsed as\n%+v\nwant\n%+v", ev, want)
	}
}
