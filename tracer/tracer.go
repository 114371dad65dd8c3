package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/bpf"
	"github.com/pathtrace/pathtrace/decode"
)

// Drop hook modes.
const (
	DropAuto  = "auto"
	DropTPBTF = "tp_btf"
	DropRawTP = "raw_tp"
	// DropRawTPNoReason ignores the reason argument, as pathtrace must on kernels before
	// 5.17; forcing it lets that path be tested on newer ones.
	DropRawTPNoReason = "raw_tp_noreason"
	DropNone          = "none"
)

// Config is everything the tracer needs to know; there are no other settings.
type Config struct {
	Netns      string            // "" for the caller's namespace; a name under /run/netns, or a path
	Ifaces     []string          // glob patterns of interfaces to trace; nil: those discovery finds (Layout)
	AttachMode string            // AttachAuto, AttachTCX or AttachClsact
	DropHook   string            // DropAuto, DropTPBTF, DropRawTP, DropRawTPNoReason or DropNone
	Selectors  []decode.Selector // which packets to report; at most MaxSelectors
	SnapLen    int               // packet bytes per event, 1..decode.SnapFull (above SnapMax: full-packet mode); 0 means decode.SnapMax
	VXLANPorts []uint16          // nil: decode.DefaultVXLANPorts and the node's VXLAN devices' ports; at most 4
	// GenevePorts: nil means decode.DefaultGenevePorts and the node's Geneve devices'
	// ports; at most 4, 0 for none (an empty list would mean the default).
	GenevePorts []uint16
	QueueLen    int    // events buffered between the ring buffer and the consumer; 0 means 16384
	RingBytes   int    // ring buffer size, a power of two multiple of the page size; 0 means 4 MiB
	BTFPath     string // the kernel's BTF; "" means KernelBTF
	NFHook      string // NFAuto, NFLink, NFKprobe or NFNone
	// Agent mode: count every packet and drop in the kernel, measure hop latency on 1
	// packet in Sample (0: off), send up to DropRate unfollowed drop events per second
	// per CPU. Selectors may then be empty and change at run time (SetSelector).
	Agent    bool
	Sample   uint32
	DropRate uint32
	// Symbols names kernel addresses; the agent's drop counters need it on kernels
	// whose kfree_skb has no reason, to infer one from the call site. nil: read
	// /proc/kallsyms when first needed.
	Symbols *SymbolCache
}

// MaxSelectors is how many selectors the kernel side checks (MAX_FILTERS).
const MaxSelectors = 8

// LostSlots are the kernel's loss counters (LOST_* in bpf/pathtrace.h), by index.
const LostSlots = 5

// LostSlotNames name them: events lost because the ring buffer was full (hops, drops,
// netfilter), drop events over the agent's per-CPU budget, and a full counter map.
var LostSlotNames = [LostSlots]string{"hops", "drops", "netfilter", "drop-budget", "map-full"}

// Mode says how the tracer ended up attached on this kernel.
type Mode struct {
	TC          string // "tcx" or "clsact"
	Drop        string // "tp_btf", "raw_tp", "raw_tp (no drop reasons)" or "none"
	NF          string // "link", "kprobe", "none" or "unavailable"
	Retransmit  string // agent: "raw_tp", "unavailable" or "" (not an agent)
	Conntrack   bool   // conntrack entries are read
	DropReasons bool   // the kernel names drop reasons
	Notes       []string
}

func (m Mode) String() string {
	ct := "with conntrack"
	if !m.Conntrack {
		ct = "without conntrack"
	}
	s := fmt.Sprintf("tc via %s, drops via %s, netfilter via %s %s", m.TC, m.Drop, m.NF, ct)
	if m.Retransmit != "" {
		s += ", TCP retransmissions via " + m.Retransmit
	}
	return s
}

// Stats counts events along the way, including every one that was lost.
type Stats struct {
	Received   uint64     // records read from the ring buffer
	QueueDrops uint64     // records dropped because the consumer's queue was full
	BadRecords uint64     // records that did not decode
	KernelLost [][]uint64 // [slot][cpu]: events the kernel lost; slots are LostSlotNames
}

// KernelLostTotal sums KernelLost.
func (s Stats) KernelLostTotal() uint64 {
	var n uint64
	for _, per := range s.KernelLost {
		for _, v := range per {
			n += v
		}
	}
	return n
}

