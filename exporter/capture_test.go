package exporter_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/exporter/pathview"
)

// seg is a TCP segment of pod A's connection from sport to the backend (or back, with
// reply), seen at the pod's veth and at flannel.1: forwarded. With drop, nftables drops
// it after the veth. ms is its time in ms after pcapT0.
type seg struct {
	sport   uint16
	reply   bool
	id      uint16
	seq     uint32
	flags   uint8
	payload int
	ms      float64
	drop    bool
}

func (s seg) events() []decode.Event {
	src, dst, sp, dp := "10.244.0.5", "10.244.1.7", s.sport, uint16(8080)
	if s.reply {
		src, dst, sp, dp = dst, src, dp, sp
	}
	flags := s.flags
	if flags == 0 {
		flags = decode.TCPAck | decode.TCPPsh
	}
	t := pcapT0 + uint64(s.ms*1e6)
	ip := ipv4(src, dst, s.id, 64, decode.ProtoTCP, tcp(sp, dp, s.seq, 1, flags, uint32(s.id), s.payload))
	evs := []decode.Event{ev(decode.KindHop, t, ixVeth, vethName, decode.Ingress, true, eth(ip))}
	if s.drop {
		d := ev(decode.KindDrop, t+30_000, ixCni0, "cni0", decode.NoDir, false, ip)
		d.Reason, d.Location = 12, 0xffffffffc0a412c8
		return append(evs, d)
	}
	return append(evs, ev(decode.KindHop, t+20_000, ixFlannel, "flannel.1", decode.Egress, true, eth(ip)))
}

// journeys assembles the segments, each on its own, in the order given.
func journeys(t *testing.T, segs ...seg) []*decode.Journey {
	t.Helper()
	var js []*decode.Journey
	for _, s := range segs {
		j := assemble(t, nodeA(t), s.events()...)
		if len(j) != 1 {
			t.Fatalf("segment %+v: %d journeys", s, len(j))
		}
		js = append(js, j[0])
	}
	return js
}

// data is the n-th data segment of the connection from sport: 100 bytes, 1 ms apart.
func data(sport uint16, n int) seg {
	return seg{sport: sport, id: uint16(n + 1), seq: 1000 + uint32(n)*100, payload: 100, ms: float64(n)}
}

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logs) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			n++
		}
	}
	return n
}

// privateDir is a new directory of mode 0700, as the recorder wants one (t.TempDir
// makes its directories 0777 less the umask).
func privateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newRecorder(t *testing.T, cfg exporter.RecorderConfig) (*exporter.Recorder, string, *logs) {
	t.Helper()
	l := &logs{}
	if cfg.Dir == "" {
		cfg.Dir = privateDir(t)
	}
	cfg.Clock, cfg.Logf = pcapClock, l.logf
	r, err := exporter.NewRecorder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, cfg.Dir, l
}

