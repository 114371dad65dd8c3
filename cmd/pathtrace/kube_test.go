package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/pathtrace/pathtrace/tracer/kube/kubetest"
)

// labCluster runs a real kube-apiserver and etcd (kubetest) holding the lab's objects
// as a cluster's controllers and kubelets would have written them: the pods with
// their addresses (status subresource), the Service api at 10.96.12.34 and its
// EndpointSlice, the two nodes.
func labCluster(t *testing.T) *kubetest.Server {
	t.Helper()
	s := kubetest.Start(t)
	ctx := context.Background()
	c := s.Client
	fail := func(what string, err error) {
		if err != nil {
			t.Fatalf("lab cluster: %s: %v", what, err)
		}
	}
	for _, n := range []struct{ name, ip string }{{"node-a", "10.0.0.11"}, {"node-b", "10.0.0.12"}} {
		node, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}}, metav1.CreateOptions{})
		fail("node "+n.name, err)
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip}}
		_, err = c.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		fail("node "+n.name, err)
	}
	for _, p := range []struct{ name, ip, node string }{{"api-a", "10.244.1.23", "node-a"}, {"redis", "10.244.1.42", "node-a"}, {"api-b", "10.244.2.57", "node-b"}} {
		labPod(t, s, "default", p.name, p.node, p.ip, nil, nil)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "default"}, Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.12.34", ClusterIPs: []string{"10.96.12.34"},
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
	}}
	_, err := c.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	fail("service default/api", err)
	name, port, proto, ready := "http", int32(8080), corev1.ProtocolTCP, true
	ep := func(ip, pod string) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: pod}}
	}
	_, err = c.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "api-x1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "api"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
		Endpoints:   []discoveryv1.Endpoint{ep("10.244.1.23", "api-a"), ep("10.244.2.57", "api-b")},
	}, metav1.CreateOptions{})
	fail("EndpointSlice default/api-x1", err)
	return s
}

// labPod creates a Running pod with address ip on node, as the kubelet reports it.
func labPod(t *testing.T, s *kubetest.Server, ns, name, node, ip string, labels map[string]string, ports []corev1.ContainerPort) {
	t.Helper()
	ctx := context.Background()
	s.Namespace(t, ns)
	p, err := s.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "x", Ports: ports}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("lab cluster: pod %s/%s: %v", ns, name, err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := s.Client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("lab cluster: status of pod %s/%s: %v", ns, name, err)
	}
}

// applyRepoFile applies a manifest of deploy/ to the cluster as its admin.
func applyRepoFile(t *testing.T, s *kubetest.Server, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(context.Background(), s.Admin, data, kubetest.ApplyOptions{}); err != nil {
		t.Fatalf("apply %s: %v", path, err)
	}
}

// bindSA binds a service account to a ClusterRole (namespace "") or a Role.
func bindSA(t *testing.T, s *kubetest.Server, kind, role, namespace, saNS, sa string) {
	t.Helper()
	meta := "metadata: {name: " + sa + "-" + strings.ToLower(kind) + "-" + role + "}"
	if namespace != "" {
		meta = "metadata: {name: " + sa + "-" + role + ", namespace: " + namespace + "}"
	}
	doc := "apiVersion: rbac.authorization.k8s.io/v1\nkind: " + kind + "Binding\n" + meta +
		"\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: " + kind + ", name: " + role + "}" +
		"\nsubjects: [{kind: ServiceAccount, name: " + sa + ", namespace: " + saNS + "}]\n"
	if err := s.Apply(context.Background(), s.Admin, []byte(doc), kubetest.ApplyOptions{}); err != nil {
		t.Fatalf("bind %s %s to %s/%s: %v", kind, role, saNS, sa, err)
	}
}

