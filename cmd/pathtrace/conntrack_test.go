package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The conntrack table full: nf_conntrack_max below the node's count, a new connection
// from node-b to its pod is dropped where conntrack would create its entry (OUTPUT),
// and pathtrace names the table full with its count and max.
//
// nf_conntrack_max is one value for the whole machine, writable only from its root
// network namespace: lowering it would also refuse the machine's own new connections.
// So the test runs where the root namespace is a VM's own (scripts/test-kernels.sh sets
// PATHTRACE_VM=1), and everywhere else says so and skips.
func TestConntrackFull(t *testing.T) {
	needLab(t)
	if os.Getenv("PATHTRACE_VM") != "1" {
		t.Skip("changes the machine-wide net.netfilter.nf_conntrack_max: runs in the kernel matrix's VMs (make test-kernels), where PATHTRACE_VM=1")
	}
	const maxPath = "/proc/sys/net/netfilter/nf_conntrack_max"
	old, err := os.ReadFile(maxPath)
	if err != nil {
		t.Fatalf("read %s: %v", maxPath, err)
	}
	// Entries that early_drop may not evict: assured TCP connections (TIME_WAIT).
	for i := 0; i < 2; i++ {
		if out, err := pod(t, "node-b", "tcp", "10.244.2.57:8080"); err != nil {
			t.Fatalf("connection before the table fills: %v %s", err, out)
		}
	}
	// The table is made full only now, after the follower attached (which takes
	// seconds in an emulated VM, long enough for closed connections' entries to
	// expire): nf_conntrack_max 1, below the entries node-b holds, so that conntrack
	// refuses the next one whatever expires meanwhile.
	f := startFollow(t, "node-b", "--proto", "tcp", "10.244.2.57:8080")
	count, err := strconv.Atoi(strings.TrimSpace(inNode(t, "node-b", "cat", "/proc/sys/net/netfilter/nf_conntrack_count")))
	if err != nil || count < 1 {
		t.Fatalf("node-b nf_conntrack_count: %d %v", count, err)
	}
	if err := os.WriteFile(maxPath, []byte("1"), 0o644); err != nil {
		t.Fatalf("set nf_conntrack_max: %v", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(maxPath, old, 0o644); err != nil {
			t.Errorf("restore nf_conntrack_max: %v", err)
		}
	})
	if out, err := pod(t, "node-b", "tcp", "10.244.2.57:8080", "--timeout", "1500ms"); err == nil {
		t.Fatalf("connection made with the table full (%d entries, nf_conntrack_max 1): %s", count, out)
	}
	js := f.stop(t)
	syn := find(js, "S", "10.244.2.1:", "10.244.2.57:8080")
	if len(syn) == 0 {
		t.Fatalf("no SYN journey from node-b:\n%s", dump(js))
	}
	source := "kernel"
	if !kernReasons() {
		source = "inferred"
	}
	cause := regexp.MustCompile(`^conntrack table full \(nf_conntrack_count (\d+) of nf_conntrack_max 1\)$`)
	for _, j := range syn {
		d := j.Drop
		if j.Verdict != "dropped" || d == nil || d.Reason != "NETFILTER_DROP" || d.ReasonSource != source || d.Hook != "OUTPUT" {
			t.Fatalf("SYN: verdict %s drop %+v, want dropped at OUTPUT with NETFILTER_DROP (%s)\n%s", j.Verdict, d, source, dump(js))
		}
		if m := cause.FindStringSubmatch(d.Cause); m == nil || m[1] == "0" {
			t.Errorf("SYN: cause %q, want %q with the node's count\n%s", d.Cause, cause, dump(js))
		}
		wantDiagnosis(t, "conntrack full", j.Diagnosis, "conntrack_full", "nf_conntrack_count", "nf_conntrack_max=1", "insert_failed", "early_drop")
	}
	t.Logf("SYN dropped: %s", syn[0].Drop.Cause)
}
