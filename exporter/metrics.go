package exporter

import (
	"math"
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/tracer"
)

// MetricsSource is what the metrics are read from at every scrape.
type MetricsSource interface {
	// Counters are the kernel's aggregates.
	Counters() (tracer.Counters, error)
	// Lost counts events lost by stage: "ringbuf", "ratelimit", "map", "queue".
	Lost() map[string]uint64
	// Flagged counts flows flagged by trigger: "drop", "stall", "lost", "retransmit".
	Flagged() map[string]uint64
}

// CaptureSource is a MetricsSource that also writes flagged flows to pcapng files
// (agent --pcap-dir); ok is false while it does not.
type CaptureSource interface {
	CaptureStats() (s RecorderStats, ok bool)
}

// FollowSource is a MetricsSource that also serves followers (the agent's API).
type FollowSource interface {
	FollowerStats() FollowerStats
}

// FollowerStats count what the follow API did.
type FollowerStats struct {
	Active  int               // followers now
	Follows uint64            // follows served
	Evicted uint64            // followers ended for not reading
	Refused map[string]uint64 // connections refused, by reason
}

// BuildInfo labels pathtrace_build_info.
type BuildInfo struct {
	Version, Kernel, AttachMode string
}

// LatencyBucketsShown is how many of the kernel's latency buckets are exposed: up to
// 2^(22+10) ns, about 4.3 s; longer latencies land in +Inf.
const LatencyBucketsShown = 23

var (
	descPackets = prometheus.NewDesc("pathtrace_packets_total",
		"Packets seen at the traced interfaces, by hop class and direction.", []string{"hop", "direction"}, nil)
	descDrops = prometheus.NewDesc("pathtrace_drops_total",
		"Packets the kernel dropped, by the kernel's drop reason, the hop class where it happened and direction (ingress: the packet came in on an interface; egress: it was made on the node).",
		[]string{"reason", "hop", "direction"}, nil)
	descDropBytes = prometheus.NewDesc("pathtrace_drop_bytes_total",
		"Bytes of the packets the kernel dropped, as pathtrace_drops_total.", []string{"reason", "hop", "direction"}, nil)
	descLatency = prometheus.NewDesc("pathtrace_hop_latency_seconds",
		"Time a sampled packet took from one hop of the node to the next, by hop classes.", []string{"from_hop", "to_hop"}, nil)
	descLost = prometheus.NewDesc("pathtrace_events_lost_total",
		"Events lost on the way to user space, by stage: ringbuf (kernel ring buffer full), ratelimit (drop events over the per-CPU budget; the drops are still counted), map (a kernel counter map full), queue (user-space queue full).",
		[]string{"stage"}, nil)
	descFlagged = prometheus.NewDesc("pathtrace_flagged_flows_total",
		"Flows flagged, by what flagged them.", []string{"trigger"}, nil)
	descCapFiles = prometheus.NewDesc("pathtrace_capture_files_total",
		"pcapng files written for flagged flows (agent --pcap-dir).", nil, nil)
	descCapDeleted = prometheus.NewDesc("pathtrace_capture_files_deleted_total",
		"Capture files deleted, oldest first, to stay within the file count and byte limits.", nil, nil)
	descCapSkipped = prometheus.NewDesc("pathtrace_capture_skipped_total",
		"Captures refused or cut short by a limit (max-dir-bytes-page: a capture kept without its page).", []string{"limit"}, nil)
	descCapErrors = prometheus.NewDesc("pathtrace_capture_write_errors_total",
		"Captures ended by an error creating or writing their file (a full disk).", nil, nil)
	descCapEvicted = prometheus.NewDesc("pathtrace_capture_flows_evicted_total",
		"Flows whose packet history was dropped to stay within the history memory bound.", nil, nil)
	descCapHistory = prometheus.NewDesc("pathtrace_capture_history_bytes",
		"Memory the flows' packet histories take.", nil, nil)
	descCapDir = prometheus.NewDesc("pathtrace_capture_dir_bytes",
		"Bytes of the agent's capture files in --pcap-dir.", nil, nil)
	descFollowers = prometheus.NewDesc("pathtrace_followers",
		"Followers served now through the agent's API.", nil, nil)
	descFollows = prometheus.NewDesc("pathtrace_follows_total",
		"Follows the agent's API served.", nil, nil)
	descFollowEvicted = prometheus.NewDesc("pathtrace_follows_evicted_total",
		"Followers the agent ended because they took nothing for --follower-write-timeout.", nil, nil)
	descFollowRefused = prometheus.NewDesc("pathtrace_follows_refused_total",
		"Connections to the agent's API refused, by reason: auth (TLS handshake, certificate, peer credentials), request (too long, malformed, out of range), busy (--max-followers), client (the identity's follows or selectors), rate (--follow-rate), slots (the kernel's selector slots), source (the tracer).",
		[]string{"reason"}, nil)
	descUp = prometheus.NewDesc("pathtrace_counters_up",
		"1 if the kernel counters could be read at this scrape.", nil, nil)
)

// Metrics exposes the agent's counters in Prometheus form. Every label has a bounded
// set of values: hop classes, directions, the kernel's drop reasons, stages, triggers.
// No address, port, pod or interface name is a label, so the number of series does not
// grow with pods or flows.
type Metrics struct {
	src MetricsSource
	reg *prometheus.Registry
}

