package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/exporter"
)

// The lab's faults the diagnosis adds (mtu, hairpin, neighbour), each diagnosed with
// exactly its cause and its evidence; pathtrace diagnose's report. The others (policy,
// rpfilter, blackhole, slow, nomasq, closed port, underlay, conntrack) are checked in
// their own tests (e2e_test.go, join_test.go, conntrack_test.go).

// causes lists the causes of the journeys that have a diagnosis.
func causes(js []exporter.JourneyJSON) map[string]int {
	out := map[string]int{}
	for _, j := range js {
		if j.Diagnosis != nil {
			out[j.Diagnosis.Cause]++
		}
	}
	return out
}

// Underlay MTU 1400 under flannel.1's 1450 with DF inherited: a full-size segment
// does not fit once VXLAN adds its 50 bytes and dies in ip_fragment; the ICMP the
// node sends goes to its own tunnel address, never to the pod.
func TestDiagnoseMTU(t *testing.T) {
	needLab(t)
	fault(t, "mtu")
	f := startFollow(t, "node-a", "10.244.2.57", "10.0.0.11")
	pod(t, "a-api", "tcp", "10.244.2.57:8080", "--timeout", "2s", "--msg", strings.Repeat("x", 3000))
	js := f.stop(t)
	var mtu []exporter.JourneyJSON
	for _, j := range js {
		if d := j.Diagnosis; d != nil && d.Cause == "mtu" {
			mtu = append(mtu, j)
			continue
		}
		// Anything else diagnosed is what the fault cannot explain alone: a GSO
		// packet lost before its segments died, said to be unknown; never another
		// fault's cause.
		if d := j.Diagnosis; d != nil && d.Cause != "unknown" {
			t.Errorf("journey %s (%s) diagnosed %s, want mtu or unknown: %+v", j.ID, j.Summary, d.Cause, d)
		}
	}
	if len(mtu) == 0 {
		t.Fatalf("no journey diagnosed mtu; causes %v:\n%s", causes(js), dump(js))
	}
	for _, j := range mtu {
		wantDiagnosis(t, "mtu drop", j.Diagnosis, "mtu", "mtu_chain=flannel.1 1450 (vxlan, +50) → eth0 1400", "overhead=flannel.1 adds 50 bytes",
			"packet=DF set", "icmp")
		if d := j.Diagnosis; d != nil && (!strings.Contains(d.Fix, "to 1350") || !strings.Contains(d.Fix, "TCPMSS")) {
			t.Errorf("mtu fix %q: want the MTU that fits (1350) and an MSS clamp", d.Fix)
		}
	}
	// The node's ICMP "fragmentation needed" (to itself) is evidence, seen or not.
	if v := mtu[0].Diagnosis.Value("icmp"); !strings.Contains(v, "black hole") {
		t.Errorf("icmp evidence %q: the pod never hears of the smaller MTU", v)
	}
	t.Logf("%d journeys diagnosed mtu: %s", len(mtu), mtu[0].Diagnosis.Summary)
}

// A pod reaching itself through the Service VIP, without the hairpin masquerade and
// with hairpin mode off: DNATed back to itself, the bridge will not send the frame
// back out of its port.
func TestDiagnoseHairpin(t *testing.T) {
	needLab(t)
	fault(t, "hairpin")
	f := startFollow(t, "node-b", "--proto", "tcp", "10.96.12.34:80", "10.244.2.57:8080")
	failed := 0
	for i := 0; i < 20 && failed < 2; i++ {
		// The VIP picks api-b itself half of the time.
		if _, err := pod(t, "b-api", "tcp", "10.96.12.34:80", "--timeout", "300ms"); err != nil {
			failed++
		}
	}
	js := f.stop(t)
	if failed == 0 {
		t.Fatalf("no connection from api-b to the VIP failed in 20 tries")
	}
	hp := 0
	for _, j := range js {
		d := j.Diagnosis
		if d == nil {
			continue
		}
		switch {
		case d.Cause == "hairpin":
			hp++
			wantDiagnosis(t, "hairpin", d, "hairpin", "flow=DNAT to 10.244.2.57:8080: the client itself", "snat=none", "hairpin_mode=off on veth2b57", "masquerade rules")
		case d.Cause != "unknown":
			t.Errorf("journey %s diagnosed %s, want hairpin: %+v", j.Summary, d.Cause, d)
		}
	}
	if hp == 0 {
		t.Fatalf("no journey diagnosed hairpin; causes %v:\n%s", causes(js), dump(js))
	}
}