// With a kubeconfig, pod and Service selectors become addresses, journeys name their
// ends (JSON src_pod, dst_service), and the agent counts drops per pod within its
// series budget.
func TestKubeNames(t *testing.T) {
	needLab(t)
	api := labCluster(t)
	kc := api.Kubeconfig(t, api.Admin)

	f := startFollow(t, "node-a", "--kubeconfig", kc, "--proto", "tcp", "svc/default/api:http")
	if out, err := pod(t, "a-api", "tcp", "10.96.12.34:80"); err != nil {
		t.Fatalf("a-api → the Service: %v %s", err, out)
	}
	js := f.stop(t)
	stderr := f.stderr.String()
	if !strings.Contains(stderr, "svc/default/api:http is 10.96.12.34:80, 10.244.1.23:8080, 10.244.2.57:8080") {
		t.Errorf("the Service selector's addresses are not said:\n%s", stderr)
	}
	if !strings.Contains(stderr, "names on (3 pods, 2 services), from kubeconfig") {
		t.Errorf("no names status line:\n%s", stderr)
	}
	syns := find(js, "S", "10.244.1.23:", "10.96.12.34:80")
	if len(syns) != 1 {
		t.Fatalf("want the SYN to the Service VIP once, got:\n%s", dump(js))
	}
	if s := syns[0]; s.SrcPod != "default/api-a" || s.DstService != "default/api" || s.Names != "" {
		t.Errorf("SYN names: src_pod %q dst_service %q names %q; want default/api-a, default/api", s.SrcPod, s.DstService, s.Names)
	}

	// A pod selector, and text output with names in the header.
	code, _ := runBin(t, nil, "follow", "--netns", labPrefix+"-node-a", "--kubeconfig", kc, "--duration", "1s", "pod/default/nope")
	if code != 1 {
		t.Errorf("a pod that does not exist: exit %d, want 1", code)
	}
	f = runFollow(t, "node-a", []string{"--netns", labPrefix + "-node-a", "--node", "node-a", "--kubeconfig", kc, "pod/default/redis:6379"})
	if out, err := pod(t, "a-api", "tcp", "10.244.1.42:6379"); err != nil {
		t.Fatalf("a-api → redis: %v %s", err, out)
	}
	js = f.stop(t)
	if !strings.Contains(f.stderr.String(), "pod/default/redis:6379 is 10.244.1.42:6379") {
		t.Errorf("pod selector:\n%s", f.stderr.String())
	}
	if syns := find(js, "S", "10.244.1.23:", "10.244.1.42:6379"); len(syns) != 1 || syns[0].DstPod != "default/redis" || syns[0].SrcPod != "default/api-a" {
		t.Errorf("pod selector: want the SYN to redis with both pods named, got:\n%s", dump(js))
	}

	// The agent: drops per pod, opt-in.
	fault(t, "policy")
	a := startAgent(t, "node-b", "--kubeconfig", kc, "--metrics-pod-names", "10")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(a.stderr.String(), "names on") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for range 3 {
		pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "200ms")
	}
	var src, dst float64
	for time.Now().Before(deadline) {
		ss := a.scrape(t)
		src = sum(ss, "pathtrace_pod_drops_total", "namespace", "default", "pod", "api-b", "end", "src", "reason", "NETFILTER_DROP")
		dst = sum(ss, "pathtrace_pod_drops_total", "namespace", "default", "pod", "redis", "end", "dst", "reason", "NETFILTER_DROP")
		if src >= 3 && dst >= 3 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if src < 3 || src != dst {
		t.Errorf("pod drops: api-b as source %v, redis as destination %v; want each at least 3 (3 SYNs dropped), equal", src, dst)
	}
}

