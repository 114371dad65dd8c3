package kube

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Agent is a pathtrace agent pod: the node it traces and the TCP address of its API.
type Agent struct {
	Node string
	Addr string // "IP:PORT"
}

// AgentPort is the name of the agent container's API port.
const AgentPort = "api"

// Agents lists the agent pods in namespace that match labelSelector, asking the API
// server directly (the CLI needs them once). A pod counts when it is Running, not being
// deleted, has an address and a container port named "api"; of two on one node (a
// rolling update) the newer counts. Sorted by node.
func (r *Resolver) Agents(ctx context.Context, namespace, labelSelector string) ([]Agent, error) {
	if r == nil || r.client == nil {
		return nil, fmt.Errorf("finding pathtrace agents needs a kubeconfig or in-cluster config")
	}
	list, err := r.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: labelSelector})
	if err != nil {
		return nil, fmt.Errorf("list pathtrace agent pods with label %q in namespace %q: %w", labelSelector, namespace, err)
	}
	if len(list.Items) == 0 {
		return nil, fmt.Errorf("no pathtrace agent pods with label %q in namespace %q: is the DaemonSet installed?", labelSelector, namespace)
	}
	newest := map[string]*corev1.Pod{}
	var agents []Agent
	var skipped []string
	for i := range list.Items {
		p := &list.Items[i]
		port := apiPort(p)
		var why string
		switch {
		case p.DeletionTimestamp != nil:
			why = "being deleted"
		case p.Status.Phase != corev1.PodRunning:
			why = "phase " + string(p.Status.Phase)
		case p.Status.PodIP == "":
			why = "no address"
		case port == 0:
			why = fmt.Sprintf("no container port named %q", AgentPort)
		}
		if why != "" {
			skipped = append(skipped, p.Name+": "+why)
			continue
		}
		if old, ok := newest[p.Spec.NodeName]; ok && !newerPod(p, old) {
			continue
		}
		newest[p.Spec.NodeName] = p
	}
	for node, p := range newest {
		agents = append(agents, Agent{Node: node, Addr: net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(apiPort(p))))})
	}
	if len(agents) == 0 {
		slices.Sort(skipped)
		if len(skipped) > 5 {
			skipped = append(skipped[:5], fmt.Sprintf("and %d more", len(skipped)-5))
		}
		return nil, fmt.Errorf("no running pathtrace agent pods with label %q in namespace %q (%s)", labelSelector, namespace, strings.Join(skipped, "; "))
	}
	slices.SortFunc(agents, func(a, b Agent) int { return strings.Compare(a.Node, b.Node) })
	return agents, nil
}

// apiPort is the pod's TCP container port named AgentPort, 0 if it has none.
func apiPort(p *corev1.Pod) int32 {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == AgentPort && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
				return cp.ContainerPort
			}
		}
	}
	return 0
}

// newerPod reports whether a was created after b; at the same second, the smaller name
// wins, for a stable answer.
func newerPod(a, b *corev1.Pod) bool {
	if ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time; !ta.Equal(tb) {
		return ta.After(tb)
	}
	return a.Name < b.Name
}

// AgentCAConfigMap is the ConfigMap, in the agents' namespace, that publishes the CA
// of the agents' certificates (key ca.crt) to followers: public, unlike the Secret.
const AgentCAConfigMap = "pathtrace-agent-ca"

// AgentCA reads the agents' CA certificate from the ConfigMap AgentCAConfigMap.
func (r *Resolver) AgentCA(ctx context.Context, namespace string) ([]byte, error) {
	if r == nil || r.client == nil {
		return nil, fmt.Errorf("reading the agents' CA needs a kubeconfig or in-cluster config")
	}
	cm, err := r.client.CoreV1().ConfigMaps(namespace).Get(ctx, AgentCAConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("the agents' CA (ConfigMap %s/%s, key ca.crt; or pass --tls-ca): %w", namespace, AgentCAConfigMap, err)
	}
	ca := cm.Data["ca.crt"]
	if ca == "" {
		return nil, fmt.Errorf("ConfigMap %s/%s has no ca.crt", namespace, AgentCAConfigMap)
	}
	return []byte(ca), nil
}
