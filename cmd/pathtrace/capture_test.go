package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needTshark fails under CI (and skips elsewhere) when tshark is missing.
func needTshark(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		if mustRun() {
			t.Fatal("needs tshark (apt-get install tshark)")
		}
		t.Skip("needs tshark (apt-get install tshark)")
	}
}

// tsharkRows reads a capture with tshark and returns one row of the fields per packet.
// VXLAN on flannel's port is decoded, so the inner packet's fields show.
func tsharkRows(t *testing.T, file string, fields ...string) ([][]string, int) {
	t.Helper()
	args := []string{"-r", file, "-d", "udp.port==8472,vxlan", "-T", "fields", "-E", "separator=|", "-E", "occurrence=l"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command("tshark", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	code := 0
	if err := cmd.Run(); err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("tshark: %v", err)
		}
		code = ee.ExitCode()
	}
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		if line != "" {
			rows = append(rows, strings.Split(line, "|"))
		}
	}
	if code != 0 {
		t.Logf("tshark -r %s exited %d: %s", file, code, errb.String())
	}
	return rows, code
}

// follow --pcap writes every hop's packet of the followed flows; tshark reads the file,
// and it holds what the journeys say: one packet per hop and per drop, at the hops the
// journeys name, with their 5-tuples and comments. A tcpdump on one of the pod's veths
// in the same run sees the same packets, with the same lengths.
func TestFollowPcap(t *testing.T) {
	needLab(t)
	needTshark(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "follow.pcapng")
	dump := filepath.Join(dir, "tcpdump.pcap")

	td := exec.Command("ip", "netns", "exec", labPrefix+"-node-a", "tcpdump", "-i", "veth1a23", "-U", "-n", "-w", dump,
		"host 10.244.2.57 and (tcp port 8080 or udp port 8080)")
	var tdErr bytes.Buffer
	td.Stderr = &tdErr
	if err := td.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { td.Process.Kill(); td.Wait() })
	for start := time.Now(); !strings.Contains(tdErr.String(), "listening on"); time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("tcpdump did not start: %s", tdErr.String())
		}
	}

	// An old file of that name, with a second name: replaced, not written through.
	old := filepath.Join(dir, "old.pcapng")
	os.WriteFile(file, []byte("old bytes"), 0o644)
	if err := os.Link(file, old); err != nil {
		t.Fatal(err)
	}

	f := startFollow(t, "node-a", "--pcap", file, "10.244.2.57:8080")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil || !strings.Contains(out, "ok api-b") {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	if out, err := pod(t, "a-api", "udp", "10.244.2.57:8080", "--count", "10", "--wait", "200ms"); err != nil {
		t.Fatalf("udp: %v %s", err, out)
	}
	js := f.stop(t)
	time.Sleep(200 * time.Millisecond)
	td.Process.Signal(syscall.SIGINT)
	td.Wait()

	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v, want mode 0600", file, st, err)
	}
	if b, _ := os.ReadFile(old); string(b) != "old bytes" {
		t.Errorf("the old file's other name holds %d bytes: it was written through", len(b))
	}

	// What the journeys say the file must hold.
	wantPackets, veth := 0, 0
	wantIfaces := map[string]bool{}
	for _, j := range js {
		if j.Drop != nil {
			wantIfaces["node-a/kfree_skb"] = true
		}
		for _, h := range j.Hops {
			wantPackets++
			name := "node-a/" + h.Ifname
			if h.Kind == "netfilter" {
				name = "node-a/nf:" + h.Hook + "/" + h.Priority
			}
			wantIfaces[name] = true
			if h.Ifname == "veth1a23" && h.Kind != "netfilter" {
				veth++
			}
		}
		if j.Drop != nil {
			wantPackets++
		}
	}
	if len(js) < 10 || veth < 10 {
		t.Fatalf("too few journeys to compare (%d, %d at veth1a23):\n%s", len(js), veth, f.stderr.String())
	}
	rows, code := tsharkRows(t, file, "frame.interface_name", "frame.packet_flags_direction", "ip.src", "ip.dst",
		"tcp.srcport", "udp.srcport", "frame.len", "frame.comment")
	if code != 0 || len(rows) != wantPackets {
		t.Fatalf("tshark (exit %d) read %d packets, the journeys have %d hops and drops\n%s", code, len(rows), wantPackets, f.stderr.String())
	}
	var vethCount, vethBytes int
	for _, r := range rows {
		if !wantIfaces[r[0]] {
			t.Errorf("packet on interface %q, which no journey names", r[0])
		}
		if r[2] != "10.244.1.23" && r[2] != "10.244.2.57" && !strings.HasPrefix(r[2], "10.0.0.") {
			t.Errorf("packet from %s: not the followed flow's", r[2])
		}
		if !strings.Contains(r[7], r[0]) || !strings.Contains(r[7], "µs") {
			t.Errorf("comment %q does not name the hop %s and its offset", r[7], r[0])
		}
		if r[0] == "node-a/veth1a23" {
			if r[1] != "0x00000001" && r[1] != "0x00000002" {
				t.Errorf("veth packet without a direction flag: %q", r[1])
			}
			n, _ := strconv.Atoi(r[6])
			vethCount++
			vethBytes += n
		}
	}
	last := rows[len(rows)-1][7]
	if !strings.Contains(strings.Join(flatten(rows, 7), "\n"), "verdict ") {
		t.Errorf("no packet comment carries a verdict; last: %q", last)
	}

	// tcpdump on veth1a23, the same time: the same packets and bytes.
	td2, code := tsharkRows(t, dump, "frame.len")
	if code != 0 {
		t.Fatalf("tshark cannot read tcpdump's file")
	}
	dumpBytes := 0
	for _, r := range td2 {
		n, _ := strconv.Atoi(r[0])
		dumpBytes += n
	}
	if vethCount != len(td2) || vethBytes != dumpBytes {
		t.Errorf("veth1a23: pathtrace wrote %d packets, %d bytes; tcpdump captured %d packets, %d bytes", vethCount, vethBytes, len(td2), dumpBytes)
	}
	t.Logf("%d journeys, %d packets in the file; veth1a23: pathtrace %d packets %d bytes, tcpdump %d packets %d bytes",
		len(js), len(rows), vethCount, vethBytes, len(td2), dumpBytes)
}

