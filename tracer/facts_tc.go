package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode/diagnose"
)

// Decoding of RTM_NEWQDISC messages: the qdisc's counters and, for the common kinds,
// its parameters as tc qdisc show (iproute2 6.x) prints them. Every length is checked:
// a short or malformed attribute leaves the parameter out instead of failing.

// Attributes netlink v1.3.1 does not name.
const (
	tcaNetemLatency64 = 10 // TCA_NETEM_LATENCY64, ns
	tcaNetemJitter64  = 11 // TCA_NETEM_JITTER64, ns

	tcaFqPlimit         = 1 // TCA_FQ_PLIMIT
	tcaFqFlowPlimit     = 2
	tcaFqQuantum        = 3
	tcaFqInitialQuantum = 4
	tcaFqRateEnable     = 5
	tcaFqFlowMaxRate    = 7
	tcaFqBucketsLog     = 8
	tcaFqFlowRefill     = 9
	tcaFqOrphanMask     = 10
	tcaFqLowRate        = 11

	tcaFqCodelCEThreshold = 7 // TCA_FQ_CODEL_CE_THRESHOLD

	tcHRoot = 0xFFFFFFFF // TC_H_ROOT
)

// nlAttr is one netlink attribute, its type without the NLA_F_ flags.
type nlAttr struct {
	typ uint16
	val []byte
}

// nlAttrs splits netlink attributes, checking every length (netlink's ParseRouteAttr
// panics on a length past the end).
func nlAttrs(b []byte) ([]nlAttr, error) {
	var out []nlAttr
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < 4 || l > len(b) {
			return out, errors.New("malformed netlink attribute")
		}
		out = append(out, nlAttr{binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask, b[4:l]})
		if l = (l + 3) &^ 3; l >= len(b) {
			break
		}
		b = b[l:]
	}
	return out, nil
}

// parseQdisc decodes one RTM_NEWQDISC message (a struct tcmsg and attributes).
func parseQdisc(m []byte) (diagnose.Qdisc, error) {
	var q diagnose.Qdisc
	if len(m) < nl.SizeofTcMsg {
		return q, errors.New("qdisc message shorter than struct tcmsg")
	}
	handle := binary.NativeEndian.Uint32(m[8:12])
	parent := binary.NativeEndian.Uint32(m[12:16])
	q.Handle = fmt.Sprintf("%x:", handle>>16)
	q.Parent = tcParent(parent)
	attrs, err := nlAttrs(m[nl.SizeofTcMsg:])
	if err != nil {
		return q, fmt.Errorf("qdisc %s: %w", q.Handle, err)
	}
	var opts, stats2, stats []byte
	for _, a := range attrs {
		switch a.typ {
		case unix.TCA_KIND:
			q.Kind = strings.TrimRight(string(a.val), "\x00")
		case unix.TCA_OPTIONS:
			opts = a.val
		case unix.TCA_STATS2:
			stats2 = a.val
		case unix.TCA_STATS:
			stats = a.val
		}
	}
	q.Config = qdiscConfig(q.Kind, opts)
	if stats2 != nil {
		qdiscStats2(&q, stats2)
	} else if len(stats) >= 36 {
		// struct tc_stats, before TCA_STATS2.
		q.Bytes = binary.NativeEndian.Uint64(stats[0:8])
		q.Packets = uint64(binary.NativeEndian.Uint32(stats[8:12]))
		q.Drops = binary.NativeEndian.Uint32(stats[12:16])
		q.Overlimits = binary.NativeEndian.Uint32(stats[16:20])
		q.QLen = binary.NativeEndian.Uint32(stats[28:32])
		q.Backlog = binary.NativeEndian.Uint32(stats[32:36])
	}
	return q, nil
}

// qdiscStats2 reads TCA_STATS2: gnet_stats_basic, gnet_stats_queue and the 64-bit
// packet count the kernel adds when the 32-bit one overflowed.
func qdiscStats2(q *diagnose.Qdisc, b []byte) {
	attrs, err := nlAttrs(b)
	if err != nil {
		return
	}
	var pkt64 uint64
	for _, a := range attrs {
		v := a.val
		switch a.typ {
		case nl.TCA_STATS_BASIC:
			if len(v) >= 12 {
				q.Bytes = binary.NativeEndian.Uint64(v[0:8])
				q.Packets = uint64(binary.NativeEndian.Uint32(v[8:12]))
			}
		case nl.TCA_STATS_QUEUE:
			if len(v) >= 20 {
				q.QLen = binary.NativeEndian.Uint32(v[0:4])
				q.Backlog = binary.NativeEndian.Uint32(v[4:8])
				q.Drops = binary.NativeEndian.Uint32(v[8:12])
				q.Requeues = binary.NativeEndian.Uint32(v[12:16])
				q.Overlimits = binary.NativeEndian.Uint32(v[16:20])
			}
		case nl.TCA_STATS_PKT64:
			if len(v) >= 8 {
				pkt64 = binary.NativeEndian.Uint64(v[0:8])
			}
		}
	}
	if pkt64 != 0 {
		q.Packets = pkt64
	}
}

