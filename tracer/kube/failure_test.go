package kube

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// writeKubeconfig writes a kubeconfig for server with one context, "lab".
func writeKubeconfig(t *testing.T, dir, server string) string {
	t.Helper()
	path := filepath.Join(dir, "config")
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: ` + server + `
    insecure-skip-tls-verify: true
users:
- name: lab
  user:
    token: not-a-real-token
contexts:
- name: lab
  context:
    cluster: lab
    user: lab
current-context: lab
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func home(t *testing.T) string {
	t.Helper()
	h, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// noAmbientConfig clears what Load would otherwise find on the machine running the test.
func noAmbientConfig(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
}

func TestLoadExplicitKubeconfigMissing(t *testing.T) {
	noAmbientConfig(t)
	path := filepath.Join(t.TempDir(), "nope")
	client, _, err := Load(Config{Kubeconfig: path})
	if err == nil || client != nil {
		t.Fatalf("Load(--kubeconfig %s) = %v, %v; want an error", path, client, err)
	}
	for _, want := range []string{path, "no such file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestLoadExplicitKubeconfigBroken(t *testing.T) {
	noAmbientConfig(t)
	dir := t.TempDir()
	for name, text := range map[string]string{
		"garbage":    "clusters: [this is: not: yaml",
		"no-context": "apiVersion: v1\nkind: Config\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		client, _, err := Load(Config{Kubeconfig: path})
		if err == nil || client != nil || !strings.Contains(err.Error(), path) {
			t.Errorf("Load(--kubeconfig %s) = %v, %v; want an error naming the file", name, client, err)
		}
	}
}

func TestLoadNoConfig(t *testing.T) {
	noAmbientConfig(t)
	client, status, err := Load(Config{})
	if err != nil || client != nil {
		t.Fatalf("Load with no configuration = %v, %v; want no client and no error", client, err)
	}
	if want := "names off: no kubeconfig or in-cluster config"; status != want {
		t.Errorf("Load status %q, want %q", status, want)
	}
	// $KUBECONFIG naming no file is no error either.
	t.Setenv("KUBECONFIG", filepath.Join(home(t), "nope"))
	client, status, err = Load(Config{})
	if err != nil || client != nil || !strings.Contains(status, "names off: no file of $KUBECONFIG=") {
		t.Errorf("Load with $KUBECONFIG naming no file = %v, %q, %v; want names off saying so", client, status, err)
	}
	t.Setenv("KUBECONFIG", "")

	// A broken kubeconfig found on its own turns names off; it is not an error.
	broken := filepath.Join(home(t), ".kube", "config")
	if err := os.MkdirAll(filepath.Dir(broken), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(broken, []byte("{{{"), 0o600); err != nil {
		t.Fatal(err)
	}
	client, status, err = Load(Config{})
	if err != nil || client != nil || !strings.HasPrefix(status, "names off: kubeconfig "+broken) {
		t.Errorf("Load with a broken ~/.kube/config = %v, %q, %v; want names off naming the file", client, status, err)
	}
}

func TestLoadFindsKubeconfig(t *testing.T) {
	noAmbientConfig(t)
	path := writeKubeconfig(t, t.TempDir(), "https://127.0.0.1:6443")
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing")+string(filepath.ListSeparator)+path)
	client, status, err := Load(Config{})
	if err != nil || client == nil {
		t.Fatalf("Load with $KUBECONFIG = %v, %q, %v; want a client", client, status, err)
	}
	if want := "kubeconfig " + path + ", context lab"; status != want {
		t.Errorf("Load status %q, want %q", status, want)
	}
	// ~/.kube/config when $KUBECONFIG is unset.
	t.Setenv("KUBECONFIG", "")
	dir := filepath.Join(home(t), ".kube")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	def := writeKubeconfig(t, dir, "https://127.0.0.1:6443")
	if client, status, err := Load(Config{}); err != nil || client == nil || status != "kubeconfig "+def+", context lab" {
		t.Errorf("Load with ~/.kube/config = %v, %q, %v; want a client from %s", client, status, err, def)
	}
}

func TestLoadInClusterWithoutServiceAccount(t *testing.T) {
	if _, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token"); err == nil {
		t.Skip("this machine has a service account token: in-cluster config would work")
	}
	noAmbientConfig(t)
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	client, status, err := Load(Config{})
	if err != nil || client != nil || !strings.HasPrefix(status, "names off: in-cluster config: ") {
		t.Errorf("Load in a pod without a service account = %v, %q, %v; want names off saying why", client, status, err)
	}
}

// TestUnreachable runs the resolver against an address nobody listens on, through
// Load, as the CLI would with a kubeconfig for a cluster that is down.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	path := writeKubeconfig(t, t.TempDir(), "https://127.0.0.1:1")
	client, _, err := Load(Config{Kubeconfig: path})
	if err != nil {
		t.Fatal(err)
	}
	w := &warnings{}
	r := NewResolver(client, Config{SyncTimeout: time.Second, Warn: w.warn})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	begin := time.Now()
	if err := r.Start(ctx); err != nil {
		t.Fatalf("Start against an unreachable API server: %v, want tracing to go on", err)
	}
	if took := time.Since(begin); took < 900*time.Millisecond || took > 3*time.Second {
		t.Errorf("Start returned after %v, want about the 1s SyncTimeout", took)
	}
	ws := w.get()
	if len(ws) != 1 {
		t.Fatalf("warnings: %q, want exactly one", ws)
	}
	for _, want := range []string{"kubernetes names unresolved", "connection refused", "127.0.0.1:1", "API server unreachable", "tracing goes on"} {
		if !strings.Contains(ws[0], want) {
			t.Errorf("warning %q does not say %q", ws[0], want)
		}
	}
	if got := r.Name(addr("10.244.1.23")); got != (Name{Unresolved: true}) {
		t.Errorf("Name = %+v, want Unresolved", got)
	}
	if st := r.Status(); !strings.HasPrefix(st, "names unresolved: ") || !strings.Contains(st, "connection refused") {
		t.Errorf("Status() = %q, want names unresolved with the cause", st)
	}
	if _, err := r.Resolve(kubeSel("svc/prod/api:http")); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Resolve while unreachable: %v, want an error with the cause", err)
	}
	// The informers go on retrying (client-go backs off from 0.8s); no more warnings.
	time.Sleep(1500 * time.Millisecond)
	if ws := w.get(); len(ws) != 1 {
		t.Errorf("warnings after retries: %q, want still one", ws)
	}
}

// TestForbidden denies the listing of pods, as RBAC without the ClusterRole would,
// then sees names come once it is allowed.
func TestForbidden(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(
		pod("prod", "api-1", "node-a", corev1.PodRunning, time.Hour, "10.244.1.23"),
		service("prod", "api", []string{"10.96.0.20"}),
	)
	const denied, refused, allowed = 0, 1, 2
	var state atomic.Int32
	var pods atomic.Int32 // pod list calls
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		pods.Add(1)
		switch state.Load() {
		case denied:
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "",
				errors.New(`User "system:serviceaccount:pathtrace:pathtrace" cannot list resource "pods" in API group "" at the cluster scope`))
		case refused:
			return true, nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
		}
		return false, nil, nil
	})
	w := &warnings{}
	r := NewResolver(client, Config{SyncTimeout: 300 * time.Millisecond, Warn: w.warn})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.Start(ctx); err != nil {
		t.Fatalf("Start with pods forbidden: %v, want tracing to go on", err)
	}
	ws := w.get()
	if len(ws) != 1 {
		t.Fatalf("warnings: %q, want exactly one", ws)
	}
	for _, want := range []string{"kubernetes names unresolved", "pods is forbidden", "system:serviceaccount:pathtrace:pathtrace", "RBAC", "tracing goes on"} {
		if !strings.Contains(ws[0], want) {
			t.Errorf("warning %q does not say %q", ws[0], want)
		}
	}
	// Services are allowed: their names work; pods' are unresolved, not unknown.
	wantName(t, r, "10.96.0.20", Name{Kind: "service", Namespace: "prod", Name: "api"})
	wantName(t, r, "10.244.1.23", Name{Unresolved: true})
	if st := r.Status(); !strings.HasPrefix(st, "names unresolved: pods is forbidden") {
		t.Errorf("Status() = %q, want names unresolved: pods is forbidden...", st)
	}
	if _, err := r.Resolve(kubeSel("pod/prod/api-1")); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("Resolve(pod/prod/api-1) while forbidden: %v, want the cause", err)
	}

	// Another kind of failure is warned about once; the same kind again is not.
	n := pods.Load()
	state.Store(refused)
	eventually(t, "a second warning, for the refused connection", func() bool { return len(w.get()) == 2 })
	if ws := w.get(); !strings.Contains(ws[1], "connection refused") || !strings.Contains(ws[1], "unreachable") {
		t.Errorf("second warning %q, want it to name the refused connection", ws[1])
	}
	if pods.Load() == n {
		t.Error("no pod list retried")
	}

	// Access granted: the informer's retry brings the names.
	state.Store(allowed)
	eventually(t, "10.244.1.23 named once pods may be listed", func() bool {
		return r.Name(addr("10.244.1.23")).String() == "prod/api-1"
	})
	if st := r.Status(); st != "names on (1 pods, 1 services)" {
		t.Errorf("Status() after recovery = %q", st)
	}
	if ws := w.get(); len(ws) != 2 {
		t.Errorf("warnings: %q, want two (forbidden, refused)", ws)
	}
}

// TestSyncTimeoutWithoutError: an API server that lists nothing in time, with no
// error to show, still gets one warning that says what is missing.
func TestSyncTimeoutWithoutError(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	// Too many requests: the informer backs off and retries, and it is no failure.
	client.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewTooManyRequests("slow down", 1)
	})
	w := &warnings{}
	r := NewResolver(client, Config{SyncTimeout: 200 * time.Millisecond, Warn: w.warn})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ws := w.get()
	if len(ws) != 1 || !strings.Contains(ws[0], "nodes not listed within 200ms") {
		t.Errorf("warnings %q, want one saying nodes were not listed within 200ms", ws)
	}
	if st := r.Status(); st != "names unresolved: waiting for the API server to list nodes" {
		t.Errorf("Status() = %q", st)
	}
}

func TestStartCanceled(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	client.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("no"))
	})
	w := &warnings{}
	r := NewResolver(client, Config{SyncTimeout: time.Minute, Warn: w.warn})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := r.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start with its context ending first: %v, want the context's error", err)
	}
	if ws := w.get(); len(ws) != 0 {
		t.Errorf("warnings when stopped: %q", ws)
	}
}