// NewMetrics registers the collector and the build info.
func NewMetrics(src MetricsSource, info BuildInfo) *Metrics {
	m := &Metrics{src: src, reg: prometheus.NewRegistry()}
	m.reg.MustRegister(m)
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pathtrace_build_info", Help: "Always 1: the version, the kernel and the tc attach mode.",
		ConstLabels: prometheus.Labels{"version": info.Version, "kernel": info.Kernel, "attach_mode": info.AttachMode},
	})
	bi.Set(1)
	m.reg.MustRegister(bi)
	return m
}

// Handler serves /metrics, in OpenMetrics when the scraper asks for it.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, ErrorHandling: promhttp.ContinueOnError})
}

// Registry is the registry the metrics live in (for tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descDrops, descDropBytes, descLatency, descLost, descFlagged, descUp,
		descCapFiles, descCapDeleted, descCapSkipped, descCapErrors, descCapEvicted, descCapHistory, descCapDir,
		descFollowers, descFollows, descFollowEvicted, descFollowRefused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one read of the kernel's maps per scrape.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	c, err := m.src.Counters()
	up := 1.0
	if err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up)
	if err == nil {
		for _, k := range sortedKeys(c.Packets, func(a, b tracer.PacketKey) bool { return a.Hop+a.Dir < b.Hop+b.Dir }) {
			ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(c.Packets[k].Packets), k.Hop, k.Dir)
		}
		for _, k := range sortedKeys(c.Drops, func(a, b tracer.DropKey) bool { return a.Reason+a.Hop+a.Dir < b.Reason+b.Hop+b.Dir }) {
			v := c.Drops[k]
			ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(v.Packets), k.Reason, k.Hop, k.Dir)
			ch <- prometheus.MustNewConstMetric(descDropBytes, prometheus.CounterValue, float64(v.Bytes), k.Reason, k.Hop, k.Dir)
		}
		for _, k := range sortedKeys(c.Latency, func(a, b tracer.LatencyKey) bool { return a.From+a.To < b.From+b.To }) {
			l := c.Latency[k]
			buckets := make(map[float64]uint64, LatencyBucketsShown)
			var cum, total uint64
			for b := 0; b < tracer.LatencyBuckets; b++ {
				total += l.Buckets[b]
			}
			for b := 0; b < LatencyBucketsShown; b++ {
				cum += l.Buckets[b]
				buckets[math.Ldexp(1, b+10)/1e9] = cum
			}
			h := prometheus.MustNewConstHistogram(descLatency, total, float64(l.SumNs)/1e9, buckets, k.From, k.To)
			if ex := l.Example; ex != nil {
				// The flow of the slowest recent sample: what to `pathtrace follow`.
				e := prometheus.Exemplar{Value: float64(ex.Ns) / 1e9, Labels: prometheus.Labels{"flow": FlowID(ex.Flow)}}
				if em, err := prometheus.NewMetricWithExemplars(h, e); err == nil {
					h = em
				}
			}
			ch <- h
		}
	}
	for stage, n := range m.src.Lost() {
		ch <- prometheus.MustNewConstMetric(descLost, prometheus.CounterValue, float64(n), stage)
	}
	for trigger, n := range m.src.Flagged() {
		ch <- prometheus.MustNewConstMetric(descFlagged, prometheus.CounterValue, float64(n), trigger)
	}
	if fs, ok := m.src.(FollowSource); ok {
		s := fs.FollowerStats()
		ch <- prometheus.MustNewConstMetric(descFollowers, prometheus.GaugeValue, float64(s.Active))
		ch <- prometheus.MustNewConstMetric(descFollows, prometheus.CounterValue, float64(s.Follows))
		ch <- prometheus.MustNewConstMetric(descFollowEvicted, prometheus.CounterValue, float64(s.Evicted))
		for reason, n := range s.Refused {
			ch <- prometheus.MustNewConstMetric(descFollowRefused, prometheus.CounterValue, float64(n), reason)
		}
	}
	if cs, ok := m.src.(CaptureSource); ok {
		if s, ok := cs.CaptureStats(); ok {
			counter := func(d *prometheus.Desc, v uint64, l ...string) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
			}
			counter(descCapFiles, s.FilesWritten)
			counter(descCapDeleted, s.FilesDeleted)
			for _, l := range []string{LimitOpenFiles, LimitFiles, LimitDirBytes, LimitFileBytes, LimitPageBytes} {
				counter(descCapSkipped, s.Skipped[l], l)
			}
			counter(descCapErrors, s.WriteErrors)
			counter(descCapEvicted, s.FlowsEvicted)
			ch <- prometheus.MustNewConstMetric(descCapHistory, prometheus.GaugeValue, float64(s.HistoryBytes))
			ch <- prometheus.MustNewConstMetric(descCapDir, prometheus.GaugeValue, float64(s.DirBytes))
		}
	}
}

// FlowID names a flow for an exemplar: "tcp 10.244.1.23:46322>10.244.2.57:8080", which
// `pathtrace follow 10.244.1.23:46322` takes apart.
func FlowID(f decode.Flow) string {
	return decode.ProtoName(f.Proto) + " " + f.Endpoint(f.Src) + ">" + f.Endpoint(f.Dst)
}

func sortedKeys[K comparable, V any](m map[K]V, less func(a, b K) bool) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return less(keys[i], keys[j]) })
	return keys
}
