package main

import (
	"errors"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/exporter"
	"github.com/pathtrace/pathtrace/tracer"
)

var locationRE = regexp.MustCompile(`^[A-Za-z0-9_.]+\+0x[0-9a-f]+$`)

// A cross-node TCP connection: each node shows the SYN's hops in order, and both nodes
// give the packet the same identity.
func TestCrossNodeTCP(t *testing.T) {
	needLab(t)
	modes := []string{"tcx", "clsact"}
	if !kernTCX() {
		// Before 6.6: asked for tcx, follow says what the kernel lacks and leaves nothing.
		out, err := exec.Command(binDir+"/pathtrace", "follow", "--netns", labPrefix+"-node-a", "--attach-mode", "tcx", "10.244.2.57").CombinedOutput()
		if code := exitCode(err); code != 1 || !strings.Contains(string(out), "tcx not supported") {
			t.Errorf("follow --attach-mode tcx without tcx: exit %d, want 1 naming tcx:\n%s", code, out)
		}
		modes = modes[1:]
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			a := startFollow(t, "node-a", "--attach-mode", mode, "--proto", "tcp", "10.244.2.57:8080")
			b := startFollow(t, "node-b", "--attach-mode", mode, "--proto", "tcp", "10.244.2.57:8080")
			if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil || !strings.Contains(out, "ok api-b") {
				t.Fatalf("client: %v %s", err, out)
			}
			ja, jb := a.stop(t), b.stop(t)
			synA := find(ja, "S", "10.244.1.23:", "10.244.2.57:8080")
			synB := find(jb, "S", "10.244.1.23:", "10.244.2.57:8080")
			if len(synA) != 1 || len(synB) != 1 {
				t.Fatalf("want one SYN journey per node, got node-a:\n%snode-b:\n%s", dump(ja), dump(jb))
			}
			wantA := []string{"veth1a23 ingress", "cni0 ingress", "flannel.1 egress", "eth0 egress"}
			wantB := []string{"eth0 ingress", "flannel.1 ingress", "cni0 egress", "veth2b57 egress"}
			if got := hopNames(synA[0]); !slices.Equal(got, wantA) || synA[0].Verdict != "forwarded" {
				t.Errorf("node-a SYN: hops %v verdict %s, want %v forwarded", got, synA[0].Verdict, wantA)
			}
			if got := hopNames(synB[0]); !slices.Equal(got, wantB) || synB[0].Verdict != "delivered" {
				t.Errorf("node-b SYN: hops %v verdict %s, want %v delivered", got, synB[0].Verdict, wantB)
			}
			if h := hop(synA[0], "eth0 egress"); h == nil || h.VXLAN == nil || h.VXLAN.VNI != 1 || h.VXLAN.Src != "10.0.0.11" || h.VXLAN.Dst != "10.0.0.12" {
				t.Errorf("node-a eth0 egress: %+v, want vxlan vni 1 10.0.0.11→10.0.0.12", h)
			}
			// The netfilter hooks a forwarded packet crosses, in order, with its state.
			wantNF := nfHops("PREROUTING first", "PREROUTING last", "cni0 ingress", "FORWARD first", "FORWARD last", "POSTROUTING first", "POSTROUTING last", "flannel.1 egress")
			if got := allHops(synA[0]); len(got) < len(wantNF)+1 || !slices.Equal(got[1:len(wantNF)+1], wantNF) {
				t.Errorf("node-a SYN hops %v, want %v after veth1a23 ingress", got, wantNF)
			}
			if h := hop(synA[0], nfHop("FORWARD first")); h == nil || h.CT == nil || h.CT.State != "new" || h.CT.Dir != "original" {
				t.Errorf("node-a FORWARD: conntrack %+v, want new, original", h)
			}
			if synA[0].ID != synB[0].ID {
				t.Errorf("the SYN has id %s on node-a and %s on node-b", synA[0].ID, synB[0].ID)
			}
			for i, h := range synA[0].Hops {
				if i > 0 && h.TNs < synA[0].Hops[i-1].TNs {
					t.Errorf("node-a hops out of time order: %+v", synA[0].Hops)
				}
			}
			// The SYN-ACK comes back the other way on both nodes.
			if len(find(ja, "S.", "10.244.2.57:8080", "10.244.1.23:")) != 1 {
				t.Errorf("node-a: no SYN-ACK journey:\n%s", dump(ja))
			}
			// A healthy connection: no journey on either node carries a diagnosis.
			for _, j := range append(ja, jb...) {
				if j.Diagnosis != nil {
					t.Errorf("healthy journey %s on %s (%s) has a diagnosis: %+v", j.ID, j.Node, j.Verdict, j.Diagnosis)
				}
			}
		})
	}
	assertNothingLeft(t)
}

