package decode

import (
	"fmt"
	"sort"
	"strings"
)

// Netfilter rule attribution.
//
// When the kernel reports NETFILTER_DROP, the tracer reads the nftables ruleset (the
// rules of iptables-nft and of native nftables alike) with its counters, once before
// and once after, and MatchDrop names the rule whose counter rose and whose verdict
// drops. Everything here is pure: the snapshots are handed in.

// Backends of a rule: which tool the user wrote it with.
const (
	BackendIptablesNft = "iptables-nft"
	BackendNftables    = "nftables"
)

// Rule is one nftables rule as a snapshot saw it.
type Rule struct {
	Family string `json:"family"` // ip, ip6, inet, arp, bridge, netdev
	Table  string `json:"table"`
	Chain  string `json:"chain"`
	// Hook is the hook of the rule's chain if that is a base chain, in upper case
	// (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING, INGRESS, EGRESS); "" for a
	// non-base chain (a jump or goto target).
	Hook     string `json:"hook,omitempty"`
	Handle   uint64 `json:"handle"`
	Position int    `json:"position"` // 1-based within the chain
	// Verdict is the rule's final verdict: "drop", "reject", "accept", "queue",
	// "jump X", "goto X", "return", or "" (none: the packet goes on).
	Verdict    string `json:"verdict,omitempty"`
	HasCounter bool   `json:"has_counter"`
	Packets    uint64 `json:"packets,omitempty"`
	Bytes      uint64 `json:"bytes,omitempty"`
	// Text is the rule as the user wrote it (an iptables-save line or an nft rule),
	// "" when unknown.
	Text    string `json:"text,omitempty"`
	Backend string `json:"backend"` // BackendIptablesNft or BackendNftables
}

// Chain is one nftables chain with its hook and policy (base chains only).
type Chain struct {
	Family  string `json:"family"`
	Table   string `json:"table"`
	Name    string `json:"name"`
	Hook    string `json:"hook,omitempty"`   // as Rule.Hook; "" for a non-base chain
	Policy  string `json:"policy,omitempty"` // "accept" or "drop"; "" for a non-base chain
	Backend string `json:"backend"`
}

// RuleSnapshot is the ruleset of one network namespace at one moment.
type RuleSnapshot struct {
	Rules  []Rule  `json:"rules"`
	Chains []Chain `json:"chains"`
	// Note says what the reader could not see (for example iptables-legacy tables,
	// whose rules live in x_tables and have no nftables counters); "" if nothing.
	Note string `json:"note,omitempty"`
}

// RuleMatch is what MatchDrop found.
type RuleMatch struct {
	// Rule is the rule that most likely dropped the packet, nil if none could be named.
	Rule *Rule `json:"rule,omitempty"`
	// Candidates is how many drop rules counted packets between the snapshots.
	Candidates int `json:"candidates"`
	// Policy is the base chain whose drop policy dropped the packet, when no rule
	// counted it and such a chain exists at the hook.
	Policy *Chain `json:"policy,omitempty"`
	// Why explains a missing or uncertain answer; "" when one rule was named plainly.
	Why string `json:"why,omitempty"`
}

// NoRuleCounted is the explanation when no drop rule counted a packet and no chain
// policy drops at the hook.
const NoRuleCounted = "no nftables rule with a drop verdict counted a packet: the ruleset may be iptables-legacy or the packet was dropped by a chain policy"

type ruleKey struct {
	family, table, chain string
	handle               uint64
}

type chainKey struct{ family, table, chain string }

// Verdict tiers: how well a rule's chain fits the hook where the packet died.
const (
	tierHook    = iota // a base chain of the hook, or a chain it jumps to
	tierUnknown        // a non-base chain that no base chain visibly jumps to
	tierOther          // reached only from base chains of other hooks
)

// IsDropVerdict reports whether a verdict ends a packet: drop or reject.
func IsDropVerdict(v string) bool { return v == "drop" || v == "reject" }

