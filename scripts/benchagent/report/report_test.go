package report

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/scripts/benchscale/stat"
)

// The fixture: a work directory as bench.sh leaves it after BENCH_PAIRS=2
// BENCH_SAMPLES="0 1" BENCH_CAPTURE_RATES="5000 10000 0", with figures chosen so that
// every result below is worked out by hand.

func tcpJSON(bps float64) string {
	return fmt.Sprintf(`{"start": {"version": "iperf 3.12"},
  "end": {"sum_sent": {"bytes": 1000, "bits_per_second": %g},
    "sum_received": {"seconds": 2.00004, "bits_per_second": %g}}}`, bps*1.01, bps)
}

func udpJSON(sent, packets, lost, seconds float64) string {
	return fmt.Sprintf(`{"end": {"sum_sent": {"packets": %g, "seconds": %g},
  "sum_received": {"packets": %g, "lost_packets": %g, "seconds": %g}}}`, sent, seconds, packets, lost, seconds)
}

// prog is one program's line in a snapshot.
type prog struct {
	id         int
	name       string
	time, runs float64
}

// snapshots writes the snapshots of one pair's accounting runs: the programs' counters
// start at some value and grow by steps[i] from snapshot i to i+1.
func snapshots(files map[string]string, names []string, start []prog, steps ...map[int][2]float64) {
	cur := slices.Clone(start)
	for i, name := range names {
		if i > 0 {
			for j := range cur {
				d := steps[i-1][cur[j].id]
				cur[j].time += d[0]
				cur[j].runs += d[1]
			}
		}
		var b strings.Builder
		for _, p := range cur {
			fmt.Fprintf(&b, "%d %s %.0f %.0f\n", p.id, p.name, p.time, p.runs)
		}
		files[name] = b.String()
	}
}

func metrics(ringbuf, queue, ratelimit string) string {
	return `# HELP pathtrace_events_lost_total Events lost on the way to user space.
# TYPE pathtrace_events_lost_total counter
pathtrace_events_lost_total{stage="map"} 0
pathtrace_events_lost_total{stage="queue"} ` + queue + `
pathtrace_events_lost_total{stage="ratelimit"} ` + ratelimit + `
pathtrace_events_lost_total{stage="ringbuf"} ` + ringbuf + `
pathtrace_up 1
`
}

