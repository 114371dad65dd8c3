package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/decode/diagnose"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/tracer"
)

// runner feeds the tracer's events to the assembler and the finished journeys to the
// writer, and reports losses as they happen.
type runner struct {
	asm    *decode.Assembler
	watch  *decode.FlowWatch // nil: one-way detection off
	expl   *explainer        // nil: drops are not explained
	diag   *diagnose.Diagnoser
	out    exporter.Writer
	tr     *tracer.Tracer
	stderr io.Writer
	limit  int // journeys to print; 0 no limit

	written  int
	lastLost uint64
	lostSeen uint64 // the tracer's losses already told to the assembler
}

var errLimit = fmt.Errorf("journey limit reached")

func (r *runner) emit(js []*decode.Journey) error {
	if r.expl != nil {
		r.expl.Explain(js)
	}
	if r.diag != nil {
		r.diag.Diagnose(js)
	}
	for _, j := range js {
		if r.limit > 0 && r.written >= r.limit {
			return errLimit
		}
		if err := r.out.Write(j); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		r.written++
		if r.watch != nil {
			r.watch.Observe(j)
		}
		r.asm.Release(j)
	}
	if r.limit > 0 && r.written >= r.limit {
		return errLimit
	}
	return nil
}

func (r *runner) loop(ctx context.Context, duration time.Duration) error {
	var deadline <-chan time.Time
	if duration > 0 {
		tm := time.NewTimer(duration)
		defer tm.Stop()
		deadline = tm.C
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	lossCheck := time.NewTicker(time.Second)
	defer lossCheck.Stop()

	err := func() error {
		for {
			select {
			case ev, ok := <-r.tr.Events():
				if !ok {
					return nil
				}
				if err := r.emit(r.asm.Add(&ev)); err != nil {
					return err
				}
			case <-tick.C:
				now := monoNow()
				// Events lost meanwhile make the journeys in flight incomplete, not lost.
				if s := r.tr.Stats(); s.KernelLostTotal()+s.QueueDrops > r.lostSeen {
					r.asm.EventsLost(s.KernelLostTotal()+s.QueueDrops-r.lostSeen, now)
					r.lostSeen = s.KernelLostTotal() + s.QueueDrops
				}
				if err := r.emit(r.asm.Expire(now)); err != nil {
					return err
				}
				if err := r.emitOneWay(now); err != nil {
					return err
				}
			case <-lossCheck.C:
				r.reportLoss(false)
			case <-deadline:
				return nil
			case <-ctx.Done():
				return nil
			}
		}
	}()
	// Detach first, so nothing new arrives, then take what the kernel already wrote.
	cerr := r.tr.Close()
	if err == nil {
		for ev := range r.tr.Events() {
			if err = r.emit(r.asm.Add(&ev)); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = r.emit(r.asm.Flush(monoNow()))
	}
	if err == nil {
		err = r.emitOneWay(monoNow())
	}
	r.reportLoss(true)
	if err == errLimit {
		err = nil
	}
	if err == nil && cerr != nil {
		err = cerr
	}
	return err
}

// emitOneWay writes the connections that waited long enough for an answer.
func (r *runner) emitOneWay(nowNs uint64) error {
	if r.watch == nil {
		return nil
	}
	for _, o := range r.watch.Expire(nowNs) {
		if r.diag != nil {
			o.Diagnosis = r.diag.OneWay(o)
		}
		if err := r.out.WriteOneWay(o); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	return nil
}

// reportLoss warns when events were lost since the last report, and sums up at the end.
func (r *runner) reportLoss(final bool) {
	s := r.tr.Stats()
	a := r.asm.Stats()
	lost := s.KernelLostTotal() + s.QueueDrops + a.Evicted
	if !final {
		if lost > r.lastLost {
			fmt.Fprintf(r.stderr, "pathtrace: WARNING: %d events lost in the last second (%s)\n", lost-r.lastLost, lossDetail(s, a))
		}
		r.lastLost = lost
		return
	}
	fmt.Fprintf(r.stderr, "pathtrace: %d journeys; %d events received, %s\n", r.written, s.Received, lossDetail(s, a))
}

func lossDetail(s tracer.Stats, a decode.Stats) string {
	var per []string
	for slot, cpus := range s.KernelLost {
		if slot >= 3 {
			break // the agent's own slots (drop budget, full map): always 0 here
		}
		name := tracer.LostSlotNames[slot]
		var parts []string
		for cpu, v := range cpus {
			parts = append(parts, fmt.Sprintf("cpu%d=%d", cpu, v))
		}
		per = append(per, name+": "+strings.Join(parts, " "))
	}
	return fmt.Sprintf("lost: %d in the kernel (ring buffer full; %s), %d in the user queue, %d undecodable, %d journeys evicted",
		s.KernelLostTotal(), strings.Join(per, "; "), s.QueueDrops, s.BadRecords+a.Unparsable, a.Evicted)
}
