package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/tracer"
)

// The privileged tests build the lab (scripts/lab.sh) under its own prefix, run the
// real pathtrace binary in its node namespaces and send real packets between its pods.
// Where the environment says they must run (CI=true, as .ci/run sets, or
// PATHTRACE_REQUIRE_PRIVILEGED=1) a missing privilege is a failure, not a skip.

const labPrefix = "ptt"

var (
	binDir   string // built binaries
	labErr   error  // why the lab could not be built
	labUp    bool
	repoRoot string
)

// kern is what the running kernel offers, as pathtrace doctor finds it: the tests
// expect each part in the mode it runs in here (tcx or clsact, netfilter links or the
// kprobe, the kernel's drop reasons or inferred ones), so the same tests judge every
// kernel of the matrix (scripts/test-kernels.sh).
var kern tracer.Report

func kernTCX() bool { return kern.Features.TCX == "" }

// kernNF is the netfilter hooks' mode: link, kprobe or unavailable.
func kernNF() string {
	for _, p := range kern.Parts {
		if p.Name == "netfilter hooks" {
			return p.Mode
		}
	}
	return ""
}

// kernReasons: the kfree_skb tracepoint passes drop reasons (5.17+).
func kernReasons() bool { return kern.Features.KfreeSkbReason && kern.Features.DropReasons > 0 }

// nfHop names a netfilter hop as the mode in use shows it: the links see a hook at its
// first and last priority, the kprobe on entry only ("FORWARD first" → "FORWARD entry",
// "FORWARD last" → "").
func nfHop(name string) string {
	if kernNF() != tracer.NFKprobe {
		return name
	}
	hook, prio, _ := strings.Cut(name, " ")
	switch prio {
	case "first":
		return hook + " entry"
	case "last":
		return ""
	}
	return name
}

// nfHops maps nfHop over a list of hops, leaving out those the mode does not show.
func nfHops(names ...string) []string {
	var out []string
	for _, n := range names {
		if m := nfHop(n); m != "" {
			out = append(out, m)
		}
	}
	return out
}

// readyWait bounds the wait for a follower or an agent to attach: in the kernel
// matrix's VMs, under emulation, loading the programs takes many times longer (5.10's
// verifier most), so the bound is longer there. An upper bound, not a timing target:
// the tests go on as soon as the ready file is there.
var readyWait = func() time.Duration {
	if os.Getenv("PATHTRACE_VM") == "1" {
		return 120 * time.Second
	}
	return 20 * time.Second
}()

func mustRun() bool {
	return os.Getenv("CI") == "true" || os.Getenv("PATHTRACE_REQUIRE_PRIVILEGED") == "1"
}

// needLab skips (or, where they must run, fails) tests that need root and the lab.
func needLab(t *testing.T) {
	t.Helper()
	if !labUp {
		if mustRun() {
			t.Fatalf("privileged test cannot run: %v", labErr)
		}
		t.Skipf("privileged test skipped: %v", labErr)
	}
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	wd, _ := os.Getwd()
	repoRoot = filepath.Join(wd, "..", "..")
	dir, err := os.MkdirTemp("", "pathtrace-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	os.Chmod(dir, 0o755) // the no-privileges test runs the binary as nobody
	for _, b := range []string{"pathtrace", "labpod", "labredirect"} {
		if pre := os.Getenv("PATHTRACE_TEST_BIN"); pre != "" {
			// Binaries built beforehand (scripts/test-kernels.sh: a VM under
			// emulation has no time to build them).
			if err := copyFile(filepath.Join(pre, b), filepath.Join(dir, b)); err != nil {
				fmt.Fprintf(os.Stderr, "PATHTRACE_TEST_BIN: %v\n", err)
				return 1
			}
			continue
		}
		// As make build does (CGO_ENABLED=0): the tests measure what ships.
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, b), "./cmd/"+b)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b, err, out)
			return 1
		}
	}
	// The binaries run here find no Kubernetes configuration, wherever the tests run
	// (a CI pod, a developer's kubeconfig): names are off unless a test gives one.
	os.Unsetenv("KUBERNETES_SERVICE_HOST")
	os.Unsetenv("KUBECONFIG")
	os.Setenv("HOME", dir)
	switch {
	case os.Geteuid() != 0:
		labErr = fmt.Errorf("not root")
	default:
		lab("down")
		if out, err := lab("up"); err != nil {
			labErr = fmt.Errorf("lab up: %v\n%s", err, out)
			lab("down")
		} else {
			labUp = true
		}
		kern = tracer.Probe(tracer.Config{})
	}
	code := m.Run()
	if labUp {
		if out, err := lab("down"); err != nil {
			fmt.Fprintf(os.Stderr, "lab down: %v\n%s", err, out)
			code = 1
		}
	}
	return code
}

