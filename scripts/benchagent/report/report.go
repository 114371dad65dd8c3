package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pathtrace/pathtrace/scripts/benchscale/stat"
)

// The files' names in the work directory.
const (
	RunsFile     = "runs"
	BPFList      = "bpf.list"
	SamplingList = "sampling.list"
	CaptureList  = "capture.list"
	StatsCostRaw = "stats-cost.raw"
)

// The targets.
const (
	TCPRatioMin    = 0.97 // TCP throughput with the agents over without: the median of the pairs' ratios
	UDPRatioMin    = 0.95 // the same for the UDP packet rate received
	TCNsPerRunMax  = 100  // each tc program (Config.TCProgs): ns per run, median of the accounting runs
	RSSMiBMax      = 64   // an agent's VmRSS after the runs, the largest
	HWMMiBMax      = 64   // an agent's peak memory (VmHWM), the largest
	CaptureLostMax = 0    // events lost with --pcap-dir at the lab's full UDP rate (the rate 0 row)
)

// emptyProg is the empty tc program bench.sh attaches beside the agents' (the floor).
const emptyProg = "empty"

// Config is what the report reads and how bench.sh ran.
type Config struct {
	Work    string   // bench.sh's work directory
	Pairs   int      // off/on pairs; the runs file must hold as many of each
	Seconds int      // per iperf3 test (for the text)
	TCProgs []string // the tc programs held to TCNsPerRunMax, listed first
	Samples []string // the --sample settings measured, in the order the table lists them
}

// Report is everything computed from a work directory.
type Report struct {
	cfg Config

	TCPOff, TCPOn []float64 // bit/s received, per run, in the runs file's order
	UDPOff, UDPOn []float64 // UDP datagrams received per second, per run
	// The pairs' ratios with/without, in pair order: each pair's two runs are next to
	// each other in time, so the host's slow swings fall on both sides of a ratio.
	TCPRatios, UDPRatios []float64
	CPUPct               []float64 // the agents' CPU during each UDP test with them, % of one core
	CPUPer100k           []float64 // the same per 100k datagrams/s received
	RSS, HWM             []float64 // MiB, the largest agent's, per run with the agents
	Agents               int       // agents per run (the memory lists' length)

	Progs        []Prog    // the programs that ran: Config.TCProgs first, then by name
	NotRun       []string  // loaded by the agents but never run in the accounting runs
	PerUDPPacket []float64 // ns of all the agents' programs per UDP datagram sent, per UDP accounting run
	Floor        []float64 // the empty tc program's ns per run, per accounting run

	StatsOff, StatsOn []float64 // tc_ingress in bpftool prog run, ns, accounting off and on

	Capture  []CaptureRow
	Sampling []SamplingRow
}

// Prog is one BPF program name (both agents' copies together) over the accounting runs.
type Prog struct {
	Name       string
	TC         bool      // one of Config.TCProgs: held to the target
	NsPerRun   []float64 // per accounting run: run time over run count
	AboveFloor []float64 // tc programs: per run, less the empty program's ns per run in the same run
	Runs       float64   // run count over all the accounting runs
	// Over the UDP accounting runs, per datagram sent: runs and ns (NaN: none sent).
	RunsPerPacket, NsPerPacket float64
}

// CaptureRow is one rate of the capture table.
type CaptureRow struct {
	Rate           int     // offered pkt/s; 0: as fast as it goes
	Sent, Received float64 // datagrams per second sent, and received, over the receiver's seconds
	Lost           float64 // events lost by the agents (ring buffer and queues) during the test
	Agents         int     // the agents scraped
}

// SamplingRow is one --sample setting: tc_ingress and tc_egress ns per run, per round.
type SamplingRow struct {
	Sample          string
	Ingress, Egress []float64
}

// Run reads the work directory and writes the report; missed of total figures miss
// their targets (those not measured count as missed).
func Run(c Config, w io.Writer) (missed, total int, err error) {
	r, err := Read(c)
	if err != nil {
		return 0, 0, err
	}
	return r.Write(w)
}

