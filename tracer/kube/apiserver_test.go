package kube

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/tracer/kube/kubetest"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// These tests run the resolver, the selectors, the agents' discovery and the review of
// followers' tokens against a real kube-apiserver and etcd (kubetest). The tests with
// client-go's fake clientset that remain cover what a real server cannot easily be
// made to do: answer with a refused connection between two answers, throttle one
// resource (429) for ever, forbid every list at once for a canceled start, or count
// the reviews a cache saved.

// cluster writes fixtures to the real API server as a controller or kubelet would.
type cluster struct {
	t *testing.T
	s *kubetest.Server
	c kubernetes.Interface
}

func (k *cluster) ctx() context.Context { return context.Background() }

// pod creates the pod, then writes its status (phase, addresses) through the status
// subresource, as the kubelet does. A pod with finalizer "kubetest/keep" stays, with
// a deletion timestamp, after deleting.
func (k *cluster) pod(p *corev1.Pod, deleting bool) *corev1.Pod {
	k.t.Helper()
	k.s.Namespace(k.t, p.Namespace)
	status := *p.Status.DeepCopy()
	status.PodIPs = slices.DeleteFunc(status.PodIPs, func(ip corev1.PodIP) bool { return ip.IP == "" })
	if p.Spec.HostNetwork {
		status.HostIP = status.PodIP
		for _, ip := range status.PodIPs {
			status.HostIPs = append(status.HostIPs, corev1.HostIP(ip))
		}
	}
	p = p.DeepCopy()
	p.Status, p.CreationTimestamp = corev1.PodStatus{}, metav1.Time{}
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Image == "" {
			p.Spec.Containers[i].Image = "pathtrace:test"
		}
	}
	if deleting {
		p.Finalizers = append(p.Finalizers, "kubetest/keep")
	}
	got, err := k.c.CoreV1().Pods(p.Namespace).Create(k.ctx(), p, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	if status.Phase != "" {
		got.Status = status
		if got, err = k.c.CoreV1().Pods(p.Namespace).UpdateStatus(k.ctx(), got, metav1.UpdateOptions{}); err != nil {
			k.t.Fatalf("status of pod %s/%s: %v", p.Namespace, p.Name, err)
		}
	}
	if deleting {
		if err := k.c.CoreV1().Pods(p.Namespace).Delete(k.ctx(), p.Name, metav1.DeleteOptions{}); err != nil {
			k.t.Fatalf("delete pod %s/%s: %v", p.Namespace, p.Name, err)
		}
	}
	return got
}

func (k *cluster) service(s *corev1.Service) {
	k.t.Helper()
	k.s.Namespace(k.t, s.Namespace)
	if len(s.Spec.ClusterIPs) == 2 {
		dual := corev1.IPFamilyPolicyRequireDualStack
		s.Spec.IPFamilyPolicy = &dual
	}
	if _, err := k.c.CoreV1().Services(s.Namespace).Create(k.ctx(), s, metav1.CreateOptions{}); err != nil {
		k.t.Fatalf("create service %s/%s: %v", s.Namespace, s.Name, err)
	}
}

func (k *cluster) slice(s *discoveryv1.EndpointSlice) {
	k.t.Helper()
	k.s.Namespace(k.t, s.Namespace)
	if _, err := k.c.DiscoveryV1().EndpointSlices(s.Namespace).Create(k.ctx(), s, metav1.CreateOptions{}); err != nil {
		k.t.Fatalf("create EndpointSlice %s/%s: %v", s.Namespace, s.Name, err)
	}
}

func (k *cluster) node(n *corev1.Node) {
	k.t.Helper()
	status := n.Status
	n = n.DeepCopy()
	n.Status = corev1.NodeStatus{}
	got, err := k.c.CoreV1().Nodes().Create(k.ctx(), n, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatalf("create node %s: %v", n.Name, err)
	}
	got.Status = status
	if _, err := k.c.CoreV1().Nodes().UpdateStatus(k.ctx(), got, metav1.UpdateOptions{}); err != nil {
		k.t.Fatalf("status of node %s: %v", n.Name, err)
	}
}

