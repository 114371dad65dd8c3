package deploy_test

import (
	"context"
	"io/fs"
	"os"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/pathtrace/pathtrace/deploy"
	"github.com/pathtrace/pathtrace/tracer/kube/kubetest"
)

// TestOnAPIServer applies the manifests to a real kube-apiserver (kubetest) with
// server-side apply and field validation Strict, then asks the API server, as the
// agent's and a follower's service accounts, what RBAC lets them do.
func TestOnAPIServer(t *testing.T) {
	s := kubetest.Start(t)
	ctx := context.Background()
	m := load(t)

	// The kustomization's resources in its order (the Namespace first), then the
	// follower's roles. podmonitor.yaml is not applied: its kind comes from the
	// Prometheus Operator's CRDs, which this API server does not have; the strict
	// decoding of TestManifests covers it.
	files := append(append([]string(nil), m.kust.Resources...), "follower/rbac.yaml")
	for _, name := range files {
		data, err := fs.ReadFile(deploy.Manifests, name)
		if name == "follower/rbac.yaml" {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Apply(ctx, s.Admin, data, kubetest.ApplyOptions{}); err != nil {
			t.Fatalf("server-side apply of %s: %v", name, err)
		}
	}
	ds, err := s.Client.AppsV1().DaemonSets(m.ds.Namespace).Get(ctx, m.ds.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the DaemonSet after apply: %v", err)
	}
	if ds.Spec.Template.Spec.ServiceAccountName != m.sa.Name || len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Errorf("the DaemonSet as stored: service account %q, %d containers", ds.Spec.Template.Spec.ServiceAccountName, len(ds.Spec.Template.Spec.Containers))
	}

	t.Run("strict", func(t *testing.T) {
		// A typo'd field, a field in the wrong place, a wrong type: the API server
		// refuses each (dry run: nothing is stored).
		data, err := fs.ReadFile(deploy.Manifests, "daemonset.yaml")
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ name, old, new, want string }{
			{"typo", "      hostNetwork: true\n", "      hostNetwrok: true\n", "hostNetwrok"},
			{"misplaced", "      hostNetwork: true\n", "      hostNetwork: true\n      readOnlyRootFilesystem: true\n", "readOnlyRootFilesystem"},
			{"type", "      hostNetwork: true\n", "      hostNetwork: \"yes\"\n", "hostNetwork"},
		} {
			if !strings.Contains(string(data), tc.old) {
				t.Fatalf("%s: daemonset.yaml has no %q to change", tc.name, tc.old)
			}
			bad := strings.Replace(string(data), tc.old, tc.new, 1)
			err := s.Apply(ctx, s.Admin, []byte(bad), kubetest.ApplyOptions{DryRun: true})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: apply of daemonset.yaml with %q: %v, want an error naming %s", tc.name, strings.TrimSpace(tc.new), err, tc.want)
			} else {
				t.Logf("%s: %v", tc.name, err)
			}
		}
	})

	t.Run("agent-rbac", func(t *testing.T) {
		agent := client(t, s.ServiceAccount(t, m.sa.Namespace, m.sa.Name))
		// What the code asks: the informers' get, list and watch (tracer/kube), the
		// reviews of followers' tokens (review.go).
		for _, r := range []string{"/pods", "/services", "/nodes", "discovery.k8s.io/endpointslices"} {
			group, res, _ := strings.Cut(r, "/")
			for _, verb := range []string{"get", "list", "watch"} {
				allowed(t, agent, true, authzv1.ResourceAttributes{Group: group, Resource: res, Verb: verb})
			}
		}
		allowed(t, agent, true, authzv1.ResourceAttributes{Group: "authentication.k8s.io", Resource: "tokenreviews", Verb: "create"})
		allowed(t, agent, true, authzv1.ResourceAttributes{Group: "authorization.k8s.io", Resource: "subjectaccessreviews", Verb: "create"})
		// And nothing more.
		for _, ra := range []authzv1.ResourceAttributes{
			{Resource: "secrets", Verb: "get", Namespace: m.sa.Namespace},
			{Resource: "secrets", Verb: "list"},
			{Resource: "configmaps", Verb: "list"},
			{Resource: "pods", Verb: "create", Namespace: "default"},
			{Resource: "pods", Verb: "delete", Namespace: "default"},
			{Resource: "pods", Subresource: "exec", Verb: "create", Namespace: "default"},
			{Resource: "nodes", Verb: "update"},
			{Resource: "services", Verb: "patch", Namespace: "default"},
			{Group: "apps", Resource: "daemonsets", Verb: "get", Namespace: m.sa.Namespace},
			{Group: "pathtrace.io", Resource: "follows", Verb: "create", Name: "node-a"},
			{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Verb: "create"},
			{Group: "authentication.k8s.io", Resource: "serviceaccounts", Subresource: "token", Verb: "create", Namespace: m.sa.Namespace},
		} {
			allowed(t, agent, false, ra)
		}
	})

	t.Run("follower-rbac", func(t *testing.T) {
		ns := m.sa.Namespace
		oncall := s.ServiceAccount(t, "oncall", "alice")
		for _, b := range []struct{ kind, name, ns string }{{"ClusterRole", "pathtrace-follower", ""}, {"Role", "pathtrace-follower", ns}} {
			binding := `apiVersion: rbac.authorization.k8s.io/v1
kind: ` + b.kind + `Binding
metadata: {name: alice-` + strings.ToLower(b.kind) + `, namespace: "` + b.ns + `"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ` + b.kind + `, name: ` + b.name + `}
subjects: [{kind: ServiceAccount, name: alice, namespace: oncall}]
`
			if b.ns == "" {
				binding = strings.Replace(binding, `, namespace: ""`, "", 1)
			}
			if err := s.Apply(ctx, s.Admin, []byte(binding), kubetest.ApplyOptions{}); err != nil {
				t.Fatalf("bind %s: %v", b.kind, err)
			}
		}
		alice := client(t, oncall)
		for _, ra := range []authzv1.ResourceAttributes{
			{Group: "pathtrace.io", Resource: "follows", Verb: "create", Name: "node-a"},
			{Resource: "pods", Verb: "list", Namespace: ns},
			{Resource: "pods", Verb: "get", Namespace: ns, Name: "pathtrace-agent-x"},
			{Resource: "configmaps", Verb: "get", Namespace: ns, Name: "pathtrace-agent-ca"},
		} {
			allowed(t, alice, true, ra)
		}
		for _, ra := range []authzv1.ResourceAttributes{
			{Resource: "configmaps", Verb: "get", Namespace: ns, Name: "other"},
			{Resource: "configmaps", Verb: "list", Namespace: ns},
			{Resource: "secrets", Verb: "get", Namespace: ns, Name: "pathtrace-agent-tls"},
			{Resource: "pods", Verb: "list", Namespace: "default"},
			{Resource: "pods", Verb: "list"},
			{Resource: "pods", Subresource: "exec", Verb: "create", Namespace: ns},
			{Resource: "pods", Verb: "delete", Namespace: ns},
			{Group: "pathtrace.io", Resource: "follows", Verb: "delete", Name: "node-a"},
		} {
			allowed(t, alice, false, ra)
		}

		// The names role, bound alone: the reads that put names on addresses, nothing more.
		carolRC := s.ServiceAccount(t, "oncall", "carol")
		binding := `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: carol-names}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pathtrace-follower-names}
subjects: [{kind: ServiceAccount, name: carol, namespace: oncall}]
`
		if err := s.Apply(ctx, s.Admin, []byte(binding), kubetest.ApplyOptions{}); err != nil {
			t.Fatalf("bind the names role: %v", err)
		}
		carol := client(t, carolRC)
		for _, ra := range []authzv1.ResourceAttributes{
			{Resource: "pods", Verb: "list"},
			{Resource: "pods", Verb: "watch", Namespace: "default"},
			{Resource: "services", Verb: "get", Namespace: "default", Name: "api"},
			{Resource: "nodes", Verb: "list"},
			{Group: "discovery.k8s.io", Resource: "endpointslices", Verb: "watch"},
		} {
			allowed(t, carol, true, ra)
		}
		for _, ra := range []authzv1.ResourceAttributes{
			{Group: "pathtrace.io", Resource: "follows", Verb: "create", Name: "node-a"},
			{Resource: "secrets", Verb: "list"},
			{Resource: "configmaps", Verb: "get", Namespace: ns, Name: "pathtrace-agent-ca"},
			{Resource: "pods", Verb: "delete", Namespace: "default"},
			{Resource: "pods", Subresource: "exec", Verb: "create", Namespace: "default"},
			{Resource: "services", Verb: "update", Namespace: "default"},
		} {
			allowed(t, carol, false, ra)
		}
	})
}

func client(t *testing.T, rc *rest.Config) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// allowed asks the API server, as c's user (SelfSubjectAccessReview), whether RBAC
// allows ra, and fails the test unless the answer is want.
func allowed(t *testing.T, c kubernetes.Interface, want bool, ra authzv1.ResourceAttributes) {
	t.Helper()
	r, err := c.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(),
		&authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectAccessReview %+v: %v", ra, err)
	}
	if r.Status.Allowed != want {
		what := ra.Verb + " " + ra.Resource
		if ra.Subresource != "" {
			what += "/" + ra.Subresource
		}
		if ra.Group != "" {
			what += "." + ra.Group
		}
		if ra.Name != "" {
			what += " " + ra.Name
		}
		if ra.Namespace != "" {
			what += " in namespace " + ra.Namespace
		}
		t.Errorf("RBAC allows %s: %v, want %v (%s)", what, r.Status.Allowed, want, r.Status.Reason)
	}
}