// A FORWARD rule that drops one port: the SYN dies in netfilter and says so.
func TestPolicyDrop(t *testing.T) {
	needLab(t)
	fault(t, "policy")
	hooks := []string{"tp_btf", "raw_tp", "raw_tp_noreason"}
	if kern.Features.TPBTF != "" || !kernReasons() {
		// tp_btf/kfree_skb with its reason argument needs 5.17: asked for, follow says so.
		out, err := exec.Command(binDir+"/pathtrace", "follow", "--netns", labPrefix+"-node-b", "--drop-hook", "tp_btf", "10.244.1.42").CombinedOutput()
		if code := exitCode(err); code != 1 || !strings.Contains(string(out), "tp_btf") {
			t.Errorf("follow --drop-hook tp_btf without it: exit %d, want 1 naming tp_btf:\n%s", code, out)
		}
		hooks = hooks[1:]
	}
	for _, hook := range hooks {
		t.Run(hook, func(t *testing.T) {
			f := startFollow(t, "node-b", "--drop-hook", hook, "10.244.1.42:6379")
			// 1.5 s: long enough for the kernel to retransmit the SYN once (after 1 s).
			if out, err := pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "1500ms"); err == nil {
				t.Fatalf("client got through the policy: %s", out)
			}
			js := f.stop(t)
			syn := find(js, "S", "10.244.2.57:", "10.244.1.42:6379")
			if len(syn) != 2 {
				t.Fatalf("want the SYN and its retransmission, got:\n%s", dump(js))
			}
			if syn[0].ID == syn[1].ID {
				t.Errorf("the retransmitted SYN has the original's identity %s", syn[0].ID)
			}
			// The same reason on every kernel: the kernel's own, or (before 5.17, and
			// without the reason argument) inferred from the drop site.
			reason, source := "NETFILTER_DROP", "kernel"
			if hook == "raw_tp_noreason" || !kernReasons() {
				source = "inferred"
			}
			for _, j := range syn {
				if j.Drop != nil && j.Drop.Hook != "FORWARD" {
					t.Errorf("drop in hook %q, want FORWARD", j.Drop.Hook)
				}
				if j.Verdict != "dropped" || j.Drop == nil || j.Drop.Reason != reason || j.Drop.ReasonSource != source {
					t.Fatalf("SYN: verdict %s drop %+v, want dropped with reason %q (%s)\n%s", j.Verdict, j.Drop, reason, source, dump(js))
				}
				if !locationRE.MatchString(j.Drop.Location) {
					t.Errorf("drop location %q is not symbol+0xoff", j.Drop.Location)
				}
				if want := "dropped by filter/FORWARD rule 1: -A FORWARD -d 10.244.1.42/32 -p tcp -m tcp --dport 6379 -j DROP"; j.Drop.Rule != want {
					t.Errorf("drop rule %q, want %q", j.Drop.Rule, want)
				}
				if want := []string{"veth2b57 ingress", "cni0 ingress"}; !slices.Equal(hopNames(j), want) {
					t.Errorf("hops %v, want %v", hopNames(j), want)
				}
				wantDiagnosis(t, "policy drop", j.Diagnosis, "policy", "rule=filter/FORWARD rule 1", "counter")
				if j.Diagnosis != nil && !strings.Contains(j.Diagnosis.Fix, "iptables -t filter -D FORWARD -d 10.244.1.42/32") {
					t.Errorf("policy fix %q: want the rule's deletion as written", j.Diagnosis.Fix)
				}
			}
		})
	}
	assertNothingLeft(t)
}

