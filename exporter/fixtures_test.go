package exporter_test

// Packets and journeys for the capture tests, made as the tracer makes them: packet
// bytes as the kernel hands them to the programs, ring-buffer events, and the
// assembler (with KeepBytes) turning them into journeys.

import (
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// Interfaces of node-a.
const (
	ixEth0    = 2
	ixFlannel = 3
	ixCni0    = 4
	ixVeth    = 7
	vethName  = "veth3f8a2c1e"
)

func nodeA(t testing.TB) decode.Config {
	syms, err := decode.ParseKallsyms(strings.NewReader("ffffffffc0a41000 t nft_do_chain\t[nf_tables]\nffffffffc0a42000 t nft_other\t[nf_tables]\n"))
	if err != nil {
		t.Fatal(err)
	}
	return decode.Config{
		Node: "node-a", Timeout: 500 * time.Millisecond, Stall: 10 * time.Millisecond, KeepBytes: true,
		Reasons: decode.DropReasons{12: "NETFILTER_DROP"}, Symbols: syms,
		Ifaces: []decode.Iface{
			{Index: ixEth0, Name: "eth0", Kind: decode.KindUplink},
			{Index: ixFlannel, Name: "flannel.1", Kind: decode.KindOverlay},
			{Index: ixCni0, Name: "cni0", Kind: decode.KindBridge},
			{Index: ixVeth, Name: vethName, Kind: decode.KindPod},
		},
		LocalAddrs: []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("10.244.0.1")},
	}
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ipv4 is an IPv4 packet carrying l4, with the L4 checksum filled (TCP and UDP).
func ipv4(src, dst string, id uint16, ttl, proto uint8, l4 []byte) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := make([]byte, 20, 20+len(l4))
	b[0], b[8], b[9] = 0x45, ttl, proto
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], 0x4000)
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b, 0))
	b = append(b, l4...)
	at := map[uint8]int{decode.ProtoTCP: 16, decode.ProtoUDP: 6}[proto]
	if at > 0 {
		pseudo := uint32(binary.BigEndian.Uint16(s[:2])) + uint32(binary.BigEndian.Uint16(s[2:])) +
			uint32(binary.BigEndian.Uint16(d[:2])) + uint32(binary.BigEndian.Uint16(d[2:])) + uint32(proto) + uint32(len(l4))
		binary.BigEndian.PutUint16(b[20+at:], checksum(b[20:], pseudo))
	}
	return b
}

// tcp is a TCP segment with a timestamp option (TSval tsval), so that every segment is
// a packet of its own as Linux sends them.
func tcp(sport, dport uint16, seq, ack uint32, flags uint8, tsval uint32, payload int) []byte {
	b := make([]byte, 32, 32+payload)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12], b[13] = 8<<4, flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	copy(b[20:], []byte{1, 1, 8, 10})
	binary.BigEndian.PutUint32(b[24:], tsval)
	for i := range payload {
		b = append(b, byte('a'+i%26))
	}
	return b
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

func eth(ip []byte) []byte {
	b := []byte{0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x01, 0x02, 0x42, 0x0a, 0xf4, 0x00, 0x05, 0x08, 0x00}
	return append(b, ip...)
}

// vxlanOf wraps a frame as node-a's eth0 sends it to node-b: flannel's port 8472, VNI 1.
func vxlanOf(frame []byte) []byte {
	hdr := []byte{0x08, 0, 0, 0, 0, 0, 1, 0}
	return eth(ipv4("192.168.1.10", "192.168.1.11", 0x3a01, 64, decode.ProtoUDP, udp(51234, 8472, append(hdr, frame...))))
}

func ev(kind decode.Kind, tNs uint64, ifindex uint32, name string, dir decode.Dir, l2 bool, data []byte) decode.Event {
	e := decode.Event{TimeNs: tNs, Kind: kind, Ifindex: ifindex, Dir: dir, L2: l2, Len: uint32(len(data))}
	copy(e.Ifname[:15], name)
	e.SnapLen = uint16(copy(e.Data[:], data))
	return e
}

