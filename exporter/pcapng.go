package exporter

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/pathtrace/pathtrace/decode"
)

// Link types of the interfaces (LINKTYPE_ETHERNET, LINKTYPE_RAW).
const (
	LinkEthernet = layers.LinkTypeEthernet // 1: the bytes start at the Ethernet header
	LinkRaw      = layers.LinkTypeRaw      // 101: the bytes start at the IP header
)

// ErrPcapFull is returned once a packet did not fit under PcapConfig.MaxBytes: the file
// ends with the last packet that fitted, and the writer takes no more.
var ErrPcapFull = errors.New("pcapng file size limit reached")

// PcapConfig configures a Pcap writer.
type PcapConfig struct {
	// Clock converts the journeys' CLOCK_MONOTONIC times into the wall-clock times the
	// file carries.
	Clock Clock
	// Comment is the section's comment (what the file is: a flow and its trigger).
	Comment string
	// SnapLen is the interfaces' snapshot length; 0 means decode.SnapMax.
	SnapLen int
	// MaxBytes bounds the file's size; 0 means no bound. See ErrPcapFull.
	MaxBytes int64
}

// Pcap writes journeys as pcapng: every hop's packet as an Enhanced Packet Block on an
// interface of its own, with its wall-clock time in nanoseconds, the direction flag and
// a comment saying what pathtrace knows of it. The journeys must carry their bytes
// (decode.Config.KeepBytes); hops without bytes are left out, and a journey without any
// writes nothing.
//
// Interfaces: one Interface Description Block per hop, named node/ifname
// ("node-a/cni0"), node/nf:HOOK/priority for netfilter hops ("node-a/nf:FORWARD/first")
// and node/kfree_skb for the packet as the kernel freed it; one per direction and link
// type, so that a hop seen with and without its Ethernet header gets two. The
// description says the hop, its role and direction. Wireshark and tshark read files
// that mix link types; libpcap (tcpdump) reads only the packets of the first
// interface's link type, and pcapgo's reader wants NgReaderOptions.WantMixedLinkType.
// Wireshark's TCP analysis takes the same segment at its next hop for a
// retransmission; a display filter on frame.interface_name shows one hop's view.
//
// Crash safety: the blocks of one journey go to the underlying writer in one Write,
// once the journey is complete, and nothing stays buffered in between. A file whose
// writer was killed ends with a whole journey, or, if the kill (or a full disk) cut
// that one Write short, with part of a block that readers stop before. Flushing per
// journey rather than per packet costs a system call per journey instead of one per
// hop, and keeps a journey whole in the file.
//
// Pcap implements Writer, so it can take the place of the text or JSON output. It is
// not safe for concurrent use.
type Pcap struct {
	w       io.Writer
	cfg     PcapConfig
	ng      *pcapgo.NgWriter // made at the first packet, whose interface it declares
	pend    pending          // the journey's blocks, before they go to w
	marks   []int            // pend's length after each packet
	ifaces  map[pcapIface]int
	size    int64
	packets int
	err     error // once set, every Write returns it
	pkts    []pcapPacket
}

// pcapIface is what makes an interface of its own in the file.
type pcapIface struct {
	name string
	dir  decode.Dir
	l2   bool
}

// NewPcap returns a writer of journeys to w. Nothing is written before the first
// packet.
func NewPcap(w io.Writer, cfg PcapConfig) *Pcap {
	if cfg.SnapLen <= 0 {
		cfg.SnapLen = decode.SnapMax
	}
	return &Pcap{w: w, cfg: cfg, ifaces: make(map[pcapIface]int)}
}

// Size is the number of bytes written to the underlying writer: whole blocks only.
func (p *Pcap) Size() int64 { return p.size }

// Packets is the number of packets written.
func (p *Pcap) Packets() int { return p.packets }

// pending collects what the NgWriter writes until it goes out in one piece.
type pending struct{ b []byte }

func (b *pending) Write(x []byte) (int, error) {
	b.b = append(b.b, x...)
	return len(x), nil
}

// pcapPacket is one packet of a journey to write.
type pcapPacket struct {
	iface   pcapIface
	desc    string
	timeNs  uint64
	length  uint32
	data    []byte
	comment []string
}