// resolver starts a resolver with rc's credentials until the test ends.
func (k *cluster) resolver(rc *rest.Config, cfg Config) (*Resolver, *warnings) {
	k.t.Helper()
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		k.t.Fatal(err)
	}
	w := &warnings{}
	cfg.Warn = w.warn
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = 10 * time.Second
	}
	r := NewResolver(client, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	k.t.Cleanup(cancel)
	if err := r.Start(ctx); err != nil {
		k.t.Fatalf("Start: %v", err)
	}
	return r, w
}

// applyFile applies a manifest of deploy/ as the admin.
func (k *cluster) applyFile(path string) {
	k.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		k.t.Fatal(err)
	}
	if err := k.s.Apply(k.ctx(), k.s.Admin, data, kubetest.ApplyOptions{}); err != nil {
		k.t.Fatalf("apply %s: %v", path, err)
	}
}

func TestAPIServer(t *testing.T) {
	s := kubetest.Start(t)
	// Subtests in order, one server: each uses namespaces of its own, and "names"
	// counts every pod and Service, so it runs first.
	t.Run("names", func(t *testing.T) { testNames(&cluster{t: t, s: s, c: s.Client}) })
	t.Run("node-pods-only", func(t *testing.T) { testNodePodsOnly(&cluster{t: t, s: s, c: s.Client}) })
	t.Run("resolve", func(t *testing.T) { testResolve(&cluster{t: t, s: s, c: s.Client}) })
	t.Run("agents", func(t *testing.T) { testAgents(&cluster{t: t, s: s, c: s.Client}) })
	t.Run("review", func(t *testing.T) { testReview(&cluster{t: t, s: s, c: s.Client}) })
	t.Run("forbidden", func(t *testing.T) { testForbidden(&cluster{t: t, s: s, c: s.Client}) })
}

