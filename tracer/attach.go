package tracer

import (
	"errors"
	"fmt"

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
func ensureClsact(h *netlink.Handle, l iface) (*netlink.GenericQdisc, error) {
	nl := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: l.Index}}
	qs, err := h.QdiscList(nl)
	if err != nil {
		return nil, fmt.Errorf("list qdiscs of %s: %w", l.Name, err)
	}
	for _, q := range qs {
		a := q.Attrs()
		if a.Parent == netlink.HANDLE_CLSACT || a.Handle == netlink.MakeHandle(0xffff, 0) {
			if q.Type() == "clsact" {
				return nil, nil
			}
			return nil, fmt.Errorf("%s has a %s qdisc where clsact would go; pathtrace does not replace it (try --attach-mode tcx)", l.Name, q.Type())
		}
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
		Fd: prog.FD(), Name: "pathtrace", DirectAction: true,
	}
	if err := h.FilterAdd(f); err != nil {
		return nil, fmt.Errorf("attach tc %s filter on %s (ifindex %d): %w", dir, l.Name, l.Index, err)
	}
	return &clsactAttachment{h: h, filter: f, qdisc: added, ifname: l.Name, ifindex: l.Index,
		name: fmt.Sprintf("clsact %s %s prio %d", l.Name, dir, prio)}, nil
}
