package exporter_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

// Pod drop series stay within their budget however many pods drop: the rest go to
// pod="_other_", and the overflow is counted.
func TestPodDropsBounded(t *testing.T) {
	p := exporter.NewPodDrops(10)
	reg := prometheus.NewRegistry()
	reg.MustRegister(p)
	for i := range 1000 {
		p.Add(&decode.Names{Src: decode.EndpointName{Kind: "pod", Name: fmt.Sprintf("prod/api-%d", i)},
			Dst: decode.EndpointName{Kind: "service", Name: "prod/db"}}, "NETFILTER_DROP")
	}
	p.Add(&decode.Names{Src: decode.EndpointName{Kind: "pod", Name: "prod/api-3"}}, "NETFILTER_DROP")
	p.Add(nil, "NETFILTER_DROP")
	p.Add(&decode.Names{Src: decode.EndpointName{Kind: "node", Name: "node-a"}}, "NO_SOCKET")
	if n := testutil.CollectAndCount(p, "pathtrace_pod_drops_total"); n != 11 {
		t.Errorf("%d series, want 10 pods and _other_", n)
	}
	want := `
# HELP pathtrace_pod_drop_series_overflow_total Pod drop events counted under pod="_other_" because the series budget (--metrics-pod-names) was reached.
# TYPE pathtrace_pod_drop_series_overflow_total counter
pathtrace_pod_drop_series_overflow_total 990
`
	if err := testutil.CollectAndCompare(p, strings.NewReader(want), "pathtrace_pod_drop_series_overflow_total"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		if mf.GetName() != "pathtrace_pod_drops_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			lines = append(lines, fmt.Sprintf("%s/%s %s %s %g", l["namespace"], l["pod"], l["end"], l["reason"], m.GetCounter().GetValue()))
		}
	}
	body := strings.Join(lines, "\n")
	for _, line := range []string{
		"prod/api-3 src NETFILTER_DROP 2",
		"/_other_ src NETFILTER_DROP 990",
	} {
		if !strings.Contains(body, line) {
			t.Errorf("missing %s in\n%s", line, body)
		}
	}
}
