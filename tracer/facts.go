package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/decode/diagnose"
)

// NodeFacts reads the state of one network namespace for a diagnosis: the real node's
// diagnose.Facts. Every call asks the kernel again; nothing is cached but what does not
// change while the kernel runs (the size of struct nf_conn) and the rule texts that
// RuleReader keeps per ruleset generation.
//
// Every call is bounded in memory whatever the namespace holds: dumps are read one
// message at a time and only what matches is kept (at most factsMaxRoutes routes,
// factsMaxFDB FDB entries, factsMaxQdiscs qdiscs, factsMaxCluster cluster prefixes),
// and a neighbour is asked for by its address, not found in a dump. Links and
// addresses are listed whole: a namespace has as many as it has devices.
//
// A NodeFacts is safe for concurrent use.
type NodeFacts struct {
	ns *nsRef
	h  *netlink.Handle // routes, addresses and link names, in the namespace

	mu      sync.Mutex
	rules   *RuleReader // opened by the first NATRules
	connLen int         // sizeof(struct nf_conn) once BTF gave it
}

var _ diagnose.Facts = (*NodeFacts)(nil)

// Bounds of one call.
const (
	factsMaxRoutes  = 64       // Routes keeps the most specific of the routes containing dst
	factsMaxFDB     = 64 << 10 // entries of one device's forwarding database
	factsMaxQdiscs  = 4096     // qdiscs of one device (an mq root has one per queue)
	factsMaxCluster = 16 << 10 // prefixes routed over tunnels (Kubernetes allows 5,000 nodes)
	factsMaxSysctl  = 64 << 10 // bytes of one sysctl
	factsTimeout    = 5 * time.Second
)

// OpenFacts opens the facts of a network namespace: "" for the caller's own, a name
// under /run/netns, or a path such as /proc/PID/ns/net. Reading most facts needs
// CAP_NET_ADMIN there; NATRules needs it to open the ruleset.
func OpenFacts(netns string) (*NodeFacts, error) {
	ns, err := openNetns(netns)
	if err != nil {
		return nil, err
	}
	var h *netlink.Handle
	if ns.path == "" {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandleAt(ns.handle, unix.NETLINK_ROUTE)
	}
	if err != nil {
		ns.close()
		return nil, fmt.Errorf("open a netlink socket in %s: %w", ns, err)
	}
	if err := h.SetSocketTimeout(factsTimeout); err != nil {
		h.Close()
		ns.close()
		return nil, fmt.Errorf("set the netlink socket's timeout in %s: %w", ns, err)
	}
	return &NodeFacts{ns: ns, h: h}, nil
}

// Close releases the sockets and the namespace.
func (f *NodeFacts) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	if f.rules != nil {
		err = f.rules.Close()
		f.rules = nil
	}
	if f.h != nil {
		f.h.Close()
		f.h = nil
	}
	if f.ns != nil {
		f.ns.close()
		f.ns = nil
	}
	return err
}

// Links.

// linkExtra is what netlink's Link leaves out of the same RTM_NEWLINK message: the
// bridge port's hairpin mode and the VXLAN device's DF setting.
type linkExtra struct {
	hairpin *bool
	df      string
}

// Link is the interface named name, read with one RTM_GETLINK by name.
func (f *NodeFacts) Link(name string) (diagnose.Link, error) {
	var (
		got   netlink.Link
		extra linkExtra
	)
	err := f.readLinks(name, func(l netlink.Link, x linkExtra) {
		got, extra = l, x
	})
	if errors.Is(err, unix.ENODEV) || err == nil && got == nil {
		return diagnose.Link{}, fmt.Errorf("no interface %s in %s (see ip link)", name, f.ns)
	}
	if err != nil {
		return diagnose.Link{}, fmt.Errorf("read interface %s in %s: %w", name, f.ns, err)
	}
	addrs, err := f.h.AddrList(got, netlink.FAMILY_ALL)
	if err != nil {
		return diagnose.Link{}, fmt.Errorf("list the addresses of %s in %s: %w", name, f.ns, err)
	}
	return f.link(got, extra, f.nameOf(nil), addrs), nil
}

// Links are all the namespace's interfaces, by index, read with one RTM_GETLINK dump.
func (f *NodeFacts) Links() ([]diagnose.Link, error) {
	type one struct {
		l netlink.Link
		x linkExtra
	}
	var all []one
	names := map[int]string{}
	if err := f.readLinks("", func(l netlink.Link, x linkExtra) {
		all = append(all, one{l, x})
		names[l.Attrs().Index] = l.Attrs().Name
	}); err != nil {
		return nil, fmt.Errorf("list the interfaces of %s: %w", f.ns, err)
	}
	addrs, err := f.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list the addresses of %s: %w", f.ns, err)
	}
	byLink := map[int][]netlink.Addr{}
	for _, a := range addrs {
		byLink[a.LinkIndex] = append(byLink[a.LinkIndex], a)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].l.Attrs().Index < all[j].l.Attrs().Index })
	out := make([]diagnose.Link, 0, len(all))
	for _, o := range all {
		out = append(out, f.link(o.l, o.x, f.nameOf(names), byLink[o.l.Attrs().Index]))
	}
	return out, nil
}

