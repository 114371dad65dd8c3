//go:build ignore

// SPDX-License-Identifier: GPL-2.0
/* pathtrace's kernel side: tc programs that see packets at each hop, and kfree_skb
 * programs that see them die. Every program hands packets on unchanged; each one only
 * copies the first bytes of packets that match a user-space selector into a ring buffer. */
#include "vmlinux.h"
#include "arch.h"
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

/* Flows that a selector caught, under every tuple NAT gives them (conntrack's original
 * and reply tuples, both ways round): the packets of a followed flow stay followed after
 * DNAT and SNAT and on the way back. Value: the index of the selector. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_tuple);
	__type(value, __u32);
} flows SEC(".maps");

/* state[0] != 0 once flows has an entry: until then the tc programs skip its lookup.
 * state[1]: the number of filter slots in use (the highest used slot + 1). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} state SEC(".maps");

/* Where struct nf_conn keeps its tuples, status and mark. User space reads the offsets
 * from the kernel's BTF (vmlinux or the nf_conntrack module's) and leaves ct_enabled 0
 * when it cannot: nf_conn may live in a module, out of reach of CO-RE against vmlinux. */
volatile const __u32 ct_enabled = 0;
volatile const __u32 ct_off_tuple = 0;  /* offsetof(struct nf_conn, tuplehash[0].tuple) */
volatile const __u32 ct_tuple_step = 0; /* sizeof(struct nf_conntrack_tuple_hash) */
volatile const __u32 ct_off_status = 0;
volatile const __u32 ct_off_mark = 0; /* 0: no mark field */

/* struct nf_conntrack_tuple as the kernel lays it out (stable since 2.6: user space
 * checks it against BTF before it sets ct_enabled). */
struct nf_tuple_raw {
	__u8 src[16];
	__be16 sport;
	__u16 l3num;
	__u8 dst[16];
	__be16 dport;
	__u8 protonum;
	__u8 dir;
};

/* ---- the agent: counters aggregated in the kernel (cfg_agent) ---- */

volatile const __u32 cfg_agent = 0;      /* count every packet and drop */
volatile const __u32 cfg_sample = 0;     /* measure hop latency on 1 packet in N (by hash); 0 off */
volatile const __u32 cfg_sample_mask = 0; /* N - 1 when N is a power of two: an AND instead of a division */
volatile const __u32 cfg_node_netns = 0; /* inode of the node's namespace */
volatile const __u32 cfg_reason_nf = 0;  /* SKB_DROP_REASON_NETFILTER_DROP on this kernel, 0 unknown */
volatile const __u32 cfg_drop_rate = 0;  /* drop events per second per CPU beyond followed ones */

/* The role of each traced interface of the node, by ifindex modulo 65536: an array,
 * whose lookup the verifier inlines, rather than a hash on the path of every packet.
 * Value: ifindex << 8 | CLASS_*, so a slot another ifindex shares is not mistaken.
 * Slot 0 (no interface has ifindex 0; 65536 and its multiples are left unclassified)
 * holds the number of selector slots in use, for following(). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} iface_class SEC(".maps");

static __always_inline __u32 class_of(__u32 ifindex)
{
	__u32 slot = ifindex & 0xffff;
	__u32 *v = bpf_map_lookup_elem(&iface_class, &slot);
	if (!v || (*v >> 8) != (ifindex & 0xffffff))
		return CLASS_UNKNOWN;
	__u32 c = *v & 0xff;
	return c < HOP_CLASSES ? c : CLASS_UNKNOWN;
}

/* Packets per hop class and direction: index class*2 + dir. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOP_CLASSES * 2);
	__type(key, __u32);
	__type(value, struct counter);
} pkt_count SEC(".maps");

/* Drops per reason and hop class. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct drop_key);
	__type(value, struct counter);
} drop_count SEC(".maps");

/* The last hop a sampled packet was seen at: a direct-mapped table indexed by bits of
 * the packet's key, the key itself kept to tell packets apart. An array rather than an
 * LRU hash: the first hop of every sample was an insert into the hash, a quarter of
 * the tc programs' cost on the hops where packets enter a node. Two samples that share
 * a slot within 250 ms: the later one starts anew (a sample lost, none made up). */
#define LAT_SLOTS 65536
struct lat_val {
	__u64 ts;
	__u32 class;
	__u32 key;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LAT_SLOTS);
	__type(key, __u32);
	__type(value, struct lat_val);
} lat_last SEC(".maps");

/* Hop-to-hop latency: (from*HOP_CLASSES + to)*LAT_BUCKETS + bucket; sums per pair. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOP_CLASSES * HOP_CLASSES * LAT_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} lat_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOP_CLASSES * HOP_CLASSES);
	__type(key, __u32);
	__type(value, __u64);
} lat_sum SEC(".maps");

/* An example packet per hop pair, for the histogram's exemplars: the slowest seen in
 * the last ten seconds, so a spike leads to a flow to follow. */
struct lat_ex {
	__u64 ts;
	__u64 ns;
	struct ct_tuple flow;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HOP_CLASSES * HOP_CLASSES);
	__type(key, __u32);
	__type(value, struct lat_ex);
} lat_exemplar SEC(".maps");

