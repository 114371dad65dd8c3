package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/exporter"
)

// The core scenarios on every lab layout (scripts/lab.sh up --cni ...), each with
// pathtrace's default flags: it must find the interfaces itself. The layouts have
// their own names and addresses (cali*/lxc* veths, vxlan.calico, tunl0,
// cilium_geneve, 192.168.0.0/16, ...): the test reads them from `lab.sh env`, never
// from a list of its own.

// layoutPrefix is the layout labs' namespace prefix: another lab than the suite's
// (ptt), brought up and down by each layout's test.
const layoutPrefix = "ptc"

// layoutLab is a lab of one layout, with what `lab.sh env` says of it.
type layoutLab struct {
	env map[string]string
}

func (l *layoutLab) get(t *testing.T, key string) string {
	t.Helper()
	v, ok := l.env[key]
	if !ok {
		t.Fatalf("lab.sh env has no %s", key)
	}
	return v
}

// labAt runs scripts/lab.sh on the layout labs' prefix.
func labAt(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repoRoot, "scripts", "lab.sh"), args...)
	cmd.Env = append(os.Environ(), "LAB_PREFIX="+layoutPrefix, "LABPOD="+filepath.Join(binDir, "labpod"),
		"LABREDIRECT="+filepath.Join(binDir, "labredirect"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// upLayout brings a layout up for the test and down after it. A layout whose tunnel
// this kernel lacks (lab.sh exits 3: no ipip or geneve module) is skipped, saying so:
// the kernel matrix's Debian kernels have them.
func upLayout(t *testing.T, args ...string) *layoutLab {
	t.Helper()
	needLab(t)
	labAt("down")
	out, err := labAt(append([]string{"up"}, args...)...)
	if exitCode(err) == 3 {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		t.Skipf("layout %v not possible on this kernel: %s", args, lines[len(lines)-1])
	}
	if err != nil {
		labAt("down")
		t.Fatalf("lab up %v: %v\n%s", args, err, out)
	}
	t.Cleanup(func() {
		if out, err := labAt("down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	out, err = labAt("env")
	if err != nil {
		t.Fatalf("lab env: %v\n%s", err, out)
	}
	l := &layoutLab{env: map[string]string{}}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			l.env[k] = v
		}
	}
	return l
}

// client runs labpod in a pod's namespace.
func (l *layoutLab) client(t *testing.T, pod string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"netns", "exec", l.get(t, "POD_"+pod+"_NS"), filepath.Join(binDir, "labpod")}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	return string(out), err
}

// follow runs pathtrace follow on a node of the layout with default flags.
func (l *layoutLab) follow(t *testing.T, node string, args ...string) *follower {
	t.Helper()
	return runFollow(t, "node-"+node, append([]string{"--netns", l.get(t, "NODE_"+strings.ToUpper(node)+"_NS"), "--node", "node-" + node}, args...))
}

// faultOn turns a fault of the layout lab on for the rest of the test.
func (l *layoutLab) faultOn(t *testing.T, name string) {
	t.Helper()
	if out, err := labAt("fault", name); err != nil {
		t.Fatalf("fault %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := labAt("fault", name, "off"); err != nil {
			t.Errorf("fault %s off: %v\n%s", name, err, out)
		}
	})
}

// hostPort joins an address and a port as a selector or a dial address takes it.
func hostPort(ip, port string) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + port
	}
	return ip + ":" + port
}

// wantPath is the hops a packet from a pod on node-a to one on node-b crosses on
// each node, by the layout's own devices: the pod's veth, the bridge if pods are
// bridged, the tunnel, the uplink.
func (l *layoutLab) wantPath(t *testing.T, tunnel string) (a, b []string) {
	br := l.env["BRIDGE"]
	a = []string{l.get(t, "POD_A_API_VETH") + " ingress"}
	if br != "" {
		a = append(a, br+" ingress")
	}
	a = append(a, tunnel+" egress", l.get(t, "UPLINK")+" egress")
	b = []string{l.get(t, "UPLINK") + " ingress", tunnel + " ingress"}
	if br != "" {
		b = append(b, br+" egress")
	}
	b = append(b, l.get(t, "POD_B_API_VETH")+" egress")
	return a, b
}

