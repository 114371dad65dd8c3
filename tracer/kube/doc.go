// Package kube names what pathtrace sees after the Kubernetes objects behind it: pod
// and Service addresses to namespace/name, pod and Service selectors to addresses, and
// the node's agents to their API addresses. It reads the API server through client-go
// shared informers and never writes to it; without a kubeconfig or in-cluster config it
// is off and says so, and a failing API server leaves names unresolved, never tracing
// stopped.
//
// # What is watched, and what it costs
//
// Four shared informers: pods, Services, EndpointSlices (discovery.k8s.io/v1) and
// nodes, each indexed by address. A journey on one node names both its ends, and one
// end is often a pod on another node, so by default every pod in the cluster is
// watched, not only the node's own (a field selector on spec.nodeName would miss
// them). To keep that cheap the informers keep only what naming reads (a transform
// drops the rest as objects arrive): a pod is its name, namespace, node, phase and
// addresses, about 1.5 KB against 5-20 KB for a full pod, so 10,000 pods cost about
// 15 MB per agent; a node is its name and addresses, without the image list of its
// status. Where even that is too much, Config.NodePodsOnly watches only the node's
// pods; pods elsewhere are then named when an EndpointSlice points at them (pods
// behind a Service), and not otherwise.
//
// # Naming an address
//
// A pod by status.podIPs; hostNetwork pods are not indexed, so their address (the
// node's) names the node. A Service by spec.clusterIPs. A node by its InternalIP and
// ExternalIP addresses. When pods share an address (kubelet hands a finished pod's
// address to a new pod while the old one still shows it), a live pod wins over one
// being deleted, which wins over one that ended (Succeeded or Failed).
//
// # When the API server fails
//
// Start waits up to Config.SyncTimeout for the first lists. What is not listed by then
// is unresolved (Name says Unresolved, Status says why) and Config.Warn gets one
// warning naming the cause in the API server's words ("pods is forbidden: User ...
// cannot list resource ..."), or the connection error. The informers keep retrying
// with client-go's backoff, and names appear when the cause clears. Later failures are
// warned about once per kind (forbidden, unauthorized, unreachable, other), not once
// per retry. The agent's service account needs get, list and watch on pods, services,
// nodes and endpointslices.discovery.k8s.io.
package kube
