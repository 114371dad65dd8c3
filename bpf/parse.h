/* SPDX-License-Identifier: GPL-2.0 */
/* Header parsing shared by the tc and kfree_skb programs.
 *
 * The same parser reads either the linear part of the packet directly (tc, MODE_SKB) or through
 * bpf_probe_read_kernel from skb->head (tracing, MODE_KERN). The mode is a literal at
 * every call site, so after inlining only one reader remains in each program.
 * It extracts just what the in-kernel filter needs: family, protocol, addresses and
 * ports, of the inner packet when the outer one is a tunnel's (VXLAN, Geneve, IP in
 * IP). The full decode is Go's.
 */
#ifndef PATHTRACE_PARSE_H
#define PATHTRACE_PARSE_H

#define MODE_SKB 0
#define MODE_KERN 1

#define ETH_P_IP_BE 0x0008
#define ETH_P_IPV6_BE 0xDD86
#define ETH_P_8021Q_BE 0x0081
#define ETH_P_8021AD_BE 0xA888

#define PROTO_IPIP 4 /* IPv4 in IP */
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_IPV6 41 /* IPv6 in IP */

#define GENEVE_ETH 0x6558 /* Geneve's protocol type of an Ethernet frame */

/* Tunnels taken apart, one inside the other. One: the kernel's tuple of a packet in a
 * tunnel in a tunnel (a pod's VXLAN in the node's) is the middle one's; Go reads to the
 * innermost. Each layer inlines one more IP parse behind a variable offset: two cost
 * the tc programs 350,000 instructions on 6.18 instead of 75,000. */
#define ENCAP_DEPTH 1

struct reader {
	struct __sk_buff *skb; /* MODE_SKB */
	void *data, *end;      /* MODE_SKB: the linear part, for direct access */
	const __u8 *base;      /* MODE_KERN: first byte of the packet */
	__u32 limit;           /* bytes that may be read from offset 0 */
};

struct tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host order */
	__u16 dport;
	__u8 family; /* 4 or 6, 0 when not IP */
	__u8 proto;
	/* Not 0: the tuple is the inner one of a tunnel's packet, carried in this IP
	 * protocol (PROTO_UDP for VXLAN and Geneve, PROTO_IPIP, PROTO_IPV6). */
	__u8 encap;
	__u8 ofamily;    /* the outer header's family when encap */
	__u8 osaddr[16]; /* outer (outermost) addresses when encap */
	__u8 odaddr[16];
	/* A hash of fields no hop rewrites (IP ID and length, TCP sequence and
	 * acknowledgement numbers): the agent's key for one packet across hops. */
	__u32 key;
};

static __always_inline __u32 mix32(__u32 h, __u32 v)
{
	h ^= v;
	h *= 0x9E3779B1;
	return h ^ (h >> 15);
}

volatile const __u16 cfg_vxlan_ports[MAX_VXLAN_PORTS] = {8472, 4789, 0, 0};
volatile const __u16 cfg_geneve_ports[MAX_GENEVE_PORTS] = {6081, 0, 0, 0};

static __always_inline int rd(const int mode, struct reader *r, __u32 off, void *dst, __u32 len)
{
	if (mode == MODE_SKB) {
		/* Direct access to the linear part only: a copy instead of a helper call, and
		 * one way through each read for the verifier (a fallback to
		 * bpf_skb_load_bytes at every read doubled the states it explores with each
		 * one). The caller parses a copy when headers lie beyond the linear part. */
		__u32 o = off & 0x3ff;
		if (o != off || r->data + o + len > r->end)
			return -1;
		__builtin_memcpy(dst, r->data + o, len);
		return 0;
	}
	if (off > r->limit || len > r->limit - off)
		return -1;
	return bpf_probe_read_kernel(dst, len, r->base + off);
}

static __always_inline int is_vxlan_port(__u16 port)
{
#pragma unroll
	for (int i = 0; i < MAX_VXLAN_PORTS; i++) {
		if (cfg_vxlan_ports[i] && cfg_vxlan_ports[i] == port)
			return 1;
	}
	return 0;
}

static __always_inline int is_geneve_port(__u16 port)
{
#pragma unroll
	for (int i = 0; i < MAX_GENEVE_PORTS; i++) {
		if (cfg_geneve_ports[i] && cfg_geneve_ports[i] == port)
			return 1;
	}
	return 0;
}

/* parse_l3 reads the IP header at off and fills addresses, protocol and ports.
 * Returns the offset of the L4 header, or -1. */
