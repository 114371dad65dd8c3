package exporter

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func jline(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// filterFixture is a follow's output: journeys of each verdict on two nodes, a stall,
// a cross-node path and a one-way report, with pod names.
func filterFixture(t testing.TB) []string {
	flow := FlowJSON{Proto: "tcp", Src: "10.244.1.23:46322", Dst: "10.244.2.57:8080"}
	hops := []HopJSON{{Ifname: "veth1", TNs: 1_700_000_000_000_000_000}}
	return []string{
		jline(t, JourneyJSON{Kind: "journey", Node: "node-a", Flow: flow, Hops: hops, Verdict: "delivered", Summary: "ok",
			SrcPod: "shop/api-1", DstPod: "shop/db-0"}),
		jline(t, JourneyJSON{Kind: "journey", Node: "node-b", Flow: flow, Hops: hops, Verdict: "dropped", Where: "FORWARD",
			Summary: "dropped by netfilter", SrcPod: "shop/api-1", DstPod: "kube-system/dns-0"}),
		jline(t, JourneyJSON{Kind: "journey", Node: "node-a", Flow: flow, Hops: hops, Verdict: "forwarded", Summary: "slow",
			Stall: &StallJSON{Hop: "flannel.1", DeltaNs: 30e6}}),
		jline(t, JourneyJSON{Kind: "journey", Node: "node-b", Flow: flow, Hops: hops, Verdict: "lost", Summary: "no end"}),
		jline(t, PathJSON{Kind: "path", Flow: flow, Nodes: []string{"node-a", "node-c"}, Verdict: "lost_underlay", Summary: "lost between",
			Legs: []JourneyJSON{{Kind: "journey", Node: "node-a", Hops: hops, SrcPod: "web/front-1"}}}),
		jline(t, OneWayJSON{Kind: "oneway", Node: "node-c", Flow: flow, SYNs: 3, Summary: "no answer", FirstTNs: 1_700_000_000_000_000_000}),
	}
}

func runLines(t *testing.T, l *Lines, in []string) string {
	t.Helper()
	var out bytes.Buffer
	l.Out = &out
	for _, s := range in {
		// Written in two pieces: a line cut across writes is joined.
		if _, err := l.Write([]byte(s[:len(s)/2])); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Write([]byte(s[len(s)/2:])); err != nil {
			t.Fatal(err)
		}
	}
	return out.String()
}

func TestFilterLines(t *testing.T) {
	in := filterFixture(t)
	for _, tc := range []struct {
		name string
		f    Filter
		want []int // indexes of the fixture's lines kept
	}{
		{"none", Filter{}, []int{0, 1, 2, 3, 4, 5}},
		{"dropped", Filter{Verdicts: []string{"dropped"}}, []int{1}},
		{"dropped or lost", Filter{Verdicts: []string{"dropped", "lost"}}, []int{1, 3}},
		{"stall", Filter{Verdicts: []string{"stall"}}, []int{2}},
		{"oneway", Filter{Verdicts: []string{"oneway"}}, []int{5}},
		{"failed", Filter{Verdicts: []string{"failed"}}, []int{1, 2, 3, 4, 5}},
		{"path verdict", Filter{Verdicts: []string{"lost_underlay"}}, []int{4}},
		{"node", Filter{Nodes: []string{"node-b"}}, []int{1, 3}},
		{"a path's node", Filter{Nodes: []string{"node-c"}}, []int{4, 5}},
		{"namespace", Filter{Namespaces: []string{"kube-system"}}, []int{1}},
		{"namespace of a leg", Filter{Namespaces: []string{"web"}}, []int{4}},
		{"pod", Filter{Pods: []string{"shop/api-1"}}, []int{0, 1}},
		{"all must match", Filter{Namespaces: []string{"shop"}, Verdicts: []string{"delivered"}}, []int{0}},
		{"nothing", Filter{Nodes: []string{"node-z"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &Lines{Filter: tc.f}
			got := runLines(t, l, in)
			var want string
			for _, i := range tc.want {
				want += in[i]
			}
			if got != want {
				t.Errorf("kept:\n%s\nwant:\n%s", got, want)
			}
			if l.Seen != len(in) || l.Kept != len(tc.want) || l.Unparsed != 0 {
				t.Errorf("seen %d kept %d unparsed %d, want %d %d 0", l.Seen, l.Kept, l.Unparsed, len(in), len(tc.want))
			}
		})
	}
}

func TestFilterCompact(t *testing.T) {
	in := filterFixture(t)
	l := &Lines{Format: FormatCompact}
	got := strings.Split(strings.TrimSuffix(runLines(t, l, in), "\n"), "\n")
	want := []string{
		"22:13:20.000 node-a TCP 10.244.1.23:46322 (shop/api-1) -> 10.244.2.57:8080 (shop/db-0) DELIVERED: ok",
		"22:13:20.000 node-b TCP 10.244.1.23:46322 (shop/api-1) -> 10.244.2.57:8080 (kube-system/dns-0) DROPPED at FORWARD: dropped by netfilter",
		"22:13:20.000 node-a TCP 10.244.1.23:46322 -> 10.244.2.57:8080 FORWARDED+STALL: slow",
		"22:13:20.000 node-b TCP 10.244.1.23:46322 -> 10.244.2.57:8080 LOST: no end",
		"22:13:20.000 node-a→node-c TCP 10.244.1.23:46322 (web/front-1) -> 10.244.2.57:8080 LOST_UNDERLAY: lost between",
		"22:13:20.000 node-c TCP 10.244.1.23:46322 -> 10.244.2.57:8080 ONE-WAY: no answer",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("compact:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Lines that are not JSON, or longer than the bound, are counted and left out; the
// lines after them still come through.
func TestFilterBadLines(t *testing.T) {
	in := filterFixture(t)
	long := `{"kind":"journey","summary":"` + strings.Repeat("x", maxFilterLine) + `"}` + "\n"
	l := &Lines{}
	got := runLines(t, l, []string{"not json\n", long, in[1]})
	if got != in[1] || l.Unparsed != 2 || l.Kept != 1 {
		t.Errorf("got %q unparsed %d kept %d, want the last line, 2, 1", got, l.Unparsed, l.Kept)
	}
}

func TestParseVerdicts(t *testing.T) {
	if v, err := ParseVerdicts([]string{"Dropped", " stall"}); err != nil || strings.Join(v, ",") != "dropped,stall" {
		t.Errorf("ParseVerdicts: %v %v", v, err)
	}
	if _, err := ParseVerdicts([]string{"drop"}); err == nil || !strings.Contains(err.Error(), "want one of") {
		t.Errorf("ParseVerdicts(drop): %v, want an error naming the verdicts", err)
	}
}

// Whatever an agent sends, Lines never panics, keeps only whole JSON lines of the
// input (JSON), prints compact lines without control characters, and reads lines
// back into text blocks (text).
func FuzzLines(f *testing.F) {
	for _, s := range filterFixture(f) {
		f.Add([]byte(s), uint8(0))
	}
	f.Add([]byte("{\"kind\":\"journey\",\"verdict\":\"dropped\",\"summary\":\"\\u001b[31mred\"}\n"), uint8(1))
	f.Add([]byte(`{"kind":"path","id":"1","legs":[{"kind":"journey","id":"1","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:2"},"verdict":"lost","hops":[{"kind":"pod","t_ns":1}]}],"verdict":"lost_underlay","next_addr":"10.0.0.3"}`+"\n"+
		`{"kind":"oneway","flow":{"proto":"tcp","src":"10.0.0.1:1","dst":"10.0.0.2:2"},"syns":2}`+"\n"), uint8(4))
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		var out bytes.Buffer
		l := &Lines{Out: &out, Format: Format(mode % 2)}
		if mode&2 != 0 {
			l.Filter.Verdicts = []string{"dropped", "stall"}
		}
		if mode&4 != 0 {
			l.Format = FormatText // reads the lines back (FromJSON, PathFromJSON, OneWayFromJSON): must not panic
		}
		l.Write(in)
		for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if line == "" {
				continue
			}
			if l.Format == FormatText {
				break
			}
			if l.Format == FormatJSON {
				if !json.Valid([]byte(line)) || !bytes.Contains(in, []byte(line)) {
					t.Fatalf("printed %q: not a JSON line of the input", line)
				}
				continue
			}
			for _, r := range line {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("compact line %q has a control character", line)
				}
			}
		}
		if l.Kept > l.Seen {
			t.Fatalf("kept %d of %d", l.Kept, l.Seen)
		}
	})
}