func flatten(rows [][]string, col int) []string {
	var s []string
	for _, r := range rows {
		s = append(s, r[col])
	}
	return s
}

// --pcap - writes the pcapng to standard output, for a pipe into tshark, and the
// journeys to standard error.
func TestFollowPcapStdout(t *testing.T) {
	needLab(t)
	needTshark(t)
	f := startFollow(t, "node-a", "--pcap", "-", "10.244.2.57:8080")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	time.Sleep(600 * time.Millisecond)
	f.cmd.Process.Signal(syscall.SIGINT)
	if err := <-f.done; err != nil {
		t.Fatalf("follow: %v\n%s", err, f.stderr.String())
	}
	cmd := exec.Command("tshark", "-r", "-", "-T", "fields", "-e", "frame.interface_name")
	cmd.Stdin = bytes.NewReader(f.stdout.Bytes())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r - on follow's standard output: %v", err)
	}
	if !strings.Contains(string(out), "node-a/veth1a23") || !strings.Contains(f.stderr.String(), "10.244.1.23:") {
		t.Errorf("tshark saw %q; follow's standard error:\n%s", out, f.stderr.String())
	}
}

// Through an agent, follow --pcap gets the agent's packets.
func TestAgentFollowPcap(t *testing.T) {
	needLab(t)
	needTshark(t)
	file := filepath.Join(t.TempDir(), "f.pcapng")
	na, nb := startAgent(t, "node-a"), startAgent(t, "node-b")
	f := agentFollow(t, []*agentProc{na, nb}, "--pcap", file, "10.244.2.57:8080")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	js := f.stop(t)
	hops := 0
	for _, j := range js {
		hops += len(j.Hops)
		if j.Drop != nil {
			hops++
		}
	}
	rows, code := tsharkRows(t, file, "frame.interface_name")
	nodes := map[string]int{}
	for _, r := range rows {
		nodes[strings.Split(r[0], "/")[0]]++
	}
	if code != 0 || len(rows) != hops || nodes["node-a"] == 0 || nodes["node-b"] == 0 {
		t.Errorf("tshark (exit %d) read %d packets (by node %v), the journeys have %d hops\n%s", code, len(rows), nodes, hops, f.stderr.String())
	}
}

