package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pathtrace/pathtrace/tracer"
)

// needRoot skips a privileged test that needs no lab, or fails it where it must run.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if mustRun() {
		t.Fatal("privileged test cannot run: not root")
	}
	t.Skip("privileged test skipped: not root")
}

// runBinOut runs the built binary and returns its exit status, stdout and stderr.
func runBinOut(t *testing.T, cred *syscall.Credential, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "pathtrace"), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stdout.String(), stderr.String()
	} else if err != nil {
		t.Fatalf("run pathtrace: %v", err)
	}
	return 0, stdout.String(), stderr.String()
}

func TestDoctorUsage(t *testing.T) {
	if code, _, stderr := runBinOut(t, nil, "doctor", "extra"); code != 2 || !strings.Contains(stderr, "doctor takes no arguments") {
		t.Errorf("doctor extra: exit %d, stderr %q", code, stderr)
	}
}

// The real doctor on this kernel, as root: it can run, in the modes the kernel's version
// gives (tcx from 6.6, netfilter links from 6.4, drop reasons from 5.17; the kprobe
// fallback before 6.4), and every program of pathtrace loads with room under the
// verifier's limit; as nobody it cannot, and says so in one line.
func TestDoctorHost(t *testing.T) {
	needRoot(t)
	code, stdout, stderr := runBinOut(t, nil, "doctor", "--json", "--programs")
	if code != 0 {
		t.Fatalf("doctor --json: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var r tracer.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, stdout)
	}
	modes := map[string]tracer.Part{}
	for _, p := range r.Parts {
		modes[p.Name] = p
	}
	since := func(maj, min int) bool {
		var u syscall.Utsname
		syscall.Uname(&u)
		rel := ""
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			rel += string(rune(c))
		}
		var a, b int
		fmt.Sscanf(rel, "%d.%d", &a, &b)
		return a > maj || a == maj && b >= min
	}
	wantTC, wantNF := tracer.AttachClsact, tracer.NFKprobe
	if since(6, 6) {
		wantTC = tracer.AttachTCX
	}
	if since(6, 4) {
		wantNF = tracer.NFLink
	}
	if p := modes["tc hooks"]; p.Mode != wantTC {
		t.Errorf("tc hooks: %+v, want %s", p, wantTC)
	}
	if p := modes["netfilter hooks"]; p.Mode != wantNF {
		t.Errorf("netfilter hooks: %+v, want %s", p, wantNF)
	}
	if p := modes["drop reasons"]; since(5, 17) && (!p.OK || !r.Features.KfreeSkbReason || r.Features.DropReasons == 0) {
		t.Errorf("drop reasons: %+v, features %+v", p, r.Features)
	}
	// Every program the modes use loads, at most half the verifier's budget.
	used := map[string]bool{"tc_ingress": true, "tc_egress": true, "tc_ingress_l3": true, "tc_egress_l3": true,
		"kfree_skb_raw_noreason": true, "tcp_retransmit": true}
	if wantNF == tracer.NFLink {
		used["nf_first"], used["nf_last"] = true, true
	} else {
		used["kp_nf_hook_slow"] = true
	}
	if since(5, 17) {
		used["kfree_skb_btf"], used["kfree_skb_raw"] = true, true
	}
	seen := map[string]bool{}
	for _, c := range r.Programs {
		if !used[c.Program] {
			continue
		}
		seen[c.Program] = true
		if !c.Loaded || c.Insns > tracer.VerifierLimit/2 {
			t.Errorf("program %s (%s): loaded %v, %d instructions (limit %d): %s", c.Program, c.Setup, c.Loaded, c.Insns, tracer.VerifierLimit, c.Error)
		}
	}
	if len(seen) != len(used) {
		t.Errorf("programs checked %v, want %v", seen, used)
	}
	code, stdout, _ = runBinOut(t, nil, "doctor")
	if code != 0 || !strings.Contains(stdout, "tcx links        ") || !strings.Contains(stdout, "pathtrace can run here") {
		t.Errorf("doctor: exit %d\n%s", code, stdout)
	}
	code, _, stderr = runBinOut(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "doctor")
	if code != 1 || !strings.Contains(stderr, "cannot load BPF programs") || !strings.Contains(stderr, "run as root") {
		t.Errorf("doctor as nobody: exit %d, stderr %q", code, stderr)
	}
}

// testNetns makes a network namespace of the test's own with a veth pair in it.
func testNetns(t *testing.T) string {
	t.Helper()
	ns := "ptkbtf-" + strconv.Itoa(os.Getpid())
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "add", "kb0", "type", "veth", "peer", "name", "kb1"},
		{"-n", ns, "link", "set", "kb0", "up"},
		{"-n", ns, "link", "set", "kb1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			exec.Command("ip", "netns", "del", ns).Run()
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
		if args[1] == "add" {
			t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		}
	}
	return ns
}