// Pods, Services and nodes by address; then changes: a pod gets its address, a
// Service comes and goes, a pod is deleted, a node changes address.
func testNames(k *cluster) {
	t := k.t
	hostPod := pod("names-system", "kube-proxy-x7", "node-a", corev1.PodRunning, time.Hour, "10.0.0.11")
	hostPod.Spec.HostNetwork = true
	k.pod(pod("names", "api-67f6cc8974-2kmdg", "node-a", corev1.PodRunning, time.Hour, "10.244.1.23", "fd00:10:244:1::17"), false)
	k.pod(pod("names", "redis-0", "node-b", corev1.PodRunning, time.Hour, "10.244.2.57"), false)
	k.pod(pod("names", "job-new", "node-b", corev1.PodPending, time.Minute), false)
	k.pod(hostPod, false)
	k.service(service("names", "api", []string{"10.96.0.20", "fd00:96::20"}, svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP)))
	k.service(service("names-system", "kube-dns", []string{"10.96.0.10"}, svcPort("dns", 53, intstr.FromInt32(53), corev1.ProtocolUDP)))
	k.node(node("node-a", internalIP("10.0.0.11"), corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.11"}, corev1.NodeAddress{Type: corev1.NodeHostName, Address: "node-a"}))
	k.node(node("node-b", internalIP("10.0.0.12")))

	r, w := k.resolver(k.s.Admin, Config{})
	podName := func(ns, n string) Name { return Name{Kind: "pod", Namespace: ns, Name: n} }
	wantName(t, r, "10.244.1.23", podName("names", "api-67f6cc8974-2kmdg"))
	wantName(t, r, "fd00:10:244:1::17", podName("names", "api-67f6cc8974-2kmdg"))
	wantName(t, r, "::ffff:10.244.1.23", podName("names", "api-67f6cc8974-2kmdg"))
	wantName(t, r, "10.244.2.57", podName("names", "redis-0"))
	wantName(t, r, "10.96.0.20", Name{Kind: "service", Namespace: "names", Name: "api"})
	wantName(t, r, "fd00:96::20", Name{Kind: "service", Namespace: "names", Name: "api"})
	wantName(t, r, "10.96.0.10", Name{Kind: "service", Namespace: "names-system", Name: "kube-dns"})
	// The API server's own Service, which it makes at start.
	wantName(t, r, "10.96.0.1", Name{Kind: "service", Namespace: "default", Name: "kubernetes"})
	wantName(t, r, "10.0.0.11", Name{Kind: "node", Name: "node-a"}) // not kube-proxy: hostNetwork
	wantName(t, r, "203.0.113.11", Name{Kind: "node", Name: "node-a"})
	wantName(t, r, "10.0.0.12", Name{Kind: "node", Name: "node-b"})
	wantName(t, r, "8.8.8.8", Name{})
	if got, want := r.Status(), "names on (4 pods, 3 services)"; got != want {
		t.Errorf("Status() = %q, want %q", got, want)
	}

	// What the informers keep of a pod the API server sent whole.
	obj, ok, _ := r.pods.GetIndexer().GetByKey("names/api-67f6cc8974-2kmdg")
	if !ok {
		t.Fatal("names/api-67f6cc8974-2kmdg not in the pod cache")
	}
	if p := obj.(*corev1.Pod); len(p.Annotations) != 0 || len(p.Spec.Containers) != 0 || len(p.ManagedFields) != 0 || p.Status.PodIP != "10.244.1.23" || p.Spec.NodeName != "node-a" {
		t.Errorf("cached pod: %d annotations, %d containers, %d managed fields, address %q, node %q; want the first three dropped, the address and node kept",
			len(p.Annotations), len(p.Spec.Containers), len(p.ManagedFields), p.Status.PodIP, p.Spec.NodeName)
	}

	// A pod is scheduled, then gets its address.
	ctx := k.ctx()
	p := k.pod(pod("names", "api-1", "node-a", corev1.PodPending, 0), false)
	wantName(t, r, "10.244.1.40", Name{})
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.40", PodIPs: []corev1.PodIP{{IP: "10.244.1.40"}}}
	if _, err := k.c.CoreV1().Pods("names").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "10.244.1.40 named names/api-1 after the pod got it", func() bool {
		return r.Name(addr("10.244.1.40")).String() == "names/api-1"
	})
	// A Service with an address the API server allocates.
	k.service(service("names", "web", nil, svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP)))
	web, err := k.c.CoreV1().Services("names").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || web.Spec.ClusterIP == "" {
		t.Fatalf("the allocated cluster IP of names/web: %v %+v", err, web)
	}
	eventually(t, web.Spec.ClusterIP+" named names/web", func() bool { return r.Name(addr(web.Spec.ClusterIP)).String() == "names/web" })
	if err := k.c.CoreV1().Services("names").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, web.Spec.ClusterIP+" unknown after the Service is deleted", func() bool { return r.Name(addr(web.Spec.ClusterIP)) == Name{} })
	// A pod on a node is deleted gracefully: the API server only marks it, and it
	// keeps its address until the kubelet confirms (grace period 0, as here).
	if err := k.c.CoreV1().Pods("names").Delete(ctx, "api-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := k.c.CoreV1().Pods("names").Get(ctx, "api-1", metav1.GetOptions{}); err != nil || got.DeletionTimestamp == nil {
		t.Fatalf("a pod on a node, deleted: %v, deletion timestamp %v; want it kept and marked", err, got.DeletionTimestamp)
	}
	wantName(t, r, "10.244.1.40", Name{Kind: "pod", Namespace: "names", Name: "api-1"})
	if err := k.c.CoreV1().Pods("names").Delete(ctx, "api-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "10.244.1.40 unknown after the pod is gone", func() bool { return r.Name(addr("10.244.1.40")) == Name{} })

	n, err := k.c.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{internalIP("10.0.0.22")}
	if _, err := k.c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node-b named by its new address only", func() bool {
		return r.Name(addr("10.0.0.22")).String() == "node/node-b" && r.Name(addr("10.0.0.12")) == Name{}
	})
	if ws := w.get(); len(ws) != 0 {
		t.Errorf("warnings on a healthy API server: %q", ws)
	}
}

