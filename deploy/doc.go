// Package deploy ships the pathtrace agent to a Kubernetes cluster: a DaemonSet with
// the capabilities and host mounts it needs, its ServiceAccount and read-only RBAC, a
// Service and a PodMonitor for Prometheus, and the Containerfile of its image. The
// cluster gets them with `kubectl apply -k deploy/` (README.md here explains each
// choice).
//
// chart/ is a Helm chart of the same objects, with values for what the kustomization
// leaves to overlays.
//
// The Go package only embeds the manifests, so that a test decodes them into the
// Kubernetes API types exactly as the API server would and checks what the agent relies
// on; the chart's test puts `helm template`'s output through the same checks and
// compares its defaults with the kustomization. It must not hold agent logic, and
// nothing in it talks to a cluster.
package deploy

import "embed"

// Manifests holds this directory's YAML files: kustomization.yaml, the resources it
// lists, and podmonitor.yaml and prometheusrule.yaml, which are applied on their own
// where the Prometheus Operator runs. The Grafana dashboard and the plain rules file are
// in chart/files/, read by the tests from disk.
//
//go:embed *.yaml
var Manifests embed.FS
