package decode_test

import (
	"encoding/binary"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// benchStream is a node's event stream under load: benchJourneys TCP data segments of a
// pod, one every 10 µs, each seen on veth ingress, cni0 ingress, flannel.1 egress and
// eth0 egress (VXLAN), the records interleaved in time order as the ring buffer holds
// them. recs are the raw records; rel their times relative to the stream's start.
type benchStream struct {
	recs   [][]byte
	rel    []uint64
	period uint64 // simulated duration of one pass
}

const benchJourneys = 16384

func newBenchStream(tb testing.TB) *benchStream {
	type rec struct {
		rel uint64
		ev  decode.Event
	}
	var all []rec
	payload := make([]byte, 1200)
	for i := range payload {
		payload[i] = byte(i)
	}
	for k := 0; k < benchJourneys; k++ {
		hdr := v4{src: "10.244.0.5", dst: "10.244.1.7", id: uint16(k), frag: 0x4000}
		seg := func() []byte {
			return tcpSeg{sport: 43512, dport: 8080, seq: 1 + uint32(k)*1200, ack: 77,
				flags: decode.TCPPsh | decode.TCPAck, opts: tsOpt(1_000_000+uint32(k/4), 5_000), payload: payload}.bytes()
		}
		hdr.ttl = 64
		pod := ether(etIPv4, hdr.packet(decode.ProtoTCP, seg()))
		hdr.ttl = 63
		routed := ether(etIPv4, hdr.packet(decode.ProtoTCP, seg()))
		start := uint64(k) * 10_000
		for i, ev := range []decode.Event{
			event(decode.KindHop, 0, idxVethA, vethA, decode.Ingress, true, pod),
			event(decode.KindHop, 0, idxCni0, "cni0", decode.Ingress, true, pod),
			event(decode.KindHop, 0, idxFlannel, "flannel.1", decode.Egress, true, routed),
			event(decode.KindHop, 0, idxEth0, "eth0", decode.Egress, true, encap(routed)),
		} {
			ev.Len = uint32(len(pod)) // the snapshot is cut at 256 bytes, skb->len is not
			all = append(all, rec{start + []uint64{0, 4_000, 9_000, 14_000}[i], ev})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].rel < all[j].rel })
	s := &benchStream{period: uint64(benchJourneys)*10_000 + 1_000_000}
	for _, r := range all {
		s.recs = append(s.recs, decode.AppendEvent(nil, &r.ev))
		s.rel = append(s.rel, r.rel)
	}
	return s
}

// BenchmarkAssemble measures what one core sustains from ring buffer records to
// journeys: ParseEvent, Assembler.Add and, every 256 events, Expire (the runner calls it
// on a 20 ms tick, which at 2 million events/s is every 40 000 events: 256 is harsh).
// The timeout of 100 ms keeps about 10 000 journeys open.
func BenchmarkAssemble(b *testing.B) {
	cfg := nodeConfig(b, "node-a")
	cfg.Timeout = 100 * time.Millisecond
	runAssemble(b, cfg, 256, false)
}

// BenchmarkAssembleAtMaxOpen is the same stream with MaxOpen below the number of
// journeys in flight: every new journey evicts the oldest, as under a flood.
func BenchmarkAssembleAtMaxOpen(b *testing.B) {
	cfg := nodeConfig(b, "node-a")
	cfg.Timeout = 100 * time.Millisecond
	cfg.MaxOpen = 4096
	runAssemble(b, cfg, 256, true)
}