static __always_inline int parse_l3(const int mode, struct reader *r, __u32 off, struct tuple *t)
{
	__u8 vb;
	if (rd(mode, r, off, &vb, 1) < 0)
		return -1;
	__u8 ver = vb >> 4;
	int fragmented = 0;

	if (ver == 4) {
		struct iphdr ip;
		if (rd(mode, r, off, &ip, sizeof(ip)) < 0)
			return -1;
		t->family = 4;
		t->proto = ip.protocol;
		t->key = mix32(0x2545F491 ^ ip.protocol, ((__u32)ip.id << 16) | ip.tot_len);
		__builtin_memcpy(t->saddr, &ip.saddr, 4);
		__builtin_memcpy(t->daddr, &ip.daddr, 4);
		if (ip.frag_off & bpf_htons(0x1fff))
			fragmented = 1;
		off += (ip.ihl & 0xf) * 4;
	} else if (ver == 6) {
		struct ipv6hdr ip6;
		if (rd(mode, r, off, &ip6, sizeof(ip6)) < 0)
			return -1;
		t->family = 6;
		t->key = mix32(0x2545F491, ip6.payload_len);
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		__u8 nh = ip6.nexthdr;
		off += sizeof(ip6);
		/* Skip up to four extension headers. */
#pragma unroll
		for (int i = 0; i < 4; i++) {
			if (nh != 0 && nh != 43 && nh != 60 && nh != 44)
				break;
			__u8 ext[4];
			if (rd(mode, r, off, ext, sizeof(ext)) < 0)
				return -1;
			if (nh == 44) {
				__u16 fo = ((__u16)ext[2] << 8) | ext[3];
				if (fo & 0xfff8)
					fragmented = 1;
				off += 8;
			} else {
				off += ((__u32)ext[1] + 1) * 8;
			}
			nh = ext[0];
		}
		t->proto = nh;
	} else {
		return -1;
	}
	if (fragmented)
		return -1;
	if (t->proto == PROTO_TCP) {
		__u32 h[3]; /* ports, seq, ack */
		if (rd(mode, r, off, h, sizeof(h)) < 0)
			return -1;
		t->sport = bpf_ntohs((__u16)h[0]);
		t->dport = bpf_ntohs((__u16)(h[0] >> 16));
		t->key = mix32(mix32(t->key, h[1]), h[2]);
	} else if (t->proto == PROTO_UDP) {
		__u16 ports[2];
		if (rd(mode, r, off, ports, sizeof(ports)) < 0)
			return -1;
		t->sport = bpf_ntohs(ports[0]);
		t->dport = bpf_ntohs(ports[1]);
		/* The IP ID wraps under a flood: the first payload word (a sequence
		 * number, a DNS ID) keeps datagrams apart. */
		__u32 word;
		if (rd(mode, r, off + 8, &word, sizeof(word)) == 0)
			t->key = mix32(t->key, word);
	}
	return off;
}

/* key_ip4 is parse_l3's packet key for an IPv4 header without options at ip: the same
 * fields mixed the same way, read at fixed offsets. 0: not that simple case (a fragment,
 * a short packet, a tunnel's packet, whose key is its inner packet's); the caller
 * takes a tunnel apart or parses fully. */
static __always_inline __u32 key_ip4(const __u8 *ip, const void *end)
{
	const struct iphdr *h = (const void *)ip;
	if ((const void *)(ip + 20) > end || ip[0] != 0x45 || (h->frag_off & bpf_htons(0x1fff)))
		return 0;
	__u32 k = mix32(0x2545F491 ^ h->protocol, ((__u32)h->id << 16) | h->tot_len);
	const __u8 *l4 = ip + 20;
	if (h->protocol == PROTO_TCP) {
		if ((const void *)(l4 + 12) > end)
			return 0;
		return mix32(mix32(k, *(const __u32 *)(l4 + 4)), *(const __u32 *)(l4 + 8));
	}
	if (h->protocol == PROTO_UDP) {
		if ((const void *)(l4 + 12) > end)
			return 0;
		__u16 dport = bpf_ntohs(*(const __u16 *)(l4 + 2));
		if (is_vxlan_port(dport) || is_geneve_port(dport))
			return 0;
		return mix32(k, *(const __u32 *)(l4 + 8));
	}
	if (h->protocol == PROTO_IPIP || h->protocol == PROTO_IPV6)
		return 0;
	return k;
}

/* fast_key returns the packet key parse_pkt would compute, without filling a tuple, for
 * the packets most traffic is made of: IPv4 without options behind an untagged Ethernet
 * header (or bare), TCP, UDP, ICMP, and those inside VXLAN, Geneve without options and
 * IPIP. 0 means: parse fully. The agent needs the key on every packet to pick its
 * latency samples; parsing fully costs about 50 ns more per packet (measured under
 * traffic with kernel.bpf_stats_enabled). */
