package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/pathtrace/pathtrace/exporter/followapi"
)

const (
	chartDir = "chart"
	// The release name and namespace that give the kustomization's names.
	release   = "pathtrace"
	namespace = "pathtrace"
	// Every option on (the TLS files come from pathtrace certs, with --set-file).
	allValues = "testdata/chart-values-all.yaml"
)

// chartFS is this directory, where the chart is.
var chartFS = os.DirFS(".")

// helmLabels are the labels the chart adds to every object's metadata and the
// kustomization does not have: they name the chart's version and the release, which a
// kubectl apply -k has neither of, so the comparison strips them rather than the
// kustomization faking them. The pods carry none of them (a new chart version would
// restart every agent).
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// helmBin is bin/helm, built by `make tools` from scripts/tools/helm. Missing, the test
// fails where the environment says the tests must run (CI=true,
// PATHTRACE_REQUIRE_PRIVILEGED=1), and skips otherwise.
func helmBin(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs("../bin/helm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("PATHTRACE_REQUIRE_PRIVILEGED") == "1" {
			t.Fatalf("%s: %v: run make tools", bin, err)
		}
		t.Skipf("%s: %v: run make tools to test the chart", bin, err)
	}
	return bin
}

// helm runs bin/helm with a configuration of its own (no repositories, no cache shared
// with the user's), returning stdout, stderr and the error.
func helm(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// certFlags makes the agents' certificates as an admin would (pathtrace certs) and
// returns the --set-file flags that give them to the chart.
func certFlags(t *testing.T) (flags []string, dir string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "certs")
	r := followapi.CertRequest{Dir: dir, ServerName: followapi.DefaultServerName, Follower: "oncall", Validity: time.Hour, Now: time.Now()}
	if err := followapi.MakeCerts(r); err != nil {
		t.Fatalf("make the certificates: %v", err)
	}
	return []string{"--set-file", fmt.Sprintf("api.tls.cert=%[1]s/agent.crt,api.tls.key=%[1]s/agent.key,api.tls.ca=%[1]s/ca.crt", dir)}, dir
}

// render runs helm template with the extra arguments and decodes every document
// strictly, as the kustomization's files are.
func render(t *testing.T, extra ...string) []object {
	t.Helper()
	args := append([]string{"template", release, chartDir, "--namespace", namespace}, extra...)
	out, stderr, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return decodeDocs(t, newDecoder(t), "helm template", []byte(out))
}

