package matrix

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/tracer"
)

func TestParseResults(t *testing.T) {
	got := ParseResults("=== RUN   TestA\n--- PASS: TestA (1.00s)\n    --- FAIL: TestA/sub (0.1s)\n--- FAIL: TestB (2.00s)\n--- SKIP: TestC (0.00s)\n")
	want := map[string]string{"TestA": "PASS", "TestB": "FAIL", "TestC": "SKIP"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s, want %s", k, got[k], v)
		}
	}
}

// writeKernel leaves a kernel's directory as test-kernels.sh does.
func writeKernel(t *testing.T, name string, r tracer.Report, tests string) string {
	dir := filepath.Join(t.TempDir(), name)
	os.MkdirAll(dir, 0o755)
	b, _ := json.Marshal(r)
	os.WriteFile(filepath.Join(dir, "doctor.json"), b, 0o644)
	os.WriteFile(filepath.Join(dir, "tests.txt"), []byte(tests), 0o644)
	os.WriteFile(filepath.Join(dir, "secs"), []byte("42\n"), 0o644)
	if name != "host" {
		os.WriteFile(filepath.Join(dir, "vm"), nil, 0o644)
	}
	return dir
}

func TestPrint(t *testing.T) {
	f := tracer.Features{Kernel: "5.10.0-32-amd64", TCX: "no", NFLink: "no"}
	r := tracer.Decide(f)
	r.Programs = []tracer.ProgramCheck{
		{Program: "tc_ingress", Setup: "follow", Loaded: true, Insns: 94038},
		{Program: "tc_ingress", Setup: "agent", Loaded: true, Insns: 101019},
		{Program: "nf_first", Setup: "follow", Unsupported: true, Error: "no"},
	}
	var all strings.Builder
	for _, name := range Tests() {
		all.WriteString("--- PASS: " + name + " (1.00s)\n")
	}
	good := Read(writeKernel(t, "bullseye", r, all.String()))
	out, ok := Print([]Kernel{good})
	if !ok {
		t.Errorf("every test passed, yet not ok:\n%s", out)
	}
	for _, want := range []string{"| 5.10.0-32-amd64 | clsact pass |", "inferred pass", "kprobe pass", "| tc_ingress | 101019 |", "| nf_first | unsupported |", "42 s"} {
		if !strings.Contains(out, want) {
			t.Errorf("matrix lacks %q:\n%s", want, out)
		}
	}
	// One test failed, one did not run: not ok, and both named.
	bad := Read(writeKernel(t, "bookworm", r, strings.Replace(strings.Replace(all.String(), "PASS: TestVIPNAT", "FAIL: TestVIPNAT", 1), "--- PASS: TestConntrackFull", "", 1)))
	out, ok = Print([]Kernel{good, bad})
	if ok {
		t.Errorf("a failed test, yet ok:\n%s", out)
	}
	for _, want := range []string{"TestVIPNAT FAIL", "TestConntrackFull NOT RUN", "FAIL |", "NOT RUN |"} {
		if !strings.Contains(out, want) {
			t.Errorf("matrix lacks %q:\n%s", want, out)
		}
	}
	// The host may skip the VM-only test, a VM may not.
	skipped := strings.Replace(all.String(), "PASS: TestConntrackFull", "SKIP: TestConntrackFull", 1)
	if out, ok := Print([]Kernel{Read(writeKernel(t, "host", r, skipped))}); !ok || !strings.Contains(out, "VM only") {
		t.Errorf("host skipping TestConntrackFull: ok %v\n%s", ok, out)
	}
	if out, ok := Print([]Kernel{Read(writeKernel(t, "bookworm", r, skipped))}); ok {
		t.Errorf("a VM skipping TestConntrackFull, yet ok\n%s", out)
	}
	// A kernel that left nothing: not ok.
	if _, ok := Print([]Kernel{Read(t.TempDir())}); ok {
		t.Error("a kernel without a report, yet ok")
	}
}