// tcParent prints a qdisc's parent as tc does: "root", else major:minor in hex.
func tcParent(p uint32) string {
	switch {
	case p == tcHRoot:
		return "root"
	case p == 0:
		return "none"
	case p>>16 == 0:
		return fmt.Sprintf(":%x", p&0xffff)
	case p&0xffff == 0:
		return fmt.Sprintf("%x:", p>>16)
	}
	return fmt.Sprintf("%x:%x", p>>16, p&0xffff)
}

// qdiscConfig prints the parameters of the kinds it knows; "" for the others and for
// kinds without any (noqueue, mq, ingress, clsact).
func qdiscConfig(kind string, opts []byte) string {
	if len(opts) == 0 {
		return ""
	}
	var f []string
	switch kind {
	case "tbf":
		f = tbfConfig(opts)
	case "fq_codel":
		f = fqCodelConfig(opts)
	case "netem":
		f = netemConfig(opts)
	case "fq":
		f = fqConfig(opts)
	case "pfifo", "bfifo":
		if len(opts) >= 4 {
			limit := binary.NativeEndian.Uint32(opts[0:4])
			if kind == "pfifo" {
				f = []string{"limit", strconv.FormatUint(uint64(limit), 10) + "p"}
			} else {
				f = []string{"limit", tcSize(limit)}
			}
		}
	case "pfifo_fast", "prio":
		// struct tc_prio_qopt: int bands, __u8 priomap[16].
		if len(opts) >= 20 {
			f = []string{"bands", strconv.Itoa(int(int32(binary.NativeEndian.Uint32(opts[0:4])))), "priomap"}
			for _, p := range opts[4:20] {
				f = append(f, strconv.Itoa(int(p)))
			}
		}
	case "htb":
		f = htbConfig(opts)
	}
	return strings.Join(f, " ")
}

// tbfConfig: "rate 1Mbit burst 1600b limit 30000b" (tc prints lat instead of limit
// unless asked for raw values; the limit is what a diagnosis compares with).
func tbfConfig(opts []byte) []string {
	attrs, err := nlAttrs(opts)
	if err != nil {
		return nil
	}
	var parms []byte
	var rate, prate uint64
	for _, a := range attrs {
		switch a.typ {
		case nl.TCA_TBF_PARMS:
			parms = a.val
		case nl.TCA_TBF_RATE64:
			if len(a.val) >= 8 {
				rate = binary.NativeEndian.Uint64(a.val)
			}
		case nl.TCA_TBF_PRATE64:
			if len(a.val) >= 8 {
				prate = binary.NativeEndian.Uint64(a.val)
			}
		}
	}
	// struct tc_tbf_qopt: tc_ratespec rate, peakrate (12 bytes each, the rate last),
	// __u32 limit, buffer, mtu; buffer and mtu in scheduler ticks.
	if len(parms) < 36 {
		return nil
	}
	if rate == 0 {
		rate = uint64(binary.NativeEndian.Uint32(parms[8:12]))
	}
	if prate == 0 {
		prate = uint64(binary.NativeEndian.Uint32(parms[20:24]))
	}
	limit := binary.NativeEndian.Uint32(parms[24:28])
	buffer := binary.NativeEndian.Uint32(parms[28:32])
	mtu := binary.NativeEndian.Uint32(parms[32:36])
	f := []string{"rate", tcRate(rate), "burst", tcSize(netlink.Xmitsize(rate, buffer))}
	if prate != 0 {
		f = append(f, "peakrate", tcRate(prate))
		if mtu != 0 {
			f = append(f, "minburst", tcSize(netlink.Xmitsize(prate, mtu)))
		}
	}
	return append(f, "limit", tcSize(limit))
}