func pcaps(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

var nameRE = regexp.MustCompile(`^(\d{8}T\d{6}\.\d{3}Z)_tcp_10\.244\.0\.5-(\d+)_10\.244\.1\.7-8080_([a-z-]+)(_\d+)?\.pcapng$`)

// A drop flags its flow: the file holds the flow's packets from before (up to
// PrePackets, both directions, no other flow's), the dropped one with the kernel's
// reason, and PostPackets after; then the flow goes back to history.
func TestRecorderDropFile(t *testing.T) {
	r, dir, _ := newRecorder(t, exporter.RecorderConfig{PrePackets: 4, PostPackets: 2})
	var segs []seg
	for n := range 6 {
		segs = append(segs, data(43512, n), data(43999, n)) // another flow alongside
	}
	segs = append(segs, seg{sport: 43512, reply: true, id: 900, seq: 5000, flags: decode.TCPAck, ms: 5.5}) // an ACK back
	segs = append(segs, seg{sport: 43512, id: 7, seq: 1600, payload: 100, ms: 6, drop: true})
	for n := 7; n < 10; n++ {
		segs = append(segs, data(43512, n))
	}
	for i, j := range journeys(t, segs...) {
		trigger := r.Add(j)
		if want := map[bool]string{true: exporter.TriggerDrop}[segs[i].drop]; trigger != want {
			t.Errorf("journey %d: trigger %q, want %q", i, trigger, want)
		}
	}
	st := r.Stats()
	if st.FilesWritten != 1 || st.Flagged[exporter.TriggerDrop] != 1 || st.OpenFiles != 0 || st.Journeys != uint64(len(segs)) {
		t.Errorf("stats %+v", st)
	}
	files := pcaps(t, dir)
	if len(files) != 1 {
		t.Fatalf("files %v", files)
	}
	m := nameRE.FindStringSubmatch(filepath.Base(files[0]))
	if m == nil || m[2] != "43512" || m[3] != "drop" || m[1] != "20251126T094000.006Z" {
		t.Errorf("file name %s", filepath.Base(files[0]))
	}
	rows := tsharkFields(t, files[0], nil, "ip.src", "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "frame.interface_name", "frame.comment")
	// Before: data 3, 4, 5 and the ACK (the 4 newest); the drop; after: data 7 and 8.
	var got []string
	for _, row := range rows {
		got = append(got, row[0]+":"+row[1]+">"+row[2]+" seq "+row[3]+" "+row[4])
	}
	want := []string{
		"10.244.0.5:43512>8080 seq 1300 node-a/veth3f8a2c1e", "10.244.0.5:43512>8080 seq 1300 node-a/flannel.1",
		"10.244.0.5:43512>8080 seq 1400 node-a/veth3f8a2c1e", "10.244.0.5:43512>8080 seq 1400 node-a/flannel.1",
		"10.244.0.5:43512>8080 seq 1500 node-a/veth3f8a2c1e", "10.244.0.5:43512>8080 seq 1500 node-a/flannel.1",
		"10.244.1.7:8080>43512 seq 5000 node-a/veth3f8a2c1e", "10.244.1.7:8080>43512 seq 5000 node-a/flannel.1",
		"10.244.0.5:43512>8080 seq 1600 node-a/veth3f8a2c1e", "10.244.0.5:43512>8080 seq 1600 node-a/kfree_skb",
		"10.244.0.5:43512>8080 seq 1700 node-a/veth3f8a2c1e", "10.244.0.5:43512>8080 seq 1700 node-a/flannel.1",
		"10.244.0.5:43512>8080 seq 1800 node-a/veth3f8a2c1e", "10.244.0.5:43512>8080 seq 1800 node-a/flannel.1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("packets:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if c := rows[9][5]; !strings.Contains(c, "kfree_skb NETFILTER_DROP at nft_do_chain+0x2c8") || !strings.Contains(c, "verdict dropped") {
		t.Errorf("drop comment %q", c)
	}
	checkPage(t, files[0], 7, "1")
	// The snapshot kept of the history is SnapLen (128) bytes; the packets are 166.
	rows = tsharkFields(t, files[0], nil, "frame.cap_len", "frame.len")
	if rows[0][0] != "128" || rows[0][1] != "166" {
		t.Errorf("first packet captured %s of %s bytes, want 128 of 166", rows[0][0], rows[0][1])
	}
}

// The history goes back PreAge before the trigger at most; the post window lasts
// PostAge, closed by a later journey or by Expire.
func TestRecorderAges(t *testing.T) {
	r, dir, _ := newRecorder(t, exporter.RecorderConfig{PrePackets: -1, PreAge: 2500 * time.Microsecond,
		PostPackets: -1, PostAge: 2 * time.Millisecond})
	var segs []seg
	for n := range 6 {
		segs = append(segs, data(43512, n))
	}
	segs = append(segs, seg{sport: 43512, id: 7, seq: 1600, payload: 100, ms: 6, drop: true}, data(43512, 7))
	for _, j := range journeys(t, segs...) {
		r.Add(j)
	}
	if st := r.Stats(); st.OpenFiles != 1 {
		t.Fatalf("%d files open during the post window", st.OpenFiles)
	}
	r.Expire(pcapT0 + 7_900_000) // 1.9 ms after the trigger
	if st := r.Stats(); st.OpenFiles != 1 {
		t.Fatal("file closed before PostAge")
	}
	r.Expire(pcapT0 + 8_000_000)
	if st := r.Stats(); st.OpenFiles != 0 {
		t.Fatal("file still open after PostAge")
	}
	// Later segments go to the history again.
	for _, j := range journeys(t, data(43512, 8)) {
		r.Add(j)
	}
	files := pcaps(t, dir)
	if len(files) != 1 {
		t.Fatalf("files %v", files)
	}
	var seqs []string
	for _, row := range tsharkFields(t, files[0], []string{"-Y", "frame.interface_name contains veth"}, "tcp.seq_raw") {
		seqs = append(seqs, row[0])
	}
	// 2.5 ms before the drop at 6 ms: segments at 4 and 5 ms; after it, 7 ms.
	if want := []string{"1400", "1500", "1600", "1700"}; !slices.Equal(seqs, want) {
		t.Errorf("segments %v, want %v", seqs, want)
	}
}

// A TCP segment whose sequence range was sent before (by another packet) is a
// retransmission; repeated pure ACKs and segments closed out of order are not.
func TestRecorderRetransmit(t *testing.T) {
	r, dir, _ := newRecorder(t, exporter.RecorderConfig{})
	ack := seg{sport: 43512, reply: true, seq: 5000, flags: decode.TCPAck, ms: 0.5}
	var triggers []string
	js := journeys(t, data(43512, 1), data(43512, 0), data(43512, 2), // closed out of order
		ack, seg{sport: 43512, reply: true, id: 901, seq: 5000, flags: decode.TCPAck, ms: 2.5}, // the same ACK twice
		seg{sport: 43512, id: 99, seq: 1150, payload: 100, ms: 250}) // resends bytes 1150..1249
	for _, j := range js {
		triggers = append(triggers, r.Add(j))
	}
	if want := []string{"", "", "", "", "", exporter.TriggerRetransmit}; !slices.Equal(triggers, want) {
		t.Errorf("triggers %q, want %q", triggers, want)
	}
	files := pcaps(t, dir)
	if len(files) != 1 || !strings.HasSuffix(files[0], "_retransmit.pcapng") {
		t.Errorf("files %v", files)
	}
	// A SYN sent again is one too.
	r2, _, _ := newRecorder(t, exporter.RecorderConfig{})
	syn := seg{sport: 40000, id: 1, seq: 77, flags: decode.TCPSyn, ms: 0}
	syn2 := syn
	syn2.id, syn2.ms = 2, 1000
	got := []string{}
	for _, j := range journeys(t, syn, syn2) {
		got = append(got, r2.Add(j))
	}
	if !slices.Equal(got, []string{"", exporter.TriggerRetransmit}) {
		t.Errorf("SYN triggers %q", got)
	}
}

// Stalls and losses flag their flow too, and the caller can flag one (either
// direction) with a trigger of its own.
func TestRecorderTriggers(t *testing.T) {
	r, dir, _ := newRecorder(t, exporter.RecorderConfig{})
	js := pcapJourneys(t) // stall, drop, lost
	var got []string
	for _, j := range js {
		got = append(got, r.Add(j))
	}
	if want := []string{exporter.TriggerStall, exporter.TriggerDrop, exporter.TriggerLost}; !slices.Equal(got, want) {
		t.Errorf("triggers %q, want %q", got, want)
	}
	for _, j := range journeys(t, data(41000, 0), data(41000, 1)) {
		r.Add(j)
	}
	r.Flag(decode.Flow{Proto: decode.ProtoTCP, Src: backend, Dst: netip.AddrPortFrom(client.Addr(), 41000)}, "Followed!")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range pcaps(t, dir) {
		names = append(names, strings.SplitN(filepath.Base(f), "_", 2)[1])
	}
	// The stall and the lost packet are of the same flow (the DNS query) as the drop: the
	// drop's file took the lost packet in its post window.
	want := []string{"tcp_10.244.0.5-43512_10.96.0.20-80_stall.pcapng", "tcp_10.244.1.7-8080_10.244.0.5-41000_followed-.pcapng",
		"udp_10.244.0.5-40001_10.96.0.10-53_drop.pcapng"}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Errorf("files %q, want %q", names, want)
	}
	st := r.Stats()
	if st.Flagged["followed-"] != 1 || st.Flagged[exporter.TriggerLost] != 1 || st.FilesWritten != 3 {
		t.Errorf("stats %+v", st)
	}
	for _, f := range pcaps(t, dir) {
		n := len(tsharkFields(t, f, nil, "frame.number"))
		switch {
		case strings.HasSuffix(f, "_followed-.pcapng") && n != 4, strings.HasSuffix(f, "_drop.pcapng") && n != 5:
			t.Errorf("%s: %d packets", filepath.Base(f), n)
		}
	}
}

// However many flows come, the histories stay within MaxHistoryBytes, evicting the
// flows idle longest and counting them; the heap agrees.
func TestRecorderMemoryBound(t *testing.T) {
	const bound = 256 << 10
	r, _, _ := newRecorder(t, exporter.RecorderConfig{MaxHistoryBytes: bound, SnapLen: decode.SnapMax})
	tmpl := journeys(t, seg{sport: 1, id: 1, seq: 1, payload: 1000})[0]
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	const flows = 30000
	for i := range flows {
		j := *tmpl
		j.Hops = slices.Clone(tmpl.Hops)
		f := decode.Flow{Proto: decode.ProtoTCP, Src: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), uint16(i)), Dst: backend}
		j.Flow = f
		for k := range j.Hops {
			j.Hops[k].Flow = f
		}
		for range 3 {
			r.Add(&j)
		}
		if st := r.Stats(); st.HistoryBytes > bound {
			t.Fatalf("after %d flows: %d history bytes, bound %d", i+1, st.HistoryBytes, bound)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	st := r.Stats()
	if st.FlowsEvicted == 0 || st.FlowsEvicted+uint64(st.Flows) != flows || st.HistoryBytes < bound/2 {
		t.Errorf("stats %+v", st)
	}
	// Unbounded, 30000 flows of 3 journeys with 2 × 256 bytes would take over 60 MB.
	if grew := int64(m1.HeapAlloc) - int64(m0.HeapAlloc); grew > 4*bound {
		t.Errorf("heap grew by %d bytes for a bound of %d", grew, bound)
	}
	runtime.KeepAlive(r)
}

// flagFlows writes one drop file per flow, 10 ms apart.
func flagFlows(t *testing.T, r *exporter.Recorder, sports ...uint16) {
	t.Helper()
	for i, sp := range sports {
		s := data(sp, 0)
		s.drop, s.ms = true, float64(10*i)
		for _, j := range journeys(t, data(sp, -1), s) {
			r.Add(j)
		}
	}
}

// MaxFiles: the oldest of our closed files go first; files we did not write stay.
func TestRecorderMaxFiles(t *testing.T) {
	dir := privateDir(t)
	foreign := []string{filepath.Join(dir, "00000000T000000.000Z_tcp_1.1.1.1-1_2.2.2.2-2_drop.pcapng"), filepath.Join(dir, "notes.txt")}
	for _, f := range foreign {
		if err := os.WriteFile(f, []byte("not ours"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, _, _ := newRecorder(t, exporter.RecorderConfig{Dir: dir, MaxFiles: 3, PostAge: time.Millisecond})
	flagFlows(t, r, 1001, 1002, 1003, 1004, 1005)
	r.Close()
	var sports []string
	for _, f := range pcaps(t, dir) {
		if m := nameRE.FindStringSubmatch(filepath.Base(f)); m != nil {
			sports = append(sports, m[2])
		}
	}
	if want := []string{"1003", "1004", "1005"}; !slices.Equal(sports, want) {
		t.Errorf("our files are of flows %v, want %v", sports, want)
	}
	for _, f := range foreign {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("a file we did not write: %v", err)
		}
	}
	st := r.Stats()
	if st.FilesWritten != 5 || st.FilesDeleted != 2 || len(st.Skipped) != 0 {
		t.Errorf("stats %+v", st)
	}
	// With every file still open, a capture over the limit is refused and counted.
	r2, dir2, _ := newRecorder(t, exporter.RecorderConfig{MaxFiles: 2})
	flagFlows(t, r2, 1001, 1002, 1003)
	if st := r2.Stats(); st.Skipped[exporter.LimitFiles] != 1 || st.OpenFiles != 2 || len(pcaps(t, dir2)) != 2 {
		t.Errorf("stats %+v files %v", st, pcaps(t, dir2))
	}
	// So is one past MaxOpenFiles.
	r3, dir3, _ := newRecorder(t, exporter.RecorderConfig{MaxOpenFiles: 1})
	flagFlows(t, r3, 1001, 1002)
	if st := r3.Stats(); st.Skipped[exporter.LimitOpenFiles] != 1 || len(pcaps(t, dir3)) != 1 {
		t.Errorf("stats %+v", st)
	}
}

// MaxDirBytes deletes our oldest closed files to make room, and cuts a capture that
// cannot get any; MaxFileBytes ends a file at a whole block.
func TestRecorderByteLimits(t *testing.T) {
	// Each file here is about 1.4 kB: room for two.
	r, dir, _ := newRecorder(t, exporter.RecorderConfig{MaxDirBytes: 3600, PostAge: time.Millisecond})
	flagFlows(t, r, 1001, 1002, 1003, 1004)
	r.Close()
	st := r.Stats()
	files := pcaps(t, dir)
	if st.FilesDeleted == 0 || st.DirBytes > 3600 || len(files) < 1 || !strings.Contains(files[len(files)-1], "-1004_") {
		t.Errorf("stats %+v files %v", st, files)
	}
	var total int64
	for _, f := range files {
		fi, _ := os.Stat(f)
		total += fi.Size()
		tsharkFields(t, f, nil, "frame.number") // whole files
	}
	// A page does not fit in 3600 bytes beside its file: the captures are kept without.
	if pages, _ := filepath.Glob(filepath.Join(dir, "*.html")); len(pages) != 0 || st.Skipped[exporter.LimitPageBytes] == 0 {
		t.Errorf("pages %v, skipped %v", pages, st.Skipped)
	}
	if total != st.DirBytes {
		t.Errorf("files take %d bytes, stats say %d", total, st.DirBytes)
	}

	r2, dir2, _ := newRecorder(t, exporter.RecorderConfig{MaxFileBytes: 1000})
	flagFlows(t, r2, 1001)
	for _, j := range journeys(t, data(1001, 1), data(1001, 2), data(1001, 3)) {
		r2.Add(j)
	}
	st = r2.Stats()
	files = pcaps(t, dir2)
	if st.Skipped[exporter.LimitFileBytes] != 1 || st.OpenFiles != 0 || len(files) != 1 {
		t.Fatalf("stats %+v files %v", st, files)
	}
	fi, _ := os.Stat(files[0])
	n := len(tsharkFields(t, files[0], nil, "frame.number")) // fails on a cut block
	if fi.Size() > 1000 || n < 2 || n >= 8 {
		t.Errorf("file of %d bytes with %d packets", fi.Size(), n)
	}

	r3, _, _ := newRecorder(t, exporter.RecorderConfig{MaxDirBytes: 1000})
	flagFlows(t, r3, 1001)
	if st := r3.Stats(); st.Skipped[exporter.LimitDirBytes] != 1 {
		t.Errorf("stats %+v", st)
	}
}

// disk is a file system that fills up on demand: writes fail with ENOSPC, after
// writing half of what they were given (as a real write can).
type disk struct {
	mu   sync.Mutex
	full bool
}

func (d *disk) setFull(v bool) { d.mu.Lock(); d.full = v; d.mu.Unlock() }

type diskFile struct {
	*os.File
	d *disk
}

func (f diskFile) Write(b []byte) (int, error) {
	f.d.mu.Lock()
	full := f.d.full
	f.d.mu.Unlock()
	if full {
		n, _ := f.File.Write(b[:len(b)/2])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(b)
}

func (d *disk) create(path string) (exporter.CaptureFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	return diskFile{f, d}, nil
}

// A full disk stops the captures, counted and logged once, while journeys keep coming;
// the files keep whole blocks only; captures resume once writes work.
func TestRecorderDiskFull(t *testing.T) {
	d := &disk{}
	r, dir, l := newRecorder(t, exporter.RecorderConfig{Create: d.create, PostPackets: 1})
	flagFlows(t, r, 1001)
	for _, j := range journeys(t, data(1001, 1)) { // ends 1001's post window
		r.Add(j)
	}
	d.setFull(true)
	flagFlows(t, r, 1002, 1003, 1004)
	st := r.Stats()
	if st.WriteErrors != 3 || l.count("no space left on device") != 1 || st.Journeys != 9 {
		t.Errorf("stats %+v, log %q", st, l.lines)
	}
	if files := pcaps(t, dir); len(files) != 1 || !strings.Contains(files[0], "-1001_") {
		t.Errorf("files %v: the failed captures should leave no file", files)
	}
	// Space again: the next capture is written, and that is logged.
	d.setFull(false)
	flagFlows(t, r, 1005)
	for _, j := range journeys(t, data(1005, 1)) {
		r.Add(j)
	}
	if st := r.Stats(); st.FilesWritten != 2 || st.WriteErrors != 3 || l.count("works again") != 1 {
		t.Errorf("stats %+v, log %q", st, l.lines)
	}
	// Full in the middle of a file: the file keeps its whole blocks.
	flagFlows(t, r, 1006)
	d.setFull(true)
	for _, j := range journeys(t, data(1006, 1)) {
		r.Add(j)
	}
	files := pcaps(t, dir)
	if len(files) != 3 || !strings.Contains(files[2], "-1006_") {
		t.Fatalf("files %v", files)
	}
	if n := len(tsharkFields(t, files[2], nil, "frame.number")); n != 4 {
		t.Errorf("the file cut by the full disk has %d packets, want the 4 written before", n)
	}
	if st := r.Stats(); st.WriteErrors != 4 || l.count("no space left on device") != 2 {
		t.Errorf("stats %+v, log %q", st, l.lines)
	}
}

// A directory that is missing, not a directory, or not writable is refused at once,
// with what to do.
func TestRecorderDirErrors(t *testing.T) {
	dir := privateDir(t)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	denied := func(string) (exporter.CaptureFile, error) {
		return nil, &os.PathError{Op: "open", Path: dir, Err: syscall.EACCES}
	}
	for _, tc := range []struct {
		cfg  exporter.RecorderConfig
		want string
	}{
		{exporter.RecorderConfig{Dir: filepath.Join(dir, "missing")}, "does not exist: create it first"},
		{exporter.RecorderConfig{Dir: file}, "is not a directory"},
		{exporter.RecorderConfig{Dir: dir, Create: denied}, "is not writable: open " + dir + ": permission denied: give the agent write access"},
		{exporter.RecorderConfig{}, "none given"},
	} {
		r, err := exporter.NewRecorder(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) || r != nil {
			t.Errorf("dir %q: %v, want an error with %q", tc.cfg.Dir, err, tc.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the checks left files behind: %v", entries)
	}
	// A read-only directory for real; root writes anywhere.
	if os.Geteuid() == 0 {
		t.Log("running as root, which may write to a read-only directory: the injected EACCES above stands for it")
		return
	}
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o500)
	if _, err := exporter.NewRecorder(exporter.RecorderConfig{Dir: ro}); err == nil || !errors.Is(err, os.ErrPermission) {
		t.Errorf("read-only directory: %v", err)
	}
}

// A directory other users may write in, or that another user owns, is refused with
// the command that fixes it; one they may only read is closed to them, saying so; the
// owner's group may have access.
func TestRecorderPrivateDir(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		want string // "" for accepted
	}{
		{0o700, ""},
		{0o750, ""},
		{0o770, ""},
		{0o755, ""}, // made 0750, saying so
		{0o701, ""}, // made 0700
		{0o777, "has mode 0777: other users may write in it"},
		{0o777 | os.ModeSticky, "has mode 0777: other users may write in it"},
		{0o703, "has mode 0703: other users may write in it"},
	} {
		dir := privateDir(t)
		if err := os.Chmod(dir, tc.mode); err != nil {
			t.Fatal(err)
		}
		var logged []string
		logf := func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }
		r, err := exporter.NewRecorder(exporter.RecorderConfig{Dir: dir, Logf: logf})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("mode %v: %v, want it accepted", tc.mode, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "chmod o-rwx "+dir)):
			t.Errorf("mode %v: %v, want an error with %q and the chmod that fixes it", tc.mode, err, tc.want)
		}
		st, _ := os.Stat(dir)
		switch tight := tc.mode.Perm() &^ 0o007; {
		case tc.want != "" && st.Mode() != tc.mode|os.ModeDir:
			t.Errorf("mode %v refused: the directory is now %v, want it untouched", tc.mode, st.Mode())
		case tc.want == "" && st.Mode().Perm() != tight:
			t.Errorf("mode %v accepted: the directory is %v, want %04o", tc.mode, st.Mode(), tight)
		case tc.want == "" && tc.mode.Perm() != tight &&
			!slices.Contains(logged, fmt.Sprintf("pcap: directory %s had mode %04o, readable by other users: made it %04o", dir, tc.mode.Perm(), tight)):
			t.Errorf("mode %v: logged %q, want the change of mode said", tc.mode, logged)
		case tc.mode.Perm() == tight && len(logged) != 0:
			t.Errorf("mode %v: logged %q, want nothing", tc.mode, logged)
		}
		if r != nil {
			r.Close()
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("mode %v: the checks left files behind: %v", tc.mode, entries)
		}
	}
	// Another user's directory: as root, one chowned to nobody; otherwise root's own.
	other, uid := "/", 0
	if os.Geteuid() == 0 {
		other, uid = privateDir(t), 65534
		if err := os.Chown(other, uid, -1); err != nil {
			t.Fatal(err)
		}
	}
	want := fmt.Sprintf("belongs to uid %d, not to the agent's (%d), who could replace its files: chown %d %s", uid, os.Geteuid(), os.Geteuid(), other)
	if _, err := exporter.NewRecorder(exporter.RecorderConfig{Dir: other}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("another user's directory: %v, want an error with %q", err, want)
	}
}

// Links planted in the directory are never written through: a symlink at the name a
// capture would take (to another file, or dangling to where a file would be created)
// and at the start-up probe's name leave their targets as they were; the capture takes
// the next free name, and every file is 0600.
func TestRecorderSymlinks(t *testing.T) {
	// The name the capture takes, from a first run.
	r0, dir0, _ := newRecorder(t, exporter.RecorderConfig{})
	flagFlows(t, r0, 1001)
	r0.Close()
	first := pcaps(t, dir0)
	if len(first) != 1 {
		t.Fatalf("files %v, want one", first)
	}
	name := strings.TrimSuffix(filepath.Base(first[0]), ".pcapng")

	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("root's file"), 0o644); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(outside, "created")
	dir := privateDir(t)
	links := map[string]string{
		name + ".pcapng":   victim,
		name + "_2.pcapng": dangling,
		fmt.Sprintf(".pathtrace-write-test-%d", os.Getpid()): victim,
	}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	r, _, _ := newRecorder(t, exporter.RecorderConfig{Dir: dir})
	flagFlows(t, r, 1001)
	r.Close()
	if b, err := os.ReadFile(victim); err != nil || string(b) != "root's file" {
		t.Errorf("the link's target now holds %q (%v)", b, err)
	}
	if _, err := os.Lstat(dangling); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dangling link's target was created: %v", err)
	}
	for l, target := range links {
		if strings.HasPrefix(l, ".") {
			continue // the probe's name: removed (the link, not its target) and reused
		}
		if got, err := os.Readlink(filepath.Join(dir, l)); err != nil || got != target {
			t.Errorf("link %s: %q %v, want it left pointing at %s", l, got, err, target)
		}
	}
	files := pcaps(t, dir)
	want := filepath.Join(dir, name+"_3.pcapng")
	if !slices.Contains(files, want) {
		t.Fatalf("files %v, want the capture in %s", files, want)
	}
	for _, f := range append(files, first...) {
		st, err := os.Lstat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode()&os.ModeSymlink == 0 && st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", f, st.Mode().Perm())
		}
	}
	if n := len(tsharkFields(t, want, nil, "frame.number")); n == 0 {
		t.Errorf("%s holds no packet", want)
	}
}