func runAssemble(b *testing.B, cfg decode.Config, expireEvery int, evicting bool) {
	s := newBenchStream(b)
	a := decode.NewAssembler(cfg)
	var ev decode.Event
	closed, bad := 0, 0
	check := func(js []*decode.Journey) {
		closed += len(js)
		for _, j := range js {
			if len(j.Hops) != 4 {
				bad++
			}
			a.Release(j) // as the runner does once a journey is written
		}
	}
	base := t0
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ReportAllocs()
	b.ResetTimer()
	for n, i := 0, 0; n < b.N; n++ {
		rec := s.recs[i]
		now := base + s.rel[i]
		binary.NativeEndian.PutUint64(rec, now) // ts_ns of this pass
		if err := decode.ParseEvent(rec, &ev); err != nil {
			b.Fatal(err)
		}
		check(a.Add(&ev))
		if n%expireEvery == expireEvery-1 {
			check(a.Expire(now))
		}
		if i++; i == len(s.recs) {
			i, base = 0, base+s.period
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	// allocs/op rounds down to 0: the exact figure, per event.
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(b.N), "allocs/event")
	st := a.Stats()
	if st.Unparsable != 0 || (st.Evicted != 0) != (evicting && b.N > 4*cfg.MaxOpen) || !evicting && bad != 0 {
		b.Fatalf("stats %+v; %d of %d journeys closed without their 4 hops", st, bad, closed)
	}
}

// TestBenchStream checks the benchmark's stream: every packet is a 4-hop forwarded
// journey of its own.
func TestBenchStream(t *testing.T) {
	s := newBenchStream(t)
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	var ev decode.Event
	for i, rec := range s.recs {
		binary.NativeEndian.PutUint64(rec, t0+s.rel[i])
		if err := decode.ParseEvent(rec, &ev); err != nil {
			t.Fatal(err)
		}
		if js := a.Add(&ev); js != nil {
			t.Fatal("eviction")
		}
	}
	js := a.Flush(t0 + s.period)
	if len(js) != benchJourneys || len(s.recs) != 4*benchJourneys {
		t.Fatalf("%d journeys from %d events, want %d", len(js), len(s.recs), benchJourneys)
	}
	for _, j := range js {
		if len(j.Hops) != 4 || j.Verdict != decode.Forwarded || j.Hops[3].Outer == nil {
			t.Fatalf("journey %s", describe([]*decode.Journey{j}))
		}
	}
}

func BenchmarkParsePacket(b *testing.B) {
	payload := make([]byte, 1200)
	hdr := v4{src: "10.244.0.5", dst: "10.244.1.7", id: 0x1c46, ttl: 63, frag: 0x4000}
	tcp := ether(etIPv4, hdr.packet(decode.ProtoTCP, tcpSeg{sport: 43512, dport: 8080, seq: 1, ack: 2,
		flags: decode.TCPAck, opts: tsOpt(1, 2), payload: payload}.bytes()))
	for _, bc := range []struct {
		name string
		data []byte
		l2   bool
	}{
		{"tcp", tcp[:decode.SnapMax], true},
		{"vxlan-tcp", encap(tcp)[:decode.SnapMax], true},
		{"udp-l3", hdr.packet(decode.ProtoUDP, udpDgram(40001, 53, payload[:40])), false},
		{"ipv6-tcp", ether(etIPv6, v6{src: "fd00::5", dst: "fd00::7"}.packet(decode.ProtoTCP,
			tcpSeg{sport: 1, dport: 2, flags: decode.TCPAck, opts: tsOpt(1, 2)}.bytes())), true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var p decode.Packet
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.data)))
			for b.Loop() {
				if err := decode.ParsePacket(bc.data, bc.l2, decode.DefaultVXLANPorts, &p); err != nil {
					b.Fatal(err)
				}
			}
			if p.ID == 0 || p.Flow.Proto != decode.ProtoTCP && p.Flow.Proto != decode.ProtoUDP {
				b.Fatalf("parsed %+v", p)
			}
		})
	}
}

// BenchmarkAssembleKeepBytes is BenchmarkAssemble keeping every hop's bytes, as a packet
// capture needs.
func BenchmarkAssembleKeepBytes(b *testing.B) {
	cfg := nodeConfig(b, "node-a")
	cfg.Timeout = 100 * time.Millisecond
	cfg.KeepBytes = true
	runAssemble(b, cfg, 256, false)
}
