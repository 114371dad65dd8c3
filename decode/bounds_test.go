package decode_test

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

// The assembler's bounds against packets that share an ID: identical datagrams, loops.

// addAll adds the events and returns the journeys Add closed on the way.
func addAll(a *decode.Assembler, evs []decode.Event) []*decode.Journey {
	var closed []*decode.Journey
	for i := range evs {
		closed = append(closed, a.Add(&evs[i])...)
	}
	return closed
}

// v6Datagram is pod A's health check to pod B over IPv6, as it leaves the pod (hop
// limit 64) or after the node routed it (63): the same bytes every time it is sent.
func v6Datagram(hlim uint8) []byte {
	return v6{src: "fd00:10:244::5", dst: "fd00:10:244:1::7", hlim: hlim}.packet(decode.ProtoUDP,
		udpDgram(41000, 8125, []byte("health:1|c|#pod:a")))
}

// forwardV6 is node-a forwarding one such datagram to node-b, as forwardA does the SYN.
func forwardV6(t testing.TB, start uint64) []decode.Event {
	pod, routed := ether(etIPv6, v6Datagram(64)), ether(etIPv6, v6Datagram(63))
	return []decode.Event{
		hop(t, start, idxVethA, vethA, decode.Ingress, pod),
		hop(t, start+9_000, idxCni0, "cni0", decode.Ingress, pod),
		hop(t, start+30_000, idxFlannel, "flannel.1", decode.Egress, routed),
		hop(t, start+44_000, idxEth0, "eth0", decode.Egress, encap(routed)),
	}
}

// Identical UDP datagrams over IPv6 share one ID. Each one's path starts over at the
// pod's veth with the same hop limit, which the same packet cannot do: one journey
// each, the earlier ones cut and counted, instead of one journey growing with every
// datagram.
func TestIdenticalDatagramsOneJourneyEach(t *testing.T) {
	if a, b := parse(t, ether(etIPv6, v6Datagram(64)), true), parse(t, encap(ether(etIPv6, v6Datagram(63))), true); a.ID != b.ID {
		t.Fatalf("the fixture's datagrams differ in ID: %016x %016x", a.ID, b.ID)
	}
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	var evs []decode.Event
	const sent = 3
	for i := range sent {
		evs = append(evs, forwardV6(t, t0+uint64(i)*1_000_000)...)
	}
	js := addAll(a, evs)
	if len(js) != sent-1 {
		t.Fatalf("Add closed %d journeys, want %d: %s", len(js), sent-1, describe(js))
	}
	js = append(js, expireAll(t, a, t0+(sent-1)*1_000_000+44_000, 1)...)
	want := []string{vethA + " ingress", "cni0 ingress", "flannel.1 egress", "eth0 egress"}
	for i, j := range js {
		if !slices.Equal(hopNames(j), want) || j.Verdict != decode.Forwarded || j.FirstNs() != t0+uint64(i)*1_000_000 {
			t.Errorf("datagram %d: %s", i, describe([]*decode.Journey{j}))
		}
		if wantCut := decode.CutCollision; i == sent-1 && j.Cut != "" || i < sent-1 && j.Cut != wantCut {
			t.Errorf("datagram %d: cut %q", i, j.Cut)
		}
	}
	if s := a.Stats(); s.Collisions != sent-1 || s.HopCapped != 0 || s.Journeys != sent {
		t.Errorf("stats %+v", s)
	}

	// The second datagram leaves before the first got past cni0: the first is cut
	// there, its fate unknown, and the rest of both paths goes to the second.
	a = decode.NewAssembler(nodeConfig(t, "node-a"))
	first, second := forwardV6(t, t0), forwardV6(t, t0+5_000)
	js = addAll(a, []decode.Event{first[0], second[0], first[1], second[1]})
	if len(js) != 1 || len(js[0].Hops) != 1 || js[0].Verdict != decode.Unfinished || js[0].Cut != decode.CutCollision {
		t.Fatalf("interleaved: closed %s", describe(js))
	}
	if got, want := js[0].Summary(), "unfinished: another packet with the same ID started over at "+vethA+" ingress before this one's fate was known"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	// Read back from an agent's JSON, a cut journey may come without hops.
	if got := (&decode.Journey{Cut: decode.CutCollision}).Summary(); !strings.Contains(got, "started over at its first hop") {
		t.Errorf("summary without hops %q", got)
	}
}

