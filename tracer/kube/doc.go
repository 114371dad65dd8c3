// Package kube names what pathtrace sees after the Kubernetes objects behind it: pod
// and Service addresses to namespace/name, pod and Service selectors to addresses, and
// the node's agents to their API addresses. It reads the API server through client-go
// shared informers and never writes to it; without a kubeconfig or in-cluster config it
// is off and says so, and a failing API server leaves names unresolved, never tracing
// stopped.
package kube
