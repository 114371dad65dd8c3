// Package diagnose turns a packet's fate into a diagnosis: the cause (policy,
// rp_filter, no_route, mtu, qdisc, underlay, conntrack_full, no_snat, hairpin,
// neighbour, closed_port, ...), the evidence read from the node at that moment, and the
// change that fixes it (decode.Diagnosis).
//
// It decides from what the journey shows (the kernel's drop reason and site, the
// hops, the NAT, the packet's size and DF bit) which of the node's settings to read,
// through the Facts interface: tracer.NodeFacts reads the real node over netlink and
// /proc/sys in the traced namespace; tests give a fake. The package itself reads
// nothing from the system and needs no privileges. What it cannot read it names in
// Diagnosis.Missing, and where the evidence does not support a cause it says
// "unknown" rather than guess: a drop site that frees packets for several reasons
// (kernels without drop reasons) gets a cause only when the node's state confirms it.
package diagnose