// readLinks reads one link by name, or all of them when name is "", inside the
// namespace, and calls fn with each as netlink decodes it plus what it does not.
func (f *NodeFacts) readLinks(name string, fn func(netlink.Link, linkExtra)) error {
	flags := unix.NLM_F_DUMP
	if name != "" {
		flags = 0
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, flags)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	if name != "" {
		attr := unix.IFLA_IFNAME
		if len(name) >= unix.IFNAMSIZ {
			attr = unix.IFLA_ALT_IFNAME
		}
		req.AddData(nl.NewRtAttr(attr, nl.ZeroTerminated(name)))
	}
	var perr error
	err := f.ns.do(func() error {
		return req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWLINK, func(m []byte) bool {
			l, err := netlink.LinkDeserialize(nil, m)
			if err != nil {
				perr = err
				return false
			}
			fn(l, parseLinkExtra(m))
			return true
		})
	})
	if err == nil {
		err = perr
	}
	return err
}

// parseLinkExtra reads IFLA_LINKINFO of an RTM_NEWLINK message for the bridge port's
// IFLA_BRPORT_MODE (hairpin) and the VXLAN device's IFLA_VXLAN_DF, which netlink
// v1.3.1 does not decode.
func parseLinkExtra(m []byte) linkExtra {
	var x linkExtra
	if len(m) < unix.SizeofIfInfomsg {
		return x
	}
	attrs, err := nlAttrs(m[unix.SizeofIfInfomsg:])
	if err != nil {
		return x
	}
	for _, a := range attrs {
		if a.typ != unix.IFLA_LINKINFO {
			continue
		}
		info, err := nlAttrs(a.val)
		if err != nil {
			return x
		}
		var kind, slaveKind string
		var data, slaveData []byte
		for _, i := range info {
			switch i.typ {
			case unix.IFLA_INFO_KIND:
				kind = strings.TrimRight(string(i.val), "\x00")
			case unix.IFLA_INFO_DATA:
				data = i.val
			case unix.IFLA_INFO_SLAVE_KIND:
				slaveKind = strings.TrimRight(string(i.val), "\x00")
			case unix.IFLA_INFO_SLAVE_DATA:
				slaveData = i.val
			}
		}
		if kind == "vxlan" {
			if v, ok := nestedAttr(data, unix.IFLA_VXLAN_DF); ok && len(v) >= 1 {
				x.df = dfName(v[0])
			}
		}
		if slaveKind == "bridge" {
			if v, ok := nestedAttr(slaveData, unix.IFLA_BRPORT_MODE); ok && len(v) >= 1 {
				hp := v[0] != 0
				x.hairpin = &hp
			}
		}
	}
	return x
}

// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from an attribute's type.
const nlaTypeMask = 0x3fff

// nestedAttr finds the attribute of type typ among the attributes in b.
func nestedAttr(b []byte, typ uint16) ([]byte, bool) {
	attrs, err := nlAttrs(b)
	if err != nil {
		return nil, false
	}
	for _, a := range attrs {
		if a.typ == typ {
			return a.val, true
		}
	}
	return nil, false
}

// dfName names a VXLAN or Geneve DF setting as ip -d link does.
func dfName(v uint8) string {
	switch v {
	case 0:
		return "unset"
	case 1:
		return "set"
	case 2:
		return "inherit"
	}
	return strconv.Itoa(int(v))
}

// link turns netlink's link into the diagnosis's.
func (f *NodeFacts) link(l netlink.Link, x linkExtra, name func(int) string, addrs []netlink.Addr) diagnose.Link {
	a := l.Attrs()
	out := diagnose.Link{
		Name:  a.Name,
		Index: a.Index,
		Type:  l.Type(),
		MTU:   a.MTU,
		// Up as ip link's state UP or UNKNOWN: administratively up and with a carrier.
		Up:      a.RawFlags&unix.IFF_UP != 0 && a.RawFlags&unix.IFF_RUNNING != 0,
		Hairpin: x.hairpin,
	}
	if a.MasterIndex > 0 {
		out.Master = name(a.MasterIndex)
	}
	switch t := l.(type) {
	case *netlink.Vxlan:
		out.TunnelPort = uint16(t.Port)
		out.TunnelLocal = addrOf(t.SrcAddr)
		if t.VtepDevIndex > 0 {
			out.TunnelDev = name(t.VtepDevIndex)
		}
		out.TunnelDF = x.df // "" before 5.0, whose kernels have no IFLA_VXLAN_DF
		out.VNI = uint32(t.VxlanId)
	case *netlink.Geneve:
		// Geneve has no local address or underlay device: the kernel routes to Remote.
		out.TunnelPort = t.Dport
		out.TunnelDF = dfName(uint8(t.Df))
		out.VNI = t.ID
	case *netlink.Iptun:
		out.TunnelLocal = addrOf(t.Local)
		if t.Link > 0 {
			out.TunnelDev = name(int(t.Link))
		}
	}
	for _, ad := range addrs {
		if p, ok := prefixOf(ad.IPNet); ok {
			out.Addrs = append(out.Addrs, p)
		}
	}
	return out
}

// nameOf names interfaces by index: from known when it has them, else by asking.
func (f *NodeFacts) nameOf(known map[int]string) func(int) string {
	if known == nil {
		known = map[int]string{}
	}
	return func(i int) string {
		if n, ok := known[i]; ok {
			return n
		}
		n := "if" + strconv.Itoa(i) // as ip prints a device it cannot name
		if l, err := f.h.LinkByIndex(i); err == nil {
			n = l.Attrs().Name
		}
		known[i] = n
		return n
	}
}