// Read reads every file of the work directory the report needs; an error names the
// file, and the line where one is at fault.
func Read(c Config) (*Report, error) {
	r := &Report{cfg: c}
	snaps := map[string]map[int]snapProg{}
	for _, step := range []func() error{
		r.readRuns,
		func() error { return r.readBPF(snaps) },
		func() error { return r.readSampling(snaps) },
		r.readCapture,
		r.readStatsCost,
	} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// ---- reading -------------------------------------------------------------------

// line is one record of a file: its fields and where it is.
type line struct {
	path string
	no   int
	f    []string
}

func (l line) errorf(format string, a ...any) error {
	return fmt.Errorf("%s:%d: %s", l.path, l.no, fmt.Sprintf(format, a...))
}

// num is field i as a finite number.
func (l line) num(i int, what string) (float64, error) {
	v, err := strconv.ParseFloat(l.f[i], 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, l.errorf("%s %q is not a number", what, l.f[i])
	}
	return v, nil
}

// count is field i as a whole number ≥ low.
func (l line) count(i int, what string, low int) (int, error) {
	v, err := strconv.Atoi(l.f[i])
	if err != nil || v < low {
		return 0, l.errorf("%s %q is not a whole number ≥ %d", what, l.f[i], low)
	}
	return v, nil
}

// nums is field i as comma-separated numbers.
func (l line) nums(i int, what string) ([]float64, error) {
	var out []float64
	for _, s := range strings.Split(l.f[i], ",") {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, l.errorf("%s %q: want numbers separated by commas", what, l.f[i])
		}
		out = append(out, v)
	}
	return out, nil
}

func (r *Report) path(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(r.cfg.Work, name)
}

// readLines reads a file's records, skipping blank lines; each must have one of the
// numbers of fields in fields (what they are: format).
func readLines(path, format string, fields ...int) ([]line, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w (bench.sh writes it: is this its work directory?)", err)
	}
	var out []line
	for i, s := range strings.Split(string(data), "\n") {
		f := strings.Fields(s)
		if len(f) == 0 {
			continue
		}
		l := line{path: path, no: i + 1, f: f}
		if !slices.Contains(fields, len(f)) {
			return nil, l.errorf("%d fields, want %q", len(f), format)
		}
		out = append(out, l)
	}
	return out, nil
}

// iperfEnd is what the report takes from iperf3's JSON (-J): its "end" object.
type iperfEnd struct {
	SumSent struct {
		Packets *float64 `json:"packets"`
	} `json:"sum_sent"`
	SumReceived struct {
		BitsPerSecond *float64 `json:"bits_per_second"`
		Packets       *float64 `json:"packets"`
		LostPackets   *float64 `json:"lost_packets"`
		Seconds       *float64 `json:"seconds"`
	} `json:"sum_received"`
}

// iperfTest is one iperf3 test's figures.
type iperfTest struct {
	bps      float64 // bit/s received (TCP)
	sent     float64 // datagrams sent (UDP)
	received float64 // datagrams received per second of the receiver's (UDP)
	seconds  float64 // the receiver's seconds
}