// Tracer is a set of loaded and attached programs and the reader of their events.
type Tracer struct {
	cfg      Config
	ns       *nsRef
	nl       *netlink.Handle
	maps     bpf.PathTraceMaps
	progs    []*ebpf.Program
	attached []detacher
	ifaces   []iface
	layout   Layout
	own      ownPrograms        // pathtrace's programs, told from other datapaths'
	ifAttach map[int][]detacher // tc attachments by ifindex
	tc       tcProgs
	tcTun    *ebpf.Program // tc_ingress_tun, loaded when an IP-in-IP device is first attached
	nfAttach []detacher    // netfilter links, or the kprobe
	nfProgs  nfProgs
	kpProg   *ebpf.Program
	local    []netip.Addr
	pods     []netip.Prefix
	reasons  decode.DropReasons
	// locReason: the reason inferred for each drop call site counted (kernels without
	// drop reasons), so that a site's counts stay under one label.
	locReason map[uint64]string
	locMu     sync.Mutex
	mode      Mode
	ct        ctLayout
	rd        *ringbuf.Reader
	queue     chan decode.Event
	wg        sync.WaitGroup

	counters  counters
	closeOnce sync.Once
	closeErr  error
	final     *Stats // the counters as Close left them
}

// New checks the kernel, loads the programs, attaches them and starts reading events.
// On any error everything done so far is undone.
func New(cfg Config) (t *Tracer, err error) {
	autoVX, autoGnv := cfg.VXLANPorts == nil, cfg.GenevePorts == nil
	if err := validate(&cfg); err != nil {
		return nil, err
	}
	// The kernel's types first: without them nothing can load, whoever runs it.
	kspec, err := loadBTF(cfg.BTFPath)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		// Capabilities may still suffice; the kernel has the last word below.
		if !hasCaps() {
			return nil, errors.New("not permitted: run as root or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN (and CAP_SYS_ADMIN on kernels before 5.8)")
		}
	}
	if cfg.Symbols == nil {
		cfg.Symbols = &SymbolCache{}
	}
	t = &Tracer{cfg: cfg, ifAttach: map[int][]detacher{}, locReason: map[uint64]string{}}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	if err := rlimit.RemoveMemlock(); err != nil {
		return t, fmt.Errorf("raise RLIMIT_MEMLOCK for BPF maps: %w", err)
	}
	if t.ns, err = openNetns(cfg.Netns); err != nil {
		return t, err
	}
	// rtnetlink only (links, addresses, routes, neighbours, qdiscs, filters): by default a
	// handle also opens XFRM and NETFILTER sockets, and where xfrm_user or nfnetlink is a
	// module not loaded that nothing can autoload (no modprobe, modules_disabled), that
	// failed the whole start with "protocol not supported".
	if cfg.Netns == "" {
		t.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		t.nl, err = netlink.NewHandleAt(t.ns.handle, unix.NETLINK_ROUTE)
	}
	if err != nil {
		return t, fmt.Errorf("netlink in %s: %w", t.ns, err)
	}
	if t.ifaces, t.layout, err = findLinks(t.nl, cfg.Ifaces); err != nil {
		return t, fmt.Errorf("%s: %w", t.ns, err)
	}
	// The node's own tunnels say which UDP ports carry VXLAN and Geneve here (Cilium's
	// 8472, Calico's 4789, a port of the operator's), unless the ports were given.
	for _, tun := range t.layout.Tunnels {
		switch {
		case tun.Port == 0:
		case tun.Kind == "vxlan" && autoVX:
			t.cfg.VXLANPorts = t.addPort(t.cfg.VXLANPorts, tun)
		case tun.Kind == "geneve" && autoGnv:
			t.cfg.GenevePorts = t.addPort(t.cfg.GenevePorts, tun)
		}
	}
	if t.local, err = localAddrs(t.nl); err != nil {
		return t, err
	}
	if t.pods, err = podPrefixes(t.nl); err != nil {
		return t, err
	}
	if t.reasons, err = DropReasons(kspec); err != nil {
		return t, err
	}
	t.ct = conntrackLayout(kspec)
	t.mode.Conntrack = t.ct.ok
	if !t.ct.ok {
		t.mode.Notes = append(t.mode.Notes, "conntrack state not shown: "+t.ct.why)
	}
	if err := t.load(kspec); err != nil {
		return t, err
	}
	if err := t.loadTC(kspec); err != nil {
		return t, err
	}
	if err := t.attachDrop(kspec); err != nil {
		return t, err
	}
	if err := t.attachNF(kspec); err != nil {
		return t, err
	}
	if err := t.attachRetransmit(kspec); err != nil {
		return t, err
	}
	// The kernel's types are not needed any more: parsing them left some 15 MB of
	// garbage, which the runtime would hand back to the kernel only slowly. Hand it
	// back now, before attaching to what may be hundreds of interfaces, so the
	// process's peak resident size is not that garbage plus all the code attaching
	// runs (a node agent's memory limit counts the peak).
	kspec = nil
	debug.FreeOSMemory()
	if err := t.attachIfaces(); err != nil {
		return t, err
	}
	if t.rd, err = ringbuf.NewReader(t.maps.Events); err != nil {
		return t, fmt.Errorf("open ring buffer: %w", err)
	}
	t.queue = make(chan decode.Event, cfg.QueueLen)
	t.wg.Add(1)
	go t.read()
	return t, nil
}