// NodePodsOnly lists pods with the field selector spec.nodeName, which the real API
// server applies: another node's pod is unknown unless an EndpointSlice names it.
func testNodePodsOnly(k *cluster) {
	t := k.t
	tcp := corev1.ProtocolTCP
	k.pod(pod("only", "api-1", "node-a", corev1.PodRunning, time.Hour, "10.244.11.23"), false)
	k.pod(pod("only", "lonely", "node-b", corev1.PodRunning, time.Hour, "10.244.12.9"), false)
	k.pod(pod("only", "redis-0", "node-b", corev1.PodRunning, time.Hour, "10.244.12.57"), false)
	k.service(service("only", "redis", []string{"10.96.0.30"}, svcPort("redis", 6379, intstr.FromInt32(6379), tcp)))
	k.slice(endpointSlice("only", "redis-x1", "redis", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("redis", 6379, tcp)}, endpoint(true, "only", "redis-0", "10.244.12.57")))
	r, _ := k.resolver(k.s.Admin, Config{Node: "node-a", NodePodsOnly: true})
	wantName(t, r, "10.244.11.23", Name{Kind: "pod", Namespace: "only", Name: "api-1"})
	wantName(t, r, "10.244.12.57", Name{Kind: "pod", Namespace: "only", Name: "redis-0"})
	wantName(t, r, "10.244.12.9", Name{})
	if _, err := r.Resolve(kubeSel("pod/only/redis-0")); err == nil || !strings.Contains(err.Error(), "not found on node node-a") {
		t.Errorf("Resolve(pod/only/redis-0) with node-a's pods only: error %v, want not found on node node-a", err)
	}
}