// index is the ifindex of the interface named dev, or an error that names it.
func (f *NodeFacts) index(dev string) (int, string, error) {
	l, err := f.h.LinkByName(dev)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return 0, "", fmt.Errorf("no interface %s in %s (see ip link)", dev, f.ns)
		}
		return 0, "", fmt.Errorf("read interface %s in %s: %w", dev, f.ns, err)
	}
	return l.Attrs().Index, l.Type(), nil
}

// Sysctls.

// Sysctl reads /proc/sys/NAME from a thread inside the namespace: /proc/sys/net shows
// the network namespace of the task that opens it.
func (f *NodeFacts) Sysctl(name string) (string, error) {
	var val string
	err := f.ns.do(func() error {
		p, err := sysctlPath("/proc/sys", name)
		if err != nil {
			return err
		}
		fh, err := os.Open(p)
		if err != nil {
			return err
		}
		defer fh.Close()
		b, err := io.ReadAll(io.LimitReader(fh, factsMaxSysctl))
		if err != nil {
			return err
		}
		val = strings.TrimSpace(string(b))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl %s in %s: %w", name, f.ns, err)
	}
	return val, nil
}

// sysctlPath finds the file of a sysctl under root. A name with slashes is a path
// ("net/ipv4/conf/flannel.1/rp_filter"); a name with dots only has each dot taken as
// a separator unless the entry with the dot in its name exists, as for the device in
// "net.ipv4.conf.flannel.1.rp_filter": at each level the longest existing name wins.
func sysctlPath(root, name string) (string, error) {
	name = strings.TrimPrefix(strings.TrimSpace(name), "/proc/sys/")
	sep := "."
	if strings.Contains(name, "/") {
		sep = "/"
	}
	parts := strings.Split(strings.Trim(name, sep), sep)
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, 0) {
			return "", fmt.Errorf("%q is not a sysctl name", name)
		}
	}
	if sep == "/" {
		return filepath.Join(append([]string{root}, parts...)...), nil
	}
	dir := root
	for i := 0; i < len(parts); {
		found := false
		for j := len(parts); j > i; j-- {
			c := filepath.Join(dir, strings.Join(parts[i:j], "."))
			if _, err := os.Lstat(c); err == nil {
				dir, i, found = c, j, true
				break
			}
		}
		if !found {
			return "", fmt.Errorf("no %s under %s: %w", parts[i], dir, os.ErrNotExist)
		}
	}
	return dir, nil
}

// Routes.

// Route types by rtm_type, as ip route names them.
var routeTypes = map[int]string{
	unix.RTN_UNSPEC: "none", unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local",
	unix.RTN_BROADCAST: "broadcast", unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast",
	unix.RTN_BLACKHOLE: "blackhole", unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit",
	unix.RTN_THROW: "throw", unix.RTN_NAT: "nat", unix.RTN_XRESOLVE: "xresolve",
}

func routeType(t int) string {
	if s, ok := routeTypes[t]; ok {
		return s
	}
	return strconv.Itoa(t)
}

// RouteGet asks the kernel for the route as ip route get does (RTM_GETROUTE), and for
// the table entry that matched as ip route get fibmatch does. A lookup the kernel
// refuses comes back as an error number, which names the kind of route that refused
// it; the route itself is then found in the tables.
func (f *NodeFacts) RouteGet(dst, src netip.Addr, iif string) (diagnose.Route, error) {
	if !dst.IsValid() {
		return diagnose.Route{}, errors.New("route lookup: no destination address")
	}
	dst = dst.Unmap()
	what := "the route to " + dst.String()
	opts := &netlink.RouteGetOptions{}
	if iif != "" {
		if !src.IsValid() {
			return diagnose.Route{}, fmt.Errorf("look up %s arriving on %s: an input lookup needs the packet's source address", what, iif)
		}
		idx, _, err := f.index(iif)
		if err != nil {
			return diagnose.Route{}, fmt.Errorf("look up %s arriving on %s: %w", what, iif, err)
		}
		opts.IifIndex = idx
		what += fmt.Sprintf(" from %s arriving on %s", src.Unmap(), iif)
	}
	if src.IsValid() {
		opts.SrcAddr = src.Unmap().AsSlice()
		if iif == "" {
			what += " from " + src.Unmap().String()
		}
	}
	rs, err := f.h.RouteGetWithOptions(dst.AsSlice(), opts)
	if err != nil {
		return f.refused(dst, src.Unmap(), iif, what, err)
	}
	if len(rs) == 0 {
		return diagnose.Route{}, fmt.Errorf("look up %s in %s: the kernel gave no answer", what, f.ns)
	}
	name := f.nameOf(nil)
	out := f.route(rs[0], name)
	fib := *opts
	fib.FIBMatch = true
	if m, err := f.h.RouteGetWithOptions(dst.AsSlice(), &fib); err == nil && len(m) > 0 {
		// The entry of the table, not the cached answer: its prefix, table, metrics,
		// flags and text.
		e := f.route(m[0], name)
		out.Dst, out.Table, out.MTU, out.OnLink, out.Text = e.Dst, e.Table, e.MTU, e.OnLink, e.Text
	}
	return out, nil
}

