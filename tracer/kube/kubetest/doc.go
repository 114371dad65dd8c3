// Package kubetest starts a real Kubernetes control plane for tests: etcd (Debian's
// etcd-server) and kube-apiserver (bin/kube-apiserver, built by make tools-kube from
// k8s.io/kubernetes at the version of client-go), on random ports of 127.0.0.1, in a
// temporary directory, with RBAC on and no controllers. It gives tests an admin's
// rest.Config and service-account tokens (TokenRequest), and stops both processes on
// t.Cleanup.
//
// It is for tests only: it never runs in pathtrace, and it needs no root. With a
// binary missing, Start skips the test, or fails it when CI=true or
// PATHTRACE_REQUIRE_PRIVILEGED=1 (the environments where every test must run).
//
// No controller runs: a Deployment gets no pods, a Service no EndpointSlices, a pod
// no node and no address unless the test writes them (the status subresource takes a
// pod's phase and IPs). Service cluster IPs come from ServiceCIDRs
// (10.96.0.0/16 and fd00:96::/112), allocated or checked by the API server itself.
package kubetest
