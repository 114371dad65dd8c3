package main

import (
	"encoding/json"
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

// The real doctor on this host (6.18, root): it can run, with tcx, netfilter links and
// drop reasons; as nobody it cannot, and says so in one line.
func TestDoctorHost(t *testing.T) {
	needRoot(t)
	code, stdout, stderr := runBinOut(t, nil, "doctor", "--json")
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
	if p := modes["tc hooks"]; p.Mode != tracer.AttachTCX {
		t.Errorf("tc hooks: %+v, want tcx", p)
	}
	if p := modes["netfilter hooks"]; p.Mode != tracer.NFLink {
		t.Errorf("netfilter hooks: %+v, want link", p)
	}
	if p := modes["drop reasons"]; !p.OK || !r.Features.KfreeSkbReason || r.Features.DropReasons == 0 {
		t.Errorf("drop reasons: %+v, features %+v", p, r.Features)
	}
	code, stdout, _ = runBinOut(t, nil, "doctor")
	if code != 0 || !strings.Contains(stdout, "tcx links        yes") || !strings.Contains(stdout, "pathtrace can run here") {
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