// flannel lost a peer: node-a's VXLAN FDB has no entry for node-b's VTEP MAC, so
// flannel.1 cannot send; the neighbour entry is there, the FDB entry is not.
func TestDiagnoseNeighbour(t *testing.T) {
	needLab(t)
	fault(t, "neighbour")
	f := startFollow(t, "node-a", "10.244.2.57")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080", "--timeout", "500ms"); err == nil {
		t.Fatalf("client got through without the FDB entry: %s", out)
	}
	js := f.stop(t)
	syn := find(js, "S", "10.244.1.23:", "10.244.2.57:8080")
	if len(syn) == 0 {
		t.Fatalf("no SYN journey:\n%s", dump(js))
	}
	for _, j := range syn {
		wantDiagnosis(t, "neighbour", j.Diagnosis, "neighbour", "route=10.244.2.0/24 via 10.244.2.0 dev flannel.1",
			"neighbour=10.244.2.0 on flannel.1: lladdr 0a:f1:00:00:00:02", "fdb=no entry for 0a:f1:00:00:00:02 on flannel.1")
		if d := j.Diagnosis; d != nil && !strings.Contains(d.Fix, "bridge fdb append 0a:f1:00:00:00:02 dev flannel.1") {
			t.Errorf("neighbour fix %q: want the FDB entry to write", d.Fix)
		}
	}
}

// pathtrace diagnose follows for --duration and prints one report per failing flow:
// the segment, the cause, the evidence and the fix; none for a healthy flow.
func TestDiagnoseCommand(t *testing.T) {
	needLab(t)
	run := func(args ...string) (string, string) {
		t.Helper()
		ready := filepath.Join(t.TempDir(), "ready")
		cmd := exec.Command(binDir+"/pathtrace", append([]string{"diagnose", "--netns", labPrefix + "-node-b", "--node", "node-b",
			"--duration", "4s", "--ready-file", ready}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				<-done
			}
		})
		waitReady(t, ready, done, func() string { return fmt.Sprintf("pathtrace diagnose %v", args) }, stderr.String)
		pod(t, "a-api", "tcp", "10.244.2.57:8080", "--timeout", "500ms")
		if err := <-done; err != nil {
			t.Fatalf("pathtrace diagnose %v: %v\n%s", args, err, stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	out, errOut := run("10.244.1.23")
	if !strings.Contains(out, "no failing flow") {
		t.Errorf("healthy: want no failing flow, got:\n%s\n%s", out, errOut)
	}
	fault(t, "rpfilter")
	out, errOut = run("10.244.1.23")
	for _, want := range []string{
		"1 failing flow(s)",
		"tcp 10.244.1.23 → 10.244.2.57:8080 on node-b: dropped",
		"segment: pod → veth → bridge → netfilter → [routing] → tunnel",
		"cause: rp_filter [routing]: strict reverse-path filter on flannel.1: the route back to 10.244.1.23 leaves via eth0",
		"evidence: rp_filter: 1 (strict) on flannel.1",
		"evidence: route back: to 10.244.1.23: 10.244.1.23 via 10.0.0.11 dev eth0",
		"fix: route 10.244.1.23 back through flannel.1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rpfilter report lacks %q:\n%s\n%s", want, out, errOut)
		}
	}
	out, errOut = run("--json", "10.244.1.23")
	var e exporter.ReportEntry
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &e); err != nil {
		t.Fatalf("diagnose --json: want one line, got %v:\n%s\n%s", err, out, errOut)
	}
	if e.Kind != "diagnosis" || e.Src != "10.244.1.23" || e.Dst != "10.244.2.57:8080" || e.Count < 1 {
		t.Errorf("diagnose --json entry %+v", e)
	}
	wantDiagnosis(t, "diagnose --json", e.Diagnosis, "rp_filter", "rp_filter", "route back")
}