// One test per layout, so that the kernel matrix shows each (a kernel without the
// ipip or geneve module skips those two, saying so).
func TestLayoutFlannel(t *testing.T)     { layoutScenarios(t, "--cni", "flannel", "--dual-stack") }
func TestLayoutCalicoVXLAN(t *testing.T) { layoutScenarios(t, "--cni", "calico-vxlan") }
func TestLayoutCalicoIPIP(t *testing.T)  { layoutScenarios(t, "--cni", "calico-ipip") }
func TestLayoutGeneve(t *testing.T)      { layoutScenarios(t, "--cni", "geneve") }

// layoutScenarios runs the core scenarios on a layout: a cross-node connection, a
// policy drop, a service VIP (each over IPv6 too on a dual-stack lab), the join of
// both nodes' agents, and another datapath's redirect.
func layoutScenarios(t *testing.T, args ...string) {
	l := upLayout(t, args...)
	fams := []string{""}
	if l.env["DUAL_STACK"] == "1" {
		fams = append(fams, "6")
	}
	for _, f := range fams {
		name := "ipv4"
		if f == "6" {
			name = "ipv6"
		}
		t.Run(name+"/cross-node", func(t *testing.T) { layoutCrossNode(t, l, f) })
		t.Run(name+"/policy", func(t *testing.T) { layoutPolicy(t, l, f) })
		t.Run(name+"/vip", func(t *testing.T) { layoutVIP(t, l, f) })
		t.Run(name+"/join", func(t *testing.T) { layoutJoin(t, l, f) })
	}
	t.Run("redirect", func(t *testing.T) { layoutRedirect(t, l) })
	if out, err := labAt("down"); err != nil {
		t.Errorf("lab down: %v\n%s", err, out)
	}
	assertNothingLeft(t)
}

// A pod on node-a connects to one on node-b: each node shows the SYN on its own
// devices in order, with the tunnel's outer header at the uplink, and one identity.
func layoutCrossNode(t *testing.T, l *layoutLab, fam string) {
	dst := hostPort(l.get(t, "POD_B_API_IP"+fam), l.get(t, "BACKEND_PORT"))
	src := l.get(t, "POD_A_API_IP"+fam)
	a := l.follow(t, "a", "--proto", "tcp", dst)
	b := l.follow(t, "b", "--proto", "tcp", dst)
	if out, err := l.client(t, "A_API", "tcp", dst); err != nil || !strings.Contains(out, "ok api-b") {
		t.Fatalf("client: %v %s", err, out)
	}
	ja, jb := a.stop(t), b.stop(t)
	// The layout each follower recognised, from the node's devices.
	for _, f := range []*follower{a, b} {
		want := map[string]string{"flannel": "layout: flannel", "calico-vxlan": "layout: calico", "calico-ipip": "layout: calico", "geneve": "layout: cilium"}[l.env["CNI"]]
		if !strings.Contains(f.stderr.String(), want) {
			t.Errorf("%s: no %q in:\n%s", f.node, want, f.stderr.String())
		}
	}
	srcPrefix := src + ":"
	if fam == "6" {
		srcPrefix = "[" + src + "]:"
	}
	synA, synB := find(ja, "S", srcPrefix, dst), find(jb, "S", srcPrefix, dst)
	if len(synA) != 1 || len(synB) != 1 {
		t.Fatalf("want one SYN journey per node, got node-a:\n%snode-b:\n%s", dump(ja), dump(jb))
	}
	tunnel := l.get(t, "TUNNEL"+fam)
	wantA, wantB := l.wantPath(t, tunnel)
	if got := hopNames(synA[0]); !slices.Equal(got, wantA) || synA[0].Verdict != "forwarded" {
		t.Errorf("node-a SYN: hops %v verdict %s, want %v forwarded", got, synA[0].Verdict, wantA)
	}
	if got := hopNames(synB[0]); !slices.Equal(got, wantB) || synB[0].Verdict != "delivered" {
		t.Errorf("node-b SYN: hops %v verdict %s, want %v delivered", got, synB[0].Verdict, wantB)
	}
	up := l.get(t, "UPLINK")
	h := hop(synA[0], up+" egress")
	if h == nil || h.Tunnel == nil || h.Tunnel.Kind != l.get(t, "ENCAP") || h.Tunnel.Src != l.get(t, "NODE_A_IP"+fam) || h.Tunnel.Dst != l.get(t, "NODE_B_IP"+fam) {
		t.Errorf("node-a %s egress: outer %+v, want %s %s → %s", up, h, l.get(t, "ENCAP"), l.get(t, "NODE_A_IP"+fam), l.get(t, "NODE_B_IP"+fam))
	} else if p := l.env["ENCAP_PORT"]; p != "" && strconv.Itoa(int(h.Tunnel.Port)) != p {
		t.Errorf("node-a %s egress: tunnel port %d, want %s", up, h.Tunnel.Port, p)
	}
	if synA[0].ID != synB[0].ID {
		t.Errorf("the SYN has id %s on node-a and %s on node-b", synA[0].ID, synB[0].ID)
	}
	if len(find(ja, "S.", dst, srcPrefix)) != 1 {
		t.Errorf("node-a: no SYN-ACK journey:\n%s", dump(ja))
	}
	for _, j := range append(ja, jb...) {
		if j.Diagnosis != nil {
			t.Errorf("healthy journey %s on %s (%s) has a diagnosis: %+v", j.ID, j.Node, j.Verdict, j.Diagnosis)
		}
	}
}

