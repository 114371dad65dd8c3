package exporter_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
)

// pcapT0 is the monotonic time of the first hop; pcapClock puts it at
// 2025-11-26T09:40:00.000000123Z.
const pcapT0 = uint64(5_000_123_456_789)

var pcapClock = exporter.Clock{OffsetNs: 1_764_150_000_000_000_000 - int64(pcapT0) + 123}

// pcapJourneys are a forwarded SYN through DNAT with a stall, a DNS query dropped by
// nftables, and a packet whose cni0 hop was captured from the IP header (as on a device
// without Ethernet), in that order.
func pcapJourneys(t *testing.T) []*decode.Journey {
	evs := append(synThroughDNAT(pcapT0), dnsDropped(pcapT0+1_000_000_000, 7)...)
	raw := ipv4("10.244.0.5", "10.96.0.10", 8, 64, decode.ProtoUDP, udp(40001, 53, []byte("raw")))
	evs = append(evs, ev(decode.KindHop, pcapT0+2_000_000_000, ixCni0, "cni0", decode.Ingress, false, raw))
	js := assemble(t, nodeA(t), evs...)
	if len(js) != 3 || js[0].Verdict != decode.Forwarded || js[1].Verdict != decode.Dropped {
		t.Fatalf("fixture journeys: %d", len(js))
	}
	return js
}

func writePcap(t *testing.T, cfg exporter.PcapConfig, js ...*decode.Journey) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "j.pcapng")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := exporter.NewPcap(f, cfg)
	for _, j := range js {
		if err := w.Write(j); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantPackets is what every packet of pcapJourneys must show, in file order.
var wantPackets = []struct {
	iface, desc, dir       string
	src, dst, sport, dport string
	tNs                    uint64 // offset from pcapT0
	length                 int
	comment                string
}{
	{"node-a/veth3f8a2c1e", "veth3f8a2c1e ingress, pod, from the Ethernet header", "0x00000001", "10.244.0.5", "10.96.0.20", "43512", "80", 0, 66,
		"node-a/veth3f8a2c1e ingress +0.0µs"},
	{"node-a/cni0", "cni0 ingress, bridge, from the Ethernet header", "0x00000001", "10.244.0.5", "10.96.0.20", "43512", "80", 9_850, 66,
		"node-a/cni0 ingress +9.8µs"},
	{"node-a/flannel.1", "flannel.1 egress, overlay, from the Ethernet header", "0x00000002", "10.244.0.5", "10.244.1.7", "43512", "8080", 31_200, 66,
		"node-a/flannel.1 egress +31.2µs; dnat 10.96.0.20:80 -> 10.244.1.7:8080"},
	// Written as captured, with its VXLAN header: the outer tuple.
	{"node-a/eth0", "eth0 egress, uplink, from the Ethernet header", "0x00000002", "192.168.1.10", "192.168.1.11", "51234", "8472", 15_031_200, 116,
		"node-a/eth0 egress +15031.2µs; vxlan vni=1 192.168.1.10:51234 -> 192.168.1.11:8472; stall 15ms since flannel.1 egress; verdict forwarded via eth0"},
	{"node-a/veth3f8a2c1e", "veth3f8a2c1e ingress, pod, from the Ethernet header", "0x00000001", "10.244.0.5", "10.96.0.10", "40001", "53", 1e9, 71,
		"node-a/veth3f8a2c1e ingress +0.0µs"},
	{"node-a/cni0", "cni0 ingress, bridge, from the Ethernet header", "0x00000001", "10.244.0.5", "10.96.0.10", "40001", "53", 1e9 + 14_000, 71,
		"node-a/cni0 ingress +14.0µs"},
	{"node-a/nf:FORWARD/first", "netfilter hook FORWARD, priority first, from the IP header", "", "10.244.0.5", "10.96.0.10", "40001", "53", 1e9 + 20_100, 57,
		"node-a/nf:FORWARD/first in=cni0 +20.1µs"},
	{"node-a/kfree_skb", "packets freed by kfree_skb (kernel drops)", "", "10.244.0.5", "10.96.0.10", "40001", "53", 1e9 + 52_400, 57,
		"node-a/kfree_skb +52.4µs; kfree_skb NETFILTER_DROP at nft_do_chain+0x2c8 dev cni0; verdict dropped: NETFILTER_DROP at nft_do_chain+0x2c8 (after FORWARD first)"},
	// The same hop as the second packet, from the IP header: an interface of its own.
	{"node-a/cni0", "cni0 ingress, bridge, from the IP header", "0x00000001", "10.244.0.5", "10.96.0.10", "40001", "53", 2e9, 31,
		"node-a/cni0 ingress +0.0µs; verdict lost after cni0 ingress: no further hop and no drop within the timeout"},
}

func epoch(tNs uint64) string {
	ns := pcapClock.Wall(pcapT0 + tNs)
	return fmt.Sprintf("%d.%09d", ns/1e9, ns%1e9)
}

// tshark reads every packet with the interface, direction, 5-tuple, time, length and
// comment the journeys say.
func TestPcapTshark(t *testing.T) {
	path := writePcap(t, exporter.PcapConfig{Clock: pcapClock}, pcapJourneys(t)...)
	rows := tsharkFields(t, path, nil, "frame.interface_name", "frame.interface_description", "frame.packet_flags_direction",
		"ip.src", "ip.dst", "tcp.srcport", "udp.srcport", "tcp.dstport", "udp.dstport", "frame.time_epoch", "frame.len", "frame.comment")
	if len(rows) != len(wantPackets) {
		t.Fatalf("tshark read %d packets, want %d: %q", len(rows), len(wantPackets), rows)
	}
	for i, w := range wantPackets {
		r := rows[i]
		got := []string{r[0], r[1], r[2], r[3], r[4], r[5] + r[6], r[7] + r[8], r[9], r[10], r[11]}
		want := []string{w.iface, w.desc, w.dir, w.src, w.dst, w.sport, w.dport, epoch(w.tNs), fmt.Sprint(w.length), w.comment}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("packet %d:\n got %q\nwant %q", i+1, got, want)
		}
	}
	// Told that flannel's port is VXLAN, tshark finds the inner packet of the uplink hop.
	rows = tsharkFields(t, path, []string{"-d", "udp.port==8472,vxlan", "-Y", "vxlan"}, "vxlan.vni", "ip.src", "tcp.dstport")
	if want := [][]string{{"1", "192.168.1.10,10.244.0.5", "8080"}}; !reflect.DeepEqual(rows, want) {
		t.Errorf("vxlan packets %q, want %q", rows, want)
	}
}

