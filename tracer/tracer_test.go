package tracer

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/pathtrace/pathtrace/decode"
)

// fakeRing hands out n valid records, one undecodable one, then reports closed.
type fakeRing struct {
	n, i int
}

func (f *fakeRing) ReadInto(r *ringbuf.Record) error {
	f.i++
	switch {
	case f.i <= f.n:
		ev := decode.Event{Kind: decode.KindHop, TimeNs: uint64(f.i)}
		r.RawSample = decode.AppendEvent(r.RawSample[:0], &ev)
		return nil
	case f.i == f.n+1:
		r.RawSample = []byte{1, 2, 3}
		return nil
	}
	return ringbuf.ErrClosed
}

// The queue never blocks the reader: what does not fit is dropped and counted, exactly.
func TestPumpCountsQueueDrops(t *testing.T) {
	q := make(chan decode.Event, 3)
	var c counters
	pump(&fakeRing{n: 10}, q, &c)
	if got := c.received.Load(); got != 11 {
		t.Errorf("received %d, want 11", got)
	}
	if got := c.queueDrops.Load(); got != 7 {
		t.Errorf("queue drops %d, want 7 (10 events, room for 3)", got)
	}
	if got := c.badRecords.Load(); got != 1 {
		t.Errorf("bad records %d, want 1", got)
	}
	if len(q) != 3 || (<-q).TimeNs != 1 {
		t.Errorf("queue should hold the first 3 events")
	}
}

func TestConfigErrors(t *testing.T) {
	sel := []decode.Selector{{Port: 80}}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no selector"},
		{Config{Selectors: sel, AttachMode: "xdp"}, `attach mode "xdp"`},
		{Config{Selectors: sel, DropHook: "kprobe"}, `drop hook "kprobe"`},
		{Config{Selectors: make([]decode.Selector, 9)}, "at most 8"},
		{Config{Selectors: sel, SnapLen: decode.SnapFull + 1}, "snap length"},
		{Config{Selectors: sel, RingBytes: 5000}, "power of two"},
		{Config{Selectors: sel, VXLANPorts: []uint16{1, 2, 3, 4, 5}}, "at most 4"},
		{Config{Selectors: sel, GenevePorts: []uint16{1, 2, 3, 4, 5}}, "5 Geneve ports: at most 4"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

// Without BTF the tracer refuses with what is missing and what to do.
func TestNoBTF(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("must run as root under CI")
		}
		t.Skip("needs root: the privilege check comes before the BTF check")
	}
	_, err := New(Config{Selectors: []decode.Selector{{Port: 80}}, BTFPath: "/nonexistent/vmlinux"})
	// A path other than the kernel's own is the --kernel-btf flag's: the error names it.
	if err == nil || !strings.Contains(err.Error(), "--kernel-btf /nonexistent/vmlinux") ||
		!strings.Contains(err.Error(), "BTFHub") {
		t.Fatalf("got %v", err)
	}
	if errors.Is(err, os.ErrNotExist) == false && !strings.Contains(err.Error(), "no such file") {
		t.Errorf("error should carry the cause: %v", err)
	}
}
