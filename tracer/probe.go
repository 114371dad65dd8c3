package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Features are the facts Probe found about this kernel and this process. An empty
// error string means the feature is there.
type Features struct {
	Kernel         string          `json:"kernel"`
	BTFPath        string          `json:"btf_path"`
	BTF            string          `json:"btf_error,omitempty"` // why BTFPath could not be read
	BPF            string          `json:"bpf_error,omitempty"` // why a trivial program did not load
	RingBuf        string          `json:"ringbuf_error,omitempty"`
	TCX            string          `json:"tcx_error,omitempty"`
	NFLink         string          `json:"netfilter_link_error,omitempty"`
	TPBTF          string          `json:"tp_btf_error,omitempty"`
	Kprobe         string          `json:"kprobe_error,omitempty"`
	KfreeSkbReason bool            `json:"kfree_skb_reason"` // the tracepoint passes a reason (5.17+)
	DropReasons    int             `json:"drop_reasons"`     // names in enum skb_drop_reason
	Conntrack      string          `json:"conntrack_error,omitempty"`
	BrNetfilter    bool            `json:"br_netfilter"`
	Kallsyms       string          `json:"kallsyms_error,omitempty"`
	Caps           map[string]bool `json:"capabilities"`
}

// Part is one part of pathtrace and the mode it will run in here.
type Part struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	OK   bool   `json:"ok"`             // the preferred mode
	Lost string `json:"lost,omitempty"` // what the mode loses
	Fix  string `json:"fix,omitempty"`  // how to get it back
}

// Report is what pathtrace doctor prints.
type Report struct {
	Features Features `json:"features"`
	Parts    []Part   `json:"parts"`
	// Programs: each BPF program loaded as the tracer would (doctor --programs).
	Programs []ProgramCheck `json:"programs,omitempty"`
	// Network: the namespace's layout and interfaces as the tracer would find them.
	Network *Network `json:"network,omitempty"`
	// Fatal, when not empty, is why pathtrace cannot run at all, and what to do.
	Fatal string `json:"fatal,omitempty"`
}

// Capabilities Probe reports, by bit number.
var probeCaps = []struct {
	name string
	bit  uint
}{{"CAP_NET_ADMIN", unix.CAP_NET_ADMIN}, {"CAP_SYS_ADMIN", unix.CAP_SYS_ADMIN}, {"CAP_PERFMON", unix.CAP_PERFMON}, {"CAP_BPF", unix.CAP_BPF}}

// Probe finds what this kernel and process offer, trying each feature the way the
// tracer uses it, and decides the mode of each part as the tracer's auto modes do.
// It leaves nothing attached or loaded.
func Probe(cfg Config) Report {
	path := cfg.BTFPath
	if path == "" {
		path = KernelBTF
	}
	f := Features{BTFPath: path, Kernel: kernelRelease(), Caps: map[string]bool{}}
	if eff, err := capEff(); err == nil {
		for _, c := range probeCaps {
			f.Caps[c.name] = eff&(1<<c.bit) != 0
		}
	}
	_ = rlimit.RemoveMemlock()
	kspec, err := loadBTF(path)
	if err != nil {
		f.BTF = err.Error()
	}
	if kspec != nil {
		f.KfreeSkbReason = kfreeSkbHasReason(kspec)
		if r, err := DropReasons(kspec); err == nil && r != nil {
			f.DropReasons = len(r)
		}
		if ct := conntrackLayout(kspec); !ct.ok {
			f.Conntrack = ct.why
		}
	}
	f.BPF = errString(probeBPF())
	f.RingBuf = errString(features.HaveMapType(ebpf.RingBuf))
	f.TCX = errString(probeTCX())
	f.NFLink = errString(features.HaveProgramType(ebpf.Netfilter))
	f.TPBTF = errString(probeTPBTF())
	f.Kprobe = errString(probeKprobe())
	f.BrNetfilter = exists("/proc/sys/net/bridge") || exists("/sys/module/br_netfilter")
	f.Kallsyms = errString(probeKallsyms())
	return Decide(f)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return firstLine(err)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// capEff reads the effective capability set from /proc/self/status.
func capEff() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

var returnZero = asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}

func probeBPF() error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: returnZero})
	if err != nil {
		return fmt.Errorf("load a trivial BPF program: %w", err)
	}
	return p.Close()
}

// probeTCX asks the kernel for a tcx link on an interface that does not exist: a
// kernel with tcx says there is no such device, as the tracer's attach would succeed.
func probeTCX() error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: returnZero})
	if err != nil {
		return loadError("load a trivial tc program", err)
	}
	defer p.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: 0x7ffffff0, Program: p, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		l.Close()
		return nil
	}
	if errors.Is(err, unix.ENODEV) {
		return nil
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("tcx links: %w (needs 6.6)", err)
	}
	return err
}