/* Per-CPU budgets of unfollowed events: [0] the second, [1] drop events sent in it;
 * [2] and [3] the same for retransmission events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} drop_budget SEC(".maps");

/* Full packets (cfg_snaplen above SNAP_MAX): an event with room for SNAP_FULL bytes is
 * built here, per CPU one for each kind of program (a drop program may run while a tc
 * or netfilter program is interrupted), and copied to the ring buffer at its size. */
struct full_event {
	struct event ev;
	__u8 more[SNAP_FULL - SNAP_MAX];
};
#define FULL_TC 0
#define FULL_DROP 1
#define FULL_NF 2
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, struct full_event);
} full_buf SEC(".maps");

/* Force the generated Go types. */
const struct event *unused_event __attribute__((unused));
const struct filter *unused_filter __attribute__((unused));
const struct ct_tuple *unused_ct_tuple __attribute__((unused));
const struct counter *unused_counter __attribute__((unused));
const struct drop_key *unused_drop_key __attribute__((unused));
const struct lat_ex *unused_lat_ex __attribute__((unused));

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
	if ((!f->family || f->family == t->family) && (!f->proto || f->proto == t->proto) &&
	    (side_ok(f, t->saddr, t->sport, t->family) || side_ok(f, t->daddr, t->dport, t->family)))
		return 1;
	/* The underlay: an address selector also matches the outer header of a tunnel, of
	 * its own family (SIT carries IPv6 in IPv4) and protocol (UDP, 4 or 41). */
	if (t->encap && f->has_addr && !f->port && (!f->proto || f->proto == t->encap) && f->family == t->ofamily)
		return addr_eq(f->addr, t->osaddr, t->ofamily) || addr_eq(f->addr, t->odaddr, t->ofamily);
	return 0;
}

/* following reports whether any selector is set or any flow followed: when not (an
 * agent nobody follows through), the programs skip parsing and matching. */
static __always_inline int following(void)
{
	/* Only the agent asks, and its followed flows belong to its selector slots: no
	 * slot in use, nobody follows. The count of slots in use is kept in iface_class[0]
	 * (no interface has ifindex 0), on the cache line the interface's class was just
	 * read from, rather than on a line of its own. */
	__u32 zero = 0;
	__u32 *nslots = bpf_map_lookup_elem(&iface_class, &zero);
	return nslots && *nslots;
}

/* match_filters returns the index of the first selector that matches, or -1. */
static __always_inline int match_filters(const struct tuple *t)
{
	/* state[1]: how many slots to check; slots in between may be empty (a follower
	 * of the agent left). */
	__u32 one = 1;
	__u32 *nslots = bpf_map_lookup_elem(&state, &one);
	__u32 n = nslots ? *nslots : 0;
	for (__u32 i = 0; i < MAX_FILTERS; i++) {
		if (i >= n)
			return -1;
		__u32 k = i;
		struct filter *f = bpf_map_lookup_elem(&filters, &k);
		if (!f)
			return -1;
		if (f->used && filter_one(f, t))
			return i;
	}
	return -1;
}

static __always_inline void key_of(struct ct_tuple *k, const struct tuple *t)
{
	__builtin_memcpy(k->saddr, t->saddr, 16);
	__builtin_memcpy(k->daddr, t->daddr, 16);
	k->sport = t->sport;
	k->dport = t->dport;
	k->proto = t->proto;
	k->family = t->family;
	k->_pad[0] = 0;
	k->_pad[1] = 0;
}

/* match returns the index of the selector that follows the packet, or -1: directly, or
 * through a flow the selector caught before NAT changed its addresses. */
