package exporter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter/pathview"
)

// Triggers: what flags a flow. A caller's own (Recorder.Flag) may be any word.
const (
	TriggerDrop       = "drop"       // a packet of the flow was dropped
	TriggerLost       = "lost"       // a packet vanished without a drop
	TriggerStall      = "stall"      // a packet stalled between two hops
	TriggerRetransmit = "retransmit" // TCP sent a sequence range of the flow again
)

// Limits, as RecorderStats.Skipped names them.
const (
	LimitOpenFiles = "max-open-files" // as many captures were being written already
	LimitFiles     = "max-files"      // the directory held MaxFiles of our files, none of them closed
	LimitDirBytes  = "max-dir-bytes"  // our files took MaxDirBytes, and deleting closed ones did not make room
	LimitFileBytes = "max-file-bytes" // the file reached MaxFileBytes and was closed early
	// LimitPageBytes: the flow's page (.html) did not fit in MaxDirBytes beside its
	// capture; the capture is kept without it.
	LimitPageBytes = "max-dir-bytes-page"
)

// CaptureFile is what a capture is written to; *os.File is one.
type CaptureFile interface {
	io.Writer
	Truncate(size int64) error
	Close() error
}

// RecorderConfig configures a Recorder. Zero fields take the defaults given; a
// negative count or duration removes that bound.
type RecorderConfig struct {
	// Dir is where the files go. It must exist, be writable, belong to the process's
	// user and give others no access (mode & 0o007 == 0): the files name flows and
	// hold packets, and whoever may write there could plant links and swap files.
	Dir   string
	Clock Clock // CLOCK_MONOTONIC to wall clock, for file names and packet times
	// SnapLen is how many bytes of each packet are kept at each hop; 0 means 128, and
	// decode.SnapFull keeps all that the kernel captured (whole packets in its
	// full-packet mode).
	SnapLen int
	// The history kept of every flow: at most PrePackets packets (journeys; each is
	// written at every hop it was seen at) no older than PreAge before the newest.
	// Defaults 64 and 10s.
	PrePackets int
	PreAge     time.Duration
	// After a trigger, the flow's packets go on to its file for PostPackets packets or
	// PostAge, whichever ends first; a later trigger starts the window again.
	// Defaults 64 and 5s.
	PostPackets int
	PostAge     time.Duration
	// MaxHistoryBytes bounds the memory of all flows' histories: packet bytes plus a
	// fixed cost per journey, hop and flow. The flows idle longest are evicted first.
	// Default 64 MiB.
	MaxHistoryBytes int64
	// Limits on the files: the size of one (it is closed when the next packet would
	// pass it), how many and how many bytes of ours the directory holds (the oldest
	// closed ones are deleted to make room; files we did not write are never counted
	// or deleted), and how many are written at once. Defaults 16 MiB, 100, 1 GiB, 16.
	MaxFileBytes int64
	MaxFiles     int
	MaxDirBytes  int64
	MaxOpenFiles int
	// Logf reports conditions once per occurrence (write errors, once until writes
	// work again); nil discards them.
	Logf func(format string, args ...any)
	// Create makes a new file; nil means creating it, mode 0600, in the directory the
	// recorder opened at start, with O_CREAT|O_EXCL|O_NOFOLLOW: never through a
	// symlink, never over an existing file. Tests inject failures here.
	Create func(path string) (CaptureFile, error)
}

// RecorderStats are the recorder's counters, for metrics.
type RecorderStats struct {
	Journeys     uint64            // journeys fed to Add
	Flagged      map[string]uint64 // triggers, by name (a journey, or a Flag call)
	FilesWritten uint64            // files created with at least one packet in them
	FilesDeleted uint64            // our files deleted to stay within MaxFiles and MaxDirBytes
	Skipped      map[string]uint64 // captures refused or cut short, by limit (Limit*)
	WriteErrors  uint64            // captures ended by an error creating or writing their file
	FlowsEvicted uint64            // flows whose history was dropped to stay within MaxHistoryBytes
	// Gauges.
	Flows        int   // flows with a history or an open file
	HistoryBytes int64 // memory the histories take, as MaxHistoryBytes counts it
	OpenFiles    int
	DirBytes     int64 // bytes in our files in the directory
}