func probeTPBTF() error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "kfree_skb", License: "GPL", Instructions: returnZero})
	if err != nil {
		return loadError("load tp_btf/kfree_skb", err)
	}
	return p.Close()
}

// probeKprobe loads a trivial kprobe program and attaches it to nf_hook_slow, where the
// netfilter fallback goes, for a moment.
func probeKprobe() error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL", Instructions: returnZero})
	if err != nil {
		return loadError("load kprobe program", err)
	}
	defer p.Close()
	l, err := link.Kprobe("nf_hook_slow", p, nil)
	if err != nil {
		return fmt.Errorf("attach kprobe nf_hook_slow: %w", err)
	}
	return l.Close()
}

// probeKallsyms checks that /proc/kallsyms is readable with real addresses (they read
// as zero without CAP_SYSLOG or under kptr_restrict).
func probeKallsyms() error {
	fh, err := os.Open("/proc/kallsyms")
	if err != nil {
		return err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for i := 0; i < 100 && sc.Scan(); i++ {
		addr, _, _ := strings.Cut(sc.Text(), " ")
		if v, err := strconv.ParseUint(addr, 16, 64); err == nil && v != 0 {
			return nil
		}
	}
	return errors.New("/proc/kallsyms shows zero addresses (kernel.kptr_restrict, or no CAP_SYSLOG)")
}

// kernelVersion parses "6.1.0-18-amd64" into 6, 1.
func kernelVersion(release string) (major, minor int, ok bool) {
	a, rest, _ := strings.Cut(release, ".")
	b := rest
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		b = rest[:i]
	}
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(b)
	return x, y, err1 == nil && err2 == nil
}

// Decide turns the facts into the mode of each part, as the tracer's auto modes choose
// them, and says whether pathtrace can run at all. It is pure.
func Decide(f Features) Report {
	r := Report{Features: f}
	if maj, min, ok := kernelVersion(f.Kernel); ok && (maj < 5 || maj == 5 && min < 10) {
		r.Fatal = fmt.Sprintf("kernel %s is too old: pathtrace needs Linux 5.10 or later", f.Kernel)
	}
	hasCaps := f.Caps["CAP_SYS_ADMIN"] && f.Caps["CAP_NET_ADMIN"] || f.Caps["CAP_BPF"] && f.Caps["CAP_PERFMON"] && f.Caps["CAP_NET_ADMIN"]
	switch {
	case r.Fatal != "":
	case f.BTF != "":
		r.Fatal = f.BTF
		if !strings.Contains(r.Fatal, "--kernel-btf") {
			r.Fatal += "; or pass --kernel-btf FILE with this kernel's BTF (BTFHub has files for most distribution kernels)"
		}
	case f.BPF != "" || !hasCaps:
		why := f.BPF
		if why == "" {
			why = "missing capabilities"
		}
		r.Fatal = fmt.Sprintf("cannot load BPF programs (%s): run as root or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN (and CAP_SYS_ADMIN on kernels before 5.8)", why)
	case f.RingBuf != "":
		r.Fatal = fmt.Sprintf("no BPF ring buffer (%s): pathtrace needs Linux 5.10 or later", f.RingBuf)
	}

	tc := Part{Name: "tc hooks", Mode: AttachTCX, OK: true}
	if f.TCX != "" {
		tc = Part{Name: "tc hooks", Mode: AttachClsact,
			Lost: "programs are cls_bpf filters on a clsact qdisc shared with other tc users, at the lowest free priority, not guaranteed to run first",
			Fix:  "Linux 6.6 or later for tcx links (" + f.TCX + ")"}
	}
	drop := Part{Name: "drop hook", Mode: DropTPBTF, OK: true}
	if f.TPBTF != "" {
		drop = Part{Name: "drop hook", Mode: DropRawTP,
			Lost: "nothing the output shows: the raw tracepoint reads the same arguments",
			Fix:  "tp_btf/kfree_skb needs the kernel's own BTF (" + f.TPBTF + ")"}
	}
	reasons := Part{Name: "drop reasons", Mode: fmt.Sprintf("named from the kernel's BTF (%d reasons)", f.DropReasons), OK: true}
	if !f.KfreeSkbReason || f.DropReasons == 0 {
		reasons = Part{Name: "drop reasons", Mode: "none",
			Lost: "drops are reported with their location only, not the kernel's reason",
			Fix:  "Linux 5.17 or later (kfree_skb with enum skb_drop_reason)"}
		drop.Mode = DropRawTP + " (no drop reasons)"
		drop.OK = false
	}
	nf := Part{Name: "netfilter hooks", Mode: NFLink, OK: true}
	switch {
	case f.NFLink == "":
	case f.Kprobe == "":
		nf = Part{Name: "netfilter hooks", Mode: NFKprobe,
			Lost: "each hook is seen on entry only (a kprobe on nf_hook_slow): no verdict per hook from its last priority",
			Fix:  "Linux 6.4 or later for BPF netfilter links (" + f.NFLink + ")"}
	default:
		nf = Part{Name: "netfilter hooks", Mode: "unavailable",
			Lost: "no netfilter hop; a firewall drop shows only as dropped at nf_hook_slow",
			Fix:  "Linux 6.4 or later for BPF netfilter links (" + f.NFLink + "), or a kernel where kprobes load (" + f.Kprobe + ")"}
	}
	nat := Part{Name: "NAT following", Mode: "conntrack entries read at the netfilter hooks", OK: true}
	switch {
	case f.Conntrack != "":
		nat = Part{Name: "NAT following", Mode: "off", Lost: "a Service VIP's DNATed packets are not followed; conntrack state not shown",
			Fix: "load nf_conntrack before starting pathtrace (" + f.Conntrack + ")"}
	case nf.Mode == NFKprobe:
		nat = Part{Name: "NAT following", Mode: "conntrack entries read on entry to each hook",
			Lost: "a translation shows at the hop after the hook that made it (DNAT at PREROUTING shows at the next hop)", Fix: nf.Fix}
	case nf.Mode != NFLink:
		nat = Part{Name: "NAT following", Mode: "off", Lost: "a Service VIP's DNATed packets are not followed (needs the netfilter links, or the kprobe fallback)", Fix: nf.Fix}
	}
	if !f.BrNetfilter {
		nat.Lost = strings.TrimPrefix(nat.Lost+"; ", "; ") + "br_netfilter not loaded: bridged pod traffic skips iptables"
		nat.Fix = strings.TrimPrefix(nat.Fix+"; ", "; ") + "modprobe br_netfilter (Kubernetes nodes load it)"
	}
	capture := Part{Name: "capture", Mode: "pcapng from the tc and netfilter hooks' packet bytes", OK: true}
	locs := Part{Name: "drop locations", Mode: "function+offset from /proc/kallsyms", OK: true}
	if f.Kallsyms != "" {
		locs = Part{Name: "drop locations", Mode: "hex addresses", Lost: "drop sites are not named", Fix: "run as root (CAP_SYSLOG) or set kernel.kptr_restrict=0 (" + f.Kallsyms + ")"}
	}
	r.Parts = []Part{tc, drop, reasons, nf, nat, capture, locs}
	return r
}