static __always_inline int match(const struct tuple *t)
{
	int fi = match_filters(t);
	if (fi >= 0)
		return fi;
	__u32 zero = 0;
	__u32 *active = bpf_map_lookup_elem(&state, &zero);
	if (!active || !*active)
		return -1;
	struct ct_tuple k;
	key_of(&k, t);
	__u32 *v = bpf_map_lookup_elem(&flows, &k);
	return v ? (int)*v : -1;
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

static __always_inline void count_add(void *map, __u32 idx, __u32 bytes)
{
	struct counter *c = bpf_map_lookup_elem(map, &idx);
	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

/* lat_bucket: floor(log2(ns)) - 9, within 0..LAT_BUCKETS-1. */
static __always_inline __u32 lat_bucket(__u64 ns)
{
	__u32 l = 0;
	if (ns >> 32) { ns >>= 32; l += 32; }
	if (ns >> 16) { ns >>= 16; l += 16; }
	if (ns >> 8) { ns >>= 8; l += 8; }
	if (ns >> 4) { ns >>= 4; l += 4; }
	if (ns >> 2) { ns >>= 2; l += 2; }
	if (ns >> 1) { l += 1; }
	if (l < 10)
		return 0;
	l -= 9;
	return l >= LAT_BUCKETS ? LAT_BUCKETS - 1 : l;
}

/* latency records the time since the packet's previous hop on this node, for the
 * sampled packets; a key not seen for 250 ms is a new packet (a hop further than that
 * is not the same packet's: keys repeat under floods). It returns the pair's exemplar
 * when this sample should become it (the longest in the last 10 s): the caller fills in
 * the flow, from a parse that sampled packets otherwise go without. */
static __always_inline struct lat_ex *latency(__u32 key, __u32 class, __u64 now, __u64 *delta)
{
	/* The low bits of a sampled key are those the sampling tested: take higher ones. */
	__u32 slot = (key >> 8) & (LAT_SLOTS - 1);
	struct lat_val *v = bpf_map_lookup_elem(&lat_last, &slot);
	if (!v)
		return NULL;
	__u64 prev = v->ts;
	__u32 from = v->class;
	int same = v->key == key;
	v->ts = now;
	v->class = class;
	v->key = key;
	if (!same || now < prev || now - prev > 250000000ULL || from >= HOP_CLASSES || class >= HOP_CLASSES)
		return NULL;
	__u64 d = now - prev;
	__u32 pair = from * HOP_CLASSES + class;
	__u32 idx = pair * LAT_BUCKETS + lat_bucket(d);
	__u64 *n = bpf_map_lookup_elem(&lat_hist, &idx);
	if (n)
		*n += 1;
	__u64 *sum = bpf_map_lookup_elem(&lat_sum, &pair);
	if (sum)
		*sum += d;
	struct lat_ex *ex = bpf_map_lookup_elem(&lat_exemplar, &pair);
	if (ex && (d >= ex->ns || now - ex->ts > 10000000000ULL)) {
		*delta = d;
		return ex;
	}
	return NULL;
}

/* sampled: whether the packet with this key is one of the latency samples. */
static __always_inline int sampled(__u32 key)
{
	if (cfg_sample_mask)
		return (key & cfg_sample_mask) == 0;
	return key % cfg_sample == 0;
}

/* agent_tc counts the packet and says whether it is a latency sample, with the key
 * fast_key found in *key. fast_key takes apart the packets most traffic is made of at
 * fixed offsets, so that the others are not parsed when nobody follows; when it cannot
 * (*key is 0) the packet needs a full parse, whose key decides. */
static __always_inline int agent_tc(struct __sk_buff *skb, const struct reader *r, int l2, __u8 dir,
				    __u32 *class, __u32 *key)
{
	/* At ingress skb->skb_iif is the device receiving it: no read through skb->dev. */
	*class = class_of(dir == DIR_INGRESS ? skb->ingress_ifindex : skb->ifindex);
	count_add(&pkt_count, *class * 2 + (dir & 1), skb->len);
	if (!cfg_sample)
		return 0;
	*key = fast_key(r, l2);
	return !*key || sampled(*key);
}

/* budget_ok: whether one more unfollowed event of a kind (BUDGET_DROP, BUDGET_RETRANS)
 * fits this second's budget on this CPU. */
#define BUDGET_DROP 0
#define BUDGET_RETRANS 2
static __always_inline int budget_ok(__u32 base, __u64 now)
{
	__u32 k0 = base, k1 = base + 1;
	__u64 *sec = bpf_map_lookup_elem(&drop_budget, &k0);
	__u64 *cnt = bpf_map_lookup_elem(&drop_budget, &k1);
	if (!sec || !cnt)
		return 0;
	__u64 s = now / 1000000000ULL;
	if (*sec != s) {
		*sec = s;
		*cnt = 0;
	}
	if (*cnt >= cfg_drop_rate)
		return 0;
	*cnt += 1;
	return 1;
}

/* clear_nf zeroes the netfilter and conntrack fields: ring buffer memory is not. */
static __always_inline void clear_nf(struct event *ev)
{
	__builtin_memset(&ev->hook, 0, __builtin_offsetof(struct event, data) - __builtin_offsetof(struct event, hook));
	ev->ct_info = CT_NONE;
}

/* event_base fills what every event has (the time, the kind, the selector that caught
 * it) and zeroes the rest; the callers add what their hook knows. */
static __always_inline void event_base(struct event *ev, __u8 kind, __u8 dir, __u8 flags, int fi)
{
	ev->ts_ns = bpf_ktime_get_ns();
	ev->skb = 0;
	ev->location = 0;
	ev->netns = 0;
	ev->ifindex = 0;
	ev->len = 0;
	ev->reason = 0;
	ev->protocol = 0;
	ev->kind = kind;
	ev->dir = dir;
	ev->flags = flags;
	ev->filter = fi;
	__builtin_memset(ev->ifname, 0, sizeof(ev->ifname));
	clear_nf(ev);
}

/* tc_header fills an event's fields for a packet seen by a tc program. */
static __always_inline void tc_header(struct event *ev, struct __sk_buff *skb, __u8 dir, int l2, int fi)
{
	event_base(ev, EV_TC, dir, l2 ? EVF_L2 : 0, fi);
	ev->ifindex = skb->ifindex;
	ev->len = skb->len;
	ev->protocol = skb->protocol;
}

/* full_len returns how many bytes of a packet to copy in full-packet mode, 0..SNAP_FULL;
 * the check after the barrier is what the verifier bounds the copy by. */
static __always_inline __u32 full_len(__u32 avail)
{
	__u32 n = avail;
	if (n > cfg_snaplen)
		n = cfg_snaplen;
	asm volatile("" : "+r"(n));
	if (n > SNAP_FULL)
		n = SNAP_FULL;
	asm volatile("" : "+r"(n));
	return n <= SNAP_FULL ? n : 0;
}

/* Tests only: parse every packet from a copy, as those whose headers are not linear. */
volatile const __u32 cfg_parse_copy = 0;

/* The first bytes of a packet whose headers are not all in its linear part, copied to
 * be parsed: one per CPU (tc programs do not nest on a CPU). */
#define COPY_MAX 256
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[COPY_MAX]);
} parse_buf SEC(".maps");