// MatchDrop names the rule that dropped packets between two snapshots: a rule whose
// verdict drops (drop or reject) and whose packet counter rose. Rules are matched
// across the snapshots by family, table, chain and handle; a rule new in after counts
// from zero, and a counter that went down (a replaced rule) counts from zero too.
//
// hook is where the packet died (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING;
// any case; "" if unknown). Rules in base chains of that hook and in the chains they
// jump to come first, then rules in chains no base chain visibly reaches, then rules
// of other hooks. Among equals, the rule whose counter rose by closest to dropped
// (the packets the tracer saw dropped; 0 if unknown) wins, then the first in ruleset
// order. When no rule counted a packet, a drop policy of a base chain of the hook is
// named instead, and otherwise Why says why nothing can be named.
func MatchDrop(before, after RuleSnapshot, hook string, dropped int) RuleMatch {
	hook = strings.ToUpper(strings.TrimSpace(hook))

	prev := make(map[ruleKey]uint64, len(before.Rules))
	for i := range before.Rules {
		r := &before.Rules[i]
		if r.HasCounter {
			prev[ruleKey{r.Family, r.Table, r.Chain, r.Handle}] = r.Packets
		}
	}
	tiers := chainTiers(after, hook)

	type cand struct {
		idx   int
		tier  int
		delta uint64
	}
	var cands []cand
	var uncounted []int // drop rules without a counter, in the hook's chains or unknown ones
	for i := range after.Rules {
		r := &after.Rules[i]
		if !IsDropVerdict(r.Verdict) {
			continue
		}
		tier := tiers[chainKey{r.Family, r.Table, r.Chain}]
		if !r.HasCounter {
			if tier != tierOther {
				uncounted = append(uncounted, i)
			}
			continue
		}
		delta := r.Packets
		if p, ok := prev[ruleKey{r.Family, r.Table, r.Chain, r.Handle}]; ok && p <= r.Packets {
			delta = r.Packets - p
		}
		if delta == 0 {
			continue
		}
		cands = append(cands, cand{i, tier, delta})
	}

	var m RuleMatch
	if len(cands) > 0 {
		dist := func(d uint64) uint64 {
			if dropped <= 0 {
				return 0
			}
			n := uint64(dropped)
			if d >= n {
				return d - n
			}
			return n - d
		}
		sort.SliceStable(cands, func(a, b int) bool {
			if cands[a].tier != cands[b].tier {
				return cands[a].tier < cands[b].tier
			}
			return dist(cands[a].delta) < dist(cands[b].delta)
		})
		best := cands[0]
		r := after.Rules[best.idx]
		m.Rule = &r
		m.Candidates = len(cands)
		switch {
		case best.tier == tierOther:
			m.Why = fmt.Sprintf("the only drop rules that counted packets are in chains of other hooks than %s", hook)
		case best.tier == tierUnknown && hook != "":
			m.Why = fmt.Sprintf("the rule's chain %s is not visibly reached from a %s base chain", r.Chain, hook)
		case len(cands) > 1:
			m.Why = fmt.Sprintf("%d drop rules counted packets between the snapshots", len(cands))
		}
		return m
	}

	var policies []Chain
	for _, c := range after.Chains {
		if c.Hook != "" && (hook == "" || c.Hook == hook) && c.Policy == "drop" {
			policies = append(policies, c)
		}
	}
	if len(policies) > 0 {
		c := policies[0]
		m.Policy = &c
		m.Why = "dropped by the policy of " + c.Location()
		for _, o := range policies[1:] {
			m.Why += " or of " + o.Location()
		}
		if len(uncounted) > 0 {
			m.Why += fmt.Sprintf(" (or by one of %d drop rules without a counter)", len(uncounted))
		}
		return m
	}

	if len(uncounted) > 0 {
		r := &after.Rules[uncounted[0]]
		m.Why = fmt.Sprintf("no nftables rule with a drop verdict counted a packet, and %d drop rules have no counter to read (such as %s handle %d): add a counter to them to have them named",
			len(uncounted), r.Location(), r.Handle)
	} else {
		m.Why = NoRuleCounted
	}
	if after.Note != "" {
		m.Why += "; " + after.Note
	}
	return m
}