// Strict rp_filter with an asymmetric route: node-b drops what arrives on flannel.1.
func TestRPFilterDrop(t *testing.T) {
	needLab(t)
	fault(t, "rpfilter")
	f := startFollow(t, "node-b", "10.244.1.23")
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080", "--timeout", "500ms"); err == nil {
		t.Fatalf("client got through: %s", out)
	}
	js := f.stop(t)
	syn := find(js, "S", "10.244.1.23:", "10.244.2.57:8080")
	if len(syn) == 0 || syn[0].Verdict != "dropped" || syn[0].Drop.Reason != "IP_RPFILTER" {
		t.Fatalf("want the SYN dropped with IP_RPFILTER, got:\n%s", dump(js))
	}
	if got := hopNames(syn[0]); !slices.Equal(got, []string{"eth0 ingress", "flannel.1 ingress"}) {
		t.Errorf("hops %v, want eth0 ingress, flannel.1 ingress", got)
	}
	// The effective value, max(all, flannel.1), and the route back that the check
	// found: via eth0, not flannel.1.
	wantDiagnosis(t, "rp_filter drop", syn[0].Diagnosis, "rp_filter",
		"rp_filter=1 (strict) on flannel.1: the larger of all=1 and flannel.1=1", "route back=10.244.1.23 via 10.0.0.11 dev eth0")
}

// A blackhole route: the packet is dropped where the route lookup fails, and the
// location names that function.
func TestBlackholeDrop(t *testing.T) {
	needLab(t)
	fault(t, "blackhole")
	f := startFollow(t, "node-a", "10.244.2.57")
	pod(t, "a-api", "tcp", "10.244.2.57:8080", "--timeout", "500ms")
	js := f.stop(t)
	syn := find(js, "S", "10.244.1.23:", "10.244.2.57:8080")
	if len(syn) == 0 || syn[0].Verdict != "dropped" || syn[0].Drop == nil {
		t.Fatalf("want the SYN dropped, got:\n%s", dump(js))
	}
	if !locationRE.MatchString(syn[0].Drop.Location) {
		t.Errorf("drop location %q is not symbol+0xoff", syn[0].Drop.Location)
	}
	// br_netfilter runs PREROUTING while the frame is still on the bridge; the route
	// lookup that finds the blackhole comes after cni0's ingress.
	if syn[0].Where != "cni0 ingress" {
		t.Errorf("dropped after %q, want cni0 ingress", syn[0].Where)
	}
	wantDiagnosis(t, "blackhole drop", syn[0].Diagnosis, "no_route", "route=blackhole 10.244.2.57")
}

// A 1 Mbit/s tbf on the tunnel: a burst queues (a stall between flannel.1 and eth0)
// and overflows (QDISC_DROP).
func TestSlowTunnel(t *testing.T) {
	needLab(t)
	fault(t, "slow")
	f := startFollow(t, "node-a", "--proto", "udp", "10.244.2.57:8080")
	pod(t, "a-api", "udp", "10.244.2.57:8080", "--count", "60", "--size", "1000")
	time.Sleep(time.Second) // let the queue drain
	js := f.stop(t)
	stalls, qdrops := 0, 0
	for _, j := range js {
		// The tbf queue holds the packet between flannel.1's tc egress hook and the
		// tunnel's transmit, whose outer packet next meets netfilter OUTPUT.
		if j.Stall != nil && j.Stall.From == "flannel.1 egress" && j.Stall.DeltaNs > uint64(10*time.Millisecond) {
			stalls++
		}
		// 5.10 gives no reason (kfree_skb_list, shared by other frees): the
		// diagnosis names the qdisc from its drop counters.
		if j.Verdict == "dropped" && (j.Drop.Reason == "QDISC_DROP" || j.Drop.Reason == "" && j.Where == "flannel.1 egress") {
			qdrops++
		}
	}
	if stalls == 0 || qdrops == 0 {
		t.Fatalf("want stalls and qdisc drops on the slow tunnel, got %d stalls, %d drops:\n%s", stalls, qdrops, dump(js))
	}
	// Every drop and every stall of the tunnel's queue names the tbf, its settings
	// and its counters.
	for _, j := range js {
		switch {
		case j.Verdict == "dropped" && (j.Drop.Reason == "QDISC_DROP" || j.Drop.Reason == "" && j.Where == "flannel.1 egress"):
			wantDiagnosis(t, "qdisc drop", j.Diagnosis, "qdisc", "qdisc=tbf", "qdisc=on flannel.1: rate 1Mbit")
		case j.Stall != nil && j.Stall.From == "flannel.1 egress" && j.Stall.DeltaNs > uint64(10*time.Millisecond):
			wantDiagnosis(t, "stall", j.Diagnosis, "qdisc", "stall", "qdisc=tbf")
		}
	}
	t.Logf("%d journeys: %d stalled between flannel.1 and eth0, %d QDISC_DROP", len(js), stalls, qdrops)
}