/* parse_copy parses a copy of the packet's first bytes, for the packets whose headers
 * the direct reads could not reach. */
static __always_inline int parse_copy(struct __sk_buff *skb, int l2, struct tuple *t)
{
	__u32 zero = 0;
	__u8 *buf = bpf_map_lookup_elem(&parse_buf, &zero);
	if (!buf)
		return -1;
	__u32 len = skb->len;
	if (len > COPY_MAX)
		len = COPY_MAX;
	/* m = n - 14 in 0..COPY_MAX-14, behind a barrier: the verifier sees the bound on the
	 * very register passed (clang would otherwise check one copy and pass another). */
	__u64 m = (__u64)len - 14;
	asm volatile("" : "+r"(m));
	if (m > COPY_MAX - 14 || bpf_skb_load_bytes(skb, 0, buf, m + 14) != 0)
		return -1;
	struct reader c = {.base = buf, .limit = m + 14};
	__builtin_memset(t, 0, sizeof(*t));
	return parse_pkt(MODE_KERN, &c, l2, t);
}

/* The tuple the tc programs' parse fills: one per CPU (tc programs do not nest on a
 * CPU: egress runs with bottom halves off, ingress in them). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tuple);
} tc_tuple SEC(".maps");

/* pt_parse_skb parses the packet into this CPU's tc_tuple: 0 when it holds the packet's
 * tuple (family set), -1 when the packet is not IP or its headers are out of reach.
 * A global function: the verifier checks it once, on its own, instead of once for
 * every way the caller can arrive at the parse (the agent's branches multiplied the
 * parse's states past the 1M-instruction limit on 6.1). Its arguments are the context
 * and a scalar, which is what global functions may take on 5.10. */
__attribute__((noinline)) int pt_parse_skb(struct __sk_buff *skb, int l2)
{
	__u32 zero = 0;
	struct tuple *t = bpf_map_lookup_elem(&tc_tuple, &zero);
	if (!t || !skb)
		return -1;
	__builtin_memset(t, 0, sizeof(*t));
	struct reader r = {.skb = skb, .data = (void *)(long)skb->data, .end = (void *)(long)skb->data_end};
	int parsed = -1;
	if (!cfg_parse_copy)
		parsed = l2 ? parse_pkt(MODE_SKB, &r, 1, t) : parse_pkt(MODE_SKB, &r, 0, t);
	if (parsed < 0 && !t->family && (cfg_parse_copy || skb->len > (__u32)((long)r.end - (long)r.data)))
		parsed = l2 ? parse_copy(skb, 1, t) : parse_copy(skb, 0, t);
	return parsed;
}

static __always_inline int handle_tc(struct __sk_buff *skb, __u8 dir, int l2)
{
	struct reader r = {.skb = skb, .data = (void *)(long)skb->data, .end = (void *)(long)skb->data_end};
	__u32 class = CLASS_UNKNOWN, key = 0;
	struct lat_ex *ex = NULL;
	__u64 now = 0, d = 0;
	if (cfg_agent) {
		if (!agent_tc(skb, &r, l2, dir, &class, &key)) {
			if (!following())
				return PASS_ON;
		} else if (key) {
			/* A sample fast_key took apart needs no parse, unless it becomes its
			 * pair's exemplar (which names the flow) or somebody follows. */
			now = bpf_ktime_get_ns();
			ex = latency(key, class, now, &d);
			if (!ex && !following())
				return PASS_ON;
		}
	}
	int parsed = pt_parse_skb(skb, l2);
	__u32 zero = 0;
	struct tuple *t = bpf_map_lookup_elem(&tc_tuple, &zero);
	if (!t)
		return PASS_ON;
	if (cfg_agent) {
		if (!key && cfg_sample && t->family && sampled(t->key)) {
			now = bpf_ktime_get_ns();
			ex = latency(t->key, class, now, &d);
		}
		if (ex && t->family) {
			ex->ts = now;
			ex->ns = d;
			key_of(&ex->flow, t);
		}
		if (!following())
			return PASS_ON;
	}
	if (parsed < 0)
		return PASS_ON;
	int fi = match(t);
	if (fi < 0)
		return PASS_ON;

	if (cfg_snaplen > SNAP_MAX) {
		/* Whole packets: built in the per-CPU buffer, sent at their size. */
		__u32 k = FULL_TC;
		struct full_event *fe = bpf_map_lookup_elem(&full_buf, &k);
		if (!fe)
			return PASS_ON;
		tc_header(&fe->ev, skb, dir, l2, fi);
		/* m = n - 1 below SNAP_FULL: the verifier sees 1..SNAP_FULL bytes. The barrier
		 * keeps clang from using n again for m + 1. */
		__u32 n = 0;
		__u64 m = (__u64)full_len(skb->len) - 1;
		asm volatile("" : "+r"(m));
		if (m < SNAP_FULL && bpf_skb_load_bytes(skb, 0, fe->ev.data, m + 1) == 0)
			n = m + 1;
		fe->ev.snap_len = n;
		if (bpf_ringbuf_output(&events, fe, __builtin_offsetof(struct event, data) + n, 0))
			count_lost(LOST_TC);
		return PASS_ON;
	}
	struct event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_lost(LOST_TC);
		return PASS_ON;
	}
	tc_header(ev, skb, dir, l2, fi);
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