// refused turns the kernel's refusal of a lookup into the route that refused it:
// EINVAL blackhole, EHOSTUNREACH unreachable, EACCES prohibit, ENETUNREACH no route.
// A lookup also fails for reasons that are no route, which are errors that say so
// when no route of the kind contains the destination: for an input lookup the
// reverse-path filter (EXDEV; EINVAL since 6.13, whose input path returns drop
// reasons), a martian address (EINVAL) and forwarding off on the input device
// (EHOSTUNREACH); for an output lookup a source that is not the node's (ENETUNREACH
// or EINVAL, told apart by looking up without it).
func (f *NodeFacts) refused(dst, src netip.Addr, iif, what string, err error) (diagnose.Route, error) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return diagnose.Route{}, fmt.Errorf("look up %s in %s: %w", what, f.ns, err)
	}
	if iif == "" && src.IsValid() && (errno == unix.ENETUNREACH || errno == unix.EINVAL) {
		// An output lookup from an address that is not the node's fails so too
		// (ENETUNREACH, EINVAL for a multicast or zero one): the same lookup without
		// the source tells.
		var again syscall.Errno
		if _, err2 := f.h.RouteGetWithOptions(dst.AsSlice(), nil); !errors.As(err2, &again) || again != errno {
			return diagnose.Route{}, fmt.Errorf("look up %s in %s: %s is not an address of the namespace, so the node cannot send from it (%w); for a forwarded packet, name the interface it arrives on", what, f.ns, src, err)
		}
	}
	typ := ""
	switch errno {
	case unix.EINVAL:
		typ = "blackhole"
	case unix.EHOSTUNREACH:
		typ = "unreachable"
	case unix.EACCES:
		typ = "prohibit"
	case unix.ENETUNREACH:
		return diagnose.Route{Type: "none"}, nil
	case unix.EXDEV:
		if iif != "" {
			if why, ok := f.rpFilterRefuses(src, iif); ok {
				return diagnose.Route{}, fmt.Errorf("look up %s in %s: %s (%w)", what, f.ns, why, err)
			}
		}
		fallthrough
	default:
		return diagnose.Route{}, fmt.Errorf("look up %s in %s: %w", what, f.ns, err)
	}
	routes, rerr := f.Routes(dst)
	if rerr == nil {
		for _, r := range routes {
			if r.Type == typ {
				return r, nil
			}
		}
	}
	if iif != "" {
		switch errno {
		case unix.EHOSTUNREACH:
			fam := "ipv4"
			if dst.Is6() {
				fam = "ipv6"
			}
			if v, err := f.Sysctl("net/" + fam + "/conf/" + iif + "/forwarding"); err == nil && v == "0" {
				return diagnose.Route{}, fmt.Errorf("look up %s in %s: forwarding is off on %s (net.%s.conf.%s.forwarding = 0), not a route, refuses it (%w)", what, f.ns, iif, fam, iif, err)
			}
		case unix.EINVAL:
			if why, ok := f.rpFilterRefuses(src, iif); ok {
				return diagnose.Route{}, fmt.Errorf("look up %s in %s: %s (%w)", what, f.ns, why, err)
			}
			return diagnose.Route{}, fmt.Errorf("look up %s in %s: the kernel takes an address for a martian (%w), and no blackhole route contains %s", what, f.ns, err, dst)
		}
	}
	// No route of the kind contains dst: an ip rule with that action refused it
	// (ip rule ... blackhole|unreachable|prohibit). There is no route to print.
	return diagnose.Route{Type: typ, Dst: netip.PrefixFrom(dst, dst.BitLen())}, nil
}

// rpFilterRefuses says whether IPv4's reverse-path filter refuses a packet from src
// arriving on iif, as fib_validate_source decides: the mode is the larger of the
// device's rp_filter and all's; strict (1) wants the route back to src to leave by
// iif, loose (2) wants one at all.
func (f *NodeFacts) rpFilterRefuses(src netip.Addr, iif string) (string, bool) {
	if !src.Is4() {
		return "", false
	}
	mode := func(dev string) int {
		v, err := f.Sysctl("net/ipv4/conf/" + dev + "/rp_filter")
		if err != nil {
			return 0
		}
		n, _ := strconv.Atoi(v)
		return n
	}
	dev, all := mode(iif), mode("all")
	if max(dev, all) == 0 {
		return "", false
	}
	back := "no route leads back to " + src.String()
	via := ""
	if rs, err := f.h.RouteGetWithOptions(src.AsSlice(), nil); err == nil && len(rs) > 0 {
		via = f.nameOf(nil)(rs[0].LinkIndex)
		back = fmt.Sprintf("the route back to %s leaves by %s", src, via)
	}
	if max(dev, all) == 2 && via != "" || max(dev, all) != 2 && via == iif {
		return "", false
	}
	return fmt.Sprintf("the reverse-path filter refuses source %s arriving on %s: net.ipv4.conf.%s.rp_filter = %d, net.ipv4.conf.all.rp_filter = %d, and %s",
		src, iif, iif, dev, all, back), true
}