// copyFile copies an executable.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

func lab(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repoRoot, "scripts", "lab.sh"), args...)
	cmd.Env = append(os.Environ(), "LAB_PREFIX="+labPrefix, "LABPOD="+filepath.Join(binDir, "labpod"),
		"LABREDIRECT="+filepath.Join(binDir, "labredirect"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// fault turns a lab fault on for the rest of the test.
func fault(t *testing.T, name string) {
	t.Helper()
	if out, err := lab("fault", name); err != nil {
		t.Fatalf("fault %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := lab("fault", name, "off"); err != nil {
			t.Errorf("fault %s off: %v\n%s", name, err, out)
		}
	})
}

// pod runs labpod in a pod namespace ("a-api", "b-api", "a-redis").
func pod(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"netns", "exec", labPrefix + "-" + name, filepath.Join(binDir, "labpod")}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	return string(out), err
}

// inNode runs a command in a node namespace.
func inNode(t *testing.T, node string, args ...string) string {
	t.Helper()
	full := append([]string{"netns", "exec", labPrefix + "-" + node}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

type follower struct {
	node   string
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan error
}

// startFollow runs `pathtrace follow --json` in a node's namespace and waits until its
// programs are attached.
func startFollow(t *testing.T, node string, args ...string) *follower {
	t.Helper()
	return runFollow(t, node, append([]string{"--netns", labPrefix + "-" + node, "--node", node}, args...))
}

// runFollow starts `pathtrace follow --json` with args and waits for its ready file.
func runFollow(t *testing.T, name string, args []string) *follower {
	t.Helper()
	return followBin(t, name, filepath.Join(binDir, "pathtrace"), append([]string{"--json"}, args...))
}

// followBin runs bin follow with args (and a ready file and a short timeout) until it
// is ready.
func followBin(t *testing.T, name, bin string, args []string) *follower {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	full := append([]string{"follow", "--ready-file", ready, "--timeout", "300ms"}, args...)
	f := &follower{node: name, done: make(chan error, 1)}
	f.cmd = exec.Command(bin, full...)
	f.cmd.Stdout, f.cmd.Stderr = &f.stdout, &f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.done <- f.cmd.Wait() }()
	t.Cleanup(func() {
		if f.cmd.ProcessState == nil {
			f.cmd.Process.Kill()
			<-f.done
		}
	})
	waitReady(t, ready, f.done, func() string { return fmt.Sprintf("pathtrace follow %v", args) }, f.stderr.String)
	return f
}

// waitReady waits for a pathtrace's ready file, failing the test when it exits first
// (done gets its Wait's result) or is not ready within readyWait.
func waitReady(t *testing.T, ready string, done <-chan error, what, stderr func() string) {
	t.Helper()
	deadline := time.Now().Add(readyWait)
	for {
		if _, err := os.Stat(ready); err == nil {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("%s exited before it was ready: %v\n%s", what(), err, stderr())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v\n%s", what(), readyWait, stderr())
		}
	}
}

// stop lets the journeys in flight time out, interrupts the follower and returns what it
// printed.
func (f *follower) stop(t *testing.T) []exporter.JourneyJSON {
	t.Helper()
	f.end(t)
	return parseJourneys(t, f.stdout.Bytes())
}

// end lets the journeys in flight time out and interrupts the follower, which must
// exit with status 0.
func (f *follower) end(t *testing.T) {
	t.Helper()
	time.Sleep(600 * time.Millisecond)
	f.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-f.done:
		if err != nil {
			t.Fatalf("pathtrace follow on %s: %v\n%s", f.node, err, f.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("pathtrace follow on %s did not exit after SIGINT\n%s", f.node, f.stderr.String())
	}
}

func parseJourneys(t *testing.T, b []byte) []exporter.JourneyJSON {
	t.Helper()
	var out []exporter.JourneyJSON
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var j exporter.JourneyJSON
		if err := json.Unmarshal(sc.Bytes(), &j); err != nil {
			t.Fatalf("bad JSON line %q: %v", sc.Text(), err)
		}
		switch j.Kind {
		case "journey":
			out = append(out, j)
		case "path": // a follower of several agents: each node's journey is a leg
			var p exporter.PathJSON
			if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
				t.Fatalf("bad path line %q: %v", sc.Text(), err)
			}
			out = append(out, p.Legs...)
		}
	}
	return out
}

func parseOneWays(t *testing.T, b []byte) []exporter.OneWayJSON {
	t.Helper()
	var out []exporter.OneWayJSON
	for _, line := range bytes.Split(b, []byte("\n")) {
		var o exporter.OneWayJSON
		if len(line) > 0 && json.Unmarshal(line, &o) == nil && o.Kind == "oneway" {
			out = append(out, o)
		}
	}
	return out
}

