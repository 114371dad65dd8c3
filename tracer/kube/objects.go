package kube

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The informers keep only what naming and selectors read: a pod kept this way is its
// names, node, phase and addresses, about 1.5 KB instead of the 5-20 KB of a full pod,
// and a node is its name and addresses instead of its status with every image it holds.
// The trims are idempotent, as client-go asks of a transform.

const (
	ipIndex      = "ip"      // pods, services, nodes, EndpointSlices by address
	serviceIndex = "service" // EndpointSlices by "namespace/service"
)

func trimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp,
		DeletionTimestamp: m.DeletionTimestamp,
	}
}

func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: trimMeta(p.ObjectMeta),
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}, nil
}

func trimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	return &corev1.Service{
		ObjectMeta: trimMeta(s.ObjectMeta),
		Spec: corev1.ServiceSpec{
			Type:         s.Spec.Type,
			ClusterIP:    s.Spec.ClusterIP,
			ClusterIPs:   s.Spec.ClusterIPs,
			Ports:        s.Spec.Ports,
			ExternalName: s.Spec.ExternalName,
		},
	}, nil
}

func trimSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	t := &discoveryv1.EndpointSlice{
		ObjectMeta:  trimMeta(s.ObjectMeta),
		AddressType: s.AddressType,
		Ports:       s.Ports,
		Endpoints:   make([]discoveryv1.Endpoint, len(s.Endpoints)),
	}
	if svc, ok := s.Labels[discoveryv1.LabelServiceName]; ok {
		t.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	}
	for i, e := range s.Endpoints {
		t.Endpoints[i] = discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: e.Conditions, NodeName: e.NodeName}
		if r := e.TargetRef; r != nil {
			t.Endpoints[i].TargetRef = &corev1.ObjectReference{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
		}
	}
	return t, nil
}

func trimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		ObjectMeta: trimMeta(n.ObjectMeta),
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}

// ipKey is the index key of an address: canonical text, IPv4-mapped IPv6 unmapped,
// "" for anything that is not an address ("None", "").
func ipKey(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return ""
	}
	return a.Unmap().String()
}

func appendKey(keys []string, s string) []string {
	if k := ipKey(s); k != "" {
		return append(keys, k)
	}
	return keys
}

// podIPs indexes a pod by its addresses. A hostNetwork pod has its node's address: it
// is left out, so that the address names the node.
func podIPs(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.HostNetwork {
		return nil, nil
	}
	var keys []string
	for _, ip := range p.Status.PodIPs {
		keys = appendKey(keys, ip.IP)
	}
	if len(keys) == 0 {
		keys = appendKey(keys, p.Status.PodIP)
	}
	return keys, nil
}

func serviceIPs(obj any) ([]string, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	var keys []string
	for _, ip := range s.Spec.ClusterIPs {
		keys = appendKey(keys, ip)
	}
	if len(keys) == 0 {
		keys = appendKey(keys, s.Spec.ClusterIP)
	}
	return keys, nil
}

func nodeIPs(obj any) ([]string, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return nil, nil
	}
	var keys []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			keys = appendKey(keys, a.Address)
		}
	}
	return keys, nil
}

func sliceIPs(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.AddressType == discoveryv1.AddressTypeFQDN {
		return nil, nil
	}
	var keys []string
	for _, e := range s.Endpoints {
		for _, a := range e.Addresses {
			keys = appendKey(keys, a)
		}
	}
	return keys, nil
}

func sliceService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	svc := s.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + svc}, nil
}

// podRank orders the pods that claim one address: a pod that ended (Succeeded or
// Failed) may keep its address in its status after the address went to a new pod, and
// a pod being deleted hands it on soon; neither shadows a live pod.
func podRank(p *corev1.Pod) int {
	switch {
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		return 0
	case p.DeletionTimestamp != nil:
		return 1
	}
	return 2
}

// better reports whether pod a names a shared address rather than pod b: the higher
// rank, then the newer, then (for a stable answer) the smaller namespace/name.
func better(a, b *corev1.Pod) bool {
	if ra, rb := podRank(a), podRank(b); ra != rb {
		return ra > rb
	}
	if ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time; !ta.Equal(tb) {
		return ta.After(tb)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

func ended(p *corev1.Pod) bool { return podRank(p) == 0 }