// readIperf reads an iperf3 JSON file, the TCP figures (udp false) or the UDP ones.
func (r *Report) readIperf(name string, udp bool) (iperfTest, error) {
	path := r.path(name)
	data, err := os.ReadFile(path)
	if err != nil {
		return iperfTest{}, err
	}
	var doc struct {
		End iperfEnd `json:"end"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return iperfTest{}, jsonError(path, data, err)
	}
	e := doc.End
	need := func(v *float64, field string) (float64, error) {
		if v == nil {
			return 0, fmt.Errorf("%s: no .end.%s (not iperf3 -J output of a finished test?)", path, field)
		}
		return *v, nil
	}
	var t iperfTest
	if t.seconds, err = need(e.SumReceived.Seconds, "sum_received.seconds"); err != nil {
		return t, err
	}
	if t.seconds <= 0 {
		return t, fmt.Errorf("%s: .end.sum_received.seconds is %v", path, t.seconds)
	}
	if !udp {
		t.bps, err = need(e.SumReceived.BitsPerSecond, "sum_received.bits_per_second")
		return t, err
	}
	if t.sent, err = need(e.SumSent.Packets, "sum_sent.packets"); err != nil {
		return t, err
	}
	pk, err := need(e.SumReceived.Packets, "sum_received.packets")
	if err != nil {
		return t, err
	}
	lost, err := need(e.SumReceived.LostPackets, "sum_received.lost_packets")
	if err != nil {
		return t, err
	}
	t.received = (pk - lost) / t.seconds
	return t, nil
}

// jsonError names the file and the line of a JSON error.
func jsonError(path string, data []byte, err error) error {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 {
		return fmt.Errorf("%s: %v", path, err)
	}
	off = min(off, int64(len(data)))
	return fmt.Errorf("%s:%d: %v", path, 1+bytes.Count(data[:off], []byte("\n")), err)
}

type run struct {
	tcp, udp iperfTest
}

func (r *Report) readRuns() error {
	lines, err := readLines(r.path(RunsFile),
		"off K TCP_JSON UDP_JSON, or on K TCP_JSON UDP_JSON CPU_NS_BEFORE CPU_NS_AFTER RSS_KB,... HWM_KB,...", 4, 8)
	if err != nil {
		return err
	}
	off, on := map[int]run{}, map[int]run{}
	for _, l := range lines {
		k, err := l.count(1, "pair", 1)
		if err != nil {
			return err
		}
		if k > r.cfg.Pairs {
			return l.errorf("pair %d, but -pairs %d", k, r.cfg.Pairs)
		}
		runs := off
		switch {
		case l.f[0] == "off" && len(l.f) == 4:
		case l.f[0] == "on" && len(l.f) == 8:
			runs = on
		default:
			return l.errorf("%q with %d fields: want off and 4 fields, or on and 8", l.f[0], len(l.f))
		}
		if _, dup := runs[k]; dup {
			return l.errorf("a second %s run of pair %d", l.f[0], k)
		}
		var ru run
		if ru.tcp, err = r.readIperf(l.f[2], false); err != nil {
			return fmt.Errorf("%w (from %s:%d)", err, l.path, l.no)
		}
		if ru.udp, err = r.readIperf(l.f[3], true); err != nil {
			return fmt.Errorf("%w (from %s:%d)", err, l.path, l.no)
		}
		runs[k] = ru
		if l.f[0] == "off" {
			r.TCPOff = append(r.TCPOff, ru.tcp.bps)
			r.UDPOff = append(r.UDPOff, ru.udp.received)
			continue
		}
		r.TCPOn = append(r.TCPOn, ru.tcp.bps)
		r.UDPOn = append(r.UDPOn, ru.udp.received)
		c0, err := l.num(4, "CPU ns before")
		if err != nil {
			return err
		}
		c1, err := l.num(5, "CPU ns after")
		if err != nil {
			return err
		}
		if c1 < c0 {
			return l.errorf("the agents' CPU time went down during the UDP test (%s to %s ns)", l.f[4], l.f[5])
		}
		pct := 100 * (c1 - c0) / 1e9 / ru.udp.seconds
		r.CPUPct = append(r.CPUPct, pct)
		if ru.udp.received > 0 {
			r.CPUPer100k = append(r.CPUPer100k, pct*1e5/ru.udp.received)
		}
		rss, err := l.nums(6, "VmRSS kB")
		if err != nil {
			return err
		}
		hwm, err := l.nums(7, "VmHWM kB")
		if err != nil {
			return err
		}
		if len(rss) != len(hwm) {
			return l.errorf("%d agents' VmRSS but %d agents' VmHWM", len(rss), len(hwm))
		}
		r.Agents = len(rss)
		r.RSS = append(r.RSS, slices.Max(rss)/1024)
		r.HWM = append(r.HWM, slices.Max(hwm)/1024)
	}
	if len(off) != r.cfg.Pairs || len(on) != r.cfg.Pairs {
		return fmt.Errorf("%s: %d runs without the agents and %d with them, want %d of each (-pairs)",
			r.path(RunsFile), len(off), len(on), r.cfg.Pairs)
	}
	for k := 1; k <= r.cfg.Pairs; k++ {
		if off[k].tcp.bps > 0 {
			r.TCPRatios = append(r.TCPRatios, on[k].tcp.bps/off[k].tcp.bps)
		}
		if off[k].udp.received > 0 {
			r.UDPRatios = append(r.UDPRatios, on[k].udp.received/off[k].udp.received)
		}
	}
	return nil
}

// snapProg is a program in a bpftool snapshot.
type snapProg struct {
	name       string
	time, runs float64
}

// snapshot reads a snapshot file (once: the list files name some twice).
func (r *Report) snapshot(cache map[string]map[int]snapProg, name string) (map[int]snapProg, error) {
	path := r.path(name)
	if s, ok := cache[path]; ok {
		return s, nil
	}
	lines, err := readLines(path, "ID NAME RUN_TIME_NS RUN_CNT", 4)
	if err != nil {
		return nil, err
	}
	s := map[int]snapProg{}
	for _, l := range lines {
		id, err := l.count(0, "program id", 1)
		if err != nil {
			return nil, err
		}
		t, err := l.num(2, "run_time_ns")
		if err != nil {
			return nil, err
		}
		c, err := l.num(3, "run_cnt")
		if err != nil {
			return nil, err
		}
		if _, dup := s[id]; dup {
			return nil, l.errorf("program %d listed twice", id)
		}
		s[id] = snapProg{name: l.f[1], time: t, runs: c}
	}
	cache[path] = s
	return s, nil
}

// usage is the run time and count of programs by name, between two snapshots.
type usage map[string]*struct{ time, runs float64 }

func (u usage) add(name string, t, c float64) {
	if u[name] == nil {
		u[name] = &struct{ time, runs float64 }{}
	}
	u[name].time += t
	u[name].runs += c
}

// nsPerRun of a name; NaN when it did not run.
func (u usage) nsPerRun(name string) float64 {
	if v := u[name]; v != nil && v.runs > 0 {
		return v.time / v.runs
	}
	return math.NaN()
}

// between is the usage of the programs in both snapshots, from before to after.
func (r *Report) between(cache map[string]map[int]snapProg, l line, before, after string) (usage, error) {
	b, err := r.snapshot(cache, before)
	if err != nil {
		return nil, fmt.Errorf("%w (from %s:%d)", err, l.path, l.no)
	}
	a, err := r.snapshot(cache, after)
	if err != nil {
		return nil, fmt.Errorf("%w (from %s:%d)", err, l.path, l.no)
	}
	u := usage{}
	for _, id := range slices.Sorted(maps.Keys(a)) { // in order: the same error each time
		pa := a[id]
		pb, ok := b[id]
		if !ok {
			continue // loaded after the first snapshot
		}
		if pb.name != pa.name || pa.time < pb.time || pa.runs < pb.runs {
			return nil, l.errorf("program %d: %s %v ns %v runs in %s, then %s %v ns %v runs in %s: not the same program's counters",
				id, pb.name, pb.time, pb.runs, before, pa.name, pa.time, pa.runs, after)
		}
		u.add(pa.name, pa.time-pb.time, pa.runs-pb.runs)
	}
	return u, nil
}

func (r *Report) readBPF(cache map[string]map[int]snapProg) error {
	lines, err := readLines(r.path(BPFList), "PHASE BEFORE AFTER RUN_JSON", 4)
	if err != nil {
		return err
	}
	type phase struct {
		udp  bool
		sent float64
		u    usage
	}
	var phases []phase
	seen := map[string]bool{}
	for _, l := range lines {
		kind, k, ok := strings.Cut(l.f[0], ":")
		if n, err := strconv.Atoi(k); !ok || (kind != "tcp" && kind != "udp") || err != nil || n < 1 {
			return l.errorf("phase %q: want tcp:K or udp:K", l.f[0])
		}
		u, err := r.between(cache, l, l.f[1], l.f[2])
		if err != nil {
			return err
		}
		ph := phase{udp: kind == "udp", u: u}
		if ph.udp {
			t, err := r.readIperf(l.f[3], true)
			if err != nil {
				return fmt.Errorf("%w (from %s:%d)", err, l.path, l.no)
			}
			ph.sent = t.sent
		}
		phases = append(phases, ph)
		for name := range u {
			seen[name] = true
		}
	}
	var names []string
	for _, p := range r.cfg.TCProgs {
		if seen[p] {
			names = append(names, p)
		}
	}
	var rest []string
	for name := range seen {
		if name != emptyProg && !slices.Contains(r.cfg.TCProgs, name) {
			rest = append(rest, name)
		}
	}
	slices.Sort(rest)
	names = append(names, rest...)

	var sent float64
	for _, ph := range phases {
		if ph.udp {
			sent += ph.sent
		}
		if f := ph.u.nsPerRun(emptyProg); !math.IsNaN(f) {
			r.Floor = append(r.Floor, f)
		}
		if ph.udp && ph.sent > 0 {
			var t float64
			for name, v := range ph.u {
				if name != emptyProg {
					t += v.time
				}
			}
			r.PerUDPPacket = append(r.PerUDPPacket, t/ph.sent)
		}
	}
	for _, name := range names {
		p := Prog{Name: name, TC: slices.Contains(r.cfg.TCProgs, name)}
		var ut, uc float64
		for _, ph := range phases {
			v := ph.u[name]
			if v == nil {
				continue
			}
			p.Runs += v.runs
			if ph.udp {
				ut += v.time
				uc += v.runs
			}
			ns := ph.u.nsPerRun(name)
			if math.IsNaN(ns) {
				continue
			}
			p.NsPerRun = append(p.NsPerRun, ns)
			if f := ph.u.nsPerRun(emptyProg); p.TC && !math.IsNaN(f) {
				p.AboveFloor = append(p.AboveFloor, ns-f)
			}
		}
		if p.Runs == 0 {
			r.NotRun = append(r.NotRun, name)
			continue
		}
		p.RunsPerPacket, p.NsPerPacket = math.NaN(), math.NaN()
		if sent > 0 {
			p.RunsPerPacket, p.NsPerPacket = uc/sent, ut/sent
		}
		r.Progs = append(r.Progs, p)
	}
	return nil
}

func (r *Report) readSampling(cache map[string]map[int]snapProg) error {
	lines, err := readLines(r.path(SamplingList), "N BEFORE AFTER", 3)
	if err != nil {
		return err
	}
	rows := map[string]*SamplingRow{}
	for _, n := range r.cfg.Samples {
		rows[n] = &SamplingRow{Sample: n}
	}
	for _, l := range lines {
		row := rows[l.f[0]]
		if row == nil {
			return l.errorf("--sample %s is not one of -samples %q", l.f[0], strings.Join(r.cfg.Samples, " "))
		}
		u, err := r.between(cache, l, l.f[1], l.f[2])
		if err != nil {
			return err
		}
		if v := u.nsPerRun("tc_ingress"); !math.IsNaN(v) {
			row.Ingress = append(row.Ingress, v)
		}
		if v := u.nsPerRun("tc_egress"); !math.IsNaN(v) {
			row.Egress = append(row.Egress, v)
		}
	}
	if len(lines) > 0 {
		for _, n := range r.cfg.Samples {
			r.Sampling = append(r.Sampling, *rows[n])
		}
	}
	return nil
}

// lostEvents is the sum of the agent's pathtrace_events_lost_total of the ring buffer
// and the queues in a /metrics scrape.
func lostEvents(path string) (float64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	const metric = "pathtrace_events_lost_total{"
	var sum float64
	found := map[string]bool{}
	for i, s := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(s, metric)
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "}")
		f := strings.Fields(value)
		if !ok || len(f) == 0 {
			return 0, fmt.Errorf("%s:%d: %q: want %sstage=\"...\"} VALUE", path, i+1, s, metric)
		}
		var stage string
		for _, kv := range strings.Split(labels, ",") {
			if v, ok := strings.CutPrefix(kv, `stage="`); ok {
				stage = strings.TrimSuffix(v, `"`)
			}
		}
		if stage != "ringbuf" && stage != "queue" {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil || math.IsNaN(v) || v < 0 {
			return 0, fmt.Errorf("%s:%d: %q is not a count", path, i+1, f[0])
		}
		sum += v
		found[stage] = true
	}
	for _, stage := range []string{"ringbuf", "queue"} {
		if !found[stage] {
			return 0, fmt.Errorf("%s: no %sstage=%q} (not an agent's /metrics?)", path, metric, stage)
		}
	}
	return sum, nil
}

