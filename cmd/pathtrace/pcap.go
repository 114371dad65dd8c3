package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

// pcapOut is follow's --pcap destination: a file it created, or standard output.
type pcapOut struct {
	name    string // as given; "-" for standard output
	f       *os.File
	w       io.Writer
	pcap    *exporter.Pcap
	err     error // the first write error: capture stopped there, tracing went on
	created bool
	// Through agents, which encode the packets themselves: frames and bytes copied.
	mu     sync.Mutex
	frames int
	bytes  int64
}

// openPcapOut opens the --pcap destination before anything is attached, so that a bad
// path fails with nothing to undo. nil when --pcap was not given.
func openPcapOut(name string, stdout io.Writer) (*pcapOut, error) {
	switch name {
	case "":
		return nil, nil
	case "-":
		return &pcapOut{name: name, w: stdout}, nil
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--pcap: %w", err)
	}
	return &pcapOut{name: name, f: f, w: f, created: true}, nil
}

// tee returns a writer that writes each journey to out and its packets to the pcapng
// output. A capture that fails (disk full) stops with one warning; the journeys go on.
func (p *pcapOut) tee(out exporter.Writer, clock exporter.Clock, snaplen int, what string, stderr io.Writer) exporter.Writer {
	p.pcap = exporter.NewPcap(p.w, exporter.PcapConfig{Clock: clock, SnapLen: snaplen,
		Comment: "pathtrace follow " + what})
	return &pcapTee{out: out, p: p, stderr: stderr}
}

// close ends the capture. A file into which no packet was written is removed rather
// than left empty (an empty file is not pcapng), and says so.
func (p *pcapOut) close(stderr io.Writer) error {
	if p == nil || p.f == nil {
		return nil
	}
	err := p.f.Close()
	n, size, what := 0, int64(0), "packets"
	if p.pcap != nil {
		n, size = p.pcap.Packets(), p.pcap.Size()
	}
	if p.frames > 0 {
		n, size, what = p.frames, p.bytes, "journeys' packets"
	}
	if n == 0 && p.created {
		os.Remove(p.name)
		fmt.Fprintf(stderr, "pathtrace: no packet captured, %s not written\n", p.name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("--pcap %s: %w", p.name, err)
	}
	fmt.Fprintf(stderr, "pathtrace: %d %s written to %s (%d bytes)\n", n, what, p.name, size)
	return nil
}

type pcapTee struct {
	out    exporter.Writer
	p      *pcapOut
	stderr io.Writer
}

func (t *pcapTee) Write(j *decode.Journey) error {
	if t.p.err == nil {
		if err := t.p.pcap.Write(j); err != nil {
			t.p.err = err
			why := err.Error()
			if !errors.Is(err, exporter.ErrPcapFull) {
				why = "write failed: " + why
			}
			fmt.Fprintf(t.stderr, "pathtrace: WARNING: capture to %s stopped (%s); the file holds the packets before, tracing goes on\n", t.p.name, why)
		}
	}
	return t.out.Write(j)
}

func (t *pcapTee) WriteOneWay(o *decode.OneWay) error { return t.out.WriteOneWay(o) }

// sinks returns where each of n agents' pcapng frames go: the output itself for one
// agent, else a file per agent beside it (or in the temporary directory for "-").
func (p *pcapOut) sinks(n int) ([]*os.File, error) {
	if p == nil {
		return nil, nil
	}
	p.pcap = exporter.NewPcap(io.Discard, exporter.PcapConfig{}) // counts nothing; the agents encode
	if n == 1 {
		return nil, nil
	}
	dir, pattern := os.TempDir(), "pathtrace-pcap-*"
	if p.f != nil {
		dir, pattern = filepath.Dir(p.name), "."+filepath.Base(p.name)+".agent-*"
	}
	var out []*os.File
	for range n {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			for _, f := range out {
				f.Close()
				os.Remove(f.Name())
			}
			return nil, fmt.Errorf("--pcap: %w", err)
		}
		out = append(out, f)
	}
	return out, nil
}

// frame copies one frame of n bytes from agent i's stream to where it goes. A write
// error stops the capture (one warning), not the follow; a read error ends the stream.
func (p *pcapOut) frame(sinks []*os.File, i int, r io.Reader, n int, stderr io.Writer) error {
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return err
	}
	var w io.Writer = p.w
	if sinks != nil {
		w = sinks[i]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil
	}
	if _, err := w.Write(buf); err != nil {
		p.err = err
		fmt.Fprintf(stderr, "pathtrace: WARNING: capture to %s stopped (write failed: %v); tracing goes on\n", p.name, err)
		return nil
	}
	p.frames++
	p.bytes += int64(n)
	return nil
}

// join puts the agents' files one after the other into the output and removes them.
func (p *pcapOut) join(sinks []*os.File) error {
	if p == nil {
		return nil
	}
	var first error
	for _, f := range sinks {
		if _, err := f.Seek(0, io.SeekStart); err == nil && p.err == nil {
			if _, err := io.Copy(p.w, f); err != nil && first == nil {
				first = err
			}
		}
		f.Close()
		os.Remove(f.Name())
	}
	return first
}
