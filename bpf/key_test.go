package bpf

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// The agent picks its latency samples by a packet key that fast_key computes from fixed
// offsets and parse_pkt computes by parsing; a packet must get the same key on every
// hop whichever of the two computes it, or its hops are sampled on some interfaces and
// not on others. The test runs the real tc programs (BPF_PROG_TEST_RUN) on the same
// packets in forms fast_key takes (untagged Ethernet, VXLAN, Geneve without options,
// IPIP, bare IP) and forms it leaves to parse_pkt (VLAN tag, IP options, Geneve options
// or bare IP, IPv4 in IPv6), with 1 packet in 2 sampled, and checks
// that exactly the packets whose key, computed here, is sampled left it in lat_last.
func TestFastKeyIsParseKey(t *testing.T) {
	for _, copied := range []bool{false, true} {
		// copied: every packet parsed from a copy of its first bytes, the way taken
		// when its headers are not all in the linear part (which BPF_PROG_TEST_RUN
		// cannot make).
		t.Run(map[bool]string{false: "direct", true: "copied"}[copied], func(t *testing.T) { testFastKey(t, copied) })
	}
}

func testFastKey(t *testing.T, copied bool) {
	objs := loadTC(t, copied)
	forms := []struct {
		name string
		prog *ebpf.Program
		wrap func(ip []byte) []byte
	}{
		{"ethernet (fast)", objs.ingress, eth},
		{"vxlan (fast)", objs.ingress, func(ip []byte) []byte { return eth(vxlan(eth(ip))) }},
		{"bare ip (fast)", objs.ingressL3, func(ip []byte) []byte { return ip }},
		{"vlan tag (parsed)", objs.ingress, vlan},
		{"ip options (parsed)", objs.ingress, func(ip []byte) []byte { return eth(withOptions(ip)) }},
		{"vxlan in vlan (parsed)", objs.ingress, func(ip []byte) []byte { return vlan(vxlan(eth(ip))) }},
		{"ipip (fast)", objs.ingress, func(ip []byte) []byte { return eth(ipip(ip)) }},
		{"bare ipip (fast)", objs.ingressL3, ipip},
		{"ipip with outer options (parsed)", objs.ingress, func(ip []byte) []byte { return eth(withOptions(ipip(ip))) }},
		{"ipv4 in ipv6 (parsed)", objs.ingress, func(ip []byte) []byte { return eth6(ip6in(ip)) }},
		{"geneve (fast)", objs.ingress, func(ip []byte) []byte { return eth(geneve(eth(ip), nil, 0x6558)) }},
		{"geneve with options (parsed)", objs.ingress, func(ip []byte) []byte { return eth(geneve(eth(ip), make([]byte, 12), 0x6558)) }},
		{"geneve of bare ip (parsed)", objs.ingress, func(ip []byte) []byte { return eth(geneve(ip, []byte{1, 2, 3, 4}, 0x0800)) }},
	}
	for _, f := range forms {
		var got, want []uint32
		for n := range 64 {
			for _, ip := range packets(uint16(n)) {
				k := packetKey(f.wrap(ip), f.name)
				if k%2 == 0 {
					want = append(want, k)
				}
				// lat_last is direct-mapped by bits of the key: clear the packet's slot,
				// run, and see whether the program left the packet's key there.
				slot := k >> 8 & 0xffff
				var zero, v [16]byte
				if err := objs.latLast.Put(slot, zero); err != nil {
					t.Fatal(err)
				}
				ret, err := f.prog.Run(&ebpf.RunOptions{Data: f.wrap(ip)})
				if err != nil {
					t.Fatalf("%s: run: %v", f.name, err)
				}
				if int32(ret) != -1 {
					t.Fatalf("%s: program returned %d, want TC_ACT_UNSPEC (-1)", f.name, int32(ret))
				}
				if err := objs.latLast.Lookup(slot, &v); err != nil {
					t.Fatal(err)
				}
				if binary.NativeEndian.Uint64(v[0:]) != 0 {
					got = append(got, binary.NativeEndian.Uint32(v[12:]))
				}
			}
		}
		total := 64 * len(packets(0))
		// Half the packets are sampled, give or take what a hash gives.
		if len(want) < total/4 || len(want) > total*3/4 {
			t.Errorf("%s: %d of %d packets to sample, want about half", f.name, len(want), total)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: sampled keys differ:\n got %x\nwant %x", f.name, got, want)
		}
	}
}

