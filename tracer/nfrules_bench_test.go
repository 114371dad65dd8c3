package tracer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// nfrBenchRules is the size of the chain the benchmark looks up in.
const nfrBenchRules = 10000

// BenchmarkNFRules measures one lookup, Snapshot (or SnapshotCounters) and MatchDrop,
// in a namespace whose OUTPUT chain holds 10,000 iptables rules, the last of them
// dropping the datagram sent between two lookups.
//
//	warm:     Snapshot with the texts cached (the ruleset did not change)
//	cold:     Snapshot after a change of the ruleset: iptables-save runs again
//	counters: SnapshotCounters, then Describe for the rule named
func BenchmarkNFRules(b *testing.B) {
	nfrNeedRoot(b, "iptables-restore")
	ns := nfrNetns(b)
	var rules strings.Builder
	rules.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for i := range nfrBenchRules - 1 {
		// Documentation addresses (198.18.0.0/15): the rules only need to exist.
		fmt.Fprintf(&rules, "-A OUTPUT -d 198.18.%d.%d/32 -p tcp -m tcp --dport %d -j ACCEPT\n", i/256, i%256, 1024+i%1000)
	}
	rules.WriteString("-A OUTPUT -d 127.0.0.1/32 -p udp -m udp --dport 9 -j DROP\nCOMMIT\n")
	start := time.Now()
	nfrIn(b, ns, rules.String(), "iptables-restore")
	b.Logf("iptables-restore of %d rules: %v", nfrBenchRules, time.Since(start).Round(time.Millisecond))
	want := fmt.Sprintf("dropped by filter/OUTPUT rule %d: -A OUTPUT -d 127.0.0.1/32 -p udp -m udp --dport 9 -j DROP", nfrBenchRules)

	lookup := func(b *testing.B, before decode.RuleSnapshot, snap func() (decode.RuleSnapshot, error), describe func(*decode.RuleMatch) error) decode.RuleSnapshot {
		after, err := snap()
		if err != nil {
			b.Fatal(err)
		}
		m := decode.MatchDrop(before, after, "OUTPUT", 1)
		if describe != nil {
			if err := describe(&m); err != nil {
				b.Fatal(err)
			}
		}
		if got := m.String(); got != want {
			b.Fatalf("got  %s\nwant %s", got, want)
		}
		return after
	}
	run := func(name string, counters bool, change func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			r := nfrReader(b, ns)
			snap, describe := r.Snapshot, (func(*decode.RuleMatch) error)(nil)
			if counters {
				snap, describe = r.SnapshotCounters, r.Describe
			}
			before, err := snap()
			if err != nil {
				b.Fatal(err)
			}
			if len(before.Rules) != nfrBenchRules {
				b.Fatalf("snapshot has %d rules, want %d", len(before.Rules), nfrBenchRules)
			}
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				if change != nil {
					change(b)
				}
				nfrSendUDP(b, ns, "127.0.0.1:9")
				t0 := time.Now()
				b.StartTimer()
				before = lookup(b, before, snap, describe)
				total += time.Since(t0)
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/lookup")
		})
	}
	run("warm", false, nil)
	// A change elsewhere in the ruleset makes every cached text stale.
	n := 0
	change := func(b *testing.B) {
		n++
		nfrIn(b, ns, "", "nft", "add", "table", "inet", fmt.Sprintf("pt_bench_%d", n))
	}
	run("cold", false, change)
	run("counters", true, change)
}
