package decode

import "strings"

// Diagnosis is why a packet did not make it, read from the node's own state at that
// moment, and what to change: the answer to "where it died" turned into "why, and
// what to do". Package decode/diagnose makes them; the exporters print them.
// JSON names are an interface: add, never rename.
type Diagnosis struct {
	// Cause is one of the Cause* codes.
	Cause string `json:"cause"`
	// Summary says it in one sentence.
	Summary string `json:"summary"`
	// Segment is the part of the path that fails: SegPod, SegVeth, SegBridge,
	// SegNetfilter, SegTunnel, SegUplink, SegUnderlay, SegOtherNode, SegApp.
	Segment string `json:"segment,omitempty"`
	// Evidence is what was read from the node to reach the cause, in the order it
	// was used.
	Evidence []Evidence `json:"evidence"`
	// Fix is the change that removes the cause, with the node's own names and values.
	Fix string `json:"fix"`
	// Missing says which evidence could not be read, and why (no permission, another
	// namespace, no ruleset): the cause is then less certain, or unknown.
	Missing []string `json:"missing,omitempty"`
}

// Evidence is one fact read from the node: what it is ("rp_filter", "route",
// "mtu_chain", ...) and its value as a person reads it.
type Evidence struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Causes a Diagnosis names.
const (
	CausePolicy        = "policy"         // a netfilter rule or chain policy dropped it
	CauseRPFilter      = "rp_filter"      // reverse-path filtering refused its source
	CauseNoRoute       = "no_route"       // no route, or a blackhole/unreachable/prohibit one
	CauseMTU           = "mtu"            // too big for a device on its way, with DF set
	CauseQdisc         = "qdisc"          // a queueing discipline dropped or held it
	CauseUnderlay      = "underlay"       // lost between two nodes, outside both
	CauseConntrackFull = "conntrack_full" // conntrack's table was full
	CauseNoSNAT        = "no_snat"        // left the cluster with a pod's address
	CauseHairpin       = "hairpin"        // a pod reached itself through a Service without SNAT
	CauseNeighbour     = "neighbour"      // no neighbour or VXLAN FDB entry for the next hop
	CauseClosedPort    = "closed_port"    // reached the pod, nothing listens on the port
	CauseInPod         = "in_pod"         // dropped inside the pod's own network stack
	CauseConntrack     = "conntrack"      // conntrack refused it (insert failed, invalid)
	CauseUnknown       = "unknown"        // none of the above fits what was seen: see Missing
)

// Segments of a path (Diagnosis.Segment), in the order a packet from a pod crosses them.
const (
	SegPod       = "pod"        // the pod's own namespace
	SegVeth      = "veth"       // the pod's host-side veth
	SegBridge    = "bridge"     // the node's bridge (cni0)
	SegNetfilter = "netfilter"  // the node's netfilter hooks (NAT, filter)
	SegRouting   = "routing"    // the node's routing decision
	SegTunnel    = "tunnel"     // the overlay device (flannel.1)
	SegUplink    = "uplink"     // the node's uplink (eth0)
	SegUnderlay  = "underlay"   // between the nodes
	SegOtherNode = "other node" // past this node, where it cannot see
	SegApp       = "application"
)

// Add appends one piece of evidence.
func (d *Diagnosis) Add(name, value string) {
	d.Evidence = append(d.Evidence, Evidence{Name: name, Value: value})
}

// Lack records evidence that could not be read.
func (d *Diagnosis) Lack(what string) { d.Missing = append(d.Missing, what) }

// EvidenceText is the evidence in one line, "name: value; name: value".
func (d *Diagnosis) EvidenceText() string {
	parts := make([]string, len(d.Evidence))
	for i, e := range d.Evidence {
		parts[i] = e.Name + ": " + e.Value
	}
	return strings.Join(parts, "; ")
}

// Value is the value of the first evidence named name, "" when there is none.
func (d *Diagnosis) Value(name string) string {
	for _, e := range d.Evidence {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}
