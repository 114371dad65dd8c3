package kube

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func agentPod(name, node string, phase corev1.PodPhase, age time.Duration, ip string, port int32) *corev1.Pod {
	p := pod("pathtrace", name, node, phase, age, ip)
	p.Labels = map[string]string{"app.kubernetes.io/name": "pathtrace"}
	p.Spec.Containers = []corev1.Container{{Name: "agent", Ports: []corev1.ContainerPort{
		{Name: "metrics", ContainerPort: 9101},
		{Name: "api", ContainerPort: port, Protocol: corev1.ProtocolTCP},
	}}}
	return p
}

func TestAgents(t *testing.T) {
	t.Parallel()
	const label = "app.kubernetes.io/name=pathtrace"
	old := agentPod("pathtrace-old", "node-a", corev1.PodRunning, time.Hour, "10.244.1.4", 7070)
	now := metav1.NewTime(t0)
	old.DeletionTimestamp = &now
	noPort := agentPod("pathtrace-noport", "node-d", corev1.PodRunning, time.Hour, "10.244.4.4", 7070)
	noPort.Spec.Containers[0].Ports = noPort.Spec.Containers[0].Ports[:1]
	other := agentPod("pathtrace-x", "node-a", corev1.PodRunning, time.Hour, "10.244.1.9", 7070)
	other.Namespace = "elsewhere"
	unlabelled := agentPod("web", "node-a", corev1.PodRunning, time.Hour, "10.244.1.10", 7070)
	unlabelled.Labels = nil
	client := fake.NewClientset(
		agentPod("pathtrace-b2", "node-b", corev1.PodRunning, time.Hour, "10.244.2.5", 7070),
		agentPod("pathtrace-a1", "node-a", corev1.PodRunning, time.Minute, "10.244.1.5", 7070),
		agentPod("pathtrace-a0", "node-a", corev1.PodRunning, 2*time.Hour, "10.244.1.3", 7070), // older, same node
		old,
		agentPod("pathtrace-c3", "node-c", corev1.PodPending, time.Minute, "", 7070),
		agentPod("pathtrace-v6", "node-e", corev1.PodRunning, time.Hour, "fd00:10:244:5::5", 7070),
		noPort, other, unlabelled,
	)
	r := NewResolver(client, Config{}) // Agents asks the API server: no Start needed
	got, err := r.Agents(context.Background(), "pathtrace", label)
	if err != nil {
		t.Fatal(err)
	}
	want := []Agent{
		{Node: "node-a", Addr: "10.244.1.5:7070"},
		{Node: "node-b", Addr: "10.244.2.5:7070"},
		{Node: "node-e", Addr: "[fd00:10:244:5::5]:7070"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Agents = %+v, want %+v", got, want)
	}

	_, err = r.Agents(context.Background(), "monitoring", label)
	if err == nil || !strings.Contains(err.Error(), `no pathtrace agent pods with label "app.kubernetes.io/name=pathtrace" in namespace "monitoring": is the DaemonSet installed?`) {
		t.Errorf("Agents in an empty namespace: %v", err)
	}

	none := fake.NewClientset(agentPod("pathtrace-c3", "node-c", corev1.PodPending, time.Minute, "", 7070), noPort)
	_, err = NewResolver(none, Config{}).Agents(context.Background(), "pathtrace", label)
	for _, why := range []string{"no running pathtrace agent pods", "pathtrace-c3: phase Pending", `pathtrace-noport: no container port named "api"`} {
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("Agents with none usable: error %v, want it to say %q", err, why)
		}
	}

	denied := fake.NewClientset()
	denied.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`User "alice" cannot list resource "pods"`))
	})
	_, err = NewResolver(denied, Config{}).Agents(context.Background(), "pathtrace", label)
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `in namespace "pathtrace"`) {
		t.Errorf("Agents when forbidden: %v, want the forbidden error with the namespace", err)
	}
}
