package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/pathtrace/pathtrace/bpf"
	"github.com/pathtrace/pathtrace/decode"
)

// Hop classes of the agent's counters (CLASS_* in bpf/pathtrace.h), by index.
var HopClasses = [...]string{"unknown", "pod", "bridge", "overlay", "uplink", "netfilter", "stack", "unknown"}

// LatencyBuckets is the number of latency buckets per hop pair; bucket b counts
// latencies up to 2^(b+10) ns (the last one: anything longer).
const LatencyBuckets = 32

func classOf(k decode.IfaceKind) uint32 {
	switch k {
	case decode.KindPod:
		return 1
	case decode.KindBridge:
		return 2
	case decode.KindOverlay:
		return 3
	case decode.KindUplink:
		return 4
	}
	return 0
}

// classSlot and classValue are an interface's slot in the iface_class array and what
// it holds there: the ifindex (to tell slots apart) and the class.
func classSlot(ifindex int) uint32 { return uint32(ifindex) & 0xffff }

// setSlotCount tells the programs how many selector slots are in use: in state[1], and
// in iface_class[0], where the tc programs look (next to the interfaces' classes).
func (t *Tracer) setSlotCount(n uint32) error {
	if err := t.maps.State.Put(uint32(1), n); err != nil {
		return fmt.Errorf("set selector count: %w", err)
	}
	if err := t.maps.IfaceClass.Put(uint32(0), n); err != nil {
		return fmt.Errorf("set selector count: %w", err)
	}
	return nil
}

func classValue(l iface) uint32 { return uint32(l.Index)&0xffffff<<8 | classOf(l.Kind) }

func (t *Tracer) reasonValue(name string) uint32 {
	for v, n := range t.reasons {
		if n == name {
			return v
		}
	}
	return 0
}

// Count is packets and bytes.
type Count struct{ Packets, Bytes uint64 }

// PacketKey is a hop class and a direction ("ingress", "egress").
type PacketKey struct{ Hop, Dir string }

// DropKey is a drop reason as the kernel names it, a hop class and a direction
// ("ingress": the packet came in on an interface; "egress": it was made on the node).
type DropKey struct{ Reason, Hop, Dir string }

// LatencyKey is a pair of hop classes.
type LatencyKey struct{ From, To string }

// Latency is one pair's histogram: Buckets[b] counts latencies up to 2^(b+10) ns.
type Latency struct {
	Buckets [LatencyBuckets]uint64
	SumNs   uint64
	// Example is the slowest sampled packet of the last ten seconds, nil if none.
	Example *LatencyExample
}

// LatencyExample is one sampled packet: its flow and latency, and when (CLOCK_MONOTONIC).
type LatencyExample struct {
	Flow   decode.Flow
	Ns     uint64
	TimeNs uint64
}

// Counters are the kernel's aggregates, summed over CPUs.
type Counters struct {
	Packets map[PacketKey]Count
	Drops   map[DropKey]Count
	Latency map[LatencyKey]*Latency
}