// hopNames lists the interface hops ("cni0 ingress"), leaving out netfilter hops.
func hopNames(j exporter.JourneyJSON) []string {
	var s []string
	for _, h := range j.Hops {
		if h.Kind != "netfilter" {
			s = append(s, h.Ifname+" "+h.Dir)
		}
	}
	return s
}

// allHops lists every hop: interfaces as "cni0 ingress", netfilter as "FORWARD first".
func allHops(j exporter.JourneyJSON) []string {
	var s []string
	for _, h := range j.Hops {
		if h.Kind == "netfilter" {
			s = append(s, h.Hook+" "+h.Priority)
		} else {
			s = append(s, h.Ifname+" "+h.Dir)
		}
	}
	return s
}

// hop returns the first hop named like allHops names it.
func hop(j exporter.JourneyJSON, name string) *exporter.HopJSON {
	for i, n := range allHops(j) {
		if n == name {
			return &j.Hops[i]
		}
	}
	return nil
}

// find returns the journeys of TCP packets with exactly these flags from src to dst.
func find(js []exporter.JourneyJSON, flags, src, dst string) []exporter.JourneyJSON {
	var out []exporter.JourneyJSON
	for _, j := range js {
		if j.TCPFlags == flags && strings.HasPrefix(j.Flow.Src, src) && strings.HasPrefix(j.Flow.Dst, dst) {
			out = append(out, j)
		}
	}
	return out
}

func byProto(js []exporter.JourneyJSON, proto string) []exporter.JourneyJSON {
	var out []exporter.JourneyJSON
	for _, j := range js {
		if j.Flow.Proto == proto {
			out = append(out, j)
		}
	}
	return out
}

func dump(js []exporter.JourneyJSON) string {
	var b strings.Builder
	for _, j := range js {
		fmt.Fprintf(&b, "  %s %s→%s [%s] %v %s %s\n", j.Flow.Proto, j.Flow.Src, j.Flow.Dst, j.TCPFlags, allHops(j), j.Verdict, j.Summary)
	}
	return b.String()
}

// assertNothingLeft checks that no pathtrace program is loaded anywhere and that the
// node namespaces carry no tc filter or clsact qdisc.
func assertNothingLeft(t *testing.T) {
	t.Helper()
	// Programs are freed asynchronously after the last reference goes.
	var left []string
	for try := 0; try < 50; try++ {
		left = loadedPrograms(t)
		if len(left) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("programs still loaded after exit: %v", left)
	}
	assertNoClsact(t)
}

var ourPrograms = map[string]bool{"tc_ingress": true, "tc_egress": true, "tc_ingress_l3": true,
	"tc_egress_l3": true, "kfree_skb_btf": true, "kfree_skb_raw": true, "kfree_skb_raw_n": true}

func loadedPrograms(t *testing.T) []string {
	t.Helper()
	var out []string
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return out
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err == nil && ourPrograms[info.Name] {
			out = append(out, fmt.Sprintf("%s (id %d)", info.Name, id))
		}
	}
}

// assertNoClsact fails the test if a clsact qdisc is left on a node's interfaces.
func assertNoClsact(t *testing.T) {
	t.Helper()
	for _, node := range []string{"node-a", "node-b"} {
		for _, dev := range []string{"eth0", "cni0", "flannel.1"} {
			if q := inNode(t, node, "tc", "qdisc", "show", "dev", dev); strings.Contains(q, "clsact") {
				t.Errorf("%s %s still has a clsact qdisc: %s", node, dev, q)
			}
		}
	}
}

// exitCode is a command's exit status: 0 without error, -1 when a signal ended it or it
// did not start.
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode()
	}
	return -1
}

// wantDiagnosis checks a report's diagnosis as a user reads it: its cause, and each
// named piece of evidence present (and containing the text after "=", if any).
func wantDiagnosis(t *testing.T, what string, d *decode.Diagnosis, cause string, evidence ...string) {
	t.Helper()
	if d == nil {
		t.Errorf("%s: no diagnosis, want cause %s", what, cause)
		return
	}
	show := func() string { b, _ := json.MarshalIndent(d, "", " "); return string(b) }
	if d.Cause != cause {
		t.Errorf("%s: cause %q, want %q:\n%s", what, d.Cause, cause, show())
		return
	}
	if d.Summary == "" || d.Fix == "" {
		t.Errorf("%s: summary or fix empty:\n%s", what, show())
	}
	for _, e := range evidence {
		name, want, _ := strings.Cut(e, "=")
		if v := d.Value(name); v == "" || !strings.Contains(v, want) {
			t.Errorf("%s: evidence %q is %q, want it to contain %q:\n%s", what, name, v, want, show())
		}
	}
}