// SIGTERM at any moment, even while programs are being attached, leaves nothing behind.
func TestSignalCleanup(t *testing.T) {
	needLab(t)
	modes := []string{"tcx", "clsact"}
	if !kernTCX() {
		modes = modes[1:] // TestCrossNodeTCP checks that asking for tcx fails cleanly
	}
	for _, delay := range []time.Duration{20 * time.Millisecond, 60 * time.Millisecond, 150 * time.Millisecond, time.Second} {
		for _, mode := range modes {
			cmd := exec.Command(binDir+"/pathtrace", "follow", "--netns", labPrefix+"-node-a", "--attach-mode", mode, "10.244.2.57")
			out := &strings.Builder{}
			cmd.Stderr = out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			cmd.Process.Signal(syscall.SIGTERM)
			err := cmd.Wait()
			// A signal before the Go runtime has run the package initialisers finds no
			// handler (no Go program can have one yet) and ends the process with the
			// default action, before main, so before anything was attached. Under
			// emulation (the kernel matrix) that window is longer than 20 ms; at a
			// second the handler must be in place everywhere.
			var ee *exec.ExitError
			early := errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM && out.Len() == 0
			switch {
			case err == nil:
			case early && delay < time.Second:
				t.Logf("%s, SIGTERM after %v: ended before its handler was installed (nothing printed, nothing attached)", mode, delay)
			default:
				t.Errorf("%s, SIGTERM after %v: %v\n%s", mode, delay, err, out)
			}
			assertNothingLeft(t)
		}
	}
}

// Someone else's clsact qdisc and filter stay as they were.
func TestClsactKeepsOthers(t *testing.T) {
	needLab(t)
	inNode(t, "node-a", "tc", "qdisc", "add", "dev", "cni0", "clsact")
	t.Cleanup(func() {
		exec.Command("ip", "netns", "exec", labPrefix+"-node-a", "tc", "qdisc", "del", "dev", "cni0", "clsact").Run()
	})
	// A u32 filter that matches nothing (no MAC in the lab starts 12:34:56:78), at prio 1.
	inNode(t, "node-a", "tc", "filter", "add", "dev", "cni0", "ingress", "prio", "1", "u32", "match", "u32", "0x12345678", "0xffffffff", "at", "0")
	f := startFollow(t, "node-a", "--attach-mode", "clsact", "10.244.2.57")
	pod(t, "a-api", "tcp", "10.244.2.57:8080")
	js := f.stop(t)
	if len(find(js, "S", "10.244.1.23:", "10.244.2.57:8080")) != 1 {
		t.Errorf("no SYN journey with a foreign filter present:\n%s", dump(js))
	}
	filters := inNode(t, "node-a", "tc", "filter", "show", "dev", "cni0", "ingress")
	if !strings.Contains(filters, "12345678") || strings.Contains(filters, "pathtrace") {
		t.Errorf("after exit, cni0 ingress filters should be the foreign u32 only:\n%s", filters)
	}
}