/* outer_frame says whether an IP-in-IP device's packet at tc ingress still starts with
 * the frame it arrived in: the underlay's Ethernet header, then the outer IP header.
 * Before 5.14 (7ad136fd288c, "ipip: allow redirecting ipip and mplsip packets to eth
 * devices") ipip's programs saw that; since, the inner packet alone, as on any L3
 * device. Read from the packet: an IP header whose length is the packet's is the inner
 * packet; an Ethernet header whose IP header carries IP (protocol 4 or 41) is the frame. */
static __always_inline int outer_frame(struct __sk_buff *skb)
{
	__u8 b[24];
	if (bpf_skb_load_bytes(skb, 0, b, sizeof(b)) < 0)
		return 0;
	__u8 v = b[0] >> 4;
	if (v == 4 && (b[0] & 0xf) >= 5 && (((__u32)b[2] << 8) | b[3]) == skb->len)
		return 0;
	if (v == 6 && (((__u32)b[4] << 8) | b[5]) + 40 == skb->len)
		return 0;
	__u16 et = ((__u16)b[12] << 8) | b[13];
	if (et == 0x0800 && (b[14] >> 4) == 4)
		return b[14 + 9] == 4 || b[14 + 9] == 41;
	if (et == 0x86DD && (b[14] >> 4) == 6)
		return b[14 + 6] == 4 || b[14 + 6] == 41;
	return 0;
}

/* For the ingress of IP-in-IP devices (ipip, sit, ip6tnl): as tc_ingress_l3, or as
 * tc_ingress when the kernel hands the whole frame (outer_frame). */
SEC("tc")
int tc_ingress_tun(struct __sk_buff *skb)
{
	if (outer_frame(skb))
		return handle_tc(skb, DIR_INGRESS, 1);
	return handle_tc(skb, DIR_INGRESS, 0);
}

static __always_inline void tuple_of(struct ct_tuple *k, const struct nf_tuple_raw *r)
{
	__builtin_memcpy(k->saddr, r->src, 16);
	__builtin_memcpy(k->daddr, r->dst, 16);
	k->proto = r->protonum;
	k->family = r->l3num == 10 ? 6 : 4; /* AF_INET6 : AF_INET */
	if (k->family == 4) {
		/* only the first four bytes of an IPv4 union nf_inet_addr are the address */
		__builtin_memset(k->saddr + 4, 0, 12);
		__builtin_memset(k->daddr + 4, 0, 12);
	}
	if (r->protonum == PROTO_TCP || r->protonum == PROTO_UDP || r->protonum == 132 /* SCTP */) {
		k->sport = bpf_ntohs(r->sport);
		k->dport = bpf_ntohs(r->dport);
	} else {
		k->sport = 0;
		k->dport = 0;
	}
	k->_pad[0] = 0;
	k->_pad[1] = 0;
}

static __always_inline void reverse(struct ct_tuple *dst, const struct ct_tuple *src)
{
	__builtin_memcpy(dst->saddr, src->daddr, 16);
	__builtin_memcpy(dst->daddr, src->saddr, 16);
	dst->sport = src->dport;
	dst->dport = src->sport;
	dst->proto = src->proto;
	dst->family = src->family;
	dst->_pad[0] = 0;
	dst->_pad[1] = 0;
}

static __always_inline void follow_tuple(const struct ct_tuple *src, __u32 fi)
{
	/* Keys from the stack: before 5.13 (or so) the map helpers take no ring buffer
	 * memory, where src may live ("R2 type=mem expected=fp, ..." on 5.10). */
	struct ct_tuple k, r;
	__builtin_memcpy(&k, src, sizeof(k));
	bpf_map_update_elem(&flows, &k, &fi, BPF_ANY);
	reverse(&r, &k);
	bpf_map_update_elem(&flows, &r, &fi, BPF_ANY);
}

/* read_ct copies the packet's conntrack entry into ev. With fi >= 0 it also follows the
 * entry's tuples, so the packets of this flow match after NAT. */
static __always_inline void read_ct(struct sk_buff *skb, struct event *ev, int fi)
{
	if (!ct_enabled || !bpf_core_field_exists(skb->_nfct))
		return;
	ev->flags |= EVF_CT;
	unsigned long nfct = BPF_CORE_READ(skb, _nfct);
	const __u8 *ct = (const __u8 *)(nfct & ~7UL);
	__u8 info = nfct & 7;
	if (!ct && info != 7 /* IP_CT_UNTRACKED */) {
		ev->ct_info = CT_NONE;
		return;
	}
	ev->ct_info = info;
	if (!ct)
		return;
	struct nf_tuple_raw raw;
	if (bpf_probe_read_kernel(&raw, sizeof(raw), ct + ct_off_tuple) == 0)
		tuple_of(&ev->ct_orig, &raw);
	if (bpf_probe_read_kernel(&raw, sizeof(raw), ct + ct_off_tuple + ct_tuple_step) == 0)
		tuple_of(&ev->ct_reply, &raw);
	unsigned long status = 0;
	bpf_probe_read_kernel(&status, sizeof(status), ct + ct_off_status);
	ev->ct_status = (__u32)status;
	if (ct_off_mark)
		bpf_probe_read_kernel(&ev->ct_mark, sizeof(ev->ct_mark), ct + ct_off_mark);
	if (fi < 0 || !ev->ct_orig.family)
		return;
	follow_tuple(&ev->ct_orig, fi);
	follow_tuple(&ev->ct_reply, fi);
	__u32 zero = 0, one = 1;
	bpf_map_update_elem(&state, &zero, &one, BPF_ANY);
}