// pcapgo's reader finds the same interfaces (link types included), comments, flags,
// times and bytes.
func TestPcapNgReader(t *testing.T) {
	js := pcapJourneys(t)
	path := writePcap(t, exporter.PcapConfig{Clock: pcapClock, Comment: "test section"}, js...)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{WantMixedLinkType: true})
	if err != nil {
		t.Fatal(err)
	}
	if s := r.SectionInfo(); s.Application != "pathtrace" || s.Comment != "test section" {
		t.Errorf("section %+v", s)
	}
	var data [][]byte
	for _, j := range js {
		for i := range j.Hops {
			data = append(data, j.Hops[i].Data)
		}
		if j.Drop != nil {
			data = append(data, j.Drop.Data)
		}
	}
	n := 0
	for ; ; n++ {
		b, ci, opts, err := r.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("packet %d: %v", n+1, err)
		}
		if n >= len(wantPackets) {
			t.Fatalf("more than %d packets", len(wantPackets))
		}
		w := wantPackets[n]
		intf, err := r.Interface(ci.InterfaceIndex)
		if err != nil {
			t.Fatal(err)
		}
		link := exporter.LinkEthernet
		if strings.Contains(w.desc, "IP header") || strings.Contains(w.iface, "kfree_skb") {
			link = exporter.LinkRaw
		}
		if intf.Name != w.iface || intf.LinkType != link || intf.SnapLength != decode.SnapMax {
			t.Errorf("packet %d: interface %q link %v snap %d, want %q %v", n+1, intf.Name, intf.LinkType, intf.SnapLength, w.iface, link)
		}
		dir := ""
		if opts.Flags != nil {
			dir = fmt.Sprintf("0x%08x", opts.Flags.ToUint32())
		}
		if dir != w.dir || !reflect.DeepEqual(opts.Comments, []string{w.comment}) {
			t.Errorf("packet %d: flags %q comments %q", n+1, dir, opts.Comments)
		}
		if ci.Timestamp.UnixNano() != pcapClock.Wall(pcapT0+w.tNs) || ci.Length != w.length || !bytes.Equal(b, data[n]) {
			t.Errorf("packet %d: time %v length %d bytes %x", n+1, ci.Timestamp, ci.Length, b)
		}
	}
	if n != len(wantPackets) || r.NInterfaces() != 7 {
		t.Errorf("%d packets on %d interfaces, want %d on 7", n, r.NInterfaces(), len(wantPackets))
	}
}

// recordWrites keeps every Write as a separate chunk.
type recordWrites struct{ chunks [][]byte }

func (w *recordWrites) Write(b []byte) (int, error) {
	w.chunks = append(w.chunks, bytes.Clone(b))
	return len(b), nil
}

