package decode_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		in     string
		addr   string // "" for none
		port   uint16
		String string
	}{
		{"10.244.1.7", "10.244.1.7", 0, "10.244.1.7"},
		{"10.244.1.7:8080", "10.244.1.7", 8080, "10.244.1.7:8080"},
		{":53", "", 53, ":53"},
		{":65535", "", 65535, ":65535"},
		{"fd00:10:244::5", "fd00:10:244::5", 0, "fd00:10:244::5"},
		{"::1", "::1", 0, "::1"},
		{"[fd00::5]:443", "fd00::5", 443, "[fd00::5]:443"},
		{"[fd00::5]", "fd00::5", 0, "fd00::5"},
		{"::ffff:10.0.0.1", "10.0.0.1", 0, "10.0.0.1"},
		{"[::ffff:10.0.0.1]:80", "10.0.0.1", 80, "10.0.0.1:80"},
	} {
		s, err := decode.ParseSelector(tc.in)
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", tc.in, err)
			continue
		}
		var want netip.Addr
		if tc.addr != "" {
			want = netip.MustParseAddr(tc.addr)
		}
		if s.Addr != want || s.Port != tc.port || s.Proto != 0 {
			t.Errorf("ParseSelector(%q) = %+v, want addr %v port %d", tc.in, s, want, tc.port)
		}
		if tc.addr != "" && s.Addr.Is4In6() {
			t.Errorf("ParseSelector(%q): address %v left mapped", tc.in, s.Addr)
		}
		if got := s.String(); got != tc.String {
			t.Errorf("ParseSelector(%q).String() = %q, want %q", tc.in, got, tc.String)
		}
	}
}

func TestParseSelectorErrors(t *testing.T) {
	for _, tc := range []struct{ in, why string }{
		{"", "empty"},
		{"1.2.3", "not an IP address"},
		{"1.2.3.4:", "empty port"},
		{":", "empty port"},
		{":0", "port must be 1-65535"},
		{":70000", "port must be 1-65535"},
		{":http", "port must be 1-65535"},
		{"10.0.0.1:-1", "port must be 1-65535"},
		{"[::1", "missing ]"},
		{"[::1]x", "unexpected text after ]"},
		{"[::1]:", "empty port"},
		{"[]", "empty address"},    // else it would silently follow everything
		{"[]:80", "empty address"}, // ":80" is how to say any address
		{"fe80::1%eth0", "zones are not supported"},
		{"[fe80::1%eth0]:80", "zones are not supported"},
		{"host:80", "not an IP address"},
		{"example.com", "not an IP address"},
		{"10.0.0.1:80:90", "not an IP address"},
	} {
		s, err := decode.ParseSelector(tc.in)
		if err == nil {
			t.Errorf("ParseSelector(%q) = %+v, want an error", tc.in, s)
			continue
		}
		if !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), "want IP, IP:PORT") {
			t.Errorf("ParseSelector(%q): error %q, want it to say %q and the forms", tc.in, err, tc.why)
		}
		if s != (decode.Selector{}) {
			t.Errorf("ParseSelector(%q) returned %+v with its error", tc.in, s)
		}
	}
}