// Recorder keeps a bounded history of every flow's recent packets and, when a flow is
// flagged, writes it to a pcapng file of its own in a directory: the packets from
// before the trigger, the one that flagged it, and those of a window after. When the
// file is closed, a page of the same name ending .html (package pathview) draws the
// journeys it holds, the flagged hop marked; the page counts against MaxDirBytes and
// is deleted with its file (MaxFiles counts the two as one).
//
// Flows are 5-tuples with both directions (and, where NAT translated a packet between
// hops, each translated tuple) sharing one record. A flow is flagged when one of its
// journeys is dropped, lost or stalls, when it is a TCP retransmission, or when the
// caller says so (Flag).
//
// A TCP retransmission is a segment whose sequence range (SYN and FIN counting one)
// overlaps one of the last 8 ranges of the same direction of the flow, from a journey
// of another packet. The per-packet identity already tells a retransmission from its
// original (see package decode); a segment resent within the original's journey
// timeout without a new IP ID and timestamp joins that journey and is not seen. TCP
// keepalives, which resend the last byte, count as retransmissions.
//
// Add, Flag, Expire and Close are meant for the goroutine that closes journeys; Stats
// may be called from any goroutine.
type Recorder struct {
	mu        sync.Mutex
	cfg       RecorderConfig
	dir       *os.Root                 // cfg.Dir as checked at start: files are made and removed in it
	flows     map[decode.Flow]*flowRec // by normalized tuple; a record may have several
	idle, act *flowRec                 // records without an open file, least recently active first
	captures  []*capture
	files     []*ownFile // our files, oldest first
	stats     RecorderStats
	nowNs     uint64 // the latest journey time seen
	failing   bool   // writes fail: logged once until one works again
}

// flowRec is one flow's history.
type flowRec struct {
	keys       [maxKeys]decode.Flow
	nkeys      int
	hist       []*decode.Journey // copies, in the order they were closed
	bytes      int64             // hist's cost, and the record's own
	lastNs     uint64
	seqs       [8]seqRange // the last TCP ranges sent, a ring
	nseq       int
	cap        *capture
	prev, next *flowRec
}

const maxKeys = 4

// seqRange is a TCP segment's sequence range, in the direction src sent it.
type seqRange struct {
	src      netip.AddrPort
	seq, len uint32
	id       uint64
}

type capture struct {
	rec      *flowRec
	file     *ownFile
	f        CaptureFile
	pw       *Pcap
	trigger  string
	startNs  uint64         // the trigger's time
	postLeft int            // packets still to write after the trigger; <0: no count bound
	page     *pathview.Page // the journeys written, drawn when the file is closed
	failed   bool           // a write or close failed: no page
}

type ownFile struct {
	path string
	size int64
	open bool
	// The capture's page, once written: its path and size ("", 0 before or without).
	page     string
	pageSize int64
}

// Costs counted against MaxHistoryBytes besides the packet bytes.
const (
	journeyCost = int64(unsafe.Sizeof(decode.Journey{})) + 16
	hopCost     = int64(unsafe.Sizeof(decode.Hop{}))
	outerCost   = int64(unsafe.Sizeof(decode.Outer{}))
	flowCost    = int64(unsafe.Sizeof(flowRec{})) + maxKeys*(int64(unsafe.Sizeof(decode.Flow{}))+16)
)