// Routes are the routes of every table whose prefix contains dst, most specific
// first, from one dump read a message at a time: only the factsMaxRoutes most
// specific are kept.
func (f *NodeFacts) Routes(dst netip.Addr) ([]diagnose.Route, error) {
	if !dst.IsValid() {
		return nil, errors.New("list routes: no destination address")
	}
	dst = dst.Unmap()
	family := netlink.FAMILY_V4
	if dst.Is6() {
		family = netlink.FAMILY_V6
	}
	var keep []netlink.Route
	trim := func() {
		sortRoutes(keep)
		if len(keep) > factsMaxRoutes {
			keep = keep[:factsMaxRoutes]
		}
	}
	var err error
	for try := 0; try < 3; try++ {
		keep = keep[:0]
		err = f.h.RouteListFilteredIter(family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
			if p := routePrefix(r, family); p.Contains(dst) {
				keep = append(keep, r)
				if len(keep) >= 2*factsMaxRoutes {
					trim()
				}
			}
			return true
		})
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break // an interrupted dump (the routes changed) is read again
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list the routes of %s: %w", f.ns, err)
	}
	trim()
	name := f.nameOf(nil)
	out := make([]diagnose.Route, 0, len(keep))
	for _, r := range keep {
		out = append(out, f.route(r, name))
	}
	return out, nil
}

// sortRoutes orders routes as the kernel would prefer them: longest prefix first, then
// the local, main and default tables before the others, then the lower metric.
func sortRoutes(rs []netlink.Route) {
	rank := func(t int) int {
		switch t {
		case unix.RT_TABLE_LOCAL:
			return 0
		case unix.RT_TABLE_MAIN:
			return 1
		case unix.RT_TABLE_DEFAULT:
			return 2
		}
		return 3
	}
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		la, lb := prefixLen(a.Dst), prefixLen(b.Dst)
		if la != lb {
			return la > lb
		}
		if ra, rb := rank(a.Table), rank(b.Table); ra != rb {
			return ra < rb
		}
		if a.Table != b.Table {
			return a.Table < b.Table
		}
		return a.Priority < b.Priority
	})
}

func prefixLen(n *net.IPNet) int {
	if n == nil {
		return 0
	}
	ones, _ := n.Mask.Size()
	return ones
}

// routePrefix is a route's destination, 0/0 of the family for the default route.
func routePrefix(r netlink.Route, family int) netip.Prefix {
	if p, ok := prefixOf(r.Dst); ok {
		return p
	}
	if family == netlink.FAMILY_V6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
}

// route turns netlink's route into the diagnosis's.
func (f *NodeFacts) route(r netlink.Route, name func(int) string) diagnose.Route {
	out := diagnose.Route{
		Type:    routeType(r.Type),
		Gateway: addrOf(r.Gw),
		Src:     addrOf(r.Src),
		Table:   r.Table,
		MTU:     r.MTU,
		OnLink:  r.Flags&unix.RTNH_F_ONLINK != 0,
		Text:    routeText(r, name),
	}
	if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 {
		out.Dst = p
	}
	if r.LinkIndex > 0 {
		out.Dev = name(r.LinkIndex)
	}
	if len(r.MultiPath) > 0 && out.Dev == "" {
		// A multipath route: the first next hop stands for it, the text has them all.
		nh := r.MultiPath[0]
		out.Gateway, out.OnLink = addrOf(nh.Gw), nh.Flags&unix.RTNH_F_ONLINK != 0
		if nh.LinkIndex > 0 {
			out.Dev = name(nh.LinkIndex)
		}
	}
	return out
}

// routeText prints a route as ip route (iproute2 6.x) does: type when not unicast,
// destination ("default" for 0/0, no /32 for a host), via, dev, table when not main,
// proto when not boot, scope when not global, src, metric, flags, metrics and next
// hops. It leaves out what netlink v1.3.1 does not decode (IPv6's pref).
func routeText(r netlink.Route, name func(int) string) string {
	var b []string
	add := func(s ...string) { b = append(b, s...) }
	if r.Type != unix.RTN_UNICAST {
		add(routeType(r.Type))
	}
	switch p, ok := prefixOf(r.Dst); {
	case !ok || p.Bits() == 0:
		add("default")
	case p.Bits() == p.Addr().BitLen():
		add(p.Addr().String())
	default:
		add(p.String())
	}
	if r.Tos != 0 {
		add("tos", fmt.Sprintf("0x%x", r.Tos))
	}
	if gw := addrOf(r.Gw); gw.IsValid() {
		add("via", gw.String())
	} else if r.Via != nil {
		add("via", r.Via.String())
	}
	if r.LinkIndex > 0 {
		add("dev", name(r.LinkIndex))
	}
	if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
		add("table", tableName(r.Table))
	}
	if r.Protocol != unix.RTPROT_BOOT {
		add("proto", protoName(r.Protocol))
	}
	if r.Scope != netlink.SCOPE_UNIVERSE {
		add("scope", r.Scope.String())
	}
	if src := addrOf(r.Src); src.IsValid() {
		add("src", src.String())
	}
	if r.Priority != 0 || r.Family == netlink.FAMILY_V6 {
		add("metric", strconv.Itoa(r.Priority))
	}
	add(routeFlags(r.Flags)...)
	for _, m := range []struct {
		name string
		v    int
	}{{"mtu", r.MTU}, {"window", r.Window}, {"advmss", r.AdvMSS}, {"hoplimit", r.Hoplimit}, {"initcwnd", r.InitCwnd}, {"initrwnd", r.InitRwnd}} {
		if m.v != 0 {
			if m.name == "mtu" && r.MTULock {
				add(m.name, "lock", strconv.Itoa(m.v))
				continue
			}
			add(m.name, strconv.Itoa(m.v))
		}
	}
	for _, nh := range r.MultiPath {
		add("nexthop")
		if gw := addrOf(nh.Gw); gw.IsValid() {
			add("via", gw.String())
		}
		if nh.LinkIndex > 0 {
			add("dev", name(nh.LinkIndex))
		}
		add("weight", strconv.Itoa(nh.Hops+1))
		add(routeFlags(nh.Flags)...)
	}
	return strings.Join(b, " ")
}