func TestSelectorMatches(t *testing.T) {
	tcp := func(src, dst string) decode.Flow {
		return decode.Flow{Proto: decode.ProtoTCP, Src: addrPort(src), Dst: addrPort(dst)}
	}
	out := tcp("10.244.0.5:43512", "10.244.1.7:8080")
	back := out.Reverse()
	udp := decode.Flow{Proto: decode.ProtoUDP, Src: addrPort("10.244.0.5:40001"), Dst: addrPort("10.96.0.10:53")}
	icmp := decode.Flow{Proto: decode.ProtoICMP, Src: addrPort("10.244.0.5:0"), Dst: addrPort("10.244.1.7:0")}
	v6 := decode.Flow{Proto: decode.ProtoTCP, Src: addrPort("[fd00::5]:1000"), Dst: addrPort("[fd00::7]:443")}

	sel := func(s string, proto uint8) decode.Selector {
		x, err := decode.ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		x.Proto = proto
		return x
	}
	for _, tc := range []struct {
		sel  decode.Selector
		flow decode.Flow
		want bool
	}{
		{sel("10.244.1.7:8080", 0), out, true},
		{sel("10.244.1.7:8080", 0), back, true}, // the reply: address and port as source
		{sel("10.244.1.7", 0), out, true},
		{sel("10.244.1.7", 0), back, true},
		{sel("10.244.1.7", 0), icmp, true},
		{sel("10.244.1.7", 0), udp, false},
		{sel(":8080", 0), out, true},
		{sel(":8080", 0), back, true},
		{sel(":8080", 0), icmp, false},
		{sel(":53", 0), udp, true},
		{sel(":53", 0), out, false},
		{sel("10.244.0.5:43512", 0), out, true},
		{sel("10.244.0.5:43512", 0), back, true},
		// Address and port must be on the same side.
		{sel("10.244.1.7:43512", 0), out, false},
		{sel("10.244.0.5:8080", 0), out, false},
		{sel("10.244.1.7:8081", 0), out, false},
		// The protocol.
		{sel("10.244.1.7", decode.ProtoTCP), out, true},
		{sel("10.244.1.7", decode.ProtoUDP), out, false},
		{sel("10.244.1.7", decode.ProtoICMP), icmp, true},
		{sel("10.244.1.7", decode.ProtoTCP), icmp, false},
		{sel(":53", decode.ProtoUDP), udp, true},
		{sel(":53", decode.ProtoTCP), udp, false},
		// IPv6, and mapped against plain IPv4.
		{sel("[fd00::7]:443", 0), v6, true},
		{sel("[fd00::7]:443", 0), v6.Reverse(), true},
		{sel("fd00::5", 0), v6, true},
		{sel("fd00::5", 0), out, false},
		{sel("::ffff:10.244.1.7", 0), out, true},
		// The empty selector matches everything; a protocol-only one, its protocol.
		{decode.Selector{}, udp, true},
		{decode.Selector{Proto: decode.ProtoICMP}, icmp, true},
		{decode.Selector{Proto: decode.ProtoICMP}, out, false},
	} {
		if got := tc.sel.Matches(tc.flow); got != tc.want {
			t.Errorf("%v.Matches(%v) = %v, want %v", tc.sel, tc.flow, got, tc.want)
		}
	}
}

func TestSelectorString(t *testing.T) {
	for s, want := range map[decode.Selector]string{
		{}:                                 "any",
		{Proto: decode.ProtoUDP}:           "any/udp",
		{Port: 53, Proto: decode.ProtoUDP}: ":53/udp",
		{Addr: netip.MustParseAddr("fd00::1"), Port: 80, Proto: decode.ProtoTCP}: "[fd00::1]:80/tcp",
		{Addr: netip.MustParseAddr("10.0.0.1"), Proto: decode.ProtoICMPv6}:       "10.0.0.1/icmpv6",
	} {
		if got := s.String(); got != want {
			t.Errorf("%+v.String() = %q, want %q", s, got, want)
		}
	}
}