func mix32(h, v uint32) uint32 {
	h ^= v
	h *= 0x9E3779B1
	return h ^ h>>15
}

// packetKey is the key of parse_l3 (bpf/parse.h) for the inner IPv4 packet of a frame
// built by the helpers below, words read in the machine's byte order as the program
// reads them.
func packetKey(frame []byte, form string) uint32 {
	ne := binary.NativeEndian
	var ip []byte
	switch form {
	case "bare ip (fast)":
		ip = frame
	case "bare ipip (fast)":
		ip = frame[20:]
	default:
		ip = innerIP(frame)
	}
	ihl := int(ip[0]&0xf) * 4
	k := mix32(0x2545F491^uint32(ip[9]), uint32(ne.Uint16(ip[4:]))<<16|uint32(ne.Uint16(ip[2:])))
	l4 := ip[ihl:]
	switch ip[9] {
	case 6:
		k = mix32(mix32(k, ne.Uint32(l4[4:])), ne.Uint32(l4[8:]))
	case 17:
		if len(l4) >= 12 {
			k = mix32(k, ne.Uint32(l4[8:]))
		}
	}
	return k
}

// innerIP skips Ethernet and VLAN headers, and one tunnel's (VXLAN, Geneve, IP in IP):
// the kernel's parse takes one apart.
func innerIP(frame []byte) []byte {
	off := 12
	if frame[off] == 0x81 {
		off += 4
	}
	ip := frame[off+2:]
	if ip[0]>>4 == 6 {
		return ip[40:] // IPv4 in IPv6, all this test builds over IPv6
	}
	ihl := int(ip[0]&0xf) * 4
	switch {
	case ip[9] == 4:
		return ip[ihl:]
	case ip[9] == 17 && binary.BigEndian.Uint16(ip[ihl+2:]) == 8472:
		return innerIP(ip[ihl+16:])
	case ip[9] == 17 && binary.BigEndian.Uint16(ip[ihl+2:]) == 6081:
		g := ip[ihl+8:]
		in := ip[ihl+16+int(g[0]&0x3f)*4:]
		if binary.BigEndian.Uint16(g[2:]) == 0x6558 {
			return innerIP(in)
		}
		return in
	}
	return ip
}

type tcObjs struct {
	ingress, ingressL3 *ebpf.Program
	latLast            *ebpf.Map
}

// loadTC loads the tc programs in agent mode with --sample 2.
func loadTC(t *testing.T, copied bool) tcObjs {
	t.Helper()
	if os.Geteuid() != 0 {
		why := "needs root to load BPF programs"
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	spec, err := LoadPathTrace()
	if err != nil {
		t.Fatal(err)
	}
	for name := range spec.Programs {
		if name != "tc_ingress" && name != "tc_ingress_l3" {
			delete(spec.Programs, name)
		}
	}
	vars := map[string]uint32{PathTraceVarCfgAgent: 1, PathTraceVarCfgSample: 2, PathTraceVarCfgSampleMask: 1}
	if copied {
		vars[PathTraceVarCfgParseCopy] = 1
	}
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			t.Fatal(err)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("load: %+v", ve)
		}
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(coll.Close)
	return tcObjs{coll.Programs["tc_ingress"], coll.Programs["tc_ingress_l3"], coll.Maps[PathTraceMapLatLast]}
}