// Pod and Service selectors become addresses, with the objects as the API server
// stores them (its defaults: a Service port's protocol, target port).
func testResolve(k *cluster) {
	t := k.t
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	k.pod(pod("prod", "api-67f6cc8974-2kmdg", "node-a", corev1.PodRunning, time.Hour, "10.244.1.23", "fd00:10:244:1::17"), false)
	k.pod(pod("prod", "api-67f6cc8974-9xq2p", "node-b", corev1.PodRunning, time.Hour, "10.244.2.23"), false)
	k.pod(pod("prod", "starting", "node-b", corev1.PodPending, time.Second), false)
	k.pod(pod("batch", "done", "node-b", corev1.PodSucceeded, time.Hour, "10.244.2.99"), false)
	k.service(service("prod", "api", []string{"10.96.1.20"},
		svcPort("http", 80, intstr.FromString("web"), tcp), svcPort("metrics", 9090, intstr.FromInt32(9090), tcp)))
	k.slice(endpointSlice("prod", "api-abc12", "api", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("http", 8080, tcp), slicePortOf("metrics", 9090, tcp)},
		endpoint(true, "prod", "api-67f6cc8974-2kmdg", "10.244.1.23"),
		endpoint(true, "prod", "api-67f6cc8974-9xq2p", "10.244.2.23"),
		endpoint(false, "prod", "api-67f6cc8974-notready", "10.244.2.24")))
	k.slice(endpointSlice("prod", "api-def34", "api", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("metrics", 9090, tcp)}, endpoint(true, "prod", "api-old", "10.244.3.5")))
	k.slice(endpointSlice("prod", "web-xyz", "web", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("http", 8080, tcp)}, endpoint(true, "prod", "web-1", "10.244.9.9")))
	k.service(service("dns", "kube-dns", []string{"10.96.1.10"},
		svcPort("dns", 53, intstr.FromInt32(53), udp), svcPort("dns-tcp", 53, intstr.FromInt32(53), tcp)))
	k.slice(endpointSlice("dns", "kube-dns-1", "kube-dns", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("dns", 53, udp), slicePortOf("dns-tcp", 53, tcp)}, endpoint(true, "dns", "coredns-1", "10.244.1.2")))
	k.service(service("prod", "dual", []string{"10.96.1.50", "fd00:96::50"}, svcPort("", 443, intstr.FromInt32(8443), tcp)))
	k.slice(endpointSlice("prod", "dual-v4", "dual", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("", 8443, tcp)}, endpoint(true, "prod", "dual-1", "10.244.1.50")))
	k.slice(endpointSlice("prod", "dual-v6", "dual", discoveryv1.AddressTypeIPv6,
		[]discoveryv1.EndpointPort{slicePortOf("", 8443, tcp)}, endpoint(true, "prod", "dual-1", "fd00:10:244:1::50")))
	k.service(service("prod", "redis", []string{corev1.ClusterIPNone}, svcPort("redis", 6379, intstr.FromInt32(6379), tcp)))
	k.slice(endpointSlice("prod", "redis-1", "redis", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("redis", 6379, tcp)},
		endpoint(true, "prod", "redis-0", "10.244.2.57"), endpoint(true, "prod", "redis-1", "10.244.1.57")))
	k.service(service("prod", "headless-empty", []string{corev1.ClusterIPNone}, svcPort("x", 80, intstr.FromInt32(80), tcp)))
	k.service(service("prod", "headless-noports", []string{corev1.ClusterIPNone}))
	k.slice(endpointSlice("prod", "headless-noports-1", "headless-noports", discoveryv1.AddressTypeIPv4, nil, endpoint(true, "prod", "hn-0", "10.244.1.70")))
	k.service(service("prod", "nobody", []string{"10.96.1.60"}, svcPort("http", 80, intstr.FromInt32(8080), tcp)))
	ext := service("prod", "payments", nil)
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "payments.example.com"
	k.service(ext)
	// A port without a protocol: the API server makes it TCP.
	k.service(service("prod", "noproto", []string{"10.96.1.70"}, svcPort("http", 80, intstr.FromInt32(8080), "")))

	r, _ := k.resolver(k.s.Admin, Config{})
	for _, tc := range []struct {
		sel  string
		want []string
	}{
		{"pod/prod/api-67f6cc8974-2kmdg", []string{"10.244.1.23", "fd00:10:244:1::17"}},
		{"pod/prod/api-67f6cc8974-2kmdg:8080", []string{"10.244.1.23:8080", "[fd00:10:244:1::17]:8080"}},
		{"svc/prod/api:http", []string{"10.96.1.20:80", "10.244.1.23:8080", "10.244.2.23:8080"}},
		{"svc/prod/api:80", []string{"10.96.1.20:80", "10.244.1.23:8080", "10.244.2.23:8080"}},
		{"svc/prod/api:metrics", []string{"10.96.1.20:9090", "10.244.1.23:9090", "10.244.2.23:9090", "10.244.3.5:9090"}},
		{"svc/prod/api", []string{"10.96.1.20", "10.244.1.23", "10.244.2.23", "10.244.3.5"}},
		{"svc/dns/kube-dns:53", []string{"10.96.1.10:53", "10.244.1.2:53"}},
		{"svc/dns/kube-dns:dns-tcp", []string{"10.96.1.10:53", "10.244.1.2:53"}},
		{"svc/prod/dual:443", []string{"10.96.1.50:443", "[fd00:96::50]:443", "10.244.1.50:8443", "[fd00:10:244:1::50]:8443"}},
		{"svc/prod/redis", []string{"10.244.1.57", "10.244.2.57"}},
		{"svc/prod/redis:redis", []string{"10.244.1.57:6379", "10.244.2.57:6379"}},
		{"svc/prod/headless-noports:7000", []string{"10.244.1.70:7000"}},
		{"svc/prod/nobody:http", []string{"10.96.1.60:80"}},
		{"svc/prod/noproto:80", []string{"10.96.1.70:80"}},
	} {
		got, err := r.Resolve(kubeSel(tc.sel))
		if err != nil {
			t.Errorf("Resolve(%s): %v", tc.sel, err)
			continue
		}
		if gs := selectorStrings(got); !slices.Equal(gs, tc.want) {
			t.Errorf("Resolve(%s) = %q, want %q", tc.sel, gs, tc.want)
		}
	}
	for _, tc := range []struct{ sel, why string }{
		{"pod/prod/api", "pod prod/api not found"},
		{"pod/staging/api-67f6cc8974-2kmdg", "pod staging/api-67f6cc8974-2kmdg not found"},
		{"pod/prod/starting", "pod prod/starting has no address yet (phase Pending)"},
		{"pod/batch/done", "pod batch/done has ended (phase Succeeded)"},
		{"svc/prod/missing", "service prod/missing not found"},
		{"svc/prod/api:8080", "service prod/api has no port 8080 (its ports: http 80→web/TCP, metrics 9090/TCP)"},
		{"svc/prod/api:grpc", `service prod/api has no port named "grpc"`},
		{"svc/prod/headless-empty", "service prod/headless-empty is headless and has no ready endpoints"},
		{"svc/prod/headless-noports:web", "service prod/headless-noports has no ports"},
		{"svc/prod/payments", "ExternalName Service (payments.example.com)"},
	} {
		got, err := r.Resolve(kubeSel(tc.sel))
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Resolve(%s) = %q, %v; want an error saying %q", tc.sel, selectorStrings(got), err, tc.why)
		}
	}
}

