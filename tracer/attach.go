package tracer

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Attach modes for tc.
const (
	AttachAuto   = "auto"
	AttachTCX    = "tcx"
	AttachClsact = "clsact"
)

// detacher undoes one attachment.
type detacher interface {
	detach() error
	String() string
}

type tcxAttachment struct {
	l    link.Link
	name string
}

func (a *tcxAttachment) detach() error  { return a.l.Close() }
func (a *tcxAttachment) String() string { return a.name }

// attachTCX attaches prog at the head of the interface's tcx chain, so it sees packets
// before programs that might redirect or drop them.
func attachTCX(ns *nsRef, l iface, prog *ebpf.Program, ingress bool) (*tcxAttachment, error) {
	at, dir := ebpf.AttachTCXEgress, "egress"
	if ingress {
		at, dir = ebpf.AttachTCXIngress, "ingress"
	}
	var lk link.Link
	err := ns.do(func() error {
		var err error
		lk, err = link.AttachTCX(link.TCXOptions{Interface: l.Index, Program: prog, Attach: at, Anchor: link.Head()})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attach tcx %s on %s (ifindex %d): %w", dir, l.Name, l.Index, err)
	}
	return &tcxAttachment{l: lk, name: fmt.Sprintf("tcx %s %s", l.Name, dir)}, nil
}

// clsactAttachment is one cls_bpf filter, and the clsact qdisc when we added it.
type clsactAttachment struct {
	h       *netlink.Handle
	filter  *netlink.BpfFilter
	qdisc   *netlink.GenericQdisc // nil when the qdisc was there before us
	name    string
	ifname  string
	ifindex int
}

func (a *clsactAttachment) String() string { return a.name }

func (a *clsactAttachment) detach() error {
	err := a.h.FilterDel(a.filter)
	if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
		err = nil // the interface or the qdisc is gone, and the filter with it
	}
	if a.qdisc == nil {
		return err
	}
	// Remove the qdisc we added once no filter of anyone's is left on it.
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, ferr := a.h.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: a.ifindex}}, parent)
		if ferr != nil || len(fs) > 0 {
			return err
		}
	}
	if qerr := a.h.QdiscDel(a.qdisc); qerr != nil && !errors.Is(qerr, unix.ENODEV) && !errors.Is(qerr, unix.ENOENT) && !errors.Is(qerr, unix.EINVAL) {
		return errors.Join(err, fmt.Errorf("delete clsact qdisc on %s: %w", a.ifname, qerr))
	}
	return err
}

// ensureClsact adds a clsact qdisc unless the interface has one. It never replaces a
// qdisc: an ingress qdisc of another kind is an error. It returns the qdisc when it
// added it.
// ingress, when not nil, is ingressQdiscs' answer for the namespace.
func ensureClsact(h *netlink.Handle, l iface, ingress map[int]string) (*netlink.GenericQdisc, error) {
	if ingress == nil {
		var err error
		if ingress, err = ingressQdiscs(h, l.Index); err != nil {
			return nil, fmt.Errorf("list qdiscs of %s: %w", l.Name, err)
		}
	}
	switch kind := ingress[l.Index]; kind {
	case "clsact":
		return nil, nil
	case "":
	default:
		return nil, fmt.Errorf("%s has a %s qdisc where clsact would go; pathtrace does not replace it (try --attach-mode tcx)", l.Name, kind)
	}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := h.QdiscAdd(q); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, nil // someone added it meanwhile
		}
		return nil, fmt.Errorf("add clsact qdisc to %s (ifindex %d): %w", l.Name, l.Index, err)
	}
	return q, nil
}

// attachClsact adds a direct-action cls_bpf filter at the lowest free priority of the
// hook, so it runs first without displacing anyone's filter.
func attachClsact(h *netlink.Handle, l iface, prog *ebpf.Program, ingress bool, added *netlink.GenericQdisc) (*clsactAttachment, error) {
	parent, dir := uint32(netlink.HANDLE_MIN_EGRESS), "egress"
	if ingress {
		parent, dir = netlink.HANDLE_MIN_INGRESS, "ingress"
	}
	nl := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: l.Index}}
	existing, err := h.FilterList(nl, parent)
	if err != nil {
		return nil, fmt.Errorf("list tc %s filters of %s: %w", dir, l.Name, err)
	}
	used := map[uint16]bool{}
	for _, f := range existing {
		used[f.Attrs().Priority] = true
	}
	var prio uint16 = 1
	for used[prio] {
		prio++
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Index, Parent: parent, Handle: 1, Priority: prio, Protocol: unix.ETH_P_ALL,
		},
		Fd: prog.FD(), Name: filterName(), DirectAction: true,
	}
	// Priority 1 is taken (a CNI's datapath, as Cilium attaches before tcx): no free
	// priority runs before it. cls_bpf runs the filters of one priority newest first,
	// so a filter of ours with a new handle at that priority runs before theirs,
	// leaving them and their order as they were. Only where all of that priority's
	// filters are cls_bpf for every protocol (the kernel refuses a mix); else ours
	// goes after, and the tracer says what runs before it.
	if first := joinablePrio(existing); prio > 1 && first.prio != 0 {
		j := *f
		j.Priority, j.Handle = first.prio, first.handle
		if err := h.FilterAdd(&j); err == nil {
			return &clsactAttachment{h: h, filter: &j, qdisc: added, ifname: l.Name, ifindex: l.Index,
				name: fmt.Sprintf("clsact %s %s prio %d handle %#x", l.Name, dir, j.Priority, j.Handle)}, nil
		}
	}
	if err := h.FilterAdd(f); err != nil {
		return nil, fmt.Errorf("attach tc %s filter on %s (ifindex %d): %w", dir, l.Name, l.Index, err)
	}
	return &clsactAttachment{h: h, filter: f, qdisc: added, ifname: l.Name, ifindex: l.Index,
		name: fmt.Sprintf("clsact %s %s prio %d", l.Name, dir, prio)}, nil
}