// Write writes the journey's packets, in time order, in one Write to the underlying
// writer. An error of that writer, or ErrPcapFull, ends the file: later calls return
// the same error.
func (p *Pcap) Write(j *decode.Journey) error {
	if p.err != nil {
		return p.err
	}
	pkts := p.packetsOf(j)
	if len(pkts) == 0 {
		return nil
	}
	p.pend.b, p.marks = p.pend.b[:0], p.marks[:0]
	for i := range pkts {
		if err := p.encode(&pkts[i]); err != nil {
			p.err = fmt.Errorf("encode pcapng packet: %w", err)
			return p.err
		}
		p.marks = append(p.marks, len(p.pend.b))
	}
	n, full := len(pkts), false
	if p.cfg.MaxBytes > 0 {
		for n > 0 && p.size+int64(p.marks[n-1]) > p.cfg.MaxBytes {
			n--
		}
		full = n < len(pkts)
	}
	if n > 0 {
		out := p.pend.b[:p.marks[n-1]]
		if _, err := p.w.Write(out); err != nil {
			p.err = fmt.Errorf("write pcapng: %w", err)
			return p.err
		}
		p.size += int64(len(out))
		p.packets += n
	}
	if full {
		p.err = ErrPcapFull
		return p.err
	}
	return nil
}

// WriteOneWay writes nothing: a one-way report has no packets of its own (its SYNs are
// journeys).
func (p *Pcap) WriteOneWay(*decode.OneWay) error { return p.err }

// encode appends the packet's blocks, with its interface's first, to p.pend.
func (p *Pcap) encode(k *pcapPacket) error {
	link := LinkRaw
	if k.iface.l2 {
		link = LinkEthernet
	}
	intf := pcapgo.NgInterface{Name: pcapString(k.iface.name), Description: pcapString(k.desc), LinkType: link,
		SnapLength: uint32(p.cfg.SnapLen), TimestampResolution: 9}
	id, ok := p.ifaces[k.iface]
	switch {
	case p.ng == nil:
		ng, err := pcapgo.NewNgWriterInterface(&p.pend, intf, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
			Application: "pathtrace", OS: runtime.GOOS, Hardware: runtime.GOARCH, Comment: pcapString(p.cfg.Comment)}})
		if err != nil {
			return err
		}
		p.ng, id = ng, 0
		p.ifaces[k.iface] = id
	case !ok:
		var err error
		if id, err = p.ng.AddInterface(intf); err != nil {
			return err
		}
		p.ifaces[k.iface] = id
	}
	data := k.data[:min(len(k.data), p.cfg.SnapLen)]
	ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, p.cfg.Clock.Wall(k.timeNs)).UTC(),
		CaptureLength: len(data), Length: max(int(k.length), len(k.data)), InterfaceIndex: id}
	opts := pcapgo.NgPacketOptions{Comments: []string{pcapString(strings.Join(k.comment, "; "))}}
	switch k.iface.dir {
	case decode.Ingress:
		opts.Flags = &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionInbound}
	case decode.Egress:
		opts.Flags = &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionOutbound}
	}
	if err := p.ng.WritePacketWithOptions(ci, data, opts); err != nil {
		return err
	}
	return p.ng.Flush()
}

