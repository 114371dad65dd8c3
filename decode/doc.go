// Package decode turns the kernel's events into packet journeys: it parses the bytes an
// event carries (Ethernet, IPv4, IPv6, TCP, UDP, ICMP, ICMPv6, and the tunnels VXLAN,
// Geneve and IP in IP: IPIP, SIT, ip6tnl), recognises the
// same packet at every hop, and decides what became of it (delivered, forwarded,
// dropped with the kernel's reason and location, lost, or incomplete when the events
// that would tell were lost), with the stalls on the way.
// A Joiner (path.go) puts one packet's journeys on several nodes into one Path, with
// the underlay crossings between them, and judges the whole path (lost on the
// underlay, a node whose agent did not answer); journeys carry the Kubernetes names of
// their ends when a Namer gives them (names.go).
//
// It is pure Go: no privileges, no kernel, no I/O of its own. Everything it needs to
// know about the running system (interfaces, local addresses, the drop-reason names
// from the kernel's BTF, the kallsyms table) is handed to it in a Config, so it can be
// tested from byte fixtures. It must not load, attach or read anything from the kernel;
// that is the tracer package's job.
//
// # Packet identity
//
// Each packet gets a 64-bit ID, an FNV-1a hash of the fields that no hop on a node or on
// the way to another node rewrites:
//
//   - the IP version, the protocol, and the IP total length;
//   - the IPv4 identification field (and, for fragments, only the header);
//   - TCP: sequence number, acknowledgement number, flags, and the timestamp option's
//     TSval and TSecr;
//   - UDP: up to 16 bytes of payload (bounded by the IP length, never link padding);
//   - ICMP and ICMPv6: type, code, echo sequence number and up to 16 bytes of payload.
//
// Left out on purpose: addresses and ports (NAT rewrites them, and the later NAT work
// follows a packet through DNAT and SNAT by this ID), the TTL and hop limit (each routed
// hop decrements them), checksums, the ICMP echo identifier (NAT rewrites it), and the
// outer headers of a tunnel. For a tunnel's packet (VXLAN, Geneve, IP in IP, nested in
// any mix) the ID is that of the innermost packet, so
// a packet keeps its ID through encapsulation, across the veth's namespace crossing,
// and on the other node, which computes the same ID from the same bytes: a later join
// of two nodes' journeys matches on it, with time order to break the rare tie.
//
// A TCP retransmission is not confused with the original: Linux gives it a new IPv4
// identification (the per-socket counter advances with every packet sent) and, with
// TCP timestamps on (the default), a new TSval.
//
// Where the bytes cannot tell two packets apart, they share an ID: identical UDP
// datagrams over IPv6 (no identification field; the same payload, length and flow),
// a TCP retransmission over IPv6 with timestamps off. Nothing in the packet separates
// them, so the path does: a packet does not come back to the place of its first hop
// (same interface and direction, or same hook, priority and devices, encapsulated or
// not) with the TTL it had there; only a route that takes some of its TTL brings it
// back. Such an event starts a new journey and closes the open one, cut
// (Journey.Cut, Stats.Collisions). A journey also holds at most Config.MaxHops hops
// (DefaultMaxHops): the events of an ID beyond that (a routing loop, identical packets
// interleaved) start a new one (Stats.HopCapped).
//
// Events of one ID are one journey until no event arrives for the timeout; then the
// journey is closed and judged. Hops are ordered by their kernel timestamps.
//
// A journey that ends without a delivery, a forward or a drop is lost, unless events
// were lost on the way to the assembler while it was in flight (the kernel's ring
// buffer or a queue was full, as the caller reports with Assembler.EventsLost): its
// end may be among them, so it is incomplete, not lost.
package decode