func validate(cfg *Config) error {
	switch cfg.AttachMode {
	case "":
		cfg.AttachMode = AttachAuto
	case AttachAuto, AttachTCX, AttachClsact:
	default:
		return fmt.Errorf("attach mode %q: want auto, tcx or clsact", cfg.AttachMode)
	}
	switch cfg.DropHook {
	case "":
		cfg.DropHook = DropAuto
	case DropAuto, DropTPBTF, DropRawTP, DropRawTPNoReason, DropNone:
	default:
		return fmt.Errorf("drop hook %q: want auto, tp_btf, raw_tp, raw_tp_noreason or none", cfg.DropHook)
	}
	if len(cfg.Selectors) == 0 && !cfg.Agent {
		return errors.New("no selector: say which packets to follow")
	}
	if len(cfg.Selectors) > MaxSelectors {
		return fmt.Errorf("%d selectors: at most %d", len(cfg.Selectors), MaxSelectors)
	}
	if cfg.SnapLen == 0 {
		cfg.SnapLen = decode.SnapMax
	}
	if cfg.SnapLen < 0 || cfg.SnapLen > decode.SnapFull {
		return fmt.Errorf("snap length %d: want 1..%d", cfg.SnapLen, decode.SnapFull)
	}
	if cfg.VXLANPorts == nil {
		cfg.VXLANPorts = decode.DefaultVXLANPorts
	}
	if len(cfg.VXLANPorts) > 4 {
		return fmt.Errorf("%d VXLAN ports: at most 4", len(cfg.VXLANPorts))
	}
	if cfg.GenevePorts == nil {
		cfg.GenevePorts = decode.DefaultGenevePorts
	}
	if len(cfg.GenevePorts) > 4 {
		return fmt.Errorf("%d Geneve ports: at most 4", len(cfg.GenevePorts))
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = 16384
	}
	switch cfg.NFHook {
	case "":
		cfg.NFHook = NFAuto
	case NFAuto, NFLink, NFKprobe, NFNone:
	default:
		return fmt.Errorf("netfilter hook %q: want auto, link, kprobe or none", cfg.NFHook)
	}
	if cfg.BTFPath == "" {
		cfg.BTFPath = KernelBTF
	}
	if cfg.RingBytes == 0 {
		cfg.RingBytes = 4 << 20
	}
	if cfg.RingBytes < os.Getpagesize() || cfg.RingBytes&(cfg.RingBytes-1) != 0 {
		return fmt.Errorf("ring buffer size %d: want a power of two of at least one page", cfg.RingBytes)
	}
	return nil
}

// hasCaps reports whether the effective set holds CAP_BPF, CAP_PERFMON and
// CAP_NET_ADMIN, or CAP_SYS_ADMIN.
func hasCaps() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) && has(unix.CAP_NET_ADMIN) {
		return true
	}
	return has(unix.CAP_BPF) && has(unix.CAP_PERFMON) && has(unix.CAP_NET_ADMIN)
}

type tcProgs struct {
	Ingress   *ebpf.Program `ebpf:"tc_ingress"`
	Egress    *ebpf.Program `ebpf:"tc_egress"`
	IngressL3 *ebpf.Program `ebpf:"tc_ingress_l3"`
	EgressL3  *ebpf.Program `ebpf:"tc_egress_l3"`
}

