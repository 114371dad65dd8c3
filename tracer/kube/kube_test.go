package kube

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Fixtures: the lab's two nodes and the objects on them.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func pod(ns, name, node string, phase corev1.PodPhase, age time.Duration, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			CreationTimestamp: metav1.NewTime(t0.Add(-age)),
			Annotations:       map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 4096)},
		},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		Status: corev1.PodStatus{Phase: phase},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

func service(ns, name string, clusterIPs []string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIPs: clusterIPs, Ports: ports},
	}
	if len(clusterIPs) > 0 {
		s.Spec.ClusterIP = clusterIPs[0]
	}
	return s
}

func svcPort(name string, port int32, target intstr.IntOrString, proto corev1.Protocol) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: proto}
}

func slicePortOf(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &proto}
}

func endpoint(ready bool, podNS, podName string, addrs ...string) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
	if podName != "" {
		e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: podNS, Name: podName}
	}
	return e
}

func endpointSlice(ns, name, svc string, af discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: af,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func node(name string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Addresses: addrs,
			Images:    []corev1.ContainerImage{{Names: []string{"registry.example/big:1"}, SizeBytes: 1 << 30}},
		},
	}
}

func internalIP(a string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// warnings records what the resolver warns about.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) warn(s string) {
	w.mu.Lock()
	w.list = append(w.list, s)
	w.mu.Unlock()
}

func (w *warnings) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.list)
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watching waits until the informers watch every resource: the fake clientset sends
// a watch only the changes made after the watch exists, and an informer has synced as
// soon as its list is in.
func watching(t *testing.T, client *fake.Clientset) {
	t.Helper()
	eventually(t, "informers watching pods, services, endpointslices and nodes", func() bool {
		seen := map[string]bool{}
		for _, a := range client.Actions() {
			if a.GetVerb() == "watch" {
				seen[a.GetResource().Resource] = true
			}
		}
		return seen["pods"] && seen["services"] && seen["endpointslices"] && seen["nodes"]
	})
}

// started runs a resolver on the fake clientset until the test ends and waits for its
// names to be on.
func started(t *testing.T, client *fake.Clientset, cfg Config) (*Resolver, *warnings) {
	t.Helper()
	w := &warnings{}
	cfg.Warn = w.warn
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = 3 * time.Second
	}
	r := NewResolver(client, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if st := r.Status(); !strings.HasPrefix(st, "names on") {
		t.Fatalf("Status() = %q after Start, want names on", st)
	}
	watching(t, client)
	return r, w
}

func wantName(t *testing.T, r *Resolver, a string, want Name) {
	t.Helper()
	if got := r.Name(addr(a)); got != want {
		t.Errorf("Name(%s) = %+v (%q), want %+v (%q)", a, got, got, want, want)
	}
}

