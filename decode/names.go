package decode

import "net/netip"

// Namer names an address after what owns it in the cluster: a pod, a Service, a node.
// tracer/kube implements it from the API server; decode only carries the names.
type Namer interface {
	// NameOf returns the kind ("pod", "service", "node") and "namespace/name" (a node:
	// its name) of the address, "" when unknown; unresolved when names are on but not
	// known yet (the API server has not answered).
	NameOf(a netip.Addr) (kind, name string, unresolved bool)
}

// EndpointName is one side of a flow, named.
type EndpointName struct {
	Kind string // pod, service, node
	Name string // namespace/name; a node's name
}

// Names are the names of a journey's two ends, as first seen (a Service VIP before
// DNAT names the Service).
type Names struct {
	Src, Dst   EndpointName
	Unresolved bool // names are on but were not known yet
}

// NameFlow names both ends of a flow; nil when the namer names neither and is not
// waiting for the API server.
func NameFlow(n Namer, f Flow) *Names {
	if n == nil {
		return nil
	}
	var out Names
	var us, ud bool
	out.Src.Kind, out.Src.Name, us = n.NameOf(f.Src.Addr())
	out.Dst.Kind, out.Dst.Name, ud = n.NameOf(f.Dst.Addr())
	out.Unresolved = (us && out.Src.Name == "") || (ud && out.Dst.Name == "")
	if out.Src.Name == "" && out.Dst.Name == "" && !out.Unresolved {
		return nil
	}
	return &out
}