// NewRecorder checks that the directory exists, is private to the process's user (see
// RecorderConfig.Dir) and takes a new file, and returns a recorder writing there. The
// directory stays open until Close: files are created and deleted relative to it.
func NewRecorder(cfg RecorderConfig) (*Recorder, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def64 := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.SnapLen, 128)
	cfg.SnapLen = min(cfg.SnapLen, decode.SnapFull)
	def(&cfg.PrePackets, 64)
	defDur(&cfg.PreAge, 10*time.Second)
	def(&cfg.PostPackets, 64)
	defDur(&cfg.PostAge, 5*time.Second)
	def64(&cfg.MaxHistoryBytes, 64<<20)
	def64(&cfg.MaxFileBytes, 16<<20)
	def(&cfg.MaxFiles, 100)
	def64(&cfg.MaxDirBytes, 1<<30)
	def(&cfg.MaxOpenFiles, 16)
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Dir == "" {
		return nil, errors.New("pcap directory: none given")
	}
	// The directory is opened once and everything after works relative to that
	// descriptor, so the directory checked is the one written to, whatever its path
	// names later.
	st, err := os.Stat(cfg.Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("pcap directory %s does not exist: create it first (mkdir -m 0700 %s)", cfg.Dir, cfg.Dir)
	case err != nil:
		return nil, fmt.Errorf("pcap directory %s: %w", cfg.Dir, err)
	case !st.IsDir():
		return nil, fmt.Errorf("pcap directory %s is not a directory", cfg.Dir)
	}
	dir, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("pcap directory %s: %w", cfg.Dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			dir.Close()
		}
	}()
	if err := checkPrivateDir(dir, cfg.Dir, cfg.Logf); err != nil {
		return nil, err
	}
	if cfg.Create == nil {
		cfg.Create = func(path string) (CaptureFile, error) {
			return dir.OpenFile(filepath.Base(path), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		}
	}
	probe := filepath.Join(cfg.Dir, fmt.Sprintf(".pathtrace-write-test-%d", os.Getpid()))
	f, err := cfg.Create(probe)
	if errors.Is(err, fs.ErrExist) { // left by a killed run of the same pid
		dir.Remove(filepath.Base(probe))
		f, err = cfg.Create(probe)
	}
	if err != nil {
		return nil, fmt.Errorf("pcap directory %s is not writable: %w: give the agent write access or choose another directory", cfg.Dir, err)
	}
	_, err = f.Write([]byte("pathtrace"))
	err = errors.Join(err, f.Close(), dir.Remove(filepath.Base(probe)))
	if err != nil {
		return nil, fmt.Errorf("pcap directory %s is not writable: %w: give the agent write access or choose another directory", cfg.Dir, err)
	}
	ok = true
	return &Recorder{cfg: cfg, dir: dir, flows: make(map[decode.Flow]*flowRec),
		stats: RecorderStats{Flagged: map[string]uint64{}, Skipped: map[string]uint64{}}}, nil
}

