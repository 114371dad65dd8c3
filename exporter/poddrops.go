package exporter

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pathtrace/pathtrace/decode"
)

// PodDrops counts drop events by the pod at either end of the dropped packet, an
// opt-in (agent --metrics-pod-names N): these labels grow with the pods, so the number
// of series is bounded. Once N series exist, drops of further pods are counted under
// pod="_other_" (namespace ""), and pathtrace_pod_drop_series_overflow_total says how
// many were. It counts the drop events the agent receives, which beyond followed flows
// are limited to --drop-rate per second per CPU (the rest are in
// pathtrace_events_lost_total{stage="ratelimit"}); pathtrace_drops_total counts them
// all, without names.
type PodDrops struct {
	mu       sync.Mutex
	max      int
	counts   map[podDropKey]uint64
	overflow uint64
}

type podDropKey struct{ namespace, pod, end, reason string }

// OtherPod is the pod label of drops beyond the series budget.
const OtherPod = "_other_"

var (
	descPodDrops = prometheus.NewDesc("pathtrace_pod_drops_total",
		"Drop events of packets from or to a pod (end=src or dst), by the kernel's drop reason; opt-in, at most --metrics-pod-names series, the rest under pod=\"_other_\"; limited by --drop-rate beyond followed flows.",
		[]string{"namespace", "pod", "end", "reason"}, nil)
	descPodDropOverflow = prometheus.NewDesc("pathtrace_pod_drop_series_overflow_total",
		"Pod drop events counted under pod=\"_other_\" because the series budget (--metrics-pod-names) was reached.", nil, nil)
)

// NewPodDrops returns a counter of at most max series (max > 0).
func NewPodDrops(max int) *PodDrops {
	return &PodDrops{max: max, counts: map[podDropKey]uint64{}}
}

// Add counts one dropped packet for each named pod end of it.
func (p *PodDrops) Add(names *decode.Names, reason string) {
	if p == nil || names == nil {
		return
	}
	if reason == "" {
		reason = "unknown"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range []struct {
		n   decode.EndpointName
		end string
	}{{names.Src, "src"}, {names.Dst, "dst"}} {
		if e.n.Kind != "pod" {
			continue
		}
		ns, pod, _ := strings.Cut(e.n.Name, "/")
		k := podDropKey{ns, pod, e.end, reason}
		if _, ok := p.counts[k]; !ok && len(p.counts) >= p.max {
			k = podDropKey{"", OtherPod, e.end, reason}
			p.overflow++
		}
		p.counts[k]++
	}
}

// Describe implements prometheus.Collector.
func (p *PodDrops) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPodDrops
	ch <- descPodDropOverflow
}

// Collect implements prometheus.Collector.
func (p *PodDrops) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, n := range p.counts {
		ch <- prometheus.MustNewConstMetric(descPodDrops, prometheus.CounterValue, float64(n), k.namespace, k.pod, k.end, k.reason)
	}
	ch <- prometheus.MustNewConstMetric(descPodDropOverflow, prometheus.CounterValue, float64(p.overflow))
}