// prioSlot is a place for a filter: a priority and a handle free at it.
type prioSlot struct {
	prio   uint16
	handle uint32
}

// joinablePrio returns the lowest priority of a hook's filters with an unused handle,
// when every filter there is cls_bpf for all protocols; the zero slot otherwise.
func joinablePrio(fs []netlink.Filter) prioSlot {
	var low uint16
	for _, f := range fs {
		if p := f.Attrs().Priority; low == 0 || p < low {
			low = p
		}
	}
	if low == 0 {
		return prioSlot{}
	}
	var maxHandle uint32
	for _, f := range fs {
		a := f.Attrs()
		if a.Priority != low {
			continue
		}
		if _, ok := f.(*netlink.BpfFilter); !ok || a.Protocol != unix.ETH_P_ALL {
			return prioSlot{}
		}
		maxHandle = max(maxHandle, a.Handle)
	}
	if maxHandle == ^uint32(0) {
		return prioSlot{}
	}
	return prioSlot{prio: low, handle: maxHandle + 1}
}

// filterName names our cls_bpf filters after this process: "pathtrace-PID". A filter
// outlives a process killed with SIGKILL; its name tells a later run whose it was.
func filterName() string { return "pathtrace-" + strconv.Itoa(os.Getpid()) }

// staleFilter reports whether a filter name is that of a pathtrace process that no
// longer exists (in this PID namespace).
func staleFilter(name string) bool {
	s, ok := strings.CutPrefix(name, "pathtrace-")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// ingressQdiscs reads, in one dump, the kind of qdisc each interface of h's namespace
// has where clsact goes (clsact, ingress), by ifindex; ifindex 0 for all, else that
// one's. Only an interface with clsact can hold stale filters or others' filters; a
// dump per interface would cost O(n²) on a node of many pods.
func ingressQdiscs(h *netlink.Handle, ifindex int) (map[int]string, error) {
	var of netlink.Link
	if ifindex != 0 {
		of = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
	}
	qs, err := h.QdiscList(of)
	if err != nil {
		return nil, err
	}
	m := map[int]string{}
	for _, q := range qs {
		if a := q.Attrs(); a.Parent == netlink.HANDLE_CLSACT || a.Handle == netlink.MakeHandle(0xffff, 0) {
			m[a.LinkIndex] = q.Type()
		}
	}
	return m, nil
}

// removeStale deletes the cls_bpf filters that dead pathtrace processes left on the
// interface, and then the clsact qdisc if no filter of anyone's is left on it, as
// their exit would have. It returns the filters it removed. ingress, when not nil, is
// ingressQdiscs' answer: an interface without clsact there has nothing to remove; when
// it deletes the qdisc, it takes the interface out of that answer, so that what
// attaches next adds a clsact again rather than taking the one it deleted for there.
func removeStale(h *netlink.Handle, l iface, ingress map[int]string) ([]string, error) {
	if ingress != nil && ingress[l.Index] != "clsact" {
		return nil, nil
	}
	nl := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: l.Index}}
	qs, err := h.QdiscList(nl)
	if err != nil {
		return nil, fmt.Errorf("list qdiscs of %s: %w", l.Name, err)
	}
	var clsact netlink.Qdisc
	for _, q := range qs {
		if q.Type() == "clsact" {
			clsact = q
		}
	}
	if clsact == nil {
		return nil, nil
	}
	var removed []string
	left := 0
	for dir, parent := range map[string]uint32{"ingress": netlink.HANDLE_MIN_INGRESS, "egress": netlink.HANDLE_MIN_EGRESS} {
		fs, err := h.FilterList(nl, parent)
		if err != nil {
			return removed, fmt.Errorf("list tc %s filters of %s: %w", dir, l.Name, err)
		}
		for _, f := range fs {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || !staleFilter(bf.Name) {
				left++
				continue
			}
			if err := h.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
				return removed, fmt.Errorf("delete stale filter %s on %s: %w", bf.Name, l.Name, err)
			}
			removed = append(removed, fmt.Sprintf("%s (%s %s prio %d)", bf.Name, l.Name, dir, f.Attrs().Priority))
		}
	}
	if len(removed) > 0 && left == 0 {
		if err := h.QdiscDel(clsact); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			return removed, fmt.Errorf("delete the clsact qdisc left on %s: %w", l.Name, err)
		}
		delete(ingress, l.Index)
	}
	return removed, nil
}