// A routing loop brings the packet back to its first hop, each time with less TTL: the
// same packet, so no collision, but its journey stops at MaxHops hops and the loop
// goes on in the next one.
func TestHopCapRoutingLoop(t *testing.T) {
	syn := func(ttl uint8) []byte { return ether(etIPv4, podSyn(ttl, "10.244.1.7", 8080)) }
	var evs []decode.Event
	for ttl := 200; ttl > 0; ttl -= 2 { // out eth0, back in from the next router, out again
		tNs := t0 + uint64(200-ttl)*10_000
		evs = append(evs, hop(t, tNs, idxEth0, "eth0", decode.Egress, syn(uint8(ttl))),
			hop(t, tNs+5_000, idxEth0, "eth0", decode.Ingress, syn(uint8(ttl-1))))
	}
	for _, maxHops := range []int{0, 10} {
		cfg := nodeConfig(t, "node-a")
		cfg.MaxHops = maxHops
		want := maxHops
		if maxHops == 0 {
			want = decode.DefaultMaxHops
		}
		a := decode.NewAssembler(cfg)
		js := addAll(a, evs)
		cuts := (len(evs) - 1) / want // the last journey, full or not, is cut by nothing
		if len(js) != cuts {
			t.Fatalf("MaxHops %d: Add closed %d journeys, want %d", maxHops, len(js), cuts)
		}
		js = append(js, a.Flush(evs[len(evs)-1].TimeNs+1)...)
		n := 0
		for i, j := range js {
			n += len(j.Hops)
			if i < len(js)-1 && (len(j.Hops) != want || j.Cut != decode.CutHopCap || j.Verdict != decode.Unfinished) {
				t.Errorf("MaxHops %d: journey %d: %d hops, cut %q, verdict %v", maxHops, i, len(j.Hops), j.Cut, j.Verdict)
			}
		}
		if n != len(evs) {
			t.Errorf("MaxHops %d: %d hops in all, want %d", maxHops, n, len(evs))
		}
		if s := a.Stats(); s.HopCapped != uint64(cuts) || s.Collisions != 0 {
			t.Errorf("MaxHops %d: stats %+v", maxHops, s)
		}
		if s := js[0].Summary(); !strings.HasPrefix(s, "unfinished: cut at "+strconv.Itoa(want)+" hops, the most a journey holds") {
			t.Errorf("summary %q", s)
		}
	}
}

// nfEvent is a netfilter hook's event: the snapshot starts at the IP header.
func nfEvent(t testing.TB, tNs uint64, hook, pos uint8, in string, inIdx uint32, out string, ip []byte) decode.Event {
	ev := event(decode.KindNF, tNs, inIdx, in, decode.NoDir, false, ip)
	ev.Hook, ev.NFPos, ev.PF, ev.CTInfo = hook, pos, 2, decode.CTNone
	ev.OutIfname = ifname(out)
	return wire(t, ev)
}

// Places a packet legitimately passes twice are not collisions: the node's own packet
// meets OUTPUT once on its way to the tunnel and again encapsulated, on its way to the
// uplink; a pod's packet to its own Service comes back out of its veth.
func TestNoCollisionOnOnePath(t *testing.T) {
	inner := v4{src: "10.244.0.0", dst: "10.244.1.7", id: 0x4d2, frag: 0x4000}.packet(decode.ProtoUDP,
		udpDgram(50000, 53, []byte{0x12, 0x34, 1, 0, 0, 1}))
	outer := encap(ether(etIPv4, inner))[14:]
	const output, postrouting = 3, 4
	evs := []decode.Event{
		nfEvent(t, t0, output, decode.NFFirst, "", 0, "flannel.1", inner),
		nfEvent(t, t0+1_000, postrouting, decode.NFFirst, "", 0, "flannel.1", inner),
		hop(t, t0+2_000, idxFlannel, "flannel.1", decode.Egress, ether(etIPv4, inner)),
		nfEvent(t, t0+3_000, output, decode.NFFirst, "", 0, "eth0", outer),
		nfEvent(t, t0+4_000, postrouting, decode.NFFirst, "", 0, "eth0", outer),
		hop(t, t0+5_000, idxEth0, "eth0", decode.Egress, ether(etIPv4, outer)),
	}
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, a, evs...)
	j := expireAll(t, a, t0+5_000, 1)[0]
	if len(j.Hops) != 6 || j.Verdict != decode.Forwarded || j.Cut != "" {
		t.Errorf("node's packet to the tunnel: %s", describe([]*decode.Journey{j}))
	}
	// The same query again: it starts over at OUTPUT towards flannel.1.
	again := nfEvent(t, t0+50_000, output, decode.NFFirst, "", 0, "flannel.1", inner)
	add(t, a, evs...)
	if js := a.Add(&again); len(js) != 1 || len(js[0].Hops) != 6 || js[0].Cut != decode.CutCollision {
		t.Errorf("the same query again: closed %s", describe(js))
	}

	a = decode.NewAssembler(nodeConfig(t, "node-a"))
	hairpin := ether(etIPv4, podSyn(64, "10.244.0.5", 8080))
	add(t, a, hop(t, t0, idxVethA, vethA, decode.Ingress, hairpin), hop(t, t0+8_000, idxVethA, vethA, decode.Egress, hairpin))
	if j := expireAll(t, a, t0+8_000, 1)[0]; j.Verdict != decode.Delivered || j.Cut != "" {
		t.Errorf("hairpin: %s", describe([]*decode.Journey{j}))
	}
	if s := a.Stats(); s.Collisions != 0 {
		t.Errorf("stats %+v", s)
	}
}

