// Command labredirect attaches a Cilium-like redirecting tc program to a device of a
// pathtrace lab node (scripts/lab.sh redirect on|off). It is not part of pathtrace: it
// makes the lab's datapath behave like Cilium's, where a packet that comes out of the
// tunnel for a local pod is sent with bpf_redirect_peer straight into the pod's
// namespace, so that the host veth's egress, the bridge and the node's netfilter never
// see it. It must not touch anything outside the namespace it is given.
//
// Usage:
//
//	labredirect attach --netns NS --dev DEV [--pod IP=VETH ...] [--mode auto|tcx|clsact]
//	labredirect detach --netns NS --dev DEV
//	labredirect status --netns NS --dev DEV
//
// attach loads redirect.c's from_overlay with a map of pod address (IPv4 or IPv6) to
// host veth ifindex and attaches it to DEV's ingress the way Cilium does on the kernel
// it runs on: as a tcx link (kernel >= 6.6), pinned at /sys/fs/bpf/labredirect/NS/DEV
// (a dot in DEV becomes '_': bpffs refuses dots) so that it outlives the process (bpffs is mounted there when it is missing), and
// atomically replaced when attach runs again; before 6.6 (or with --mode clsact) as a
// direct-action cls_bpf filter at priority 1, handle 1, named labredirect, under a
// clsact qdisc. Packets to no pod in the map go on with TC_ACT_OK, as Cilium's do
// (with tcx, TCX_PASS: later tcx programs on the device do not run for them).
//
// detach removes either (the clsact qdisc stays: other programs may use it). status
// prints the attachment and the program's counters (redirected to a pod, passed on)
// and exits 1 when nothing is attached.
package main
