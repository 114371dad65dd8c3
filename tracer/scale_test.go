package tracer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// A busy node's 250 pod veths: every one attached, ingress and egress, as the kernel
// lists them, in each mode; none left after Close. (How long it takes is a figure of
// make bench, not a test.)
func TestAttachMany(t *testing.T) {
	nfrNeedRoot(t)
	const n = 250
	for _, mode := range []string{AttachTCX, AttachClsact} {
		t.Run(mode, func(t *testing.T) {
			node := nfrNetns(t)
			var batch strings.Builder
			for i := range n {
				fmt.Fprintf(&batch, "link add pa%d type veth peer name pb%d\nlink set pa%d up\nlink set pb%d up\n", i, i, i, i)
			}
			nfrIn(t, node, batch.String(), "ip", "-batch", "-")
			start := time.Now()
			tr, err := New(Config{Netns: node, Ifaces: []string{"pa*"}, AttachMode: mode, DropHook: DropNone, NFHook: NFNone,
				Selectors: []decode.Selector{{}}})
			if mode == AttachTCX && err != nil && strings.Contains(err.Error(), "not supported") {
				t.Skipf("tcx: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d interfaces attached in %v", mode, len(tr.Ifaces()), time.Since(start))
			if got := tr.Mode().TC; got != mode {
				t.Errorf("mode %s, want %s", got, mode)
			}
			if got := len(tr.Ifaces()); got != n {
				t.Errorf("%d interfaces traced, want %d", got, n)
			}
			h := nsHandle(t, node)
			ns, err := openNetns(node)
			if err != nil {
				t.Fatal(err)
			}
			defer ns.close()
			links, err := h.LinkList()
			if err != nil {
				t.Fatal(err)
			}
			// count: programs on each pa* hook, as the kernel lists them.
			count := func() (per map[string]int) {
				per = map[string]int{}
				for _, l := range links {
					name := l.Attrs().Name
					if !strings.HasPrefix(name, "pa") {
						continue
					}
					for _, ingress := range []bool{true, false} {
						ps, err := hookPrograms(ns, h, iface{Iface: decode.Iface{Index: l.Attrs().Index, Name: name}}, ingress, ownPrograms{}, false)
						if err != nil {
							t.Fatalf("%s: %v", name, err)
						}
						per[name] += len(ps)
					}
				}
				return per
			}
			for name, c := range count() {
				if c != 2 {
					t.Errorf("%s: %d programs on its hooks, want 2 (ingress and egress)", name, c)
				}
			}
			start = time.Now()
			if err := tr.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: detached in %v", mode, time.Since(start))
			for name, c := range count() {
				if c != 0 {
					t.Errorf("%s: %d programs left after Close", name, c)
				}
			}
			qs, err := h.QdiscList(nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range qs {
				if q.Type() == "clsact" {
					t.Errorf("clsact qdisc left on ifindex %d", q.Attrs().LinkIndex)
				}
			}
		})
	}
}