// routeFlags names next-hop flags in iproute2's order.
func routeFlags(fl int) []string {
	var out []string
	for _, f := range []struct {
		bit  int
		name string
	}{{unix.RTNH_F_DEAD, "dead"}, {unix.RTNH_F_ONLINK, "onlink"}, {unix.RTNH_F_PERVASIVE, "pervasive"},
		{unix.RTNH_F_OFFLOAD, "offload"}, {unix.RTNH_F_TRAP, "trap"}, {unix.RTNH_F_LINKDOWN, "linkdown"},
		{unix.RTNH_F_UNRESOLVED, "unresolved"}} {
		if fl&f.bit != 0 {
			out = append(out, f.name)
		}
	}
	return out
}

func tableName(t int) string {
	switch t {
	case unix.RT_TABLE_LOCAL:
		return "local"
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_DEFAULT:
		return "default"
	}
	return strconv.Itoa(t)
}

func protoName(p netlink.RouteProtocol) string {
	if p == 18 { // RTPROT_KEEPALIVED, which netlink's String leaves out
		return "keepalived"
	}
	return p.String()
}

// Neighbours and forwarding databases.

// Neigh asks the kernel for the one neighbour entry (RTM_GETNEIGH of the address on
// the device, since 4.20), so a table of any size costs one message.
func (f *NodeFacts) Neigh(dev string, addr netip.Addr) (diagnose.Neigh, bool, error) {
	if !addr.IsValid() {
		return diagnose.Neigh{}, false, fmt.Errorf("neighbour on %s: no address", dev)
	}
	addr = addr.Unmap()
	idx, _, err := f.index(dev)
	if err != nil {
		return diagnose.Neigh{}, false, fmt.Errorf("neighbour %s: %w", addr, err)
	}
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, 0)
	req.AddData(&netlink.Ndmsg{Family: uint8(family), Index: uint32(idx)})
	req.AddData(nl.NewRtAttr(unix.NDA_DST, addr.AsSlice()))
	var got *netlink.Neigh
	var perr error
	// Inside the namespace: NeighDeserialize asks netlink's default handle for the
	// device of a 16-byte link-layer address.
	err = f.ns.do(func() error {
		return req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH, func(m []byte) bool {
			got, perr = netlink.NeighDeserialize(m)
			return false
		})
	})
	if errors.Is(err, unix.ENOENT) {
		return diagnose.Neigh{}, false, nil
	}
	if err == nil {
		err = perr
	}
	if err != nil {
		return diagnose.Neigh{}, false, fmt.Errorf("read neighbour %s on %s in %s: %w", addr, dev, f.ns, err)
	}
	if got == nil {
		return diagnose.Neigh{}, false, nil
	}
	n := diagnose.Neigh{Addr: addr, Dev: dev, State: neighState(got.State)}
	if len(got.HardwareAddr) > 0 {
		n.MAC = got.HardwareAddr.String()
	}
	return n, true, nil
}

// neighState names a NUD state as ip neigh does, lower case.
func neighState(s int) string {
	var names []string
	for _, n := range []struct {
		bit  int
		name string
	}{{unix.NUD_INCOMPLETE, "incomplete"}, {unix.NUD_REACHABLE, "reachable"}, {unix.NUD_STALE, "stale"},
		{unix.NUD_DELAY, "delay"}, {unix.NUD_PROBE, "probe"}, {unix.NUD_FAILED, "failed"},
		{unix.NUD_NOARP, "noarp"}, {unix.NUD_PERMANENT, "permanent"}} {
		if s&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// FDB dumps the forwarding database of dev as bridge fdb show does: for a bridge, the
// entries of every port (the kernel filters by master), else those of the device (by
// port). Entries are read one at a time and at most factsMaxFDB are kept.
func (f *NodeFacts) FDB(dev string) ([]diagnose.FDBEntry, error) {
	idx, typ, err := f.index(dev)
	if err != nil {
		return nil, fmt.Errorf("forwarding database: %w", err)
	}
	var vni uint32
	if typ == "vxlan" {
		if l, err := f.Link(dev); err == nil {
			vni = l.VNI // the kernel leaves out NDA_VNI when it is the device's
		}
	}
	// The legacy request (an ifinfomsg, as iproute2 sends): the kernel filters on
	// ifi_index as the port and IFLA_MASTER as the bridge.
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, unix.NLM_F_DUMP)
	msg := nl.NewIfInfomsg(unix.AF_BRIDGE)
	if typ == "bridge" {
		req.AddData(msg)
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(idx))))
	} else {
		msg.Index = int32(idx)
		req.AddData(msg)
	}
	var raw []netlink.Neigh
	over := false
	err = f.ns.do(func() error {
		return req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH, func(m []byte) bool {
			n, err := netlink.NeighDeserialize(m)
			if err != nil || n.Family != unix.AF_BRIDGE || n.LinkIndex != idx && n.MasterIndex != idx {
				return true
			}
			if len(raw) == factsMaxFDB {
				over = true
				return false
			}
			raw = append(raw, *n)
			return true
		})
	})
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("dump the forwarding database of %s in %s: %w", dev, f.ns, err)
	}
	if over {
		return nil, fmt.Errorf("the forwarding database of %s in %s has more than %d entries: not read", dev, f.ns, factsMaxFDB)
	}
	name := f.nameOf(map[int]string{idx: dev})
	out := make([]diagnose.FDBEntry, 0, len(raw))
	for _, n := range raw {
		e := diagnose.FDBEntry{Dev: name(n.LinkIndex), Dst: addrOf(n.IP), VNI: vni, State: fdbState(n.State)}
		if len(n.HardwareAddr) > 0 {
			e.MAC = n.HardwareAddr.String()
		}
		if n.VNI != 0 {
			e.VNI = uint32(n.VNI)
		}
		out = append(out, e)
	}
	return out, nil
}

