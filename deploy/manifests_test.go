package deploy_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/pathtrace/pathtrace/deploy"
)

// What the agent needs, as deploy/README.md explains it. The tests compare the
// manifests with these exactly: a capability, a mount or a permission more is as much a
// failure as one less.
var (
	wantCaps = []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYSLOG"}

	// mountPath → what backs it.
	wantMounts = map[string]wantMount{
		"/sys/kernel/btf": {hostPath: "/sys/kernel/btf", hostType: corev1.HostPathDirectory, readOnly: true},
		"/sys/fs/bpf":     {hostPath: "/sys/fs/bpf", hostType: corev1.HostPathDirectory, readOnly: true, propagation: corev1.MountPropagationHostToContainer},
		"/run/netns":      {hostPath: "/var/run/netns", hostType: corev1.HostPathDirectoryOrCreate, readOnly: true, propagation: corev1.MountPropagationHostToContainer},
		"/run/pathtrace":  {hostPath: "/run/pathtrace", hostType: corev1.HostPathDirectoryOrCreate, readOnly: false},
		// The TLS API's Secret (not a host path).
		"/etc/pathtrace/tls": {secret: "pathtrace-agent-tls", readOnly: true},
	}

	// "group/resource" the agent's informers read; each with exactly these verbs.
	wantResources = []string{"/pods", "/services", "/nodes", "discovery.k8s.io/endpointslices"}
	wantVerbs     = []string{"get", "list", "watch"}
	// The reviews of followers' tokens (agent --auth-kube): create, nothing else.
	wantReviews = []string{"authentication.k8s.io/tokenreviews", "authorization.k8s.io/subjectaccessreviews"}

	// Where `pathtrace follow` on a node looks for the agent (DefaultAgentSocket in
	// cmd/pathtrace); the DaemonSet's unix API must be there, on the host.
	defaultAgentSocket = "/run/pathtrace/agent.sock"

	// The downward-API variables the agent's arguments use, and their sources.
	wantEnv = map[string]string{"NODE_NAME": "spec.nodeName", "POD_IP": "status.podIP"}
)

type wantMount struct {
	secret      string // a Secret's volume, required and not world-readable, instead of a host path
	hostPath    string
	hostType    corev1.HostPathType
	readOnly    bool
	propagation corev1.MountPropagationMode // "" for None
}

// podMonitor mirrors the fields of monitoring.coreos.com/v1 PodMonitor that
// podmonitor.yaml uses. Any other field is an unknown field to the strict decoder, so a
// typo is an error instead of a silently ignored setting.
type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path"`
			Interval    string `json:"interval"`
			Relabelings []struct {
				Action       string   `json:"action"`
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
			} `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// prometheusRule mirrors monitoring.coreos.com/v1 PrometheusRule as the Prometheus
// Operator's CRD defines it (v0.8x): spec.groups of Prometheus rule groups. A field the
// CRD does not have is an unknown field to the strict decoder.
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"spec"`
}

