package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

// fakeAPIServer answers the lists and watches of pathtrace's informers with the lab's
// pods, Service and nodes, as a Kubernetes API server would: lists with a resource
// version, watches that stay open with nothing to say. forbid makes a resource answer
// 403, as when RBAC denies it.
type fakeAPIServer struct {
	srv    *httptest.Server
	forbid atomic.Value // string: the resource denied, "" none
	agents atomic.Value // string: the agent pods' list
	lists  atomic.Int64
	ca     atomic.Value // string: ca.crt of the ConfigMap pathtrace-agent-ca, "" none
	// Reviews as the API server does them: tokens it knows (token → user), and the
	// users RBAC lets create follows.pathtrace.io.
	tokens  map[string]string
	allowed map[string]bool
	reviews atomic.Int64
}

// setAgents lists agent pods, one per node, at 127.0.0.1 and their "api" port.
func (f *fakeAPIServer) setAgents(ports map[string]string) {
	var items []string
	for node, port := range ports {
		items = append(items, fmt.Sprintf(`{"metadata":{"name":"pathtrace-agent-%s","namespace":"pathtrace","uid":"uid-ag-%s","labels":{"app.kubernetes.io/name":"pathtrace-agent"},"creationTimestamp":"2026-11-26T10:00:00Z"},
			"spec":{"nodeName":%q,"containers":[{"name":"agent","image":"x","ports":[{"name":"metrics","containerPort":9435,"protocol":"TCP"},{"name":"api","containerPort":%s,"protocol":"TCP"}]}]},
			"status":{"phase":"Running","podIP":"127.0.0.1","podIPs":[{"ip":"127.0.0.1"}]}}`, node, node, node, port))
	}
	f.agents.Store(`{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[` + strings.Join(items, ",") + `]}`)
}

func labObjects() map[string]string {
	pod := func(name, ip, node string) string {
		return fmt.Sprintf(`{"metadata":{"name":%q,"namespace":"default","uid":%q,"resourceVersion":"1","creationTimestamp":"2026-11-26T10:00:00Z"},
			"spec":{"nodeName":%q,"containers":[{"name":"c","image":"x"}]},
			"status":{"phase":"Running","podIP":%q,"podIPs":[{"ip":%q}]}}`, name, "uid-"+name, node, ip, ip)
	}
	return map[string]string{
		"/api/v1/pods": `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[` +
			pod("api-a", "10.244.1.23", "node-a") + "," + pod("redis", "10.244.1.42", "node-a") + "," + pod("api-b", "10.244.2.57", "node-b") + `]}`,
		"/api/v1/services": `{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[
			{"metadata":{"name":"api","namespace":"default","uid":"uid-svc","resourceVersion":"1"},
			 "spec":{"type":"ClusterIP","clusterIP":"10.96.12.34","clusterIPs":["10.96.12.34"],"ports":[{"name":"http","protocol":"TCP","port":80,"targetPort":8080}]}}]}`,
		"/apis/discovery.k8s.io/v1/endpointslices": `{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{"resourceVersion":"1"},"items":[
			{"metadata":{"name":"api-x1","namespace":"default","uid":"uid-es","resourceVersion":"1","labels":{"kubernetes.io/service-name":"api"}},
			 "addressType":"IPv4","ports":[{"name":"http","protocol":"TCP","port":8080}],
			 "endpoints":[{"addresses":["10.244.1.23"],"conditions":{"ready":true},"targetRef":{"kind":"Pod","namespace":"default","name":"api-a"}},
			              {"addresses":["10.244.2.57"],"conditions":{"ready":true},"targetRef":{"kind":"Pod","namespace":"default","name":"api-b"}}]}]}`,
		"/api/v1/nodes": `{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[
			{"metadata":{"name":"node-a","uid":"uid-na","resourceVersion":"1"},"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.11"}]}},
			{"metadata":{"name":"node-b","uid":"uid-nb","resourceVersion":"1"},"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.12"}]}}]}`,
	}
}