func (t *Tracer) spec() (*ebpf.CollectionSpec, error) {
	spec, err := bpf.LoadPathTrace()
	if err != nil {
		return nil, err
	}
	spec.Maps[bpf.PathTraceMapEvents].MaxEntries = uint32(t.cfg.RingBytes)
	if err := spec.Variables[bpf.PathTraceVarCfgSnaplen].Set(uint32(t.cfg.SnapLen)); err != nil {
		return nil, fmt.Errorf("set snap length: %w", err)
	}
	var ports [4]uint16
	copy(ports[:], t.cfg.VXLANPorts)
	if err := spec.Variables[bpf.PathTraceVarCfgVxlanPorts].Set(ports); err != nil {
		return nil, fmt.Errorf("set VXLAN ports: %w", err)
	}
	var gports [4]uint16
	copy(gports[:], t.cfg.GenevePorts)
	if err := spec.Variables[bpf.PathTraceVarCfgGenevePorts].Set(gports); err != nil {
		return nil, fmt.Errorf("set Geneve ports: %w", err)
	}
	vars := map[string]uint32{
		bpf.PathTraceVarCfgSample: t.cfg.Sample, bpf.PathTraceVarCfgDropRate: t.cfg.DropRate,
		bpf.PathTraceVarCfgNodeNetns: t.ns.inode, bpf.PathTraceVarCfgReasonNf: t.reasonValue("NETFILTER_DROP"),
	}
	if t.cfg.Agent {
		vars[bpf.PathTraceVarCfgAgent] = 1
	}
	if n := t.cfg.Sample; n > 1 && n&(n-1) == 0 {
		vars[bpf.PathTraceVarCfgSampleMask] = n - 1
	}
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	if t.ct.ok {
		for name, v := range map[string]uint32{
			bpf.PathTraceVarCtEnabled: 1, bpf.PathTraceVarCtOffTuple: t.ct.offTuple,
			bpf.PathTraceVarCtTupleStep: t.ct.step, bpf.PathTraceVarCtOffStatus: t.ct.status,
			bpf.PathTraceVarCtOffMark: t.ct.mark,
		} {
			if err := spec.Variables[name].Set(v); err != nil {
				return nil, fmt.Errorf("set %s: %w", name, err)
			}
		}
	}
	return spec, nil
}

func (t *Tracer) replacements() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bpf.PathTraceMapEvents:      t.maps.Events,
		bpf.PathTraceMapFilters:     t.maps.Filters,
		bpf.PathTraceMapLost:        t.maps.Lost,
		bpf.PathTraceMapNetnsAllow:  t.maps.NetnsAllow,
		bpf.PathTraceMapFlows:       t.maps.Flows,
		bpf.PathTraceMapState:       t.maps.State,
		bpf.PathTraceMapIfaceClass:  t.maps.IfaceClass,
		bpf.PathTraceMapPktCount:    t.maps.PktCount,
		bpf.PathTraceMapDropCount:   t.maps.DropCount,
		bpf.PathTraceMapLatLast:     t.maps.LatLast,
		bpf.PathTraceMapLatHist:     t.maps.LatHist,
		bpf.PathTraceMapLatSum:      t.maps.LatSum,
		bpf.PathTraceMapDropBudget:  t.maps.DropBudget,
		bpf.PathTraceMapLatExemplar: t.maps.LatExemplar,
	}
}

// load creates the maps and fills the selectors and the namespace allow-list.
func (t *Tracer) load(kspec *btf.Spec) error {
	spec, err := t.spec()
	if err != nil {
		return err
	}
	if err := spec.LoadAndAssign(&t.maps, &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kspec}}); err != nil {
		return loadError("create BPF maps", err)
	}
	for i, s := range t.cfg.Selectors {
		f := filterOf(s)
		if err := t.maps.Filters.Put(uint32(i), &f); err != nil {
			return fmt.Errorf("set selector %s: %w", s, err)
		}
	}
	if err := t.setSlotCount(uint32(len(t.cfg.Selectors))); err != nil {
		return err
	}
	for _, l := range t.ifaces {
		if classSlot(l.Index) == 0 {
			continue // an ifindex that is a multiple of 65536: its packets count as unknown
		}
		if err := t.maps.IfaceClass.Put(classSlot(l.Index), classValue(l)); err != nil {
			return fmt.Errorf("set the role of %s: %w", l.Name, err)
		}
	}
	links := t.linkList()
	peers := podNetns(t.nl, links)
	allow := []uint32{t.ns.inode}
	for _, ino := range peers {
		allow = append(allow, ino)
	}
	// A pod's veth knows the namespace behind it: decode tells a copy dropped in one
	// pod from one delivered to another.
	for _, l := range links {
		if ino, ok := peers[l.Attrs().NetNsID]; ok && l.Type() == "veth" {
			for i := range t.ifaces {
				if t.ifaces[i].Index == l.Attrs().Index {
					t.ifaces[i].PeerNetns = ino
				}
			}
		}
	}
	for _, ino := range allow {
		if err := t.maps.NetnsAllow.Put(ino, uint8(1)); err != nil {
			return fmt.Errorf("allow network namespace %d: %w", ino, err)
		}
	}
	return nil
}