// --agents k8s: the agent pods of the label in the namespace, and the CA ConfigMap,
// read with a user's credentials bound to deploy/follower/rbac.yaml's Role.
func testAgents(k *cluster) {
	t := k.t
	const label = "app.kubernetes.io/name=pathtrace" // agentPod's
	k.s.Namespace(t, "pathtrace")
	k.applyFile("../../deploy/follower/rbac.yaml")
	oncall := k.s.ServiceAccount(t, "oncall", "carol")
	k.bind("carol-follows", "Role", "pathtrace-follower", "pathtrace", "oncall", "carol")
	r := NewResolver(mustClient(t, oncall), Config{}) // Agents asks the API server: no Start needed

	if _, err := r.Agents(k.ctx(), "pathtrace", label); err == nil || !strings.Contains(err.Error(), "is the DaemonSet installed?") {
		t.Errorf("Agents before any agent pod: %v", err)
	}
	noPort := agentPod("pathtrace-noport", "node-d", corev1.PodRunning, time.Hour, "10.244.4.4", 7070)
	noPort.Spec.Containers[0].Ports = noPort.Spec.Containers[0].Ports[:1]
	k.pod(agentPod("pathtrace-c3", "node-c", corev1.PodPending, time.Minute, "", 7070), false)
	k.pod(noPort, false)
	_, err := r.Agents(k.ctx(), "pathtrace", label)
	for _, why := range []string{"no running pathtrace agent pods", "pathtrace-c3: phase Pending", `pathtrace-noport: no container port named "api"`} {
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("Agents with none usable: error %v, want it to say %q", err, why)
		}
	}

	other := agentPod("pathtrace-x", "node-a", corev1.PodRunning, time.Hour, "10.244.1.9", 7070)
	other.Namespace = "elsewhere"
	unlabelled := agentPod("web", "node-a", corev1.PodRunning, time.Hour, "10.244.1.10", 7070)
	unlabelled.Labels = nil
	k.pod(agentPod("pathtrace-a0", "node-a", corev1.PodRunning, time.Hour, "10.244.1.3", 7070), false)
	k.pod(agentPod("pathtrace-b2", "node-b", corev1.PodRunning, time.Hour, "10.244.2.5", 7070), false)
	k.pod(agentPod("pathtrace-v6", "node-e", corev1.PodRunning, time.Hour, "fd00:10:244:5::5", 7070), false)
	k.pod(agentPod("pathtrace-old", "node-b", corev1.PodRunning, time.Hour, "10.244.2.4", 7070), true)
	k.pod(other, false)
	k.pod(unlabelled, false)
	// The API server stamps creation in whole seconds: the rolling update's new pod
	// on node-a (named to sort after the old one) comes a second later.
	time.Sleep(1100 * time.Millisecond)
	k.pod(agentPod("pathtrace-a1", "node-a", corev1.PodRunning, time.Minute, "10.244.1.5", 7070), false)

	got, err := r.Agents(k.ctx(), "pathtrace", label)
	if err != nil {
		t.Fatal(err)
	}
	want := []Agent{
		{Node: "node-a", Addr: "10.244.1.5:7070"},
		{Node: "node-b", Addr: "10.244.2.5:7070"},
		{Node: "node-e", Addr: "[fd00:10:244:5::5]:7070"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Agents = %+v, want %+v", got, want)
	}

	// The CA: missing, then published.
	if _, err := r.AgentCA(k.ctx(), "pathtrace"); err == nil || !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "--tls-ca") {
		t.Errorf("AgentCA without the ConfigMap: %v, want not found and the flag to pass", err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: AgentCAConfigMap, Namespace: "pathtrace"}, Data: map[string]string{"ca.crt": string(k.s.CA)}}
	if _, err := k.c.CoreV1().ConfigMaps("pathtrace").Create(k.ctx(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ca, err := r.AgentCA(k.ctx(), "pathtrace"); err != nil || string(ca) != string(k.s.CA) {
		t.Errorf("AgentCA = %d bytes, %v; want the ConfigMap's ca.crt", len(ca), err)
	}

	// Without the Role: the API server's own refusal, with the namespace.
	stranger := NewResolver(mustClient(t, k.s.ServiceAccount(t, "oncall", "stranger")), Config{})
	_, err = stranger.Agents(k.ctx(), "pathtrace", label)
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `in namespace "pathtrace"`) || !strings.Contains(err.Error(), "system:serviceaccount:oncall:stranger") {
		t.Errorf("Agents when forbidden: %v, want the forbidden error with the namespace and the user", err)
	}
	if _, err := stranger.AgentCA(k.ctx(), "pathtrace"); err == nil || !apierrors.IsForbidden(err) {
		t.Errorf("AgentCA when forbidden: %v", err)
	}
}