// KeepBytes keeps at most MaxBytes for a journey's hops: the hop that reaches it keeps
// what is left, the later ones nothing; the drop keeps its bytes all the same. No
// event keeps more than SnapFull.
func TestKeepBytesBounded(t *testing.T) {
	cfg := nodeConfig(t, "node-a")
	cfg.KeepBytes, cfg.MaxBytes = true, 200
	a := decode.NewAssembler(cfg)
	evs := dropAtCni0(t, 12) // veth ingress, cni0 ingress, the drop
	frame := ether(etIPv4, podSyn(64, "10.244.1.7", 8080))
	extra := []decode.Event{
		hop(t, t0+10_000, 21, "", decode.Ingress, frame),
		hop(t, t0+11_000, 22, "", decode.Ingress, frame),
	}
	add(t, a, append(evs, extra...)...)
	j := expireAll(t, a, t0+38_000, 1)[0]
	if len(j.Hops) != 4 || j.Drop == nil {
		t.Fatalf("%s", describe([]*decode.Journey{j}))
	}
	n := len(frame) // 74: two hops whole, the third cut to 52 bytes, the fourth none
	for i, want := range []int{n, n, 200 - 2*n, 0} {
		if h := j.Hops[i]; len(h.Data) != want || !bytes.Equal(h.Data, frame[:want]) || h.Len != uint32(n) {
			t.Errorf("hop %d (%s): %d bytes of %d, want %d", i, h.Name(), len(h.Data), h.Len, want)
		}
	}
	if ip := podSyn(63, "10.244.1.7", 8080); !bytes.Equal(j.Drop.Data, ip) {
		t.Errorf("drop data %d bytes, want the %d of the packet", len(j.Drop.Data), len(ip))
	}
	if s := a.Stats(); s.DataCut != 2 {
		t.Errorf("stats %+v, want 2 hops cut", s)
	}

	// Whole packets: the event's bytes beyond SnapFull are not kept (the tracer never
	// sends more; an event built in Go can hold any).
	a = decode.NewAssembler(decode.Config{Node: "n", Timeout: timeout, KeepBytes: true})
	big := ether(etIPv4, v4{src: "10.244.0.5", dst: "10.244.1.7", id: 1}.packet(decode.ProtoUDP,
		udpDgram(1, 2, make([]byte, 2*decode.SnapFull))))
	ev := event(decode.KindHop, t0, 1, "eth0", decode.Ingress, true, big)
	ev.Full, ev.SnapLen, ev.Len = big, uint16(len(big)), uint32(len(big))
	a.Add(&ev)
	if j := a.Flush(t0 + 1)[0]; len(j.Hops[0].Data) != decode.SnapFull {
		t.Errorf("whole packet of %d bytes: kept %d, want %d", len(big), len(j.Hops[0].Data), decode.SnapFull)
	}
}