/* match_ct tries the selectors on the tuples of the packet's conntrack entry: the first
 * packet of a connection that NAT already rewrote (after DNAT at PREROUTING, say) is
 * still the followed one. Returns the selector's index or -1. */
static __always_inline int match_ct(struct sk_buff *skb)
{
	if (!ct_enabled || !bpf_core_field_exists(skb->_nfct))
		return -1;
	unsigned long nfct = BPF_CORE_READ(skb, _nfct);
	const __u8 *ct = (const __u8 *)(nfct & ~7UL);
	if (!ct)
		return -1;
	struct nf_tuple_raw raw;
	struct ct_tuple k;
	struct tuple t;
	for (int dir = 0; dir < 2; dir++) {
		if (bpf_probe_read_kernel(&raw, sizeof(raw), ct + ct_off_tuple + dir * ct_tuple_step))
			return -1;
		tuple_of(&k, &raw);
		__builtin_memset(&t, 0, sizeof(t));
		__builtin_memcpy(t.saddr, k.saddr, 16);
		__builtin_memcpy(t.daddr, k.daddr, 16);
		t.sport = k.sport;
		t.dport = k.dport;
		t.proto = k.proto;
		t.family = k.family;
		int fi = match_filters(&t);
		if (fi >= 0)
			return fi;
	}
	return -1;
}

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

/* parse_kern parses a packet from its network header in kernel memory (the drop and
 * netfilter programs); r is left describing those bytes for snap_kern. */
static __always_inline int parse_kern(struct sk_buff *skb, struct reader *r, struct tuple *t)
{
	const __u8 *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u32 tail = BPF_CORE_READ(skb, tail);
	if (!head || nh == (__u16)~0U || tail <= nh)
		return -1;
	r->skb = 0;
	r->data = 0;
	r->end = 0;
	r->base = head + nh;
	r->limit = tail - nh;
	__builtin_memset(t, 0, sizeof(*t));
	return parse_pkt(MODE_KERN, r, 0, t);
}

/* snap_kern copies the first bytes of a parse_kern packet into the event. */
static __always_inline void snap_kern(struct event *ev, const struct reader *r)
{
	__u32 n = snap_len(r->limit);
	ev->snap_len = 0;
	if (n && bpf_probe_read_kernel(ev->data, n, r->base) == 0)
		ev->snap_len = n;
}

/* drop_class is the hop class a drop is counted under. */
static __always_inline __u32 drop_class(struct sk_buff *skb, __u32 ns, __u32 reason)
{
	if (cfg_reason_nf && reason == cfg_reason_nf)
		return CLASS_NETFILTER;
	if (ns != cfg_node_netns)
		return CLASS_POD; /* inside a pod's namespace */
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		__u32 cls = class_of(BPF_CORE_READ(dev, ifindex));
		if (cls != CLASS_UNKNOWN)
			return cls;
	}
	return CLASS_STACK;
}

/* output_full_kern sends a full-packet event whose header is filled, with the packet's
 * linear part (from the network header to the tail) read from kernel memory. */
static __always_inline void output_full_kern(struct full_event *fe, const struct reader *r, __u32 lost_slot)
{
	/* m = n - 1 below SNAP_FULL: the verifier sees 1..SNAP_FULL bytes. 64 bits and the
	 * barrier keep clang from checking one copy of the length and passing another. */
	__u32 n = 0;
	__u64 m = (__u64)full_len(r->limit) - 1;
	asm volatile("" : "+r"(m));
	if (m < SNAP_FULL && bpf_probe_read_kernel(fe->ev.data, m + 1, r->base) == 0)
		n = m + 1;
	fe->ev.snap_len = n;
	if (bpf_ringbuf_output(&events, fe, __builtin_offsetof(struct event, data) + n, 0))
		count_lost(lost_slot);
}

/* drop_header fills an event's fields for a packet kfree_skb frees. */
static __always_inline void drop_header(struct event *ev, struct sk_buff *skb, __u64 location, __u32 reason,
					__u32 ns, int fi)
{
	event_base(ev, EV_DROP, DIR_NONE, 0, fi);
	ev->skb = (__u64)skb;
	ev->location = location;
	ev->netns = ns;
	ev->len = BPF_CORE_READ(skb, len);
	ev->reason = reason;
	ev->protocol = BPF_CORE_READ(skb, protocol);
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	ev->ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	if (dev)
		bpf_probe_read_kernel_str(ev->ifname, sizeof(ev->ifname), dev->name);
}

/* handle_drop counts a drop, and reports it if it is followed or within the budget.
 * by_loc: the kernel gives no reason; the count is kept per call site instead. */