// bind binds a ClusterRole or Role to a service account: a ClusterRoleBinding when
// namespace is "", else a RoleBinding there.
func (k *cluster) bind(name, kind, role, namespace, saNamespace, sa string) {
	k.t.Helper()
	subj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: saNamespace}}
	ref := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: kind, Name: role}
	var err error
	if namespace == "" {
		_, err = k.c.RbacV1().ClusterRoleBindings().Create(k.ctx(), &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Subjects: subj, RoleRef: ref}, metav1.CreateOptions{})
	} else {
		_, err = k.c.RbacV1().RoleBindings(namespace).Create(k.ctx(), &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Subjects: subj, RoleRef: ref}, metav1.CreateOptions{})
	}
	if err != nil {
		k.t.Fatalf("bind %s %s to %s/%s: %v", kind, role, saNamespace, sa, err)
	}
}

func mustClient(t *testing.T, rc *rest.Config) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The agents' API auth: the agent's service account, with deploy/rbac.yaml, reviews
// followers' tokens with a real TokenReview and SubjectAccessReview.
func testReview(k *cluster) {
	t := k.t
	k.s.Namespace(t, "pathtrace")
	k.applyFile("../../deploy/rbac.yaml")
	k.applyFile("../../deploy/follower/rbac.yaml")
	agent := mustClient(t, k.s.ServiceAccount(t, "pathtrace", "pathtrace-agent"))
	alice := k.s.ServiceAccount(t, "oncall", "alice")
	k.bind("alice-follows", "ClusterRole", "pathtrace-follower", "", "oncall", "alice")
	bob := k.s.ServiceAccount(t, "oncall", "bob")
	gone := k.s.ServiceAccount(t, "oncall", "gone")
	if err := k.c.CoreV1().ServiceAccounts("oncall").Delete(k.ctx(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// RBAC's resourceNames narrow following to some nodes.
	if _, err := k.c.RbacV1().ClusterRoles().Create(k.ctx(), &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "follow-node-b"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{FollowGroup}, Resources: []string{FollowResource}, Verbs: []string{FollowVerb}, ResourceNames: []string{"node-b"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dave := k.s.ServiceAccount(t, "oncall", "dave")
	k.bind("dave-follows-b", "ClusterRole", "follow-node-b", "", "oncall", "dave")

	tokenOf := func(rc *rest.Config) string {
		tok, err := BearerToken(rc)
		if err != nil || tok == "" {
			t.Fatalf("BearerToken of a service account's config: %q %v", tok, err)
		}
		return tok
	}
	ra, rb := NewReviewer(agent, "node-a", time.Minute), NewReviewer(agent, "node-b", time.Minute)
	ctx := k.ctx()
	if u, err := ra.Review(ctx, tokenOf(alice)); err != nil || u != "system:serviceaccount:oncall:alice" {
		t.Errorf("alice: %q %v", u, err)
	}
	if _, err := ra.Review(ctx, tokenOf(bob)); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "system:serviceaccount:oncall:bob may not create follows.pathtrace.io \"node-a\"") {
		t.Errorf("bob (no binding): %v", err)
	}
	if _, err := ra.Review(ctx, tokenOf(dave)); !errors.Is(err, ErrDenied) {
		t.Errorf("dave on node-a (bound to node-b only): %v, want denied", err)
	}
	if u, err := rb.Review(ctx, tokenOf(dave)); err != nil || u != "system:serviceaccount:oncall:dave" {
		t.Errorf("dave on node-b: %q %v", u, err)
	}
	_, err := ra.Review(ctx, tokenOf(gone))
	if !errors.Is(err, ErrDenied) {
		t.Errorf("a deleted service account's token: %v, want denied", err)
	}
	t.Logf("a deleted service account's token: %v", err)
	if _, err := ra.Review(ctx, "not-a-token"); !errors.Is(err, ErrDenied) {
		t.Errorf("a token the API server never issued: %v, want denied", err)
	}
	if _, err := BearerToken(k.s.Admin); err == nil {
		t.Error("BearerToken of a client-certificate config: no error")
	}

	// An agent whose account may not review: the API server's refusal, not a denial of
	// the follower, and not cached.
	weak := NewReviewer(mustClient(t, bob), "node-a", time.Minute)
	_, err = weak.Review(ctx, tokenOf(alice))
	if err == nil || errors.Is(err, ErrDenied) || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "TokenReview") {
		t.Errorf("review by an account without RBAC for it: %v, want TokenReview forbidden", err)
	}
}

// An agent without the RBAC of deploy/rbac.yaml for pods: one warning in the API
// server's words, services still named; once bound, the informers' retries bring
// the pods' names.
func testForbidden(k *cluster) {
	t := k.t
	k.pod(pod("forbid", "api-1", "node-a", corev1.PodRunning, time.Hour, "10.244.21.23"), false)
	k.service(service("forbid", "api", []string{"10.96.2.20"}, svcPort("http", 80, intstr.FromInt32(8080), corev1.ProtocolTCP)))
	if _, err := k.c.RbacV1().ClusterRoles().Create(k.ctx(), &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "no-pods"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "nodes"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rc := k.s.ServiceAccount(t, "forbid", "agent")
	k.bind("forbid-agent", "ClusterRole", "no-pods", "", "forbid", "agent")
	r, w := k.resolver(rc, Config{SyncTimeout: 2 * time.Second})
	ws := w.get()
	if len(ws) != 1 {
		t.Fatalf("warnings: %q, want exactly one", ws)
	}
	for _, want := range []string{"kubernetes names unresolved", `pods is forbidden: User "system:serviceaccount:forbid:agent" cannot list resource "pods"`, "RBAC", "tracing goes on"} {
		if !strings.Contains(ws[0], want) {
			t.Errorf("warning %q does not say %q", ws[0], want)
		}
	}
	wantName(t, r, "10.96.2.20", Name{Kind: "service", Namespace: "forbid", Name: "api"})
	wantName(t, r, "10.244.21.23", Name{Unresolved: true})
	if st := r.Status(); !strings.HasPrefix(st, "names unresolved: pods is forbidden") {
		t.Errorf("Status() = %q, want names unresolved: pods is forbidden...", st)
	}
	k.s.Namespace(t, "pathtrace")
	k.applyFile("../../deploy/rbac.yaml")
	k.bind("forbid-agent-pods", "ClusterRole", "pathtrace-agent", "", "forbid", "agent")
	deadline := time.Now().Add(30 * time.Second) // client-go backs off up to 30s between lists
	for r.Name(addr("10.244.21.23")).String() != "forbid/api-1" {
		if time.Now().After(deadline) {
			t.Fatalf("10.244.21.23 not named 30s after pods were allowed: %+v, %s", r.Name(addr("10.244.21.23")), r.Status())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ws := w.get(); len(ws) != 1 {
		t.Errorf("warnings after recovery: %q, want still one", ws)
	}
}