static __always_inline __u32 fast_key(const struct reader *r, int l2)
{
	const __u8 *p = r->data;
	const void *end = r->end;
	if (l2) {
		if ((const void *)(p + 14) > end || *(const __u16 *)(p + 12) != ETH_P_IP_BE)
			return 0;
		p += 14;
	}
	__u32 k = key_ip4(p, end);
	if (k || (const void *)(p + 20) > end || p[0] != 0x45 || (*(const __u16 *)(p + 6) & bpf_htons(0x1fff)))
		return k;
	/* key_ip4 gave up: IPIP (Calico) and UDP tunnels are taken apart here, the rest
	 * parsed fully. */
	if (p[9] == PROTO_IPIP)
		return key_ip4(p + 20, end);
	if (p[9] != PROTO_UDP || (const void *)(p + 36) > end)
		return 0;
	/* Inner frame: 8 bytes UDP, 8 VXLAN or Geneve without options (version 0, length
	 * 0, an Ethernet frame), 14 Ethernet. */
	__u16 dport = bpf_ntohs(*(const __u16 *)(p + 22));
	if (!is_vxlan_port(dport) &&
	    !(is_geneve_port(dport) && p[28] == 0 && *(const __u16 *)(p + 30) == bpf_htons(GENEVE_ETH)))
		return 0;
	const __u8 *in = p + 20 + 16;
	if ((const void *)(in + 14) > end || *(const __u16 *)(in + 12) != ETH_P_IP_BE)
		return 0;
	in += 14;
	return key_ip4(in, end);
}

/* parse_eth returns the offset of the L3 header after an Ethernet header (one VLAN tag
 * skipped), or -1 when the frame carries neither IPv4 nor IPv6. */
static __always_inline int parse_eth(const int mode, struct reader *r, __u32 off)
{
	__u16 proto;
	if (rd(mode, r, off + 12, &proto, sizeof(proto)) < 0)
		return -1;
	off += 14;
	if (proto == ETH_P_8021Q_BE || proto == ETH_P_8021AD_BE) {
		if (rd(mode, r, off + 2, &proto, sizeof(proto)) < 0)
			return -1;
		off += 4;
	}
	if (proto != ETH_P_IP_BE && proto != ETH_P_IPV6_BE)
		return -1;
	return off;
}

/* tunnel_inner returns the offset of the packet that t, whose L4 header is at l4, carries
 * when it is a tunnel's outer packet (IP in IP, VXLAN, Geneve), -1 when it is not, and
 * sets *l2 when that packet starts at an Ethernet header. */
static __always_inline int tunnel_inner(const int mode, struct reader *r, const struct tuple *t, int l4, int *l2)
{
	*l2 = 0;
	if (t->proto == PROTO_IPIP || t->proto == PROTO_IPV6)
		return l4;
	if (t->proto != PROTO_UDP)
		return -1;
	/* VXLAN: 8 bytes UDP, 8 bytes VXLAN, then an Ethernet frame. */
	if (is_vxlan_port(t->dport)) {
		*l2 = 1;
		return l4 + 16;
	}
	if (!is_geneve_port(t->dport))
		return -1;
	/* Geneve: 8 bytes UDP; version (2 bits, 0) and options length (6 bits, in 4-byte
	 * words: at most 252 bytes), flags, protocol type, VNI; the options; the packet. */
	__u8 g[4];
	if (rd(mode, r, l4 + 8, g, sizeof(g)) < 0 || (g[0] >> 6))
		return -1;
	__u16 pt = ((__u16)g[2] << 8) | g[3];
	if (pt == GENEVE_ETH)
		*l2 = 1;
	else if (pt != 0x0800 && pt != 0x86DD)
		return -1;
	return l4 + 16 + (g[0] & 0x3f) * 4;
}

/* parse_pkt fills t from a packet starting at an Ethernet header (l2) or at the IP
 * header. A tunnel's packet (VXLAN, Geneve, IP in IP, up to ENCAP_DEPTH of them one in
 * the other) yields the innermost tuple, with the outermost addresses kept. */
static __always_inline int parse_pkt(const int mode, struct reader *r, int l2, struct tuple *t)
{
	int off = 0;
	if (l2) {
		off = parse_eth(mode, r, 0);
		if (off < 0)
			return -1;
	}
	int l4 = parse_l3(mode, r, off, t);
	if (l4 < 0)
		return t->family ? 0 : -1;

	struct tuple inner;
#pragma unroll
	for (int i = 0; i < ENCAP_DEPTH; i++) {
		int il2;
		int ioff = tunnel_inner(mode, r, t, l4, &il2);
		if (ioff < 0)
			return 0;
		if (il2) {
			ioff = parse_eth(mode, r, ioff);
			if (ioff < 0)
				return 0;
		}
		__builtin_memset(&inner, 0, sizeof(inner));
		l4 = parse_l3(mode, r, ioff, &inner);
		if (l4 < 0 && !inner.family)
			return 0;
		if (t->encap) {
			__builtin_memcpy(inner.osaddr, t->osaddr, 16);
			__builtin_memcpy(inner.odaddr, t->odaddr, 16);
			inner.encap = t->encap;
			inner.ofamily = t->ofamily;
		} else {
			__builtin_memcpy(inner.osaddr, t->saddr, 16);
			__builtin_memcpy(inner.odaddr, t->daddr, 16);
			inner.encap = t->proto;
			inner.ofamily = t->family;
		}
		*t = inner;
		if (l4 < 0)
			return 0;
	}
	return 0;
}

#endif