static __always_inline int handle_drop(struct sk_buff *skb, __u64 location, __u32 reason, int by_loc)
{
	__u32 ns = skb_netns(skb);
	if (!bpf_map_lookup_elem(&netns_allow, &ns))
		return 0;
	if (cfg_agent) {
		struct drop_key dk = {.reason = reason, .class = drop_class(skb, ns, reason),
				      .dir = BPF_CORE_READ(skb, skb_iif) ? DIR_INGRESS : DIR_EGRESS,
				      .loc = by_loc ? location : 0};
		__u32 len = BPF_CORE_READ(skb, len);
		struct counter *c = bpf_map_lookup_elem(&drop_count, &dk);
		if (!c) {
			/* Zeroes on every CPU; if another CPU added the key first, use that. */
			struct counter zero = {};
			bpf_map_update_elem(&drop_count, &dk, &zero, BPF_NOEXIST);
			c = bpf_map_lookup_elem(&drop_count, &dk);
		}
		if (c) {
			c->packets += 1;
			c->bytes += len;
		} else {
			count_lost(LOST_MAP);
		}
	}

	struct reader r;
	struct tuple t;
	if (parse_kern(skb, &r, &t) < 0)
		return 0;
	int fi = match(&t);
	if (fi < 0) {
		/* The agent also reports drops nobody follows, within a budget. */
		if (!cfg_agent || !cfg_drop_rate)
			return 0;
		if (!budget_ok(BUDGET_DROP, bpf_ktime_get_ns())) {
			count_lost(LOST_RATELIMIT);
			return 0;
		}
		fi = FILTER_UNFOLLOWED;
	}

	if (cfg_snaplen > SNAP_MAX) {
		__u32 k = FULL_DROP;
		struct full_event *fe = bpf_map_lookup_elem(&full_buf, &k);
		if (!fe)
			return 0;
		drop_header(&fe->ev, skb, location, reason, ns, fi);
		read_ct(skb, &fe->ev, -1);
		output_full_kern(fe, &r, LOST_DROP);
		return 0;
	}
	struct event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_lost(LOST_DROP);
		return 0;
	}
	drop_header(ev, skb, location, reason, ns, fi);
	read_ct(skb, ev, -1);
	snap_kern(ev, &r);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* kfree_skb with BTF-typed arguments: kernels 5.17+ pass the drop reason. On older
 * kernels this program fails to load and user space falls back to a raw tracepoint. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(kfree_skb_btf, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return handle_drop(skb, (__u64)location, (__u32)reason, 0);
}

/* The same tracepoint, raw: needs no BTF trampoline support. */
SEC("raw_tp/kfree_skb")
int kfree_skb_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_drop((struct sk_buff *)ctx->args[0], ctx->args[1], (__u32)ctx->args[2], 0);
}

/* Kernels before 5.17: the tracepoint has no reason argument, and reading one would
 * make the attach fail. */
SEC("raw_tp/kfree_skb")
int kfree_skb_raw_noreason(struct bpf_raw_tracepoint_args *ctx)
{
	return handle_drop((struct sk_buff *)ctx->args[0], ctx->args[1], 0, 1);
}

static __always_inline void dev_name(char *dst, struct net_device *dev)
{
	if (dev)
		bpf_probe_read_kernel_str(dst, 16, dev->name);
}

/* handle_nf reports a packet at a netfilter hook, with its conntrack state, and follows
 * its flow through NAT. It always accepts: the verdict is the ruleset's, not ours. */
/* nf_header fills an event's fields, conntrack's included, for a packet a netfilter
 * hook sees. */
static __always_inline void nf_header(struct event *ev, struct sk_buff *skb, const struct nf_hook_state *st,
				      __u8 pos, int fi, __u8 encap)
{
	event_base(ev, EV_NF, DIR_NONE, 0, fi);
	ev->skb = (__u64)skb;
	ev->len = BPF_CORE_READ(skb, len);
	ev->protocol = BPF_CORE_READ(skb, protocol);
	ev->hook = BPF_CORE_READ(st, hook);
	ev->pf = BPF_CORE_READ(st, pf);
	ev->nf_pos = pos;
	struct net_device *in = BPF_CORE_READ(st, in);
	struct net_device *out = BPF_CORE_READ(st, out);
	ev->ifindex = in ? BPF_CORE_READ(in, ifindex) : 0;
	ev->out_ifindex = out ? BPF_CORE_READ(out, ifindex) : 0;
	dev_name(ev->ifname, in);
	dev_name(ev->out_ifname, out);
	struct net *net = BPF_CORE_READ(st, net);
	ev->netns = net ? BPF_CORE_READ(net, ns.inum) : 0;
	/* The conntrack entry of a tunnel's outer packet is the underlay's, not the flow's:
	 * following it would follow every packet between the two nodes. */
	read_ct(skb, ev, encap ? -1 : fi);
}

