package kube

import (
	"time"

	corev1 "k8s.io/api/core/v1"
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