// tcProgram is one program or filter on a tc hook, in the order the kernel runs them.
type tcProgram struct {
	desc      string // "tcx cil_from_overlay (id 42)", "cls_bpf cil_from_netdev prio 1 (id 7)"
	ours      bool   // this process's
	pathtrace bool   // another pathtrace's: it never redirects or drops
}

// ownPrograms tells pathtrace's programs from others': this process's by ID and
// filter name, another pathtrace's by the programs' tags (a hash of the instructions,
// the same in every process of one build) and filter names.
type ownPrograms struct {
	ids    map[ebpf.ProgramID]bool
	tags   map[string]bool
	filter string // this process's cls_bpf filter name
}

// add counts prog as pathtrace's.
func (o ownPrograms) add(prog *ebpf.Program) {
	if info, err := prog.Info(); err == nil {
		if id, ok := info.ID(); ok {
			o.ids[id] = true
		}
		o.tags[info.Tag] = true
	}
}

func (o ownPrograms) classify(id ebpf.ProgramID, tag, filter string) tcProgram {
	switch {
	case id != 0 && o.ids[id], filter != "" && filter == o.filter:
		return tcProgram{ours: true}
	case tag != "" && o.tags[tag], strings.HasPrefix(filter, "pathtrace-"):
		return tcProgram{pathtrace: true}
	}
	return tcProgram{}
}

// hookPrograms lists what runs on an interface's tc hook, in order: the tcx programs
// first (the kernel runs them before the legacy filters), then the clsact filters by
// priority, and within one priority in the order the kernel lists (and runs) them.
// ownIDs are pathtrace's own programs, own its cls_bpf filter name. noClsact says the
// interface is known to have no clsact qdisc, so no filters to list.
func hookPrograms(ns *nsRef, h *netlink.Handle, l iface, ingress bool, own ownPrograms, noClsact bool) ([]tcProgram, error) {
	at, parent := ebpf.AttachTCXEgress, uint32(netlink.HANDLE_MIN_EGRESS)
	if ingress {
		at, parent = ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS
	}
	var out []tcProgram
	var res *link.QueryResult
	err := ns.do(func() error {
		var err error
		res, err = link.QueryPrograms(link.QueryOptions{Target: l.Index, Attach: at})
		return err
	})
	switch {
	case err == nil:
		for _, p := range res.Programs {
			if own.ids[p.ID] { // this process's: no need to ask the kernel its name
				out = append(out, tcProgram{ours: true, desc: fmt.Sprintf("tcx pathtrace (id %d)", p.ID)})
				continue
			}
			name, tag := programName(p.ID)
			tp := own.classify(p.ID, tag, "")
			tp.desc = "tcx " + name
			out = append(out, tp)
		}
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.EINVAL):
		// no tcx on this kernel: nothing can be there
	default:
		return nil, fmt.Errorf("query tcx programs of %s: %w", l.Name, err)
	}
	if noClsact {
		return out, nil
	}
	fs, err := h.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: l.Index}}, parent)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return out, nil // no clsact qdisc
		}
		return nil, fmt.Errorf("list tc filters of %s: %w", l.Name, err)
	}
	slices.SortStableFunc(fs, func(a, b netlink.Filter) int { return int(a.Attrs().Priority) - int(b.Attrs().Priority) })
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok {
			name := bf.Name
			if name == "" {
				name = "unnamed"
			}
			tp := own.classify(ebpf.ProgramID(bf.Id), bf.Tag, bf.Name)
			tp.desc = fmt.Sprintf("cls_bpf %s prio %d (id %d)", name, f.Attrs().Priority, bf.Id)
			out = append(out, tp)
			continue
		}
		out = append(out, tcProgram{desc: fmt.Sprintf("%s filter prio %d", f.Type(), f.Attrs().Priority)})
	}
	return out, nil
}

// programName names a loaded program by ID, "name (id N)", and gives its tag.
func programName(id ebpf.ProgramID) (string, string) {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return fmt.Sprintf("id %d", id), ""
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil || info.Name == "" {
		return fmt.Sprintf("id %d", id), ""
	}
	return fmt.Sprintf("%s (id %d)", info.Name, id), info.Tag
}

// aroundOurs splits a hook's programs into those that run before pathtrace's and
// those after. Without pathtrace's among them, all are "after" (a hook pathtrace is
// not on, as doctor sees it).
func aroundOurs(ps []tcProgram) (before, after []string) {
	at := -1
	for i, p := range ps {
		if p.ours {
			at = i
			break
		}
	}
	for i, p := range ps {
		switch {
		case p.ours, p.pathtrace:
		case i < at:
			before = append(before, p.desc)
		default:
			after = append(after, p.desc)
		}
	}
	return before, after
}