// fqCodelConfig: "limit 10240p flows 1024 quantum 1514 target 5ms interval 100ms
// memory_limit 32Mb ecn drop_batch 64".
func fqCodelConfig(opts []byte) []string {
	v := u32Attrs(opts)
	var f []string
	if x, ok := v[nl.TCA_FQ_CODEL_LIMIT]; ok {
		f = append(f, "limit", fmt.Sprintf("%dp", x))
	}
	if x, ok := v[nl.TCA_FQ_CODEL_FLOWS]; ok {
		f = append(f, "flows", strconv.FormatUint(uint64(x), 10))
	}
	if x, ok := v[nl.TCA_FQ_CODEL_QUANTUM]; ok {
		f = append(f, "quantum", strconv.FormatUint(uint64(x), 10))
	}
	if x, ok := v[nl.TCA_FQ_CODEL_TARGET]; ok {
		f = append(f, "target", tcTime(x))
	}
	if x, ok := v[tcaFqCodelCEThreshold]; ok {
		f = append(f, "ce_threshold", tcTime(x))
	}
	if x, ok := v[nl.TCA_FQ_CODEL_INTERVAL]; ok {
		f = append(f, "interval", tcTime(x))
	}
	if x, ok := v[nl.TCA_FQ_CODEL_MEMORY_LIMIT]; ok {
		f = append(f, "memory_limit", tcSize(x))
	}
	if x, ok := v[nl.TCA_FQ_CODEL_ECN]; ok && x != 0 {
		f = append(f, "ecn")
	}
	if x, ok := v[nl.TCA_FQ_CODEL_DROP_BATCH_SIZE]; ok {
		f = append(f, "drop_batch", strconv.FormatUint(uint64(x), 10))
	}
	return f
}

// netemConfig: "limit 1000 delay 10ms 2ms loss 1% duplicate 1% reorder 25%
// corrupt 0.1% rate 1Mbit gap 5", from struct tc_netem_qopt and the attributes after
// it.
func netemConfig(opts []byte) []string {
	if len(opts) < nl.SizeofTcNetemQopt {
		return nil
	}
	u := func(i int) uint32 { return binary.NativeEndian.Uint32(opts[4*i : 4*i+4]) }
	latencyTicks, limit, loss, gap, dup, jitterTicks := u(0), u(1), u(2), u(3), u(4), u(5)
	latency := int64(tickToUsec(latencyTicks)) * 1000
	jitter := int64(tickToUsec(jitterTicks)) * 1000
	var reorder, corrupt uint32
	var rate uint64
	if attrs, err := nlAttrs(opts[nl.SizeofTcNetemQopt:]); err == nil {
		for _, a := range attrs {
			v := a.val
			switch a.typ {
			case tcaNetemLatency64:
				if len(v) >= 8 {
					latency = int64(binary.NativeEndian.Uint64(v))
				}
			case tcaNetemJitter64:
				if len(v) >= 8 {
					jitter = int64(binary.NativeEndian.Uint64(v))
				}
			case nl.TCA_NETEM_REORDER:
				if len(v) >= 4 {
					reorder = binary.NativeEndian.Uint32(v)
				}
			case nl.TCA_NETEM_CORRUPT:
				if len(v) >= 4 {
					corrupt = binary.NativeEndian.Uint32(v)
				}
			case nl.TCA_NETEM_RATE:
				if len(v) >= 4 && rate == 0 {
					rate = uint64(binary.NativeEndian.Uint32(v))
				}
			case nl.TCA_NETEM_RATE64:
				if len(v) >= 8 {
					rate = binary.NativeEndian.Uint64(v)
				}
			}
		}
	}
	f := []string{"limit", strconv.FormatUint(uint64(limit), 10)}
	if latency != 0 {
		f = append(f, "delay", tcTime64(latency))
		if jitter != 0 {
			f = append(f, tcTime64(jitter))
		}
	}
	if loss != 0 {
		f = append(f, "loss", tcPercent(loss))
	}
	if dup != 0 {
		f = append(f, "duplicate", tcPercent(dup))
	}
	if reorder != 0 {
		f = append(f, "reorder", tcPercent(reorder))
	}
	if corrupt != 0 {
		f = append(f, "corrupt", tcPercent(corrupt))
	}
	if rate != 0 {
		f = append(f, "rate", tcRate(rate))
	}
	if gap != 0 {
		f = append(f, "gap", strconv.FormatUint(uint64(gap), 10))
	}
	return f
}

// fqConfig: the usual parameters of fq, in tc's order.
func fqConfig(opts []byte) []string {
	v := u32Attrs(opts)
	var f []string
	if x, ok := v[tcaFqPlimit]; ok {
		f = append(f, "limit", fmt.Sprintf("%dp", x))
	}
	if x, ok := v[tcaFqFlowPlimit]; ok {
		f = append(f, "flow_limit", fmt.Sprintf("%dp", x))
	}
	if x, ok := v[tcaFqBucketsLog]; ok && x < 32 {
		f = append(f, "buckets", strconv.FormatUint(1<<x, 10))
	}
	if x, ok := v[tcaFqOrphanMask]; ok {
		f = append(f, "orphan_mask", strconv.FormatUint(uint64(x), 10))
	}
	if x, ok := v[tcaFqRateEnable]; ok && x == 0 {
		f = append(f, "notpacing")
	}
	if x, ok := v[tcaFqQuantum]; ok {
		f = append(f, "quantum", tcSize(x))
	}
	if x, ok := v[tcaFqInitialQuantum]; ok {
		f = append(f, "initial_quantum", tcSize(x))
	}
	if x, ok := v[tcaFqLowRate]; ok {
		f = append(f, "low_rate_threshold", tcRate(uint64(x)))
	}
	if x, ok := v[tcaFqFlowMaxRate]; ok && x != math.MaxUint32 {
		f = append(f, "maxrate", tcRate(uint64(x)))
	}
	if x, ok := v[tcaFqFlowRefill]; ok {
		f = append(f, "refill_delay", tcTime(x))
	}
	return f
}