// TestChartLint runs helm lint --strict on the chart, with its default values and with
// every option on: a warning fails too.
func TestChartLint(t *testing.T) {
	files, _ := certFlags(t)
	for name, extra := range map[string][]string{
		"defaults": nil,
		"all on":   append([]string{"--values", allValues}, files...),
	} {
		args := append([]string{"lint", "--strict", chartDir, "--namespace", namespace}, extra...)
		out, stderr, err := helm(t, args...)
		if err != nil {
			t.Errorf("%s: helm %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr)
		}
	}
}

// TestChartAgentChecks renders the chart with its defaults and with every option on,
// and puts each rendering through the checks the kustomization's files pass
// (manifests_test.go).
func TestChartAgentChecks(t *testing.T) {
	files, _ := certFlags(t)
	for name, extra := range map[string][]string{
		"defaults": nil,
		"all on":   append([]string{"--values", allValues}, files...),
	} {
		t.Run(name, func(t *testing.T) {
			m := collect(t, render(t, extra...))
			m.require(t, append(slices.Clone(agentKinds), "Namespace")...)
			if m.kust != nil {
				t.Fatal("the chart renders a Kustomization")
			}
			for _, c := range agentChecks {
				t.Run(c.name, func(t *testing.T) { c.check(t, m) })
			}
		})
	}
}

// key names an object in the comparison.
func key(obj runtime.Object) string {
	meta := metaOf(obj)
	return fmt.Sprintf("%T %s/%s", obj, meta.GetNamespace(), meta.GetName())
}

// TestChartMatchesKustomization checks that the chart with its default values, as
// release pathtrace in namespace pathtrace, renders the objects `kubectl apply -k
// deploy/` applies, field for field once decoded: the same kinds, names and
// namespaces, and nothing else but Helm's own labels (helmLabels) on the objects'
// metadata. The kustomization has no transformer (its strict type allows only
// resources), so what it applies is the documents of the files it lists.
func TestChartMatchesKustomization(t *testing.T) {
	_, byFile := embeddedFiles(t)
	var kust *kustomization
	for _, o := range byFile["kustomization.yaml"] {
		kust, _ = o.obj.(*kustomization)
	}
	if kust == nil {
		t.Fatal("kustomization.yaml: no Kustomization")
	}
	want := map[string]runtime.Object{}
	for _, f := range kust.Resources {
		objs, ok := byFile[f]
		if !ok {
			t.Fatalf("kustomization.yaml lists %s, which is not embedded", f)
		}
		for _, o := range objs {
			want[key(o.obj)] = o.obj
		}
	}
	got := map[string]runtime.Object{}
	for _, o := range render(t) {
		meta := metaOf(o.obj)
		labels := meta.GetLabels()
		for _, l := range helmLabels {
			if _, ok := labels[l]; !ok {
				t.Errorf("%s: %s has no label %s", o.src, key(o.obj), l)
			}
			delete(labels, l)
		}
		meta.SetLabels(labels)
		if prev, ok := got[key(o.obj)]; ok {
			t.Fatalf("%s: %s rendered twice (%v)", o.src, key(o.obj), prev)
		}
		got[key(o.obj)] = o.obj
	}
	if g, w := sortedKeys(got), sortedKeys(want); !slices.Equal(g, w) {
		t.Fatalf("the chart renders %v, the kustomization applies %v", g, w)
	}
	for k, w := range want {
		gj, err := json.MarshalIndent(got[k], "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		wj, err := json.MarshalIndent(w, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gj, wj) {
			t.Errorf("%s differs from the kustomization's: %s", k, firstDiff(string(gj), string(wj)))
		}
	}
}

// firstDiff shows where two JSON texts part, with a few lines of context.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	i := 0
	for i < len(g) && i < len(w) && g[i] == w[i] {
		i++
	}
	from := max(0, i-3)
	part := func(l []string) string { return strings.Join(l[from:min(len(l), i+3)], "\n") }
	return fmt.Sprintf("at line %d\nchart:\n%s\nkustomization:\n%s", i+1, part(g), part(w))
}