// The agent keeps every flow's recent packets and writes a flagged flow's to a file
// (in a directory it first closes to other users):
// datagrams that went through before a policy drop, then the dropped one with the
// kernel's reason in its comment. Killed while the file is open, the agent leaves it
// readable.
func TestAgentPcapDir(t *testing.T) {
	needLab(t)
	needTshark(t)
	// As the kubelet makes a missing hostPath directory: 0755. The agent closes it.
	dir := pcapDir(t)
	os.Chmod(dir, 0o755)
	a := startAgent(t, "node-b", "--pcap-dir", dir, "--pcap-post-age", "30s")
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("--pcap-dir of mode 0755: now %v %v, want 0750", st, err)
	}
	if want := "pcap: directory " + dir + " had mode 0755, readable by other users: made it 0750"; !strings.Contains(a.stderr.String(), want) {
		t.Errorf("the agent's log does not say %q:\n%s", want, a.stderr.String())
	}
	rule := []string{"FORWARD", "-d", "10.244.1.23/32", "-p", "udp", "--dport", "8080", "-j", "DROP"}

	// One flow: 6 datagrams to api-a, 150 ms apart (it answers them); the rule goes in
	// after the third.
	send := exec.Command("ip", "netns", "exec", labPrefix+"-b-api", filepath.Join(binDir, "labpod"),
		"udp", "10.244.1.23:8080", "--count", "6", "--interval", "150ms")
	if err := send.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(375 * time.Millisecond)
	inNode(t, "node-b", append([]string{"iptables", "-w", "-I"}, rule...)...)
	t.Cleanup(func() {
		exec.Command("ip", append([]string{"netns", "exec", labPrefix + "-node-b", "iptables", "-w", "-D"}, rule...)...).Run()
	})
	send.Wait()

	file := waitCapture(t, a, dir, "*_udp_10.244.2.57-*_10.244.1.23-8080_drop.pcapng")
	// A SYN the policy drops: its file holds the SYN at the hops before the drop, then
	// as the kernel freed it, with the reason.
	fault(t, "policy")
	if out, err := pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "300ms"); err == nil {
		t.Fatalf("SYN got through the policy: %s", out)
	}
	synFile := waitCapture(t, a, dir, "*_tcp_10.244.2.57-*_10.244.1.42-6379_drop.pcapng")
	for _, f := range []string{file, synFile} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, st, err)
		}
	}

	// Killed with the files open (their post window is 30 s): readable to the last block.
	time.Sleep(300 * time.Millisecond)
	if got := sum(a.scrape(t), "pathtrace_capture_files_total"); got < 1 {
		t.Errorf("pathtrace_capture_files_total %v", got)
	}
	a.cmd.Process.Kill()
	<-a.done

	rows, code := tsharkRows(t, file, "frame.interface_name", "ip.src", "udp.srcport", "ip.dst", "udp.dstport", "data.data", "frame.comment")
	if code != 0 {
		t.Errorf("tshark could not read the file of a killed agent to its end (exit %d)", code)
	}
	var before, dropped int
	for _, r := range rows {
		if (r[3] != "10.244.1.23" || r[4] != "8080") && (r[1] != "10.244.1.23" || r[2] != "8080") {
			t.Errorf("packet of another flow in the file: %v", r)
		}
		if strings.Contains(r[6], "kfree_skb NETFILTER_DROP") {
			dropped++
		} else if dropped == 0 && r[0] == "node-b/eth0" && r[3] == "10.244.1.23" {
			before++ // left the node before the rule came
		}
	}
	if before < 2 || dropped < 1 {
		t.Errorf("want the datagrams that left before the drop (%d, want >= 2) and the dropped one (%d):\n%v", before, dropped, rows)
	}
	t.Logf("%s: %d packets, %d forwarded before the drop, %d drops", filepath.Base(file), len(rows), before, dropped)

	rows, code = tsharkRows(t, synFile, "frame.interface_name", "tcp.flags.str", "tcp.dstport", "frame.comment")
	var hops []string
	for _, r := range rows {
		if !strings.Contains(r[1], "S") || r[2] != "6379" {
			t.Errorf("not the SYN to 6379: %v", r)
		}
		hops = append(hops, r[0])
		if r[0] == "node-b/kfree_skb" {
			if !strings.Contains(r[3], "NETFILTER_DROP") {
				t.Errorf("the dropped SYN's comment does not name the drop reason: %q", r[3])
			}
			break
		}
	}
	if code != 0 || strings.Join(hops, " ") != "node-b/veth2b57 node-b/cni0 node-b/kfree_skb" {
		t.Errorf("dropped SYN's file (tshark exit %d): hops %v, want veth2b57, cni0, then kfree_skb", code, hops)
	}
	assertNoLeak(t)
}