// checkPrivateDir refuses a capture directory that others may write in, or that
// another user owns: its files name flows and hold packets, and whoever may write in
// it can plant links and swap files under a process running as root. One of the
// process's own that others may only read or search (0755, as the kubelet creates a
// missing hostPath directory) is closed to them, and logf says so: nobody else could
// have put anything in it.
func checkPrivateDir(dir *os.Root, name string, logf func(string, ...any)) error {
	st, err := dir.Stat(".")
	if err != nil {
		return fmt.Errorf("pcap directory %s: %w", name, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("pcap directory %s is not a directory", name)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if uid := os.Geteuid(); sys.Uid != uint32(uid) {
			return fmt.Errorf("pcap directory %s belongs to uid %d, not to the agent's (%d), who could replace its files: chown %d %s, or choose a directory of the agent's own", name, sys.Uid, uid, uid, name)
		}
	}
	perm := st.Mode().Perm()
	if perm&0o002 != 0 {
		return fmt.Errorf("pcap directory %s has mode %04o: other users may write in it, and its files name flows and hold packets: chmod o-rwx %s (0700 is best), after checking what others left in it", name, perm, name)
	}
	if perm&0o007 != 0 {
		tight := perm &^ 0o007
		if err := dir.Chmod(".", tight|st.Mode()&(fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return fmt.Errorf("pcap directory %s has mode %04o: other users may read it, and its files name flows and hold packets; making it %04o failed: %w: chmod o-rwx %s (0700 is best)", name, perm, tight, err, name)
		}
		logf("pcap: directory %s had mode %04o, readable by other users: made it %04o", name, perm, tight)
	}
	return nil
}

// Stats returns the counters so far.
func (r *Recorder) Stats() RecorderStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Flagged, s.Skipped = maps(r.stats.Flagged), maps(r.stats.Skipped)
	s.OpenFiles = len(r.captures)
	for _, f := range r.files {
		s.DirBytes += f.size + f.pageSize
	}
	return s
}

func maps(m map[string]uint64) map[string]uint64 {
	c := make(map[string]uint64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// normalize orders a flow's ends so that both directions give the same key.
func normalize(f decode.Flow) decode.Flow {
	if f.Src.Compare(f.Dst) > 0 {
		return f.Reverse()
	}
	return f
}

// Add files a closed journey: into its flow's open file, or into the flow's history,
// and starts a file when the journey flags the flow. It copies what it keeps, so the
// journey can be released after. It returns the trigger, "" if none.
func (r *Recorder) Add(j *decode.Journey) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Journeys++
	first := j.FirstNs()
	if first > r.nowNs {
		r.nowNs = first
	}
	r.expireCaptures(r.nowNs)
	rec := r.record(j)
	trigger := r.trigger(j, rec)
	rec.lastNs = max(rec.lastNs, first)
	if trigger != "" {
		r.stats.Flagged[trigger]++
	}
	if c := rec.cap; c != nil {
		if trigger != "" {
			r.extend(c, first)
		}
		r.write(c, j)
		if c.postLeft == 0 {
			r.finish(c)
		}
		return trigger
	}
	if trigger != "" {
		r.start(rec, trigger, j.Flow, first, j)
		return trigger
	}
	r.keep(rec, j)
	return ""
}

// Flag starts a file for the flow of f (either direction) as if one of its journeys had
// flagged it, with its history, or extends its post window if it has a file already.
// trigger names it in the file name; it should be a short word.
func (r *Recorder) Flag(f decode.Flow, trigger string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	trigger = safeName(trigger)
	r.stats.Flagged[trigger]++
	rec := r.flows[normalize(f)]
	if rec == nil {
		rec = r.newRecord([]decode.Flow{normalize(f)})
	}
	if rec.cap != nil {
		r.extend(rec.cap, r.nowNs)
		return
	}
	r.start(rec, trigger, f, r.nowNs, nil)
}

// Expire closes the files whose post window has ended, and forgets flows with no
// packet for PreAge, as of nowNs (CLOCK_MONOTONIC). Call it on a tick.
func (r *Recorder) Expire(nowNs uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if nowNs > r.nowNs {
		r.nowNs = nowNs
	}
	r.expireCaptures(nowNs)
	if r.cfg.PreAge < 0 {
		return
	}
	for rec := r.idle; rec != nil && rec.lastNs+uint64(r.cfg.PreAge) < nowNs; rec = r.idle {
		r.drop(rec)
	}
}

// Close ends every open file and lets go of the directory; a capture started after it
// fails and is counted as a write error.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for len(r.captures) > 0 {
		if err := r.finish(r.captures[0]); err != nil {
			errs = append(errs, err)
		}
	}
	if r.dir != nil {
		r.dir.Close()
		r.dir = nil
	}
	return errors.Join(errs...)
}

// record finds the journey's flow record, by any of the tuples its hops saw, and makes
// one if there is none. The tuples it did not know yet become its keys too.
func (r *Recorder) record(j *decode.Journey) *flowRec {
	var keys [maxKeys + 1]decode.Flow
	n := 0
	addKey := func(f decode.Flow) {
		f = normalize(f)
		if n < len(keys) && !slices.Contains(keys[:n], f) {
			keys[n] = f
			n++
		}
	}
	addKey(j.Flow)
	for i := range j.Hops {
		addKey(j.Hops[i].Flow)
	}
	var rec *flowRec
	for _, k := range keys[:n] {
		if rec = r.flows[k]; rec != nil {
			break
		}
	}
	if rec == nil {
		return r.newRecord(keys[:min(n, maxKeys)])
	}
	for _, k := range keys[:n] {
		if rec.nkeys < maxKeys && r.flows[k] == nil {
			rec.keys[rec.nkeys] = k
			rec.nkeys++
			r.flows[k] = rec
		}
	}
	if rec.cap == nil {
		r.unlink(rec)
		r.link(rec)
	}
	return rec
}