// ruleGroup is one group of a Prometheus rules file, as the PrometheusRule CRD takes it.
type ruleGroup struct {
	Name        string            `json:"name"`
	Interval    string            `json:"interval,omitempty"`
	QueryOffset string            `json:"query_offset,omitempty"`
	Limit       *int              `json:"limit,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Rules       []struct {
		Alert         string            `json:"alert,omitempty"`
		Record        string            `json:"record,omitempty"`
		Expr          string            `json:"expr"`
		For           string            `json:"for,omitempty"`
		KeepFiringFor string            `json:"keep_firing_for,omitempty"`
		Labels        map[string]string `json:"labels,omitempty"`
		Annotations   map[string]string `json:"annotations,omitempty"`
	} `json:"rules"`
}

// kustomization mirrors the fields of kustomization.yaml. Only resources: a
// kustomization with a transformer (namespace, labels, patches, images) fails to
// decode, so `kustomize build deploy/` is exactly the documents of these files, which
// chart_test.go relies on.
type kustomization struct {
	metav1.TypeMeta `json:",inline"`
	Resources       []string `json:"resources"`
}

// DeepCopyObject makes the local kinds runtime.Objects, so that the same strict
// decoder as the built-in kinds' decodes them; the tests never copy one.
func (p *podMonitor) DeepCopyObject() runtime.Object     { c := *p; return &c }
func (p *prometheusRule) DeepCopyObject() runtime.Object { c := *p; return &c }
func (k *kustomization) DeepCopyObject() runtime.Object  { c := *k; return &c }

var (
	podMonitorGVK     = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitor"}
	prometheusRuleGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}
	kustomizationGVK  = schema.GroupVersionKind{Group: "kustomize.config.k8s.io", Version: "v1beta1", Kind: "Kustomization"}
)

// newDecoder decodes YAML the way the API server does with strict field validation:
// field names are case-sensitive, and an unknown or duplicated field is an error. Only
// the API groups the manifests use are known; any other kind is an error too.
func newDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatalf("build the scheme: %v", err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Yaml: true, Strict: true})
}

// decodeDoc decodes one YAML document into its API type, or into the local type of the
// kinds that are not in k8s.io/api.
func decodeDoc(dec runtime.Decoder, doc []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var into runtime.Object
	switch tm.GroupVersionKind() {
	case podMonitorGVK:
		into = &podMonitor{}
	case prometheusRuleGVK:
		into = &prometheusRule{}
	case kustomizationGVK:
		into = &kustomization{}
	}
	obj, _, err := dec.Decode(doc, nil, into)
	return obj, err
}

// splitDocs splits a multi-document YAML file, leaving out documents that hold only
// comments.
func splitDocs(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if string(bytes.TrimSpace(j)) == "null" {
			continue
		}
		docs = append(docs, doc)
	}
}

// object is one decoded document and where it came from ("rbac.yaml, document 2",
// "helm template, document 5").
type object struct {
	src string
	obj runtime.Object
}

// decodeDocs decodes every document of a multi-document YAML stream strictly.
func decodeDocs(t *testing.T, dec runtime.Decoder, src string, data []byte) []object {
	t.Helper()
	docs, err := splitDocs(data)
	if err != nil {
		t.Fatalf("%s: split into documents: %v", src, err)
	}
	if len(docs) == 0 {
		t.Errorf("%s: no document", src)
	}
	objs := make([]object, 0, len(docs))
	for i, doc := range docs {
		obj, err := decodeDoc(dec, doc)
		if err != nil {
			t.Fatalf("%s, document %d: %v", src, i+1, err)
		}
		objs = append(objs, object{fmt.Sprintf("%s, document %d", src, i+1), obj})
	}
	return objs
}

// embeddedFiles decodes every embedded YAML file: file name → its objects.
func embeddedFiles(t *testing.T) (files []string, objs map[string][]object) {
	t.Helper()
	dec := newDecoder(t)
	files, err := fs.Glob(deploy.Manifests, "*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no YAML embedded in deploy.Manifests (%v)", err)
	}
	objs = map[string][]object{}
	for _, name := range files {
		data, err := fs.ReadFile(deploy.Manifests, name)
		if err != nil {
			t.Fatal(err)
		}
		objs[name] = decodeDocs(t, dec, name, data)
	}
	return files, objs
}

// manifests is one rendering of the agent, decoded: the kustomization's files, or the
// chart's `helm template`. The agent's objects (those labelled
// app.kubernetes.io/name=pathtrace-agent) are there once per kind at most, as are the
// Namespace and the Kustomization; what else there is (the followers' roles, dashboards,
// the TLS Secret) is in others.
type manifests struct {
	files   []string          // the embedded *.yaml (none for the chart)
	fileOf  map[string]string // kind → where it is
	ns      *corev1.Namespace
	sa      *corev1.ServiceAccount
	role    *rbacv1.ClusterRole
	binding *rbacv1.ClusterRoleBinding
	ds      *appsv1.DaemonSet
	svc     *corev1.Service
	pm      *podMonitor
	rule    *prometheusRule
	kust    *kustomization
	others  []object
	all     []object
}

// collect sorts objects into a manifests, failing on a kind it does not know and on a
// second agent object of one kind.
func collect(t *testing.T, objs []object) *manifests {
	t.Helper()
	m := &manifests{fileOf: map[string]string{}, all: objs}
	for _, o := range objs {
		agents := metaOf(o.obj).GetLabels()["app.kubernetes.io/name"] == "pathtrace-agent"
		var kind string
		switch obj := o.obj.(type) {
		case *corev1.Namespace:
			kind, m.ns = "Namespace", obj
		case *kustomization:
			kind, m.kust = "Kustomization", obj
		case *corev1.ServiceAccount:
			if agents {
				kind, m.sa = "ServiceAccount", obj
			}
		case *rbacv1.ClusterRole:
			if agents {
				kind, m.role = "ClusterRole", obj
			}
		case *rbacv1.ClusterRoleBinding:
			if agents {
				kind, m.binding = "ClusterRoleBinding", obj
			}
		case *appsv1.DaemonSet:
			kind, m.ds = "DaemonSet", obj
		case *corev1.Service:
			kind, m.svc = "Service", obj
		case *podMonitor:
			kind, m.pm = "PodMonitor", obj
		case *prometheusRule:
			kind, m.rule = "PrometheusRule", obj
		case *corev1.ConfigMap, *corev1.Secret, *rbacv1.Role, *rbacv1.RoleBinding:
		default:
			t.Fatalf("%s: unexpected kind %T: the tests check only the kinds they know", o.src, o.obj)
		}
		if kind == "" {
			m.others = append(m.others, o)
			continue
		}
		if prev, ok := m.fileOf[kind]; ok {
			t.Fatalf("%s: a second %s (the first is in %s)", o.src, kind, prev)
		}
		m.fileOf[kind] = strings.SplitN(o.src, ",", 2)[0]
	}
	return m
}

// metaOf is obj's metadata; the Kustomization, which has none, has an empty one.
func metaOf(obj runtime.Object) metav1.Object {
	if m, err := apimeta.Accessor(obj); err == nil {
		return m
	}
	return &metav1.ObjectMeta{}
}

// require fails unless m holds each of kinds.
func (m *manifests) require(t *testing.T, kinds ...string) {
	t.Helper()
	for _, kind := range kinds {
		if _, ok := m.fileOf[kind]; !ok {
			t.Fatalf("no %s in the manifests", kind)
		}
	}
}

// agentKinds are what every rendering of the agent holds.
var agentKinds = []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}

// load is the kustomization's manifests: every embedded file, each kind once.
func load(t *testing.T) *manifests {
	t.Helper()
	files, byFile := embeddedFiles(t)
	var objs []object
	for _, f := range files {
		objs = append(objs, byFile[f]...)
	}
	m := collect(t, objs)
	m.files = files
	if len(m.others) > 0 {
		t.Fatalf("%s: %T, which no test checks", m.others[0].src, m.others[0].obj)
	}
	m.require(t, append(slices.Clone(agentKinds), "Namespace", "Service", "PodMonitor", "Kustomization")...)
	return m
}

// agent is the DaemonSet's only container.
func (m *manifests) agent(t *testing.T) *corev1.Container {
	t.Helper()
	spec := &m.ds.Spec.Template.Spec
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 || len(spec.EphemeralContainers) != 0 {
		t.Fatalf("DaemonSet: want exactly one container (the agent) and no init container, got %d and %d", len(spec.Containers), len(spec.InitContainers))
	}
	return &spec.Containers[0]
}

// argv is the agent's command line as the container runs it.
func argv(c *corev1.Container) []string {
	return append(slices.Clone(c.Command), c.Args...)
}

// flagValues returns the values given to --name in argv (--name=value or --name value).
func flagValues(args []string, name string) []string {
	var vals []string
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			vals = append(vals, v)
		} else if a == "--"+name && i+1 < len(args) {
			vals = append(vals, args[i+1])
		}
	}
	return vals
}

// containerPort resolves a probe's or a Service's port (a name or a number) to a
// port of c; 0 if c has no such port.
func containerPort(c *corev1.Container, p intstr.IntOrString) int32 {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

func namedPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	p := containerPort(c, intstr.FromString(name))
	if p == 0 {
		t.Fatalf("agent container: no port named %q (ports %+v)", name, c.Ports)
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// agentChecks are what every rendering of the agent must pass: the kustomization's
// files (the TestX below) and the chart's, with its default values and with everything
// on (chart_test.go).
var agentChecks = []struct {
	name  string
	check func(*testing.T, *manifests)
}{
	{"Manifests", checkManifests},
	{"DaemonSetSecurity", checkDaemonSetSecurity},
	{"DaemonSetMounts", checkDaemonSetMounts},
	{"DaemonSetProbes", checkDaemonSetProbes},
	{"DaemonSetResources", checkDaemonSetResources},
	{"DaemonSetArgs", checkDaemonSetArgs},
	{"AgentKnowsFlags", checkAgentKnowsFlags},
	{"RBAC", checkRBAC},
	{"ServiceSelectsAgents", checkServiceSelectsAgents},
	{"PodMonitorSelectsAgents", checkPodMonitorSelectsAgents},
}

func TestManifests(t *testing.T)               { checkManifests(t, load(t)) }
func TestDaemonSetSecurity(t *testing.T)       { checkDaemonSetSecurity(t, load(t)) }
func TestDaemonSetMounts(t *testing.T)         { checkDaemonSetMounts(t, load(t)) }
func TestDaemonSetProbes(t *testing.T)         { checkDaemonSetProbes(t, load(t)) }
func TestDaemonSetResources(t *testing.T)      { checkDaemonSetResources(t, load(t)) }
func TestDaemonSetArgs(t *testing.T)           { checkDaemonSetArgs(t, load(t)) }
func TestAgentKnowsFlags(t *testing.T)         { checkAgentKnowsFlags(t, load(t)) }
func TestRBAC(t *testing.T)                    { checkRBAC(t, load(t)) }
func TestServiceSelectsAgents(t *testing.T)    { checkServiceSelectsAgents(t, load(t)) }
func TestPodMonitorSelectsAgents(t *testing.T) { checkPodMonitorSelectsAgents(t, load(t)) }

// TestDecoderIsStrict checks the harness itself: what the API server would reject or
// ignore (an unknown field, a field name in the wrong case, a duplicated field, a kind
// it does not know) fails to decode, for the built-in kinds and for the local PodMonitor.
func TestDecoderIsStrict(t *testing.T) {
	dec := newDecoder(t)
	bad := map[string]string{
		"unknown field": "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      hostNetwrk: true\n",
		"wrong case":    "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      hostnetwork: true\n",
		"duplicate":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  clusterIP: None\n  clusterIP: 10.0.0.1\n",
		"unknown kind":  "apiVersion: apps/v1\nkind: DaemonSett\nmetadata: {name: x}\n",
		"old version":   "apiVersion: extensions/v1beta1\nkind: DaemonSet\nmetadata: {name: x}\n",
		"PodMonitor":    "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: x}\nspec:\n  podMetricEndpoints: []\n",
	}
	for name, doc := range bad {
		if obj, err := decodeDoc(dec, []byte(doc)); err == nil {
			t.Errorf("%s: decoded without an error into %T:\n%s", name, obj, doc)
		}
	}
	good := "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      hostNetwork: true\n"
	obj, err := decodeDoc(dec, []byte(good))
	if err != nil {
		t.Fatalf("a valid DaemonSet: %v", err)
	}
	if ds, ok := obj.(*appsv1.DaemonSet); !ok || !ds.Spec.Template.Spec.HostNetwork {
		t.Errorf("a valid DaemonSet decoded to %#v", obj)
	}
}

// checkManifests decodes every document of every manifest strictly into its API type,
// finds each kind once, and checks that the namespaced objects are in the namespace the
// manifests create, whose Pod Security level admits the agent.
func checkManifests(t *testing.T, m *manifests) {
	if m.ns.Name != "pathtrace" {
		t.Errorf("Namespace %q, want pathtrace (the CLI looks for agents there)", m.ns.Name)
	}
	for _, o := range m.all {
		meta := metaOf(o.obj)
		switch o.obj.(type) {
		case *corev1.Namespace, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *kustomization:
			if meta.GetNamespace() != "" {
				t.Errorf("%s: %T %s is cluster-scoped but names namespace %q", o.src, o.obj, meta.GetName(), meta.GetNamespace())
			}
		default:
			if meta.GetNamespace() != m.ns.Name {
				t.Errorf("%s: %T %s in namespace %q, want %q (the one the manifests create)", o.src, o.obj, meta.GetName(), meta.GetNamespace(), m.ns.Name)
			}
		}
	}
	// hostNetwork, hostPath and added capabilities are all outside the
	// "baseline" level: a cluster defaulting to it would reject every agent pod.
	if got := m.ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("Namespace: pod-security.kubernetes.io/enforce=%q, want privileged", got)
	}
	if got := m.ds.Labels["app.kubernetes.io/name"]; got != "pathtrace-agent" {
		t.Errorf("DaemonSet: label app.kubernetes.io/name=%q, want pathtrace-agent", got)
	}
	// The CLI finds the agents by this label.
	if got := m.ds.Spec.Template.Labels["app.kubernetes.io/name"]; got != "pathtrace-agent" {
		t.Errorf("DaemonSet pods: label app.kubernetes.io/name=%q, want pathtrace-agent (pathtrace follow lists pods by it)", got)
	}
	sel, err := metav1.LabelSelectorAsSelector(m.ds.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(m.ds.Spec.Template.Labels)) {
		t.Errorf("DaemonSet: selector %v does not select its own pods' labels %v (%v)", m.ds.Spec.Selector, m.ds.Spec.Template.Labels, err)
	}
}

// TestKustomization checks that `kubectl apply -k deploy/` installs every manifest but
// the PodMonitor and the PrometheusRule, whose kinds exist only with the Prometheus Operator.
func TestKustomization(t *testing.T) {
	m := load(t)
	var want []string
	for _, f := range m.files {
		if f != "kustomization.yaml" && f != m.fileOf["PodMonitor"] && f != m.fileOf["PrometheusRule"] {
			want = append(want, f)
		}
	}
	got := slices.Sorted(slices.Values(m.kust.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %v, want %v (every manifest but the operator's kinds)", m.kust.Resources, want)
	}
	if m.fileOf["PodMonitor"] != "podmonitor.yaml" {
		t.Errorf("the PodMonitor is in %s, want podmonitor.yaml, on its own (the README applies that file)", m.fileOf["PodMonitor"])
	}
	if m.fileOf["Kustomization"] != "kustomization.yaml" {
		t.Errorf("the Kustomization is in %s, want kustomization.yaml (kubectl apply -k reads that name)", m.fileOf["Kustomization"])
	}
}

// checkDaemonSetSecurity checks the agent's privileges: the node's network namespace
// but not its PID namespace, exactly the capabilities it needs with every other one
// dropped, not privileged, a read-only root filesystem, the runtime's seccomp profile,
// and no allowPrivilegeEscalation: false that the API server accepts only by a
// spelling.
func checkDaemonSetSecurity(t *testing.T, m *manifests) {
	spec := &m.ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("hostNetwork is false: the agent would trace the pod's own namespace, not the node's")
	}
	if spec.HostPID {
		t.Error("hostPID is true: the agent finds the pods' network namespaces in /run/netns and needs no other process (scripts/caps.sh)")
	}
	if spec.HostIPC {
		t.Error("hostIPC is true: the agent does not need it")
	}
	c := m.agent(t)
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("agent container: no securityContext")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged: true, want capabilities instead")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser is not 0: the added capabilities are granted to root only")
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && spec.SecurityContext != nil {
		seccomp = spec.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", seccomp)
	}
	if sc.Capabilities == nil {
		t.Fatal("agent container: no capabilities: drop ALL and add what the agent needs")
	}
	// Kubernetes holds allowPrivilegeEscalation true for a container with
	// CAP_SYS_ADMIN and rejects false next to it; false passes validation only because
	// the capability is spelled SYS_ADMIN, and would break the day validation
	// normalises the name.
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation && slices.Contains(sc.Capabilities.Add, "SYS_ADMIN") {
		t.Error("allowPrivilegeEscalation: false with SYS_ADMIN added: the API server rejects that combination when the capability is spelled CAP_SYS_ADMIN")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	got := slices.Sorted(slices.Values(sc.Capabilities.Add))
	want := slices.Sorted(slices.Values(wantCaps))
	if !slices.Equal(got, want) {
		t.Errorf("capabilities.add %v, want exactly %v", sc.Capabilities.Add, want)
	}
}

// checkDaemonSetMounts checks the agent's mounts: exactly the host paths it reads (BTF,
// bpffs, the named network namespaces) read-only, and the API socket's directory, the
// only one writable, at the host path the CLI on the node looks in.
func checkDaemonSetMounts(t *testing.T, m *manifests) {
	c := m.agent(t)
	volumes := map[string]corev1.Volume{}
	for _, v := range m.ds.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	used := map[string]bool{}
	got := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		got[vm.MountPath] = vm
		used[vm.Name] = true
	}
	want := maps.Clone(wantMounts)
	// The capture directory (--pcap-dir, the chart's capture.enabled): the node's,
	// at the same path, writable.
	for _, dir := range flagValues(argv(c), "pcap-dir") {
		want[dir] = wantMount{hostPath: dir, hostType: corev1.HostPathDirectoryOrCreate}
	}
	if !slices.Equal(sortedKeys(got), sortedKeys(want)) {
		t.Errorf("mounts at %v, want exactly %v", sortedKeys(got), sortedKeys(want))
	}
	for mountPath, want := range want {
		vm, ok := got[mountPath]
		if !ok {
			continue
		}
		if vm.ReadOnly != want.readOnly {
			t.Errorf("%s: readOnly %v, want %v", mountPath, vm.ReadOnly, want.readOnly)
		}
		prop := corev1.MountPropagationNone
		if vm.MountPropagation != nil {
			prop = *vm.MountPropagation
		}
		wantProp := want.propagation
		if wantProp == "" {
			wantProp = corev1.MountPropagationNone
		}
		if prop != wantProp {
			t.Errorf("%s: mountPropagation %s, want %s", mountPath, prop, wantProp)
		}
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			t.Errorf("%s: mounts a subPath of its volume", mountPath)
		}
		v, ok := volumes[vm.Name]
		if !ok {
			t.Errorf("%s: no volume named %q", mountPath, vm.Name)
			continue
		}
		if want.secret != "" {
			sv := v.Secret
			switch {
			case sv == nil || sv.SecretName != want.secret:
				t.Errorf("%s: volume %+v, want the Secret %s", mountPath, v.VolumeSource, want.secret)
			case sv.Optional != nil && *sv.Optional:
				t.Errorf("%s: the Secret is optional: the agent would start without it", mountPath)
			case sv.DefaultMode == nil || *sv.DefaultMode&0o077 != 0:
				t.Errorf("%s: defaultMode %v lets others than the agent read the key", mountPath, sv.DefaultMode)
			}
			continue
		}
		if v.HostPath == nil {
			t.Errorf("%s: volume %q is not a hostPath", mountPath, vm.Name)
			continue
		}
		if v.HostPath.Path != want.hostPath {
			t.Errorf("%s: host path %s, want %s", mountPath, v.HostPath.Path, want.hostPath)
		}
		if v.HostPath.Type == nil || *v.HostPath.Type != want.hostType {
			t.Errorf("%s: hostPath type %v, want %s", mountPath, v.HostPath.Type, want.hostType)
		}
	}
	for name := range volumes {
		if !used[name] {
			t.Errorf("volume %q is mounted nowhere", name)
		}
	}
}

// checkDaemonSetProbes checks that the kubelet asks the agent's own health endpoints:
// liveness on /healthz and readiness on /readyz, over HTTP on the port --metrics-addr
// listens on.
func checkDaemonSetProbes(t *testing.T, m *manifests) {
	c := m.agent(t)
	metrics := namedPort(t, c, "metrics")
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet of %s, got %+v", p.name, p.path, p.probe)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			t.Errorf("%s: path %q, want %q", p.name, g.Path, p.path)
		}
		if got := containerPort(c, g.Port); got != metrics {
			t.Errorf("%s: port %s resolves to %d, want the metrics port %d", p.name, g.Port.String(), got, metrics)
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s: scheme %s, the agent serves plain HTTP", p.name, g.Scheme)
		}
		if g.Host != "" {
			t.Errorf("%s: host %q, want the pod IP (empty)", p.name, g.Host)
		}
	}
}

// checkDaemonSetResources checks requests and limits: both set for CPU and memory,
// requests within limits, and memory room above the agent's measured 52 MiB.
func checkDaemonSetResources(t *testing.T, m *manifests) {
	r := m.agent(t).Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := r.Requests[name]
		lim, okLim := r.Limits[name]
		if !okReq || !okLim {
			t.Errorf("%s: request %v limit %v, want both set", name, req.String(), lim.String())
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("%s: request %s above limit %s", name, req.String(), lim.String())
		}
	}
	if lim := r.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("128Mi")) < 0 {
		t.Errorf("memory limit %s, want at least 128Mi (52 MiB resident, plus BPF maps charged to the cgroup)", lim.String())
	}
	if req := r.Requests[corev1.ResourceMemory]; req.Cmp(resource.MustParse("64Mi")) < 0 {
		t.Errorf("memory request %s, want at least 64Mi (52 MiB resident, measured)", req.String())
	}
}

// checkDaemonSetArgs checks the agent's command line against the rest of the
// manifest: it runs the image's binary as an agent, its $(VAR)s come from the downward
// API, --metrics-addr and --api listen on the container's metrics and api ports, and
// the unix socket is where `pathtrace follow` on the node looks, on the host.
func checkDaemonSetArgs(t *testing.T, m *manifests) {
	c := m.agent(t)
	args := argv(c)
	if len(args) < 2 || args[0] != "/pathtrace" || args[1] != "agent" {
		t.Fatalf("command line %q, want /pathtrace agent ...", args)
	}

	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		} else {
			env[e.Name] = ""
		}
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, a := range args {
		for _, sub := range ref.FindAllStringSubmatch(a, -1) {
			if _, ok := env[sub[1]]; !ok {
				t.Errorf("argument %q uses $(%s), which the container's env does not define (it would be passed literally)", a, sub[1])
			}
		}
	}
	for name, field := range wantEnv {
		if env[name] != field {
			t.Errorf("env %s from %q, want the downward API's %s", name, env[name], field)
		}
	}
	if got := flagValues(args, "node"); !slices.Equal(got, []string{"$(NODE_NAME)"}) {
		t.Errorf("--node %q, want $(NODE_NAME) (the node's name, not the pod's)", got)
	}

	addrs := flagValues(args, "metrics-addr")
	if len(addrs) != 1 {
		t.Fatalf("--metrics-addr given %d times, want once", len(addrs))
	}
	if host, port, err := net.SplitHostPort(addrs[0]); err != nil || port != strconv.Itoa(int(namedPort(t, c, "metrics"))) {
		t.Errorf("--metrics-addr %q (%v): want the metrics port %d", addrs[0], err, namedPort(t, c, "metrics"))
	} else if host != "" && host != "0.0.0.0" && host != "$(POD_IP)" {
		t.Errorf("--metrics-addr %q: the kubelet probes the pod IP, which is the node's address", addrs[0])
	}

	var unixSock, tcpAddr string
	for _, a := range flagValues(args, "api") {
		if p, ok := strings.CutPrefix(a, "unix:"); ok {
			unixSock = p
		} else if p, ok := strings.CutPrefix(a, "tls:"); ok {
			tcpAddr = p
		} else {
			t.Errorf("--api %q: want unix:PATH or tls:HOST:PORT (no plaintext listener beyond the node)", a)
		}
	}
	// The TLS listener's files come from the Secret, mounted read-only, required.
	for _, f := range []string{"tls-cert", "tls-key", "tls-client-ca"} {
		v := flagValues(args, f)
		if len(v) != 1 {
			t.Errorf("--%s given %d times, want once", f, len(v))
			continue
		}
		var mount *corev1.VolumeMount
		for i := range c.VolumeMounts {
			if strings.HasPrefix(v[0], c.VolumeMounts[i].MountPath+"/") {
				mount = &c.VolumeMounts[i]
			}
		}
		if mount == nil || !mount.ReadOnly {
			t.Errorf("--%s %s: not on a read-only mount", f, v[0])
			continue
		}
		for _, vol := range m.ds.Spec.Template.Spec.Volumes {
			if vol.Name == mount.Name && (vol.Secret == nil || vol.Secret.Optional != nil && *vol.Secret.Optional) {
				t.Errorf("--%s %s: from %+v, want a required Secret", f, v[0], vol.VolumeSource)
			}
		}
	}
	if unixSock != defaultAgentSocket {
		t.Errorf("--api unix socket %q, want %s (where pathtrace follow on the node looks)", unixSock, defaultAgentSocket)
	} else {
		dir := path.Dir(unixSock)
		var mount *corev1.VolumeMount
		for i := range c.VolumeMounts {
			if c.VolumeMounts[i].MountPath == dir {
				mount = &c.VolumeMounts[i]
			}
		}
		if mount == nil || mount.ReadOnly {
			t.Errorf("%s: no writable mount for the socket's directory", dir)
		} else {
			for _, v := range m.ds.Spec.Template.Spec.Volumes {
				if v.Name == mount.Name && (v.HostPath == nil || v.HostPath.Path != dir) {
					t.Errorf("%s: mounted from %+v, want the host's %s (pathtrace follow on the node looks there)", dir, v.VolumeSource, dir)
				}
			}
		}
	}
	for _, cp := range c.Ports {
		if cp.Protocol != "" && cp.Protocol != corev1.ProtocolTCP {
			t.Errorf("port %s: protocol %s, the agent serves TCP (the CLI takes the TCP port named api)", cp.Name, cp.Protocol)
		}
	}
	if host, port, err := net.SplitHostPort(tcpAddr); err != nil || host != "$(POD_IP)" || port != strconv.Itoa(int(namedPort(t, c, "api"))) {
		t.Errorf("--api tls:%s (%v): want tls:$(POD_IP):%d, the node's address and the api port", tcpAddr, err, namedPort(t, c, "api"))
	}
}

// buildPathtrace builds ./cmd/pathtrace the way `make build` does (CGO_ENABLED=0).
func buildPathtrace(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no go command on PATH: %v", err)
		}
		t.Skipf("no go command on PATH (%v): cannot build ./cmd/pathtrace", err)
	}
	out := filepath.Join(t.TempDir(), "pathtrace")
	cmd := exec.Command(gobin, "build", "-trimpath", "-o", out, "../cmd/pathtrace")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/pathtrace: %v\n%s", err, b)
	}
	return out
}

// checkAgentKnowsFlags checks that every flag the DaemonSet passes to the agent is one
// `pathtrace agent --help` lists: a flag the binary does not know ends the agent with
// a usage error in every pod.
func checkAgentKnowsFlags(t *testing.T, m *manifests) {
	args := argv(m.agent(t))
	bin := buildPathtrace(t)
	out, err := exec.Command(bin, "agent", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("pathtrace agent --help: %v\n%s", err, out)
	}
	help := string(out)
	var names []string
	for _, a := range args[1:] {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, "=")
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		t.Fatalf("no --flag in the agent's arguments %q", args)
	}
	for _, name := range names {
		re := regexp.MustCompile(`(?m)^\s*(?:-[A-Za-z], )?--` + regexp.QuoteMeta(name) + `(?:\s|$|\[=)`)
		if !re.MatchString(help) {
			t.Errorf("the DaemonSet passes --%s, which `pathtrace agent --help` does not list:\n%s", name, help)
		}
	}
}

// instruction is one Containerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
}

func parseContainerfile(text string) []instruction {
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		s := strings.TrimSpace(line)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if rest, ok := strings.CutSuffix(s, `\`); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(s)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// execForm parses an instruction's JSON (exec) form; ok is false for the shell form.
func execForm(args string) (argv []string, ok bool) {
	if !strings.HasPrefix(args, "[") {
		return nil, false
	}
	return argv, json.Unmarshal([]byte(args), &argv) == nil
}

// makeBuildOutput returns the file `make build` writes the pathtrace binary to, and
// the recipe line that does it.
func makeBuildOutput(t *testing.T) (string, string) {
	t.Helper()
	// make itself expands the recipe (its variables and functions), for this
	// machine's architecture, as the image is built.
	out, err := exec.Command("make", "-s", "-n", "-C", "..", "build").Output()
	if err != nil {
		t.Fatalf("make -n build: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[len(fields)-1] != "./cmd/pathtrace" {
			continue
		}
		i := slices.Index(fields, "-o")
		if i < 0 || i+1 >= len(fields) {
			t.Fatalf("Makefile: the build of ./cmd/pathtrace names no -o file: %q", line)
		}
		return path.Clean(fields[i+1]), line
	}
	t.Fatalf("Makefile: no recipe line of build ends with ./cmd/pathtrace:\n%s", out)
	return "", ""
}

// TestContainerfile checks the image recipe: one stage from scratch, the binary copied
// from where `make build` writes it (statically linked: CGO_ENABLED=0) to the path the
// DaemonSet runs, an exec-form entrypoint (scratch has no shell) and a numeric root
// user (scratch has no /etc/passwd).
func TestContainerfile(t *testing.T) {
	data, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	built, makeLine := makeBuildOutput(t)
	if !strings.Contains(makeLine, "CGO_ENABLED=0") {
		t.Errorf("Makefile builds pathtrace without CGO_ENABLED=0, which FROM scratch needs: %q", makeLine)
	}
	m := load(t)
	runs := argv(m.agent(t))[0]

	var from, copies, entry []instruction
	var user string
	for _, in := range parseContainerfile(string(data)) {
		switch in.cmd {
		case "FROM":
			from = append(from, in)
		case "COPY", "ADD":
			copies = append(copies, in)
		case "ENTRYPOINT":
			entry = append(entry, in)
		case "USER":
			user = in.args
		}
	}
	if len(from) != 1 || from[0].args != "scratch" {
		t.Errorf("FROM %v, want one stage, FROM scratch", from)
	}
	if len(copies) != 1 || copies[0].cmd != "COPY" {
		t.Fatalf("copies %v, want one COPY of the binary", copies)
	}
	src := strings.Fields(copies[0].args)
	if argv, ok := execForm(copies[0].args); ok {
		src = argv
	}
	if len(src) != 2 || strings.HasPrefix(src[0], "--") {
		t.Fatalf("COPY %s: want COPY SRC DEST, no flags", copies[0].args)
	}
	if path.Clean(src[0]) != built {
		t.Errorf("COPY from %s, but make build writes %s", src[0], built)
	}
	if src[1] != runs {
		t.Errorf("COPY to %s, but the DaemonSet runs %s", src[1], runs)
	}
	if len(entry) != 1 {
		t.Fatalf("ENTRYPOINT given %d times, want once", len(entry))
	}
	if argv, ok := execForm(entry[0].args); !ok || !slices.Equal(argv, []string{src[1]}) {
		t.Errorf("ENTRYPOINT %s, want [%q] (exec form: scratch has no shell)", entry[0].args, src[1])
	}
	if user != "0" && user != "0:0" {
		t.Errorf("USER %q, want 0 or 0:0 (numeric: scratch has no /etc/passwd; root: the capabilities go to uid 0)", user)
	}
}

// TestStaticBinary checks what makes FROM scratch work: built as `make build` does, the
// binary asks for no ELF interpreter and no shared library.
func TestStaticBinary(t *testing.T) {
	bin := buildPathtrace(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary has a PT_INTERP program header: it needs a dynamic loader that a scratch image lacks")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatalf("read the binary's dynamic section: %v", err)
	}
	if len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v, which a scratch image lacks", libs)
	}
}

// checkRBAC checks the agent's identity: the DaemonSet runs as the ServiceAccount, the
// binding gives it the ClusterRole, and the ClusterRole reads exactly what the
// informers watch, with get, list and watch only.
func checkRBAC(t *testing.T, m *manifests) {
	spec := &m.ds.Spec.Template.Spec
	if spec.ServiceAccountName != m.sa.Name || m.ds.Namespace != m.sa.Namespace {
		t.Errorf("DaemonSet runs as %s/%s, want the ServiceAccount %s/%s", m.ds.Namespace, spec.ServiceAccountName, m.sa.Namespace, m.sa.Name)
	}
	if (spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken) ||
		(spec.AutomountServiceAccountToken == nil && m.sa.AutomountServiceAccountToken != nil && !*m.sa.AutomountServiceAccountToken) {
		t.Error("the service account token is not mounted: the informers cannot reach the API server")
	}

	want := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: m.role.Name}
	if m.binding.RoleRef != want {
		t.Errorf("ClusterRoleBinding refers to %+v, want %+v", m.binding.RoleRef, want)
	}
	wantSubj := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: m.sa.Name, Namespace: m.sa.Namespace}}
	if !slices.Equal(m.binding.Subjects, wantSubj) {
		t.Errorf("ClusterRoleBinding subjects %+v, want only %+v", m.binding.Subjects, wantSubj)
	}

	if m.role.AggregationRule != nil {
		t.Error("ClusterRole has an aggregationRule: its rules would come from other roles")
	}
	verbs := map[string][]string{}
	for i, r := range m.role.Rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("rule %d: nonResourceURLs %v resourceNames %v, want neither", i, r.NonResourceURLs, r.ResourceNames)
		}
		review := len(r.APIGroups) == 1 && len(r.Resources) == 1 && slices.Contains(wantReviews, r.APIGroups[0]+"/"+r.Resources[0])
		for _, v := range r.Verbs {
			if review && v != "create" || !review && !slices.Contains(wantVerbs, v) {
				t.Errorf("rule %d (%v %v): verb %q, want only %v (create for the reviews)", i, r.APIGroups, r.Resources, v, wantVerbs)
			}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := g + "/" + res
				verbs[k] = slices.Sorted(slices.Values(append(verbs[k], r.Verbs...)))
			}
		}
	}
	if got, want := sortedKeys(verbs), slices.Sorted(slices.Values(append(slices.Clone(wantResources), wantReviews...))); !slices.Equal(got, want) {
		t.Errorf("ClusterRole grants on %v, want exactly %v", got, want)
	}
	for _, k := range wantResources {
		if got := slices.Compact(verbs[k]); !slices.Equal(got, wantVerbs) {
			t.Errorf("%s: verbs %v, want %v (an informer needs all three)", k, got, wantVerbs)
		}
	}
}

// checkServiceSelectsAgents checks that the Service's endpoints are the agents' pods
// and that it exposes their metrics port.
func checkServiceSelectsAgents(t *testing.T, m *manifests) {
	if m.svc == nil {
		return // the chart with metrics.service.enabled=false
	}
	c := m.agent(t)
	sel := labels.SelectorFromSet(m.svc.Spec.Selector)
	if len(m.svc.Spec.Selector) == 0 || !sel.Matches(labels.Set(m.ds.Spec.Template.Labels)) {
		t.Errorf("Service selector %v does not select the agent's pods %v", m.svc.Spec.Selector, m.ds.Spec.Template.Labels)
	}
	metrics := namedPort(t, c, "metrics")
	found := false
	for _, p := range m.svc.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		if containerPort(c, target) == metrics {
			found = true
			if p.Name != "metrics" {
				t.Errorf("Service port %d → metrics is named %q, want metrics", p.Port, p.Name)
			}
		}
	}
	if !found {
		t.Errorf("Service ports %+v: none reaches the agent's metrics port %d", m.svc.Spec.Ports, metrics)
	}
}

// checkPodMonitorSelectsAgents checks that Prometheus, through the PodMonitor, scrapes
// the agents' pods on their metrics port at /metrics.
func checkPodMonitorSelectsAgents(t *testing.T, m *manifests) {
	if m.pm == nil {
		return // the chart's default: metrics.podMonitor.enabled=false
	}
	c := m.agent(t)
	sel, err := metav1.LabelSelectorAsSelector(&m.pm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(m.ds.Spec.Template.Labels)) {
		t.Errorf("PodMonitor selector %+v does not select the agent's pods %v (%v)", m.pm.Spec.Selector, m.ds.Spec.Template.Labels, err)
	}
	eps := m.pm.Spec.PodMetricsEndpoints
	if len(eps) != 1 {
		t.Fatalf("PodMonitor: %d endpoints, want 1", len(eps))
	}
	if eps[0].Port != "metrics" || containerPort(c, intstr.FromString(eps[0].Port)) != namedPort(t, c, "metrics") {
		t.Errorf("PodMonitor scrapes port %q, want the container port named metrics", eps[0].Port)
	}
	if eps[0].Path != "" && eps[0].Path != "/metrics" {
		t.Errorf("PodMonitor scrapes %q, want /metrics", eps[0].Path)
	}
}

// TestFollowerRBAC checks the roles shipped for followers: create on follows.pathtrace.io
// (what the agents' SubjectAccessReview asks), and in the agents' namespace, listing
// their pods and reading their CA's ConfigMap; nothing else; and the names role.
func TestFollowerRBAC(t *testing.T) {
	data, err := os.ReadFile("follower/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cr, names rbacv1.ClusterRole
	var role rbacv1.Role
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var head struct {
			metav1.TypeMeta
			Metadata struct{ Name string }
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		switch head.Kind {
		case "ClusterRole":
			if head.Metadata.Name == "pathtrace-follower-names" {
				err = yaml.UnmarshalStrict([]byte(doc), &names)
			} else {
				err = yaml.UnmarshalStrict([]byte(doc), &cr)
			}
		case "Role":
			err = yaml.UnmarshalStrict([]byte(doc), &role)
		default:
			t.Errorf("unexpected kind %q", head.Kind)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	checkFollowerRoles(t, &cr, &role, "pathtrace")
	checkNamesRole(t, &names, "pathtrace")
}

// checkNamesRole checks the followers' names role (RELEASE-follower-names): the reads
// the agent's ClusterRole has for names, get, list and watch, and nothing else.
func checkNamesRole(t *testing.T, cr *rbacv1.ClusterRole, release string) {
	t.Helper()
	rw := []string{"get", "list", "watch"}
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "services", "nodes"}, Verbs: rw},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: rw},
	}
	if cr.Name != release+"-follower-names" || !equalRules(cr.Rules, want) {
		t.Errorf("ClusterRole %s rules %+v, want %s-follower-names with %+v", cr.Name, cr.Rules, release, want)
	}
}

// checkFollowerRoles checks the followers' roles, from follower/rbac.yaml or from the
// chart's release (RELEASE-follower): create on follows.pathtrace.io, and in the
// agents' namespace, listing their pods and reading their CA's ConfigMap, by the name
// the CLI reads (pathtrace-agent-ca); nothing else.
func checkFollowerRoles(t *testing.T, cr *rbacv1.ClusterRole, role *rbacv1.Role, release string) {
	t.Helper()
	want := []rbacv1.PolicyRule{{APIGroups: []string{"pathtrace.io"}, Resources: []string{"follows"}, Verbs: []string{"create"}}}
	if cr.Name != release+"-follower" || !equalRules(cr.Rules, want) {
		t.Errorf("ClusterRole %s rules %+v, want %s-follower with %+v", cr.Name, cr.Rules, release, want)
	}
	wantNS := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"pathtrace-agent-ca"}, Verbs: []string{"get"}},
	}
	if role.Name != release+"-follower" || role.Namespace != "pathtrace" || !equalRules(role.Rules, wantNS) {
		t.Errorf("Role %s/%s rules %+v, want pathtrace/%s-follower with %+v", role.Namespace, role.Name, role.Rules, release, wantNS)
	}
}

func equalRules(a, b []rbacv1.PolicyRule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !slices.Equal(a[i].APIGroups, b[i].APIGroups) || !slices.Equal(a[i].Resources, b[i].Resources) ||
			!slices.Equal(a[i].Verbs, b[i].Verbs) || !slices.Equal(a[i].ResourceNames, b[i].ResourceNames) {
			return false
		}
	}
	return true
}
