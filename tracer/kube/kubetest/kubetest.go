package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// ServiceCIDRs are the ranges the API server allocates Service cluster IPs from:
// dual-stack, so that a test may ask for a Service with both families.
const ServiceCIDRs = "10.96.0.0/16,fd00:96::/112"

// StartTimeout bounds how long Start waits for etcd and then for the API server's
// /readyz (each): a cold kube-apiserver on a busy 2-core machine takes about 10 s.
const StartTimeout = 90 * time.Second

// Server is a running etcd and kube-apiserver.
type Server struct {
	// URL is the API server's address, https://127.0.0.1:PORT.
	URL string
	// Admin authenticates as "admin" in system:masters, with a client certificate.
	Admin *rest.Config
	// Client is a clientset for Admin.
	Client kubernetes.Interface
	// CA is the PEM of the CA that signed the API server's serving certificate.
	CA  []byte
	dir string
}

// Required reports whether the environment says every test must run (CI=true or
// PATHTRACE_REQUIRE_PRIVILEGED=1): then a missing binary fails instead of skipping.
func Required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("PATHTRACE_REQUIRE_PRIVILEGED") == "1"
}

// Binaries finds kube-apiserver and etcd: $PATHTRACE_KUBE_APISERVER, else bin/ of the
// module the test runs in, else $PATH; etcd on $PATH. Missing ones skip the test, or
// fail it when Required.
func Binaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	var missing []string
	apiserver = os.Getenv("PATHTRACE_KUBE_APISERVER")
	if apiserver != "" && !isExecutable(apiserver) {
		missing = append(missing, "kube-apiserver ($PATHTRACE_KUBE_APISERVER="+apiserver+" is no executable file)")
	} else if apiserver == "" {
		if root, err := moduleRoot(); err == nil {
			if p := filepath.Join(root, "bin", "kube-apiserver"); isExecutable(p) {
				apiserver = p
			}
		}
	}
	if apiserver == "" && len(missing) == 0 {
		apiserver, _ = exec.LookPath("kube-apiserver")
		if apiserver == "" {
			missing = append(missing, "kube-apiserver (bin/kube-apiserver: run make tools)")
		}
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		missing = append(missing, "etcd (Debian's etcd-server: run make deps)")
	}
	if len(missing) > 0 {
		msg := "a real API server needs " + strings.Join(missing, " and ")
		if Required() {
			t.Fatal(msg + "; CI=true or PATHTRACE_REQUIRE_PRIVILEGED=1: not skipping")
		}
		t.Skip(msg)
	}
	return apiserver, etcd
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// moduleRoot is the nearest directory above the working directory with a go.mod of
// the module github.com/pathtrace/pathtrace.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/pathtrace/pathtrace\n")) {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("no go.mod of github.com/pathtrace/pathtrace above the working directory")
		}
		dir = up
	}
}

// Start runs etcd and kube-apiserver for the test and waits until the API server is
// ready; both stop when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	apiserverBin, etcdBin := Binaries(t)
	dir := t.TempDir()
	begin := time.Now()
	pki, err := writePKI(dir)
	if err != nil {
		t.Fatalf("kubetest: certificates: %v", err)
	}

	clientPort, peerPort, apiPort := freePort(t), freePort(t), freePort(t)
	etcdURL := "http://127.0.0.1:" + clientPort
	peerURL := "http://127.0.0.1:" + peerPort
	etcd := startProc(t, dir, "etcd", etcdBin,
		"--name", "kubetest", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "kubetest="+peerURL, "--initial-cluster-state", "new",
		"--logger", "zap", "--log-level", "warn")
	waitFor(t, etcd, "etcd /health", func() error {
		resp, err := http.Get(etcdURL + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	api := startProc(t, dir, "kube-apiserver", apiserverBin,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", apiPort,
		"--tls-cert-file", pki.serverCert, "--tls-private-key-file", pki.serverKey,
		"--client-ca-file", pki.caCert,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki.saPub, "--service-account-signing-key-file", pki.saKey,
		"--api-audiences", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", ServiceCIDRs,
		"--authorization-mode", "RBAC",
		// No controller manager creates the "default" service account of a namespace,
		// which the ServiceAccount admission plugin requires of every pod.
		"--disable-admission-plugins", "ServiceAccount",
		// The DaemonSet asks for hostNetwork and capabilities.
		"--allow-privileged=true",
		// Nothing should write the kubernetes Service's endpoints at 127.0.0.1.
		"--endpoint-reconciler-type", "none",
		"--profiling=false", "--v", "1")

	s := &Server{URL: "https://127.0.0.1:" + apiPort, CA: pki.caPEM, dir: dir}
	s.Admin = &rest.Config{
		Host: s.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: pki.caPEM, CertData: pki.adminCertPEM, KeyData: pki.adminKeyPEM,
		},
		QPS: 100, Burst: 200,
	}
	s.Client, err = kubernetes.NewForConfig(s.Admin)
	if err != nil {
		t.Fatalf("kubetest: admin client: %v", err)
	}
	waitFor(t, api, "kube-apiserver /readyz", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		body, err := s.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%v %s", err, lastLines(string(body), 3))
		}
		return nil
	})
	t.Logf("kubetest: etcd and kube-apiserver ready at %s in %v", s.URL, time.Since(begin).Round(time.Millisecond))
	return s
}

