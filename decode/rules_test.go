package decode

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

// rulesFixture is a node's ruleset: iptables-nft's filter table, as the lab's firewall
// fault leaves it, plus a native nftables table hooked at FORWARD too.
func rulesLabFixture() RuleSnapshot {
	ipt := func(chain, hook string, handle uint64, pos int, verdict string, pkts uint64, text string) Rule {
		return Rule{Family: "ip", Table: "filter", Chain: chain, Hook: hook, Handle: handle, Position: pos,
			Verdict: verdict, HasCounter: true, Packets: pkts, Bytes: pkts * 60, Text: text, Backend: BackendIptablesNft}
	}
	nft := func(handle uint64, pos int, verdict string, counter bool, pkts uint64, text string) Rule {
		return Rule{Family: "inet", Table: "mytable", Chain: "mychain", Hook: "FORWARD", Handle: handle, Position: pos,
			Verdict: verdict, HasCounter: counter, Packets: pkts, Bytes: pkts * 60, Text: text, Backend: BackendNftables}
	}
	return RuleSnapshot{
		Chains: []Chain{
			{Family: "ip", Table: "filter", Name: "INPUT", Hook: "INPUT", Policy: "accept", Backend: BackendIptablesNft},
			{Family: "ip", Table: "filter", Name: "FORWARD", Hook: "FORWARD", Policy: "accept", Backend: BackendIptablesNft},
			{Family: "ip", Table: "filter", Name: "OUTPUT", Hook: "OUTPUT", Policy: "accept", Backend: BackendIptablesNft},
			{Family: "ip", Table: "filter", Name: "KUBE-FW", Backend: BackendIptablesNft},
			{Family: "ip", Table: "filter", Name: "ORPHAN", Backend: BackendIptablesNft},
			{Family: "inet", Table: "mytable", Name: "mychain", Hook: "FORWARD", Policy: "accept", Backend: BackendNftables},
		},
		Rules: []Rule{
			ipt("INPUT", "INPUT", 20, 1, "accept", 100, "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"),
			ipt("INPUT", "INPUT", 21, 2, "reject", 3, "-A INPUT -p tcp -m tcp --dport 6379 -j REJECT --reject-with icmp-port-unreachable"),
			ipt("FORWARD", "FORWARD", 11, 1, "drop", 5, "-A FORWARD -d 10.244.1.42/32 -p tcp -m tcp --dport 6379 -j DROP"),
			ipt("FORWARD", "FORWARD", 12, 2, "jump KUBE-FW", 40, "-A FORWARD -j KUBE-FW"),
			ipt("FORWARD", "FORWARD", 13, 3, "accept", 900, "-A FORWARD -s 10.244.0.0/16 -j ACCEPT"),
			ipt("KUBE-FW", "", 30, 1, "drop", 2, "-A KUBE-FW -d 10.96.0.10/32 -j DROP"),
			ipt("ORPHAN", "", 40, 1, "drop", 0, "-A ORPHAN -j DROP"),
			nft(7, 1, "drop", true, 1, "ip daddr 10.244.1.42 tcp dport 6379 drop"),
			nft(8, 2, "drop", false, 0, "tcp dport 23 drop"),
		},
	}
}

// with returns a copy of s in which fn changed what it liked.
func rulesWith(s RuleSnapshot, fn func(*RuleSnapshot)) RuleSnapshot {
	c := RuleSnapshot{Rules: slices.Clone(s.Rules), Chains: slices.Clone(s.Chains), Note: s.Note}
	fn(&c)
	return c
}

func rulesByHandle(s *RuleSnapshot, table string, handle uint64) *Rule {
	for i := range s.Rules {
		if s.Rules[i].Table == table && s.Rules[i].Handle == handle {
			return &s.Rules[i]
		}
	}
	panic("no rule with that handle")
}

// count adds n packets to the rule of table filter with that handle.
func rulesCount(handle uint64, n uint64) func(*RuleSnapshot) {
	return func(s *RuleSnapshot) { rulesByHandle(s, "filter", handle).Packets += n }
}

func rulesAll(fns ...func(*RuleSnapshot)) func(*RuleSnapshot) {
	return func(s *RuleSnapshot) {
		for _, fn := range fns {
			fn(s)
		}
	}
}