// The policy fault drops the SYN in FORWARD; the rule is named (ip6tables' for IPv6).
func layoutPolicy(t *testing.T, l *layoutLab, fam string) {
	l.faultOn(t, "policy")
	dst := hostPort(l.get(t, "POD_A_REDIS_IP"+fam), l.get(t, "REDIS_PORT"))
	f := l.follow(t, "b", dst)
	if out, err := l.client(t, "B_API", "tcp", dst, "--timeout", "500ms"); err == nil {
		t.Fatalf("client got through the policy: %s", out)
	}
	js := f.stop(t)
	syn := find(js, "S", "", dst)
	if len(syn) == 0 {
		t.Fatalf("no SYN journey:\n%s", dump(js))
	}
	j := syn[0]
	if j.Verdict != "dropped" || j.Drop == nil || j.Drop.Hook != "FORWARD" {
		t.Fatalf("SYN: verdict %s drop %+v, want dropped in FORWARD\n%s", j.Verdict, j.Drop, dump(js))
	}
	wantRule := "filter/FORWARD rule 1: -A FORWARD -d " + l.get(t, "POD_A_REDIS_IP"+fam)
	if !strings.Contains(j.Drop.Rule, wantRule) {
		t.Errorf("drop rule %q, want it to name %q", j.Drop.Rule, wantRule)
	}
	if got := hopNames(j); len(got) == 0 || got[0] != l.get(t, "POD_B_API_VETH")+" ingress" {
		t.Errorf("hops %v, want the client's veth first", got)
	}
	wantDiagnosis(t, "policy drop", j.Diagnosis, "policy", "rule=filter/FORWARD rule 1")
}

// A client reaches the service VIP: the SYN is DNATed to a backend, and the SYN-ACK
// is given the VIP back.
func layoutVIP(t *testing.T, l *layoutLab, fam string) {
	vip := hostPort(l.get(t, "VIP"+fam), l.get(t, "VIP_PORT"))
	backends := []string{hostPort(l.get(t, "POD_A_API_IP"+fam), l.get(t, "BACKEND_PORT")), hostPort(l.get(t, "POD_B_API_IP"+fam), l.get(t, "BACKEND_PORT"))}
	f := l.follow(t, "a", "--proto", "tcp", vip)
	for i := 0; i < 3; i++ {
		if out, err := l.client(t, "A_REDIS", "tcp", vip); err != nil {
			t.Fatalf("client: %v %s", err, out)
		}
	}
	js := f.stop(t)
	syns := find(js, "S", "", vip)
	if len(syns) != 3 {
		t.Fatalf("want 3 SYN journeys, got:\n%s", dump(js))
	}
	for _, j := range syns {
		h := natHop(j, "dnat")
		if h == nil || h.NAT.From != vip || !slices.Contains(backends, h.NAT.To) {
			t.Errorf("SYN: want a dnat from %s to one of %v:\n%s", vip, backends, dump([]exporter.JourneyJSON{j}))
		}
		if j.Verdict != "delivered" && j.Verdict != "forwarded" {
			t.Errorf("SYN to the VIP: %s", dump([]exporter.JourneyJSON{j}))
		}
	}
	acks := 0
	for _, j := range js {
		if j.TCPFlags == "S." && natHop(j, "undnat") != nil && natHop(j, "undnat").NAT.To == vip && j.Verdict == "delivered" {
			acks++
		}
	}
	if acks != 3 {
		t.Errorf("%d SYN-ACKs un-DNATed to the VIP and delivered, want 3:\n%s", acks, dump(js))
	}
}