// waitCapture waits up to 5 s for the agent to write the one file in dir that matches
// pattern, and returns its path.
func waitCapture(t *testing.T, a *agentProc, dir, pattern string) string {
	t.Helper()
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if m, _ := filepath.Glob(filepath.Join(dir, pattern)); len(m) == 1 {
			return m[0]
		}
		if time.Since(start) > 5*time.Second {
			ls, _ := os.ReadDir(dir)
			t.Fatalf("no capture file %s in %s: %v\n%s", pattern, dir, ls, a.stderr.String())
		}
	}
}

// A capture directory that is missing, not a directory or not writable is an error at
// start, with nothing attached; so is one other users may read or write, or that
// another user owns, with the chmod or chown that fixes it.
func TestAgentPcapDirErrors(t *testing.T) {
	needLab(t)
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o644)
	// Root writes anywhere but on a read-only file system.
	readOnly := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0700", "pathtrace-test", readOnly).CombinedOutput(); err != nil {
		t.Fatalf("mount a read-only tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", readOnly).Run() })
	writable, others := pcapDir(t), pcapDir(t)
	os.Chmod(writable, 0o777|os.ModeSticky)
	os.Chown(others, 65534, 65534)
	for _, tc := range []struct{ dir, want string }{
		{filepath.Join(t.TempDir(), "missing"), "does not exist: create it first (mkdir -m 0700 "},
		{notDir, "is not a directory"},
		{readOnly, "is not writable"},
		{writable, "has mode 0777: other users may write in it, and its files name flows and hold packets: chmod o-rwx " + writable + " (0700 is best), after checking what others left in it"},
		{others, "belongs to uid 65534, not to the agent's (0), who could replace its files: chown 0 " + others},
	} {
		a := launchAgent(t, "node-b", freeAddr(t), filepath.Join(t.TempDir(), "b.sock"), "--pcap-dir", tc.dir)
		if code := a.exitCode(t, 20*time.Second); code != 1 || !strings.Contains(a.stderr.String(), "--pcap-dir: pcap directory "+tc.dir+" "+tc.want) {
			t.Errorf("--pcap-dir %s: exit %d, want 1 with %q:\n%s", tc.dir, code, tc.want, a.stderr.String())
		}
		if entries, _ := os.ReadDir(tc.dir); len(entries) != 0 {
			t.Errorf("--pcap-dir %s: files left: %v", tc.dir, entries)
		}
	}
	assertNoLeak(t)
}