func startFakeAPIServer(t *testing.T) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{}
	f.forbid.Store("")
	f.agents.Store(`{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}`)
	objs := labObjects()
	f.ca.Store("")
	f.tokens = map[string]string{"t": "alice", "t-bob": "bob"}
	f.allowed = map[string]bool{"alice": true}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.review(w, r) {
			return
		}
		if r.URL.Path == "/api/v1/namespaces/pathtrace/configmaps/pathtrace-agent-ca" && f.ca.Load().(string) != "" {
			w.Header().Set("Content-Type", "application/json")
			b, _ := json.Marshal(map[string]any{"kind": "ConfigMap", "apiVersion": "v1",
				"metadata": map[string]any{"name": "pathtrace-agent-ca", "namespace": "pathtrace"}, "data": map[string]string{"ca.crt": f.ca.Load().(string)}})
			w.Write(b)
			return
		}
		body, ok := objs[r.URL.Path]
		if r.URL.Path == "/api/v1/namespaces/pathtrace/pods" {
			body, ok = f.agents.Load().(string), r.URL.Query().Get("labelSelector") == "app.kubernetes.io/name=pathtrace-agent"
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		res := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		if res == f.forbid.Load().(string) {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"%s is forbidden: User \"system:serviceaccount:pathtrace:pathtrace-agent\" cannot list resource \"%s\" in API group \"\" at the cluster scope","reason":"Forbidden","details":{"kind":%q},"code":403}`, res, res, res)
			return
		}
		q := r.URL.Query()
		if q.Get("watch") == "true" || q.Get("watch") == "1" {
			if q.Get("sendInitialEvents") == "true" {
				// No streaming lists here: client-go falls back to list and watch.
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"sendInitialEvents is not supported","reason":"BadRequest","code":400}`)
				return
			}
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		f.lists.Add(1)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// kubeconfig writes a kubeconfig for server.
// review answers TokenReview and SubjectAccessReview with the real API types.
func (f *fakeAPIServer) review(w http.ResponseWriter, r *http.Request) bool {
	switch r.URL.Path {
	case "/apis/authentication.k8s.io/v1/tokenreviews":
		var tr authnv1.TokenReview
		decodeBody(r, &tr)
		f.reviews.Add(1)
		if u, ok := f.tokens[tr.Spec.Token]; ok {
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: u, Groups: []string{"system:authenticated"}}}
		} else {
			tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token, service account token has been invalidated"}
		}
		tr.Kind, tr.APIVersion = "TokenReview", "authentication.k8s.io/v1"
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(&tr)
		return true
	case "/apis/authorization.k8s.io/v1/subjectaccessreviews":
		var sar authzv1.SubjectAccessReview
		decodeBody(r, &sar)
		ra := sar.Spec.ResourceAttributes
		sar.Status.Allowed = f.allowed[sar.Spec.User] && ra != nil && ra.Group == "pathtrace.io" && ra.Resource == "follows" && ra.Verb == "create"
		sar.Kind, sar.APIVersion = "SubjectAccessReview", "authorization.k8s.io/v1"
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(&sar)
		return true
	}
	return false
}

// decodeBody decodes a request body as the API server does, JSON or protobuf (what
// client-go sends for built-in types).
func decodeBody(r *http.Request, into runtime.Object) {
	b, _ := io.ReadAll(r.Body)
	if _, _, err := scheme.Codecs.UniversalDeserializer().Decode(b, nil, into); err != nil {
		fmt.Fprintf(os.Stderr, "fake API server: %s: %v\n", r.URL.Path, err)
	}
}