func TestNameString(t *testing.T) {
	for _, tc := range []struct {
		n    Name
		want string
	}{
		{Name{Kind: "pod", Namespace: "prod", Name: "api-67f6cc8974-2kmdg"}, "prod/api-67f6cc8974-2kmdg"},
		{Name{Kind: "service", Namespace: "prod", Name: "api"}, "prod/api"},
		{Name{Kind: "node", Name: "node-a"}, "node/node-a"},
		{Name{}, ""},
		{Name{Unresolved: true}, ""},
	} {
		if got := tc.n.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestNamePodsServicesNodes(t *testing.T) {
	t.Parallel()
	hostPod := pod("kube-system", "kube-proxy-x7", "node-a", corev1.PodRunning, time.Hour, "10.0.0.11")
	hostPod.Spec.HostNetwork = true
	client := fake.NewClientset(
		pod("prod", "api-67f6cc8974-2kmdg", "node-a", corev1.PodRunning, time.Hour, "10.244.1.23", "fd00:10:244:1::17"),
		pod("prod", "redis-0", "node-b", corev1.PodRunning, time.Hour, "10.244.2.57"),
		pod("prod", "job-new", "node-b", corev1.PodPending, time.Minute),
		hostPod,
		service("prod", "api", []string{"10.96.0.20", "fd00:96::20"}, svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP)),
		service("kube-system", "kube-dns", []string{"10.96.0.10"}),
		node("node-a", internalIP("10.0.0.11"), corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.11"}, corev1.NodeAddress{Type: corev1.NodeHostName, Address: "node-a"}),
		node("node-b", internalIP("10.0.0.12")),
	)
	r, w := started(t, client, Config{})

	pod := func(ns, n string) Name { return Name{Kind: "pod", Namespace: ns, Name: n} }
	svc := func(ns, n string) Name { return Name{Kind: "service", Namespace: ns, Name: n} }
	wantName(t, r, "10.244.1.23", pod("prod", "api-67f6cc8974-2kmdg"))
	wantName(t, r, "fd00:10:244:1::17", pod("prod", "api-67f6cc8974-2kmdg"))
	wantName(t, r, "::ffff:10.244.1.23", pod("prod", "api-67f6cc8974-2kmdg"))
	wantName(t, r, "10.244.2.57", pod("prod", "redis-0")) // a pod on another node
	wantName(t, r, "10.96.0.20", svc("prod", "api"))
	wantName(t, r, "fd00:96::20", svc("prod", "api"))
	wantName(t, r, "10.96.0.10", svc("kube-system", "kube-dns"))
	wantName(t, r, "10.0.0.11", Name{Kind: "node", Name: "node-a"}) // not kube-proxy: hostNetwork
	wantName(t, r, "203.0.113.11", Name{Kind: "node", Name: "node-a"})
	wantName(t, r, "10.0.0.12", Name{Kind: "node", Name: "node-b"})
	wantName(t, r, "8.8.8.8", Name{}) // known to be outside: not Unresolved
	if got := r.Name(netip.Addr{}); got != (Name{}) {
		t.Errorf("Name(invalid) = %+v, want zero", got)
	}
	if got := r.Name(addr("10.244.1.23")).String(); got != "prod/api-67f6cc8974-2kmdg" {
		t.Errorf("Name(10.244.1.23).String() = %q", got)
	}
	if got, want := r.Status(), "names on (4 pods, 2 services)"; got != want {
		t.Errorf("Status() = %q, want %q", got, want)
	}
	if ws := w.get(); len(ws) != 0 {
		t.Errorf("warnings on a healthy API server: %q", ws)
	}
}

func TestNameAddressReuse(t *testing.T) {
	t.Parallel()
	deleting := pod("prod", "old-terminating", "node-a", corev1.PodRunning, time.Hour, "10.244.1.31")
	now := metav1.NewTime(t0)
	deleting.DeletionTimestamp = &now
	client := fake.NewClientset(
		// A pod that failed keeps its address in its status; the address went on to a
		// running pod. Both orders of age, so that age alone cannot decide.
		pod("batch", "job-failed", "node-a", corev1.PodFailed, time.Minute, "10.244.1.30"),
		pod("prod", "api-running", "node-a", corev1.PodRunning, time.Hour, "10.244.1.30"),
		pod("prod", "web-running", "node-a", corev1.PodRunning, time.Minute, "10.244.1.32"),
		pod("batch", "job-done", "node-a", corev1.PodSucceeded, time.Hour, "10.244.1.32"),
		// A pod being deleted hands its address on to a new one.
		deleting,
		pod("prod", "new-pending", "node-a", corev1.PodPending, time.Second, "10.244.1.31"),
		// Two live pods (should not happen): the newer.
		pod("prod", "older", "node-a", corev1.PodRunning, time.Hour, "10.244.1.33"),
		pod("prod", "newer", "node-a", corev1.PodRunning, time.Minute, "10.244.1.33"),
		// Only an ended pod claims it: named after it still.
		pod("batch", "job-alone", "node-a", corev1.PodSucceeded, time.Minute, "10.244.1.34"),
	)
	r, _ := started(t, client, Config{})
	wantName(t, r, "10.244.1.30", Name{Kind: "pod", Namespace: "prod", Name: "api-running"})
	wantName(t, r, "10.244.1.32", Name{Kind: "pod", Namespace: "prod", Name: "web-running"})
	wantName(t, r, "10.244.1.31", Name{Kind: "pod", Namespace: "prod", Name: "new-pending"})
	wantName(t, r, "10.244.1.33", Name{Kind: "pod", Namespace: "prod", Name: "newer"})
	wantName(t, r, "10.244.1.34", Name{Kind: "pod", Namespace: "batch", Name: "job-alone"})

	// The running pod goes: the failed one's stale claim is all that is left.
	if err := client.CoreV1().Pods("prod").Delete(context.Background(), "api-running", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "10.244.1.30 named after the failed pod once the running one is deleted", func() bool {
		return r.Name(addr("10.244.1.30")) == Name{Kind: "pod", Namespace: "batch", Name: "job-failed"}
	})
}

func TestNameFollowsChanges(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(node("node-a", internalIP("10.0.0.11")))
	r, _ := started(t, client, Config{})
	ctx := context.Background()
	wantName(t, r, "10.244.1.40", Name{})

	// A pod is scheduled, then gets its address.
	p := pod("prod", "api-1", "node-a", corev1.PodPending, 0)
	if _, err := client.CoreV1().Pods("prod").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.40", PodIPs: []corev1.PodIP{{IP: "10.244.1.40"}}}
	if _, err := client.CoreV1().Pods("prod").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "10.244.1.40 named prod/api-1 after the pod got it", func() bool {
		return r.Name(addr("10.244.1.40")).String() == "prod/api-1"
	})

	// A Service, then its deletion.
	if _, err := client.CoreV1().Services("prod").Create(ctx, service("prod", "api", []string{"10.96.0.40"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "10.96.0.40 named prod/api", func() bool { return r.Name(addr("10.96.0.40")).String() == "prod/api" })
	if err := client.CoreV1().Services("prod").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "10.96.0.40 unknown after the Service is deleted", func() bool { return r.Name(addr("10.96.0.40")) == Name{} })

	// The pod is deleted.
	if err := client.CoreV1().Pods("prod").Delete(ctx, "api-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "10.244.1.40 unknown after the pod is deleted", func() bool { return r.Name(addr("10.244.1.40")) == Name{} })

	// A node changes its address.
	n := node("node-a", internalIP("10.0.0.21"))
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node-a named by its new address only", func() bool {
		return r.Name(addr("10.0.0.21")).String() == "node/node-a" && r.Name(addr("10.0.0.11")) == Name{}
	})
	if got, want := r.Status(), "names on (0 pods, 0 services)"; got != want {
		t.Errorf("Status() = %q, want %q", got, want)
	}
}

func TestNodePodsOnly(t *testing.T) {
	t.Parallel()
	tcp := corev1.ProtocolTCP
	client := fake.NewClientset(
		pod("prod", "api-1", "node-a", corev1.PodRunning, time.Hour, "10.244.1.23"),
		service("prod", "redis", []string{"10.96.0.30"}, svcPort("redis", 6379, intstr.FromInt32(6379), tcp)),
		endpointSlice("prod", "redis-x1", "redis", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{slicePortOf("redis", 6379, tcp)},
			endpoint(true, "prod", "redis-0", "10.244.2.57")),
	)
	r, _ := started(t, client, Config{Node: "node-a", NodePodsOnly: true})
	var selectors []string
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "pods" && (a.GetVerb() == "list" || a.GetVerb() == "watch") {
			var fs string
			switch a := a.(type) {
			case k8stesting.ListActionImpl:
				fs = a.ListOptions.FieldSelector
			case k8stesting.WatchActionImpl:
				fs = a.ListOptions.FieldSelector
			}
			selectors = append(selectors, a.GetVerb()+" "+fs)
		}
	}
	if !slices.Equal(selectors, []string{"list spec.nodeName=node-a", "watch spec.nodeName=node-a"}) {
		t.Errorf("pod list and watch calls: %q, want both with field selector spec.nodeName=node-a", selectors)
	}
	wantName(t, r, "10.244.1.23", Name{Kind: "pod", Namespace: "prod", Name: "api-1"})
	// A pod on another node is known from its Service's EndpointSlice.
	wantName(t, r, "10.244.2.57", Name{Kind: "pod", Namespace: "prod", Name: "redis-0"})
	if _, err := r.Resolve(kubeSel("pod/prod/redis-0")); err == nil || !strings.Contains(err.Error(), "not found on node node-a") {
		t.Errorf("Resolve(pod/prod/redis-0) with node-a's pods only: error %v, want not found on node node-a", err)
	}
}