// blocks splits pcapng bytes into blocks by their lengths and fails unless they add up.
func blocks(t *testing.T, b []byte) (types []uint32) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < 12 {
			t.Fatalf("%d bytes left: not a block", len(b))
		}
		n := binary.LittleEndian.Uint32(b[4:])
		if n < 12 || int(n) > len(b) || binary.LittleEndian.Uint32(b[n-4:]) != n {
			t.Fatalf("block of %d bytes with %d left", n, len(b))
		}
		types = append(types, binary.LittleEndian.Uint32(b))
		b = b[n:]
	}
	return types
}

// Every journey goes out in one Write of whole blocks, and nothing waits in a buffer
// in between: killed at any time, the file ends with a whole journey. A journey without
// bytes writes nothing.
func TestPcapOneWritePerJourney(t *testing.T) {
	js := pcapJourneys(t)
	var w recordWrites
	p := exporter.NewPcap(&w, exporter.PcapConfig{Clock: pcapClock})
	noBytes := *js[0]
	noBytes.Hops = nil
	for _, j := range []*decode.Journey{js[0], &noBytes, js[1], js[2]} {
		if err := p.Write(j); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.chunks) != 3 {
		t.Fatalf("%d writes for 3 journeys with bytes", len(w.chunks))
	}
	// Section header, interface per new hop, packets.
	const shb, idb, epb = 0x0a0d0d0a, 1, 6
	for i, want := range [][]uint32{
		{shb, idb, epb, idb, epb, idb, epb, idb, epb},
		{epb, epb, idb, epb, idb, epb},
		{idb, epb},
	} {
		if got := blocks(t, w.chunks[i]); !reflect.DeepEqual(got, want) {
			t.Errorf("write %d: blocks %x, want %x", i+1, got, want)
		}
	}
	if p.Packets() != len(wantPackets) || p.Size() != int64(len(bytes.Join(w.chunks, nil))) {
		t.Errorf("Packets %d Size %d", p.Packets(), p.Size())
	}
}