// A datagram to a port nobody listens on dies inside the pod's namespace. It belongs
// to node-b, where the pod runs: node-b reports the drop, node-a (which forwarded the
// packet) must not claim it.
func TestDropInsidePod(t *testing.T) {
	needLab(t)
	a := startFollow(t, "node-a", "--proto", "udp", "10.244.2.57:9999")
	b := startFollow(t, "node-b", "--proto", "udp", "10.244.2.57:9999")
	pod(t, "a-api", "udp", "10.244.2.57:9999", "--count", "1")
	ja, jb := a.stop(t), b.stop(t)
	// The pod answers with an ICMP port unreachable, which conntrack relates to the
	// followed flow: it is followed too, on both nodes.
	icmpA, icmpB := byProto(ja, "icmp"), byProto(jb, "icmp")
	ja, jb = byProto(ja, "udp"), byProto(jb, "udp")
	if len(ja) != 1 || ja[0].Verdict != "forwarded" {
		t.Errorf("node-a: want one forwarded journey, got %d:\n%s", len(ja), dump(ja))
	}
	if len(jb) != 1 || jb[0].Verdict != "dropped" || jb[0].Drop.Reason != "NO_SOCKET" {
		t.Fatalf("node-b: want one journey dropped with NO_SOCKET, got:\n%s", dump(jb))
	}
	if len(icmpB) != 1 || len(icmpA) != 1 || icmpA[0].ID != icmpB[0].ID {
		t.Errorf("want the ICMP error followed on both nodes, got node-a:\n%snode-b:\n%s", dump(icmpA), dump(icmpB))
	} else if h := hop(icmpB[0], nfHop("FORWARD first")); h == nil || h.CT == nil || h.CT.State != "related" {
		t.Errorf("node-b: the ICMP error at FORWARD should be related to the flow: %+v", h)
	}
	want := []string{"eth0 ingress", "flannel.1 ingress", "cni0 egress", "veth2b57 egress"}
	if got := hopNames(jb[0]); !slices.Equal(got, want) {
		t.Errorf("node-b hops %v, want %v", got, want)
	}
	if jb[0].Drop.Ifname != "eth0" {
		t.Errorf("drop on device %q, want the pod's eth0", jb[0].Drop.Ifname)
	}
	// A closed port in the pod, named as such: not a network fault.
	wantDiagnosis(t, "closed port", jb[0].Diagnosis, "closed_port", "destination=udp 10.244.2.57:9999")
	if ja[0].ID != jb[0].ID {
		t.Errorf("ids differ between nodes: %s, %s", ja[0].ID, jb[0].ID)
	}
}

// With drop tracing off, a packet that vanishes is judged lost after its last hop once
// the timeout runs out.
func TestLostWithoutDropHook(t *testing.T) {
	needLab(t)
	fault(t, "policy")
	f := startFollow(t, "node-b", "--drop-hook", "none", "10.244.1.42:6379")
	pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "500ms")
	js := f.stop(t)
	syn := find(js, "S", "10.244.2.57:", "10.244.1.42:6379")
	if len(syn) != 1 || syn[0].Verdict != "lost" || syn[0].Where != "FORWARD first" || syn[0].Drop != nil {
		t.Fatalf("want the SYN lost after FORWARD first, got:\n%s", dump(js))
	}
	if !strings.Contains(f.stderr.String(), "drop tracing off") {
		t.Errorf("the mode line should say drops are not traced:\n%s", f.stderr.String())
	}
}

