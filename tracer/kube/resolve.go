package kube

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/pathtrace/pathtrace/decode"
)

// Resolve turns a pod or Service selector into address selectors.
//
// pod/NS/NAME[:PORT] gives the pod's addresses (two for a dual-stack pod). svc/NS/NAME
// gives the Service's cluster IPs and the addresses of its ready endpoints, so that a
// packet is followed both before and after the Service's DNAT; with :PORT (the
// Service's port number or name) the cluster IPs come with the Service port and each
// endpoint with its own port for it (the target port, per EndpointSlice). A headless
// Service gives its endpoints only; an ExternalName Service is an error. No PORT: any
// port.
//
// It reads the informers' caches, so Start must have run; it is an error when names
// are off, when the object is not found, or when the API server has not listed it.
func (r *Resolver) Resolve(sel decode.KubeSelector) ([]decode.Selector, error) {
	if r == nil || r.client == nil {
		return nil, fmt.Errorf("%s: %s selectors need a kubeconfig or in-cluster config", sel, sel.Kind)
	}
	switch sel.Kind {
	case "pod":
		return r.resolvePod(sel)
	case "svc":
		return r.resolveService(sel)
	}
	return nil, fmt.Errorf("%s: unknown kind %q (want pod or svc)", sel, sel.Kind)
}

// notListed explains why a selector cannot be resolved before the informer of
// resource has its first list.
func (r *Resolver) notListed(sel decode.KubeSelector, resource string) error {
	r.mu.Lock()
	f, ok := r.failures[resource]
	r.mu.Unlock()
	if ok {
		return fmt.Errorf("%s: kubernetes names unresolved: %s", sel, f)
	}
	return fmt.Errorf("%s: kubernetes names unresolved: the API server has not listed %s yet", sel, resource)
}

func (r *Resolver) resolvePod(sel decode.KubeSelector) ([]decode.Selector, error) {
	if !r.pods.HasSynced() {
		return nil, r.notListed(sel, resPods)
	}
	port, err := portNumber(sel.Port)
	if err != nil {
		return nil, fmt.Errorf("%s: %v (pod selectors take a port number)", sel, err)
	}
	obj, ok, _ := r.pods.GetIndexer().GetByKey(sel.Namespace + "/" + sel.Name)
	if !ok {
		if r.cfg.NodePodsOnly && r.cfg.Node != "" {
			return nil, fmt.Errorf("pod %s/%s not found on node %s (only this node's pods are watched)", sel.Namespace, sel.Name, r.cfg.Node)
		}
		return nil, fmt.Errorf("pod %s/%s not found", sel.Namespace, sel.Name)
	}
	p := obj.(*corev1.Pod)
	if ended(p) {
		return nil, fmt.Errorf("pod %s/%s has ended (phase %s): its address may be another pod's by now", sel.Namespace, sel.Name, p.Status.Phase)
	}
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	var out []decode.Selector
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, decode.Selector{Addr: a.Unmap(), Port: port})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pod %s/%s has no address yet (phase %s)", sel.Namespace, sel.Name, p.Status.Phase)
	}
	return out, nil
}

