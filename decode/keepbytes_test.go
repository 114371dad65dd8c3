package decode_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// With KeepBytes, every hop and the drop carry the bytes their event captured, with the
// link type and the length; without it, none do.
func TestKeepBytes(t *testing.T) {
	pod := ether(etIPv4, podSyn(64, "10.244.1.7", 8080))
	routed := ether(etIPv4, podSyn(63, "10.244.1.7", 8080))
	frames := [][]byte{pod, pod, routed, encap(routed)}
	for _, keep := range []bool{false, true} {
		cfg := nodeConfig(t, "node-a")
		cfg.KeepBytes = keep
		a := decode.NewAssembler(cfg)
		add(t, a, forwardA(t, forwardTimes)...)
		j := expireAll(t, a, forwardTimes[3], 1)[0]
		if j.Verdict != decode.Forwarded || len(j.Hops) != 4 {
			t.Fatalf("keep %v: %s", keep, describe([]*decode.Journey{j}))
		}
		for i := range j.Hops {
			h := &j.Hops[i]
			if !h.L2 || h.Len != uint32(len(frames[i])) {
				t.Errorf("keep %v: hop %s: L2 %v len %d, want true %d", keep, h.Name(), h.L2, h.Len, len(frames[i]))
			}
			switch {
			case !keep && h.Data != nil:
				t.Errorf("hop %s carries %d bytes without KeepBytes", h.Name(), len(h.Data))
			case keep && !bytes.Equal(h.Data, frames[i]):
				t.Errorf("hop %s: data\n%x\nwant\n%x", h.Name(), h.Data, frames[i])
			}
		}

		a = decode.NewAssembler(cfg)
		add(t, a, dropAtCni0(t, 12)...)
		j = expireAll(t, a, t0+38_000, 1)[0]
		ip := podSyn(63, "10.244.1.7", 8080)
		d := j.Drop
		if d == nil || d.L2 || d.Len != uint32(len(ip)) {
			t.Fatalf("keep %v: drop %+v, want L3 of %d bytes", keep, d, len(ip))
		}
		if keep && !bytes.Equal(d.Data, ip) || !keep && d.Data != nil {
			t.Errorf("keep %v: drop data %x", keep, d.Data)
		}
		if !keep {
			continue
		}
		// Each hop's bytes are its own: changing one leaves the others alone.
		j.Hops[0].Data[0] ^= 0xff
		if j.Hops[1].Data[0] == j.Hops[0].Data[0] || d.Data[0] != ip[0] {
			t.Error("hops share their bytes")
		}
	}
}

// A released journey's byte storage serves the next journey: steady state allocates no
// bytes, and the new journey's bytes are its own.
func TestKeepBytesReuse(t *testing.T) {
	cfg := nodeConfig(t, "node-a")
	cfg.KeepBytes = true
	a := decode.NewAssembler(cfg)
	add(t, a, forwardA(t, forwardTimes)...)
	first := expireAll(t, a, forwardTimes[3], 1)[0]
	firstData := &first.Hops[0].Data[0]
	a.Release(first)

	// Another packet (another IP ID), many more hops than the first had bytes for, each
	// on an interface of its own (a hop repeated would be another packet).
	syn := ether(etIPv4, v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x1c47, frag: 0x4000}.packet(decode.ProtoTCP,
		tcpSeg{sport: 43512, dport: 8080, seq: 7, flags: decode.TCPSyn}.bytes()))
	var evs []decode.Event
	for i := range 9 {
		evs = append(evs, hop(t, t0+uint64(i)*1000, uint32(20+i), "", decode.Ingress, syn))
	}
	add(t, a, evs...)
	second := expireAll(t, a, t0+8000, 1)[0]
	if second != first {
		t.Fatal("the released journey was not reused")
	}
	if &second.Hops[0].Data[0] != firstData {
		t.Error("the first hop's bytes are not in the released storage")
	}
	for i := range second.Hops {
		if !bytes.Equal(second.Hops[i].Data, syn) {
			t.Fatalf("hop %d: data %x, want %x", i, second.Hops[i].Data, syn)
		}
	}
}

// Journeys of TCP segments carry the sequence number and the sequence space taken,
// SYN and FIN counting one, the payload length read from the IP header even when the
// snapshot is cut (through VXLAN too).
func TestJourneySeq(t *testing.T) {
	payload := make([]byte, 1200)
	seg := func(flags uint8, p []byte) []byte {
		return v4{src: "10.244.0.5", dst: "10.244.1.7", id: 9, frag: 0x4000}.packet(decode.ProtoTCP,
			tcpSeg{sport: 43512, dport: 8080, seq: 1000, ack: 1, flags: flags, opts: tsOpt(1, 2), payload: p}.bytes())
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"syn", ether(etIPv4, podSyn(64, "10.244.1.7", 8080)), 1},
		{"data", ether(etIPv4, seg(decode.TCPAck|decode.TCPPsh, payload)), 1200},
		{"data-vxlan", encap(ether(etIPv4, seg(decode.TCPAck|decode.TCPPsh, payload))), 1200},
		{"fin-data", ether(etIPv4, seg(decode.TCPAck|decode.TCPFin, payload[:10])), 11},
		{"ack", ether(etIPv4, seg(decode.TCPAck, nil)), 0},
	} {
		a := decode.NewAssembler(decode.Config{Node: "n", Timeout: time.Millisecond})
		ev := event(decode.KindHop, t0, 1, "eth0", decode.Ingress, true, tc.frame)
		a.Add(&ev)
		j := a.Flush(t0 + 1e9)[0]
		wantSeq := uint32(1000)
		if tc.name == "syn" {
			wantSeq = 0x9a3c1f00
		}
		if j.Seq != wantSeq || j.SegLen != tc.want {
			t.Errorf("%s: seq %d len %d, want %d %d", tc.name, j.Seq, j.SegLen, wantSeq, tc.want)
		}
	}
}
