package exporter_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

// pathviewLines are the follow JSON lines package pathview's tests draw, made here
// as follow makes them (events through the assembler, ToJSON, PathToJSON, the JSON
// writer), so that a change to the JSON form shows up as a diff of
// exporter/pathview/testdata/follow.jsonl. PATHVIEW_UPDATE=1 rewrites the file.
func pathviewLines(t *testing.T) []byte {
	cfg := nodeA(t)
	clock := exporter.Clock{OffsetNs: 1_764_150_000_000_000_000}
	js := assemble(t, cfg, append(synThroughDNAT(1_000_000), dnsDropped(50_000_000, 0x77)...)...)
	if len(js) != 2 || js[1].Drop == nil || js[0].Stall == nil {
		t.Fatalf("fixture journeys: %d", len(js))
	}
	// What follow adds after the assembler: the rule that dropped it (the explainer)
	// and the diagnosis.
	js[1].Drop.Rule = &decode.RuleMatch{Candidates: 1, Rule: &decode.Rule{Family: "inet", Table: "filter", Chain: "forward",
		Hook: "FORWARD", Handle: 7, Position: 3, Verdict: "drop", HasCounter: true, Packets: 1,
		Text: `ip daddr 10.96.0.10 udp dport 53 counter drop`, Backend: "nftables"}}
	js[1].Diagnosis = &decode.Diagnosis{Cause: decode.CausePolicy, Segment: "netfilter",
		Summary:  "an nftables rule in inet filter forward dropped it",
		Evidence: []decode.Evidence{{Name: "rule", Value: "inet filter forward handle 7: ip daddr 10.96.0.10 udp dport 53 counter drop"}},
		Fix:      "nft delete rule inet filter forward handle 7"}
	js[1].Names = &decode.Names{Src: decode.EndpointName{Kind: "pod", Name: "default/<script>alert(1)</script>"},
		Dst: decode.EndpointName{Kind: "service", Name: "kube-system/kube-dns"}}
	var buf bytes.Buffer
	w := exporter.NewJSON(&buf, clock)
	for _, j := range js {
		if err := w.Write(j); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WritePath(crossNodePath(t, false)); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePath(crossNodePath(t, true)); err != nil {
		t.Fatal(err)
	}
	f := decode.Flow{Proto: decode.ProtoTCP, Src: client, Dst: backend}
	err := w.WriteOneWay(&decode.OneWay{Node: "node-a", Flow: f, SYNs: 3, LeftVia: "eth0 egress", Expect: "eth0 ingress",
		FirstNs: 1_000_000, LastNs: 3_000_000_000, Wait: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPathviewFixtures(t *testing.T) {
	got := pathviewLines(t)
	file := filepath.Join("pathview", "testdata", "follow.jsonl")
	if os.Getenv("PATHVIEW_UPDATE") != "" {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v: run PATHVIEW_UPDATE=1 go test -run TestPathviewFixtures ./exporter/", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("follow's JSON lines differ from %s (PATHVIEW_UPDATE=1 rewrites it, then check pathview's tests):\n%s", file, got)
	}
}

// With --html, follow's producers write JSON lines and Lines prints the text blocks
// from them: the same blocks as the text writer's, for journeys (NAT, stall, drop with
// its rule and diagnosis), paths (joined, lost on the underlay) and one-way reports.
func TestLinesFormatText(t *testing.T) {
	cfg := nodeA(t)
	js := assemble(t, cfg, append(synThroughDNAT(1_000_000), dnsDropped(50_000_000, 0x77)...)...)
	js[1].Diagnosis = &decode.Diagnosis{Cause: decode.CausePolicy, Summary: "dropped by a rule", Fix: "remove it",
		Evidence: []decode.Evidence{{Name: "rule", Value: "x"}}, Missing: []string{"conntrack"}}
	paths := []*decode.Path{crossNodePath(t, false), crossNodePath(t, true)}
	o := &decode.OneWay{Node: "node-a", Flow: decode.Flow{Proto: decode.ProtoTCP, Src: client, Dst: backend}, SYNs: 3,
		LeftVia: "eth0 egress", Expect: "eth0 ingress", FirstNs: 1_000_000, LastNs: 3_000_000_000, Wait: 3 * time.Second}
	var want, lines bytes.Buffer
	tx, jw := exporter.NewText(&want), exporter.NewJSON(&lines, exporter.Clock{OffsetNs: 1_764_150_000_000_000_000})
	for _, j := range js {
		if err := tx.Write(j); err != nil {
			t.Fatal(err)
		}
		jw.Write(j)
	}
	for _, p := range paths {
		tx.WritePath(p)
		jw.WritePath(p)
	}
	tx.WriteOneWay(o)
	jw.WriteOneWay(o)
	var got bytes.Buffer
	l := &exporter.Lines{Format: exporter.FormatText, Out: &got}
	if _, err := l.Write(lines.Bytes()); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("text from JSON lines:\n%s\nwant\n%s", got.String(), want.String())
	}
	if l.Seen != 5 || l.Kept != 5 {
		t.Errorf("seen %d kept %d", l.Seen, l.Kept)
	}
}
