//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* pathtrace's kernel side: tc programs that see packets at each hop, and kfree_skb
 * programs that see them die. Every program hands packets on unchanged; each one only
 * copies the first bytes of packets that match a user-space selector into a ring buffer. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "pathtrace.h"
#include "parse.h"

char LICENSE[] SEC("license") = "GPL";

/* TC_ACT_UNSPEC for cls_bpf and TCX_NEXT for tcx are both -1: run the next program,
 * then carry on with the packet as if we had not been here. */
#define PASS_ON -1

volatile const __u32 cfg_snaplen = 256;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_FILTERS);
	__type(key, __u32);
	__type(value, struct filter);
} filters SEC(".maps");

/* Events the kernel could not deliver because the ring buffer was full, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOST_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Network namespaces (inode numbers) whose drops belong to this tracer: the node's own
 * and those of the pods behind its veths. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} netns_allow SEC(".maps");

/* Force the generated Go types. */
const struct event *unused_event __attribute__((unused));
const struct filter *unused_filter __attribute__((unused));

static __always_inline int addr_eq(const __u8 *a, const __u8 *b, __u8 family)
{
	if (family == 4)
		return *(const __u32 *)a == *(const __u32 *)b;
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1];
}

static __always_inline int side_ok(const struct filter *f, const __u8 *addr, __u16 port, __u8 family)
{
	if (f->has_addr && !addr_eq(f->addr, addr, family))
		return 0;
	if (f->port && f->port != port)
		return 0;
	return 1;
}

static __always_inline int filter_one(const struct filter *f, const struct tuple *t)
{
	if (f->family && f->family != t->family)
		return 0;
	if (f->proto && f->proto != t->proto)
		return 0;
	if (side_ok(f, t->saddr, t->sport, t->family) || side_ok(f, t->daddr, t->dport, t->family))
		return 1;
	/* The underlay: an address selector also matches the outer header of a tunnel. */
	if (t->encap && f->has_addr && !f->port && (!f->proto || f->proto == PROTO_UDP))
		return addr_eq(f->addr, t->osaddr, t->family) || addr_eq(f->addr, t->odaddr, t->family);
	return 0;
}

/* match returns the index of the first filter that matches, or -1. */
static __always_inline int match(const struct tuple *t)
{
#pragma unroll
	for (__u32 i = 0; i < MAX_FILTERS; i++) {
		__u32 k = i;
		struct filter *f = bpf_map_lookup_elem(&filters, &k);
		if (!f || !f->used)
			return -1;
		if (filter_one(f, t))
			return i;
	}
	return -1;
}

static __always_inline void count_lost(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&lost, &slot);
	if (v)
		*v += 1;
}

/* snap_len returns how many bytes to copy, 1..SNAP_MAX, or 0 for none. The mask after
 * the barrier is what lets the verifier see the bound on every kernel. */
static __always_inline __u32 snap_len(__u32 avail)
{
	__u32 n = avail;
	if (n > cfg_snaplen)
		n = cfg_snaplen;
	if (n == 0)
		return 0;
	if (n > SNAP_MAX)
		n = SNAP_MAX;
	asm volatile("" : "+r"(n));
	return ((n - 1) & (SNAP_MAX - 1)) + 1;
}

static __always_inline int handle_tc(struct __sk_buff *skb, __u8 dir, int l2)
{
	struct reader r = {.skb = skb};
	struct tuple t;
	__builtin_memset(&t, 0, sizeof(t));
	if (parse_pkt(MODE_SKB, &r, l2, &t) < 0)
		return PASS_ON;
	int fi = match(&t);
	if (fi < 0)
		return PASS_ON;

	struct event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_lost(LOST_TC);
		return PASS_ON;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->skb = 0;
	ev->location = 0;
	ev->netns = 0;
	ev->ifindex = skb->ifindex;
	ev->len = skb->len;
	ev->reason = 0;
	ev->protocol = skb->protocol;
	ev->kind = EV_TC;
	ev->dir = dir;
	ev->flags = l2 ? EVF_L2 : 0;
	ev->filter = fi;
	__builtin_memset(ev->ifname, 0, sizeof(ev->ifname));
	__u32 n = snap_len(skb->len);
	ev->snap_len = 0;
	if (n && bpf_skb_load_bytes(skb, 0, ev->data, n) == 0)
		ev->snap_len = n;
	bpf_ringbuf_submit(ev, 0);
	return PASS_ON;
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb) { return handle_tc(skb, DIR_INGRESS, 1); }

SEC("tc")
int tc_egress(struct __sk_buff *skb) { return handle_tc(skb, DIR_EGRESS, 1); }

/* For devices without a link-layer header (ipip, wireguard, tun). */
SEC("tc")
int tc_ingress_l3(struct __sk_buff *skb) { return handle_tc(skb, DIR_INGRESS, 0); }

SEC("tc")
int tc_egress_l3(struct __sk_buff *skb) { return handle_tc(skb, DIR_EGRESS, 0); }

static __always_inline __u32 skb_netns(struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev)
		return BPF_CORE_READ(dev, nd_net.net, ns.inum);
	struct sock *sk = BPF_CORE_READ(skb, sk);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return 0;
}

static __always_inline int handle_drop(struct sk_buff *skb, __u64 location, __u32 reason)
{
	const __u8 *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u32 tail = BPF_CORE_READ(skb, tail);
	if (!head || nh == (__u16)~0U || tail <= nh)
		return 0;

	struct reader r = {.base = head + nh, .limit = tail - nh};
	struct tuple t;
	__builtin_memset(&t, 0, sizeof(t));
	if (parse_pkt(MODE_KERN, &r, 0, &t) < 0)
		return 0;
	int fi = match(&t);
	if (fi < 0)
		return 0;
	__u32 ns = skb_netns(skb);
	if (!bpf_map_lookup_elem(&netns_allow, &ns))
		return 0;

	struct event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_lost(LOST_DROP);
		return 0;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->skb = (__u64)skb;
	ev->location = location;
	ev->netns = ns;
	ev->len = BPF_CORE_READ(skb, len);
	ev->reason = reason;
	ev->protocol = BPF_CORE_READ(skb, protocol);
	ev->kind = EV_DROP;
	ev->dir = DIR_NONE;
	ev->flags = 0;
	ev->filter = fi;
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	ev->ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	__builtin_memset(ev->ifname, 0, sizeof(ev->ifname));
	if (dev)
		bpf_probe_read_kernel_str(ev->ifname, sizeof(ev->ifname), dev->name);
	__u32 n = snap_len(tail - nh);
	ev->snap_len = 0;
	if (n && bpf_probe_read_kernel(ev->data, n, head + nh) == 0)
		ev->snap_len = n;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* kfree_skb with BTF-typed arguments: kernels 5.17+ pass the drop reason. On older
 * kernels this program fails to load and user space falls back to a raw tracepoint. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb_btf, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return handle_drop(skb, (__u64)location, (__u32)reason);
}

/* The same tracepoint, raw: needs no BTF trampoline support. */
SEC("raw_tp/kfree_skb")
int kfree_skb_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_drop((struct sk_buff *)ctx->args[0], ctx->args[1], (__u32)ctx->args[2]);
}

/* Kernels before 5.17: the tracepoint has no reason argument, and reading one would
 * make the attach fail. */
SEC("raw_tp/kfree_skb")
int kfree_skb_raw_noreason(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_drop((struct sk_buff *)ctx->args[0], ctx->args[1], 0);
}