func TestMatchDrop(t *testing.T) {
	base := rulesLabFixture()
	noCounters := rulesWith(base, func(s *RuleSnapshot) {
		for i := range s.Rules {
			s.Rules[i].HasCounter, s.Rules[i].Packets, s.Rules[i].Bytes = false, 0, 0
		}
	})
	policyDrop := rulesWith(base, func(s *RuleSnapshot) { s.Chains[1].Policy = "drop" })

	tests := []struct {
		name           string
		before, after  RuleSnapshot
		hook           string
		dropped        int
		wantTable      string // "" when no rule is named
		wantHandle     uint64
		wantCandidates int
		wantString     string // exact, when set
		wantWhy        string // substring, when set
		wantPolicy     string // Location of the policy's chain, when set
	}{
		{
			name:   "single rule rose",
			before: base, after: rulesWith(base, rulesCount(11, 1)),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 11, wantCandidates: 1,
			wantString: "dropped by filter/FORWARD rule 1: -A FORWARD -d 10.244.1.42/32 -p tcp -m tcp --dport 6379 -j DROP",
		},
		{
			name:   "hook in lower case",
			before: base, after: rulesWith(base, rulesCount(11, 1)),
			hook: "forward", dropped: 1,
			wantTable: "filter", wantHandle: 11, wantCandidates: 1,
		},
		{
			name:   "two rules rose, the one in the hook's chain wins",
			before: base, after: rulesWith(base, rulesAll(rulesCount(21, 1), rulesCount(11, 1))),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 11, wantCandidates: 2,
			wantString: "dropped by filter/FORWARD rule 1: -A FORWARD -d 10.244.1.42/32 -p tcp -m tcp --dport 6379 -j DROP (the likeliest of 2 drop rules that counted packets)",
			wantWhy:    "2 drop rules counted packets",
		},
		{
			name:   "two rules rose, the other hook asked",
			before: base, after: rulesWith(base, rulesAll(rulesCount(21, 1), rulesCount(11, 1))),
			hook: "INPUT", dropped: 1,
			wantTable: "filter", wantHandle: 21, wantCandidates: 2,
		},
		{
			name:   "a jump target of the hook beats another hook's chain",
			before: base, after: rulesWith(base, rulesAll(rulesCount(21, 1), rulesCount(12, 1), rulesCount(30, 1))),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 30, wantCandidates: 2,
			wantString: "dropped by filter/KUBE-FW rule 1: -A KUBE-FW -d 10.96.0.10/32 -j DROP (the likeliest of 2 drop rules that counted packets)",
		},
		{
			name:   "the rule that counted as many packets as were dropped wins",
			before: base, after: rulesWith(base, rulesAll(rulesCount(11, 7), rulesCount(30, 2))),
			hook: "FORWARD", dropped: 2,
			wantTable: "filter", wantHandle: 30, wantCandidates: 2,
		},
		{
			name:   "only another hook's rule rose",
			before: base, after: rulesWith(base, rulesCount(21, 1)),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 21, wantCandidates: 1,
			wantWhy: "other hooks than FORWARD",
		},
		{
			name:   "a chain no base chain jumps to",
			before: base, after: rulesWith(base, rulesCount(40, 1)),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 40, wantCandidates: 1,
			wantWhy: "not visibly reached",
		},
		{
			name:   "counters of accept and jump rules rose but are ignored",
			before: base, after: rulesWith(base, rulesAll(rulesCount(13, 50), rulesCount(12, 3), rulesCount(20, 9), rulesCount(11, 1))),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 11, wantCandidates: 1,
		},
		{
			name:   "only accept rules rose",
			before: base, after: rulesWith(policyDrop, rulesAll(rulesCount(13, 50), rulesCount(20, 9))),
			hook: "FORWARD", dropped: 1,
			wantPolicy: "filter/FORWARD",
		},
		{
			name:   "native nftables rule",
			before: base, after: rulesWith(base, func(s *RuleSnapshot) { rulesByHandle(s, "mytable", 7).Packets++ }),
			hook: "FORWARD", dropped: 1,
			wantTable: "mytable", wantHandle: 7, wantCandidates: 1,
			wantString: "dropped by inet/mytable/mychain rule handle 7: ip daddr 10.244.1.42 tcp dport 6379 drop",
		},
		{
			name:   "rule added between the snapshots counts from zero",
			before: base,
			after: rulesWith(base, func(s *RuleSnapshot) {
				for i := range s.Rules {
					if s.Rules[i].Chain == "FORWARD" {
						s.Rules[i].Position++
					}
				}
				s.Rules = append(s.Rules, Rule{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "FORWARD",
					Handle: 50, Position: 1, Verdict: "drop", HasCounter: true, Packets: 1, Bytes: 60,
					Text: "-A FORWARD -p udp -m udp --dport 53 -j DROP", Backend: BackendIptablesNft})
			}),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 50, wantCandidates: 1,
			wantString: "dropped by filter/FORWARD rule 1: -A FORWARD -p udp -m udp --dport 53 -j DROP",
		},
		{
			name:   "rule added without packets is no candidate",
			before: base,
			after: rulesWith(base, func(s *RuleSnapshot) {
				s.Rules = append(s.Rules, Rule{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "FORWARD",
					Handle: 51, Position: 4, Verdict: "drop", HasCounter: true, Backend: BackendIptablesNft})
			}),
			hook: "FORWARD", dropped: 1,
			wantWhy: "no nftables rule with a drop verdict counted a packet, and 1 drop rules have no counter",
		},
		{
			name:   "rule deleted between the snapshots",
			before: base,
			after: rulesWith(base, func(s *RuleSnapshot) {
				s.Rules = slices.DeleteFunc(s.Rules, func(r Rule) bool { return r.Table == "filter" && r.Handle == 11 })
				for i := range s.Rules {
					if s.Rules[i].Chain == "FORWARD" {
						s.Rules[i].Position--
					}
				}
				rulesByHandle(s, "filter", 30).Packets++
			}),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 30, wantCandidates: 1,
		},
		{
			name: "ruleset changed order: rules are matched by handle, not position",
			before: rulesWith(base, func(s *RuleSnapshot) {
				// FORWARD as: 11 drop (5 packets), 12 jump, 13 accept
				rulesByHandle(s, "filter", 13).Packets = 5
			}),
			after: rulesWith(base, func(s *RuleSnapshot) {
				// reordered to 13 accept (now 6 packets), 12 jump, 11 drop (still 5):
				// by position, rule 1 "rose" and would be blamed
				rulesByHandle(s, "filter", 13).Position, rulesByHandle(s, "filter", 11).Position = 1, 3
				rulesByHandle(s, "filter", 13).Packets = 6
				rulesByHandle(s, "filter", 30).Packets++
				slices.SortStableFunc(s.Rules, func(a, b Rule) int {
					if a.Chain != b.Chain {
						return 0
					}
					return a.Position - b.Position
				})
			}),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 30, wantCandidates: 1,
		},
		{
			name:   "a replaced rule whose counter went down counts from zero",
			before: base,
			after: rulesWith(base, func(s *RuleSnapshot) {
				r := rulesByHandle(s, "filter", 11)
				r.Packets, r.Text = 1, "-A FORWARD -d 10.244.1.43/32 -j DROP"
			}),
			hook: "FORWARD", dropped: 1,
			wantTable: "filter", wantHandle: 11, wantCandidates: 1,
		},
		{
			name:   "no counters",
			before: noCounters, after: noCounters,
			hook: "FORWARD", dropped: 1,
			wantWhy: "no nftables rule with a drop verdict counted a packet, and 5 drop rules have no counter to read (such as filter/FORWARD handle 11)",
		},
		{
			name:   "policy drop",
			before: policyDrop, after: rulesWith(policyDrop, rulesCount(13, 1)),
			hook: "FORWARD", dropped: 1,
			wantPolicy: "filter/FORWARD",
			wantString: "dropped by the policy of filter/FORWARD (or by one of 1 drop rules without a counter)",
		},
		{
			name: "policy drop of a native chain",
			before: rulesWith(base, func(s *RuleSnapshot) {
				s.Chains[5].Policy = "drop"
				s.Rules = slices.DeleteFunc(s.Rules, func(r Rule) bool { return !r.HasCounter })
			}),
			after: rulesWith(base, func(s *RuleSnapshot) {
				s.Chains[5].Policy = "drop"
				s.Rules = slices.DeleteFunc(s.Rules, func(r Rule) bool { return !r.HasCounter })
			}),
			hook: "FORWARD", dropped: 1,
			wantPolicy: "inet/mytable/mychain",
			wantString: "dropped by the policy of inet/mytable/mychain",
		},
		{
			name:   "policy drop at another hook is not blamed",
			before: policyDrop, after: policyDrop,
			hook: "INPUT", dropped: 1,
			wantWhy: NoRuleCounted,
		},
		{
			name:   "nothing found",
			before: base, after: rulesWith(base, func(s *RuleSnapshot) {
				s.Rules = slices.DeleteFunc(s.Rules, func(r Rule) bool { return !r.HasCounter })
			}),
			hook: "FORWARD", dropped: 1,
			wantString: "rule not named: " + NoRuleCounted,
		},
		{
			name:   "nothing found, with the reader's note",
			before: RuleSnapshot{},
			after:  RuleSnapshot{Note: "iptables-legacy has tables in this namespace (filter)"},
			hook:   "FORWARD", dropped: 1,
			wantString: "rule not named: " + NoRuleCounted + "; iptables-legacy has tables in this namespace (filter)",
		},
		{
			name:   "unknown hook takes every chain alike",
			before: base, after: rulesWith(base, rulesAll(rulesCount(21, 1), rulesCount(11, 3))),
			hook: "", dropped: 1,
			wantTable: "filter", wantHandle: 21, wantCandidates: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := MatchDrop(tt.before, tt.after, tt.hook, tt.dropped)
			if tt.wantTable == "" {
				if m.Rule != nil {
					t.Fatalf("named %+v, want none (%s)", *m.Rule, m)
				}
			} else if m.Rule == nil {
				t.Fatalf("named no rule (%s), want %s handle %d", m, tt.wantTable, tt.wantHandle)
			} else if m.Rule.Table != tt.wantTable || m.Rule.Handle != tt.wantHandle {
				t.Fatalf("named %s handle %d (%s), want %s handle %d", m.Rule.Table, m.Rule.Handle, m, tt.wantTable, tt.wantHandle)
			}
			if m.Candidates != tt.wantCandidates {
				t.Errorf("Candidates = %d, want %d", m.Candidates, tt.wantCandidates)
			}
			if tt.wantString != "" && m.String() != tt.wantString {
				t.Errorf("String() =\n  %s\nwant\n  %s", m, tt.wantString)
			}
			if tt.wantWhy != "" && !strings.Contains(m.Why, tt.wantWhy) {
				t.Errorf("Why = %q, want it to contain %q", m.Why, tt.wantWhy)
			}
			switch {
			case tt.wantPolicy == "" && m.Policy != nil:
				t.Errorf("Policy = %s, want none", m.Policy.Location())
			case tt.wantPolicy != "" && m.Policy == nil:
				t.Errorf("no Policy (%s), want %s", m, tt.wantPolicy)
			case tt.wantPolicy != "" && m.Policy.Location() != tt.wantPolicy:
				t.Errorf("Policy = %s, want %s", m.Policy.Location(), tt.wantPolicy)
			}
		})
	}
}