func TestInformersKeepLittle(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(
		pod("prod", "api-1", "node-a", corev1.PodRunning, time.Hour, "10.244.1.23"),
		node("node-a", internalIP("10.0.0.11")),
	)
	r, _ := started(t, client, Config{})
	obj, ok, _ := r.pods.GetIndexer().GetByKey("prod/api-1")
	if !ok {
		t.Fatal("prod/api-1 not in the pod cache")
	}
	p := obj.(*corev1.Pod)
	if len(p.Annotations) != 0 || len(p.Spec.Containers) != 0 {
		t.Errorf("cached pod keeps %d annotations and %d containers, want them dropped", len(p.Annotations), len(p.Spec.Containers))
	}
	if p.Status.PodIP != "10.244.1.23" || p.Spec.NodeName != "node-a" || p.Status.Phase != corev1.PodRunning {
		t.Errorf("cached pod lost what naming needs: %+v", p)
	}
	obj, ok, _ = r.nodes.GetIndexer().GetByKey("node-a")
	if !ok {
		t.Fatal("node-a not in the node cache")
	}
	if n := obj.(*corev1.Node); len(n.Status.Images) != 0 || len(n.Status.Addresses) != 1 {
		t.Errorf("cached node: %d images, %d addresses; want 0 and 1", len(n.Status.Images), len(n.Status.Addresses))
	}
}

func TestNamesOff(t *testing.T) {
	for _, r := range []*Resolver{nil, NewResolver(nil, Config{})} {
		if err := r.Start(context.Background()); err != nil {
			t.Errorf("Start with names off: %v", err)
		}
		if got := r.Name(addr("10.244.1.23")); got != (Name{}) {
			t.Errorf("Name with names off = %+v, want zero (not Unresolved)", got)
		}
		if got, want := r.Status(), "names off: no kubeconfig or in-cluster config"; got != want {
			t.Errorf("Status() = %q, want %q", got, want)
		}
		for _, s := range []string{"pod/prod/api", "svc/prod/api:http"} {
			kind, _, _ := strings.Cut(s, "/")
			_, err := r.Resolve(kubeSel(s))
			if want := kind + " selectors need a kubeconfig or in-cluster config"; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Resolve(%s) with names off: error %v, want %q", s, err, want)
			}
		}
		if _, err := r.Agents(context.Background(), "pathtrace", "app=pathtrace"); err == nil || !strings.Contains(err.Error(), "kubeconfig or in-cluster") {
			t.Errorf("Agents with names off: error %v, want it to say a configuration is needed", err)
		}
	}
}

func TestStartTwice(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	r, _ := started(t, client, Config{})
	if err := r.Start(context.Background()); err == nil {
		t.Error("second Start: no error")
	}
}