func (r *Recorder) newRecord(keys []decode.Flow) *flowRec {
	rec := &flowRec{bytes: flowCost}
	rec.nkeys = copy(rec.keys[:], keys)
	for _, k := range keys {
		r.flows[k] = rec
	}
	r.stats.Flows++
	r.stats.HistoryBytes += rec.bytes
	r.link(rec)
	return rec
}

// link appends rec to the idle records as the most recently active one.
func (r *Recorder) link(rec *flowRec) {
	rec.prev, rec.next = r.act, nil
	if r.act == nil {
		r.idle = rec
	} else {
		r.act.next = rec
	}
	r.act = rec
}

func (r *Recorder) unlink(rec *flowRec) {
	if rec.prev == nil {
		r.idle = rec.next
	} else {
		rec.prev.next = rec.next
	}
	if rec.next == nil {
		r.act = rec.prev
	} else {
		rec.next.prev = rec.prev
	}
	rec.prev, rec.next = nil, nil
}

// drop forgets a record without an open file.
func (r *Recorder) drop(rec *flowRec) {
	r.unlink(rec)
	for _, k := range rec.keys[:rec.nkeys] {
		delete(r.flows, k)
	}
	r.stats.Flows--
	r.stats.HistoryBytes -= rec.bytes
	rec.hist, rec.bytes = nil, 0
}

// trigger says what, if anything, the journey flags its flow for, and notes its TCP
// sequence range.
func (r *Recorder) trigger(j *decode.Journey, rec *flowRec) string {
	retransmit := false
	if j.Flow.Proto == decode.ProtoTCP && j.SegLen > 0 {
		for _, s := range rec.seqs[:min(rec.nseq, len(rec.seqs))] {
			if s.src != j.Flow.Src || s.id == j.ID {
				continue
			}
			// The ranges overlap, in sequence-number arithmetic (mod 2^32).
			if j.Seq-s.seq < s.len || s.seq-j.Seq < j.SegLen {
				retransmit = true
			}
		}
		rec.seqs[rec.nseq%len(rec.seqs)] = seqRange{src: j.Flow.Src, seq: j.Seq, len: j.SegLen, id: j.ID}
		rec.nseq++
	}
	switch {
	case j.Verdict == decode.Dropped:
		return TriggerDrop
	case j.Verdict == decode.Lost:
		return TriggerLost
	case j.Stall != nil:
		return TriggerStall
	case retransmit:
		return TriggerRetransmit
	}
	return ""
}

// keep adds a copy of the journey to the flow's history, within the bounds.
func (r *Recorder) keep(rec *flowRec, j *decode.Journey) {
	c, cost := r.copyJourney(j)
	rec.hist = append(rec.hist, c)
	rec.bytes += cost
	r.stats.HistoryBytes += cost
	r.trim(rec, j.FirstNs())
	for r.stats.HistoryBytes > r.cfg.MaxHistoryBytes {
		old := r.idle
		if old == nil {
			break
		}
		if old == rec {
			// The flow itself is the oldest: it loses its oldest packets.
			if len(rec.hist) == 0 {
				break
			}
			r.shift(rec)
			continue
		}
		r.drop(old)
		r.stats.FlowsEvicted++
	}
}

// trim drops the history older than the pre bounds as of nowNs.
func (r *Recorder) trim(rec *flowRec, nowNs uint64) {
	for len(rec.hist) > 0 {
		h := rec.hist[0]
		tooMany := r.cfg.PrePackets >= 0 && len(rec.hist) > r.cfg.PrePackets
		tooOld := r.cfg.PreAge >= 0 && h.FirstNs()+uint64(r.cfg.PreAge) < nowNs
		if !tooMany && !tooOld {
			return
		}
		r.shift(rec)
	}
}

// shift drops the oldest journey of the history.
func (r *Recorder) shift(rec *flowRec) {
	cost := journeyBytes(rec.hist[0])
	rec.hist[0] = nil
	rec.hist = rec.hist[1:]
	rec.bytes -= cost
	r.stats.HistoryBytes -= cost
}