// Text writes the report for people: the facts, then each part's mode.
func (r Report) Text() string {
	var b strings.Builder
	f := r.Features
	yes := func(errStr string) string {
		if errStr == "" {
			return "yes"
		}
		return "no: " + errStr
	}
	fmt.Fprintf(&b, "kernel           %s\n", f.Kernel)
	fmt.Fprintf(&b, "BTF              %s (%s)\n", yes(f.BTF), f.BTFPath)
	fmt.Fprintf(&b, "BPF programs     %s\n", yes(f.BPF))
	fmt.Fprintf(&b, "ring buffer      %s\n", yes(f.RingBuf))
	fmt.Fprintf(&b, "tcx links        %s\n", yes(f.TCX))
	fmt.Fprintf(&b, "netfilter links  %s\n", yes(f.NFLink))
	fmt.Fprintf(&b, "tp_btf           %s\n", yes(f.TPBTF))
	fmt.Fprintf(&b, "kprobes          %s\n", yes(f.Kprobe))
	reason := "no (before 5.17)"
	if f.KfreeSkbReason {
		reason = fmt.Sprintf("yes (%d names)", f.DropReasons)
	}
	fmt.Fprintf(&b, "drop reasons     %s\n", reason)
	fmt.Fprintf(&b, "conntrack BTF    %s\n", yes(f.Conntrack))
	br := "no"
	if f.BrNetfilter {
		br = "yes"
	}
	fmt.Fprintf(&b, "br_netfilter     %s\n", br)
	fmt.Fprintf(&b, "kallsyms         %s\n", yes(f.Kallsyms))
	var caps []string
	for _, c := range probeCaps {
		mark := "-"
		if f.Caps[c.name] {
			mark = "+"
		}
		caps = append(caps, mark+c.name)
	}
	fmt.Fprintf(&b, "capabilities     %s\n\n", strings.Join(caps, " "))
	for _, p := range r.Parts {
		fmt.Fprintf(&b, "%-16s %s\n", p.Name, p.Mode)
		if p.Lost != "" {
			fmt.Fprintf(&b, "%-16s   lost: %s\n", "", p.Lost)
		}
		if p.Fix != "" {
			fmt.Fprintf(&b, "%-16s   fix:  %s\n", "", p.Fix)
		}
	}
	if len(r.Programs) > 0 {
		b.WriteString("\n" + ChecksText(r.Programs))
	}
	if r.Network != nil {
		b.WriteString("\n" + r.Network.Text())
	}
	if r.Fatal != "" {
		fmt.Fprintf(&b, "\npathtrace cannot run: %s\n", r.Fatal)
	} else {
		fmt.Fprintf(&b, "\npathtrace can run here\n")
	}
	return b.String()
}