// packets returns IPv4 packets with IP ID id: TCP, UDP with a payload, a bare UDP
// header (no payload word), ICMP.
func packets(id uint16) [][]byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 46322)
	binary.BigEndian.PutUint16(tcp[2:], 6379)
	binary.BigEndian.PutUint32(tcp[4:], 1000+uint32(id)*7)
	binary.BigEndian.PutUint32(tcp[8:], 99)
	tcp[12] = 5 << 4
	udp := make([]byte, 8+16)
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 53)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	binary.BigEndian.PutUint32(udp[8:], 0xabc0+uint32(id))
	bare := udp[:8:8]
	icmp := []byte{8, 0, 0, 0, 0, 1, 0, byte(id)}
	return [][]byte{ip4(id, 6, tcp), ip4(id, 17, udp), ip4(id, 17, bare), ip4(id, 1, icmp)}
}

func ip4(id uint16, proto uint8, l4 []byte) []byte {
	b := make([]byte, 20, 20+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
	b[8], b[9] = 64, proto
	copy(b[12:], []byte{10, 244, 1, 23})
	copy(b[16:], []byte{10, 244, 2, 57})
	return append(b, l4...)
}

// withOptions inserts four bytes of IP options (NOPs and an end marker): same fields,
// a header fast_key does not read.
func withOptions(ip []byte) []byte {
	b := append([]byte{}, ip[:20]...)
	b[0] = 0x46
	b = append(b, 1, 1, 1, 0)
	b = append(b, ip[20:]...)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

var macs = []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1}

func eth(ip []byte) []byte {
	return append(append(append([]byte{}, macs...), 0x08, 0x00), ip...)
}

func vlan(ip []byte) []byte {
	return append(append(append([]byte{}, macs...), 0x81, 0x00, 0, 7, 0x08, 0x00), ip...)
}

func eth6(ip []byte) []byte {
	return append(append(append([]byte{}, macs...), 0x86, 0xdd), ip...)
}

// ipip wraps an IPv4 packet in an outer IPv4 header, protocol 4, as Calico's tunl0 sends
// it.
func ipip(ip []byte) []byte {
	o := ip4(4243, 4, ip)
	copy(o[12:], []byte{192, 168, 0, 1})
	copy(o[16:], []byte{192, 168, 0, 2})
	return o
}

// ip6in wraps an IPv4 packet in an outer IPv6 header, next header 4 (ip6tnl).
func ip6in(ip []byte) []byte {
	o := make([]byte, 40, 40+len(ip))
	o[0] = 0x60
	binary.BigEndian.PutUint16(o[4:], uint16(len(ip)))
	o[6], o[7] = 4, 64
	o[8], o[9], o[23] = 0xfd, 0x01, 1
	o[24], o[25], o[39] = 0xfd, 0x01, 2
	return append(o, ip...)
}

// geneve wraps a packet (an Ethernet frame for protocol type 0x6558, bare IP for
// 0x0800) in outer IPv4/UDP to port 6081 and a Geneve header with opts.
func geneve(inner, opts []byte, ptype uint16) []byte {
	u := make([]byte, 16, 16+len(opts)+len(inner))
	binary.BigEndian.PutUint16(u[0:], 51001)
	binary.BigEndian.PutUint16(u[2:], 6081)
	binary.BigEndian.PutUint16(u[4:], uint16(16+len(opts)+len(inner)))
	u[8] = byte(len(opts) / 4)
	binary.BigEndian.PutUint16(u[10:], ptype)
	u[14] = 7 // VNI 7
	u = append(append(u, opts...), inner...)
	o := ip4(4244, 17, u)
	copy(o[12:], []byte{192, 168, 0, 1})
	copy(o[16:], []byte{192, 168, 0, 2})
	return o
}

// vxlan wraps an Ethernet frame in outer IPv4/UDP to port 8472 and a VXLAN header.
func vxlan(frame []byte) []byte {
	u := make([]byte, 16, 16+len(frame))
	binary.BigEndian.PutUint16(u[0:], 51000)
	binary.BigEndian.PutUint16(u[2:], 8472)
	binary.BigEndian.PutUint16(u[4:], uint16(16+len(frame)))
	u[8] = 0x08
	u[14] = 1 // VNI 1
	o := ip4(4242, 17, append(u, frame...))
	copy(o[12:], []byte{192, 168, 0, 1})
	copy(o[16:], []byte{192, 168, 0, 2})
	return o
}
