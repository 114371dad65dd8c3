package tracer

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/pathtrace/pathtrace/decode"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A pathtrace killed with SIGKILL in clsact mode leaves its cls_bpf filters, and the
// clsact qdisc it added, behind. The next one removes them (the qdisc too, as nothing
// else is on it) and then attaches on that interface: it must add a clsact again, not
// take the one it has just deleted for there.
func TestStaleFiltersRemoved(t *testing.T) {
	nfrNeedRoot(t)
	node := nfrNetns(t)
	nfrIn(t, node, "link add sa0 type veth peer name sb0\nlink set sa0 up\nlink set sb0 up\n", "ip", "-batch", "-")
	h := nsHandle(t, node)
	sa, err := h.LinkByName("sa0")
	if err != nil {
		t.Fatal(err)
	}
	// A pid that was pathtrace's and is gone.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("pathtrace-%d", dead.Process.Pid)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if err := h.QdiscAdd(&netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: sa.Attrs().Index,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}); err != nil {
		t.Fatal(err)
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		if err := h.FilterAdd(&netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: sa.Attrs().Index, Parent: parent,
			Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL}, Fd: prog.FD(), Name: stale, DirectAction: true}); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := New(Config{Netns: node, Ifaces: []string{"sa0"}, AttachMode: AttachClsact, DropHook: DropNone, NFHook: NFNone,
		Selectors: []decode.Selector{{}}})
	if err != nil {
		t.Fatalf("after a killed pathtrace's filters: %v", err)
	}
	notes := strings.Join(tr.Mode().Notes, "\n")
	if !strings.Contains(notes, "removed tc filters left by pathtrace processes that are gone: "+stale) {
		t.Errorf("no note of the removed filters:\n%s", notes)
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := h.FilterList(sa, parent)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok {
				names = append(names, bf.Name)
			}
		}
		if len(names) != 1 || names[0] != filterName() {
			t.Errorf("parent %#x: filters %q, want only %s", parent, names, filterName())
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	qs, err := h.QdiscList(sa)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			t.Errorf("clsact qdisc left on sa0 after Close")
		}
	}
}