// copyJourney copies what the file needs of a journey, its bytes cut to SnapLen, with
// what the copy costs. The NAT, conntrack and rule records are shared: the assembler
// makes new ones for every journey and never reuses them.
func (r *Recorder) copyJourney(j *decode.Journey) (*decode.Journey, int64) {
	n := 0
	for i := range j.Hops {
		n += min(len(j.Hops[i].Data), r.cfg.SnapLen)
	}
	if j.Drop != nil {
		n += min(len(j.Drop.Data), r.cfg.SnapLen)
	}
	data := make([]byte, 0, n)
	keep := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		at := len(data)
		data = append(data, b[:min(len(b), r.cfg.SnapLen)]...)
		return data[at:len(data):len(data)]
	}
	c := *j
	c.Hops = slices.Clone(j.Hops)
	for i := range c.Hops {
		h := &c.Hops[i]
		h.Data = keep(h.Data)
		if h.Outer != nil {
			o := *h.Outer
			h.Outer = &o
		}
	}
	if j.Drop != nil {
		d := *j.Drop
		d.Data = keep(d.Data)
		c.Drop = &d
	}
	if j.CopyDrop != nil {
		d := *j.CopyDrop
		d.Data = nil
		c.CopyDrop = &d
	}
	if j.Stall != nil {
		s := *j.Stall
		c.Stall = &s
	}
	return &c, journeyBytes(&c)
}

// journeyBytes is what a kept journey counts against MaxHistoryBytes.
func journeyBytes(j *decode.Journey) int64 {
	n := journeyCost + int64(cap(j.Hops))*hopCost
	for i := range j.Hops {
		n += int64(len(j.Hops[i].Data))
		if j.Hops[i].Outer != nil {
			n += outerCost
		}
	}
	if j.Drop != nil {
		n += int64(unsafe.Sizeof(*j.Drop)) + int64(len(j.Drop.Data))
	}
	return n
}

// start opens a file for the flow, with its history and the journey that flagged it
// (nil when the caller flagged it).
func (r *Recorder) start(rec *flowRec, trigger string, f decode.Flow, atNs uint64, j *decode.Journey) {
	refused := func(limit string) {
		r.stats.Skipped[limit]++
		if j != nil {
			r.keep(rec, j)
		}
	}
	if len(r.captures) >= r.cfg.MaxOpenFiles {
		refused(LimitOpenFiles)
		return
	}
	if len(r.files) >= r.cfg.MaxFiles && !r.deleteOldest() {
		refused(LimitFiles)
		return
	}
	name := r.fileName(f, trigger, atNs)
	var file CaptureFile
	var path string
	var err error
	for i := 1; i <= 100; i++ {
		path = filepath.Join(r.cfg.Dir, name+".pcapng")
		if i > 1 {
			path = filepath.Join(r.cfg.Dir, fmt.Sprintf("%s_%d.pcapng", name, i))
		}
		if file, err = r.cfg.Create(path); !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		r.writeFailed(fmt.Errorf("create %s: %w", path, err))
		if j != nil {
			r.keep(rec, j)
		}
		return
	}
	hist := rec.hist
	r.stats.HistoryBytes -= rec.bytes - flowCost
	rec.hist, rec.bytes = nil, flowCost
	c := &capture{rec: rec, f: file, trigger: trigger, file: &ownFile{path: path, open: true},
		pw: NewPcap(file, PcapConfig{Clock: r.cfg.Clock, SnapLen: r.cfg.SnapLen, MaxBytes: r.cfg.MaxFileBytes,
			Comment: fmt.Sprintf("pathtrace: %s %s -> %s, flagged by %s", decode.ProtoName(f.Proto),
				f.Endpoint(f.Src), f.Endpoint(f.Dst), trigger)})}
	c.page = pathview.New(fmt.Sprintf("pathtrace capture: %s %s -> %s, flagged by %s", decode.ProtoName(f.Proto),
		f.Endpoint(f.Src), f.Endpoint(f.Dst), trigger))
	r.files = append(r.files, c.file)
	r.captures = append(r.captures, c)
	r.unlink(rec)
	rec.cap = c
	r.extend(c, atNs)
	// The history from before the trigger, within the pre bounds as of the trigger.
	slices.SortStableFunc(hist, func(a, b *decode.Journey) int { return cmpNs(a.FirstNs(), b.FirstNs()) })
	for _, h := range hist {
		if r.cfg.PreAge >= 0 && h.FirstNs()+uint64(r.cfg.PreAge) < atNs {
			continue
		}
		if !r.write(c, h) {
			return
		}
	}
	if j != nil {
		r.write(c, j)
	}
}