func (r *Report) readCapture() error {
	lines, err := readLines(r.path(CaptureList), "RATE RUN_JSON BEFORE_METRICS,... AFTER_METRICS,...", 4)
	if err != nil {
		return err
	}
	for _, l := range lines {
		rate, err := l.count(0, "rate", 0)
		if err != nil {
			return err
		}
		t, err := r.readIperf(l.f[1], true)
		if err != nil {
			return fmt.Errorf("%w (from %s:%d)", err, l.path, l.no)
		}
		before, after := strings.Split(l.f[2], ","), strings.Split(l.f[3], ",")
		if len(before) != len(after) {
			return l.errorf("%d scrapes before and %d after", len(before), len(after))
		}
		var lost float64
		for i := range before {
			b, err := lostEvents(r.path(before[i]))
			if err != nil {
				return fmt.Errorf("%w (from %s:%d)", err, l.path, l.no)
			}
			a, err := lostEvents(r.path(after[i]))
			if err != nil {
				return fmt.Errorf("%w (from %s:%d)", err, l.path, l.no)
			}
			if a < b {
				return l.errorf("events lost went down from %s (%v) to %s (%v): not the same agent's", before[i], b, after[i], a)
			}
			lost += a - b
		}
		r.Capture = append(r.Capture, CaptureRow{Rate: rate, Sent: t.sent / t.seconds, Received: t.received,
			Lost: lost, Agents: len(before)})
	}
	return nil
}