// TestChartAllOn checks what each option adds, rendered with every option on: the
// image, pod names in metrics, the capture directory and limits, the TLS Secret from
// pathtrace certs and the CA's ConfigMap, the followers' roles as deploy/follower/rbac.yaml
// has them and bound, the PodMonitor, the PrometheusRule with the rules file's groups,
// and a ConfigMap per dashboard for Grafana's sidecar.
func TestChartAllOn(t *testing.T) {
	files, certDir := certFlags(t)
	m := collect(t, render(t, append([]string{"--values", allValues}, files...)...))
	m.require(t, append(slices.Clone(agentKinds), "Namespace", "Service", "PodMonitor", "PrometheusRule")...)
	var values struct {
		Image   struct{ Repository, Tag, PullPolicy string }
		Metrics struct {
			PodNames   int `json:"podNames"`
			PodMonitor struct {
				Interval string
				Labels   map[string]string
			} `json:"podMonitor"`
		}
		PrometheusRule struct{ Labels map[string]string } `json:"prometheusRule"`
		Capture        struct {
			Dir         string
			Snaplen     int
			MaxFiles    int   `json:"maxFiles"`
			MaxDirBytes int64 `json:"maxDirBytes"`
		}
		ExtraArgs []string `json:"extraArgs"`
	}
	data, err := os.ReadFile(allValues)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatalf("%s: %v", allValues, err)
	}

	c := m.agent(t)
	if want := values.Image.Repository + ":" + values.Image.Tag; c.Image != want || string(c.ImagePullPolicy) != values.Image.PullPolicy {
		t.Errorf("image %s (%s), want %s (%s)", c.Image, c.ImagePullPolicy, want, values.Image.PullPolicy)
	}
	args := argv(c)
	for flag, want := range map[string]string{
		"metrics-pod-names":  fmt.Sprint(values.Metrics.PodNames),
		"pcap-dir":           values.Capture.Dir,
		"pcap-snaplen":       fmt.Sprint(values.Capture.Snaplen),
		"pcap-max-files":     fmt.Sprint(values.Capture.MaxFiles),
		"pcap-max-dir-bytes": fmt.Sprint(values.Capture.MaxDirBytes),
	} {
		if got := flagValues(args, flag); !slices.Equal(got, []string{want}) {
			t.Errorf("--%s %q, want %q", flag, got, want)
		}
	}
	// The limits not given are left to the agent's defaults.
	for _, flag := range []string{"pcap-pre", "pcap-post", "pcap-history-bytes", "pcap-max-file-bytes"} {
		if got := flagValues(args, flag); len(got) > 0 {
			t.Errorf("--%s %q given, but the values leave it to the agent", flag, got)
		}
	}
	for _, a := range values.ExtraArgs {
		if !slices.Contains(args, a) {
			t.Errorf("extraArgs %q not in the agent's arguments %q", a, args)
		}
	}

	// The TLS Secret holds pathtrace certs' files under the names the agent reads,
	// and the CA's ConfigMap has the name the CLI reads.
	secretName := wantMounts["/etc/pathtrace/tls"].secret
	var secret *corev1.Secret
	var ca *corev1.ConfigMap
	dashboards := map[string]*corev1.ConfigMap{}
	var fRole, namesRole *rbacv1.ClusterRole
	var fNSRole *rbacv1.Role
	var fBinding, namesBinding *rbacv1.ClusterRoleBinding
	var fNSBinding *rbacv1.RoleBinding
	for _, o := range m.others {
		switch obj := o.obj.(type) {
		case *corev1.Secret:
			if obj.Name == secretName {
				secret = obj
			}
		case *corev1.ConfigMap:
			if obj.Name == "pathtrace-agent-ca" {
				ca = obj
			} else if obj.Labels["grafana_dashboard"] == "1" {
				for k := range obj.Data {
					dashboards[k] = obj
				}
			}
		case *rbacv1.ClusterRole:
			if strings.HasSuffix(obj.Name, "-names") {
				namesRole = obj
			} else {
				fRole = obj
			}
		case *rbacv1.Role:
			fNSRole = obj
		case *rbacv1.ClusterRoleBinding:
			if strings.HasSuffix(obj.Name, "-names") {
				namesBinding = obj
			} else {
				fBinding = obj
			}
		case *rbacv1.RoleBinding:
			fNSBinding = obj
		}
	}
	if secret == nil {
		t.Errorf("no Secret %s", secretName)
	} else {
		for key, file := range map[string]string{"tls.crt": "agent.crt", "tls.key": "agent.key", "ca.crt": "ca.crt"} {
			want, err := os.ReadFile(filepath.Join(certDir, file))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(bytes.TrimSpace(secret.Data[key]), bytes.TrimSpace(want)) {
				t.Errorf("Secret %s: %s is not %s", secretName, key, file)
			}
		}
	}
	if ca == nil {
		t.Errorf("no ConfigMap pathtrace-agent-ca")
	} else if want, _ := os.ReadFile(filepath.Join(certDir, "ca.crt")); strings.TrimSpace(ca.Data["ca.crt"]) != strings.TrimSpace(string(want)) {
		t.Errorf("ConfigMap pathtrace-agent-ca: ca.crt is not the CA's certificate")
	}

	// The followers' roles are deploy/follower/rbac.yaml's, bound to the subjects.
	if fRole == nil || fNSRole == nil {
		t.Fatalf("follower roles: ClusterRole %v, Role %v", fRole, fNSRole)
	}
	checkFollowerRoles(t, fRole, fNSRole, release)
	if fBinding == nil || fNSBinding == nil {
		t.Fatalf("follower bindings: ClusterRoleBinding %v, RoleBinding %v", fBinding, fNSBinding)
	}
	wantSubj := []rbacv1.Subject{{Kind: "Group", Name: "oncall", APIGroup: rbacv1.GroupName}}
	if fBinding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: fRole.Name}) || !slices.Equal(fBinding.Subjects, wantSubj) {
		t.Errorf("ClusterRoleBinding %s: %+v to %+v, want ClusterRole %s to %+v", fBinding.Name, fBinding.RoleRef, fBinding.Subjects, fRole.Name, wantSubj)
	}
	if fNSBinding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: fNSRole.Name}) || !slices.Equal(fNSBinding.Subjects, wantSubj) {
		t.Errorf("RoleBinding %s: %+v to %+v, want Role %s to %+v", fNSBinding.Name, fNSBinding.RoleRef, fNSBinding.Subjects, fNSRole.Name, wantSubj)
	}
	// And the names role, bound to them too (rbac.follower.names defaults to true).
	if namesRole == nil || namesBinding == nil {
		t.Fatalf("follower names: ClusterRole %v, ClusterRoleBinding %v", namesRole, namesBinding)
	}
	checkNamesRole(t, namesRole, release)
	if namesBinding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: namesRole.Name}) || !slices.Equal(namesBinding.Subjects, wantSubj) {
		t.Errorf("ClusterRoleBinding %s: %+v to %+v, want ClusterRole %s to %+v", namesBinding.Name, namesBinding.RoleRef, namesBinding.Subjects, namesRole.Name, wantSubj)
	}

	// The PodMonitor as deploy/podmonitor.yaml has it, with the values' interval and
	// labels added.
	pm := m.pm
	if len(pm.Spec.PodMetricsEndpoints) == 1 && pm.Spec.PodMetricsEndpoints[0].Interval != values.Metrics.PodMonitor.Interval {
		t.Errorf("PodMonitor interval %q, want %q", pm.Spec.PodMetricsEndpoints[0].Interval, values.Metrics.PodMonitor.Interval)
	}
	for k, v := range values.Metrics.PodMonitor.Labels {
		if pm.Labels[k] != v {
			t.Errorf("PodMonitor label %s=%q, want %q", k, pm.Labels[k], v)
		}
	}
	kpm := load(t).pm
	if !slices.Equal(jsonOf(t, pm.Spec.PodMetricsEndpoints[0].Relabelings), jsonOf(t, kpm.Spec.PodMetricsEndpoints[0].Relabelings)) {
		t.Errorf("PodMonitor relabelings %+v, want podmonitor.yaml's %+v", pm.Spec.PodMetricsEndpoints[0].Relabelings, kpm.Spec.PodMetricsEndpoints[0].Relabelings)
	}

	// The PrometheusRule holds the rules file's groups, unchanged.
	rulesFile, err := fs.ReadFile(chartFS, "chart/files/pathtrace-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []ruleGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(rulesFile, &file); err != nil {
		t.Fatalf("files/pathtrace-rules.yaml: %v", err)
	}
	if len(file.Groups) == 0 {
		t.Fatal("files/pathtrace-rules.yaml: no group")
	}
	if !slices.Equal(jsonOf(t, m.rule.Spec.Groups), jsonOf(t, file.Groups)) {
		t.Errorf("PrometheusRule groups differ from files/pathtrace-rules.yaml's:\n%s\n%s", jsonOf(t, m.rule.Spec.Groups), jsonOf(t, file.Groups))
	}
	for k, v := range values.PrometheusRule.Labels {
		if m.rule.Labels[k] != v {
			t.Errorf("PrometheusRule label %s=%q, want %q", k, m.rule.Labels[k], v)
		}
	}

	// One ConfigMap per dashboard, holding the file as it is, valid JSON.
	jsons, err := fs.Glob(chartFS, "chart/files/*.json")
	if err != nil || len(jsons) == 0 {
		t.Fatalf("no dashboard in chart/files (%v)", err)
	}
	for _, p := range jsons {
		base := filepath.Base(p)
		cm, ok := dashboards[base]
		if !ok {
			t.Errorf("no ConfigMap labelled grafana_dashboard=1 holds %s", base)
			continue
		}
		want, _ := fs.ReadFile(chartFS, p)
		if cm.Data[base] != strings.TrimSpace(string(want)) {
			t.Errorf("ConfigMap %s: %s differs from the file", cm.Name, base)
		}
		if !json.Valid([]byte(cm.Data[base])) {
			t.Errorf("ConfigMap %s: %s is not valid JSON", cm.Name, base)
		}
		if cm.Annotations["grafana_folder"] != "pathtrace" {
			t.Errorf("ConfigMap %s: annotations %v, want the values' grafana_folder", cm.Name, cm.Annotations)
		}
	}
	if len(dashboards) != len(jsons) {
		t.Errorf("%d dashboard ConfigMap entries, %d files", len(dashboards), len(jsons))
	}

	spec := m.ds.Spec.Template.Spec
	if spec.NodeSelector["pathtrace.io/trace"] != "true" || len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "node-role.kubernetes.io/control-plane" {
		t.Errorf("nodeSelector %v tolerations %+v, not the values'", spec.NodeSelector, spec.Tolerations)
	}
	if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "regcred" {
		t.Errorf("imagePullSecrets %+v, want regcred", spec.ImagePullSecrets)
	}
	if m.ds.Spec.Template.Annotations["example.com/owner"] != "netops" {
		t.Errorf("pod annotations %v, want the values'", m.ds.Spec.Template.Annotations)
	}
	if got := c.Resources.Limits.Memory().String(); got != "1Gi" {
		t.Errorf("memory limit %s, want the values' 1Gi", got)
	}
}

