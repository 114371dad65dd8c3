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