func fixture() map[string]string {
	files := map[string]string{
		// Pair 1, without first; pair 2, with first. TCP ratios 0.96 and 1; UDP 0.95 and 0.9.
		"runs": "off 1 off1-tcp.json off1-udp.json\n" +
			"on 1 on1-tcp.json on1-udp.json 5000000000 6000000000 40960,51200 61440,71680\n" +
			"on 2 on2-tcp.json on2-udp.json 1000000000 3000000000 30720,30720 40960,40960\n" +
			"\n" +
			"off 2 off2-tcp.json off2-udp.json\n",
		"off1-tcp.json":  tcpJSON(10e9),
		"on1-tcp.json":   tcpJSON(9.6e9),
		"off2-tcp.json":  tcpJSON(8e9),
		"on2-tcp.json":   tcpJSON(8e9),
		"off1-udp.json":  udpJSON(210000, 200000, 0, 2),     // 100 kpkt/s
		"on1-udp.json":   udpJSON(200000, 190000, 0, 2),     // 95
		"off2-udp.json":  udpJSON(100000, 100000, 10000, 2), // 45
		"on2-udp.json":   udpJSON(90000, 81000, 0, 2),       // 40.5
		"acct1-tcp.json": tcpJSON(9e9),
		"acct1-udp.json": udpJSON(100, 100, 0, 2),
		"acct2-tcp.json": tcpJSON(9e9),
		"acct2-udp.json": udpJSON(200, 200, 0, 2),
		"bpf.list": "tcp:1 on1-bpf0 on1-bpf1 acct1-tcp.json\n" +
			"udp:1 on1-bpf1 on1-bpf2 acct1-udp.json\n" +
			"tcp:2 on2-bpf0 on2-bpf1 acct2-tcp.json\n" +
			"udp:2 on2-bpf1 on2-bpf2 acct2-udp.json\n",
		"sampling.list": "0 smp0-1-0 smp0-1-1\n1 smp1-1-0 smp1-1-1\n0 smp0-2-0 smp0-2-1\n1 smp1-2-0 smp1-2-1\n",
		"capture.list": "5000 cap5000.json cap5000-a0.prom,cap5000-b0.prom cap5000-a1.prom,cap5000-b1.prom\n" +
			"10000 cap10000.json cap10000-a0.prom,cap10000-b0.prom cap10000-a1.prom,cap10000-b1.prom\n" +
			"0 cap0.json cap0-a0.prom,cap0-b0.prom cap0-a1.prom,cap0-b1.prom\n",
		"cap5000.json":    udpJSON(10000, 10000, 0, 2),       // 5000 sent/s, 5000 received/s
		"cap10000.json":   udpJSON(20000, 19000, 1000, 2),    // 10000, 9000
		"cap0.json":       udpJSON(300000, 250000, 10000, 2), // 150000, 120000
		"cap5000-a0.prom": metrics("0", "0", "0"), "cap5000-a1.prom": metrics("0", "0", "0"),
		"cap5000-b0.prom": metrics("0", "0", "0"), "cap5000-b1.prom": metrics("0", "0", "0"),
		// 7 + 3 lost; the rate limiter's 100 are not events lost to capture.
		"cap10000-a0.prom": metrics("0", "0", "0"), "cap10000-a1.prom": metrics("7", "3", "100"),
		"cap10000-b0.prom": metrics("0", "0", "0"), "cap10000-b1.prom": metrics("0", "0", "0"),
		// 5 more, in the exposition's float notation.
		"cap0-a0.prom": metrics("7", "3", "100"), "cap0-a1.prom": metrics("1.2e+01", "3", "100"),
		"cap0-b0.prom": metrics("0", "0", "0"), "cap0-b1.prom": metrics("0", "0", "0"),
		"stats-cost.raw": "0 20\n1 41\n0 22\n1 40\n0 21\n1 45\n",
	}
	// Pair 1's agents: tc_ingress twice (one per agent), tc_egress, a tc_ingress_l3 that
	// never runs, kfree_skb_btf; two empty programs (the floor).
	snapshots(files, []string{"on1-bpf0", "on1-bpf1", "on1-bpf2"},
		[]prog{{10, "tc_ingress", 1e6, 5000}, {11, "tc_ingress", 2e6, 7000}, {12, "tc_egress", 3e6, 9000},
			{13, "tc_ingress_l3", 0, 0}, {14, "kfree_skb_btf", 500, 5}, {20, "empty", 0, 0}, {21, "empty", 100, 1}},
		map[int][2]float64{10: {1000, 20}, 11: {1000, 20}, 12: {3000, 20}, 20: {200, 10}, 21: {200, 10}},
		map[int][2]float64{10: {3000, 50}, 11: {3000, 50}, 12: {8000, 100}, 14: {500, 5}, 20: {1000, 40}, 21: {200, 10}})
	// Pair 2's agents, new ids; id 199 appears only in the last snapshot and is not counted.
	snapshots(files, []string{"on2-bpf0", "on2-bpf1", "on2-bpf2"},
		[]prog{{110, "tc_ingress", 0, 0}, {111, "tc_ingress", 0, 0}, {112, "tc_egress", 0, 0},
			{113, "tc_ingress_l3", 0, 0}, {114, "kfree_skb_btf", 0, 0}, {120, "empty", 0, 0}, {121, "empty", 0, 0}},
		map[int][2]float64{110: {1400, 20}, 112: {1800, 20}, 120: {400, 20}},
		map[int][2]float64{110: {4000, 50}, 111: {4000, 50}, 112: {12000, 100}, 120: {1500, 50}})
	files["on2-bpf2"] += "199 tc_ingress 999999999 1\n"
	// Sampling: tc_ingress 40, 60, 50, 80 ns per run; tc_egress 50, 70, (not run), 90.
	for _, s := range []struct {
		name       string
		in, eg     float64
		egressRuns float64
	}{{"smp0-1", 400, 500, 10}, {"smp1-1", 600, 700, 10}, {"smp0-2", 500, 0, 0}, {"smp1-2", 800, 900, 10}} {
		snapshots(files, []string{s.name + "-0", s.name + "-1"},
			[]prog{{1, "tc_ingress", 50, 1}, {2, "tc_egress", 70, 1}},
			map[int][2]float64{1: {s.in, 10}, 2: {s.eg, s.egressRuns}})
	}
	return files
}