func TestParseProto(t *testing.T) {
	for in, want := range map[string]uint8{
		"": 0, "any": 0, "all": 0, "ANY": 0,
		"tcp": decode.ProtoTCP, "TCP": decode.ProtoTCP,
		"udp": decode.ProtoUDP, "Udp": decode.ProtoUDP,
		"icmp": decode.ProtoICMP, "icmpv6": decode.ProtoICMPv6, "icmp6": decode.ProtoICMPv6,
	} {
		got, err := decode.ParseProto(in)
		if err != nil || got != want {
			t.Errorf("ParseProto(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"sctp", "6", "tcp ", "icmp4"} {
		if got, err := decode.ParseProto(in); err == nil || !strings.Contains(err.Error(), "want tcp, udp, icmp, icmpv6 or any") {
			t.Errorf("ParseProto(%q) = %d, %v; want an error", in, got, err)
		}
	}
}

func TestParseKubeSelector(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, tc := range []struct {
		in   string
		want decode.KubeSelector
	}{
		{"pod/prod/api-67f6cc8974-2kmdg", decode.KubeSelector{Kind: "pod", Namespace: "prod", Name: "api-67f6cc8974-2kmdg"}},
		{"pod/prod/api-0:8080", decode.KubeSelector{Kind: "pod", Namespace: "prod", Name: "api-0", Port: "8080"}},
		{"pod/kube-system/etcd.node-a", decode.KubeSelector{Kind: "pod", Namespace: "kube-system", Name: "etcd.node-a"}},
		{"pod/1ns/0pod:65535", decode.KubeSelector{Kind: "pod", Namespace: "1ns", Name: "0pod", Port: "65535"}},
		{"svc/prod/api", decode.KubeSelector{Kind: "svc", Namespace: "prod", Name: "api"}},
		{"svc/prod/api:80", decode.KubeSelector{Kind: "svc", Namespace: "prod", Name: "api", Port: "80"}},
		{"svc/prod/api:http", decode.KubeSelector{Kind: "svc", Namespace: "prod", Name: "api", Port: "http"}},
		{"svc/prod/api:grpc-web", decode.KubeSelector{Kind: "svc", Namespace: "prod", Name: "api", Port: "grpc-web"}},
		{"svc/" + long + "/" + long, decode.KubeSelector{Kind: "svc", Namespace: long, Name: long}},
	} {
		got, ok, err := decode.ParseKubeSelector(tc.in)
		if err != nil || !ok {
			t.Errorf("ParseKubeSelector(%q) = ok %v, error %v; want ok", tc.in, ok, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseKubeSelector(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("ParseKubeSelector(%q).String() = %q, want the input back", tc.in, got.String())
		}
	}
}

func TestParseKubeSelectorNotKube(t *testing.T) {
	// Address selectors, and anything else ParseSelector is to judge.
	for _, in := range []string{"10.0.0.1", "10.0.0.1:80", ":53", "[fd00::1]:80", "fd00::1", "", "pod", "svc", "Pod/prod/api", "service/prod/api", "deploy/prod/api"} {
		got, ok, err := decode.ParseKubeSelector(in)
		if ok || err != nil || got != (decode.KubeSelector{}) {
			t.Errorf("ParseKubeSelector(%q) = %+v, ok %v, error %v; want not a Kubernetes selector", in, got, ok, err)
		}
	}
}

func TestParseKubeSelectorErrors(t *testing.T) {
	for _, tc := range []struct{ in, why string }{
		{"pod/", "missing namespace and name"},
		{"pod/x", "missing name"},
		{"svc/prod", "missing name"},
		{"pod/prod/", "empty name"},
		{"pod//api", "empty namespace"},
		{"svc//", "empty namespace"},
		{"pod/prod/api/x", "too many parts"},
		{"pod/prod/api:", "empty port"},
		{"svc/prod/api:", "empty port"},
		{"pod/prod/api:0", "port must be 1-65535"},
		{"svc/prod/api:65536", "port must be 1-65535"},
		{"pod/prod/api:http", "port names need a svc/ selector"},
		{"svc/prod/api:-http", "must start and end"},
		{"svc/prod/api:HTTP", "must be lowercase"},
		{"svc/prod/api:80:90", "not allowed"},
		{"pod/Prod/api", "must be lowercase"},
		{"pod/prod/API", "must be lowercase"},
		{"pod/prod_x/api", "not allowed"},
		{"pod/-prod/api", "must start and end"},
		{"pod/prod/api-", "must start and end"},
		{"pod/prod/a..b", "empty part between dots"},
		{"pod/prod/.api", "empty part between dots"},
		{"pod/prod/a_b", "'-' and '.'"},
		{"svc/prod/a.b", "not allowed"},
		{"svc/" + strings.Repeat("a", 64) + "/api", "longer than 63"},
		{"pod/prod/" + strings.Repeat("a.", 127) + "a", "longer than 253"},
	} {
		got, ok, err := decode.ParseKubeSelector(tc.in)
		if err == nil {
			t.Errorf("ParseKubeSelector(%q) = %+v, want an error", tc.in, got)
			continue
		}
		if !ok {
			t.Errorf("ParseKubeSelector(%q): ok false with error %v, want ok (it is a Kubernetes selector)", tc.in, err)
		}
		want := "/NAMESPACE/NAME[:PORT]"
		if !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tc.in) {
			t.Errorf("ParseKubeSelector(%q): error %q, want it to name the input, say %q and show %q", tc.in, err, tc.why, want)
		}
		if got != (decode.KubeSelector{}) {
			t.Errorf("ParseKubeSelector(%q) returned %+v with its error", tc.in, got)
		}
	}
}
