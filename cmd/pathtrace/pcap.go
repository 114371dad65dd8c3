package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"

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
	merge  *pcapMerge // several agents
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
	// A new file, 0600 (it holds packets), never written through a link (safefile.go).
	f, err := createReplacing(name, 0o600)
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
	n, size, what := 0, int64(0), "packets"
	if p.pcap != nil {
		n, size = p.pcap.Packets(), p.pcap.Size()
	}
	if p.frames > 0 {
		n, size, what = p.frames, p.bytes, "journeys' packets"
	}
	if n == 0 && p.created {
		removeIfSame(p.name, p.f) // before closing it, while its inode cannot be reused
	}
	err := p.f.Close()
	if n == 0 && p.created {
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

// startAgents prepares for n agents' pcapng streams: one agent's is copied to the
// output as it comes (it is a whole pcapng section); several are read back and written
// as one section, each agent's interfaces with ids of their own (a file of several
// sections is valid pcapng, but tools before Wireshark 4.2 mix their interfaces up).
func (p *pcapOut) startAgents(n int, stderr io.Writer) {
	if p == nil {
		return
	}
	if n > 1 {
		p.merge = newPcapMerge(p.w, n, stderr)
	}
}

// frame copies one frame of pcapng bytes from agent i's stream to where it goes. A
// write error stops the capture (one warning), not the follow.
func (p *pcapOut) frame(i int, buf []byte, stderr io.Writer) {
	if p == nil || i < 0 {
		return // not asked for: an agent that sends packets anyway is not written down
	}
	n := len(buf)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return
	}
	p.frames++
	p.bytes += int64(n)
	if p.merge != nil {
		if i >= len(p.merge.in) {
			return
		}
		p.merge.in[i].Write(buf) // an error is the merge's own, reported by it
		return
	}
	if _, err := p.w.Write(buf); err != nil {
		p.err = err
		fmt.Fprintf(stderr, "pathtrace: WARNING: capture to %s stopped (write failed: %v); tracing goes on\n", p.name, err)
	}
}

// endAgents waits for the merge, if any, to write what the agents sent.
func (p *pcapOut) endAgents() {
	if p == nil || p.merge == nil {
		return
	}
	p.merge.close()
	p.bytes = p.merge.size
}

// pcapMerge writes the packets of several pcapng streams into one section.
type pcapMerge struct {
	mu     sync.Mutex
	out    *countWriter
	ng     *pcapgo.NgWriter
	ids    map[[2]int]int // (stream, interface id in it) -> interface id in the output
	in     []*io.PipeWriter
	wg     sync.WaitGroup
	err    error
	stderr io.Writer
	size   int64
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

func newPcapMerge(out io.Writer, n int, stderr io.Writer) *pcapMerge {
	m := &pcapMerge{out: &countWriter{w: out}, ids: map[[2]int]int{}, stderr: stderr}
	for i := range n {
		pr, pw := io.Pipe()
		m.in = append(m.in, pw)
		m.wg.Add(1)
		go m.read(i, pr)
	}
	return m
}

// read copies one stream's packets, with their comments and flags, to the output.
func (m *pcapMerge) read(i int, pr *io.PipeReader) {
	defer m.wg.Done()
	defer pr.Close()
	r, err := pcapgo.NewNgReader(pr, pcapgo.NgReaderOptions{WantMixedLinkType: true})
	if err != nil {
		if !errors.Is(err, io.EOF) {
			m.fail(fmt.Errorf("agent %d's pcapng stream: %w", i+1, err))
		}
		io.Copy(io.Discard, pr)
		return
	}
	for {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				m.fail(fmt.Errorf("agent %d's pcapng stream: %w", i+1, err))
			}
			io.Copy(io.Discard, pr)
			return
		}
		intf, err := r.Interface(ci.InterfaceIndex)
		if err == nil {
			err = m.write(i, intf, ci, data, opts)
		}
		if err != nil {
			m.fail(err)
		}
	}
}

func (m *pcapMerge) write(stream int, intf pcapgo.NgInterface, ci gopacket.CaptureInfo, data []byte, opts pcapgo.NgPacketOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil
	}
	key := [2]int{stream, ci.InterfaceIndex}
	id, ok := m.ids[key]
	if !ok {
		var err error
		if m.ng == nil {
			m.ng, err = pcapgo.NewNgWriterInterface(m.out, intf, pcapgo.NgWriterOptions{
				SectionInfo: pcapgo.NgSectionInfo{Application: "pathtrace " + version, Comment: "pathtrace follow through several agents"}})
			id = 0
		} else {
			id, err = m.ng.AddInterface(intf)
		}
		if err != nil {
			return err
		}
		m.ids[key] = id
	}
	ci.InterfaceIndex = id
	if err := m.ng.WritePacketWithOptions(ci, data, opts); err != nil {
		return err
	}
	return m.ng.Flush()
}

// fail stops the merge at its first error, with one warning.
func (m *pcapMerge) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = err
		fmt.Fprintf(m.stderr, "pathtrace: WARNING: capture stopped (%v); tracing goes on\n", err)
	}
}

func (m *pcapMerge) close() {
	for _, pw := range m.in {
		pw.Close()
	}
	m.wg.Wait()
	m.mu.Lock()
	m.size = m.out.n
	m.mu.Unlock()
}
