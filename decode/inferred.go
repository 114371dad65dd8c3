package decode

import "strings"

// Reason sources: who named a drop's reason.
const (
	ReasonKernel   = "kernel"   // the kfree_skb tracepoint passed it (5.17 and later)
	ReasonInferred = "inferred" // taken from the function that freed the packet
)

// dropSites maps the kernel function that calls kfree_skb to the enum skb_drop_reason
// name (without SKB_DROP_REASON_) that kernels with drop reasons give for the same
// drop, so that text reads alike on every kernel. It serves kernels before 5.17, whose
// tracepoint passes only the location, and NOT_SPECIFIED drops on later ones. Keys are
// function names, which stay stable across kernels, never reason numbers.
//
//	nf_hook_slow, nft_do_chain    a netfilter rule or policy returned NF_DROP (6.18 frees in nft_do_chain)
//	ip_rcv_finish, ip_rcv_finish_core, ip_route_input_noref, ip_route_input_slow,
//	fib_validate_source           5.10: ip_rcv_finish frees the packet when
//	                              ip_route_input_noref fails: rp_filter (-EXDEV)
//	ip_forward, ip_error          no route / forwarding refused
//	__dev_queue_xmit, __qdisc_drop, qdisc_drop, sch_direct_xmit, pfifo_enqueue,
//	tbf_enqueue, fq_codel_drop    the queueing discipline dropped it
//	tcp_v4_rcv, tcp_v6_rcv, __udp4_lib_rcv, __udp6_lib_rcv   no socket listens
//	udp_queue_rcv_one_skb, __udp_queue_rcv_skb, sock_queue_rcv_skb, __sock_queue_rcv_skb
//	                              the socket's receive buffer was full
//	nf_conntrack_in, __nf_conntrack_alloc, init_conntrack  conntrack dropped it
//	veth_xmit                     the veth peer was not ready or its queue full
//	br_handle_frame, br_handle_frame_finish, br_dev_queue_push_xmit, br_forward_finish
//	                              the bridge dropped it
//	icmp_rcv                      an ICMP message was refused
//	ip_rcv_core, ipv6_rcv_core    a malformed IP header
//	neigh_resolve_output, __neigh_event_send  no neighbour entry
var dropSites = map[string]string{
	"nf_hook_slow":           "NETFILTER_DROP",
	"nft_do_chain":           "NETFILTER_DROP",
	"ip_rcv_finish":          "IP_RPFILTER",
	"ip_rcv_finish_core":     "IP_RPFILTER",
	"ip_route_input_noref":   "IP_RPFILTER",
	"ip_route_input_slow":    "IP_RPFILTER",
	"fib_validate_source":    "IP_RPFILTER",
	"ip_forward":             "IP_NOROUTE",
	"ip_error":               "IP_INADDRERRORS",
	"__dev_queue_xmit":       "QDISC_DROP",
	"__qdisc_drop":           "QDISC_DROP",
	"qdisc_drop":             "QDISC_DROP",
	"sch_direct_xmit":        "QDISC_DROP",
	"pfifo_enqueue":          "QDISC_DROP",
	"pfifo_fast_enqueue":     "QDISC_DROP",
	"tbf_enqueue":            "QDISC_DROP",
	"fq_codel_drop":          "QDISC_DROP",
	"tcp_v4_rcv":             "NO_SOCKET",
	"tcp_v6_rcv":             "NO_SOCKET",
	"__udp4_lib_rcv":         "NO_SOCKET",
	"__udp6_lib_rcv":         "NO_SOCKET",
	"udp_queue_rcv_one_skb":  "SOCKET_RCVBUFF",
	"__udp_queue_rcv_skb":    "SOCKET_RCVBUFF",
	"sock_queue_rcv_skb":     "SOCKET_RCVBUFF",
	"__sock_queue_rcv_skb":   "SOCKET_RCVBUFF",
	"nf_conntrack_in":        "NF_CONNTRACK",
	"__nf_conntrack_alloc":   "NF_CONNTRACK",
	"init_conntrack":         "NF_CONNTRACK",
	"veth_xmit":              "DEV_READY",
	"br_handle_frame":        "BRIDGE",
	"br_handle_frame_finish": "BRIDGE",
	"br_dev_queue_push_xmit": "BRIDGE",
	"br_forward_finish":      "BRIDGE",
	"icmp_rcv":               "ICMP_REFUSED",
	"ip_rcv_core":            "IP_INHDR",
	"ipv6_rcv_core":          "IP_INHDR",
	"neigh_resolve_output":   "NEIGH_FAILED",
	"__neigh_event_send":     "NEIGH_FAILED",
}

// InferReason returns the reason a drop at location ("symbol+0xoff", as Symbolize
// gives it) most likely had, and the function it was taken from; ok is false when the
// function is not in the table (or location is a bare address).
func InferReason(location string) (reason, fn string, ok bool) {
	fn = SiteFunc(location)
	reason, ok = dropSites[fn]
	if !ok {
		return "", "", false
	}
	return reason, fn, true
}

// SiteFunc is the function of a drop location ("symbol+0xoff"), as the kernel's source
// names it: compiler clones keep the name before the first dot (ip_rcv_finish.isra.0).
func SiteFunc(location string) string {
	fn, _, _ := strings.Cut(location, "+")
	fn, _, _ = strings.Cut(fn, ".")
	return fn
}

// ReasonText is the reason as the text outputs show it: the kernel's name, or an
// inferred one with where it came from, as in "NETFILTER_DROP (inferred from
// nf_hook_slow)"; "" when there is none.
func (d *Drop) ReasonText() string {
	if d.Reason == "" || d.ReasonSource != ReasonInferred {
		return d.Reason
	}
	return d.Reason + " (inferred from " + d.InferredFrom + ")"
}