// proc is a started binary and where its output goes.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t testing.TB, dir, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = dir
	// Its own process group: a ^C of the test run reaches the test, which stops it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("kubetest: start %s: %v", bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
			t.Logf("kubetest: %s did not stop within 10s of SIGTERM: killed", name)
		}
	})
	return p
}

// tail is the end of the process's log, for an error message.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls ready until it succeeds, the process exits, or StartTimeout passes.
func waitFor(t testing.TB, p *proc, what string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(StartTimeout)
	var last error
	for {
		select {
		case <-p.done:
			t.Fatalf("kubetest: %s exited before %s answered (%v); the end of its log:\n%s", p.name, what, p.err, p.tail(30))
		default:
		}
		if last = ready(); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubetest: %s not ready after %v (last: %v); the end of %s's log:\n%s", what, StartTimeout, last, p.name, p.tail(30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kubetest: a free port: %v", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// ServiceAccount makes sure the namespace and service account exist and returns a
// rest.Config that authenticates with a token of it (TokenRequest, one hour).
func (s *Server) ServiceAccount(t testing.TB, namespace, name string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	s.Namespace(t, namespace)
	_, err := s.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: service account %s/%s: %v", namespace, name, err)
	}
	hour := int64(3600)
	tr, err := s.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: token of service account %s/%s: %v", namespace, name, err)
	}
	return &rest.Config{Host: s.URL, TLSClientConfig: rest.TLSClientConfig{CAData: s.CA}, BearerToken: tr.Status.Token}
}

// Namespace creates the namespace unless it exists.
func (s *Server) Namespace(t testing.TB, name string) {
	t.Helper()
	_, err := s.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: namespace %s: %v", name, err)
	}
}

// Kubeconfig writes a kubeconfig with rc's server, CA and credentials (client
// certificate or bearer token) into the test's temporary directory, context "kubetest".
func (s *Server) Kubeconfig(t testing.TB, rc *rest.Config) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["kubetest"] = &clientcmdapi.AuthInfo{ClientCertificateData: rc.CertData, ClientKeyData: rc.KeyData, Token: rc.BearerToken}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest"}
	cfg.CurrentContext = "kubetest"
	f, err := os.CreateTemp(t.TempDir(), "kubeconfig-*")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := clientcmd.WriteToFile(*cfg, f.Name()); err != nil {
		t.Fatalf("kubetest: write kubeconfig: %v", err)
	}
	return f.Name()
}

// Log is the API server's log so far, for a test that wants to show it.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "kube-apiserver.log"))
	return string(b)
}

type pkiFiles struct {
	caCert, serverCert, serverKey, saKey, saPub string
	caPEM, adminCertPEM, adminKeyPEM            []byte
}

// writePKI makes a CA, the API server's serving certificate (127.0.0.1, localhost),
// the admin's client certificate (CN admin, O system:masters) and the key that signs
// service-account tokens. All ECDSA P-256.
func writePKI(dir string) (*pkiFiles, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubetest-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leaf := func(serial int64, tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
	}
	serverCert, serverKey, err := leaf(2, &x509.Certificate{
		Subject: pkix.Name{CommonName: "kube-apiserver"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP("10.96.0.1")}, DNSNames: []string{"localhost", "kubernetes.default.svc"},
	})
	if err != nil {
		return nil, err
	}
	adminCert, adminKey, err := leaf(3, &x509.Certificate{
		Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saKeyDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	p := &pkiFiles{
		caCert: filepath.Join(dir, "ca.crt"), serverCert: filepath.Join(dir, "apiserver.crt"), serverKey: filepath.Join(dir, "apiserver.key"),
		saKey: filepath.Join(dir, "sa.key"), saPub: filepath.Join(dir, "sa.pub"),
		caPEM:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		adminCertPEM: adminCert, adminKeyPEM: adminKey,
	}
	for path, data := range map[string][]byte{
		p.caCert: p.caPEM, p.serverCert: serverCert, p.serverKey: serverKey,
		p.saKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saKeyDER}),
		p.saPub: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// ApplyOptions are those of Apply.
type ApplyOptions struct {
	// DryRun asks the server to validate and admit without storing (dryRun=All).
	DryRun bool
	// Namespace is given to namespaced objects that name none.
	Namespace string
}

// Apply sends each YAML document of data to the API server with server-side apply
// (field manager kubetest, conflicts forced) and field validation Strict, as rc: an
// unknown or duplicated field is an error, as is a kind the server does not serve.
// The first error ends it, naming the document.
func (s *Server) Apply(ctx context.Context, rc *rest.Config, data []byte, opts ApplyOptions) error {
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return err
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		if t := bytes.TrimSpace(j); string(t) == "null" || string(t) == "{}" {
			continue // comments only
		}
		var u unstructured.Unstructured
		if err := u.UnmarshalJSON(j); err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("document %d (%s %s): %w", i, gvk.Kind, u.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := u.GetNamespace()
			if ns == "" {
				ns = opts.Namespace
			}
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		po := metav1.PatchOptions{FieldManager: "kubetest", FieldValidation: "Strict", Force: ptr(true)}
		if opts.DryRun {
			po.DryRun = []string{metav1.DryRunAll}
		}
		if _, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, j, po); err != nil {
			return fmt.Errorf("document %d (%s %s): %w", i, gvk.Kind, u.GetName(), err)
		}
	}
}

func ptr[T any](v T) *T { return &v }