func kubeconfig(t *testing.T, server string, token ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    token: %s
contexts:
- name: lab
  context:
    cluster: lab
    user: u
current-context: lab
`, server, append(token, "t")[0])
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// With a kubeconfig, pod and Service selectors become addresses, journeys name their
// ends (JSON src_pod, dst_service), and the agent counts drops per pod within its
// series budget.
func TestKubeNames(t *testing.T) {
	needLab(t)
	api := startFakeAPIServer(t)
	kc := kubeconfig(t, api.srv.URL)

	f := startFollow(t, "node-a", "--kubeconfig", kc, "--proto", "tcp", "svc/default/api:http")
	if out, err := pod(t, "a-api", "tcp", "10.96.12.34:80"); err != nil {
		t.Fatalf("a-api → the Service: %v %s", err, out)
	}
	js := f.stop(t)
	stderr := f.stderr.String()
	if !strings.Contains(stderr, "svc/default/api:http is 10.96.12.34:80, 10.244.1.23:8080, 10.244.2.57:8080") {
		t.Errorf("the Service selector's addresses are not said:\n%s", stderr)
	}
	if !strings.Contains(stderr, "names on (3 pods, 1 services), from kubeconfig") {
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
		{"rbac", "pods is forbidden", func() string {
			api := startFakeAPIServer(t)
			api.forbid.Store("pods")
			return api.srv.URL
		}},
		{"unreachable", "unreachable", func() string { return "http://" + freeAddr(t) }},
	} {
		f := startFollow(t, "node-a", "--kubeconfig", kubeconfig(t, tc.server()), "--proto", "tcp", "10.244.1.42:6379")
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

// In a cluster the follower finds every node's agent through the API server (their
// pods' address and "api" port) and joins their journeys; the agents here serve
// --api tls: with certificates from pathtrace certs and --auth-kube, as the DaemonSet's
// do: the follower authenticates with its kubeconfig's token, reviewed by the API
// server (TokenReview, SubjectAccessReview), and trusts the CA of the ConfigMap.
func TestKubeAgents(t *testing.T) {
	needLab(t)
	api := startFakeAPIServer(t)
	kc := kubeconfig(t, api.srv.URL)
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
		agents = append(agents, startAgent(t, node, "--api", "tls:"+addr, "--tls-cert", certs+"/agent.crt",
			"--tls-key", certs+"/agent.key", "--tls-client-ca", certs+"/ca.crt", "--auth-kube", "--kubeconfig", kc))
	}
	api.setAgents(ports)
	// The agents' CA is published in a ConfigMap; without it the follower is told what
	// to pass, before any agent is asked.
	if code, stderr := runBin(t, nil, "follow", "--agents", "k8s", "--kubeconfig", kc, "--duration", "1s", "10.244.2.57"); code != 1 ||
		!strings.Contains(stderr, "pathtrace-agent-ca") || !strings.Contains(stderr, "--tls-ca") {
		t.Errorf("no CA ConfigMap: exit %d\n%s", code, stderr)
	}
	ca, _ := os.ReadFile(certs + "/ca.crt")
	api.ca.Store(string(ca))
	// Tokens the API server does not know (a deleted service account's), or whose user
	// RBAC does not allow to follow: refused by both agents, nothing followed.
	for _, tc := range []struct{ token, want string }{
		{"t-gone", "token has been invalidated"},
		{"t-bob", "bob may not create follows.pathtrace.io"},
	} {
		code, stderr := runBin(t, nil, "follow", "--agents", "k8s", "--kubeconfig", kubeconfig(t, api.srv.URL, tc.token), "--duration", "1s", "10.244.2.57")
		if code != 1 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "no agent answered of 2") {
			t.Errorf("token %s: exit %d\n%q", tc.token, code, stderr)
		}
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
		if !strings.Contains(a.stderr.String(), "user alice (kube) follows") || strings.Count(a.stderr.String(), "refused") != 2 {
			t.Errorf("agent of %s: want alice's follow and two refusals logged:\n%s", a.node, a.stderr.String())
		}
		if n := sum(a.scrape(t), "pathtrace_follows_refused_total", "reason", "auth"); n != 2 {
			t.Errorf("agent of %s: pathtrace_follows_refused_total{reason=auth} %v, want 2", a.node, n)
		}
	}
	pluginThroughAgents(t, api.srv.URL, kc, agents, ports)
}
