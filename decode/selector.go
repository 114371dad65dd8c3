package decode

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Selector says which packets to follow: an address, a port, or both, and optionally
// a protocol. Both directions of a flow match: the address and port may be the source
// or the destination.
type Selector struct {
	Addr  netip.Addr // invalid: any address
	Port  uint16     // 0: any port
	Proto uint8      // 0: any protocol
}

// ParseSelector reads "IP", "IP:PORT", ":PORT", "IPv6" or "[IPv6]:PORT".
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	bad := func(why string) (Selector, error) {
		return Selector{}, fmt.Errorf("selector %q: %s (want IP, IP:PORT, :PORT or [IPv6]:PORT)", s, why)
	}
	if s == "" {
		return bad("empty")
	}
	var host, port string
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return bad("missing ]")
		}
		host = s[1:end]
		if host == "" {
			return bad("empty address in []")
		}
		rest := s[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return bad("unexpected text after ]")
			}
			port = rest[1:]
			if port == "" {
				return bad("empty port")
			}
		}
	case strings.Count(s, ":") > 1:
		host = s // bare IPv6
	case strings.HasPrefix(s, ":"):
		port = s[1:]
		if port == "" {
			return bad("empty port")
		}
	default:
		h, p, found := strings.Cut(s, ":")
		host = h
		if found {
			if p == "" {
				return bad("empty port")
			}
			port = p
		}
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return bad("not an IP address: " + host)
		}
		if a.Zone() != "" {
			return bad("zones are not supported")
		}
		sel.Addr = a.Unmap()
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return bad("port must be 1-65535")
		}
		sel.Port = uint16(n)
	}
	return sel, nil
}

// ParseProto reads a --proto value: "", "any", "tcp", "udp", "icmp", "icmpv6".
func ParseProto(s string) (uint8, error) {
	switch strings.ToLower(s) {
	case "", "any", "all":
		return 0, nil
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "icmp":
		return ProtoICMP, nil
	case "icmpv6", "icmp6":
		return ProtoICMPv6, nil
	}
	return 0, fmt.Errorf("protocol %q: want tcp, udp, icmp, icmpv6 or any", s)
}

// Matches reports whether the flow matches the selector in either direction.
func (s Selector) Matches(f Flow) bool {
	if s.Proto != 0 && s.Proto != f.Proto {
		return false
	}
	side := func(ap netip.AddrPort) bool {
		if s.Addr.IsValid() && ap.Addr() != s.Addr {
			return false
		}
		return s.Port == 0 || ap.Port() == s.Port
	}
	return side(f.Src) || side(f.Dst)
}

func (s Selector) String() string {
	var b strings.Builder
	switch {
	case s.Addr.IsValid() && s.Port != 0:
		b.WriteString(netip.AddrPortFrom(s.Addr, s.Port).String())
	case s.Addr.IsValid():
		b.WriteString(s.Addr.String())
	case s.Port != 0:
		fmt.Fprintf(&b, ":%d", s.Port)
	default:
		b.WriteString("any")
	}
	if s.Proto != 0 {
		b.WriteString("/" + ProtoName(s.Proto))
	}
	return b.String()
}