// assemble runs the events through an assembler and returns the journeys, oldest
// first.
func assemble(t testing.TB, cfg decode.Config, evs ...decode.Event) []*decode.Journey {
	t.Helper()
	a := decode.NewAssembler(cfg)
	last := uint64(0)
	for i := range evs {
		rec := decode.AppendEvent(nil, &evs[i])
		var e decode.Event
		if err := decode.ParseEvent(rec, &e); err != nil {
			t.Fatal(err)
		}
		if js := a.Add(&e); js != nil {
			t.Fatal("eviction")
		}
		last = max(last, e.TimeNs)
	}
	return a.Expire(last + uint64(cfg.Timeout))
}

// Pod A (10.244.0.5) on node-a, a Service 10.96.0.20:80 with a backend 10.244.1.7:8080
// on node-b, the DNS Service 10.96.0.10:53.
var (
	client  = netip.MustParseAddrPort("10.244.0.5:43512")
	backend = netip.MustParseAddrPort("10.244.1.7:8080")
)

// synThroughDNAT is pod A's SYN to the Service: veth and cni0 ingress, DNAT, flannel.1
// egress, then eth0 egress with VXLAN 15 ms later (a stall).
func synThroughDNAT(t0 uint64) []decode.Event {
	pre := ipv4("10.244.0.5", "10.96.0.20", 0x1c46, 64, decode.ProtoTCP, tcp(43512, 80, 1000, 0, decode.TCPSyn, 1, 0))
	post := ipv4("10.244.0.5", "10.244.1.7", 0x1c46, 63, decode.ProtoTCP, tcp(43512, 8080, 1000, 0, decode.TCPSyn, 1, 0))
	return []decode.Event{
		ev(decode.KindHop, t0, ixVeth, vethName, decode.Ingress, true, eth(pre)),
		ev(decode.KindHop, t0+9_850, ixCni0, "cni0", decode.Ingress, true, eth(pre)),
		ev(decode.KindHop, t0+31_200, ixFlannel, "flannel.1", decode.Egress, true, eth(post)),
		ev(decode.KindHop, t0+31_200+15_000_000, ixEth0, "eth0", decode.Egress, true, vxlanOf(eth(post))),
	}
}

// dnsDropped is a DNS query seen at veth and cni0 ingress and at the FORWARD hook's
// first priority, then dropped by nftables.
func dnsDropped(t0 uint64, id uint16) []decode.Event {
	q := ipv4("10.244.0.5", "10.96.0.10", id, 64, decode.ProtoUDP, udp(40001, 53, []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")))
	routed := ipv4("10.244.0.5", "10.96.0.10", id, 63, decode.ProtoUDP, udp(40001, 53, q[28:]))
	nf := ev(decode.KindNF, t0+20_100, ixCni0, "cni0", decode.NoDir, false, routed)
	nf.Hook, nf.NFPos = 2, decode.NFFirst
	d := ev(decode.KindDrop, t0+52_400, ixCni0, "cni0", decode.NoDir, false, routed)
	d.Reason, d.Location, d.Netns = 12, 0xffffffffc0a412c8, 4026531840
	return []decode.Event{
		ev(decode.KindHop, t0, ixVeth, vethName, decode.Ingress, true, eth(q)),
		ev(decode.KindHop, t0+14_000, ixCni0, "cni0", decode.Ingress, true, eth(q)),
		nf, d,
	}
}

// tshark returns tshark's path. Where CI=true it must be there; elsewhere a test
// without it is skipped.
func tshark(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("tshark")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tshark is needed to check the pcapng files (CI=true): apt-get install -y tshark: %v", err)
		}
		t.Skipf("tshark not installed (apt-get install -y tshark): %v", err)
	}
	return p
}

// tsharkFields reads the file with tshark and returns the fields of every packet.
// It fails the test if tshark reports any error.
func tsharkFields(t *testing.T, file string, extra []string, fields ...string) [][]string {
	t.Helper()
	args := append([]string{"-r", file, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"}, extra...)
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command(tshark(t), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || tsharkComplaint(stderr.String()) != "" {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if l != "" {
			rows = append(rows, strings.Split(l, "\t"))
		}
	}
	return rows
}

// tsharkComplaint is what tshark wrote to stderr, without its warning about running as
// root.
func tsharkComplaint(stderr string) string {
	var keep []string
	for _, l := range strings.Split(stderr, "\n") {
		if l != "" && !strings.HasPrefix(l, "Running as user") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