func cmpNs(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// extend starts the capture's post window at atNs.
func (r *Recorder) extend(c *capture, atNs uint64) {
	c.startNs = max(c.startNs, atNs)
	c.postLeft = r.cfg.PostPackets
}

// write writes one journey to the capture's file and reports whether the capture goes
// on. A journey after the flagged one counts against the post window.
func (r *Recorder) write(c *capture, j *decode.Journey) bool {
	if j.FirstNs() > c.startNs && c.postLeft > 0 {
		c.postLeft--
	}
	// Room in the directory: the oldest closed files go first.
	need := pcapEstimate(j)
	for r.ownBytes()+need > r.cfg.MaxDirBytes {
		if !r.deleteOldest() {
			break
		}
	}
	room := r.cfg.MaxDirBytes - r.ownBytes()
	limit, dirBound := r.cfg.MaxFileBytes, false
	if c.file.size+room < limit {
		limit, dirBound = c.file.size+room, true
	}
	c.pw.cfg.MaxBytes = max(limit, 1) // 0 would be no bound
	before := c.pw.Packets()
	err := c.pw.Write(j)
	c.file.size = c.pw.Size()
	if before == 0 && c.pw.Packets() > 0 {
		r.stats.FilesWritten++
	}
	switch {
	case errors.Is(err, ErrPcapFull):
		if dirBound {
			r.stats.Skipped[LimitDirBytes]++
		} else {
			r.stats.Skipped[LimitFileBytes]++
		}
		r.finish(c)
		return false
	case err != nil:
		r.writeFailed(err)
		// Whole blocks only: cut what a short write left.
		c.f.Truncate(c.file.size)
		c.failed = true
		r.finish(c)
		return false
	}
	// The page draws the first packets only: past them, counting is enough (a flow
	// flagged under a flood writes every packet, and encoding each one for the page
	// to decode was a third of the capture's time).
	if c.page.Full() {
		c.page.LeaveOut()
	} else if line, err := json.Marshal(ToJSON(j, r.cfg.Clock)); err == nil {
		c.page.Write(append(line, '\n'))
	}
	if r.failing {
		r.failing = false
		r.cfg.Logf("pcap: writing to %s works again; captures go on", r.cfg.Dir)
	}
	return true
}

// pcapEstimate bounds the bytes a journey takes in a file: per packet, its block with
// a comment and a new interface.
func pcapEstimate(j *decode.Journey) int64 {
	n := int64(0)
	for i := range j.Hops {
		if d := len(j.Hops[i].Data); d > 0 {
			n += int64(d) + 768
		}
	}
	if j.Drop != nil {
		n += int64(len(j.Drop.Data)) + 768
	}
	return n + 256 // the section header
}

// writeFailed counts a failed capture and logs the first of a series.
func (r *Recorder) writeFailed(err error) {
	r.stats.WriteErrors++
	if !r.failing {
		r.failing = true
		r.cfg.Logf("pcap: %v: captures stop until writes work again (tracing goes on)", err)
	}
}

// finish closes a capture's file; its flow goes back to keeping a history.
func (r *Recorder) finish(c *capture) error {
	i := slices.Index(r.captures, c)
	if i < 0 {
		return nil
	}
	r.captures = slices.Delete(r.captures, i, i+1)
	c.file.open = false
	err := c.f.Close()
	if err != nil {
		r.writeFailed(fmt.Errorf("close %s: %w", c.file.path, err))
	}
	switch {
	case c.pw.Packets() == 0:
		// Nothing got in: no file is better than an empty one.
		r.forget(c.file)
	case err == nil && !c.failed && c.page.Packets() > 0:
		r.writePage(c)
	}
	c.page = nil
	c.rec.cap = nil
	r.link(c.rec)
	return err
}

// writePage writes a closed capture's page beside its file, within MaxDirBytes: the
// oldest closed captures are deleted to make room, unless even deleting all of them
// would not.
func (r *Recorder) writePage(c *capture) {
	var buf bytes.Buffer
	if err := c.page.Render(&buf); err != nil {
		r.writeFailed(fmt.Errorf("render the page of %s: %w", c.file.path, err))
		return
	}
	need := int64(buf.Len())
	kept := int64(0) // what deleting every other closed capture would leave
	for _, f := range r.files {
		if f.open || f == c.file {
			kept += f.size + f.pageSize
		}
	}
	if kept+need > r.cfg.MaxDirBytes {
		r.stats.Skipped[LimitPageBytes]++
		return
	}
	for r.ownBytes()+need > r.cfg.MaxDirBytes {
		if !r.deleteOldest() {
			break
		}
	}
	path := strings.TrimSuffix(c.file.path, ".pcapng") + ".html"
	f, err := r.cfg.Create(path)
	if err != nil {
		r.writeFailed(fmt.Errorf("create %s: %w", path, err))
		return
	}
	_, err = f.Write(buf.Bytes())
	if err = errors.Join(err, f.Close()); err != nil {
		r.remove(path) // no half page
		r.writeFailed(fmt.Errorf("write %s: %w", path, err))
		return
	}
	c.file.page, c.file.pageSize = path, need
}

// expireCaptures closes the captures whose post window ended by nowNs.
func (r *Recorder) expireCaptures(nowNs uint64) {
	if r.cfg.PostAge < 0 {
		return
	}
	for i := 0; i < len(r.captures); {
		c := r.captures[i]
		if nowNs >= c.startNs && nowNs-c.startNs >= uint64(r.cfg.PostAge) {
			r.finish(c)
			continue
		}
		i++
	}
}

func (r *Recorder) ownBytes() int64 {
	n := int64(0)
	for _, f := range r.files {
		n += f.size + f.pageSize
	}
	return n
}

// deleteOldest deletes our oldest closed file; false if there is none.
func (r *Recorder) deleteOldest() bool {
	for _, f := range r.files {
		if f.open {
			continue
		}
		if err := r.remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.cfg.Logf("pcap: delete %s to make room: %v", f.path, err)
		}
		if f.page != "" {
			if err := r.remove(f.page); err != nil && !errors.Is(err, fs.ErrNotExist) {
				r.cfg.Logf("pcap: delete %s to make room: %v", f.page, err)
			}
		}
		r.forget(f)
		r.stats.FilesDeleted++
		return true
	}
	return false
}