func (t *Tracer) linkList() []netlink.Link {
	ls, _ := t.nl.LinkList()
	return ls
}

func filterOf(s decode.Selector) bpf.PathTraceFilter {
	f := bpf.PathTraceFilter{Used: 1, Proto: s.Proto, Port: s.Port}
	if s.Addr.IsValid() {
		f.HasAddr = 1
		if s.Addr.Is4() {
			f.Family = 4
			a := s.Addr.As4()
			copy(f.Addr[:], a[:])
		} else {
			f.Family = 6
			a := s.Addr.As16()
			copy(f.Addr[:], a[:])
		}
	}
	return f
}

// loadError explains a load failure: permissions get what to do, verifier errors their
// full log.
func loadError(what string, err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%s: the kernel's verifier rejected it: %+v", what, ve)
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%s: %w: run as root or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// loadTC loads the tc programs; attachIfaces attaches them.
func (t *Tracer) loadTC(kspec *btf.Spec) error {
	spec, err := t.spec()
	if err != nil {
		return err
	}
	var p tcProgs
	if err := spec.LoadAndAssign(&p, &ebpf.CollectionOptions{MapReplacements: t.replacements(), Programs: ebpf.ProgramOptions{KernelTypes: kspec}}); err != nil {
		return loadError("load tc programs", err)
	}
	t.progs = append(t.progs, p.Ingress, p.Egress, p.IngressL3, p.EgressL3)

	t.tc = p
	t.own = ownPrograms{ids: map[ebpf.ProgramID]bool{}, tags: map[string]bool{}, filter: filterName()}
	for _, prog := range []*ebpf.Program{p.Ingress, p.Egress, p.IngressL3, p.EgressL3} {
		t.own.add(prog)
	}
	t.mode.TC = t.cfg.AttachMode
	return nil
}

// attachIfaces puts the tc programs loadTC loaded on every interface found.
func (t *Tracer) attachIfaces() error {
	withClsact, err := ingressQdiscs(t.nl, 0)
	if err != nil {
		withClsact = nil // each interface is asked on its own
	}
	// On one thread in the namespace for all: tcx attaches and queries by ifindex.
	return t.ns.do(func() error {
		for i := range t.ifaces {
			if err := t.attachIface(&t.ifaces[i], withClsact); err != nil {
				return err
			}
		}
		return nil
	})
}

// findOthers reads which programs of another datapath run on the interface's tc hooks
// before and after pathtrace's: those after go to Iface.Others (a packet they take
// away is Redirected, not Lost), those before into a note (what they take away never
// reaches pathtrace's hook).
//
// withClsact is ingressQdiscs' answer from before attaching (nil: ask): in tcx mode an
// interface without a clsact qdisc then has no filters to list.
func (t *Tracer) findOthers(l *iface, withClsact map[int]string) {
	noClsact := withClsact != nil && withClsact[l.Index] != "clsact" && t.mode.TC == AttachTCX
	for d, ingress := range []bool{true, false} {
		ps, err := hookPrograms(t.ns, t.nl, *l, ingress, t.own, noClsact)
		dir := [2]string{"ingress", "egress"}[d]
		if err != nil {
			t.mode.Notes = append(t.mode.Notes, fmt.Sprintf("other programs on %s %s unknown: %v", l.Name, dir, err))
			continue
		}
		before, after := aroundOurs(ps)
		l.Others[d] = strings.Join(after, ", ")
		was := l.Before
		if ingress {
			l.Before = strings.Join(before, ", ")
		}
		if len(before) > 0 && (!ingress || l.Before != was) {
			t.mode.Notes = append(t.mode.Notes, fmt.Sprintf("on %s %s, %s %s before pathtrace's: packets %s redirects or drops are not seen at this hop",
				l.Name, dir, strings.Join(before, ", "), plural(len(before), "runs", "run"), plural(len(before), "it", "they")))
		}
	}
}

// attachIface puts the tc programs on one interface's ingress and egress. In auto
// mode the first interface decides between tcx and clsact for all. withClsact is
// ingressQdiscs' answer, or nil to ask.
func (t *Tracer) attachIface(l *iface, withClsact map[int]string) error {
	if err := t.attachHooks(*l, withClsact); err != nil {
		return err
	}
	t.findOthers(l, withClsact)
	return nil
}

// tunProgram loads tc_ingress_tun once: the ingress program of IP-in-IP devices,
// which reads whether the kernel hands it the inner packet or the whole frame (before
// 5.14). Loaded only where such a device is traced: it is as big as two tc programs.
// The kernel's types are read again for it rather than kept (some 15 MB).
func (t *Tracer) tunProgram() (*ebpf.Program, error) {
	if t.tcTun != nil {
		return t.tcTun, nil
	}
	kspec, err := loadBTF(t.cfg.BTFPath)
	if err != nil {
		return nil, err
	}
	spec, err := t.spec()
	if err != nil {
		return nil, err
	}
	var p struct {
		Tun *ebpf.Program `ebpf:"tc_ingress_tun"`
	}
	if err := spec.LoadAndAssign(&p, &ebpf.CollectionOptions{MapReplacements: t.replacements(), Programs: ebpf.ProgramOptions{KernelTypes: kspec}}); err != nil {
		return nil, loadError("load the tc program of IP-in-IP devices", err)
	}
	t.progs = append(t.progs, p.Tun)
	t.own.add(p.Tun)
	t.tcTun = p.Tun
	return p.Tun, nil
}

func (t *Tracer) attachHooks(l iface, withClsact map[int]string) error {
	in, eg := t.tc.Ingress, t.tc.Egress
	if !l.l2 {
		in, eg = t.tc.IngressL3, t.tc.EgressL3
	}
	if l.ipTun {
		p, err := t.tunProgram()
		if err != nil {
			return fmt.Errorf("%s: %w", l.Name, err)
		}
		in = p
	}
	var done []detacher
	undo := func() {
		for i := len(done) - 1; i >= 0; i-- {
			done[i].detach()
		}
	}
	// Filters of a pathtrace killed with SIGKILL would still run: take them away (at
	// best effort: what fails here, attaching reports).
	if stale, _ := removeStale(t.nl, l, withClsact); len(stale) > 0 {
		t.mode.Notes = append(t.mode.Notes, "removed tc filters left by pathtrace processes that are gone: "+strings.Join(stale, ", "))
	}
	if t.mode.TC != AttachClsact {
		a, err := attachTCX(t.ns, l, in, true)
		switch {
		case err != nil && t.mode.TC == AttachAuto && errors.Is(err, ebpf.ErrNotSupported):
			t.mode.TC = AttachClsact
			t.mode.Notes = append(t.mode.Notes, "tcx links not supported by this kernel (needs 6.6): using clsact")
		case err != nil:
			return err
		default:
			t.mode.TC = AttachTCX
			done = append(done, a)
			b, err := attachTCX(t.ns, l, eg, false)
			if err != nil {
				undo()
				return err
			}
			t.ifAttach[l.Index] = append(done, b)
			return nil
		}
	}
	q, err := ensureClsact(t.nl, l, withClsact)
	if err != nil {
		return err
	}
	for _, ingress := range []bool{true, false} {
		prog := eg
		if ingress {
			prog = in
		}
		a, err := attachClsact(t.nl, l, prog, ingress, q)
		if err != nil {
			undo()
			if q != nil {
				_ = t.nl.QdiscDel(q)
			}
			return err
		}
		done = append(done, a)
	}
	t.ifAttach[l.Index] = done
	return nil
}

type dropProgs struct {
	BTF *ebpf.Program `ebpf:"kfree_skb_btf"`
}
type rawProgs struct {
	Raw *ebpf.Program `ebpf:"kfree_skb_raw"`
}
type rawNoReasonProgs struct {
	Raw *ebpf.Program `ebpf:"kfree_skb_raw_noreason"`
}

func (t *Tracer) attachDrop(kspec *btf.Spec) error {
	hook := t.cfg.DropHook
	if hook == DropNone {
		t.mode.Drop = DropNone
		t.mode.Notes = append(t.mode.Notes, "drop tracing off (--drop-hook none): drops show as lost")
		return nil
	}
	spec, err := t.spec()
	if err != nil {
		return err
	}
	opts := &ebpf.CollectionOptions{MapReplacements: t.replacements(), Programs: ebpf.ProgramOptions{KernelTypes: kspec}}
	hasReason := kfreeSkbHasReason(kspec) && hook != DropRawTPNoReason
	if hook == DropAuto || hook == DropTPBTF {
		var p dropProgs
		err := spec.LoadAndAssign(&p, opts)
		if err == nil {
			t.progs = append(t.progs, p.BTF)
			var l link.Link
			l, err = link.AttachTracing(link.TracingOptions{Program: p.BTF, AttachType: ebpf.AttachTraceRawTp})
			if err == nil {
				t.attached = append(t.attached, &tcxAttachment{l: l, name: "tp_btf kfree_skb"})
				t.mode.Drop, t.mode.DropReasons = DropTPBTF, true
				return nil
			}
		}
		if hook == DropTPBTF {
			return loadError("attach tp_btf/kfree_skb", err)
		}
		t.mode.Notes = append(t.mode.Notes, fmt.Sprintf("tp_btf kfree_skb unavailable (%v): using the raw tracepoint", firstLine(err)))
	}
	var prog *ebpf.Program
	if hasReason {
		var p rawProgs
		err = spec.LoadAndAssign(&p, opts)
		prog = p.Raw
	} else {
		var p rawNoReasonProgs
		err = spec.LoadAndAssign(&p, opts)
		prog = p.Raw
	}
	if err != nil {
		return loadError("load raw_tp/kfree_skb", err)
	}
	t.progs = append(t.progs, prog)
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "kfree_skb", Program: prog})
	if err != nil {
		return loadError("attach raw tracepoint kfree_skb", err)
	}
	t.attached = append(t.attached, &tcxAttachment{l: l, name: "raw_tp kfree_skb"})
	t.mode.Drop, t.mode.DropReasons = DropRawTP, hasReason
	if !hasReason {
		t.mode.Drop = DropRawTP + " (no drop reasons)"
		t.mode.Notes = append(t.mode.Notes, "this kernel's kfree_skb carries no drop reason (needs 5.17): drops are reported with their location only")
	}
	return nil
}

