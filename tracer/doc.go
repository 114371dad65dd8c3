// Package tracer is everything of pathtrace that needs the kernel: it checks what the
// running kernel offers, loads the programs of package bpf, attaches them (tc through
// tcx links or clsact filters, kfree_skb through tp_btf or a raw tracepoint), reads the
// ring buffer into a bounded queue that counts what it drops, and detaches everything
// on Close. It also reads the facts decode needs from the system: the interfaces to
// trace, found from link types, peer namespaces, addresses and routes (Layout), with
// their roles and the other datapaths' tc programs beside pathtrace's, the node's addresses, the drop-reason names from the
// kernel's BTF and the kallsyms table; and, for a diagnosis, the node's state at the
// moment it is asked (NodeFacts: links, routes, neighbours, FDB, qdiscs, sysctls,
// conntrack and NAT rules).
//
// It must not interpret events beyond decoding their fixed layout: journeys and
// verdicts are the decode package's. It keeps no package-level state; every setting
// comes in a Config.
package tracer