func TestMatchDropDoesNotAlias(t *testing.T) {
	base := rulesLabFixture()
	after := rulesWith(base, rulesCount(11, 1))
	m := MatchDrop(base, after, "FORWARD", 1)
	m.Rule.Text = "changed"
	if rulesByHandle(&after, "filter", 11).Text == "changed" {
		t.Fatal("RuleMatch.Rule points into the snapshot")
	}
}

func TestRuleDescribe(t *testing.T) {
	tests := []struct {
		r    Rule
		want string
	}{
		{Rule{Family: "ip", Table: "filter", Chain: "OUTPUT", Handle: 4, Position: 2, Backend: BackendIptablesNft},
			"filter/OUTPUT rule 2 (handle 4)"},
		{Rule{Family: "ip6", Table: "filter", Chain: "OUTPUT", Handle: 4, Position: 2, Backend: BackendIptablesNft, Text: "-A OUTPUT -j DROP"},
			"ip6/filter/OUTPUT rule 2: -A OUTPUT -j DROP"},
		{Rule{Family: "inet", Table: "t", Chain: "c", Handle: 9, Position: 1, Backend: BackendNftables},
			"inet/t/c rule handle 9"},
		{Rule{Family: "netdev", Table: "t", Chain: "in", Handle: 3, Position: 1, Backend: BackendNftables, Text: "udp dport 9 drop"},
			"netdev/t/in rule handle 3: udp dport 9 drop"},
	}
	for _, tt := range tests {
		if got := tt.r.Describe(); got != tt.want {
			t.Errorf("Describe() = %q, want %q", got, tt.want)
		}
	}
	if got := (RuleMatch{}).String(); got != "rule not named" {
		t.Errorf("empty RuleMatch = %q", got)
	}
}

// TestMatchDropFixture replays snapshots that the tracer's RuleReader took in a lab
// namespace (testdata/rules_lab.json): iptables-nft rules and a native table, before
// and after one UDP datagram to 127.0.0.1:9 was dropped at OUTPUT.
func TestMatchDropFixture(t *testing.T) {
	var fx struct {
		Before, After RuleSnapshot
		Hook          string
		Dropped       int
		Want          string
	}
	readRulesFixture(t, "testdata/rules_lab.json", &fx)
	if len(fx.Before.Rules) == 0 || len(fx.After.Chains) == 0 {
		t.Fatal("fixture has no rules or no chains")
	}
	if got := MatchDrop(fx.Before, fx.After, fx.Hook, fx.Dropped).String(); got != fx.Want {
		t.Errorf("got  %s\nwant %s", got, fx.Want)
	}
}

func readRulesFixture(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