// chainTiers ranks every chain of a snapshot for a hook (see the tier constants).
func chainTiers(s RuleSnapshot, hook string) map[chainKey]int {
	tiers := make(map[chainKey]int, len(s.Chains))
	if hook == "" {
		return tiers // all tierHook
	}
	edges := make(map[chainKey][]chainKey)
	for i := range s.Rules {
		r := &s.Rules[i]
		if t := jumpTarget(r.Verdict); t != "" {
			from := chainKey{r.Family, r.Table, r.Chain}
			edges[from] = append(edges[from], chainKey{r.Family, r.Table, t})
		}
	}
	walk := func(start []chainKey) map[chainKey]bool {
		seen := make(map[chainKey]bool)
		for len(start) > 0 {
			c := start[len(start)-1]
			start = start[:len(start)-1]
			if seen[c] {
				continue
			}
			seen[c] = true
			start = append(start, edges[c]...)
		}
		return seen
	}
	var atHook, atAny []chainKey
	for _, c := range s.Chains {
		if c.Hook == "" {
			continue
		}
		k := chainKey{c.Family, c.Table, c.Name}
		atAny = append(atAny, k)
		if c.Hook == hook {
			atHook = append(atHook, k)
		}
	}
	fromHook, fromAny := walk(atHook), walk(atAny)
	known := make(map[chainKey]bool, len(s.Chains))
	for _, c := range s.Chains {
		known[chainKey{c.Family, c.Table, c.Name}] = true
	}
	// Rules may name chains the chain list lacks (fixtures, partial snapshots): rank
	// those by the rules' own Hook.
	for i := range s.Rules {
		r := &s.Rules[i]
		k := chainKey{r.Family, r.Table, r.Chain}
		if known[k] {
			continue
		}
		known[k] = true
		if r.Hook != "" {
			fromAny[k] = true
			if r.Hook == hook {
				fromHook[k] = true
			}
		}
	}
	for k := range known {
		switch {
		case fromHook[k]:
			tiers[k] = tierHook
		case fromAny[k]:
			tiers[k] = tierOther
		default:
			tiers[k] = tierUnknown
		}
	}
	return tiers
}

func jumpTarget(verdict string) string {
	for _, p := range []string{"jump ", "goto "} {
		if strings.HasPrefix(verdict, p) {
			return strings.TrimPrefix(verdict, p)
		}
	}
	return ""
}

// location names a chain the way its user knows it: table/CHAIN for iptables-nft's
// IPv4 tables (as iptables -t TABLE -L CHAIN), family/table/chain otherwise.
func location(family, table, chain, backend string) string {
	if backend == BackendIptablesNft && family == "ip" {
		return table + "/" + chain
	}
	return family + "/" + table + "/" + chain
}

// Location names the rule's chain: "filter/FORWARD" for iptables-nft (IPv4),
// "inet/mytable/mychain" otherwise.
func (r *Rule) Location() string { return location(r.Family, r.Table, r.Chain, r.Backend) }

// Location names the chain as Rule.Location does.
func (c *Chain) Location() string { return location(c.Family, c.Table, c.Name, c.Backend) }

// Describe gives the rule on one line: "filter/FORWARD rule 1: -A FORWARD ... -j DROP"
// for iptables-nft, "inet/t/c rule handle 7: ip daddr ... drop" for nftables. Without
// its text, the handle (and the position for iptables-nft) stands alone.
func (r *Rule) Describe() string {
	var s string
	if r.Backend == BackendIptablesNft {
		s = fmt.Sprintf("%s rule %d", r.Location(), r.Position)
		if r.Text == "" {
			s += fmt.Sprintf(" (handle %d)", r.Handle)
		}
	} else {
		s = fmt.Sprintf("%s rule handle %d", r.Location(), r.Handle)
	}
	if r.Text != "" {
		s += ": " + r.Text
	}
	return s
}

// String gives the answer on one line, such as
//
//	dropped by filter/FORWARD rule 1: -A FORWARD -d 10.244.1.42/32 -p tcp -m tcp --dport 6379 -j DROP
//	dropped by inet/mytable/mychain rule handle 7: ip daddr 10.244.1.42 tcp dport 6379 drop
//	dropped by the policy of filter/FORWARD
//	rule not named: no nftables rule with a drop verdict counted a packet: ...
func (m RuleMatch) String() string {
	switch {
	case m.Rule != nil:
		s := "dropped by " + m.Rule.Describe()
		if m.Candidates > 1 {
			s += fmt.Sprintf(" (the likeliest of %d drop rules that counted packets)", m.Candidates)
		}
		return s
	case m.Policy != nil:
		return m.Why
	case m.Why != "":
		return "rule not named: " + m.Why
	default:
		return "rule not named"
	}
}
