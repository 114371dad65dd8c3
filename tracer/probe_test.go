package tracer

import (
	"os"
	"strings"
	"testing"
)

// allFeatures is a 6.18 host as root: everything there.
func allFeatures() Features {
	return Features{Kernel: "6.18.0", BTFPath: KernelBTF, KfreeSkbReason: true, DropReasons: 120, BrNetfilter: true,
		Caps: map[string]bool{"CAP_BPF": true, "CAP_PERFMON": true, "CAP_NET_ADMIN": true, "CAP_SYS_ADMIN": true}}
}

func part(t *testing.T, r Report, name string) Part {
	t.Helper()
	for _, p := range r.Parts {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no part %q in %+v", name, r.Parts)
	return Part{}
}

// The decisions from fake feature sets: the preferred modes, each fallback with what
// it loses and the fix, and the cases where pathtrace cannot run.
func TestDoctorDecide(t *testing.T) {
	r := Decide(allFeatures())
	if r.Fatal != "" {
		t.Errorf("all features: fatal %q", r.Fatal)
	}
	for name, mode := range map[string]string{"tc hooks": AttachTCX, "drop hook": DropTPBTF, "netfilter hooks": NFLink} {
		if p := part(t, r, name); p.Mode != mode || !p.OK || p.Lost != "" {
			t.Errorf("all features: %s = %+v, want %s", name, p, mode)
		}
	}

	// A 6.1 kernel: no tcx, no netfilter links, kprobes work.
	f := allFeatures()
	f.Kernel, f.TCX, f.NFLink = "6.1.0-18-amd64", "tcx links: not supported (needs 6.6)", "not supported"
	r = Decide(f)
	if p := part(t, r, "tc hooks"); p.Mode != AttachClsact || p.OK || !strings.Contains(p.Fix, "6.6") {
		t.Errorf("6.1: tc hooks %+v", p)
	}
	if p := part(t, r, "netfilter hooks"); p.Mode != NFKprobe || !strings.Contains(p.Fix, "6.4") {
		t.Errorf("6.1: netfilter %+v", p)
	}
	if p := part(t, r, "NAT following"); !strings.Contains(p.Mode, "on entry") || !strings.Contains(p.Lost, "DNAT at PREROUTING shows at the next hop") {
		t.Errorf("6.1: NAT following %+v", p)
	}
	if r.Fatal != "" {
		t.Errorf("6.1: fatal %q, want degraded only", r.Fatal)
	}

	// A 5.10 kernel: no drop reasons, kprobes rejected.
	f.Kernel, f.KfreeSkbReason, f.DropReasons, f.Kprobe = "5.10.0-30-amd64", false, 0, "load kprobe program: permission denied"
	r = Decide(f)
	if p := part(t, r, "drop reasons"); p.Mode != "none" || !strings.Contains(p.Fix, "5.17") {
		t.Errorf("5.10: drop reasons %+v", p)
	}
	if p := part(t, r, "drop hook"); p.Mode != "raw_tp (no drop reasons)" && p.Mode != "tp_btf" {
		t.Errorf("5.10: drop hook %+v", p)
	}
	if p := part(t, r, "netfilter hooks"); p.Mode != "unavailable" || !strings.Contains(p.Fix, "permission denied") {
		t.Errorf("5.10: netfilter %+v", p)
	}

	for _, tc := range []struct {
		change func(*Features)
		want   string
	}{
		{func(f *Features) { f.Kernel = "4.19.0" }, "too old"},
		{func(f *Features) { f.BTF = "kernel BTF not found at /sys/kernel/btf/vmlinux" }, "--kernel-btf"},
		{func(f *Features) { f.BPF = "operation not permitted"; f.Caps = map[string]bool{} }, "CAP_BPF"},
		{func(f *Features) { f.Caps = map[string]bool{"CAP_NET_ADMIN": true} }, "run as root"},
	} {
		f := allFeatures()
		tc.change(&f)
		if r := Decide(f); !strings.Contains(r.Fatal, tc.want) {
			t.Errorf("%+v: fatal %q, want %q", f, r.Fatal, tc.want)
		}
	}
}

func TestDoctorText(t *testing.T) {
	f := allFeatures()
	f.TCX = "tcx links: not supported (needs 6.6)"
	s := Decide(f).Text()
	for _, want := range []string{"kernel           6.18.0", "tcx links        no: tcx links: not supported", "tc hooks         clsact", "   fix:  Linux 6.6", "pathtrace can run here"} {
		if !strings.Contains(s, want) {
			t.Errorf("text lacks %q:\n%s", want, s)
		}
	}
	f.BTF = "kernel BTF not found"
	if s := Decide(f).Text(); !strings.Contains(s, "pathtrace cannot run: kernel BTF not found") {
		t.Errorf("text:\n%s", s)
	}
}

func TestDoctorKernelVersion(t *testing.T) {
	for in, want := range map[string][2]int{"6.1.0-18-amd64": {6, 1}, "5.10.209": {5, 10}, "6.18.0": {6, 18}, "6.6": {6, 6}} {
		if a, b, ok := kernelVersion(in); !ok || a != want[0] || b != want[1] {
			t.Errorf("kernelVersion(%q) = %d, %d, %v", in, a, b, ok)
		}
	}
}

// requirePrivileged skips a test that needs root, or fails it where it must run.
func requirePrivileged(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" || os.Getenv("PATHTRACE_REQUIRE_PRIVILEGED") == "1" {
		t.Fatal("privileged test cannot run: not root")
	}
	t.Skip("privileged test skipped: not root")
}

// The real probe on this host (6.18, root): tcx, netfilter links and drop reasons.
func TestDoctorProbeHost(t *testing.T) {
	requirePrivileged(t)
	r := Probe(Config{})
	t.Logf("\n%s", r.Text())
	if r.Fatal != "" {
		t.Fatalf("fatal: %s", r.Fatal)
	}
	if p := part(t, r, "tc hooks"); p.Mode != AttachTCX {
		t.Errorf("tc hooks %+v, want tcx", p)
	}
	if p := part(t, r, "netfilter hooks"); p.Mode != NFLink {
		t.Errorf("netfilter hooks %+v, want link", p)
	}
	if p := part(t, r, "drop reasons"); !p.OK || r.Features.DropReasons < 10 {
		t.Errorf("drop reasons %+v (%d names), want named", p, r.Features.DropReasons)
	}
}