// Without a configuration, names are off and said so; pod selectors are refused. With
// an API server that refuses (RBAC) or does not answer, tracing goes on, the names are
// marked unresolved and there is one warning.
func TestKubeNamesFaults(t *testing.T) {
	needLab(t)
	code, stderr := runBin(t, nil, "follow", "--netns", labPrefix+"-node-a", "--duration", "1s", "pod/default/redis")
	if code != 1 || !strings.Contains(stderr, "need a kubeconfig or in-cluster config") || !strings.Contains(stderr, "names off: no kubeconfig or in-cluster config") {
		t.Errorf("pod selector without kubeconfig: exit %d\n%s", code, stderr)
	}
	code, stderr = runBin(t, nil, "follow", "--netns", labPrefix+"-node-a", "--kubeconfig", "/nonexistent/kubeconfig", "--duration", "1s", "10.244.1.42")
	if code != 1 || !strings.Contains(stderr, "kubeconfig /nonexistent/kubeconfig") {
		t.Errorf("missing --kubeconfig: exit %d\n%s", code, stderr)
	}
	assertNothingLeft(t)

	for _, tc := range []struct {
		name, warn string
		server     func() string
	}{
		{"rbac", `pods is forbidden: User "system:serviceaccount:pathtrace:no-pods" cannot list resource "pods"`, func() string {
			// An account with the agent's ClusterRole but for pods.
			api := labCluster(t)
			api.Namespace(t, "pathtrace")
			if err := api.Apply(context.Background(), api.Admin, []byte(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: no-pods}
rules:
- {apiGroups: [""], resources: [services, nodes], verbs: [get, list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
`), kubetest.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			rc := api.ServiceAccount(t, "pathtrace", "no-pods")
			bindSA(t, api, "ClusterRole", "no-pods", "", "pathtrace", "no-pods")
			return api.Kubeconfig(t, rc)
		}},
		{"unreachable", "unreachable", func() string {
			return writeKubeconfig(t, "http://"+freeAddr(t))
		}},
	} {
		f := startFollow(t, "node-a", "--kubeconfig", tc.server(), "--proto", "tcp", "10.244.1.42:6379")
		if out, err := pod(t, "a-api", "tcp", "10.244.1.42:6379"); err != nil {
			t.Fatalf("%s: a-api → redis: %v %s", tc.name, err, out)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(f.stderr.String(), "warning:") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		pod(t, "a-api", "tcp", "10.244.1.42:6379")
		js := f.stop(t)
		stderr := f.stderr.String()
		if n := strings.Count(stderr, "warning:"); n != 1 || !strings.Contains(stderr, tc.warn) {
			t.Errorf("%s: %d warnings, want 1 with %q:\n%s", tc.name, n, tc.warn, stderr)
		}
		syns := find(js, "S", "10.244.1.23:", "10.244.1.42:6379")
		if len(syns) != 2 {
			t.Fatalf("%s: tracing did not go on: want 2 SYNs, got:\n%s", tc.name, dump(js))
		}
		// redis is behind no Service: without the pod list it cannot be named. (api-a,
		// behind the Service, still is when only pods are denied: EndpointSlices name it.)
		for _, s := range syns {
			if s.Names != "unresolved" || s.DstPod != "" || tc.name == "unreachable" && s.SrcPod != "" {
				b, _ := json.Marshal(s)
				t.Errorf("%s: want names unresolved, got %s", tc.name, b)
			}
		}
	}
}

// writeKubeconfig writes a kubeconfig for a server that is not there.
func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster: {server: " + server + "}\n" +
		"users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: lab\n  context: {cluster: lab, user: u}\ncurrent-context: lab\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// In a cluster the follower finds every node's agent through the API server (their
// pods' address and "api" port) and joins their journeys; the agents here serve
// --api tls: with certificates from pathtrace certs and --auth-kube, as the DaemonSet's
// do: the follower authenticates with its kubeconfig's token (a service account's,
// bound to deploy/follower/rbac.yaml's roles), reviewed by the real API server
// (TokenReview, SubjectAccessReview), and trusts the CA of the ConfigMap.
func TestKubeAgents(t *testing.T) {
	needLab(t)
	api := labCluster(t)
	api.Namespace(t, "pathtrace")
	applyRepoFile(t, api, "../../deploy/follower/rbac.yaml")
	alice := api.ServiceAccount(t, "oncall", "alice")
	bindSA(t, api, "ClusterRole", "pathtrace-follower", "", "oncall", "alice")
	bindSA(t, api, "Role", "pathtrace-follower", "pathtrace", "oncall", "alice")
	// The follower names and resolves svc/default/api itself, with the names role.
	bindSA(t, api, "ClusterRole", "pathtrace-follower-names", "", "oncall", "alice")
	// bob may find the agents, not follow through them.
	bob := api.ServiceAccount(t, "oncall", "bob")
	bindSA(t, api, "Role", "pathtrace-follower", "pathtrace", "oncall", "bob")
	// gone's service account is deleted: its token is refused by the API server itself.
	gone := api.ServiceAccount(t, "oncall", "gone")
	if err := api.Client.CoreV1().ServiceAccounts("oncall").Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	admin, kc := api.Kubeconfig(t, api.Admin), api.Kubeconfig(t, alice)

	code, stderr := runBin(t, nil, "follow", "--agents", "k8s", "--kubeconfig", kc, "--duration", "1s", "10.244.2.57")
	if code != 1 || !strings.Contains(stderr, "is the DaemonSet installed?") {
		t.Errorf("no agent pods: exit %d\n%s", code, stderr)
	}
	certs := filepath.Join(t.TempDir(), "certs")
	if code, stderr := runBin(t, nil, "certs", "--out", certs); code != 0 {
		t.Fatalf("pathtrace certs: exit %d\n%s", code, stderr)
	}
	ports := map[string]string{}
	var agents []*agentProc
	for _, node := range []string{"node-a", "node-b"} {
		addr := freeAddr(t)
		_, port, _ := strings.Cut(addr, ":")
		ports[node] = port
		// The agents review with the admin's credentials here (the DaemonSet's account
		// has the same two verbs: deploy's tests check it).
		agents = append(agents, startAgent(t, node, "--api", "tls:"+addr, "--tls-cert", certs+"/agent.crt",
			"--tls-key", certs+"/agent.key", "--tls-client-ca", certs+"/ca.crt", "--auth-kube", "--kubeconfig", admin))
	}
	for node, port := range ports {
		p, _ := strconv.Atoi(port)
		labPod(t, api, "pathtrace", "pathtrace-agent-"+node, node, "127.0.0.1", map[string]string{"app.kubernetes.io/name": "pathtrace-agent"},
			[]corev1.ContainerPort{{Name: "metrics", ContainerPort: 9435}, {Name: "api", ContainerPort: int32(p)}})
	}
	// The agents' CA is published in a ConfigMap; without it the follower is told what
	// to pass, before any agent is asked.
	if code, stderr := runBin(t, nil, "follow", "--agents", "k8s", "--kubeconfig", kc, "--duration", "1s", "10.244.2.57"); code != 1 ||
		!strings.Contains(stderr, "pathtrace-agent-ca") || !strings.Contains(stderr, "--tls-ca") {
		t.Errorf("no CA ConfigMap: exit %d\n%s", code, stderr)
	}
	ca, _ := os.ReadFile(certs + "/ca.crt")
	if _, err := api.Client.CoreV1().ConfigMaps("pathtrace").Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "pathtrace-agent-ca", Namespace: "pathtrace"}, Data: map[string]string{"ca.crt": string(ca)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A deleted service account's token: the API server refuses it before any agent
	// is found.
	code, stderr = runBin(t, nil, "follow", "--agents", "k8s", "--kubeconfig", api.Kubeconfig(t, gone), "--duration", "1s", "10.244.2.57")
	if code != 1 || !strings.Contains(stderr, "Unauthorized") {
		t.Errorf("a deleted service account's token: exit %d\n%q", code, stderr)
	}
	// A user RBAC does not allow to follow: refused by both agents, nothing followed.
	code, stderr = runBin(t, nil, "follow", "--agents", "k8s", "--kubeconfig", api.Kubeconfig(t, bob), "--duration", "1s", "10.244.2.57")
	if want := "system:serviceaccount:oncall:bob may not create follows.pathtrace.io"; code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "no agent answered of 2") {
		t.Errorf("bob: exit %d, want 1 with %q\n%q", code, want, stderr)
	}
	// alice, by her kubeconfig's token, with nothing else to pass.
	f := runFollow(t, "k8s", []string{"--agents", "k8s", "--kubeconfig", kc, "--proto", "tcp", "svc/default/api"})
	if out, err := pod(t, "a-api", "tcp", "10.244.2.57:8080"); err != nil {
		t.Fatalf("a-api → api-b: %v %s", err, out)
	}
	paths := f.stopPaths(t)
	syns := findPaths(paths, "S", "10.244.1.23:", "10.244.2.57:8080")
	if len(syns) != 1 || strings.Join(syns[0].Nodes, ",") != "node-a,node-b" || syns[0].Verdict != "delivered" {
		t.Fatalf("want the SYN joined across node-a and node-b, got:\n%s\n%s", dumpPaths(paths), f.stderr.String())
	}
	if l := syns[0].Legs[0]; l.SrcPod != "default/api-a" || l.DstPod != "default/api-b" {
		t.Errorf("path legs not named: src_pod %q dst_pod %q", l.SrcPod, l.DstPod)
	}
	for _, a := range agents {
		if !strings.Contains(f.stderr.String(), "through the agent of node "+a.node+" (tls:127.0.0.1:"+ports[a.node]+")") {
			t.Errorf("agent of %s not used over tls:\n%s", a.node, f.stderr.String())
		}
		if !strings.Contains(a.stderr.String(), "user system:serviceaccount:oncall:alice (kube) follows") || strings.Count(a.stderr.String(), "refused") != 1 {
			t.Errorf("agent of %s: want alice's follow and bob's refusal logged:\n%s", a.node, a.stderr.String())
		}
		if n := sum(a.scrape(t), "pathtrace_follows_refused_total", "reason", "auth"); n != 1 {
			t.Errorf("agent of %s: pathtrace_follows_refused_total{reason=auth} %v, want 1", a.node, n)
		}
	}
	pluginThroughAgents(t, kc, api.Kubeconfig(t, bob), agents, ports)
}