// remove deletes one of our files, in the directory opened at start (a link that
// replaced the directory's path is not followed).
func (r *Recorder) remove(path string) error {
	if r.dir == nil {
		return os.ErrClosed
	}
	return r.dir.Remove(filepath.Base(path))
}

// forget removes a file from ours; an open one (an empty capture) is deleted too.
func (r *Recorder) forget(f *ownFile) {
	if f.size == 0 {
		r.remove(f.path)
	}
	if i := slices.Index(r.files, f); i >= 0 {
		r.files = slices.Delete(r.files, i, i+1)
	}
}

// fileName is time_proto_src_dst_trigger, in UTC to the millisecond, with the
// addresses made safe for any file system: 20261126T131722.123Z_tcp_10.244.1.23-46322_10.244.1.42-6379_drop.
func (r *Recorder) fileName(f decode.Flow, trigger string, atNs uint64) string {
	t := time.Unix(0, r.cfg.Clock.Wall(atNs)).UTC().Format("20060102T150405.000Z")
	end := func(ap netip.AddrPort) string {
		s := strings.ReplaceAll(ap.Addr().Unmap().String(), ":", ".")
		if f.Proto == decode.ProtoTCP || f.Proto == decode.ProtoUDP {
			s += fmt.Sprintf("-%d", ap.Port())
		}
		return s
	}
	return t + "_" + safeName(decode.ProtoName(f.Proto)) + "_" + end(f.Src) + "_" + end(f.Dst) + "_" + safeName(trigger)
}

// safeName keeps letters, digits and dashes, lower case, at most 32.
func safeName(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if b.Len() == 32 {
			break
		}
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "flag"
	}
	return b.String()
}