static __always_inline int handle_nf(struct sk_buff *skb, const struct nf_hook_state *st, __u8 pos)
{
	/* The netfilter hooks only serve followed flows. */
	if (cfg_agent && !following())
		return 1;
	struct reader r;
	struct tuple t;
	if (parse_kern(skb, &r, &t) < 0)
		return 1;
	int fi = match(&t);
	if (fi < 0)
		fi = match_ct(skb);
	if (fi < 0)
		return 1;

	if (cfg_snaplen > SNAP_MAX) {
		__u32 k = FULL_NF;
		struct full_event *fe = bpf_map_lookup_elem(&full_buf, &k);
		if (!fe)
			return 1;
		nf_header(&fe->ev, skb, st, pos, fi, t.encap);
		output_full_kern(fe, &r, LOST_NF);
		return 1;
	}
	struct event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_lost(LOST_NF);
		return 1;
	}
	nf_header(ev, skb, st, pos, fi, t.encap);
	snap_kern(ev, &r);
	bpf_ringbuf_submit(ev, 0);
	return 1; /* NF_ACCEPT */
}

/* BPF netfilter links (6.4+), attached at the first and the last priority of each hook,
 * so the packet is seen before and after the ruleset (and NAT) had its way. */
SEC("netfilter")
int nf_first(struct bpf_nf_ctx *ctx) { return handle_nf(ctx->skb, ctx->state, NF_FIRST); }

SEC("netfilter")
int nf_last(struct bpf_nf_ctx *ctx) { return handle_nf(ctx->skb, ctx->state, NF_LAST); }

/* br_sabotaged: whether br_netfilter's ip_sabotage_in, first at PREROUTING, will stop
 * this packet before any rule sees it: a bridged packet that already went through
 * PREROUTING on its way over the bridge (its bridge netfilter state says it is no longer
 * in it) meets the hook again when the bridge hands it up to IP. The links never see
 * that pass; a kprobe on nf_hook_slow's entry does, and leaves it out for the same
 * journey as the links give. */
static __always_inline int br_sabotaged(struct sk_buff *skb, __u8 hook)
{
	if (hook != 0 /* NF_INET_PRE_ROUTING */ || !bpf_core_field_exists(skb->active_extensions) ||
	    !bpf_core_enum_value_exists(enum skb_ext_id, SKB_EXT_BRIDGE_NF))
		return 0;
	__u32 id = bpf_core_enum_value(enum skb_ext_id, SKB_EXT_BRIDGE_NF) & 7;
	__u8 active = BPF_CORE_READ(skb, active_extensions);
	if (!(active & (1 << id)))
		return 0;
	struct skb_ext *ext = BPF_CORE_READ(skb, extensions);
	__u8 off = 0;
	if (!ext || bpf_probe_read_kernel(&off, 1, &ext->offset[id]) || !off)
		return 0;
	struct nf_bridge_info *nb = (void *)((char *)ext + ((__u32)off << 3 /* SKB_EXT_ALIGN_SHIFT */));
	return !BPF_CORE_READ_BITFIELD_PROBED(nb, in_prerouting);
}

/* Older kernels: nf_hook_slow runs the hooks of one hook point; a kprobe on it sees the
 * packet on entry to each (not after: NAT shows on the next hop instead). Netfilter
 * links are per namespace, a kprobe is not: drop packets of other namespaces. */
SEC("kprobe/nf_hook_slow")
int BPF_KPROBE(kp_nf_hook_slow, struct sk_buff *skb, const struct nf_hook_state *st)
{
	/* What the links see: the IPv4 and IPv6 hooks of the traced namespace only, not
	 * its pods' namespaces nor the bridge family's hooks (br_netfilter). */
	struct net *net = BPF_CORE_READ(st, net);
	__u32 ns = net ? BPF_CORE_READ(net, ns.inum) : 0;
	if (ns != cfg_node_netns)
		return 0;
	__u8 pf = BPF_CORE_READ(st, pf);
	if (pf != 2 /* NFPROTO_IPV4 */ && pf != 10 /* NFPROTO_IPV6 */)
		return 0;
	if (br_sabotaged(skb, BPF_CORE_READ(st, hook)))
		return 0;
	handle_nf(skb, st, NF_ENTRY);
	return 0;
}

/* tcp:tcp_retransmit_skb, in agent mode: a TCP segment of a socket in a traced namespace
 * is sent again. The event carries the connection (ct_orig: local address and port as
 * source); user space counts its flow as flagged by a retransmission. Within the same
 * per-CPU budget per second as unfollowed drops, the excess counted. The segment has no
 * headers yet at this point, so the event carries no packet bytes. */
SEC("raw_tp/tcp_retransmit_skb")
int tcp_retransmit(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	if (!sk || !cfg_drop_rate)
		return 0;
	__u32 ns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (!bpf_map_lookup_elem(&netns_allow, &ns))
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != 2 && family != 10)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (!budget_ok(BUDGET_RETRANS, now)) {
		count_lost(LOST_RATELIMIT);
		return 0;
	}
	struct event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_lost(LOST_DROP);
		return 0;
	}
	event_base(ev, EV_RETRANS, DIR_NONE, 0, FILTER_UNFOLLOWED);
	ev->ts_ns = now;
	ev->netns = ns;
	struct ct_tuple *k = &ev->ct_orig;
	/* Whole addresses: BPF_CORE_READ_INTO into an array would copy one element. */
	if (family == 2) {
		bpf_core_read(k->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(k->daddr, 4, &sk->__sk_common.skc_daddr);
		k->family = 4;
	} else {
		bpf_core_read(k->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(k->daddr, 16, &sk->__sk_common.skc_v6_daddr);
		k->family = 6;
	}
	k->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	k->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	k->proto = PROTO_TCP;
	ev->snap_len = 0;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}