// --duration ends the run by itself, and --count after that many journeys.
func TestDurationAndCount(t *testing.T) {
	needLab(t)
	start := time.Now()
	code, stderr := runBin(t, nil, "follow", "--netns", labPrefix+"-node-a", "--duration", "1s", "10.244.2.57")
	if code != 0 || time.Since(start) > 10*time.Second || !strings.Contains(stderr, "0 journeys") {
		t.Errorf("--duration 1s: exit %d after %v, stderr %q", code, time.Since(start), stderr)
	}
	f := startFollow(t, "node-a", "--count", "2", "--proto", "tcp", "10.244.2.57:8080")
	pod(t, "a-api", "tcp", "10.244.2.57:8080")
	select {
	case err := <-f.done:
		if err != nil {
			t.Fatalf("--count 2: %v\n%s", err, f.stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("--count 2 did not stop by itself\n%s", f.stderr.String())
	}
	if js := parseJourneys(t, f.stdout.Bytes()); len(js) != 2 {
		t.Errorf("--count 2 printed %d journeys:\n%s", len(js), dump(js))
	}
}

// A Service VIP: the SYN is followed through DNAT to a backend, the reply through the
// reverse translation, and each hop says where the translation happened.
func TestVIPNAT(t *testing.T) {
	needLab(t)
	f := startFollow(t, "node-a", "--proto", "tcp", "10.96.12.34:80")
	backends := map[string]bool{}
	for i := 0; i < 4; i++ {
		out, err := pod(t, "a-redis", "tcp", "10.96.12.34:80")
		if err != nil {
			t.Fatalf("client: %v %s", err, out)
		}
	}
	js := f.stop(t)
	syns := find(js, "S", "10.244.1.42:", "10.96.12.34:80")
	if len(syns) != 4 {
		t.Fatalf("want 4 SYN journeys, got:\n%s", dump(js))
	}
	for _, j := range syns {
		// The links show the DNAT at PREROUTING's last priority; the kprobe, which sees
		// hooks on entry only, at the next hop, with the entry conntrack made.
		h := hop(j, "PREROUTING last")
		if kernNF() == tracer.NFKprobe {
			h = natHop(j, "dnat")
		}
		if h == nil || h.NAT == nil || h.NAT.Type != "dnat" || h.NAT.From != "10.96.12.34:80" {
			t.Fatalf("SYN: want dnat from the VIP at %s, got %+v\n%s", nfHop("PREROUTING last"), h, dump([]exporter.JourneyJSON{j}))
		}
		if h.CT == nil {
			h.CT = firstCT(j)
		}
		if h.NAT.To != "10.244.1.23:8080" && h.NAT.To != "10.244.2.57:8080" {
			t.Errorf("DNAT to %s, not a backend", h.NAT.To)
		}
		backends[h.NAT.To] = true
		// To api-a the bridge floods the DNATed SYN to both of node-a's pods (redis
		// drops its copy): the SYN is still delivered to api-a.
		if j.Verdict != "delivered" && j.Verdict != "forwarded" {
			t.Errorf("SYN to the VIP: %s", dump([]exporter.JourneyJSON{j}))
		}
		if h.NAT.To == "10.244.1.23:8080" && (j.Verdict != "delivered" || j.Where != "veth1a23") {
			t.Errorf("SYN DNATed to api-a: verdict %s where %s, want delivered via veth1a23", j.Verdict, j.Where)
		}
		if h.CT == nil || h.CT.State != "new" || h.CT.Orig == nil || h.CT.Orig.Dst != "10.96.12.34:80" {
			t.Errorf("SYN at PREROUTING last: conntrack %+v, want new with the VIP as original destination", h.CT)
		}
	}
	// Each SYN-ACK is given the VIP back as its source on the way to the client.
	acks := 0
	for _, j := range js {
		if j.TCPFlags != "S." {
			continue
		}
		for _, h := range j.Hops {
			if h.NAT != nil && h.NAT.Type == "undnat" && h.NAT.To == "10.96.12.34:80" {
				acks++
			}
		}
		if j.Verdict != "delivered" || hopNames(j)[len(hopNames(j))-1] != "veth1a42 egress" {
			t.Errorf("SYN-ACK not delivered to redis: %s", dump([]exporter.JourneyJSON{j}))
		}
	}
	if acks != 4 {
		t.Errorf("%d SYN-ACKs un-DNATed to the VIP, want 4:\n%s", acks, dump(js))
	}
	t.Logf("backends reached: %v", backends)
}

// Following a backend also shows the connections that reached it through the VIP.
func TestFollowBackendThroughVIP(t *testing.T) {
	needLab(t)
	f := startFollow(t, "node-a", "--proto", "tcp", "10.244.2.57:8080")
	viaB := 0
	for i := 0; i < 20 && viaB < 2; i++ {
		if out, _ := pod(t, "a-redis", "tcp", "10.96.12.34:80"); strings.Contains(out, "api-b") {
			viaB++
		}
	}
	if viaB == 0 {
		t.Fatal("no connection to the VIP reached api-b in 20 tries")
	}
	js := f.stop(t)
	n := 0
	for _, j := range js {
		for _, h := range j.Hops {
			if h.NAT != nil && h.NAT.Type == "dnat" && h.NAT.From == "10.96.12.34:80" && h.NAT.To == "10.244.2.57:8080" {
				n++
			}
		}
	}
	// At least the SYN and the next packet of each of those connections.
	if n < 2*viaB {
		t.Errorf("%d packets shown DNATed from the VIP to 10.244.2.57:8080, want at least %d:\n%s", n, 2*viaB, dump(js))
	}
}

// Without MASQUERADE a pod's SYNs to a host outside the cluster leave and nothing
// comes back: a one-way connection, with the hop the SYN-ACK should have crossed.
func TestOneWayWithoutMasquerade(t *testing.T) {
	needLab(t)
	fault(t, "nomasq")
	f := startFollow(t, "node-a", "--oneway", "1500ms", "10.0.0.100:80")
	if out, err := pod(t, "a-api", "tcp", "10.0.0.100:80", "--timeout", "1500ms"); err == nil {
		t.Fatalf("client got an answer without MASQUERADE: %s", out)
	}
	time.Sleep(2 * time.Second) // past the one-way wait after the last SYN
	js := f.stop(t)
	ows := parseOneWays(t, f.stdout.Bytes())
	if len(ows) != 1 {
		t.Fatalf("want one one-way report, got %d:\n%s\njourneys:\n%s", len(ows), f.stdout.String(), dump(js))
	}
	o := ows[0]
	if o.Flow.Dst != "10.0.0.100:80" || !strings.HasPrefix(o.Flow.Src, "10.244.1.23:") || o.SYNs < 2 ||
		o.LeftVia != "eth0 egress" || o.Expected != "eth0 ingress" {
		t.Errorf("one-way report %+v: want 10.244.1.23 → 10.0.0.100:80, 2+ SYNs, left via eth0 egress, expected back through eth0 ingress", o)
	}
	wantDiagnosis(t, "one-way without MASQUERADE", o.Diagnosis, "no_snat", "source=10.244.1.23 left eth0 untranslated", "postrouting")
	if o.Diagnosis != nil && !strings.Contains(o.Diagnosis.Fix, "-j MASQUERADE") {
		t.Errorf("no_snat fix %q: want the MASQUERADE rule to add", o.Diagnosis.Fix)
	}
	// With MASQUERADE back, the same connection is answered: no report.
	if out, err := lab("fault", "nomasq", "off"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	g := startFollow(t, "node-a", "--oneway", "500ms", "10.0.0.100:80")
	if out, err := pod(t, "a-api", "tcp", "10.0.0.100:80"); err != nil {
		t.Fatalf("client with MASQUERADE: %v %s", err, out)
	}
	time.Sleep(time.Second)
	js = g.stop(t)
	if ows := parseOneWays(t, g.stdout.Bytes()); len(ows) != 0 {
		t.Errorf("answered connection reported one-way: %+v", ows)
	}
	snat := 0
	for _, j := range js {
		for _, h := range j.Hops {
			if h.NAT != nil && h.NAT.Type == "snat" && strings.HasPrefix(h.NAT.To, "10.0.0.11:") {
				snat++
			}
		}
	}
	if snat == 0 {
		t.Errorf("no hop shows the MASQUERADE to 10.0.0.11:\n%s", dump(js))
	}
}

// A native nftables rule (not iptables-nft) is named in nft's own words.
func TestNftablesRuleNamed(t *testing.T) {
	needLab(t)
	inNode(t, "node-b", "nft", "add table inet ptt_policy")
	t.Cleanup(func() {
		exec.Command("ip", "netns", "exec", labPrefix+"-node-b", "nft", "delete table inet ptt_policy").Run()
	})
	inNode(t, "node-b", "nft", "add chain inet ptt_policy ptfwd { type filter hook forward priority 10 ; }")
	inNode(t, "node-b", "nft", "add rule inet ptt_policy ptfwd ip daddr 10.244.1.42 udp dport 5353 counter drop")
	f := startFollow(t, "node-b", "--proto", "udp", "10.244.1.42:5353")
	pod(t, "b-api", "udp", "10.244.1.42:5353", "--count", "1")
	js := f.stop(t)
	if len(js) != 1 || js[0].Drop == nil {
		t.Fatalf("want one dropped datagram, got:\n%s", dump(js))
	}
	d := js[0].Drop
	if !regexp.MustCompile(`^dropped by inet/ptt_policy/ptfwd rule handle \d+: ip daddr 10\.244\.1\.42 udp dport 5353 counter packets \d+ bytes \d+ drop$|^dropped by inet/ptt_policy/ptfwd rule handle \d+: ip daddr 10\.244\.1\.42 udp dport 5353 counter drop$`).MatchString(d.Rule) {
		t.Errorf("drop rule %q", d.Rule)
	}
	if d.Hook != "FORWARD" || d.Reason != "NETFILTER_DROP" {
		t.Errorf("drop %+v, want NETFILTER_DROP in FORWARD", d)
	}
}

// natHop is the first hop of j that shows a translation of the type given.
func natHop(j exporter.JourneyJSON, typ string) *exporter.HopJSON {
	for i := range j.Hops {
		if n := j.Hops[i].NAT; n != nil && n.Type == typ {
			return &j.Hops[i]
		}
	}
	return nil
}

// firstCT is the conntrack entry of j's first netfilter hop that has one.
func firstCT(j exporter.JourneyJSON) *exporter.CTJSON {
	for _, h := range j.Hops {
		if h.CT != nil && h.CT.State != "" {
			return h.CT
		}
	}
	return nil
}
