package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// runBin runs the built binary and returns its exit status and stderr.
func runBin(t *testing.T, cred *syscall.Credential, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "pathtrace"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("run pathtrace: %v", err)
	return -1, ""
}

// Mistakes on the command line: exit 2 and a message that says what is wrong.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"follow"}, "follow needs a SELECTOR"},
		{[]string{"follow", "1.2.3"}, `selector "1.2.3": not an IP address`},
		{[]string{"follow", "10.0.0.1:99999"}, "port must be 1-65535"},
		{[]string{"follow", "--proto", "sctp", "10.0.0.1"}, `protocol "sctp"`},
		{[]string{"follow", "--bogus", "10.0.0.1"}, "unknown flag: --bogus"},
		{[]string{"follow", "--attach-mode", "xdp", "10.0.0.1"}, `--attach-mode "xdp"`},
		{[]string{"follow", "--drop-hook", "kprobe", "10.0.0.1"}, `--drop-hook "kprobe"`},
		{[]string{"follow", "--ring-size", "5000", "10.0.0.1"}, "--ring-size 5000"},
		{[]string{"follow", "--snaplen", "10", "10.0.0.1"}, "--snaplen 10"},
		{[]string{"follow", "--timeout", "0s", "10.0.0.1"}, "--timeout must be positive"},
		{[]string{"follow", "--vxlan-ports", "0", "10.0.0.1"}, "--vxlan-ports: 0 is not a port"},
		{[]string{"follow", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, "at most 8"},
		{[]string{"diagnose"}, "follow needs a SELECTOR"},
		{[]string{"diagnose", "--duration", "0s", "10.0.0.1"}, "diagnose needs a --duration above 0"},
		{[]string{"diagnose", "--pcap", "-", "10.0.0.1"}, "give --pcap a file"},
		{[]string{"diagnose", "1.2.3"}, `selector "1.2.3": not an IP address`},
	} {
		code, stderr := runBin(t, nil, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("pathtrace %v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// Errors found at run time: exit 1, a message naming what is missing, nothing attached.
func TestRuntimeErrors(t *testing.T) {
	needLab(t)
	ns := labPrefix + "-node-a"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--netns", ns, "--ifaces", "nope*,wlan?", "10.0.0.1"}, "no interface matches nope*,wlan?"},
		{[]string{"--netns", "no-such-netns", "10.0.0.1"}, "open network namespace /run/netns/no-such-netns"},
		{[]string{"--netns", ns, "--ready-file", "/nonexistent-dir/ready", "10.0.0.1"}, "--ready-file /nonexistent-dir/ready: cannot write"},
	} {
		code, stderr := runBin(t, nil, append([]string{"follow"}, tc.args...)...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("pathtrace follow %v: exit %d, stderr %q; want exit 1 and %q", tc.args, code, stderr, tc.want)
		}
	}
	// Without privileges.
	code, stderr := runBin(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "follow", "--netns", ns, "10.0.0.1")
	if code != 1 || !strings.Contains(stderr, "not permitted: run as root or grant CAP_BPF") {
		t.Errorf("as nobody: exit %d, stderr %q", code, stderr)
	}
	assertNothingLeft(t)
}

var summaryRE = regexp.MustCompile(`(\d+) events received, lost: (\d+) in the kernel \(ring buffer full; hops: ([^;]*); drops: ([^)]*)\), (\d+) in the user queue`)

// Events the kernel cannot deliver are counted per CPU and reported. The follower is
// stopped (SIGSTOP) while traffic flows, so its one-page ring buffer must overflow.
func TestKernelLossIsCounted(t *testing.T) {
	needLab(t)
	f := startFollow(t, "node-a", "--ring-size", strconv.Itoa(os.Getpagesize()), "--proto", "udp", "10.244.2.57:8080")
	f.cmd.Process.Signal(syscall.SIGSTOP)
	pod(t, "a-api", "udp", "10.244.2.57:8080", "--count", "100", "--size", "100", "--wait", "500ms")
	f.cmd.Process.Signal(syscall.SIGCONT)
	js := f.stop(t)
	m := summaryRE.FindStringSubmatch(f.stderr.String())
	if m == nil {
		t.Fatalf("no loss summary in stderr:\n%s", f.stderr.String())
	}
	received, _ := strconv.Atoi(m[1])
	lost, _ := strconv.Atoi(m[2])
	perCPU := 0
	for _, part := range strings.Fields(m[3] + " " + m[4]) {
		_, v, _ := strings.Cut(part, "=")
		n, _ := strconv.Atoi(v)
		perCPU += n
	}
	// 100 requests and 100 replies, 4 hops each on node-a: 800 events; a page holds ~12.
	if lost < 700 || perCPU != lost {
		t.Errorf("kernel lost %d (per-CPU sum %d), want at least 700 and equal", lost, perCPU)
	}
	if received+lost < 800 {
		t.Errorf("received %d + lost %d < 800 events sent", received, lost)
	}
	if !strings.Contains(f.stderr.String(), "WARNING:") || !strings.Contains(f.stderr.String(), "events lost") {
		t.Errorf("no live warning about the loss:\n%s", f.stderr.String())
	}
	t.Logf("%d journeys, %d events received, %d lost in the kernel", len(js), received, lost)
}
