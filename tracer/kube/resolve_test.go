package kube

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/pathtrace/pathtrace/decode"
)

func kubeSel(s string) decode.KubeSelector {
	k, ok, err := decode.ParseKubeSelector(s)
	if !ok || err != nil {
		panic("bad test selector " + s)
	}
	return k
}

func selectorStrings(sels []decode.Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

func TestResolve(t *testing.T) {
	t.Parallel()
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	ext := service("prod", "payments", nil)
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "payments.example.com"
	client := fake.NewClientset(
		pod("prod", "api-67f6cc8974-2kmdg", "node-a", corev1.PodRunning, time.Hour, "10.244.1.23", "fd00:10:244:1::17"),
		pod("prod", "api-67f6cc8974-9xq2p", "node-b", corev1.PodRunning, time.Hour, "10.244.2.23"),
		pod("prod", "starting", "node-b", corev1.PodPending, time.Second),
		pod("batch", "done", "node-b", corev1.PodSucceeded, time.Hour, "10.244.2.99"),

		// api: port 80 named http to the pods' 8080, port 9090 named metrics.
		service("prod", "api", []string{"10.96.0.20"},
			svcPort("http", 80, intstr.FromString("web"), tcp),
			svcPort("metrics", 9090, intstr.FromInt32(9090), tcp)),
		endpointSlice("prod", "api-abc12", "api", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{slicePortOf("http", 8080, tcp), slicePortOf("metrics", 9090, tcp)},
			endpoint(true, "prod", "api-67f6cc8974-2kmdg", "10.244.1.23"),
			endpoint(true, "prod", "api-67f6cc8974-9xq2p", "10.244.2.23"),
			endpoint(false, "prod", "api-67f6cc8974-notready", "10.244.2.24")),
		// A pod whose container has no port named web: its slice has metrics only.
		endpointSlice("prod", "api-def34", "api", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{slicePortOf("metrics", 9090, tcp)},
			endpoint(true, "prod", "api-old", "10.244.3.5")),
		// A slice of another Service must not leak in.
		endpointSlice("prod", "web-xyz", "web", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{slicePortOf("http", 8080, tcp)},
			endpoint(true, "prod", "web-1", "10.244.9.9")),

		// kube-dns: 53 twice, UDP "dns" and TCP "dns-tcp".
		service("kube-system", "kube-dns", []string{"10.96.0.10"},
			svcPort("dns", 53, intstr.FromInt32(53), udp), svcPort("dns-tcp", 53, intstr.FromInt32(53), tcp)),
		endpointSlice("kube-system", "kube-dns-1", "kube-dns", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{slicePortOf("dns", 53, udp), slicePortOf("dns-tcp", 53, tcp)},
			endpoint(true, "kube-system", "coredns-1", "10.244.1.2")),

		// A dual-stack Service with an unnamed port.
		service("prod", "dual", []string{"10.96.0.50", "fd00:96::50"}, svcPort("", 443, intstr.FromInt32(8443), tcp)),
		endpointSlice("prod", "dual-v4", "dual", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{slicePortOf("", 8443, tcp)}, endpoint(true, "prod", "dual-1", "10.244.1.50")),
		endpointSlice("prod", "dual-v6", "dual", discoveryv1.AddressTypeIPv6,
			[]discoveryv1.EndpointPort{slicePortOf("", 8443, tcp)}, endpoint(true, "prod", "dual-1", "fd00:10:244:1::50")),

		// Headless: endpoints only.
		service("prod", "redis", []string{corev1.ClusterIPNone}, svcPort("redis", 6379, intstr.FromInt32(6379), tcp)),
		endpointSlice("prod", "redis-1", "redis", discoveryv1.AddressTypeIPv4,
			[]discoveryv1.EndpointPort{slicePortOf("redis", 6379, tcp)},
			endpoint(true, "prod", "redis-0", "10.244.2.57"), endpoint(true, "prod", "redis-1", "10.244.1.57")),
		service("prod", "headless-empty", []string{corev1.ClusterIPNone}, svcPort("x", 80, intstr.FromInt32(80), tcp)),
		service("prod", "headless-noports", []string{corev1.ClusterIPNone}),
		endpointSlice("prod", "headless-noports-1", "headless-noports", discoveryv1.AddressTypeIPv4, nil,
			endpoint(true, "prod", "hn-0", "10.244.1.70")),

		// A Service without endpoints still has its cluster IP to follow.
		service("prod", "nobody", []string{"10.96.0.60"}, svcPort("http", 80, intstr.FromInt32(8080), tcp)),
		ext,
	)
	r, _ := started(t, client, Config{})

	for _, tc := range []struct {
		sel  string
		want []string
	}{
		{"pod/prod/api-67f6cc8974-2kmdg", []string{"10.244.1.23", "fd00:10:244:1::17"}},
		{"pod/prod/api-67f6cc8974-2kmdg:8080", []string{"10.244.1.23:8080", "[fd00:10:244:1::17]:8080"}},
		// Cluster IP with the Service port, endpoints with theirs; not-ready and
		// portless endpoints left out.
		{"svc/prod/api:http", []string{"10.96.0.20:80", "10.244.1.23:8080", "10.244.2.23:8080"}},
		{"svc/prod/api:80", []string{"10.96.0.20:80", "10.244.1.23:8080", "10.244.2.23:8080"}},
		{"svc/prod/api:metrics", []string{"10.96.0.20:9090", "10.244.1.23:9090", "10.244.2.23:9090", "10.244.3.5:9090"}},
		{"svc/prod/api", []string{"10.96.0.20", "10.244.1.23", "10.244.2.23", "10.244.3.5"}},
		{"svc/kube-system/kube-dns:53", []string{"10.96.0.10:53", "10.244.1.2:53"}},
		{"svc/kube-system/kube-dns:dns-tcp", []string{"10.96.0.10:53", "10.244.1.2:53"}},
		{"svc/prod/dual:443", []string{"10.96.0.50:443", "[fd00:96::50]:443", "10.244.1.50:8443", "[fd00:10:244:1::50]:8443"}},
		{"svc/prod/redis", []string{"10.244.1.57", "10.244.2.57"}},
		{"svc/prod/redis:redis", []string{"10.244.1.57:6379", "10.244.2.57:6379"}},
		{"svc/prod/headless-noports:7000", []string{"10.244.1.70:7000"}},
		{"svc/prod/nobody:http", []string{"10.96.0.60:80"}},
	} {
		got, err := r.Resolve(kubeSel(tc.sel))
		if err != nil {
			t.Errorf("Resolve(%s): %v", tc.sel, err)
			continue
		}
		if gs := selectorStrings(got); !slices.Equal(gs, tc.want) {
			t.Errorf("Resolve(%s) = %q, want %q", tc.sel, gs, tc.want)
		}
		for _, s := range got {
			if s.Addr.Is4In6() || s.Proto != 0 {
				t.Errorf("Resolve(%s): selector %+v, want an unmapped address and any protocol", tc.sel, s)
			}
		}
	}

	for _, tc := range []struct{ sel, why string }{
		{"pod/prod/api", "pod prod/api not found"},
		{"pod/staging/api-67f6cc8974-2kmdg", "pod staging/api-67f6cc8974-2kmdg not found"},
		{"pod/prod/starting", "pod prod/starting has no address yet (phase Pending)"},
		{"pod/batch/done", "pod batch/done has ended (phase Succeeded)"},
		{"svc/prod/missing", "service prod/missing not found"},
		{"svc/prod/api:8080", "service prod/api has no port 8080 (its ports: http 80→web/TCP, metrics 9090/TCP)"},
		{"svc/prod/api:grpc", `service prod/api has no port named "grpc"`},
		{"svc/prod/headless-empty", "service prod/headless-empty is headless and has no ready endpoints"},
		{"svc/prod/headless-noports:web", "service prod/headless-noports has no ports"},
		{"svc/prod/payments", "ExternalName Service (payments.example.com)"},
	} {
		got, err := r.Resolve(kubeSel(tc.sel))
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Resolve(%s) = %q, %v; want an error saying %q", tc.sel, selectorStrings(got), err, tc.why)
		}
	}
	if _, err := r.Resolve(decode.KubeSelector{Kind: "deploy", Namespace: "prod", Name: "api"}); err == nil {
		t.Error("Resolve of kind deploy: no error")
	}
}