func (r *Report) readStatsCost() error {
	lines, err := readLines(r.path(StatsCostRaw), "S NS", 2)
	if err != nil {
		return err
	}
	for _, l := range lines {
		ns, err := l.num(1, "ns")
		if err != nil {
			return err
		}
		switch l.f[0] {
		case "0":
			r.StatsOff = append(r.StatsOff, ns)
		case "1":
			r.StatsOn = append(r.StatsOn, ns)
		default:
			return l.errorf("kernel.bpf_stats_enabled %q: want 0 or 1", l.f[0])
		}
	}
	return nil
}

// ---- figures ---------------------------------------------------------------------

// CaptureLoss is where capture starts to lose events: the sent rate of the first row
// with a loss (lossAt, NaN when none lost), and of the last row before it without one
// (clean, NaN when the first row lost already); with no loss, clean is the highest
// rate sent.
func (r *Report) CaptureLoss() (lossAt, clean float64) {
	lossAt, clean = math.NaN(), math.NaN()
	for _, c := range r.Capture {
		if c.Lost > 0 {
			return c.Sent, clean
		}
		clean = c.Sent
	}
	for _, c := range r.Capture {
		if math.IsNaN(clean) || c.Sent > clean {
			clean = c.Sent
		}
	}
	return lossAt, clean
}