type retransProgs struct {
	Prog *ebpf.Program `ebpf:"tcp_retransmit"`
}

// attachRetransmit, in agent mode, counts TCP retransmissions of the traced namespaces'
// sockets (raw tracepoint tcp:tcp_retransmit_skb, kernels 4.16+). Where it cannot be
// attached the agent runs without it and says so.
func (t *Tracer) attachRetransmit(kspec *btf.Spec) error {
	if !t.cfg.Agent {
		return nil
	}
	if t.cfg.DropRate == 0 {
		t.mode.Retransmit = "off"
		return nil
	}
	spec, err := t.spec()
	if err != nil {
		return err
	}
	var p retransProgs
	opts := &ebpf.CollectionOptions{MapReplacements: t.replacements(), Programs: ebpf.ProgramOptions{KernelTypes: kspec}}
	if err = spec.LoadAndAssign(&p, opts); err == nil {
		t.progs = append(t.progs, p.Prog)
		var l link.Link
		if l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "tcp_retransmit_skb", Program: p.Prog}); err == nil {
			t.attached = append(t.attached, &tcxAttachment{l: l, name: "raw_tp tcp_retransmit_skb"})
			t.mode.Retransmit = "raw_tp"
			return nil
		}
	}
	t.mode.Retransmit = "unavailable"
	t.mode.Notes = append(t.mode.Notes, fmt.Sprintf("TCP retransmissions not counted: raw tracepoint tcp_retransmit_skb unavailable (%v)", firstLine(err)))
	return nil
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// read moves records from the ring buffer to the queue until the reader is closed.
func (t *Tracer) read() {
	defer t.wg.Done()
	defer close(t.queue)
	pump(t.rd, t.queue, &t.counters)
}