// htbConfig: "r2q 10 default 0x10 direct_packets_stat 0 direct_qlen 1000".
func htbConfig(opts []byte) []string {
	attrs, err := nlAttrs(opts)
	if err != nil {
		return nil
	}
	var f []string
	var qlen []string
	for _, a := range attrs {
		v := a.val
		switch a.typ {
		case nl.TCA_HTB_INIT:
			// struct tc_htb_glob: version, rate2quantum, defcls, debug, direct_pkts.
			if len(v) >= 20 {
				u := func(i int) uint32 { return binary.NativeEndian.Uint32(v[4*i : 4*i+4]) }
				def := "0"
				if u(2) != 0 {
					def = fmt.Sprintf("%#x", u(2))
				}
				f = append(f, "r2q", strconv.FormatUint(uint64(u(1)), 10), "default", def, "direct_packets_stat", strconv.FormatUint(uint64(u(4)), 10))
			}
		case nl.TCA_HTB_DIRECT_QLEN:
			if len(v) >= 4 {
				qlen = []string{"direct_qlen", strconv.FormatUint(uint64(binary.NativeEndian.Uint32(v)), 10)}
			}
		}
	}
	return append(f, qlen...)
}

// u32Attrs reads attributes of 32-bit values.
func u32Attrs(b []byte) map[uint16]uint32 {
	out := map[uint16]uint32{}
	attrs, err := nlAttrs(b)
	if err != nil {
		return out
	}
	for _, a := range attrs {
		if len(a.val) >= 4 {
			out[a.typ] = binary.NativeEndian.Uint32(a.val)
		}
	}
	return out
}

// tickToUsec turns scheduler ticks into microseconds as tc does (tick / tick_in_usec,
// truncated).
func tickToUsec(t uint32) uint32 {
	return uint32(float64(t) / netlink.TickInUsec())
}

// tcRate prints a rate in bytes per second as tc's sprint_rate: bits, in the largest
// 1000-based unit that keeps it whole (or below 1000 of the next).
func tcRate(bytesPerSec uint64) string {
	units := []string{"", "K", "M", "G", "T"}
	rate := bytesPerSec * 8
	i := 0
	for ; i < len(units)-1; i++ {
		if rate < 1000 || rate%1000 != 0 && rate < 1000*1000 {
			break
		}
		rate /= 1000
	}
	return strconv.FormatUint(rate, 10) + units[i] + "bit"
}

// tcSize prints a size in bytes as tc's sprint_size: Mb or Kb when within 1 Kb or
// 16 b of a whole number of them.
func tcSize(sz uint32) string {
	t := float64(sz)
	if sz >= 1<<20 {
		if m := math.RoundToEven(t / (1 << 20)); math.Abs(m*(1<<20)-t) < 1024 {
			return strconv.FormatFloat(m, 'g', -1, 64) + "Mb"
		}
	}
	if sz >= 1<<10 {
		if k := math.RoundToEven(t / (1 << 10)); math.Abs(k*(1<<10)-t) < 16 {
			return strconv.FormatFloat(k, 'g', -1, 64) + "Kb"
		}
	}
	return strconv.FormatUint(uint64(sz), 10) + "b"
}

// tcTime prints microseconds as tc's sprint_time ("%.3gms"): as tcTime64 does, in
// microseconds at the least.
func tcTime(us uint32) string {
	if us == 0 {
		return "0us"
	}
	return tcTime64(int64(us) * 1000)
}

// tcTime64 prints nanoseconds as tc's sprint_time64.
func tcTime64(ns int64) string {
	t := float64(ns)
	switch {
	case t >= 1e9:
		return strconv.FormatFloat(t/1e9, 'g', 3, 64) + "s"
	case t >= 1e6:
		return strconv.FormatFloat(t/1e6, 'g', 3, 64) + "ms"
	case t >= 1e3:
		return strconv.FormatFloat(t/1e3, 'g', 3, 64) + "us"
	}
	return strconv.FormatInt(ns, 10) + "ns"
}

// tcPercent prints a probability scaled to 2^32-1 as tc's sprint_percent ("%g%%").
func tcPercent(p uint32) string {
	return strconv.FormatFloat(100*float64(p)/math.MaxUint32, 'g', 6, 64) + "%"
}
