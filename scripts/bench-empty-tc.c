/* SPDX-License-Identifier: GPL-2.0 */
/* An empty tc program: scripts/bench.sh attaches it to the hooks the agent uses and
 * reads its run time from the kernel's accounting, the floor under every tc figure
 * (the accounting's own clock reads, the hook's call). Built with clang -target bpf. */
#include <linux/bpf.h>

__attribute__((section("tc"), used)) int empty(struct __sk_buff *skb)
{
	return -1; /* TC_ACT_UNSPEC: pass on */
}

char LICENSE[] __attribute__((section("license"), used)) = "GPL";