// packetsOf lists the journey's packets in time order, each with its comment: the hop
// and its offset from the journey's first event, then, where they apply, the NAT, the
// tunnel header, the stall, the drop, and on the last packet the verdict.
func (p *Pcap) packetsOf(j *decode.Journey) []pcapPacket {
	pkts := p.pkts[:0]
	start := j.FirstNs()
	d := j.Drop
	dropAt := -1 // the packet that carries the drop's comment
	addDrop := func() {
		k := pcapPacket{iface: pcapIface{name: j.Node + "/kfree_skb", dir: decode.NoDir, l2: d.L2},
			desc: "packets freed by kfree_skb (kernel drops)", timeNs: d.TimeNs, length: d.Len, data: d.Data,
			comment: []string{j.Node + "/kfree_skb " + pcapOffset(d.TimeNs-start)}}
		if len(d.Data) > 0 {
			pkts = append(pkts, k)
		}
		dropAt = max(len(pkts)-1, 0)
	}
	for i := range j.Hops {
		h := &j.Hops[i]
		if d != nil && dropAt < 0 && d.TimeNs < h.TimeNs {
			addDrop()
		}
		if len(h.Data) == 0 {
			continue
		}
		node := h.Node
		if node == "" {
			node = j.Node
		}
		name, desc := node+"/"+h.Ifname, h.Ifname+" "+h.Dir.String()+", "+h.Kind.String()
		if h.Kind == decode.KindNetfilter {
			name = node + "/nf:" + h.Hook + "/" + h.Prio
			desc = "netfilter hook " + h.Hook + ", priority " + h.Prio
		}
		if h.L2 {
			desc += ", from the Ethernet header"
		} else {
			desc += ", from the IP header"
		}
		c := []string{name + " " + hopWhere(h) + pcapOffset(h.TimeNs-start)}
		if n := h.NAT; n != nil {
			c = append(c, n.Type+" "+arrows(n.From)+" -> "+arrows(n.To))
		}
		if o := h.Outer; o != nil {
			if o.UDP() {
				c = append(c, fmt.Sprintf("%s%s:%d -> %s:%d", outerHead(o), o.Src, o.SrcPort, o.Dst, o.DstPort))
			} else {
				c = append(c, fmt.Sprintf("%s%s -> %s", outerHead(o), o.Src, o.Dst))
			}
		}
		if s := j.Stall; s != nil && i > 0 && h.TimeNs-j.Hops[i-1].TimeNs == s.DeltaNs && h.Name() == s.Hop {
			c = append(c, "stall "+time.Duration(s.DeltaNs).Round(time.Microsecond).String()+" since "+s.From)
		}
		pkts = append(pkts, pcapPacket{iface: pcapIface{name: name, dir: h.Dir, l2: h.L2}, desc: desc,
			timeNs: h.TimeNs, length: h.Len, data: h.Data, comment: c})
	}
	if d != nil && dropAt < 0 {
		addDrop()
	}
	p.pkts = pkts
	if len(pkts) == 0 {
		return nil
	}
	if d != nil {
		s := "kfree_skb"
		if r := d.ReasonText(); r != "" {
			s += " " + r // an inferred reason says so, and from which function
		}
		s += " at " + d.Location
		if d.Ifname != "" {
			s += " dev " + d.Ifname
		}
		switch {
		case d.Cause != "":
			s += ": " + d.Cause
		case d.Rule != nil:
			s += ": " + d.Rule.String()
		}
		pkts[dropAt].comment = append(pkts[dropAt].comment, s)
	}
	last := &pkts[len(pkts)-1]
	last.comment = append(last.comment, "verdict "+j.Summary())
	return pkts
}

// hopWhere is the direction of an interface hop, the devices and conntrack state of a
// netfilter one, with a trailing space.
func hopWhere(h *decode.Hop) string {
	if h.Kind != decode.KindNetfilter {
		return h.Dir.String() + " "
	}
	s := ""
	if h.Ifname != "" {
		s += "in=" + h.Ifname + " "
	}
	if h.OutIfname != "" {
		s += "out=" + h.OutIfname + " "
	}
	if c := h.CT; c != nil {
		s += "ct=" + c.State
		if c.Reply {
			s += ",reply"
		}
		s += " "
	}
	return s
}

// pcapMaxString is the longest string an option of a block holds: its length is 16
// bits.
const pcapMaxString = 0xffff

// pcapString is s as pcapng can carry it in a name, a description or a comment: UTF-8
// (a Linux interface name need not be; bytes that are not become U+FFFD), and at most
// pcapMaxString bytes (the text of a rule with a large set can be longer), cut at the
// start of a character and ended with "…". pcapgo writes a longer string whole under a
// length cut to 16 bits, which breaks the file from that block on.
func pcapString(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= pcapMaxString {
		return s
	}
	cut := pcapMaxString - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// arrows writes the arrows of a snat+dnat translation in ASCII, as the rest of the
// comment.
func arrows(s string) string { return strings.ReplaceAll(s, " → ", " > ") }

// pcapOffset is a hop's offset from the journey's first event, to 0.1 µs below 100 ms
// and to 0.1 ms above.
func pcapOffset(ns uint64) string {
	if ns < uint64(100*time.Millisecond) {
		return fmt.Sprintf("+%d.%dµs", ns/1000, ns%1000/100)
	}
	return fmt.Sprintf("+%d.%dms", ns/1_000_000, ns%1_000_000/100_000)
}