// fullRate is the capture row at the rate 0 (as fast as it goes), if measured.
func (r *Report) fullRate() (CaptureRow, bool) {
	for _, c := range r.Capture {
		if c.Rate == 0 {
			return c, true
		}
	}
	return CaptureRow{}, false
}

// StatsCost is what kernel.bpf_stats_enabled adds to a run of tc_ingress: the median on
// less the median off (NaN when either is missing).
func (r *Report) StatsCost() float64 {
	return stat.Median(r.StatsOn) - stat.Median(r.StatsOff)
}

func scale(xs []float64, k float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = x * k
	}
	return out
}

// dec formats v with prec decimals, "-" for NaN.
func dec(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// count is a number of runs, in millions from a million on.
func count(n float64) string {
	if n >= 1e6 {
		return dec(n/1e6, 2) + "M"
	}
	return dec(n, 0)
}

// ratioNote is a ratio figure's note: the mean of the pairs' ratios with its standard
// error, and the ratio of the two medians.
func ratioNote(ratios, on, off []float64) string {
	m, se := stat.Mean(ratios)
	rm, _ := stat.Ratio(on, off)
	return fmt.Sprintf("median of the pairs' ratios; their mean %s, s.e. %s; ratio of the medians %s", dec(m, 3), dec(se, 3), dec(rm, 3))
}

// Figures are the rows of the table, with their targets.
func (r *Report) Figures() []stat.Figure {
	agents := fmt.Sprintf("%d agents", r.Agents)
	figs := []stat.Figure{
		{Name: "TCP pod->pod, node-a->node-b, without agent", Unit: "Gbit/s", Samples: scale(r.TCPOff, 1e-9)},
		{Name: "TCP, with agents", Unit: "Gbit/s", Samples: scale(r.TCPOn, 1e-9)},
		{Name: "TCP with/without agents", Samples: r.TCPRatios, Target: stat.AtLeast(TCPRatioMin),
			Note: ratioNote(r.TCPRatios, r.TCPOn, r.TCPOff)},
		{Name: "UDP 64-byte payload received, without agent", Unit: "kpkt/s", Samples: scale(r.UDPOff, 1e-3)},
		{Name: "UDP, with agents", Unit: "kpkt/s", Samples: scale(r.UDPOn, 1e-3)},
		{Name: "UDP with/without agents", Samples: r.UDPRatios, Target: stat.AtLeast(UDPRatioMin),
			Note: ratioNote(r.UDPRatios, r.UDPOn, r.UDPOff)},
	}
	tc := false
	for _, p := range r.Progs {
		fig := stat.Figure{Name: "BPF " + p.Name + ", ns per run", Unit: "ns", Samples: p.NsPerRun,
			Note: fmt.Sprintf("%s runs; per UDP packet sent %s runs, %s ns", count(p.Runs), dec(p.RunsPerPacket, 2), dec(p.NsPerPacket, 0))}
		if p.TC {
			tc = true
			fig.Target = stat.AtMost(TCNsPerRunMax)
			fig.Note += "; above the floor " + dec(stat.Median(p.AboveFloor), 1) + " ns"
		}
		figs = append(figs, fig)
	}
	if !tc {
		figs = append(figs, stat.Figure{Name: "BPF tc programs, ns per run", Unit: "ns", Target: stat.AtMost(TCNsPerRunMax),
			Note: "none of " + strings.Join(r.cfg.TCProgs, " ") + " ran"})
	}
	figs = append(figs,
		stat.Figure{Name: "BPF all programs, per UDP packet sent", Unit: "ns", Samples: r.PerUDPPacket,
			Note: "both nodes, every hop"},
		stat.Figure{Name: "BPF floor: an empty tc program", Unit: "ns", Samples: r.Floor,
			Note: "ns per run, same hooks and runs as the agents', clsact"})
	if c := r.StatsCost(); !math.IsNaN(c) {
		figs = append(figs, stat.Figure{Name: "stats accounting, per run of tc_ingress", Unit: "ns", Samples: []float64{c},
			Note: fmt.Sprintf("bpftool prog run, medians: stats off %s ns, on %s ns", dec(stat.Median(r.StatsOff), 0), dec(stat.Median(r.StatsOn), 0))})
	}
	figs = append(figs,
		stat.Figure{Name: "agent CPU during UDP, " + agents, Unit: "% of a core", Samples: r.CPUPct,
			Note: "at " + dec(stat.Median(r.UDPOn)/1e3, 1) + " kpkt/s"},
		stat.Figure{Name: "agent CPU per 100k pkt/s, " + agents, Unit: "% of a core", Samples: r.CPUPer100k},
		stat.Figure{Name: "agent resident memory (VmRSS)", Unit: "MiB", Samples: r.RSS, Of: stat.OfMax,
			Target: stat.AtMost(RSSMiBMax), Note: "after the runs, the larger of " + agents},
		stat.Figure{Name: "agent peak memory (VmHWM)", Unit: "MiB", Samples: r.HWM, Of: stat.OfMax,
			Target: stat.AtMost(HWMMiBMax), Note: "the larger of " + agents + ", since start (loading the kernel's BTF)"})
	capture := stat.Figure{Name: "capture: events lost at full UDP rate", Unit: "events", Target: stat.AtMost(CaptureLostMax),
		Note: "--pcap-dir; no rate 0 in BENCH_CAPTURE_RATES"}
	if c, ok := r.fullRate(); ok {
		capture.Samples = []float64{c.Lost}
		capture.Note = fmt.Sprintf("--pcap-dir, %d agents, at %s pkt/s sent", c.Agents, dec(c.Sent, 0))
	}
	return append(figs, capture)
}

// Write prints the table and the lines under it; missed of total figures miss their
// targets.
func (r *Report) Write(w io.Writer) (missed, total int, err error) {
	figs := r.Figures()
	var b strings.Builder
	if missed, err = stat.Table(&b, figs); err != nil {
		return 0, 0, err
	}
	if len(r.NotRun) > 0 {
		fmt.Fprintf(&b, "(loaded by the agents but never run: %s)\n", strings.Join(r.NotRun, " "))
	}
	fmt.Fprintf(&b, "(with/without: each pair's ratio, its two runs next to each other in time; the median of the %d pairs' ratios is judged)\n", r.cfg.Pairs)

	list := func(xs []float64, k float64, prec int) string {
		var s []string
		for _, x := range xs {
			s = append(s, dec(x*k, prec))
		}
		return strings.Join(s, " ")
	}
	fmt.Fprintf(&b, "\nruns (%d pairs, odd ones without the agents first, even ones with them first; %d s per iperf3 run):\n", r.cfg.Pairs, r.cfg.Seconds)
	fmt.Fprintf(&b, "  TCP Gbit/s without: %s | with: %s\n", list(r.TCPOff, 1e-9, 2), list(r.TCPOn, 1e-9, 2))
	fmt.Fprintf(&b, "  UDP kpkt/s without: %s | with: %s\n", list(r.UDPOff, 1e-3, 1), list(r.UDPOn, 1e-3, 1))
	fmt.Fprintf(&b, "  agent CPU during UDP (%% of a core): %s\n", list(r.CPUPct, 1, 3))
	fmt.Fprintf(&b, "  agent VmRSS max per run (MiB): %s\n", list(r.RSS, 1, 1))
	fmt.Fprintf(&b, "  agent VmHWM max per run (MiB): %s\n", list(r.HWM, 1, 1))

	if len(r.Capture) > 0 {
		fmt.Fprintf(&b, "\ncapture cost (agent --pcap-dir on both nodes, every flow followed; UDP 64-byte payloads, %d s per rate):\n", r.cfg.Seconds)
		fmt.Fprintf(&b, "  offered pkt/s | sent pkt/s | received pkt/s | events lost (%d agents)\n", r.Capture[0].Agents)
		for _, c := range r.Capture {
			rate := strconv.Itoa(c.Rate)
			if c.Rate == 0 {
				rate = "unlimited"
			}
			fmt.Fprintf(&b, "  %13s | %10s | %14s | %s\n", rate, dec(c.Sent, 0), dec(c.Received, 0), dec(c.Lost, 0))
		}
		if at, clean := r.CaptureLoss(); !math.IsNaN(at) {
			without := "none without a loss"
			if !math.IsNaN(clean) {
				without = dec(clean, 0) + " pkt/s without a loss"
			}
			fmt.Fprintf(&b, "  capture starts to lose events at about %s pkt/s sent (%s)\n", dec(at, 0), without)
		} else {
			fmt.Fprintf(&b, "  no event lost up to %s pkt/s\n", dec(clean, 0))
		}
	}
	if len(r.Sampling) > 0 {
		rounds := 0
		for _, s := range r.Sampling {
			rounds = max(rounds, len(s.Ingress), len(s.Egress))
		}
		fmt.Fprintf(&b, "\nsampling cost (agents with --sample N; tc programs' ns per run, accounting on, UDP; median of %d runs; the floor: %s ns):\n",
			rounds, dec(stat.Median(r.Floor), 1))
		fmt.Fprintf(&b, "  --sample | tc_ingress ns | tc_egress ns\n")
		for _, s := range r.Sampling {
			fmt.Fprintf(&b, "  %8s | %13s | %12s\n", s.Sample, dec(stat.Median(s.Ingress), 1), dec(stat.Median(s.Egress), 1))
		}
	}
	if math.IsNaN(r.StatsCost()) {
		fmt.Fprintf(&b, "\n(stats accounting's own cost not measured: %s has no run with it off and on)\n", StatsCostRaw)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return 0, 0, err
	}
	return missed, len(figs), nil
}
