//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* labredirect's tc program: what Cilium's bpf_overlay does for a packet that comes out
 * of the tunnel for a pod of this node. It looks the inner destination up in pods
 * (pod address -> host veth ifindex) and sends the packet with bpf_redirect_peer
 * straight to the ingress of the veth's peer, the pod's eth0: the host veth, the
 * bridge, the node's routing and netfilter never see it. Anything else goes on
 * (TC_ACT_OK, as Cilium returns). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define TC_ACT_OK 0
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* A pod address: IPv6, or IPv4 mapped (::ffff:a.b.c.d). */
struct pod_key {
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct pod_key);
	__type(value, __u32); /* host veth ifindex, in the node's namespace */
	__uint(max_entries, 256);
} pods SEC(".maps");

/* What the program did, per CPU: user space sums the CPUs. */
enum counter {
	COUNTER_REDIRECT_PEER = 0,
	COUNTER_PASS = 1,
	COUNTER_MAX = 2,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum counter); /* names the enum in BTF, for bpf2go -type */
	__type(value, __u64);
	__uint(max_entries, COUNTER_MAX);
} counters SEC(".maps");

static __always_inline void count(enum counter c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);

	if (v)
		*v += 1;
}

/* dst_key reads the destination address of an IPv4 or IPv6 packet, relative to the
 * network header, so that the same code runs on L2 (VXLAN, Geneve: an inner Ethernet
 * header) and L3 tunnels (tunl0: none). */
static __always_inline int dst_key(struct __sk_buff *skb, struct pod_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		k->addr[10] = 0xff;
		k->addr[11] = 0xff;
		return bpf_skb_load_bytes_relative(skb, 16, &k->addr[12], 4, BPF_HDR_START_NET);
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return bpf_skb_load_bytes_relative(skb, 24, k->addr, 16, BPF_HDR_START_NET);
	return -1;
}

SEC("tc")
int from_overlay(struct __sk_buff *skb)
{
	struct pod_key k;
	__u32 *ifindex;

	if (dst_key(skb, &k) == 0) {
		ifindex = bpf_map_lookup_elem(&pods, &k);
		if (ifindex) {
			count(COUNTER_REDIRECT_PEER);
			return bpf_redirect_peer(*ifindex, 0);
		}
	}
	count(COUNTER_PASS);
	return TC_ACT_OK;
}