// Counters reads the agent's kernel counters. Every value is exact: the kernel adds to
// per-CPU slots, this sums them.
func (t *Tracer) Counters() (Counters, error) {
	c := Counters{Packets: map[PacketKey]Count{}, Drops: map[DropKey]Count{}, Latency: map[LatencyKey]*Latency{}}
	var per []bpf.PathTraceCounter
	dirs := [2]string{"ingress", "egress"}
	for i := uint32(0); i < uint32(len(HopClasses)*2); i++ {
		if err := t.maps.PktCount.Lookup(i, &per); err != nil {
			return c, fmt.Errorf("read packet counters: %w", err)
		}
		var sum Count
		for _, v := range per {
			sum.Packets += v.Packets
			sum.Bytes += v.Bytes
		}
		if sum.Packets > 0 {
			k := PacketKey{HopClasses[i/2], dirs[i%2]}
			old := c.Packets[k]
			c.Packets[k] = Count{old.Packets + sum.Packets, old.Bytes + sum.Bytes}
		}
	}
	var key bpf.PathTraceDropKey
	it := t.maps.DropCount.Iterate()
	for it.Next(&key, &per) {
		var sum Count
		for _, v := range per {
			sum.Packets += v.Packets
			sum.Bytes += v.Bytes
		}
		reason := fmt.Sprintf("REASON_%d", key.Reason)
		if t.reasons != nil {
			reason = t.reasons.Name(key.Reason)
		}
		class := "unknown"
		if int(key.Class) < len(HopClasses) {
			class = HopClasses[key.Class]
		}
		if key.Loc != 0 {
			// No reason from the kernel: inferred from the call site, as for events,
			// with the same names; a policy drop is counted at the netfilter hop.
			reason = t.inferLoc(key.Loc)
			if reason == "NETFILTER_DROP" {
				class = "netfilter"
			}
		}
		k := DropKey{reason, class, dirs[key.Dir&1]}
		old := c.Drops[k]
		c.Drops[k] = Count{old.Packets + sum.Packets, old.Bytes + sum.Bytes}
	}
	if err := it.Err(); err != nil {
		return c, fmt.Errorf("read drop counters: %w", err)
	}
	// The histogram is read whole: one batch is much cheaper than 2048 lookups.
	n := len(HopClasses)
	hist := make([][]uint64, 0, n*n*LatencyBuckets)
	if err := t.readPerCPUArray(t.maps.LatHist, n*n*LatencyBuckets, func(i int, vals []uint64) {
		hist = append(hist, slices.Clone(vals))
	}); err != nil {
		return c, fmt.Errorf("read latency histograms: %w", err)
	}
	sums := make([]uint64, n*n)
	if err := t.readPerCPUArray(t.maps.LatSum, n*n, func(i int, vals []uint64) {
		for _, v := range vals {
			sums[i] += v
		}
	}); err != nil {
		return c, fmt.Errorf("read latency sums: %w", err)
	}
	for pair := 0; pair < n*n; pair++ {
		var l Latency
		total := uint64(0)
		for b := 0; b < LatencyBuckets; b++ {
			for _, v := range hist[pair*LatencyBuckets+b] {
				l.Buckets[b] += v
			}
			total += l.Buckets[b]
		}
		if total == 0 {
			continue
		}
		l.SumNs = sums[pair]
		var ex bpf.PathTraceLatEx
		if err := t.maps.LatExemplar.Lookup(uint32(pair), &ex); err == nil && ex.Ts != 0 {
			if f, ok := flowOf(ex.Flow); ok {
				l.Example = &LatencyExample{Flow: f, Ns: ex.Ns, TimeNs: ex.Ts}
			}
		}
		k := LatencyKey{HopClasses[pair/n], HopClasses[pair%n]}
		if old := c.Latency[k]; old != nil {
			for b := range l.Buckets {
				old.Buckets[b] += l.Buckets[b]
			}
			old.SumNs += l.SumNs
		} else {
			c.Latency[k] = &l
		}
	}
	return c, nil
}

func (t *Tracer) readPerCPUArray(m *ebpf.Map, n int, fn func(i int, vals []uint64)) error {
	var vals []uint64
	for i := 0; i < n; i++ {
		if err := m.Lookup(uint32(i), &vals); err != nil {
			return err
		}
		fn(i, vals)
	}
	return nil
}