// One follower through both nodes' agents: the SYN from node-a's pod to node-b's is
// one path across the tunnel.
func layoutJoin(t *testing.T, l *layoutLab, fam string) {
	na := startAgent(t, "node-a", "--netns", l.get(t, "NODE_A_NS"))
	nb := startAgent(t, "node-b", "--netns", l.get(t, "NODE_B_NS"))
	dst := hostPort(l.get(t, "POD_B_API_IP"+fam), l.get(t, "BACKEND_PORT"))
	f := agentFollow(t, []*agentProc{na, nb}, "--proto", "tcp", dst)
	if out, err := l.client(t, "A_API", "tcp", dst); err != nil {
		t.Fatalf("client: %v %s", err, out)
	}
	paths := f.stopPaths(t)
	syns := findPaths(paths, "S", hostPort(l.get(t, "POD_A_API_IP"+fam), ""), dst)
	if len(syns) != 1 || syns[0].Verdict != "delivered" || !slices.Equal(syns[0].Nodes, []string{"node-a", "node-b"}) {
		t.Fatalf("want the SYN delivered on one path node-a → node-b, got:\n%s", dumpPaths(paths))
	}
	p := syns[0]
	wantA, wantB := l.wantPath(t, l.get(t, "TUNNEL"+fam))
	if len(p.Legs) != 2 || !slices.Equal(hopNames(p.Legs[0]), wantA) || !slices.Equal(hopNames(p.Legs[1]), wantB) {
		t.Errorf("legs %v / %v, want %v / %v", hopNames(p.Legs[0]), hopNames(p.Legs[1]), wantA, wantB)
	}
	up := l.get(t, "UPLINK")
	if len(p.Crossings) != 1 || p.Crossings[0].FromHop != up+" egress" || p.Crossings[0].ToHop != up+" ingress" {
		t.Errorf("crossings %+v, want one %s egress → %s ingress", p.Crossings, up, up)
	}
	if want := "delivered to pod via " + l.get(t, "POD_B_API_VETH") + " on node-b"; p.Summary != want {
		t.Errorf("summary %q, want %q", p.Summary, want)
	}
}

// A Cilium-like program on the tunnel's ingress sends packets for local pods
// straight into their namespace (bpf_redirect_peer): node-b sees the SYN arrive on
// the uplink and the tunnel, then not again; it is redirected, by the program named,
// not lost. The connection works.
func layoutRedirect(t *testing.T, l *layoutLab) {
	if out, err := labAt("redirect", "on"); err != nil {
		t.Fatalf("redirect on: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := labAt("redirect", "off"); err != nil {
			t.Errorf("redirect off: %v\n%s", err, out)
		}
	})
	dst := hostPort(l.get(t, "POD_B_API_IP"), l.get(t, "BACKEND_PORT"))
	modes := []string{"tcx", "clsact"}
	if !kernTCX() {
		modes = modes[1:]
	}
	for _, mode := range modes {
		b := l.follow(t, "b", "--attach-mode", mode, "--proto", "tcp", dst)
		if out, err := l.client(t, "A_API", "tcp", dst); err != nil || !strings.Contains(out, "ok api-b") {
			t.Fatalf("client through the redirect: %v %s", err, out)
		}
		js := b.stop(t)
		syn := find(js, "S", l.get(t, "POD_A_API_IP")+":", dst)
		tunnel := l.get(t, "TUNNEL")
		want, where := []string{l.get(t, "UPLINK") + " ingress", tunnel + " ingress"}, tunnel+" ingress"
		if mode == "clsact" && kernTCX() {
			// The lab's program is a tcx one, which the kernel runs before any clsact
			// filter: pathtrace's on the tunnel never sees the packet. What it saw last
			// is the tunnel's packet delivered to the node to be taken apart.
			want, where = want[:1], ""
		}
		if len(syn) != 1 || !slices.Equal(hopNames(syn[0]), want) || syn[0].Verdict != "redirected" ||
			!strings.Contains(syn[0].HandedTo, "from_overlay") && !strings.Contains(syn[0].HandedTo, "cls_bpf labredirect prio 1") || where != "" && syn[0].Where != where {
			t.Errorf("%s: want the SYN seen at %v, then redirected by the lab's program (tcx from_overlay, or its cls_bpf filter labredirect); got:\n%s\n%s", mode, want, dump(js), b.stderr.String())
		}
	}
}