// jsonOf is v's JSON, split into lines for slices.Equal.
func jsonOf(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(b), "\n")
}

// TestChartRejectsValues checks that values the agent would refuse, or that the chart
// does not know, fail at helm template with a message naming them, instead of
// rendering agents that crash on every node or a setting silently ignored.
func TestChartRejectsValues(t *testing.T) {
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"--set", "imag.tag=v1"}, "imag"},                            // a typo: not in values.yaml
		{[]string{"--set", "metrics.podNames=100001"}, "podNames"},            // the agent takes 0..100000
		{[]string{"--set", "metrics.podNames=-1"}, "podNames"},                //
		{[]string{"--set", "capture.dir=pcap"}, "dir"},                        // relative
		{[]string{"--set", "capture.snaplen=32"}, "snaplen"},                  // the agent takes 64..9216
		{[]string{"--set", "extraArgs={sample=16}"}, "extraArgs"},             // not a flag
		{[]string{"--set", "api.port=70000"}, "port"},                         //
		{[]string{"--set", "api.tls.create=true"}, "api.tls.cert is not PEM"}, // no files given
	} {
		args := append([]string{"template", release, chartDir, "--namespace", namespace}, c.set...)
		out, stderr, err := helm(t, args...)
		if err == nil {
			t.Errorf("helm %s: rendered without an error:\n%.300s", strings.Join(args, " "), out)
			continue
		}
		if !strings.Contains(stderr, c.want) {
			t.Errorf("helm %s: the error does not name %q:\n%s", strings.Join(args, " "), c.want, stderr)
		}
	}
}
