package exporter_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

// A journey judged incomplete (the tracer lost events while it was in flight) and one
// cut because another packet with its ID started over say so in the text and in the
// JSON, and FromJSON reads both back as they were.
func TestIncompleteAndCutOutputs(t *testing.T) {
	cfg := nodeA(t)
	a := decode.NewAssembler(cfg)
	syn := synThroughDNAT(t0)[:2]         // veth and cni0 ingress, then its events are lost
	q1 := dnsDropped(t0+100*ms, 0x77)[:2] // a DNS query at veth and cni0 ingress,
	q2 := dnsDropped(t0+101*ms, 0x77)[:1] // the same query again, 1 ms later
	var cut []*decode.Journey
	for _, evs := range [][]decode.Event{syn, q1, q2} {
		for i := range evs {
			cut = append(cut, a.Add(&evs[i])...)
		}
	}
	a.EventsLost(2, t0+40_000)
	js := append(cut, a.Expire(t0+101*ms+uint64(cfg.Timeout))...)
	if len(js) != 3 {
		t.Fatalf("%d journeys, want the query cut, the SYN and the second query", len(js))
	}
	inc, dup := js[1], js[0]
	if inc.Verdict != decode.Incomplete || inc.EventsLost != 2 || dup.Cut != decode.CutCollision || dup.Verdict != decode.Unfinished {
		t.Fatalf("verdicts %v (%d lost), %v (cut %q)", inc.Verdict, inc.EventsLost, dup.Verdict, dup.Cut)
	}

	out := string(text(t, inc, dup))
	for _, s := range []string{
		"  incomplete: 2 events lost while it was in flight; last seen at cni0 ingress, no further hop or drop within the timeout\n",
		"  unfinished: another packet with the same ID started over at " + vethName + " ingress before this one's fate was known\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("text lacks %q:\n%s", s, out)
		}
	}
	lines := jsonLines(t, inc, dup)
	for _, c := range []struct {
		line int
		want string
	}{{0, `"verdict":"incomplete"`}, {0, `"events_lost":2`}, {1, `"verdict":"unfinished"`}, {1, `"cut":"collision"`}} {
		if !bytes.Contains(lines[c.line], []byte(c.want)) {
			t.Errorf("JSON lacks %s: %s", c.want, lines[c.line])
		}
	}
	for _, j := range []*decode.Journey{inc, dup} {
		x := exporter.ToJSON(j, clock)
		var back exporter.JourneyJSON
		b, _ := json.Marshal(x)
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		got, err := exporter.FromJSON(&back)
		if err != nil {
			t.Fatalf("FromJSON: %v", err)
		}
		if got.Verdict != j.Verdict || got.EventsLost != j.EventsLost || got.Cut != j.Cut || got.Summary() != j.Summary() {
			t.Errorf("read back: verdict %v, %d lost, cut %q, %q; want %v, %d, %q, %q",
				got.Verdict, got.EventsLost, got.Cut, got.Summary(), j.Verdict, j.EventsLost, j.Cut, j.Summary())
		}
		if again := exporter.ToJSON(got, exporter.Clock{}); !reflect.DeepEqual(again, x) {
			a, _ := json.Marshal(again)
			t.Errorf("round trip differs:\n got %s\nwant %s", a, b)
		}
	}
}