// 200,000 events of one packet ID, fed as the runner does (every journey written and
// released): the assembler stays at one open journey of at most MaxHops hops, and the
// live heap stays small, where one journey used to take every hop (295 MiB at 200,000).
// The figures are logged (go test -v -run TestOneIDMemory ./decode/).
func TestOneIDMemory(t *testing.T) {
	const events = 200_000
	pod, routed := ether(etIPv6, v6Datagram(64)), ether(etIPv6, v6Datagram(63))
	path := []decode.Event{ // forwardV6's hops, made once: the loop only moves their times
		event(decode.KindHop, 0, idxVethA, vethA, decode.Ingress, true, pod),
		event(decode.KindHop, 0, idxCni0, "cni0", decode.Ingress, true, pod),
		event(decode.KindHop, 0, idxFlannel, "flannel.1", decode.Egress, true, routed),
		event(decode.KindHop, 0, idxEth0, "eth0", decode.Egress, true, encap(routed)),
	}
	roam := path[0]
	for _, tc := range []struct {
		name string
		next func(i int) *decode.Event // the i-th event
	}{
		// Identical datagrams, one after another: each starts its path over.
		{"identical datagrams", func(i int) *decode.Event { return &path[i%len(path)] }},
		// One ID on ever new interfaces (as many as a flooding bridge has ports): no
		// first hop repeats before MaxHops.
		{"no repeat", func(i int) *decode.Event {
			roam.Ifindex = 100 + uint32(i%1000)
			return &roam
		}},
	} {
		for _, keep := range []bool{false, true} {
			cfg := nodeConfig(t, "node-a")
			cfg.KeepBytes = keep
			a := decode.NewAssembler(cfg)
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			maxHops, maxData, journeys := 0, 0, 0
			done := func(js []*decode.Journey) {
				for _, j := range js {
					maxHops = max(maxHops, len(j.Hops))
					data := 0
					for _, h := range j.Hops {
						data += len(h.Data)
					}
					maxData = max(maxData, data)
					journeys++
					a.Release(j)
				}
			}
			for i := range events {
				ev := tc.next(i)
				ev.TimeNs = t0 + uint64(i)*1_000
				done(a.Add(ev))
				if a.Open() > 1 {
					t.Fatalf("%s: %d journeys open for one ID", tc.name, a.Open())
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&m1)
			live := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
			done(a.Flush(t0 + events*1_000 + 1))
			s := a.Stats()
			t.Logf("%s, keep bytes %v: %d events → %d journeys (%d collisions, %d capped), at most %d hops and %d bytes kept each; live heap %+.1f KiB, allocated %.1f B/event",
				tc.name, keep, events, journeys, s.Collisions, s.HopCapped, maxHops, maxData,
				float64(live)/1024, float64(m1.TotalAlloc-m0.TotalAlloc)/events)
			if maxHops > decode.DefaultMaxHops || s.Collisions+s.HopCapped == 0 || maxData > decode.DefaultMaxBytes {
				t.Errorf("%s: journeys of up to %d hops, %d bytes; stats %+v", tc.name, maxHops, maxData, s)
			}
			if live > 16<<20 {
				t.Errorf("%s, keep bytes %v: the live heap grew by %d MiB", tc.name, keep, live>>20)
			}
		}
	}
}

// The bound on open journeys holds: at the default, the 65,537th packet in flight
// evicts the oldest.
func TestDefaultMaxOpen(t *testing.T) {
	a := decode.NewAssembler(decode.Config{Node: "n", Timeout: timeout})
	ev := event(decode.KindHop, 0, 1, "eth0", decode.Ingress, false, v4{src: "10.0.0.1", dst: "10.0.0.2"}.packet(decode.ProtoTCP, tcpSeg{sport: 1, dport: 2}.bytes()))
	evicted := 0
	for i := range 65536 + 100 {
		// Another packet each time: the TCP sequence number (bytes 24..27 of the packet).
		binary.BigEndian.PutUint32(ev.Data[24:], uint32(i))
		ev.TimeNs = t0 + uint64(i)
		evicted += len(a.Add(&ev))
	}
	if a.Open() != 65536 || evicted != 100 || a.Stats().Evicted != 100 {
		t.Errorf("open %d, evicted %d, stats %+v", a.Open(), evicted, a.Stats())
	}
}

// Events lost while a packet was in flight may have been its next hop or its drop: a
// journey that would be judged lost is incomplete instead, with the count; one whose
// end was seen keeps its verdict; one that began after the loss is judged as ever.
func TestEventsLostIncomplete(t *testing.T) {
	evs, last := lostAtCni0(t) // veth ingress at t0, cni0 ingress at last, then nothing
	tmo := uint64(timeout)
	for _, tc := range []struct {
		name    string
		run     func(a *decode.Assembler) // adds evs and reports losses
		verdict decode.Verdict
		lost    uint64
	}{
		{"no loss", func(a *decode.Assembler) { add(t, a, evs...) }, decode.Lost, 0},
		{"loss after its last hop", func(a *decode.Assembler) {
			add(t, a, evs...)
			a.EventsLost(3, last+20_000)
		}, decode.Incomplete, 3},
		{"two reports", func(a *decode.Assembler) {
			add(t, a, evs...)
			a.EventsLost(2, last+20_000)
			a.EventsLost(1, last+40_000)
		}, decode.Incomplete, 3},
		// The report comes before the events queued ahead of the lost ones.
		{"reported before its events", func(a *decode.Assembler) {
			a.EventsLost(4, last+20_000)
			add(t, a, evs...)
		}, decode.Incomplete, 4},
		{"reported between its events", func(a *decode.Assembler) {
			add(t, a, evs[0])
			a.EventsLost(4, last+20_000)
			add(t, a, evs[1])
		}, decode.Incomplete, 4},
		{"loss before it began", func(a *decode.Assembler) {
			a.EventsLost(4, t0-1)
			add(t, a, evs...)
		}, decode.Lost, 0},
		{"loss before it began, reported later", func(a *decode.Assembler) {
			add(t, a, evs...)
			a.EventsLost(4, t0-1)
		}, decode.Lost, 0},
	} {
		a := decode.NewAssembler(nodeConfig(t, "node-a"))
		tc.run(a)
		js := a.Expire(last + tmo)
		if len(js) != 1 {
			t.Fatalf("%s: %d journeys", tc.name, len(js))
		}
		j := js[0]
		if j.Verdict != tc.verdict || j.EventsLost != tc.lost || j.Where != "cni0 ingress" {
			t.Errorf("%s: verdict %v, %d events lost, where %q; want %v, %d", tc.name, j.Verdict, j.EventsLost, j.Where, tc.verdict, tc.lost)
		}
		wantInc := uint64(0)
		if tc.verdict == decode.Incomplete {
			wantInc = 1
		}
		if s := a.Stats(); s.Incomplete != wantInc {
			t.Errorf("%s: stats %+v, want %d incomplete", tc.name, s, wantInc)
		}
		if tc.verdict == decode.Incomplete {
			want := "incomplete: " + strconv.FormatUint(tc.lost, 10) + " events lost while it was in flight; last seen at cni0 ingress, no further hop or drop within the timeout"
			if j.Summary() != want {
				t.Errorf("%s: summary %q, want %q", tc.name, j.Summary(), want)
			}
		}
	}

	// A journey whose end was seen keeps its verdict and carries the count; one the
	// tracing stopped before its timeout is unfinished, as without a loss.
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, a, forwardA(t, forwardTimes)...)
	a.EventsLost(1, forwardTimes[1])
	if j := expireAll(t, a, forwardTimes[3], 1)[0]; j.Verdict != decode.Forwarded || j.EventsLost != 1 {
		t.Errorf("forwarded: verdict %v, %d events lost", j.Verdict, j.EventsLost)
	}
	a = decode.NewAssembler(nodeConfig(t, "node-a"))
	add(t, a, evs...)
	a.EventsLost(1, last)
	if j := a.Flush(last + 1)[0]; j.Verdict != decode.Unfinished || j.Summary() != "unfinished: tracing stopped before the packet's fate was known" {
		t.Errorf("flushed: verdict %v %q", j.Verdict, j.Summary())
	}
	if s := a.Stats(); s.EventsLost != 1 || s.Incomplete != 0 {
		t.Errorf("stats %+v", s)
	}
	if got := (&decode.Journey{Verdict: decode.Incomplete, EventsLost: 1, Where: "eth0 egress"}).Summary(); !strings.HasPrefix(got, "incomplete: 1 event lost while") {
		t.Errorf("one event: %q", got)
	}
}

