// Package exporter writes packet journeys for people and programs: a text block per
// packet (hops with their offsets, then the verdict), JSON Lines with stable field
// names that later versions only add to, Prometheus metrics, and packet captures.
//
// Paths across nodes (path.go) are written the same ways: each node's hops, the
// underlay crossings with their latency, one verdict; FromJSON reads back the journeys
// an agent sent as JSON so that a follow client can join them. PodDrops is the opt-in,
// bounded per-pod drop metric.
//
// It must not trace or decode: it formats decode.Journey values it is handed, and
// reports write errors (a closed pipe, a full disk) to its caller instead of
// swallowing them.
//
// # Packet captures
//
// Pcap (pcapng.go) writes journeys whose hops carry their bytes (decode.Config.KeepBytes)
// as pcapng that Wireshark and tshark open without a plugin: an interface per hop
// (node-a/cni0, node-a/nf:FORWARD/first, node-a/kfree_skb) with its link type and
// direction, nanosecond wall-clock times, the direction flag, and a comment on every
// packet with the hop, its offset from the journey's first event and, where they
// apply, the NAT, the tunnel header, the stall, the drop and the verdict. Each journey
// reaches the file in one write, so a file whose writer was killed reads up to its
// last whole journey.
//
// Recorder (capture.go) is the agent's flight recorder: fed every closed journey, it
// keeps a bounded history of each flow's recent packets and, when a flow is flagged (a
// drop, a loss, a stall, a TCP retransmission, or the caller's say), writes the flow's
// packets from before the trigger and for a window after into a file of its own in a
// directory, within limits on memory, file size, file count and directory bytes, and
// beside the file a page that draws those journeys (package pathview). What it could
// not keep or write it counts (RecorderStats) for the metrics.
//
// Lines (filter.go) filters follow's JSON lines and prints them as JSON, compact or
// text (read back with FromJSON, PathFromJSON, OneWayFromJSON), handing the kept ones
// to a pathview page as well for follow --html.
package exporter