// A file cut in the middle of its last block (a writer killed during a write, a disk
// full) is read up to the block before: tshark prints those packets and says the file
// was cut short, with exit status 2.
func TestPcapTruncatedReadable(t *testing.T) {
	path := writePcap(t, exporter.PcapConfig{Clock: pcapClock}, pcapJourneys(t)[:2]...)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The last block is the kfree_skb packet, over 100 bytes long.
	cut := path + ".cut"
	if err := os.WriteFile(cut, b[:len(b)-60], 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tshark(t), "-r", cut, "-T", "fields", "-e", "frame.interface_name")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(stderr.String(), "cut short in the middle of a packet") {
		t.Errorf("tshark on a cut file: %v\n%s", err, stderr.String())
	}
	got := strings.Fields(string(out))
	want := []string{"node-a/veth3f8a2c1e", "node-a/cni0", "node-a/flannel.1", "node-a/eth0", "node-a/veth3f8a2c1e", "node-a/cni0", "node-a/nf:FORWARD/first"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tshark read %q, want the 7 whole packets %q", got, want)
	}
	// pcapgo too reads the 7, then reports the cut.
	f, err := os.Open(cut)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{WantMixedLinkType: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ {
		if _, _, err = r.ReadPacketData(); err != nil {
			break
		}
	}
	if n != 7 || errors.Is(err, io.EOF) {
		t.Errorf("pcapgo read %d packets then %v, want 7 then an unexpected EOF", n, err)
	}
}

// MaxBytes: the file ends with the last packet that fits, whole, and the writer takes
// nothing more.
func TestPcapMaxBytes(t *testing.T) {
	js := pcapJourneys(t)
	var all recordWrites
	p := exporter.NewPcap(&all, exporter.PcapConfig{Clock: pcapClock})
	for _, j := range js {
		p.Write(j)
	}
	full := bytes.Join(all.chunks, nil)
	// Room for the first journey and part of the second.
	limit := int64(len(all.chunks[0]) + len(all.chunks[1])/2)
	var w recordWrites
	p = exporter.NewPcap(&w, exporter.PcapConfig{Clock: pcapClock, MaxBytes: limit})
	if err := p.Write(js[0]); err != nil {
		t.Fatal(err)
	}
	if err := p.Write(js[1]); !errors.Is(err, exporter.ErrPcapFull) {
		t.Fatalf("Write past the limit: %v", err)
	}
	if err := p.Write(js[2]); !errors.Is(err, exporter.ErrPcapFull) {
		t.Fatalf("Write after the limit: %v", err)
	}
	got := bytes.Join(w.chunks, nil)
	if int64(len(got)) > limit || p.Size() != int64(len(got)) || !bytes.HasPrefix(full, got) {
		t.Fatalf("%d bytes written (Size %d), limit %d", len(got), p.Size(), limit)
	}
	blocks(t, got) // whole blocks
	if p.Packets() <= 4 || p.Packets() >= 8 {
		t.Errorf("%d packets written, want the first journey's 4 and some of the second's", p.Packets())
	}
}

type failWriter2 struct{ err error }

func (f failWriter2) Write([]byte) (int, error) { return 0, f.err }

// A write error ends the file: it is returned, then again on every later call.
func TestPcapWriteError(t *testing.T) {
	js := pcapJourneys(t)
	p := exporter.NewPcap(failWriter2{errors.New("no space left on device")}, exporter.PcapConfig{})
	for i := range 2 {
		if err := p.Write(js[i]); err == nil || !strings.Contains(err.Error(), "no space left") {
			t.Errorf("Write %d: %v", i, err)
		}
	}
	if p.Size() != 0 || p.Packets() != 0 {
		t.Errorf("Size %d Packets %d after failed writes", p.Size(), p.Packets())
	}
}

// pcapng's names and comments are UTF-8 strings; a Linux interface name may be any
// bytes. Those that are no UTF-8 are written as U+FFFD, and pcapgo reads the name
// back. (FuzzPcap: testdata/fuzz/FuzzPcap/ifname-not-utf8-ct-unknown.)
func TestPcapNamesUTF8(t *testing.T) {
	j := pcapJourneys(t)[2]
	j.Hops[0].Ifname = "eth\x9c0"
	var b bytes.Buffer
	p := exporter.NewPcap(&b, exporter.PcapConfig{Clock: pcapClock, Comment: "flow \xff"})
	if err := p.Write(j); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(&b, pcapgo.NgReaderOptions{WantMixedLinkType: true})
	if err != nil {
		t.Fatal(err)
	}
	_, ci, opts, err := r.ReadPacketDataWithOptions()
	if err != nil {
		t.Fatal(err)
	}
	intf, err := r.Interface(ci.InterfaceIndex)
	if err != nil {
		t.Fatal(err)
	}
	if intf.Name != "node-a/eth\uFFFD0" || !strings.HasPrefix(intf.Description, "eth\uFFFD0 ingress") ||
		len(opts.Comments) != 1 || !strings.HasPrefix(opts.Comments[0], "node-a/eth\uFFFD0 ingress") || r.SectionInfo().Comment != "flow \uFFFD" {
		t.Errorf("interface %q %q, comments %q, section %q", intf.Name, intf.Description, opts.Comments, r.SectionInfo().Comment)
	}
}

// An option of a pcapng block holds at most 65535 bytes: a longer comment (the text of
// a rule with a set of thousands of addresses) is cut there, at a character's start,
// and ends in "…". pcapgo wrote it whole under a length cut to 16 bits, and the file
// was unreadable from that block on. (FuzzPcap: testdata/fuzz/FuzzPcap/rule-text-over-64k.)
func TestPcapLongComment(t *testing.T) {
	j := pcapJourneys(t)[1]
	j.Drop.Rule = &decode.RuleMatch{Candidates: 1, Rule: &decode.Rule{Family: "inet", Table: "t", Chain: "c", Handle: 7,
		Verdict: "drop", Text: "ip saddr { " + strings.Repeat("198.51.100.1, ", 5000) + "} counter drop", Backend: decode.BackendNftables}}
	var b bytes.Buffer
	p := exporter.NewPcap(&b, exporter.PcapConfig{Clock: pcapClock, Comment: strings.Repeat("é", 40000)})
	if err := p.Write(j); err != nil {
		t.Fatal(err)
	}
	blocks(t, b.Bytes())
	r, err := pcapgo.NewNgReader(&b, pcapgo.NgReaderOptions{WantMixedLinkType: true})
	if err != nil {
		t.Fatal(err)
	}
	if c := r.SectionInfo().Comment; len(c) > 0xffff || !strings.HasSuffix(c, "é…") {
		t.Errorf("section comment of %d bytes ending in %q", len(c), c[len(c)-8:])
	}
	var comments []string
	for {
		_, _, opts, err := r.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		comments = append(comments, opts.Comments...)
	}
	if n := len(comments); n != 4 {
		t.Fatalf("%d packets, want 4", n)
	}
	if c := comments[3]; len(c) != 0xffff || !strings.HasPrefix(c, "node-a/kfree_skb") || !strings.HasSuffix(c, "198.51.1…") {
		t.Errorf("the drop's comment of %d bytes: %q ... %q", len(c), c[:30], c[len(c)-30:])
	}
}
