package diagnose_test

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	. "github.com/pathtrace/pathtrace/decode/diagnose"
	"github.com/pathtrace/pathtrace/exporter"
)

// The journeys pathtrace printed for each lab fault on 5.10, 6.1, 6.12 and 6.18
// (testdata/journeys, made by scripts/record-faults.sh), diagnosed against the node
// state each fault leaves (the lab's, changed as scripts/lab.sh changes it): each
// fault's failing packets get exactly its cause, a healthy flow gets none, and no
// packet gets another fault's cause.

// A case's packets may also be: lost with no drop seen (unknown), the teardown of a
// connection (none), and for rpfilter and underlay on node-a a one-way report with
// the cause unknown beyond the node.
func TestLabFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/journeys/*/*.jsonl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		kernel := filepath.Base(filepath.Dir(file))
		base := strings.TrimSuffix(filepath.Base(file), ".jsonl")
		i := strings.LastIndex(base, "-node-")
		fault, node := base[:i], base[i+1:]
		want, ok := WantCause[fault]
		if !ok {
			t.Errorf("%s: no expectation for case %s", file, fault)
			continue
		}
		t.Run(kernel+"/"+base, func(t *testing.T) {
			d := New(Config{Facts: FaultFacts(fault, node), Ifaces: LabIfaces})
			js, ows := readFixture(t, file)
			d.Diagnose(js)
			got := 0
			for _, j := range js {
				g := j.Diagnosis
				what := j.Verdict.String() + " " + j.Summary()
				switch {
				case g == nil && (j.Verdict == decode.Delivered || j.Verdict == decode.Forwarded) && j.Stall == nil:
				case g == nil:
					if j.Verdict == decode.Dropped && j.Drop != nil && !SocketTeardown(j, j.Drop.Reason, decode.SiteFunc(j.Drop.Location)) && want != "" {
						t.Errorf("%s: no diagnosis", what)
					}
				case want == "":
					if j.Stall != nil && g.Cause == decode.CauseQdisc {
						t.Errorf("healthy %s: a stall with idle queues blamed on a qdisc:\n%s", what, Dump(g))
					} else if j.Stall == nil {
						t.Errorf("healthy %s: diagnosis:\n%s", what, Dump(g))
					}
				case g.Cause == want:
					got++
				case g.Cause == decode.CauseUnknown && (j.Verdict == decode.Lost || j.Verdict == decode.Incomplete):
				default:
					t.Errorf("%s: cause %s, want %s:\n%s", what, g.Cause, want, Dump(g))
				}
			}
			for _, o := range ows {
				g := d.OneWay(o)
				switch {
				case g.Cause == want:
					got++
				case g.Cause == decode.CauseUnknown && (fault == "rpfilter" || fault == "underlay"):
					got++
				default:
					t.Errorf("one-way %s: cause %s, want %s:\n%s", o.Summary(), g.Cause, want, Dump(g))
				}
			}
			failing := len(ows)
			for _, j := range js {
				if j.Diagnosis != nil {
					failing++
				}
			}
			if want != "" && got == 0 && failing > 0 {
				t.Errorf("no packet of the case got cause %s", want)
			}
		})
	}
}

func readFixture(t *testing.T, file string) ([]*decode.Journey, []*decode.OneWay) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var js []*decode.Journey
	var ows []*decode.OneWay
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var head struct{ Kind string }
		if err := json.Unmarshal(sc.Bytes(), &head); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch head.Kind {
		case "journey":
			var x exporter.JourneyJSON
			if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
				t.Fatal(err)
			}
			j, err := exporter.FromJSON(&x)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			js = append(js, j)
		case "oneway":
			var x exporter.OneWayJSON
			if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
				t.Fatal(err)
			}
			src, _ := netip.ParseAddrPort(x.Flow.Src)
			dst, _ := netip.ParseAddrPort(x.Flow.Dst)
			fl := decode.Flow{Proto: decode.ProtoTCP, Src: src, Dst: dst}
			ows = append(ows, &decode.OneWay{Node: x.Node, Flow: fl, SYNs: x.SYNs, LeftVia: x.LeftVia, Expect: x.Expected, Wait: time.Duration(x.WaitNs)})
		}
	}
	return js, ows
}