// SetSelector puts a selector in a slot (0..MaxSelectors-1), or clears it with nil,
// forgetting the flows it had caught through NAT. slots is how many slots the kernel
// is to check: the highest slot in use + 1.
func (t *Tracer) SetSelector(slot int, s *decode.Selector, slots int) error {
	if slot < 0 || slot >= MaxSelectors {
		return fmt.Errorf("selector slot %d: want 0..%d", slot, MaxSelectors-1)
	}
	var f bpf.PathTraceFilter
	if s != nil {
		f = filterOf(*s)
	}
	if err := t.maps.Filters.Put(uint32(slot), &f); err != nil {
		return fmt.Errorf("set selector slot %d: %w", slot, err)
	}
	if err := t.setSlotCount(uint32(slots)); err != nil {
		return err
	}
	if s == nil {
		var k bpf.PathTraceCtTuple
		var v uint32
		var stale []bpf.PathTraceCtTuple
		it := t.maps.Flows.Iterate()
		for it.Next(&k, &v) {
			if int(v) == slot {
				stale = append(stale, k)
			}
		}
		for i := range stale {
			if err := t.maps.Flows.Delete(&stale[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("forget flows of slot %d: %w", slot, err)
			}
		}
	}
	return nil
}

// Refresh brings the traced interfaces in line with the namespace's: it attaches to
// new interfaces that match the patterns and forgets those that are gone. It returns
// the names added and removed.
func (t *Tracer) Refresh() (added, removed []string, err error) {
	now, lay, err := findLinks(t.nl, t.cfg.Ifaces)
	if err != nil && len(t.ifaces) == 0 {
		return nil, nil, err
	}
	if err == nil {
		t.layout = lay
	}
	present := map[int]iface{}
	for _, l := range now {
		present[l.Index] = l
	}
	var keep []iface
	for _, l := range t.ifaces {
		if n, ok := present[l.Index]; ok && n.Name == l.Name {
			keep = append(keep, l)
			delete(present, l.Index)
			continue
		}
		for _, a := range t.ifAttach[l.Index] {
			a.detach() // the device is gone, and its attachments with it
		}
		delete(t.ifAttach, l.Index)
		if classSlot(l.Index) != 0 { // slot 0 is the selector count
			t.maps.IfaceClass.Put(classSlot(l.Index), uint32(0))
		}
		removed = append(removed, l.Name)
	}
	t.ifaces = keep
	var errs []error
	var withClsact map[int]string
	if len(present) > 1 {
		withClsact, _ = ingressQdiscs(t.nl, 0) // one dump for all; nil: each is asked
	}
	_ = t.ns.do(func() error { // one thread in the namespace for all
		for _, l := range now {
			if _, ok := present[l.Index]; !ok {
				continue
			}
			if err := t.attachIface(&l, withClsact); err != nil {
				errs = append(errs, err) // it may have vanished meanwhile
				continue
			}
			t.ifaces = append(t.ifaces, l)
			if classSlot(l.Index) != 0 {
				t.maps.IfaceClass.Put(classSlot(l.Index), classValue(l))
			}
			added = append(added, l.Name)
		}
		return nil
	})
	if len(added) > 0 || len(removed) > 0 {
		t.allowPods()
		if pods, err := podPrefixes(t.nl); err == nil {
			t.pods = pods // routed pods: their routes came and went with them
		}
	}
	return added, removed, errors.Join(errs...)
}

// allowPods makes the drop allow-list the node's namespace and those behind its
// veths now: pods that came are added, pods that went are forgotten.
func (t *Tracer) allowPods() {
	want := map[uint32]bool{t.ns.inode: true}
	for _, ino := range podNetns(t.nl, t.linkList()) {
		want[ino] = true
	}
	var k uint32
	var v uint8
	var stale []uint32
	it := t.maps.NetnsAllow.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
		delete(want, k)
	}
	for _, ino := range stale {
		t.maps.NetnsAllow.Delete(ino)
	}
	for ino := range want {
		t.maps.NetnsAllow.Put(ino, uint8(1))
	}
}

// NetnsAllowed is the number of namespaces whose drops count as this node's.
func (t *Tracer) NetnsAllowed() int {
	var k uint32
	var v uint8
	n := 0
	it := t.maps.NetnsAllow.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	return n
}

// flowOf reads a struct ct_tuple.
func flowOf(c bpf.PathTraceCtTuple) (decode.Flow, bool) {
	var s, d netip.Addr
	switch c.Family {
	case 4:
		s, d = netip.AddrFrom4([4]byte(c.Saddr[:4])), netip.AddrFrom4([4]byte(c.Daddr[:4]))
	case 6:
		s, d = netip.AddrFrom16(c.Saddr), netip.AddrFrom16(c.Daddr)
	default:
		return decode.Flow{}, false
	}
	return decode.Flow{Proto: c.Proto, Src: netip.AddrPortFrom(s, c.Sport), Dst: netip.AddrPortFrom(d, c.Dport)}, true
}

// inferLoc is the drop reason inferred from a kfree_skb call site: the name the
// kernel's own reasons would give (decode.InferReason), or NOT_SPECIFIED for a site
// not in its table or when the kernel's symbols cannot be read. A site keeps its first
// answer.
func (t *Tracer) inferLoc(loc uint64) string {
	t.locMu.Lock()
	defer t.locMu.Unlock()
	if r, ok := t.locReason[loc]; ok {
		return r
	}
	r := "NOT_SPECIFIED"
	if syms, err := t.cfg.Symbols.Get(); err == nil && syms != nil {
		if inferred, _, ok := decode.InferReason(syms.Symbolize(loc)); ok {
			r = inferred
		}
	}
	if len(t.locReason) < 4096 {
		t.locReason[loc] = r
	}
	return r
}
