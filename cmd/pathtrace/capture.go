package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/tracer"
)

// captureOpts are the agent's --pcap-* flags.
type captureOpts struct {
	dir          string
	snaplen      int
	pre          int
	preAge       time.Duration
	post         int
	postAge      time.Duration
	historyBytes int64
	maxFileBytes int64
	maxFiles     int
	maxDirBytes  int64
	timeout      time.Duration
	stall        time.Duration
}

func (c *captureOpts) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.dir, "pcap-dir", "", "keep a bounded history of every flow's recent packets and write a flagged flow's (drop, lost, stall, retransmit) to a pcapng file in this directory, with a page drawing its journeys beside it (.html)")
	fs.IntVar(&c.snaplen, "pcap-snaplen", 128, fmt.Sprintf("bytes kept of each packet at each hop, 64..%d (the kernel copies as many; above %d, whole packets up to that size)", decode.SnapFull, decode.SnapMax))
	fs.IntVar(&c.pre, "pcap-pre", 64, "packets of a flow kept from before its trigger")
	fs.DurationVar(&c.preAge, "pcap-pre-age", 10*time.Second, "and no older than this before the newest")
	fs.IntVar(&c.post, "pcap-post", 64, "packets written after the trigger")
	fs.DurationVar(&c.postAge, "pcap-post-age", 5*time.Second, "or for this long after it, whichever ends first")
	fs.Int64Var(&c.historyBytes, "pcap-history-bytes", 64<<20, "memory bound on all flows' histories; the flows idle longest go first")
	fs.Int64Var(&c.maxFileBytes, "pcap-max-file-bytes", 16<<20, "a capture file is closed at this size")
	fs.IntVar(&c.maxFiles, "pcap-max-files", 100, "files kept in --pcap-dir; the oldest of ours are deleted first")
	fs.Int64Var(&c.maxDirBytes, "pcap-max-dir-bytes", 1<<30, "bytes of our files (captures and their pages) kept in --pcap-dir; the oldest are deleted first")
	fs.DurationVar(&c.timeout, "pcap-timeout", 500*time.Millisecond, "a captured packet with no further event for this long is judged (lost if nothing ended it)")
	fs.DurationVar(&c.stall, "pcap-stall", 10*time.Millisecond, "a hop-to-hop delay above this flags the flow as stalled (0: off)")
}

func (c *captureOpts) validate() error {
	if c.dir == "" {
		return nil
	}
	if c.snaplen < 64 || c.snaplen > decode.SnapFull {
		return fmt.Errorf("--pcap-snaplen %d: want 64..%d", c.snaplen, decode.SnapFull)
	}
	if c.timeout <= 0 {
		return fmt.Errorf("--pcap-timeout %v: want more than 0", c.timeout)
	}
	return nil
}

// capture is the agent's flight recorder: a follower of every flow, in the last slot so
// that the kernel names a real follower's slot first, whose journeys go to a Recorder.
// The Recorder locks itself: the metrics read its stats while this feeds it.
type capture struct {
	rec    *exporter.Recorder
	events chan decode.Event
}

// captureSlot is the selector slot of the capture: the last.
const captureSlot = tracer.MaxSelectors - 1

func newCapture(o *captureOpts, log *slog.Logger) (*capture, error) {
	rec, err := exporter.NewRecorder(exporter.RecorderConfig{
		Dir: o.dir, Clock: exporter.Clock{OffsetNs: time.Now().UnixNano() - int64(monoNow())},
		SnapLen: o.snaplen, PrePackets: o.pre, PreAge: o.preAge, PostPackets: o.post, PostAge: o.postAge,
		MaxHistoryBytes: o.historyBytes, MaxFileBytes: o.maxFileBytes, MaxFiles: o.maxFiles, MaxDirBytes: o.maxDirBytes,
		Logf: func(format string, args ...any) {
			log.Warn("capture: "+fmt.Sprintf(format, args...), "dir", o.dir)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("--pcap-dir: %w", err)
	}
	return &capture{rec: rec, events: make(chan decode.Event, 16384)}, nil
}

// run assembles the captured events into journeys and feeds them to the recorder,
// until ctx ends; then it closes the files.
func (c *capture) run(ctx context.Context, asm *decode.Assembler, flagged *flagCounter, ifaces func() []decode.Iface) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	names := time.NewTicker(time.Second)
	defer names.Stop()
	feed := func(js []*decode.Journey) {
		for _, j := range js {
			flagJourney(flagged, j)
			c.rec.Add(j)
			asm.Release(j)
		}
	}
	for {
		select {
		case <-ctx.Done():
			feed(asm.Flush(monoNow()))
			c.rec.Close()
			return
		case ev := <-c.events:
			if ev.Kind == decode.KindRetrans {
				if f, ok := ev.CTOrig.Flow(); ok {
					c.rec.Flag(f, exporter.TriggerRetransmit)
				}
				continue
			}
			feed(asm.Add(&ev))
		case <-names.C:
			// Pods come and go: their veths' names.
			if is := ifaces(); is != nil {
				asm.SetIfaces(is)
			}
		case <-tick.C:
			now := monoNow()
			feed(asm.Expire(now))
			c.rec.Expire(now)
		}
	}
}