// counters are the user-space side of the loss accounting.
type counters struct {
	received, queueDrops, badRecords atomic.Uint64
}

// recordReader is what pump needs of a ringbuf.Reader.
type recordReader interface {
	ReadInto(*ringbuf.Record) error
}

// pump decodes records into q without ever blocking the reader: when q is full the
// event is dropped and counted.
func pump(rd recordReader, q chan<- decode.Event, c *counters) {
	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			c.badRecords.Add(1)
			continue
		}
		c.received.Add(1)
		var ev decode.Event
		if err := decode.ParseEvent(rec.RawSample, &ev); err != nil {
			c.badRecords.Add(1)
			continue
		}
		select {
		case q <- ev:
		default:
			c.queueDrops.Add(1)
		}
	}
}

// Events is the bounded queue of decoded events. It is closed after Close.
func (t *Tracer) Events() <-chan decode.Event { return t.queue }

// addPort adds a tunnel's port to a port list, which holds at most 4: a fifth is
// left out, and a note says so.
func (t *Tracer) addPort(ports []uint16, tun Tunnel) []uint16 {
	if slices.Contains(ports, tun.Port) {
		return ports
	}
	if len(ports) >= 4 {
		t.mode.Notes = append(t.mode.Notes, fmt.Sprintf("%s: its port %d is not read as %s: 4 ports are the most (--vxlan-ports, --geneve-ports)", tun.Name, tun.Port, tun.Kind))
		return ports
	}
	return append(slices.Clone(ports), tun.Port)
}

