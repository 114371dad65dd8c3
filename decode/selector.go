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

// KubeSelector names Kubernetes objects to follow: "pod/NAMESPACE/NAME[:PORT]" or
// "svc/NAMESPACE/NAME[:PORT]". It is only syntax: turning it into addresses needs the
// API server, which is tracer/kube's job.
type KubeSelector struct {
	Kind      string // "pod" or "svc"
	Namespace string
	Name      string
	Port      string // "": any port; a number, or (svc only) a port name
}

func (k KubeSelector) String() string {
	s := k.Kind + "/" + k.Namespace + "/" + k.Name
	if k.Port != "" {
		s += ":" + k.Port
	}
	return s
}

// ParseKubeSelector reads "pod/NAMESPACE/NAME[:PORT]" or "svc/NAMESPACE/NAME[:PORT]".
// ok is false, with no error, when s starts with neither "pod/" nor "svc/": it is then an
// address selector for ParseSelector. Namespaces and Service names are DNS labels, pod
// names DNS subdomains; PORT is 1-65535, or for a Service also a port name.
func ParseKubeSelector(s string) (sel KubeSelector, ok bool, err error) {
	kind, rest, found := strings.Cut(s, "/")
	if !found || (kind != "pod" && kind != "svc") {
		return KubeSelector{}, false, nil
	}
	bad := func(format string, args ...any) (KubeSelector, bool, error) {
		return KubeSelector{}, true, fmt.Errorf("selector %q: %s (want %s/NAMESPACE/NAME[:PORT])",
			s, fmt.Sprintf(format, args...), kind)
	}
	ns, name, found := strings.Cut(rest, "/")
	switch {
	case !found && rest == "":
		return bad("missing namespace and name")
	case !found:
		return bad("missing name")
	case strings.Contains(name, "/"):
		return bad("too many parts")
	}
	name, port, hasPort := strings.Cut(name, ":")
	if ns == "" {
		return bad("empty namespace")
	}
	if name == "" {
		return bad("empty name")
	}
	if hasPort && port == "" {
		return bad("empty port")
	}
	if why := dnsLabel(ns); why != "" {
		return bad("namespace %q: %s", ns, why)
	}
	if kind == "pod" {
		if why := dnsSubdomain(name); why != "" {
			return bad("pod name %q: %s", name, why)
		}
	} else if why := dnsLabel(name); why != "" {
		return bad("service name %q: %s", name, why)
	}
	if port != "" {
		if isDigits(port) {
			if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
				return bad("port must be 1-65535")
			}
		} else if kind == "pod" {
			return bad("port must be 1-65535 (port names need a svc/ selector)")
		} else if why := dnsLabel(port); why != "" {
			return bad("port %q: must be 1-65535 or a port name: %s", port, why)
		}
	}
	return KubeSelector{Kind: kind, Namespace: ns, Name: name, Port: port}, true, nil
}

// dnsLabel says what is wrong with s as an RFC 1123 label, "" if nothing.
func dnsLabel(s string) string {
	if len(s) > 63 {
		return "longer than 63 characters"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(s)-1 {
				return "must start and end with a letter or digit"
			}
		case c >= 'A' && c <= 'Z':
			return "must be lowercase"
		default:
			return fmt.Sprintf("%q is not allowed (lowercase letters, digits and '-')", c)
		}
	}
	return ""
}

// dnsSubdomain says what is wrong with s as an RFC 1123 subdomain (labels joined by
// dots), "" if nothing.
func dnsSubdomain(s string) string {
	if len(s) > 253 {
		return "longer than 253 characters"
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" {
			return "empty part between dots"
		}
		if why := dnsLabel(l); why != "" {
			if strings.Contains(why, "is not allowed") {
				return strings.Replace(why, "and '-'", "'-' and '.'", 1)
			}
			return why
		}
	}
	return ""
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