// fdbState names an FDB entry's state as bridge fdb show does, with "reachable" for a
// learned entry, which bridge prints without a state.
func fdbState(s int) string {
	switch {
	case s&unix.NUD_PERMANENT != 0:
		return "permanent"
	case s&unix.NUD_NOARP != 0:
		return "static"
	case s&unix.NUD_STALE != 0:
		return "stale"
	case s&unix.NUD_REACHABLE != 0:
		return "reachable"
	}
	return neighState(s)
}

// Qdiscs.

// Qdiscs dumps the qdiscs (RTM_GETQDISC) and keeps dev's, decoded from the raw
// messages: netlink v1.3.1 has the statistics but drops TCA_STATS_PKT64, the packet
// count past 2^32, and buffers the whole dump of every device.
func (f *NodeFacts) Qdiscs(dev string) ([]diagnose.Qdisc, error) {
	idx, _, err := f.index(dev)
	if err != nil {
		return nil, fmt.Errorf("qdiscs: %w", err)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETQDISC, unix.NLM_F_DUMP)
	req.AddData(&nl.TcMsg{Family: unix.AF_UNSPEC, Ifindex: int32(idx)})
	var out []diagnose.Qdisc
	var perr error
	over := false
	err = f.ns.do(func() error {
		return req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWQDISC, func(m []byte) bool {
			if len(m) < nl.SizeofTcMsg || int(int32(binary.NativeEndian.Uint32(m[4:8]))) != idx {
				return true
			}
			if len(out) == factsMaxQdiscs {
				over = true
				return false
			}
			q, err := parseQdisc(m)
			if err != nil {
				perr = err
				return false
			}
			out = append(out, q)
			return true
		})
	})
	if err == nil || errors.Is(err, netlink.ErrDumpInterrupted) {
		err = perr
	}
	if err != nil {
		return nil, fmt.Errorf("dump the qdiscs of %s in %s: %w", dev, f.ns, err)
	}
	if over {
		return nil, fmt.Errorf("%s in %s has more than %d qdiscs: not read", dev, f.ns, factsMaxQdiscs)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Parent == "root" && out[j].Parent != "root" })
	return out, nil
}

// Conntrack.

// Conntrack reads the namespace's conntrack counters (/proc/net/stat/nf_conntrack) and
// sysctls from a thread inside it, and the size of one entry from the kernel's BTF.
func (f *NodeFacts) Conntrack() (diagnose.Conntrack, error) {
	s, err := readCTStats(f.ns)
	if err != nil {
		return diagnose.Conntrack{}, fmt.Errorf("read conntrack statistics in %s: %w (conntrack is loaded there only once a rule or NAT uses it)", f.ns, err)
	}
	c := diagnose.Conntrack{
		Count: s.Count, Max: s.Max,
		InsertFailed: s.Counters["insert_failed"],
		EarlyDrop:    s.Counters["early_drop"],
		Drop:         s.Counters["drop"],
	}
	const maxPath = "/proc/sys/net/netfilter/nf_conntrack_max"
	err = f.ns.do(func() error {
		c.Buckets = readUint("/proc/sys/net/netfilter/nf_conntrack_buckets")
		// Asked, never tried: the kernel makes it read-only outside the initial
		// namespace, where it is global.
		c.MaxWritable = unix.Faccessat(unix.AT_FDCWD, maxPath, unix.W_OK, unix.AT_EACCESS) == nil
		return nil
	})
	if err != nil {
		return diagnose.Conntrack{}, fmt.Errorf("read conntrack sysctls in %s: %w", f.ns, err)
	}
	c.EntryBytes = f.nfConnSize()
	return c, nil
}

// nfConnSize is sizeof(struct nf_conn) from the kernel's BTF (vmlinux's, or the
// nf_conntrack module's), 0 when it cannot be read; kept once known.
func (f *NodeFacts) nfConnSize() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.connLen == 0 {
		if kspec, err := btf.LoadKernelSpec(); err == nil {
			if conn, why := nfConnStruct(kspec); why == "" {
				f.connLen = int(conn.Size)
			}
		}
	}
	return f.connLen
}