// Tunnels are the UDP ports the tracer reads as VXLAN and Geneve: those given, else
// the defaults and those of the node's own tunnel devices.
func (t *Tracer) Tunnels() decode.Tunnels {
	return decode.Tunnels{VXLANPorts: t.cfg.VXLANPorts, GenevePorts: t.cfg.GenevePorts}
}

// RecheckOthers reads again which other datapaths' programs run on the traced
// interfaces' hooks (a CNI attaches to a pod's veth after pathtrace may have), and
// reports whether that changed anything.
func (t *Tracer) RecheckOthers() bool {
	changed := false
	withClsact, err := ingressQdiscs(t.nl, 0)
	if err != nil {
		withClsact = nil
	}
	_ = t.ns.do(func() error {
		for i := range t.ifaces {
			l := &t.ifaces[i]
			others, before := l.Others, l.Before
			t.findOthers(l, withClsact)
			changed = changed || l.Others != others || l.Before != before
		}
		return nil
	})
	return changed
}

// Layout is what the tracer recognised of the node's network.
func (t *Tracer) Layout() Layout { return t.layout }

// Ifaces are the traced interfaces with their roles.
func (t *Tracer) Ifaces() []decode.Iface {
	out := make([]decode.Iface, len(t.ifaces))
	for i, l := range t.ifaces {
		out[i] = l.Iface
	}
	return out
}

// LocalAddrs are the traced namespace's own addresses.
func (t *Tracer) LocalAddrs() []netip.Addr { return t.local }

// PodPrefixes are where the node's pods live: its bridges' subnets (cni0's
// 10.244.1.0/24), or the blocks (or single routes) of pods routed through their own
// veths, as a follow client joining several nodes needs to know.
func (t *Tracer) PodPrefixes() []netip.Prefix { return t.pods }

// Reasons are the kernel's drop-reason names; nil when drops carry none.
func (t *Tracer) Reasons() decode.DropReasons {
	if !t.mode.DropReasons {
		return nil
	}
	return t.reasons
}

// Mode says how the tracer attached.
func (t *Tracer) Mode() Mode { return t.mode }

// Attachments names every attachment, for the user and for tests.
func (t *Tracer) Attachments() []string {
	var out []string
	for _, l := range t.ifaces {
		for _, a := range t.ifAttach[l.Index] {
			out = append(out, a.String())
		}
	}
	for _, a := range t.nfAttach {
		out = append(out, a.String())
	}
	for _, a := range t.attached {
		out = append(out, a.String())
	}
	return out
}

// Stats reads the counters, the kernel's per-CPU lost counts included.
func (t *Tracer) Stats() Stats {
	if t.final != nil {
		return *t.final
	}
	s := Stats{Received: t.counters.received.Load(), QueueDrops: t.counters.queueDrops.Load(), BadRecords: t.counters.badRecords.Load()}
	if t.maps.Lost != nil {
		for slot := uint32(0); slot < LostSlots; slot++ {
			var per []uint64
			if err := t.maps.Lost.Lookup(slot, &per); err == nil {
				s.KernelLost = append(s.KernelLost, per)
			}
		}
	}
	return s
}

// Close detaches every program, lets the reader drain what the kernel already wrote,
// and frees everything. Events is closed once the reader is done. It is safe to call
// more than once and on a partly built Tracer.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		var errs []error
		for _, as := range t.ifAttach {
			for i := len(as) - 1; i >= 0; i-- {
				if err := as[i].detach(); err != nil {
					errs = append(errs, fmt.Errorf("detach %s: %w", as[i], err))
				}
			}
		}
		t.ifAttach = nil
		for _, a := range t.nfAttach {
			if err := a.detach(); err != nil {
				errs = append(errs, fmt.Errorf("detach %s: %w", a, err))
			}
		}
		t.nfAttach = nil
		for i := len(t.attached) - 1; i >= 0; i-- {
			if err := t.attached[i].detach(); err != nil {
				errs = append(errs, fmt.Errorf("detach %s: %w", t.attached[i], err))
			}
		}
		t.attached = nil
		if t.rd != nil {
			// Nothing new can arrive: give the reader a moment to take what is there.
			deadline := time.Now().Add(time.Second)
			for t.rd.AvailableBytes() > 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			t.rd.Close()
			t.wg.Wait()
		}
		final := t.Stats()
		t.final = &final
		for _, p := range t.progs {
			if p != nil {
				p.Close()
			}
		}
		t.maps.Close()
		if t.nl != nil {
			t.nl.Close()
		}
		if t.ns != nil {
			t.ns.close()
		}
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}