// checkPage reads the page beside a capture file: it draws the file's journeys
// (packets of them), the flagged one's drop on cni0 marked (as step mark, after the
// veth hop) with the kernel's reason; and it is private (0600).
func checkPage(t *testing.T, pcap string, packets int, mark string) {
	t.Helper()
	page := strings.TrimSuffix(pcap, ".pcapng") + ".html"
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatalf("no page beside %s: %v", filepath.Base(pcap), err)
	}
	if fi, _ := os.Stat(page); fi.Mode().Perm() != 0o600 {
		t.Errorf("page mode %v, want 0600", fi.Mode().Perm())
	}
	s := string(b)
	if n := strings.Count(s, `<section class="packet"`); n != packets {
		t.Errorf("page draws %d packets, want %d", n, packets)
	}
	drop := `<g class="hop drop" data-hop="` + mark + `" data-node="node-a" data-ifname="cni0" data-kind="drop" data-dir="" data-mark="drop"`
	if strings.Count(s, `data-mark="drop"`) != 1 || !strings.Contains(s, drop) {
		t.Errorf("page has no single drop mark %s", drop)
	}
	for _, want := range []string{"flagged by drop", `data-ifname="veth3f8a2c1e"`, "NETFILTER_DROP at nft_do_chain+0x2c8"} {
		if !strings.Contains(s, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// A capture's page counts against MaxDirBytes and goes with its file when the file is
// deleted to make room.
func TestRecorderPageDeleted(t *testing.T) {
	r1, dir1, _ := newRecorder(t, exporter.RecorderConfig{PostAge: time.Millisecond})
	flagFlows(t, r1, 1001)
	r1.Close()
	one := r1.Stats().DirBytes
	if len(pcaps(t, dir1)) != 1 {
		t.Fatal("no capture")
	}
	checkPage(t, pcaps(t, dir1)[0], 2, "1")
	// Room for one capture and its page, not two: the first goes, page and all.
	r, dir, _ := newRecorder(t, exporter.RecorderConfig{PostAge: time.Millisecond, MaxDirBytes: one * 3 / 2})
	flagFlows(t, r, 1001, 1002)
	r.Close()
	st := r.Stats()
	all, _ := filepath.Glob(filepath.Join(dir, "*"))
	var total int64
	for _, f := range all {
		fi, _ := os.Stat(f)
		total += fi.Size()
	}
	if len(all) != 2 || !strings.Contains(all[0], "-1002_") || !strings.Contains(all[1], "-1002_") || st.FilesDeleted != 1 {
		t.Errorf("files %v, stats %+v", all, st)
	}
	if total != st.DirBytes || total > one*3/2 {
		t.Errorf("files take %d bytes, stats say %d, bound %d", total, st.DirBytes, one*3/2)
	}
}

// A flow flagged under a flood writes every packet to its file; its page draws the
// first pathview.DefaultMaxPackets and counts the rest (without encoding them).
func TestRecorderPageLeavesOut(t *testing.T) {
	const after = 205
	r, dir, _ := newRecorder(t, exporter.RecorderConfig{PostPackets: after})
	s := data(43512, 0)
	s.drop = true
	segs := []seg{s}
	for n := 1; n <= after; n++ {
		segs = append(segs, data(43512, n))
	}
	for _, j := range journeys(t, segs...) {
		r.Add(j)
	}
	r.Close()
	files := pcaps(t, dir)
	if len(files) != 1 {
		t.Fatalf("files %v", files)
	}
	b, err := os.ReadFile(strings.TrimSuffix(files[0], ".pcapng") + ".html")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	if n := strings.Count(page, `<section class="packet"`); n != pathview.DefaultMaxPackets {
		t.Errorf("page draws %d packets, want %d", n, pathview.DefaultMaxPackets)
	}
	left := len(segs) - pathview.DefaultMaxPackets
	if want := fmt.Sprintf("%d more packets left out: the page keeps the first %d.", left, pathview.DefaultMaxPackets); !strings.Contains(page, want) {
		t.Errorf("page lacks %q", want)
	}
	if n := len(tsharkFields(t, files[0], nil, "frame.number")); n < len(segs) {
		t.Errorf("the file holds %d packets, want every one of the %d journeys'", n, len(segs))
	}
}