// Reports of losses are kept for the journeys still to open, within a bound: reports
// a timeout apart are kept apart, the oldest given up first.
func TestEventsLostKept(t *testing.T) {
	tmo := uint64(timeout)
	a := decode.NewAssembler(nodeConfig(t, "node-a"))
	for i := range 12 { // a report every two timeouts, i+1 events each
		a.EventsLost(uint64(i+1), t0+uint64(i)*2*tmo)
	}
	// A journey that began before the last three reports.
	ev := hop(t, t0+9*2*tmo-1, idxVethA, vethA, decode.Ingress, ether(etIPv4, podSyn(64, "10.244.1.7", 8080)))
	a.Add(&ev)
	j := a.Flush(t0 + 100*tmo)[0]
	if j.Verdict != decode.Incomplete || j.EventsLost != 10+11+12 {
		t.Errorf("verdict %v, %d events lost, want incomplete, 33", j.Verdict, j.EventsLost)
	}
	// One before them all: only what is kept, the last eight reports.
	a.Release(j)
	ev.TimeNs = t0
	a.Add(&ev)
	if j := a.Flush(t0 + 100*tmo)[0]; j.EventsLost != 5+6+7+8+9+10+11+12 || a.Stats().EventsLost != 78 {
		t.Errorf("%d events lost, want 68; stats %+v", j.EventsLost, a.Stats())
	}
}