func (r *Resolver) resolveService(sel decode.KubeSelector) ([]decode.Selector, error) {
	if !r.svcs.HasSynced() {
		return nil, r.notListed(sel, resServices)
	}
	if !r.slices.HasSynced() {
		return nil, r.notListed(sel, resSlices)
	}
	key := sel.Namespace + "/" + sel.Name
	obj, ok, _ := r.svcs.GetIndexer().GetByKey(key)
	if !ok {
		return nil, fmt.Errorf("service %s not found", key)
	}
	svc := obj.(*corev1.Service)
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, fmt.Errorf("service %s is an ExternalName Service (%s): it has no cluster address; follow the address %s resolves to", key, svc.Spec.ExternalName, svc.Spec.ExternalName)
	}
	ports, direct, err := servicePorts(svc, sel.Port)
	if err != nil {
		return nil, err
	}
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone

	var vips []decode.Selector
	if !headless {
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				continue
			}
			if len(ports) == 0 {
				vips = append(vips, decode.Selector{Addr: a.Unmap(), Port: direct})
			}
			for _, sp := range ports {
				s := decode.Selector{Addr: a.Unmap(), Port: uint16(sp.Port)}
				if !slices.Contains(vips, s) { // 53/UDP and 53/TCP: one selector
					vips = append(vips, s)
				}
			}
		}
	}

	objs, _ := r.slices.GetIndexer().ByIndex(serviceIndex, key)
	var eps []decode.Selector
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok || s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		eports := []uint16{direct}
		if len(ports) > 0 {
			eports = eports[:0]
			for _, sp := range ports {
				if p, ok := slicePort(s, sp); ok {
					eports = append(eports, p)
				}
			}
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, addr := range e.Addresses {
				a, err := netip.ParseAddr(addr)
				if err != nil {
					continue
				}
				for _, p := range eports {
					eps = append(eps, decode.Selector{Addr: a.Unmap(), Port: p})
				}
			}
		}
	}
	slices.SortFunc(eps, func(a, b decode.Selector) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	eps = slices.Compact(eps)
	if headless && len(eps) == 0 {
		return nil, fmt.Errorf("service %s is headless and has no ready endpoints%s", key, forPort(sel.Port))
	}
	if len(vips) == 0 && len(eps) == 0 {
		return nil, fmt.Errorf("service %s has no cluster IP yet and no ready endpoints%s", key, forPort(sel.Port))
	}
	return append(vips, eps...), nil
}

func forPort(port string) string {
	if port == "" {
		return ""
	}
	return " for port " + port
}

// servicePorts picks the Service's ports a selector's PORT means: by number (a DNS
// Service has 53 twice, for UDP and TCP) or by name. No PORT: none, any port. A
// Service without ports (headless ones may have none) takes a number as it is: direct.
func servicePorts(svc *corev1.Service, port string) (ports []corev1.ServicePort, direct uint16, err error) {
	if port == "" {
		return nil, 0, nil
	}
	n, numErr := strconv.ParseUint(port, 10, 16)
	if numErr == nil && len(svc.Spec.Ports) == 0 {
		return nil, uint16(n), nil
	}
	for _, sp := range svc.Spec.Ports {
		if (numErr == nil && uint64(sp.Port) == n) || (numErr != nil && sp.Name == port) {
			ports = append(ports, sp)
		}
	}
	if len(ports) > 0 {
		return ports, 0, nil
	}
	var have []string
	for _, sp := range svc.Spec.Ports {
		num := strconv.Itoa(int(sp.Port))
		d := num
		if sp.Name != "" {
			d = sp.Name + " " + num
		}
		if tp := sp.TargetPort.String(); tp != "0" && tp != "" && tp != num {
			d += "→" + tp
		}
		proto := sp.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		have = append(have, d+"/"+string(proto))
	}
	what := "port " + port
	if numErr != nil {
		what = fmt.Sprintf("port named %q", port)
	}
	if len(have) == 0 {
		return nil, 0, fmt.Errorf("service %s/%s has no ports: give a port number, or no port", svc.Namespace, svc.Name)
	}
	return nil, 0, fmt.Errorf("service %s/%s has no %s (its ports: %s)", svc.Namespace, svc.Name, what, strings.Join(have, ", "))
}

// slicePort is the endpoints' port for a Service port in one EndpointSlice: the slice
// port of the same name and protocol. A slice without it holds endpoints that do not
// serve that port.
func slicePort(s *discoveryv1.EndpointSlice, sp corev1.ServicePort) (uint16, bool) {
	want := sp.Protocol
	if want == "" {
		want = corev1.ProtocolTCP
	}
	for _, p := range s.Ports {
		name, proto := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if name == sp.Name && proto == want && p.Port != nil && *p.Port > 0 && *p.Port < 65536 {
			return uint16(*p.Port), true
		}
	}
	return 0, false
}

// portNumber reads a selector's PORT as a number, "" as 0 (any).
func portNumber(s string) (uint16, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q: want 1-65535", s)
	}
	return uint16(n), nil
}