// pcapDir is a new directory the agent accepts for --pcap-dir: 0700 (t.TempDir makes
// its directories 0777 less the umask).
func pcapDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// follow --pcap and --ready-file write no file through a link: a symlink at the name
// (one to a file of root's, one dangling) is refused before anything is attached, and
// its target stays as it was.
func TestFollowPcapLinks(t *testing.T) {
	needLab(t)
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("root's file"), 0o644)
	link, dangling := filepath.Join(dir, "link"), filepath.Join(dir, "dangling")
	os.Symlink(victim, link)
	os.Symlink(filepath.Join(dir, "created"), dangling)
	for _, args := range [][]string{{"--pcap", link}, {"--pcap", dangling}, {"--ready-file", link}, {"--ready-file", dangling}} {
		want := args[1] + " is a symbolic link: pathtrace follows no link"
		code, stderr := runBin(t, nil, append([]string{"follow", "--netns", labPrefix + "-node-a", "--count", "1"}, append(args, "10.244.2.57:8080")...)...)
		if code != 1 || !strings.Contains(stderr, args[0]) || !strings.Contains(stderr, want) {
			t.Errorf("follow %v: exit %d, stderr %q; want exit 1 and %q", args, code, stderr, want)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "root's file" {
		t.Errorf("the link's target holds %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "created")); err == nil {
		t.Error("the dangling link's target was created")
	}
	assertNothingLeft(t)
}

// Full-packet mode: with --snaplen above 256 the kernel sends events as long as their
// packets, and the file holds whole 1400-byte datagrams at every hop.
func TestFollowPcapFullPackets(t *testing.T) {
	needLab(t)
	needTshark(t)
	file := filepath.Join(t.TempDir(), "full.pcapng")
	f := startFollow(t, "node-a", "--snaplen", "9216", "--ring-size", "16777216", "--pcap", file, "--proto", "udp", "10.244.2.57:8080")
	if out, err := pod(t, "a-api", "udp", "10.244.2.57:8080", "--count", "5", "--size", "1400", "--wait", "300ms"); err != nil {
		t.Fatalf("udp: %v %s", err, out)
	}
	js := f.stop(t)
	rows, code := tsharkRows(t, file, "frame.interface_name", "frame.len", "frame.cap_len", "udp.length", "ip.src")
	if code != 0 || len(rows) == 0 {
		t.Fatalf("tshark (exit %d) read %d packets; %d journeys\n%s", code, len(rows), len(js), f.stderr.String())
	}
	whole := map[string]int{}
	for _, r := range rows {
		if r[1] != r[2] {
			t.Errorf("%s: %s bytes captured of %s", r[0], r[2], r[1])
		}
		if r[3] == "1408" {
			whole[r[0]]++
		}
	}
	// Each of the 5 datagrams, whole, leaving the pod and going out of the node
	// (inside VXLAN on eth0).
	for _, hop := range []string{"node-a/veth1a23", "node-a/eth0"} {
		if whole[hop] < 5 {
			t.Errorf("%s: %d whole 1400-byte datagrams in the file, want 5 (%v)", hop, whole[hop], whole)
		}
	}
}

// A full disk: the capture stops (its file cut back to whole blocks), the condition is
// counted and logged once, and tracing and metrics go on. The capture directory is a
// 64 KiB tmpfs the test mounts.
func TestAgentPcapDiskFull(t *testing.T) {
	needLab(t)
	needTshark(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "pathtrace-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	a := startAgent(t, "node-b", "--pcap-dir", dir, "--pcap-snaplen", "9216", "--pcap-max-files", "10000")
	rule := []string{"FORWARD", "-d", "10.244.1.23/32", "-p", "udp", "--dport", "8080", "-j", "DROP"}
	inNode(t, "node-b", append([]string{"iptables", "-w", "-I"}, rule...)...)
	t.Cleanup(func() {
		exec.Command("ip", append([]string{"netns", "exec", labPrefix + "-node-b", "iptables", "-w", "-D"}, rule...)...).Run()
	})
	nfDrops := func() float64 { return sum(a.scrape(t), "pathtrace_drops_total", "reason", nfDrop) }
	before := nfDrops()
	// 1400-byte datagrams, each written at three hops: 64 KiB fill after a dozen.
	if out, err := pod(t, "b-api", "udp", "10.244.1.23:8080", "--count", "60", "--size", "1400", "--interval", "5ms"); err != nil {
		t.Fatalf("udp: %v %s", err, out)
	}
	time.Sleep(time.Second)
	ss := a.scrape(t)
	if got := sum(ss, "pathtrace_capture_write_errors_total"); got < 1 {
		t.Errorf("pathtrace_capture_write_errors_total %v after filling the disk\n%s", got, a.stderr.String())
	}
	if got := sum(ss, "pathtrace_drops_total", "reason", nfDrop) - before; got != 60 {
		t.Errorf("the agent counted %v NETFILTER_DROP, want 60: tracing must go on", got)
	}
	if n := strings.Count(a.stderr.String(), "no space left on device"); n != 1 {
		t.Errorf("the full disk logged %d times, want once:\n%s", n, a.stderr.String())
	}
	// More drops on the full disk: still counted, still logged once.
	if out, err := pod(t, "b-api", "udp", "10.244.1.23:8080", "--count", "10", "--size", "1400"); err != nil {
		t.Fatalf("udp: %v %s", err, out)
	}
	time.Sleep(500 * time.Millisecond)
	if got := nfDrops() - before; got != 70 {
		t.Errorf("after the disk filled: %v NETFILTER_DROP counted, want 70", got)
	}
	a.terminate(t)
	if n := strings.Count(a.stderr.String(), "no space left on device"); n != 1 {
		t.Errorf("the full disk logged %d times, want once:\n%s", n, a.stderr.String())
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pcapng"))
	if len(files) == 0 {
		t.Fatalf("no capture file on the full disk")
	}
	for _, f := range files {
		if rows, code := tsharkRows(t, f, "frame.interface_name"); code != 0 || len(rows) == 0 {
			t.Errorf("%s: tshark exit %d, %d packets: a file cut by a full disk must end with whole blocks", f, code, len(rows))
		}
	}
	assertNoLeak(t)
}