func config(dir string) Config {
	return Config{Work: dir, Pairs: 2, Seconds: 2,
		TCProgs: []string{"tc_ingress", "tc_egress", "tc_ingress_l3", "tc_egress_l3"}, Samples: []string{"0", "1"}}
}

func write(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func nearAll(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !near(a[i], b[i]) {
			return false
		}
	}
	return true
}

func figure(t *testing.T, figs []stat.Figure, name string) stat.Figure {
	t.Helper()
	for _, f := range figs {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no figure %q", name)
	return stat.Figure{}
}

func TestRunsPairsAndAgents(t *testing.T) {
	r, err := Read(config(write(t, fixture())))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want []float64
	}{
		{"TCP off", r.TCPOff, []float64{10e9, 8e9}},
		{"TCP on", r.TCPOn, []float64{9.6e9, 8e9}},
		{"UDP off", r.UDPOff, []float64{100000, 45000}},
		{"UDP on", r.UDPOn, []float64{95000, 40500}},
		// pairs in pair order, whatever the lines' order
		{"TCP ratios", r.TCPRatios, []float64{0.96, 1}},
		{"UDP ratios", r.UDPRatios, []float64{0.95, 0.9}},
		// 1 s of CPU over the UDP test's 2 s; 2 s over 2 s
		{"CPU %", r.CPUPct, []float64{50, 100}},
		{"CPU per 100k", r.CPUPer100k, []float64{50 * 1e5 / 95000, 100 * 1e5 / 40500}},
		{"VmRSS", r.RSS, []float64{50, 30}},
		{"VmHWM", r.HWM, []float64{70, 40}},
	} {
		if !nearAll(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if r.Agents != 2 {
		t.Errorf("agents %d, want 2", r.Agents)
	}
	figs := r.Figures()
	tcp := figure(t, figs, "TCP with/without agents")
	if v := tcp.Value(); !near(v, 0.98) {
		t.Errorf("TCP pair ratio %v, want the median 0.98", v)
	}
	// mean 0.98; s.d. of 0.96 and 1 is 0.02·√2, over √2: s.e. 0.02; medians 8.8/9 Gbit/s
	if want := "their mean 0.980, s.e. 0.020; ratio of the medians 0.978"; !strings.Contains(tcp.Note, want) {
		t.Errorf("TCP note %q lacks %q", tcp.Note, want)
	}
	udp := figure(t, figs, "UDP with/without agents")
	if v := udp.Value(); !near(v, 0.925) {
		t.Errorf("UDP pair ratio %v, want 0.925", v)
	}
	if want := "their mean 0.925, s.e. 0.025; ratio of the medians 0.934"; !strings.Contains(udp.Note, want) {
		t.Errorf("UDP note %q lacks %q", udp.Note, want)
	}
}

func TestBPFFromSnapshots(t *testing.T) {
	r, err := Read(config(write(t, fixture())))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range r.Progs {
		names = append(names, p.Name)
	}
	// the tc programs first, in -tc-progs order, then the rest by name
	if want := []string{"tc_ingress", "tc_egress", "kfree_skb_btf"}; !slices.Equal(names, want) {
		t.Fatalf("programs %v, want %v", names, want)
	}
	if want := []string{"tc_ingress_l3"}; !slices.Equal(r.NotRun, want) {
		t.Errorf("never run %v, want %v", r.NotRun, want)
	}
	in, eg, kf := r.Progs[0], r.Progs[1], r.Progs[2]
	// tc_ingress: (1000+1000)/40, (3000+3000)/100, 1400/20 (one agent's copy idle),
	// 8000/100; floor 400/20, 1200/50, 400/20, 1500/50.
	for _, c := range []struct {
		what      string
		got, want []float64
	}{
		{"tc_ingress ns per run", in.NsPerRun, []float64{50, 60, 70, 80}},
		{"tc_ingress above the floor", in.AboveFloor, []float64{30, 36, 50, 50}},
		{"tc_egress ns per run", eg.NsPerRun, []float64{150, 80, 90, 120}},
		{"tc_egress above the floor", eg.AboveFloor, []float64{130, 56, 70, 90}},
		{"kfree_skb_btf ns per run (only where it ran)", kf.NsPerRun, []float64{100}},
		{"kfree_skb_btf above the floor (not a tc program)", kf.AboveFloor, nil},
		{"floor", r.Floor, []float64{20, 24, 20, 30}},
		// udp:1: (6000+8000+500)/100 sent; udp:2: (8000+12000)/200
		{"all programs per UDP packet", r.PerUDPPacket, []float64{145, 100}},
	} {
		if !nearAll(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	// tc_ingress over the UDP runs: 200 runs, 14000 ns, for 300 datagrams sent
	if in.Runs != 40+100+20+100 || !near(in.RunsPerPacket, 200.0/300) || !near(in.NsPerPacket, 14000.0/300) {
		t.Errorf("tc_ingress runs %v, per packet %v runs %v ns", in.Runs, in.RunsPerPacket, in.NsPerPacket)
	}
	figs := r.Figures()
	for _, c := range []struct {
		name  string
		value float64
		met   string
	}{
		{"BPF tc_ingress, ns per run", 65, "yes"},
		{"BPF tc_egress, ns per run", 105, "no"},
		{"BPF kfree_skb_btf, ns per run", 100, "-"},
		{"BPF floor: an empty tc program", 22, "-"},
		{"BPF all programs, per UDP packet sent", 122.5, "-"},
		{"stats accounting, per run of tc_ingress", 41 - 21, "-"},
	} {
		f := figure(t, figs, c.name)
		if v := f.Value(); !near(v, c.value) || f.Row()[5] != c.met {
			t.Errorf("%s: %v, met %q; want %v, %q", c.name, v, f.Row()[5], c.value, c.met)
		}
	}
	if n := figure(t, figs, "BPF tc_ingress, ns per run").Note; !strings.Contains(n, "above the floor 43.0 ns") ||
		!strings.Contains(n, "260 runs; per UDP packet sent 0.67 runs, 47 ns") {
		t.Errorf("tc_ingress note %q", n)
	}
}

func TestCaptureAndSampling(t *testing.T) {
	r, err := Read(config(write(t, fixture())))
	if err != nil {
		t.Fatal(err)
	}
	want := []CaptureRow{
		{Rate: 5000, Sent: 5000, Received: 5000, Lost: 0, Agents: 2},
		{Rate: 10000, Sent: 10000, Received: 9000, Lost: 10, Agents: 2},
		{Rate: 0, Sent: 150000, Received: 120000, Lost: 5, Agents: 2},
	}
	if !slices.Equal(r.Capture, want) {
		t.Errorf("capture %+v\nwant %+v", r.Capture, want)
	}
	if at, clean := r.CaptureLoss(); at != 10000 || clean != 5000 {
		t.Errorf("capture loses from %v pkt/s, clean up to %v; want 10000, 5000", at, clean)
	}
	c := figure(t, r.Figures(), "capture: events lost at full UDP rate")
	if c.Value() != 5 || c.Row()[5] != "no" || !strings.Contains(c.Note, "at 150000 pkt/s sent") {
		t.Errorf("capture figure %v, %q", c.Value(), c.Row())
	}

	if len(r.Sampling) != 2 {
		t.Fatalf("sampling rows %+v", r.Sampling)
	}
	for i, s := range []struct {
		sample  string
		in, out float64
	}{{"0", 45, 50}, {"1", 70, 80}} {
		got := r.Sampling[i]
		if got.Sample != s.sample || stat.Median(got.Ingress) != s.in || stat.Median(got.Egress) != s.out {
			t.Errorf("--sample %s: %+v, want medians %v and %v", s.sample, got, s.in, s.out)
		}
	}
}

func TestTargetsAndTable(t *testing.T) {
	var b strings.Builder
	missed, total, err := Run(config(write(t, fixture())), &b)
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	// 6 TCP and UDP, 3 programs, per packet, floor, stats, 2 CPU, 2 memory, capture
	if total != 17 {
		t.Errorf("%d figures, want 17:\n%s", total, out)
	}
	// missed: the UDP ratio 0.925, tc_egress 105 ns, VmHWM 70 MiB (the median of the runs,
	// 55, would pass: the largest is judged), 5 events lost at the full rate.
	if missed != 4 {
		t.Errorf("missed %d, want 4:\n%s", missed, out)
	}
	verdicts := tableRows(t, out, total)
	for name, met := range map[string]string{
		"TCP with/without agents":               "yes",
		"UDP with/without agents":               "no",
		"BPF tc_ingress, ns per run":            "yes",
		"BPF tc_egress, ns per run":             "no",
		"agent resident memory (VmRSS)":         "yes",
		"agent peak memory (VmHWM)":             "no",
		"capture: events lost at full UDP rate": "no",
	} {
		if verdicts[name] != met {
			t.Errorf("%s: met %q, want %q\n%s", name, verdicts[name], met, out)
		}
	}
	for _, want := range []string{
		"≥ 0.97 ", "≥ 0.95 ", "≤ 100 ns", "≤ 64.0 MiB", "≤ 0 events",
		"max 70.0 MiB", "max 50.0 MiB",
		"(loaded by the agents but never run: tc_ingress_l3)\n",
		"runs (2 pairs, odd ones without the agents first, even ones with them first; 2 s per iperf3 run):\n",
		"  TCP Gbit/s without: 10.00 8.00 | with: 9.60 8.00\n",
		"  UDP kpkt/s without: 100.0 45.0 | with: 95.0 40.5\n",
		"  agent CPU during UDP (% of a core): 50.000 100.000\n",
		"  agent VmRSS max per run (MiB): 50.0 30.0\n",
		"  agent VmHWM max per run (MiB): 70.0 40.0\n",
		"  offered pkt/s | sent pkt/s | received pkt/s | events lost (2 agents)\n",
		"           5000 |       5000 |           5000 | 0\n",
		"      unlimited |     150000 |         120000 | 5\n",
		"  capture starts to lose events at about 10000 pkt/s sent (5000 pkt/s without a loss)\n",
		"median of 2 runs; the floor: 22.0 ns):\n",
		"         0 |          45.0 |         50.0\n",
		"         1 |          70.0 |         80.0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not measured") {
		t.Errorf("a figure not measured:\n%s", out)
	}
}

// tableRows reads the n rows of the table back, split on two spaces: each figure's
// met column by its name.
func tableRows(t *testing.T, out string, n int) map[string]string {
	t.Helper()
	rows := map[string]string{}
	lines := strings.Split(out, "\n")
	if len(lines) < n+1 {
		t.Fatalf("%d lines, want a header and %d rows:\n%s", len(lines), n, out)
	}
	for _, l := range lines[1 : n+1] {
		var cells []string
		for _, c := range strings.Split(l, "  ") {
			if c = strings.TrimSpace(c); c != "" {
				cells = append(cells, c)
			}
		}
		if len(cells) < 6 {
			t.Fatalf("row %q: %d cells", l, len(cells))
		}
		rows[cells[0]] = cells[5]
	}
	return rows
}

func TestNotMeasured(t *testing.T) {
	files := fixture()
	// No rate 0 in the capture rates; no tc program ran; bpftool prog run gave nothing.
	files["capture.list"] = strings.Split(files["capture.list"], "\n")[0] + "\n"
	files["bpf.list"] = "tcp:1 on1-bpf0 on1-bpf0 acct1-tcp.json\n"
	files["stats-cost.raw"] = ""
	var b strings.Builder
	missed, total, err := Run(config(write(t, files)), &b)
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	met := tableRows(t, out, total)
	for _, name := range []string{"capture: events lost at full UDP rate", "BPF tc programs, ns per run",
		"BPF floor: an empty tc program", "BPF all programs, per UDP packet sent"} {
		if met[name] != "not measured" {
			t.Errorf("%s: met %q, want not measured:\n%s", name, met[name], out)
		}
	}
	if want := []string{"tc_ingress", "tc_egress", "tc_ingress_l3", "kfree_skb_btf"}; !strings.Contains(out,
		"(loaded by the agents but never run: "+strings.Join(want, " ")+")") {
		t.Errorf("never-run line lacks %v:\n%s", want, out)
	}
	if !strings.Contains(out, "  no event lost up to 5000 pkt/s\n") {
		t.Errorf("capture line wrong:\n%s", out)
	}
	if !strings.Contains(out, "stats accounting's own cost not measured") || strings.Contains(out, "stats accounting, per run") {
		t.Errorf("stats cost should be left out and said so:\n%s", out)
	}
	// UDP ratio, VmHWM, tc programs and capture (the two unmeasured count as missed);
	// the floor and per-packet figures are not measured either (no accounting run ran
	// anything), and count.
	if missed != 6 {
		t.Errorf("missed %d of %d, want 6:\n%s", missed, total, out)
	}
}

func TestBadFiles(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(map[string]string)
		want string // in the error, after the work directory
	}{
		{"runs missing", func(f map[string]string) { delete(f, "runs") }, "runs: no such file"},
		{"bpf.list missing", func(f map[string]string) { delete(f, "bpf.list") }, "bpf.list: no such file"},
		{"sampling.list missing", func(f map[string]string) { delete(f, "sampling.list") }, "sampling.list: no such file"},
		{"capture.list missing", func(f map[string]string) { delete(f, "capture.list") }, "capture.list: no such file"},
		{"stats-cost.raw missing", func(f map[string]string) { delete(f, "stats-cost.raw") }, "stats-cost.raw: no such file"},
		{"a snapshot missing", func(f map[string]string) { delete(f, "on2-bpf1") }, "on2-bpf1: no such file"},
		{"an iperf3 JSON missing", func(f map[string]string) { delete(f, "on2-udp.json") }, "on2-udp.json: no such file"},
		{"a scrape missing", func(f map[string]string) { delete(f, "cap0-b1.prom") }, "cap0-b1.prom: no such file"},
		{"runs: a word for a number", func(f map[string]string) {
			f["runs"] = strings.Replace(f["runs"], "3000000000", "3e9x", 1)
		}, `runs:3: CPU ns after "3e9x" is not a number`},
		{"runs: fields missing", func(f map[string]string) {
			f["runs"] = strings.Replace(f["runs"], " 40960,40960", "", 1)
		}, "runs:3: 7 fields"},
		{"runs: a pair missing", func(f map[string]string) {
			f["runs"] = strings.Replace(f["runs"], "off 2 off2-tcp.json off2-udp.json\n", "", 1)
		}, "runs: 1 runs without the agents and 2 with them, want 2 of each"},
		{"runs: a pair beyond -pairs", func(f map[string]string) { f["runs"] += "off 3 off2-tcp.json off2-udp.json\n" }, "runs:6: pair 3, but -pairs 2"},
		{"iperf3 JSON cut short", func(f map[string]string) { f["off1-udp.json"] = "{\"end\": {\n\"sum_sent\": {\"packets\": 1},\n" },
			"off1-udp.json:3: unexpected end of JSON input"},
		{"iperf3 JSON of a failed test", func(f map[string]string) { f["on1-tcp.json"] = `{"error": "unable to connect"}` },
			"on1-tcp.json: no .end.sum_received.seconds"},
		{"snapshot: a bad run count", func(f map[string]string) {
			f["on1-bpf1"] = strings.Replace(f["on1-bpf1"], "12 tc_egress 3003000 9020", "12 tc_egress 3003000 lots", 1)
		}, `on1-bpf1:3: run_cnt "lots" is not a number`},
		{"snapshot: counters going down", func(f map[string]string) { f["bpf.list"] += "tcp:2 on2-bpf2 on2-bpf0 acct2-tcp.json\n" },
			"bpf.list:5: program 110"},
		{"bpf.list: a bad phase", func(f map[string]string) { f["bpf.list"] += "both:1 on1-bpf0 on1-bpf1 acct1-tcp.json\n" },
			`bpf.list:5: phase "both:1"`},
		{"sampling.list: a setting not measured", func(f map[string]string) { f["sampling.list"] += "64 smp0-1-0 smp0-1-1\n" },
			`sampling.list:5: --sample 64 is not one of -samples "0 1"`},
		{"scrape without the lost counters", func(f map[string]string) { f["cap0-a1.prom"] = "pathtrace_up 1\n" },
			`cap0-a1.prom: no pathtrace_events_lost_total{stage="ringbuf"}`},
		{"capture.list: a negative rate", func(f map[string]string) {
			f["capture.list"] = strings.Replace(f["capture.list"], "5000 cap5000.json", "-5 cap5000.json", 1)
		}, `capture.list:1: rate "-5"`},
		{"stats-cost.raw: a third setting", func(f map[string]string) { f["stats-cost.raw"] += "2 50\n" },
			`stats-cost.raw:7: kernel.bpf_stats_enabled "2"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			files := fixture()
			c.edit(files)
			dir := write(t, files)
			var b strings.Builder
			_, _, err := Run(config(dir), &b)
			if err == nil {
				t.Fatalf("no error; printed:\n%s", b.String())
			}
			if !strings.Contains(err.Error(), dir+"/"+c.want) {
				t.Errorf("error %q\nlacks %q", err, dir+"/"+c.want)
			}
			if b.Len() != 0 {
				t.Errorf("printed a report despite the error:\n%s", b.String())
			}
		})
	}
}