// --kernel-btf: a copy of the kernel's own BTF loads and attaches; a missing or garbage
// file fails at once, exit 1, naming the flag and what to give it.
func TestKernelBTF(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "vmlinux")
	b, err := os.ReadFile(tracer.KernelBTF)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, b, 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not BTF at all\n"), 0o644)

	ns := testNetns(t)
	follow := func(btfFile string) (int, string) {
		code, _, stderr := runBinOut(t, nil, "follow", "--netns", ns, "--ifaces", "kb*",
			"--duration", "500ms", "--kernel-btf", btfFile, "10.9.9.9")
		return code, stderr
	}
	if code, stderr := follow(good); code != 0 || !strings.Contains(stderr, "tc via") {
		t.Errorf("--kernel-btf copy of %s: exit %d, stderr %q", tracer.KernelBTF, code, stderr)
	}
	// The kernel's BTF hidden (a tmpfs over /sys/kernel/btf, in a mount namespace of
	// this test's own), as on a kernel built without it: doctor and follow say what is
	// missing and what to do; --kernel-btf with the file brings follow back.
	hidden := func(args ...string) (int, string) {
		cmd := exec.Command("unshare", append([]string{"-m", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs none /sys/kernel/btf && exec "$0" "$@"`, filepath.Join(binDir, "pathtrace")}, args...)...)
		out, err := cmd.CombinedOutput()
		return exitCode(err), string(out)
	}
	if code, out := hidden("doctor"); code != 1 || !strings.Contains(out, "CONFIG_DEBUG_INFO_BTF") || !strings.Contains(out, "--kernel-btf") {
		t.Errorf("doctor without the kernel's BTF: exit %d, want 1 naming CONFIG_DEBUG_INFO_BTF and --kernel-btf:\n%s", code, out)
	}
	if code, out := hidden("follow", "--netns", ns, "--ifaces", "kb*", "--duration", "500ms", "10.9.9.9"); code != 1 || !strings.Contains(out, "--kernel-btf") || strings.Contains(out, "tc via") {
		t.Errorf("follow without the kernel's BTF: exit %d, want 1 naming --kernel-btf:\n%s", code, out)
	}
	if code, out := hidden("follow", "--netns", ns, "--ifaces", "kb*", "--duration", "500ms", "--kernel-btf", good, "10.9.9.9"); code != 0 || !strings.Contains(out, "tc via") {
		t.Errorf("follow --kernel-btf without the kernel's BTF: exit %d\n%s", code, out)
	}
	for _, dev := range []string{"kb0", "kb1"} {
		if q, _ := exec.Command("ip", "-n", ns, "tc", "qdisc", "show", "dev", dev).Output(); strings.Contains(string(q), "clsact") {
			t.Errorf("%s still has a clsact qdisc after follow exited: %s", dev, q)
		}
	}
	for _, tc := range []struct{ file, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{garbage, "not a BTF file"},
	} {
		code, stderr := follow(tc.file)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		last := lines[len(lines)-1]
		if code != 1 || !strings.Contains(last, "--kernel-btf "+tc.file) || !strings.Contains(last, tc.want) || strings.Contains(stderr, "tc via") {
			t.Errorf("--kernel-btf %s: exit %d, stderr %q; want exit 1 and %q", tc.file, code, stderr, tc.want)
		}
		if code, _, stderr := runBinOut(t, nil, "doctor", "--kernel-btf", tc.file); code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("doctor --kernel-btf %s: exit %d, stderr %q", tc.file, code, stderr)
		}
	}
}

// doctor --netns shows a lab node's network as the tracer would find it: the layout,
// the interfaces with their roles; a namespace that does not exist is an error.
func TestDoctorNetwork(t *testing.T) {
	needLab(t)
	code, stdout, stderr := runBinOut(t, nil, "doctor", "--netns", labPrefix+"-node-a")
	if code != 0 {
		t.Fatalf("doctor --netns: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"network          namespace " + labPrefix + "-node-a",
		"layout         flannel (flannel.1): bridged pods (2 links) on cni0; tunnel flannel.1 (vxlan udp/8472); uplink eth0",
		"interfaces     eth0(uplink) cni0(bridge) flannel.1(overlay) veth1a23(pod) veth1a42(pod)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor --netns: no %q in:\n%s", want, stdout)
		}
	}
	code, stdout, stderr = runBinOut(t, nil, "doctor", "--netns", labPrefix+"-nope")
	if code != 1 || !strings.Contains(stdout+stderr, labPrefix+"-nope") {
		t.Errorf("doctor --netns of no namespace: exit %d\n%s\n%s", code, stdout, stderr)
	}
}