// NAT rules.

// NATRules reads the ruleset with RuleReader (texts from iptables-save or nft) and
// keeps the nat tables' chains hooked at POSTROUTING and the chains they reach by jump
// or goto, with their rules.
func (f *NodeFacts) NATRules() (decode.RuleSnapshot, error) {
	f.mu.Lock()
	r := f.rules
	if r == nil {
		if f.ns == nil {
			f.mu.Unlock()
			return decode.RuleSnapshot{}, errors.New("facts closed")
		}
		var err error
		if r, err = NewRuleReader(f.ns.path); err != nil {
			f.mu.Unlock()
			return decode.RuleSnapshot{}, fmt.Errorf("open the ruleset: %w", err)
		}
		f.rules = r
	}
	f.mu.Unlock()
	snap, err := r.Snapshot()
	if err != nil {
		return decode.RuleSnapshot{}, err
	}
	return natPostrouting(snap), nil
}

// natPostrouting keeps, of every family, the chains of table nat hooked at POSTROUTING
// and those they reach through jump or goto verdicts, with their rules, in order.
func natPostrouting(s decode.RuleSnapshot) decode.RuleSnapshot {
	type key struct{ family, chain string }
	edges := map[key][]key{}
	var todo []key
	for _, c := range s.Chains {
		if c.Table == "nat" && c.Hook == "POSTROUTING" {
			todo = append(todo, key{c.Family, c.Name})
		}
	}
	for _, r := range s.Rules {
		if r.Table != "nat" {
			continue
		}
		k := key{r.Family, r.Chain}
		if r.Hook == "POSTROUTING" {
			todo = append(todo, k) // a chain the chain list lacks
		}
		for _, p := range []string{"jump ", "goto "} {
			if t, ok := strings.CutPrefix(r.Verdict, p); ok {
				edges[k] = append(edges[k], key{r.Family, t})
			}
		}
	}
	seen := map[key]bool{}
	for len(todo) > 0 {
		k := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if !seen[k] {
			seen[k] = true
			todo = append(todo, edges[k]...)
		}
	}
	out := decode.RuleSnapshot{Note: s.Note, Rules: []decode.Rule{}, Chains: []decode.Chain{}}
	for _, c := range s.Chains {
		if c.Table == "nat" && seen[key{c.Family, c.Name}] {
			out.Chains = append(out.Chains, c)
		}
	}
	for _, r := range s.Rules {
		if r.Table == "nat" && seen[key{r.Family, r.Chain}] {
			out.Rules = append(out.Rules, r)
		}
	}
	return out
}

// The node.

// Node lists the addresses of every link but the loopback, the prefixes of the
// bridges' addresses (podPrefixes) and the destinations of the unicast routes of every
// table but local whose device is a tunnel (isTunnel). Past factsMaxCluster
// prefixes it returns what it has with an error that says Cluster is cut.
func (f *NodeFacts) Node() (diagnose.NodeAddrs, error) {
	var out diagnose.NodeAddrs
	links, err := f.h.LinkList()
	if err != nil {
		return out, fmt.Errorf("list the interfaces of %s: %w", f.ns, err)
	}
	loop, tunnel := map[int]bool{}, map[int]bool{}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			loop[l.Attrs().Index] = true
		}
		if isTunnel(l.Type()) {
			tunnel[l.Attrs().Index] = true
		}
	}
	addrs, err := f.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return out, fmt.Errorf("list the addresses of %s: %w", f.ns, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !loop[a.LinkIndex] && !slices.Contains(out.Addrs, ip.Unmap()) {
			out.Addrs = append(out.Addrs, ip.Unmap())
		}
	}
	if out.Pods, err = podPrefixes(f.h); err != nil {
		return out, fmt.Errorf("pod prefixes in %s: %w", f.ns, err)
	}
	seen := map[netip.Prefix]bool{}
	over := false
	viaTunnel := func(r netlink.Route) bool {
		if tunnel[r.LinkIndex] {
			return true
		}
		for _, nh := range r.MultiPath {
			if tunnel[nh.LinkIndex] {
				return true
			}
		}
		return false
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		err := f.h.RouteListFilteredIter(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
			p, ok := prefixOf(r.Dst)
			if !ok || p.Bits() == 0 || r.Table == unix.RT_TABLE_LOCAL || r.Type != unix.RTN_UNICAST || !viaTunnel(r) || seen[p] {
				return true
			}
			if len(out.Cluster) == factsMaxCluster {
				over = true
				return false
			}
			seen[p] = true
			out.Cluster = append(out.Cluster, p)
			return true
		})
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, fmt.Errorf("list the routes of %s: %w", f.ns, err)
		}
	}
	sort.Slice(out.Cluster, func(i, j int) bool {
		if c := out.Cluster[i].Addr().Compare(out.Cluster[j].Addr()); c != 0 {
			return c < 0
		}
		return out.Cluster[i].Bits() < out.Cluster[j].Bits()
	})
	if over {
		return out, fmt.Errorf("more than %d prefixes are routed over tunnels in %s: Cluster has the first %d", factsMaxCluster, f.ns, factsMaxCluster)
	}
	return out, nil
}

// Conversions.

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}
